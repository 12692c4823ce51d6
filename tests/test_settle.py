"""A paid answer is never discarded: a settle the ledger fails is retried, not raised.

The vendor has answered by the time a reservation is settled. A ledger that stumbles
right then (Redis restarting, a locked file) must cost neither the answer nor the
count: the caller gets the answer, a warning says what is unsettled, and one
background thread retries, a bounded number of times.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from call_paths import PATHS, ask
from langchain_core.messages import AIMessageChunk

from langchain_quota_router import LedgerError, QuotaRoutedChatModel, Route
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.quota.ledger import Demand, Reservation
from langchain_quota_router.quota.ledger import settle as _settle
from langchain_quota_router.quota.ledger.memory import MemoryLedger
from langchain_quota_router.quota.limits import Limit
from langchain_quota_router.testing import FakeVendorChatModel

T0 = 1_767_225_600.0
LIMITS = [Limit.parse("1000000 tokens/day"), Limit.parse("100/day")]


class StumblingLedger(MemoryLedger):
    """A memory ledger whose ``settle`` fails its first ``failures`` times."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.settle_calls = 0

    def settle(self, reservation: Reservation, used: Demand, now: float) -> None:
        self.settle_calls += 1
        if self.failures > 0:
            self.failures -= 1
            msg = "Redis ledger redis://ledger:6379/0 could not settle: Connection refused"
            raise LedgerError(msg)
        super().settle(reservation, used, now)


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> Iterator[_settle.Settler]:
    """The process's settler, retrying every 10 ms (at most 5 times)."""
    monkeypatch.setattr(_settle.SETTLER, "delays", (0.01,) * 5)
    yield _settle.SETTLER
    assert _settle.SETTLER.join(5.0)


def test_a_failed_settle_is_retried_in_the_background_until_it_lands(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = StumblingLedger(failures=3)
    settler = _settle.Settler(delays=(0.01,) * 5)
    res = ledger.reserve("p", LIMITS, Demand(1, 100, 900), T0)
    assert isinstance(res, Reservation)
    with caplog.at_level(logging.INFO, logger="langchain_quota_router"):
        assert settler.settle(ledger, res, Demand(1, 100, 20), T0 + 1) is False
        assert settler.join(5.0)
    assert ledger.settle_calls == 4
    assert [u.used for u in ledger.usage("p", LIMITS, T0 + 2)] == [120, 1]
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    # What is unsettled, in figures, and that the answer is kept.
    assert "'p'" in warning
    assert "1000 tokens counted as estimated where the call spent 1 and 120" in warning
    assert "answer is kept" in warning
    assert any("on retry 3" in r.getMessage() for r in caplog.records)


def test_retries_are_bounded_and_the_lease_is_the_last_resort(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = StumblingLedger(failures=1000)
    settler = _settle.Settler(delays=(0.01, 0.01))
    res = ledger.reserve("p", LIMITS, Demand(1, 100, 900), T0)
    assert isinstance(res, Reservation)
    with caplog.at_level(logging.WARNING, logger="langchain_quota_router"):
        settler.settle(ledger, res, Demand(1, 100, 20), T0 + 1)
        assert settler.join(5.0)
    assert ledger.settle_calls == 3
    assert any("gave up settling" in r.getMessage() for r in caplog.records)
    # The lease still gives the output estimate back when it runs out.
    assert [u.used for u in ledger.usage("p", LIMITS, T0 + 901)] == [100, 1]


def _router(ledger: MemoryLedger, clock: FakeClock, **options: Any) -> QuotaRoutedChatModel:
    vendor = FakeVendorChatModel(model="m1", script=["Mars has two moons."])
    return QuotaRoutedChatModel(
        routes=[Route(vendor, name="a", limits=["1000000 tokens/day", "100/day"])],
        ledger=ledger,
        clock=clock,
        cache=False,
        **options,
    )


@pytest.mark.parametrize("how", PATHS)
async def test_the_caller_gets_the_answer_when_settling_fails(
    how: str,
    clock: FakeClock,
    fast_retries: _settle.Settler,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = StumblingLedger(failures=2)
    llm = _router(ledger, clock, max_tokens=4000)
    with caplog.at_level(logging.WARNING, logger="langchain_quota_router"):
        answer = await ask(llm, how, "How many moons does Mars have?")
    assert "two moons" in answer.text
    assert any("could not settle" in r.getMessage() for r in caplog.records)
    assert fast_retries.join(5.0)
    tokens, requests = (u.used for u in llm.usage())
    assert requests == 1
    assert 0 < tokens < 4000  # the real spend, not the estimate


@pytest.mark.parametrize("how", ["stream", "astream"])
async def test_an_abandoned_stream_keeps_its_chunk_when_settling_fails(
    how: str, clock: FakeClock, fast_retries: _settle.Settler
) -> None:
    ledger = StumblingLedger(failures=2)
    llm = _router(ledger, clock, max_tokens=4000)
    first: AIMessageChunk
    if how == "stream":
        stream = llm.stream("one two three")
        first = next(stream)
        stream.close()  # the caller stops reading: the cancellation path
    else:
        astream = llm.astream("one two three")
        first = await anext(astream)
        await astream.aclose()
    assert first.content
    assert fast_retries.join(5.0)
    tokens, requests = (u.used for u in llm.usage())
    assert requests == 1
    assert tokens < 4000
