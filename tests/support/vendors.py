"""Fake vendors for the tests: answers that carry rate-limit headers, and calls held
at the vendor until the test lets them answer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from call_paths import ask
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from pydantic import PrivateAttr

from langchain_quota_router.testing import FakeVendorChatModel


def openai_headers(limit: int, remaining: int, reset: str = "20s") -> dict[str, str]:
    """OpenAI's request counter headers."""
    return {
        "x-ratelimit-limit-requests": str(limit),
        "x-ratelimit-remaining-requests": str(remaining),
        "x-ratelimit-reset-requests": reset,
    }


class Hold:
    """One vendor call held before it answers: :attr:`reached` is set when it gets
    to the vendor, and it answers once :meth:`release` is called."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self._released = threading.Event()

    async def wait_reached(self, timeout: float = 10.0) -> None:
        assert await asyncio.to_thread(self.reached.wait, timeout), "the call never got there"

    def release(self) -> None:
        self._released.set()

    def wait_released(self, timeout: float = 10.0) -> None:
        assert self._released.wait(timeout), "the held call was never released"


class HeaderFake(FakeVendorChatModel):
    """A fake vendor whose answers carry rate-limit headers, as ChatOpenAI's do with
    ``include_response_headers=True`` (the n-th answer the n-th of ``headers``, the
    last one over and over); :meth:`hold_next` holds the next call that arrives."""

    headers: list[dict[str, str]] = []
    _served: int = PrivateAttr(default=0)
    _holds: list[Hold] = PrivateAttr(default_factory=list)

    def hold_next(self) -> Hold:
        """Hold the next call that reaches this vendor until released."""
        hold = Hold()
        with self._lock:
            self._holds.append(hold)
        return hold

    def _wait_if_held(self) -> None:
        with self._lock:
            hold = self._holds.pop(0) if self._holds else None
        if hold is not None:
            hold.reached.set()
            hold.wait_released()

    def _headers(self) -> dict[str, str]:
        with self._lock:
            found = self.headers[min(self._served, len(self.headers) - 1)]
            self._served += 1
        return found

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self._wait_if_held()
        headers = self._headers()
        result = super()._generate(messages, stop, run_manager, **kwargs)
        result.generations[0].message.response_metadata["headers"] = headers
        return result

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        self._wait_if_held()
        headers = self._headers()
        for chunk in super()._stream(messages, stop, run_manager, **kwargs):
            if chunk.message.chunk_position == "last":
                chunk.message.response_metadata["headers"] = headers
            yield chunk


_THREADS = ThreadPoolExecutor(8, thread_name_prefix="held-call")


def start(llm: Any, how: str, prompt: str = "hello") -> Awaitable[AIMessage]:
    """Start one call by ``how`` without waiting for it: in a thread for the sync
    paths, as a task for the async ones. Await the result to see how it ended."""
    if how in ("invoke", "stream"):
        return asyncio.wrap_future(_THREADS.submit(asyncio.run, ask(llm, how, prompt)))
    return asyncio.ensure_future(ask(llm, how, prompt))
