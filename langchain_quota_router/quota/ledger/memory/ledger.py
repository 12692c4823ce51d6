"""A ledger in this process's memory: for tests, notebooks and throwaway scripts."""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from langchain_quota_router.quota.ledger.buckets import BucketLedger
from langchain_quota_router.quota.ledger.memory.fleet import MemoryFleetStore
from langchain_quota_router.quota.ledger.types import Hold, encode_releases
from langchain_quota_router.quota.limits import LATEST_BUCKET


class MemoryLedger(BucketLedger):
    """Counts in dictionaries under one lock; forgotten when the process ends.

    URL: ``memory://``.
    """

    scheme = "memory"
    blocking = False
    shared = False

    def __init__(self, url: str = "memory://") -> None:
        super().__init__()
        self.url = url
        self._lock = threading.RLock()
        self._counters: dict[tuple[str, str], dict[int, int]] = defaultdict(dict)
        # (pool, series) -> [first bucket, total from it on]: the last sum asked
        # for, kept up to date by every add, so a reservation does not add up a
        # window's buckets again (a minute's window holds sixty of them).
        self._totals: dict[tuple[str, str], list[int]] = {}
        self._hold_map: dict[str, Hold] = {}
        # pool -> lease id -> (expires at, encoded releases)
        self._leases: dict[str, dict[str, tuple[float, str]]] = defaultdict(dict)
        # pool -> no lease of it runs out before this (see _overdue).
        self._earliest: dict[str, float] = {}

    def _new_fleet_store(self) -> MemoryFleetStore:
        return MemoryFleetStore()

    def _atomic(self) -> AbstractContextManager[Any]:  # type: ignore[override]
        return self._lock  # a lock is its own context manager: no generator per call

    def _sum(self, pool: str, series: str, lo: int, hi: int) -> int:
        mark = (pool, series)
        buckets = self._counters.get(mark)
        if not buckets:
            return 0
        if hi != LATEST_BUCKET:
            return sum(v for b, v in buckets.items() if lo <= b <= hi)
        known = self._totals.get(mark)
        if known is not None and known[0] == lo:
            return known[1]
        if known is not None and known[0] < lo <= known[0] + 64:
            # The window moved on a few buckets: take out those it left behind.
            total = known[1] - sum(buckets.get(b, 0) for b in range(known[0], lo))
        else:  # first asked, or the clock stepped back: add them all up
            total = sum(v for b, v in buckets.items() if b >= lo)
        self._totals[mark] = [lo, total]
        return total

    def _buckets(self, pool: str, series: str, lo: int, hi: int) -> list[tuple[int, int]]:
        buckets = self._counters.get((pool, series), {})
        return sorted((b, v) for b, v in buckets.items() if lo <= b <= hi and v)

    def _add(self, pool: str, series: str, bucket: int, amount: int) -> None:
        mark = (pool, series)
        buckets = self._counters[mark]
        was = buckets.get(bucket, 0)
        now = max(0, was + amount)
        buckets[bucket] = now
        known = self._totals.get(mark)
        if known is not None and bucket >= known[0]:
            known[1] += now - was

    def _prune(self, pool: str, series: str, below: int) -> None:
        mark = (pool, series)
        buckets = self._counters.get(mark)
        if buckets:
            for b in [b for b in buckets if b < below]:
                del buckets[b]
            known = self._totals.get(mark)
            if known is not None and known[0] < below:
                del self._totals[mark]

    def _delete_pool(self, pool: str) -> None:
        for mark in [m for m in self._counters if m[0] == pool]:
            del self._counters[mark]
            self._totals.pop(mark, None)
        self._leases.pop(pool, None)

    def _add_lease(
        self, pool: str, lease_id: str, expires_at: float, releases: Sequence[tuple[str, int, int]]
    ) -> bool:
        self._leases[pool][lease_id] = (expires_at, encode_releases(releases))
        if expires_at < self._earliest.get(pool, math.inf):
            self._earliest[pool] = expires_at
        return True

    def _overdue(self, pool: str, now: float) -> list[tuple[str, str]]:
        leases = self._leases.get(pool)
        if not leases:
            return []
        # A thousand calls in flight must not cost each reserve a thousand looks:
        # nothing is overdue before the earliest expiry seen (a lower bound, since
        # settled leases only raise the true one).
        if now < self._earliest.get(pool, -math.inf):
            return []
        found = [(i, text) for i, (at, text) in leases.items() if at <= now]
        self._earliest[pool] = min((at for at, _ in leases.values() if at > now), default=math.inf)
        return found

    def _first_lease(self, pool: str) -> float | None:
        leases = self._leases.get(pool)
        return min(at for at, _ in leases.values()) if leases else None

    def _drop_lease(self, pool: str, lease_id: str, expires_at: float) -> bool:
        leases = self._leases.get(pool)
        return leases is not None and leases.pop(lease_id, None) is not None

    def _drop_leases(self, pool: str, lease_ids: Sequence[str]) -> None:
        for lease_id in lease_ids:
            self._drop_lease(pool, lease_id, 0.0)

    def _holds(self, subjects: Sequence[str]) -> list[Hold]:
        return [self._hold_map[s] for s in subjects if s in self._hold_map]

    def _all_holds(self) -> list[Hold]:
        return list(self._hold_map.values())

    def _set_hold(self, hold: Hold) -> None:
        self._hold_map[hold.subject] = hold

    def _delete_hold(self, subject: str) -> None:
        self._hold_map.pop(subject, None)
