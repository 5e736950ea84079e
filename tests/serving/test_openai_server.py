"""The OpenAI-compatible surface over the real SmolLM2 engine, served by uvicorn on loopback.

Driven with the official `openai` client where it is installed, and with raw HTTP for what a
client hides (SSE framing, status codes, cancellation on disconnect).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai  # a test dependency ([test] extra), installed by `make test`
import pytest

from serving.engine import BatchingEngine


def ask(question: str) -> list[dict]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}]


def sse_events(response: httpx.Response) -> list:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_models_lists_the_engine_model(client, engine):
    assert [m.id for m in client.models.list().data] == [engine.model_id]


def test_chat_completion_plain_matches_the_engine_and_reports_timings(client, engine):
    from serving.generator import SamplingParams

    reply = client.chat.completions.create(model="any", messages=ask("What is 2+2?"), max_tokens=12,
                                           temperature=0)
    expected = engine.generate(ask("What is 2+2?"), SamplingParams(max_tokens=12))
    assert reply.choices[0].message.content == expected.text
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens == expected.completion_tokens
    assert reply.usage.prompt_tokens == expected.prompt_tokens
    timings = reply.model_extra["timings"]
    assert timings["total_ms"] >= timings["ttft_ms"] >= timings["queue_ms"] >= 0


def test_sixteen_concurrent_streaming_chats_each_get_their_own_text(client, engine):
    from tests.serving.test_engine import QUESTIONS

    def stream(question: str) -> tuple[str, str | None]:
        chunks = client.chat.completions.create(model="any", messages=ask(question), max_tokens=10,
                                                temperature=0, stream=True)
        text, finish = "", None
        for chunk in chunks:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
        return text, finish

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(stream, QUESTIONS))
    from serving.generator import SamplingParams

    solo = [engine.generate(ask(q), SamplingParams(max_tokens=10)).text for q in QUESTIONS]
    assert [text for text, _ in results] == solo
    assert all(finish in ("stop", "length") for _, finish in results)
    assert len(set(solo)) > 12


def test_completion_streams_sse_and_ends_with_done(server):
    body = {"prompt": "Count: 1, 2, 3,", "max_tokens": 6, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    usage = events[-2]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 6
    last = events[-3]
    assert last["choices"][0]["finish_reason"] == "length" and last["timings"]["ttft_ms"] > 0
    text = "".join(e["choices"][0]["text"] for e in events[:-2])
    plain = httpx.post(server.url + "/v1/completions", json={**body, "stream": False}, timeout=60).json()
    assert plain["object"] == "text_completion" and plain["choices"][0]["text"] == text
    assert text.strip().startswith("4")


def test_json_mode_returns_json_that_follows_the_schema(client):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
              "required": ["city", "population"]}
    reply = client.chat.completions.create(
        model="any", messages=ask("Give the largest city of Spain and its population as JSON."), max_tokens=40,
        temperature=0, response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}})
    data = json.loads(reply.choices[0].message.content)
    assert set(data) == {"city", "population"} and isinstance(data["population"], int)
    reply = client.chat.completions.create(model="any", messages=ask("Describe a cat as JSON."), max_tokens=40,
                                           temperature=0, response_format={"type": "json_object"})
    if reply.choices[0].finish_reason == "stop":  # a cut-off object is not complete JSON
        assert isinstance(json.loads(reply.choices[0].message.content), dict)
    else:
        assert reply.choices[0].message.content.lstrip().startswith("{")


def test_seeded_sampling_is_reproducible_and_temperature_matters(client):
    def sample(seed: int) -> str:
        return client.chat.completions.create(model="any", messages=ask("Invent a name for a dog."), max_tokens=12,
                                              temperature=1.2, top_p=0.95, seed=seed).choices[0].message.content

    assert sample(7) == sample(7)
    assert len({sample(s) for s in range(1, 6)}) > 1


def test_bad_requests_get_openai_style_errors(client, server):
    with pytest.raises(openai.BadRequestError, match="per-request context"):
        client.chat.completions.create(model="any", messages=ask("word " * 600), max_tokens=8)
    with pytest.raises(openai.BadRequestError, match="grammar"):
        client.completions.create(model="any", prompt="Hi", max_tokens=4, extra_body={"grammar": "root ::= ("})
    r = httpx.post(server.url + "/v1/chat/completions", json={"messages": ask("Hi"), "n": 2}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_a_full_queue_answers_429_and_a_dropped_stream_frees_its_slot(smollm2_path, serve_openai):
    engine = BatchingEngine(smollm2_path, n_ctx=512, n_threads=2, max_sequences=1, max_queue=1)
    srv = serve_openai(engine)
    try:
        long = {"messages": ask("Tell me a long story about a dragon."), "max_tokens": 300, "stream": True}
        with httpx.stream("POST", srv.url + "/v1/chat/completions", json=long, timeout=60) as running:
            lines = running.iter_lines()
            while "content" not in next(lines):
                pass  # it holds the only slot and is generating
            with ThreadPoolExecutor(1) as pool:
                waiting = pool.submit(httpx.post, srv.url + "/v1/chat/completions",
                                      json={"messages": ask("Hi"), "max_tokens": 4}, timeout=60)
                deadline = time.monotonic() + 10
                while engine.stats()["waiting"] < 1:
                    assert time.monotonic() < deadline
                    time.sleep(0.01)
                busy = httpx.post(srv.url + "/v1/chat/completions", json={"messages": ask("Hello")}, timeout=30)
                assert busy.status_code == 429 and busy.json()["error"]["type"] == "busy"
                # the client hangs up mid-stream: its request is cancelled, and the waiting one gets the slot
                running.close()
                assert waiting.result().status_code == 200
        deadline = time.monotonic() + 10
        while engine.stats()["kv_cells_used"]:
            assert time.monotonic() < deadline, "the dropped stream's KV was not freed"
            time.sleep(0.01)
        assert engine.stats()["requests_finished"].get("cancelled") == 1
    finally:
        srv.close()
        engine.close()
