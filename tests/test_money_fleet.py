"""Dollar budgets across processes: 4 processes x 4 threads over one SQLite file and
over Redis never spend more than the budget, since each call's estimated cost is
reserved before it is sent."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from typing import Any

import pytest
from support.backends import SHARED

from langchain_quota_router import QuotaExhaustedError, QuotaRoutedChatModel, Route
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.testing import FakeVendorChatModel

PROCESSES = 4
THREADS = 4
TRIES = 5  # per thread: 4 x 4 x 5 = 80 attempts


def _worker(ledger: str, budget: str, billed: float, out: Any) -> None:
    # Estimated at $0.003 (100 output tokens at $30/M), billed ``billed``.
    fake = FakeVendorChatModel(reported_cost=billed)
    llm = QuotaRoutedChatModel(
        routes=[Route(fake, name="paid", prices=(0.0, 30.0), limits=[budget])],
        ledger=ledger,
        cache=False,
        max_tokens=100,
        clock=FakeClock(),  # every process in the same day
    )
    served: list[int] = []
    lock = threading.Lock()

    def spend() -> None:
        n = 0
        for _ in range(TRIES):
            try:
                llm.invoke("hi")
                n += 1
            except QuotaExhaustedError:
                pass
        with lock:
            served.append(n)

    threads = [threading.Thread(target=spend) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((sum(served), fake.calls))


def _run(ledger: str, budget: str, billed: float) -> tuple[int, int]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(ledger, budget, billed, out)) for _ in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    found = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return sum(s for s, _ in found), sum(c for _, c in found)


@pytest.fixture(params=SHARED)
def shared_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/shared.db"
    return str(request.getfixturevalue("redis_url"))


@pytest.mark.slow
def test_half_a_cent_admits_exactly_one_call_of_three_tenths(shared_ledger: str) -> None:
    served, sent = _run(shared_ledger, "$0.005/day", 0.003)
    assert (served, sent) == (1, 1)


@pytest.mark.slow
def test_a_budget_is_spent_to_the_last_whole_call_and_never_past_it(shared_ledger: str) -> None:
    # $0.05 holds 16 calls estimated at $0.003 ($0.048) and billed $0.002 each:
    # settled at $0.002, room comes back, so 25 calls ($0.050) fit and no more.
    served, sent = _run(shared_ledger, "$0.05/day", 0.002)
    assert served == sent
    assert served * 0.002 <= 0.05 + 1e-12
    # The last call admitted was estimated at $0.003: spend may end below the budget
    # by at most that much (the one that did not fit), never above it.
    assert served * 0.002 > 0.05 - 0.003
