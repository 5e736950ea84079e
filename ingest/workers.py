"""Parsing in worker processes: a file that hangs, crashes the parser or eats memory costs only its own
process, and is reported as failed while the other files go on.

Each worker is a spawned process with an address-space limit (RLIMIT_AS); the parent gives it one file at a
time and waits at most `timeout_s` for the Document, killing and replacing the worker when it overruns or dies.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path

from ingest.document import Document
from ingest.errors import FileFormatError
from ingest.loaders import Loader

logger = logging.getLogger(__name__)

# What a file's first bytes say it is; a file whose name says otherwise is "misnamed".
_KINDS = {".pdf": "pdf", ".docx": "zip", ".html": "html", ".htm": "html"}
_TEXT_SUFFIXES = {".txt", ".text", ".log", ".md", ".markdown"}


def sniff(head: bytes) -> str:
    """pdf, zip (docx), html, binary or text, from a file's first bytes."""
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    low = head[:512].lstrip().lower()
    if low.startswith((b"<!doctype html", b"<html", b"<?xml")) or b"<html" in low:
        return "html"
    sample = head[:4096]
    if b"\x00" in sample and not sample.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "binary"
    return "text"


_KIND_NAMES = {"pdf": "a PDF", "zip": "a ZIP/Office file", "html": "HTML", "binary": "binary data", "text": "text"}


def read_file(loaders: Mapping[str, Loader], path: Path, max_bytes: int) -> Document:
    """Check a file's type, size and first bytes, then load it; FileFormatError says why it cannot be."""
    suffix = path.suffix.lower()
    loader = loaders.get(suffix)
    if loader is None:
        raise FileFormatError(f"{path}: unsupported file type '{path.suffix or '(none)'}' "
                              f"(supported: {', '.join(sorted(loaders))})", "unsupported")
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise FileFormatError(f"{path}: {size / 2**20:.1f} MB is over the limit of {max_bytes / 2**20:g} MB "
                                  "(CONSULTA_INGEST__MAX_FILE_MB)", "too_large")
        if size == 0:
            raise FileFormatError(f"{path}: the file is empty", "empty")
        with open(path, "rb") as f:
            head = f.read(4096)
    except PermissionError as e:
        raise FileFormatError(f"{path}: cannot read the file (permission denied)", "unreadable") from e
    kind = sniff(head)
    expected = _KINDS.get(suffix, "text" if suffix in _TEXT_SUFFIXES else None)
    if expected == "html" and kind == "text":
        kind = "html"  # HTML fragments without a doctype
    if expected is not None and kind != expected and not (expected == "text" and kind == "html"):
        raise FileFormatError(f"{path}: named {suffix} but the content is {_KIND_NAMES[kind]}; rename the file "
                              "to its real type", "misnamed")
    return loader.load(path)


@dataclass(slots=True)
class Parsed:
    """One file's outcome: a Document, or the error line and reason; seconds spent parsing it."""

    path: Path
    document: Document | None
    error: str | None = None
    reason: str | None = None
    seconds: float = 0.0


def _limit_memory(memory_mb: int) -> None:
    try:
        import resource

        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError) as e:  # not on this platform: the timeout still applies
        logger.debug("no memory limit for parse workers: %s", e)


def _worker_main(conn: Connection, loaders: Mapping[str, Loader], max_bytes: int, memory_mb: int) -> None:
    _limit_memory(memory_mb)
    while True:
        try:
            task = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if task is None:
            return
        path = Path(task)
        t = time.process_time()
        try:
            doc = read_file(loaders, path, max_bytes)
            conn.send(("ok", doc, None, time.process_time() - t))
        except FileFormatError as e:
            conn.send(("error", str(e), e.reason, time.process_time() - t))
        except MemoryError:
            conn.send(("error", f"{path}: needs more than {memory_mb} MB of memory to parse "
                                "(CONSULTA_INGEST__PARSE_MEMORY_MB)", "out_of_memory", time.process_time() - t))
        except OSError as e:
            conn.send(("error", f"{path}: {e.strerror or e}", "unreadable", time.process_time() - t))
        except Exception as e:  # noqa: BLE001 - any parser bug is one failed file, not a failed ingest
            conn.send(("error", f"{path}: could not be parsed ({type(e).__name__}: {e})", "corrupt",
                       time.process_time() - t))


