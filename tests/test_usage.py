"""Token usage and cost: counted once, in the ledger and in every usage callback."""

from __future__ import annotations

from typing import Any

import call_paths
import pytest
from langchain_core.callbacks import get_usage_metadata_callback
from langchain_core.messages import AIMessage, UsageMetadata

from langchain_quota_router import (
    QuotaRoutedChatModel,
    QuotaUsageCallbackHandler,
    Route,
    get_quota_usage_callback,
)
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.testing import FakeVendorChatModel

PROMPT = "How many moons does Mars have?"
ANSWER = "Mars has two moons, Phobos and Deimos."
LIMITS = ["5/minute", "1000 tokens/minute"]
PRICES = (0.5, 1.5)
PATHS = ["invoke", "ainvoke", "stream", "astream"]


def vendor_usage(answer: str = ANSWER, model: str = "m1") -> UsageMetadata:
    """What the fake vendor reports for one call answering ``PROMPT``."""
    message = FakeVendorChatModel(model=model, script=[answer]).invoke(PROMPT)
    assert message.usage_metadata is not None
    return message.usage_metadata


def price(usage: UsageMetadata, prices: tuple[float, float] = PRICES) -> float:
    return (usage["input_tokens"] * prices[0] + usage["output_tokens"] * prices[1]) / 1_000_000


def make_router(
    clock: FakeClock, *, prices: tuple[float, float] | None = None, **options: Any
) -> tuple[QuotaRoutedChatModel, FakeVendorChatModel]:
    fake = FakeVendorChatModel(model="m1", script=[ANSWER])
    router = QuotaRoutedChatModel(
        routes=[Route(fake, name="a", limits=LIMITS, prices=prices)],
        ledger="memory://",
        clock=clock,
        **options,
    )
    return router, fake


def pool_spent(router: QuotaRoutedChatModel, pool: str, metric: str) -> int:
    (used,) = [u.used for u in router.usage() if u.pool == pool and u.limit.metric == metric]
    return used


async def ask(llm: Any, how: str, prompt: str = PROMPT, **kwargs: Any) -> AIMessage:
    """One call by ``how`` (``call_paths.ask``), with this file's prompt by default."""
    return await call_paths.ask(llm, how, prompt, **kwargs)


# ---------------------------------------------------------------- the ledger


@pytest.mark.parametrize("how", PATHS)
async def test_each_call_reaches_the_ledger_once_whatever_callbacks_listen(
    clock: FakeClock, how: str
) -> None:
    router, _ = make_router(clock, cache=False)
    handler = QuotaUsageCallbackHandler()
    with get_usage_metadata_callback(), get_quota_usage_callback():
        await ask(router, how, config={"callbacks": [handler]})
    assert pool_spent(router, "a", "tokens") == vendor_usage()["total_tokens"]
    assert pool_spent(router, "a", "requests") == 1


@pytest.mark.parametrize("how", PATHS)
async def test_the_ledger_holds_what_the_vendor_reported_not_the_estimate(
    clock: FakeClock, how: str
) -> None:
    # The reservation assumes 256 output tokens; settling replaces it with the real
    # usage.
    router, _ = make_router(clock, cache=False)
    await ask(router, how)
    assert pool_spent(router, "a", "tokens") == vendor_usage()["total_tokens"]


# ------------------------------------------------- LangChain's usage callback


@pytest.mark.parametrize("how", PATHS)
async def test_usage_metadata_callback_counts_a_routed_call_once(
    clock: FakeClock, how: str
) -> None:
    router, _ = make_router(clock, cache=False)
    with get_usage_metadata_callback() as usage:
        message = await ask(router, how)
    assert usage.usage_metadata == {"m1": vendor_usage()}
    assert message.usage_metadata == vendor_usage()


# ---------------------------------------------------- the router's own report


@pytest.mark.parametrize("how", PATHS)
async def test_quota_usage_is_reported_per_route_and_model(clock: FakeClock, how: str) -> None:
    fake_a = FakeVendorChatModel(model="m1", script=[ANSWER])
    fake_b = FakeVendorChatModel(model="m2", script=["Two."])
    router = QuotaRoutedChatModel(
        routes=[
            Route(fake_a, name="a", limits=LIMITS),
            Route(fake_b, name="b", limits=LIMITS, priority=1),
        ],
        ledger="memory://",
        clock=clock,
        cache=False,
    )
    with get_quota_usage_callback() as report:
        await ask(router, how)
        await ask(router, how)
        await ask(router, how, preferred="b")

    a, b = report.usage[("a", "m1")], report.usage[("b", "m2")]
    one_a, one_b = vendor_usage(), vendor_usage("Two.", "m2")
    assert (a.calls, a.input_tokens, a.output_tokens) == (
        2,
        2 * one_a["input_tokens"],
        2 * one_a["output_tokens"],
    )
    assert (b.calls, b.input_tokens, b.output_tokens) == (
        1,
        one_b["input_tokens"],
        one_b["output_tokens"],
    )
    assert set(report.usage) == {("a", "m1"), ("b", "m2")}
    assert report.total_tokens == 2 * one_a["total_tokens"] + one_b["total_tokens"]
    assert (a.cost, b.cost) == (0.0, 0.0)


@pytest.mark.parametrize("how", PATHS)
async def test_cost_follows_the_route_prices(clock: FakeClock, how: str) -> None:
    router, _ = make_router(clock, prices=PRICES, cache=False)
    with get_quota_usage_callback() as report:
        message = await ask(router, how)
    expected = price(vendor_usage())
    assert expected > 0
    assert message.response_metadata["cost"] == pytest.approx(expected)
    assert report.usage[("a", "m1")].cost == pytest.approx(expected)
    assert report.total_cost == pytest.approx(expected)


