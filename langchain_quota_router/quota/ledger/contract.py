"""The ledger's contract: what each pool has spent, what is reserved, and who is on hold.

``Ledger`` holds the public operations every ledger offers and the contract tests
check, and the async API every ledger gets from them (a worker thread per ledger,
so a ledger that waits never blocks the event loop). ``BucketLedger``
(:mod:`~langchain_quota_router.quota.ledger.buckets`) implements it once for memory
and SQLite; Redis, which cannot run Python inside its atomic step, implements it
with Lua scripts; ``FailOpenLedger`` wraps two ledgers.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar

from langchain_quota_router.quota.ledger.fleet import FleetStore
from langchain_quota_router.quota.ledger.full import FullPools
from langchain_quota_router.quota.ledger.types import (
    DEFAULT_LEASE,
    Demand,
    Hold,
    LearnedLimit,
    LimitUsage,
    Refusal,
    Reservation,
)
from langchain_quota_router.quota.limits import Limit

_T = TypeVar("_T")
_WORKER_LOCK = threading.Lock()
# Reentrant: a wrapper's store is its primary's, made while the wrapper's is.
_FLEET_LOCK = threading.RLock()


class WouldWait(Exception):  # noqa: N818 - a signal, not an error anyone sees
    """Raised by an operation tried without waiting (see :meth:`Ledger._inline`)
    that would have had to wait for a lock: nothing was done; run it where
    waiting is harmless."""


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
            future.add_done_callback(functools.partial(take_back, self, now))
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

    # ------------------------------------------------------------ fleet counters

    def fleet_store(self) -> FleetStore:
        """Where the routers counting in this ledger keep their fleet counters
        (see :mod:`~langchain_quota_router.quota.ledger.fleet`): beside the quota,
        in the backend's own storage. One store per ledger object, made on first
        use."""
        store: FleetStore | None = self.__dict__.get("_fleet_store")
        if store is None:
            with _FLEET_LOCK:
                store = self.__dict__.get("_fleet_store")
                if store is None:
                    store = self.__dict__["_fleet_store"] = self._new_fleet_store()
        return store

    @abstractmethod
    def _new_fleet_store(self) -> FleetStore:
        """A new store for this ledger's fleet counters (:meth:`fleet_store` keeps
        the one it gets)."""

    def close(self) -> None:
        """Release connections; the ledger reopens them if used again."""
        state = self.__dict__.pop("_worker_state", None)
        if state is not None and state[0] == os.getpid():
            state[1].shutdown(wait=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def take_back(ledger: Ledger, now: float, future: asyncio.Future[Reservation | Refusal]) -> None:
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
