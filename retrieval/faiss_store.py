"""The FAISS store: vectors, BM25 and chunk metadata in memory, persisted as atomic generations.

It implements the `VectorStore` seam (retrieval/store.py) out of parts with one job each:
`generations.py` reads and publishes generations on disk (a crash at any moment leaves CURRENT pointing at a
complete one; readers, such as a running API, notice a new CURRENT and reload), `ann.py` the approximate index of
large corpora, `filters.py` the metadata columns a filter reads, `fields.py` the "en" vector field, and `sparse.py`
the BM25 index (`bm25.py`) of the loaded generation. A generation written before BM25 was added has no bm25/
folder; its BM25 data is built in memory when first needed, and the next write stores it.

A search with a filter always scores the chunks the filter lets through exactly (a matrix product over those
rows), so k hits come back whenever k chunks match, however low they would rank in the whole index.

Writes are incremental where it is cheap: added chunks are analysed for BM25 on their own (the term counts of
the others are kept), and added vectors are appended to the approximate index; deleting chunks rebuilds the
approximate index (FAISS HNSW cannot remove) but never re-analyses text.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from retrieval.ann import AnnIndex, IndexConfig
from retrieval.bm25 import DEFAULT_LANGUAGE, Analyzers, Bm25Index, Bm25Params
from retrieval.errors import EmbedderMismatchError, IndexCorruptError, IndexNotFoundError
from retrieval.fields import ENGLISH_FIELD, MAIN_FIELD, LanguageField
from retrieval.filters import MetaColumns, top_k
from retrieval.generations import (
    NewGeneration,
    StoredGeneration,
    current_name,
    latest_on_disk,
    publish_generation,
    read_generation,
    write_index,
    writer_lock,
)
from retrieval.sparse import GenerationBm25
from retrieval.types import Chunk, Hit, IndexIdentity, SearchFilter

logger = logging.getLogger(__name__)


def _locked(method):
    """Run a method under the store's lock, so a search never sees a half-swapped generation (a reload or a
    writer's edit in another thread of the same process, e.g. an ingestion job beside the API's queries)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._state_lock:
            return method(self, *args, **kwargs)
    return wrapper


def _mismatch(what: str, got: int, want: int, model: str = "embedder") -> EmbedderMismatchError:
    return EmbedderMismatchError(f"{what} has {got} dimensions, the index {want}: the {model} changed since "
                                 "ingestion; run consulta reindex")


