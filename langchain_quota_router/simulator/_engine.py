"""The vendor-neutral brain of the simulator: what to answer and how many tokens."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ._types import Reply, ToolCall

Role = Literal["system", "user", "assistant", "tool"]
Finish = Literal["stop", "length", "tool_calls"]

CHARS_PER_TOKEN = 4
_SNIPPET_CHARS = 160


class BadRequest(Exception):  # noqa: N818 - named after the HTTP status it becomes
    """The request body is not what the vendor's API accepts; becomes a 400."""


@dataclass(frozen=True)
class Message:
    """One conversation turn, stripped of vendor format."""

    role: Role
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_name: str | None = None  # for role == "tool": the tool that answered


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered in the request."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ParsedRequest:
    """A chat request, stripped of vendor format.

    Attributes:
        model: the model asked for.
        messages: the conversation (system instructions first, as role "system").
        tools: the tools offered.
        tool_choice: ``"auto"``, ``"none"``, ``"required"``, or a tool name.
        max_tokens: the cap on output tokens, if any.
        stream: whether to answer with a stream.
        include_usage: OpenAI ``stream_options.include_usage``.
        json_mode: the caller asked for a JSON object (OpenAI, Groq and Cohere
            ``response_format``, Gemini ``responseMimeType: application/json``).
    """

    model: str
    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str = "auto"
    max_tokens: int | None = None
    stream: bool = False
    include_usage: bool = False
    json_mode: bool = False

    @property
    def prompt_text(self) -> str:
        """The text input tokens are counted from: every turn and every tool."""
        parts: list[str] = []
        for message in self.messages:
            if message.text:
                parts.append(message.text)
            parts.extend(_call_text(call) for call in message.tool_calls)
        for tool in self.tools:
            parts.append(tool.name)
            if tool.description:
                parts.append(tool.description)
            parts.append(json.dumps(tool.parameters, sort_keys=True))
        return "\n".join(parts)

    @property
    def input_tokens(self) -> int:
        """Input tokens: ``ceil(len(prompt_text) / 4)``, at least 1."""
        return max(1, count_tokens(self.prompt_text))


@dataclass(frozen=True)
class Completion:
    """The simulated model's answer to one request, before vendor formatting."""

    text: str
    tool_calls: tuple[ToolCall, ...]
    input_tokens: int
    output_tokens: int
    finish: Finish

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


def count_tokens(text: str) -> int:
    """Count tokens the simulator's way: ``ceil(len(text) / 4)``."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _call_text(call: ToolCall) -> str:
    return call.name + json.dumps(dict(call.args), sort_keys=True)


def digest(text: str, length: int = 8) -> str:
    """Return a short deterministic hex digest of ``text``."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def split_words(text: str) -> list[str]:
    """Split text into stream pieces: one word each, with its leading whitespace."""
    return re.findall(r"\s*\S+\s*$|\s*\S+", text) or ([text] if text else [])


