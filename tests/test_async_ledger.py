"""The async ledger API, full pools remembered, and spread without reading every pool.

Contract tests run over every backend (memory, SQLite, Redis, fail-open over Redis);
router tests run on all four call paths.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from call_paths import ask
from langchain_core.messages import AIMessage
from support.backends import BACKENDS, LOCAL, SHARED

from langchain_quota_router import Limit, QuotaRoutedChatModel, Route
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.quota.ledger import Demand, Ledger, Refusal, Reservation
from langchain_quota_router.quota.ledger.full import FullPools
from langchain_quota_router.quota.ledger.sqlite import SQLiteLedger
from langchain_quota_router.testing import FakeVendorChatModel

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
ONE = Demand(1, 0, 0)


def limits(*texts: str) -> list[Limit]:
    return [Limit.parse(t) for t in texts]


def used(ledger: Ledger, pool: str, lims: list[Limit], now: float) -> list[int]:
    return [u.used for u in ledger.usage(pool, lims, now)]


# ---------------------------------------------------------------- async API


async def test_async_reserve_settle_and_usage_count_as_the_sync_ones(ledger: Ledger) -> None:
    lims = limits("3/minute", "1000 tokens/day")
    made = [await ledger.areserve("p", lims, Demand(1, 100, 200), T0) for _ in range(4)]
    assert [isinstance(m, Reservation) for m in made] == [True, True, True, False]
    first = made[0]
    assert isinstance(first, Reservation)
    await ledger.asettle(first, Demand(1, 100, 20), T0 + 1)
    usage = await ledger.ausage("p", lims, T0 + 2)
    assert [u.used for u in usage] == [3, 3 * 300 - 180]


async def test_a_reserve_cancelled_while_the_file_is_locked_is_taken_back(
    tmp_path: Path,
) -> None:
    ledger = SQLiteLedger(f"sqlite:///{tmp_path}/l.db")
    lims = limits("5/minute")
    ledger.usage("p", lims, T0)  # the file exists
    other = sqlite3.connect(tmp_path / "l.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        task = asyncio.ensure_future(ledger.areserve("p", lims, ONE, T0))
        await asyncio.sleep(0.05)
        assert not task.done()  # waiting for the lock, in the worker thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        other.execute("COMMIT")
        other.close()
    # The reservation is made once the lock is free, then taken back.
    for _ in range(50):
        await ledger.arun(lambda: None)
        if used(ledger, "p", lims, T0 + 1) == [0]:
            break
        await asyncio.sleep(0.01)
    assert used(ledger, "p", lims, T0 + 1) == [0]
    ledger.close()


# ------------------------------------------------------- full pools remembered


def test_a_full_pool_refuses_again_without_asking_until_it_frees(ledger: Ledger) -> None:
    lims = limits("2/minute")
    assert all(isinstance(ledger.reserve("p", lims, ONE, T0), Reservation) for _ in range(2))
    first = ledger.reserve("p", lims, ONE, T0 + 1)
    assert isinstance(first, Refusal)
    assert ledger.remembered("p", ONE, T0 + 2) == first
    again = ledger.reserve("p", lims, ONE, T0 + 2)
    assert isinstance(again, Refusal)
    assert again.retry_at == first.retry_at
    # Once the window frees it, the pool is asked again and admits.
    assert first.retry_at is not None
    assert ledger.remembered("p", ONE, first.retry_at) is None
    assert isinstance(ledger.reserve("p", lims, ONE, first.retry_at), Reservation)


def test_a_smaller_demand_is_still_asked(ledger: Ledger) -> None:
    lims = limits("1000 tokens/day")
    assert isinstance(ledger.reserve("p", lims, Demand(1, 900, 0), T0), Reservation)
    refused = ledger.reserve("p", lims, Demand(1, 200, 0), T0 + 1)
    assert isinstance(refused, Refusal)
    assert refused.room == 100
    assert isinstance(ledger.reserve("p", lims, Demand(1, 50, 0), T0 + 2), Reservation)


def test_a_settlement_that_gives_room_back_lifts_what_was_remembered(ledger: Ledger) -> None:
    lims = limits("1000 tokens/day")
    big = ledger.reserve("p", lims, Demand(1, 100, 800), T0)
    assert isinstance(big, Reservation)
    assert isinstance(ledger.reserve("p", lims, Demand(1, 100, 400), T0 + 1), Refusal)
    ledger.settle(big, Demand(1, 100, 50), T0 + 2)
    assert ledger.remembered("p", Demand(1, 100, 400), T0 + 3) is None
    assert isinstance(ledger.reserve("p", lims, Demand(1, 100, 400), T0 + 3), Reservation)


def test_reset_forgets_a_full_pool(ledger: Ledger) -> None:
    lims = limits("1/day")
    ledger.reserve("p", lims, ONE, T0)
    assert isinstance(ledger.reserve("p", lims, ONE, T0), Refusal)
    ledger.reset("p")
    assert isinstance(ledger.reserve("p", lims, ONE, T0), Reservation)


def _shared_pair(
    backend: str, make_ledger: Callable[[str], Ledger], tmp_path: Path
) -> tuple[Ledger, Ledger]:
    if backend == "sqlite":
        return (
            SQLiteLedger(f"sqlite:///{tmp_path}/shared.db"),
            SQLiteLedger(f"sqlite:///{tmp_path}/shared.db"),
        )
    return make_ledger(backend), make_ledger(backend)


@pytest.mark.parametrize("backend", SHARED)
def test_other_processes_learn_a_full_pool_and_its_release_through_the_ledger(
    backend: str,
    make_ledger: Callable[[str], Ledger],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(FullPools, "sync_interval", 0.0)
    one, two = _shared_pair(backend, make_ledger, tmp_path)
    lims = limits("1000 tokens/day")
    big = one.reserve("p", lims, Demand(1, 100, 800), T0)
    assert isinstance(big, Reservation)
    assert isinstance(one.reserve("p", lims, Demand(1, 100, 400), T0 + 1), Refusal)
    # The other ledger knows before asking: its first reserve reads the records.
    two.reserve("q", lims, ONE, T0 + 1)
    assert two.remembered("p", Demand(1, 100, 400), T0 + 2) is not None
    # A settlement in the first gives room back: the record goes, the second asks.
    one.settle(big, Demand(1, 100, 10), T0 + 2)
    one.usage("p", lims, T0 + 2)  # once it has landed (Redis sends it a moment later)
    two.reserve("q", lims, ONE, T0 + 3)
    assert two.remembered("p", Demand(1, 100, 400), T0 + 3) is None
    assert isinstance(two.reserve("p", lims, Demand(1, 100, 400), T0 + 3), Reservation)
    one.close()
    two.close()


def test_a_remembered_refusal_takes_no_write_lock(tmp_path: Path) -> None:
    """Another process holding the file's write lock does not delay a refusal the
    ledger already knows (before: every refusal took BEGIN IMMEDIATE)."""
    ledger = SQLiteLedger(f"sqlite:///{tmp_path}/l.db")
    lims = limits("1/day")
    ledger.reserve("p", lims, ONE, T0)
    assert isinstance(ledger.reserve("p", lims, ONE, T0), Refusal)
    other = sqlite3.connect(tmp_path / "l.db", isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")
    outcome: list[object] = []
    caller = threading.Thread(target=lambda: outcome.append(ledger.reserve("p", lims, ONE, T0)))
    caller.start()
    caller.join(timeout=2.0)
    alive = caller.is_alive()
    other.execute("COMMIT")
    other.close()
    caller.join()
    assert not alive, "the refusal waited for the write lock"
    assert isinstance(outcome[0], Refusal)
    ledger.close()


# ------------------------------------------------------------ through a router


class _Counting:
    """Counts the ledger's reserve and usage calls (sync, and the async ones that
    reach the backend)."""

    def __init__(self, ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reserves: dict[str, int] = {}
        self.usages = 0
        reserve, usage = ledger.reserve, ledger.usage

        def counted_reserve(pool: str, *args: Any, **kwargs: Any) -> Any:
            self.reserves[pool] = self.reserves.get(pool, 0) + 1
            return reserve(pool, *args, **kwargs)

        def counted_usage(*args: Any, **kwargs: Any) -> Any:
            self.usages += 1
            return usage(*args, **kwargs)

        monkeypatch.setattr(ledger, "reserve", counted_reserve)
        monkeypatch.setattr(ledger, "usage", counted_usage)


def _fake(name: str) -> FakeVendorChatModel:
    return FakeVendorChatModel(script=[f"from {name}"], model=name)


@pytest.mark.parametrize("backend", LOCAL)
async def test_full_routes_are_not_asked_again_on_any_call_path(
    how: str,
    backend: str,
    tmp_path: Path,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "memory://" if backend == "memory" else f"sqlite:///{tmp_path}/r.db"
    routes = [
        Route(_fake(f"m{i}"), name=f"r{i}", pool=f"p{i}", limits=["1/day"], priority=i)
        for i in range(5)
    ]
    routes.append(Route(_fake("last"), name="last", pool="plast", priority=9))
    llm = QuotaRoutedChatModel(routes=routes, ledger=url, cache=False, clock=clock)
    for _ in range(5):  # each limited route serves once, then is full
        await ask(llm, how)
    counting = _Counting(llm.ledger_backend, monkeypatch)
    for _ in range(20):
        answer = await ask(llm, how)
        assert answer.response_metadata["route"] == "last"
    # The first refusal per pool at most; after it, nothing but the serving route.
    assert all(counting.reserves.get(f"p{i}", 0) <= 1 for i in range(5)), counting.reserves
    assert counting.reserves["plast"] == 20


async def test_spread_does_not_read_every_pool_on_every_call(
    how: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    routes = [
        Route(_fake(f"m{i}"), name=f"r{i}", pool=f"p{i}", limits=["100/minute"], priority=i)
        for i in range(30)
    ]
    llm = QuotaRoutedChatModel(
        routes=routes, ledger="memory://", cache=False, clock=clock, strategy="spread"
    )
    counting = _Counting(llm.ledger_backend, monkeypatch)
    served = []
    for _ in range(60):
        answer: AIMessage = await ask(llm, how)
        served.append(answer.response_metadata["route"])
    # Every pool read once to start with (then one stale pool per call at most,
    # none in a test this fast): was 30 reads per call.
    assert counting.usages <= 30 + 60
    assert counting.usages < 30 * 60 / 10
    # Still spread: every route served, none more than three times.
    assert len(set(served)) == 30
    assert max(served.count(r) for r in set(served)) <= 3


@pytest.mark.parametrize("backend", BACKENDS)
async def test_every_path_counts_exactly_on_every_backend(
    how: str,
    backend: str,
    make_ledger: Callable[[str], Ledger],
    clock: FakeClock,
) -> None:
    ledger = make_ledger(backend)
    first = Route(_fake("a"), name="a", pool="pa", limits=["5/minute", "1000000 tokens/minute"])
    second = Route(_fake("b"), name="b", pool="pb", priority=1)
    llm = QuotaRoutedChatModel(routes=[first, second], ledger=ledger, cache=False, clock=clock)
    served = [(await ask(llm, how)).response_metadata["route"] for _ in range(8)]
    assert served == ["a"] * 5 + ["b"] * 3
    tokens = Limit.parse("1000000 tokens/minute")
    usage = ledger.usage("pa", [Limit.parse("5/minute"), tokens], clock.now())
    assert usage[0].used == 5
    # What the fake reported, not the estimate: settlements landed (Redis sends
    # them unawaited; reading waits for them).
    answer = await ask(llm, how)
    reported = answer.usage_metadata
    assert reported is not None
    per_call = reported["input_tokens"] + reported["output_tokens"]
    assert usage[1].used == 5 * per_call


# --------------------------------------------------- Redis: one round trip a call


async def test_redis_takes_one_round_trip_per_call_on_the_callers_path(
    make_ledger: Callable[[str], Ledger], monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = make_ledger("redis")
    lims = limits("100/minute", "100000 tokens/minute")
    await ledger.areserve("p", lims, Demand(1, 40, 500), T0)  # connects
    trips: list[list[str]] = []
    send = ledger._apipeline  # type: ignore[attr-defined]
    remote = ledger._aremote  # type: ignore[attr-defined]

    async def counted_pipeline(c: Any, calls: Any) -> Any:
        trips.append([call.script for call in calls])
        return await send(c, calls)

    async def counted_remote(operation: str, call: Any) -> Any:
        if operation != "read holds":  # the full-pool sync, once a second
            trips.append([operation])
        return await remote(operation, call)

    monkeypatch.setattr(ledger, "_apipeline", counted_pipeline)
    monkeypatch.setattr(ledger, "_aremote", counted_remote)
    for _ in range(5):
        made = await ledger.areserve("p", lims, Demand(1, 40, 500), T0 + 1)
        assert isinstance(made, Reservation)
        # Spent less than the prompt's estimate: safe to land a moment later.
        await ledger.asettle(made, Demand(1, 10, 20), T0 + 1)
    # One round trip per reserve + settle on the caller's path: the settlement is
    # carried in the next reserve's pipeline (or sent by the loop's timer).
    assert len(trips) == 5
    assert all(trip[-1] == "reserve" for trip in trips)
    # This process reads what it settled; another sees it once sent.
    expected = [6, 40 + 500 + 5 * (10 + 20)]
    assert used(ledger, "p", lims, T0 + 2) == expected
    assert used(make_ledger("redis"), "p", lims, T0 + 2) == expected


async def test_redis_sends_concurrent_reserves_together(
    make_ledger: Callable[[str], Ledger], monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = make_ledger("redis")
    lims = limits("150/minute")
    await ledger.areserve("p", lims, ONE, T0)  # connects
    pipelines: list[int] = []
    send = ledger._apipeline  # type: ignore[attr-defined]

    async def counted(c: Any, calls: Any) -> Any:
        pipelines.append(len(calls))
        return await send(c, calls)

    monkeypatch.setattr(ledger, "_apipeline", counted)
    made = await asyncio.gather(*(ledger.areserve("p", lims, ONE, T0) for _ in range(200)))
    assert sum(isinstance(m, Reservation) for m in made) == 149  # exactly the room left
    assert len(pipelines) < 10  # not 200 round trips
    assert used(ledger, "p", lims, T0) == [150]


async def test_redis_awaits_a_settlement_that_adds(
    make_ledger: Callable[[str], Ledger],
) -> None:
    ledger, other = make_ledger("redis"), make_ledger("redis")
    lims = limits("100000 tokens/minute")
    made = await ledger.areserve("p", lims, Demand(1, 10, 50), T0)
    assert isinstance(made, Reservation)
    await ledger.asettle(made, Demand(1, 10, 400), T0)  # spent more than estimated
    assert used(other, "p", lims, T0) == [410]


async def test_redis_sends_a_lone_settlement_at_once(
    make_ledger: Callable[[str], Ledger],
) -> None:
    ledger, other = make_ledger("redis"), make_ledger("redis")
    lims = limits("100000 tokens/minute")
    made = await ledger.areserve("p", lims, Demand(1, 10, 500), T0)
    assert isinstance(made, Reservation)
    await ledger.asettle(made, Demand(1, 10, 20), T0)
    for _ in range(100):
        if used(other, "p", lims, T0) == [30]:
            break
        await asyncio.sleep(0.01)
    assert used(other, "p", lims, T0) == [30]


def test_redis_settles_before_returning_on_the_sync_path(
    make_ledger: Callable[[str], Ledger],
) -> None:
    """A settled call stays counted even if the process dies the next moment."""
    ledger, other = make_ledger("redis"), make_ledger("redis")
    lims = limits("100000 tokens/minute")
    made = ledger.reserve("p", lims, Demand(1, 10, 500), T0)
    assert isinstance(made, Reservation)
    ledger.settle(made, Demand(1, 10, 20), T0)
    assert used(other, "p", lims, T0) == [30]


async def test_calls_kept_from_full_pools_are_counted_for_the_fleet(
    how: str, clock: FakeClock
) -> None:
    """Each call that passes over a full route counts one refusal for it, whether
    the ledger refused it or it was already known full."""
    routes = [
        Route(_fake(f"m{i}"), name=f"r{i}", pool=f"p{i}", limits=["1/day"], priority=i)
        for i in range(3)
    ]
    routes.append(Route(_fake("last"), name="last", pool="plast", priority=9))
    llm = QuotaRoutedChatModel(routes=routes, ledger="memory://", cache=False, clock=clock)
    for _ in range(3):  # each limited route serves once, then is full
        await ask(llm, how)
    for _ in range(10):
        await ask(llm, how)
    fleet = llm.get_stats()["fleet"]
    # Call 2 passes over r0, call 3 over r0 and r1, calls 4-13 over all three.
    assert {r: fleet["routes"][r]["refused"] for r in ("r0", "r1", "r2")} == {
        "r0": 12,
        "r1": 11,
        "r2": 10,
    }
    assert fleet["routes"]["last"]["calls"] == 10
    assert fleet["fallbacks"] == 12


async def test_redis_takes_a_thousand_concurrent_calls(
    make_ledger: Callable[[str], Ledger],
) -> None:
    """Found by benchmarks/async_load.py: redis.asyncio's pool refused the 101st
    concurrent call ("Too many connections"); now calls wait for a connection."""
    ledger = make_ledger("redis")
    lims = limits("100000/minute")
    made = await asyncio.gather(*(ledger.areserve("p", lims, ONE, T0) for _ in range(1000)))
    assert all(isinstance(m, Reservation) for m in made)
    assert used(ledger, "p", lims, T0) == [1000]


# ------------------------------------------ exactness across processes, async


def _areserve_many(url: str, tasks: int, tries: int, out: Any) -> None:
    from langchain_quota_router.quota.ledger import open_ledger

    async def main() -> int:
        ledger = open_ledger(url)
        daily = [Limit.parse("300/day")]

        async def work() -> int:
            n = 0
            for _ in range(tries):
                made = await ledger.areserve("shared", daily, Demand(1, 1, 1), T0)
                if isinstance(made, Reservation):
                    n += 1
                    await ledger.asettle(made, Demand(1, 1, 0), T0)
            return n

        counts = await asyncio.gather(*(work() for _ in range(tasks)))
        ledger.close()
        return sum(counts)

    out.put(asyncio.run(main()))


@pytest.mark.slow
@pytest.mark.parametrize("backend", SHARED)
def test_processes_reserving_through_the_async_api_admit_exactly_the_limit(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    import multiprocessing

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/shared.db"
        SQLiteLedger(url).usage("shared", limits("300/day"), T0)  # the file exists
    else:
        url = request.getfixturevalue("redis_url")
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_areserve_many, args=(url, 16, 8, out)) for _ in range(4)]
    for p in procs:
        p.start()
    totals = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    # 4 processes x 16 tasks x 8 tries = 512 for 300 places.
    assert sum(totals) == 300
    from langchain_quota_router.quota.ledger import open_ledger

    checker = open_ledger(url)
    [usage] = checker.usage("shared", limits("300/day"), T0)
    assert usage.used == 300
    checker.close()


async def test_redis_async_reserve_survives_a_script_flush(
    make_ledger: Callable[[str], Ledger], redis_url: str
) -> None:
    import redis

    ledger = make_ledger("redis")
    lims = limits("10/minute")
    assert isinstance(await ledger.areserve("p", lims, ONE, T0), Reservation)
    redis.Redis.from_url(redis_url).script_flush()
    assert isinstance(await ledger.areserve("p", lims, ONE, T0), Reservation)
    assert used(ledger, "p", lims, T0) == [2]
