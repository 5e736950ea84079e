"""An OpenAI-compatible HTTP surface for a Generator: /v1/chat/completions, /v1/completions, /v1/models.

`openai_router(get_generator)` returns a FastAPI router; the app mounts it beside its own routes,
and `python -m serving.openai_server --model X.gguf` serves an engine on its own. Any OpenAI
client works against it (base_url "http://host:port/v1"). What it follows and what it adds:

- streaming as server-sent events (`data: {chunk}` ... `data: [DONE]`), `stream_options.include_usage`;
- sampling: temperature, top_p, max_tokens / max_completion_tokens, stop, seed, frequency_penalty,
  presence_penalty, and `response_format` json_object / json_schema (grammar-constrained);
  llama.cpp-style extensions: top_k, repeat_penalty, grammar (GBNF);
- `tools` and `tool_choice` (none, auto, required, a named function): the tools go into the model's chat
  template and a required call is grammar-constrained to the tool's JSON schema; calls come back as
  `tool_calls` with finish_reason "tool_calls" (serving/tools.py; the in-process engine only);
- one choice per request (`n` > 1 is refused), no logprobs;
- every response (and the last streamed chunk) carries `timings`: queue_ms, ttft_ms, tpot_ms,
  total_ms, tokens_per_s, measured by the engine;
- errors as `{"error": {"message", "type", "code"}}`: 400 bad request or prompt too long,
  429 queue full, 503 engine unavailable.

This module imports nothing of the app's: `serving` stays liftable into a package of its own.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import anyio
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from serving.generator import (
    Completion,
    EngineBusyError,
    EngineClosedError,
    Generator,
    ModelNotFoundError,
    NextTokenScorer,
    PromptTooLongError,
    SamplingParams,
    ServingError,
)
from serving.tools import ToolCall, answered_calls, call_grammar, check_tools, parse_calls, template_messages

logger = logging.getLogger(__name__)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """Content as text; array content keeps its text parts (no images here)."""
        if isinstance(self.content, list):
            return "".join(p.get("text", "") for p in self.content if p.get("type") == "text")
        return self.content or ""

    def for_template(self) -> dict[str, Any]:
        """The message as a chat template reads it: role and text, and an assistant's tool calls or a tool
        result's id when there are."""
        extra = {k: v for k, v in (self.model_extra or {}).items() if k in ("tool_calls", "tool_call_id", "name")}
        return {"role": "system" if self.role == "developer" else self.role, "content": self.text(), **extra}


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: dict[str, Any] | None = None  # {"name": ..., "schema": {...}}


class StreamOptions(BaseModel):
    include_usage: bool = False


class _SamplingBody(BaseModel):
    model_config = ConfigDict(extra="ignore")  # unknown OpenAI fields are accepted and ignored
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, description="llama.cpp extension; 0 = off")
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    repeat_penalty: float = Field(1.0, gt=0.0, description="llama.cpp extension; 1 = off")
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    grammar: str | None = Field(None, description="llama.cpp extension: GBNF the output must follow")

    def params(self, default_max_tokens: int) -> SamplingParams:
        if self.n != 1:
            raise ValueError("n: only one choice per request is supported")
        from serving.sampling import json_grammar  # imports llama_cpp: only when a request needs it

        grammar = self.grammar
        fmt = self.response_format
        if fmt is not None and fmt.type == "json_object":
            grammar = json_grammar()
        elif fmt is not None and fmt.type == "json_schema":
            schema = (fmt.json_schema or {}).get("schema")
            if not isinstance(schema, dict):
                raise ValueError("response_format.json_schema.schema: a JSON schema object is required")
            grammar = json_grammar(schema)
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return SamplingParams(
            max_tokens=self._max_tokens() or default_max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            repeat_penalty=self.repeat_penalty,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            seed=self.seed if self.seed is not None else uuid.uuid4().int & 0xFFFFFFFF,
            stop=stop,
            grammar=grammar,
        )

    def _max_tokens(self) -> int | None:
        return self.max_tokens


