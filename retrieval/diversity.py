"""Diversity after ranking: drop near-duplicate passages, or pick by maximal marginal relevance (MMR).

Both read the passages' stored embedding vectors (unit length, so a dot product is a cosine).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retrieval.types import Hit


def drop_near_duplicates(hits: Sequence[Hit], vectors: np.ndarray, threshold: float = 0.95) -> list[Hit]:
    """Hits in order, without any whose cosine to a better-ranked kept hit is at least `threshold`.

    Overlapping chunks and the same paragraph in two versions of a document would otherwise fill the
    answer's context with one fact.
    """
    kept: list[int] = []
    for i in range(len(hits)):
        if not kept or float(np.max(vectors[kept] @ vectors[i])) < threshold:
            kept.append(i)
    return [hits[i] for i in kept]


def mmr(query: np.ndarray, hits: Sequence[Hit], vectors: np.ndarray, k: int, lam: float = 0.7) -> list[Hit]:
    """Maximal marginal relevance: repeatedly take argmax lam * rel - (1 - lam) * max cosine to those taken.

    `rel` is the hit's first-stage rank turned into a score in (0, 1] (1 / rank-position normalised), so
    that MMR keeps the fused order's judgement of relevance and only trades it against redundancy.
    """
    n = len(hits)
    if n == 0 or k <= 0:
        return []
    rel = 1.0 / (1.0 + np.arange(n) / 5.0)  # smooth decay by rank: rank 1 -> 1.0, rank 6 -> 0.5
    sims = vectors @ vectors.T
    chosen: list[int] = [0]
    left = set(range(1, n))
    while left and len(chosen) < k:
        cand = np.array(sorted(left))
        redundancy = sims[np.ix_(cand, np.array(chosen))].max(axis=1)
        best = int(cand[np.argmax(lam * rel[cand] - (1 - lam) * redundancy)])
        chosen.append(best)
        left.remove(best)
    return [hits[i] for i in chosen]
