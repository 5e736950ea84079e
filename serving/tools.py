"""Function calling on the OpenAI surface: `tools` go into the model's own chat template (which tells the model
how to call them), and a call the client requires is constrained by a grammar, so it always parses.

- `tool_choice` "none": the tools are not shown; a plain answer.
- "auto" (the default when tools are given): the model answers or calls. A call it writes is read from its
  `<tool_call>{...}</tool_call>` block (the format of Qwen's, Hermes' and most GGUF templates) or a bare JSON
  object; a call that does not parse, or names no given tool, is asked again under the grammar.
- "required", or {"type": "function", "function": {"name": ...}}: the output is a call to one of the tools (or
  that one) with arguments that follow its JSON schema, by construction.

This module imports nothing of the app's (see openai_server).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_FENCED = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL)  # a coder model's way: a JSON code block


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: str  # a JSON object, as OpenAI sends it
    id: str = ""

    def key(self) -> tuple[str, str]:
        """What the call asks, whatever its id and the spacing of its arguments."""
        return self.name, json.dumps(json.loads(self.arguments), sort_keys=True)

    def to_openai(self, index: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id or "call_" + uuid.uuid4().hex[:24], "type": "function",
                               "function": {"name": self.name, "arguments": self.arguments}}
        if index is not None:  # a streamed delta names its call by index
            out = {"index": index, **out}
        return out


def tool_names(tools: Sequence[Mapping[str, Any]]) -> list[str]:
    return [t["function"]["name"] for t in tools]


def check_tools(tools: Sequence[Mapping[str, Any]], choice: str | Mapping[str, Any] | None) -> str | None:
    """The tool a `tool_choice` forces: None for "auto", "" for "required" (any tool), or its name.
    ValueError naming the field when the tools or the choice are not what OpenAI's API accepts."""
    for i, t in enumerate(tools):
        fn = t.get("function") if t.get("type", "function") == "function" else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise ValueError(f"tools[{i}]: a function tool with a name is expected "
                             "({'type': 'function', 'function': {'name': ..., 'parameters': {...}}})")
        params = fn.get("parameters", {"type": "object"})
        if not isinstance(params, Mapping) or params.get("type", "object") != "object":
            raise ValueError(f"tools[{i}].function.parameters: a JSON schema of an object is expected")
    if choice is None or choice == "auto":
        return None
    if choice == "required":
        return ""
    if isinstance(choice, Mapping):
        name = (choice.get("function") or {}).get("name")
        if name not in tool_names(tools):
            raise ValueError(f"tool_choice: {name!r} is not one of the tools ({', '.join(tool_names(tools))})")
        return str(name)
    raise ValueError("tool_choice: 'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}")


def call_schema(tools: Sequence[Mapping[str, Any]], only: str | None = None) -> dict[str, Any]:
    """The JSON schema of one call: {"name": one of the tools, "arguments": that tool's parameters}."""
    alternatives = []
    for t in tools:
        fn = t["function"]
        if only and fn["name"] != only:
            continue
        params = dict(fn.get("parameters") or {"type": "object", "properties": {}})
        params.setdefault("type", "object")
        alternatives.append({"type": "object", "properties": {"name": {"const": fn["name"]}, "arguments": params},
                             "required": ["name", "arguments"]})
    return alternatives[0] if len(alternatives) == 1 else {"oneOf": alternatives}


def call_grammar(tools: Sequence[Mapping[str, Any]], only: str | None = None) -> str:
    """GBNF for one call to the tools (to `only` when given)."""
    from serving.sampling import json_grammar  # imports llama_cpp: only when a request needs it

    return json_grammar(call_schema(tools, only))


def parse_calls(text: str, tools: Sequence[Mapping[str, Any]]) -> tuple[str | None, list[ToolCall], bool]:
    """(content, calls, attempted) from a model's output: its `<tool_call>` blocks, JSON code blocks that call
    a given tool, or the whole output as one JSON call. `attempted` is true when the output tried a call that
    did not parse or names no given tool (a JSON code block that calls no tool is an answer, not an attempt)."""
    names = set(tool_names(tools))
    fenced = [(m, _call(m.group(1), names)) for m in _FENCED.finditer(text)]
    if not _BLOCK.search(text) and fenced and all(call is not None for _, call in fenced):
        content = _FENCED.sub("", text).strip()
        return content or None, [call for _, call in fenced if call is not None], False
    blocks = _BLOCK.findall(text)
    bodies = blocks or ([text.strip()] if text.strip().startswith("{") else [])
    calls: list[ToolCall] = []
    for body in bodies:
        if body.startswith("{{") and body.endswith("}}"):  # copied from a template that escapes its braces
            body = body[1:-1]
        try:
            data = json.loads(body)
        except json.JSONDecodeError:
            return None, [], True
        if not isinstance(data, dict) or data.get("name") not in names:
            return None, [], True
        args = data.get("arguments", data.get("parameters", {}))
        if isinstance(args, str):  # some models write the arguments as a JSON string, as OpenAI sends them
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                return None, [], True
        if not isinstance(args, dict):
            return None, [], True
        calls.append(ToolCall(data["name"], json.dumps(args, ensure_ascii=False)))
    if not calls:
        return text, [], False
    content = _BLOCK.sub("", text).strip() if blocks else ""
    return content or None, calls, False


def _call(body: str, names: set[str]) -> ToolCall | None:
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("name") not in names or not isinstance(data.get("arguments"), dict):
        return None
    return ToolCall(data["name"], json.dumps(data["arguments"], ensure_ascii=False))


def answered_calls(messages: Sequence[Mapping[str, Any]]) -> set[tuple[str, str]]:
    """The calls (name, arguments) the conversation made and got a tool's result for."""
    results = {m.get("tool_call_id") for m in messages if m.get("role") == "tool"}
    anonymous = any(m.get("role") == "tool" and not m.get("tool_call_id") for m in messages)
    out = set()
    for m in messages:
        for c in m.get("tool_calls") or []:
            if c.get("id") in results or anonymous:
                fn = c.get("function") or c
                out.add((fn.get("name"), json.dumps(fn.get("arguments") or {}, sort_keys=True)))
    return out


def template_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI messages as chat templates expect them: an assistant's calls with their arguments as objects
    (OpenAI sends them as JSON strings), a tool's result as the content of a "tool" message."""
    out = []
    for m in messages:
        m = dict(m)
        if m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                fn = dict(c.get("function") or {})
                if isinstance(fn.get("arguments"), str):
                    try:
                        fn["arguments"] = json.loads(fn["arguments"] or "{}")
                    except json.JSONDecodeError as e:
                        raise ValueError(f"messages: a tool call's arguments are not JSON ({e})") from e
                calls.append({**c, "function": fn, **fn})  # both shapes: templates read either
            m["tool_calls"] = calls
        out.append(m)
    return out
