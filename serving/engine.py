"""BatchingEngine: an in-process llama.cpp engine with iteration-level continuous batching.

llama-cpp-python's high-level `Llama` serves one request at a time behind a lock. This engine
drives the low-level API itself so that concurrent requests share every forward pass:

- one decode thread owns the `llama_context`; requests reach it through a bounded FIFO
  (full -> `EngineBusyError` at once, on the caller's thread);
- each running request holds a *slot*: a llama.cpp sequence id with its own KV stream
  (`n_seq_max = max_sequences`, `kv_unified = False`: each sequence gets
  `n_ctx / max_sequences` cells and attends only to its own);
- every step is one forward pass over the next token of each generating sequence, then
  chunks of prompts still being read, oldest first, up to `n_batch` prompt tokens per step
  (chunked prefill: a long new prompt does not stall everyone's next token), each chunk in a
  pass of its own that starts at a multiple of `n_batch` from its prompt's start;
- a sequence's first token is sampled right after the pass that read its last prompt token
  (logits are requested for that row only: the next decode overwrites them);
- a finished or cancelled sequence frees its KV (`llama_memory_seq_rm`) and its slot at once,
  and a waiting request takes the slot at the next step;
- a prompt that starts like one another live sequence has already read (a shared system prompt)
  copies that prefix's KV (`llama_memory_seq_cp`) instead of reading it again;
- `next_token_logprobs` scores prompts (the log-probability of candidate next tokens, for an
  LLM re-ranker or a classifier) through the same slots, without generating;
  `continuation_logprobs` scores a continuation token by token (query likelihood), asking for
  logits on the continuation's rows only.

Rows are laid out in sequence-id order and slots are handed out lowest-id first: with
per-sequence KV streams llama.cpp groups only *consecutive* sequence ids into one micro-batch,
so dense ids keep a decode pass in one micro-batch. (A hole left by a finished request splits
it in two until a waiting request fills the slot.) Mixing a prompt chunk into the decode pass
would not save a pass either: llama.cpp splits such a batch into micro-batches per sequence.

Greedy output is the same token for token whether a request runs alone or shares the batch
(tests/serving asserts it): per-row kernels give a decoded token the same arithmetic in a pass
of 1 or of 16 rows, and a prompt is read in the same chunks either way. (When prompt chunks rode
in the decode pass, llama.cpp cut them into micro-batches that depended on the load, and a
near-tie token could flip: "Great Barrier" for "Great Pacific".) It equals llama-cpp-python's `Llama`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import llama_cpp
import numpy as np  # after llama_cpp: the other order crashed on a CUDA image (OpenMP runtimes clash)

from serving.detokenizer import IncrementalDetokenizer
from serving.generator import (
    Completion,
    EngineBusyError,
    EngineClosedError,
    GenerationError,
    Message,
    ModelNotFoundError,
    PromptTooLongError,
    SamplingParams,
    ServingError,
    drain,
)
from serving.metrics import TOKEN_GAP_BUCKETS_S, LatencyHistogram
from serving.sampling import build_sampler, grammar_sampler, is_plain_greedy
from serving.stream import EngineStream, Request

logger = logging.getLogger(__name__)
_native_logger = logging.getLogger(__name__ + ".llama_cpp")
_NATIVE_LEVELS = {3: logging.WARNING, 4: logging.ERROR}  # ggml: 1 debug, 2 info, 3 warn, 4 error, 5 cont


@llama_cpp.llama_log_callback
def _route_native_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    """llama.cpp's own log lines go to Python logging instead of stderr (INFO shows as DEBUG)."""
    message = text.decode("utf-8", errors="replace").rstrip("\n")
    if message.strip():
        _native_logger.log(_NATIVE_LEVELS.get(level, logging.DEBUG), "%s", message)


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


