"""The OpenAI chat-completions wire, as spoken by OpenAI and (with extras) Groq."""

from __future__ import annotations

import json
import math
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
from ._quota import Refusal, Usage, go_duration
from ._types import RetireStyle, SimKey, SimModel, ToolCall, Vendor
from ._wire import HttpAnswer, StreamEvent, Wire, gone, sse

_LIMIT_WORDS = {
    "rpm": ("requests per minute (RPM)", "requests"),
    "rpd": ("requests per day (RPD)", "requests"),
    "tpm": ("tokens per minute (TPM)", "tokens"),
    "tpd": ("tokens per day (TPD)", "tokens"),
}
_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}


def _bearer(headers: Mapping[str, str]) -> str:
    value = headers.get("authorization", "")
    return value[7:].strip() if value.lower().startswith("bearer ") else ""


def _parse_tool_calls(raw: Any) -> tuple[ToolCall, ...]:
    calls: list[ToolCall] = []
    for item in raw or []:
        function = item.get("function") or {}
        try:
            args = json.loads(function.get("arguments") or "{}")
        except json.JSONDecodeError as exc:
            msg = f"tool call arguments are not JSON: {exc}"
            raise BadRequest(msg) from exc
        calls.append(ToolCall(str(function.get("name", "")), args or {}, item.get("id")))
    return tuple(calls)


