"""Fine-tuning the cross-encoder re-ranker on the indexed documents (`consulta reranker train`).

The serving model writes the questions, the first stage (the configured retrieval without re-ranking) mines
the hard negatives, and the model is saved where reranker=cross-encoder finds it by default.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from app.container import Services
from app.errors import ConsultaError
from retrieval.reranker_training import TrainingConfig, TrainingReport, train_reranker
from retrieval.types import SearchFilter


def train_from_index(services: Services, *, collection: str | None = None, questions: int = 300,
                     epochs: int = 2, out: Path | None = None, base: Path | None = None, seed: int = 0,
                     progress: Callable[[str, int, int], None] | None = None) -> TrainingReport:
    store = services.store.load()
    chunks = [c for c in store.chunks() if collection is None or c.collection == collection]
    if not chunks:
        raise ConsultaError("no passages to train on" + (f" in collection '{collection}'" if collection else "")
                            + ": ingest documents first (consulta ingest PATH)")
    flt = SearchFilter(collections=(collection,)) if collection else None
    first = services.first_stage
    out = out or services.settings.reranker_dir
    try:
        return train_reranker(chunks, services._generate_short, lambda q: first.retrieve(q, 20, flt), out,
                              questions=questions, concurrency=services.settings.serving.max_sequences,
                              base=base, config=TrainingConfig(epochs=epochs, seed=seed), progress=progress)
    finally:
        services.close()
