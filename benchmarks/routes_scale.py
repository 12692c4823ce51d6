"""What a routed call costs as the number of routes grows: 1, 10, 100, 1,000 routes.

    python benchmarks/routes_scale.py [--quick] [--rounds R] [--routes 1,10,100,1000]

Every route wraps the project's ``FakeVendorChatModel`` (it answers at once), has
its own pool (the route's name) and three limits. Variants, each on a memory and
on a SQLite ledger:
  - ``priority, first free``: ``strategy="priority"``; the first route has room, so
    every call goes to it;
  - ``priority, all but last full``: every route but the last has a ``"1/day"``
    limit already spent (one call each through a one-route router on the same
    ledger, before timing), so the ledger really refuses each of them on every
    call and the call lands on the last route;
  - ``spread``: ``strategy="spread"``, every route with room.
The time is the median per sync ``invoke`` over interleaved rounds (every variant
and route count timed in turn each round, so machine load hits all alike), and
the ratio to the same variant's 1-route time in this run.

Target: at 1,000 routes every variant <= 3x its 1-route time.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable

from _common import calibrate, interleaved
from langchain_core.language_models import BaseChatModel

from langchain_quota_router import QuotaRoutedChatModel, Route
from langchain_quota_router.testing import FakeVendorChatModel

PROMPT = "Summarise the plot of Hamlet in one sentence."
FREE = ["100000/minute", "1000000/day", "10000000 tokens/day"]
FULL = ["1/day", "1000000/day", "10000000 tokens/day"]
TARGET = 3.0
VARIANTS = ("priority, first free", "priority, all but last full", "spread")


def fake(i: int) -> BaseChatModel:
    return FakeVendorChatModel(model=f"m{i}", script=["an answer"])


def build(variant: str, n: int, ledger: str) -> QuotaRoutedChatModel:
    """A router of ``n`` routes set up for ``variant`` on ``ledger`` (URL)."""
    full = variant == "priority, all but last full"
    routes = [
        Route(fake(i), name=f"r{i}", priority=i, limits=FULL if full and i < n - 1 else FREE)
        for i in range(n)
    ]
    router = QuotaRoutedChatModel(
        routes=routes,
        ledger=ledger,
        cache=False,
        strategy="spread" if variant == "spread" else "priority",
    )
    if full:
        # Spend each full route's one call of the day through a router that has only
        # that route, on the same ledger object: n calls, not n * n / 2.
        for route in routes[:-1]:
            filler = QuotaRoutedChatModel(
                routes=[Route(fake(0), name=route.name, limits=FULL)],
                ledger=router.ledger_backend,
                cache=False,
            )
            filler.invoke(PROMPT)
        # Every route but the last now refuses: the call lands on the last one.
        answer = router.invoke(PROMPT)
        assert answer.response_metadata.get("route") == f"r{n - 1}", answer.response_metadata
    return router


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter blocks")
    parser.add_argument("--rounds", type=int, default=None, help="default 15; quick 5")
    parser.add_argument("--routes", default="1,10,100,1000", help="comma-separated counts")
    parser.add_argument("--backends", default="memory,sqlite", help="memory and/or sqlite")
    options = parser.parse_args()
    counts = [int(c) for c in options.routes.split(",")]
    rounds = options.rounds or (5 if options.quick else 15)
    block_seconds = 0.05 if options.quick else 0.2

    # Filling the full routes raises one "quota alert" warning per route: not news.
    logging.getLogger("langchain_quota_router").setLevel(logging.ERROR)
    folder = tempfile.mkdtemp(prefix="qr-bench-routes-")
    os.environ["QUOTA_ROUTER_CACHE_DIR"] = f"{folder}/cache"
    backends = options.backends.split(",")
    calls: dict[str, Callable[[], object]] = {}
    built = time.perf_counter()
    for backend in backends:
        for variant in VARIANTS:
            for n in counts:
                ledger = (
                    "memory://" if backend == "memory" else f"sqlite:///{folder}/{len(calls)}.db"
                )
                router = build(variant, n, ledger)
                calls[f"{backend}|{variant}|{n}"] = lambda router=router: router.invoke(PROMPT)
    built = time.perf_counter() - built
    blocks = {name: calibrate(fn, block_seconds) for name, fn in calls.items()}
    medians = interleaved(calls, rounds, calls=blocks, warmup=2)

    print(
        f"# per-call time (sync invoke) by number of routes, 3 limits each; median of "
        f"{rounds} interleaved rounds of ~{block_seconds * 1e3:.0f} ms per variant; "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"set-up {built:.0f} s"
    )
    print(f"# target: at {max(counts):,} routes every variant <= {TARGET:.0f}x its 1-route time")
    print()
    header = " | ".join(f"{n:,} routes" for n in counts)
    print(f"| ledger | variant | {header} |")
    print("|---|---|" + "---:|" * len(counts))
    for backend in backends:
        for variant in VARIANTS:
            base = medians[f"{backend}|{variant}|{counts[0]}"]
            cells = []
            for n in counts:
                t = medians[f"{backend}|{variant}|{n}"]
                cell = f"{t * 1e6:,.0f} µs"
                if n != counts[0]:
                    ratio = t / base
                    cell += f" ({ratio:.1f}x"
                    if n == max(counts) and counts[0] == 1:
                        cell += " ok" if ratio <= TARGET else " MISS"
                    cell += ")"
                cells.append(cell)
            print(f"| {backend} | {variant} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
