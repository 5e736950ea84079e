"""The Reranker seam: reorders first-stage hits by a finer relevance judgement."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from retrieval.types import Hit


class Reranker(Protocol):
    """Scores (query, passage) pairs and returns the hits best first, at most `top_k`."""

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int) -> list[Hit]: ...


class NoopReranker:
    """Keeps the first-stage order: the default until a re-ranker earns its place by measurement."""

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int) -> list[Hit]:
        return list(hits[:top_k])


class CrossEncoderReranker:
    """A sentence-transformers CrossEncoder loaded from a local folder (e.g. BAAI/bge-reranker-base)."""

    def __init__(self, path: str, *, batch_size: int = 16) -> None:
        self.path = path
        self.batch_size = batch_size
        self._model = None

    def warm_up(self) -> None:
        if self._model is None:
            from sentence_transformers import CrossEncoder

            self._model = CrossEncoder(self.path, device="cpu", local_files_only=True)

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int) -> list[Hit]:
        if not hits:
            return []
        self.warm_up()
        scores = self._model.predict([(query, h.chunk.text) for h in hits], batch_size=self.batch_size,
                                     show_progress_bar=False)
        ranked = sorted(zip(hits, scores, strict=True), key=lambda p: -float(p[1]))
        return [Hit(h.chunk, float(s), h.dense_score) for h, s in ranked[:top_k]]
