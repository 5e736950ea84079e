"""The HTTP API: `create_app(services)` builds the FastAPI app over the composed services."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, StreamingResponse

from app.api.access import AUTH_ERRORS
from app.api.access import router as access_router
from app.api.conversations import router as conversations_router
from app.api.deps import PrincipalDep, ServicesDep, TokenDep, get_principal, get_services  # noqa: F401 - get_services re-exported
from app.api.documents import index_documents as _documents
from app.api.documents import router as documents_router
from app.api.metrics import install_metrics
from app.api.middleware import RateLimiter, RateLimitMiddleware, RequestLogMiddleware
from app.api.reports import router as reports_router
from app.api.schemas import (
    AskRequest,
    AskResponse,
    CollectionOut,
    CollectionsResponse,
    ErrorResponse,
    HealthResponse,
    HitOut,
    SearchRequest,
    SearchResponse,
)
from app.auth import Principal
from app.chat import Events
from app.errors import AuthenticationError, ConsultaError, NotFoundError
from ingest.errors import IngestError, InputPathError
from retrieval.errors import EmbedderMismatchError, IndexNotFoundError, IndexWriteError, RetrievalError
from retrieval.types import SearchFilter
from serving.generator import EngineBusyError, PromptTooLongError, ServingError
from serving.openai_server import openai_router

if TYPE_CHECKING:
    from app.container import Services

logger = logging.getLogger(__name__)

VERSION = "0.1.0"

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Bad input"},
    401: {"model": ErrorResponse, "description": "No valid API key or session token"},
    403: {"model": ErrorResponse, "description": "Signed in, but not allowed (role or grants)"},
    404: {"model": ErrorResponse, "description": "No index yet, or no such collection"},
    429: {"model": ErrorResponse, "description": "The engine's queue is full: try again shortly"},
    503: {"model": ErrorResponse, "description": "The model is not available"},
}


def _error_status(e: Exception) -> tuple[int, str]:
    match e:
        case ConsultaError():
            return e.status, e.kind
        case EngineBusyError():
            return 429, "busy"
        case PromptTooLongError():
            return 400, "prompt_too_long"
        case IndexNotFoundError():
            return 404, "no_index"
        case EmbedderMismatchError():
            return 409, "embedder_mismatch"
        case IndexWriteError():
            return 507, "insufficient_storage"
        case InputPathError():
            return 400, "bad_request"
        case IngestError():
            return 422, "unprocessable"
        case RetrievalError():
            return 500, "retrieval_error"
        case ServingError():
            return 503, "engine_error"
    return 500, "internal"


def _error_json(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status)


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def _ask_stream(events: Events, first: tuple[str, Any],
                      request: Request) -> AsyncIterator[bytes]:
    """The chat service's events as server-sent events; an error after the status line is sent in-band."""
    event, payload = first
    try:
        while True:
            if event == "token":
                yield _sse("token", {"text": payload})
            else:  # "sources" (SourcesOut), "done" (AskResponse)
                yield _sse(event, payload.model_dump())
                if event == "done":
                    return
            if await request.is_disconnected():
                logger.info("client went away; cancelling the answer")
                return
            nxt = await anyio.to_thread.run_sync(lambda: next(events, None))
            if nxt is None:
                return
            event, payload = nxt
    except Exception as e:  # noqa: BLE001 - reported in-band: the status line is already sent
        status, kind = _error_status(e)
        if kind == "internal":
            logger.exception("error while streaming an answer")
        yield _sse("error", {"error": {"type": kind, "message": str(e) if kind != "internal"
                                       else "internal error; see the server log"}})
    finally:
        events.close()  # the chat service closes the assistant's stream: cancels generation, frees the KV cache


def _warm_up(services: Services) -> None:
    try:
        services.retriever.warm_up()
        services.assistant  # noqa: B018 - builds and warms the generator
        logger.info("warm-up done: embedder and model loaded")
    except Exception as e:  # noqa: BLE001 - the same error reaches the first request, with its status
        logger.warning("warm-up failed: %s", e)


def _read_filter(s: Services, principal: Principal, collection: str | None) -> SearchFilter | None:
    """The search filter for this caller: an unknown collection and one they may not read look the same (404)."""
    if collection is not None:
        known = {d["collection"] for d in _documents(s)}
        if collection not in known or not principal.can_read(collection):
            raise NotFoundError(f"no collection named '{collection}' (see GET /v1/collections)")
    return principal.search_filter(collection)


async def on_error(request: Request, exc: Exception) -> JSONResponse:
    status, kind = _error_status(exc)
    if status >= 500 and kind == "internal":
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error_json(500, kind, "internal error; see the server log")
    return _error_json(status, kind, str(exc))


async def on_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # registered for it alone
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return _error_json(422, "validation_error", f"{where}: {first.get('msg')}" if where else str(first.get("msg")))


# The routes of asking: health, search, ask, collections (the other groups live in their own modules).
router = APIRouter()


