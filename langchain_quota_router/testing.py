"""Fakes for testing code that uses the router, without keys or a network.

``FakeVendorChatModel`` behaves like a vendor chat model where routing cares: it
reports ``usage_metadata`` the way vendors do, binds tools, streams with usage on
the last chunk, and raises whatever errors you script (real vendor exception types
included), counting every call that reached it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import PrivateAttr

from langchain_quota_router.quota.clock import FakeClock

__all__ = ["FakeClock", "FakeVendorChatModel"]


class FakeVendorChatModel(BaseChatModel):
    """A scripted chat model that reports usage like a vendor does.

    Each call takes the next item of ``script`` (cycling when it runs out): a string
    is the answer, a dict ``{"tool_calls": [{"name": ..., "args": {...}}]}`` answers
    with tool calls, and an exception is raised instead of answering. With no
    script it echoes the last message.
    """

    model: str = "fake-model"
    """The model name it reports."""

    provider: str = "fake"
    """The provider it reports."""

    script: list[Any] = []
    """Answers, tool calls or exceptions, one per call."""

    chunk_words: int = 1
    """Words per stream chunk."""

    fail_after_chunks: int | None = None
    """When set, a stream raises ``ConnectionError`` after this many chunks."""

    reported_cost: float | None = None
    """When set, every answer reports this cost (USD) as OpenRouter does, in
    ``response_metadata["token_usage"]["cost"]`` (a stream: on its last chunk)."""

    cached_tokens: int = 0
    """Prompt tokens each answer reports as read from the vendor's prompt cache
    (``usage_metadata["input_token_details"]["cache_read"]``)."""

    _calls: int = PrivateAttr(default=0)
    _kwargs_seen: list[dict[str, Any]] = PrivateAttr(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def calls(self) -> int:
        """How many calls reached this model."""
        return self._calls

    @property
    def kwargs_seen(self) -> list[dict[str, Any]]:
        """The keyword arguments of every call, in order."""
        return self._kwargs_seen

    @property
    def _llm_type(self) -> str:
        return "fake-vendor"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "script": [repr(s) for s in self.script]}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return LangSmithParams(
            ls_provider=self.provider,
            ls_model_name=kwargs.get("model", self.model),
            ls_model_type="chat",
        )

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools in OpenAI format, as most vendors take them."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return super().bind(tools=formatted, **kwargs)

    def _next(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        with self._lock:
            index = self._calls
            self._calls += 1
            self._kwargs_seen.append(dict(kwargs))
        item: Any = self.script[index % len(self.script)] if self.script else None
        if isinstance(item, BaseException):
            raise item
        input_tokens = count_tokens_approximately(messages)
        if isinstance(item, dict):
            calls = [
                {
                    "name": c["name"],
                    "args": c.get("args", {}),
                    "id": f"call_{index}_{i}",
                }
                for i, c in enumerate(item.get("tool_calls", []))
            ]
            content = str(item.get("content", ""))
            message = AIMessage(content=content, tool_calls=calls)
        else:
            content = item if isinstance(item, str) else f"echo: {messages[-1].text}"
            message = AIMessage(content=content)
        output_tokens = max(1, count_tokens_approximately([message]) - 3)
        message.usage_metadata = {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        }
        if self.cached_tokens:
            message.usage_metadata["input_token_details"] = {
                "cache_read": min(self.cached_tokens, input_tokens)
            }
        message.response_metadata = {
            "model_name": self.model,
            "model_provider": self.provider,
        }
        if self.reported_cost is not None:
            message.response_metadata["token_usage"] = {
                "prompt_tokens": input_tokens,
                "completion_tokens": output_tokens,
                "cost": self.reported_cost,
            }
        return message

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._next(messages, kwargs))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        message = self._next(messages, kwargs)
        words = message.text.split(" ") if message.text else []
        pieces = [
            " ".join(words[i : i + self.chunk_words]) + " "
            for i in range(0, len(words), self.chunk_words)
        ]
        if pieces:
            pieces[-1] = pieces[-1].rstrip()
        for n, piece in enumerate(pieces):
            if self.fail_after_chunks is not None and n >= self.fail_after_chunks:
                msg = "connection dropped mid-stream"
                raise ConnectionError(msg)
            chunk = AIMessageChunk(content=piece)
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=ChatGenerationChunk(message=chunk))
            yield ChatGenerationChunk(message=chunk)
        last = AIMessageChunk(
            content="",
            tool_call_chunks=[
                tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=i)
                for i, c in enumerate(message.tool_calls)
            ],
            usage_metadata=message.usage_metadata,
            response_metadata=message.response_metadata,
            chunk_position="last",
        )
        yield ChatGenerationChunk(message=last)
