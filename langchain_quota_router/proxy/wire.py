"""OpenAI's wire format and the router's words for it: requests in, answers out.

A request is validated by a pydantic model that keeps the fields it does not know
(``top_p``, ``seed``, ``user``, ``metadata``... are accepted and not sent on: not
every vendor behind the router takes them, and one it does not take would skip the
route). :func:`plan_chat` turns a request into a :class:`ChatPlan`: LangChain
messages plus what to bind and pass, in the chat model's own call paths
(``bind_tools``, ``json_mode``, ``preferred=``, ``max_tokens``...).
:func:`completion` and :func:`embedding_response` turn answers back into the
``openai`` package's response types, so what goes out is what OpenAI's SDK parses.

A mistake in a request is a :class:`WireError` naming the field, as OpenAI names it
(``messages[2].tool_calls[0].function.arguments``).
"""

from __future__ import annotations

import base64
import json
import math
import struct
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice
from openai.types.chat.chat_completion_message_function_tool_call import (
    ChatCompletionMessageFunctionToolCall,
    Function,
)
from openai.types.completion_usage import CompletionUsage
from openai.types.create_embedding_response import Usage as EmbeddingUsage
from openai.types.embedding import Embedding
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "ChatPlan",
    "ChatRequest",
    "EmbeddingRequest",
    "FinishReason",
    "WireError",
    "completion",
    "completion_id",
    "embedding_inputs",
    "embedding_response",
    "error_body",
    "finish_reason",
    "parse_chat",
    "parse_embeddings",
    "plan_chat",
    "to_messages",
    "usage_of",
]

FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


class WireError(Exception):
    """A request the proxy answers with an OpenAI-shaped error.

    Attributes:
        status: the HTTP status.
        message: what is wrong, for the client.
        param: the field at fault (OpenAI's ``param``), if one is.
        kind: OpenAI's error ``type`` (``invalid_request_error``...).
        code: OpenAI's error ``code`` (``model_not_found``...).
        headers: extra response headers (``Retry-After``).
        details: more to put in the error object (per-route reasons).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        kind: str = "invalid_request_error",
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.kind = kind
        self.code = code
        self.headers = dict(headers or {})
        self.details = dict(details or {})

    def body(self) -> dict[str, Any]:
        """The response body: ``{"error": {"message", "type", "param", "code", ...}}``."""
        return error_body(self.message, self.kind, self.param, self.code, self.details)


def error_body(
    message: str,
    kind: str,
    param: str | None = None,
    code: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """OpenAI's error object."""
    return {
        "error": {"message": message, "type": kind, "param": param, "code": code, **(details or {})}
    }


def _bad(message: str, param: str | None) -> WireError:
    return WireError(HTTPStatus.BAD_REQUEST, message, param=param)


# ------------------------------------------------------------------ requests


class _Wire(BaseModel):
    # Unknown fields are kept (OpenAI adds some every month), never refused.
    model_config = ConfigDict(extra="allow")


class StreamOptions(_Wire):
    """``stream_options``."""

    include_usage: bool = False


class ChatRequest(_Wire):
    """The body of ``POST /v1/chat/completions``: the fields the router acts on."""

    model: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1, le=1)


class EmbeddingRequest(_Wire):
    """The body of ``POST /v1/embeddings``."""

    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)


def _param(loc: Sequence[int | str]) -> str:
    """A pydantic error location as OpenAI names a field: ``messages[2].role``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not text:
            text = part
        elif part.isidentifier():
            text += f".{part}"
    return text


def _parse(model: type[_Wire], body: bytes) -> Any:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"the request body is not valid JSON: {exc}"
        raise _bad(msg, None) from None
    if not isinstance(data, dict):
        msg = "the request body must be a JSON object"
        raise _bad(msg, None)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        # The location's last parts name a member of a union (``str``, ``list[str]``).
        loc = [p for p in first["loc"] if not (isinstance(p, str) and "[" in p)]
        loc = [p for p in loc if p not in ("str", "int", "float", "bool")]
        param = _param(loc)
        msg = f"{param or 'request'}: {first['msg']}"
        raise _bad(msg, param or None) from None


def parse_chat(body: bytes) -> ChatRequest:
    """A chat request from its JSON body.

    Raises:
        WireError: 400, naming the field at fault.
    """
    request: ChatRequest = _parse(ChatRequest, body)
    return request


def parse_embeddings(body: bytes) -> EmbeddingRequest:
    """An embeddings request from its JSON body.

    Raises:
        WireError: 400, naming the field at fault.
    """
    request: EmbeddingRequest = _parse(EmbeddingRequest, body)
    return request


# ---------------------------------------------------------- messages in


def _content(value: Any, where: str, *, parts: bool = True) -> str | list[str | dict[str, Any]]:
    """Message content: a string, or OpenAI content parts (text, images, audio,
    files), which LangChain's vendor models take as they are."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if not parts or not isinstance(value, list):
        msg = f"{where}: expected a string" + (" or a list of content parts" if parts else "")
        raise _bad(msg, where)
    out: list[str | dict[str, Any]] = []
    for i, part in enumerate(value):
        here = f"{where}[{i}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            msg = f"{here}: a content part is an object with a type"
            raise _bad(msg, here)
        kind = part["type"]
        if kind == "text":
            if not isinstance(part.get("text"), str):
                msg = f"{here}.text: expected a string"
                raise _bad(msg, f"{here}.text")
        elif kind == "image_url":
            image = part.get("image_url")
            if not isinstance(image, dict) or not isinstance(image.get("url"), str):
                msg = f"{here}.image_url.url: expected a string (a URL or a data: URL)"
                raise _bad(msg, f"{here}.image_url.url")
        out.append(dict(part))
    return out