def test_cost_arithmetic_is_usd_per_million_tokens(clock: FakeClock) -> None:
    router, _ = make_router(clock, prices=(3.0, 15.0), cache=False)
    usage = vendor_usage()
    with get_quota_usage_callback() as report:
        router.invoke(PROMPT)
    assert report.total_cost == pytest.approx(
        usage["input_tokens"] * 3e-6 + usage["output_tokens"] * 15e-6
    )


@pytest.mark.parametrize("how", PATHS)
async def test_no_cost_without_prices(clock: FakeClock, how: str) -> None:
    router, _ = make_router(clock, cache=False)
    with get_quota_usage_callback() as report:
        message = await ask(router, how)
    assert "cost" not in message.response_metadata
    assert report.total_cost == 0.0
    assert report.total_tokens == vendor_usage()["total_tokens"]


@pytest.mark.parametrize("second_how", PATHS)
@pytest.mark.parametrize("first_how", PATHS)
async def test_a_cache_hit_counts_as_a_call_with_no_tokens_or_cost(
    clock: FakeClock, first_how: str, second_how: str
) -> None:
    router, fake = make_router(clock, prices=PRICES)
    with get_quota_usage_callback() as report:
        await ask(router, first_how)
        hit = await ask(router, second_how)
    assert fake.calls == 1
    assert "cost" not in hit.response_metadata
    entry = report.usage[("a", "m1")]
    one = vendor_usage()
    assert (entry.calls, entry.cache_hits) == (2, 1)
    assert (entry.input_tokens, entry.output_tokens) == (
        one["input_tokens"],
        one["output_tokens"],
    )
    assert entry.cost == pytest.approx(price(one))


@pytest.mark.parametrize("how", ["stream", "astream"])
async def test_a_stream_reports_its_cost_once(clock: FakeClock, how: str) -> None:
    router, _ = make_router(clock, prices=PRICES, cache=False)
    with get_quota_usage_callback() as report:
        message = await ask(router, how)
    expected = price(vendor_usage())
    assert message.response_metadata["cost"] == pytest.approx(expected)
    assert report.usage[("a", "m1")].cost == pytest.approx(expected)
    assert report.usage[("a", "m1")].calls == 1


@pytest.mark.parametrize("how", ["stream", "astream"])
async def test_only_one_stream_chunk_carries_the_cost(clock: FakeClock, how: str) -> None:
    router, _ = make_router(clock, prices=PRICES, cache=False)
    if how == "stream":
        chunks = list(router.stream(PROMPT))
    else:
        chunks = [chunk async for chunk in router.astream(PROMPT)]
    costs = [c.response_metadata["cost"] for c in chunks if "cost" in c.response_metadata]
    assert costs == [pytest.approx(price(vendor_usage()))]


def test_a_handler_both_active_and_passed_counts_once(clock: FakeClock) -> None:
    router, _ = make_router(clock, cache=False)
    with get_quota_usage_callback() as report:
        router.invoke(PROMPT, config={"callbacks": [report]})
    assert report.usage[("a", "m1")].calls == 1
    assert report.total_tokens == vendor_usage()["total_tokens"]


def test_a_handler_passed_in_config_counts_the_call(clock: FakeClock) -> None:
    router, _ = make_router(clock, cache=False)
    handler = QuotaUsageCallbackHandler()
    router.invoke(PROMPT, config={"callbacks": [handler]})
    router.invoke(PROMPT)  # not listening
    assert handler.usage[("a", "m1")].calls == 1


def test_nothing_is_counted_after_the_with_block(clock: FakeClock) -> None:
    router, _ = make_router(clock, cache=False)
    with get_quota_usage_callback() as report:
        router.invoke(PROMPT)
    router.invoke(PROMPT)
    assert report.usage[("a", "m1")].calls == 1


# ------------------------------------------------------------------ fallback


@pytest.mark.parametrize("how", PATHS)
async def test_after_a_fallback_usage_belongs_to_the_route_that_answered(
    clock: FakeClock, how: str
) -> None:
    broken = FakeVendorChatModel(model="m1", script=[ConnectionError("boom")])
    backup = FakeVendorChatModel(model="m2", script=[ANSWER])
    router = QuotaRoutedChatModel(
        routes=[
            Route(broken, name="a", limits=LIMITS, prices=(9.0, 9.0)),
            Route(backup, name="b", limits=LIMITS, prices=PRICES, priority=1),
        ],
        ledger="memory://",
        clock=clock,
        cache=False,
    )
    with get_quota_usage_callback() as report, get_usage_metadata_callback() as lc:
        message = await ask(router, how)

    one = vendor_usage(model="m2")
    assert (broken.calls, backup.calls) == (1, 1)
    assert message.response_metadata["route"] == "b"
    assert set(report.usage) == {("b", "m2")}
    entry = report.usage[("b", "m2")]
    assert (entry.calls, entry.input_tokens, entry.output_tokens) == (
        1,
        one["input_tokens"],
        one["output_tokens"],
    )
    assert entry.cost == pytest.approx(price(one))
    assert lc.usage_metadata == {"m2": one}
    assert pool_spent(router, "b", "tokens") == one["total_tokens"]
    assert pool_spent(router, "a", "tokens") == 0
    assert router.get_stats()["fallbacks"] == 1
