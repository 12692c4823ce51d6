"""Settlements that never cost the caller a paid answer.

The vendor has answered (and been paid) by the time a reservation is settled, so a
ledger that fails right then (Redis restarting, a locked or vanished SQLite file)
must not turn the answer into an error. :func:`settle` tries once in the caller's
thread; when the ledger fails it logs a warning saying how much is unsettled, and
one background thread retries a bounded number of times (about a minute in all).
If every retry fails, the reservation's lease still releases its unspent output
estimate when it runs out.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from langchain_quota_router.quota.errors import LedgerError
from langchain_quota_router.quota.ledger.contract import Ledger
from langchain_quota_router.quota.ledger.types import Demand, Reservation

logger = logging.getLogger("langchain_quota_router")

#: Seconds before each retry: about a minute in all, enough for a Redis restart.
RETRY_DELAYS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


def unsettled(reservation: Reservation, used: Demand) -> str:
    """How much a failed settlement leaves wrong, in words."""
    est = reservation.demand
    counted = est.input_tokens + est.output_tokens
    spent = used.input_tokens + used.output_tokens
    return (
        f"{est.requests} request(s) and {counted} tokens counted as estimated "
        f"where the call spent {used.requests} and {spent}"
    )


@dataclass(order=True)
class _Retry:
    due: float
    seq: int
    attempt: int = field(compare=False)
    ledger: Ledger = field(compare=False)
    reservation: Reservation = field(compare=False)
    used: Demand = field(compare=False)
    now: float = field(compare=False)


class Settler:
    """Settles reservations, retrying failed ones in one background thread.

    Args:
        delays: seconds before each retry; their number bounds the retries.
    """

    def __init__(self, delays: Sequence[float] = RETRY_DELAYS) -> None:
        self.delays = tuple(delays)
        self._queue: list[_Retry] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._busy = 0

    def settle(self, ledger: Ledger, reservation: Reservation, used: Demand, now: float) -> bool:
        """Settle now, or schedule retries and warn; never raise ``LedgerError``.

        Returns:
            Whether the settlement is done.
        """
        try:
            ledger.settle(reservation, used, now)
        except LedgerError as exc:
            self.failed(exc, ledger, reservation, used, now)
            return False
        return True

    async def asettle(
        self, ledger: Ledger, reservation: Reservation, used: Demand, now: float
    ) -> bool:
        """:meth:`settle` without blocking the event loop."""
        try:
            await ledger.asettle(reservation, used, now)
        except LedgerError as exc:
            self.failed(exc, ledger, reservation, used, now)
            return False
        return True

    def failed(
        self, exc: LedgerError, ledger: Ledger, reservation: Reservation, used: Demand, now: float
    ) -> None:
        """Warn, and retry in the background while retries are left."""
        if not self.delays:
            logger.warning(
                "could not settle a call in pool %r: %s (%s); the lease releases "
                "the output estimate when it runs out",
                reservation.pool,
                exc,
                unsettled(reservation, used),
            )
            return
        logger.warning(
            "could not settle a call in pool %r: %s; %s. Retrying in the "
            "background (up to %d times); the answer is kept",
            reservation.pool,
            exc,
            unsettled(reservation, used),
            len(self.delays),
        )
        self._schedule(_Retry(0.0, 0, 0, ledger, reservation, used, now))

    def _schedule(self, retry: _Retry) -> None:
        retry.due = time.monotonic() + self.delays[retry.attempt]
        retry.seq = next(self._seq)
        with self._cond:
            heapq.heappush(self._queue, retry)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._work, name="quota-router-settle", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue or self._queue[0].due > time.monotonic():
                    if not self._queue:
                        if not self._cond.wait(timeout=30.0) and not self._queue:
                            self._thread = None
                            return  # idle: the next failure starts a new thread
                    else:
                        self._cond.wait(timeout=self._queue[0].due - time.monotonic())
                retry = heapq.heappop(self._queue)
                self._busy += 1
            try:
                self._attempt(retry)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def _attempt(self, retry: _Retry) -> None:
        try:
            retry.ledger.settle_now(retry.reservation, retry.used, retry.now)
        except LedgerError as exc:
            retry.attempt += 1
            if retry.attempt < len(self.delays):
                self._schedule(retry)
                return
            logger.error(
                "gave up settling a call in pool %r after %d retries (%s): %s; the lease "
                "releases the output estimate when it runs out",
                retry.reservation.pool,
                len(self.delays),
                exc,
                unsettled(retry.reservation, retry.used),
            )
            return
        logger.info(
            "settled a call in pool %r on retry %d", retry.reservation.pool, retry.attempt + 1
        )

    @property
    def pending(self) -> int:
        """Settlements waiting for a retry (or being retried)."""
        with self._cond:
            return len(self._queue) + self._busy

    def join(self, timeout: float) -> bool:
        """Wait until no settlement is pending; whether that happened in time."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(timeout=min(left, 0.05))
            return True


#: The process's settler: the routing core settles through it.
SETTLER = Settler()


def settle(ledger: Ledger, reservation: Reservation, used: Demand, now: float) -> bool:
    """:meth:`Settler.settle` on the process's settler."""
    return SETTLER.settle(ledger, reservation, used, now)


async def asettle(ledger: Ledger, reservation: Reservation, used: Demand, now: float) -> bool:
    """:meth:`Settler.asettle` on the process's settler."""
    return await SETTLER.asettle(ledger, reservation, used, now)
