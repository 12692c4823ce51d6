"""The Gemini Developer API wire: ``models/{model}:generateContent`` and streaming."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ._engine import (
    BadRequest,
    Completion,
    Message,
    ParsedRequest,
    Role,
    ToolSpec,
    count_tokens,
    split_words,
    text_of,
)
from ._quota import Refusal, Usage
from ._types import RetireStyle, SimKey, SimModel, ToolCall, Vendor
from ._wire import HttpAnswer, StreamEvent, Wire, gone, page, sse

_REQUESTS_METRIC = "generativelanguage.googleapis.com/generate_content_free_tier_requests"
_TOKENS_METRIC = "generativelanguage.googleapis.com/generate_content_free_tier_input_token_count"
_QUOTA = {
    "rpm": (_REQUESTS_METRIC, "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"),
    "rpd": (_REQUESTS_METRIC, "GenerateRequestsPerDayPerProjectPerModel-FreeTier"),
    "tpm": (_TOKENS_METRIC, "GenerateContentInputTokensPerModelPerMinute-FreeTier"),
    "tpd": (_TOKENS_METRIC, "GenerateContentInputTokensPerModelPerDay-FreeTier"),
}
# What an embedding 429 names instead. The request metric and quota ids are as
# Gemini's free tier answers; the token ones follow the same pattern (unseen).
_EMBED_REQUESTS_METRIC = "generativelanguage.googleapis.com/embed_content_free_tier_requests"
_EMBED_TOKENS_METRIC = "generativelanguage.googleapis.com/embed_content_free_tier_input_token_count"
EMBED_QUOTA = {
    "rpm": (
        _EMBED_REQUESTS_METRIC,
        "EmbedContentRequestsPerMinutePerUserPerProjectPerModel-FreeTier",
    ),
    "rpd": (_EMBED_REQUESTS_METRIC, "EmbedContentRequestsPerDayPerProjectPerModel-FreeTier"),
    "tpm": (_EMBED_TOKENS_METRIC, "EmbedContentInputTokensPerModelPerMinute-FreeTier"),
    "tpd": (_EMBED_TOKENS_METRIC, "EmbedContentInputTokensPerModelPerDay-FreeTier"),
}
_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}
# What ListModels says a chat model supports (streaming is not listed separately).
_METHODS = ["generateContent", "countTokens", "createCachedContent", "batchGenerateContent"]


def _status_body(code: int, status: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, **extra}}


class GeminiWire(Wire):
    """``POST /v1beta/models/{model}:generateContent`` and ``:streamGenerateContent``.

    Function calls go out without ids (as Gemini sends them) unless a scripted
    ``ToolCall`` has one; usage is ``usageMetadata``, cumulative on every chunk.
    """

    vendor: Vendor = "gemini"

    def __init__(self, quota: Mapping[str, tuple[str, str]] | None = None) -> None:
        # The metric and quota id a 429 names, per limit (embeddings have their own).
        self._quota = quota if quota is not None else _QUOTA

    def api_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str:
        return headers.get("x-goog-api-key") or query.get("key", "")

    def parse(self, body: Mapping[str, Any], path_model: str, stream: bool) -> ParsedRequest:
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            msg = "* GenerateContentRequest.contents: contents is not specified"
            raise BadRequest(msg)
        messages: list[Message] = []
        system = body.get("systemInstruction") or body.get("system_instruction")
        if isinstance(system, Mapping):
            messages.append(Message("system", text_of(system.get("parts"))))
        for content in contents:
            if not isinstance(content, Mapping):
                msg = "each content must be an object"
                raise BadRequest(msg)
            messages.extend(self._content(content))
        tools: list[ToolSpec] = []
        for tool in body.get("tools") or []:
            for decl in (tool or {}).get("functionDeclarations") or []:
                schema = decl.get("parametersJsonSchema") or decl.get("parameters") or {}
                tools.append(
                    ToolSpec(
                        str(decl.get("name", "")),
                        str(decl.get("description") or ""),
                        schema,
                    )
                )
        config = ((body.get("toolConfig") or {}).get("functionCallingConfig")) or {}
        mode = str(config.get("mode", "AUTO")).upper()
        allowed = config.get("allowedFunctionNames") or []
        choice = {"NONE": "none", "ANY": "required"}.get(mode, "auto")
        if choice == "required" and len(allowed) == 1:
            choice = str(allowed[0])
        generation = body.get("generationConfig") or {}
        max_tokens = generation.get("maxOutputTokens")
        return ParsedRequest(
            model=path_model,
            messages=tuple(messages),
            tools=tuple(tools),
            tool_choice=choice,
            max_tokens=int(max_tokens) if max_tokens is not None else None,
            stream=stream,
            json_mode=generation.get("responseMimeType") == "application/json",
        )

    def _content(self, content: Mapping[str, Any]) -> list[Message]:
        role: Role = "assistant" if content.get("role") == "model" else "user"
        texts: list[str] = []
        calls: list[ToolCall] = []
        results: list[Message] = []
        for part in content.get("parts") or []:
            if not isinstance(part, Mapping):
                continue
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part.get("functionCall"), Mapping):
                call = part["functionCall"]
                calls.append(ToolCall(str(call.get("name", "")), call.get("args") or {}))
            elif isinstance(part.get("functionResponse"), Mapping):
                response = part["functionResponse"]
                results.append(
                    Message(
                        "tool",
                        text_of(response.get("response")),
                        tool_name=response.get("name"),
                    )
                )
        messages: list[Message] = []
        if texts or calls or not results:
            messages.append(Message(role, "\n".join(texts), tuple(calls)))
        return messages + results

    def _parts(self, completion: Completion) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        for call in completion.tool_calls:
            function: dict[str, Any] = {"name": call.name, "args": dict(call.args)}
            if call.id is not None:
                function["id"] = call.id
            parts.append({"functionCall": function})
        return parts

    def _usage(self, input_tokens: int, output_tokens: int) -> dict[str, Any]:
        return {
            "promptTokenCount": input_tokens,
            "candidatesTokenCount": output_tokens,
            "totalTokenCount": input_tokens + output_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": input_tokens}],
        }

    def _body(
        self,
        request: ParsedRequest,
        rid: str,
        parts: list[dict[str, Any]],
        usage: dict[str, Any],
        finish: str | None,
    ) -> dict[str, Any]:
        candidate: dict[str, Any] = {
            "content": {"parts": parts, "role": "model"},
            "index": 0,
        }
        if finish is not None:
            candidate["finishReason"] = finish
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": request.model,
            "responseId": rid,
        }

    def answer(
        self, request: ParsedRequest, completion: Completion, rid: str, now: float
    ) -> HttpAnswer:
        parts = [{"text": completion.text}] if completion.text else []
        parts += self._parts(completion)
        usage = self._usage(completion.input_tokens, completion.output_tokens)
        body = self._body(request, rid, parts or [{"text": ""}], usage, _FINISH[completion.finish])
        return HttpAnswer(200, body)

    def stream(
        self, request: ParsedRequest, completion: Completion, rid: str, now: float
    ) -> list[StreamEvent]:
        pieces: list[list[dict[str, Any]]] = [
            [{"text": word}] for word in split_words(completion.text)
        ]
        if completion.tool_calls:
            pieces.append(self._parts(completion))
        if not pieces:
            pieces.append([{"text": ""}])
        events: list[StreamEvent] = []
        sent = ""
        for index, parts in enumerate(pieces):
            last = index == len(pieces) - 1
            sent += "".join(p.get("text", "") for p in parts)
            # Gemini reports usage so far on every chunk; LangChain subtracts.
            so_far = (
                completion.output_tokens
                if last
                else min(completion.output_tokens, count_tokens(sent))
            )
            usage = self._usage(completion.input_tokens, so_far)
            finish = _FINISH[completion.finish] if last else None
            events.append(
                StreamEvent(sse(self._body(request, rid, parts, usage, finish)), content=True)
            )
        return events

    def rate_limited(self, key: SimKey, model: str, refusal: Refusal, usage: Usage) -> HttpAnswer:
        metric, quota_id = self._quota[refusal.limit_name]
        seconds = max(1, math.ceil(refusal.retry_after))
        message = (
            "You exceeded your current quota, please check your plan and billing "
            "details. For more information on this error, head to: "
            "https://ai.google.dev/gemini-api/docs/rate-limits. To monitor your "
            "current usage, head to: https://ai.dev/rate-limit. \n"
            f"* Quota exceeded for metric: {metric}, limit: {refusal.limit}, "
            f"model: {model}\nPlease retry in {refusal.retry_after:.6f}s."
        )
        details = [
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [
                    {
                        "description": "Learn more about Gemini API quotas",
                        "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                    }
                ],
            },
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": metric,
                        "quotaId": quota_id,
                        "quotaDimensions": {"location": "global", "model": model},
                        "quotaValue": str(refusal.limit),
                    }
                ],
            },
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": f"{seconds}s",
            },
        ]
        return HttpAnswer(429, _status_body(429, "RESOURCE_EXHAUSTED", message, details=details))

    def unauthorized(self, alias: str) -> HttpAnswer:
        details = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        ]
        return HttpAnswer(
            401,
            _status_body(
                401,
                "UNAUTHENTICATED",
                "API key not valid. Please pass a valid API key.",
                details=details,
            ),
        )

    def server_error(self, status: int) -> HttpAnswer:
        if status == 500:
            body = _status_body(
                500,
                "INTERNAL",
                "An internal error has occurred. Please retry or report in "
                "https://developers.generativeai.google/guide/troubleshooting",
            )
        else:
            body = _status_body(
                status,
                "UNAVAILABLE",
                "The model is overloaded. Please try again later.",
            )
        return HttpAnswer(status, body)

    def bad_request(self, message: str) -> HttpAnswer:
        return HttpAnswer(400, _status_body(400, "INVALID_ARGUMENT", message))

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
            f"models/{model} is not found for API version {api_version}, or is not "
            f"supported for {method}. Call ListModels to see the list of available "
            "models and their supported methods."
        )
        return HttpAnswer(404, _status_body(404, "NOT_FOUND", message))

    def _model_object(self, model: SimModel) -> dict[str, Any]:
        return {
            "name": f"models/{model.id}",
            "version": "001",
            "displayName": model.display_name or model.id,
            "description": f"Simulated {model.id}",
            "inputTokenLimit": model.context_window,
            "outputTokenLimit": model.max_output_tokens,
            "supportedGenerationMethods": list(_METHODS),
            "temperature": 1,
            "topP": 0.95,
            "topK": 64,
            "maxTemperature": 2,
            "thinking": True,
        }

    def model_list(self, models: Sequence[SimModel], query: Mapping[str, str]) -> HttpAnswer:
        chosen, token = page(models, query.get("pageSize"), query.get("pageToken"), default=50)
        body: dict[str, Any] = {"models": [self._model_object(m) for m in chosen]}
        if token is not None:
            body["nextPageToken"] = token
        return HttpAnswer(200, body)

    def model_info(self, model: SimModel) -> HttpAnswer:
        return HttpAnswer(200, self._model_object(model))
