"""Local quota slices: a wrapper ledger that admits most calls from memory.

``sqlite:///x.db?slices=on`` (or ``redis://...?slices=on``) is a :class:`SlicedLedger`
over that ledger. Where a pool has room for many calls, the process reserves a
*slice* of it (many calls' worth of demand) in one inner reservation, with the inner
ledger's lease, and admits calls from memory until the slice is spent, a bucket of
one of its limits changes, or :data:`LIFETIME` seconds pass. What the slice did not
spend is then given back: the slice's reservation is settled to what its calls used.

- **Never over-admits.** Every call admitted from a slice is inside quota the shared
  ledger already counts; the slice is counted in the bucket a per-call reservation
  would have been counted in (it ends when that bucket does).
- **Never starves the others.** A slice is at most :data:`SHARE` of the room the pool
  had left, and sized from this process's recent rate (the calls its previous slice
  admitted; doubled when that one ran out). A pool with no room for
  :data:`MIN_CALLS` calls in such a share is *tight*: calls go to the inner ledger
  one by one, as without slices.
- **A killed process** over-counts by at most its slice until the slice's lease
  runs out; then, as for a call killed in flight, the slice's requests and prompt
  tokens stay counted and its output estimate is released.
- **Holds are the inner ledger's.** A block, disable or unavailable model set
  through this ledger returns the slices it touches at once; one set by another
  process is seen when this process next reserves in the inner ledger (at most
  :data:`LIFETIME` later). A refusal from the inner ledger returns the pool's slices.
- **Reads state what slices hold.** :meth:`SlicedLedger.usage` reports ``used`` as
  the inner ledger counts it (slices included) and ``held``: what this process's
  slices hold of it, counted but not spent.

A call admitted from a slice settles into the slice (a memory update). What a call
spends beyond its slice is added to the inner ledger at once (:meth:`Ledger.record`),
and the slice admits nothing more.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from langchain_quota_router.quota.errors import LedgerError
from langchain_quota_router.quota.ledger import settle as settling
from langchain_quota_router.quota.ledger.contract import Ledger
from langchain_quota_router.quota.ledger.fleet import FleetStore
from langchain_quota_router.quota.ledger.full import FullPools
from langchain_quota_router.quota.ledger.types import (
    Demand,
    Hold,
    LearnedLimit,
    LimitUsage,
    Refusal,
    Reservation,
)
from langchain_quota_router.quota.limits import Limit

#: The most a slice takes of the room its pool has left.
SHARE = 1 / 8
#: The fewest calls a slice is made for: a pool with less room (in a share) is tight.
MIN_CALLS = 4
#: The most calls one slice is made for.
MAX_CALLS = 4096
#: Seconds a slice admits calls, at most (measured on the callers' clock).
LIFETIME = 1.0
#: Seconds (wall clock) after which an idle slice is given back by the sweeper.
IDLE = 2.0

_ZERO = Demand(0, 0, 0)
_SliceKey = tuple[str, tuple[Limit, ...], str | None, str | None]


def _plus(a: Demand, b: Demand) -> Demand:
    return Demand(
        a.requests + b.requests,
        a.input_tokens + b.input_tokens,
        a.output_tokens + b.output_tokens,
    )


def _minus(a: Demand, b: Demand) -> Demand:
    return Demand(
        a.requests - b.requests,
        a.input_tokens - b.input_tokens,
        a.output_tokens - b.output_tokens,
    )


def _times(d: Demand, n: int) -> Demand:
    return Demand(d.requests * n, d.input_tokens * n, d.output_tokens * n)


def _fits(d: Demand, room: Demand) -> bool:
    return (
        d.requests <= room.requests
        and d.input_tokens <= room.input_tokens
        and d.output_tokens <= room.output_tokens
    )


@dataclass(eq=False)
class _Slice:
    """One inner reservation, spent call by call in this process."""

    key: _SliceKey
    reservation: Reservation
    ends_at: float  # the callers' clock: the first bucket boundary or the lifetime
    made: float = field(default_factory=time.monotonic)
    taken: Demand = _ZERO  # admitted calls: estimates while open, real use once settled
    calls: int = 0
    open: int = 0
    retired: bool = False
    ran_out: bool = False
    settled: bool = False
    dropped: bool = False  # the pool was reset: nothing to give back
    # Spent beyond the slice that the inner ledger could not be told at once.
    extra: Demand = _ZERO

    @property
    def spent(self) -> Demand:
        """What the slice's reservation is settled to when it is given back."""
        return _plus(self.taken, self.extra)

    @property
    def unspent(self) -> Demand:
        return _minus(self.reservation.demand, self.taken)


