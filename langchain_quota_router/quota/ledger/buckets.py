"""The ledger's policy over storage primitives, shared by memory and SQLite.

``BucketLedger`` implements admission, settlement, leases, header sync and holds
once, on top of a few storage primitives that a backend runs inside one atomic
section (:meth:`BucketLedger._atomic`): a lock for memory, a ``BEGIN IMMEDIATE``
transaction for SQLite.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import ClassVar

from langchain_quota_router.quota.ledger.contract import Ledger
from langchain_quota_router.quota.ledger.records import (
    FULL_PREFIX,
    KEY_PREFIX,
    MODEL_PREFIX,
    POOL_PREFIX,
    is_record,
    learned_from,
    learned_record,
)
from langchain_quota_router.quota.ledger.types import (
    Demand,
    Hold,
    LearnedLimit,
    LimitUsage,
    Refusal,
    Reservation,
    decode_releases,
    lease_floor,
    new_lease_id,
    releases_of,
)
from langchain_quota_router.quota.limits import Limit, Metric


class BucketLedger(Ledger):
    """The ledger's policy over storage primitives: memory and SQLite share it.

    Subclasses implement the primitives (below), which the policy runs inside one
    atomic section (:meth:`_atomic`).
    """

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
        full = self.full_pools
        if full.sync_due():
            full.replace(self._full_records(), now)
        known = full.refusal(pool, demand, now)
        if known is not None:
            return known
        subjects = [POOL_PREFIX + pool]
        if key:
            subjects.append(KEY_PREFIX + key)
        if model:
            subjects.append(MODEL_PREFIX + model)
        ranges = [(limit.series, *limit.window.bucket_range(now)) for limit in limits]
        with self._atomic():
            holds, sums, overdue = self._read(pool, subjects, ranges, now)
            if overdue:
                self._expire(pool, overdue)
                holds, sums, _ = self._read(pool, subjects, ranges, now)
            for hold in holds:
                if hold.active(now):
                    return Refusal(pool, hold.reason, hold.until)
            entries: dict[str, tuple[str, int, Metric]] = {}
            levels: list[tuple[Limit, int]] = []
            adds: list[tuple[str, int, int]] = []
            for limit, used in zip(limits, sums, strict=True):
                need = demand.amount(limit.metric)
                if used + need > limit.units:
                    refusal = self._check(pool, limit, need, used, now)
                    if refusal is not None:
                        record = full.note(refusal, self._first_lease(pool))
                        if record is not None:
                            self._set_hold(record)
                        return refusal
                levels.append((limit, used + need))
                series = limit.series
                if series not in entries:
                    entries[series] = (series, limit.window.bucket(now), limit.metric)
                    if need:
                        adds.append((series, entries[series][1], need))
            self._add_many(pool, adds)
            counted = tuple(entries.values())
            lease_id, expires_at = "", None
            releases = releases_of(demand, counted)
            if releases:
                lease, until = new_lease_id(), now + self.reservation_lease
                if self._add_lease(pool, lease, until, releases):
                    lease_id, expires_at = lease, until
            self._maybe_prune(pool, limits, now)
        return Reservation(pool, demand, counted, now, tuple(levels), lease_id, expires_at)

    def _full_records(self) -> list[Hold]:
        """Every pool's ``full:`` record (a backend may read them without a write
        lock: they are only hints)."""
        with self._atomic():
            return [h for h in self._all_holds() if h.subject.startswith(FULL_PREFIX)]

    def _expire(self, pool: str, overdue: Sequence[tuple[str, str]]) -> None:
        """Release what the overdue leases ``(id, encoded releases)`` held, and
        forget them."""
        gives = [(s, b, -a) for _, text in overdue for s, b, a in decode_releases(text)]
        self._add_many(pool, gives)
        self._drop_leases(pool, [lease_id for lease_id, _ in overdue])

    def _check(self, pool: str, limit: Limit, need: int, used: int, now: float) -> Refusal | None:
        """Why ``need`` does not fit ``limit`` with ``used`` counted, if it does not."""
        if need > limit.units:
            why = f"needs {limit.show(need)} {limit.metric}, more than {limit} allows at all"
            return Refusal(pool, why, None, limit)
        if used + need <= limit.units:
            return None
        lo, hi = limit.window.bucket_range(now)
        buckets = self._buckets(pool, limit.series, lo, hi)
        retry_at = limit.window.frees_at(now, buckets, used + need - limit.units)
        room = max(0, limit.units - used)
        why = f"{limit} is used up ({limit.show(used)} counted)"
        return Refusal(pool, why, retry_at, limit, room)

    def settle(self, reservation: Reservation, used: Demand, now: float) -> None:
        """Replace a reservation's estimate with what the call really spent.

        Real usage may exceed the estimate; the window then stays full longer. A
        reservation whose lease already ran out had its output estimate released:
        the correction then starts from what the expiry left counted.
        """
        live = _deltas(reservation, reservation.demand, used)
        if not reservation.lease_id:
            if live:
                with self._atomic():
                    self._add_many(reservation.pool, live)
                    self._gave_back(reservation.pool, live)
            return
        expired = _deltas(reservation, lease_floor(reservation.demand), used)
        self._settle(reservation, live, expired)

    def _settle(
        self,
        reservation: Reservation,
        live: Sequence[tuple[str, int, int]],
        expired: Sequence[tuple[str, int, int]],
    ) -> None:
        """End a lease and apply the corrections for a live or an expired one."""
        pool = reservation.pool
        with self._atomic():
            gone = self._drop_lease(pool, reservation.lease_id, reservation.expires_at or 0.0)
            deltas = live if gone else expired
            if deltas:
                self._add_many(pool, deltas)
                self._gave_back(pool, deltas)

    def _gave_back(self, pool: str, deltas: Sequence[tuple[str, int, int]]) -> None:
        """After a correction: if it gave room back, the pool is no longer known full
        (here at once; elsewhere at the next sync, its record being gone)."""
        if any(amount < 0 for _, _, amount in deltas):
            full = self.full_pools
            # Only a record this process knows of (its own, or read at the last
            # sync, at most a second ago): deleting on every settlement would cost
            # every call a statement. One written since is lifted by the next.
            if self.shared and pool in full:
                self._delete_hold(FULL_PREFIX + pool)
            full.forget(pool)

    def record(self, reservation: Reservation, used: Demand, now: float) -> None:
        adds = [
            (series, bucket, used.amount(metric))
            for series, bucket, metric in reservation.entries
            if used.amount(metric)
        ]
        if adds:
            with self._atomic():
                self._add_many(reservation.pool, adds)

    def observe(self, pool: str, limit: Limit, remaining: int, now: float) -> None:
        with self._atomic():
            lo, hi = limit.window.bucket_range(now)
            local = limit.units - self._sum(pool, limit.series, lo, hi)
            if remaining < local:
                self._add(pool, limit.series, limit.window.bucket(now), local - remaining)

    def block(self, pool: str, until: float, reason: str) -> None:
        """Refuse every demand on ``pool`` until ``until`` (epoch seconds)."""
        with self._atomic():
            self._set_hold(Hold(POOL_PREFIX + pool, until, reason))

    def disable(self, key: str, reason: str) -> None:
        with self._atomic():
            self._set_hold(Hold(KEY_PREFIX + key, None, reason))

    def enable(self, key: str) -> None:
        with self._atomic():
            self._delete_hold(KEY_PREFIX + key)

    def unblock(self, pool: str) -> None:
        with self._atomic():
            self._delete_hold(POOL_PREFIX + pool)
            self._delete_hold(FULL_PREFIX + pool)
        self.full_pools.forget(pool)

    def mark_unavailable(self, model: str, until: float, reason: str) -> None:
        with self._atomic():
            self._set_hold(Hold(MODEL_PREFIX + model, until, reason))

    def make_available(self, model: str) -> None:
        with self._atomic():
            self._delete_hold(MODEL_PREFIX + model)

    def holds(self, now: float) -> list[Hold]:
        with self._atomic():
            found = self._all_holds()
        return sorted(
            (h for h in found if h.active(now) and not is_record(h.subject)),
            key=lambda h: h.subject,
        )

    def learn(self, pool: str, limit: Limit, now: float) -> None:
        with self._atomic():
            self._set_hold(learned_record(pool, limit, now))

    def learned(self) -> list[LearnedLimit]:
        with self._atomic():
            return learned_from(self._all_holds())

    def usage(self, pool: str, limits: Sequence[Limit], now: float) -> list[LimitUsage]:
        report = []
        with self._atomic():
            overdue = self._overdue(pool, now)
            if overdue:
                self._expire(pool, overdue)
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
        with self._atomic():
            self._delete_pool(pool)
            self._delete_hold(POOL_PREFIX + pool)
            self._delete_hold(FULL_PREFIX + pool)
        self.full_pools.forget(pool)

    def _maybe_prune(self, pool: str, limits: Sequence[Limit], now: float) -> None:
        for limit in limits:
            if limit.window.kind == "once":
                continue
            mark = (pool, limit.series)
            if now - self._last_prune.get(mark, -math.inf) < self.prune_interval:
                continue
            self._last_prune[mark] = now
            self._prune(pool, limit.series, limit.window.bucket_range(now)[0])

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
        self,
        pool: str,
        subjects: Sequence[str],
        ranges: Sequence[tuple[str, int, int]],
        now: float,
    ) -> tuple[list[Hold], list[int], list[tuple[str, str]]]:
        """The holds on ``subjects``, the sum of each ``(series, lo, hi)`` range and
        the pool's leases overdue at ``now``.

        Everything a reservation must read, so a backend can fetch it at once.
        """
        sums = [self._sum(pool, *r) for r in ranges]
        return self._holds(subjects), sums, self._overdue(pool, now)

    @abstractmethod
    def _add_lease(
        self, pool: str, lease_id: str, expires_at: float, releases: Sequence[tuple[str, int, int]]
    ) -> bool:
        """Record an open reservation's lease and what it releases when overdue.

        Returns:
            False if the backend could not (a key collision): the reservation then
            goes without a lease, as one with nothing to release does.
        """

    @abstractmethod
    def _overdue(self, pool: str, now: float) -> list[tuple[str, str]]:
        """``(id, encoded releases)`` of the pool's leases that ran out by ``now``."""

    @abstractmethod
    def _first_lease(self, pool: str) -> float | None:
        """When the pool's earliest open lease runs out, if it has one."""

    @abstractmethod
    def _drop_lease(self, pool: str, lease_id: str, expires_at: float) -> bool:
        """Forget a lease; whether it was still there."""

    @abstractmethod
    def _drop_leases(self, pool: str, lease_ids: Sequence[str]) -> None:
        """Forget several leases of a pool (overdue ones: rare, need not be fast)."""

    @abstractmethod
    def _prune(self, pool: str, series: str, below: int) -> None:
        """Drop the buckets of a series older than ``below``."""

    @abstractmethod
    def _delete_pool(self, pool: str) -> None:
        """Drop every counter and lease of a pool."""

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


def _deltas(reservation: Reservation, counted: Demand, used: Demand) -> list[tuple[str, int, int]]:
    """``(series, bucket, delta)`` turning what is ``counted`` into what was ``used``."""
    deltas = [
        (series, bucket, used.amount(metric) - counted.amount(metric))
        for series, bucket, metric in reservation.entries
    ]
    return [d for d in deltas if d[2]]
