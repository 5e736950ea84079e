"""The vector store: a FAISS index plus chunk metadata, persisted as atomic generations.

Layout under the index folder:

    CURRENT              name of the live generation, replaced atomically (os.replace)
    LOCK                 advisory lock held by the one writer at a time
    gen-00000007/        manifest.json, vectors.faiss, chunks.jsonl: written whole, then published

A crash at any moment leaves CURRENT pointing at a complete generation: a writer builds the next
generation in a temporary folder, fsyncs it, renames it into place and only then swaps CURRENT.
Readers (a running API) notice a new CURRENT and reload.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import faiss
import numpy as np

from retrieval.errors import EmbedderMismatchError, IndexCorruptError, IndexNotFoundError
from retrieval.types import Chunk, Hit, SearchFilter

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


class VectorStore(Protocol):
    """Holds chunks and their vectors; searches by inner product, with filters applied inside the search."""

    def add(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None: ...

    def delete_documents(self, document_ids: Iterable[str]) -> int: ...

    def search(self, vector: np.ndarray, k: int, filter: SearchFilter | None = None) -> list[Hit]: ...

    def chunks(self) -> Sequence[Chunk]: ...

    def __len__(self) -> int: ...


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


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class FaissStore:
    """Exact inner-product FAISS index with chunk metadata, one generation loaded in memory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.identity: IndexIdentity | None = None
        self.generation = 0
        self._chunks: list[Chunk] = []
        self._vectors = np.zeros((0, 0), dtype=np.float32)
        self._index: faiss.Index | None = None
        self._loaded_marker: tuple[str, int] | None = None

    # ---- reading ---------------------------------------------------------------------------
    @property
    def exists(self) -> bool:
        return (self.root / "CURRENT").is_file()

    def _current_name(self) -> str | None:
        try:
            return (self.root / "CURRENT").read_text().strip() or None
        except FileNotFoundError:
            return None

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

    def search(self, vector: np.ndarray, k: int, filter: SearchFilter | None = None) -> list[Hit]:
        if self._index is None or not self._chunks or k <= 0:
            return []
        q = np.ascontiguousarray(np.asarray(vector, dtype=np.float32).reshape(1, -1))
        if q.shape[1] != self._index.d:
            raise EmbedderMismatchError(
                f"query vector has {q.shape[1]} dimensions, the index {self._index.d}: "
                "the embedder changed since ingestion; run consulta reindex")
        params = None
        if filter is not None and not filter.empty:
            allowed = np.array([i for i, c in enumerate(self._chunks) if filter.matches(c)], dtype=np.int64)
            if allowed.size == 0:
                return []
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
            k = min(k, int(allowed.size))
        k = min(k, len(self._chunks))
        scores, ids = self._index.search(q, k, params=params)
        return [Hit(self._chunks[i], float(s)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]

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

    def add(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        if not len(chunks):
            return
        assert self.identity is not None, "add() outside writer()"
        if vectors.shape[1] != self.identity.dim:
            raise EmbedderMismatchError(
                f"vectors have {vectors.shape[1]} dimensions, the index {self.identity.dim}; run consulta reindex")
        known = {c.id for c in self._chunks}
        keep = [i for i, c in enumerate(chunks) if c.id not in known]
        self._chunks.extend(chunks[i] for i in keep)
        base = self._vectors if self._vectors.size else np.zeros((0, vectors.shape[1]), dtype=np.float32)
        self._vectors = np.vstack([base, vectors[keep]])
        self._dirty = True

    def delete_documents(self, document_ids: Iterable[str]) -> int:
        ids = set(document_ids)
        keep = [i for i, c in enumerate(self._chunks) if c.document_id not in ids]
        removed = len(self._chunks) - len(keep)
        if removed:
            self._chunks = [self._chunks[i] for i in keep]
            self._vectors = self._vectors[keep] if len(keep) else np.zeros((0, self._vectors.shape[1]),
                                                                              dtype=np.float32)
            self._dirty = True
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
            manifest = {"format": FORMAT_VERSION, "generation": self.generation,
                        "identity": self.identity.to_dict(), "chunks": len(self._chunks),
                        "created_at": time.time()}
            _write_file(tmp / "manifest.json", json.dumps(manifest, indent=1).encode())
            _fsync_dir(tmp)
            final = self.root / name
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
            _write_file(self.root / "CURRENT.tmp", name.encode())
            os.replace(self.root / "CURRENT.tmp", self.root / "CURRENT")
            _fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            self.generation -= 1
            raise
        self._index = index
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
