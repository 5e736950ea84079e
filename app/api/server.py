"""The HTTP API: `create_app(services)` builds the FastAPI app over the composed services."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, StreamingResponse

from app.api.middleware import RateLimiter, RateLimitMiddleware, RequestLogMiddleware
from app.api.schemas import (
    AskRequest,
    AskResponse,
    CitationOut,
    CollectionOut,
    CollectionsResponse,
    DocumentOut,
    ErrorResponse,
    HealthResponse,
    HitOut,
    IngestFileResult,
    IngestResponse,
    SearchRequest,
    SearchResponse,
)
from app.errors import ConsultaError, NotFoundError
from ingest.errors import IngestError, InputPathError
from retrieval.errors import EmbedderMismatchError, IndexNotFoundError, RetrievalError
from retrieval.types import SearchFilter
from serving.generator import EngineBusyError, PromptTooLongError, ServingError

logger = logging.getLogger(__name__)

VERSION = "0.1.0"

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Bad input"},
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


def _citation(c) -> CitationOut:
    return CitationOut(n=c.n, chunk_id=c.chunk_id, source=c.source, title=c.title, page=c.page, section=c.section,
                       start=c.start, end=c.end, score=round(c.score, 4), text=c.text,
                       dense_score=_round(c.dense_score))


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _ask_response(answer) -> AskResponse:
    return AskResponse(answer=answer.text, refused=answer.refused,
                       citations=[_citation(c) for c in answer.citations],
                       timings=answer.timings, model=answer.model,
                       usage={**answer.usage, "language": answer.language,
                              "sources": [_citation(c).model_dump() for c in answer.sources]})


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def _warm_up(services) -> None:
    try:
        services.retriever.warm_up()
        services.assistant  # noqa: B018 - builds and warms the generator
        logger.info("warm-up done: embedder and model loaded")
    except Exception as e:  # noqa: BLE001 - the same error reaches the first request, with its status
        logger.warning("warm-up failed: %s", e)


def get_services(request: Request):
    """The Services the app was created with (a FastAPI dependency)."""
    return request.app.state.services


ServicesDep = Annotated[Any, Depends(get_services)]


def create_app(services) -> FastAPI:
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

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        status, kind = _error_status(exc)
        if status >= 500 and kind == "internal":
            logger.exception("unexpected error on %s %s", request.method, request.url.path)
            return _error_json(500, kind, "internal error; see the server log")
        return _error_json(status, kind, str(exc))

    for known in (ConsultaError, IngestError, RetrievalError, ServingError, Exception):
        app.add_exception_handler(known, on_error)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error_json(422, "validation_error", f"{where}: {first.get('msg')}" if where else first.get("msg"))

    @app.get("/health", response_model=HealthResponse, tags=["system"])
    def health(s: ServicesDep) -> HealthResponse:
        store = s.store
        try:
            if store.identity is None:
                store.load()
            else:
                store.refresh()
            chunks = len(store)
        except IndexNotFoundError:
            chunks = 0
        return HealthResponse(status="ok", index_chunks=chunks, model=s.settings.serving.model,
                              embedder=s.settings.retrieval.embedder, version=VERSION)

    @app.post("/v1/search", response_model=SearchResponse, responses=ERROR_RESPONSES, tags=["ask"])
    def search(body: SearchRequest, s: ServicesDep) -> SearchResponse:
        flt = SearchFilter(collections=(body.collection,)) if body.collection else None
        hits = s.retriever.retrieve(body.query, body.k, flt)
        return SearchResponse(hits=[HitOut(chunk_id=h.chunk.id, source=h.chunk.source, title=h.chunk.meta.get("title"),
                                           page=h.chunk.page, section=h.chunk.section, score=round(h.score, 4),
                                           text=h.chunk.text, dense_score=_round(h.dense_score)) for h in hits])

    @app.post("/v1/ask", response_model=AskResponse, responses={
        **ERROR_RESPONSES, 200: {"content": {"text/event-stream": {}},
                                 "description": "The answer; with stream=true, server-sent events "
                                                "(sources, token..., done)"}}, tags=["ask"])
    async def ask(body: AskRequest, request: Request, s: ServicesDep):
        assistant = await anyio.to_thread.run_sync(lambda: s.assistant)
        if body.collection:
            known = {d["collection"] for d in await anyio.to_thread.run_sync(lambda: _documents(s))}
            if body.collection not in known:
                raise NotFoundError(f"no collection named '{body.collection}' (see GET /v1/collections)")
        events = assistant.stream(body.question, collection=body.collection, k=body.k)
        if not body.stream:
            def run():
                for event, payload in events:
                    if event == "done":
                        return payload
            answer = await anyio.to_thread.run_sync(run)
            return _ask_response(answer)
        # Take the first event before answering, so that errors (no index, busy) get their status code.
        first = await anyio.to_thread.run_sync(lambda: next(events))

        async def stream() -> AsyncIterator[bytes]:
            event, payload = first
            try:
                while True:
                    if event == "sources":
                        yield _sse("sources", {"citations": [_citation(c).model_dump() for c in payload]})
                    elif event == "token":
                        yield _sse("token", {"text": payload})
                    elif event == "done":
                        yield _sse("done", _ask_response(payload).model_dump())
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
                events.close()  # runs the assistant's cleanup: cancels generation, frees the KV cache

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def _documents(s) -> list[dict[str, Any]]:
        try:
            store = s.store
            if store.identity is None:
                store.load()
            else:
                store.refresh()
            return store.documents()
        except IndexNotFoundError:
            return []

    @app.get("/v1/collections", response_model=CollectionsResponse, tags=["documents"])
    def collections(s: ServicesDep) -> CollectionsResponse:
        agg: dict[str, CollectionOut] = {}
        for d in _documents(s):
            c = agg.setdefault(d["collection"], CollectionOut(name=d["collection"], documents=0, chunks=0))
            c.documents += 1
            c.chunks += d["chunks"]
        return CollectionsResponse(collections=sorted(agg.values(), key=lambda c: c.name))

    @app.get("/v1/documents", tags=["documents"])
    def documents(s: ServicesDep, collection: str | None = None) -> dict[str, list[DocumentOut]]:
        docs = [d for d in _documents(s) if collection is None or d["collection"] == collection]
        return {"documents": [DocumentOut(document_id=d["document_id"], source=d["source"], title=d["title"],
                                          collection=d["collection"], pages=d["pages"], chunks=d["chunks"])
                              for d in docs]}

    @app.post("/v1/documents", response_model=IngestResponse, responses=ERROR_RESPONSES, tags=["documents"])
    def upload(s: ServicesDep, files: Annotated[list[UploadFile], File(description="PDF, Word (.docx), HTML, Markdown or text files")],
               collection: Annotated[str, Form()] = "default") -> IngestResponse:
        max_bytes = int(s.settings.api.max_upload_mb * 1024 * 1024)
        upload_dir = s.settings.data_dir / "uploads" / collection
        upload_dir.mkdir(parents=True, exist_ok=True)
        saved: list[Path] = []
        rejected: list[IngestFileResult] = []
        for f in files:
            name = Path(f.filename or "upload").name
            if not name or name.startswith("."):
                rejected.append(IngestFileResult(source=name or "(unnamed)", status="failed",
                                                 error="file name is empty or hidden"))
                continue
            fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=upload_dir)
            size = 0
            with open(fd, "wb") as out:
                while block := f.file.read(1 << 20):
                    size += len(block)
                    if size > max_bytes:
                        break
                    out.write(block)
            if size > max_bytes:
                Path(tmp).unlink(missing_ok=True)
                rejected.append(IngestFileResult(source=name, status="failed",
                                                 error=f"{name}: larger than {s.settings.api.max_upload_mb} MB"))
                continue
            target = upload_dir / name
            shutil.move(tmp, target)
            saved.append(target)
        results = list(rejected)
        total = 0
        added = 0
        if saved:
            report = s.pipeline.ingest(saved, collection)
            for r in report.files:
                error = r.error.replace(f"{Path(r.source).parent}/", "") if r.error else None  # no server paths
                results.append(IngestFileResult(source=Path(r.source).name, status=r.status, chunks=r.chunks,
                                                pages=r.pages, error=error))
                if r.status == "failed":
                    Path(r.source).unlink(missing_ok=True)
            total, added = report.total_chunks, report.chunks_added
        return IngestResponse(collection=collection, files=results, chunks_added=added, total_chunks=total)

    @app.delete("/v1/documents/{document_id}", tags=["documents"], responses=ERROR_RESPONSES)
    def delete_document(document_id: str, s: ServicesDep) -> dict[str, Any]:
        removed = s.pipeline.remove([document_id])
        if not removed:
            raise NotFoundError(f"no document with id {document_id}")
        return {"deleted": document_id, "chunks_removed": removed}

    return app