class FaissStore:
    """FAISS vectors (exact, or HNSW/IVF when large), BM25 and chunk metadata; one generation loaded in memory.

    Vector fields: "main" (the embedder of `identity`) and "en" (an English-only embedder's vectors for the
    English chunks, when ingestion was asked for them).
    """

    def __init__(self, root: str | Path, *, bm25: Bm25Params | None = None, index: IndexConfig | None = None) -> None:
        self.root = Path(root)
        self.bm25_params = bm25 or Bm25Params()
        self.index_config = index or IndexConfig()
        self.identity: IndexIdentity | None = None
        self.generation = 0
        self._chunks: list[Chunk] = []
        self._vectors = np.zeros((0, 0), dtype=np.float32)
        self._index: faiss.Index | None = None
        self._ann = AnnIndex(self.index_config)
        self._english: LanguageField | None = None
        self._loaded_marker: tuple[str, int] | None = None
        self._bm25 = GenerationBm25(self.bm25_params)
        self._state_lock = threading.RLock()
        # made from the chunks when first needed: chunk id -> row, and the metadata filters read
        self._rows: dict[str, int] | None = None
        self._columns: MetaColumns | None = None
        self._dirty = False  # a write session holds changes to publish

    # ---- loading ---------------------------------------------------------------------------
    @property
    def exists(self) -> bool:
        return (self.root / "CURRENT").is_file()

    @property
    def location(self) -> str:
        """Where the index lives, for messages."""
        return str(self.root)

    @_locked
    def load(self) -> FaissStore:
        """Load the live generation; raises IndexNotFoundError when nothing was ingested yet."""
        for _attempt in range(5):
            name = current_name(self.root)
            if name is None:
                raise IndexNotFoundError(
                    f"no index yet under {self.root}: ingest documents first (consulta ingest PATH)")
            try:
                self._adopt(read_generation(self.root / name))
                self._loaded_marker = (name, self.generation)
                return self
            except FileNotFoundError:
                time.sleep(0.05)  # a writer replaced it between our reads; read CURRENT again
        raise IndexCorruptError(f"index under {self.root} keeps changing or is missing files; try again")

    def _adopt(self, stored: StoredGeneration) -> None:
        self.identity = stored.identity
        self.generation = stored.generation
        self._chunks = stored.chunks
        index = stored.index
        self._vectors = (index.reconstruct_n(0, index.ntotal) if index.ntotal
                         else np.zeros((0, index.d), dtype=np.float32))
        self._index = index
        self._ann.restore(stored.path, stored.manifest.get("ann"), len(stored.chunks))
        self._english = None if stored.english is None else LanguageField(*stored.english, language="en")
        self._changed()
        self._bm25.loaded(stored.path)

    def _changed(self) -> None:
        """The chunks changed (a load, or a writer's edit): derived lookups are made again when needed.

        The BM25 index is not dropped here: a load drops it, a writer's edit updates it in place.
        """
        self._rows = None
        self._columns = None
        if self._english is not None:
            self._english.changed()

    @_locked
    def refresh(self) -> bool:
        """Reload if another process published a newer generation; True when it did."""
        name = current_name(self.root)
        if name is None or (self._loaded_marker and self._loaded_marker[0] == name):
            return False
        self.load()
        return True

    @_locked
    def ensure_current(self) -> FaissStore:
        """Load the live generation, or the newer one another process published since; raises
        IndexNotFoundError when nothing was ingested yet."""
        if self.identity is None:
            self.load()
        else:
            self.refresh()
        return self

    def load_sparse(self) -> None:
        """Read (or, for an older generation, build) the BM25 data now rather than on the first sparse search."""
        with self._state_lock:
            self._bm25.index(self._chunks)

    load_bm25 = load_sparse  # the older name

    # ---- reading ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._chunks)

    def chunks(self) -> Sequence[Chunk]:
        return self._chunks

    @property
    def index_kind(self) -> str:
        """flat, hnsw or ivf: the index an unfiltered dense search uses for the loaded chunks."""
        return self.index_config.kind_for(len(self._chunks))

    def has_field(self, field: str, model_id: str | None = None) -> bool:
        """Whether the loaded generation holds vectors in `field` (made by `model_id`, when given)."""
        if field == MAIN_FIELD:
            return self.identity is not None and model_id in (None, self.identity.embedder)
        english = self._field(field)
        return english is not None and model_id in (None, english.model_id)

    def _field(self, field: str) -> LanguageField | None:
        if field != ENGLISH_FIELD:
            raise ValueError(f"no vector field {field!r} in the FAISS store: it keeps {MAIN_FIELD!r} and "
                             f"{ENGLISH_FIELD!r}")
        return self._english

    @_locked
    def search(self, vector: np.ndarray, k: int, filter: SearchFilter | None = None, *,
               field: str = MAIN_FIELD) -> list[Hit]:
        """Inner-product search of `field`'s vectors; the "en" field ranks English chunks only ([] when the
        generation has no English vectors)."""
        if field != MAIN_FIELD:
            return self._search_english(vector, k, filter, self._field(field))
        if self._index is None or not self._chunks or k <= 0:
            return []
        q = np.ascontiguousarray(np.asarray(vector, dtype=np.float32).reshape(1, -1))
        if q.shape[1] != self._index.d:
            raise _mismatch("query vector", q.shape[1], self._index.d)
        allowed = self._allowed(filter)
        if allowed is not None:  # exact over the matching rows: k hits whenever k chunks match
            if allowed.size == 0:
                return []
            scores = self._vectors[allowed] @ q[0]
            return [Hit(self._chunks[int(allowed[i])], float(scores[i])) for i in top_k(scores, k)]
        k = min(k, len(self._chunks))
        found = self._ann.search(self._vectors, q, k)
        scores, ids = found if found is not None else self._index.search(q, k)
        return [Hit(self._chunks[i], float(s)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]

    def _search_english(self, vector: np.ndarray, k: int, filter: SearchFilter | None,
                        english: LanguageField | None) -> list[Hit]:
        if english is None or not self._chunks or k <= 0:
            return []
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        if q.shape[0] != english.dim:
            raise _mismatch("English query vector", q.shape[0], english.dim, "English embedder")
        found = english.search(q, k, self._meta_columns(), self._allowed(filter))
        return [Hit(self._chunks[row], score) for row, score in found]

    @property
    def analyzers(self) -> Analyzers:
        """The per-language analysers BM25 indexes and queries with (shared, so terms match)."""
        return self._bm25.analyzers

    @property
    def bm25(self) -> Bm25Index:
        """The BM25 index of the loaded chunks (read from the generation on first use)."""
        return self._bm25.index(self._chunks)

    def _meta_columns(self) -> MetaColumns:
        if self._columns is None:
            self._columns = MetaColumns(self._chunks)
        return self._columns

    def _allowed(self, filter: SearchFilter | None) -> np.ndarray | None:
        """Row numbers of the chunks a filter lets through; None when there is no filter."""
        if filter is None or filter.empty:
            return None
        return self._meta_columns().allowed(filter)

    @_locked
    def search_sparse(self, query: str, k: int, filter: SearchFilter | None = None, *,
                      language: str | None = None, feedback: int = 0) -> list[Hit]:
        """BM25 search; the query is analysed in `language` (stemming, stopwords), default English.

        Hit.score is the BM25 score; only chunks sharing a term with the query come back. With
        `feedback` > 0 the query is expanded with the weightiest terms of its `feedback` best hits
        (pseudo-relevance feedback) and searched again.
        """
        if not self._chunks or k <= 0:
            return []
        allowed = self._allowed(filter)
        mask = None
        if allowed is not None:
            if allowed.size == 0:
                return []
            mask = np.zeros(len(self._chunks), dtype=bool)
            mask[allowed] = True
        sparse = self._bm25.index(self._chunks)
        found = sparse.search(query, k, language=language, allowed=mask)
        if feedback > 0 and found:
            boost = sparse.feedback_terms(query, [r for r, _ in found[:feedback]], language=language)
            if boost:
                found = sparse.search(query, k, language=language, allowed=mask, boost=boost)
        return [Hit(self._chunks[i], s) for i, s in found]

    def _rows_of(self, chunks: Sequence[Chunk], caller: str) -> np.ndarray:
        if self._rows is None:
            self._rows = {c.id: i for i, c in enumerate(self._chunks)}
        rows = [self._rows.get(c.id) for c in chunks]
        if any(r is None for r in rows):
            raise KeyError(f"{caller}() got a chunk that is not in the loaded index")
        return np.asarray(rows, dtype=np.int64)

    @_locked
    def vectors_of(self, chunks: Sequence[Chunk]) -> np.ndarray:
        """The stored (unit) vectors of these chunks, one row each (for MMR and near-duplicate removal)."""
        rows = self._rows_of(chunks, "vectors_of")
        return self._vectors[rows] if len(rows) else np.zeros((0, self._vectors.shape[1]), dtype=np.float32)

    @_locked
    def similarities(self, vector: np.ndarray, chunks: Sequence[Chunk]) -> np.ndarray:
        """Inner product (cosine, for unit vectors) of a query vector with the stored vectors of these chunks."""
        rows = self._rows_of(chunks, "similarities")
        if not len(rows):
            return np.zeros(0, dtype=np.float32)
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        if q.shape[0] != self._vectors.shape[1]:
            raise _mismatch("query vector", q.shape[0], self._vectors.shape[1])
        return self._vectors[rows] @ q

    @_locked
    def documents(self) -> list[dict[str, Any]]:
        """One summary per document: id, source, title, collection, pages, chunks, modified/ingested times."""
        docs: dict[str, dict[str, Any]] = {}
        for c in self._chunks:
            d = docs.get(c.document_id)
            if d is None:
                m = c.meta
                d = docs[c.document_id] = {
                    "document_id": c.document_id, "source": m.get("source"), "title": m.get("title"),
                    "collection": m.get("collection"), "pages": m.get("doc_pages"),
                    "content_hash": m.get("content_hash"), "language": m.get("language"),
                    "modified_at": m.get("modified_at"), "ingested_at": m.get("ingested_at"), "chunks": 0,
                }
            d["chunks"] += 1
        return sorted(docs.values(), key=lambda d: (d["collection"] or "", d["source"] or ""))

    # ---- writing ---------------------------------------------------------------------------
    @contextmanager
    def writer(self, identity: IndexIdentity, *, replace: bool = False) -> Iterator[FaissStore]:
        """Exclusive write session: loads the newest generation, yields, then publishes a new one.

        With replace=True the session starts empty under the new identity (a rebuild). If the block
        raises, nothing is published and the live index is untouched.
        """
        with writer_lock(self.root):
            if self.exists and not replace:
                self.load()
                self._check_identity(identity)
            else:
                generation = latest_on_disk(self.root)
                self._reset(identity)
                self.generation = generation
            self.identity = IndexIdentity(identity.embedder, identity.dim, identity.chunker or
                                          (self.identity.chunker if self.identity else ""))
            self._dirty = replace  # a rebuild publishes even when it ends empty
            yield self
            if self._dirty:
                self._publish()

    def _check_identity(self, identity: IndexIdentity) -> None:
        if self.identity and (self.identity.embedder, self.identity.dim) != (identity.embedder, identity.dim):
            raise EmbedderMismatchError(
                f"the index under {self.root} was built with embedder {self.identity.embedder} "
                f"({self.identity.dim}-d), but the settings now use {identity.embedder} "
                f"({identity.dim}-d); refusing to mix vectors. Run `consulta reindex` to rebuild "
                "it with the new embedder, or restore the old setting.")

    def _reset(self, identity: IndexIdentity) -> None:
        self.identity = identity
        self.generation = 0
        self._chunks = []
        self._vectors = np.zeros((0, identity.dim), dtype=np.float32)
        self._index = None
        self._ann.drop()
        self._english = None
        self._changed()
        self._bm25.start_empty()

    @_locked
    def use_field(self, field: str, model_id: str, dim: int) -> None:
        """Keep `field` ("en") vectors made by `model_id` (inside writer()); existing vectors of another model are
        dropped, and chunks already in the index then have none until `set_vectors` fills them (`missing`)."""
        english = self._field(field)
        if english is not None and english.model_id == model_id and english.dim == dim:
            return
        self._english = LanguageField.empty(model_id, len(self._chunks), dim, language="en")
        if self._chunks:
            self._dirty = True

    def missing(self, field: str) -> list[int]:
        """Rows that should have a vector in `field` and have none (added before `use_field`, or while it was
        off); for "en", the English chunks'."""
        if field == MAIN_FIELD:
            return []
        english = self._field(field)
        return [] if english is None else english.missing(self._meta_columns())

    @_locked
    def set_vectors(self, field: str, rows: Sequence[int], vectors: np.ndarray) -> None:
        """Store `field` vectors for these rows (inside writer(), after `use_field`)."""
        if field == MAIN_FIELD:
            raise ValueError("main vectors come with add(); set_vectors() fills another field")
        english = self._field(field)
        assert english is not None, "set_vectors() before use_field()"
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(rows), english.dim):
            raise ValueError(f"{len(rows)} rows but {field!r} vectors of shape {vectors.shape}")
        if len(rows):
            english.set_rows(rows, vectors)
            self._dirty = True

    @_locked
    def add(self, chunks: Sequence[Chunk], vectors: np.ndarray | Mapping[str, np.ndarray],
            english: np.ndarray | None = None) -> None:
        """Append chunks with their vectors, {"main": ..., "en": ...} (one row per chunk; "en" after `use_field`,
        zero where the chunk is not English; a bare array is the main field). Chunks already in the index are
        skipped."""
        main, extra = self._split_fields(len(chunks), vectors, english)
        if not len(chunks):
            return
        assert self.identity is not None, "add() outside writer()"
        if main.shape[1] != self.identity.dim:
            raise EmbedderMismatchError(
                f"vectors have {main.shape[1]} dimensions, the index {self.identity.dim}; run consulta reindex")
        known = {c.id for c in self._chunks} if self._rows is None else self._rows
        keep = [i for i, c in enumerate(chunks) if c.id not in known]
        if not keep:
            return
        sparse = self._bm25.index(self._chunks)  # the chunks before this edit: only the new ones are analysed
        new = [chunks[i] for i in keep]
        sparse.add([c.index_text for c in new], [c.meta.get("language") or DEFAULT_LANGUAGE for c in new])
        self._chunks.extend(new)
        base = self._vectors if self._vectors.size else np.zeros((0, main.shape[1]), dtype=np.float32)
        self._vectors = np.vstack([base, main[keep]])
        if self._english is not None:
            self._english.append(extra[keep] if extra is not None else None, len(keep))
        self._dirty = True
        self._changed()

    def _split_fields(self, n: int, vectors: np.ndarray | Mapping[str, np.ndarray],
                      english: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """The main and "en" vectors of an add(), checked against the chunk count."""
        fields = dict(vectors) if isinstance(vectors, Mapping) else {MAIN_FIELD: vectors}
        if english is not None:
            fields[ENGLISH_FIELD] = english
        unknown = set(fields) - {MAIN_FIELD, ENGLISH_FIELD}
        if unknown or MAIN_FIELD not in fields:
            raise ValueError(f"add() takes vectors for {MAIN_FIELD!r} and optionally {ENGLISH_FIELD!r}, "
                             f"not {sorted(fields)}")
        main = np.ascontiguousarray(fields[MAIN_FIELD], dtype=np.float32)
        if n != len(main):
            raise ValueError(f"{n} chunks but {len(main)} vectors")
        extra = fields.get(ENGLISH_FIELD)
        if extra is not None:
            assert self._english is not None, "add() with 'en' vectors before use_field('en', ...)"
            extra = np.asarray(extra, dtype=np.float32)
            if extra.shape != (n, self._english.dim):
                raise ValueError(f"{n} chunks but English vectors of shape {extra.shape}")
        return main, extra

    @_locked
    def delete_documents(self, document_ids: Iterable[str]) -> int:
        ids = set(document_ids)
        if not ids:
            return 0
        keep = [i for i, c in enumerate(self._chunks) if c.document_id not in ids]
        removed = len(self._chunks) - len(keep)
        if removed:
            rows = np.asarray(keep, dtype=np.int64)
            self._bm25.index(self._chunks).keep(rows)
            self._ann.drop()  # HNSW cannot remove vectors: rebuilt when next needed
            self._chunks = [self._chunks[i] for i in keep]
            self._vectors = self._vectors[keep] if len(keep) else np.zeros((0, self._vectors.shape[1]),
                                                                              dtype=np.float32)
            if self._english is not None:
                self._english.keep(rows)
            self._dirty = True
            self._changed()
        return removed

    def _publish(self) -> None:
        assert self.identity is not None
        index = faiss.IndexFlatIP(self.identity.dim)
        if len(self._vectors):
            index.add(self._vectors)
        english = None if self._english is None else (self._english.model_id, self._english.vectors)
        new = NewGeneration(self.generation + 1, self.identity, self._chunks, index, english, self._write_extras)
        path = publish_generation(self.root, new)
        self._index = index
        self.generation = new.generation
        self._loaded_marker = (path.name, self.generation)
        self._dirty = False

    def _write_extras(self, folder: Path) -> dict[str, Any]:
        """BM25 and the approximate index of the generation being written; the manifest's "ann" entry."""
        self._bm25.save(folder / "bm25", self._chunks)  # kept up to date by add() and delete_documents()
        ann = self._ann.covering(self._vectors)
        if ann is not None:
            write_index(ann, folder / "ann.faiss")
        return {"ann": None if ann is None else self.index_config.build_params(self.index_kind)}

    # ---- the "en" field under its older names --------------------------------------------
    @property
    def english_embedder(self) -> str | None:
        return None if self._english is None else self._english.model_id

    def has_english(self, embedder: str) -> bool:
        return self.has_field(ENGLISH_FIELD, embedder)

    def search_english(self, vector: np.ndarray, k: int, filter: SearchFilter | None = None) -> list[Hit]:
        return self.search(vector, k, filter, field=ENGLISH_FIELD)

    def use_english(self, embedder: str, dim: int) -> None:
        self.use_field(ENGLISH_FIELD, embedder, dim)

    def english_missing(self) -> list[int]:
        return self.missing(ENGLISH_FIELD)

    def set_english(self, rows: Sequence[int], vectors: np.ndarray) -> None:
        self.set_vectors(ENGLISH_FIELD, rows, vectors)
