"""Strategies that order routes by what this call costs and by how fast each route
answers, and hedged async calls."""

from __future__ import annotations

import pytest
from call_paths import ask
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
