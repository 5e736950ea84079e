"""The retriever: query -> embed -> vector search (filters inside) -> re-rank -> hits."""

from __future__ import annotations

import logging
import threading

from retrieval.embedder import Embedder
from retrieval.errors import EmbedderMismatchError
from retrieval.reranker import NoopReranker, Reranker
from retrieval.store import FaissStore
from retrieval.types import Hit, SearchFilter

logger = logging.getLogger(__name__)


class Retriever:
    """Dense retrieval over a FaissStore, picking up generations that other processes publish."""

    def __init__(self, embedder: Embedder, store: FaissStore, *, reranker: Reranker | None = None,
                 candidates: int = 20) -> None:
        self.embedder = embedder
        self.store = store
        self.reranker = reranker or NoopReranker()
        self.candidates = candidates
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        self.embedder.warm_up()

    def _ensure_loaded(self) -> None:
        with self._lock:
            if self.store.identity is None:
                self.store.load()
            else:
                self.store.refresh()
            ident = self.store.identity
            if ident is not None and ident.embedder != self.embedder.model_id:
                raise EmbedderMismatchError(
                    f"the index was built with embedder {ident.embedder}, but the settings now use "
                    f"{self.embedder.model_id}; run `consulta reindex` or restore the old setting")

    def retrieve(self, query: str, k: int = 5, filter: SearchFilter | None = None) -> list[Hit]:
        self._ensure_loaded()
        vector = self.embedder.embed_query(query)
        hits = self.store.search(vector, max(k, self.candidates), filter)
        return self.reranker.rerank(query, hits, k)
