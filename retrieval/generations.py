"""Index generations on disk: read one whole, write the next one atomically, one writer at a time.

Layout under the index folder:

    CURRENT              name of the live generation, replaced atomically (os.replace)
    LOCK                 advisory lock held by the one writer at a time
    gen-00000007/        manifest.json, vectors.faiss (exact), ann.faiss (HNSW or IVF, large corpora only),
                         chunks.jsonl, bm25/ (BM25 term counts), english.npy (optional: the "en" vector field,
                         a second, English-only embedder's vectors, zero for chunks in other languages)

A writer builds the next generation in a temporary folder, fsyncs it, renames it into place and only then
swaps CURRENT, so a crash at any moment leaves CURRENT pointing at a complete generation.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from retrieval.errors import IndexCorruptError, IndexWriteError
from retrieval.types import Chunk, IndexIdentity

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass(slots=True)
class StoredGeneration:
    """One generation as read from disk (the approximate index and BM25 are read by their owners)."""

    path: Path
    generation: int
    identity: IndexIdentity
    chunks: list[Chunk]
    index: faiss.Index
    manifest: dict[str, Any]
    english: tuple[str, np.ndarray] | None  # (model id, vectors) of the "en" field


@dataclass(slots=True)
class NewGeneration:
    """What a writer publishes; `write_extras(folder)` adds the files that have owners of their own (bm25/, ann)
    and returns manifest entries."""

    generation: int
    identity: IndexIdentity
    chunks: Sequence[Chunk]
    index: faiss.Index
    english: tuple[str, np.ndarray] | None
    write_extras: Callable[[Path], dict[str, Any]]


def current_name(root: Path) -> str | None:
    try:
        return (root / "CURRENT").read_text().strip() or None
    except FileNotFoundError:
        return None


def latest_on_disk(root: Path) -> int:
    """The highest generation number under root (a crashed writer's too), 0 when none."""
    gens = sorted(p.name for p in root.glob("gen-*") if p.is_dir())
    return int(gens[-1].split("-")[1]) if gens else 0


@contextmanager
def writer_lock(root: Path) -> Iterator[None]:
    """Hold the index's LOCK: one writer at a time, across processes."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "LOCK", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def read_generation(gen_dir: Path) -> StoredGeneration:
    """Read a generation's manifest, chunks, exact index and English vectors; FileNotFoundError when it went."""
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
    english = None
    if manifest.get("english"):
        vectors = np.load(gen_dir / "english.npy")
        if vectors.shape != (len(chunks), int(manifest["english"]["dim"])):
            raise IndexCorruptError(
                f"{gen_dir}: {vectors.shape[0]} English vectors but {len(chunks)} chunks; run consulta reindex")
        english = (str(manifest["english"]["embedder"]), vectors)
    return StoredGeneration(gen_dir, int(manifest["generation"]),
                            IndexIdentity(ident["embedder"], int(ident["dim"]), ident.get("chunker", "")),
                            chunks, index, manifest, english)


def publish_generation(root: Path, new: NewGeneration) -> Path:
    """Write `new` as gen-NNNNNNNN, make it CURRENT, and remove generations older than the previous one.

    Raises IndexWriteError (the live generation untouched) when the disk refuses the write.
    """
    name = f"gen-{new.generation:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        _write_generation(tmp, new)
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        _write_file(root / "CURRENT.tmp", name.encode())
        os.replace(root / "CURRENT.tmp", root / "CURRENT")
        _fsync_dir(root)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        # faiss reports a failed write as RuntimeError with the OS reason in its text
        if isinstance(e, OSError) or (isinstance(e, RuntimeError) and "write error" in str(e)):
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).rsplit("(", 1)[-1].rstrip(")")
            raise IndexWriteError(f"could not write the index under {root}: {reason}; nothing was changed "
                                  "(the previous index is intact); free space there and run the command "
                                  "again") from e
        raise
    _collect_garbage(root, keep=name)
    logger.info("published index generation %s with %d chunks", name, len(new.chunks))
    return root / name


def _write_generation(folder: Path, new: NewGeneration) -> None:
    write_index(new.index, folder / "vectors.faiss")
    lines = "".join(json.dumps(c.to_dict(), ensure_ascii=False) + "\n" for c in new.chunks)
    _write_file(folder / "chunks.jsonl", lines.encode("utf-8"))
    extras = new.write_extras(folder)
    english = None
    if new.english is not None:
        model_id, vectors = new.english
        with open(folder / "english.npy", "wb") as f:
            np.save(f, vectors)
            f.flush()
            os.fsync(f.fileno())
        english = {"embedder": model_id, "dim": int(vectors.shape[1])}
    manifest = {"format": FORMAT_VERSION, "generation": new.generation, "identity": new.identity.to_dict(),
                "chunks": len(new.chunks), "created_at": time.time(), "english": english, **extras}
    _write_file(folder / "manifest.json", json.dumps(manifest, indent=1).encode())
    _fsync_dir(folder)


def _collect_garbage(root: Path, keep: str) -> None:
    """Remove generations older than the previous one, and leftovers of crashed writers."""
    gens = sorted(p for p in root.glob("gen-*") if p.is_dir())
    for p in gens[:-2]:
        if p.name != keep:
            shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(".tmp-*"):
        shutil.rmtree(p, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def fsync_tree(folder: Path) -> None:
    """fsync every file in a folder written by a library (bm25s does not), then the folder itself."""
    for p in folder.iterdir():
        if p.is_file():
            _fsync_file(p)
    _fsync_dir(folder)


def write_index(index: faiss.Index, path: Path) -> None:
    """Write a FAISS index and fsync it."""
    faiss.write_index(index, str(path))
    _fsync_file(path)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
