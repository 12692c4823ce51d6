"""The SQLite ledger's lean transactions: one per event-loop turn, give-backs held.

Async reserve/settle/usage asked for in one loop turn share one transaction; a
file another process holds sends the batch to the worker without blocking the
loop; settlements that only give room back ride in the next transaction, yet
every read of usage is exact.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from langchain_quota_router import Limit
from langchain_quota_router.quota.errors import LedgerError
from langchain_quota_router.quota.ledger import Demand, Reservation
from langchain_quota_router.quota.ledger.sqlite import SQLiteLedger

LIMITS = [Limit.parse("1000/minute"), Limit.parse("1000000 tokens/day")]
ESTIMATE = Demand(1, 100, 200)
SPENT = Demand(1, 40, 20)  # 240 tokens fewer than estimated, within the prompt's


class Traced(SQLiteLedger):
    """A SQLite ledger that records every statement its connections run."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.statements: list[str] = []

    def _connect(self) -> sqlite3.Connection:
        conn = super()._connect()
        conn.set_trace_callback(self.statements.append)
        return conn

    def commits(self) -> int:
        return sum(s == "COMMIT" for s in self.statements)


def tokens(ledger: SQLiteLedger, pool: str) -> int:
    return ledger.usage(pool, LIMITS, time.time())[1].used


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[Traced]:
    ledger = Traced(f"sqlite:///{tmp_path}/l.db")
    ledger.usage("warm", LIMITS, time.time())  # the file and its schema exist
    yield ledger
    ledger.close()


async def test_async_operations_of_one_loop_turn_commit_in_one_transaction(
    traced: Traced,
) -> None:
    await traced.ausage("warm", LIMITS, time.time())  # the loop's own connection
    before = traced.commits()
    now = time.time()
    made = await asyncio.gather(*(traced.areserve("p", LIMITS, ESTIMATE, now) for _ in range(20)))
    assert all(isinstance(m, Reservation) for m in made)
    assert traced.commits() - before == 1
    assert [u.used for u in await traced.ausage("p", LIMITS, now)] == [20, 20 * 300]


async def test_a_refusal_in_a_batch_refuses_only_its_own_operation(traced: Traced) -> None:
    tight = [Limit.parse("2/minute")]
    now = time.time()
    made = await asyncio.gather(
        *(traced.areserve("tight", tight, ESTIMATE, now) for _ in range(3)),
        traced.areserve("p", LIMITS, ESTIMATE, now),
    )
    assert [isinstance(m, Reservation) for m in made] == [True, True, False, True]
    assert traced.usage("tight", tight, now)[0].used == 2


