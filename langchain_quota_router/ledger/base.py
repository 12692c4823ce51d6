"""The ledger: what every pool has spent, what is reserved, and who is on hold.

Policy lives here, storage in the backends. ``Ledger`` implements admission
(:meth:`Ledger.reserve`), settlement, header sync and holds once, on top of a few
storage primitives that a backend runs inside one atomic section
(:meth:`Ledger._atomic`): a lock for memory, a ``BEGIN IMMEDIATE`` transaction for
SQLite. A backend that cannot run Python inside its atomic step (Redis) overrides the
public operations instead and must pass the same contract tests.

Counters are keyed by ``(pool, series, bucket)``: a series is one metric over one
window shape (``"tokens:s60"``, ``"requests:day@UTC"``), a bucket one slice of time.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

from langchain_quota_router._limits import Limit, Metric

POOL_PREFIX = "pool:"
KEY_PREFIX = "key:"
#: A model on one key that the vendor no longer serves (retired, unknown, gone).
MODEL_PREFIX = "model:"
#: Not a hold: a limit a vendor's headers stated, kept beside the holds so every
#: process sees it. ``holds()`` never lists these.
LEARNED_PREFIX = "learned:"
_LEARNED_SEP = "\x1f"


@dataclass(frozen=True)
class Demand:
    """What one call spends: requests and tokens, estimated or real."""

    requests: int = 1
    input_tokens: int = 0
    output_tokens: int = 0

    def amount(self, metric: Metric) -> int:
        """How much of ``metric`` this demand counts."""
        if metric == "requests":
            return self.requests
        if metric == "tokens":
            return self.input_tokens + self.output_tokens
        if metric == "input_tokens":
            return self.input_tokens
        return self.output_tokens


@dataclass(frozen=True)
class Reservation:
    """An admitted demand, counted in the ledger until it is settled.

    Attributes:
        pool: the pool it was counted in.
        demand: what was reserved.
        entries: ``(series, bucket, metric)`` for every counter it was added to,
            so :meth:`Ledger.settle` corrects the same buckets.
        at: when it was admitted.
        levels: ``(limit, used)`` for each limit, counting this reservation; lets
            the router notice a pool nearing a limit without another query.
            Empty when a backend does not report them.
    """

    pool: str
    demand: Demand
    entries: tuple[tuple[str, int, Metric], ...]
    at: float
    levels: tuple[tuple[Limit, int], ...] = ()


@dataclass(frozen=True)
class Refusal:
    """Why a pool could not take a demand, and when it may.

    Attributes:
        pool: the pool that refused.
        reason: one line for people (``"30/minute is used up"``).
        retry_at: epoch seconds at which the demand would fit, or ``None`` when the
            pool never frees up by itself (credit spent, key disabled, demand larger
            than the limit).
        limit: the limit that refused, when one did.
    """

    pool: str
    reason: str
    retry_at: float | None
    limit: Limit | None = None


@dataclass(frozen=True)
class Hold:
    """A block on a pool (``until`` a time) or a disabled key (``until`` is None)."""

    subject: str
    until: float | None
    reason: str

    def active(self, now: float) -> bool:
        """Whether the hold still applies at ``now``."""
        return self.until is None or self.until > now


@dataclass(frozen=True)
class LearnedLimit:
    """A limit a vendor's rate-limit headers stated for a pool.

    Attributes:
        pool: the pool it applies to.
        limit: the limit, as the vendor stated it.
        learned_at: when it was last seen (epoch seconds).
    """

    pool: str
    limit: Limit
    learned_at: float


@dataclass(frozen=True)
class LimitUsage:
    """How much of one limit of one pool is spent."""

    pool: str
    limit: Limit
    used: int
    resets_at: float | None
    learned_at: float | None = None
    """When the vendor's headers stated this limit; ``None`` for a configured one."""

    @property
    def remaining(self) -> int:
        """What is left (never negative)."""
        return max(0, self.limit.amount - self.used)

    @property
    def percent(self) -> float:
        """Share of the limit spent, 0-100 (100 for a zero limit)."""
        if self.limit.amount == 0:
            return 100.0
        return min(100.0, 100.0 * self.used / self.limit.amount)


