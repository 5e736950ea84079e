"""Record types shared by every stage: the chunk the index holds and the hit a search returns."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def chunk_id_for(document_id: str, start: int, end: int) -> str:
    """Content-addressed id: re-ingesting the same document span gives the same id."""
    return hashlib.sha256(f"{document_id}:{start}:{end}".encode()).hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class Chunk:
    """A passage of a document, with the offsets and metadata a citation needs.

    meta keys written by ingestion: source, title, page, page_end, section, collection,
    language, modified_at, ingested_at, content_hash, chunker.
    """

    id: str
    document_id: str
    text: str
    start: int
    end: int
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return str(self.meta.get("source", ""))

    @property
    def page(self) -> int | None:
        return self.meta.get("page")

    @property
    def section(self) -> str | None:
        return self.meta.get("section")

    @property
    def collection(self) -> str:
        return str(self.meta.get("collection", "default"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "document_id": self.document_id,
            "text": self.text,
            "start": self.start,
            "end": self.end,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Chunk:
        return cls(d["id"], d["document_id"], d["text"], d["start"], d["end"], dict(d.get("meta", {})))


@dataclass(frozen=True, slots=True)
class Hit:
    """A chunk with the score that ranked it (higher is better).

    `score` is whatever ranked the hit: a cosine (dense search), a BM25 score, a fused rank score or a
    re-ranker's score. `dense_score`, when set, is the cosine of the query and chunk embeddings whatever
    ranked the hit: the one scale that thresholds such as "the documents don't say" can rely on.
    """

    chunk: Chunk
    score: float
    dense_score: float | None = None

    @property
    def relevance(self) -> float:
        """The dense cosine when known, else the ranking score."""
        return self.score if self.dense_score is None else self.dense_score


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """Restricts a search; applied inside the index, so k hits come back when k matching chunks exist."""

    collections: tuple[str, ...] | None = None
    sources: tuple[str, ...] | None = None
    languages: tuple[str, ...] | None = None

    def matches(self, chunk: Chunk) -> bool:
        m = chunk.meta
        if self.collections is not None and m.get("collection") not in self.collections:
            return False
        if self.sources is not None and m.get("source") not in self.sources:
            return False
        if self.languages is not None and m.get("language") not in self.languages:
            return False
        return True

    @property
    def empty(self) -> bool:
        return self.collections is None and self.sources is None and self.languages is None
