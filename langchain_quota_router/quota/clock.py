"""Time as the router sees it: injectable so tests never sleep."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """A source of wall-clock time (seconds since the epoch, UTC) that can wait."""

    def now(self) -> float:
        """Return the current time in seconds since the epoch."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds``."""
        ...

    async def asleep(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds``."""
        ...


class SystemClock:
    """The real clock: ``time.time`` and ``time.sleep``."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "SystemClock()"


class FakeClock:
    """A clock that only moves when told to; ``sleep`` advances it instantly.

    Args:
        start: the initial time in seconds since the epoch.
    """

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01 UTC
        self._now = float(start)
        self.slept: list[float] = []

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        self._now += seconds

    def set(self, timestamp: float) -> None:
        """Jump to ``timestamp`` (seconds since the epoch)."""
        self._now = float(timestamp)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self._now += max(0.0, seconds)

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now})"


def iso(epoch: float | None) -> str | None:
    """``epoch`` as an ISO 8601 UTC timestamp (whole seconds), or ``None``."""
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="seconds")
