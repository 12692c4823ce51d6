"""The Cohere v2 chat wire: ``POST /v2/chat``, streamed or not."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ._engine import (
    BadRequest,
    Completion,
    Message,
    ParsedRequest,
    ToolSpec,
    call_id,
    split_words,
    text_of,
)
from ._quota import Refusal, Usage
from ._types import RetireStyle, SimKey, SimModel, ToolCall, Vendor
from ._wire import HttpAnswer, StreamEvent, Wire, gone, page, sse

_FINISH = {"stop": "COMPLETE", "length": "MAX_TOKENS", "tool_calls": "TOOL_CALL"}
_LIMIT_UNITS = {
    "rpm": "API calls / minute",
    "rpd": "API calls / day",
    "tpm": "tokens / minute",
    "tpd": "tokens / day",
}


def _parse_calls(raw: Any) -> tuple[ToolCall, ...]:
    calls: list[ToolCall] = []
    for item in raw or []:
        function = item.get("function") or {}
        arguments = function.get("arguments") or "{}"
        try:
            args = json.loads(arguments) if isinstance(arguments, str) else arguments
        except json.JSONDecodeError as exc:
            msg = f"invalid tool call arguments: {exc}"
            raise BadRequest(msg) from exc
        calls.append(ToolCall(str(function.get("name", "")), args or {}, item.get("id")))
    return tuple(calls)


class CohereWire(Wire):
    """``POST /v2/chat``: events ``message-start`` ... ``message-end`` when streaming.

    Usage goes out as both ``usage.billed_units`` and ``usage.tokens`` with the
    same counts (LangChain reads ``tokens`` from answers, ``billed_units`` from
    streams).
    """

    vendor: Vendor = "cohere"

    def api_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str:
        value = headers.get("authorization", "")
        return value[7:].strip() if value.lower().startswith("bearer ") else ""

    def parse(self, body: Mapping[str, Any], path_model: str, stream: bool) -> ParsedRequest:
        raw_messages = body.get("messages")
        if not isinstance(raw_messages, list) or not raw_messages:
            msg = "invalid request: messages must not be empty"
            raise BadRequest(msg)
        if not body.get("model"):
            msg = "invalid request: model must be specified"
            raise BadRequest(msg)
        names_by_id: dict[str, str] = {}
        messages: list[Message] = []
        for raw in raw_messages:
            role = raw.get("role") if isinstance(raw, Mapping) else None
            if not isinstance(raw, Mapping) or role not in (
                "system",
                "user",
                "assistant",
                "tool",
            ):
                msg = f"invalid request: unknown message role {role!r}"
                raise BadRequest(msg)
            text = text_of(raw.get("content"))
            if role == "assistant":
                calls = _parse_calls(raw.get("tool_calls"))
                names_by_id.update({c.id: c.name for c in calls if c.id})
                plan = raw.get("tool_plan") or ""
                messages.append(Message("assistant", text or plan, calls))
            elif role == "tool":
                name = names_by_id.get(str(raw.get("tool_call_id")))
                messages.append(Message("tool", text, tool_name=name))
            else:
                messages.append(Message(role, text))
        tools = tuple(
            ToolSpec(
                str(t["function"].get("name", "")),
                str(t["function"].get("description") or ""),
                t["function"].get("parameters") or {},
            )
            for t in body.get("tools") or []
            if isinstance(t, Mapping) and isinstance(t.get("function"), Mapping)
        )
        choice = str(body.get("tool_choice") or "AUTO").upper()
        max_tokens = body.get("max_tokens")
        return ParsedRequest(
            model=str(body["model"]),
            messages=tuple(messages),
            tools=tools,
            tool_choice={"NONE": "none", "REQUIRED": "required"}.get(choice, "auto"),
            max_tokens=int(max_tokens) if max_tokens is not None else None,
            stream=bool(body.get("stream", False)),
            json_mode=_json_requested(body.get("response_format")),
        )

    def _usage(self, completion: Completion) -> dict[str, Any]:
        counts = {
            "input_tokens": completion.input_tokens,
            "output_tokens": completion.output_tokens,
        }
        return {"billed_units": dict(counts), "tokens": dict(counts)}

    def _calls(self, completion: Completion, rid: str) -> list[dict[str, Any]]:
        return [
            {
                "id": call_id(f"{call.name}_", call, i, rid),
                "type": "function",
                "function": {
                    "name": call.name,
                    "arguments": json.dumps(dict(call.args)),
                },
            }
            for i, call in enumerate(completion.tool_calls)
        ]

    def _plan(self, completion: Completion) -> str:
        if completion.text:
            return completion.text
        names = ", ".join(c.name for c in completion.tool_calls)
        return f"I will call {names}."

    def answer(
        self, request: ParsedRequest, completion: Completion, rid: str, now: float
    ) -> HttpAnswer:
        message: dict[str, Any] = {"role": "assistant"}
        if completion.tool_calls:
            message["tool_plan"] = self._plan(completion)
            message["tool_calls"] = self._calls(completion, rid)
        else:
            message["content"] = [{"type": "text", "text": completion.text}]
        body = {
            "id": rid,
            "finish_reason": _FINISH[completion.finish],
            "message": message,
            "usage": self._usage(completion),
        }
        return HttpAnswer(200, body)

    def stream(
        self, request: ParsedRequest, completion: Completion, rid: str, now: float
    ) -> list[StreamEvent]:
        def event(kind: str, content: bool = False, **fields: Any) -> StreamEvent:
            return StreamEvent(sse({"type": kind, **fields}, event=kind), content)

        start = {
            "message": {
                "role": "assistant",
                "content": [],
                "tool_plan": "",
                "tool_calls": [],
                "citations": [],
            }
        }
        events = [event("message-start", id=rid, delta=start)]
        if completion.tool_calls:
            for word in split_words(self._plan(completion)):
                delta = {"message": {"tool_plan": word}}
                events.append(event("tool-plan-delta", True, delta=delta))
            for index, call in enumerate(self._calls(completion, rid)):
                head = {**call, "function": {**call["function"], "arguments": ""}}
                events.append(
                    event(
                        "tool-call-start",
                        True,
                        index=index,
                        delta={"message": {"tool_calls": head}},
                    )
                )
                arguments = call["function"]["arguments"]
                half = len(arguments) // 2
                for piece in (arguments[:half], arguments[half:]):
                    args_delta = {"message": {"tool_calls": {"function": {"arguments": piece}}}}
                    events.append(event("tool-call-delta", True, index=index, delta=args_delta))
                events.append(event("tool-call-end", index=index))
        else:
            content_start = {"message": {"content": {"type": "text", "text": ""}}}
            events.append(event("content-start", index=0, delta=content_start))
            for word in split_words(completion.text):
                text_delta = {"message": {"content": {"text": word}}}
                events.append(event("content-delta", True, index=0, delta=text_delta))
            events.append(event("content-end", index=0))
        end = {
            "finish_reason": _FINISH[completion.finish],
            "usage": self._usage(completion),
        }
        events.append(event("message-end", id=rid, delta=end))
        return events

    def rate_limited(self, key: SimKey, model: str, refusal: Refusal, usage: Usage) -> HttpAnswer:
        message = (
            f"You are using a Trial key, which is limited to {refusal.limit} "
            f"{_LIMIT_UNITS[refusal.limit_name]}. You can continue to use the Trial "
            "key for free or upgrade to a Production key with higher rate limits at "
            "'https://dashboard.cohere.com/api-keys'. Contact us on "
            "'https://discord.gg/XW44jPfYJu' or email us at support@cohere.com with "
            "any questions"
        )
        return HttpAnswer(429, {"message": message})

    def unauthorized(self, alias: str) -> HttpAnswer:
        return HttpAnswer(401, {"message": "invalid api token"})

    def server_error(self, status: int) -> HttpAnswer:
        if status == 500:
            message = "internal server error, this has been reported to our developers"
        else:
            message = "service unavailable: the model is overloaded, try again later"
        return HttpAnswer(status, {"message": message})

    def bad_request(self, message: str) -> HttpAnswer:
        return HttpAnswer(400, {"message": message})

    def model_unavailable(
        self,
        model: str,
        style: RetireStyle,
        successor: str | None,
        *,
        api_version: str = "v1beta",
        method: str = "generateContent",
    ) -> HttpAnswer:
        if style == "gone":
            return gone(model, successor)
        message = (
            f"model '{model}' not found, make sure the correct model ID was used and "
            "that you have access to the model."
        )
        return HttpAnswer(404, {"message": message})

    def _model_object(self, model: SimModel) -> dict[str, Any]:
        return {
            "name": model.id,
            "endpoints": ["chat"],
            "finetuned": False,
            "context_length": float(model.context_window),  # Cohere sends a number
            "tokenizer_url": None,
            "default_endpoints": [],
            "features": ["tools", "strict_tools", "json_mode", "json_schema"],
        }

    def model_list(self, models: Sequence[SimModel], query: Mapping[str, str]) -> HttpAnswer:
        endpoint = query.get("endpoint")
        if endpoint and endpoint != "chat":
            models = []  # the simulator's models are chat models only
        chosen, token = page(models, query.get("page_size"), query.get("page_token"), default=20)
        body: dict[str, Any] = {"models": [self._model_object(m) for m in chosen]}
        if token is not None:
            body["next_page_token"] = token
        return HttpAnswer(200, body)

    def model_info(self, model: SimModel) -> HttpAnswer:
        return HttpAnswer(200, self._model_object(model))


def _json_requested(response_format: object) -> bool:
    """Whether ``response_format`` asks for JSON (an object or a schema)."""
    return isinstance(response_format, dict) and response_format.get("type") in (
        "json_object",
        "json_schema",
    )
