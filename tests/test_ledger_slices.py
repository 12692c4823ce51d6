"""Local quota slices: most calls admitted from memory, none beyond what is counted.

The contract suite runs over the wrapper too (``sqlite-sliced``, ``redis-sliced`` in
``support.backends``); these tests show what only slices do: one inner reservation
for many calls, the give-back, tight pools per call, holds returning slices, exact
admission across processes, and a killed process's slice.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from redis_fixture import start_redis
from support.backends import SHARED, SLICED

from langchain_quota_router import Limit
from langchain_quota_router.quota.ledger import (
    Demand,
    Ledger,
    Refusal,
    Reservation,
    SlicedLedger,
    open_ledger,
)

T0 = 1_800_000_000.25  # 2027-01-15 08:00 UTC, a quarter into a second
CALL = Demand(1, 10, 100)
USED = Demand(1, 10, 20)


def limits(*texts: str) -> list[Limit]:
    return [Limit.parse(t) for t in texts]


class CountingLedger:
    """Counts the reserves that reach the inner ledger."""

    def __init__(self, ledger: SlicedLedger) -> None:
        self.reserves = 0
        inner = ledger.inner
        original = inner.reserve

        def counted(*args: Any, **kwargs: Any) -> Reservation | Refusal:
            self.reserves += 1
            return original(*args, **kwargs)

        inner.reserve = counted  # type: ignore[method-assign]


def sliced(make_ledger: Callable[[str], Ledger], backend: str) -> SlicedLedger:
    ledger = make_ledger(backend)
    assert isinstance(ledger, SlicedLedger)
    return ledger


@pytest.mark.parametrize("backend", SLICED)
def test_many_calls_are_admitted_from_one_inner_reservation(
    make_ledger: Callable[[str], Ledger], backend: str
) -> None:
    ledger = sliced(make_ledger, backend)
    spy = CountingLedger(ledger)
    lims = limits("100000/day", "100000000 tokens/day")
    for _ in range(200):
        made = ledger.reserve("p", lims, CALL, T0)
        assert isinstance(made, Reservation)
        ledger.settle(made, USED, T0)
    # The first call learns the room; then slices of 4, 8, 16, ... calls.
    assert spy.reserves <= 10
    requests, tokens = ledger.usage("p", lims, T0)
    # Counted whole: what was spent plus what the open slice holds, and says so.
    assert requests.used == 200 + requests.held
    assert tokens.used == 200 * 30 + tokens.held
    assert requests.held > 0
    ledger.return_slices(T0)
    requests, tokens = ledger.usage("p", lims, T0)
    assert (requests.used, requests.held, tokens.used, tokens.held) == (200, 0, 6000, 0)


@pytest.mark.parametrize("backend", SLICED)
def test_a_tight_pool_is_asked_per_call_and_admits_exactly_its_limit(
    make_ledger: Callable[[str], Ledger], backend: str
) -> None:
    ledger = sliced(make_ledger, backend)
    spy = CountingLedger(ledger)
    lims = limits("20/minute")
    admitted = [ledger.reserve("p", lims, CALL, T0) for _ in range(25)]
    assert sum(isinstance(m, Reservation) for m in admitted) == 20
    # An eighth of the room is never four calls: no slice was made.
    assert spy.reserves == 25
    assert [u.held for u in ledger.usage("p", lims, T0)] == [0]


@pytest.mark.parametrize("backend", SLICED)
def test_a_slice_ends_with_its_bucket_and_gives_back_what_it_did_not_spend(
    make_ledger: Callable[[str], Ledger], backend: str
) -> None:
    ledger = sliced(make_ledger, backend)
    lims = limits("1000/minute")
    for _ in range(20):
        ledger.settle(ledger.reserve("p", lims, CALL, T0), USED, T0)  # type: ignore[arg-type]
    [before] = ledger.usage("p", lims, T0)
    assert before.used > 20
    # The next second is another bucket of the minute window: a new slice, the
    # old one settled down to what it admitted.
    ledger.settle(ledger.reserve("p", lims, CALL, T0 + 1), USED, T0 + 1)  # type: ignore[arg-type]
    ledger.return_slices(T0 + 1)
    [after] = ledger.usage("p", lims, T0 + 1)
    assert (after.used, after.held) == (21, 0)


@pytest.mark.parametrize("backend", SLICED)
def test_what_a_call_spends_beyond_its_slice_reaches_the_shared_ledger_at_once(
    make_ledger: Callable[[str], Ledger], backend: str
) -> None:
    ledger = sliced(make_ledger, backend)
    lims = limits("1000/day", "10000000 tokens/day")
    first = ledger.reserve("p", lims, CALL, T0)
    ledger.settle(first, USED, T0)  # type: ignore[arg-type]
    made = ledger.reserve("p", lims, CALL, T0)  # from a slice of 4 calls
    assert isinstance(made, Reservation)
    assert not made.lease_id
    # 4 calls of 110 tokens were sliced; this one call spent 10 + 5000.
    ledger.settle(made, Demand(1, 10, 5000), T0)
    _, tokens = ledger.usage("p", lims, T0)
    assert tokens.used >= 30 + 5010
    ledger.return_slices(T0)
    requests, tokens = ledger.usage("p", lims, T0)
    assert (requests.used, tokens.used) == (2, 30 + 5010)


@pytest.mark.parametrize("backend", SLICED)
@pytest.mark.parametrize("hold", ["block", "disable", "mark_unavailable"])
def test_a_hold_set_here_returns_the_slices_it_touches(
    make_ledger: Callable[[str], Ledger], backend: str, hold: str
) -> None:
    ledger = sliced(make_ledger, backend)
    lims = limits("100000/day")
    for _ in range(30):
        made = ledger.reserve("p", lims, CALL, T0, key="k", model="k:m")
        ledger.settle(made, USED, T0)  # type: ignore[arg-type]
    assert ledger.usage("p", lims, T0)[0].held > 0
    if hold == "block":
        ledger.block("p", T0 + 60, "429")
    elif hold == "disable":
        ledger.disable("k", "401")
    else:
        ledger.mark_unavailable("k:m", T0 + 60, "404")
    [usage] = ledger.usage("p", lims, T0)
    assert (usage.used, usage.held) == (30, 0)
    assert isinstance(ledger.reserve("p", lims, CALL, T0, key="k", model="k:m"), Refusal)


@pytest.mark.parametrize("backend", SLICED)
def test_a_call_open_when_its_slice_ends_settles_the_slice_when_it_ends(
    make_ledger: Callable[[str], Ledger], backend: str
) -> None:
    ledger = sliced(make_ledger, backend)
    lims = limits("100000/day")
    ledger.settle(ledger.reserve("p", lims, CALL, T0), USED, T0)  # type: ignore[arg-type]
    open_call = ledger.reserve("p", lims, CALL, T0)
    assert isinstance(open_call, Reservation)
    assert not open_call.lease_id
    ledger.return_slices(T0)
    # Retired, not given back yet: its open call's estimate is still counted.
    assert ledger.usage("p", lims, T0)[0].used >= 2
    ledger.settle(open_call, USED, T0)
    assert [(u.used, u.held) for u in ledger.usage("p", lims, T0)] == [(2, 0)]


@pytest.mark.parametrize("backend", SLICED)
async def test_async_callers_share_one_slice(
    make_ledger: Callable[[str], Ledger], backend: str
) -> None:
    ledger = sliced(make_ledger, backend)
    lims = limits("100000/day")

    async def caller() -> int:
        n = 0
        for _ in range(20):
            made = await ledger.areserve("p", lims, CALL, T0)
            if isinstance(made, Reservation):
                n += 1
                await ledger.asettle(made, USED, T0)
        return n

    assert sum(await asyncio.gather(*(caller() for _ in range(50)))) == 1000
    ledger.return_slices(T0)
    assert [(u.used, u.held) for u in ledger.usage("p", lims, T0)] == [(1000, 0)]


def test_the_url_option_wraps_any_backend(tmp_path: Path) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path}/x.db?slices=on")
    assert isinstance(ledger, SlicedLedger)
    assert type(ledger.inner).__name__ == "SQLiteLedger"
    assert ledger.inner.url == f"sqlite:///{tmp_path}/x.db"
    plain = open_ledger(f"sqlite:///{tmp_path}/y.db?slices=off")
    assert type(plain).__name__ == "SQLiteLedger"
    ledger.close()
    plain.close()


# --------------------------------------------- exact across processes and threads


def _reserve_until_refused(url: str, threads: int, out: Any) -> None:
    ledger = open_ledger(url)
    daily = limits("3000/day")
    counts = [0] * threads

    def work(n: int) -> None:
        while True:
            made = ledger.reserve("shared", daily, Demand(1, 1, 1), T0)
            if not isinstance(made, Reservation):
                return
            counts[n] += 1
            ledger.settle(made, Demand(1, 1, 0), T0)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    ledger.close()
    out.put(sum(counts))


@pytest.mark.slow
@pytest.mark.parametrize("backend", SHARED)
def test_four_processes_of_sixteen_threads_with_slices_admit_exactly_the_limit(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/shared.db"
        open_ledger(url).usage("shared", limits("3000/day"), T0)  # the file exists
    else:
        url = request.getfixturevalue("redis_url")
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_reserve_until_refused, args=(url + "?slices=on", 16, out))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    totals = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sum(totals) == 3000
    checker = open_ledger(url)
    assert [u.used for u in checker.usage("shared", limits("3000/day"), T0)] == [3000]
    checker.close()


# ------------------------------------------------------------ a killed process

LEASE = 60.0
KILL_LIMITS = limits("100000/day", "100000000 tokens/day")


def _admit_then_hang(url: str, log: str) -> None:
    """Admit calls (settled, from slices) and log each, then hang mid-call."""
    ledger = open_ledger(url)
    ledger.reservation_lease = LEASE
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    for _ in range(50):
        made = ledger.reserve("shared", KILL_LIMITS, Demand(1, 10, 100), T0)
        assert isinstance(made, Reservation)
        ledger.settle(made, Demand(1, 10, 20), T0)
        os.write(fd, b"done\n")
    made = ledger.reserve("shared", KILL_LIMITS, Demand(1, 10, 100), T0)
    os.write(fd, b"in\n")
    time.sleep(60)  # the vendor never answers: killed meanwhile


@pytest.mark.slow
@pytest.mark.parametrize("backend", SHARED)
def test_a_killed_process_slice_over_counts_by_at_most_the_slice_never_under(
    backend: str, tmp_path: Path
) -> None:
    server = start_redis(tmp_path) if backend == "redis" else None
    try:
        url = server.url if server else f"sqlite:///{tmp_path}/ledger.db"
        log = tmp_path / "calls.log"
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(target=_admit_then_hang, args=(url + "?slices=on", str(log)))
        proc.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (log.exists() and "in" in log.read_text()):
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=30)
        assert proc.exitcode == -signal.SIGKILL
        admitted = log.read_text().count("done") + 1
        assert admitted == 51
        observer = open_ledger(url)
        observer.reservation_lease = LEASE
        # The slices doubled 4, 8, 16, 32: the open one is at most 32 calls.
        slice_calls = 32
        requests, tokens = observer.usage("shared", KILL_LIMITS, T0 + 1)
        assert admitted <= requests.used <= admitted + slice_calls
        assert tokens.used >= 50 * 30 + 110
        # Once the leases ran out: still every admitted call's request and prompt.
        requests, tokens = observer.usage("shared", KILL_LIMITS, T0 + LEASE + 1)
        assert admitted <= requests.used <= admitted + slice_calls
        assert tokens.used >= admitted * 10
        observer.close()
    finally:
        if server:
            server.kill()
