"""A ledger that fails open: a shared primary, and a local fallback while it is away.

``redis://host/0?on_error=local`` is a :class:`FailOpenLedger` over the Redis ledger
and a ledger in this process's memory. While the primary answers, every operation
goes there. When it fails (a :class:`~langchain_quota_router.LedgerError`), the
wrapper logs one warning and serves from the fallback until the primary answers
again (tried again at most every ``retry_interval`` seconds), so calls keep flowing
during an outage, bounded:

- **A share of the room, not a fresh quota.** During an outage the fallback admits
  at most ``outage_share`` of what each limit had left when the primary last
  reported it (a pool never seen: of the whole limit). The default share is an even
  one over the processes sharing the primary (as many as the primary reports have
  been active in the last ten minutes; ``1/8`` when it cannot tell), so the fleet
  together stays within the room that was left. URL option ``outage_share=0.25``.
- **Handed back.** What the fallback admitted is added to the primary when it
  answers again (each call's real spend once settled; :meth:`Ledger.record`).
- **Never counted twice.** A reserve that failed on the primary may still have run
  there (a timeout after the server got it). Its id is kept and, once the primary
  answers, the primary takes it back if it holds it (``cancel``); the call was
  counted by the fallback instead.

URL options (with ``on_error=local``): ``retry_interval=5`` (seconds),
``outage_share`` (a fraction in (0, 1]).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TypeVar

from langchain_quota_router.quota.errors import ConfigurationError, LedgerError
from langchain_quota_router.quota.ledger.contract import Ledger
from langchain_quota_router.quota.ledger.fleet import FleetStore
from langchain_quota_router.quota.ledger.full import FullPools
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
#: The share of a pool's room one process takes during an outage when the primary
#: cannot say how many processes share it: a fleet of up to eight then stays within
#: the room that was left, and one process alone still gets an eighth of it.
DEFAULT_SHARE = 1 / 8


class FailOpenLedger(Ledger):
    """Counts in ``primary``; in ``fallback`` while the primary does not answer.

    Args:
        primary: the shared ledger (typically Redis).
        fallback: where to count during an outage (default: this process's memory).
        retry_interval: seconds between attempts to reach the primary again.
        outage_share: the share of each limit's remaining room this process may
            admit during an outage; ``None``: an even share over the processes the
            primary reports (see the module docs).
    """

    scheme = "failopen"

    def __init__(
        self,
        primary: Ledger,
        fallback: Ledger | None = None,
        *,
        retry_interval: float = RETRY_INTERVAL,
        outage_share: float | None = None,
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
        self.url = primary.url
        self._lock = threading.Lock()
        # While the primary is away: the monotonic time of the next try.
        self._next_try: float | None = None
        # Lease ids of the reservations the fallback admitted, still open.
        self._local: set[str] = set()
        # What to hand to the primary when it answers: (reservation, used).
        self._pending: list[tuple[Reservation, Demand]] = []
        # Reserves that failed on the primary and may have run there.
        self._phantoms: list[Reservation] = []
        # pool -> series -> (limit amount, used) as the primary last reported.
        self._seen: dict[str, dict[str, tuple[int, int]]] = {}
        self._no_full = FullPools(shared=False)

    @property
    def reservation_lease(self) -> float:
        return self.primary.reservation_lease

    @reservation_lease.setter
    def reservation_lease(self, seconds: float) -> None:
        self.primary.reservation_lease = seconds
        self.fallback.reservation_lease = seconds

    @property
    def away(self) -> bool:
        """Whether the primary is taken for away (the fallback serves)."""
        return self._next_try is not None

    # -------------------------------------------------------------- plumbing

    def _run(self, operation: Callable[[Ledger], _T]) -> tuple[_T, bool]:
        """Run ``operation`` on the primary or, failing open, on the fallback.

        Returns:
            The result and whether the fallback served it.
        """
        if self._next_try is not None:
            with self._lock:
                waiting = self._next_try is not None and time.monotonic() < self._next_try
                if self._next_try is not None and not waiting:
                    # This caller tries the primary again; others stay local meanwhile.
                    self._next_try = time.monotonic() + self.retry_interval
            if waiting:
                return operation(self.fallback), True
            # What was counted here goes back first, so the operation sees it.
            if not self._hand_back():
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
        if first:
            logger.warning(
                "%s; counting in this process until it answers again (on_error=local), "
                "admitting at most %s of each pool's remaining room",
                exc,
                "an even share" if self.outage_share is None else f"{self.outage_share:.0%}",
            )

    def _hand_back(self) -> bool:
        """Give the primary what was counted locally and take back phantom reserves.

        Returns:
            False if the primary failed (it is taken for away again).
        """
        with self._lock:
            pending, self._pending = self._pending, []
            phantoms, self._phantoms = self._phantoms, []
        cancel = getattr(self.primary, "cancel", None)
        try:
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
        return True

    def _share(self) -> float:
        if self.outage_share is not None:
            return self.outage_share
        fleet = getattr(self.primary, "fleet_size", None)
        seen = fleet() if callable(fleet) else None
        return 1 / seen if isinstance(seen, int) and seen > 0 else DEFAULT_SHARE

    def _note(self, pool: str, levels: Sequence[tuple[Limit, int]]) -> None:
        seen = self._seen.setdefault(pool, {})
        for limit, used in levels:
            seen[limit.series] = (limit.units, used)

    def _outage_limits(self, pool: str, limits: Sequence[Limit]) -> list[Limit]:
        """The limits the fallback enforces: a share of the room last seen."""
        share = self._share()
        seen = self._seen.get(pool, {})
        scaled = []
        for limit in limits:
            units, used = seen.get(limit.series, (limit.units, 0))
            room = max(0, min(limit.units, units) - used)
            scaled.append(replace(limit, amount=limit.shown(math.floor(share * room))))
        return scaled

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
        lease_id = new_lease_id()
        takes_id = hasattr(self.primary, "cancel")

        def operation(ledger: Ledger) -> Reservation | Refusal:
            if ledger is self.primary:
                try:
                    if takes_id:
                        return ledger.reserve(  # type: ignore[call-arg]
                            pool, limits, demand, now, key=key, model=model, lease_id=lease_id
                        )
                    return ledger.reserve(pool, limits, demand, now, key=key, model=model)
                except LedgerError:
                    if takes_id:
                        self._phantom(pool, limits, demand, now, lease_id)
                    raise
            local = self._outage_limits(pool, limits)
            return ledger.reserve(pool, local, demand, now, key=key, model=model)

        result, served_locally = self._run(operation)
        if isinstance(result, Reservation):
            if served_locally:
                # Levels against the shared limits, not the local share.
                result = replace(result, levels=())
                with self._lock:
                    self._local.add(result.lease_id or f"id:{id(result)}")
            elif result.levels:
                self._note(pool, result.levels)
        return result

    def _phantom(
        self, pool: str, limits: Sequence[Limit], demand: Demand, now: float, lease_id: str
    ) -> None:
        entries: dict[str, tuple[str, int, Metric]] = {}
        for limit in limits:
            entries.setdefault(limit.series, (limit.series, limit.window.bucket(now), limit.metric))
        phantom = Reservation(pool, demand, tuple(entries.values()), now, lease_id=lease_id)
        with self._lock:
            self._phantoms.append(phantom)

    def _is_local(self, reservation: Reservation) -> bool:
        mark = reservation.lease_id or f"id:{id(reservation)}"
        with self._lock:
            return mark in self._local

    def settle(self, reservation: Reservation, used: Demand, now: float) -> None:
        """Settle where the reservation was counted.

        One the fallback admitted is settled there, and its real spend is handed
        to the primary (at once if it answers, else when it does). One the primary
        admitted is settled there: if that fails, the ``LedgerError`` reaches the
        caller (the router retries it in the background), never the fallback,
        which never counted it.
        """
        if not self._is_local(reservation):
            self.primary.settle(reservation, used, now)
            return
        self.fallback.settle(reservation, used, now)
        with self._lock:
            self._local.discard(reservation.lease_id or f"id:{id(reservation)}")
            self._pending.append((reservation, used))
        if self._next_try is None:
            self._hand_back()

    def settle_now(self, reservation: Reservation, used: Demand, now: float) -> None:
        if not self._is_local(reservation):
            self.primary.settle_now(reservation, used, now)
            return
        self.settle(reservation, used, now)

    def record(self, reservation: Reservation, used: Demand, now: float) -> None:
        self._run(lambda ledger: ledger.record(reservation, used, now))

    def observe(self, pool: str, limit: Limit, remaining: int, now: float) -> None:
        self._run(lambda ledger: ledger.observe(pool, limit, remaining, now))

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
        report, served_locally = self._run(lambda ledger: ledger.usage(pool, limits, now))
        if not served_locally:
            self._note(pool, [(u.limit, u.used) for u in report])
        return report

    def reset(self, pool: str) -> None:
        self._run(lambda ledger: ledger.reset(pool))
        self._seen.pop(pool, None)

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
        super().close()
        self.primary.close()
        self.fallback.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.primary!r}, {self.fallback!r})"
