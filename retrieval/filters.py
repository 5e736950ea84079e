"""Search filters applied inside an in-memory index: chunk metadata as arrays, so a filter costs no Python loop."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retrieval.types import Chunk, SearchFilter, chunk_time


class MetaColumns:
    """The metadata a filter reads, one array per field, made once per set of chunks."""

    def __init__(self, chunks: Sequence[Chunk]) -> None:
        metas = [c.meta for c in chunks]
        self.n = len(metas)
        # strings only (None -> ""), so that np.isin may sort them
        self.columns: dict[str, np.ndarray] = {
            key: np.array([str(m.get(key) or default) for m in metas] or [""], dtype=object)[:self.n]
            for key, default in (("collection", "default"), ("source", ""), ("language", ""))}
        self.columns["section"] = np.array([str(m.get("section") or "").casefold() for m in metas] or [""],
                                           dtype=object)[:self.n]
        self.columns["time"] = np.array([t if (t := chunk_time(m)) is not None else np.nan for m in metas],
                                        dtype=np.float64)

    def language_is(self, language: str) -> np.ndarray:
        """True for the rows whose chunk is in `language`."""
        return self.columns["language"] == language

    def allowed(self, filter: SearchFilter | None) -> np.ndarray | None:
        """Row numbers of the chunks a filter lets through; None when there is no filter."""
        if filter is None or filter.empty:
            return None
        cols = self.columns
        mask = np.ones(self.n, dtype=bool)
        for key, wanted in (("collection", filter.collections), ("source", filter.sources),
                            ("language", filter.languages)):
            if wanted is not None:
                mask &= np.isin(cols[key], np.array([str(w) for w in wanted], dtype=object))
        if filter.sections is not None:
            sections = [s.casefold() for s in filter.sections]
            mask &= np.fromiter((any(w in sec for w in sections) for sec in cols["section"]), dtype=np.bool_,
                                count=len(mask))
        if filter.modified_after is not None or filter.modified_before is not None:
            t = cols["time"]
            with np.errstate(invalid="ignore"):
                mask &= ~np.isnan(t)
                if filter.modified_after is not None:
                    mask &= t >= filter.modified_after
                if filter.modified_before is not None:
                    mask &= t <= filter.modified_before
        return np.flatnonzero(mask)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k highest scores, best first (ties in position order)."""
    if scores.size > k:
        top = np.argpartition(-scores, k - 1)[:k]
    else:
        top = np.arange(scores.size)
    return top[np.lexsort((top, -scores[top]))]
