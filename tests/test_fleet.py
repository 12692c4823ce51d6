"""Fleet counters: counted in memory, written to the ledger's storage in the background,
read back by any process sharing the ledger, bounded over a month."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from support.backends import SHARED, STORES

from langchain_quota_router import LedgerError, QuotaRoutedChatModel, Route, cli
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.quota.failures import FailureKind
from langchain_quota_router.quota.fleet import FleetCounters, flush_all
from langchain_quota_router.quota.ledger import Demand, Ledger, open_ledger
from langchain_quota_router.quota.ledger.fleet import (
    HOUR,
    MINUTE,
    PRUNE_EVERY,
    RETENTION,
    FleetStore,
    Row,
)
from langchain_quota_router.quota.ledger.memory import MemoryFleetStore, MemoryLedger
from langchain_quota_router.quota.ledger.redis import RedisFleetStore
from langchain_quota_router.quota.ledger.sqlite import SQLiteFleetStore, SQLiteLedger
from langchain_quota_router.testing import FakeVendorChatModel

SECRET = "sk-test-FLEETKEYMUSTNEVERBESTORED0123456789"


def make_router(ledger: str | Ledger, clock: FakeClock, **options: Any) -> QuotaRoutedChatModel:
    """Two routes: ``a`` takes 2 calls a minute, then ``b`` takes the rest."""
    options.setdefault("cache", False)
    return QuotaRoutedChatModel(
        routes=[
            Route(FakeVendorChatModel(model="m1"), name="a", limits=["2/minute"], priority=1),
            Route(FakeVendorChatModel(model="m2"), name="b", limits=["50/minute"], priority=2),
        ],
        ledger=ledger,
        clock=clock,
        **options,
    )


def fleet(router: QuotaRoutedChatModel) -> dict[str, Any]:
    found = router.get_stats()["fleet"]
    assert found is not None
    return dict(found)


def counters(router: QuotaRoutedChatModel) -> FleetCounters:
    found = router.stats.fleet
    assert isinstance(found, FleetCounters)
    return found


# ------------------------------------------------------------------ counting


def test_every_backend_keeps_the_fleets_counts(ledger: Ledger, clock: FakeClock) -> None:
    router = make_router(ledger, clock)
    for i in range(3):  # two for a, the third falls back to b
        router.invoke(f"question {i}")

    found = fleet(router)

    assert found["total_calls"] == 3
    assert found["calls_per_route"] == {"a": 2, "b": 1}
    assert found["fallbacks"] == 1
    assert found["fallbacks_per_route"] == {"a": 0, "b": 1}
    assert found["errors"] == 0
    # The process's own view is unchanged beside it.
    stats = router.get_stats()
    assert stats["total_calls"] == 3
    assert stats["calls_per_route"] == {"a": 2, "b": 1}
    assert set(stats) == {
        "total_calls",
        "calls_per_route",
        "fallbacks",
        "errors",
        "errors_per_route",
        "cache_hits",
        "hedged",
        "hedge_won",
        "last_route",
        "latency",
        "fleet",
    }


def test_each_kind_of_event_is_counted(clock: FakeClock) -> None:
    router = make_router("memory://", clock)
    stats = router.stats
    stats.served("a", fallback=False, cost=0.25)
    stats.served("b", fallback=True, cost=0.5)
    stats.failed("a", FailureKind.RATE_LIMIT)
    stats.failed("a", "quota_exhausted")
    stats.failed("b", FailureKind.TRANSIENT)
    stats.failed("b")  # the old call, without a kind
    stats.refused("a", "a")
    stats.refused("a")
    stats.spent("a", "a", Demand(1, 100, 40))
    stats.spent("b", "b", Demand(1, 7, 0))
    stats.hit("a")
    stats.hit()  # a cache hit of an answer no route is named on

    found = fleet(router)

    assert found["routes"]["a"] == {
        "calls": 1,
        "fallbacks": 0,
        "errors": 2,
        "errors_by_kind": {"rate_limit": 1, "quota_exhausted": 1},
        "rate_limited": 2,
        "refused": 2,
        "cache_hits": 1,
        "hedged": 0,
        "hedge_won": 0,
        "tokens_in": 100,
        "tokens_out": 40,
        "cost": 0.25,
    }
    assert found["routes"]["b"]["errors_by_kind"] == {"transient": 1, "unknown": 1}
    assert found["routes"]["b"]["rate_limited"] == 0
    assert found["errors_by_kind"] == {
        "rate_limit": 1,
        "quota_exhausted": 1,
        "transient": 1,
        "unknown": 1,
    }
    assert (found["errors"], found["rate_limited"], found["refused"]) == (4, 2, 2)
    assert found["cache_hits"] == 2  # the unnamed hit counts in the total
    assert (found["tokens_in"], found["tokens_out"], found["cost"]) == (107, 40, 0.75)
    assert found["pools"]["a"] == {
        "requests": 1,
        "input_tokens": 100,
        "output_tokens": 40,
        "refused": 1,
        "cost": 0.0,
    }
    # The process's own counters are the ones they were.
    assert router.get_stats()["errors_per_route"] == {"a": 2, "b": 2}


def test_a_cache_hit_is_counted_for_the_route_that_first_answered(clock: FakeClock) -> None:
    router = make_router("memory://", clock, cache=True)
    router.invoke("same question")
    router.invoke("same question")

    found = fleet(router)

    assert found["routes"]["a"]["cache_hits"] == 1
    assert found["cache_hits"] == 1
    assert found["total_calls"] == 1


@pytest.mark.parametrize("backend", SHARED)
def test_two_routers_on_one_ledger_see_each_others_counts(
    backend: str, make_ledger: Callable[[str], Ledger], clock: FakeClock, tmp_path: Path
) -> None:
    first = make_ledger(backend)
    second = SQLiteLedger(first.path) if isinstance(first, SQLiteLedger) else make_ledger(backend)
    worker = make_router(first, clock)
    viewer = make_router(second, clock)
    assert first is not second
    worker.invoke("from the worker")
    viewer.invoke("from the viewer")
    counters(worker).flush()

    assert fleet(viewer)["calls_per_route"] == {"a": 2, "b": 0}
    assert fleet(worker)["total_calls"] == 2
    # Each process still has its own view.
    assert viewer.get_stats()["total_calls"] == 1


def test_report_json_of_another_process_shows_the_fleet(
    tmp_path: Path,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    worker = make_router(url, clock)
    for i in range(3):
        worker.invoke(f"question {i}")
    worker.stats.failed("b", FailureKind.RATE_LIMIT)
    counters(worker).flush()
    monkeypatch.setattr(cli, "_load_router", lambda config: make_router(url, clock))

    assert cli.main(["report", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)

    assert data["stats"]["total_calls"] == 0  # the report's own process made none
    assert data["stats"]["fleet"]["total_calls"] == 3
    assert data["stats"]["fleet"]["rate_limited"] == 1
    routes = {r["name"]: r for r in data["routes"]}
    assert routes["a"]["fleet"]["calls"] == 2
    assert routes["b"]["fleet"]["errors_by_kind"] == {"rate_limit": 1}

    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    assert "fleet: 3 calls, 1 fallbacks, 1 errors, 1 vendor 429s" in out
    assert cli.main(["report"]) == 0
    assert "fleet counters (every router counting in this ledger)" in capsys.readouterr().out


def test_a_process_that_exits_has_written_its_counts(tmp_path: Path, clock: FakeClock) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    script = textwrap.dedent(
        f"""
        from langchain_quota_router import QuotaRoutedChatModel, Route
        from langchain_quota_router.testing import FakeVendorChatModel

        router = QuotaRoutedChatModel(
            routes=[
                Route(FakeVendorChatModel(model="m1"), name="a", limits=["2/minute"]),
                Route(FakeVendorChatModel(model="m2"), name="b", limits=["50/minute"],
                      priority=2),
            ],
            ledger={url!r},
            cache=False,
        )
        for i in range(4):
            router.invoke(f"question {{i}}")
        # No flush, no get_stats(): the interpreter's exit writes what is left.
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)

    found = fleet(make_router(url, clock))

    assert found["total_calls"] == 4
    assert found["calls_per_route"] == {"a": 2, "b": 2}


