"""Helpers the benchmarks share: interleaved timing, a fake vendor with latency, an
event-loop lag meter, a throwaway ``redis-server`` and a SQLite write-lock holder.

Only the public API is used (``QuotaRoutedChatModel``, ``Route``,
``langchain_quota_router.testing``), so a benchmark measures what a user gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import shutil
import socket
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult

from langchain_quota_router.testing import FakeVendorChatModel

#: Start processes by fork where there is one (fast); a forked child here only
#: touches sqlite3 and time, never a lock inherited from the parent.
MP: Any = multiprocessing.get_context(
    "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
)


# -- timing ----------------------------------------------------------------------------


def interleaved(
    variants: dict[str, Callable[[], object]],
    rounds: int,
    *,
    calls: int | dict[str, int] = 100,
    warmup: int = 10,
) -> dict[str, float]:
    """Median per-call seconds of each variant, measured in alternating rounds.

    Each round times a block of calls of every variant in turn, so a change in
    machine load hits all variants alike; the result is the median over rounds.
    ``calls`` is the block size, one for all or per variant.
    """
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            block = calls if isinstance(calls, int) else calls[name]
            start = time.perf_counter()
            for _ in range(block):
                fn()
            samples[name].append((time.perf_counter() - start) / block)
    return {name: statistics.median(values) for name, values in samples.items()}


def calibrate(fn: Callable[[], object], seconds: float, *, least: int = 3) -> int:
    """How many calls of ``fn`` take about ``seconds`` (at least ``least``), timed
    after a few warm-up calls."""
    for _ in range(3):
        fn()
    started = time.perf_counter()
    for _ in range(5):
        fn()
    once = max((time.perf_counter() - started) / 5, 1e-6)
    return max(least, math.ceil(seconds / once))


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]


# -- a vendor that takes its time --------------------------------------------------------


class LatencyFake(FakeVendorChatModel):
    """The project's fake vendor, answering after ``latency`` seconds.

    The async paths await the latency (the event loop is free meanwhile, as with a
    real HTTP call); the sync paths answer at once.
    """

    latency: float = 0.05

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        await asyncio.sleep(self.latency)
        return self._generate(messages, stop=stop, **kwargs)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        await asyncio.sleep(self.latency)
        for chunk in self._stream(messages, stop=stop, **kwargs):
            yield chunk


# -- event loop lag --------------------------------------------------------------------


class LagMeter:
    """A task that sleeps 1 ms at a time and records how late each wake-up is.

    Use as ``async with LagMeter() as lag: ...``; ``lag.worst`` is the maximum
    lateness in seconds over the block: how long the loop was unable to run a
    ready callback.
    """

    def __init__(self, period: float = 0.001) -> None:
        self.period = period
        self.worst = 0.0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while not self._stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(self.period)
            self.worst = max(self.worst, time.perf_counter() - before - self.period)

    async def __aenter__(self) -> LagMeter:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)  # ticking before the measured work starts
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task


# -- a throwaway redis-server -----------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server(*extra: str) -> Iterator[str | None]:
    """A ``redis-server`` on a free loopback port, persistence off, stopped on exit.

    Yields its URL, or ``None`` (with a message) when ``redis-server`` is not
    installed.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server is not installed: skipping Redis")
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="qr-bench-redis-") as folder:
        for _ in range(5):  # a port found free may be taken before Redis binds it
            port = _free_port()
            process = subprocess.Popen(
                [
                    binary,
                    *("--port", str(port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no", "--dir", folder),
                    *("--daemonize", "no", "--logfile", f"{folder}/redis.log"),
                    *extra,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 10
            while process.poll() is None and time.monotonic() < deadline:
                if _pong(port):
                    break
                time.sleep(0.01)
            if process.poll() is None and _pong(port):
                break
            process.kill()
            process.wait()
        else:
            msg = "redis-server did not start"
            raise RuntimeError(msg)
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# -- another process writing to a SQLite file ---------------------------------------------


def _hold_write_lock(path: str, hold: float, gap: float, locked: Any, stop: Any) -> None:
    """Take ``path``'s write lock for ``hold`` seconds, release it for ``gap``, repeat."""
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    while not stop.is_set():
        conn.execute("BEGIN IMMEDIATE")
        locked.set()
        stop.wait(hold)
        conn.execute("COMMIT")
        stop.wait(gap)
    conn.close()


@contextlib.contextmanager
def sqlite_writer(path: str | Path, hold: float = 2.0, gap: float = 0.1) -> Iterator[None]:
    """Another process that keeps taking the SQLite write lock of ``path``:
    ``BEGIN IMMEDIATE``, ``hold`` seconds, ``COMMIT``, ``gap`` seconds, again,
    until the block ends. Returns once the lock has been taken the first time.
    """
    locked, stop = MP.Event(), MP.Event()
    child = MP.Process(
        target=_hold_write_lock, args=(str(path), hold, gap, locked, stop), daemon=True
    )
    child.start()
    try:
        if not locked.wait(timeout=60):
            msg = f"the writer process did not take the lock of {path}"
            raise RuntimeError(msg)
        yield
    finally:
        stop.set()
        child.join(timeout=hold + 10)
        if child.is_alive():
            child.kill()
            child.join()
