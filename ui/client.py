"""A small typed client for Consulta's HTTP API, the only way the UI reaches the assistant.

Every call opens its own short-lived connection, so one `ApiClient` can be shared by the
Streamlit script threads without locking. Failures surface as `ApiError` (the API answered with
an error) or `ApiUnreachable` (nothing answered at the base URL).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import ValidationError

from app.api.schemas import (
    AskRequest,
    AskResponse,
    AuditEntry,
    CitationOut,
    CollectionOut,
    CollectionsResponse,
    ConversationDetail,
    ConversationOut,
    DocumentOut,
    ErrorBody,
    FeedbackOut,
    HealthResponse,
    JobOut,
    LoginResponse,
    MeResponse,
    SearchRequest,
    SearchResponse,
    UserCreated,
    UserPublic,
)

logger = logging.getLogger(__name__)

DEFAULT_API_URL = "http://127.0.0.1:8000"


class ApiError(Exception):
    """The API answered with an error; the UI shows `message` to the person who asked."""

    def __init__(self, message: str, *, type: str = "error", status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.type = type
        self.status = status


class ApiUnreachable(ApiError):
    """Nothing answered at the API's base URL (not started, wrong URL, or it timed out)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"Could not reach the Consulta API at {url}: {reason}", type="unreachable")
        self.url = url
        self.reason = reason


# --- Streamed answer events -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SourcesEvent:
    """The numbered passages given to the model, sent before the first token."""

    citations: list[CitationOut]
    conversation_id: str | None = None  # the conversation the answer is being saved in


@dataclass(frozen=True, slots=True)
class TokenEvent:
    text: str


@dataclass(frozen=True, slots=True)
class DoneEvent:
    response: AskResponse


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    error: ErrorBody


AskEvent = SourcesEvent | TokenEvent | DoneEvent | ErrorEvent


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    event: str
    data: str


