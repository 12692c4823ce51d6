"""Each pool's limits (configured, learned from vendors, from the catalog) and each
pool's room as last seen (what ``strategy="spread"`` orders by)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from langchain_quota_router.quota.errors import ConfigurationError
from langchain_quota_router.quota.headers import RateLimitHeader, header_window
from langchain_quota_router.quota.ledger import LearnedLimit, Ledger, LimitUsage
from langchain_quota_router.quota.limits import Limit

__all__ = ["PoolLimits", "Probe", "RoomBoard"]

logger = logging.getLogger("langchain_quota_router")


class Probe:
    """The first call on a pool whose limits are provisional: the one call out,
    and the calls waiting for its answer (threads on :attr:`done`, event loops on
    futures)."""

    __slots__ = ("done", "started", "waiters")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.started = time.monotonic()
        self.waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def finish(self) -> None:
        """Wake every waiter, in any thread or event loop."""
        self.done.set()
        for loop, future in self.waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_wake, future)
        self.waiters.clear()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class PoolLimits:
    """Each pool's limits: configured, taken from the catalog, or learned from vendors.

    The order of authority: what the user configured, then what the vendor's headers
    state (learned limits, kept in the ledger so every process enforces them), then
    the catalog's figures.

    Some catalog figures are only a guess (``provisional``: the key's tier is not
    known). Such a figure must not refuse calls the vendor would take, so until a
    pool's first answer has been read, one call at a time goes out (see
    :meth:`take_probe`); what the vendor's headers then state replaces the
    provisional figure of the same metric and window, and a stated limit larger
    than the provisional one (the key is on a higher tier) drops every provisional
    figure of the pool. Figures no header speaks of stand.
    """

    def __init__(
        self,
        ledger: Ledger,
        pools: Mapping[str, tuple[Limit, ...]],
        configured: Mapping[str, tuple[Limit, ...]],
        provisional: Mapping[str, tuple[Limit, ...]] | None = None,
    ) -> None:
        self.ledger = ledger
        #: pool -> the limits enforced now; read on every call, replaced (not
        #: mutated) when a limit is learned, so readers never see a half update.
        self.current: dict[str, tuple[Limit, ...]] = dict(pools)
        #: pool -> the limits it was given (configured or the catalog's).
        self._given = {pool: frozenset(limits) for pool, limits in pools.items()}
        self._configured = {pool: configured.get(pool, ()) for pool in pools}
        self._read_at = -math.inf
        self._lock = threading.Lock()
        #: pool -> its provisional limits still enforced.
        self._provisional: dict[str, frozenset[Limit]] = {
            pool: frozenset(limits)
            for pool, limits in (provisional or {}).items()
            if limits and pool in self.current and not configured.get(pool)
        }
        #: pool -> its provisional limits as first given (the tier guessed).
        self._guessed = dict(self._provisional)
        #: Pools with provisional limits whose first answer has not been read.
        self._untested: set[str] = set(self._provisional)
        self._probes: dict[str, Probe] = {}

    def untested(self, pool: str) -> bool:
        """Whether ``pool``'s limits are provisional and no answer has tested them."""
        return pool in self._untested

    def provisional(self, pool: str) -> tuple[Limit, ...]:
        """``pool``'s provisional limits still enforced."""
        return tuple(self._provisional.get(pool, ()))

    def take_probe(self, pool: str, *, stale_after: float) -> tuple[bool, Probe | None]:
        """Ask to send the first call on an untested pool.

        Returns ``(True, probe)``: send it, then :meth:`end_probe`; ``(False,
        probe)``: another call is out, wait on ``probe`` (then read the limits
        again); ``(False, None)``: the pool is tested, go ahead. A probe out longer
        than ``stale_after`` s (its caller never said how it ended) is taken over.
        """
        if pool not in self._untested:
            return False, None
        with self._lock:
            if pool not in self._untested:
                return False, None
            probe = self._probes.get(pool)
            if probe is not None and time.monotonic() - probe.started < stale_after:
                return False, probe
            if probe is not None:
                probe.finish()
            self._probes[pool] = probe = Probe()
            return True, probe

    def end_probe(self, pool: str, probe: Probe, *, tested: bool) -> None:
        """The first call on ``pool`` ended; ``tested``: its answer was read (headers
        or none), so the limits now stand as they are. Wakes the waiting calls."""
        with self._lock:
            if tested:
                self._untested.discard(pool)
            if self._probes.get(pool) is probe:
                del self._probes[pool]
        probe.finish()

    def add_waiter(self, probe: Probe, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """A future that ``probe``'s end completes, for a call waiting in ``loop``."""
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if probe.done.is_set():
                future.set_result(None)
            else:
                probe.waiters.append((loop, future))
        return future

    def __getitem__(self, pool: str) -> tuple[Limit, ...]:
        return self.current[pool]

    def is_configured(self, pool: str, limit: Limit) -> bool:
        """Whether ``limit`` was given explicitly for ``pool``: it always wins."""
        return limit in self._configured.get(pool, ())

    def is_learned(self, pool: str, limit: Limit) -> bool:
        """Whether ``limit`` is in force in ``pool`` because a vendor's headers
        stated it (it was not one of the limits the pool was given)."""
        return limit not in self._given.get(pool, ())

    def learned(self) -> list[LearnedLimit]:
        """The learned limits of these pools, as the ledger keeps them."""
        return [x for x in self.ledger.learned() if x.pool in self._configured]

    def due(self, now: float, *, every: float = 60.0) -> bool:
        """Whether :meth:`refresh` would read the ledger."""
        return now - self._read_at >= every

    def refresh(self, now: float, *, every: float = 60.0) -> None:
        """Take in limits other processes learned, at most once per ``every`` s."""
        if not self.due(now, every=every):
            return
        self._read_at = now
        for learned in self.learned():
            self._adopt(learned.pool, learned.limit)

    def learn(self, member: Any, seen: RateLimitHeader, now: float) -> Limit | None:
        """Turn a vendor's rate-limit header into a limit of the route's pool.

        Returns the limit to observe the header against: a configured limit of the
        same metric and window when there is one (it wins over what the vendor
        says), else the learned limit, now recorded in the ledger.
        """
        if seen.limit is None:
            return None
        window = header_window(seen, member.provider)
        noun = "" if seen.metric == "requests" else " tokens"
        try:
            limit = Limit.parse(f"{seen.limit}{noun}/{window}")
        except ConfigurationError:
            return None
        for configured in self._configured.get(member.pool, ()):
            if configured.series == limit.series:
                return configured
        if limit not in self.current.get(member.pool, ()):
            self.ledger.learn(member.pool, limit, now)
            logger.info("%s: learned %s from the vendor's headers", member.name, limit)
        self._adopt(member.pool, limit)
        return limit

    def _adopt(self, pool: str, limit: Limit) -> None:
        """Enforce a learned limit in ``pool``, replacing an older learned one or a
        catalog figure of the same metric and window (and, where the pool's limits
        were provisional and the vendor allows more, every provisional figure)."""
        configured = self._configured.get(pool)
        if configured is None or any(c.series == limit.series for c in configured):
            return
        with self._lock:
            # A limit the vendor states tests the pool, whoever read it.
            self._untested.discard(pool)
            current = self.current.get(pool, ())
            provisional = self._provisional.get(pool, frozenset())
            if limit in current and not provisional:
                return
            if limit in current:
                dropped = frozenset(c for c in provisional if c.series == limit.series)
            elif provisional and any(
                c.series == limit.series and c.amount < limit.amount
                for c in self._guessed.get(pool, ())
            ):
                # The key allows more than the tier the figures guessed: none of
                # that tier's figures is the key's.
                dropped = provisional
            else:
                dropped = frozenset(c for c in provisional if c.series == limit.series)
            if dropped:
                self._provisional[pool] = provisional - dropped
                logger.info(
                    "pool %s: provisional catalog limits %s give way to the vendor's %s",
                    pool,
                    ", ".join(sorted(str(d) for d in dropped)),
                    limit,
                )
            kept = tuple(c for c in current if c.series != limit.series and c not in dropped)
            self.current[pool] = (*kept, limit)


class RoomBoard:
    """What share of its tightest limit each pool has left, as last seen: what
    ``strategy="spread"`` orders routes by, without reading every pool per call.

    Kept up to date by every reservation (its levels are the pool's usage at that
    moment) and refusal (no room); besides, each call re-reads the one pool seen
    longest ago, if that was more than :attr:`stale_after` seconds ago, so pools
    that only other processes use, or whose windows slid, are not judged on old
    figures. The first call reads every pool. It only orders routes: admission is
    always the ledger's.

    Args:
        pools: every pool, in the order of their best route's priority (ties
            between equal shares go to the first).
    """

    stale_after: ClassVar[float] = 1.0

    def __init__(self, pools: Iterable[str]) -> None:
        self.shares: dict[str, float] = dict.fromkeys(pools, 1.0)
        # pool -> monotonic time last seen, oldest first.
        self._seen: OrderedDict[str, float] = OrderedDict()

    def room(self, pool: str) -> float:
        return self.shares.get(pool, 1.0)

    def best(self) -> str | None:
        """The pool with the largest share left (the first of equals)."""
        shares = self.shares
        return max(shares, key=shares.__getitem__) if shares else None

    def _set(self, pool: str, share: float) -> None:
        if pool in self.shares:
            self.shares[pool] = share
            self._seen[pool] = time.monotonic()
            self._seen.move_to_end(pool)

    def note(self, pool: str, levels: Sequence[tuple[Limit, int]]) -> None:
        """A reservation's levels: ``(limit, used)`` counting it."""
        shares = [(lim.units - used) / lim.units for lim, used in levels if lim.units > 0]
        self._set(pool, max(0.0, min(shares)) if shares else 1.0)

    def full(self, pool: str) -> None:
        self._set(pool, 0.0)

    def usage(self, pool: str, usage: Sequence[LimitUsage]) -> None:
        self.note(pool, [(u.limit, u.used) for u in usage])

    def to_read(self) -> list[str]:
        """The pools to read for this call: every one never seen (the first call
        reads them all), else the one seen longest ago if that is more than
        :attr:`stale_after` s ago."""
        if len(self._seen) < len(self.shares):
            return [pool for pool in self.shares if pool not in self._seen]
        pool, when = next(iter(self._seen.items()))
        return [pool] if when < time.monotonic() - self.stale_after else []
