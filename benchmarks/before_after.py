"""A routed chat call's cost on this tree and on an earlier commit, in one run.

    python benchmarks/before_after.py [--ref GIT_REF] [--after GIT_REF] [--rounds R] [--calls N]

Exports ``GIT_REF`` (default: the commit before the quota core was split out,
``cac2216``) into a temporary folder, then alternates rounds between the two
trees: each round runs a fresh interpreter per tree that times ``N`` invokes of
the same router (two fake routes, SQLite ledger, no cache, fleet counters on) and
prints its per-call median. Alternating rounds means a change in machine load hits
both trees alike. Prints each tree's median of round medians and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MEASURE = """
import os, statistics, sys, tempfile, time
folder = tempfile.mkdtemp(prefix="qr-ba-")
os.environ["QUOTA_ROUTER_LEDGER"] = f"sqlite:///{folder}/ledger.db"
from langchain_quota_router import QuotaRoutedChatModel, Route
from langchain_quota_router.testing import FakeVendorChatModel
router = QuotaRoutedChatModel(
    routes=[
        Route(FakeVendorChatModel(model="m1"), name="one",
              limits=["1000000/minute", "1000000000 tokens/day"]),
        Route(FakeVendorChatModel(model="m2"), name="two", priority=1),
    ],
    cache=False,
)
calls = int(sys.argv[1])
for _ in range(200):
    router.invoke("Summarise the plot of Hamlet in one sentence.")
samples = []
for _ in range(10):
    start = time.perf_counter()
    for _ in range(calls // 10):
        router.invoke("Summarise the plot of Hamlet in one sentence.")
    samples.append((time.perf_counter() - start) / (calls // 10))
print(statistics.median(samples))
"""


def export(ref: str, into: Path) -> Path:
    """The package as it was at ``ref``, unpacked under ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "langchain_quota_router"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def run(tree: Path, calls: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(calls)],
        env=env,
        cwd=tree,
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="cac2216")
    parser.add_argument("--after", default=None, help="a commit instead of this tree")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    old = export(args.ref, Path(tempfile.mkdtemp(prefix="qr-before-")))
    if args.after:
        new = export(args.after, Path(tempfile.mkdtemp(prefix="qr-after-")))
        trees = {f"before ({args.ref})": old, f"after ({args.after})": new}
    else:
        trees = {f"before ({args.ref})": old, "after (this tree)": ROOT}
    samples: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            samples[name].append(run(tree, args.calls))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    print(f"routed invoke, {args.rounds} alternating rounds of {args.calls} calls per tree")
    print()
    print("| tree | median per call |")
    print("|---|---|")
    for name, value in medians.items():
        print(f"| {name} | {value * 1e6:.0f} µs |")
    before, after = medians.values()
    print()
    print(f"after / before = {after / before:.3f}  (target <= 1.0: the split must not slow a call)")


if __name__ == "__main__":
    main()