class BatchingEngine:
    """A `Generator` that batches concurrent requests into shared llama.cpp forward passes.

    Args:
        model_path: the GGUF file.
        n_ctx: total KV cells, shared out among the `max_sequences` slots.
        n_threads: CPU threads for llama.cpp (default: all cores).
        n_gpu_layers: layers to offload (-1 = all) when llama.cpp was built with a GPU backend.
        max_sequences: requests decoded together (slots).
        n_batch: token budget of one step: one token per generating request plus prompt chunks.
        max_queue: requests allowed to wait for a slot before `stream()` raises EngineBusyError.
        flash_attn: llama.cpp flash attention (slower on small CPUs, faster on GPUs).
        request_timeout_s: fail a request that has not finished this long after submission.
        n_ctx_per_seq: the per-request budget (prompt + max_tokens); defaults to
            `n_ctx // max_sequences`. Larger values need `kv_unified=True`.
        kv_unified: one KV buffer for all slots: lets one request use more than its share, but
            every token attends over the whole buffer (slower with several sequences).
        prefix_reuse: a new request whose prompt starts like one already in the KV cache (a shared
            system prompt, the same instructions) copies that prefix's KV instead of reading it again.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        max_sequences: int = 8,
        n_batch: int = 512,
        max_queue: int = 64,
        flash_attn: bool = False,
        request_timeout_s: float | None = None,
        n_ctx_per_seq: int | None = None,
        kv_unified: bool = False,
        prefix_reuse: bool = True,
    ) -> None:
        self.model_path = Path(model_path).expanduser()
        if not self.model_path.is_file():
            raise ModelNotFoundError(
                f"model file not found: {self.model_path} "
                "(check the serving model path setting, or download a GGUF model there)"
            )
        if max_sequences < 1 or n_batch < max_sequences or max_queue < 0:
            raise ValueError("need max_sequences >= 1, n_batch >= max_sequences and max_queue >= 0")
        if n_ctx_per_seq is not None and not kv_unified and n_ctx_per_seq > n_ctx // max_sequences:
            raise ValueError(
                f"n_ctx_per_seq={n_ctx_per_seq} exceeds n_ctx // max_sequences = {n_ctx // max_sequences}; "
                "raise n_ctx or set kv_unified=True"
            )
        self.model_id = self.model_path.stem
        self.n_ctx = n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1
        self.n_gpu_layers = n_gpu_layers
        self.gpu_offload = False  # set by _load: layers asked for and a GPU backend to take them
        self.max_sequences = max_sequences
        self.n_batch = n_batch
        self.max_queue = max_queue
        self.flash_attn = flash_attn
        self.request_timeout_s = request_timeout_s
        self.kv_unified = kv_unified
        self.prefix_reuse = prefix_reuse
        self._n_ctx_per_seq_setting = n_ctx_per_seq
        self.n_ctx_per_seq = n_ctx_per_seq or n_ctx // max_sequences  # final after warm_up

        self._cond = threading.Condition()
        self._waiting: deque[Request] = deque()
        self._closing = False
        self._closed = False
        self._warm_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._model = self._ctx = self._vocab = self._mem = None
        self._batch: llama_cpp.llama_batch | None = None
        self._chat_formatter: Any = None  # made from the GGUF's chat template by warm_up

        # decode-thread state
        self._slots: list[_Sequence | None] = [None] * max_sequences
        self._kv_reserved = 0
        self._piece_buf = ctypes.create_string_buffer(256)

        # metrics (written by the decode thread, read by stats())
        self._requests_total = 0
        self._tokens_generated_total = 0
        self._prompt_tokens_total = 0
        self._prompt_tokens_reused_total = 0
        self._finished_total: dict[str, int] = {}
        self._kv_cells_used = 0
        self._steps_total = 0
        self._decode_s_total = 0.0  # time inside llama_decode
        self._warm_error: Exception | None = None
        self._busy_s_total = 0.0  # time the decode thread spent on steps (decode + Python around it)
        self._recent_ttft: deque[float] = deque(maxlen=256)
        self._recent_tpot: deque[float] = deque(maxlen=256)
        self._throughput_marks: deque[tuple[float, int]] = deque(maxlen=64)  # (time, tokens so far), ~1/s
        self._histograms = {
            "queue_seconds": LatencyHistogram(),  # submit -> slot
            "ttft_seconds": LatencyHistogram(),  # submit -> first token
            "tpot_seconds": LatencyHistogram(TOKEN_GAP_BUCKETS_S),  # mean gap between later tokens, per request
            "e2e_seconds": LatencyHistogram(),  # submit -> finished
        }

    # -- lifecycle ------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Load the model, create the context and start the decode thread. Idempotent."""
        with self._warm_lock:
            if self._thread is not None:
                return
            if self._closed or self._closing:
                raise EngineClosedError("the engine is closed")
            started = time.perf_counter()
            llama_cpp.llama_log_set(_route_native_log, ctypes.c_void_p(0))
            llama_cpp.llama_backend_init()
            self._load()
            # Every llama_decode, the warm-up's too, runs on the decode thread. libgomp keeps a thread team
            # per calling thread: a decode thread that is not the first to compute runs beside the idle team
            # of the one that was, and measured 25 ms a token against 20 (0.5B, 2 cores).
            ready = threading.Event()
            thread = threading.Thread(target=self._run, args=(ready,), name=f"engine-{self.model_id}", daemon=True)
            thread.start()
            ready.wait()
            if self._warm_error is not None:
                thread.join()
                raise self._warm_error
            self._thread = thread
            logger.info(
                "loaded %s in %.1fs: %d slots x %d KV cells, n_batch=%d, threads=%d, gpu_layers=%d",
                self.model_id, time.perf_counter() - started, self.max_sequences,
                self.n_ctx_per_seq, self.n_batch, self.n_threads, self.n_gpu_layers,
            )

    def _load(self) -> None:
        self.gpu_offload = self.n_gpu_layers != 0 and bool(llama_cpp.llama_supports_gpu_offload())
        if self.n_gpu_layers != 0 and not self.gpu_offload:
            logger.warning(
                "n_gpu_layers=%d asks for GPU offload, but this llama-cpp-python was built without a GPU backend, so "
                "every layer runs on the CPU; rebuild it with `CONSULTA_CUDA=1 bash scripts/install.sh` "
                "(docs/serving.md, 'GPU (CUDA) build')", self.n_gpu_layers)
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = self.n_gpu_layers
        model = llama_cpp.llama_model_load_from_file(str(self.model_path).encode(), mparams)
        if not model:
            raise ServingError(f"llama.cpp could not load {self.model_path} (not a GGUF model, or unsupported)")
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = self.n_ctx
        cparams.n_batch = cparams.n_ubatch = self.n_batch
        cparams.n_seq_max = self.max_sequences
        cparams.n_threads = cparams.n_threads_batch = self.n_threads
        cparams.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if self.flash_attn else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        cparams.kv_unified = self.kv_unified
        cparams.no_perf = True
        ctx = llama_cpp.llama_init_from_model(model, cparams)
        if not ctx:
            llama_cpp.llama_model_free(model)
            raise ServingError(f"llama.cpp could not create a context for {self.model_id} (n_ctx={self.n_ctx})")
        self._model, self._ctx = model, ctx
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self._mem = llama_cpp.llama_get_memory(ctx)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.n_ctx = llama_cpp.llama_n_ctx(ctx)  # llama.cpp rounds the per-sequence size up to 256
        n_ctx_seq = llama_cpp.llama_n_ctx_seq(ctx)  # what one sequence can hold (all of n_ctx if unified)
        fair_share = self.n_ctx // self.max_sequences if self.kv_unified else n_ctx_seq
        self.n_ctx_per_seq = min(self._n_ctx_per_seq_setting or fair_share, n_ctx_seq)
        self._chat_formatter = self._make_chat_formatter()

    def _warm_decode(self) -> None:
        """One throwaway forward pass, so the first request does not pay for paging in the weights."""
        batch = self._batch
        assert batch is not None  # allocated by warm_up, before this
        batch.token[0], batch.pos[0], batch.n_seq_id[0], batch.logits[0] = 0, 0, 1, 1  # type: ignore[call-overload]  # ctypes stubs
        batch.seq_id[0][0] = 0
        batch.n_tokens = 1
        rc = llama_cpp.llama_decode(self._ctx, batch)
        llama_cpp.llama_memory_seq_rm(self._mem, 0, -1, -1)
        if rc != 0:
            raise ServingError(f"llama.cpp failed a test forward pass of {self.model_id} (code {rc})")

    def _make_chat_formatter(self):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        source = llama_cpp.llama_model_chat_template(self._model, None)
        if not source:
            logger.warning("%s has no chat template in its metadata; using ChatML", self.model_id)
            source = _CHATML
        special = lambda token: (  # noqa: E731
            llama_cpp.llama_vocab_get_text(self._vocab, token).decode("utf-8", "replace") if token >= 0 else ""
        )
        return Jinja2ChatFormatter(
            template=source.decode("utf-8") if isinstance(source, bytes) else source,
            eos_token=special(llama_cpp.llama_vocab_eos(self._vocab)),
            bos_token=special(llama_cpp.llama_vocab_bos(self._vocab)),
            add_generation_prompt=True,
        )

    def close(self) -> None:
        """Stop the decode thread, fail unfinished requests with EngineClosedError, free memory."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify_all()
        with self._warm_lock:  # waits for a warm_up in progress
            thread = self._thread
        if thread is not None:
            thread.join()
        else:
            self._free()
        self._closed = True

    def __enter__(self) -> BatchingEngine:
        self.warm_up()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- requests -------------------------------------------------------------------------
    def format_chat(self, messages: Sequence[Message]) -> str:
        """The prompt the model sees for `messages`: its own chat template from the GGUF."""
        self.warm_up()
        return self._chat_formatter(messages=[dict(m) for m in messages]).prompt

    def stream(self, messages: Sequence[Message], params: SamplingParams) -> EngineStream:
        """Submit a chat request. Raises PromptTooLongError / EngineBusyError synchronously."""
        prompt = self.format_chat(messages)
        # the template already holds any BOS the model wants, so none is added here
        return self._submit(self._tokenize(prompt, add_special=False, parse_special=True), params)

    def stream_prompt(self, prompt: str, params: SamplingParams) -> EngineStream:
        """Submit a raw completion request (no chat template; BOS added if the model wants it)."""
        self.warm_up()
        return self._submit(self._tokenize(prompt, add_special=True, parse_special=True), params)

    def generate(self, messages: Sequence[Message], params: SamplingParams) -> Completion:
        return drain(self.stream(messages, params))

    def next_token_logprobs(self, prompts: Sequence[str], candidates: Sequence[str]) -> list[dict[str, float]]:
        """For each prompt, the log-probability of each candidate's first token as the next token.

        The prompts are read as raw text (no chat template; use `format_chat` for one), batched
        with whatever else is running, and nothing is generated: each prompt's KV is freed as soon
        as its last token has been read. `candidates` are matched by their first token, so
        "yes" and " yes" differ. Callable from any thread; blocks until every prompt is scored.
        Raises PromptTooLongError, EngineBusyError (queue full), GenerationError, EngineClosedError.
        """
        self.warm_up()
        if not candidates:
            raise ValueError("no candidates to score")
        firsts = []
        for candidate in candidates:
            tokens = self._tokenize(candidate, add_special=False, parse_special=True)
            if not tokens:
                raise ValueError(f"candidate {candidate!r} has no tokens")
            firsts.append(tokens[0])
        requests = [self._make_request(self._tokenize_prompt(prompt), _SCORE_PARAMS, score_tokens=tuple(firsts))
                    for prompt in prompts]
        self._run_scoring(requests)
        return [dict(zip(candidates, cast(list[float], request.scores))) for request in requests]

    def continuation_logprobs(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[list[float]]:
        """For each (prompt, continuation) pair, the log-probability of each continuation token given the prompt
        and the continuation tokens before it (query likelihood, perplexity).

        The prompt is read as raw text (BOS added if the model wants it; use `format_chat` for a chat template),
        the continuation as plain text tokenised on its own, so the split between the two is exact. Only the
        continuation's rows get logits (the output layer is a large share of a small model's work), and nothing
        is generated. Batched with whatever else is running; callable from any thread; blocks until every pair
        is scored. Raises ValueError (lengths differ, empty continuation), PromptTooLongError, EngineBusyError,
        GenerationError, EngineClosedError.
        """
        self.warm_up()
        if len(prompts) != len(continuations):
            raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
        requests = []
        for prompt, continuation in zip(prompts, continuations, strict=True):
            tail = self._tokenize(continuation, add_special=False, parse_special=False)
            if not tail:
                raise ValueError(f"continuation {continuation!r} has no tokens")
            head = self._tokenize_prompt(prompt)
            if not head:
                raise ValueError("the prompt is empty: the continuation's first token has nothing to follow")
            requests.append(self._make_request(head + tail, _SCORE_PARAMS, score_span=len(tail)))
        self._run_scoring(requests)
        return [list(request.span_logprobs) for request in requests]

    def _tokenize_prompt(self, prompt: str) -> list[int]:
        """A raw prompt's tokens: BOS added if the model wants it, once even if the text already began with it."""
        tokens = self._tokenize(prompt, add_special=True, parse_special=True)
        if len(tokens) > 1 and tokens[0] == tokens[1] == llama_cpp.llama_vocab_bos(self._vocab):
            tokens = tokens[1:]
        return tokens

    def _run_scoring(self, requests: list[Request]) -> None:
        """Queue scoring requests together and wait for all of them."""
        self._enqueue(requests)
        streams = [EngineStream(request) for request in requests]
        try:
            for stream in streams:
                drain(stream)
        finally:
            for stream in streams:  # after a failure, the prompts not read yet give their slots back
                stream.cancel()

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes as plain content (no BOS, special markup not parsed)."""
        self.warm_up()
        return len(self._tokenize(text, add_special=False, parse_special=False))

    def _tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        if self._vocab is None:
            raise EngineClosedError("the engine is closed")
        data = text.encode("utf-8")
        capacity = len(data) + 8
        while True:
            tokens = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), tokens, capacity, add_special, parse_special)
            if n >= 0:
                return tokens[:n]
            capacity = -n

    def _submit(self, tokens: list[int], params: SamplingParams) -> EngineStream:
        request = self._make_request(tokens, params)
        self._enqueue([request])
        return EngineStream(request)

    def _make_request(self, tokens: list[int], params: SamplingParams, **kwargs) -> Request:
        if params.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if not tokens:
            raise ValueError("the prompt is empty")
        need = len(tokens) + params.max_tokens
        if need > self.n_ctx_per_seq:
            raise PromptTooLongError(
                f"prompt of {len(tokens)} tokens + max_tokens {params.max_tokens} = {need} tokens "
                f"exceeds the per-request context of {self.n_ctx_per_seq} tokens "
                f"(n_ctx={self.n_ctx} shared by max_sequences={self.max_sequences})"
            )
        if params.grammar:  # refuse a grammar that does not parse here, where the caller sees it
            llama_cpp.llama_sampler_free(grammar_sampler(self._vocab, params.grammar))
        deadline = None if self.request_timeout_s is None else time.perf_counter() + self.request_timeout_s
        request = Request(tokens=tokens, params=params, engine_alive=self._alive, deadline=deadline, **kwargs)
        request.completion.prompt_tokens = len(tokens)
        return request

    def _enqueue(self, requests: list[Request]) -> None:
        """Queue requests all together, or none (EngineBusyError when the queue is already full)."""
        with self._cond:
            if self._closing:
                raise EngineClosedError("the engine is closed")
            if len(self._waiting) >= self.max_queue:
                raise EngineBusyError(
                    f"{len(self._waiting)} requests already waiting for one of {self.max_sequences} slots; "
                    "try again later"
                )
            self._waiting.extend(requests)
            self._requests_total += len(requests)
            self._cond.notify()

    def _alive(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    # -- metrics --------------------------------------------------------------------------
    def stats(self) -> dict:
        """A snapshot for metrics endpoints; cheap and safe to call from any thread."""
        running = sum(s is not None for s in self._slots)
        mean = lambda xs: round(sum(xs) / len(xs), 3) if xs else None  # noqa: E731
        ttft, tpot = list(self._recent_ttft), list(self._recent_tpot)
        return {
            "model": self.model_id,
            "running": running,
            "waiting": len(self._waiting),
            "slots": self.max_sequences,
            "gpu_offload": self.gpu_offload,  # layers asked for and a GPU backend to take them
            "requests_total": self._requests_total,
            "requests_finished": dict(self._finished_total),
            "tokens_generated_total": self._tokens_generated_total,
            "prompt_tokens_total": self._prompt_tokens_total,
            "prompt_tokens_reused_total": self._prompt_tokens_reused_total,  # KV copied from a shared prefix
            "steps_total": self._steps_total,
            "decode_s_total": round(self._decode_s_total, 3),
            "busy_s_total": round(self._busy_s_total, 3),
            "kv_cells_used": self._kv_cells_used,  # from llama_memory_seq_pos_max, after each step
            "kv_cells_total": self.n_ctx,
            "ttft_ms_mean": mean(ttft),
            "tpot_ms_mean": mean(tpot),
            "tokens_per_s_recent": self._recent_rate(),
            "histograms": {name: h.snapshot() for name, h in self._histograms.items()},  # finished requests
        }

    def _recent_rate(self, window_s: float = 10.0) -> float:
        """Generated tokens per second over about the last `window_s` seconds."""
        now, total = time.perf_counter(), self._tokens_generated_total
        marks = [m for m in list(self._throughput_marks) if now - m[0] <= window_s]
        if not marks or now <= marks[0][0]:
            return 0.0
        return round((total - marks[0][1]) / (now - marks[0][0]), 2)

    def _mark_throughput(self) -> None:
        now = time.perf_counter()
        marks = self._throughput_marks
        if not marks or now - marks[-1][0] >= 1.0:
            marks.append((now, self._tokens_generated_total))

    # -- decode thread --------------------------------------------------------------------
    def _run(self, ready: threading.Event) -> None:
        try:
            try:
                self._warm_decode()
            except Exception as exc:
                self._warm_error = exc
                return
            finally:
                ready.set()
            while True:
                with self._cond:
                    while not self._closing and not self._waiting and not any(self._slots):
                        self._cond.wait()
                    if self._closing:
                        return
                    admitted = self._admit_locked()
                started = time.perf_counter()
                try:
                    self._mark_throughput()
                    for request, seq_id in admitted:
                        self._start(request, seq_id)
                    self._step()
                except Exception as exc:  # a bug or a native failure: fail what ran, keep serving
                    logger.exception("decode step failed")
                    for seq in [s for s in self._slots if s is not None]:
                        self._release(seq, "error", GenerationError(f"generation failed: {exc}"))
                finally:
                    self._kv_cells_used = self._count_kv_cells()
                    self._busy_s_total += time.perf_counter() - started
        finally:
            self._shutdown()

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
            if self._kv_reserved + len(request.tokens) + request.params.max_tokens > self.n_ctx:
                break  # only with kv_unified: wait until enough KV is released
            self._waiting.popleft()
            self._kv_reserved += len(request.tokens) + request.params.max_tokens
            admitted.append((request, free.pop(0)))
        return admitted

    def _end_unstarted(self, request: Request, now: float) -> None:
        request.completion.queue_ms = (now - request.submitted) * 1000.0
        if request.cancelled:
            self._count_finished("cancelled")
            request.finish("cancelled")
        else:
            self._count_finished("error")
            request.finish("error", GenerationError(f"timed out after {self.request_timeout_s}s waiting for a slot"))

    def _start(self, request: Request, seq_id: int) -> None:
        request.completion.queue_ms = (time.perf_counter() - request.submitted) * 1000.0
        try:
            sampler = None if request.scoring or is_plain_greedy(request.params) else build_sampler(
                request.params, self._n_vocab, request.tokens, self._vocab)
        except Exception as exc:
            self._kv_reserved -= len(request.tokens) + request.params.max_tokens
            self._count_finished("error")
            request.finish("error", GenerationError(f"could not set up sampling: {exc}"))
            return
        self._slots[seq_id] = _Sequence(
            request=request,
            seq_id=seq_id,
            sampler=sampler,
            detok=IncrementalDetokenizer(request.params.stop),
            reserved=len(request.tokens) + request.params.max_tokens,
        )
        self._prompt_tokens_total += len(request.tokens)

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
            self._decode([(s, [cast(int, s.next_token)], True) for s in generating])

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
        llama_cpp.llama_memory_seq_cp(self._mem, source.seq_id, seq.seq_id, -1, -1)
        llama_cpp.llama_memory_seq_rm(self._mem, seq.seq_id, best, -1)
        seq.n_past = best
        seq.request.completion.extra["cached_tokens"] = best
        self._prompt_tokens_reused_total += best

    def _decode(self, items: list[tuple[_Sequence, list[int], bool]]) -> None:
        """One llama_decode over (sequence, tokens, sample after the last one?) items, then sampling.

        Rows go in sequence-id order (llama.cpp puts consecutive ids in one micro-batch); the
        logits of a sampled row are read before the next decode overwrites them.
        """
        batch = self._batch
        assert batch is not None  # allocated by warm_up, before any request
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
        rc = llama_cpp.llama_decode(self._ctx, batch)
        self._decode_s_total += time.perf_counter() - started
        self._steps_total += 1
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
            self._score(seq, row)
            return
        try:
            if seq.sampler is None:  # plain greedy: the first highest logit, as llama.cpp's greedy sampler takes
                token = int(self._row_logits(row).argmax())
            else:
                token = llama_cpp.llama_sampler_sample(seq.sampler, self._ctx, row)
            if completion.ttft_ms is None:
                completion.ttft_ms = (time.perf_counter() - request.submitted) * 1000.0
            if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                request.post(seq.detok.flush())
                self._release(seq, "stop")
                return
            completion.completion_tokens += 1
            self._tokens_generated_total += 1
            request.post(seq.detok.push(self._piece(token)))
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

    def _score(self, seq: _Sequence, row: int) -> None:
        """A scoring request's answer: log-softmax of its last prompt row at the candidate tokens."""
        try:
            seq.request.scores = self._logprobs(row, cast(tuple[int, ...], seq.request.score_tokens))
        except Exception as exc:
            logger.exception("scoring failed for request %d", seq.request.id)
            self._release(seq, "error", GenerationError(f"scoring failed: {exc}"))
            return
        self._release(seq, "scored")

    def _logprobs(self, row: int, tokens: Sequence[int]) -> list[float]:
        """The log-softmax of a batch row's logits at `tokens` (read before the next decode overwrites them)."""
        logits = self._row_logits(row)
        top = float(logits.max())
        log_z = top + float(np.log(np.exp(logits - top, dtype=np.float64).sum()))
        return [float(logits[t]) - log_z for t in tokens]

    def _row_logits(self, row: int) -> np.ndarray:
        """A view of a batch row's logits; valid until the next decode overwrites them."""
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx, row), shape=(self._n_vocab,))

    def _score_span(self, rows: list[tuple[_Sequence, int, int]]) -> None:
        """Continuation scoring: the log-softmax of each wanted row at the prompt token that follows it; a
        sequence whose prompt has been read to its end is released."""
        done = []
        for seq, row, target in rows:
            if self._slots[seq.seq_id] is not seq:
                continue
            try:
                seq.request.span_logprobs.extend(self._logprobs(row, [seq.request.tokens[target]]))
            except Exception as exc:
                logger.exception("scoring failed for request %d", seq.request.id)
                self._release(seq, "error", GenerationError(f"scoring failed: {exc}"))
                continue
            if target == len(seq.request.tokens) - 1:
                done.append(seq)
        for seq in done:
            self._release(seq, "scored")

    def _piece(self, token: int) -> bytes:
        buf = self._piece_buf
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        if n < 0:
            self._piece_buf = buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def _release(self, seq: _Sequence, reason: str, error: ServingError | None = None) -> None:
        """Free the sequence's KV, sampler and slot, then close its stream."""
        if self._slots[seq.seq_id] is not seq:
            return
        self._slots[seq.seq_id] = None
        self._kv_reserved -= seq.reserved
        llama_cpp.llama_memory_seq_rm(self._mem, seq.seq_id, -1, -1)
        if seq.sampler is not None:
            llama_cpp.llama_sampler_free(seq.sampler)
        self._kv_cells_used = self._count_kv_cells()  # up to date before the consumer hears
        self._count_finished(reason)
        request = seq.request
        request.finish(reason, error)
        if reason in ("stop", "length"):
            c = request.completion
            self._histograms["queue_seconds"].observe(c.queue_ms / 1000.0)
            self._histograms["e2e_seconds"].observe(c.total_ms / 1000.0)
            if c.ttft_ms is not None:
                self._recent_ttft.append(c.ttft_ms)
                self._histograms["ttft_seconds"].observe(c.ttft_ms / 1000.0)
            if c.tpot_ms is not None:
                self._recent_tpot.append(c.tpot_ms)
                self._histograms["tpot_seconds"].observe(c.tpot_ms / 1000.0)
        logger.debug(
            "request %d %s: %d+%d tokens, queue %.0fms, ttft %s, total %.0fms",
            request.id, reason, request.completion.prompt_tokens, request.completion.completion_tokens,
            request.completion.queue_ms, request.completion.ttft_ms, request.completion.total_ms,
        )

    def _count_finished(self, reason: str) -> None:
        self._finished_total[reason] = self._finished_total.get(reason, 0) + 1

    def _count_kv_cells(self) -> int:
        return sum(llama_cpp.llama_memory_seq_pos_max(self._mem, i) + 1 for i in range(self.max_sequences))

    def _shutdown(self) -> None:
        """On the decode thread's way out: fail everything still pending, free native memory."""
        closed = EngineClosedError("the engine was closed before the request finished")
        for seq in [s for s in self._slots if s is not None]:
            self._release(seq, "error", closed)
        with self._cond:
            self._closing = True
            pending, self._waiting = list(self._waiting), deque()
        for request in pending:
            self._count_finished("error")
            request.finish("error", closed)
        self._kv_cells_used = 0
        self._free()

    def _free(self) -> None:
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx:
            llama_cpp.llama_free(self._ctx)
            self._ctx = self._mem = None
        if self._model:
            self._vocab = None
            llama_cpp.llama_model_free(self._model)
            self._model = None


_MIN_REUSE = 16  # shortest shared prefix worth copying (a copy moves a whole KV stream)


def _common_prefix(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    n = 0
    while n < limit and a[n] == b[n]:
        n += 1
    return n


_SCORE_PARAMS = SamplingParams(max_tokens=1)  # reserves one KV cell more than scoring needs

_CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
