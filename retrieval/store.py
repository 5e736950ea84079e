"""The store seam: what retrieval reads and what ingestion writes, as Protocols.

A store holds chunks with named vector fields ("main": the embedder of the index's identity, for every chunk;
"en": an English-only embedder's vectors, for the English chunks, when ingestion adds them) and BM25 term
statistics, and applies filters inside its searches. Readers (`StoreReader`: the retriever, the API) call
`ensure_current()` before they read, which loads the live index or the newer one a writer published since.
Ingestion writes through `VectorStore.writer()`, an exclusive session (`StoreWriter`) whose edits are published
together when the block ends, or not at all when it raises.

`FaissStore` (retrieval/faiss_store.py) is the one implementation; tests/retrieval/test_store.py runs every
implementation through the same contract suite.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import numpy as np

from retrieval.ann import IndexConfig, IndexKind
from retrieval.faiss_store import FaissStore
from retrieval.fields import ENGLISH_FIELD, MAIN_FIELD
from retrieval.generations import FORMAT_VERSION
from retrieval.types import Chunk, Hit, IndexIdentity, SearchFilter

__all__ = ["ENGLISH_FIELD", "FORMAT_VERSION", "MAIN_FIELD", "FaissStore", "IndexConfig", "IndexIdentity",
           "IndexKind", "StoreReader", "StoreWriter", "VectorStore"]


class StoreReader(Protocol):
    """The published index, as the retriever and the API read it."""

    @property
    def identity(self) -> IndexIdentity | None:
        """What made the loaded vectors; None until something is loaded."""

    @property
    def generation(self) -> int:
        """The loaded generation's number (it grows with each publish)."""

    @property
    def location(self) -> str:
        """Where the index lives, for messages."""

    def ensure_current(self) -> StoreReader:
        """Load the live index, or the newer one published since; IndexNotFoundError when there is none."""

    def load_sparse(self) -> None:
        """Ready the BM25 data now rather than on the first sparse search."""

    def has_field(self, field: str, model_id: str | None = None) -> bool:
        """Whether the index holds vectors in `field` (made by `model_id`, when given)."""

    def search(self, vector: np.ndarray, k: int, filter: SearchFilter | None = None, *,
               field: str = MAIN_FIELD) -> list[Hit]:
        """The k chunks whose `field` vectors have the highest inner product with `vector`, best first."""

    def search_sparse(self, query: str, k: int, filter: SearchFilter | None = None, *,
                      language: str | None = None, feedback: int = 0) -> list[Hit]:
        """The k best BM25 matches, the query analysed in `language`; `feedback` > 0 adds pseudo-relevance
        feedback from that many best hits."""

    def similarities(self, vector: np.ndarray, chunks: Sequence[Chunk]) -> np.ndarray:
        """Inner product of `vector` with these chunks' main vectors."""

    def vectors_of(self, chunks: Sequence[Chunk]) -> np.ndarray:
        """These chunks' main vectors, one row each."""

    def chunks(self) -> Sequence[Chunk]: ...

    def documents(self) -> list[dict[str, Any]]:
        """One summary per document: document_id, source, title, collection, pages, content_hash, language,
        modified_at, ingested_at, chunks."""

    def __len__(self) -> int: ...


class StoreWriter(Protocol):
    """An exclusive write session, opened by `VectorStore.writer()`; rows number the session's chunks."""

    @property
    def identity(self) -> IndexIdentity | None: ...

    @property
    def location(self) -> str: ...

    def chunks(self) -> Sequence[Chunk]: ...

    def documents(self) -> list[dict[str, Any]]: ...

    def __len__(self) -> int: ...

    def add(self, chunks: Sequence[Chunk], vectors: Mapping[str, np.ndarray]) -> None:
        """Append chunks with one row per chunk in each field: {"main": ..., "en": ...} ("en" after `use_field`,
        zero rows for chunks it does not cover). Chunks already in the index are skipped."""

    def delete_documents(self, document_ids: Iterable[str]) -> int:
        """Remove these documents' chunks; the number removed."""

    def use_field(self, field: str, model_id: str, dim: int) -> None:
        """Keep `field` vectors made by `model_id`; vectors of another model are dropped (see `missing`)."""

    def missing(self, field: str) -> list[int]:
        """Rows that should have a vector in `field` and have none."""

    def set_vectors(self, field: str, rows: Sequence[int], vectors: np.ndarray) -> None:
        """Store `field` vectors for these rows."""


class VectorStore(StoreReader, Protocol):
    """A store that can also be written: the ingestion pipeline's view."""

    def writer(self, identity: IndexIdentity, *, replace: bool = False) -> AbstractContextManager[StoreWriter]:
        """An exclusive write session that publishes its edits when the block ends; replace=True starts empty
        (a rebuild). EmbedderMismatchError when `identity`'s embedder is not the index's."""