def _text_only(value: Any, where: str) -> str:
    """Content that must end up as text (system, tool): parts' texts joined."""
    content = _content(value, where)
    if isinstance(content, str):
        return content
    texts = [p.get("text", "") for p in content if isinstance(p, dict) and p["type"] == "text"]
    if len(texts) != len(content):
        msg = f"{where}: only text parts are allowed here"
        raise _bad(msg, where)
    return "".join(str(t) for t in texts)


def _tool_calls(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        msg = f"{where}: expected a list"
        raise _bad(msg, where)
    calls = []
    for i, call in enumerate(value):
        here = f"{where}[{i}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            msg = f"{here}.function.name: expected a string"
            raise _bad(msg, f"{here}.function.name")
        raw = function.get("arguments") or "{}"
        try:
            args = json.loads(raw) if isinstance(raw, str) else None
        except json.JSONDecodeError:
            args = None
        if not isinstance(args, dict):
            msg = f"{here}.function.arguments: expected a JSON object in a string"
            raise _bad(msg, f"{here}.function.arguments")
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            msg = f"{here}.id: expected a string"
            raise _bad(msg, f"{here}.id")
        calls.append({"name": function["name"], "args": args, "id": call_id, "type": "tool_call"})
    return calls


def to_messages(messages: Sequence[Mapping[str, Any]]) -> list[BaseMessage]:
    """OpenAI chat messages as LangChain messages.

    ``developer`` is a system message (other vendors know no such role); an
    assistant's ``tool_calls`` become its ``tool_calls``; a ``tool`` message
    answers one by ``tool_call_id``.

    Raises:
        WireError: 400, naming the message and field at fault.
    """
    out: list[BaseMessage] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message.get("role")
        name = message.get("name")
        extra: dict[str, Any] = {"name": name} if isinstance(name, str) and name else {}
        if role in ("system", "developer"):
            out.append(
                SystemMessage(_text_only(message.get("content"), f"{where}.content"), **extra)
            )
        elif role == "user":
            if message.get("content") is None:
                msg = f"{where}.content: a user message needs content"
                raise _bad(msg, f"{where}.content")
            out.append(HumanMessage(_content(message.get("content"), f"{where}.content"), **extra))
        elif role == "assistant":
            content = _content(message.get("content"), f"{where}.content")
            calls = message.get("tool_calls")
            tool_calls = _tool_calls(calls, f"{where}.tool_calls") if calls else []
            out.append(AIMessage(content=content, tool_calls=tool_calls, **extra))
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                msg = f"{where}.tool_call_id: a tool message needs the id of the call it answers"
                raise _bad(msg, f"{where}.tool_call_id")
            text = _text_only(message.get("content"), f"{where}.content")
            out.append(ToolMessage(text, tool_call_id=call_id))
        else:
            msg = (
                f"{where}.role: {role!r} is not one of 'system', 'developer', 'user', "
                "'assistant', 'tool'"
            )
            raise _bad(msg, f"{where}.role")
    return out


# ------------------------------------------------------------------ the plan


@dataclass
class ChatPlan:
    """One chat request in the chat model's words.

    Attributes:
        messages: the conversation as LangChain messages.
        tools: OpenAI-format tools to ``bind_tools`` (empty: none).
        bind: ``bind_tools`` keyword arguments (``tool_choice``,
            ``parallel_tool_calls``).
        kwargs: call keyword arguments (``max_tokens``, ``temperature``, ``stop``,
            ``json_mode``, ``preferred``).
        schema_tool: for ``response_format: json_schema``, the name of the tool the
            answer is asked for through: its arguments are the answer's content.
        stream: whether the client asked for server-sent events.
        include_usage: whether a stream ends with a usage chunk.
    """

    messages: list[BaseMessage]
    tools: list[dict[str, Any]] = field(default_factory=list)
    bind: dict[str, Any] = field(default_factory=dict)
    kwargs: dict[str, Any] = field(default_factory=dict)
    schema_tool: str | None = None
    stream: bool = False
    include_usage: bool = False


def _tool_choice(choice: str | dict[str, Any] | None, tools: list[dict[str, Any]]) -> Any:
    """OpenAI's ``tool_choice`` in LangChain's words (``"required"`` is ``"any"``)."""
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice in ("auto", "none"):
            return choice
        if choice == "required":
            return "any"
        msg = f"tool_choice: {choice!r} is not 'auto', 'none', 'required' or a function"
        raise _bad(msg, "tool_choice")
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        msg = "tool_choice.function.name: expected the name of one of the tools"
        raise _bad(msg, "tool_choice.function.name")
    known = {t.get("function", {}).get("name") for t in tools}
    if name not in known:
        msg = f"tool_choice.function.name: {name!r} is not one of the tools"
        raise _bad(msg, "tool_choice.function.name")
    return name


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for i, tool in enumerate(tools):
        function = tool.get("function")
        if tool.get("type", "function") != "function" or not isinstance(function, dict):
            msg = f"tools[{i}]: only function tools are supported"
            raise _bad(msg, f"tools[{i}]")
        if not isinstance(function.get("name"), str) or not function["name"]:
            msg = f"tools[{i}].function.name: expected a string"
            raise _bad(msg, f"tools[{i}].function.name")
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict):
            msg = f"tools[{i}].function.parameters: expected a JSON schema object"
            raise _bad(msg, f"tools[{i}].function.parameters")
    return [
        {
            "type": "function",
            "function": {
                **t["function"],
                "parameters": t["function"].get("parameters", {"type": "object", "properties": {}}),
            },
        }
        for t in tools
    ]


