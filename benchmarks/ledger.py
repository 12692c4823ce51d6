"""How many admissions per second each ledger backend takes: memory, SQLite, Redis.

An admission is what the router does per call: one ``reserve`` of one request on a
pool limited to ``1000000/minute`` and ``100000000 tokens/day``, then one ``settle``
with the real usage. Each figure is the median of several runs of a fixed count,
in one process (one thread) and in four processes sharing one pool. The Redis
figures use a ``redis-server`` this script starts on a free loopback port (with
its append-only file on, as in production) and stops.

Run: ``.venv/bin/python benchmarks/ledger.py [--runs 5] [--scale 1.0]``
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from langchain_quota_router._limits import Limit
from langchain_quota_router.ledger import Ledger, open_ledger
from langchain_quota_router.ledger.base import Demand, Reservation

# The Redis launcher the tests use: one way to start a throwaway server.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from redis_fixture import RedisServer, start_redis

LIMITS = [Limit.parse("1000000/minute"), Limit.parse("100000000 tokens/day")]
ESTIMATE = Demand(requests=1, input_tokens=300, output_tokens=200)
REAL = Demand(requests=1, input_tokens=300, output_tokens=120)
#: Admissions per process per run, chosen so one run takes well under a second.
COUNTS = {"memory": 20_000, "sqlite": 2_000, "redis": 4_000}
PROCESSES = 4
_CTX: Any = multiprocessing.get_context(
    "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
)


def admit(ledger: Ledger, pool: str, count: int) -> None:
    """Make ``count`` admissions (reserve + settle) on ``pool``."""
    for _ in range(count):
        now = time.time()
        reservation = ledger.reserve(pool, LIMITS, ESTIMATE, now)
        if not isinstance(reservation, Reservation):
            msg = f"refused during the benchmark: {reservation}"
            raise RuntimeError(msg)
        ledger.settle(reservation, REAL, now)


def _worker(url: str, pool: str, count: int, start: Any, done: Any) -> None:
    ledger = open_ledger(url)
    admit(ledger, f"{pool}-warm-{os.getpid()}", 20)  # connect, schema, scripts
    start.wait()
    admit(ledger, pool, count)
    ledger.close()
    done.put(count)


def measure(url: str, processes: int, count: int, pool: str) -> float:
    """Admissions per second of ``processes`` processes, ``count`` each."""
    if processes == 1:
        ledger = open_ledger(url)
        admit(ledger, f"{pool}-warm", 20)
        started = time.perf_counter()
        admit(ledger, pool, count)
        elapsed = time.perf_counter() - started
        ledger.close()
        return count / elapsed
    start = _CTX.Barrier(processes + 1)
    done = _CTX.Queue()
    workers = [
        _CTX.Process(target=_worker, args=(url, pool, count, start, done)) for _ in range(processes)
    ]
    for w in workers:
        w.start()
    start.wait(timeout=60)
    started = time.perf_counter()
    total = sum(done.get(timeout=120) for _ in workers)
    elapsed = time.perf_counter() - started
    for w in workers:
        w.join(timeout=30)
    return total / elapsed


def median_rate(url: str, processes: int, count: int, runs: int, name: str) -> float:
    """The median of ``runs`` measurements, each on a fresh pool."""
    rates = [measure(url, processes, count, f"bench-{name}-{processes}-{i}") for i in range(runs)]
    return statistics.median(rates)


def ping_round_trip(url: str, count: int = 2000) -> float:
    """Microseconds per Redis PING with redis-py: the floor under each script call."""
    import redis

    client = redis.Redis.from_url(url)
    client.ping()
    started = time.perf_counter()
    for _ in range(count):
        client.ping()
    elapsed = time.perf_counter() - started
    client.close()
    return elapsed / count * 1e6


def main() -> None:
    """Measure every backend and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (median)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the counts")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        urls = {
            "memory": "memory://",
            "sqlite": f"sqlite:///{folder}/ledger.db",
        }
        server: RedisServer | None = None
        if shutil.which("redis-server"):
            server = start_redis(Path(folder))
            urls["redis"] = server.url
        else:
            print("redis-server is not installed: skipping Redis", file=sys.stderr)
        rows = []
        ping = ping_round_trip(server.url) if server is not None else None
        try:
            for name, url in urls.items():
                count = max(1, int(COUNTS[name] * options.scale))
                single = median_rate(url, 1, count, options.runs, name)
                many = median_rate(url, PROCESSES, count, options.runs, name)
                rows.append((name, single, many))
        finally:
            if server is not None:
                server.stop()

    print(
        f"Admissions per second (reserve + settle), median of {options.runs} runs; "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    if ping is not None:
        print(
            f"Redis PING round trip with redis-py: {ping:.0f} us "
            "(an admission is two round trips: the reserve and the settle scripts)"
        )
    print()
    print(f"| backend | 1 process, 1 thread | {PROCESSES} processes, one pool |")
    print("|---|---:|---:|")
    for name, single, many in rows:
        note = " (each its own memory)" if name == "memory" else ""
        print(f"| {name} | {single:,.0f} | {many:,.0f}{note} |")


if __name__ == "__main__":
    main()
