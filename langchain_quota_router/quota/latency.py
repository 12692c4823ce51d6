"""How fast each route answers, as every process sharing the ledger saw it: what
``strategy="latency"`` orders routes by.

An observation is the time to a route's first token (a stream) or to its whole
answer (any other call). Each is counted twice:

- here, at once, in this process's decaying average (so a slow answer moves the
  route back for the very next call);
- in the fleet counters (:mod:`langchain_quota_router.quota.fleet`, written from a
  background thread, never on a call's path), as two additive counters per route and
  minute, ``latency_s`` (seconds) and ``latency_n`` (observations). Additive counters
  need no read-modify-write, so every backend (memory, SQLite, Redis) keeps them
  exactly, whatever the number of processes.

At most every :attr:`LatencyBoard.refresh_every` seconds a router reads the fleet's
last hour of minutes back and takes, per route, the mean of its observations with
each minute weighted by ``0.5 ** (age / half_life)``: a decaying average shared by
the fleet.
"""

from __future__ import annotations

import math
import threading
from typing import Any, ClassVar

from langchain_quota_router.quota.ledger.fleet import MINUTE, FleetStore

__all__ = ["LatencyBoard"]


class LatencyBoard:
    """Each route's latency (seconds) as a decaying average.

    Args:
        store: the fleet store to read the fleet's observations from (``None``:
            this process's own only).
        half_life: seconds after which an observation weighs half as much.
    """

    refresh_every: ClassVar[float] = 5.0
    #: How far back the fleet's observations are read (seconds).
    horizon: ClassVar[float] = 3600.0

    def __init__(self, store: FleetStore | None = None, *, half_life: float = 300.0) -> None:
        self.store = store
        self.half_life = half_life
        self._lock = threading.Lock()
        # route -> (average seconds, when last observed or read)
        self._seen: dict[str, tuple[float, float]] = {}
        self._read_at = -math.inf

    def seconds(self, route: str) -> float | None:
        """The route's average latency, or ``None`` if never observed."""
        found = self._seen.get(route)
        return None if found is None else found[0]

    def observe(self, route: str, seconds: float, now: float) -> None:
        """One latency of ``route``, folded into this process's average at once."""
        seconds = max(0.0, seconds)
        with self._lock:
            known = self._seen.get(route)
            if known is None:
                self._seen[route] = (seconds, now)
                return
            average, when = known
            # The older the average, the less it weighs against a new observation.
            keep = 0.5 ** (max(0.0, now - when) / self.half_life) * 0.7
            self._seen[route] = (keep * average + (1 - keep) * seconds, now)

    def due(self, now: float) -> bool:
        """Whether :meth:`refresh` would read the fleet's observations."""
        return self.store is not None and now - self._read_at >= self.refresh_every

    def refresh(self, now: float) -> None:
        """Take the fleet's decaying averages (every process's observations)."""
        if not self.due(now):
            return
        self._read_at = now
        assert self.store is not None
        lo = math.floor((now - self.horizon) / MINUTE) * MINUTE
        sums: dict[str, list[float]] = {}
        for bucket, (_, name, field), value in self.store.buckets("route", MINUTE, lo, math.inf):
            if field not in ("latency_s", "latency_n"):
                continue
            weight = 0.5 ** (max(0.0, now - (bucket + MINUTE / 2)) / self.half_life)
            cell = sums.setdefault(name, [0.0, 0.0])
            cell[0 if field == "latency_s" else 1] += weight * value
        with self._lock:
            for name, (total, count) in sums.items():
                if count > 0:
                    self._seen[name] = (total / count, now)

    def snapshot(self) -> dict[str, Any]:
        """Each observed route's average latency (seconds)."""
        return {name: round(avg, 4) for name, (avg, _) in sorted(self._seen.items())}
