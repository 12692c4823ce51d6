"""The Redis ledger's async path alone: admissions per second, and where one costs.

    python benchmarks/redis_path.py [--runs 3] [--count 4000] [--profile]

An admission is ``areserve`` + ``asettle`` of one request on a pool limited to
``1000000/minute`` and ``100000000 tokens/day``, the settlement giving part of the
output estimate back (as ``benchmarks/ledger.py`` does). Figures: the median of
``--runs`` runs, in one process of 16 tasks and in four processes of 16 tasks each
on one pool (the column ``benchmarks/ledger.py`` prints as "async: 4 processes x 16
tasks"), against a ``redis-server`` started here with its append-only file on.
``--profile`` prints the functions one process spends most time in instead.

Target: >= 12,000 admissions/s with four processes.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import multiprocessing
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from langchain_quota_router.quota.ledger import Demand, Reservation, open_ledger
from langchain_quota_router.quota.limits import Limit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from redis_fixture import start_redis

LIMITS = [Limit.parse("1000000/minute"), Limit.parse("100000000 tokens/day")]
ESTIMATE = Demand(requests=1, input_tokens=300, output_tokens=200)
REAL = Demand(requests=1, input_tokens=300, output_tokens=120)
TASKS = 16
TARGET = 12_000
_CTX: Any = multiprocessing.get_context("fork")


async def admit(ledger: Any, pool: str, count: int, tasks: int = TASKS) -> None:
    """``count`` admissions on ``pool`` from ``tasks`` concurrent tasks."""

    async def task(share: int) -> None:
        for _ in range(share):
            now = time.time()
            made = await ledger.areserve(pool, LIMITS, ESTIMATE, now)
            if not isinstance(made, Reservation):
                msg = f"refused during the benchmark: {made}"
                raise RuntimeError(msg)
            await ledger.asettle(made, REAL, now)

    await asyncio.gather(*(task(count // tasks) for _ in range(tasks)))


def _worker(url: str, pool: str, count: int, start: Any, done: Any) -> None:
    async def main() -> None:
        ledger = open_ledger(url)
        await admit(ledger, f"{pool}-warm", 64)
        await asyncio.to_thread(start.wait)
        cpu = time.process_time()
        await admit(ledger, pool, count)
        done.put((count // TASKS * TASKS, time.process_time() - cpu))
        ledger.close()

    asyncio.run(main())


def measure(url: str, processes: int, count: int, pool: str) -> tuple[float, float]:
    """Admissions per second of ``processes`` processes of ``TASKS`` tasks, and the
    CPU time (us) a client process spends per admission: the figure a machine busy
    with other work disturbs least."""
    start, done = _CTX.Barrier(processes + 1), _CTX.Queue()
    workers = [
        _CTX.Process(target=_worker, args=(url, pool, count, start, done)) for _ in range(processes)
    ]
    for w in workers:
        w.start()
    start.wait(timeout=60)
    started = time.perf_counter()
    results = [done.get(timeout=120) for _ in workers]
    elapsed = time.perf_counter() - started
    for w in workers:
        w.join(timeout=30)
    total = sum(n for n, _ in results)
    return total / elapsed, sum(cpu for _, cpu in results) / total * 1e6


def profile(url: str, count: int) -> None:
    """Where one process of ``TASKS`` tasks spends its time."""

    async def main() -> None:
        ledger = open_ledger(url)
        await admit(ledger, "warm", 64)
        profiler = cProfile.Profile()
        profiler.enable()
        await admit(ledger, "profiled", count)
        profiler.disable()
        ledger.close()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)

    asyncio.run(main())


def main() -> None:
    """Measure and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--count", type=int, default=4000, help="admissions per process")
    parser.add_argument("--profile", action="store_true")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        server = start_redis(Path(folder))
        try:
            if options.profile:
                profile(server.url, options.count)
                return
            for processes in (1, 4):
                runs = [
                    measure(server.url, processes, options.count, f"bench-{processes}-{i}")
                    for i in range(options.runs)
                ]
                rates = [rate for rate, _ in runs]
                print(
                    f"redis async, {processes} process(es) x {TASKS} tasks: "
                    f"{statistics.median(rates):,.0f} admissions/s "
                    f"(runs: {', '.join(f'{r:,.0f}' for r in rates)}); "
                    f"client CPU {statistics.median(c for _, c in runs):.0f} us/admission"
                )
        finally:
            server.stop()
    print(f"target: >= {TARGET:,}/s with 4 processes")


if __name__ == "__main__":
    main()
