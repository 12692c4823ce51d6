"""Calling a route's vendor model as LangChain's ``invoke``/``stream`` would, and
passing its stream on.

The router calls each vendor model's own ``_generate``/``_stream`` inside the router's
run (calling ``invoke`` would open a second LLM run and count usage twice). So it owes
the vendor model what LangChain's public methods would have done for it: acquire its
``rate_limiter``, respect ``disable_streaming`` and convert to ``output_version="v1"``
content blocks. Those duties live here, once, for the four call paths.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from langchain_core.language_models import BaseChatModel
from langchain_core.language_models._utils import _update_message_content_to_blocks
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    message_chunk_to_message,
)
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGenerationChunk, ChatResult, Generation

if TYPE_CHECKING:
    from langchain_core.callbacks import (
        AsyncCallbackManagerForLLMRun,
        CallbackManagerForLLMRun,
    )

    from langchain_quota_router.chat.routing import Attempt
    from langchain_quota_router.route import Route

ROUTE_KEYS = ("route", "model_name", "model_provider")


# ------------------------------------------------------------ calling the vendor


def generate(attempt: Attempt, run_manager: CallbackManagerForLLMRun | None) -> ChatResult:
    """The vendor model's answer, as its ``invoke`` would have produced it."""
    model = attempt.route.model
    _acquire(model)
    extra = {"run_manager": run_manager} if attempt.route._accepts_run_manager else {}
    result = model._generate(attempt.messages, stop=attempt.stop, **extra, **attempt.kwargs)
    return _versioned(model, result)


async def agenerate(
    attempt: Attempt, run_manager: AsyncCallbackManagerForLLMRun | None
) -> ChatResult:
    """The vendor model's answer, as its ``ainvoke`` would have produced it."""
    model = attempt.route.model
    await _aacquire(model)
    extra = {"run_manager": run_manager} if attempt.route._accepts_run_manager else {}
    result = await model._agenerate(attempt.messages, stop=attempt.stop, **extra, **attempt.kwargs)
    return _versioned(model, result)


def stream(attempt: Attempt) -> Iterator[ChatGenerationChunk]:
    """The vendor model's stream, or its whole answer as one chunk when it does not
    stream (or ``disable_streaming`` says not to)."""
    model = attempt.route.model
    if not _streams(model) or model._streaming_disabled(**attempt.kwargs):
        result = generate(attempt, None)
        for generation in result.generations:
            yield ChatGenerationChunk(message=as_chunk(generation.message))
        return
    _acquire(model)
    for chunk in model._stream(attempt.messages, stop=attempt.stop, **attempt.kwargs):
        yield _versioned_chunk(model, chunk)


async def astream(attempt: Attempt) -> AsyncIterator[ChatGenerationChunk]:
    """The async twin of :func:`stream`."""
    model = attempt.route.model
    if not _astreams(model) or model._streaming_disabled(**attempt.kwargs):
        result = await agenerate(attempt, None)
        for generation in result.generations:
            yield ChatGenerationChunk(message=as_chunk(generation.message))
        return
    await _aacquire(model)
    async for chunk in model._astream(attempt.messages, stop=attempt.stop, **attempt.kwargs):
        yield _versioned_chunk(model, chunk)


def _acquire(model: BaseChatModel) -> None:
    if model.rate_limiter is not None:
        model.rate_limiter.acquire(blocking=True)


async def _aacquire(model: BaseChatModel) -> None:
    if model.rate_limiter is not None:
        await model.rate_limiter.aacquire(blocking=True)


def _versioned(model: BaseChatModel, result: ChatResult) -> ChatResult:
    if model.output_version == "v1":
        for generation in result.generations:
            generation.message = _update_message_content_to_blocks(generation.message, "v1")
    return result


def _versioned_chunk(model: BaseChatModel, chunk: ChatGenerationChunk) -> ChatGenerationChunk:
    if model.output_version == "v1":
        chunk.message = _update_message_content_to_blocks(chunk.message, "v1")
    return chunk


def _streams(model: BaseChatModel) -> bool:
    return type(model)._stream is not BaseChatModel._stream


def _astreams(model: BaseChatModel) -> bool:
    return _streams(model) or type(model)._astream is not BaseChatModel._astream


# ------------------------------------------------------------ passing streams on


def as_chunk(message: BaseMessage) -> AIMessageChunk:
    """An answer as one stream chunk (for cache hits and models that cannot stream)."""
    tool_calls = getattr(message, "tool_calls", None) or []
    return AIMessageChunk(
        content=message.content,
        additional_kwargs=dict(message.additional_kwargs),
        response_metadata=dict(message.response_metadata),
        tool_call_chunks=[
            tool_call_chunk(
                name=call["name"],
                args=json.dumps(call["args"]),
                id=call.get("id"),
                index=i,
            )
            for i, call in enumerate(tool_calls)
        ],
        usage_metadata=getattr(message, "usage_metadata", None),
        id=message.id,
        chunk_position="last",
    )