def plan_chat(request: ChatRequest, preferred: str | None) -> ChatPlan:
    """What the router is asked to do for ``request``.

    ``response_format`` ``json_object`` is the router's ``json_mode``;
    ``json_schema`` asks for the answer through one forced tool whose parameters are
    the schema, as LangChain's ``with_structured_output`` does, which every
    tool-calling vendor supports (so the call can still fall back); its arguments
    become the answer's content. With tools of its own, a ``json_schema`` request
    is served in JSON mode (the schema is then not enforced).

    Raises:
        WireError: 400, naming the field at fault.
    """
    plan = ChatPlan(messages=to_messages(request.messages), stream=request.stream)
    plan.include_usage = bool(request.stream_options and request.stream_options.include_usage)
    if preferred is not None:
        plan.kwargs["preferred"] = preferred
    budget = request.max_completion_tokens or request.max_tokens
    if budget is not None:
        plan.kwargs["max_tokens"] = budget
    if request.temperature is not None:
        plan.kwargs["temperature"] = request.temperature
    if request.stop:
        stop = [request.stop] if isinstance(request.stop, str) else list(request.stop)
        if len(stop) > 4:
            msg = "stop: at most 4 stop sequences"
            raise _bad(msg, "stop")
        plan.kwargs["stop"] = stop
    if request.tools:
        plan.tools = _tools(request.tools)
        choice = _tool_choice(request.tool_choice, plan.tools)
        if choice is not None:
            plan.bind["tool_choice"] = choice
        if request.parallel_tool_calls is not None:
            plan.bind["parallel_tool_calls"] = request.parallel_tool_calls
    elif request.tool_choice not in (None, "none", "auto"):
        msg = "tool_choice: a tool choice needs tools"
        raise _bad(msg, "tool_choice")
    _response_format(request.response_format, plan)
    return plan


