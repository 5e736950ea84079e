"""OpenAIRemoteGenerator against a small OpenAI-compatible SSE server on loopback (a real HTTP boundary)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from serving.generator import EngineBusyError, Generator, PromptTooLongError, SamplingParams
from serving.remote import OpenAIRemoteGenerator


class _Handler(BaseHTTPRequestHandler):
    requests: list[dict] = []

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        self._json(200, {"data": [{"id": "test-model"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        last = body["messages"][-1]["content"]
        if last == "busy":
            return self._json(429, {"error": {"message": "all slots are busy", "type": "unavailable"}})
        if last == "long":
            return self._json(400, {"error": {"message": "the request exceeds the available context size"}})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for piece in ["¿Qué ", "año ", "es? 🙂"]:
            self._event({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        self._event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        self._event({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}})
        self.wfile.write(b"data: [DONE]\n\n")

    def _event(self, payload: dict) -> None:
        self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
        self.wfile.flush()

    def _json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def remote():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    gen = OpenAIRemoteGenerator(f"http://127.0.0.1:{server.server_address[1]}/v1", "test-model", api_key="k")
    gen.warm_up()
    yield gen
    gen.close()
    server.shutdown()


def test_streams_deltas_and_usage(remote):
    assert isinstance(remote, Generator)
    stream = remote.stream([{"role": "user", "content": "hi"}], SamplingParams(max_tokens=5, stop=("\n",)))
    assert list(stream) == ["¿Qué ", "año ", "es? 🙂"]
    c = stream.completion
    assert (c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens) == ("¿Qué año es? 🙂", "stop", 7, 3)
    assert c.ttft_ms is not None
    sent = _Handler.requests[-1]
    assert sent["stream"] is True and sent["max_tokens"] == 5 and sent["stop"] == ["\n"]


def test_http_errors_map_to_serving_errors(remote):
    with pytest.raises(EngineBusyError, match="busy"):
        remote.stream([{"role": "user", "content": "busy"}], SamplingParams())
    with pytest.raises(PromptTooLongError, match="context"):
        remote.generate([{"role": "user", "content": "long"}], SamplingParams())


def test_cancel_closes_the_stream(remote):
    stream = remote.stream([{"role": "user", "content": "hi"}], SamplingParams())
    it = iter(stream)
    assert next(it) == "¿Qué "
    stream.cancel()
    list(it)  # ends quietly
    assert stream.completion.finish_reason == "cancelled"
