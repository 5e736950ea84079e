"""The Generator seam: what the app needs from a text-generation backend.

`serving` imports nothing of ours, so the engine here could be replaced by a remote
OpenAI-compatible server (llama-server, vLLM) behind the same Protocol.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class ServingError(Exception):
    """Base of the errors a generation backend raises; the app shows their message to the user."""


class ModelNotFoundError(ServingError):
    """The configured GGUF file does not exist (seen by whoever configured the model path)."""


class PromptTooLongError(ServingError):
    """The prompt does not fit the context window (seen by the API caller as HTTP 400)."""


class EngineBusyError(ServingError):
    """The request queue is full (seen by the API caller as HTTP 429: try again later)."""


class EngineClosedError(ServingError):
    """The engine was shut down while the request waited or ran."""


class GenerationError(ServingError):
    """Generation failed after the request was accepted: a decode error, a timeout, or a remote
    server's error (seen by the API caller as HTTP 500, or as an error event mid-stream)."""


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Per-request sampling settings; temperature 0 means greedy decoding."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 40
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0  # OpenAI's: minus this times the token's count so far
    presence_penalty: float = 0.0  # OpenAI's: minus this once the token has appeared
    seed: int = 0
    stop: tuple[str, ...] = ()
    grammar: str | None = None  # GBNF: output constrained to it (see serving.sampling.json_grammar for JSON mode)


@dataclass(slots=True)
class Completion:
    """The outcome of one request, with the timings the metrics and the API report."""

    text: str = ""
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" | "error"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    queue_ms: float = 0.0
    ttft_ms: float | None = None  # submit -> first generated token
    total_ms: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def tpot_ms(self) -> float | None:
        """Mean time per output token after the first one."""
        if self.ttft_ms is None or self.completion_tokens < 2:
            return None
        return (self.total_ms - self.ttft_ms) / (self.completion_tokens - 1)


class GenerationStream(Protocol):
    """Iterating yields text deltas as they are generated; `completion` is final once exhausted."""

    completion: Completion

    def __iter__(self) -> Iterator[str]: ...

    def cancel(self) -> None:
        """Stop generating and free the request's resources (its KV cache)."""
        ...


def drain(stream: GenerationStream) -> Completion:
    """Consume a stream to its end and return its completion (what `Generator.generate` does)."""
    for _ in stream:
        pass
    return stream.completion


Message = dict  # {"role": "system" | "user" | "assistant", "content": str}


@runtime_checkable
class Generator(Protocol):
    """A chat-completion backend. Constructors are cheap; `warm_up` loads the weights."""

    model_id: str

    def warm_up(self) -> None: ...

    def stream(self, messages: Sequence[Message], params: SamplingParams) -> GenerationStream: ...

    def generate(self, messages: Sequence[Message], params: SamplingParams) -> Completion: ...

    def count_tokens(self, text: str) -> int: ...

    def close(self) -> None: ...


@runtime_checkable
class NextTokenScorer(Protocol):
    """A backend that can score prompts without generating (LLM re-ranking: yes/no judgements and query
    likelihood; classification).

    `BatchingEngine` implements it; prompts are raw text: `format_chat` applies the model's chat template. Callers
    check for it with `isinstance(generator, NextTokenScorer)` (a remote generator does not score).
    """

    def format_chat(self, messages: Sequence[Message]) -> str:
        """The model's prompt text for a chat, ending where the assistant's answer starts."""
        ...

    def next_token_logprobs(self, prompts: Sequence[str], candidates: Sequence[str]) -> list[dict[str, float]]:
        """For each prompt, {candidate: log-probability of the candidate's first token coming next}."""
        ...

    def continuation_logprobs(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[list[float]]:
        """For each (prompt, continuation), the log-probability of each continuation token in turn."""
        ...
