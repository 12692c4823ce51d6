"""Routing: admission before sending, selection, failures and fallback, giving up.

Every routing behaviour runs on the four call paths (``how``: invoke, ainvoke,
stream, astream) through ``call_paths.ask``; only what is about streams themselves
(falling back before the first chunk, an error after it, an abandoned stream) runs
on the two streaming paths alone.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncGenerator, Generator
from typing import Any, cast

import pytest
from call_paths import ask
from langchain_core.exceptions import ModelRateLimitError
from langchain_core.messages import AIMessageChunk
from support.routers import router
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
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.testing import FakeVendorChatModel

T0 = 1_767_225_600.0

STREAMS = ["stream", "astream"]


def fake(name: str, script: list[Any] | None = None, **kw: Any) -> FakeVendorChatModel:
    return FakeVendorChatModel(model=name, script=script or [], **kw)


async def answered_by(llm: QuotaRoutedChatModel, how: str, prompt: str = "hi", **kw: Any) -> str:
    return str((await ask(llm, how, prompt, **kw)).response_metadata["route"])


async def chunks_of(llm: QuotaRoutedChatModel, how: str, prompt: str) -> list[AIMessageChunk]:
    """Every chunk of a stream (``how`` is ``"stream"`` or ``"astream"``), unmerged."""
    if how == "stream":
        return list(llm.stream(prompt))
    return [chunk async for chunk in llm.astream(prompt)]


class Reader:
    """One stream (``how`` is ``"stream"`` or ``"astream"``), read a chunk at a time."""

    def __init__(self, llm: QuotaRoutedChatModel, how: str, prompt: str) -> None:
        self._sync: Generator[AIMessageChunk, None, None] | None = None
        self._async: AsyncGenerator[AIMessageChunk, None] | None = None
        if how == "stream":
            self._sync = cast("Generator[AIMessageChunk, None, None]", llm.stream(prompt))
        else:
            self._async = cast("AsyncGenerator[AIMessageChunk, None]", llm.astream(prompt))

    async def next(self) -> AIMessageChunk:
        if self._sync is not None:
            return next(self._sync)
        assert self._async is not None
        return await anext(self._async)

    async def close(self) -> None:
        """Stop reading, as a caller who breaks out of the loop does."""
        if self._sync is not None:
            self._sync.close()
        elif self._async is not None:
            await self._async.aclose()


# --------------------------------------------------------------- admission


async def test_a_route_without_room_is_skipped_without_being_called(
    clock: FakeClock, how: str
) -> None:
    groq, gemini = fake("llama"), fake("gemini")
    llm = router(
        clock,
        Route(groq, name="groq", limits=["2/minute"], priority=1),
        Route(gemini, name="gemini", priority=2),
    )
    assert [await answered_by(llm, how) for _ in range(3)] == ["groq", "groq", "gemini"]
    assert groq.calls == 2
    assert gemini.calls == 1
    clock.advance(61)
    assert await answered_by(llm, how) == "groq"


async def test_prompt_plus_max_tokens_must_fit_the_token_limit(clock: FakeClock, how: str) -> None:
    small, big = fake("small"), fake("big")
    llm = router(
        clock,
        Route(small, name="small", limits=["300 tokens/minute"], priority=1),
        Route(big, name="big", priority=2),
    )
    # The prompt's estimate is conservative until the vendor has reported a few
    # prompts (it allows for a preamble the vendor may add): well under 100 tokens.
    assert await answered_by(llm, how, max_tokens=200) == "small"
    assert await answered_by(llm, how, max_tokens=400) == "big"  # can never fit in 300
    assert small.calls == 1


async def test_settles_the_reservation_with_the_vendors_real_usage(
    clock: FakeClock, how: str
) -> None:
    llm = router(clock, Route(fake("m"), name="a", limits=["10000 tokens/day"]))
    message = await ask(llm, how, "count me", max_tokens=2000)
    assert message.usage_metadata is not None
    (usage,) = llm.usage()
    assert usage.used == message.usage_metadata["total_tokens"]  # not the 2000 estimate


async def test_routes_naming_one_pool_share_its_quota(clock: FakeClock, how: str) -> None:
    llama, mixtral, other = fake("llama"), fake("mixtral"), fake("other")
    llm = router(
        clock,
        Route(llama, name="groq-llama", pool="groq-org", limits=["3/minute"], priority=1),
        Route(mixtral, name="groq-mixtral", pool="groq-org", priority=2),
        Route(other, name="other", priority=3),
    )
    assert [await answered_by(llm, how) for _ in range(3)] == ["groq-llama"] * 3
    assert await answered_by(llm, how) == "other"  # mixtral's pool is the same, already full
    assert mixtral.calls == 0


# --------------------------------------------------------------- selection


async def test_priority_sends_everything_to_the_lowest_number_first(
    clock: FakeClock, how: str
) -> None:
    llm = router(
        clock,
        Route(fake("paid"), name="paid", priority=5),
        Route(fake("free"), name="free", priority=1),
    )
    assert {await answered_by(llm, how) for _ in range(5)} == {"free"}


async def test_spread_sends_each_call_to_the_route_with_most_room(
    clock: FakeClock, how: str
) -> None:
    llm = router(
        clock,
        Route(fake("a"), name="a", limits=["10/day"]),
        Route(fake("b"), name="b", limits=["10/day"]),
        strategy="spread",
    )
    served = [await answered_by(llm, how) for _ in range(10)]
    assert served.count("a") == served.count("b") == 5
    assert [u.used for u in llm.usage()] == [5, 5]


async def test_preferred_route_goes_first_and_still_falls_back(clock: FakeClock, how: str) -> None:
    llm = router(
        clock,
        Route(fake("a"), name="a", priority=1),
        Route(fake("b"), name="b", limits=["1/minute"], priority=2),
    )
    assert await answered_by(llm, how, preferred="b") == "b"
    assert await answered_by(llm, how, preferred="b") == "a"  # b is full: falls back
    with pytest.raises(ValueError, match="preferred route 'c'"):
        await ask(llm, how, "hi", preferred="c")


# ---------------------------------------------------------------- failures


async def test_rate_limit_blocks_the_pool_for_retry_after_then_it_comes_back(
    clock: FakeClock, how: str
) -> None:
    first = fake("a", [openai_rate_limit(retry_after="20"), "ok"])
    llm = router(
        clock,
        Route(first, name="a", priority=1),
        Route(fake("b"), name="b", priority=2),
    )
    assert await answered_by(llm, how) == "b"
    assert await answered_by(llm, how) == "b"  # blocked: not called again
    assert first.calls == 1
    clock.advance(20)
    assert await answered_by(llm, how) == "a"
    assert llm.get_stats()["fallbacks"] == 2


async def test_langchain_core_model_rate_limit_error_is_a_rate_limit(
    clock: FakeClock, how: str
) -> None:
    first = fake("a", [ModelRateLimitError("slow down")])
    llm = router(
        clock,
        Route(first, name="a", priority=1),
        Route(fake("b"), name="b", priority=2),
        rate_limit_cooldown=45,
    )
    assert await answered_by(llm, how) == "b"
    clock.advance(44)
    assert await answered_by(llm, how) == "b"
    assert first.calls == 1


async def test_gemini_retry_info_sets_the_block(clock: FakeClock, how: str) -> None:
    gem = fake("gemini", [gemini_minute_limit("47s"), "ok"])
    llm = router(
        clock,
        Route(gem, name="gemini", priority=1),
        Route(fake("b"), name="b", priority=2),
    )
    assert await answered_by(llm, how) == "b"
    clock.advance(46)
    assert await answered_by(llm, how) == "b"
    clock.advance(1)
    assert await answered_by(llm, how) == "gemini"


async def test_daily_quota_wall_blocks_until_the_pools_day_resets(
    clock: FakeClock, how: str
) -> None:
    clock.set(T0 + 10 * 3600)
    groq = fake("llama", [groq_daily_wall(), "ok"])
    llm = router(
        clock,
        Route(groq, name="groq", limits=["1000/day"], priority=1),
        Route(fake("b"), name="b", priority=2),
    )
    assert await answered_by(llm, how) == "b"
    clock.set(T0 + 86_399)
    assert await answered_by(llm, how) == "b"
    clock.set(T0 + 86_400)
    assert await answered_by(llm, how) == "groq"


async def test_bad_key_disables_that_key_only_until_enabled(clock: FakeClock, how: str) -> None:
    bad = fake("a", [openai_auth_error(), "ok"])
    same_key = fake("a2")
    llm = router(
        clock,
        Route(bad, name="a", key="openai#1", priority=1),
        Route(same_key, name="a-mini", key="openai#1", priority=2),
        Route(fake("b"), name="b", key="openai#2", priority=3),
    )
    assert await answered_by(llm, how) == "b"
    clock.advance(10 * 86_400)
    assert await answered_by(llm, how) == "b"  # still disabled, days later
    assert same_key.calls == 0  # the same key on another model is disabled too
    llm.enable("a")
    assert await answered_by(llm, how) == "a"


async def test_timeout_cools_the_route_down_briefly(clock: FakeClock, how: str) -> None:
    slow = fake("a", [openai_timeout(), "ok"])
    llm = router(
        clock,
        Route(slow, name="a", priority=1),
        Route(fake("b"), name="b", priority=2),
        transient_cooldown=30,
    )
    assert await answered_by(llm, how) == "b"
    clock.advance(29)
    assert await answered_by(llm, how) == "b"
    clock.advance(1)
    assert await answered_by(llm, how) == "a"


async def test_context_too_long_moves_on_without_cooling_down(clock: FakeClock, how: str) -> None:
    short = fake("short", [openai_context_too_long(), "ok"])
    llm = router(
        clock,
        Route(short, name="short", priority=1),
        Route(fake("long"), name="long", priority=2),
    )
    assert await answered_by(llm, how) == "long"
    assert await answered_by(llm, how) == "short"  # not blocked


async def test_prompt_beyond_a_routes_context_window_skips_it(clock: FakeClock, how: str) -> None:
    small = fake("small")
    llm = router(
        clock,
        Route(small, name="small", context_window=50, priority=1),
        Route(fake("big"), name="big", context_window=100_000, priority=2),
    )
    assert await answered_by(llm, how, "word " * 400) == "big"
    assert small.calls == 0


async def test_other_bad_request_tries_one_more_route_then_raises_the_first_error(
    clock: FakeClock, how: str
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
        await ask(llm, how, "hi")
    assert raised.value is first_error
    assert c.calls == 0
    # Not cooled down: the next call tries the first route again.
    assert a.calls == 1
    with pytest.raises(type(first_error)):
        await ask(llm, how, "hi")
    assert a.calls == 2


async def test_bad_request_on_one_vendor_can_succeed_on_the_next(
    clock: FakeClock, how: str
) -> None:
    llm = router(
        clock,
        Route(
            fake("a", [openai_bad_request("unsupported 'logprobs'")]),
            name="a",
            priority=1,
        ),
        Route(fake("b"), name="b", priority=2),
    )
    assert await answered_by(llm, how) == "b"


async def test_failure_is_logged_without_the_key(
    clock: FakeClock, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    llm = router(
        clock,
        Route(fake("a", [openai_auth_error()]), name="a", priority=1),
        Route(fake("b"), name="b", priority=2),
    )
    with caplog.at_level(logging.DEBUG, logger="langchain_quota_router"):
        await ask(llm, how, "hi")
    assert "route a failed (authentication" in caplog.text
    assert "abcdefghijklmnopqrstuvwxyz123456" not in caplog.text


# --------------------------------------------------------------- giving up


async def test_exhausted_names_every_route_why_and_the_earliest_reset(
    clock: FakeClock, how: str
) -> None:
    llm = router(
        clock,
        Route(fake("a"), name="a", limits=["1/minute"]),
        Route(fake("b"), name="b", limits=["1/day"]),
        Route(fake("c", [openai_auth_error()]), name="c"),
    )
    await ask(llm, how, "one")
    await ask(llm, how, "two")
    # Two routes full and one key rejected: not all alike, and quota is among the
    # reasons, so it stays a QuotaExhaustedError (now also LangChain's rate-limit type).
    with pytest.raises(QuotaExhaustedError) as raised:
        await ask(llm, how, "three")
    error = raised.value
    assert isinstance(error, ModelRateLimitError)
    assert set(error.reasons) == {"a", "b", "c"}
    assert "1/minute is used up" in error.reasons["a"]
    assert "1/day is used up" in error.reasons["b"]
    assert error.reasons["c"].startswith("authentication")
    assert error.resets_at == dt.datetime.fromtimestamp(T0 + 61, dt.timezone.utc)
    assert "a: 1/minute is used up" in str(error)


async def test_exhausted_with_nothing_that_resets_says_so(clock: FakeClock, how: str) -> None:
    llm = router(clock, Route(fake("a"), name="a", limits=["1 requests/once"]))
    await ask(llm, how, "spend the credit")
    with pytest.raises(QuotaExhaustedError) as raised:
        await ask(llm, how, "again")
    assert raised.value.resets_at is None


async def test_max_wait_waits_for_the_earliest_reset_instead_of_raising(
    clock: FakeClock, how: str
) -> None:
    # On every path, async ones included: they wait on the clock too (asleep).
    llm = router(clock, Route(fake("a"), name="a", limits=["1/minute"]), max_wait=90)
    await ask(llm, how, "one")
    assert (await ask(llm, how, "two")).content == "echo: two"
    assert clock.slept
    assert 60 <= sum(clock.slept) <= 62


async def test_max_wait_is_a_bound(clock: FakeClock, how: str) -> None:
    llm = router(clock, Route(fake("a"), name="a", limits=["1/hour"]), max_wait=60)
    await ask(llm, how, "one")
    with pytest.raises(QuotaExhaustedError):
        await ask(llm, how, "two")
    assert clock.slept == []


# --------------------------------------------------------------- streaming
# Only streams have a "first chunk": before it the router may still fall back,
# after it the caller has seen the answer begin and the error must surface.


@pytest.mark.parametrize("how", STREAMS)
@pytest.mark.parametrize("error", [openai_rate_limit, openai_timeout])
async def test_a_stream_falls_back_when_a_route_fails_before_its_first_chunk(
    clock: FakeClock, how: str, error: Any
) -> None:
    llm = router(
        clock,
        Route(fake("a", [error()]), name="a", priority=1),
        Route(fake("b"), name="b", priority=2),
    )
    chunks = await chunks_of(llm, how, "hello there")
    assert "".join(str(c.content) for c in chunks) == "echo: hello there"
    assert chunks[0].response_metadata["route"] == "b"


@pytest.mark.parametrize("how", STREAMS)
async def test_a_stream_error_after_the_first_chunk_surfaces(clock: FakeClock, how: str) -> None:
    a = fake("a", fail_after_chunks=2)
    b = fake("b")
    llm = router(clock, Route(a, name="a", priority=1), Route(b, name="b", priority=2))
    stream = Reader(llm, how, "one two three four")
    received = [str((await stream.next()).content), str((await stream.next()).content)]
    with pytest.raises(ConnectionError):
        await stream.next()
    assert received == ["echo: ", "one "]
    assert b.calls == 0
    assert llm.get_stats()["errors"] == 1


@pytest.mark.parametrize("how", STREAMS)
async def test_an_abandoned_stream_still_settles_its_reservation(
    clock: FakeClock, how: str
) -> None:
    llm = router(
        clock,
        Route(fake("a"), name="a", limits=["1000000 tokens/day"]),
        max_tokens=5000,
    )
    stream = Reader(llm, how, "one two three")
    await stream.next()
    await stream.close()
    (usage,) = llm.usage()
    assert usage.used < 5000  # the estimate was replaced, not left standing
