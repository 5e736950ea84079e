"""The vector store: a FAISS index plus chunk metadata, persisted as atomic generations.

Layout under the index folder:

    CURRENT              name of the live generation, replaced atomically (os.replace)
    LOCK                 advisory lock held by the one writer at a time
    gen-00000007/        manifest.json, vectors.faiss (exact), ann.faiss (HNSW or IVF, large corpora only),
                         chunks.jsonl, bm25/ (BM25 term counts), english.npy (optional: a second, English-only
                         embedder's vectors, zero for chunks in other languages): written whole, then published

A crash at any moment leaves CURRENT pointing at a complete generation: a writer builds the next
generation in a temporary folder, fsyncs it, renames it into place and only then swaps CURRENT, so
vectors, BM25 data and chunk metadata always switch together. Readers (a running API) notice a new
CURRENT and reload. A generation written before BM25 was added has no bm25/ folder; its BM25 data is
built in memory when first needed, and the next write stores it.

Index types: exact inner product (IndexFlatIP) up to `IndexConfig.exact_max` chunks, an approximate
index above it (HNSW by default, or IVF), or whichever the settings force. A search with a filter
always scores the chunks the filter lets through exactly (a matrix product over those rows), so k hits
come back whenever k chunks match, however low they would rank in the whole index.

Writes are incremental where it is cheap: added chunks are analysed for BM25 on their own (the term
counts of the others are kept), and added vectors are appended to the approximate index; deleting
chunks rebuilds the approximate index (FAISS HNSW cannot remove) but never re-analyses text.
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import faiss
import numpy as np

from retrieval.bm25 import DEFAULT_LANGUAGE, Analyzers, Bm25Index, Bm25Params
from retrieval.errors import EmbedderMismatchError, IndexCorruptError, IndexNotFoundError, IndexWriteError
from retrieval.types import Chunk, Hit, SearchFilter, chunk_time

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


class VectorStore(Protocol):
    """Holds chunks and their vectors; searches by inner product and by BM25, filters applied inside the search."""

    def add(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None: ...

    def delete_documents(self, document_ids: Iterable[str]) -> int: ...

    def search(self, vector: np.ndarray, k: int, filter: SearchFilter | None = None) -> list[Hit]: ...

    def search_sparse(self, query: str, k: int, filter: SearchFilter | None = None, *,
                      language: str | None = None, feedback: int = 0) -> list[Hit]: ...

    def similarities(self, vector: np.ndarray, chunks: Sequence[Chunk]) -> np.ndarray: ...

    def vectors_of(self, chunks: Sequence[Chunk]) -> np.ndarray: ...

    def chunks(self) -> Sequence[Chunk]: ...

    def __len__(self) -> int: ...


IndexKind = Literal["auto", "flat", "hnsw", "ivf"]


@dataclass(frozen=True, slots=True)
class IndexConfig:
    """Which FAISS index answers unfiltered dense searches, and how it is tuned."""

    kind: IndexKind = "auto"
    exact_max: int = 200_000  # "auto": exact search up to this many chunks, HNSW above
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    ivf_nprobe: int = 16

    def __post_init__(self) -> None:
        if self.kind not in ("auto", "flat", "hnsw", "ivf"):
            raise ValueError(f"unknown index kind {self.kind!r}: choose auto, flat, hnsw or ivf")

    def kind_for(self, n: int) -> str:
        """flat, hnsw or ivf for a corpus of n chunks (IVF needs enough vectors to train its lists)."""
        kind = ("flat" if n <= self.exact_max else "hnsw") if self.kind == "auto" else self.kind
        return "flat" if kind == "ivf" and n < 1000 else kind

    def build_params(self, kind: str) -> dict[str, Any]:
        """What the stored approximate index was built with; another value rebuilds it."""
        return {"kind": kind, "m": self.hnsw_m, "ef_construction": self.ef_construction} if kind == "hnsw" \
            else {"kind": kind}


def _build_ann(kind: str, vectors: np.ndarray, config: IndexConfig) -> faiss.Index:
    d = vectors.shape[1]
    index: faiss.Index
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.ef_construction
    elif kind == "ivf":
        nlist = max(8, int(4 * np.sqrt(len(vectors))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = vectors if len(vectors) <= 64 * nlist else vectors[
            np.random.default_rng(0).choice(len(vectors), 64 * nlist, replace=False)]
        index.train(sample)
    else:
        raise ValueError(f"no approximate index of kind {kind!r}")
    if len(vectors):
        index.add(vectors)
    return index


@dataclass(frozen=True, slots=True)
class IndexIdentity:
    """What produced the vectors: mixing vectors of two models would give meaningless scores."""

    embedder: str
    dim: int
    chunker: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"embedder": self.embedder, "dim": self.dim, "chunker": self.chunker}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """fsync every file in a folder written by a library (bm25s does not), then the folder itself."""
    for p in folder.iterdir():
        if p.is_file():
            with open(p, "rb+") as f:
                os.fsync(f.fileno())
    _fsync_dir(folder)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _locked(method):
    """Run a method under the store's lock, so a search never sees a half-swapped generation (a reload or a
    writer's edit in another thread of the same process, e.g. an ingestion job beside the API's queries)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._state_lock:
            return method(self, *args, **kwargs)
    return wrapper


