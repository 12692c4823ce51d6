"""A client that goes away cancels the vendor call, and the reservation is settled."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from pydantic import PrivateAttr
from support.proxy import running_proxy

from langchain_quota_router import QuotaRoutedChatModel, Route
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.testing import FakeVendorChatModel


class SlowVendor(FakeVendorChatModel):
    """Sends ``before`` chunks, then waits on an event nobody sets: only a
    cancellation ends the call."""

    before: int = 1
    _started: threading.Event = PrivateAttr(default_factory=threading.Event)
    _cancelled: threading.Event = PrivateAttr(default_factory=threading.Event)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        self._started.set()
        try:
            for _ in range(self.before):
                yield ChatGenerationChunk(message=AIMessageChunk(content="word "))
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self._cancelled.set()
            raise

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self._started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self._cancelled.set()
            raise
        raise AssertionError  # pragma: no cover


def _tokens_used(router: QuotaRoutedChatModel) -> tuple[int, int]:
    rows = {row.limit.metric: row.used for row in router.usage()}
    return rows["requests"], rows["tokens"]


@pytest.mark.parametrize(("stream", "before"), [(True, 2), (True, 0), (False, 0)])
def test_a_client_that_leaves_cancels_the_vendor_call_and_settles(
    clock: FakeClock, stream: bool, before: int
) -> None:
    vendor = SlowVendor(before=before)
    router = QuotaRoutedChatModel(
        routes=[Route(vendor, name="slow", limits=["10/day", "100000 tokens/day"])],
        ledger="memory://",
        cache=False,
        clock=clock,
        default_output_tokens=4000,
    )
    body = {
        "model": "quota-router",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
    }
    with running_proxy(router) as server, httpx.Client(timeout=10) as http:
        if stream and before:
            with http.stream("POST", f"{server.url}/chat/completions", json=body) as reply:
                lines = reply.iter_lines()  # kept: a dropped iterator closes the response
                assert '"role":"assistant"' in next(lines)
                assert vendor._started.wait(5)
                # While the call runs, its output estimate is held.
                assert _tokens_used(router)[1] > 4000
            # The response is closed mid-stream: the client has gone.
        else:
            # Nothing comes before the first token: the client gives up waiting
            # (httpx's read timeout closes the connection).
            timed_out = threading.Event()

            def give_up() -> None:
                try:
                    http.post(
                        f"{server.url}/chat/completions",
                        json=body,
                        timeout=httpx.Timeout(10, read=0.5),
                    )
                except httpx.ReadTimeout:
                    timed_out.set()

            waiter = threading.Thread(target=give_up)
            waiter.start()
            assert vendor._started.wait(5)
            assert _tokens_used(router)[1] > 4000
            waiter.join(5)
            assert timed_out.is_set()
        left = time.monotonic()
        assert vendor._cancelled.wait(1.0), "the vendor call was not cancelled within a second"
        assert time.monotonic() - left < 1.0
        deadline = time.monotonic() + 1.0
        while (
            _tokens_used(router)[1] > 100 or server.app.in_flight
        ) and time.monotonic() < deadline:
            time.sleep(0.01)
        requests, tokens = _tokens_used(router)
        assert requests == 1  # the vendor saw the request: it stays counted
        assert tokens < 100  # the unspent output estimate is released
        assert server.app.in_flight == 0


def test_shutdown_gives_calls_a_grace_then_cancels_and_settles_them(clock: FakeClock) -> None:
    vendor = SlowVendor(before=1)
    router = QuotaRoutedChatModel(
        routes=[Route(vendor, name="slow", limits=["10/day", "100000 tokens/day"])],
        ledger="memory://",
        cache=False,
        clock=clock,
        default_output_tokens=4000,
    )
    body = {
        "model": "quota-router",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }
    received: list[str] = []

    def client(url: str) -> None:
        with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=10) as reply:
            received.extend(reply.iter_lines())

    with running_proxy(router, shutdown_grace=0.2) as server:
        reader = threading.Thread(target=client, args=(server.url,))
        reader.start()
        assert vendor._started.wait(5)
        assert _tokens_used(router)[1] > 4000
        started = time.monotonic()
    # running_proxy's exit shut the server down: within the grace, plus a little.
    assert time.monotonic() - started < 2.0
    reader.join(5)
    assert vendor._cancelled.is_set()
    assert _tokens_used(router)[1] < 100
    assert not any("[DONE]" in line for line in received)
    assert "server_shutting_down" in "".join(received), received
