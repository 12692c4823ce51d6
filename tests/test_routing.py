"""Routing: admission before sending, selection, failures and fallback, giving up."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pytest
from langchain_core.exceptions import ModelRateLimitError
from vendor_errors import (
    gemini_minute_limit,
    groq_daily_wall,
    openai_auth_error,
    openai_bad_request,
    openai_context_too_long,
    openai_rate_limit,
    openai_timeout,
)

from langchain_quota_router import QuotaExhaustedError, QuotaRoutedChatModel, Route
from langchain_quota_router._clock import FakeClock
from langchain_quota_router.testing import FakeVendorChatModel

T0 = 1_767_225_600.0


def fake(name: str, script: list[Any] | None = None, **kw: Any) -> FakeVendorChatModel:
    return FakeVendorChatModel(model=name, script=script or [], **kw)


def router(clock: FakeClock, *routes: Route, **kw: Any) -> QuotaRoutedChatModel:
    return QuotaRoutedChatModel(
        routes=list(routes), ledger="memory://", cache=False, clock=clock, **kw
    )


def answered_by(llm: QuotaRoutedChatModel, prompt: str = "hi", **kw: Any) -> str:
    return str(llm.invoke(prompt, **kw).response_metadata["route"])


# --------------------------------------------------------------- admission


def test_a_route_without_room_is_skipped_without_being_called(clock: FakeClock) -> None:
    groq, gemini = fake("llama"), fake("gemini")
    llm = router(
        clock,
        Route(groq, name="groq", limits=["2/minute"], priority=1),
        Route(gemini, name="gemini", priority=2),
    )
    assert [answered_by(llm) for _ in range(3)] == ["groq", "groq", "gemini"]
    assert groq.calls == 2
    assert gemini.calls == 1
    clock.advance(61)
    assert answered_by(llm) == "groq"


def test_prompt_plus_max_tokens_must_fit_the_token_limit(clock: FakeClock) -> None:
    small, big = fake("small"), fake("big")
    llm = router(
        clock,
        Route(small, name="small", limits=["300 tokens/minute"], priority=1),
        Route(big, name="big", priority=2),
    )
    assert answered_by(llm, max_tokens=250) == "small"  # ~5 prompt + 250 fits
    assert answered_by(llm, max_tokens=400) == "big"  # can never fit in 300
    assert small.calls == 1


def test_settles_the_reservation_with_the_vendors_real_usage(clock: FakeClock) -> None:
    llm = router(clock, Route(fake("m"), name="a", limits=["10000 tokens/day"]))
    message = llm.invoke("count me", max_tokens=2000)
    assert message.usage_metadata is not None
    (usage,) = llm.usage()
    assert usage.used == message.usage_metadata["total_tokens"]  # not the 2000 estimate


def test_routes_naming_one_pool_share_its_quota(clock: FakeClock) -> None:
    llama, mixtral, other = fake("llama"), fake("mixtral"), fake("other")
    llm = router(
        clock,
        Route(llama, name="groq-llama", pool="groq-org", limits=["3/minute"], priority=1),
        Route(mixtral, name="groq-mixtral", pool="groq-org", priority=2),
        Route(other, name="other", priority=3),
    )
    assert [answered_by(llm) for _ in range(3)] == ["groq-llama"] * 3
    assert answered_by(llm) == "other"  # mixtral's pool is the same, already full
    assert mixtral.calls == 0


# --------------------------------------------------------------- selection


def test_priority_sends_everything_to_the_lowest_number_first(clock: FakeClock) -> None:
    llm = router(
        clock,
        Route(fake("paid"), name="paid", priority=5),
        Route(fake("free"), name="free", priority=1),
    )
    assert {answered_by(llm) for _ in range(5)} == {"free"}


def test_spread_sends_each_call_to_the_route_with_most_room(clock: FakeClock) -> None:
    llm = router(
        clock,
        Route(fake("a"), name="a", limits=["10/day"]),
        Route(fake("b"), name="b", limits=["10/day"]),
        strategy="spread",
    )
    served = [answered_by(llm) for _ in range(10)]
    assert served.count("a") == served.count("b") == 5
    assert [u.used for u in llm.usage()] == [5, 5]


def test_preferred_route_goes_first_and_still_falls_back(clock: FakeClock) -> None:
    llm = router(
        clock,
        Route(fake("a"), name="a", priority=1),
        Route(fake("b"), name="b", limits=["1/minute"], priority=2),
    )
    assert answered_by(llm, preferred="b") == "b"
    assert answered_by(llm, preferred="b") == "a"  # b is full: falls back
    with pytest.raises(ValueError, match="preferred route 'c'"):
        llm.invoke("hi", preferred="c")


# ---------------------------------------------------------------- failures


def test_rate_limit_blocks_the_pool_for_retry_after_then_it_comes_back(
    clock: FakeClock,
) -> None:
    first = fake("a", [openai_rate_limit(retry_after="20"), "ok"])
    llm = router(
        clock,
        Route(first, name="a", priority=1),
        Route(fake("b"), name="b", priority=2),
    )
    assert answered_by(llm) == "b"
    assert answered_by(llm) == "b"  # blocked: not called again
    assert first.calls == 1
    clock.advance(20)
    assert answered_by(llm) == "a"
    assert llm.get_stats()["fallbacks"] == 2


def test_langchain_core_model_rate_limit_error_is_a_rate_limit(
    clock: FakeClock,
) -> None:
    first = fake("a", [ModelRateLimitError("slow down")])
    llm = router(
        clock,
        Route(first, name="a", priority=1),
        Route(fake("b"), name="b", priority=2),
        rate_limit_cooldown=45,
    )
    assert answered_by(llm) == "b"
    clock.advance(44)
    assert answered_by(llm) == "b"
    assert first.calls == 1


def test_gemini_retry_info_sets_the_block(clock: FakeClock) -> None:
    gem = fake("gemini", [gemini_minute_limit("47s"), "ok"])
    llm = router(
        clock,
        Route(gem, name="gemini", priority=1),
        Route(fake("b"), name="b", priority=2),
    )
    assert answered_by(llm) == "b"
    clock.advance(46)
    assert answered_by(llm) == "b"
    clock.advance(1)
    assert answered_by(llm) == "gemini"


def test_daily_quota_wall_blocks_until_the_pools_day_resets(clock: FakeClock) -> None:
    clock.set(T0 + 10 * 3600)
    groq = fake("llama", [groq_daily_wall(), "ok"])
    llm = router(
        clock,
        Route(groq, name="groq", limits=["1000/day"], priority=1),
        Route(fake("b"), name="b", priority=2),
    )
    assert answered_by(llm) == "b"
    clock.set(T0 + 86_399)
    assert answered_by(llm) == "b"
    clock.set(T0 + 86_400)
    assert answered_by(llm) == "groq"


def test_bad_key_disables_that_key_only_until_enabled(clock: FakeClock) -> None:
    bad = fake("a", [openai_auth_error(), "ok"])
    same_key = fake("a2")
    llm = router(
        clock,
        Route(bad, name="a", key="openai#1", priority=1),
        Route(same_key, name="a-mini", key="openai#1", priority=2),
        Route(fake("b"), name="b", key="openai#2", priority=3),
    )
    assert answered_by(llm) == "b"
    clock.advance(10 * 86_400)
    assert answered_by(llm) == "b"  # still disabled, days later
    assert same_key.calls == 0  # the same key on another model is disabled too
    llm.enable("a")
    assert answered_by(llm) == "a"


def test_timeout_cools_the_route_down_briefly(clock: FakeClock) -> None:
    slow = fake("a", [openai_timeout(), "ok"])
    llm = router(
        clock,
        Route(slow, name="a", priority=1),
        Route(fake("b"), name="b", priority=2),
        transient_cooldown=30,
    )
    assert answered_by(llm) == "b"
    clock.advance(29)
    assert answered_by(llm) == "b"
    clock.advance(1)
    assert answered_by(llm) == "a"


def test_context_too_long_moves_on_without_cooling_down(clock: FakeClock) -> None:
    short = fake("short", [openai_context_too_long(), "ok"])
    llm = router(
        clock,
        Route(short, name="short", priority=1),
        Route(fake("long"), name="long", priority=2),
    )
    assert answered_by(llm) == "long"
    assert answered_by(llm) == "short"  # not blocked


def test_prompt_beyond_a_routes_context_window_skips_it(clock: FakeClock) -> None:
    small = fake("small")
    llm = router(
        clock,
        Route(small, name="small", context_window=50, priority=1),
        Route(fake("big"), name="big", context_window=100_000, priority=2),
    )
    assert answered_by(llm, "word " * 400) == "big"
    assert small.calls == 0


def test_other_bad_request_tries_one_more_route_then_raises_the_first_error(
    clock: FakeClock,
) -> None:
    first_error = openai_bad_request("Invalid 'temperature': 7")
    a = fake("a", [first_error])
    b = fake("b", [openai_bad_request("also bad")])
    c = fake("c")
    llm = router(
        clock,
        Route(a, name="a", priority=1),
        Route(b, name="b", priority=2),
        Route(c, name="c", priority=3),
    )
    with pytest.raises(type(first_error)) as raised:
        llm.invoke("hi")
    assert raised.value is first_error
    assert c.calls == 0
    # Not cooled down: the next call tries the first route again.
    assert a.calls == 1
    with pytest.raises(type(first_error)):
        llm.invoke("hi")
    assert a.calls == 2


def test_bad_request_on_one_vendor_can_succeed_on_the_next(clock: FakeClock) -> None:
    llm = router(
        clock,
        Route(
            fake("a", [openai_bad_request("unsupported 'logprobs'")]),
            name="a",
            priority=1,
        ),
        Route(fake("b"), name="b", priority=2),
    )
    assert answered_by(llm) == "b"


def test_failure_is_logged_without_the_key(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    llm = router(
        clock,
        Route(fake("a", [openai_auth_error()]), name="a", priority=1),
        Route(fake("b"), name="b", priority=2),
    )
    with caplog.at_level(logging.DEBUG, logger="langchain_quota_router"):
        llm.invoke("hi")
    assert "route a failed (authentication" in caplog.text
    assert "abcdefghijklmnopqrstuvwxyz123456" not in caplog.text


# --------------------------------------------------------------- giving up


def test_exhausted_names_every_route_why_and_the_earliest_reset(
    clock: FakeClock,
) -> None:
    llm = router(
        clock,
        Route(fake("a"), name="a", limits=["1/minute"]),
        Route(fake("b"), name="b", limits=["1/day"]),
        Route(fake("c", [openai_auth_error()]), name="c"),
    )
    llm.invoke("one")
    llm.invoke("two")
    with pytest.raises(QuotaExhaustedError) as raised:
        llm.invoke("three")
    error = raised.value
    assert set(error.reasons) == {"a", "b", "c"}
    assert "1/minute is used up" in error.reasons["a"]
    assert "1/day is used up" in error.reasons["b"]
    assert error.reasons["c"].startswith("authentication")
    assert error.resets_at == dt.datetime.fromtimestamp(T0 + 61, dt.timezone.utc)
    assert "a: 1/minute is used up" in str(error)


def test_exhausted_with_nothing_that_resets_says_so(clock: FakeClock) -> None:
    llm = router(clock, Route(fake("a"), name="a", limits=["1 requests/once"]))
    llm.invoke("spend the credit")
    with pytest.raises(QuotaExhaustedError) as raised:
        llm.invoke("again")
    assert raised.value.resets_at is None


def test_max_wait_waits_for_the_earliest_reset_instead_of_raising(
    clock: FakeClock,
) -> None:
    llm = router(clock, Route(fake("a"), name="a", limits=["1/minute"]), max_wait=90)
    llm.invoke("one")
    assert llm.invoke("two").content == "echo: two"
    assert clock.slept
    assert 60 <= sum(clock.slept) <= 62


def test_max_wait_is_a_bound(clock: FakeClock) -> None:
    llm = router(clock, Route(fake("a"), name="a", limits=["1/hour"]), max_wait=60)
    llm.invoke("one")
    with pytest.raises(QuotaExhaustedError):
        llm.invoke("two")
    assert clock.slept == []


async def test_async_waits_on_the_clock_too(clock: FakeClock) -> None:
    llm = router(clock, Route(fake("a"), name="a", limits=["1/minute"]), max_wait=90)
    await llm.ainvoke("one")
    assert (await llm.ainvoke("two")).content == "echo: two"
    assert clock.slept


# --------------------------------------------------------------- streaming


def test_stream_falls_back_when_a_route_fails_before_its_first_chunk(
    clock: FakeClock,
) -> None:
    llm = router(
        clock,
        Route(fake("a", [openai_rate_limit()]), name="a", priority=1),
        Route(fake("b"), name="b", priority=2),
    )
    chunks = list(llm.stream("hello there"))
    assert "".join(str(c.content) for c in chunks) == "echo: hello there"
    assert chunks[0].response_metadata["route"] == "b"


def test_stream_error_after_the_first_chunk_surfaces(clock: FakeClock) -> None:
    a = fake("a", fail_after_chunks=2)
    b = fake("b")
    llm = router(clock, Route(a, name="a", priority=1), Route(b, name="b", priority=2))
    stream = llm.stream("one two three four")
    received = [str(next(stream).content), str(next(stream).content)]
    with pytest.raises(ConnectionError):
        next(stream)
    assert received == ["echo: ", "one "]
    assert b.calls == 0
    assert llm.get_stats()["errors"] == 1


async def test_astream_falls_back_before_the_first_chunk(clock: FakeClock) -> None:
    llm = router(
        clock,
        Route(fake("a", [openai_timeout()]), name="a", priority=1),
        Route(fake("b"), name="b", priority=2),
    )
    chunks = [c async for c in llm.astream("hey")]
    assert chunks[0].response_metadata["route"] == "b"


def test_an_abandoned_stream_still_settles_its_reservation(clock: FakeClock) -> None:
    llm = router(
        clock,
        Route(fake("a"), name="a", limits=["1000000 tokens/day"]),
        max_tokens=5000,
    )
    stream = llm.stream("one two three")
    next(stream)
    stream.close()
    (usage,) = llm.usage()
    assert usage.used < 5000  # the estimate was replaced, not left standing
