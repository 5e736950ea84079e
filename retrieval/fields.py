"""A named vector field beside the main one: a second embedder's vectors for the chunks of one language.

The "en" field holds an English-only model's vectors for the English chunks. A zero row has no vector:
the chunk is in another language, or it was added while the field was off (`missing` lists the rows to fill).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retrieval.filters import MetaColumns, top_k

MAIN_FIELD = "main"  # the embedder of the index's identity: every chunk has a vector
ENGLISH_FIELD = "en"  # an English-only embedder's vectors, for the English chunks


class LanguageField:
    """One vector per chunk from `model_id`, for the chunks in `language`; rows follow the store's chunks."""

    def __init__(self, model_id: str, vectors: np.ndarray, language: str) -> None:
        self.model_id = model_id
        self.vectors = vectors
        self.language = language
        self._rankable: np.ndarray | None = None  # rows the field may return, made when first needed

    @classmethod
    def empty(cls, model_id: str, rows: int, dim: int, language: str) -> LanguageField:
        return cls(model_id, np.zeros((rows, dim), dtype=np.float32), language)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def changed(self) -> None:
        """The chunks or the vectors changed: the rankable rows are worked out again when needed."""
        self._rankable = None

    def _state(self, columns: MetaColumns) -> tuple[np.ndarray, np.ndarray]:
        """Per row: is the chunk in the field's language, and has it a vector (a zero row has none)."""
        return columns.language_is(self.language), np.einsum("ij,ij->i", self.vectors, self.vectors) > 0

    def missing(self, columns: MetaColumns) -> list[int]:
        """Rows of chunks in the field's language without a vector."""
        is_lang, has_vector = self._state(columns)
        return np.flatnonzero(is_lang & ~has_vector).tolist()

    def rankable(self, columns: MetaColumns) -> np.ndarray:
        """True for the rows a search may return: chunks in the field's language that have a vector."""
        if self._rankable is None:
            is_lang, has_vector = self._state(columns)
            self._rankable = is_lang & has_vector
        return self._rankable

    def search(self, query: np.ndarray, k: int, columns: MetaColumns,
               allowed: np.ndarray | None) -> list[tuple[int, float]]:
        """(row, inner product) of the k best rankable rows, best first; `allowed` narrows the rows."""
        mask = self.rankable(columns)
        if allowed is not None:
            narrowed = np.zeros_like(mask)
            narrowed[allowed] = mask[allowed]
            mask = narrowed
        rows = np.flatnonzero(mask)
        if rows.size == 0:
            return []
        if rows.size * 4 < len(mask):  # a narrow filter: score only its rows
            scores = self.vectors[rows] @ query
        else:  # one product over all rows (no copy of the matrix), then keep the allowed ones
            scores = (self.vectors @ query)[rows]
        return [(int(rows[i]), float(scores[i])) for i in top_k(scores, k)]

    def set_rows(self, rows: Sequence[int], vectors: np.ndarray) -> None:
        self.vectors[np.asarray(rows, dtype=np.int64)] = vectors
        self.changed()

    def append(self, vectors: np.ndarray | None, n: int) -> None:
        """Rows for n added chunks: `vectors`, or zero rows (no vector yet)."""
        extra = vectors if vectors is not None else np.zeros((n, self.dim), dtype=np.float32)
        self.vectors = np.vstack([self.vectors, extra])
        self.changed()

    def keep(self, rows: np.ndarray) -> None:
        """Keep only these rows (chunks were deleted)."""
        self.vectors = self.vectors[rows]
        self.changed()
