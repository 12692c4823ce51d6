"""The async call paths never block the event loop on ledger or cache I/O.

Each test runs a 1 ms ticker task beside the code under test and records how late
it wakes: any synchronous wait on the loop (a SQLite ``BEGIN IMMEDIATE`` riding out
another process's write lock, a diskcache write) shows up as that lateness. Another
process holds the SQLite write lock of the file in question for ``HOLD`` seconds;
the loop must keep turning meanwhile (lag under ``MAX_LAG``), and the calls must
still complete once the lock is released.

The holder is a tiny ``python -c`` child that only imports ``sqlite3``: it starts in
milliseconds, and the test waits for its "locked" line before it starts measuring,
so a slow start on a loaded machine cannot shift the lock out of the measured window.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
)
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, Generation

from langchain_quota_router import QuotaRoutedChatModel, Route
from langchain_quota_router.cache.disk import DiskResponseCache
from langchain_quota_router.testing import FakeClock, FakeVendorChatModel

pytestmark = pytest.mark.slow

#: How long the other process holds the write lock (the benchmark holds it 2 s).
HOLD = 0.5
#: The most the loop may be late: well above a loaded machine's scheduling noise,
#: far below one wait on a held SQLite lock.
MAX_LAG = 0.050
#: Concurrent calls on the loop while the lock is held.
CALLS = 20
#: What the fake vendor takes to answer.
LATENCY = 0.005

_HOLDER = """
import sqlite3, sys, time
path, seconds = sys.argv[1], float(sys.argv[2])
conn = sqlite3.connect(path, timeout=30, isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(seconds)
conn.execute("COMMIT")
conn.close()
print(f"released {time.time()!r}", flush=True)
"""


class SlowFake(FakeVendorChatModel):
    """The project's fake vendor, answering after ``latency`` seconds on the loop."""

    latency: float = LATENCY

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


class WriteLockHolder:
    """Another process holding a SQLite file's write lock for ``seconds``."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, path: Path, seconds: float) -> WriteLockHolder:
        """Start the holder and return once it holds the lock."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _HOLDER,
            str(path),
            str(seconds),
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
        if line.strip() != b"locked":
            process.kill()
            await process.wait()
            pytest.fail(f"the lock holder did not take the lock: {line!r}")
        return cls(process)

    async def released(self) -> float:
        """Wait for the holder to commit and exit; the wall time it released at."""
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout=60)
        await asyncio.wait_for(self.process.wait(), timeout=60)
        word, _, stamp = line.decode().partition(" ")
        assert word == "released", line
        return float(stamp)


async def _ticker(stop: asyncio.Event, period: float = 0.001) -> float:
    """Sleep ``period`` at a time until ``stop``; the worst lateness of a wake-up."""
    worst = 0.0
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(period)
        worst = max(worst, time.perf_counter() - before - period)
    return worst


async def _lag_while(work: Callable[[], Awaitable[Any]]) -> tuple[Any, float]:
    """Run ``work()`` beside a 1 ms ticker: its result and the loop's maximum lag.

    The garbage collector is paused meanwhile so a collection of the test process's
    heap is not mistaken for blocking I/O.
    """
    gc.collect()
    gc.disable()
    stop = asyncio.Event()
    ticker = asyncio.create_task(_ticker(stop))
    try:
        await asyncio.sleep(0)  # the ticker is ticking before the work starts
        result = await work()
    finally:
        stop.set()
        lag = await ticker
        gc.enable()
    return result, lag


def _router(ledger: str, **options: Any) -> QuotaRoutedChatModel:
    limits = ["100000/minute", "100000000 tokens/day"]
    return QuotaRoutedChatModel(
        routes=[
            Route(SlowFake(model="m1"), name="first", limits=limits),
            Route(SlowFake(model="m2"), name="second", limits=limits, priority=1),
        ],
        ledger=ledger,
        **options,
    )


async def _ask(
    router: QuotaRoutedChatModel, how: str, prompt: str, delay: float = 0.0
) -> tuple[str, float]:
    """One call by ``how`` after ``delay`` seconds: its answer text and the wall time
    it finished at. (Staggering the starts by a millisecond keeps twenty calls' CPU
    work from landing on the loop in one burst, which is not what is measured here.)"""
    await asyncio.sleep(delay)
    if how == "ainvoke":
        message = await router.ainvoke(prompt)
        text = message.text
    else:
        chunks: list[AIMessageChunk] = [chunk async for chunk in router.astream(prompt)]
        text = "".join(chunk.text for chunk in chunks)
    return text, time.time()