class FaissStore:
    """FAISS vectors (exact, or HNSW/IVF when large), BM25 and chunk metadata; one generation loaded in memory."""

    def __init__(self, root: str | Path, *, bm25: Bm25Params | None = None, index: IndexConfig | None = None) -> None:
        self.root = Path(root)
        self.bm25_params = bm25 or Bm25Params()
        self.index_config = index or IndexConfig()
        # The approximate index over the first _ann_rows vectors (None: exact search, or not made yet).
        self._ann: faiss.Index | None = None
        self._ann_rows = 0
        self._ann_lock = threading.Lock()
        self._columns: dict[str, np.ndarray] | None = None
        self.identity: IndexIdentity | None = None
        self.generation = 0
        self._chunks: list[Chunk] = []
        self._vectors = np.zeros((0, 0), dtype=np.float32)
        self._index: faiss.Index | None = None
        self._loaded_marker: tuple[str, int] | None = None
        # BM25 of the loaded chunks: read from the generation's bm25/ on first sparse search, or built
        # in memory when that generation has none; _gen_dir is None while a writer holds unsaved changes.
        self._sparse: Bm25Index | None = None
        self._gen_dir: Path | None = None
        self._rows: dict[str, int] | None = None
        self._analyzers = Analyzers()
        self._sparse_lock = threading.Lock()
        self._state_lock = threading.RLock()
        # The English embedder's vectors, one row per chunk (zero: not English, or not embedded yet), its id,
        # and the rows they can rank (English chunks with a vector), made when first needed.
        self._english: np.ndarray | None = None
        self.english_embedder: str | None = None
        self._english_rows: np.ndarray | None = None

    # ---- reading ---------------------------------------------------------------------------
    @property
    def exists(self) -> bool:
        return (self.root / "CURRENT").is_file()

    def _current_name(self) -> str | None:
        try:
            return (self.root / "CURRENT").read_text().strip() or None
        except FileNotFoundError:
            return None

    @_locked
    def load(self) -> FaissStore:
        """Load the live generation; raises IndexNotFoundError when nothing was ingested yet."""
        for _attempt in range(5):
            name = self._current_name()
            if name is None:
                raise IndexNotFoundError(
                    f"no index yet under {self.root}: ingest documents first (consulta ingest PATH)")
            gen_dir = self.root / name
            try:
                self._load_generation(gen_dir)
                self._loaded_marker = (name, self.generation)
                return self
            except FileNotFoundError:
                time.sleep(0.05)  # a writer replaced it between our reads; read CURRENT again
        raise IndexCorruptError(f"index under {self.root} keeps changing or is missing files; try again")

    def _load_generation(self, gen_dir: Path) -> None:
        try:
            manifest = json.loads((gen_dir / "manifest.json").read_text())
        except json.JSONDecodeError as e:
            raise IndexCorruptError(f"unreadable manifest in {gen_dir}: {e}") from e
        if manifest.get("format") != FORMAT_VERSION:
            raise IndexCorruptError(
                f"index format {manifest.get('format')} in {gen_dir} is not {FORMAT_VERSION}: run consulta reindex")
        chunks: list[Chunk] = []
        with open(gen_dir / "chunks.jsonl", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    chunks.append(Chunk.from_dict(json.loads(line)))
        index = faiss.read_index(str(gen_dir / "vectors.faiss"))
        if index.ntotal != len(chunks):
            raise IndexCorruptError(
                f"{gen_dir}: {index.ntotal} vectors but {len(chunks)} chunks; run consulta reindex")
        ident = manifest["identity"]
        self.identity = IndexIdentity(ident["embedder"], int(ident["dim"]), ident.get("chunker", ""))
        self.generation = int(manifest["generation"])
        self._chunks = chunks
        self._vectors = (index.reconstruct_n(0, index.ntotal) if index.ntotal
                         else np.zeros((0, index.d), dtype=np.float32))
        self._index = index
        self._ann, self._ann_rows = None, 0
        kind = self.index_config.kind_for(len(chunks))
        if kind != "flat" and (gen_dir / "ann.faiss").is_file() \
                and manifest.get("ann") == self.index_config.build_params(kind):
            self._ann = faiss.read_index(str(gen_dir / "ann.faiss"))
            self._ann_rows = self._ann.ntotal
        self._english, self.english_embedder = None, None
        english = manifest.get("english")
        if english:
            vectors = np.load(gen_dir / "english.npy")
            if vectors.shape != (len(chunks), int(english["dim"])):
                raise IndexCorruptError(
                    f"{gen_dir}: {vectors.shape[0]} English vectors but {len(chunks)} chunks; run consulta reindex")
            self._english, self.english_embedder = vectors, str(english["embedder"])
        self._changed(gen_dir)
        self._sparse = None

    def _changed(self, gen_dir: Path | None) -> None:
        """The chunks changed (a load, or a writer's edit): derived lookups are made again when needed.

        The BM25 index is not dropped here: a load drops it, a writer's edit updates it in place.
        """
        self._rows = None
        self._columns = None
        self._english_rows = None
        self._gen_dir = gen_dir

    @_locked
    def refresh(self) -> bool:
        """Reload if another process published a newer generation; True when it did."""
        name = self._current_name()
        if name is None or (self._loaded_marker and self._loaded_marker[0] == name):
            return False
        self.load()
        return True

    def __len__(self) -> int:
        return len(self._chunks)

    def chunks(self) -> Sequence[Chunk]:
        return self._chunks

    @_locked
    def search(self, vector: np.ndarray, k: int, filter: SearchFilter | None = None) -> list[Hit]:
        if self._index is None or not self._chunks or k <= 0:
            return []
        q = np.ascontiguousarray(np.asarray(vector, dtype=np.float32).reshape(1, -1))
        if q.shape[1] != self._index.d:
            raise EmbedderMismatchError(
                f"query vector has {q.shape[1]} dimensions, the index {self._index.d}: "
                "the embedder changed since ingestion; run consulta reindex")
        allowed = self._allowed(filter)
        if allowed is not None:  # exact over the matching rows: k hits whenever k chunks match
            if allowed.size == 0:
                return []
            scores = self._vectors[allowed] @ q[0]
            top = _top_k(scores, k)
            return [Hit(self._chunks[int(allowed[i])], float(scores[i])) for i in top]
        k = min(k, len(self._chunks))
        ann = self._ann_index()
        if ann is None:
            scores, ids = self._index.search(q, k)
        else:
            scores, ids = ann.search(q, k, params=self._ann_params())
        return [Hit(self._chunks[i], float(s)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]

    @property
    def index_kind(self) -> str:
        """flat, hnsw or ivf: the index an unfiltered dense search uses for the loaded chunks."""
        return self.index_config.kind_for(len(self._chunks))

    def _ann_params(self) -> faiss.SearchParameters:
        if isinstance(self._ann, faiss.IndexHNSW):
            return faiss.SearchParametersHNSW(efSearch=self.index_config.ef_search)  # type: ignore[attr-defined]
        return faiss.SearchParametersIVF(nprobe=self.index_config.ivf_nprobe)  # type: ignore[call-arg]

    def _ann_index(self) -> faiss.Index | None:
        """The approximate index covering every loaded vector, or None when exact search is the choice."""
        kind = self.index_kind
        if kind == "flat":
            return None
        with self._ann_lock:
            n = len(self._vectors)
            if self._ann is not None and self._ann_rows < n:
                self._ann.add(self._vectors[self._ann_rows:])  # chunks added since: appended, not rebuilt
                self._ann_rows = n
            if self._ann is None:
                t = time.perf_counter()
                self._ann = _build_ann(kind, self._vectors, self.index_config)
                self._ann_rows = n
                logger.info("built %s index over %d vectors in %.1f s", kind, n, time.perf_counter() - t)
            return self._ann

    @property
    def analyzers(self) -> Analyzers:
        """The per-language analysers BM25 indexes and queries with (shared, so terms match)."""
        return self._analyzers

    @property
    def bm25(self) -> Bm25Index:
        """The BM25 index of the loaded chunks (read from the generation on first use)."""
        return self._sparse_index()

    @_locked
    def load_bm25(self) -> None:
        """Read (or, for an older generation, build) the BM25 data now rather than on the first sparse search."""
        self._sparse_index()

    def _sparse_index(self) -> Bm25Index:
        with self._sparse_lock:
            if self._sparse is None:
                sparse = None
                if self._gen_dir is not None:
                    try:
                        sparse = Bm25Index.load(self._gen_dir / "bm25", self.bm25_params, len(self._chunks),
                                                self._analyzers)
                    except (OSError, ValueError) as e:
                        logger.warning("unreadable BM25 data in %s (%s); rebuilding it in memory", self._gen_dir, e)
                if sparse is None:
                    t = time.perf_counter()
                    sparse = self._build_sparse()
                    logger.info("built BM25 for %d chunks in %.1f s (index written before BM25, or with other "
                                "BM25 settings; the next ingest stores it)", len(self._chunks),
                                time.perf_counter() - t)
                self._sparse = sparse
            return self._sparse

    def _build_sparse(self) -> Bm25Index:
        return Bm25Index.build([c.index_text for c in self._chunks],
                               [c.meta.get("language") or DEFAULT_LANGUAGE for c in self._chunks],
                               self.bm25_params, self._analyzers)

    def _meta_columns(self) -> dict[str, np.ndarray]:
        """Chunk metadata as arrays, made once per loaded generation, so that a filter costs no Python loop."""
        cols = self._columns
        if cols is None:
            metas = [c.meta for c in self._chunks]
            # strings only (None -> ""), so that np.isin may sort them
            cols = {key: np.array([str(m.get(key) or default) for m in metas] or [""], dtype=object)[:len(metas)]
                    for key, default in (("collection", "default"), ("source", ""), ("language", ""))}
            cols["section"] = np.array([str(m.get("section") or "").casefold() for m in metas] or [""],
                                       dtype=object)[:len(metas)]
            cols["time"] = np.array([t if (t := chunk_time(m)) is not None else np.nan for m in metas],
                                    dtype=np.float64)
            self._columns = cols
        return cols

    def _allowed(self, filter: SearchFilter | None) -> np.ndarray | None:
        """Row numbers of the chunks a filter lets through; None when there is no filter."""
        if filter is None or filter.empty:
            return None
        cols = self._meta_columns()
        mask = np.ones(len(self._chunks), dtype=bool)
        for key, wanted in (("collection", filter.collections), ("source", filter.sources),
                            ("language", filter.languages)):
            if wanted is not None:
                mask &= np.isin(cols[key], np.array([str(w) for w in wanted], dtype=object))
        if filter.sections is not None:
            sections = [s.casefold() for s in filter.sections]
            mask &= np.fromiter((any(w in sec for w in sections) for sec in cols["section"]), dtype=np.bool_,
                                count=len(mask))
        if filter.modified_after is not None or filter.modified_before is not None:
            t = cols["time"]
            with np.errstate(invalid="ignore"):
                mask &= ~np.isnan(t)
                if filter.modified_after is not None:
                    mask &= t >= filter.modified_after
                if filter.modified_before is not None:
                    mask &= t <= filter.modified_before
        return np.flatnonzero(mask)

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
        sparse = self._sparse_index()
        found = sparse.search(query, k, language=language, allowed=mask)
        if feedback > 0 and found:
            boost = sparse.feedback_terms(query, [r for r, _ in found[:feedback]], language=language)
            if boost:
                found = sparse.search(query, k, language=language, allowed=mask, boost=boost)
        return [Hit(self._chunks[i], s) for i, s in found]

    def has_english(self, embedder: str) -> bool:
        """Whether this generation holds English vectors made by `embedder` (a model id)."""
        return self._english is not None and self.english_embedder == embedder

    def _english_rows_state(self) -> tuple[np.ndarray, np.ndarray]:
        """Per row: is the chunk English, and has it an English vector (a zero row has none)."""
        assert self._english is not None
        return self._meta_columns()["language"] == "en", np.einsum("ij,ij->i", self._english, self._english) > 0

    def _english_mask(self) -> np.ndarray:
        """True for the rows the English ranking may return: English chunks that have a vector."""
        if self._english_rows is None:
            is_en, has_vector = self._english_rows_state()
            self._english_rows = is_en & has_vector
        return self._english_rows

    @_locked
    def search_english(self, vector: np.ndarray, k: int, filter: SearchFilter | None = None) -> list[Hit]:
        """Exact inner-product search over the English chunks' English vectors; [] when there are none."""
        if self._english is None or not self._chunks or k <= 0:
            return []
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        if q.shape[0] != self._english.shape[1]:
            raise EmbedderMismatchError(
                f"English query vector has {q.shape[0]} dimensions, the index {self._english.shape[1]}: "
                "the English embedder changed since ingestion; run consulta reindex")
        mask = self._english_mask()
        allowed = self._allowed(filter)
        if allowed is not None:
            narrowed = np.zeros_like(mask)
            narrowed[allowed] = mask[allowed]
            mask = narrowed
        rows = np.flatnonzero(mask)
        if rows.size == 0:
            return []
        if rows.size * 4 < len(self._chunks):  # a narrow filter: score only its rows
            scores = self._english[rows] @ q
        else:  # one product over all rows (no copy of the matrix), then keep the allowed ones
            scores = (self._english @ q)[rows]
        return [Hit(self._chunks[int(rows[i])], float(scores[i])) for i in _top_k(scores, k)]

    def _row_of(self) -> dict[str, int]:
        if self._rows is None:
            self._rows = {c.id: i for i, c in enumerate(self._chunks)}
        return self._rows

    @_locked
    def vectors_of(self, chunks: Sequence[Chunk]) -> np.ndarray:
        """The stored (unit) vectors of these chunks, one row each (for MMR and near-duplicate removal)."""
        rows = self._row_of()
        idx = [rows.get(c.id) for c in chunks]
        if any(r is None for r in idx):
            raise KeyError("vectors_of() got a chunk that is not in the loaded index")
        return self._vectors[np.asarray(idx, dtype=np.int64)] if idx else np.zeros((0, self._vectors.shape[1]),
                                                                                   dtype=np.float32)

    @_locked
    def similarities(self, vector: np.ndarray, chunks: Sequence[Chunk]) -> np.ndarray:
        """Inner product (cosine, for unit vectors) of a query vector with the stored vectors of these chunks."""
        rows = [self._row_of().get(c.id) for c in chunks]
        if any(r is None for r in rows):
            raise KeyError("similarities() got a chunk that is not in the loaded index")
        if not rows:
            return np.zeros(0, dtype=np.float32)
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        if q.shape[0] != self._vectors.shape[1]:
            raise EmbedderMismatchError(
                f"query vector has {q.shape[0]} dimensions, the index {self._vectors.shape[1]}: "
                "the embedder changed since ingestion; run consulta reindex")
        return self._vectors[np.asarray(rows, dtype=np.int64)] @ q

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
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "LOCK", "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                if self.exists and not replace:
                    self.load()
                    if self.identity and (self.identity.embedder, self.identity.dim) != (identity.embedder,
                                                                                          identity.dim):
                        raise EmbedderMismatchError(
                            f"the index under {self.root} was built with embedder {self.identity.embedder} "
                            f"({self.identity.dim}-d), but the settings now use {identity.embedder} "
                            f"({identity.dim}-d); refusing to mix vectors. Run `consulta reindex` to rebuild "
                            "it with the new embedder, or restore the old setting.")
                else:
                    generation = self._generation_on_disk()
                    self._reset(identity)
                    self.generation = generation
                    self._dirty = replace
                self.identity = IndexIdentity(identity.embedder, identity.dim, identity.chunker or
                                              (self.identity.chunker if self.identity else ""))
                self._dirty = getattr(self, "_dirty", False) and replace
                yield self
                if self._dirty:
                    self._publish()
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _generation_on_disk(self) -> int:
        gens = sorted(p.name for p in self.root.glob("gen-*") if p.is_dir())
        return int(gens[-1].split("-")[1]) if gens else 0

    def _reset(self, identity: IndexIdentity) -> None:
        self.identity = identity
        self.generation = 0
        self._chunks = []
        self._vectors = np.zeros((0, identity.dim), dtype=np.float32)
        self._index = None
        self._ann, self._ann_rows = None, 0
        self._english, self.english_embedder = None, None
        self._changed(None)
        self._sparse = Bm25Index(self.bm25_params, self._analyzers)

    @_locked
    def use_english(self, embedder: str, dim: int) -> None:
        """Keep English vectors made by `embedder` (inside writer()); existing vectors of another one are dropped.

        Chunks already in the index then have none until `set_english` fills them (`english_missing`).
        """
        if self._english is not None and self.english_embedder == embedder and self._english.shape[1] == dim:
            return
        self._english = np.zeros((len(self._chunks), dim), dtype=np.float32)
        self.english_embedder = embedder
        if self._chunks:
            self._dirty = True
            self._changed(None)

    def english_missing(self) -> list[int]:
        """Rows of English chunks without an English vector (added before `use_english`, or while it was off)."""
        if self._english is None:
            return []
        is_en, has_vector = self._english_rows_state()
        return np.flatnonzero(is_en & ~has_vector).tolist()

    @_locked
    def set_english(self, rows: Sequence[int], vectors: np.ndarray) -> None:
        """Store English vectors for these rows (inside writer(), after `use_english`)."""
        assert self._english is not None, "set_english() before use_english()"
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(rows), self._english.shape[1]):
            raise ValueError(f"{len(rows)} rows but English vectors of shape {vectors.shape}")
        if len(rows):
            self._english[np.asarray(rows, dtype=np.int64)] = vectors
            self._dirty = True
            self._changed(None)

    @_locked
    def add(self, chunks: Sequence[Chunk], vectors: np.ndarray, english: np.ndarray | None = None) -> None:
        """Append chunks with their vectors; `english`, one row per chunk (zero where the chunk is not English),
        after `use_english`. Chunks already in the index are skipped."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        if english is not None:
            assert self._english is not None, "add(english=...) before use_english()"
            english = np.asarray(english, dtype=np.float32)
            if english.shape != (len(chunks), self._english.shape[1]):
                raise ValueError(f"{len(chunks)} chunks but English vectors of shape {english.shape}")
        if not len(chunks):
            return
        assert self.identity is not None, "add() outside writer()"
        if vectors.shape[1] != self.identity.dim:
            raise EmbedderMismatchError(
                f"vectors have {vectors.shape[1]} dimensions, the index {self.identity.dim}; run consulta reindex")
        known = self._row_of()
        keep = [i for i, c in enumerate(chunks) if c.id not in known]
        if not keep:
            return
        sparse = self._sparse_index()  # the BM25 of the chunks before this edit: only the new ones are analysed
        new = [chunks[i] for i in keep]
        sparse.add([c.index_text for c in new], [c.meta.get("language") or DEFAULT_LANGUAGE for c in new])
        self._chunks.extend(new)
        base = self._vectors if self._vectors.size else np.zeros((0, vectors.shape[1]), dtype=np.float32)
        self._vectors = np.vstack([base, vectors[keep]])
        if self._english is not None:
            extra = english[keep] if english is not None else np.zeros((len(keep), self._english.shape[1]),
                                                                         dtype=np.float32)
            self._english = np.vstack([self._english, extra])
        self._dirty = True
        self._changed(None)

    @_locked
    def delete_documents(self, document_ids: Iterable[str]) -> int:
        ids = set(document_ids)
        if not ids:
            return 0
        keep = [i for i, c in enumerate(self._chunks) if c.document_id not in ids]
        removed = len(self._chunks) - len(keep)
        if removed:
            self._sparse_index().keep(np.asarray(keep, dtype=np.int64))
            with self._ann_lock:
                self._ann, self._ann_rows = None, 0  # HNSW cannot remove vectors: rebuilt when next needed
            self._chunks = [self._chunks[i] for i in keep]
            self._vectors = self._vectors[keep] if len(keep) else np.zeros((0, self._vectors.shape[1]),
                                                                              dtype=np.float32)
            if self._english is not None:
                self._english = self._english[np.asarray(keep, dtype=np.int64)]
            self._dirty = True
            self._changed(None)
        return removed

    def _build_index(self) -> faiss.Index:
        assert self.identity is not None
        index = faiss.IndexFlatIP(self.identity.dim)
        if len(self._vectors):
            index.add(self._vectors)
        return index

    def _publish(self) -> None:
        assert self.identity is not None
        self.generation += 1
        name = f"gen-{self.generation:08d}"
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
        try:
            index = self._build_index()
            faiss.write_index(index, str(tmp / "vectors.faiss"))
            with open(tmp / "vectors.faiss", "rb+") as f:
                os.fsync(f.fileno())
            lines = "".join(json.dumps(c.to_dict(), ensure_ascii=False) + "\n" for c in self._chunks)
            _write_file(tmp / "chunks.jsonl", lines.encode("utf-8"))
            t = time.perf_counter()
            sparse = self._sparse_index()  # kept up to date by add() and delete_documents()
            sparse.save(tmp / "bm25")
            _fsync_tree(tmp / "bm25")
            logger.debug("BM25 for %d chunks saved in %.2f s", len(self._chunks), time.perf_counter() - t)
            self._index = index  # the approximate index is made from these vectors
            ann = self._ann_index()
            if ann is not None:
                faiss.write_index(ann, str(tmp / "ann.faiss"))
                with open(tmp / "ann.faiss", "rb+") as f:
                    os.fsync(f.fileno())
            english = None
            if self._english is not None:
                with open(tmp / "english.npy", "wb") as f:
                    np.save(f, self._english)
                    f.flush()
                    os.fsync(f.fileno())
                english = {"embedder": self.english_embedder, "dim": int(self._english.shape[1])}
            manifest = {"format": FORMAT_VERSION, "generation": self.generation,
                        "identity": self.identity.to_dict(), "chunks": len(self._chunks),
                        "created_at": time.time(), "english": english,
                        "ann": None if ann is None else self.index_config.build_params(self.index_kind)}
            _write_file(tmp / "manifest.json", json.dumps(manifest, indent=1).encode())
            _fsync_dir(tmp)
            final = self.root / name
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
            _write_file(self.root / "CURRENT.tmp", name.encode())
            os.replace(self.root / "CURRENT.tmp", self.root / "CURRENT")
            _fsync_dir(self.root)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            self.generation -= 1
            # faiss reports a failed write as RuntimeError with the OS reason in its text
            if isinstance(e, OSError) or (isinstance(e, RuntimeError) and "write error" in str(e)):
                reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).rsplit("(", 1)[-1].rstrip(")")
                raise IndexWriteError(f"could not write the index under {self.root}: {reason}; nothing was changed "
                                      "(the previous index is intact); free space there and run the command "
                                      "again") from e
            raise
        self._changed(self.root / name)
        self._loaded_marker = (name, self.generation)
        self._dirty = False
        self._collect_garbage(keep=name)
        logger.info("published index generation %s with %d chunks", name, len(self._chunks))

    def _collect_garbage(self, keep: str) -> None:
        """Remove generations older than the previous one, and leftovers of crashed writers."""
        gens = sorted(p for p in self.root.glob("gen-*") if p.is_dir())
        for p in gens[:-2]:
            if p.name != keep:
                shutil.rmtree(p, ignore_errors=True)
        for p in self.root.glob(".tmp-*"):
            shutil.rmtree(p, ignore_errors=True)


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k highest scores, best first (ties in position order)."""
    if scores.size > k:
        top = np.argpartition(-scores, k - 1)[:k]
    else:
        top = np.arange(scores.size)
    return top[np.lexsort((top, -scores[top]))]
