"""The ledger: what every pool has spent, what is reserved, and who is on hold.

``Ledger`` is the contract: the public operations every ledger offers and the
contract tests check. ``BucketLedger`` implements admission, settlement, leases,
header sync and holds once, on top of a few storage primitives that a backend runs
inside one atomic section (:meth:`BucketLedger._atomic`): a lock for memory, a
``BEGIN IMMEDIATE`` transaction for SQLite. Redis, which cannot run Python inside
its atomic step, implements the contract with Lua scripts; ``FailOpenLedger`` wraps
two ledgers.

Every reservation with an output estimate carries a lease: a record of what it
would give back (its output estimate, bucket by bucket) and when. Settling removes
the record; touching a pool (reserve, usage) first releases the pool's overdue ones,
so the quota of a process killed mid-call comes back when its lease runs out.

Counters are keyed by ``(pool, series, bucket)``: a series is one metric over one
window shape (``"tokens:s60"``, ``"requests:day@UTC"``), a bucket one slice of time.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from langchain_quota_router.quota.limits import Limit, Metric

POOL_PREFIX = "pool:"
KEY_PREFIX = "key:"
#: A model on one key that the vendor no longer serves (retired, unknown, gone).
MODEL_PREFIX = "model:"
#: Not a hold: a limit a vendor's headers stated, kept beside the holds so every
#: process sees it. ``holds()`` never lists these.
LEARNED_PREFIX = "learned:"
#: Not a hold either: a pool some process found full, until when and for what
#: demand, so other processes skip it without asking (see :class:`FullPools`).
FULL_PREFIX = "full:"
_LEARNED_SEP = "\x1f"
#: How long (seconds) a reservation stays whole without being settled: past it, the
#: ledger takes its process for dead and releases its unspent output estimate.
DEFAULT_LEASE = 900.0

_T = TypeVar("_T")
_WORKER_LOCK = threading.Lock()


class WouldWait(Exception):  # noqa: N818 - a signal, not an error anyone sees
    """Raised by an operation tried without waiting (see :meth:`Ledger._inline`)
    that would have had to wait for a lock: nothing was done; run it where
    waiting is harmless."""


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
        lease_id: the id of its lease in the ledger (``""``: no lease, nothing
            would be released when it runs out).
        expires_at: when its lease runs out (epoch seconds), if it has one.
    """

    pool: str
    demand: Demand
    entries: tuple[tuple[str, int, Metric], ...]
    at: float
    levels: tuple[tuple[Limit, int], ...] = ()
    lease_id: str = ""
    expires_at: float | None = None

    def releases(self) -> list[tuple[str, int, int]]:
        """``(series, bucket, amount)`` its lease gives back when it runs out: the
        output estimate. The request and the prompt stay counted."""
        floor = lease_floor(self.demand)
        found = []
        for series, bucket, metric in self.entries:
            amount = self.demand.amount(metric) - floor.amount(metric)
            if amount:
                found.append((series, bucket, amount))
        return found


def lease_floor(demand: Demand) -> Demand:
    """What a reservation still counts once its lease ran out: the request (the
    vendor may have seen it) and the prompt, not the output it never reported."""
    return Demand(demand.requests, demand.input_tokens, 0)


def new_lease_id() -> str:
    """A reservation id, unique across processes and machines."""
    return secrets.token_hex(8)


def encode_releases(releases: Sequence[tuple[str, int, int]]) -> str:
    """A lease's releases as one line of text (for backends that store text)."""
    return "\x1e".join(f"{s}\x1f{b}\x1f{a}" for s, b, a in releases)