@pytest.mark.parametrize("how", ["ainvoke", "astream"])
async def test_calls_do_not_block_the_loop_while_another_process_holds_the_ledger(
    tmp_path: Path, how: str
) -> None:
    path = tmp_path / "ledger.db"
    router = _router(f"sqlite:///{path}", cache=False)
    # Open the ledger (schema, WAL, connection) and warm every lazy path first.
    await _ask(router, how, "warm up")

    holder = await WriteLockHolder.start(path, HOLD)

    async def calls() -> list[tuple[str, float]]:
        return list(
            await asyncio.gather(*(_ask(router, how, f"q {i}", i / 1000) for i in range(CALLS)))
        )

    answers, lag = await _lag_while(calls)
    released = await holder.released()

    assert lag < MAX_LAG, (
        f"the event loop stalled {lag * 1000:.0f} ms while another process held the "
        f"ledger's write lock for {HOLD * 1000:.0f} ms (limit {MAX_LAG * 1000:.0f} ms)"
    )
    assert [text for text, _ in answers] == [f"echo: q {i}" for i in range(CALLS)]
    # The scenario really waited on the lock (else it proves nothing).
    assert max(done for _, done in answers) >= released - 0.05


def _generations(text: str) -> list[Generation]:
    return [ChatGeneration(message=AIMessage(content=text))]


async def test_disk_cache_lookups_do_not_block_the_loop_while_another_process_writes(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "cache"
    clock = FakeClock()
    writer = DiskResponseCache(directory, ttl=60, clock=clock)
    for i in range(CALLS):
        writer.update(f"old {i}", "llm", _generations(f"old answer {i}"))
    clock.advance(50)
    for i in range(CALLS):
        writer.update(f"new {i}", "llm", _generations(f"new answer {i}"))
    writer.close()
    clock.advance(20)  # the "old" entries are now expired, the "new" ones fresh

    # A fresh cache object, as in another process: it opens the directory (diskcache
    # writes its settings on open), then finds expired entries (which it deletes),
    # fresh ones and missing ones, all while the other process holds the lock.
    cache = DiskResponseCache(directory, ttl=60, clock=clock)
    holder = await WriteLockHolder.start(directory / "cache.db", HOLD)

    async def lookups() -> list[list[Generation] | None]:
        return list(
            await asyncio.gather(
                *(
                    cache.alookup(f"{kind} {i}", "llm")
                    for kind in ("old", "new", "none")
                    for i in range(CALLS)
                )
            )
        )

    found, lag = await _lag_while(lookups)
    await holder.released()

    assert lag < MAX_LAG, (
        f"the event loop stalled {lag * 1000:.0f} ms in cache lookups while another "
        f"process held the cache's write lock for {HOLD * 1000:.0f} ms"
    )
    assert cache.directory is not None, "a held lock must not disable the cache"
    old, new, missing = found[:CALLS], found[CALLS : 2 * CALLS], found[2 * CALLS :]
    assert old == [None] * CALLS
    assert missing == [None] * CALLS
    assert [g[0].text if g else None for g in new] == [f"new answer {i}" for i in range(CALLS)]
    cache.close()


async def test_disk_cache_updates_do_not_block_the_loop_while_another_process_writes(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "cache"
    cache = DiskResponseCache(directory)
    cache.update("warm up", "llm", _generations("warm"))  # opened, schema written
    holder = await WriteLockHolder.start(directory / "cache.db", HOLD)

    async def updates() -> None:
        await asyncio.gather(
            *(cache.aupdate(f"q {i}", "llm", _generations(f"a {i}")) for i in range(CALLS))
        )

    _, lag = await _lag_while(updates)
    await holder.released()

    assert lag < MAX_LAG, (
        f"the event loop stalled {lag * 1000:.0f} ms in cache writes while another "
        f"process held the cache's write lock for {HOLD * 1000:.0f} ms"
    )
    assert cache.directory is not None, "a held lock must not disable the cache"
    cache.close()


async def test_cached_router_calls_do_not_block_the_loop_while_the_cache_is_locked(
    tmp_path: Path,
) -> None:
    """``ainvoke`` through the router's disk cache: misses are looked up and stored."""
    directory = tmp_path / "cache"
    router = _router("memory://", cache=DiskResponseCache(directory))
    await router.ainvoke("warm up")  # the cache directory exists and is open
    holder = await WriteLockHolder.start(directory / "cache.db", HOLD)

    async def calls() -> list[tuple[str, float]]:
        asks = (_ask(router, "ainvoke", f"q {i}", i / 1000) for i in range(CALLS))
        return list(await asyncio.gather(*asks))

    answers, lag = await _lag_while(calls)
    await holder.released()

    assert lag < MAX_LAG, (
        f"the event loop stalled {lag * 1000:.0f} ms in the router's cache while another "
        f"process held the cache's write lock for {HOLD * 1000:.0f} ms"
    )
    assert [text for text, _ in answers] == [f"echo: q {i}" for i in range(CALLS)]
