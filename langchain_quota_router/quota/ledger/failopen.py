"""A ledger that fails open: a shared primary, and this process's own slices while it is away.

``redis://host/0?on_error=local`` is a :class:`FailOpenLedger` over the Redis ledger.
While the primary answers, every operation goes there. When it fails (a
:class:`~langchain_quota_router.LedgerError`), the wrapper logs one warning and
admits on its own until the primary answers again (tried again at most every
``retry_interval`` seconds), so calls keep flowing during an outage, and the fleet
still never admits more than a limit:

- **Only quota it already holds.** While the primary answers, the process holds a
  *slice* of each pool it uses: quota reserved in the primary like any call (a
  share, ``outage_share``, default 1/8, of the room each limit has left; taken
  again every ``slice_refresh`` seconds, given back when the primary refuses a
  call so the process never starves itself). A slice is counted in the shared
  ledger, so every other process already sees it as spent. During an outage the
  process admits only from its slices, so the fleet's total is what the primary
  counted, slices included: never more than the limit, however many processes
  there are, however they started and whatever heartbeat says. A pool it holds
  no slice of (never seen while the primary answered, or too full to share)
  admits nothing. A slice serves only while it still counts in the shared
  ledger: for a sliding window, until its bucket leaves the window.
- **Handed back before anything else.** When the primary answers again, the
  process's first act is to hand back each slice it admitted from: one atomic
  step releases the slice and counts each call it admitted (the real spend if the
  call is settled, else its estimate, corrected when it settles) at the moment it
  was admitted. Until then the slice stands for those calls, so a process that
  comes back earlier never sees their room as free: no staggered over-admission.
- **A journal outlives the process.** Slices taken and calls admitted from them are
  appended to a journal file of this process (in the user's state directory, or
  ``?journal=<folder>``; pool names, buckets, amounts and ids, nothing secret).
  A process that ends before the primary answers again leaves it; the next process
  (or this program started again) that reaches the primary hands back what it
  lists. The shared ledger remembers each slice's hand-back, so a journal read
  twice counts once. A process that ends normally hands its slices back itself.
- **Never counted twice.** A reserve that failed on the primary may still have run
  there (a timeout after the server got it). Its id is kept and, once the primary
  answers, the primary takes it back if it holds it (``cancel``); the call was
  counted from the slice instead.

Why slices, not shares of a fleet size: any share computed during an outage (from
a heartbeat, or a fleet size read at connect) is a guess about processes that may
have started or stopped since, and their local admissions reach the shared ledger
at different moments. Quota reserved while the ledger answered is a fact every
process already counts. What it costs: while the primary answers, up to
``outage_share`` of a pool's room is held by each process and not available to
others until its refresh (or until its holder is refused and gives it back), and a
process killed with ``kill -9`` holds its slice until its journal is read by the
next process started (or the window ends).

URL options (with ``on_error=local``): ``retry_interval=5`` (seconds),
``outage_share=0.125`` (a fraction in (0, 1]), ``journal=<folder>``.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import platformdirs

from langchain_quota_router.quota.errors import ConfigurationError, LedgerError
from langchain_quota_router.quota.ledger.contract import Ledger
from langchain_quota_router.quota.ledger.fleet import FleetStore
from langchain_quota_router.quota.ledger.full import FullPools
from langchain_quota_router.quota.ledger.journal import Journal, demand_list
from langchain_quota_router.quota.ledger.memory import MemoryLedger
from langchain_quota_router.quota.ledger.types import (
    Demand,
    Hold,
    LearnedLimit,
    LimitUsage,
    Refusal,
    Reservation,
    new_lease_id,
)
from langchain_quota_router.quota.limits import Limit, Metric

logger = logging.getLogger("langchain_quota_router")

_T = TypeVar("_T")
RETRY_INTERVAL = 5.0
#: The share of each limit's remaining room a process holds as its slice.
DEFAULT_SHARE = 1 / 8
#: Seconds between two slices of one pool (the old one is given back first).
SLICE_REFRESH = 30.0
_APP = "langchain-quota-router"
#: Every fail-open ledger of this process: their slices are handed back at exit.
_LIVE: weakref.WeakSet[FailOpenLedger] = weakref.WeakSet()


@atexit.register
def _hand_back_at_exit() -> None:
    for ledger in list(_LIVE):
        with contextlib.suppress(Exception):
            ledger.hand_back_all()


def journal_folder(url: str) -> Path:
    """Where the journals of the fail-open ledgers over ``url`` (redacted) live."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return Path(platformdirs.user_state_dir(_APP)) / "failopen" / digest