def parse_sse(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    """Frame server-sent events from text lines (the WHATWG rules the API needs).

    `data:` lines of one event join with newlines; a blank line ends the event; lines starting
    with `:` are comments (keep-alives); `id:` and `retry:` are ignored.
    """
    name = ""
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield ServerSentEvent(event=name or "message", data="\n".join(data))
            name, data = "", []
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if key == "event":
            name = value
        elif key == "data":
            data.append(value)
    if data:  # a stream that ends without the final blank line
        yield ServerSentEvent(event=name or "message", data="\n".join(data))


def to_ask_event(sse: ServerSentEvent) -> AskEvent | None:
    """Turn a raw event into a typed one; None for event names this client does not know."""
    try:
        payload = json.loads(sse.data)
        match sse.event:
            case "sources":
                citations = [CitationOut.model_validate(c) for c in payload.get("citations", [])]
                return SourcesEvent(citations, payload.get("conversation_id"))
            case "token":
                return TokenEvent(str(payload.get("text", "")))
            case "done":
                return DoneEvent(AskResponse.model_validate(payload))
            case "error":
                return ErrorEvent(ErrorBody.model_validate(payload.get("error", payload)))
    except (ValueError, ValidationError, AttributeError) as exc:
        logger.warning("Malformed %r event from the API: %s", sse.event, exc)
        return ErrorEvent(ErrorBody(type="bad_response", message=f"The API sent a malformed '{sse.event}' event."))
    logger.debug("Ignoring unknown event %r", sse.event)
    return None


# --- The client -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UploadFile:
    name: str
    content: bytes
    content_type: str = "application/octet-stream"


@dataclass(slots=True)
class ApiClient:
    """Consulta's HTTP API. `token` is sent as a bearer token once logins exist."""

    base_url: str = DEFAULT_API_URL
    token: str | None = None
    connect_timeout: float = 3.0
    quick_timeout: float = 10.0  # health, listings, search
    answer_timeout: float = 600.0  # the longest pause allowed between two streamed bytes
    upload_timeout: float = 900.0  # ingestion is synchronous for now
    _headers: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self._headers = {"Accept": "application/json"}
        if self.token:
            self._headers["Authorization"] = f"Bearer {self.token}"

    # Endpoints

    def health(self) -> HealthResponse:
        return HealthResponse.model_validate(self._request("GET", "/health"))

    def collections(self) -> list[CollectionOut]:
        return CollectionsResponse.model_validate(self._request("GET", "/v1/collections")).collections

    def search(self, query: str, *, collection: str | None = None, k: int = 5) -> SearchResponse:
        body = SearchRequest(query=query, collection=collection, k=k).model_dump(exclude_none=True)
        return SearchResponse.model_validate(self._request("POST", "/v1/search", json=body))

    def ask(self, question: str, *, collection: str | None = None, k: int | None = None) -> AskResponse:
        body = AskRequest(question=question, collection=collection, k=k).model_dump(exclude_none=True)
        data = self._request("POST", "/v1/ask", json=body, read_timeout=self.answer_timeout)
        return AskResponse.model_validate(data)

    def ask_stream(
        self,
        question: str,
        *,
        collection: str | None = None,
        k: int | None = None,
        conversation_id: str | None = None,
    ) -> Iterator[AskEvent]:
        """Yield the answer's events as they arrive: sources, tokens, then done or error.

        Raises ApiError/ApiUnreachable only before the first event; a connection lost later
        arrives as an ErrorEvent so the caller keeps what it has already shown.
        """
        body = AskRequest(
            question=question, collection=collection, k=k, stream=True, conversation_id=conversation_id
        ).model_dump(exclude_none=True)
        url = self.base_url + "/v1/ask"
        headers = self._headers | {"Accept": "text/event-stream"}
        started = False
        try:
            with (
                self._client(self.answer_timeout) as client,
                client.stream("POST", url, json=body, headers=headers) as resp,
            ):
                if resp.status_code >= 400:
                    resp.read()
                    raise _error_from(resp)
                started = True
                if not resp.headers.get("content-type", "").startswith("text/event-stream"):
                    # An API that ignores `stream` answers with plain JSON: replay it as events.
                    resp.read()
                    answer = AskResponse.model_validate(resp.json())
                    yield SourcesEvent(answer.citations, answer.conversation_id)
                    yield TokenEvent(answer.answer)
                    yield DoneEvent(answer)
                    return
                for sse in parse_sse(resp.iter_lines()):
                    if (event := to_ask_event(sse)) is not None:
                        yield event
        except httpx.TransportError as exc:
            if not started:
                raise ApiUnreachable(self.base_url, _reason(exc)) from exc
            lost = f"The connection to the API was lost: {_reason(exc)}"
            yield ErrorEvent(ErrorBody(type="connection_lost", message=lost))

    def documents(self, collection: str | None = None) -> list[DocumentOut]:
        params = {"collection": collection} if collection else None
        data = self._request("GET", "/v1/documents", params=params)
        items = data.get("documents", []) if isinstance(data, dict) else data
        return [DocumentOut.model_validate(d) for d in items]

    def upload(self, files: Sequence[UploadFile], *, collection: str) -> JobOut:
        """Send files to be ingested; the API answers at once with the ingestion job (see `job`)."""
        parts = [("files", (f.name, f.content, f.content_type)) for f in files]
        data = self._request(
            "POST", "/v1/documents", files=parts, data={"collection": collection}, read_timeout=self.upload_timeout
        )
        return JobOut.model_validate(data)

    def job(self, job_id: str) -> JobOut:
        return JobOut.model_validate(self._request("GET", f"/v1/jobs/{job_id}"))

    def delete_document(self, document_id: str) -> None:
        self._request("DELETE", f"/v1/documents/{document_id}")

    def document_file(self, document_id: str) -> bytes:
        """The original file of a document (what a citation points at)."""
        return self._request("GET", f"/v1/documents/{document_id}/file", raw=True)

    # Sign-in

    def login(self, username: str, password: str) -> LoginResponse:
        data = self._request("POST", "/v1/auth/login", json={"username": username, "password": password})
        return LoginResponse.model_validate(data)

    def me(self) -> MeResponse:
        return MeResponse.model_validate(self._request("GET", "/v1/auth/me"))

    def logout(self) -> None:
        self._request("POST", "/v1/auth/logout")

    # Conversations and feedback

    def conversations(self) -> list[ConversationOut]:
        data = self._request("GET", "/v1/conversations")
        return [ConversationOut.model_validate(c) for c in data.get("conversations", [])]

    def conversation(self, conversation_id: str) -> ConversationDetail:
        return ConversationDetail.model_validate(self._request("GET", f"/v1/conversations/{conversation_id}"))

    def rename_conversation(self, conversation_id: str, title: str) -> ConversationOut:
        data = self._request("PATCH", f"/v1/conversations/{conversation_id}", json={"title": title})
        return ConversationOut.model_validate(data)

    def delete_conversation(self, conversation_id: str) -> None:
        self._request("DELETE", f"/v1/conversations/{conversation_id}")

    def feedback(self, message_id: str, rating: int, comment: str | None = None) -> FeedbackOut:
        body = {"message_id": message_id, "rating": rating, "comment": comment or None}
        return FeedbackOut.model_validate(self._request("POST", "/v1/feedback", json=body))

    # Administration

    def users(self) -> list[UserPublic]:
        return [UserPublic.model_validate(u) for u in self._request("GET", "/v1/users").get("users", [])]

    def create_user(self, username: str, role: str, password: str | None = None) -> UserCreated:
        body = {"username": username, "role": role, "password": password or None}
        return UserCreated.model_validate(self._request("POST", "/v1/users", json=body))

    def update_user(self, username: str, **changes: Any) -> UserPublic:
        data = self._request("PATCH", f"/v1/users/{username}", json=changes)
        return UserPublic.model_validate(data)

    def grants(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/v1/grants").get("grants", []))

    def grant(self, collection: str, permission: str, *, user: str | None = None, group: str | None = None) -> None:
        body = {"collection": collection, "permission": permission, "user": user, "group": group}
        self._request("POST", "/v1/grants", json=body)

    def revoke(self, collection: str, permission: str, *, user: str | None = None, group: str | None = None) -> None:
        body = {"collection": collection, "permission": permission, "user": user, "group": group}
        self._request("DELETE", "/v1/grants", json=body)

    def audit(self, *, user: str | None = None, action: str | None = None, limit: int = 100) -> list[AuditEntry]:
        params = {k: v for k, v in {"user": user, "action": action, "limit": limit}.items() if v}
        return [AuditEntry.model_validate(e) for e in self._request("GET", "/v1/audit", params=params)["entries"]]

    def metrics_text(self) -> str:
        """The Prometheus exposition text of GET /metrics."""
        return self._request("GET", "/metrics", raw=True).decode("utf-8", "replace")

    def eval_reports(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/v1/eval/reports").get("reports", []))

    def eval_report_html(self, report_id: str) -> str:
        return self._request("GET", f"/v1/eval/reports/{report_id}", raw=True).decode("utf-8", "replace")

    # Plumbing

    def _client(self, read_timeout: float) -> httpx.Client:
        timeout = httpx.Timeout(read_timeout, connect=self.connect_timeout)
        return httpx.Client(timeout=timeout, headers=self._headers)

    def _request(
        self, method: str, path: str, *, read_timeout: float | None = None, raw: bool = False, **kwargs: Any
    ) -> Any:
        url = self.base_url + path
        try:
            with self._client(read_timeout or self.quick_timeout) as client:
                resp = client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise ApiUnreachable(self.base_url, _reason(exc)) from exc
        if resp.status_code >= 400:
            raise _error_from(resp)
        if raw:
            return resp.content
        try:
            return resp.json()
        except ValueError as exc:
            raise ApiError(f"The API answered {path} with something that is not JSON.", type="bad_response") from exc


def _error_from(resp: httpx.Response) -> ApiError:
    """Read the API's `{"error": {"type", "message"}}` body, or FastAPI's `{"detail": ...}`."""
    try:
        payload = resp.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        if isinstance(payload.get("error"), dict):
            body = payload["error"]
            return ApiError(
                str(body.get("message", resp.reason_phrase)),
                type=str(body.get("type", "error")),
                status=resp.status_code,
            )
        if "detail" in payload:
            return ApiError(_detail_text(payload["detail"]), type="bad_request", status=resp.status_code)
    text = resp.text.strip()[:300] or resp.reason_phrase
    return ApiError(f"HTTP {resp.status_code}: {text}", status=resp.status_code)


def _detail_text(detail: Any) -> str:
    if isinstance(detail, list):  # pydantic validation errors
        return "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    return str(detail)


def _reason(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "it did not answer in time"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused" if "refused" in str(exc).lower() else (str(exc) or "could not connect")
    return str(exc) or type(exc).__name__