@router.get("/health", response_model=HealthResponse, tags=["system"])
def health(s: ServicesDep, token: TokenDep) -> HealthResponse:
    """Open to all; `index_chunks` counts only the passages the caller may read (0 when not signed in)."""
    try:
        s.store.ensure_current()
    except IndexNotFoundError:
        pass
    chunks = 0
    if token:
        try:
            principal = s.access.authenticate(token)
            chunks = sum(d["chunks"] for d in _documents(s) if principal.can_read(d["collection"]))
        except AuthenticationError:
            pass
    return HealthResponse(status="ok", index_chunks=chunks, model=s.settings.serving.model,
                          embedder=s.settings.retrieval.embedder, version=VERSION)

@router.post("/v1/search", response_model=SearchResponse, responses=ERROR_RESPONSES, tags=["ask"])
def search(body: SearchRequest, s: ServicesDep, principal: PrincipalDep) -> SearchResponse:
    """The passages that best match a query, from the collections the caller may read."""
    flt = _read_filter(s, principal, body.collection)
    hits = s.retriever.retrieve(body.query, body.k, flt)
    s.audit.record("search", user_id=principal.user_id, username=principal.username,
                   collection=body.collection, query=body.query, hits=len(hits))
    return SearchResponse(hits=[HitOut.from_hit(h) for h in hits])

@router.post("/v1/ask", response_model=AskResponse, responses={
    **ERROR_RESPONSES, 200: {"content": {"text/event-stream": {}},
                             "description": "The answer; with stream=true, server-sent events "
                                            "(sources, token..., done)"}}, tags=["ask"])
async def ask(body: AskRequest, request: Request, s: ServicesDep, principal: PrincipalDep):
    """Answer from the collections the caller may read, citing its sources; saved in a conversation."""
    chat = await anyio.to_thread.run_sync(lambda: s.chat)
    flt = await anyio.to_thread.run_sync(lambda: _read_filter(s, principal, body.collection))
    events = chat.ask(body.question, caller=principal, conversation_id=body.conversation_id,
                      collection=body.collection, filter=flt, k=body.k, language=body.language)
    if not body.stream:
        def run() -> AskResponse:
            with closing(events):
                for event, payload in events:
                    if event == "done":
                        return payload
            raise RuntimeError("the answer ended without its done event")  # pragma: no cover

        return await anyio.to_thread.run_sync(run)
    # Take the first event before answering, so that errors (no such conversation, no index, busy) get their
    # status code.
    first = await anyio.to_thread.run_sync(lambda: next(events))
    return StreamingResponse(_ask_stream(events, first, request), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

@router.get("/v1/collections", response_model=CollectionsResponse, tags=["documents"], responses=AUTH_ERRORS)
def collections(s: ServicesDep, principal: PrincipalDep) -> CollectionsResponse:
    """The collections the caller may read (others are not listed)."""
    agg: dict[str, CollectionOut] = {}
    for d in _documents(s):
        if not principal.can_read(d["collection"]):
            continue
        c = agg.setdefault(d["collection"], CollectionOut(name=d["collection"], documents=0, chunks=0))
        c.documents += 1
        c.chunks += d["chunks"]
    return CollectionsResponse(collections=sorted(agg.values(), key=lambda c: c.name))


def create_app(services: Services) -> FastAPI:
    """The API over one Services instance (the composition root builds it; tests pass their own)."""
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if services.settings.api.warm_up:
            # Load the embedder and the model in the background, so the first question does not wait.
            threading.Thread(target=_warm_up, args=(services,), name="warm-up", daemon=True).start()
        yield
        services.close()

    app = FastAPI(title="Consulta API", version=VERSION, lifespan=lifespan,
                  description="Ask an organisation's own documents; answers cite the pages they came from.")
    if services.settings.api.rate_limit_per_minute:
        app.add_middleware(RateLimitMiddleware, limiter=RateLimiter(services.settings.api.rate_limit_per_minute))
    app.add_middleware(CORSMiddleware, allow_origins=services.settings.api.cors_origins, allow_methods=["*"],
                       allow_headers=["*"])
    app.add_middleware(RequestLogMiddleware)  # outermost: every response, 429s included, gets an id and a log line
    app.state.services = services

    for known in (ConsultaError, IngestError, RetrievalError, ServingError, Exception):
        app.add_exception_handler(known, on_error)

    app.add_exception_handler(RequestValidationError, on_invalid)

    app.include_router(router)
    app.include_router(access_router)
    app.include_router(conversations_router)
    app.include_router(documents_router)
    app.include_router(reports_router)  # GET /v1/eval/reports (admins)
    # the engine's OpenAI-compatible surface (/v1/chat/completions, /v1/completions, /v1/models), signed-in callers
    app.include_router(openai_router(lambda: services.generator,
                                     default_max_tokens=services.settings.serving.max_tokens),
                       dependencies=[Depends(get_principal)])
    install_metrics(app, services)  # GET /metrics (Prometheus), open like /health
    return app
