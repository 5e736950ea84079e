"""Reading a model's output for tool calls: the forms small models write, and what is not a call."""

from __future__ import annotations

import json

import pytest

from serving.tools import answered_calls, call_schema, check_tools, parse_calls, template_messages

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.mark.parametrize("text", [
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Vic"}}\n</tool_call>',
    '```json\n{"name": "get_weather", "arguments": {"city": "Vic"}}\n```',
    '{{"name": "get_weather", "arguments": {"city": "Vic"}}}',  # a template's escaped braces, copied
    '{"name": "get_weather", "arguments": "{\\"city\\": \\"Vic\\"}"}',  # arguments as a JSON string
])
def test_the_forms_a_small_model_calls_in_are_read(text):
    content, calls, attempted = parse_calls(text, TOOLS)
    assert not attempted and content is None
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Vic"})]


def test_an_answer_is_not_a_call_and_a_broken_call_is_an_attempt():
    answer = 'Here is the config:\n```json\n{"debug": true}\n```'
    assert parse_calls(answer, TOOLS) == (answer, [], False)  # a JSON code block that calls no tool
    assert parse_calls("It is sunny in Vic.", TOOLS) == ("It is sunny in Vic.", [], False)
    assert parse_calls('<tool_call>\n{"name": "get_weather", "argu', TOOLS)[2]  # cut off
    assert parse_calls('{"name": "send_mail", "arguments": {}}', TOOLS)[2]  # no such tool


def test_tool_choice_and_bad_tools_are_named():
    assert check_tools(TOOLS, "auto") is None and check_tools(TOOLS, "required") == ""
    assert check_tools(TOOLS, {"type": "function", "function": {"name": "get_weather"}}) == "get_weather"
    with pytest.raises(ValueError, match="tool_choice"):
        check_tools(TOOLS, "sometimes")
    with pytest.raises(ValueError, match=r"tools\[0\].function.parameters"):
        check_tools([{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}], None)
    assert call_schema(TOOLS)["properties"]["name"] == {"const": "get_weather"}


def test_a_call_with_its_result_in_the_history_counts_as_answered():
    history = template_messages([
        {"role": "user", "content": "Weather in Vic?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Vic"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}])
    assert history[1]["tool_calls"][0]["arguments"] == {"city": "Vic"}  # as templates expect: an object
    (_, [call], _) = parse_calls('{"name": "get_weather", "arguments": {"city": "Vic"}}', TOOLS)
    assert call.key() in answered_calls(history)
    (_, [other], _) = parse_calls('{"name": "get_weather", "arguments": {"city": "Olot"}}', TOOLS)
    assert other.key() not in answered_calls(history)
