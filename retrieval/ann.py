"""The approximate nearest-neighbour index of the FAISS store: HNSW or IVF over the main vectors of large corpora.

Exact inner product (IndexFlatIP) answers up to `IndexConfig.exact_max` chunks; above it an approximate index
(HNSW by default, or IVF), or whichever the settings force. It is made when first needed, stored with the
generation as `ann.faiss`, appended to when chunks are added, and rebuilt after a delete (HNSW cannot remove).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

logger = logging.getLogger(__name__)

IndexKind = Literal["auto", "flat", "hnsw", "ivf"]


@dataclass(frozen=True, slots=True)
class IndexConfig:
    """Which FAISS index answers unfiltered dense searches, and how it is tuned."""

    kind: IndexKind = "auto"
    exact_max: int = 200_000  # "auto": exact search up to this many chunks, HNSW above
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    ivf_nprobe: int = 16

    def __post_init__(self) -> None:
        if self.kind not in ("auto", "flat", "hnsw", "ivf"):
            raise ValueError(f"unknown index kind {self.kind!r}: choose auto, flat, hnsw or ivf")

    def kind_for(self, n: int) -> str:
        """flat, hnsw or ivf for a corpus of n chunks (IVF needs enough vectors to train its lists)."""
        kind = ("flat" if n <= self.exact_max else "hnsw") if self.kind == "auto" else self.kind
        return "flat" if kind == "ivf" and n < 1000 else kind

    def build_params(self, kind: str) -> dict[str, Any]:
        """What the stored approximate index was built with; another value rebuilds it."""
        return {"kind": kind, "m": self.hnsw_m, "ef_construction": self.ef_construction} if kind == "hnsw" \
            else {"kind": kind}


def build_ann(kind: str, vectors: np.ndarray, config: IndexConfig) -> faiss.Index:
    d = vectors.shape[1]
    index: faiss.Index
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.ef_construction
    elif kind == "ivf":
        nlist = max(8, int(4 * np.sqrt(len(vectors))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = vectors if len(vectors) <= 64 * nlist else vectors[
            np.random.default_rng(0).choice(len(vectors), 64 * nlist, replace=False)]
        index.train(sample)
    else:
        raise ValueError(f"no approximate index of kind {kind!r}")
    if len(vectors):
        index.add(vectors)
    return index


class AnnIndex:
    """The approximate index over the first `rows` of the main vectors (None: exact search, or not made yet)."""

    def __init__(self, config: IndexConfig) -> None:
        self.config = config
        self._index: faiss.Index | None = None
        self._rows = 0
        self._lock = threading.Lock()

    def drop(self) -> None:
        """Forget it (the vectors were replaced or rows deleted): it is rebuilt when next needed."""
        with self._lock:
            self._index, self._rows = None, 0

    def restore(self, gen_dir: Path, stored_params: Any, n: int) -> None:
        """Read the generation's ann.faiss when it was built with the settings now in force for n chunks."""
        self.drop()
        kind = self.config.kind_for(n)
        if kind != "flat" and (gen_dir / "ann.faiss").is_file() and stored_params == self.config.build_params(kind):
            with self._lock:
                self._index = faiss.read_index(str(gen_dir / "ann.faiss"))
                self._rows = self._index.ntotal

    def covering(self, vectors: np.ndarray) -> faiss.Index | None:
        """The approximate index covering every row of `vectors`, or None when exact search is the choice."""
        kind = self.config.kind_for(len(vectors))
        if kind == "flat":
            return None
        with self._lock:
            n = len(vectors)
            if self._index is not None and self._rows < n:
                self._index.add(vectors[self._rows:])  # chunks added since: appended, not rebuilt
                self._rows = n
            if self._index is None:
                t = time.perf_counter()
                self._index = build_ann(kind, vectors, self.config)
                self._rows = n
                logger.info("built %s index over %d vectors in %.1f s", kind, n, time.perf_counter() - t)
            return self._index

    def search(self, vectors: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(scores, ids) of the approximate search over `vectors`, or None when exact search is the choice."""
        index = self.covering(vectors)
        if index is None:
            return None
        return index.search(query, k, params=self._search_params(index))

    def _search_params(self, index: faiss.Index) -> faiss.SearchParameters:
        if isinstance(index, faiss.IndexHNSW):
            return faiss.SearchParametersHNSW(efSearch=self.config.ef_search)  # type: ignore[attr-defined]
        return faiss.SearchParametersIVF(nprobe=self.config.ivf_nprobe)  # type: ignore[call-arg]
