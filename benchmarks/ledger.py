"""How many admissions per second each ledger backend takes: memory, SQLite, Redis.

An admission is what the router does per call: one ``reserve`` of one request on a
pool limited to ``1000000/minute`` and ``100000000 tokens/day``, then one ``settle``
with the real usage. Each figure is the median of several runs of a fixed count,
in one process (one thread), and in two and four processes sharing one pool; and,
where the ledger has the async API (``areserve``/``asettle``), in four processes
of 16 tasks each on one event loop apiece. The Redis figures use a
``redis-server`` this script starts on a free loopback port (with its append-only
file on, as in production) and stops.

Targets (printed beside the figures; issue 22's): with four processes on one pool,
Redis >= 12,000 admissions/s and SQLite >= 20,000/s (the better of the sync and the
async column, which the output names); memory is there for reference.

``--per-call`` prints instead what one admission costs the calling thread, in
microseconds (reserve, settle, and both), on SQLite without slices and on memory
for reference: the ledger's share of the router's per-call overhead.

Run: ``.venv/bin/python benchmarks/ledger.py [--quick] [--runs 5] [--scale 1.0]
[--only sqlite,redis] [--per-call]``
"""

from __future__ import annotations

import argparse
import asyncio
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

from langchain_quota_router.quota.ledger import Demand, Ledger, Reservation, open_ledger
from langchain_quota_router.quota.limits import Limit

# The Redis launcher the tests use: one way to start a throwaway server.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from redis_fixture import RedisServer, start_redis

LIMITS = [Limit.parse("1000000/minute"), Limit.parse("100000000 tokens/day")]
ESTIMATE = Demand(requests=1, input_tokens=300, output_tokens=200)
REAL = Demand(requests=1, input_tokens=300, output_tokens=120)
#: Admissions per process per run, chosen so one run takes well under a second.
COUNTS = {
    "memory": 20_000,
    "sqlite": 2_000,
    "redis": 4_000,
    "sqlite + slices": 20_000,
    "redis + slices": 20_000,
}
PROCESSES = (1, 2, 4)
#: The async column: this many processes, each with this many tasks on its loop.
ASYNC_PROCESSES, ASYNC_TASKS = 4, 16
#: backend -> (processes the target is for, None for the best column; admissions/s).
TARGETS: dict[str, tuple[int | None, float]] = {"redis": (4, 12_000), "sqlite": (4, 20_000)}
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


