"""What this process remembers of full pools, so it does not ask the ledger again."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from langchain_quota_router.quota.ledger.records import FULL_PREFIX, LEARNED_SEP
from langchain_quota_router.quota.ledger.types import Demand, Hold, Refusal
from langchain_quota_router.quota.limits import Limit


@dataclass(frozen=True)
class _Full:
    until: float
    limit: Limit
    room: int
    reason: str


class FullPools:
    """The pools this process knows are full for a while, so it does not ask again.

    A refusal by a limit says until when the demand cannot fit and how much room
    the limit had: until then, a demand at least as large is refused here, without
    touching the ledger (no I/O, no write lock), however many pools are full. A
    smaller demand still goes to the ledger, which may admit it.

    A shared ledger also keeps each refusal as a ``full:`` record, so other
    processes learn it at their next sync (at most every :attr:`sync_interval`
    seconds, one read for every pool). A settlement that gives room back deletes
    the record and this memory, so the pool is asked again at once here and, after
    their next sync, everywhere. Memory older than :attr:`stale_after` seconds
    without a sync is not trusted.
    """

    sync_interval: ClassVar[float] = 1.0
    stale_after: ClassVar[float] = 5.0

    def __init__(self, *, shared: bool) -> None:
        self.shared = shared
        self._entries: dict[str, _Full] = {}
        #: Monotonic time of the last sync with the ledger's records.
        self.synced_at = -math.inf
        # (entries object, valid until) -> the pools no demand can enter.
        self._closed: tuple[frozenset[str], dict[str, _Full], float] = (
            frozenset(),
            self._entries,
            math.inf,
        )

    def closed(self, now: float) -> frozenset[str]:
        """The pools that refuse any demand at ``now`` (no room left at all): a
        router skips them with a set lookup, however many there are."""
        if self.shared and time.monotonic() - self.synced_at > self.stale_after:
            return frozenset()
        pools, entries, until = self._closed
        if entries is self._entries and now < until:
            return pools
        live = {
            pool: entry
            for pool, entry in self._entries.items()
            if entry.until > now and entry.room <= 0 and entry.limit.metric != "output_tokens"
        }
        until = min((e.until for e in live.values()), default=math.inf)
        closed = frozenset(live)
        self._closed = (closed, self._entries, until)
        return closed

    def known(self, pool: str) -> Refusal | None:
        """The refusal remembered for ``pool``, whatever the demand."""
        entry = self._entries.get(pool)
        if entry is None:
            return None
        return Refusal(pool, entry.reason, entry.until, entry.limit, entry.room)

    def refusal(self, pool: str, demand: Demand, now: float) -> Refusal | None:
        """The remembered refusal ``demand`` would get in ``pool``, if any."""
        entry = self._entries.get(pool)
        if entry is None or entry.until <= now:
            return None
        if self.shared and time.monotonic() - self.synced_at > self.stale_after:
            return None
        if demand.amount(entry.limit.metric) <= entry.room:
            return None
        return Refusal(pool, entry.reason, entry.until, entry.limit, entry.room)

    def note(self, refusal: Refusal, first_lease: float | None) -> Hold | None:
        """Remember a refusal by a limit; the record for the ledger, if shared.

        ``first_lease`` is when the pool's earliest open lease runs out: a lease
        that runs out gives its output estimate back, so the pool is asked again
        then, whatever the refusal said.
        """
        limit, room, until = refusal.limit, refusal.room, refusal.retry_at
        if limit is None or room is None or until is None:
            return None
        if first_lease is not None:
            until = min(until, first_lease)
        # Copied, never changed in place: readers in other threads and the closed()
        # cache see one whole version or the next.
        self._entries = {**self._entries, refusal.pool: _Full(until, limit, room, refusal.reason)}
        if not self.shared:
            return None
        text = f"{limit}{LEARNED_SEP}{room}{LEARNED_SEP}{refusal.reason}"
        return Hold(FULL_PREFIX + refusal.pool, until, text)

    def forget(self, pool: str) -> None:
        """Room came back in ``pool`` (a settlement, a reset): ask again."""
        if pool in self._entries:
            self._entries = {p: e for p, e in self._entries.items() if p != pool}

    def sync_due(self) -> bool:
        """Whether the ledger's records should be read again."""
        return self.shared and time.monotonic() - self.synced_at >= self.sync_interval

    def replace(self, records: Sequence[Hold], now: float) -> None:
        """Take the ledger's ``full:`` records as what is known (others dropped)."""
        entries: dict[str, _Full] = {}
        for record in records:
            if not record.subject.startswith(FULL_PREFIX) or not record.active(now):
                continue
            try:
                text, room, reason = record.reason.split(LEARNED_SEP, 2)
                limit = Limit.parse(text)
                entries[record.subject[len(FULL_PREFIX) :]] = _Full(
                    record.until or now, limit, int(room), reason
                )
            except ValueError:
                continue  # written by a newer version
        self._entries = entries
        self.synced_at = time.monotonic()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, pool: object) -> bool:
        return pool in self._entries
