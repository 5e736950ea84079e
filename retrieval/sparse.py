"""The BM25 index of a store's loaded generation: read from its bm25/ folder when first needed, or built in memory
when that generation has none (written before BM25, or with other BM25 settings; the next write stores it), and
updated in place by a writer's edits."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from retrieval.bm25 import DEFAULT_LANGUAGE, Analyzers, Bm25Index, Bm25Params
from retrieval.generations import fsync_tree
from retrieval.types import Chunk

logger = logging.getLogger(__name__)


class GenerationBm25:
    """The BM25 index of the loaded chunks, made when first needed; `analyzers` are shared with queries."""

    def __init__(self, params: Bm25Params) -> None:
        self.params = params
        self.analyzers = Analyzers()
        self._index: Bm25Index | None = None
        self._folder: Path | None = None  # where the loaded generation keeps its BM25 data
        self._lock = threading.Lock()

    def loaded(self, gen_dir: Path) -> None:
        """A generation was loaded: its BM25 data is read from there when first needed."""
        with self._lock:
            self._index, self._folder = None, gen_dir / "bm25"

    def start_empty(self) -> None:
        """A rebuild (or a first write) starts with no chunks."""
        with self._lock:
            self._index, self._folder = Bm25Index(self.params, self.analyzers), None

    def index(self, chunks: Sequence[Chunk]) -> Bm25Index:
        """The BM25 index of `chunks`, the store's loaded chunks."""
        with self._lock:
            if self._index is None:
                self._index = self._read(len(chunks)) or self._build(chunks)
            return self._index

    def save(self, folder: Path, chunks: Sequence[Chunk]) -> None:
        """Write the index into `folder` (a generation being written) and fsync it."""
        t = time.perf_counter()
        self.index(chunks).save(folder)
        fsync_tree(folder)
        logger.debug("BM25 for %d chunks saved in %.2f s", len(chunks), time.perf_counter() - t)

    def _read(self, n: int) -> Bm25Index | None:
        if self._folder is None:
            return None
        try:
            return Bm25Index.load(self._folder, self.params, n, self.analyzers)
        except (OSError, ValueError) as e:
            logger.warning("unreadable BM25 data in %s (%s); rebuilding it in memory", self._folder.parent, e)
            return None

    def _build(self, chunks: Sequence[Chunk]) -> Bm25Index:
        t = time.perf_counter()
        index = Bm25Index.build([c.index_text for c in chunks],
                                [c.meta.get("language") or DEFAULT_LANGUAGE for c in chunks],
                                self.params, self.analyzers)
        logger.info("built BM25 for %d chunks in %.1f s (index written before BM25, or with other BM25 settings; "
                    "the next ingest stores it)", len(chunks), time.perf_counter() - t)
        return index
