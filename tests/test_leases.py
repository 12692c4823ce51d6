"""Leases: a call whose process is killed mid-call gives back its output estimate.

Processes of a few threads each reserve, "call the vendor" (a short sleep) and
settle, on SQLite and on Redis; some are killed with ``kill -9`` mid-run. Each
thread writes what it did to a file with one ``write`` per line, which a killed
process cannot half-do. Once the leases have run out (the ledger's clock is moved,
nobody sleeps), the pool counts the requests sent and the tokens reported, plus
the prompt of each killed call (the vendor may have seen it), and never more than
the limit was admitted.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from redis_fixture import start_redis
from support.backends import SHARED

from langchain_quota_router import Limit
from langchain_quota_router.quota.ledger import Demand, Reservation, open_ledger

pytestmark = pytest.mark.slow

T0 = 1_800_000_000.0  # 2027-01-15 08:00 UTC: far from any day boundary
LEASE = 60.0
PROMPT, ESTIMATE = 40, 400  # every call: 40 prompt tokens, 400 output reserved
LIMITS = [Limit.parse("150/day"), Limit.parse("10000000 tokens/day")]
PROCESSES, THREADS, KILLED = 4, 4, 2
_CTX: Any = multiprocessing.get_context(
    "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
)


def _work(url: str, log: str, threads: int, vendor_seconds: float, finish: str) -> None:
    """A process of ``threads`` callers, each until the pool refuses; it exits once
    the file ``finish`` exists, so a process to be killed is still there to kill.
    (A file, not a multiprocessing.Event: setting an Event waits for every waiter to
    wake, and a killed waiter never does.)"""
    ledger = open_ledger(url)
    ledger.reservation_lease = LEASE
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def caller(n: int) -> None:
        for i in range(10_000):
            res = ledger.reserve("shared", LIMITS, Demand(1, PROMPT, ESTIMATE), T0)
            if not isinstance(res, Reservation):
                return
            call = f"{os.getpid()}-{n}-{i}"
            os.write(fd, f"in {call}\n".encode())
            # The vendor answering; threads out of step, so a kill finds them in
            # every phase of a call.
            time.sleep(vendor_seconds * (1 + n / threads))
            output = (n * 7 + i) % 50
            os.write(fd, f"settling {call} {PROMPT + output}\n".encode())
            ledger.settle(res, Demand(1, PROMPT, output), T0 + 1)
            os.write(fd, f"done {call}\n".encode())

    workers = [threading.Thread(target=caller, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    deadline = time.monotonic() + 30
    while not os.path.exists(finish) and time.monotonic() < deadline:
        time.sleep(0.01)


class Calls:
    """What the callers' logs say: calls admitted, settling, settled, with tokens."""

    def __init__(self, logs: list[Path]) -> None:
        self.started: set[str] = set()
        self.tokens: dict[str, int] = {}
        self.done: set[str] = set()
        for log in logs:
            for line in log.read_text().splitlines():
                kind, call, *rest = line.split()
                if kind == "in":
                    self.started.add(call)
                elif kind == "settling":
                    self.tokens[call] = int(rest[0])
                else:
                    self.done.add(call)
        #: Killed mid-call, before settling: holding their whole estimate.
        self.in_flight = len(self.started) - len(self.tokens)
        #: Killed while settling: settled or not, nobody can tell.
        self.unsure = [t for call, t in self.tokens.items() if call not in self.done]
        self.settled_tokens = sum(t for call, t in self.tokens.items() if call in self.done)


def _run_and_kill(url: str, tmp_path: Path) -> Calls:
    """Run the processes, kill some mid-run, and read what the callers logged."""
    logs = [tmp_path / f"calls-{i}.log" for i in range(PROCESSES)]
    finish = tmp_path / "finish"
    # The processes to kill call a slow vendor, so they are killed mid-call.
    procs = [
        _CTX.Process(
            target=_work, args=(url, str(log), THREADS, 0.05 if i < KILLED else 0.002, str(finish))
        )
        for i, log in enumerate(logs)
    ]
    victims, others = procs[:KILLED], procs[KILLED:]
    for p in victims:
        p.start()
    # Kill once the victims are mid-run: some calls done, others in flight.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if all(log.exists() and log.read_text().count("done") >= 3 for log in logs[:KILLED]):
            break
        time.sleep(0.005)
    for p in victims:
        os.kill(p.pid, signal.SIGKILL)
    # The others go on spending the pool until it refuses.
    finish.touch()
    for p in others:
        p.start()
    for p in procs:
        p.join(timeout=30)
    assert [p.exitcode for p in procs] == [-signal.SIGKILL] * KILLED + [0] * (PROCESSES - KILLED)
    return Calls(logs)


@pytest.mark.parametrize("backend", SHARED)
def test_killed_callers_leave_only_their_prompts_once_leases_run_out(
    backend: str, tmp_path: Path
) -> None:
    server = start_redis(tmp_path) if backend == "redis" else None
    try:
        url = server.url if server else f"sqlite:///{tmp_path}/ledger.db"
        calls = _run_and_kill(url, tmp_path)
        assert calls.in_flight + len(calls.unsure) >= 1  # the test killed calls mid-call
        # A killed thread may have reserved and died before logging it: one per thread.
        unseen = KILLED * THREADS
        settled, unsure = calls.settled_tokens, calls.unsure
        observer = open_ledger(url)
        observer.reservation_lease = LEASE
        requests_before, tokens_before = (u.used for u in observer.usage("shared", LIMITS, T0 + 2))
        # Before the leases run out the killed calls hold their whole estimate...
        assert tokens_before >= settled + calls.in_flight * (PROMPT + ESTIMATE) + sum(unsure)
        # ...after, only their prompts: the request stays counted, the output goes.
        requests, spent = (u.used for u in observer.usage("shared", LIMITS, T0 + LEASE + 1))
        started = len(calls.started)
        assert started <= requests <= started + unseen
        assert requests <= 150  # never more admitted than the limit
        low = settled + (calls.in_flight + len(unsure)) * PROMPT
        assert low <= spent <= settled + (calls.in_flight + unseen) * PROMPT + sum(unsure)
        assert requests == requests_before
        observer.close()
    finally:
        if server:
            server.kill()


def test_lease_ids_are_unique_across_threads_and_forked_children() -> None:
    import os
    import threading

    from langchain_quota_router.quota.ledger.types import new_lease_id

    seen: list[str] = []

    def draw() -> None:
        seen.extend(new_lease_id() for _ in range(2000))

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(seen)) == len(seen) == 8000

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, new_lease_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    os.close(write)
    assert child not in seen
    assert child[:12] != seen[0][:12]  # the child drew its own prefix
