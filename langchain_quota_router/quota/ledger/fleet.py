"""Fleet counters, kept where the ledger keeps its quota: one set for every process.

The router's own counters (``get_stats()``) are per process. These are the fleet's:
every router counting in the same ledger (the same SQLite file, the same Redis and
prefix) adds to them, and any process reading that ledger (``quota-router report``,
the status page, another worker) sees the totals.

A counter is named by a :data:`Key`, ``(kind, name, field)``:

- ``("route", "groq", "calls")``: per route ``calls``, ``fallbacks``,
  ``errors:<kind>`` (a :class:`~langchain_quota_router.quota.failures.FailureKind`
  value), ``rate_limited`` (the vendor's 429s), ``refused`` (the ledger kept a call
  from a full or blocked pool), ``cache_hits``, ``tokens_in``, ``tokens_out`` and
  ``cost`` (USD);
- ``("pool", "groq", "requests")``: per pool what the routers spent, ``requests``,
  ``input_tokens``, ``output_tokens`` (from which ``router.history()`` computes
  each limit's use over time), and ``refused``;
- ``("client", "…3f9a0c1b2d4e", "requests")``: per client of the OpenAI-compatible
  proxy, named by its key's fingerprint (never the key), ``requests``, ``errors``,
  ``tokens_in`` and ``tokens_out``.

Each counter is kept at three resolutions (a *level*): the total since it was
first counted (level 0, bucket 0), hourly buckets (level 3600) kept
:data:`RETENTION` ``[3600]`` (35 days, so a monthly limit has its history), and,
for pools only, per-minute buckets (level 60) kept two days. Older buckets are
deleted when counts are written, at most every :data:`PRUNE_EVERY` seconds, so the
storage stays bounded whatever runs. A bucket is named by its start (epoch seconds).

This module holds what every store shares; each ledger hands out its own store
(:meth:`~langchain_quota_router.quota.ledger.contract.Ledger.fleet_store`, one per
ledger object), kept by its backend (the ledger's own tables and keys are never
touched):

- memory (:mod:`~langchain_quota_router.quota.ledger.memory.fleet`): beside the
  ledger object (this process only, as its quota is);
- SQLite (:mod:`~langchain_quota_router.quota.ledger.sqlite.fleet`): a table
  ``fleet_counters`` in the ledger's file;
- Redis (:mod:`~langchain_quota_router.quota.ledger.redis.fleet`): hashes under the
  ledger's prefix;
- a fail-open ledger: its shared (primary) ledger's store.

Only route and pool names and client key fingerprints are stored, never a key.
"""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Mapping

__all__ = [
    "HOUR",
    "KINDS",
    "MINUTE",
    "PRUNE_EVERY",
    "RETENTION",
    "TOTAL",
    "FleetStore",
    "Key",
    "Row",
    "accumulate",
]

Key = tuple[str, str, str]
"""A counter: ``(kind, name, field)``, kind ``"route"``, ``"pool"`` or ``"client"``."""

Row = tuple[int, int, Key]
"""Where an increment goes: ``(level, bucket start, key)``; level 0 is the total."""

TOTAL = 0
MINUTE = 60
HOUR = 3600
#: Seconds each level's buckets are kept: two days of minutes, 35 days of hours.
RETENTION: dict[int, int] = {MINUTE: 2 * 86_400, HOUR: 35 * 86_400}
#: Seconds (of the router's clock) between two deletions of old buckets by a store.
PRUNE_EVERY = 600.0
KINDS = ("route", "pool", "client")


class FleetStore(ABC):
    """Where fleet counters are added up and read back (see the module docs)."""

    def __init__(self) -> None:
        self._pruned_at = -math.inf
        self._prune_lock = threading.Lock()

    def add(self, rows: Mapping[Row, float], now: float) -> None:
        """Add ``rows`` to the counters in one batch; delete buckets older than
        :data:`RETENTION` at most every :data:`PRUNE_EVERY` seconds of ``now``.

        Raises whatever the storage raises; the caller keeps the rows to try again.
        """
        with self._prune_lock:
            due = not self._pruned_at <= now < self._pruned_at + PRUNE_EVERY
        cutoffs = {level: math.floor(now) - keep for level, keep in RETENTION.items()}
        self._write(rows, cutoffs if due else None, now)
        if due:
            with self._prune_lock:
                self._pruned_at = now

    @abstractmethod
    def _write(self, rows: Mapping[Row, float], cutoffs: dict[int, int] | None, now: float) -> None:
        """Add ``rows``; with ``cutoffs``, also delete each level's buckets that start
        before its cutoff."""

    @abstractmethod
    def totals(self, kind: str) -> dict[Key, float]:
        """Every counter of ``kind`` since it was first counted."""

    @abstractmethod
    def buckets(self, kind: str, level: int, lo: float, hi: float) -> list[tuple[int, Key, float]]:
        """``(bucket start, key, value)`` of ``kind`` at ``level`` for buckets that
        start in ``[lo, hi)``."""

    @abstractmethod
    def row_count(self) -> int:
        """How many counter cells are stored (every level, the totals included)."""


def accumulate(
    rows: Mapping[Row, float],
) -> dict[tuple[str, int, int], dict[tuple[str, str], float]]:
    """``rows`` grouped by ``(kind, level, bucket)``."""
    grouped: dict[tuple[str, int, int], dict[tuple[str, str], float]] = defaultdict(dict)
    for (level, bucket, (kind, name, field)), amount in rows.items():
        cell = grouped[(kind, level, bucket)]
        cell[(name, field)] = cell.get((name, field), 0) + amount
    return grouped
