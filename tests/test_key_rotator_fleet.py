"""KeyRotator across processes: every process and every kind of call that spends a
pool is held to its limit together, over one SQLite file and over Redis."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from typing import Any

import pytest
from support.backends import SHARED

from langchain_quota_router import (
    Key,
    KeyRotator,
    QuotaExhaustedError,
    QuotaRoutedChatModel,
    Route,
)
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.testing import FakeVendorChatModel

K1 = "fleet-key-one-0123456789abcdef"
K2 = "fleet-key-two-fedcba9876543210"
PROCESSES = 4
THREADS = 4
TRIES = 10  # per thread: 4 x 4 x 10 = 160 attempts


def _clock() -> FakeClock:
    return FakeClock()  # every process at the same moment: one daily window


def _rotator_worker(ledger: str, out: Any) -> None:
    serp = KeyRotator("serp", keys=[K1, K2], limits=["10/day"], ledger=ledger, clock=_clock())
    out.put(_spend(lambda: serp.call(lambda *, api_key: api_key)))


def _mixed_worker(ledger: str, index: int, out: Any) -> None:
    clock = _clock()
    chat = QuotaRoutedChatModel(
        routes=[Route(FakeVendorChatModel(), name="chat", pool="trial", limits=["10/day"])],
        ledger=ledger,
        cache=False,
        clock=clock,
    )
    rerank = KeyRotator(
        "rerank", keys=[Key(K1, pool="trial", limits=["10/day"])], ledger=ledger, clock=clock
    )
    if index % 2:
        out.put(_spend(lambda: chat.invoke("hi")))
    else:
        out.put(_spend(lambda: rerank.call(lambda *, api_key: api_key)))


def _spend(call: Any) -> int:
    served = []
    lock = threading.Lock()

    def worker() -> None:
        n = 0
        for _ in range(TRIES):
            try:
                call()
                n += 1
            except QuotaExhaustedError:
                pass
        with lock:
            served.append(n)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(served)


def _run(target: Any, args: list[tuple[Any, ...]]) -> int:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, out)) for a in args]
    for p in procs:
        p.start()
    totals = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return sum(totals)


@pytest.fixture(params=SHARED)
def shared_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/shared.db"
    return str(request.getfixturevalue("redis_url"))


@pytest.mark.slow
def test_two_keys_of_ten_a_day_serve_exactly_twenty(shared_ledger: str) -> None:
    assert _run(_rotator_worker, [(shared_ledger,)] * PROCESSES) == 20


@pytest.mark.slow
def test_a_chat_route_and_a_key_sharing_a_pool_serve_ten_together(shared_ledger: str) -> None:
    assert _run(_mixed_worker, [(shared_ledger, i) for i in range(PROCESSES)]) == 10