def test_counts_of_a_router_that_is_gone_are_still_written(clock: FakeClock) -> None:
    ledger = MemoryLedger()

    def work() -> None:
        make_router(ledger, clock).invoke("one question")

    work()
    gc.collect()
    flush_all()

    assert fleet(make_router(ledger, clock))["total_calls"] == 1


# ------------------------------------------------------------- no caller I/O


class RecordingStore(FleetStore):
    """A store that notes which thread wrote, and can be made to fail."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = MemoryFleetStore()
        self.threads: list[str] = []
        self.failures = 0

    def _write(self, rows: Mapping[Row, float], cutoffs: dict[int, int] | None, now: float) -> None:
        self.threads.append(threading.current_thread().name)
        if self.failures:
            self.failures -= 1
            msg = "the ledger is down"
            raise LedgerError(msg)
        self.inner._write(rows, cutoffs, now)

    def totals(self, kind: str) -> dict[tuple[str, str, str], float]:
        return self.inner.totals(kind)

    def buckets(
        self, kind: str, level: int, lo: float, hi: float
    ) -> list[tuple[int, tuple[str, str, str], float]]:
        return self.inner.buckets(kind, level, lo, hi)

    def row_count(self) -> int:
        return self.inner.row_count()


def recording(router: QuotaRoutedChatModel) -> RecordingStore:
    store = RecordingStore()
    counters(router)._state.store = store
    return store


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


async def test_calls_never_write_on_the_callers_path(clock: FakeClock) -> None:
    router = make_router("memory://", clock)
    store = recording(router)
    loop_thread = threading.current_thread().name
    for i in range(3):
        await router.ainvoke(f"question {i}")
    async for _ in router.astream("a streamed question"):
        pass
    await asyncio.to_thread(router.invoke, "from a worker thread")
    assert store.threads == []  # counted, not yet written: nothing on any caller's path

    # The background thread writes within about a second.
    wait_until(lambda: bool(store.threads))
    assert set(store.threads) == {"quota-router-fleet"}
    assert loop_thread not in store.threads
    assert sum(v for k, v in store.totals("route").items() if k[2] == "calls") == 5


def test_a_failing_ledger_keeps_the_counts_warns_once_and_never_raises(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    router = make_router("memory://", clock)
    store = recording(router)
    store.failures = 3
    with caplog.at_level(logging.WARNING, "langchain_quota_router"):
        for i in range(3):
            router.invoke(f"question {i}")
            assert counters(router).flush() is False
        assert router.invoke("still answered").text
    warnings = [r.getMessage() for r in caplog.records if "fleet counters" in r.getMessage()]
    assert len(warnings) == 1
    assert "the ledger is down" in warnings[0]

    assert counters(router).flush() is True
    assert store.totals("route")[("route", "a", "calls")] == 2
    assert fleet(router)["total_calls"] == 4


def test_get_stats_says_none_when_the_ledger_cannot_be_read(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    router = make_router("memory://", clock)

    class Unreadable(RecordingStore):
        def totals(self, kind: str) -> dict[tuple[str, str, str], float]:
            raise sqlite3.OperationalError("disk I/O error")

    counters(router)._state.store = Unreadable()
    router.invoke("question")

    with caplog.at_level(logging.WARNING, "langchain_quota_router"):
        stats = router.get_stats()

    assert stats["fleet"] is None
    assert stats["total_calls"] == 1
    assert "could not read the fleet counters" in caplog.text


def test_fleet_counters_can_be_turned_off(clock: FakeClock) -> None:
    ledger = MemoryLedger()
    quiet = make_router(ledger, clock, fleet_counters=False)
    counted = make_router(ledger, clock)
    quiet.invoke("not counted for the fleet")
    counted.invoke("counted")
    counters(counted).flush()  # another process's counts arrive within a second

    assert quiet.stats.fleet is None
    # It adds nothing, and still reads what the others counted.
    assert fleet(quiet)["total_calls"] == 1
    assert quiet.get_stats()["total_calls"] == 1


# ---------------------------------------------------------------- the stores


def test_a_fail_open_ledger_counts_in_its_shared_ledgers_store(redis_url: str) -> None:
    wrapped = open_ledger(redis_url + "?on_error=local")
    primary = getattr(wrapped, "primary", None)
    assert primary is not None
    assert wrapped.fleet_store() is primary.fleet_store()
    assert isinstance(primary.fleet_store(), RedisFleetStore)
    assert isinstance(SQLiteLedger(Path("unused.db")).fleet_store(), SQLiteFleetStore)
    assert isinstance(MemoryLedger().fleet_store(), MemoryFleetStore)
    wrapped.close()


def test_the_sqlite_store_never_creates_a_file_that_is_not_a_ledger(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = SQLiteLedger(path)
    store = ledger.fleet_store()
    store.add({(0, 0, ("route", "a", "calls")): 1}, 1_767_225_600.0)
    # The ledger made its file first, with its own stamp; the counters sit beside it.
    assert ledger.usage("a", [], 1_767_225_600.0) == []
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert {"counters", "holds", "fleet_counters"} <= tables
    # A deleted ledger is not brought back by the counters: the ledger says why.
    ledger.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with pytest.raises(LedgerError, match="deleted or replaced"):
        store.add({(0, 0, ("route", "a", "calls")): 1}, 1_767_225_660.0)
    assert not path.exists()


@pytest.mark.parametrize("backend", STORES)
def test_a_simulated_month_keeps_the_storage_bounded(
    backend: str, make_ledger: Callable[[str], Ledger], redis_url: str, clock: FakeClock
) -> None:
    router = make_router(make_ledger(backend), clock)
    store = counters(router).store
    start = clock.now()
    days = 45  # past the 35 days hourly buckets are kept
    sizes: list[tuple[float, int]] = []
    for minute in range(0, days * 24 * 60, 20):
        clock.set(start + minute * 60)
        stats = router.stats
        if minute % 180 == 0:
            router.invoke(f"a question every 3 hours {minute}")
        stats.served("b", fallback=True)
        stats.failed("a", FailureKind.TRANSIENT)
        stats.refused("a", "a")
        stats.spent("b", "b", Demand(1, 20, 10))
        if minute % 240 == 0:
            counters(router).flush()
        if minute % (12 * 60) == 0:
            sizes.append((clock.now() - start, store.row_count()))

    counters(router).flush()
    # Per pool field (requests, input and output tokens): a minute bucket for every
    # minute of two days (and of the prune interval); per counter an hourly bucket
    # for 35 days; plus one total per counter.
    route_counters = 7  # a: calls, errors:transient, refused; b: calls, fallbacks, tokens x2
    pool_counters = 5  # a: refused, requests...; b: requests, input, output tokens
    minute_cells = 3 * 2 * (RETENTION[MINUTE] + PRUNE_EVERY + 120) / 60  # two pools at most
    hour_cells = (
        (route_counters + pool_counters) * (RETENTION[HOUR] + PRUNE_EVERY + 2 * HOUR) / 3600
    )
    bound = minute_cells + hour_cells + route_counters + pool_counters + 10
    assert max(size for _, size in sizes) <= bound
    # And it stops growing: the last week holds as many cells as the week before.
    late = [size for t, size in sizes if t > (RETENTION[HOUR] + 2 * 86_400)]
    assert late
    assert max(late) - min(late) <= 4 * (route_counters + pool_counters) + 3 * 2 * 24
    # The oldest buckets left are within the retention.
    now = clock.now()
    assert (
        min(b for b, _, _ in store.buckets("pool", MINUTE, 0, now))
        >= now - RETENTION[MINUTE] - PRUNE_EVERY - MINUTE
    )
    assert (
        min(b for b, _, _ in store.buckets("route", HOUR, 0, now))
        >= now - RETENTION[HOUR] - PRUNE_EVERY - HOUR
    )
    # Totals are never pruned.
    found = fleet(router)
    assert found["calls_per_route"]["b"] >= days * 24 * 3
    if backend == "redis":
        import redis

        client = redis.Redis.from_url(redis_url, decode_responses=True)
        keys = list(client.scan_iter("qr:fleet:*"))
        client.close()
        # A hash per bucket kept, two totals, four indexes: no stray keys.
        assert (
            len(keys)
            <= (RETENTION[MINUTE] + PRUNE_EVERY) / 60
            + (2 * (RETENTION[HOUR] + PRUNE_EVERY + 2 * HOUR) / 3600)
            + 6
        )


def test_no_key_is_ever_stored(tmp_path: Path, clock: FakeClock, redis_url: str) -> None:
    from langchain_openai import ChatOpenAI

    for url in (f"sqlite:///{tmp_path}/ledger.db", redis_url):
        router = QuotaRoutedChatModel(
            routes=[
                Route(
                    ChatOpenAI(model="gpt-4o-mini", api_key=SECRET, base_url="http://127.0.0.1:9"),
                    name="paid",
                    limits=["10/minute"],
                ),
                Route(FakeVendorChatModel(model="m1"), name="free", priority=2),
            ],
            ledger=url,
            cache=False,
            clock=clock,
            max_wait=0,
        )
        router.stats.failed("paid", FailureKind.AUTHENTICATION)
        assert isinstance(router.invoke("question"), AIMessage)
        counters(router).flush()
        store = counters(router).store
        dumped = repr(
            [store.totals("route"), store.totals("pool")]
            + [
                store.buckets(kind, level, 0, clock.now() + 60)
                for kind in ("route", "pool")
                for level in (MINUTE, HOUR)
            ]
        )
        assert SECRET not in dumped
        assert "paid" in dumped
    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        cells = conn.execute("SELECT * FROM fleet_counters").fetchall()
    assert cells
    assert SECRET not in repr(cells)
