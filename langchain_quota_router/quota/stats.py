"""What a router or key rotator did since it was built: this process's counters.

The fleet's counters (every process sharing the ledger) are kept by
:class:`~langchain_quota_router.quota.fleet.FleetCounters`, fed from here.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from langchain_quota_router.quota.ledger import Demand


class _Named(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def pool(self) -> str: ...


@dataclass
class RouterStats:
    """Counters of what a router did since it was built (thread-safe)."""

    total_calls: int = 0
    calls_per_route: Counter[str] = field(default_factory=Counter)
    fallbacks: int = 0
    errors: int = 0
    errors_per_route: Counter[str] = field(default_factory=Counter)
    cache_hits: int = 0
    hedged: int = 0
    hedge_won: int = 0
    last_route: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: Where every event is counted for the fleet too: a ``_fleet.FleetCounters``
    #: (it writes to the ledger from a background thread), or None.
    fleet: Any = field(default=None, repr=False, compare=False)
    #: Each route's observed latency: a ``quota.latency.LatencyBoard``, or None.
    latency_board: Any = field(default=None, repr=False, compare=False)

    def served(self, route: str, *, fallback: bool, cost: float | None = None) -> None:
        """Count a call a route answered (after others could not, if ``fallback``),
        and its cost (USD) when known."""
        self._count_served(route, fallback)
        fleet = self.fleet
        if fleet is not None:
            fleet.served(route, fallback=fallback, cost=cost)

    def _count_served(self, route: str, fallback: bool) -> None:
        with self._lock:
            self.total_calls += 1
            self.calls_per_route[route] += 1
            self.last_route = route
            if fallback:
                self.fallbacks += 1

    def answered(
        self, route: str, pool: str, used: Demand, *, fallback: bool, cost: float | None = None
    ) -> None:
        """:meth:`served` and :meth:`spent` of one answer, counted in one go."""
        self._count_served(route, fallback)
        fleet = self.fleet
        if fleet is not None:
            spent = (used.requests, used.input_tokens, used.output_tokens, used.usd)
            fleet.answered(route, pool, spent, fallback=fallback, cost=cost)

    def failed(self, route: str, kind: str = "unknown") -> None:
        """Count a route's failure, of ``kind`` (a ``FailureKind`` or its value;
        ``rate_limit`` and ``quota_exhausted`` are the vendor's 429s)."""
        with self._lock:
            self.errors += 1
            self.errors_per_route[route] += 1
        fleet = self.fleet
        if fleet is not None:
            fleet.failed(route, str(getattr(kind, "value", kind)))

    def refused(self, route: str, pool: str | None = None) -> None:
        """Count a call the ledger kept from ``route`` (its pool full or blocked)."""
        fleet = self.fleet
        if fleet is not None:
            fleet.refused(route, pool)

    def refused_all(self, routes: Iterable[_Named]) -> None:
        """:meth:`refused` for each of ``routes``, passed over by one call because
        their pools are known full (counted in bulk: cheap for a thousand)."""
        fleet = self.fleet
        if fleet is not None:
            fleet.refused_all(routes)

    def spent(self, route: str, pool: str, used: Demand) -> None:
        """Count what a call through ``route`` spent of ``pool``: what the ledger
        settled it with (the fleet's usage history is made of these)."""
        fleet = self.fleet
        if fleet is not None:
            fleet.spent(route, pool, used.requests, used.input_tokens, used.output_tokens, used.usd)

    def latency(self, route: str, seconds: float, now: float) -> None:
        """How long ``route`` took to its first token or answer: for the latency
        board (``latency``, set by the router) and the fleet."""
        board = self.latency_board
        if board is not None:
            board.observe(route, seconds, now)
        fleet = self.fleet
        if fleet is not None:
            fleet.latency(route, seconds)

    def hedge(self, route: str, *, won: bool) -> None:
        """Count a hedged attempt on ``route`` (started because the first route was
        slow), and whether it answered first."""
        with self._lock:
            self.hedged += 1
            self.hedge_won += int(won)
        fleet = self.fleet
        if fleet is not None:
            fleet.hedged(route, won=won)

    def hit(self, route: str | None = None) -> None:
        """Count an answer from the cache (first given by ``route``, when known)."""
        with self._lock:
            self.cache_hits += 1
        fleet = self.fleet
        if fleet is not None:
            fleet.hit(route)

    def snapshot(self) -> dict[str, Any]:
        """A plain-dict copy, safe to print or serialise."""
        with self._lock:
            return {
                "total_calls": self.total_calls,
                "calls_per_route": dict(self.calls_per_route),
                "fallbacks": self.fallbacks,
                "errors": self.errors,
                "errors_per_route": dict(self.errors_per_route),
                "cache_hits": self.cache_hits,
                "hedged": self.hedged,
                "hedge_won": self.hedge_won,
                "last_route": self.last_route,
                "latency": self.latency_board.snapshot() if self.latency_board else {},
            }