def decode_releases(text: str) -> list[tuple[str, int, int]]:
    """The inverse of :func:`encode_releases`."""
    found = []
    for part in text.split("\x1e") if text else []:
        series, bucket, amount = part.split("\x1f")
        found.append((series, int(bucket), int(amount)))
    return found


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
        room: what that limit had left when it refused (a smaller demand may fit).
    """

    pool: str
    reason: str
    retry_at: float | None
    limit: Limit | None = None
    room: int | None = None


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
        text = f"{limit}{_LEARNED_SEP}{room}{_LEARNED_SEP}{refusal.reason}"
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
                text, room, reason = record.reason.split(_LEARNED_SEP, 2)
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

    The contract every ledger keeps; the contract tests in ``tests/test_ledger.py``
    run over every backend and wrapper. Subclasses set ``scheme`` (the URL scheme
    that selects them).

    Attributes:
        reservation_lease: seconds a reservation stays whole unsettled (the router
            sets it from its ``reservation_lease``); past it, the ledger takes the
            process for dead and releases the unspent output estimate.
    """

    scheme: ClassVar[str]
    url: str
    reservation_lease: float = DEFAULT_LEASE
    #: Whether operations wait on I/O (a file, a server): the async API then runs
    #: them in the ledger's own worker thread, never on the event loop. A memory
    #: ledger answers inline.
    blocking: ClassVar[bool] = True
    #: Whether :meth:`areserve` and :meth:`asettle` talk to the backend
    #: asynchronously themselves (Redis), rather than through the worker thread.
    native_async: ClassVar[bool] = False
    #: Whether other processes share what this ledger counts.
    shared: ClassVar[bool] = True

    # ------------------------------------------------------------- async API

    @property
    def full_pools(self) -> FullPools:
        """What this process remembers of full pools (see :class:`FullPools`)."""
        known: FullPools | None = self.__dict__.get("_full_pools")
        if known is None:
            known = self.__dict__.setdefault("_full_pools", FullPools(shared=self.shared))
        return known

    def remembered(self, pool: str, demand: Demand, now: float) -> Refusal | None:
        """The refusal ``demand`` would get in ``pool``, if this process already
        knows it (no I/O): see :class:`FullPools`."""
        return self.full_pools.refusal(pool, demand, now)

    def _worker(self) -> ThreadPoolExecutor:
        """This ledger's worker thread (one per process: a fork gets its own)."""
        pid = os.getpid()
        state: tuple[int, ThreadPoolExecutor] | None = self.__dict__.get("_worker_state")
        if state is None or state[0] != pid:
            with _WORKER_LOCK:
                state = self.__dict__.get("_worker_state")
                if state is None or state[0] != pid:
                    name = f"quota-ledger-{self.scheme}"
                    state = (pid, ThreadPoolExecutor(max_workers=1, thread_name_prefix=name))
                    self.__dict__["_worker_state"] = state
        return state[1]

    def _inline(self, operation: Callable[[], _T]) -> _T:
        """Run ``operation`` (one transaction) right here if that cannot wait on
        anything; raise :class:`WouldWait` otherwise, with nothing done.

        The default never tries: every operation of a blocking ledger goes to its
        worker thread. SQLite overrides it (a transaction on a free file is a few
        microseconds of page-cache work; a locked one raises at once).
        """
        raise WouldWait

    async def _aone(self, operation: Callable[[], _T]) -> _T:
        """One transaction without blocking the event loop: inline when it cannot
        wait, else in the worker thread."""
        if not self.blocking:
            return operation()
        try:
            return self._inline(operation)
        except WouldWait:
            pass
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker(), operation)

    async def arun(self, fn: Callable[..., _T], /, *args: Any) -> _T:
        """Run ``fn(*args)``, which uses this ledger's blocking API, off the event
        loop: in the ledger's worker thread (inline for a memory ledger).

        One thread per ledger, so a ledger that waits (a SQLite file another
        process has locked) makes its own callers wait, never the loop.
        """
        if not self.blocking:
            return fn(*args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker(), functools.partial(fn, *args))

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
        """:meth:`reserve` without blocking the event loop.

        A caller cancelled while the reservation is being made does not leak it:
        once made, it is taken back.
        """
        known = self.remembered(pool, demand, now)
        if known is not None:
            return known
        reserve = functools.partial(self.reserve, pool, limits, demand, now, key=key, model=model)
        if not self.blocking:
            return reserve()
        try:
            return self._inline(reserve)
        except WouldWait:
            pass
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._worker(), reserve)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(functools.partial(_take_back, self, now))
            raise

    async def asettle(self, reservation: Reservation, used: Demand, now: float) -> None:
        """:meth:`settle` without blocking the event loop."""
        await self._aone(functools.partial(self.settle, reservation, used, now))

    async def ausage(self, pool: str, limits: Sequence[Limit], now: float) -> list[LimitUsage]:
        """:meth:`usage` without blocking the event loop."""
        return await self._aone(functools.partial(self.usage, pool, limits, now))

    @abstractmethod
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
        none is. The reservation holds a lease of :attr:`reservation_lease`
        seconds: unsettled by then, its output estimate is released by whoever
        next touches the pool (the request and the prompt stay counted).
        """

    @abstractmethod
    def settle(self, reservation: Reservation, used: Demand, now: float) -> None:
        """Replace a reservation's estimate with what the call really spent.

        Real usage may exceed the estimate; the window then stays full longer. A
        reservation whose lease already ran out had its output estimate released:
        the correction then starts from what the expiry left counted.
        """

    def settle_now(self, reservation: Reservation, used: Demand, now: float) -> None:
        """:meth:`settle`, done before it returns (a backend may otherwise send a
        settlement that only gives room back a little later): how failed
        settlements are retried."""
        self.settle(reservation, used, now)

    @abstractmethod
    def record(self, reservation: Reservation, used: Demand, now: float) -> None:
        """Count what a reservation made in another ledger spent, in the same
        buckets, without checking room: how a fail-open wrapper hands what it
        admitted locally back to the shared ledger."""

    @abstractmethod
    def observe(self, pool: str, limit: Limit, remaining: int, now: float) -> None:
        """Lower the room ``limit`` has in ``pool`` to what the vendor says remains.

        Never raises room: a vendor header that claims more is ignored, because
        the local count may include calls the vendor has not seen yet.
        """

    @abstractmethod
    def block(self, pool: str, until: float, reason: str) -> None:
        """Refuse every demand on ``pool`` until ``until`` (epoch seconds)."""

    @abstractmethod
    def unblock(self, pool: str) -> None:
        """Lift a :meth:`block`."""

    @abstractmethod
    def disable(self, key: str, reason: str) -> None:
        """Refuse every demand made with ``key`` until :meth:`enable`."""

    @abstractmethod
    def enable(self, key: str) -> None:
        """Lift a :meth:`disable`."""

    @abstractmethod
    def mark_unavailable(self, model: str, until: float, reason: str) -> None:
        """Refuse every demand for ``model`` (a model on one key) until ``until``.

        A retired or unknown model fails every call; ``until`` is when it is worth
        asking the vendor again, in case the refusal was a glitch.
        """

    @abstractmethod
    def make_available(self, model: str) -> None:
        """Lift a :meth:`mark_unavailable`."""

    @abstractmethod
    def holds(self, now: float) -> list[Hold]:
        """Every block, disabled key and unavailable model in force at ``now``,
        ordered by subject."""

    @abstractmethod
    def learn(self, pool: str, limit: Limit, now: float) -> None:
        """Record a limit the vendor stated for ``pool``, replacing one of the same
        metric and window, so every process sharing this ledger enforces it."""

    @abstractmethod
    def learned(self) -> list[LearnedLimit]:
        """Every limit learned from vendors' headers, in every pool."""

    @abstractmethod
    def usage(self, pool: str, limits: Sequence[Limit], now: float) -> list[LimitUsage]:
        """What each of ``limits`` has spent in ``pool`` at ``now`` (overdue leases
        released first)."""

    @abstractmethod
    def reset(self, pool: str) -> None:
        """Forget everything counted in ``pool`` and lift its block."""

    def close(self) -> None:
        """Release connections; the ledger reopens them if used again."""
        state = self.__dict__.pop("_worker_state", None)
        if state is not None and state[0] == os.getpid():
            state[1].shutdown(wait=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


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
            for limit, used in zip(limits, sums, strict=True):
                need = demand.amount(limit.metric)
                refusal = self._check(pool, limit, need, used, now)
                if refusal is not None:
                    record = full.note(refusal, self._first_lease(pool))
                    if record is not None:
                        self._set_hold(record)
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
            reservation = Reservation(pool, demand, tuple(entries.values()), now, tuple(levels))
            releases = reservation.releases()
            if releases:
                lease_id, expires_at = new_lease_id(), now + self.reservation_lease
                if self._add_lease(pool, lease_id, expires_at, releases):
                    reservation = Reservation(
                        pool,
                        demand,
                        reservation.entries,
                        now,
                        reservation.levels,
                        lease_id,
                        expires_at,
                    )
            self._maybe_prune(pool, limits, now)
        return reservation

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
        if need > limit.amount:
            why = f"needs {need} {limit.metric}, more than {limit} allows at all"
            return Refusal(pool, why, None, limit)
        if used + need <= limit.amount:
            return None
        lo, hi = limit.window.bucket_range(now)
        buckets = self._buckets(pool, limit.series, lo, hi)
        retry_at = limit.window.frees_at(now, buckets, used + need - limit.amount)
        room = max(0, limit.amount - used)
        return Refusal(pool, f"{limit} is used up ({used} counted)", retry_at, limit, room)

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
            local = limit.amount - self._sum(pool, limit.series, lo, hi)
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
            (h for h in found if h.active(now) and not _is_record(h.subject)),
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


def _is_record(subject: str) -> bool:
    """Whether a hold-shaped entry is a record (learned limit, full pool), not a hold."""
    return subject.startswith((LEARNED_PREFIX, FULL_PREFIX))


def learned_record(pool: str, limit: Limit, now: float) -> Hold:
    """A learned limit as the hold-shaped record ledgers keep it in."""
    return Hold(f"{LEARNED_PREFIX}{pool}{_LEARNED_SEP}{limit.series}", now, str(limit))


def learned_from(records: Sequence[Hold]) -> list[LearnedLimit]:
    """The learned limits among hold records."""
    found = []
    for record in records:
        if not record.subject.startswith(LEARNED_PREFIX):
            continue
        pool, _, _ = record.subject[len(LEARNED_PREFIX) :].rpartition(_LEARNED_SEP)
        try:
            limit = Limit.parse(record.reason)
        except ValueError:
            continue  # written by a newer version with a grammar this one lacks
        found.append(LearnedLimit(pool, limit, record.until or 0.0))
    return found


def _deltas(reservation: Reservation, counted: Demand, used: Demand) -> list[tuple[str, int, int]]:
    """``(series, bucket, delta)`` turning what is ``counted`` into what was ``used``."""
    deltas = [
        (series, bucket, used.amount(metric) - counted.amount(metric))
        for series, bucket, metric in reservation.entries
    ]
    return [d for d in deltas if d[2]]


def _take_back(ledger: Ledger, now: float, future: asyncio.Future[Reservation | Refusal]) -> None:
    """A reservation made for a caller that was cancelled meanwhile: undo it (in
    the worker thread, never on the loop)."""
    if future.cancelled() or future.exception() is not None:
        return
    made = future.result()
    if isinstance(made, Reservation):
        undo: Future[None] = ledger._worker().submit(ledger.settle, made, Demand(0, 0, 0), now)
        undo.add_done_callback(_ignore)


def _ignore(future: Future[None]) -> None:
    # A reservation that could not be taken back is released when its lease ends.
    future.exception()
