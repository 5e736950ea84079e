"""Tools on the OpenAI surface, driven with the official `openai` client as an agent framework would: the
engine calls a client's function with arguments that follow its schema, and answers from the function's result.

SmolLM2-135M shows the mechanics (a required or named call is grammar-constrained, so even a tiny model's call
parses); the default answering model (Qwen2.5-Coder-1.5B, whose chat template teaches it to call tools) shows
an "auto" round trip: it chooses to call, then answers from the tool's result.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from serving.engine import BatchingEngine
from tests.serving.test_openai_server import ask, sse_events

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "the city's name"},
                                                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"]}}}
HOLIDAYS = {"type": "function", "function": {
    "name": "count_holidays", "description": "How many days of holiday an employee has left this year.",
    "parameters": {"type": "object", "properties": {"employee_id": {"type": "integer"}},
                   "required": ["employee_id"]}}}


def test_a_required_call_follows_the_tool_schema(client):
    reply = client.chat.completions.create(
        model="any", messages=ask("What is the weather in Girona?"), tools=[WEATHER], tool_choice="required",
        max_tokens=60, temperature=0)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert set(args) == {"city", "unit"} and isinstance(args["city"], str) and args["unit"] in ("celsius",
                                                                                                 "fahrenheit")


def test_a_named_tool_is_the_one_called_and_a_stream_carries_the_call(client):
    choice = {"type": "function", "function": {"name": "count_holidays"}}
    reply = client.chat.completions.create(model="any", messages=ask("How many holidays has employee 42 left?"),
                                           tools=[WEATHER, HOLIDAYS], tool_choice=choice, max_tokens=40,
                                           temperature=0)
    (call,) = reply.choices[0].message.tool_calls
    assert call.function.name == "count_holidays"
    assert isinstance(json.loads(call.function.arguments)["employee_id"], int)
    chunks = list(client.chat.completions.create(model="any", messages=ask("Holidays of employee 42?"),
                                                 tools=[WEATHER, HOLIDAYS], tool_choice=choice, max_tokens=40,
                                                 temperature=0, stream=True))
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert [tc.function.name for tc in calls] == ["count_holidays"] and calls[0].index == 0
    assert "employee_id" in json.loads(calls[0].function.arguments)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_choice_none_answers_in_words(client):
    reply = client.chat.completions.create(model="any", messages=ask("Say hello."), tools=[WEATHER],
                                           tool_choice="none", max_tokens=8, temperature=0)
    assert reply.choices[0].message.tool_calls is None and reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_bad_tools_get_a_message_naming_the_field(client, server):
    with pytest.raises(openai.BadRequestError, match="tool_choice: 'send_mail' is not one of the tools"):
        client.chat.completions.create(model="any", messages=ask("Hi"), tools=[WEATHER],
                                       tool_choice={"type": "function", "function": {"name": "send_mail"}})
    r = httpx.post(server.url + "/v1/chat/completions", timeout=30,
                   json={"messages": ask("Hi"), "tools": [{"type": "function", "function": {"description": "x"}}]})
    assert r.status_code == 400 and "tools[0]" in r.json()["error"]["message"]
    r = httpx.post(server.url + "/v1/chat/completions", timeout=30, json={
        "messages": ask("Weather in Vic?"), "tools": [WEATHER], "tool_choice": "required", "stream": True,
        "max_tokens": 60, "temperature": 0})
    events = sse_events(r)
    assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.fixture(scope="module")
def qwen_client(tmp_path_factory, serve_openai):
    from app.models import resolve_model

    path = resolve_model("qwen2.5-coder-1.5b", tmp_path_factory.mktemp("models"))
    engine = BatchingEngine(path, n_ctx=4096, n_threads=2, max_sequences=2)
    srv = serve_openai(engine)
    yield openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
    srv.close()
    engine.close()


def test_the_answering_model_calls_a_tool_on_its_own_and_answers_from_its_result(qwen_client):
    messages = [{"role": "user", "content": "What is the weather in Girona right now, in celsius?"}]
    reply = qwen_client.chat.completions.create(model="any", messages=messages, tools=[WEATHER, HOLIDAYS],
                                                max_tokens=80, temperature=0)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message.content
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"].lower() == "girona"
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 17, "sky": "clear"})}]
    answer = qwen_client.chat.completions.create(model="any", messages=messages, tools=[WEATHER, HOLIDAYS],
                                                 max_tokens=60, temperature=0)
    assert answer.choices[0].finish_reason == "stop" and "17" in answer.choices[0].message.content