class Ledger(ABC):
    """Counts what each pool spends, atomically, across threads and processes.

    Subclasses set ``scheme`` (the URL scheme that selects them) and implement the
    storage primitives; see the module docstring.
    """

    scheme: ClassVar[str]
    url: str

    #: How often (seconds) old buckets of a series are swept, at most.
    prune_interval: ClassVar[float] = 60.0

    def __init__(self) -> None:
        self._last_prune: dict[tuple[str, str], float] = {}

    # ------------------------------------------------------------------ policy

    def reserve(
        self,
        pool: str,
        limits: Sequence[Limit],
        demand: Demand,
        now: float,
        *,
        key: str | None = None,
        model: str | None = None,
    ) -> Reservation | Refusal:
        """Count ``demand`` against every limit of ``pool`` if all have room.

        Checks holds on the pool, on ``key`` and on ``model`` (a model on one key,
        see :meth:`mark_unavailable`) first. Either every counter is increased or
        none is.
        """
        subjects = [POOL_PREFIX + pool]
        if key:
            subjects.append(KEY_PREFIX + key)
        if model:
            subjects.append(MODEL_PREFIX + model)
        ranges = [(limit.series, *limit.window.bucket_range(now)) for limit in limits]
        with self._atomic():
            holds, sums = self._read(pool, subjects, ranges)
            for hold in holds:
                if hold.active(now):
                    return Refusal(pool, hold.reason, hold.until)
            entries: dict[str, tuple[str, int, Metric]] = {}
            levels: list[tuple[Limit, int]] = []
            for limit, used in zip(limits, sums, strict=True):
                need = demand.amount(limit.metric)
                refusal = self._check(pool, limit, need, used, now)
                if refusal is not None:
                    return refusal
                levels.append((limit, used + need))
                series = limit.series
                entries.setdefault(series, (series, limit.window.bucket(now), limit.metric))
            adds = [
                (series, bucket, demand.amount(metric))
                for series, bucket, metric in entries.values()
                if demand.amount(metric)
            ]
            self._add_many(pool, adds)
            self._maybe_prune(pool, limits, now)
        return Reservation(pool, demand, tuple(entries.values()), now, tuple(levels))

    def _check(self, pool: str, limit: Limit, need: int, used: int, now: float) -> Refusal | None:
        """Why ``need`` does not fit ``limit`` with ``used`` counted, if it does not."""
        if need > limit.amount:
            why = f"needs {need} {limit.metric}, more than {limit} allows at all"
            return Refusal(pool, why, None, limit)
        if used + need <= limit.amount:
            return None
        lo, hi = limit.window.bucket_range(now)
        buckets = self._buckets(pool, limit.series, lo, hi)
        retry_at = limit.window.frees_at(now, buckets, used + need - limit.amount)
        return Refusal(pool, f"{limit} is used up ({used} counted)", retry_at, limit)

    def settle(self, reservation: Reservation, used: Demand, now: float) -> None:
        """Replace a reservation's estimate with what the call really spent.

        Real usage may exceed the estimate; the window then stays full longer.
        """
        deltas = [
            (series, bucket, used.amount(metric) - reservation.demand.amount(metric))
            for series, bucket, metric in reservation.entries
        ]
        deltas = [d for d in deltas if d[2]]
        if not deltas:
            return  # the estimate was exact: nothing to write
        self._settle(reservation.pool, deltas)

    def _settle(self, pool: str, deltas: Sequence[tuple[str, int, int]]) -> None:
        """Apply a settlement's corrections atomically."""
        with self._atomic():
            self._add_many(pool, deltas)

    def observe(self, pool: str, limit: Limit, remaining: int, now: float) -> None:
        """Lower the room ``limit`` has in ``pool`` to what the vendor says remains.

        Never raises room: a vendor header that claims more is ignored, because
        the local count may include calls the vendor has not seen yet.
        """
        with self._atomic():
            lo, hi = limit.window.bucket_range(now)
            local = limit.amount - self._sum(pool, limit.series, lo, hi)
            if remaining < local:
                self._add(pool, limit.series, limit.window.bucket(now), local - remaining)

    def block(self, pool: str, until: float, reason: str) -> None:
        """Refuse every demand on ``pool`` until ``until`` (epoch seconds)."""
        with self._atomic():
            self._set_hold(Hold(POOL_PREFIX + pool, until, reason))

    def disable(self, key: str, reason: str) -> None:
        """Refuse every demand made with ``key`` until :meth:`enable`."""
        with self._atomic():
            self._set_hold(Hold(KEY_PREFIX + key, None, reason))

    def enable(self, key: str) -> None:
        """Lift a :meth:`disable`."""
        with self._atomic():
            self._delete_hold(KEY_PREFIX + key)

    def unblock(self, pool: str) -> None:
        """Lift a :meth:`block`."""
        with self._atomic():
            self._delete_hold(POOL_PREFIX + pool)

    def mark_unavailable(self, model: str, until: float, reason: str) -> None:
        """Refuse every demand for ``model`` (a model on one key) until ``until``.

        A retired or unknown model fails every call; ``until`` is when it is worth
        asking the vendor again, in case the refusal was a glitch.
        """
        with self._atomic():
            self._set_hold(Hold(MODEL_PREFIX + model, until, reason))

    def make_available(self, model: str) -> None:
        """Lift a :meth:`mark_unavailable`."""
        with self._atomic():
            self._delete_hold(MODEL_PREFIX + model)

    def holds(self, now: float) -> list[Hold]:
        """Every block, disabled key and unavailable model in force at ``now``."""
        with self._atomic():
            return [
                h
                for h in self._all_holds()
                if h.active(now) and not h.subject.startswith(LEARNED_PREFIX)
            ]

    def learn(self, pool: str, limit: Limit, now: float) -> None:
        """Record a limit the vendor stated for ``pool``, replacing one of the same
        metric and window, so every process sharing this ledger enforces it."""
        subject = f"{LEARNED_PREFIX}{pool}{_LEARNED_SEP}{limit.series}"
        with self._atomic():
            self._set_hold(Hold(subject, now, str(limit)))

    def learned(self) -> list[LearnedLimit]:
        """Every limit learned from vendors' headers, in every pool."""
        with self._atomic():
            records = [h for h in self._all_holds() if h.subject.startswith(LEARNED_PREFIX)]
        found = []
        for record in records:
            pool, _, _ = record.subject[len(LEARNED_PREFIX) :].rpartition(_LEARNED_SEP)
            try:
                limit = Limit.parse(record.reason)
            except ValueError:
                continue  # written by a newer version with a grammar this one lacks
            found.append(LearnedLimit(pool, limit, record.until or 0.0))
        return found

    def usage(self, pool: str, limits: Sequence[Limit], now: float) -> list[LimitUsage]:
        """What each of ``limits`` has spent in ``pool`` at ``now``."""
        report = []
        with self._atomic():
            for limit in limits:
                lo, hi = limit.window.bucket_range(now)
                used = self._sum(pool, limit.series, lo, hi)
                if limit.window.kind == "sliding" and used:
                    buckets = self._buckets(pool, limit.series, lo, hi)
                    resets = limit.window.frees_at(now, buckets, used)
                else:
                    resets = limit.window.frees_at(now, [], 0)
                report.append(LimitUsage(pool, limit, used, resets))
        return report

    def reset(self, pool: str) -> None:
        """Forget everything counted in ``pool`` and lift its block."""
        with self._atomic():
            self._delete_pool(pool)
            self._delete_hold(POOL_PREFIX + pool)

    def close(self) -> None:  # noqa: B027 - optional for backends without resources
        """Release connections; the ledger reopens them if used again."""

    def _maybe_prune(self, pool: str, limits: Sequence[Limit], now: float) -> None:
        for limit in limits:
            if limit.window.kind == "once":
                continue
            mark = (pool, limit.series)
            if now - self._last_prune.get(mark, -math.inf) < self.prune_interval:
                continue
            self._last_prune[mark] = now
            self._prune(pool, limit.series, limit.window.bucket_range(now)[0])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # ------------------------------------------------------- storage primitives

    @abstractmethod
    @contextmanager
    def _atomic(self) -> Iterator[None]:
        """Run the enclosed primitives as one atomic, isolated step."""

    @abstractmethod
    def _sum(self, pool: str, series: str, lo: int, hi: int) -> int:
        """Total of the buckets ``lo..hi`` (inclusive) of a series."""

    @abstractmethod
    def _buckets(self, pool: str, series: str, lo: int, hi: int) -> list[tuple[int, int]]:
        """``(bucket, amount)`` of the non-empty buckets ``lo..hi``."""

    @abstractmethod
    def _add(self, pool: str, series: str, bucket: int, amount: int) -> None:
        """Add ``amount`` (may be negative) to a bucket, never below zero."""

    def _add_many(self, pool: str, adds: Sequence[tuple[str, int, int]]) -> None:
        """:meth:`_add` for each ``(series, bucket, amount)``; backends may batch it."""
        for series, bucket, amount in adds:
            self._add(pool, series, bucket, amount)

    def _read(
        self, pool: str, subjects: Sequence[str], ranges: Sequence[tuple[str, int, int]]
    ) -> tuple[list[Hold], list[int]]:
        """The holds on ``subjects`` and the sum of each ``(series, lo, hi)`` range.

        Everything a reservation must read, so a backend can fetch it at once.
        """
        return self._holds(subjects), [self._sum(pool, *r) for r in ranges]

    @abstractmethod
    def _prune(self, pool: str, series: str, below: int) -> None:
        """Drop the buckets of a series older than ``below``."""

    @abstractmethod
    def _delete_pool(self, pool: str) -> None:
        """Drop every counter of a pool."""

    @abstractmethod
    def _holds(self, subjects: Sequence[str]) -> list[Hold]:
        """The holds recorded for these subjects (active or not)."""

    @abstractmethod
    def _all_holds(self) -> list[Hold]:
        """Every hold recorded."""

    @abstractmethod
    def _set_hold(self, hold: Hold) -> None:
        """Record or replace a hold."""

    @abstractmethod
    def _delete_hold(self, subject: str) -> None:
        """Remove a hold if there is one."""
