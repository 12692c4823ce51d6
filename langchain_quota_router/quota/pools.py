"""Each pool's limits (configured, learned from vendors, from the catalog) and each
pool's room as last seen (what ``strategy="spread"`` orders by)."""

from __future__ import annotations

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

__all__ = ["PoolLimits", "RoomBoard"]

logger = logging.getLogger("langchain_quota_router")


class PoolLimits:
    """Each pool's limits: configured, taken from the catalog, or learned from vendors.

    The order of authority: what the user configured, then what the vendor's headers
    state (learned limits, kept in the ledger so every process enforces them), then
    the catalog's figures.
    """

    def __init__(
        self,
        ledger: Ledger,
        pools: Mapping[str, tuple[Limit, ...]],
        configured: Mapping[str, tuple[Limit, ...]],
    ) -> None:
        self.ledger = ledger
        #: pool -> the limits enforced now; read on every call, replaced (not
        #: mutated) when a limit is learned, so readers never see a half update.
        self.current: dict[str, tuple[Limit, ...]] = dict(pools)
        self._configured = {pool: configured.get(pool, ()) for pool in pools}
        self._read_at = -math.inf
        self._lock = threading.Lock()

    def __getitem__(self, pool: str) -> tuple[Limit, ...]:
        return self.current[pool]

    def is_configured(self, pool: str, limit: Limit) -> bool:
        """Whether ``limit`` was given explicitly for ``pool``: it always wins."""
        return limit in self._configured.get(pool, ())

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
        catalog figure of the same metric and window."""
        configured = self._configured.get(pool)
        if configured is None or any(c.series == limit.series for c in configured):
            return
        with self._lock:
            current = self.current.get(pool, ())
            if limit in current:
                return
            kept = tuple(c for c in current if c.series != limit.series)
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
