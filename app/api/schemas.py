"""Wire formats of the HTTP API (pydantic), separate from the internal record types.

The Streamlit UI may import this module and nothing else of ours.

Streaming ask (`POST /v1/ask` with `"stream": true`) answers `text/event-stream`; each event is
`event: <name>` + `data: <json>`:
  - `sources`: `{"citations": [CitationOut...]}` the numbered sources given to the model, sent first
  - `token`:   `{"text": "..."}` an answer delta
  - `done`:    an `AskResponse` (the final answer, with the citations it actually used)
  - `error`:   `{"error": {"type", "message"}}`
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    type: str = Field(description="Machine-readable error kind, e.g. 'not_found', 'busy', 'bad_request'")
    message: str = Field(description="What went wrong and what to do, for a person")


class ErrorResponse(BaseModel):
    error: ErrorBody


class AskRequest(BaseModel):
    question: str = Field(min_length=1, max_length=4000, description="The question, in English, Spanish or Catalan")
    collection: str | None = Field(default=None, description="Search only this collection (default: all)")
    k: int | None = Field(default=None, ge=1, le=50, description="How many passages to give the model")
    stream: bool = Field(default=False, description="Answer as server-sent events")

    model_config = {
        "json_schema_extra": {"examples": [{"question": "What does Consulta do?", "stream": False}]}
    }


class CitationOut(BaseModel):
    n: int = Field(description="The source number the answer cites as [n]")
    chunk_id: str
    source: str = Field(description="Path of the source document")
    title: str | None = None
    page: int | None = Field(default=None, description="1-based page; null where the format has none")
    section: str | None = None
    start: int | None = Field(default=None, description="Character offset of the passage in the document text")
    end: int | None = None
    score: float | None = Field(default=None, description="The score that ranked the passage (retrieval mode "
                                "dependent: cosine, BM25 or fused rank score)")
    text: str = Field(description="The passage text")
    dense_score: float | None = Field(default=None, description="Cosine of question and passage embeddings")


class Timings(BaseModel):
    retrieval_ms: float
    ttft_ms: float | None = None
    total_ms: float


class AskResponse(BaseModel):
    answer: str
    refused: bool = Field(description="True when the documents do not answer the question")
    citations: list[CitationOut]
    timings: Timings
    model: str | None = None
    usage: dict[str, Any] = Field(default_factory=dict)


class HitOut(BaseModel):
    chunk_id: str
    source: str
    title: str | None = None
    page: int | None = None
    section: str | None = None
    score: float = Field(description="The score that ranked the hit: cosine (mode dense), BM25 score (bm25) or "
                         "reciprocal-rank-fusion score (hybrid)")
    text: str
    dense_score: float | None = Field(default=None, description="Cosine of query and passage embeddings, in every mode")


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=4000)
    collection: str | None = None
    k: int = Field(default=5, ge=1, le=100)


class SearchResponse(BaseModel):
    hits: list[HitOut]


class CollectionOut(BaseModel):
    name: str
    documents: int
    chunks: int


class CollectionsResponse(BaseModel):
    collections: list[CollectionOut]


class DocumentOut(BaseModel):
    document_id: str
    source: str
    title: str | None = None
    collection: str
    pages: int | None = None
    chunks: int


class IngestFileResult(BaseModel):
    source: str
    status: str = Field(description="'ingested', 'unchanged' or 'failed'")
    chunks: int = 0
    pages: int | None = None
    error: str | None = None


class IngestResponse(BaseModel):
    collection: str
    files: list[IngestFileResult]
    chunks_added: int
    total_chunks: int


class HealthResponse(BaseModel):
    status: str = Field(description="'ok' when the index and model are ready")
    index_chunks: int
    model: str | None
    embedder: str
    version: str
