"""Limits learned from the vendor's rate-limit headers, on success and on 429."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from call_paths import ask
from support.vendors import HeaderFake, openai_headers
from vendor_errors import _openai_response

from langchain_quota_router import QuotaRoutedChatModel, Route
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.testing import FakeVendorChatModel
from langchain_quota_router.web import status_snapshot


def make_router(
    clock: FakeClock,
    vendor: FakeVendorChatModel,
    *,
    limits: list[str] | None = None,
    ledger: str = "memory://",
) -> QuotaRoutedChatModel:
    backup = FakeVendorChatModel(model="backup", script=["from backup"])
    return QuotaRoutedChatModel(
        routes=[
            Route(vendor, name="vendor", limits=limits, priority=0),
            Route(backup, name="backup", priority=1),
        ],
        ledger=ledger,
        clock=clock,
        cache=False,
    )


async def test_zero_remaining_without_configured_limits_is_not_sent_the_next_call(
    clock: FakeClock, how: str
) -> None:
    vendor = HeaderFake(model="m", provider="openai", headers=[openai_headers(3, 0)])
    router = make_router(clock, vendor)

    first = await ask(router, how)
    second = await ask(router, how)

    assert first.response_metadata["route"] == "vendor"
    assert second.response_metadata["route"] == "backup"
    assert vendor.calls == 1
    clock.advance(61)
    assert (await ask(router, how)).response_metadata["route"] == "vendor"


async def test_a_learned_limit_is_enforced_shown_and_kept_in_the_ledger(
    clock: FakeClock, how: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    vendor = HeaderFake(model="m", provider="openai", headers=[openai_headers(2, 1)])
    router = make_router(clock, vendor, ledger=url)

    await ask(router, how)
    answers = [(await ask(router, how)).response_metadata["route"] for _ in range(2)]

    assert answers == ["vendor", "backup"]
    learned = router.learned_limits()
    assert [(x.pool, str(x.limit), x.learned_at) for x in learned] == [
        ("vendor", "2/minute", clock.now())
    ]
    shown = [u for u in router.usage() if u.pool == "vendor"]
    assert [(str(u.limit), u.learned_at) for u in shown] == [("2/minute", clock.now())]
    limits = status_snapshot(router)["pools"][0]["limits"]
    assert limits[0]["learned_at_epoch"] == clock.now()

    # Another process sharing the ledger enforces it before its first call.
    other_vendor = HeaderFake(model="m", provider="openai", headers=[{}])
    other = make_router(clock, other_vendor, ledger=url)
    assert (await ask(other, how)).response_metadata["route"] == "backup"
    assert other_vendor.calls == 0


async def test_a_configured_limit_wins_over_what_the_headers_say(
    clock: FakeClock, how: str
) -> None:
    vendor = HeaderFake(model="m", provider="openai", headers=[openai_headers(1000, 999)])
    router = make_router(clock, vendor, limits=["5/minute"])

    for _ in range(5):
        assert (await ask(router, how)).response_metadata["route"] == "vendor"

    assert router.learned_limits() == []
    assert [str(lim) for lim in router.pool_limits["vendor"]] == ["5/minute"]
    assert (await ask(router, how)).response_metadata["route"] == "backup"


async def test_headers_on_a_429_are_learned_too(clock: FakeClock, how: str) -> None:
    headers = {
        "retry-after": "7",
        "x-ratelimit-limit-tokens": "8000",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "7s",
    }
    refusal = openai.RateLimitError(
        "Error code: 429", response=_openai_response(429, headers), body={"message": "slow down"}
    )
    vendor = FakeVendorChatModel(model="m", provider="groq", script=[refusal, "ok"])
    router = make_router(clock, vendor)

    await ask(router, how)

    assert [str(x.limit) for x in router.learned_limits()] == ["8000 tokens/minute"]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            {
                "x-ratelimit-limit-requests-day": "14400",
                "x-ratelimit-remaining-requests-day": "14399",
                "x-ratelimit-reset-requests-day": "33011.38",
            },
            "14400/day",
        ),
        (
            {
                "x-ratelimit-limit-tokens-minute": "50000",
                "x-ratelimit-remaining-tokens-minute": "49000",
            },
            "50000 tokens/minute",
        ),
        (
            {
                "x-ratelimit-limit-requests": "1000",
                "x-ratelimit-remaining-requests": "999",
                "x-ratelimit-reset-requests": "1m26.4s",
            },
            "1000/24h",
        ),
    ],
    ids=["cerebras-day", "mistral-minute", "groq-requests-per-day"],
)
def test_the_window_comes_from_the_header_or_the_vendor(
    clock: FakeClock, headers: dict[str, str], expected: str
) -> None:
    vendor = HeaderFake(model="m", provider="groq", headers=[headers])
    router = make_router(clock, vendor)

    router.invoke("hi")

    assert [str(x.limit) for x in router.learned_limits()] == [expected]
