"""Watching quota: stats, alerts as pools fill up, lifespan estimates, reset and enable."""

from __future__ import annotations

import logging
import math
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from support.routers import router
from vendor_errors import openai_auth_error

from langchain_quota_router import Route
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.testing import FakeVendorChatModel


class Events(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.events.append((name, data))


def test_alerts_fire_at_75_90_95_percent_once_per_crossing(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    llm = router(clock, Route(FakeVendorChatModel(), name="groq", limits=["20/day"]))
    handler = Events()
    with caplog.at_level(logging.WARNING, logger="langchain_quota_router"):
        for i in range(20):
            llm.invoke(f"q{i}", config={"callbacks": [handler]})
    fired = [(d["threshold"], d["used"]) for name, d in handler.events if name == "quota_alert"]
    assert fired == [(75.0, 15), (90.0, 18), (95.0, 19)]
    assert caplog.text.count("quota alert: pool groq") == 3
    assert "of 20/day (15 of 20)" in caplog.text


def test_alerts_fire_again_in_the_next_window(clock: FakeClock) -> None:
    llm = router(clock, Route(FakeVendorChatModel(), name="g", limits=["4/day"]))
    handler = Events()
    for _ in range(3):
        llm.invoke("x", config={"callbacks": [handler]})
    clock.advance(86_400)
    for _ in range(3):
        llm.invoke("y", config={"callbacks": [handler]})
    assert [d["threshold"] for _, d in handler.events] == [75.0, 75.0]


async def test_alerts_reach_astream_events_of_a_chain(clock: FakeClock) -> None:
    llm = router(clock, Route(FakeVendorChatModel(), name="g", limits=["1/day"]))
    chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | llm | StrOutputParser()
    events = [e async for e in chain.astream_events({"q": "hi"}, version="v2")]
    custom = [e for e in events if e["event"] == "on_custom_event"]
    assert [e["name"] for e in custom] == ["quota_alert"]
    assert custom[0]["data"]["percent"] == 100.0


async def test_alerts_reach_astream_events_of_the_bare_model(clock: FakeClock) -> None:
    llm = router(clock, Route(FakeVendorChatModel(), name="g", limits=["1/day"]))
    events = [e async for e in llm.astream_events("hi", version="v2")]
    custom = [e for e in events if e["event"] == "on_custom_event"]
    assert [e["name"] for e in custom] == ["quota_alert"]
    start = next(e for e in events if e["event"] == "on_chat_model_start")
    assert custom[0]["run_id"] == start["run_id"]  # the model's own run


async def test_alerts_reach_the_handlers_of_a_stream(clock: FakeClock, how: str) -> None:
    from call_paths import ask
    from langchain_core.callbacks import BaseCallbackHandler

    seen: list[str] = []

    class Keep(BaseCallbackHandler):
        def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
            seen.append(name)

    llm = router(clock, Route(FakeVendorChatModel(), name="g", limits=["1/day"]))
    await ask(llm, how, config={"callbacks": [Keep()]})
    assert seen == ["quota_alert"]


def test_stats_count_calls_fallbacks_errors_and_the_last_route(clock: FakeClock) -> None:
    llm = router(
        clock,
        Route(FakeVendorChatModel(script=[openai_auth_error()]), name="a", priority=1),
        Route(FakeVendorChatModel(), name="b", priority=2),
    )
    llm.invoke("one")
    llm.invoke("two")
    stats = llm.get_stats()
    assert stats["total_calls"] == 2
    assert stats["calls_per_route"] == {"b": 2}
    assert stats["fallbacks"] == 2
    assert stats["errors"] == 1
    assert stats["last_route"] == "b"


def test_reset_forgets_a_routes_usage_and_enable_revives_a_key(clock: FakeClock) -> None:
    llm = router(
        clock,
        Route(FakeVendorChatModel(script=[openai_auth_error(), "ok"]), name="a", priority=1),
        Route(FakeVendorChatModel(), name="b", limits=["1/day"], priority=2),
    )
    llm.invoke("one")  # a's key is disabled, b serves and is now full
    llm.enable("a")
    assert llm.invoke("two").response_metadata["route"] == "a"
    llm.reset("b")
    assert next(u for u in llm.usage() if u.pool == "b").used == 0
    with pytest.raises(ValueError, match="no route named 'c'"):
        llm.reset("c")


def test_lifespan_credits_run_out_daily_limits_renew(clock: FakeClock) -> None:
    llm = router(
        clock,
        Route(FakeVendorChatModel(), name="daily", limits=["100000 tokens/day"]),
        Route(FakeVendorChatModel(), name="credit", limits=["1000000 tokens/once"]),
    )
    small = llm.lifespan(50_000)
    assert small.pools["daily"] == math.inf
    assert small.pools["credit"] == pytest.approx(20.0)
    assert small.total == math.inf  # the daily pool covers it alone
    big = llm.lifespan(300_000)
    assert big.pools["credit"] == pytest.approx(1_000_000 / 300_000)
    # 100k a day renews; the credit covers the other 200k a day for 5 days.
    assert big.total == pytest.approx(5.0)
    with pytest.raises(ValueError, match="positive"):
        llm.lifespan(0)


def test_lifespan_of_a_full_pool_is_zero_until_it_comes_back(clock: FakeClock) -> None:
    llm = router(
        clock,
        Route(FakeVendorChatModel(), name="groq", limits=["2/24h"]),
        Route(FakeVendorChatModel(), name="big", limits=["2/day", "100000 tokens/day"]),
    )
    for _ in range(2):
        llm.invoke("hi", preferred="groq")
        llm.invoke("hi", preferred="big")
    span = llm.lifespan(500)
    # Request limits only, but full: not "forever".
    assert span.pools["groq"] == 0.0
    back = span.back_at["groq"]
    assert back is not None
    assert clock.now() + 86_400 <= back <= clock.now() + 86_400 + 3_600  # 24h in buckets
    assert span.pools["big"] == 0.0
    assert span.back_at["big"] == clock.now() + 86_400  # midnight UTC
    clock.advance(86_400 + 3_600)
    assert llm.lifespan(500).pools == {"groq": math.inf, "big": math.inf}