def example_args(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Build arguments matching a tool's JSON schema (1, "x", true, ...).

    Args:
        schema: the tool's parameter schema (JSON Schema or Gemini's upper-case
            dialect).

    Returns:
        A JSON object with a value for every declared property.
    """
    value = _example(schema, depth=0)
    return value if isinstance(value, dict) else {}


def _example(schema: Any, depth: int) -> Any:
    if not isinstance(schema, Mapping) or depth > 6:
        return "x"
    if "const" in schema:
        return schema["const"]
    enum_values = schema.get("enum")
    if isinstance(enum_values, list) and enum_values:
        return enum_values[0]
    for combinator in ("anyOf", "oneOf", "allOf", "any_of"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            non_null = [
                o
                for o in options
                if not (isinstance(o, Mapping) and str(o.get("type")).lower() == "null")
            ]
            return _example((non_null or options)[0], depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "null")
    kind = str(kind).lower() if kind is not None else None
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties")
        if not isinstance(properties, Mapping):
            return {}
        return {name: _example(sub, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        return [_example(schema.get("items", {}), depth + 1)]
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "x"


def _trailing_tool_results(messages: Sequence[Message]) -> list[Message]:
    results: list[Message] = []
    for message in reversed(messages):
        if message.role != "tool":
            break
        results.append(message)
    return list(reversed(results))


def _last_user_text(messages: Sequence[Message]) -> str:
    for message in reversed(messages):
        if message.role == "user" and message.text:
            return message.text
    return ""


def _snippet(text: str, limit: int = _SNIPPET_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def default_text(request: ParsedRequest) -> str:
    """The unscripted text answer: derived from the last user message only."""
    user_text = _last_user_text(request.messages)
    return f"Simulated answer {digest(user_text)} to: {_snippet(user_text)}"


def _choose_tool(request: ParsedRequest) -> ToolSpec | None:
    if not request.tools or request.tool_choice == "none":
        return None
    if request.tool_choice not in ("auto", "required"):
        for tool in request.tools:
            if tool.name == request.tool_choice:
                return tool
    return request.tools[0]


def complete(request: ParsedRequest, reply: Reply | None) -> Completion:
    """Decide the answer to a request.

    A scripted ``reply`` wins. Otherwise: after tool results, a text answer that
    mentions them; with tools offered, a call to the first (or the forced) tool
    with arguments built from its schema; else a text derived from the last user
    message. Text is cut to ``max_tokens``.

    Args:
        request: the parsed request.
        reply: the scripted reply for this request, if any.

    Returns:
        The completion, with the token counts the simulator reports and enforces.
    """
    text: str
    calls: tuple[ToolCall, ...] = ()
    if reply is not None:
        text, calls = reply.text, tuple(reply.tool_calls)
    elif results := _trailing_tool_results(request.messages):
        text = "Tool results: " + "; ".join(
            f"{r.tool_name or 'tool'} returned {_snippet(r.text, 200)}" for r in results
        )
    elif (tool := _choose_tool(request)) is not None:
        text = ""
        calls = (ToolCall(tool.name, example_args(tool.parameters)),)
    else:
        text = default_text(request)
    if request.json_mode and not calls and reply is None:
        # What a vendor in JSON mode answers: one JSON object, nothing around it.
        user_text = _last_user_text(request.messages)
        text = json.dumps({"answer": text, "digest": digest(user_text)})

    finish: Finish = "tool_calls" if calls else "stop"
    call_tokens = sum(count_tokens(_call_text(c)) for c in calls)
    limit = request.max_tokens
    if (
        limit is not None
        and (reply is None or reply.output_tokens is None)
        and count_tokens(text) > limit
    ):
        text = text[: limit * CHARS_PER_TOKEN]
        if not calls:
            finish = "length"
    output_tokens = count_tokens(text) + call_tokens
    if reply is not None and reply.output_tokens is not None:
        output_tokens = reply.output_tokens
    input_tokens = request.input_tokens
    if reply is not None and reply.input_tokens is not None:
        input_tokens = reply.input_tokens
    return Completion(text, calls, input_tokens, output_tokens, finish)


def call_id(prefix: str, call: ToolCall, index: int, seed: str) -> str:
    """A deterministic id for a tool call the simulator makes up."""
    if call.id is not None:
        return call.id
    return prefix + digest(f"{seed}|{index}|{_call_text(call)}", 24)


def text_of(content: Any) -> str:
    """Flatten a vendor's message content (string, parts list, dict) to text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(t for t in (text_of(part) for part in content) if t)
    if isinstance(content, Mapping):
        if isinstance(content.get("text"), str):
            return str(content["text"])
        if "document" in content:
            return text_of(content["document"])
        if "data" in content:
            return text_of(content["data"])
        if set(content) == {"output"}:
            return text_of(content["output"])
        if content.get("type") in ("image_url", "image", "input_audio", "file"):
            return ""
        return json.dumps(content, sort_keys=True)
    return json.dumps(content)
