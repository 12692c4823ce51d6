"""Server-sent events in OpenAI's chunk format, from the router's stream.

:class:`ChunkWriter` turns the router's ``AIMessageChunk`` objects into
``ChatCompletionChunk`` events, as OpenAI sends them:

- the first event is the role (``{"role": "assistant", "content": ""}``);
- content and tool-call deltas follow; each tool call has an integer ``index``
  (vendors that give none, Gemini, are numbered here), and its ``id``, ``type``
  and name travel only on its first piece, its arguments in the pieces after;
- a last delta carries the ``finish_reason``;
- with ``stream_options.include_usage``, a chunk with empty ``choices`` and the usage;
- then ``data: [DONE]``. Lines end in ``\\n`` only.

An error after the first event cannot change the status code any more: the stream
ends with ``data: {"error": {...}}`` and no ``[DONE]``. The ``openai`` SDK raises an
``APIError`` on an event whose data holds ``error`` (``openai._streaming.Stream``),
so a client never takes half an answer for a whole one.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

from langchain_core.messages import AIMessageChunk
from openai.types.chat import ChatCompletionChunk
from openai.types.chat.chat_completion_chunk import (
    Choice,
    ChoiceDelta,
    ChoiceDeltaToolCall,
    ChoiceDeltaToolCallFunction,
)
from openai.types.completion_usage import CompletionUsage

from langchain_quota_router.proxy.wire import FinishReason, completion_id, finish_reason

__all__ = ["DONE", "ChunkWriter", "error_event", "event"]

#: The event that ends a stream that went well.
DONE = b"data: [DONE]\n\n"


def event(data: str) -> bytes:
    """One server-sent event holding ``data`` (one line of JSON)."""
    return f"data: {data}\n\n".encode()


def error_event(body: Mapping[str, Any]) -> bytes:
    """The event that ends a stream that failed: OpenAI's error object, which the
    ``openai`` SDK raises as an ``APIError``."""
    return event(json.dumps(body, separators=(",", ":")))


class ChunkWriter:
    """OpenAI chunk events for one streamed answer.

    Args:
        model: the model named in every chunk (the request's: the vendor's is known
            only at the end).
        schema_tool: see :attr:`~langchain_quota_router.proxy.wire.ChatPlan.schema_tool`:
            that tool's arguments are streamed as content.
    """

    def __init__(self, model: str, schema_tool: str | None = None) -> None:
        self.id = completion_id()
        self.created = int(time.time())
        self.model = model
        self.schema_tool = schema_tool
        self.input_tokens = 0
        self.output_tokens = 0
        self._slots: dict[tuple[str, Any], int] = {}
        self._last_slot: int | None = None
        self._metadata: dict[str, Any] = {}

    def _chunk(
        self,
        delta: ChoiceDelta | None,
        reason: FinishReason | None = None,
        usage: CompletionUsage | None = None,
    ) -> bytes:
        choices = [] if delta is None else [Choice(index=0, delta=delta, finish_reason=reason)]
        chunk = ChatCompletionChunk(
            id=self.id,
            object="chat.completion.chunk",
            created=self.created,
            model=self.model,
            choices=choices,
        )
        if usage is not None:
            chunk.usage = usage
        return event(chunk.model_dump_json(exclude_unset=True))

    def start(self) -> bytes:
        """The first event: the assistant's role."""
        return self._chunk(ChoiceDelta(role="assistant", content=""))

    def take(self, chunk: AIMessageChunk) -> list[bytes]:
        """The events for one of the router's chunks (none for an empty one)."""
        usage = chunk.usage_metadata
        if usage:
            self.input_tokens += int(usage.get("input_tokens", 0))
            self.output_tokens += int(usage.get("output_tokens", 0))
        if chunk.response_metadata:
            self._metadata.update(chunk.response_metadata)
        out: list[bytes] = []
        text = chunk.text
        if text:
            out.append(self._chunk(ChoiceDelta(content=text)))
        calls: list[ChoiceDeltaToolCall] = []
        for piece in chunk.tool_call_chunks:
            if self.schema_tool is not None:
                if piece.get("args"):
                    out.append(self._chunk(ChoiceDelta(content=piece["args"])))
                continue
            calls.append(self._tool_piece(piece))
        if calls:
            out.append(self._chunk(ChoiceDelta(tool_calls=calls)))
        return out

    def _tool_piece(self, piece: Mapping[str, Any]) -> ChoiceDeltaToolCall:
        index, call_id, name = piece.get("index"), piece.get("id"), piece.get("name")
        key: tuple[str, Any] | None = None
        if index is not None:
            key = ("index", index)
        elif call_id:
            key = ("id", call_id)
        slot = self._slots.get(key) if key is not None else self._last_slot
        if slot is None or (key is None and name):
            # A call not seen before: the first piece says what it is.
            slot = len(self._slots)
            self._slots[key if key is not None else ("n", slot)] = slot
            self._last_slot = slot
            return ChoiceDeltaToolCall(
                index=slot,
                id=call_id or f"call_{uuid.uuid4().hex[:24]}",
                type="function",
                function=ChoiceDeltaToolCallFunction(
                    name=name or "", arguments=piece.get("args") or ""
                ),
            )
        self._last_slot = slot
        return ChoiceDeltaToolCall(
            index=slot, function=ChoiceDeltaToolCallFunction(arguments=piece.get("args") or "")
        )

    def finish(self, include_usage: bool) -> list[bytes]:
        """The last events: the finish reason, the usage if asked for, ``[DONE]``."""
        reason = finish_reason(self._metadata, tool_calls=bool(self._slots))
        out = [self._chunk(ChoiceDelta(), reason)]
        if include_usage:
            usage = CompletionUsage(
                prompt_tokens=self.input_tokens,
                completion_tokens=self.output_tokens,
                total_tokens=self.input_tokens + self.output_tokens,
            )
            out.append(self._chunk(None, usage=usage))
        out.append(DONE)
        return out
