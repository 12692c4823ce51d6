"""Strategies that order routes by what this call costs and by how fast each route
answers, and hedged async calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from call_paths import ask
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from support.routers import router

from langchain_quota_router import ConfigurationError, Route
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.testing import FakeVendorChatModel

LONG = "word " * 3_000  # about 3,000 tokens


def _route(name: str, prices: tuple[float, float], **kw: object) -> Route:
    return Route(FakeVendorChatModel(), name=name, prices=prices, **kw)  # type: ignore[arg-type]


def _crossing() -> tuple[Route, Route]:
    # Cheap input / dear output, and the other way round: which is cheaper depends on
    # the call. Priorities favour the wrong one for the long prompt.
    reader = _route("reader", (0.10, 10.0), priority=1)
    writer = _route("writer", (5.00, 0.20), priority=0)
    return reader, writer


async def test_cost_picks_the_cheaper_route_for_this_call_every_time(
    clock: FakeClock, how: str
) -> None:
    reader, writer = _crossing()
    llm = router(clock, reader, writer, strategy="cost")
    for _ in range(3):
        # ~3k prompt tokens, 10 out: reader ~$0.0004, writer ~$0.015.
        long_short = await ask(llm, how, LONG, max_tokens=10)
        assert long_short.response_metadata["route"] == "reader"
        # a few prompt tokens, 2,000 out: reader ~$0.02, writer ~$0.0004.
        short_long = await ask(llm, how, "hi", max_tokens=2000)
        assert short_long.response_metadata["route"] == "writer"


async def test_cost_puts_free_routes_first_and_preferred_still_wins(
    clock: FakeClock, how: str
) -> None:
    reader, writer = _crossing()
    free = _route("free", (0.0, 0.0), priority=5)
    llm = router(clock, reader, writer, free, strategy="cost")
    assert (await ask(llm, how, LONG, max_tokens=10)).response_metadata["route"] == "free"
    chosen = await ask(llm, how, LONG, max_tokens=10, preferred="writer")
    assert chosen.response_metadata["route"] == "writer"


async def test_cost_breaks_ties_by_room_left(clock: FakeClock, how: str) -> None:
    # Both free: equal cost whatever the prompt estimate each has calibrated.
    fuller = _route("fuller", (0.0, 0.0), limits=["10/day"], priority=0)
    emptier = _route("emptier", (0.0, 0.0), limits=["10/day"], priority=1)
    llm = router(clock, fuller, emptier, strategy="cost")
    for _ in range(3):
        await ask(llm, "invoke", preferred="fuller")
    # Same price: the route with more room left goes first, whatever the priority.
    assert (await ask(llm, how)).response_metadata["route"] == "emptier"


def test_unknown_strategies_are_configuration_errors(clock: FakeClock) -> None:
    with pytest.raises(ConfigurationError, match="unknown strategy 'fastest'"):
        router(clock, _route("a", (0, 0)), strategy="fastest")
    with pytest.raises(ConfigurationError, match="order keys"):
        router(clock, _route("a", (0, 0)), strategy=("free", "speed"))
    with pytest.raises(ConfigurationError, match="hedge_after"):
        router(clock, _route("a", (0, 0)), hedge_after=0)


# ------------------------------------------------------------------------ latency


class Timed(FakeVendorChatModel):
    """A vendor that takes ``delay`` seconds of the test's clock to start answering."""

    delay: float = 0.0
    tick: Any = None

    def _next(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        self.tick.advance(self.delay)
        return super()._next(messages, kwargs)


def _timed(clock: FakeClock, name: str, delay: float, **kw: Any) -> Route:
    return Route(Timed(delay=delay, tick=clock), name=name, **kw)


async def test_latency_tries_unobserved_routes_then_keeps_to_the_fastest(
    clock: FakeClock, how: str
) -> None:
    slow = _timed(clock, "slow", 2.0, priority=0)
    fast = _timed(clock, "fast", 0.5, priority=1)
    llm = router(clock, slow, fast, strategy="latency")
    routes = [(await ask(llm, how, f"q{i}")).response_metadata["route"] for i in range(5)]
    # Each route is tried once (an unobserved route goes first), then the fastest.
    assert routes == ["slow", "fast", "fast", "fast", "fast"]
    assert llm.get_stats()["latency"] == {"fast": 0.5, "slow": 2.0}


async def test_latency_puts_free_routes_first_unless_told_otherwise(
    clock: FakeClock, how: str
) -> None:
    def routes() -> tuple[Route, Route]:
        return (
            _timed(clock, "free", 2.0, prices=(0.0, 0.0)),
            _timed(clock, "paid", 0.1, prices=(1.0, 1.0), priority=1),
        )

    free_first = router(clock, *routes(), strategy="latency")
    picks = [(await ask(free_first, how, f"q{i}")).response_metadata["route"] for i in range(3)]
    assert picks == ["free", "free", "free"]
    fastest = router(clock, *routes(), strategy=("latency",))
    picks = [(await ask(fastest, how, f"q{i}")).response_metadata["route"] for i in range(4)]
    assert picks == ["free", "paid", "paid", "paid"]


def test_latencies_are_shared_by_every_router_on_the_ledger(
    clock: FakeClock, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"

    def make() -> Any:
        slow = _timed(clock, "slow", 3.0, priority=0)
        fast = _timed(clock, "fast", 0.2, priority=1)
        return router(clock, slow, fast, strategy="latency", ledger=url)

    first = make()
    first.invoke("a")  # slow, observed
    first.invoke("b")  # fast, observed
    first.stats.fleet.flush()
    # Another process's router: it has observed nothing, yet goes to the fast route.
    other = make()
    assert other.invoke("c").response_metadata["route"] == "fast"
    assert other.get_stats()["latency"]["slow"] == pytest.approx(3.0)


# ------------------------------------------------------------------------ hedging


class Gated(FakeVendorChatModel):
    """A vendor whose async answers wait for ``gate`` (an ``asyncio.Event``) and
    that sets ``called`` when asked."""

    gate: Any = None
    called: Any = None

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        if self.called is not None:
            self.called.set()
        if self.gate is not None:
            await self.gate.wait()
        return self._generate(messages, stop, None, **kw)

    async def _astream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        if self.called is not None:
            self.called.set()
        if self.gate is not None:
            await self.gate.wait()
        for chunk in self._stream(messages, stop, None, **kw):
            yield chunk


class StillClock(FakeClock):
    """A clock whose async sleeps never end: a hedge timer that never fires."""

    async def asleep(self, seconds: float) -> None:
        await asyncio.Event().wait()


async def test_a_slow_first_route_is_hedged_on_the_async_paths_only(
    clock: FakeClock, how: str
) -> None:
    stuck = Route(Gated(gate=asyncio.Event()), name="stuck", limits=["10/day", "100000 tokens/day"])
    spare = Route(Gated(), name="spare", priority=1)
    llm = router(clock, stuck, spare, hedge_after=0.5)

    answer = await ask(llm, how)

    stats = llm.get_stats()
    if how in ("ainvoke", "astream"):
        # The first route sent nothing within 0.5 s: the next one was started and won.
        assert answer.response_metadata["route"] == "spare"
        assert (stats["hedged"], stats["hedge_won"]) == (1, 1)
        assert stats["fleet"]["routes"]["spare"]["hedged"] == 1
        # The loser was cancelled and settled: its request stays counted, its
        # output estimate was given back, it counts as neither served nor failed.
        requests, tokens = llm.usage()[:2]
        assert requests.used == 1
        assert 0 < tokens.used < llm.default_output_tokens
        assert stats["calls_per_route"] == {"spare": 1}
        assert stats["errors"] == 0
    else:
        # Synchronous calls are never hedged (a blocked call cannot be cancelled).
        assert answer.response_metadata["route"] == "stuck"
        assert stats["hedged"] == 0
        assert spare.model.calls == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("how", ["ainvoke", "astream"])
async def test_no_hedge_when_the_first_route_answers_in_time(how: str) -> None:
    clock = StillClock()
    first = Route(Gated(), name="first")
    second = Route(Gated(), name="second", priority=1)
    llm = router(clock, first, second, hedge_after=0.5)
    assert (await ask(llm, how)).response_metadata["route"] == "first"
    assert llm.get_stats()["hedged"] == 0
    assert second.model.calls == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("how", ["ainvoke", "astream"])
async def test_a_hedged_route_that_fails_leaves_the_first_to_answer(
    clock: FakeClock, how: str
) -> None:
    gate, asked = asyncio.Event(), asyncio.Event()
    slow = Route(Gated(gate=gate), name="slow")
    broken = Route(
        Gated(script=[ConnectionError("reset")], called=asked), name="broken", priority=1
    )
    llm = router(clock, slow, broken, hedge_after=0.5)

    async def release() -> None:
        await asked.wait()  # the hedge was started (and fails): now the first answers
        gate.set()

    opened = asyncio.ensure_future(release())
    answer = await ask(llm, how)
    await opened
    assert answer.response_metadata["route"] == "slow"
    stats = llm.get_stats()
    assert (stats["hedged"], stats["hedge_won"]) == (1, 0)
    assert stats["errors_per_route"] == {"broken": 1}


def test_hedging_is_off_by_default(clock: FakeClock) -> None:
    assert router(clock, Route(Gated(), name="a")).hedge_after is None
