"""The consumer's side of a request: a stream of text deltas fed by the engine's decode thread.

The decode thread `post`s deltas and, last, one `_Final` into a per-request `queue.Queue`;
the consumer iterates synchronously (`for delta in stream`) or asynchronously
(`async for delta in stream`, for FastAPI). A consumer that stops early (breaks, closes the
iterator, or drops the stream) cancels the request, and the engine frees its KV cache at the
next step.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

from serving.generator import Completion, EngineClosedError, SamplingParams, ServingError

_POLL_S = 0.5  # how often a waiting consumer checks that the decode thread is still alive
_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class _Final:
    error: ServingError | None = None


@dataclass(eq=False)
class Request:
    """One submitted request, shared by the consumer and the decode thread."""

    tokens: list[int]
    params: SamplingParams
    engine_alive: Callable[[], bool]
    deadline: float | None = None  # time.perf_counter() value; None = no timeout
    score_tokens: tuple[int, ...] | None = None  # a scoring request: log-probs of these next tokens, no generation
    scores: list[float] | None = None  # filled by the decode thread for a scoring request
    score_span: int = 0  # a scoring request: log-probs of its last `score_span` prompt tokens, no generation
    span_logprobs: list[float] = field(default_factory=list)  # filled by the decode thread, in prompt order
    id: int = field(default_factory=lambda: next(_ids))
    submitted: float = field(default_factory=time.perf_counter)
    completion: Completion = field(default_factory=Completion)
    cancelled: bool = False  # set by the consumer, read by the decode thread
    finished: bool = False  # set by the decode thread once the final event is posted
    _events: queue.Queue = field(default_factory=queue.Queue)
    _wake: Callable[[], object] | None = None  # called after each event is posted (the async consumer's)

    @property
    def scoring(self) -> bool:
        """A request that reads its prompt for log-probabilities and generates nothing."""
        return self.score_tokens is not None or self.score_span > 0

    # -- decode thread side -------------------------------------------------------------
    def post(self, delta: str) -> None:
        if delta:
            self.completion.text += delta
            self._put(delta)

    def finish(self, reason: str, error: ServingError | None = None) -> None:
        """Close the stream: fill in the timings and release the consumer. Idempotent."""
        if self.finished:
            return
        self.finished = True
        c = self.completion
        c.finish_reason = reason
        c.total_ms = (time.perf_counter() - self.submitted) * 1000.0
        if error is not None:
            c.extra["error"] = str(error)
        self._put(_Final(error))

    def _put(self, event: str | _Final) -> None:
        self._events.put(event)
        wake = self._wake
        if wake is not None:
            try:
                wake()
            except RuntimeError:  # the consumer's event loop is closed; nobody is listening
                pass

    # -- consumer side ------------------------------------------------------------------
    def next_event(self, timeout: float) -> str | _Final | None:
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None

    def next_event_nowait(self) -> str | _Final | None:
        try:
            return self._events.get_nowait()
        except queue.Empty:
            return None


class EngineStream:
    """Implements `serving.generator.GenerationStream` for `BatchingEngine`."""

    def __init__(self, request: Request) -> None:
        self._request = request
        self.completion: Completion = request.completion
        self._consumed = False
        # Dropping the stream without reading it to the end cancels the request. The callback
        # must not reference `self`, and only sets a flag (no locks: it may run inside the GC).
        weakref.finalize(self, _cancel, request)

    @property
    def request_id(self) -> int:
        return self._request.id

    def cancel(self) -> None:
        """Stop generating; the engine frees the request's KV cache at its next step.

        `completion.finish_reason` reads "cancelled" at once; the timings are final when the
        engine has let go of the request (iterating the stream to its end waits for that).
        """
        request = self._request
        _cancel(request)
        if not request.finished:
            request.completion.finish_reason = "cancelled"

    def __iter__(self) -> Iterator[str]:
        return self._iterate()

    def _iterate(self) -> Iterator[str]:
        self._claim()
        request = self._request
        try:
            while True:
                event = request.next_event(_POLL_S)
                if event is None:
                    self._check_alive()
                    continue
                if isinstance(event, _Final):
                    if event.error is not None:
                        raise event.error
                    return
                yield event
        finally:
            if not request.finished:
                _cancel(request)

    def __aiter__(self) -> AsyncIterator[str]:
        return self._aiterate()

    async def _aiterate(self) -> AsyncIterator[str]:
        self._claim()
        request = self._request
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        request._wake = lambda: loop.call_soon_threadsafe(ready.set)
        try:
            while True:
                ready.clear()
                event = request.next_event_nowait()
                if event is None:
                    try:
                        await asyncio.wait_for(ready.wait(), _POLL_S)
                    except TimeoutError:
                        self._check_alive()
                    continue
                if isinstance(event, _Final):
                    if event.error is not None:
                        raise event.error
                    return
                yield event
        finally:
            request._wake = None
            if not request.finished:
                _cancel(request)

    def _claim(self) -> None:
        if self._consumed:
            raise RuntimeError("a GenerationStream can be iterated only once")
        self._consumed = True

    def _check_alive(self) -> None:
        request = self._request
        if not request.finished and not request.engine_alive():
            request.finish("error", EngineClosedError("the engine stopped while the request was running"))


def _cancel(request: Request) -> None:
    request.cancelled = True