@dataclass(frozen=True)
class SliceReservation(Reservation):
    """A call admitted from a slice: settled into the slice, not the inner ledger."""

    source: Any = field(default=None, compare=False, repr=False)


class SlicedLedger(Ledger):
    """Admits from local slices of ``inner``'s pools where they have room for many
    calls; per call in ``inner`` where they are tight (see the module docs).

    Args:
        inner: the shared ledger the slices are reserved in.
        share: the most a slice takes of a pool's remaining room.
        lifetime: seconds a slice admits calls, at most.
    """

    scheme = "sliced"

    def __init__(self, inner: Ledger, *, share: float = SHARE, lifetime: float = LIFETIME) -> None:
        self.inner = inner
        self.url = inner.url
        self.share = share
        self.lifetime = lifetime
        self._lock = threading.Lock()
        self._slices: dict[_SliceKey, _Slice] = {}
        # Slices retired with calls still open: settled when the last one is.
        self._retired: set[_Slice] = set()
        # key -> how many calls the next slice is made for.
        self._size: dict[_SliceKey, int] = {}
        # key -> calls' worth of room the pool had left when last seen.
        self._room: dict[_SliceKey, int] = {}
        self._refills: dict[_SliceKey, threading.Lock] = {}
        self._arefills: dict[_SliceKey, asyncio.Future[None]] = {}
        self._sweeper: threading.Thread | None = None
        self._closed = threading.Event()

    # ------------------------------------------------------------ delegation

    @property
    def reservation_lease(self) -> float:
        return self.inner.reservation_lease

    @reservation_lease.setter
    def reservation_lease(self, seconds: float) -> None:
        self.inner.reservation_lease = seconds

    @property
    def blocking(self) -> bool:  # type: ignore[override]
        return self.inner.blocking

    @property
    def shared(self) -> bool:  # type: ignore[override]
        return self.inner.shared

    @property
    def full_pools(self) -> FullPools:
        return self.inner.full_pools

    def remembered(self, pool: str, demand: Demand, now: float) -> Refusal | None:
        # A pool may be known full to others while this process's slice has room.
        for s in list(self._slices.values()):
            if s.key[0] == pool and not s.retired and _fits(demand, s.unspent):
                return None
        return self.inner.remembered(pool, demand, now)

    def _worker(self) -> Any:
        return self.inner._worker()

    def _inline(self, operation: Any) -> Any:
        return self.inner._inline(operation)

    # ------------------------------------------------------------- admission

    def _from_slice(
        self, key: _SliceKey, demand: Demand, now: float
    ) -> tuple[SliceReservation | None, list[_Slice]]:
        """A call admitted from the key's slice, if it has room; and the slices
        that ended and must be given back (outside the lock)."""
        ended: list[_Slice] = []
        with self._lock:
            s = self._slices.get(key)
            if s is None:
                return None, ended
            # A caller whose clock read is a little behind the slice's is counted
            # in the slice's bucket: later, never earlier, than its own.
            if now < s.ends_at and _fits(demand, s.unspent):
                s.taken = _plus(s.taken, demand)
                s.calls += 1
                s.open += 1
                r = s.reservation
                made = SliceReservation(
                    r.pool, demand, r.entries, now, r.levels, "", r.expires_at, source=s
                )
                return made, ended
            s.ran_out = now < s.ends_at
            self._retire_locked(s, ended)
        return None, ended

    def _retire_locked(self, s: _Slice, ended: list[_Slice]) -> None:
        """Stop admitting from ``s``; give it back now if no call is open (the
        caller does it, outside the lock), else when the last one settles."""
        if s.retired:
            return
        s.retired = True
        if self._slices.get(s.key) is s:
            del self._slices[s.key]
            grown = min(MAX_CALLS, 2 * s.calls) if s.ran_out else s.calls
            self._size[s.key] = max(MIN_CALLS, grown)
        if s.open:
            self._retired.add(s)
        elif not s.settled:
            s.settled = True
            ended.append(s)

    def _give_back(self, ended: Sequence[_Slice], now: float | None) -> None:
        # Through the settler: a give-back that fails is retried in the background
        # (and its lease would release it), never raised at the call that ended it.
        for s in ended:
            if not s.dropped:
                at = s.reservation.at if now is None else now
                settling.settle(self.inner, s.reservation, s.spent, at)

    async def _agive_back(self, ended: Sequence[_Slice], now: float) -> None:
        for s in ended:
            if not s.dropped:
                await settling.asettle(self.inner, s.reservation, s.spent, now)

    def _slice_size(self, key: _SliceKey) -> int:
        """Calls the next slice of ``key`` is made for (0: the pool is tight)."""
        room = self._room.get(key)
        if room is None:  # never seen: ask per call first, learning the room
            return 0
        n = min(self._size.get(key, MIN_CALLS), math.floor(self.share * room))
        return n if n >= MIN_CALLS else 0

    def _learn_room(self, key: _SliceKey, made: Reservation | Refusal, per_call: Demand) -> None:
        if isinstance(made, Refusal) or not made.levels:
            self._room.pop(key, None)
            return
        fits = MAX_CALLS * 64
        for limit, used in made.levels:
            need = per_call.amount(limit.metric)
            if need:
                fits = min(fits, max(0, limit.units - used) // need)
        self._room[key] = fits

    def _ends_at(self, limits: Sequence[Limit], now: float) -> float:
        ends = now + self.lifetime
        for limit in limits:
            window = limit.window
            if window.kind == "sliding":
                width = window.bucket_width
                ends = min(ends, (math.floor(now / width) + 1) * width)
            elif window.kind == "calendar":
                ends = min(ends, window.bounds(now)[1])
        return ends

    def _install(self, key: _SliceKey, made: Reservation, per_call: Demand, now: float) -> _Slice:
        """A slice from an inner reservation, with the first call admitted from it."""
        s = _Slice(key, made, self._ends_at(key[1], now))
        s.taken, s.calls, s.open = per_call, 1, 1
        with self._lock:
            old = self._slices.get(key)
            ended: list[_Slice] = []
            if old is not None:
                self._retire_locked(old, ended)
            self._slices[key] = s
        self._give_back(ended, now)
        self._start_sweeper()
        return s

    def _call_in(self, s: _Slice, demand: Demand, now: float) -> SliceReservation:
        r = s.reservation
        return SliceReservation(
            r.pool, demand, r.entries, now, r.levels, "", r.expires_at, source=s
        )

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
        skey: _SliceKey = (pool, tuple(limits), key, model)
        made, ended = self._from_slice(skey, demand, now)
        if ended:
            self._give_back(ended, now)
        if made is not None:
            return made
        n = self._slice_size(skey)
        if n:
            lock = self._refills.get(skey) or self._refills.setdefault(skey, threading.Lock())
            with lock:
                # Another thread may have made a slice meanwhile.
                made, ended = self._from_slice(skey, demand, now)
                self._give_back(ended, now)
                if made is not None:
                    return made
                whole = self.inner.reserve(
                    pool, limits, _times(demand, n), now, key=key, model=model
                )
                self._learn_room(skey, whole, demand)
                if isinstance(whole, Reservation):
                    return self._call_in(self._install(skey, whole, demand, now), demand, now)
        result = self.inner.reserve(pool, limits, demand, now, key=key, model=model)
        self._learn_room(skey, result, demand)
        if isinstance(result, Refusal):
            self._return_where(lambda k: k[0] == pool, now)
        return result

    async def areserve(
        self,
        pool: str,
        limits: Sequence[Limit],
        demand: Demand,
        now: float,
        *,
        key: str | None = None,
        model: str | None = None,
    ) -> Reservation | Refusal:
        skey: _SliceKey = (pool, tuple(limits), key, model)
        made, ended = self._from_slice(skey, demand, now)
        if ended:
            await self._agive_back(ended, now)
        if made is not None:
            return made
        while self._slice_size(skey):
            waiting = self._arefills.get(skey)
            if waiting is not None and waiting.get_loop() is asyncio.get_running_loop():
                # One caller of this loop makes the slice; the others wait for it.
                await asyncio.shield(waiting)
                made, ended = self._from_slice(skey, demand, now)
                await self._agive_back(ended, now)
                if made is not None:
                    return made
                continue
            mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._arefills[skey] = mine
            try:
                whole = await self.inner.areserve(
                    pool, limits, _times(demand, self._slice_size(skey)), now, key=key, model=model
                )
                self._learn_room(skey, whole, demand)
                if isinstance(whole, Reservation):
                    return self._call_in(self._install(skey, whole, demand, now), demand, now)
            finally:
                if self._arefills.get(skey) is mine:
                    del self._arefills[skey]
                mine.set_result(None)
            break
        result = await self.inner.areserve(pool, limits, demand, now, key=key, model=model)
        self._learn_room(skey, result, demand)
        if isinstance(result, Refusal):
            await self.inner.arun(self._return_where, lambda k: k[0] == pool, now)
        return result

    # ------------------------------------------------------------- settlement

    def _settled_in_slice(
        self, reservation: SliceReservation, used: Demand
    ) -> tuple[Demand, list[_Slice]]:
        """Settle a slice's call into it: what it spent beyond the slice (for the
        inner ledger), and the slices to give back now."""
        s: _Slice = reservation.source
        ended: list[_Slice] = []
        with self._lock:
            s.taken = _plus(s.taken, _minus(used, reservation.demand))
            s.open -= 1
            total = s.reservation.demand
            beyond = Demand(
                max(0, s.taken.requests - total.requests),
                max(0, s.taken.input_tokens - total.input_tokens),
                max(0, s.taken.output_tokens - total.output_tokens),
            )
            if beyond != _ZERO:
                s.taken = _minus(s.taken, beyond)
                self._retire_locked(s, ended)
            if s.retired and not s.open and not s.settled:
                s.settled = True
                self._retired.discard(s)
                ended.append(s)
        return beyond, ended

    def settle(self, reservation: Reservation, used: Demand, now: float) -> None:
        if not isinstance(reservation, SliceReservation):
            self.inner.settle(reservation, used, now)
            return
        beyond, ended = self._settled_in_slice(reservation, used)
        if beyond != _ZERO and not reservation.source.dropped:
            try:
                self.inner.record(reservation.source.reservation, beyond, now)
            except LedgerError:
                ended = self._carry(reservation.source, beyond, ended)
        self._give_back(ended, now)

    async def asettle(self, reservation: Reservation, used: Demand, now: float) -> None:
        if not isinstance(reservation, SliceReservation):
            await self.inner.asettle(reservation, used, now)
            return
        beyond, ended = self._settled_in_slice(reservation, used)
        if beyond != _ZERO and not reservation.source.dropped:
            try:
                await self.inner.arun(
                    self.inner.record, reservation.source.reservation, beyond, now
                )
            except LedgerError:
                ended = self._carry(reservation.source, beyond, ended)
        if ended:
            await self._agive_back(ended, now)

    def _carry(self, s: _Slice, beyond: Demand, ended: list[_Slice]) -> list[_Slice]:
        """What a call spent beyond ``s`` could not be recorded: settle the slice to
        include it (never lose what was spent). The slices to give back."""
        with self._lock:
            s.extra = _plus(s.extra, beyond)
            if s.settled and s not in ended:
                # Already given back: the overshoot is all that is left to count.
                s.taken, s.extra = _ZERO, beyond
                # A leaseless correction of nothing to ``beyond``.
                fix = Reservation(
                    s.reservation.pool, _ZERO, s.reservation.entries, s.reservation.at
                )
                return [*ended, _Slice(s.key, fix, s.ends_at, extra=beyond, settled=True)]
        return ended

    def settle_now(self, reservation: Reservation, used: Demand, now: float) -> None:
        if isinstance(reservation, SliceReservation):
            self.settle(reservation, used, now)
        else:
            self.inner.settle_now(reservation, used, now)

    def record(self, reservation: Reservation, used: Demand, now: float) -> None:
        self.inner.record(reservation, used, now)

    # ------------------------------------------------------- returning slices

    def _return_where(self, which: Any, now: float | None) -> None:
        """Give back (or retire, when calls are open) the slices whose key matches."""
        ended: list[_Slice] = []
        with self._lock:
            for s in [s for k, s in self._slices.items() if which(k)]:
                self._retire_locked(s, ended)
        self._give_back(ended, now)

    def return_slices(self, now: float | None = None) -> None:
        """Give back every slice (those with open calls when their last call settles)."""
        self._return_where(lambda k: True, now)

    def _start_sweeper(self) -> None:
        if self._sweeper is not None and self._sweeper.is_alive():
            return
        with self._lock:
            if self._sweeper is not None and self._sweeper.is_alive():
                return
            self._sweeper = threading.Thread(
                target=self._sweep, name="quota-slices-sweeper", daemon=True
            )
            self._sweeper.start()

    def _sweep(self) -> None:
        """Give back slices nobody has used for :data:`IDLE` seconds (a process
        gone quiet must not sit on quota)."""
        while not self._closed.wait(IDLE / 2):
            stale = time.monotonic() - IDLE
            ended: list[_Slice] = []
            with self._lock:
                for s in [s for s in self._slices.values() if s.made < stale]:
                    self._retire_locked(s, ended)
                if not self._slices and not self._retired:
                    self._sweeper = None
                    quiet = True
                else:
                    quiet = False
            self._give_back(ended, None)
            if quiet:
                return

    # ------------------------------------------------------------------ holds

    def block(self, pool: str, until: float, reason: str) -> None:
        self.inner.block(pool, until, reason)
        self._return_where(lambda k: k[0] == pool, None)

    def unblock(self, pool: str) -> None:
        self.inner.unblock(pool)

    def disable(self, key: str, reason: str) -> None:
        self.inner.disable(key, reason)
        self._return_where(lambda k: k[2] == key, None)

    def enable(self, key: str) -> None:
        self.inner.enable(key)

    def mark_unavailable(self, model: str, until: float, reason: str) -> None:
        self.inner.mark_unavailable(model, until, reason)
        self._return_where(lambda k: k[3] == model, None)

    def make_available(self, model: str) -> None:
        self.inner.make_available(model)

    def holds(self, now: float) -> list[Hold]:
        return self.inner.holds(now)

    def observe(self, pool: str, limit: Limit, remaining: int, now: float) -> None:
        self.inner.observe(pool, limit, remaining, now)
        # The vendor has less left than this process holds: the slices would only
        # send calls the vendor refuses.
        if remaining < self._held(pool, limit):
            self._return_where(lambda k: k[0] == pool, now)

    def learn(self, pool: str, limit: Limit, now: float) -> None:
        self.inner.learn(pool, limit, now)

    def learned(self) -> list[LearnedLimit]:
        return self.inner.learned()

    # ------------------------------------------------------------------ reads

    def _held(self, pool: str, limit: Limit) -> int:
        with self._lock:
            live = [s for s in (*self._slices.values(), *self._retired) if s.key[0] == pool]
            return sum(
                max(0, s.unspent.amount(limit.metric))
                for s in live
                if any(series == limit.series for series, _, _ in s.reservation.entries)
            )

    def usage(self, pool: str, limits: Sequence[Limit], now: float) -> list[LimitUsage]:
        """What each limit has spent, as the inner ledger counts it (this process's
        slices included whole), with ``held``: what those slices hold unspent."""
        report = self.inner.usage(pool, limits, now)
        return [replace(u, held=self._held(pool, u.limit)) for u in report]

    def reset(self, pool: str) -> None:
        with self._lock:
            for k in [k for k in self._slices if k[0] == pool]:
                s = self._slices.pop(k)
                s.dropped = s.retired = True
            for s in [s for s in self._retired if s.key[0] == pool]:
                s.dropped = True
            for k in [k for k in self._room if k[0] == pool]:
                del self._room[k]
        self.inner.reset(pool)

    # ----------------------------------------------------------------- other

    def _new_fleet_store(self) -> FleetStore:
        return self.inner.fleet_store()

    def close(self) -> None:
        self.return_slices()
        self._closed.set()
        super().close()
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        # Backend extras (fleet_size, check_durability, flush...) are the inner's.
        if name.startswith("__") or name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"