async def test_an_operation_that_fails_in_a_batch_fails_alone_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = SQLiteLedger(f"sqlite:///{tmp_path}/l.db")
    add_lease = SQLiteLedger._add_lease

    def failing(self: SQLiteLedger, pool: str, *args: object) -> bool:
        if pool == "bad":
            msg = "broken on purpose"
            raise LedgerError(msg)
        return add_lease(self, pool, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(SQLiteLedger, "_add_lease", failing)
    now = time.time()
    made = await asyncio.gather(
        ledger.areserve("good", LIMITS, ESTIMATE, now),
        ledger.areserve("bad", LIMITS, ESTIMATE, now),
        ledger.areserve("good", LIMITS, ESTIMATE, now),
        return_exceptions=True,
    )
    assert isinstance(made[0], Reservation)
    assert isinstance(made[1], LedgerError)
    assert isinstance(made[2], Reservation)
    assert ledger.usage("bad", LIMITS, now)[0].used == 0  # its counts were undone
    assert ledger.usage("good", LIMITS, now)[0].used == 2
    ledger.close()


async def test_a_locked_file_sends_the_batches_to_the_worker_without_blocking_the_loop(
    traced: Traced, tmp_path: Path
) -> None:
    await traced.ausage("warm", LIMITS, time.time())
    other = sqlite3.connect(tmp_path / "l.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    now = time.time()
    tasks = []
    try:
        worst = 0.0
        for _ in range(10):  # ten loop turns, ten batches
            tasks += [asyncio.ensure_future(traced.areserve("p", LIMITS, ESTIMATE, now))]
            tasks += [asyncio.ensure_future(traced.areserve("p", LIMITS, ESTIMATE, now))]
            started = time.perf_counter()
            await asyncio.sleep(0.01)
            worst = max(worst, time.perf_counter() - started - 0.01)
        # The loop never waited for the lock (which is held until after this
        # loop: waiting would take the whole 5 s busy timeout). A bound far above
        # a loaded machine's scheduling delays, far below that.
        assert worst < 1.0
        assert not any(t.done() for t in tasks)
        before = traced.commits()
    finally:
        other.execute("COMMIT")
        other.close()
    made = await asyncio.gather(*tasks)
    assert all(isinstance(m, Reservation) for m in made)
    # The worker took the batches queued behind the first in one transaction.
    assert traced.commits() - before <= 2
    assert (await traced.ausage("p", LIMITS, now))[0].used == 20


async def test_a_reserve_cancelled_before_its_turn_runs_reserves_nothing(
    traced: Traced,
) -> None:
    now = time.time()
    task = asyncio.ensure_future(traced.areserve("p", LIMITS, ESTIMATE, now))
    await asyncio.sleep(0)  # queued
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await traced.ausage("p", LIMITS, now))[0].used == 0


def test_a_give_back_costs_no_transaction_of_its_own_yet_usage_is_exact(
    traced: Traced,
) -> None:
    now = time.time()
    made = traced.reserve("p", LIMITS, ESTIMATE, now)
    assert isinstance(made, Reservation)
    before = traced.commits()
    traced.settle(made, SPENT, now)
    assert traced.commits() == before  # held
    assert tokens(traced, "p") == 60  # applied before the read, in its transaction
    assert traced.commits() == before + 1


async def test_an_async_give_back_rides_in_the_next_turns_transaction(traced: Traced) -> None:
    now = time.time()
    made = await traced.areserve("p", LIMITS, ESTIMATE, now)
    assert isinstance(made, Reservation)
    before = traced.commits()
    await traced.asettle(made, SPENT, now)
    again = await traced.areserve("p", LIMITS, ESTIMATE, now)
    assert isinstance(again, Reservation)
    assert traced.commits() == before + 1
    assert [u.used for u in await traced.ausage("p", LIMITS, now)] == [2, 60 + 300]


def test_a_held_give_back_reaches_other_ledgers_within_its_delay(tmp_path: Path) -> None:
    mine = SQLiteLedger(f"sqlite:///{tmp_path}/l.db")
    theirs = SQLiteLedger(f"sqlite:///{tmp_path}/l.db")
    now = time.time()
    made = mine.reserve("p", LIMITS, ESTIMATE, now)
    assert isinstance(made, Reservation)
    mine.settle(made, SPENT, now)
    deadline = time.monotonic() + 2.0
    while tokens(theirs, "p") != 60:
        assert time.monotonic() < deadline, "the held give-back was never applied"
        time.sleep(0.01)
    mine.close()
    theirs.close()


def test_a_settlement_that_adds_is_written_at_once(tmp_path: Path) -> None:
    mine = SQLiteLedger(f"sqlite:///{tmp_path}/l.db")
    theirs = SQLiteLedger(f"sqlite:///{tmp_path}/l.db")
    now = time.time()
    made = mine.reserve("p", LIMITS, ESTIMATE, now)
    assert isinstance(made, Reservation)
    mine.settle(made, Demand(1, 100, 900), now)
    assert tokens(theirs, "p") == 1000
    mine.close()
    theirs.close()


def test_close_applies_what_is_held(tmp_path: Path) -> None:
    mine = SQLiteLedger(f"sqlite:///{tmp_path}/l.db")
    now = time.time()
    made = mine.reserve("p", LIMITS, ESTIMATE, now)
    assert isinstance(made, Reservation)
    mine.settle(made, SPENT, now)
    mine.close()
    with sqlite3.connect(tmp_path / "l.db") as conn:
        (amount,) = conn.execute(
            "SELECT TOTAL(amount) FROM counters WHERE pool = 'p' AND series LIKE 'tokens%'"
        ).fetchone()
    assert amount == 60


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_never_applies_its_parents_held_give_backs(tmp_path: Path) -> None:
    ledger = SQLiteLedger(f"sqlite:///{tmp_path}/l.db")
    # Held until read: on a loaded machine the flushing thread could otherwise
    # apply it before the fork, and the child would rightly see it applied.
    ledger._give_backs.delay = 60.0
    now = time.time()
    first = ledger.reserve("p", LIMITS, ESTIMATE, now)
    assert isinstance(first, Reservation)
    ledger.settle(first, SPENT, now)  # held in the parent
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0 if tokens(ledger, "p") == 300 else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert tokens(ledger, "p") == 60  # given back once, by the parent
    ledger.close()


def test_a_process_that_exits_without_close_applies_what_is_held(tmp_path: Path) -> None:
    # A script that settles and ends: the flushing thread is a daemon and dies
    # with it, so the exit itself must apply the held give-back.
    script = f"""
import time
from langchain_quota_router import Limit
from langchain_quota_router.quota.ledger import Demand
from langchain_quota_router.quota.ledger.sqlite import SQLiteLedger
limits = [Limit.parse("1000/minute"), Limit.parse("1000000 tokens/day")]
ledger = SQLiteLedger("sqlite:///{tmp_path}/l.db")
made = ledger.reserve("p", limits, Demand(1, 100, 200), time.time())
ledger.settle(made, Demand(1, 40, 20), time.time())
assert len(ledger._give_backs) == 1, "the give-back was not held"
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    with sqlite3.connect(tmp_path / "l.db") as conn:
        (amount,) = conn.execute(
            "SELECT TOTAL(amount) FROM counters WHERE pool = 'p' AND series LIKE 'tokens%'"
        ).fetchone()
    assert amount == 60


def test_a_settlement_its_lease_would_undo_is_written_at_once(tmp_path: Path) -> None:
    # 120 tokens spent of 300 reserved gives room back, but were this process
    # killed before a held settlement landed, the lease would keep only the
    # prompt (100): the call would count 20 tokens too few. So it is written now.
    mine = SQLiteLedger(f"sqlite:///{tmp_path}/l.db")
    theirs = SQLiteLedger(f"sqlite:///{tmp_path}/l.db")
    now = time.time()
    made = mine.reserve("p", LIMITS, ESTIMATE, now)
    assert isinstance(made, Reservation)
    mine.settle(made, Demand(1, 100, 20), now)
    assert len(mine._give_backs) == 0
    assert tokens(theirs, "p") == 120
    mine.close()
    theirs.close()
