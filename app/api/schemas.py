"""Wire formats of the HTTP API (pydantic), separate from the internal record types.

The Streamlit UI may import this module and nothing else of ours.

Streaming ask (`POST /v1/ask` with `"stream": true`) answers `text/event-stream`; each event is
`event: <name>` + `data: <json>`:
  - `sources`: a `SourcesOut` (`{"citations": [CitationOut...], "conversation_id"}`): the numbered sources given
               to the model, sent first
  - `token`:   `{"text": "..."}` an answer delta
  - `done`:    an `AskResponse` (the final answer, with the citations it actually used)
  - `error`:   `{"error": {"type", "message"}}`
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:  # only for annotations: the UI imports this module and should not load the assistant
    from app.assistant import Answer, Citation
    from retrieval.types import Hit


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
    language: Literal["en", "es", "ca"] | None = Field(default=None, description="The answer's language; left out, "
                                                       "the question's (detected)")
    conversation_id: str | None = Field(default=None, description="Continue this conversation: the question is "
                                        "rewritten from its history into a standalone one before retrieval. "
                                        "Left out, a new conversation is started (its id comes back)")

    model_config = {
        "json_schema_extra": {"examples": [{"question": "What does Consulta do?", "stream": False},
                                           {"question": "¿Y cuánto tarda el reembolso?", "collection": "hr",
                                            "conversation_id": "8f1c2e0a9b7d4c3e8f1c2e0a9b7d4c3e", "stream": True}]}
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
    document_id: str | None = Field(default=None, description="The document, for GET /v1/documents/{id}/file")
    collection: str | None = None
    snippet: str | None = Field(default=None, description="The exact sentence(s) of the passage that support the "
                                "answer sentence citing it (for cited sources)")
    snippet_start: int | None = Field(default=None, description="Character offset of the snippet in the document "
                                      "text")
    snippet_end: int | None = None
    supported: bool | None = Field(default=None, description="False when the check after generation found that "
                                   "this source does not support the sentence citing it (flagged); null when "
                                   "not checked")
    support: float | None = Field(default=None, description="Similarity of the citing sentence and the snippet")
    url: str | None = Field(default=None, description="A signed link (valid for hours) that opens the original "
                            "file at the page: GET it as is, no header needed")

    @classmethod
    def from_citation(cls, c: Citation, url: str | None = None) -> CitationOut:
        """The one serialisation of a citation (the API, `consulta ask --json` and stored conversations)."""
        return cls(**c.to_dict(), url=url)


class Timings(BaseModel):
    retrieval_ms: float
    ttft_ms: float | None = Field(default=None, description="Until the model's first token (null: not asked)")
    shown_ms: float | None = Field(default=None, description="Until the checked answer was ready (null: refused)")
    total_ms: float

    model_config = {"extra": "allow"}  # any further timing the assistant measures is passed on


class SourcesOut(BaseModel):
    """The first event of a streamed answer: the numbered passages given to the model."""

    citations: list[CitationOut]
    conversation_id: str | None = Field(default=None, description="The conversation the answer is saved in")


class AskResponse(BaseModel):
    """An answer, as `POST /v1/ask` returns it and `consulta ask --json` prints it."""

    question: str | None = Field(default=None, description="The question as asked")
    answer: str
    refused: bool = Field(description="True when the documents do not answer the question")
    citations: list[CitationOut]
    sources: list[CitationOut] = Field(default_factory=list, description="The numbered passages given to the "
                                       "model (on a refusal: the closest ones found)")
    language: str | None = Field(default=None, description="The answer's language: en, es or ca")
    timings: Timings
    model: str | None = None
    usage: dict[str, Any] = Field(default_factory=dict, description="What the answer cost and how it was checked; "
                                  "also holds `language` and `sources` (as in the top-level fields)")
    conversation_id: str | None = Field(default=None, description="The conversation the answer was saved in")
    message_id: str | None = Field(default=None, description="The answer's id, for POST /v1/feedback")
    standalone_question: str | None = Field(default=None, description="The follow-up rewritten from the history, "
                                            "as retrieval saw it (null when the question was used as asked)")

    @classmethod
    def from_answer(cls, answer: Answer, *, question: str | None = None,
                    url: Callable[[Citation], str | None] | None = None) -> AskResponse:
        """The one serialisation of an answer; `url` gives each citation its link (none without it)."""
        def cite(c: Citation) -> CitationOut:
            return CitationOut.from_citation(c, url(c) if url is not None else None)

        sources = [cite(c) for c in answer.sources]
        timings = {k: (None if v is None else round(v, 1)) for k, v in answer.timings.items()}
        return cls(question=question if question is not None else answer.question, answer=answer.text,
                   refused=answer.refused, citations=[cite(c) for c in answer.citations], sources=sources,
                   language=answer.language, timings=Timings(**timings), model=answer.model,
                   usage={**answer.usage, "language": answer.language,
                          "sources": [c.model_dump() for c in sources]})


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
    collection: str | None = None
    start: int | None = Field(default=None, description="Character offset of the passage in the document text")
    end: int | None = None

    @classmethod
    def from_hit(cls, hit: Hit) -> HitOut:
        """The one serialisation of a search hit (`POST /v1/search`; `consulta search --json` has the same fields)."""
        c = hit.chunk
        return cls(chunk_id=c.id, source=c.source, title=c.meta.get("title"), page=c.page, section=c.section,
                   score=round(hit.score, 4), text=c.text,
                   dense_score=None if hit.dense_score is None else round(hit.dense_score, 4),
                   collection=c.collection, start=c.start, end=c.end)


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
    reason: str | None = Field(None, description="Why a file failed: corrupt, encrypted, empty, no_text, too_large, "
                               "misnamed, unsupported, timeout, out_of_memory, crashed, unreadable")
    pages_without_text: list[int] = Field(default_factory=list, description="Pages with no text layer (scans)")


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


# ---- jobs ---------------------------------------------------------------------------------------


class JobProgress(BaseModel):
    done: int
    total: int


class JobOut(BaseModel):
    """An ingestion job; `files`, `chunks_added` and `total_chunks` as in IngestResponse once it is done."""

    job_id: str
    status: str = Field(description="'queued', 'running', 'done' or 'failed'")
    collection: str
    user: str | None = None
    files: list[IngestFileResult]
    progress: JobProgress
    chunks_added: int = 0
    total_chunks: int = 0
    error: str | None = None
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None

    model_config = {"json_schema_extra": {"examples": [{
        "job_id": "5b0c9d8e7f6a4b3c2d1e0f9a8b7c6d5e", "status": "done", "collection": "hr", "user": "ana",
        "files": [{"source": "handbook.pdf", "status": "ingested", "chunks": 42, "pages": 12, "error": None},
                  {"source": "notes.exe", "status": "failed", "chunks": 0, "pages": None,
                   "error": "notes.exe: file type '.exe' is not accepted"}],
        "progress": {"done": 1, "total": 1}, "chunks_added": 42, "total_chunks": 1234, "error": None,
        "created_at": "2026-11-23T10:00:00+00:00", "started_at": "2026-11-23T10:00:00+00:00",
        "finished_at": "2026-11-23T10:00:09+00:00"}]}}


class JobsResponse(BaseModel):
    jobs: list[JobOut]


# ---- users, login, access ----------------------------------------------------------------------


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)

    model_config = {"json_schema_extra": {"examples": [{"username": "ana", "password": "a long passphrase"}]}}


class UserPublic(BaseModel):
    id: int
    username: str
    role: str = Field(description="'admin', 'editor' or 'reader'")
    disabled: bool = False
    created_at: str
    groups: list[str] = Field(default_factory=list)


class LoginResponse(BaseModel):
    token: str = Field(description="Send as 'Authorization: Bearer <token>'")
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds the token stays valid")
    user: UserPublic


class MeResponse(BaseModel):
    user: UserPublic
    readable: list[str] | None = Field(description="Collections this user may ask (null: every collection)")
    writable: list[str] | None = Field(description="Collections this user may change (null: every collection)")


class UserCreate(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    role: str = Field(default="reader", description="'admin', 'editor' or 'reader'")
    password: str | None = Field(default=None, min_length=8, max_length=1024, description="Left out: a random one "
                                 "is made and returned once")

    model_config = {"json_schema_extra": {"examples": [{"username": "ana", "role": "editor"}]}}


class UserCreated(BaseModel):
    user: UserPublic
    password: str | None = Field(default=None, description="The generated password, shown only this once")


class UserUpdate(BaseModel):
    role: str | None = None
    password: str | None = Field(default=None, min_length=8, max_length=1024)
    disabled: bool | None = None


class UsersResponse(BaseModel):
    users: list[UserPublic]


class ApiKeyCreate(BaseModel):
    name: str = Field(default="api", max_length=64)
    days: float | None = Field(default=None, gt=0, le=36500, description="Expires after this many days (default: "
                               "never; at most 100 years)")


class ApiKeyCreated(BaseModel):
    id: int | None = None
    key: str = Field(description="The API key, shown only this once; stored hashed")
    username: str


class ApiKeyOut(BaseModel):
    id: int
    name: str
    prefix: str = Field(description="The key's first characters, to tell keys apart")
    username: str
    created_at: str
    expires_at: str | None = None


class GrantIn(BaseModel):
    collection: str = Field(description="A collection name, or '*' for every collection")
    permission: str = Field(description="'read' or 'write' (write also gives read; it counts for editors)")
    user: str | None = None
    group: str | None = None

    model_config = {"json_schema_extra": {"examples": [{"collection": "hr", "permission": "read", "group": "staff"}]}}


class GroupIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)


class AuditEntry(BaseModel):
    id: int
    at: str
    user: str | None
    action: str = Field(description="e.g. 'ask', 'search', 'document.ingest', 'document.delete', 'login', "
                        "'user.create', 'grant.add'")
    collection: str | None
    target: str | None
    detail: dict[str, Any]


class AuditResponse(BaseModel):
    entries: list[AuditEntry]


# ---- conversations and feedback -----------------------------------------------------------------


class ConversationCreate(BaseModel):
    title: str = Field(default="New conversation", min_length=1, max_length=200)
    collection: str | None = None


class ConversationRename(BaseModel):
    title: str = Field(min_length=1, max_length=200)


class ConversationOut(BaseModel):
    id: str
    title: str
    collection: str | None = None
    created_at: str
    updated_at: str
    messages: int = Field(description="How many messages it holds")


class ConversationsResponse(BaseModel):
    conversations: list[ConversationOut]


class MessageOut(BaseModel):
    id: str
    role: str = Field(description="'user' or 'assistant'")
    content: str
    created_at: str
    refused: bool | None = None
    citations: list[CitationOut] = Field(default_factory=list)
    standalone_question: str | None = None
    collection: str | None = None
    feedback: dict[str, Any] | None = None


class ConversationDetail(ConversationOut):
    history: list[MessageOut]


class FeedbackIn(BaseModel):
    message_id: str = Field(description="The answer's message_id (from /v1/ask or a conversation's history)")
    rating: Literal[-1, 1] = Field(description="1 (thumbs up) or -1 (thumbs down)")
    comment: str | None = Field(default=None, max_length=4000)

    model_config = {"json_schema_extra": {"examples": [{"message_id": "0f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c",
                                                        "rating": -1, "comment": "Cites the 2019 policy"}]}}


class FeedbackOut(BaseModel):
    message_id: str
    conversation_id: str
    rating: int
    comment: str | None = None