class OpenAIWire(Wire):
    """The chat-completions wire of OpenAI (``/v1/...``) and Groq (``/openai/v1/...``).

    Differences kept: Groq's requests headers are per day and its tokens headers
    per minute (OpenAI: both per minute); Groq puts stream usage in ``x_groq``.
    """

    def __init__(self, vendor: Vendor) -> None:
        self.vendor = vendor

    def api_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str:
        return _bearer(headers)

    def parse(self, body: Mapping[str, Any], path_model: str, stream: bool) -> ParsedRequest:
        raw_messages = body.get("messages")
        if not isinstance(raw_messages, list) or not raw_messages:
            msg = "'messages' must be a non-empty array"
            raise BadRequest(msg)
        names_by_id: dict[str, str] = {}
        messages: list[Message] = []
        for raw in raw_messages:
            if not isinstance(raw, Mapping):
                msg = "each message must be an object"
                raise BadRequest(msg)
            role = raw.get("role")
            text = text_of(raw.get("content"))
            if role in ("system", "developer"):
                messages.append(Message("system", text))
            elif role == "user":
                messages.append(Message("user", text))
            elif role == "assistant":
                calls = _parse_tool_calls(raw.get("tool_calls"))
                names_by_id.update({c.id: c.name for c in calls if c.id})
                messages.append(Message("assistant", text, calls))
            elif role in ("tool", "function"):
                name = raw.get("name") or names_by_id.get(str(raw.get("tool_call_id")))
                messages.append(Message("tool", text, tool_name=name))
            else:
                msg = f"unknown message role {role!r}"
                raise BadRequest(msg)
        tools = tuple(
            ToolSpec(
                str(t["function"].get("name", "")),
                str(t["function"].get("description") or ""),
                t["function"].get("parameters") or {},
            )
            for t in body.get("tools") or []
            if isinstance(t, Mapping) and isinstance(t.get("function"), Mapping)
        )
        choice = body.get("tool_choice", "auto")
        if isinstance(choice, Mapping):
            choice = str((choice.get("function") or {}).get("name", "required"))
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        options = body.get("stream_options") or {}
        return ParsedRequest(
            model=str(body.get("model", "")),
            messages=tuple(messages),
            tools=tools,
            tool_choice=str(choice or "auto"),
            max_tokens=int(max_tokens) if max_tokens is not None else None,
            stream=bool(body.get("stream", False)),
            json_mode=_json_requested(body.get("response_format")),
            include_usage=bool(options.get("include_usage", False)),
        )

    def _usage(self, completion: Completion) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": completion.input_tokens,
            "completion_tokens": completion.output_tokens,
            "total_tokens": completion.total_tokens,
        }
        if self.vendor == "groq":
            usage.update(
                queue_time=0.01,
                prompt_time=0.001,
                completion_time=0.01,
                total_time=0.011,
            )
        return usage

    def _calls(self, completion: Completion, rid: str) -> list[dict[str, Any]]:
        return [
            {
                "id": call_id("call_", call, i, rid),
                "type": "function",
                "function": {
                    "name": call.name,
                    "arguments": json.dumps(dict(call.args)),
                },
            }
            for i, call in enumerate(completion.tool_calls)
        ]

    def _envelope(self, request: ParsedRequest, rid: str, now: float, kind: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{rid}",
            "object": kind,
            "created": int(now),
            "model": request.model,
            "system_fingerprint": "fp_simulator",
        }

    def answer(
        self, request: ParsedRequest, completion: Completion, rid: str, now: float
    ) -> HttpAnswer:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": completion.text or None,
        }
        if completion.tool_calls:
            message["tool_calls"] = self._calls(completion, rid)
        body = self._envelope(request, rid, now, "chat.completion")
        body["choices"] = [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _FINISH[completion.finish],
            }
        ]
        body["usage"] = self._usage(completion)
        if self.vendor == "groq":
            body["x_groq"] = {"id": f"req_{rid}"}
        return HttpAnswer(200, body)

    def stream(
        self, request: ParsedRequest, completion: Completion, rid: str, now: float
    ) -> list[StreamEvent]:
        base = self._envelope(request, rid, now, "chat.completion.chunk")
        # With include_usage every chunk carries "usage": null but the extra last one.
        usage_null = {"usage": None} if request.include_usage else {}

        def chunk(
            delta: dict[str, Any],
            finish: str | None = None,
            extra: dict[str, Any] | None = None,
        ) -> bytes:
            choice = {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": finish,
            }
            return sse({**base, "choices": [choice], **usage_null, **(extra or {})})

        first_extra: dict[str, Any] = {}
        if self.vendor == "groq":
            first_extra["x_groq"] = {"id": f"req_{rid}"}
        events = [StreamEvent(chunk({"role": "assistant", "content": ""}, None, first_extra))]
        events += [
            StreamEvent(chunk({"content": piece}), content=True)
            for piece in split_words(completion.text)
        ]
        for index, call in enumerate(self._calls(completion, rid)):
            arguments = call["function"]["arguments"]
            half = len(arguments) // 2
            head = {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            events.append(StreamEvent(chunk({"tool_calls": [head]}), content=True))
            for piece in (arguments[:half], arguments[half:]):
                tail = {"index": index, "function": {"arguments": piece}}
                events.append(StreamEvent(chunk({"tool_calls": [tail]}), content=True))
        last_extra: dict[str, Any] = {}
        if self.vendor == "groq":
            last_extra["x_groq"] = {
                "id": f"req_{rid}",
                "usage": self._usage(completion),
            }
        events.append(StreamEvent(chunk({}, _FINISH[completion.finish], last_extra)))
        if request.include_usage:
            events.append(
                StreamEvent(sse({**base, "choices": [], "usage": self._usage(completion)}))
            )
        events.append(StreamEvent(sse("[DONE]")))
        return events

    def success_headers(self, key: SimKey, usage: Usage) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.vendor == "groq":
            # Groq: requests per day, tokens per minute.
            requests = (key.rpd, usage.day_requests, usage.day_reset)
        else:
            requests = (key.rpm, usage.minute_requests, usage.minute_requests_reset)
        tokens = (key.tpm, usage.minute_tokens, usage.minute_tokens_reset)
        for name, (limit, used, reset) in (("requests", requests), ("tokens", tokens)):
            if limit is None:
                continue
            headers[f"x-ratelimit-limit-{name}"] = str(limit)
            headers[f"x-ratelimit-remaining-{name}"] = str(max(0, limit - used))
            headers[f"x-ratelimit-reset-{name}"] = go_duration(reset)
        return headers

    def rate_limited(self, key: SimKey, model: str, refusal: Refusal, usage: Usage) -> HttpAnswer:
        words, kind = _LIMIT_WORDS[refusal.limit_name]
        wait = go_duration(refusal.retry_after)
        if self.vendor == "groq":
            where = f"model `{model}` in organization `org_simulator` service tier `on_demand`"
            tail = (
                "Need more tokens? Upgrade to Dev Tier today at "
                "https://console.groq.com/settings/billing"
            )
        else:
            where = f"model `{model}` in organization org-simulator"
            tail = "Visit https://platform.openai.com/account/rate-limits to learn more."
        message = (
            f"Rate limit reached for {where} on {words}: Limit {refusal.limit}, "
            f"Used {refusal.used}, Requested {refusal.requested}. "
            f"Please try again in {wait}. {tail}"
        )
        error: dict[str, Any] = {
            "message": message,
            "type": kind,
            "code": "rate_limit_exceeded",
        }
        if self.vendor == "openai":
            error["param"] = None
        headers = self.success_headers(key, usage)
        headers["retry-after"] = str(max(1, math.ceil(refusal.retry_after)))
        return HttpAnswer(429, {"error": error}, headers)

    def unauthorized(self, alias: str) -> HttpAnswer:
        if self.vendor == "groq":
            error: dict[str, Any] = {
                "message": "Invalid API Key",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }
        else:
            error = {
                "message": f"Incorrect API key provided: {alias}. You can find your "
                "API key at https://platform.openai.com/account/api-keys.",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        return HttpAnswer(401, {"error": error})

    def server_error(self, status: int) -> HttpAnswer:
        if status == 500:
            message = "The server had an error while processing your request. Sorry about that!"
        else:
            message = "The server is overloaded or not ready yet."
        kind = "internal_server_error" if self.vendor == "groq" else "server_error"
        return HttpAnswer(
            status,
            {"error": {"message": message, "type": kind, "param": None, "code": None}},
        )

    def bad_request(self, message: str) -> HttpAnswer:
        return HttpAnswer(
            400,
            {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            },
        )

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
        if style == "decommissioned":
            message = (
                f"The model `{model}` has been decommissioned and is no longer supported. "
                "Please refer to https://console.groq.com/docs/deprecations for a "
                "recommendation on which model to use instead."
            )
            status, code = 400, "model_decommissioned"
        else:
            message = f"The model `{model}` does not exist or you do not have access to it."
            status, code = 404, "model_not_found"
        error: dict[str, Any] = {"message": message, "type": "invalid_request_error"}
        if self.vendor == "openai":
            error["param"] = None  # OpenAI sends the key with null; Groq leaves it out
        error["code"] = code
        return HttpAnswer(status, {"error": error})

    def _model_object(self, model: SimModel) -> dict[str, Any]:
        if self.vendor == "groq":
            owner = model.owned_by or (model.id.split("/")[0] if "/" in model.id else "Groq")
        else:
            owner = model.owned_by or "system"
        body: dict[str, Any] = {
            "id": model.id,
            "object": "model",
            "created": model.created,
            "owned_by": owner,
        }
        if self.vendor == "groq":
            # Groq's extra fields, as its /openai/v1/models answers them.
            body.update(
                active=True,
                context_window=model.context_window,
                public_apps=None,
                max_completion_tokens=model.max_output_tokens,
            )
        return body

    def model_list(self, models: Sequence[SimModel], query: Mapping[str, str]) -> HttpAnswer:
        # Neither vendor pages this list.
        return HttpAnswer(200, {"object": "list", "data": [self._model_object(m) for m in models]})

    def model_info(self, model: SimModel) -> HttpAnswer:
        return HttpAnswer(200, self._model_object(model))


def _json_requested(response_format: object) -> bool:
    """Whether ``response_format`` asks for JSON (an object or a schema)."""
    return isinstance(response_format, dict) and response_format.get("type") in (
        "json_object",
        "json_schema",
    )
