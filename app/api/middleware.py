"""Request ids, one structured log line per request, and per-caller rate limits.

Both are plain ASGI middleware, so streamed answers (SSE) pass through untouched. Nothing secret is logged: the
line names the method, the path (no query string), the status, the time taken and a caller fingerprint (a short hash
of the credential, never the credential itself).
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

logger = logging.getLogger("consulta.access")

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Paths a health probe or the metrics scraper hits every few seconds: never rate limited.
UNLIMITED = ("/health", "/metrics")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def caller_fingerprint(scope: Scope) -> str:
    """A short, stable, non-reversible name for who is calling: their credential's hash, else their address."""
    cred = _header(scope, b"authorization") or _header(scope, b"x-api-key")
    if cred:
        return "key:" + hashlib.sha256(cred.encode()).hexdigest()[:12]
    client = scope.get("client") or ("unknown", 0)
    return f"ip:{client[0]}"


class RequestLogMiddleware:
    """Gives every request an id (X-Request-ID, taken from the caller when it sends a sane one) and logs one line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id") or ""
        rid = given if 0 < len(given) <= 64 and given.replace("-", "").isalnum() else uuid.uuid4().hex[:16]
        token = request_id_var.set(rid)
        start = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            logger.info("request", extra={"event": {
                "method": scope.get("method"), "path": scope.get("path"), "status": status,
                "duration_ms": round((time.perf_counter() - start) * 1000, 1),
                "caller": caller_fingerprint(scope)}})
            request_id_var.reset(token)


class RateLimiter:
    """A token bucket per caller: `per_minute` requests a minute on average, bursts up to `burst`."""

    def __init__(self, per_minute: int, burst: int | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst or max(1, per_minute // 4))
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, caller: str) -> float:
        """0 if the request may go now, else the seconds to wait before the next one is allowed."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(caller, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[caller] = (tokens - 1.0, now)
                return 0.0
            self._buckets[caller] = (tokens, now)
            if len(self._buckets) > 10_000:  # forget idle callers; bounded memory under address churn
                cutoff = now - self.burst / self.rate
                self._buckets = {k: v for k, v in self._buckets.items() if v[1] >= cutoff}
            return (1.0 - tokens) / self.rate


class RateLimitMiddleware:
    """Answers 429 with a Retry-After header, in the API's error shape, when a caller goes over its limit."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") == "OPTIONS" or scope.get("path", "").startswith(UNLIMITED):
            await self.app(scope, receive, send)
            return
        wait = self.limiter.take(caller_fingerprint(scope))
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": {"type": "rate_limited", "message": (
            f"too many requests; try again in {math.ceil(wait)} s (limit: "
            f"{round(self.limiter.rate * 60)} a minute per caller, setting api.rate_limit_per_minute)")}}).encode()
        await send({"type": "http.response.start", "status": 429, "headers": [
            (b"content-type", b"application/json"), (b"retry-after", str(math.ceil(wait)).encode()),
            (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, and any structured `event` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage(),
            "request_id": request_id_var.get()}
        event = getattr(record, "event", None)
        if isinstance(event, dict):
            out.update(event)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class TextLogFormatter(logging.Formatter):
    """Human-readable lines for a terminal, with the request id and the structured fields appended."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.name} [{request_id_var.get()}] " \
               f"{record.getMessage()}"
        event = getattr(record, "event", None)
        if isinstance(event, dict):
            line += " " + " ".join(f"{k}={v}" for k, v in event.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(fmt: str = "text", level: int = logging.INFO) -> None:
    """Route the app's and uvicorn's logs through one handler on stderr, as JSON lines or as text."""
    import sys

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter() if fmt == "json" else TextLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # our request line replaces it (it would log query strings)