class ChatCompletionRequest(_SamplingBody):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None  # accepted; a call under a grammar is one call

    def tool_specs(self) -> list[dict[str, Any]]:
        """The tools the model is shown: none when there are none or tool_choice is "none"."""
        return [] if not self.tools or self.tool_choice == "none" else self.tools

    def _max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_SamplingBody):
    prompt: str | list[str]
    echo: bool = False

    def prompt_text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise ValueError("prompt: one prompt per request is supported")
        return self.prompt[0]


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


def _status(exc: Exception) -> tuple[int, str]:
    match exc:
        case EngineBusyError():
            return 429, "busy"
        case PromptTooLongError():
            return 400, "prompt_too_long"
        case ValueError():
            return 400, "invalid_request_error"
        case ModelNotFoundError() | EngineClosedError():
            return 503, "engine_unavailable"
        case ServingError():
            return 500, "engine_error"
    return 500, "internal"


def timings(c: Completion) -> dict[str, float | None]:
    """Per-request timings as the engine measured them (ms; tokens/s over the decoding phase)."""
    r = lambda x: None if x is None else round(x, 2)  # noqa: E731
    tpot = c.tpot_ms
    return {"queue_ms": r(c.queue_ms), "ttft_ms": r(c.ttft_ms), "tpot_ms": r(tpot), "total_ms": r(c.total_ms),
            "tokens_per_s": r(1000.0 / tpot) if tpot else None}


