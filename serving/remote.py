"""OpenAIRemoteGenerator: the Generator seam over an OpenAI-compatible server.

For running generation out of process (llama-server, vLLM, a hosted API): it POSTs to
`{base_url}/chat/completions` with `stream: true` and reads the server-sent events.
`base_url` includes the API prefix, as with the OpenAI SDK: "http://127.0.0.1:8080/v1".
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence

import httpx

from serving.generator import (
    Completion,
    EngineBusyError,
    GenerationError,
    Message,
    PromptTooLongError,
    SamplingParams,
    ServingError,
    drain,
)

logger = logging.getLogger(__name__)
_CHARS_PER_TOKEN = 4  # count_tokens estimate: the OpenAI API has no tokenizer endpoint


class OpenAIRemoteGenerator:
    """A `Generator` backed by an OpenAI-compatible /v1/chat/completions endpoint."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model_id = model
        self._api_key = api_key
        self._timeout = timeout
        self._client: httpx.Client | None = None

    def warm_up(self) -> None:
        """Open the HTTP client and check that the server answers."""
        if self._client is not None:
            return
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        self._client = httpx.Client(headers=headers, timeout=self._timeout)
        try:
            self._client.get(f"{self.base_url}/models").raise_for_status()
        except httpx.HTTPError as exc:
            raise ServingError(f"the generation server at {self.base_url} is not reachable: {exc}") from exc

    def stream(self, messages: Sequence[Message], params: SamplingParams) -> RemoteStream:
        """Send the request; HTTP errors are raised here, before any text is read."""
        if self._client is None:
            self.warm_up()
        client = self._client
        assert client is not None  # warm_up made it
        body: dict = {
            "model": self.model_id,
            "messages": [dict(m) for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
        }
        if params.temperature > 0:
            body["top_k"] = params.top_k  # llama-server and vLLM extension
        if params.repeat_penalty != 1.0:
            body["repeat_penalty"] = params.repeat_penalty  # llama-server extension
        if params.stop:
            body["stop"] = list(params.stop)
        started = time.perf_counter()
        logger.debug("POST %s/chat/completions: %d messages, max_tokens=%d", self.base_url, len(messages),
                     params.max_tokens)
        request = client.build_request("POST", f"{self.base_url}/chat/completions", json=body)
        try:
            response = client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise GenerationError(f"request to {self.base_url} failed: {exc}") from exc
        if response.status_code >= 400:
            response.read()
            response.close()
            raise _http_error(response)
        return RemoteStream(response, started)

    def generate(self, messages: Sequence[Message], params: SamplingParams) -> Completion:
        return drain(self.stream(messages, params))

    def count_tokens(self, text: str) -> int:
        """An estimate (about 4 characters a token): the API offers no tokenizer."""
        return max(1, -(-len(text) // _CHARS_PER_TOKEN)) if text else 0

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class RemoteStream:
    """Text deltas parsed from the server's SSE stream; implements GenerationStream."""

    def __init__(self, response: httpx.Response, started: float) -> None:
        self._response = response
        self._started = started
        self.completion = Completion()
        self._cancelled = False

    def cancel(self) -> None:
        """Close the connection; the server stops generating when it notices."""
        if self.completion.finish_reason is None:
            self._cancelled = True
            self.completion.finish_reason = "cancelled"
        self._response.close()

    def __iter__(self) -> Iterator[str]:
        c = self.completion
        try:
            for line in self._response.iter_lines():
                if self._cancelled:
                    return
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    c.finish_reason = "error"
                    raise GenerationError(f"the server reported: {chunk['error']}")
                if usage := chunk.get("usage"):
                    c.prompt_tokens = usage.get("prompt_tokens", c.prompt_tokens)
                    c.completion_tokens = usage.get("completion_tokens", c.completion_tokens)
                for choice in chunk.get("choices") or []:
                    delta = (choice.get("delta") or {}).get("content") or ""
                    if delta:
                        if c.ttft_ms is None:
                            c.ttft_ms = (time.perf_counter() - self._started) * 1000.0
                        c.text += delta
                        yield delta
                    if choice.get("finish_reason"):
                        c.finish_reason = choice["finish_reason"]
        except (httpx.HTTPError, httpx.StreamError) as exc:  # StreamError: closed by cancel()
            if self._cancelled:
                return
            c.finish_reason = "error"
            raise GenerationError(f"the stream from the server broke off: {exc}") from exc
            c.finish_reason = c.finish_reason or "stop"
        finally:  # also when the consumer stops iterating early
            self._response.close()
            c.total_ms = (time.perf_counter() - self._started) * 1000.0
            c.finish_reason = c.finish_reason or "cancelled"


def _http_error(response: httpx.Response) -> ServingError:
    try:
        detail = response.json().get("error", response.text)
        message = detail.get("message", str(detail)) if isinstance(detail, dict) else str(detail)
    except ValueError:
        message = response.text
    if response.status_code in (429, 503):
        return EngineBusyError(f"the generation server is busy: {message}")
    if response.status_code == 400 and any(w in message.lower() for w in ("context", "too long", "exceed")):
        return PromptTooLongError(message)
    return GenerationError(f"the generation server answered {response.status_code}: {message}")