def _response_format(value: dict[str, Any] | None, plan: ChatPlan) -> None:
    kind = None if value is None else value.get("type")
    if kind in (None, "text"):
        return
    if kind == "json_object":
        plan.kwargs["json_mode"] = True
        return
    if kind != "json_schema":
        msg = f"response_format.type: {kind!r} is not 'text', 'json_object' or 'json_schema'"
        raise _bad(msg, "response_format.type")
    assert value is not None
    spec = value.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(spec, dict) or not isinstance(schema, dict):
        msg = "response_format.json_schema.schema: expected a JSON schema object"
        raise _bad(msg, "response_format.json_schema.schema")
    if plan.tools:
        plan.kwargs["json_mode"] = True
        return
    name = spec.get("name") if isinstance(spec.get("name"), str) else "response"
    function: dict[str, Any] = {"name": name, "parameters": schema}
    if isinstance(spec.get("description"), str):
        function["description"] = spec["description"]
    plan.tools = [{"type": "function", "function": function}]
    plan.bind["tool_choice"] = name
    plan.schema_tool = name


# ----------------------------------------------------------------- answers out


def completion_id() -> str:
    """A new ``chatcmpl-...`` id."""
    return f"chatcmpl-{uuid.uuid4().hex}"


_LENGTH = frozenset({"length", "max_tokens", "max_tokens_reached", "model_length"})
_FILTERED = frozenset({"content_filter", "safety", "recitation", "blocklist", "prohibited_content"})


def finish_reason(metadata: Mapping[str, Any], *, tool_calls: bool) -> FinishReason:
    """OpenAI's ``finish_reason`` from a vendor's own (``MAX_TOKENS``, ``COMPLETE``...)."""
    if tool_calls:
        return "tool_calls"
    raw = metadata.get("finish_reason") or metadata.get("stop_reason") or ""
    reason = str(raw).lower()
    if reason in _LENGTH:
        return "length"
    if reason in _FILTERED:
        return "content_filter"
    return "stop"


def usage_of(message: BaseMessage | None) -> tuple[int, int]:
    """Input and output tokens an answer reports (0, 0 when it says nothing)."""
    usage = getattr(message, "usage_metadata", None) or {}
    return int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))


def completion(message: AIMessage, model: str, schema_tool: str | None) -> ChatCompletion:
    """The ``ChatCompletion`` for one answer.

    Args:
        message: the router's answer.
        model: the model named in the answer (the vendor's, else the request's).
        schema_tool: see :attr:`ChatPlan.schema_tool`.
    """
    content: str | None = message.text or None
    calls = list(message.tool_calls)
    if schema_tool is not None and calls:
        content = json.dumps(calls[0]["args"])
        calls = []
    tool_calls = [
        ChatCompletionMessageFunctionToolCall(
            id=call.get("id") or f"call_{uuid.uuid4().hex[:24]}",
            type="function",
            function=Function(name=call["name"], arguments=json.dumps(call["args"])),
        )
        for call in calls
    ]
    prompt, output = usage_of(message)
    return ChatCompletion(
        id=completion_id(),
        object="chat.completion",
        created=int(time.time()),
        model=model,
        choices=[
            Choice(
                index=0,
                message=ChatCompletionMessage(
                    role="assistant",
                    content=content if content is not None or tool_calls else "",
                    tool_calls=tool_calls or None,
                ),
                finish_reason=finish_reason(message.response_metadata, tool_calls=bool(tool_calls)),
                logprobs=None,
            )
        ],
        usage=CompletionUsage(
            prompt_tokens=prompt, completion_tokens=output, total_tokens=prompt + output
        ),
    )


def embedding_inputs(request: EmbeddingRequest) -> list[str]:
    """The texts to embed.

    Raises:
        WireError: 400 for token arrays (the router embeds text) or empty input.
    """
    value = request.input
    if isinstance(value, str):
        return [value]
    if not value:
        msg = "input: expected at least one text"
        raise _bad(msg, "input")
    if not all(isinstance(v, str) for v in value):
        msg = "input: token arrays are not supported; send text"
        raise _bad(msg, "input")
    return [str(v) for v in value]


def _base64(vector: Sequence[float]) -> str:
    """A vector as OpenAI's ``base64`` encoding: little-endian float32."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def embedding_response(
    vectors: Sequence[Sequence[float]], texts: Sequence[str], model: str, encoding: str
) -> CreateEmbeddingResponse:
    """The ``CreateEmbeddingResponse`` for ``vectors`` (one per text, in order).

    Usage is estimated (a character is a quarter token): LangChain's embeddings
    interface reports none.
    """
    data = [
        # model_construct: a base64 vector is a string where the type says floats.
        Embedding.model_construct(
            embedding=_base64(v) if encoding == "base64" else [float(x) for x in v],  # type: ignore[arg-type]
            index=i,
            object="embedding",
        )
        for i, v in enumerate(vectors)
    ]
    tokens = sum(math.ceil(len(t) / 4) for t in texts)
    return CreateEmbeddingResponse.model_construct(
        data=data,
        model=model,
        object="list",
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )
