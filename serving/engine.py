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

The engine is three parts: `llama_model.py` (the GGUF model, its context, tokenising, the chat template,
logits), `scheduler.py` (the queue, the slots and the decode thread) and `metrics.py` (`EngineMetrics`, what
`stats()` reports); `BatchingEngine` here owns their lifecycle and turns calls into requests.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import llama_cpp

from serving.generator import (
    Completion,
    EngineClosedError,
    Message,
    ModelNotFoundError,
    PromptTooLongError,
    SamplingParams,
    drain,
)
from serving.llama_model import LlamaModel, init_backend
from serving.metrics import EngineMetrics
from serving.sampling import grammar_sampler
from serving.scheduler import Scheduler
from serving.stream import EngineStream, Request

logger = logging.getLogger(__name__)


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
        self.n_threads = n_threads or os.cpu_count() or 1
        self.n_gpu_layers = n_gpu_layers
        self.max_sequences = max_sequences
        self.n_batch = n_batch
        self.max_queue = max_queue
        self.flash_attn = flash_attn
        self.request_timeout_s = request_timeout_s
        self.kv_unified = kv_unified
        self.prefix_reuse = prefix_reuse
        self.model = LlamaModel(self.model_path, n_ctx=n_ctx, n_threads=self.n_threads, n_gpu_layers=n_gpu_layers,
                                max_sequences=max_sequences, n_batch=n_batch, flash_attn=flash_attn,
                                kv_unified=kv_unified, n_ctx_per_seq=n_ctx_per_seq)
        self.metrics = EngineMetrics()
        self._scheduler = Scheduler(self.model, self.metrics, max_sequences=max_sequences, n_batch=n_batch,
                                    max_queue=max_queue, request_timeout_s=request_timeout_s,
                                    prefix_reuse=prefix_reuse)
        self._warm_lock = threading.Lock()
        self._closed = False

    @property
    def n_ctx(self) -> int:
        """Total KV cells (as llama.cpp rounded them, once warm)."""
        return self.model.n_ctx

    @property
    def n_ctx_per_seq(self) -> int:
        """The per-request budget, prompt + max_tokens (final after warm_up)."""
        return self.model.n_ctx_per_seq

    @property
    def gpu_offload(self) -> bool:
        """Layers asked for and a GPU backend to take them (known after warm_up)."""
        return self.model.gpu_offload

    # -- lifecycle ------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Load the model, create the context and start the decode thread. Idempotent."""
        with self._warm_lock:
            if self._scheduler.thread is not None:
                return
            if self._closed or self._scheduler.closing:
                raise EngineClosedError("the engine is closed")
            started = time.perf_counter()
            init_backend()
            self.model.load()
            self._scheduler.start(f"engine-{self.model_id}")
            logger.info(
                "loaded %s in %.1fs: %d slots x %d KV cells, n_batch=%d, threads=%d, gpu_layers=%d",
                self.model_id, time.perf_counter() - started, self.max_sequences,
                self.n_ctx_per_seq, self.n_batch, self.n_threads, self.n_gpu_layers,
            )

    def close(self) -> None:
        """Stop the decode thread, fail unfinished requests with EngineClosedError, free memory."""
        if not self._scheduler.request_close():
            return
        with self._warm_lock:  # waits for a warm_up in progress
            thread = self._scheduler.thread
        if thread is not None:
            thread.join()
        else:
            self.model.free()
        self._closed = True

    def __enter__(self) -> BatchingEngine:
        self.warm_up()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- requests -------------------------------------------------------------------------
    def format_chat(self, messages: Sequence[Message], tools: Sequence[Mapping[str, Any]] | None = None) -> str:
        """The prompt the model sees for `messages`: its own chat template from the GGUF (which shows `tools`,
        OpenAI function specs, the way the model was trained to call them)."""
        self.warm_up()
        return self.model.format_chat(messages, tools)

    def stream(self, messages: Sequence[Message], params: SamplingParams,
               tools: Sequence[Mapping[str, Any]] | None = None) -> EngineStream:
        """Submit a chat request. Raises PromptTooLongError / EngineBusyError synchronously."""
        prompt = self.format_chat(messages, tools)
        # the template already holds any BOS the model wants, so none is added here
        return self._submit(self.model.tokenize(prompt, add_special=False, parse_special=True), params)

    def stream_prompt(self, prompt: str, params: SamplingParams) -> EngineStream:
        """Submit a raw completion request (no chat template; BOS added if the model wants it)."""
        self.warm_up()
        return self._submit(self.model.tokenize(prompt, add_special=True, parse_special=True), params)

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
            tokens = self.model.tokenize(candidate, add_special=False, parse_special=True)
            if not tokens:
                raise ValueError(f"candidate {candidate!r} has no tokens")
            firsts.append(tokens[0])
        requests = [self._make_request(self.model.tokenize_prompt(prompt), _SCORE_PARAMS, score_tokens=tuple(firsts))
                    for prompt in prompts]
        self._run_scoring(requests)
        return [dict(zip(candidates, cast(list[float], request.scores), strict=True)) for request in requests]

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
            tail = self.model.tokenize(continuation, add_special=False, parse_special=False)
            if not tail:
                raise ValueError(f"continuation {continuation!r} has no tokens")
            head = self.model.tokenize_prompt(prompt)
            if not head:
                raise ValueError("the prompt is empty: the continuation's first token has nothing to follow")
            requests.append(self._make_request(head + tail, _SCORE_PARAMS, score_span=len(tail)))
        self._run_scoring(requests)
        return [list(request.span_logprobs) for request in requests]

    def _run_scoring(self, requests: list[Request]) -> None:
        """Queue scoring requests together and wait for all of them."""
        self._scheduler.enqueue(requests)
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
        return len(self.model.tokenize(text, add_special=False, parse_special=False))

    def _submit(self, tokens: list[int], params: SamplingParams) -> EngineStream:
        request = self._make_request(tokens, params)
        self._scheduler.enqueue([request])
        return EngineStream(request)

    def _make_request(self, tokens: list[int], params: SamplingParams, **kwargs: Any) -> Request:
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
            llama_cpp.llama_sampler_free(grammar_sampler(self.model.vocab, params.grammar))
        deadline = None if self.request_timeout_s is None else time.perf_counter() + self.request_timeout_s
        request = Request(tokens=tokens, params=params, engine_alive=self._scheduler.alive, deadline=deadline,
                          **kwargs)
        request.completion.prompt_tokens = len(tokens)
        return request

    # -- metrics --------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """A snapshot for metrics endpoints; cheap and safe to call from any thread."""
        return {
            "model": self.model_id,
            "running": self._scheduler.running,
            "waiting": self._scheduler.waiting,
            "slots": self.max_sequences,
            "gpu_offload": self.gpu_offload,  # layers asked for and a GPU backend to take them
            **self.metrics.snapshot(kv_cells_total=self.n_ctx),
        }


_SCORE_PARAMS = SamplingParams(max_tokens=1)  # reserves one KV cell more than scoring needs
