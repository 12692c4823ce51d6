"""A ledger in this process's memory: for tests, notebooks and throwaway scripts."""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from langchain_quota_router.quota.ledger.buckets import BucketLedger
from langchain_quota_router.quota.ledger.memory.fleet import MemoryFleetStore
from langchain_quota_router.quota.ledger.types import Hold, encode_releases


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
        self._hold_map: dict[str, Hold] = {}
        # pool -> lease id -> (expires at, encoded releases)
        self._leases: dict[str, dict[str, tuple[float, str]]] = defaultdict(dict)
        # pool -> no lease of it runs out before this (see _overdue).
        self._earliest: dict[str, float] = {}

    def _new_fleet_store(self) -> MemoryFleetStore:
        return MemoryFleetStore()

    @contextmanager
    def _atomic(self) -> Iterator[None]:
        with self._lock:
            yield

    def _sum(self, pool: str, series: str, lo: int, hi: int) -> int:
        buckets = self._counters.get((pool, series))
        if not buckets:
            return 0
        return sum(v for b, v in buckets.items() if lo <= b <= hi)

    def _buckets(self, pool: str, series: str, lo: int, hi: int) -> list[tuple[int, int]]:
        buckets = self._counters.get((pool, series), {})
        return sorted((b, v) for b, v in buckets.items() if lo <= b <= hi and v)

    def _add(self, pool: str, series: str, bucket: int, amount: int) -> None:
        buckets = self._counters[(pool, series)]
        buckets[bucket] = max(0, buckets.get(bucket, 0) + amount)

    def _prune(self, pool: str, series: str, below: int) -> None:
        buckets = self._counters.get((pool, series))
        if buckets:
            for b in [b for b in buckets if b < below]:
                del buckets[b]

    def _delete_pool(self, pool: str) -> None:
        for mark in [m for m in self._counters if m[0] == pool]:
            del self._counters[mark]
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
