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

from ingest.chunker import Chunker, Span
from ingest.document import Document, document_id_for
from ingest.errors import FileFormatError, InputPathError
from ingest.language import detect_language
from ingest.loaders import Loader
from retrieval.embedder import Embedder
from retrieval.store import FaissStore, IndexIdentity
from retrieval.types import Chunk, chunk_id_for

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]  # (event, done, total)


@dataclass(slots=True)
class FileResult:
    source: str
    status: str  # "ingested" | "unchanged" | "failed"
    chunks: int = 0
    pages: int | None = None
    error: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"source": self.source, "status": self.status, "chunks": self.chunks, "pages": self.pages,
                "error": self.error, "seconds": round(self.seconds, 3)}


@dataclass(slots=True)
class IngestReport:
    collection: str
    files: list[FileResult] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # sources pruned because they no longer exist
    total_chunks: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=lambda: {"parse": 0.0, "chunk": 0.0, "embed": 0.0})

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
                "timings": {k: round(v, 3) for k, v in self.timings.items()}, "removed": list(self.removed)}


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class IngestPipeline:
    """Reads files with the loader for their suffix, chunks, embeds in batches and publishes one generation."""

    def __init__(self, loaders: dict[str, Loader], chunker: Chunker, embedder: Embedder, store: FaissStore,
                 *, max_file_bytes: int = 200 * 1024 * 1024, embed_batch: int = 64) -> None:
        self.loaders = loaders
        self.chunker = chunker
        self.embedder = embedder
        self.store = store
        self.max_file_bytes = max_file_bytes
        self.embed_batch = embed_batch

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
        loader = self.loaders.get(path.suffix.lower())
        if loader is None:
            raise FileFormatError(f"{path}: unsupported file type '{path.suffix or '(none)'}' "
                                  f"(supported: {', '.join(sorted(self.loaders))})")
        size = path.stat().st_size
        if size > self.max_file_bytes:
            raise FileFormatError(f"{path}: {size} bytes is over the limit of {self.max_file_bytes} "
                                  "(CONSULTA_INGEST__MAX_FILE_MB)")
        if size == 0:
            raise FileFormatError(f"{path}: the file is empty")
        try:
            return loader.load(path)
        except PermissionError as e:
            raise FileFormatError(f"{path}: cannot read the file (permission denied)") from e

    def _split(self, doc: Document) -> list[Span]:
        """Chunk each page on its own, so that every chunk cites exactly one page."""
        if not doc.pages:
            return self.chunker.split(doc)
        spans: list[Span] = []
        for _page, start, end in doc.pages:
            if end <= start:
                continue
            page_doc = Document(source=doc.source, text=doc.text[start:end], title=doc.title, meta=doc.meta)
            spans.extend(Span(s.start + start, s.end + start, s.text) for s in self.chunker.split(page_doc))
        return spans

    def _chunks_for(self, doc: Document, collection: str, content_hash: str, ingested_at: str) -> list[Chunk]:
        document_id = document_id_for(collection, doc.source)
        spans = self._split(doc)
        language = doc.meta.get("language") or detect_language(doc.text)
        modified = datetime.fromtimestamp(os.stat(doc.source).st_mtime, UTC).isoformat() \
            if os.path.exists(doc.source) else None
        chunks = []
        for s in spans:
            page, page_end = doc.page_at(s.start), doc.page_at(max(s.start, s.end - 1))
            meta = {
                "source": doc.source, "title": doc.title, "page": page,
                "page_end": page_end if page_end != page else None,
                "section": doc.section_at(s.start), "collection": collection, "language": language,
                "modified_at": modified, "ingested_at": ingested_at, "content_hash": content_hash,
                "chunker": self.chunker.settings_id, "doc_pages": doc.meta.get("doc_pages"),
                "format": doc.meta.get("format"),
            }
            chunks.append(Chunk(chunk_id_for(document_id, s.start, s.end), document_id, s.text, s.start, s.end,
                                meta))
        return chunks

    def ingest(self, paths: Sequence[str | Path], collection: str = "default",
               progress: ProgressFn | None = None, *, prune: bool = False) -> IngestReport:
        """Ingest files and folders into `collection`; unchanged files are skipped by content hash.

        Files that fail are reported and skipped; the others are published together in one new index
        generation, so a crash part-way leaves the previous index as it was. With prune=True, documents
        of `collection` whose source lies under one of the given folders but no longer exists are removed
        in the same generation.
        """
        return self.ingest_groups({collection: list(paths)}, prune=prune, progress=progress)[0]

    def ingest_groups(self, groups: dict[str, list[str | Path]], *, replace: bool = False, prune: bool = False,
                      progress: ProgressFn | None = None) -> list[IngestReport]:
        """Ingest several collections in one write session; replace=True rebuilds the index from these alone;
        prune=True also removes each collection's documents that are gone from under its given folders."""
        identity = IndexIdentity(self.embedder.model_id, self.embedder.dim, self.chunker.settings_id)
        collected = {c: self.collect(p) for c, p in groups.items()}
        reports = []
        with self.store.writer(identity, replace=replace) as store:
            for collection, files in collected.items():
                reports.append(self._ingest_files(store, files, collection, progress))
                if prune:
                    reports[-1].removed = self._prune(store, groups[collection], collection)
                reports[-1].total_chunks = len(store)
        for r in reports:
            r.total_chunks = len(self.store)
        return reports

    def _ingest_files(self, store: FaissStore, files: list[Path], collection: str,
                      progress: ProgressFn | None) -> IngestReport:
        t0 = time.perf_counter()
        report = IngestReport(collection=collection)
        ingested_at = datetime.now(UTC).isoformat()
        known = {d["document_id"]: d.get("content_hash") for d in store.documents()}
        for n, path in enumerate(files):
            if progress:
                progress(str(path), n, len(files))
            ft = time.perf_counter()
            source = str(path)
            try:
                content_hash = _sha256_file(path)
                doc_id = document_id_for(collection, source)
                if known.get(doc_id) == content_hash:
                    report.files.append(FileResult(source, "unchanged"))
                    continue
                t = time.perf_counter()
                doc = self._load(path)
                report.timings["parse"] += time.perf_counter() - t
                t = time.perf_counter()
                chunks = self._chunks_for(doc, collection, content_hash, ingested_at)
                report.timings["chunk"] += time.perf_counter() - t
                if not chunks:
                    raise FileFormatError(f"{path}: no text to index")
                t = time.perf_counter()
                vectors = self.embedder.embed_documents([c.text for c in chunks])
                report.timings["embed"] += time.perf_counter() - t
                store.delete_documents([doc_id])
                store.add(chunks, vectors)
                report.files.append(FileResult(source, "ingested", len(chunks), doc.meta.get("doc_pages"),
                                               seconds=time.perf_counter() - ft))
            except (FileFormatError, OSError) as e:
                msg = str(e) if isinstance(e, FileFormatError) else f"{path}: {e.strerror or e}"
                logger.warning("skipped %s", msg)
                report.files.append(FileResult(source, "failed", error=msg, seconds=time.perf_counter() - ft))
        if progress:
            progress("", len(files), len(files))
        report.seconds = time.perf_counter() - t0
        return report

    @staticmethod
    def _prune(store: FaissStore, paths: Sequence[str | Path], collection: str) -> list[str]:
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