class _Worker:
    def __init__(self, ctx, loaders, max_bytes: int, memory_mb: int) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, loaders, max_bytes, memory_mb), daemon=True,
                                name="consulta-parse")
        self.proc.start()
        child.close()
        self.task: Path | None = None
        self.started = 0.0

    def stop(self, *, kill: bool = False) -> None:
        if not kill:
            try:
                self.conn.send(None)
            except (OSError, ValueError):
                kill = True
            self.proc.join(timeout=2)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)
        self.conn.close()


class ParsePool:
    """Parses files in `workers` processes; yields a Parsed per file as each finishes (any order)."""

    def __init__(self, loaders: Mapping[str, Loader], *, workers: int = 2, timeout_s: float = 300,
                 memory_mb: int = 3072, max_bytes: int = 200 * 1024 * 1024) -> None:
        self.loaders = dict(loaders)
        self.workers = max(1, workers)
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.max_bytes = max_bytes

    def parse(self, paths: list[Path]) -> Iterator[Parsed]:
        if not paths:
            return
        ctx = mp.get_context("spawn")  # not fork: the parent may hold model threads and locks
        pending = deque(paths)
        pool: list[_Worker] = []
        try:
            for _ in range(min(self.workers, len(paths))):
                pool.append(_Worker(ctx, self.loaders, self.max_bytes, self.memory_mb))
            while pending or any(w.task is not None for w in pool):
                for w in pool:
                    if w.task is None and pending:
                        w.task, w.started = pending.popleft(), time.monotonic()
                        w.conn.send(str(w.task))
                busy = [w for w in pool if w.task is not None]
                deadline = min(w.started for w in busy) + self.timeout_s
                ready = wait([w.conn for w in busy] + [w.proc.sentinel for w in busy],
                             timeout=max(0.0, deadline - time.monotonic()))
                for i, w in enumerate(pool):
                    if w.task is None:
                        continue
                    outcome = self._outcome(w, ready)
                    if outcome is None:
                        continue
                    parsed, healthy = outcome
                    w.task = None
                    if not healthy:
                        w.stop(kill=True)
                        pool[i] = _Worker(ctx, self.loaders, self.max_bytes, self.memory_mb) if pending else w
                    yield parsed
        finally:
            for w in pool:
                if w.proc.is_alive():
                    w.stop(kill=w.task is not None)

    def _outcome(self, w: _Worker, ready: list) -> tuple[Parsed, bool] | None:
        """(result, worker still usable) once the worker's file is done, died or overran; None while it runs."""
        path = w.task
        assert path is not None
        elapsed = time.monotonic() - w.started
        if w.conn in ready or w.conn.poll():
            try:
                status, payload, reason, seconds = w.conn.recv()
            except (EOFError, OSError):
                pass  # died while answering: handled below as a crash
            else:
                if status == "ok":
                    return Parsed(path, payload, seconds=seconds), True
                return Parsed(path, None, payload, reason, seconds), True
        if not w.proc.is_alive() or w.proc.sentinel in ready:
            w.proc.join(timeout=1)
            code = w.proc.exitcode
            return Parsed(path, None, f"{path}: the parser stopped (exit code {code}) while reading this file; "
                          f"it may need more than {self.memory_mb} MB (CONSULTA_INGEST__PARSE_MEMORY_MB) or be "
                          "damaged", "crashed", elapsed), False
        if elapsed >= self.timeout_s:
            return Parsed(path, None, f"{path}: parsing took more than {self.timeout_s:g} s and was stopped "
                          "(CONSULTA_INGEST__PARSE_TIMEOUT_S)", "timeout", elapsed), False
        return None
