"""Usage history: each pool's limits' use over time, from the fleet's counts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from support.backends import SHARED

from langchain_quota_router import QuotaRoutedChatModel, Route
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.quota.fleet import FleetCounters
from langchain_quota_router.quota.ledger import Demand, Ledger
from langchain_quota_router.quota.ledger.sqlite import SQLiteLedger
from langchain_quota_router.testing import FakeVendorChatModel

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, the fake clock's start
COLUMNS = ["time", "time_epoch", "pool", "limit", "metric", "window", "used", "amount", "percent"]


def make_router(ledger: str | Ledger, clock: FakeClock) -> QuotaRoutedChatModel:
    return QuotaRoutedChatModel(
        routes=[
            Route(
                FakeVendorChatModel(model="m1"),
                name="groq",
                limits=["3/minute", "10/day", "100 tokens/minute", "1000 tokens/once"],
                priority=1,
            ),
            Route(
                FakeVendorChatModel(model="m2"),
                name="gemini",
                limits=["30/hour", "100/month"],
                priority=2,
            ),
        ],
        ledger=ledger,
        cache=False,
        clock=clock,
    )


def spend(router: QuotaRoutedChatModel, pool: str, tokens_in: int = 0, tokens_out: int = 0) -> None:
    """One call's spend, as RoutedCall reports it when it settles."""
    router.stats.spent(pool, pool, Demand(1, tokens_in, tokens_out))


def at(rows: list[dict[str, Any]], when: float, limit: str) -> dict[str, Any]:
    (row,) = [r for r in rows if r["time_epoch"] == when and r["limit"] == limit]
    return row


def test_rows_follow_each_limit_over_time(clock: FakeClock) -> None:
    router = make_router("memory://", clock)
    spend(router, "groq", 30, 10)  # 00:00:00
    clock.set(T0 + 20)
    spend(router, "groq", 20, 0)  # 00:00:20
    clock.set(T0 + 130)
    spend(router, "groq", 5, 5)  # 00:02:10
    clock.set(T0 + 600)

    rows = router.history(since=T0, step=60)

    assert list(rows[0]) == COLUMNS
    times = sorted({r["time_epoch"] for r in rows})
    assert times == [T0 + 60 * i for i in range(11)]
    # A sliding minute counts the minute before each point.
    assert at(rows, T0 + 60, "3/minute")["used"] == 2
    assert at(rows, T0 + 60, "3/minute")["percent"] == pytest.approx(66.67)
    assert at(rows, T0 + 120, "3/minute")["used"] == 0
    assert at(rows, T0 + 180, "3/minute")["used"] == 1
    assert at(rows, T0 + 60, "100 tokens/minute")["used"] == 60
    # The calendar day and the one-time credit add up.
    assert [at(rows, T0 + 60 * i, "10/day")["used"] for i in (0, 1, 2, 3, 10)] == [0, 2, 2, 3, 3]
    assert at(rows, T0 + 600, "1000 tokens/once")["used"] == 70
    assert at(rows, T0 + 120, "1000 tokens/once")["used"] == 60
    row = at(rows, T0 + 180, "10/day")
    assert row == {
        "time": "2026-01-01T00:03:00+00:00",
        "time_epoch": T0 + 180,
        "pool": "groq",
        "limit": "10/day",
        "metric": "requests",
        "window": "day",
        "used": 3,
        "amount": 10,
        "percent": 30.0,
    }
    # The other pool is there, unused.
    assert at(rows, T0 + 600, "100/month")["used"] == 0


def test_the_last_point_is_now(clock: FakeClock) -> None:
    router = make_router("memory://", clock)
    spend(router, "groq")
    clock.set(T0 + 90)
    rows = router.history(since=T0, step=60)
    assert sorted({r["time_epoch"] for r in rows}) == [T0, T0 + 60, T0 + 90]
    assert at(rows, T0 + 90, "3/minute")["used"] == 1