@dataclass
class _Call:
    """A call admitted from a slice during an outage."""

    reservation: Reservation
    used: Demand | None = None

    @property
    def spent(self) -> Demand:
        return self.used if self.used is not None else self.reservation.demand


@dataclass
class _Slice:
    """Quota this process reserved in the primary to admit from during an outage."""

    reservation: Reservation
    #: On the caller's clock: from then on it no longer counts in every window.
    until: float
    #: Monotonic time it was taken.
    taken: float
    calls: dict[str, _Call] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.reservation.lease_id

    def held(self, metric: Metric) -> int:
        """What of ``metric`` it holds that no call has spent yet."""
        spent = sum(call.spent.amount(metric) for call in self.calls.values())
        return self.reservation.demand.amount(metric) - spent

    def adds(self) -> list[tuple[str, int, int]]:
        """``(series, bucket, amount)`` that release it and count its calls."""
        demand = self.reservation.demand
        found = [(s, b, -demand.amount(m)) for s, b, m in self.reservation.entries]
        for call in self.calls.values():
            found += [(s, b, call.spent.amount(m)) for s, b, m in call.reservation.entries]
        return [(s, b, a) for s, b, a in found if a]

    def event(self) -> dict[str, Any]:
        r = self.reservation
        return {
            "e": "slice",
            "id": r.lease_id,
            "pool": r.pool,
            "entries": [list(e) for e in r.entries],
            "demand": demand_list(r.demand),
        }


def _slice_until(limits: Sequence[Limit], now: float) -> float:
    """Until when a slice taken at ``now`` counts in every one of ``limits``."""
    until = math.inf
    for limit in limits:
        window = limit.window
        if window.kind == "sliding":
            until = min(until, now + window.seconds - window.bucket_width)
        elif window.kind == "calendar":
            until = min(until, window.bounds(now)[1])
    return until


