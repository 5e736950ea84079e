"""The ingestion pipeline: files -> documents -> chunks with metadata -> vectors -> a new index generation."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ingest.chunker import Chunker
from ingest.document import Document, context_line, display_title, document_id_for
from ingest.errors import FileFormatError, IndexSettingsMismatchError, InputPathError
from ingest.loaders import Loader
from ingest.workers import ParsePool, read_file
from retrieval.embedder import Embedder
from retrieval.language import detect_language
from retrieval.store import ENGLISH_FIELD, MAIN_FIELD, IndexIdentity, StoreWriter, VectorStore
from retrieval.types import Chunk, chunk_id_for

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]  # (file, files done, files total)
FileProgressFn = Callable[[str, int, int], None]  # (file, chunks embedded, chunks of that file)
FileDoneFn = Callable[["FileResult"], None]  # a file's result once it is ingested or failed


@dataclass(slots=True)
class FileResult:
    source: str
    status: str  # "ingested" | "unchanged" | "failed"
    chunks: int = 0
    pages: int | None = None
    error: str | None = None
    seconds: float = 0.0
    reason: str | None = None  # for failed files: corrupt, encrypted, empty, no_text, too_large, misnamed, ...
    pages_without_text: list[int] = field(default_factory=list)
    table_pages: list[int] = field(default_factory=list)
    language: str | None = None

    def to_dict(self) -> dict:
        return {"source": self.source, "status": self.status, "chunks": self.chunks, "pages": self.pages,
                "error": self.error, "seconds": round(self.seconds, 3), "reason": self.reason,
                "pages_without_text": self.pages_without_text, "table_pages": self.table_pages,
                "language": self.language}


@dataclass(slots=True)
class IngestReport:
    collection: str
    files: list[FileResult] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # sources pruned because they no longer exist
    total_chunks: int = 0
    seconds: float = 0.0
    # parse: CPU seconds in the parse workers (summed over them); chunk, embed: seconds in this process
    timings: dict[str, float] = field(default_factory=lambda: {"parse": 0.0, "chunk": 0.0, "embed": 0.0})
    pages: int = 0
    # chunks in the index without the context line while it is on (indexed before it, or while it was off)
    without_context: int = 0

    @property
    def chunks_added(self) -> int:
        return sum(f.chunks for f in self.files if f.status == "ingested")

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    def to_dict(self) -> dict:
        return {"collection": self.collection, "files": [f.to_dict() for f in self.files],
                "chunks_added": self.chunks_added, "total_chunks": self.total_chunks,
                "failed": len(self.failed), "seconds": round(self.seconds, 3),
                "timings": {k: round(v, 3) for k, v in self.timings.items()}, "removed": list(self.removed),
                "pages": self.pages, "without_context": self.without_context}


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class IngestPipeline:
    """Parses files in worker processes, chunks, embeds in batches and publishes one index generation."""

    def __init__(self, loaders: dict[str, Loader], chunker: Chunker, embedder: Embedder, store: VectorStore,
                 *, max_file_bytes: int = 200 * 1024 * 1024, embed_batch: int = 64, parse_workers: int = 2,
                 parse_timeout_s: float = 300, parse_memory_mb: int = 3072,
                 english_embedder: Embedder | None = None, context_header: bool = True) -> None:
        self.loaders = loaders
        self.context_header = context_header
        self.chunker = chunker
        self.embedder = embedder
        self.english_embedder = english_embedder
        self.store = store
        self.max_file_bytes = max_file_bytes
        self.embed_batch = embed_batch
        self.parse_pool = ParsePool(loaders, workers=parse_workers, timeout_s=parse_timeout_s,
                                    memory_mb=parse_memory_mb, max_bytes=max_file_bytes)

    def collect(self, paths: Iterable[str | Path]) -> list[Path]:
        """Expand folders into the supported files under them; a missing path is an error."""
        files: list[Path] = []
        for p in map(Path, paths):
            if not p.exists():
                raise InputPathError(f"{p}: no such file or folder")
            if p.is_dir():
                found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in self.loaders
                               and not any(part.startswith(".") for part in f.relative_to(p).parts))
                if not found:
                    raise InputPathError(f"{p}: no supported files inside (supported: "
                                         f"{', '.join(sorted(self.loaders))})")
                files.extend(found)
            else:
                files.append(p)
        seen: set[Path] = set()
        unique = []
        for f in files:
            r = f.resolve()
            if r not in seen:
                seen.add(r)
                unique.append(r)
        return unique

    def _load(self, path: Path) -> Document:
        """Read one file in this process (the pipeline itself parses in worker processes)."""
        return read_file(self.loaders, path, self.max_file_bytes)

    def _chunks_for(self, doc: Document, collection: str, content_hash: str, ingested_at: str) -> list[Chunk]:
        document_id = document_id_for(collection, doc.source)
        spans = self.chunker.split(doc)
        language = doc.meta.get("language") or detect_language(doc.text)
        modified = datetime.fromtimestamp(os.stat(doc.source).st_mtime, UTC).isoformat() \
            if os.path.exists(doc.source) else None
        title = display_title(doc.source, doc.title)
        contexts: dict[str | None, str] = {}  # one context line per section, not per chunk
        chunks = []
        for s in spans:
            page, page_end = doc.page_at(s.start), doc.page_at(max(s.start, s.end - 1))
            section = doc.section_at(s.start)
            meta = {
                "source": doc.source, "title": title, "page": page,
                "page_end": page_end if page_end != page else None,
                "section": section, "collection": collection, "language": language,
                "modified_at": modified, "ingested_at": ingested_at, "content_hash": content_hash,
                "chunker": self.chunker.settings_id, "doc_pages": doc.meta.get("doc_pages"),
                "format": doc.meta.get("format"),
            }
            if self.context_header:
                if section not in contexts:
                    contexts[section] = context_line(doc.source, doc.title, section)
                meta["context"] = contexts[section]
            if s.parts:
                meta["spans"] = [list(p) for p in s.parts]
            meta.update(s.meta)
            chunks.append(Chunk(chunk_id_for(document_id, s.start, s.end), document_id, s.text, s.start, s.end,
                                meta))
        return chunks

    def ingest(self, paths: Sequence[str | Path], collection: str = "default",
               progress: ProgressFn | None = None, *, prune: bool = False,
               file_progress: FileProgressFn | None = None, on_file: FileDoneFn | None = None) -> IngestReport:
        """Ingest files and folders into `collection`; unchanged files are skipped by content hash.

        Files that fail are reported and skipped; the others are published together in one new index
        generation, so a crash part-way leaves the previous index as it was. With prune=True, documents
        of `collection` whose source lies under one of the given folders but no longer exists are removed
        in the same generation.
        """
        return self.ingest_groups({collection: list(paths)}, prune=prune, progress=progress,
                                  file_progress=file_progress, on_file=on_file)[0]

    def ingest_groups(self, groups: dict[str, list[str | Path]], *, replace: bool = False, prune: bool = False,
                      progress: ProgressFn | None = None, file_progress: FileProgressFn | None = None,
                      on_file: FileDoneFn | None = None) -> list[IngestReport]:
        """Ingest several collections in one write session; replace=True rebuilds the index from these alone;
        prune=True also removes each collection's documents that are gone from under its given folders."""
        identity = IndexIdentity(self.embedder.model_id, self.embedder.dim, self.chunker.settings_id)
        collected = {c: self.collect(p) for c, p in groups.items()}
        reports = []
        with self.store.writer(identity, replace=replace) as store:
            if not replace:
                self._check_chunker(store)
            if self.english_embedder is not None:
                self._backfill_english(store, file_progress)
            for collection, files in collected.items():
                reports.append(self._ingest_files(store, files, collection, progress, file_progress, on_file))
                if prune:
                    reports[-1].removed = self._prune(store, groups[collection], collection)
                reports[-1].total_chunks = len(store)
        without_context = sum("context" not in c.meta for c in self.store.chunks()) if self.context_header else 0
        for r in reports:
            r.total_chunks = len(self.store)
            r.without_context = without_context
        return reports

    def _check_chunker(self, store: StoreWriter) -> None:
        """Refuse to mix chunks made with other chunker settings into the index (their ids and spans differ)."""
        mine = self.chunker.settings_id
        other = sorted({str(c.meta.get("chunker")) for c in store.chunks() if c.meta.get("chunker")} - {mine})
        if other:
            raise IndexSettingsMismatchError(
                f"the index under {store.location} was built with chunker {', '.join(other)}, but the settings now use "
                f"{mine}; refusing to mix chunkings. Run `consulta reindex` to rebuild it with the new chunker "
                "settings, or restore the old ones.")

    def _ingest_files(self, store: StoreWriter, files: list[Path], collection: str,
                      progress: ProgressFn | None, file_progress: FileProgressFn | None,
                      on_file: FileDoneFn | None = None) -> IngestReport:
        t0 = time.perf_counter()
        report = IngestReport(collection=collection)
        ingested_at = datetime.now(UTC).isoformat()
        known = {d["document_id"]: d.get("content_hash") for d in store.documents()}
        results: dict[Path, FileResult] = {}
        hashes: dict[Path, str] = {}
        for path in files:
            try:
                hashes[path] = _sha256_file(path)
            except OSError as e:
                results[path] = FileResult(str(path), "failed", error=f"{path}: {e.strerror or e}",
                                           reason="unreadable")
                continue
            if known.get(document_id_for(collection, str(path))) == hashes[path]:
                results[path] = FileResult(str(path), "unchanged")
        done = len(results)
        if progress:
            progress("", done, len(files))
        for parsed in self.parse_pool.parse([p for p in files if p not in results]):
            path, source = parsed.path, str(parsed.path)
            report.timings["parse"] += parsed.seconds
            if progress:
                progress(source, done, len(files))
            ft = time.perf_counter()
            try:
                if parsed.document is None:
                    raise FileFormatError(parsed.error or f"{path}: could not be parsed", parsed.reason or "corrupt")
                doc = parsed.document
                t = time.perf_counter()
                chunks = self._chunks_for(doc, collection, hashes[path], ingested_at)
                report.timings["chunk"] += time.perf_counter() - t
                if not chunks:
                    raise FileFormatError(f"{path}: no text to index", "no_text")
                t = time.perf_counter()
                vectors = self._embed(chunks, source, file_progress)
                fields = {MAIN_FIELD: vectors}
                english = self._embed_english(chunks)
                if english is not None:
                    fields[ENGLISH_FIELD] = english
                report.timings["embed"] += time.perf_counter() - t
                store.delete_documents([document_id_for(collection, source)])
                store.add(chunks, fields)
                report.pages += doc.meta.get("doc_pages") or 0
                results[path] = FileResult(source, "ingested", len(chunks), doc.meta.get("doc_pages"),
                                           seconds=time.perf_counter() - ft + parsed.seconds,
                                           pages_without_text=list(doc.meta.get("pages_without_text") or []),
                                           table_pages=list(doc.meta.get("table_pages") or []),
                                           language=chunks[0].meta.get("language"))
            except FileFormatError as e:
                logger.warning("skipped %s", e)
                results[path] = FileResult(source, "failed", error=str(e), reason=e.reason,
                                           seconds=time.perf_counter() - ft + parsed.seconds)
            if on_file:
                on_file(results[path])
            done += 1
        if progress:
            progress("", len(files), len(files))
        report.files = [results[p] for p in files]
        report.seconds = time.perf_counter() - t0
        return report

    def _embed(self, chunks: list[Chunk], source: str, file_progress: FileProgressFn | None) -> np.ndarray:
        """Embed chunk texts in batches of embed_batch, reporting progress after each."""
        parts = []
        for i in range(0, len(chunks), self.embed_batch):
            parts.append(self.embedder.embed_documents([c.index_text for c in chunks[i:i + self.embed_batch]]))
            if file_progress:
                file_progress(source, min(len(chunks), i + self.embed_batch), len(chunks))
        return np.vstack(parts)

    def _embed_english(self, chunks: list[Chunk]) -> np.ndarray | None:
        """The English embedder's vectors for the English chunks, zero rows for the others; None when it is off."""
        if self.english_embedder is None:
            return None
        out = np.zeros((len(chunks), self.english_embedder.dim), dtype=np.float32)
        rows = [i for i, c in enumerate(chunks) if c.meta.get("language") == "en"]
        for i in range(0, len(rows), self.embed_batch):
            part = rows[i:i + self.embed_batch]
            out[part] = self.english_embedder.embed_documents([chunks[r].index_text for r in part])
        return out

    def _backfill_english(self, store: StoreWriter, file_progress: FileProgressFn | None = None) -> None:
        """Give the English chunks already indexed their English vectors, if the index has none (it was made
        before the setting, or while it was off); published with the rest of this write. Progress is reported
        as for a file named "English vectors (once)"."""
        assert self.english_embedder is not None
        store.use_field(ENGLISH_FIELD, self.english_embedder.model_id, self.english_embedder.dim)
        rows = store.missing(ENGLISH_FIELD)
        if not rows:
            return
        logger.info("adding English vectors to %d indexed chunks (once: the index was made without them)", len(rows))
        t = time.perf_counter()
        chunks = store.chunks()
        for i in range(0, len(rows), self.embed_batch):
            part = rows[i:i + self.embed_batch]
            vectors = self.english_embedder.embed_documents([chunks[r].index_text for r in part])
            store.set_vectors(ENGLISH_FIELD, part, vectors)
            if file_progress:
                file_progress("English vectors (once)", min(len(rows), i + self.embed_batch), len(rows))
        logger.info("added English vectors to %d indexed chunks in %.1f s", len(rows), time.perf_counter() - t)

    @staticmethod
    def _prune(store: StoreWriter, paths: Sequence[str | Path], collection: str) -> list[str]:
        """Delete `collection`'s documents whose source is under one of the folders in `paths` and is gone.

        Only folders count: a document outside them, or in another collection, is never touched.
        """
        roots = [Path(p).resolve() for p in paths if Path(p).is_dir()]
        gone = [d for d in store.documents()
                if d["collection"] == collection and d["source"]
                and any(Path(d["source"]).is_relative_to(r) for r in roots) and not Path(d["source"]).exists()]
        store.delete_documents([d["document_id"] for d in gone])
        for d in gone:
            logger.info("pruned %s (no longer on disk)", d["source"])
        return [d["source"] for d in gone]

    def remove(self, sources: Sequence[str], collection: str | None = None) -> int:
        """Remove documents by source path (in one collection, or all); returns chunks removed."""
        wanted = {str(Path(s).resolve()) for s in sources} | set(sources)
        identity = IndexIdentity(self.embedder.model_id, self.embedder.dim, self.chunker.settings_id)
        with self.store.writer(identity) as store:
            ids = [d["document_id"] for d in store.documents()
                   if (d["source"] in wanted or d["document_id"] in wanted)
                   and (collection is None or d["collection"] == collection)]
            return store.delete_documents(ids)
