"""Failing open (``redis://...?on_error=local``): bounded during an outage, handed back after.

``FailOpenLedger`` wraps the Redis ledger and a ledger in this process's memory; the
contract suite (``test_ledger.py``) runs over it too. Here is what only the wrapper
does, on a real ``redis-server`` stopped and started under it.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest
from redis_fixture import start_redis

from langchain_quota_router import LedgerError
from langchain_quota_router._errors import ConfigurationError
from langchain_quota_router.quota.ledger import Demand, Refusal, Reservation, open_ledger
from langchain_quota_router.quota.ledger.failopen import FailOpenLedger
from langchain_quota_router.quota.ledger.memory import MemoryLedger
from langchain_quota_router.quota.ledger.redis import RedisLedger
from langchain_quota_router.quota.limits import Limit

pytestmark = pytest.mark.slow

NOW = 1_800_000_000.0
DAY = [Limit.parse("100/day")]
_CTX: Any = multiprocessing.get_context(
    "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
)


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _admitted(ledger: Any, n: int, limits: list[Limit] = DAY) -> list[Reservation]:
    results = [ledger.reserve("p", limits, Demand(1, 10, 0), NOW) for _ in range(n)]
    return [r for r in results if isinstance(r, Reservation)]


def test_on_error_local_is_a_wrapper_over_redis(redis_url: str) -> None:
    ledger = open_ledger(f"{redis_url}?on_error=local&retry_interval=2&outage_share=0.25")
    assert isinstance(ledger, FailOpenLedger)
    assert isinstance(ledger.primary, RedisLedger)
    assert isinstance(ledger.fallback, MemoryLedger)
    assert (ledger.retry_interval, ledger.outage_share) == (2.0, 0.25)
    assert isinstance(open_ledger(redis_url), RedisLedger)
    for bad in ("retry_interval=soon", "outage_share=2", "outage_share=nan"):
        with pytest.raises(ConfigurationError, match=bad.split("=")[0]):
            open_ledger(f"{redis_url}?on_error=local&{bad}")
    with pytest.raises(ConfigurationError, match="outage_share goes with on_error=local"):
        open_ledger(f"{redis_url}?outage_share=0.5")


def _call(ledger: Any, limits: list[Limit], now: float = NOW) -> int:
    """One call as a router makes it: reserve, "call the vendor", settle. 1 if sent."""
    made = ledger.reserve("p", limits, Demand(1, 10, 0), now)
    if not isinstance(made, Reservation):
        return 0
    ledger.settle(made, Demand(1, 10, 0), now)
    return 1


def test_an_outage_admits_only_from_the_slice_held_and_hands_it_back_first(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_redis(tmp_path)
    try:
        url = f"{server.url}?on_error=local&retry_interval=0.05&outage_share=0.5"
        ledger = open_ledger(f"{url}&journal={tmp_path / 'journal'}")
        assert isinstance(ledger, FailOpenLedger)
        observer = RedisLedger(server.url)
        assert sum(_call(ledger, DAY) for _ in range(60)) == 60
        held = ledger.slice_of("p")
        assert held is not None
        slice_ = held.requests
        assert 0 < slice_ <= 40  # half of the room when taken, reserved in Redis
        assert observer.usage("p", DAY, NOW)[0].used == 60 + slice_
        assert ledger.usage("p", DAY, NOW)[0].used == 60  # ours is not spent

        server.stop()
        with caplog.at_level(logging.INFO, logger="langchain_quota_router"):
            local = _admitted(ledger, 50)
            assert len(local) == slice_  # the slice, not a fresh quota
            for reservation in local[:5]:
                ledger.settle(reservation, Demand(1, 10, 0), NOW)
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1
            assert "on_error=local" in warnings[0]

            server.start()
            time.sleep(0.06)
            # The first call to reach Redis again hands back what was admitted here.
            assert ledger.usage("p", DAY, NOW)[0].used == 60 + slice_
            assert any("answers again" in r.getMessage() for r in caplog.records)
        assert observer.usage("p", DAY, NOW)[0].used == 60 + slice_
        # Calls still open when Redis came back are corrected when they settle.
        for reservation in local[5:]:
            ledger.settle(reservation, Demand(0, 10, 0), NOW)  # say they never left
        assert observer.usage("p", DAY, NOW)[0].used == 65
        assert sum(_call(ledger, DAY) for _ in range(50)) == 35
        ledger.close()
        assert observer.usage("p", DAY, NOW)[0].used == 100
    finally:
        server.kill()


def test_a_pool_never_seen_while_redis_answered_admits_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = open_ledger(f"redis://127.0.0.1:{_closed_port()}/0?on_error=local&journal={tmp_path}")
    with caplog.at_level(logging.WARNING, logger="langchain_quota_router"):
        refusal = ledger.reserve("p", [Limit.parse("500/day")], Demand(), NOW)
        assert _admitted(ledger, 100, [Limit.parse("500/day")]) == []
    assert isinstance(refusal, Refusal)
    assert "holds no quota of this pool" in refusal.reason
    assert len(caplog.records) == 1


# ------------------------------------------------- the bad days of issue 17


def _steady(
    url: str, limit: str, before: int, delay: float, events: dict[str, Any], out: Any
) -> None:
    """A process calling a pool: ``before`` calls with Redis up, then as many as it
    can while it is down, then (``delay`` s after it is back) until refused."""
    ledger = open_ledger(url)
    limits = [Limit.parse(limit)]
    events["go"].wait()
    counts = [sum(_call(ledger, limits) for _ in range(before))]
    out.put(0)
    events["down"].wait()
    counts.append(sum(_call(ledger, limits) for _ in range(300)))
    out.put(0)
    events["up"].wait()
    time.sleep(delay)
    counts.append(sum(_call(ledger, limits) for _ in range(300)))
    ledger.close()
    out.put(counts)


def _fleet_through_an_outage(
    tmp_path: Path, limit: str, before: int, delays: list[float]
) -> tuple[list[list[int]], int]:
    """Processes started together, an outage, a recovery: what each admitted in
    each phase, and what Redis counts once they are done."""
    server = start_redis(tmp_path)
    url = f"{server.url}?on_error=local&retry_interval=0.05&journal={tmp_path / 'journal'}"
    events = {name: _CTX.Event() for name in ("go", "down", "up")}
    out = _CTX.Queue()
    procs = [
        _CTX.Process(target=_steady, args=(url, limit, before, delay, events, out))
        for delay in delays
    ]
    try:
        for p in procs:
            p.start()
        events["go"].set()
        for _ in procs:
            out.get(timeout=60)
        server.stop()  # SIGTERM: what Redis counted is on disk
        events["down"].set()
        for _ in procs:
            out.get(timeout=60)
        server.start()
        events["up"].set()
        counts = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        counted = RedisLedger(server.url).usage("p", [Limit.parse(limit)], NOW)[0].used
        return counts, counted
    finally:
        server.kill()


def test_four_processes_started_together_then_an_outage_admit_at_most_the_limit(
    tmp_path: Path,
) -> None:
    counts, counted = _fleet_through_an_outage(tmp_path, "100/day", 15, [0.0] * 4)
    admitted = sum(map(sum, counts))
    assert sum(c[1] for c in counts) > 0  # the outage was served from slices
    assert admitted <= 100
    assert counted == admitted


def test_staggered_recovery_admits_at_most_the_limit(tmp_path: Path) -> None:
    # The first back spends all it can while the others are still counting on
    # their slices: those stay counted until each hands back.
    counts, counted = _fleet_through_an_outage(tmp_path, "200/day", 25, [0.0, 0.3, 0.6, 0.9])
    admitted = sum(map(sum, counts))
    assert sum(c[1] for c in counts) > 0
    assert admitted <= 200
    assert counted == admitted


def _short_lived(url: str, calls: int, out: Any) -> None:
    ledger = open_ledger(url)
    out.put(sum(_call(ledger, HALF) for _ in range(calls)))
    ledger.close()


HALF = [Limit.parse("50/day")]


def test_workers_started_during_an_outage_on_a_full_pool_admit_nothing(tmp_path: Path) -> None:
    server = start_redis(tmp_path)
    url = f"{server.url}?on_error=local&retry_interval=0.05&journal={tmp_path / 'journal'}"
    try:
        filler = open_ledger(url)
        assert sum(_call(filler, HALF) for _ in range(60)) == 50
        filler.close()
        server.stop()
        out = _CTX.Queue()
        admitted = []
        for _ in range(5):  # one after another, each a process of its own
            worker = _CTX.Process(target=_short_lived, args=(url, 10, out))
            worker.start()
            admitted.append(out.get(timeout=60))
            worker.join(timeout=30)
        assert admitted == [0] * 5
        server.start()
        assert RedisLedger(server.url).usage("p", HALF, NOW)[0].used == 50
    finally:
        server.kill()


def _ends_during_the_outage(url: str, events: dict[str, Any], out: Any) -> None:
    ledger = open_ledger(url)
    before = sum(_call(ledger, DAY) for _ in range(20))
    out.put(before)
    events["down"].wait()
    out.put(sum(_call(ledger, DAY) for _ in range(5)))
    ledger.close()  # Redis is away: what it admitted stays in its journal


def test_a_process_that_ends_during_an_outage_leaves_a_journal_the_next_one_hands_back(
    tmp_path: Path,
) -> None:
    server = start_redis(tmp_path)
    journal = tmp_path / "journal"
    url = f"{server.url}?on_error=local&retry_interval=0.05&journal={journal}"
    try:
        events = {"down": _CTX.Event()}
        out = _CTX.Queue()
        gone = _CTX.Process(target=_ends_during_the_outage, args=(url, events, out))
        gone.start()
        assert out.get(timeout=60) == 20
        server.stop()
        events["down"].set()
        assert out.get(timeout=60) == 5
        gone.join(timeout=30)
        assert list(journal.glob("*.jsonl"))
        server.start()
        observer = RedisLedger(server.url)
        assert observer.usage("p", DAY, NOW)[0].used > 25  # its slice, still held
        # The next process hands it back on its first call: exactly what was sent.
        assert open_ledger(url).usage("p", DAY, NOW)[0].used == 25
        assert observer.usage("p", DAY, NOW)[0].used == 25
        assert not list(journal.glob("*.jsonl"))
        # Read twice (a copy restored, two processes at once): counted once.
        assert open_ledger(url).usage("p", DAY, NOW)[0].used == 25
    finally:
        server.kill()


class _LostReply(RedisLedger):
    """Runs the reserve on the server, then loses the reply, as a timeout does."""

    lose = True

    def reserve(self, *args: Any, **kwargs: Any) -> Reservation | Refusal:
        result = super().reserve(*args, **kwargs)
        if self.lose:
            msg = f"Redis ledger {self.url} could not reserve: TimeoutError: Timeout reading"
            raise LedgerError(msg)
        return result


def test_a_reserve_whose_reply_was_lost_is_never_counted_twice(
    tmp_path: Path, redis_url: str
) -> None:
    primary = _LostReply(redis_url)
    primary.lose = False
    ledger = FailOpenLedger(primary, retry_interval=0.0, outage_share=1.0, journal=tmp_path)
    observer = RedisLedger(redis_url)
    assert len(_admitted(ledger, 1)) == 1  # by Redis; a slice of the rest is held
    primary.lose = True
    admitted = _admitted(ledger, 1)
    assert len(admitted) == 1  # from the slice
    ledger.settle(admitted[0], Demand(1, 10, 0), NOW)
    primary.lose = False
    # Phantom taken back, the slice handed back with the call made from it.
    assert ledger.usage("p", DAY, NOW)[0].used == 2
    ledger.close()
    assert observer.usage("p", DAY, NOW)[0].used == 2


def test_the_server_counts_a_retried_reserve_once(redis_url: str) -> None:
    ledger = RedisLedger(redis_url)
    first = ledger.reserve("p", DAY, Demand(1, 5, 50), NOW, lease_id="call-1")
    again = ledger.reserve("p", DAY, Demand(1, 5, 50), NOW, lease_id="call-1")
    assert isinstance(first, Reservation)
    assert isinstance(again, Reservation)
    assert ledger.usage("p", DAY, NOW)[0].used == 1
    ledger.settle(first, Demand(1, 5, 5), NOW)
    assert ledger.usage("p", DAY, NOW)[0].used == 1