def test_now_just_after_a_step_is_one_row_not_two(clock: FakeClock) -> None:
    # Rows are stamped to the second: "now" 0.4 s after a step's point used to give
    # two rows with the same time, and the notebook's pivot refused them (flaky, one
    # run in thirty).
    router = make_router("memory://", clock)
    spend(router, "groq")
    clock.set(T0 + 60.4)
    rows = router.history(since=T0, step=30)
    keys = [(r["time"], r["pool"], r["limit"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert max(r["time_epoch"] for r in rows) == T0 + 60.4


def test_rows_make_a_dataframe() -> None:
    pd = pytest.importorskip("pandas")
    clock = FakeClock()
    router = make_router("memory://", clock)
    spend(router, "gemini")
    clock.advance(3600)

    frame = pd.DataFrame(router.history())

    assert list(frame.columns) == COLUMNS
    assert frame["time"].map(pd.Timestamp).dt.tz is not None
    assert str(frame["used"].dtype) == "int64"
    assert set(frame["pool"]) == {"groq", "gemini"}
    pivot = frame[frame.pool == "gemini"].pivot(index="time", columns="limit", values="percent")
    assert list(pivot.columns) == ["100/month", "30/hour"]


def test_days_back_are_read_from_hourly_buckets(clock: FakeClock) -> None:
    router = make_router("memory://", clock)
    for n in range(4):  # a call a day at 10:00 for four days
        clock.set(T0 + n * 86_400 + 10 * 3600)
        spend(router, "gemini")
        spend(router, "groq")
    clock.set(T0 + 4 * 86_400)

    rows = router.history(since=dt.timedelta(days=4), step=dt.timedelta(hours=6))

    # Within two days, minute detail: the minute limit has points.
    recent = [r for r in rows if r["limit"] == "3/minute"]
    assert recent
    assert min(r["time_epoch"] for r in recent) >= clock.now() - 2 * 86_400
    # Further back only limits of an hour or more (from hourly buckets).
    day = {r["time_epoch"]: r["used"] for r in rows if r["limit"] == "10/day"}
    assert day[T0 + 12 * 3600] == 1  # day one, 12:00
    assert day[T0 + 86_400] == 1  # the end of day one, midnight, counted in its day
    assert day[T0 + 86_400 + 6 * 3600] == 0  # day two before its call
    month = {r["time_epoch"]: r["used"] for r in rows if r["limit"] == "100/month"}
    assert month[T0 + 4 * 86_400] == 4
    assert month[T0 + 12 * 3600] == 1
    credit = {r["time_epoch"]: r["used"] for r in rows if r["limit"] == "1000 tokens/once"}
    assert credit == dict.fromkeys(credit, 0)  # no tokens were spent


def test_a_monthly_limit_starts_again_with_the_month(clock: FakeClock) -> None:
    router = make_router("memory://", clock)
    start = dt.datetime(2026, 1, 20, tzinfo=dt.timezone.utc).timestamp()
    for day in range(20):  # Jan 20 .. Feb 8, one call a day
        clock.set(start + day * 86_400 + 3600)
        spend(router, "gemini")
    clock.set(start + 20 * 86_400)

    rows = router.history(since=start, step=dt.timedelta(days=1))
    month = {r["time"][:10]: r["used"] for r in rows if r["limit"] == "100/month"}

    assert month["2026-01-25"] == 5  # Jan 20..24
    assert month["2026-02-01"] == 12  # the end of January: Jan 20..31
    assert month["2026-02-02"] == 1  # February's first day
    assert month["2026-02-09"] == 8


@pytest.mark.parametrize("backend", SHARED)
def test_another_router_on_the_ledger_sees_the_history(
    backend: str, make_ledger: Callable[[str], Ledger], clock: FakeClock
) -> None:
    first = make_ledger(backend)
    second = SQLiteLedger(first.path) if isinstance(first, SQLiteLedger) else make_ledger(backend)
    worker = make_router(first, clock)
    viewer = make_router(second, clock)
    for _ in range(2):
        spend(worker, "groq", 10, 5)
    spend(viewer, "groq", 1, 1)
    fleet = worker.stats.fleet
    assert isinstance(fleet, FleetCounters)
    fleet.flush()
    clock.advance(30)

    rows = viewer.history(since=T0, step=60)

    assert at(rows, clock.now(), "3/minute")["used"] == 3
    assert at(rows, clock.now(), "1000 tokens/once")["used"] == 32


@pytest.mark.parametrize("how", ["invoke", "stream"])
def test_calls_through_the_router_make_the_history(clock: FakeClock, how: str) -> None:
    router = make_router("memory://", clock)
    for i in range(4):  # three on groq, the fourth falls back to gemini
        if how == "invoke":
            router.invoke(f"question {i}")
        else:
            list(router.stream(f"question {i}"))
        clock.advance(5)

    rows = router.history(since=T0, step=60)
    now = clock.now()

    # The history's last point agrees with what the ledger counts now.
    for usage in router.usage():
        assert at(rows, now, str(usage.limit))["used"] == usage.used, usage.limit


def test_since_and_step_are_checked(clock: FakeClock) -> None:
    router = make_router("memory://", clock)
    with pytest.raises(ValueError, match="positive"):
        router.history(step=0)
    with pytest.raises(ValueError, match="larger step"):
        router.history(since=dt.timedelta(days=30), step=1)
    with pytest.raises(TypeError, match="since"):
        router.history(since="yesterday")  # type: ignore[arg-type]
    # At most 35 days back, the hourly buckets' life; default step keeps <= 240 points.
    rows = router.history(since=dt.timedelta(days=90))
    first = min(r["time_epoch"] for r in rows)
    assert first >= clock.now() - 35 * 86_400
    assert len({r["time_epoch"] for r in rows}) <= 241
    # A naive datetime is UTC.
    naive = router.history(since=dt.datetime(2025, 12, 31, 23, 0), step=1800)
    assert min(r["time_epoch"] for r in naive) == T0 - 3600