async def aadmit(ledger: Any, pool: str, count: int, tasks: int) -> None:
    """Make ``count`` admissions on ``pool`` through the async API, from ``tasks``
    concurrent tasks."""

    async def task(share: int) -> None:
        for _ in range(share):
            now = time.time()
            reservation = await ledger.areserve(pool, LIMITS, ESTIMATE, now)
            if not isinstance(reservation, Reservation):
                msg = f"refused during the benchmark: {reservation}"
                raise RuntimeError(msg)
            await ledger.asettle(reservation, REAL, now)

    shares = [count // tasks + (1 if i < count % tasks else 0) for i in range(tasks)]
    await asyncio.gather(*(task(share) for share in shares))


def _worker(url: str, pool: str, count: int, start: Any, done: Any, tasks: int = 0) -> None:
    ledger = open_ledger(url)
    if tasks:
        asyncio.run(_async_worker(ledger, pool, count, start, tasks))
    else:
        admit(ledger, f"{pool}-warm-{os.getpid()}", 20)  # connect, schema, scripts
        start.wait()
        admit(ledger, pool, count)
    ledger.close()
    done.put(count)


async def _async_worker(ledger: Any, pool: str, count: int, start: Any, tasks: int) -> None:
    await aadmit(ledger, f"{pool}-warm-{os.getpid()}", 20, tasks)  # the loop's client
    await asyncio.to_thread(start.wait)
    await aadmit(ledger, pool, count, tasks)


def has_async_api(url: str) -> bool:
    """Whether this version's ledgers offer ``areserve``/``asettle``."""
    ledger = open_ledger(url)
    try:
        return hasattr(ledger, "areserve") and hasattr(ledger, "asettle")
    finally:
        ledger.close()


def measure(url: str, processes: int, count: int, pool: str, tasks: int = 0) -> float:
    """Admissions per second of ``processes`` processes, ``count`` each (through the
    async API from ``tasks`` tasks per process when ``tasks``)."""
    if processes == 1 and not tasks:
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
        _CTX.Process(target=_worker, args=(url, pool, count, start, done, tasks))
        for _ in range(processes)
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


def median_rate(
    url: str, processes: int, count: int, runs: int, name: str, tasks: int = 0
) -> float:
    """The median of ``runs`` measurements, each on a fresh pool."""
    rates = [
        measure(url, processes, count, f"bench-{name}-{processes}-{tasks}-{i}", tasks)
        for i in range(runs)
    ]
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


def per_call(url: str, count: int, runs: int) -> tuple[float, float]:
    """Median microseconds per ``reserve`` and per ``settle`` over ``runs`` runs of
    ``count`` admissions in this thread (settle time includes whatever a deferred
    give-back costs later, since the next reserve pays it)."""
    ledger = open_ledger(url)
    admit(ledger, "per-call-warm", 200)
    reserves: list[float] = []
    settles: list[float] = []
    clock = time.perf_counter
    for run in range(runs):
        pool = f"per-call-{run}"
        spent_reserve = spent_settle = 0.0
        for _ in range(count):
            now = time.time()
            t0 = clock()
            reservation = ledger.reserve(pool, LIMITS, ESTIMATE, now)
            t1 = clock()
            if not isinstance(reservation, Reservation):
                msg = f"refused during the benchmark: {reservation}"
                raise RuntimeError(msg)
            ledger.settle(reservation, REAL, now)
            spent_reserve += t1 - t0
            spent_settle += clock() - t1
        reserves.append(spent_reserve / count * 1e6)
        settles.append(spent_settle / count * 1e6)
    ledger.close()
    return statistics.median(reserves), statistics.median(settles)


def main_per_call(options: argparse.Namespace) -> None:
    """Print microseconds per admission in one thread, SQLite and memory."""
    count = max(1, int(5_000 * options.scale))
    print(
        f"Microseconds per call in one thread, median of {options.runs} runs of "
        f"{count:,} admissions; Python {platform.python_version()}"
    )
    print()
    print("| backend | reserve | settle | reserve + settle |")
    print("|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        for name, url in (("sqlite", f"sqlite:///{folder}/l.db"), ("memory", "memory://")):
            reserve, settle = per_call(url, count, options.runs)
            print(f"| {name} | {reserve:.1f} | {settle:.1f} | {reserve + settle:.1f} |")


def main() -> None:
    """Measure every backend and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 runs of half the counts")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (median; 5)")
    parser.add_argument("--scale", type=float, default=None, help="multiply the counts (1.0)")
    parser.add_argument("--only", default="", help="comma-separated backends (default: all)")
    parser.add_argument(
        "--per-call", action="store_true", help="microseconds per reserve and settle, one thread"
    )
    options = parser.parse_args()
    options.runs = options.runs or (3 if options.quick else 5)
    options.scale = options.scale or (0.5 if options.quick else 1.0)
    if options.per_call:
        main_per_call(options)
        return

    with tempfile.TemporaryDirectory() as folder:
        urls = {
            "memory": "memory://",
            "sqlite": f"sqlite:///{folder}/ledger.db",
            "sqlite + slices": f"sqlite:///{folder}/sliced.db?slices=on",
        }
        server: RedisServer | None = None
        wanted = options.only.split(",") if options.only else list(COUNTS)
        if not any(name.startswith("redis") for name in wanted):
            pass
        elif shutil.which("redis-server"):
            server = start_redis(Path(folder))
            urls["redis"] = server.url
            urls["redis + slices"] = server.url + "?slices=on"
        else:
            print("redis-server is not installed: skipping Redis", file=sys.stderr)
        urls = {name: url for name, url in urls.items() if name in wanted}
        rows: list[tuple[str, list[float], float | None]] = []
        ping = ping_round_trip(server.url) if server is not None else None
        try:
            for name, url in urls.items():
                count = max(1, int(COUNTS[name] * options.scale))
                rates = [median_rate(url, n, count, options.runs, name) for n in PROCESSES]
                concurrent = None
                if has_async_api(url):
                    concurrent = median_rate(
                        url, ASYNC_PROCESSES, count, options.runs, name, ASYNC_TASKS
                    )
                rows.append((name, rates, concurrent))
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
    heads = ["1 process, 1 thread"] + [f"{n} processes, one pool" for n in PROCESSES[1:]]
    heads.append(f"async: {ASYNC_PROCESSES} processes x {ASYNC_TASKS} tasks")
    print("| backend | " + " | ".join(heads) + " | target |")
    print("|---|" + "---:|" * len(heads) + "---|")
    for name, rates, concurrent in rows:
        cells = [f"{rate:,.0f}" for rate in rates]
        cells.append("n/a (no async API)" if concurrent is None else f"{concurrent:,.0f}")
        target = "reference (each process its own memory)"
        if name in TARGETS:
            processes, goal = TARGETS[name]
            if processes is None:
                target = f">= {goal:,.0f}/s (any column)"
            else:
                target = f">= {goal:,.0f}/s with {processes} processes"
        print(f"| {name} | " + " | ".join(cells) + f" | {target} |")
    print()
    for name, rates, concurrent in rows:
        if name not in TARGETS:
            continue
        processes, goal = TARGETS[name]
        columns = dict(zip(heads, [*rates, concurrent], strict=True))
        if processes is not None:
            columns = {
                head: rate
                for head, rate in columns.items()
                if head.startswith((f"{processes} processes", f"async: {processes} processes"))
            }
        measured = {head: rate for head, rate in columns.items() if rate is not None}
        head, best = max(measured.items(), key=lambda item: item[1])
        verdict = "met" if best >= goal else f"MISSED ({best / goal:.0%} of it)"
        print(f"{name}: {best:,.0f} admissions/s ({head}); target >= {goal:,.0f}/s: {verdict}")


if __name__ == "__main__":
    main()
