"""Record types shared by every stage: the chunk the index holds, the hit a search returns, the index's identity."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any


def chunk_id_for(document_id: str, start: int, end: int) -> str:
    """Content-addressed id: re-ingesting the same document span gives the same id."""
    return hashlib.sha256(f"{document_id}:{start}:{end}".encode()).hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class Chunk:
    """A passage of a document, with the offsets and metadata a citation needs.

    meta keys written by ingestion: source, title, page, page_end, section, collection,
    language, modified_at, ingested_at, content_hash, chunker, and context (a line naming the document
    and section, indexed with the text: see `index_text`).
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

    @property
    def index_text(self) -> str:
        """What search indexes (embeddings and BM25): the context line, when ingestion wrote one, then the text.
        A passage deep in a handbook rarely names the handbook or its section; the line gives it that."""
        context = self.meta.get("context")
        return f"{context}\n{self.text}" if context else self.text

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


def timestamp(value: str | float | int | datetime | date | None, *, end_of_day: bool = False) -> float | None:
    """Seconds since the epoch for an ISO date/time, a datetime or a number; naive times are taken as UTC.

    With end_of_day, a bare date ("2024-05-31") means its last second: the inclusive end of a range.
    """
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if end_of_day and (isinstance(value, str) and len(value.strip()) == 10
                       or isinstance(value, date) and not isinstance(value, datetime)):
        start = timestamp(value)
        return None if start is None else start + 86399.999
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError as e:
            raise ValueError(f"not an ISO date or time: {value!r} (use e.g. 2024-05-31 or 2024-05-31T12:00)") from e
    if not isinstance(value, datetime):  # a date: its midnight
        value = datetime(value.year, value.month, value.day)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def chunk_time(meta: Mapping[str, Any]) -> float | None:
    """The date a date-range filter reads: the document's modification time, else its ingestion time."""
    for key in ("modified_at", "ingested_at"):
        try:
            t = timestamp(meta.get(key))
        except ValueError:
            t = None
        if t is not None:
            return t
    return None


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """Restricts a search; applied inside the index, so k hits come back when k matching chunks exist.

    Each field left as None lets everything through; the fields combine with AND, the values inside one
    field with OR. `sections` match case-insensitively as substrings of the chunk's section heading
    ("expenses" matches "Chapter 2: Expenses"). `modified_after` / `modified_before` (inclusive, epoch
    seconds; build them with `timestamp()`) read the document's modification time, or its ingestion time
    when the modification time is unknown; chunks with neither are left out by a date range.
    """

    collections: tuple[str, ...] | None = None
    sources: tuple[str, ...] | None = None
    languages: tuple[str, ...] | None = None
    sections: tuple[str, ...] | None = None
    modified_after: float | None = None
    modified_before: float | None = None

    def matches(self, chunk: Chunk) -> bool:
        m = chunk.meta
        if self.collections is not None and m.get("collection", "default") not in self.collections:
            return False
        if self.sources is not None and m.get("source") not in self.sources:
            return False
        if self.languages is not None and m.get("language") not in self.languages:
            return False
        if self.sections is not None:
            section = str(m.get("section") or "").casefold()
            if not any(s.casefold() in section for s in self.sections):
                return False
        if self.modified_after is not None or self.modified_before is not None:
            t = chunk_time(m)
            if t is None or not self.in_range(t):
                return False
        return True

    def in_range(self, t: float) -> bool:
        return ((self.modified_after is None or t >= self.modified_after)
                and (self.modified_before is None or t <= self.modified_before))

    @property
    def empty(self) -> bool:
        return (self.collections is None and self.sources is None and self.languages is None
                and self.sections is None and self.modified_after is None and self.modified_before is None)


@dataclass(frozen=True, slots=True)
class IndexIdentity:
    """What produced an index's vectors: mixing vectors of two models would give meaningless scores."""

    embedder: str
    dim: int
    chunker: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"embedder": self.embedder, "dim": self.dim, "chunker": self.chunker}
