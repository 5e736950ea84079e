"""The engine's scheduler: the decode thread that admits queued requests into slots and runs the forward passes.

Each step is one forward pass over the next token of every generating sequence, then chunks of prompts still
being read, oldest first, up to `n_batch` prompt tokens per step, each chunk in a pass of its own that starts
at a multiple of `n_batch` from its prompt's start (see `BatchingEngine` for why). Slots are handed out
lowest id first; a finished or cancelled sequence frees its KV and its slot at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import llama_cpp

from serving.detokenizer import IncrementalDetokenizer
from serving.generator import EngineBusyError, EngineClosedError, GenerationError, ServingError
from serving.llama_model import LlamaModel
from serving.metrics import EngineMetrics
from serving.sampling import build_sampler, is_plain_greedy
from serving.stream import Request

logger = logging.getLogger(__name__)

_MIN_REUSE = 16  # shortest shared prefix worth copying (a copy moves a whole KV stream)


@dataclass(eq=False)
class _Sequence:
    """A request holding a slot; touched only by the decode thread."""

    request: Request
    seq_id: int
    sampler: int | None  # None for a scoring request and for plain greedy decoding (the logits' argmax)
    detok: IncrementalDetokenizer
    reserved: int  # KV cells reserved for it: prompt + max_tokens
    n_past: int = 0  # tokens already in its KV stream
    next_token: int | None = None  # sampled, to be fed at the next step

    @property
    def prompt_left(self) -> int:
        return len(self.request.tokens) - self.n_past if self.next_token is None else 0


def _common_prefix(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    n = 0
    while n < limit and a[n] == b[n]:
        n += 1
    return n


class Scheduler:
    """A bounded FIFO of requests and the slots they run in, driven by one decode thread that owns the context."""

    def __init__(self, model: LlamaModel, metrics: EngineMetrics, *, max_sequences: int, n_batch: int,
                 max_queue: int, request_timeout_s: float | None, prefix_reuse: bool) -> None:
        self.model = model
        self.metrics = metrics
        self.max_sequences = max_sequences
        self.n_batch = n_batch
        self.max_queue = max_queue
        self.request_timeout_s = request_timeout_s
        self.prefix_reuse = prefix_reuse
        self.thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._waiting: deque[Request] = deque()
        self.closing = False
        self._warm_error: Exception | None = None
        # decode-thread state
        self._slots: list[_Sequence | None] = [None] * max_sequences
        self._kv_reserved = 0

    # -- the submitters' side -------------------------------------------------------------
    def start(self, name: str) -> None:
        """Start the decode thread (its first forward pass warms the model) and wait until it is ready."""
        # Every llama_decode, the warm-up's too, runs on the decode thread. libgomp keeps a thread team
        # per calling thread: a decode thread that is not the first to compute runs beside the idle team
        # of the one that was, and measured 25 ms a token against 20 (0.5B, 2 cores).
        ready = threading.Event()
        thread = threading.Thread(target=self._run, args=(ready,), name=name, daemon=True)
        thread.start()
        ready.wait()
        if self._warm_error is not None:
            thread.join()
            raise self._warm_error
        self.thread = thread

    def enqueue(self, requests: list[Request]) -> None:
        """Queue requests all together, or none (EngineBusyError when the queue is already full)."""
        with self._cond:
            if self.closing:
                raise EngineClosedError("the engine is closed")
            if len(self._waiting) >= self.max_queue:
                raise EngineBusyError(
                    f"{len(self._waiting)} requests already waiting for one of {self.max_sequences} slots; "
                    "try again later"
                )
            self._waiting.extend(requests)
            self.metrics.requests_total += len(requests)
            self._cond.notify()

    def alive(self) -> bool:
        thread = self.thread
        return thread is not None and thread.is_alive()

    def request_close(self) -> bool:
        """Tell the decode thread to stop; False when that was asked already."""
        with self._cond:
            if self.closing:
                return False
            self.closing = True
            self._cond.notify_all()
            return True

    @property
    def running(self) -> int:
        return sum(s is not None for s in self._slots)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    # -- the decode thread ----------------------------------------------------------------
    def _run(self, ready: threading.Event) -> None:
        try:
            try:
                self.model.warm_decode()
            except Exception as exc:
                self._warm_error = exc
                return
            finally:
                ready.set()
            while True:
                with self._cond:
                    while not self.closing and not self._waiting and not any(self._slots):
                        self._cond.wait()
                    if self.closing:
                        return
                    admitted = self._admit_locked()
                self._step_timed(admitted)
        finally:
            self._shutdown()

    def _step_timed(self, admitted: list[tuple[Request, int]]) -> None:
        started = time.perf_counter()
        try:
            self.metrics.mark_throughput()
            for request, seq_id in admitted:
                self._start(request, seq_id)
            self._step()
        except Exception as exc:  # a bug or a native failure: fail what ran, keep serving
            logger.exception("decode step failed")
            for seq in [s for s in self._slots if s is not None]:
                self._release(seq, "error", GenerationError(f"generation failed: {exc}"))
        finally:
            self.metrics.kv_cells_used = self.model.kv_cells_used()
            self.metrics.busy_s_total += time.perf_counter() - started

    def _admit_locked(self) -> list[tuple[Request, int]]:
        """Pop waiting requests into free slots (lowest id first). Called with the lock held."""
        now = time.perf_counter()
        admitted = []
        for request in list(self._waiting):
            if request.cancelled or (request.deadline is not None and now > request.deadline):
                self._waiting.remove(request)
                self._end_unstarted(request, now)
        free = [i for i, s in enumerate(self._slots) if s is None]
        while self._waiting and free:
            request = self._waiting[0]
            if self._kv_reserved + len(request.tokens) + request.params.max_tokens > self.model.n_ctx:
                break  # only with kv_unified: wait until enough KV is released
            self._waiting.popleft()
            self._kv_reserved += len(request.tokens) + request.params.max_tokens
            admitted.append((request, free.pop(0)))
        return admitted

    def _end_unstarted(self, request: Request, now: float) -> None:
        request.completion.queue_ms = (now - request.submitted) * 1000.0
        if request.cancelled:
            self.metrics.count_finished("cancelled")
            request.finish("cancelled")
        else:
            self.metrics.count_finished("error")
            request.finish("error", GenerationError(f"timed out after {self.request_timeout_s}s waiting for a slot"))

    def _start(self, request: Request, seq_id: int) -> None:
        request.completion.queue_ms = (time.perf_counter() - request.submitted) * 1000.0
        try:
            sampler = None if request.scoring or is_plain_greedy(request.params) else build_sampler(
                request.params, self.model.n_vocab, request.tokens, self.model.vocab)
        except Exception as exc:
            self._kv_reserved -= len(request.tokens) + request.params.max_tokens
            self.metrics.count_finished("error")
            request.finish("error", GenerationError(f"could not set up sampling: {exc}"))
            return
        self._slots[seq_id] = _Sequence(
            request=request,
            seq_id=seq_id,
            sampler=sampler,
            detok=IncrementalDetokenizer(request.params.stop),
            reserved=len(request.tokens) + request.params.max_tokens,
        )
        self.metrics.prompt_tokens_total += len(request.tokens)

    def _step(self) -> None:
        now = time.perf_counter()
        for seq in [s for s in self._slots if s is not None]:
            request = seq.request
            if request.cancelled:
                self._release(seq, "cancelled")
            elif request.deadline is not None and now > request.deadline:
                self._release(seq, "error", GenerationError(f"timed out after {self.request_timeout_s}s"))

        # 1. the next token of every generating sequence, in one forward pass
        generating = [s for s in self._slots if s is not None and s.next_token is not None]
        if generating:
            self._decode([(s, [s.next_token], True) for s in generating if s.next_token is not None])

        # 2. prompt chunks, oldest request first, up to n_batch prompt tokens per step. Each chunk
        # gets a forward pass of its own and starts at a multiple of n_batch from its prompt's
        # start, so a prompt is read in the same pieces whatever else is running: the same float
        # arithmetic, the same greedy output as alone. (llama.cpp would split a mixed batch into
        # micro-batches per sequence anyway, so this costs no extra passes.)
        budget = self.n_batch
        reading = sorted((s for s in self._slots if s is not None and s.prompt_left), key=lambda s: s.request.submitted)
        for seq in reading:
            if seq.n_past == 0 and self.prefix_reuse:
                self._reuse_prefix(seq)
            size = min(seq.prompt_left, self.n_batch - seq.n_past % self.n_batch)
            if size > budget:
                break
            budget -= size
            last = seq.n_past + size == len(seq.request.tokens)
            self._decode([(seq, seq.request.tokens[seq.n_past : seq.n_past + size], last)])

    def _reuse_prefix(self, seq: _Sequence) -> None:
        """Start `seq` from the longest prefix of its prompt that another live sequence holds in its KV.

        The copy is exact (the same KV values as reading the tokens), so outputs do not change.
        Across per-sequence KV streams llama.cpp copies whole streams: copy, then cut at the prefix.
        """
        tokens = seq.request.tokens
        best, source = 0, None
        for other in self._slots:
            if other is None or other is seq or other.n_past < _MIN_REUSE:
                continue
            # keep one token to read, and every row a continuation score needs
            limit = min(other.n_past, len(other.request.tokens), len(tokens) - 1 - seq.request.score_span)
            n = _common_prefix(tokens, other.request.tokens, limit)
            if n > best:
                best, source = n, other
        if source is None or best < _MIN_REUSE:
            return
        llama_cpp.llama_memory_seq_cp(self.model.mem, source.seq_id, seq.seq_id, -1, -1)
        llama_cpp.llama_memory_seq_rm(self.model.mem, seq.seq_id, best, -1)
        seq.n_past = best
        seq.request.completion.extra["cached_tokens"] = best
        self.metrics.prompt_tokens_reused_total += best

    def _decode(self, items: list[tuple[_Sequence, list[int], bool]]) -> None:
        """One llama_decode over (sequence, tokens, sample after the last one?) items, then sampling.

        Rows go in sequence-id order (llama.cpp puts consecutive ids in one micro-batch); the
        logits of a sampled row are read before the next decode overwrites them.
        """
        batch = self.model.batch
        assert batch is not None  # allocated by the model's load, before any request
        n = 0
        outputs: list[tuple[_Sequence, int]] = []
        spans: list[tuple[_Sequence, int, int]] = []  # (sequence, row, the prompt token that row predicts)
        for seq, tokens, sample in sorted(items, key=lambda item: item[0].seq_id):
            span = seq.request.score_span
            first_scored = len(seq.request.tokens) - span  # rows at positions first_scored-1 .. end-2 predict it
            for k, token in enumerate(tokens):
                pos = seq.n_past + k
                batch.token[n] = token
                batch.pos[n] = pos  # type: ignore[call-overload]  # ctypes stubs
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq.seq_id
                wanted = span > 0 and first_scored - 1 <= pos < len(seq.request.tokens) - 1
                batch.logits[n] = wanted or (sample and not span and k == len(tokens) - 1)
                if wanted:
                    spans.append((seq, n, pos + 1))
                n += 1
            if sample and not span:
                outputs.append((seq, n - 1))
        batch.n_tokens = n
        started = time.perf_counter()
        rc = llama_cpp.llama_decode(self.model.ctx, batch)
        self.metrics.decode_s_total += time.perf_counter() - started
        self.metrics.steps_total += 1
        if rc != 0:
            self._on_decode_failure(rc, [seq for seq, _, _ in items])
            return
        for seq, tokens, _ in items:
            seq.n_past += len(tokens)  # a fed next_token is replaced by sampling (or the sequence ends)
        if spans:
            self._score_span(spans)
        for seq, row in outputs:
            self._sample(seq, row)

    def _on_decode_failure(self, rc: int, sequences: list[_Sequence]) -> None:
        if rc == 1 and len(sequences) > 1:
            # no room in the KV cache; llama.cpp restored it. Give up the newest request only.
            newest = max(sequences, key=lambda s: s.request.submitted)
            logger.warning("llama_decode found no KV slot; failing request %d", newest.request.id)
            self._release(newest, "error", GenerationError("the KV cache is full; retry with a shorter request"))
            return
        logger.error("llama_decode returned %d for a batch of %d sequences", rc, len(sequences))
        for seq in sequences:
            self._release(seq, "error", GenerationError(f"llama_decode failed (code {rc})"))

    def _sample(self, seq: _Sequence, row: int) -> None:
        request = seq.request
        completion = request.completion
        if request.score_tokens is not None:
            self._score(seq, row, request.score_tokens)
            return
        try:
            if seq.sampler is None:  # plain greedy: the first highest logit, as llama.cpp's greedy sampler takes
                token = int(self.model.row_logits(row).argmax())
            else:
                token = llama_cpp.llama_sampler_sample(seq.sampler, self.model.ctx, row)
            if completion.ttft_ms is None:
                completion.ttft_ms = (time.perf_counter() - request.submitted) * 1000.0
            if self.model.is_end(token):
                request.post(seq.detok.flush())
                self._release(seq, "stop")
                return
            completion.completion_tokens += 1
            self.metrics.tokens_generated_total += 1
            request.post(seq.detok.push(self.model.piece(token)))
            if seq.detok.stopped:
                self._release(seq, "stop")
            elif completion.completion_tokens >= request.params.max_tokens:
                request.post(seq.detok.flush())
                self._release(seq, "length")
            else:
                seq.next_token = token
        except Exception as exc:
            logger.exception("sampling failed for request %d", request.id)
            self._release(seq, "error", GenerationError(f"sampling failed: {exc}"))

    def _score(self, seq: _Sequence, row: int, tokens: Sequence[int]) -> None:
        """A scoring request's answer: log-softmax of its last prompt row at the candidate tokens."""
        try:
            seq.request.scores = self.model.logprobs(row, tokens)
        except Exception as exc:
            logger.exception("scoring failed for request %d", seq.request.id)
            self._release(seq, "error", GenerationError(f"scoring failed: {exc}"))
            return
        self._release(seq, "scored")

    def _score_span(self, rows: list[tuple[_Sequence, int, int]]) -> None:
        """Continuation scoring: the log-softmax of each wanted row at the prompt token that follows it; a
        sequence whose prompt has been read to its end is released."""
        done = []
        for seq, row, target in rows:
            if self._slots[seq.seq_id] is not seq:
                continue
            try:
                seq.request.span_logprobs.extend(self.model.logprobs(row, [seq.request.tokens[target]]))
            except Exception as exc:
                logger.exception("scoring failed for request %d", seq.request.id)
                self._release(seq, "error", GenerationError(f"scoring failed: {exc}"))
                continue
            if target == len(seq.request.tokens) - 1:
                done.append(seq)
        for seq in done:
            self._release(seq, "scored")

    def _release(self, seq: _Sequence, reason: str, error: ServingError | None = None) -> None:
        """Free the sequence's KV, sampler and slot, then close its stream."""
        if self._slots[seq.seq_id] is not seq:
            return
        self._slots[seq.seq_id] = None
        self._kv_reserved -= seq.reserved
        llama_cpp.llama_memory_seq_rm(self.model.mem, seq.seq_id, -1, -1)
        if seq.sampler is not None:
            llama_cpp.llama_sampler_free(seq.sampler)
        self.metrics.kv_cells_used = self.model.kv_cells_used()  # up to date before the consumer hears
        self.metrics.count_finished(reason)
        request = seq.request
        request.finish(reason, error)
        c = request.completion
        if reason in ("stop", "length"):
            self.metrics.observe_completed(c)
        logger.debug("request %d %s: %d+%d tokens, queue %.0fms, ttft %s, total %.0fms",
                     request.id, reason, c.prompt_tokens, c.completion_tokens, c.queue_ms, c.ttft_ms, c.total_ms)

    def _shutdown(self) -> None:
        """On the decode thread's way out: fail everything still pending, free native memory."""
        closed = EngineClosedError("the engine was closed before the request finished")
        for seq in [s for s in self._slots if s is not None]:
            self._release(seq, "error", closed)
        with self._cond:
            self.closing = True
            pending, self._waiting = list(self._waiting), deque()
        for request in pending:
            self.metrics.count_finished("error")
            request.finish("error", closed)
        self.metrics.kv_cells_used = 0
        self.model.free()
