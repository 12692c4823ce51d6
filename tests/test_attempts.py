"""Every answer says how it was reached: ``response_metadata["attempts"]``, one entry
per route considered, in order, with what happened and why; the same list on the
error raised when no route serves, on the last streamed chunk and in ``llm_output``."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import vendor_errors as errors
from call_paths import ask
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult

from langchain_quota_router import QuotaExhaustedError, QuotaRoutedChatModel, Route
from langchain_quota_router.keys import KeyRotator
from langchain_quota_router.quota.admission import (
    Considered,
    failure_words,
    refusal_words,
)
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.quota.failures import classify
from langchain_quota_router.quota.ledger import Refusal
from langchain_quota_router.quota.limits import Limit
from langchain_quota_router.testing import FakeVendorChatModel

LONG = "word " * 400  # ~400+ tokens: over a 100-token context


def router(clock: FakeClock, *routes: Route, **kw: Any) -> QuotaRoutedChatModel:
    kw.setdefault("cache", False)
    return QuotaRoutedChatModel(routes=list(routes), ledger="memory://", clock=clock, **kw)


def four_ways(clock: FakeClock) -> QuotaRoutedChatModel:
    """small (context too small), spent (pool full), limited (vendor 429), ok."""
    llm = router(
        clock,
        Route(FakeVendorChatModel(model="s"), name="small", priority=1, context_window=100),
        Route(FakeVendorChatModel(model="f"), name="spent", priority=2, limits=["1/day"]),
        Route(
            FakeVendorChatModel(model="l", script=[errors.gemini_minute_limit("47s")]),
            name="limited",
            priority=3,
        ),
        Route(FakeVendorChatModel(model="o", script=["fine"]), name="ok", priority=4),
    )
    llm.invoke("warm up", preferred="spent")  # spends spent's 1/day
    return llm


async def test_each_route_considered_is_listed_in_order_with_why(
    clock: FakeClock, how: str
) -> None:
    llm = four_ways(clock)
    answer = await ask(llm, how, LONG)
    attempts = answer.response_metadata["attempts"]
    assert [(a["route"], a["outcome"]) for a in attempts] == [
        ("small", "skipped"),
        ("spent", "refused"),
        ("limited", "failed"),
        ("ok", "served"),
    ]
    reasons = [a["reason"] for a in attempts]
    assert reasons[0].startswith("prompt of ~")
    assert reasons[0].endswith(" over the 100 context")
    assert reasons[1] == "pool full: 1/1 requests per day until 00:00 UTC"
    assert reasons[2].startswith("vendor 429, retry in 47 s")
    assert reasons[3] == "fallback"


async def test_a_first_choice_answer_lists_one_entry(clock: FakeClock, how: str) -> None:
    llm = router(clock, Route(FakeVendorChatModel(model="a", script=["hi"]), name="a"))
    answer = await ask(llm, how)
    assert answer.response_metadata["attempts"] == [
        {"route": "a", "outcome": "served", "reason": "first choice"}
    ]


async def test_the_error_when_no_route_serves_carries_the_list(clock: FakeClock, how: str) -> None:
    llm = router(
        clock,
        Route(FakeVendorChatModel(model="a"), name="a", priority=1, limits=["1/minute"]),
        Route(
            FakeVendorChatModel(model="b", script=[errors.openai_rate_limit("20")]),
            name="b",
            priority=2,
        ),
    )
    await ask(llm, "invoke", preferred="a")
    with pytest.raises(QuotaExhaustedError) as caught:
        await ask(llm, how, "again")
    assert caught.value.attempts == [
        {"route": "a", "outcome": "refused", "reason": caught.value.attempts[0]["reason"]},
        {"route": "b", "outcome": "failed", "reason": caught.value.attempts[1]["reason"]},
    ]
    assert caught.value.attempts[0]["reason"].startswith("pool full: 1/1 requests per minute")
    assert caught.value.attempts[1]["reason"].startswith("vendor 429, retry in 20 s")


async def test_thousands_of_known_full_routes_are_written_out_when_read(
    clock: FakeClock, how: str
) -> None:
    routes = [
        Route(FakeVendorChatModel(model=f"m{i}", script=["x"]), name=f"r{i}", limits=["1/day"])
        for i in range(30)
    ]
    llm = router(clock, *routes)
    for i in range(29):
        await ask(llm, "invoke", preferred=f"r{i}")
    # Every pool but the last is now full, and known full to this process.
    answer = await ask(llm, how, "last")
    attempts = answer.response_metadata["attempts"]
    assert len(attempts) == 30
    assert {a["outcome"] for a in attempts[:29]} == {"refused"}
    assert all(a["reason"].startswith("pool full: 1/1 requests per day") for a in attempts[:29])
    assert attempts[29] == {"route": "r29", "outcome": "served", "reason": "fallback"}


def test_llm_output_carries_the_list(clock: FakeClock) -> None:
    seen: list[LLMResult] = []

    class Keep(BaseCallbackHandler):
        def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
            seen.append(response)

    llm = four_ways(clock)
    llm.invoke(LONG, config={"callbacks": [Keep()]})
    assert seen[0].llm_output is not None
    assert [a["outcome"] for a in seen[0].llm_output["attempts"]] == [
        "skipped",
        "refused",
        "failed",
        "served",
    ]


def test_the_last_streamed_chunk_carries_the_list_once(clock: FakeClock) -> None:
    llm = four_ways(clock)
    chunks = list(llm.stream(LONG))
    carrying = [c for c in chunks if "attempts" in c.response_metadata]
    assert carrying == [chunks[-1]]


def test_a_cache_hit_says_so(clock: FakeClock, tmp_path: Any) -> None:
    from langchain_quota_router.cache.disk import DiskResponseCache

    llm = router(
        clock,
        Route(FakeVendorChatModel(model="a", script=["hi"]), name="a"),
        cache=DiskResponseCache(tmp_path / "c", clock=clock),
    )
    llm.invoke("hello")
    again = llm.invoke("hello")
    assert again.response_metadata["attempts"] == [
        {"route": "a", "outcome": "served", "reason": "cache hit"}
    ]


def test_a_log_line_per_skip_and_one_per_fallback(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    llm = four_ways(clock)
    with caplog.at_level(logging.DEBUG, logger="langchain_quota_router"):
        llm.invoke(LONG)
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any(m.startswith("route small skipped: prompt of ~") for m in debug)
    assert any(m.startswith("route spent refused: pool full") for m in debug)
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    fallbacks = [m for m in info if "served after a fallback" in m]
    assert len(fallbacks) == 1
    assert fallbacks[0].startswith("route ok served after a fallback: small skipped")


def test_a_disabled_key_and_a_retired_model_are_named(clock: FakeClock) -> None:
    llm = router(
        clock,
        Route(
            FakeVendorChatModel(model="a", script=[errors.openai_auth_error()]),
            name="a",
            priority=1,
        ),
        Route(
            FakeVendorChatModel(model="b", script=[errors.openai_model_not_found("b")]),
            name="b",
            priority=2,
        ),
        Route(FakeVendorChatModel(model="c", script=["ok"]), name="c", priority=3),
    )
    first = llm.invoke("one").response_metadata["attempts"]
    assert first[0]["outcome"] == "failed"
    assert first[0]["reason"].startswith("vendor 401")
    assert first[1]["outcome"] == "failed"
    assert first[1]["reason"].startswith("vendor 404")
    second = llm.invoke("two").response_metadata["attempts"]
    assert second[0] == {"route": "a", "outcome": "refused", "reason": "key disabled (401)"}
    assert second[1]["outcome"] == "refused"
    assert second[1]["reason"].startswith("model retired or not served")


def test_no_key_shows_in_the_list(clock: FakeClock) -> None:
    secret = "sk-proj-abcdefghijklmnopqrstuvwxyz123456"
    vendor = FakeVendorChatModel(model="a", script=[errors.openai_auth_error()])
    llm = router(
        clock,
        Route(vendor, name="a", priority=1, credential=f"openai|{secret}"),
        Route(FakeVendorChatModel(model="b", script=["ok"]), name="b", priority=2),
    )
    attempts = llm.invoke("x").response_metadata["attempts"]
    assert secret not in repr(attempts)


def test_a_key_rotator_call_is_explained_too(clock: FakeClock) -> None:
    serp = KeyRotator("serp", keys=["k1-aaaaaaaa", "k2-bbbbbbbb"], limits=["1/day"], clock=clock)
    serp.call(lambda *, api_key: api_key)
    serp.call(lambda *, api_key: api_key)
    with pytest.raises(QuotaExhaustedError) as caught:
        serp.call(lambda *, api_key: api_key)
    assert [a["outcome"] for a in caught.value.attempts] == ["refused", "refused"]
    assert all("pool full: 1/1 requests per day" in a["reason"] for a in caught.value.attempts)


# ------------------------------------------------------------ the words alone


def test_refusal_words() -> None:
    noon = 1_767_268_800.0  # 2026-01-01 12:00 UTC
    full = Refusal("p", "50/24h is used up", noon + 12 * 3600, Limit.parse("50/24h"), 0)
    assert refusal_words(full, noon) == "pool full: 50/50 requests per 24h until 00:00 UTC"
    short = Refusal("p", "...", noon + 30, Limit.parse("8000 tokens/minute"), 120)
    assert refusal_words(short, noon) == (
        "pool short: 120 left of 8,000 tokens per minute until 12:00 UTC"
    )
    blocked = Refusal("p", "rate_limit: slow down", noon + 47, None)
    assert refusal_words(blocked, noon) == "blocked: vendor rate limit until 12:00 UTC"


def test_failure_words() -> None:
    failure = classify(errors.gemini_minute_limit("47s"), now=0.0)
    assert failure_words(failure).startswith("vendor 429, retry in 47 s")


def test_entries_are_small_frozen_records() -> None:
    entry = Considered("groq", "refused", "pool full")
    with pytest.raises(AttributeError):
        entry.name = "x"  # type: ignore[misc]
    assert entry.as_dict() == {"route": "groq", "outcome": "refused", "reason": "pool full"}
    assert entry.as_dict("key")["key"] == "groq"