class FailOpenLedger(Ledger):
    """Counts in ``primary``; from this process's slices while it does not answer.

    Args:
        primary: the shared ledger (typically Redis; slices need its
            ``reserve_slice`` and ``hand_back``).
        fallback: keeps holds set during an outage, and a local count of what was
            admitted then (default: this process's memory).
        retry_interval: seconds between attempts to reach the primary again.
        outage_share: the share of each limit's remaining room held as a slice
            (default 1/8).
        journal: the folder of the journals (default: per ledger URL, in the
            user's state directory).
        slice_refresh: seconds between two slices of a pool.
    """

    scheme = "failopen"

    def __init__(
        self,
        primary: Ledger,
        fallback: Ledger | None = None,
        *,
        retry_interval: float = RETRY_INTERVAL,
        outage_share: float | None = None,
        journal: str | os.PathLike[str] | None = None,
        slice_refresh: float = SLICE_REFRESH,
    ) -> None:
        if not retry_interval >= 0 or math.isinf(retry_interval):
            msg = f"retry_interval must be a number of seconds >= 0, got {retry_interval!r}"
            raise ConfigurationError(msg)
        if outage_share is not None and not 0 < outage_share <= 1:
            msg = f"outage_share must be a fraction in (0, 1], got {outage_share!r}"
            raise ConfigurationError(msg)
        self.primary = primary
        self.fallback = fallback if fallback is not None else MemoryLedger()
        self.retry_interval = retry_interval
        self.outage_share = outage_share
        self.slice_refresh = slice_refresh
        self.url = primary.url
        self.journal = Journal(Path(journal) if journal else journal_folder(primary.url))
        self._lock = threading.RLock()
        self._slice_lock = threading.Lock()
        # While the primary is away: the monotonic time of the next try.
        self._next_try: float | None = None
        # pool -> the slice this process holds in the primary.
        self._slices: dict[str, _Slice] = {}
        # pool -> monotonic time before which no slice is taken (it was refused).
        self._no_slice_until: dict[str, float] = {}
        # Calls handed back with their estimate, not settled yet: lease id -> call.
        self._estimated: dict[str, Reservation] = {}
        # Corrections to hand to the primary: (reservation, used - estimate).
        self._pending: list[tuple[Reservation, Demand]] = []
        # Reserves that failed on the primary and may have run there.
        self._phantoms: list[Reservation] = []
        # Whether the journals of gone processes were looked for since the
        # primary last answered again.
        self._adopted = False
        self._pid = os.getpid()
        self._last_now = time.time()
        self._no_full = FullPools(shared=False)
        _LIVE.add(self)

    @property
    def reservation_lease(self) -> float:
        return self.primary.reservation_lease

    @reservation_lease.setter
    def reservation_lease(self, seconds: float) -> None:
        self.primary.reservation_lease = seconds
        self.fallback.reservation_lease = seconds

    @property
    def away(self) -> bool:
        """Whether the primary is taken for away (admitting from slices)."""
        return self._next_try is not None

    @property
    def share(self) -> float:
        """The share of each limit's remaining room held as a slice."""
        return self.outage_share if self.outage_share is not None else DEFAULT_SHARE

    def slice_of(self, pool: str) -> Demand | None:
        """What this process holds of ``pool`` to admit from during an outage
        (None: nothing), less what it admitted from it."""
        with self._lock:
            held = self._slices.get(pool)
            if held is None:
                return None
            return Demand(held.held("requests"), held.held("input_tokens"), 0)

    # -------------------------------------------------------------- plumbing

    def _forked(self) -> None:
        """A forked child holds none of its parent's slices (the parent does)."""
        if self._pid != os.getpid():
            with self._lock:
                self._pid = os.getpid()
                self._slices = {}
                self._estimated = {}
                self._pending = []
                self._phantoms = []

    def _run(self, operation: Callable[[Ledger], _T]) -> tuple[_T, bool]:
        """Run ``operation`` on the primary or, failing open, on the fallback.

        Returns:
            The result and whether the fallback served it.
        """
        self._forked()
        if self._next_try is not None:
            with self._lock:
                waiting = self._next_try is not None and time.monotonic() < self._next_try
                if self._next_try is not None and not waiting:
                    # This caller tries the primary again; others stay local meanwhile.
                    self._next_try = time.monotonic() + self.retry_interval
            if waiting:
                return operation(self.fallback), True
            # What was admitted here goes back first, so the operation sees it.
            if not self._hand_back():
                return operation(self.fallback), True
        elif not self._adopted and not self._adopt():
            return operation(self.fallback), True
        try:
            value = operation(self.primary)
        except LedgerError as exc:
            self._went_away(exc)
            return operation(self.fallback), True
        if self._next_try is not None:
            with self._lock:
                back, self._next_try = self._next_try is not None, None
            if back:
                logger.info("ledger %s answers again; counting there", self.url)
        return value, False

    def _went_away(self, exc: LedgerError) -> None:
        with self._lock:
            first = self._next_try is None
            self._next_try = time.monotonic() + self.retry_interval
            self._adopted = False
        if first:
            logger.warning(
                "%s; admitting only from the quota this process holds (on_error=local) "
                "until it answers again",
                exc,
            )

    def _hand_back(self) -> bool:
        """Give the primary what was admitted here, take back phantom reserves and
        hand back the journals of gone processes.

        Returns:
            False if the primary failed (it is taken for away again).
        """
        with self._lock:
            pending, self._pending = self._pending, []
            phantoms, self._phantoms = self._phantoms, []
        cancel = getattr(self.primary, "cancel", None)
        try:
            # The slices first: until they are back, nothing else should run there.
            self._hand_back_slices(only_used=True)
            while phantoms:
                if cancel is not None:
                    cancel(phantoms[0], phantoms[0].at)
                phantoms.pop(0)
            while pending:
                reservation, used = pending[0]
                self.primary.record(reservation, used, reservation.at)
                pending.pop(0)
        except LedgerError as exc:
            with self._lock:
                self._pending[:0] = pending
                self._phantoms[:0] = phantoms
            self._went_away(exc)
            return False
        return self._adopt()

    def _hand_back_slices(self, *, only_used: bool) -> None:
        """Hand back the slices admitted from (``only_used``), or all of them."""
        if not hasattr(self.primary, "hand_back"):
            return
        with self._lock:
            chosen = [s for s in self._slices.values() if s.calls or not only_used]
        for held in chosen:
            self._release(held)
        if chosen:
            self._compact()

    def _compact(self) -> None:
        with self._lock:
            events = []
            for held in self._slices.values():
                events.append(held.event())
                events += [_call_event(held.id, c) for c in held.calls.values()]
        self.journal.rewrite(events)

    def _adopt(self) -> bool:
        """Hand back what the journals of gone processes list (once per recovery).

        Returns:
            False if the primary failed (it is taken for away).
        """
        hand_back = getattr(self.primary, "hand_back", None)
        if hand_back is None:
            self._adopted = True
            return True
        try:
            for path, orphans in self.journal.orphans():
                for orphan in orphans:
                    hand_back(orphan.pool, orphan.id, orphan.adds(), self._last_now)
                self.journal.forget(path)
        except LedgerError as exc:
            self._went_away(exc)
            return False
        self._adopted = True
        return True

    def hand_back_all(self) -> None:
        """Give every slice back to the primary (at exit; if it does not answer, the
        journal keeps them for the next process)."""
        if self._pid != os.getpid() or self.away:
            return
        with contextlib.suppress(LedgerError):
            self._hand_back_slices(only_used=False)

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
        self._last_now = now

        def operation(ledger: Ledger) -> Reservation | Refusal:
            if ledger is not self.primary:
                return self._admit_here(pool, limits, demand, now, key, model)
            made = self._reserve_there(pool, limits, demand, now, key, model)
            if isinstance(made, Refusal) and made.limit is not None:
                # The pool is full, perhaps with our own slice: that is this
                # process's quota, so admit from it (already counted, so exact),
                # and take no other slice for a while.
                with self._slice_lock:
                    self._no_slice_until[pool] = time.monotonic() + self.slice_refresh
                    held = self._slices.get(pool)
                    if held is not None:
                        taken = self._admit_from(held, limits, demand, now)
                        if isinstance(taken, Reservation):
                            return taken
                        # Too small: hand it back (its calls' real spend may free
                        # room too), and ask again without it.
                        self._release(held)
                        made = self._reserve_there(pool, limits, demand, now, key, model)
            return made

        result, served_here = self._run(operation)
        if isinstance(result, Reservation) and not served_here:
            result = self._keep_slice(pool, limits, result, now)
        return result

    def _reserve_there(
        self,
        pool: str,
        limits: Sequence[Limit],
        demand: Demand,
        now: float,
        key: str | None,
        model: str | None,
    ) -> Reservation | Refusal:
        if not hasattr(self.primary, "cancel"):
            return self.primary.reserve(pool, limits, demand, now, key=key, model=model)
        lease_id = new_lease_id()
        try:
            return self.primary.reserve(  # type: ignore[call-arg]
                pool, limits, demand, now, key=key, model=model, lease_id=lease_id
            )
        except LedgerError:
            self._phantom(pool, limits, demand, now, lease_id)
            raise

    def _release(self, held: _Slice) -> None:
        """Hand a slice back to the primary: release it and count the calls admitted
        from it, in one step (those not settled yet with their estimate, corrected
        when they settle)."""
        hand_back = getattr(self.primary, "hand_back")  # noqa: B009 - only with slices
        hand_back(held.reservation.pool, held.id, held.adds(), self._last_now)
        with self._lock:
            if self._slices.get(held.reservation.pool) is held:
                del self._slices[held.reservation.pool]
            for lease_id, call in held.calls.items():
                if call.used is None:
                    self._estimated[lease_id] = call.reservation
        self.journal.write({"e": "done", "slice": held.id})

    def _keep_slice(
        self, pool: str, limits: Sequence[Limit], made: Reservation, now: float
    ) -> Reservation:
        """Hold a fresh slice of ``pool`` if it is due; ``made`` with its levels
        counting what this process holds as not spent."""
        reserve_slice = getattr(self.primary, "reserve_slice", None)
        if reserve_slice is None or not made.levels:
            return made
        held = self._slices.get(pool)
        due = (
            held is None or time.monotonic() - held.taken >= self.slice_refresh or now >= held.until
        )
        if due and self._slice_lock.acquire(blocking=False):
            try:
                held = self._slices.get(pool)
                if time.monotonic() < self._no_slice_until.get(pool, -math.inf):
                    return made if held is None else self._unspent(made, held)
                size = self._slice_size(made.levels, held)
                try:
                    if held is not None:
                        self._release(held)
                        held = None
                    if size is not None:
                        taken = reserve_slice(pool, limits, size, now)
                        if isinstance(taken, Reservation):
                            held = _Slice(taken, _slice_until(limits, now), time.monotonic())
                            with self._lock:
                                self._slices[pool] = held
                            self.journal.write(held.event())
                except LedgerError as exc:
                    self._went_away(exc)
            finally:
                self._slice_lock.release()
        return made if held is None else self._unspent(made, held)

    @staticmethod
    def _unspent(made: Reservation, held: _Slice) -> Reservation:
        """``made`` with its levels counting what this process holds as not spent
        (the router's alerts read levels)."""
        levels = tuple((limit, used - held.held(limit.metric)) for limit, used in made.levels)
        return replace(made, levels=levels)

    def _slice_size(
        self, levels: Sequence[tuple[Limit, int]], held: _Slice | None
    ) -> Demand | None:
        """A share of the room each limit has (counting ``held`` as given back)."""
        requests: list[int] = []
        tokens: list[int] = []
        for limit, used in levels:
            if held is not None:
                used -= held.held(limit.metric)
            share = math.floor(self.share * max(0, limit.units - used))
            if limit.metric == "requests":
                requests.append(share)
            elif limit.metric in ("tokens", "input_tokens"):
                tokens.append(share)
            else:
                tokens.append(0)  # output_tokens: the slice holds none of them
        size = Demand(min(requests, default=0), min(tokens, default=0), 0)
        if (requests and size.requests == 0) or not (size.requests or size.input_tokens):
            return None
        return size

    def _admit_here(
        self,
        pool: str,
        limits: Sequence[Limit],
        demand: Demand,
        now: float,
        key: str | None,
        model: str | None,
    ) -> Reservation | Refusal:
        """Admit from this process's slice of ``pool`` (the primary is away)."""
        retry_at = now + self.retry_interval
        held = self._slices.get(pool)
        if held is None:
            why = (
                f"the ledger {self.url} does not answer and this process holds no quota "
                "of this pool to admit from (on_error=local)"
            )
            return Refusal(pool, why, retry_at)
        hold = self.fallback.reserve(pool, [], demand, now, key=key, model=model)
        if isinstance(hold, Refusal):
            return hold  # blocked or disabled during the outage
        if now >= held.until:
            why = f"the ledger {self.url} does not answer and this process's slice ran out"
            return Refusal(pool, why, retry_at)
        made = self._admit_from(held, limits, demand, now)
        if isinstance(made, Refusal):
            return replace(made, reason=f"the ledger {self.url} does not answer and {made.reason}")
        self.fallback.record(made, demand, now)  # so usage() shows it meanwhile
        return made

    def _admit_from(
        self, held: _Slice, limits: Sequence[Limit], demand: Demand, now: float
    ) -> Reservation | Refusal:
        """Admit ``demand`` from a slice if it has room (and journal it)."""
        pool = held.reservation.pool
        offset = getattr(self.primary, "_known_offset", lambda: 0.0)()
        with self._lock:
            for limit in limits:
                need = demand.amount(limit.metric)
                room = held.held(limit.metric)
                if need > room:
                    why = f"{limit}: this process's slice of it has {max(0, room)} left"
                    retry_at = now + self.retry_interval
                    return Refusal(pool, why, retry_at, limit, max(0, room))
            entries: dict[str, tuple[str, int, Metric]] = {}
            for limit in limits:
                series = limit.series
                bucket = limit.window.bucket(now + offset)
                entries.setdefault(series, (series, bucket, limit.metric))
            made = Reservation(pool, demand, tuple(entries.values()), now, lease_id=new_lease_id())
            held.calls[made.lease_id] = _Call(made)
        self.journal.write(_call_event(held.id, held.calls[made.lease_id]))
        return made

    def _phantom(
        self, pool: str, limits: Sequence[Limit], demand: Demand, now: float, lease_id: str
    ) -> None:
        entries: dict[str, tuple[str, int, Metric]] = {}
        for limit in limits:
            entries.setdefault(limit.series, (limit.series, limit.window.bucket(now), limit.metric))
        phantom = Reservation(pool, demand, tuple(entries.values()), now, lease_id=lease_id)
        with self._lock:
            self._phantoms.append(phantom)

    def _local_call(self, reservation: Reservation) -> tuple[_Slice, _Call] | None:
        with self._lock:
            for held in self._slices.values():
                call = held.calls.get(reservation.lease_id)
                if call is not None:
                    return held, call
        return None

    def _is_local(self, reservation: Reservation) -> bool:
        if not reservation.lease_id:
            return False
        with self._lock:
            if reservation.lease_id in self._estimated:
                return True
        return self._local_call(reservation) is not None

    def settle(self, reservation: Reservation, used: Demand, now: float) -> None:
        """Settle where the reservation was counted.

        A call admitted from a slice is settled in the slice (its real spend is
        what the hand-back counts); one already handed back with its estimate is
        corrected in the primary. One the primary admitted is settled there: if
        that fails, the ``LedgerError`` reaches the caller (the router retries it
        in the background).
        """
        found = self._local_call(reservation)
        if found is not None:
            _, call = found
            with self._lock:
                call.used = used
            self.journal.write(
                {"e": "used", "id": reservation.lease_id, "demand": demand_list(used)}
            )
            return
        with self._lock:
            estimated = self._estimated.pop(reservation.lease_id, None)
            if estimated is not None:
                correction = Demand(
                    used.requests - estimated.demand.requests,
                    used.input_tokens - estimated.demand.input_tokens,
                    used.output_tokens - estimated.demand.output_tokens,
                )
                self._pending.append((estimated, correction))
        if estimated is None:
            self.primary.settle(reservation, used, now)
        elif self._next_try is None:
            self._hand_back()

    def settle_now(self, reservation: Reservation, used: Demand, now: float) -> None:
        if not self._is_local(reservation):
            self.primary.settle_now(reservation, used, now)
            return
        self.settle(reservation, used, now)

    def record(self, reservation: Reservation, used: Demand, now: float) -> None:
        self._run(lambda ledger: ledger.record(reservation, used, now))

    def observe(self, pool: str, limit: Limit, remaining: int, now: float) -> None:
        def operation(ledger: Ledger) -> None:
            if ledger is self.primary:
                # The vendor's count knows nothing of our slice: give it back
                # first, so what remains is what the vendor says (a new one is
                # taken from that at the next call).
                with self._slice_lock:
                    held = self._slices.get(pool)
                    if held is not None and not held.calls:
                        self._release(held)
            ledger.observe(pool, limit, remaining, now)

        self._run(operation)

    def block(self, pool: str, until: float, reason: str) -> None:
        self._run(lambda ledger: ledger.block(pool, until, reason))

    def unblock(self, pool: str) -> None:
        self._run(lambda ledger: ledger.unblock(pool))

    def disable(self, key: str, reason: str) -> None:
        self._run(lambda ledger: ledger.disable(key, reason))

    def enable(self, key: str) -> None:
        self._run(lambda ledger: ledger.enable(key))

    def mark_unavailable(self, model: str, until: float, reason: str) -> None:
        self._run(lambda ledger: ledger.mark_unavailable(model, until, reason))

    def make_available(self, model: str) -> None:
        self._run(lambda ledger: ledger.make_available(model))

    def holds(self, now: float) -> list[Hold]:
        return self._run(lambda ledger: ledger.holds(now))[0]

    def learn(self, pool: str, limit: Limit, now: float) -> None:
        self._run(lambda ledger: ledger.learn(pool, limit, now))

    def learned(self) -> list[LearnedLimit]:
        return self._run(lambda ledger: ledger.learned())[0]

    def usage(self, pool: str, limits: Sequence[Limit], now: float) -> list[LimitUsage]:
        self._last_now = now
        report, served_here = self._run(lambda ledger: ledger.usage(pool, limits, now))
        held = self._slices.get(pool)
        if served_here or held is None:
            return report
        # What this process holds is not spent (others' slices are: they hold it).
        series = {s for s, _, _ in held.reservation.entries}
        return [
            replace(u, used=max(0, u.used - held.held(u.limit.metric)))
            if u.limit.series in series
            else u
            for u in report
        ]

    def reset(self, pool: str) -> None:
        self._run(lambda ledger: ledger.reset(pool))
        with self._lock:
            held = self._slices.pop(pool, None)
        if held is not None:
            self.journal.write({"e": "done", "slice": held.id})

    @property
    def full_pools(self) -> FullPools:
        # What the primary refused; during an outage, nothing is taken for full.
        return self._no_full if self.away else self.primary.full_pools

    def remembered(self, pool: str, demand: Demand, now: float) -> Refusal | None:
        # The primary remembers what it refused; the fallback's refusals are its own.
        return None if self.away else self.primary.remembered(pool, demand, now)

    def _new_fleet_store(self) -> FleetStore:
        # The fleet's counters are shared: they stay in the primary during an outage.
        return self.primary.fleet_store()

    def close(self) -> None:
        """Give the slices back (if the primary answers), release connections."""
        self.hand_back_all()
        super().close()
        self.primary.close()
        self.fallback.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.primary!r}, {self.fallback!r})"


def _call_event(slice_id: str, call: _Call) -> dict[str, Any]:
    r = call.reservation
    event: dict[str, Any] = {
        "e": "call",
        "slice": slice_id,
        "id": r.lease_id,
        "entries": [list(e) for e in r.entries],
        "demand": demand_list(r.demand),
    }
    return event