#: Keys a text block may carry besides its text without holding anything else.
_TEXT_BLOCK_KEYS = frozenset({"type", "text", "index", "id", "annotations", "extras"})


def as_text(message: BaseMessage) -> None:
    """Make ``message.content`` a string when it holds only text blocks (Gemini's
    ``[{"type": "text", "text": ...}]``); a message holding anything else (a tool
    call block, an image, reasoning) keeps its blocks."""
    content = message.content
    if isinstance(content, str):
        return
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
            continue
        if not isinstance(block, dict) or block.get("type") != "text":
            return
        if not _TEXT_BLOCK_KEYS.issuperset(block) or not isinstance(block.get("text"), str):
            return
        parts.append(block["text"])
    message.content = "".join(parts)


def shaped(
    attempt: Attempt, chunks: Iterable[ChatGenerationChunk]
) -> Iterator[ChatGenerationChunk]:
    """Stream chunks as the router's ``content`` setting wants them."""
    if not attempt.text_content:
        yield from chunks
        return
    for chunk in chunks:
        as_text(chunk.message)
        yield chunk


def shaped_message(attempt: Attempt, message: AIMessage | None) -> AIMessage | None:
    """A stream's merged answer as the router's ``content`` setting wants it."""
    if message is not None and attempt.text_content:
        as_text(message)
    return message


def replay(found: Sequence[Generation]) -> Iterator[ChatGenerationChunk]:
    """A cached answer, as the stream that would have produced it."""
    for generation in found:
        message = getattr(generation, "message", None)
        if isinstance(message, BaseMessage):
            yield ChatGenerationChunk(message=as_chunk(message))
        else:
            yield ChatGenerationChunk(message=AIMessageChunk(content=generation.text))


def tag_message(message: BaseMessage, route: Route, *, first: bool = True) -> None:
    """Say in ``response_metadata`` which route answered, with which model.

    Stream chunks are merged by concatenating strings, so only the first chunk of a
    stream carries these keys (``first=False`` removes them from the others).
    """
    meta = message.response_metadata
    if not first:
        for key in ROUTE_KEYS:
            meta.pop(key, None)
        return
    meta["route"] = route.name
    meta.setdefault("model_name", route.model_name)
    meta["model_provider"] = route.provider


class StreamRelay:
    """Passes a route's stream on, holding back chunks that carry nothing yet.

    Some vendors open a stream with an empty chunk (the assistant role) before the
    connection can still drop. Until a chunk with text or a tool call has gone out,
    the caller has seen nothing, so the router may still fall back.
    """

    def __init__(self, route: Route) -> None:
        self.route = route
        self.received: list[ChatGenerationChunk] = []
        self._held: list[ChatGenerationChunk] = []
        self.shown = False

    def take(self, chunk: ChatGenerationChunk) -> list[ChatGenerationChunk]:
        """The chunks to pass on now that ``chunk`` arrived (maybe none yet)."""
        self.received.append(chunk)
        self._held.append(chunk)
        message = chunk.message
        if self.shown or message.content or getattr(message, "tool_call_chunks", None):
            return self.rest()
        return []

    def rest(self) -> list[ChatGenerationChunk]:
        """Everything held back, tagged with the route, to pass on now."""
        out, self._held = self._held, []
        for chunk in out:
            _tag_chunk(chunk, self.route, first=not self.shown)
            self.shown = True
        return out

    def merged(self) -> AIMessage | None:
        """Everything the route sent, as one message."""
        if not self.received:
            return None
        total = self.received[0]
        for chunk in self.received[1:]:
            total = total + chunk
        message = message_chunk_to_message(total.message)
        return message if isinstance(message, AIMessage) else None


def _tag_chunk(chunk: ChatGenerationChunk, route: Route, *, first: bool) -> None:
    """Tag a stream chunk with its route; later chunks lose those keys everywhere.

    LangChain folds a chunk's ``generation_info`` into its ``response_metadata``
    after ``_stream`` yields it, and ChatOpenAI reports ``model_name`` there, so the
    keys must go from both places or the merged name comes out doubled.
    """
    tag_message(chunk.message, route, first=first)
    if not first and chunk.generation_info:
        for key in ROUTE_KEYS:
            chunk.generation_info.pop(key, None)


__all__ = [
    "StreamRelay",
    "agenerate",
    "as_chunk",
    "astream",
    "generate",
    "replay",
    "stream",
    "tag_message",
]
