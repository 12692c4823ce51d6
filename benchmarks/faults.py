"""The ledger's promise under faults: kill -9 mid-call, a Redis restart, a Redis outage.

    .venv/bin/python benchmarks/faults.py [--processes 4] [--threads 4]

Prints, per backend (SQLite, Redis):

- **kill -9**: processes of threads reserve, "call the vendor" (a sleep) and settle
  on a pool of ``150/day``; half the processes are killed with ``kill -9`` mid-call,
  then the others spend the pool until it refuses. Admitted vs the limit, and the
  quota each killed call still holds before and after its lease runs out (by design
  only its prompt stays: the vendor may have seen the request).
- **Redis restart**: threads call a router (fake vendor) on a pool of ``300/day``
  while ``redis-server`` (append-only file, ``appendfsync everysec``) is killed
  with ``kill -9`` and restarted. Admitted vs the limit, and answers lost: calls the
  vendor answered whose caller got an error instead (target 0).
- **Outage with on_error=local**: processes share a pool of ``300/day`` through
  ``?on_error=local``; Redis is stopped when 200 are spent. What each process
  admits while it is away, against its share of the 100 left (the default: an even
  share over the processes Redis saw), and what Redis counts once it is back.

Redis scenarios need ``redis-server`` on PATH (skipped otherwise).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from langchain_quota_router import QuotaRoutedChatModel, Route
from langchain_quota_router.quota.ledger import Demand, Reservation, open_ledger
from langchain_quota_router.quota.ledger.failopen import FailOpenLedger
from langchain_quota_router.quota.ledger.redis import RedisLedger
from langchain_quota_router.quota.limits import Limit
from langchain_quota_router.testing import FakeVendorChatModel

# The Redis launcher the tests use: one way to start a throwaway server.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from redis_fixture import RedisServer, start_redis

T0 = 1_800_000_000.0  # 2027-01-15 08:00 UTC: far from any day boundary
LEASE = 60.0
PROMPT, ESTIMATE = 40, 400
KILL_LIMITS = [Limit.parse("150/day"), Limit.parse("10000000 tokens/day")]
_CTX: Any = multiprocessing.get_context(
    "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
)


# ------------------------------------------------------------------- kill -9


def _caller_process(url: str, log: str, threads: int, vendor_seconds: float) -> None:
    ledger = open_ledger(url)
    ledger.reservation_lease = LEASE
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def caller(n: int) -> None:
        for i in range(100_000):
            res = ledger.reserve("shared", KILL_LIMITS, Demand(1, PROMPT, ESTIMATE), T0)
            if not isinstance(res, Reservation):
                return
            call = f"{os.getpid()}-{n}-{i}"
            os.write(fd, f"in {call}\n".encode())  # one write: all or nothing
            time.sleep(vendor_seconds * (1 + n / threads))  # threads out of step
            output = (n * 7 + i) % 50
            os.write(fd, f"settling {call} {PROMPT + output}\n".encode())
            ledger.settle(res, Demand(1, PROMPT, output), T0 + 1)

    workers = [threading.Thread(target=caller, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def kill_9(url: str, folder: Path, processes: int, threads: int) -> dict[str, Any]:
    """Kill half the processes mid-run; what the pool holds before and after leases."""
    killed = max(1, processes // 2)
    logs = [folder / f"calls-{i}.log" for i in range(processes)]
    # The processes to kill call a slow vendor (50 ms), so they die mid-call; the
    # others (2 ms) start once they are dead and spend the pool until it refuses.
    procs = [
        _CTX.Process(
            target=_caller_process, args=(url, str(p), threads, 0.05 if i < killed else 0.002)
        )
        for i, p in enumerate(logs)
    ]
    for p in procs[:killed]:
        p.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if all(p.exists() and p.read_text().count("settling") >= 3 for p in logs[:killed]):
            break
        time.sleep(0.005)
    for p in procs[:killed]:
        os.kill(p.pid, signal.SIGKILL)
    for p in procs[killed:]:
        p.start()
    for p in procs:
        p.join(timeout=60)
    started, finished = set(), {}
    for log in logs:
        for line in log.read_text().splitlines():
            kind, call, *rest = line.split()
            if kind == "in":
                started.add(call)
            else:
                finished[call] = int(rest[0])
    reported = sum(finished.values())
    observer = open_ledger(url)
    observer.reservation_lease = LEASE
    _, before = (u.used for u in observer.usage("shared", KILL_LIMITS, T0 + 2))
    requests, after = (u.used for u in observer.usage("shared", KILL_LIMITS, T0 + LEASE + 1))
    observer.close()
    # Killed calls: admitted, never settled (some died before they could log "in").
    # A call killed while settling counts as settled: at most one per killed thread.
    killed_calls = requests - len(finished)
    per_call = max(killed_calls, 1)
    return {
        "admitted": requests,
        "limit": KILL_LIMITS[0].amount,
        "killed calls": killed_calls,
        "held per killed call before lease expiry": (before - reported) / per_call,
        "held per killed call after lease expiry": (after - reported) / per_call,
    }


# ------------------------------------------------------------ Redis restart


def redis_restart(folder: Path, threads: int) -> dict[str, Any]:
    """Kill -9 and restart redis-server under a busy router; answers lost, admitted."""
    server = start_redis(folder / "restart", "--appendfsync", "everysec")
    vendor = FakeVendorChatModel(model="m", script=["An answer."])
    router = QuotaRoutedChatModel(
        routes=[Route(vendor, name="a", limits=["300/day"])],
        ledger=server.url,
        cache=False,
    )
    answers = errors = 0
    lock = threading.Lock()
    stop = threading.Event()

    def caller() -> None:
        nonlocal answers, errors
        while not stop.is_set():
            try:
                router.invoke("Hello")
            except Exception:  # any error counts; running out of quota ends the run
                with lock:
                    errors += 1
                time.sleep(0.01)
                continue
            with lock:
                answers += 1

    workers = [threading.Thread(target=caller) for _ in range(threads)]
    try:
        for w in workers:
            w.start()
        while answers < 120:
            time.sleep(0.001)
        time.sleep(1.2)  # let appendfsync everysec write the first part
        server.kill()
        time.sleep(0.3)
        server.start()
        time.sleep(2.0)
        stop.set()
        for w in workers:
            w.join(timeout=30)
        counted = open_ledger(server.url).usage("a", [Limit.parse("300/day")], time.time())
        return {
            "admitted (vendor calls)": vendor.calls,
            "limit": 300,
            "counted by Redis after restart": counted[0].used,
            "answers lost": vendor.calls - answers,
        }
    finally:
        stop.set()
        server.kill()


# ------------------------------------------------------------------- outage


def _outage_process(url: str, events: dict[str, Any], out: Any) -> None:
    ledger = open_ledger(url)
    assert isinstance(ledger, FailOpenLedger)
    assert isinstance(ledger.primary, RedisLedger)
    ledger.primary.heartbeat_interval = 0.0  # count the fleet on every reserve
    day = [Limit.parse("300/day")]
    before = 0
    events["go"].wait()
    for _ in range(50):  # 50 each before the outage
        if isinstance(ledger.reserve("p", day, Demand(), T0), Reservation):
            before += 1
    out.put(before)
    events["sync"].wait()
    ledger.usage("p", day, T0)  # what Redis says is left, as a busy process would see
    out.put(0)
    events["down"].wait()
    during = 0
    for _ in range(300):
        res = ledger.reserve("p", day, Demand(), T0)
        if isinstance(res, Reservation):
            during += 1
            ledger.settle(res, Demand(), T0)
    out.put(during)
    events["up"].wait()
    time.sleep(0.25)  # past retry_interval: the next call reaches Redis again
    ledger.usage("p", day, T0)
    out.put(0)


def outage(folder: Path, processes: int) -> dict[str, Any]:
    """Stop Redis after 200 of 300; what each process admits alone, then hands back."""
    server = start_redis(folder / "outage")
    url = f"{server.url}?on_error=local&retry_interval=0.2"
    events = {name: _CTX.Event() for name in ("go", "sync", "down", "up")}
    out = _CTX.Queue()
    procs = [
        _CTX.Process(target=_outage_process, args=(url, events, out)) for _ in range(processes)
    ]
    try:
        for p in procs:
            p.start()
        events["go"].set()
        before = sum(out.get(timeout=30) for _ in procs)
        events["sync"].set()
        for _ in procs:
            out.get(timeout=30)
        used = RedisLedger(server.url).usage("p", [Limit.parse("300/day")], T0)[0].used
        server.stop()
        events["down"].set()
        during = [out.get(timeout=60) for _ in procs]
        server.start()
        events["up"].set()
        for _ in procs:
            out.get(timeout=30)
        for p in procs:
            p.join(timeout=30)
        room = 300 - used
        counted = RedisLedger(server.url).usage("p", [Limit.parse("300/day")], T0)[0].used
        return {
            "processes": processes,
            "admitted before outage": before,
            "room left at outage": room,
            "admitted during outage per process": during,
            "share allowed per process": room // processes,
            "over-admission (fleet total - room left)": max(0, sum(during) - room),
            "counted by Redis once back (before + handed back)": counted,
        }
    finally:
        server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    options = parser.parse_args()
    # Alerts and fail-open warnings are expected here; the figures say the rest.
    logging.getLogger("langchain_quota_router").setLevel(logging.ERROR)
    have_redis = shutil.which("redis-server") is not None
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        backends: dict[str, str] = {"sqlite": f"sqlite:///{folder}/ledger.db"}
        server: RedisServer | None = None
        if have_redis:
            server = start_redis(folder / "kill9")
            backends["redis"] = server.url
        try:
            for backend, url in backends.items():
                work = folder / backend
                work.mkdir()
                result = kill_9(url, work, options.processes, options.threads)
                shape = f"{options.processes} processes x {options.threads} threads"
                print(f"## kill -9 mid-call, {backend} ({shape}, half killed)")
                print(f"   per call: prompt {PROMPT} tokens, output estimate {ESTIMATE}")
                for key, value in result.items():
                    print(
                        f"   {key}: {value:.1f}"
                        if isinstance(value, float)
                        else f"   {key}: {value}"
                    )
        finally:
            if server is not None:
                server.kill()
        if not have_redis:
            print("redis-server is not installed: skipping the Redis scenarios", file=sys.stderr)
            return
        print(f"## Redis kill -9 and restart under a router ({options.threads} threads)")
        for key, value in redis_restart(folder, options.threads).items():
            print(f"   {key}: {value}")
        print("## Redis outage with on_error=local (pool 300/day, 200 spent when it stops)")
        for key, value in outage(folder, options.processes).items():
            print(f"   {key}: {value}")


if __name__ == "__main__":
    main()