def _usage(c: Completion) -> dict[str, Any]:
    return {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
            "total_tokens": c.prompt_tokens + c.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": c.extra.get("cached_tokens", 0)}}


def _finish_reason(c: Completion) -> str:
    return "length" if c.finish_reason == "length" else "stop"


def _sse(data: Any) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


@dataclass
class _Reply:
    """One completion's OpenAI-shaped replies: the whole answer, or its stream of chunks."""

    kind: str  # "chat" or "completion"
    rid: str
    created: int
    model: str = "default"

    @property
    def chunk_object(self) -> str:
        return "chat.completion.chunk" if self.kind == "chat" else "text_completion"

    def body(self, c: Completion, text: str) -> dict:
        if self.kind == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "logprobs": None, "finish_reason": _finish_reason(c)}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": _finish_reason(c)}
            obj = "text_completion"
        return {"id": self.rid, "object": obj, "created": self.created, "model": self.model, "choices": [choice],
                "usage": _usage(c), "timings": timings(c)}

    def tool_body(self, c: Completion, content: str | None, calls: list[ToolCall]) -> dict:
        """A chat completion whose answer is calls to the client's tools."""
        message = {"role": "assistant", "content": content, "tool_calls": [t.to_openai() for t in calls]}
        return {"id": self.rid, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}],
                "usage": _usage(c), "timings": timings(c)}

    def tool_events(self, c: Completion, content: str | None, calls: list[ToolCall],
                    include_usage: bool) -> list[bytes]:
        """The same as server-sent chunks (a call's arguments come whole, in one delta)."""
        first = self.chunk(None, role=True)
        first["choices"][0]["delta"]["content"] = content
        calls_chunk = self.chunk(None)
        calls_chunk["choices"][0]["delta"] = {"tool_calls": [t.to_openai(i) for i, t in enumerate(calls)]}
        last = self.chunk(None, "tool_calls")
        last["timings"] = timings(c)
        out = [_sse(first), _sse(calls_chunk), _sse(last)]
        if include_usage:
            out.append(_sse({"id": self.rid, "object": self.chunk_object, "created": self.created,
                             "model": self.model, "choices": [], "usage": _usage(c)}))
        return out + [b"data: [DONE]\n\n"]

    def chunk(self, delta: str | None, finish: str | None = None, role: bool = False) -> dict:
        if self.kind == "chat":
            d: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if delta is not None:
                d["content"] = delta
            choice = {"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish}
        return {"id": self.rid, "object": self.chunk_object, "created": self.created, "model": self.model,
                "choices": [choice]}

    async def whole(self, stream: Any, request: Request, echo: str) -> Any:
        """Wait for the whole completion (cancelled when the client goes away) and answer it in one body."""
        try:
            async for _ in stream:
                if await request.is_disconnected():  # nobody waits for the answer: free the slot
                    logger.info("client went away; cancelling %s", self.rid)
                    break
        except Exception as exc:  # noqa: BLE001
            status, err = _status(exc)
            return _error(status, err, str(exc))
        finally:
            stream.cancel()  # a no-op once finished; frees the KV when the client went away
        c = stream.completion
        return self.body(c, echo + c.text)

    async def events(self, stream: Any, echo: str, include_usage: bool) -> AsyncIterator[bytes]:
        """The completion as server-sent chunks, then its usage (when asked) and [DONE]."""
        try:
            if self.kind == "chat":
                yield _sse(self.chunk(None, role=True))
            elif echo:
                yield _sse(self.chunk(echo))
            async for delta in stream:
                yield _sse(self.chunk(delta))
            c = stream.completion
            last = self.chunk(None, _finish_reason(c))
            last["timings"] = timings(c)
            yield _sse(last)
            if include_usage:
                yield _sse({"id": self.rid, "object": self.chunk_object, "created": self.created,
                            "model": self.model, "choices": [], "usage": _usage(c)})
            yield b"data: [DONE]\n\n"
        except Exception as exc:  # noqa: BLE001 - the status line is sent: report in-band
            status, err = _status(exc)
            yield _sse({"error": {"message": str(exc), "type": err, "code": status}})
        finally:
            stream.cancel()  # the client went away (the task is cancelled): free the slot and its KV


def _takes_tools(gen: Generator) -> bool:
    """The in-process engine renders tools in the model's chat template (a remote backend does not, yet)."""
    return isinstance(gen, NextTokenScorer)


def openai_router(get_generator: Callable[[], Generator], *, default_max_tokens: int = 512) -> APIRouter:
    """Routes under /v1 over the generator `get_generator()` returns (called per request, off the event loop:
    it may load the model the first time)."""
    router = APIRouter(prefix="/v1", tags=["openai"])

    async def generator() -> Generator:
        return await anyio.to_thread.run_sync(get_generator)

    async def handle(kind: str, body: Any, request: Request):  # ChatCompletionRequest or CompletionRequest
        reply = _Reply(kind, ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24], int(time.time()))
        prompt = ""
        try:
            gen = await generator()
            params = body.params(default_max_tokens)
            if kind == "chat" and (body.tools or any(m.role == "tool" for m in body.messages)):
                return await tools_reply(gen, body, params, reply, request)
            if kind == "chat":
                messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                            for m in body.messages]
                submit = lambda: gen.stream(messages, params)  # noqa: E731
            else:
                prompt = body.prompt_text()
                if not hasattr(gen, "stream_prompt"):
                    raise ValueError("this backend serves chat completions only (use /v1/chat/completions)")
                submit = lambda: gen.stream_prompt(prompt, params)  # noqa: E731
            # submitting tokenizes and may refuse (busy, too long): done before any byte is sent
            stream: Any = await anyio.to_thread.run_sync(submit)  # the engine's stream, async-iterable
        except Exception as exc:  # noqa: BLE001 - mapped to an OpenAI-style error body
            status, err = _status(exc)
            if err == "internal":
                logger.exception("unexpected error in %s completion", kind)
            return _error(status, err, str(exc) if err != "internal" else "internal error; see the server log")
        reply.model = getattr(gen, "model_id", body.model or "default")
        echo = prompt if kind == "completion" and body.echo else ""
        if not body.stream:
            return await reply.whole(stream, request, echo)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(reply.events(stream, echo, include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def tools_reply(gen: Any, body: ChatCompletionRequest, params: SamplingParams, reply: _Reply,
                          request: Request) -> Any:
        """A chat with tools, or with tool calls and results in its history: the whole output is read for calls
        (a required call is grammar-constrained; an "auto" output that tries a call and fails is asked again
        under the grammar; a call the conversation already answered is not repeated: the model answers from
        its result), then answered whole or as a short stream."""
        tools = body.tool_specs()
        forced = check_tools(tools, body.tool_choice) if tools else None
        if not _takes_tools(gen):
            raise ValueError("tools: this backend does not take tools (they need the in-process engine)")
        messages = template_messages([m.for_template() for m in body.messages])
        reply.model = gen.model_id

        async def run(p: SamplingParams, shown: list[dict[str, Any]] | None) -> tuple[Completion | None, Any]:
            stream = await anyio.to_thread.run_sync(lambda: gen.stream(messages, p, tools=shown or None))
            answer = await reply.whole(stream, request, "")
            return (stream.completion, None) if isinstance(answer, dict) else (None, answer)

        c, error = await run(replace(params, grammar=call_grammar(tools, forced or None))
                             if forced is not None else params, tools)
        if c is None:
            return error
        content, calls, attempted = parse_calls(c.text, tools) if tools else (c.text, [], False)
        if attempted and forced is None:  # a call that does not parse: the same request under the grammar
            c, error = await run(replace(params, grammar=call_grammar(tools)), tools)
            if c is None:
                return error
            content, calls, _ = parse_calls(c.text, tools)
        if calls and forced is None and all(call.key() in answered_calls(messages) for call in calls):
            c, error = await run(params, None)  # the results are there: answer from them
            if c is None:
                return error
            content, calls = c.text, []
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        if not calls:
            if not body.stream:
                return reply.body(c, content or "")
            events = [_sse(reply.chunk(None, role=True)), _sse(reply.chunk(content or "")),
                      _sse({**reply.chunk(None, _finish_reason(c)), "timings": timings(c)}), b"data: [DONE]\n\n"]
        elif not body.stream:
            return reply.tool_body(c, content, calls)
        else:
            events = reply.tool_events(c, content, calls, include_usage)

        async def replay() -> AsyncIterator[bytes]:
            for e in events:
                yield e

        return StreamingResponse(replay(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @router.post("/chat/completions", summary="OpenAI-compatible chat completion (SSE with stream=true)")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        return await handle("chat", body, request)

    @router.post("/completions", summary="OpenAI-compatible text completion (no chat template)")
    async def completions(body: CompletionRequest, request: Request):
        return await handle("completion", body, request)

    @router.get("/models", summary="The model this server generates with")
    async def models():
        try:
            model = (await generator()).model_id
        except Exception as exc:  # noqa: BLE001
            status, err = _status(exc)
            return _error(status, err, str(exc))
        return {"object": "list", "data": [{"id": model, "object": "model", "created": 0, "owned_by": "consulta"}]}

    return router


def create_engine_app(generator: Generator, *, default_max_tokens: int = 512) -> FastAPI:
    """A standalone engine server: just the OpenAI routes (and a /health probe) over one generator."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await anyio.to_thread.run_sync(generator.warm_up)
        yield
        generator.close()

    app = FastAPI(title="Consulta engine", lifespan=lifespan)
    app.include_router(openai_router(lambda: generator, default_max_tokens=default_max_tokens))

    @app.get("/health")
    async def health():
        stats = getattr(generator, "stats", None)
        return {"status": "ok", "model": generator.model_id, **({"engine": stats()} if stats else {})}

    return app


def main() -> None:
    """`python -m serving.openai_server --model X.gguf`: serve one GGUF over the OpenAI API."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--model", required=True, help="GGUF file")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--n-ctx", type=int, default=8192)
    ap.add_argument("--max-sequences", type=int, default=8)
    ap.add_argument("--n-batch", type=int, default=512)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--n-gpu-layers", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    import uvicorn

    from serving.engine import BatchingEngine

    engine = BatchingEngine(args.model, n_ctx=args.n_ctx, max_sequences=args.max_sequences, n_batch=args.n_batch,
                            n_threads=args.threads, n_gpu_layers=args.n_gpu_layers)
    uvicorn.run(create_engine_app(engine), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
