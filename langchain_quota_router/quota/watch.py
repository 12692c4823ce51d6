"""Watching quota: alerts as pools fill up, and how long the keys will last."""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from langchain_quota_router.quota.ledger import Ledger, LimitUsage, Reservation
from langchain_quota_router.quota.limits import Limit

logger = logging.getLogger("langchain_quota_router")

ALERT_EVENT = "quota_alert"
"""The name of the LangChain custom event an alert is dispatched as."""


@dataclass(frozen=True)
class QuotaAlert:
    """A pool crossed a share of one of its limits (``used`` and ``amount`` in the
    limit's own unit: dollars for a dollar limit)."""

    pool: str
    limit: str
    threshold: float
    percent: float
    used: int | float
    amount: int | float
    resets_at: str | None
    over: int | float = 0
    """How much more than ``amount`` is counted (0 within the limit; ``percent``
    stops at 100)."""
    note: str = ""
    """Why the count is over the limit, when it is (see :func:`over_note`)."""

    def as_event(self) -> dict[str, Any]:
        """The alert as the data of a LangChain custom event."""
        return asdict(self)

    def message(self) -> str:
        """The alert as the log and the demo tell it."""
        resets = f"; resets {self.resets_at}" if self.resets_at else ""
        if self.over:
            return (
                f"quota alert: pool {self.pool} is over {self.limit}: {self.used} counted, "
                f"{self.over} more than it allows ({self.note}){resets}"
            )
        return (
            f"quota alert: pool {self.pool} has used {self.percent:.0f}% of {self.limit} "
            f"({self.used} of {self.amount}){resets}"
        )


def over_note(limit: Limit, *, learned: bool) -> str:
    """Why a window holds more than ``limit``: admission never takes it past a limit
    in force, so what is over came before the limit was (``learned``: stated by the
    vendor's headers after calls were out), or, for tokens and dollars, calls spent
    more than they were estimated at."""
    if limit.metric == "requests":
        if learned:
            return "admitted before the vendor's limit was learned"
        return "admitted before this limit was in force"
    if learned:
        return "spent before the vendor's limit was learned, or beyond calls' estimates"
    return "spent beyond calls' estimates, or before this limit was in force"


class AlertTracker:
    """Fires each threshold once per crossing per window, for every pool and limit.

    A threshold that fired stays quiet until the window it fired in is over: the
    next calendar day or month, or one window length later for sliding windows.
    A one-time credit alerts once per threshold, ever (per process).
    """

    def __init__(self, thresholds: Sequence[float]) -> None:
        self.thresholds = tuple(sorted(thresholds))
        self._quiet_until: dict[tuple[str, str, float], float] = {}
        self._lock = threading.Lock()

    def check(
        self,
        ledger: Ledger,
        pool: str,
        limits: Sequence[Limit],
        reservation: Reservation,
        now: float,
        learned: Callable[[Limit], bool] | None = None,
    ) -> list[QuotaAlert]:
        """Alerts due after ``reservation`` was settled (cheap when far from any).

        ``limits`` are the limits ``pool`` is held to now, and only they are
        judged: the reservation may have been admitted under others (a catalog
        figure that a limit learned while the call was out replaced), whose count
        is shared by every limit of the same metric and window. ``learned`` tells
        the limits the vendor's headers stated, for the note of a count over one.
        """
        near = self.near(limits, reservation.levels)
        if not near:
            return []
        return self._due(ledger.usage(pool, near, now), now, learned)

    def near(self, limits: Sequence[Limit], levels: Sequence[tuple[Limit, int]]) -> list[Limit]:
        """Of ``limits``, those an alert could be due for, judged by a
        reservation's ``levels`` (a count per metric and window): those at or past
        the lowest threshold, and those the levels do not count (ask the ledger)."""
        if not self.thresholds or not limits:
            return []
        if not levels:  # the backend reports no levels: ask
            return list(limits)
        lowest = self.thresholds[0]
        counted = {limit.series: used for limit, used in levels}
        return [
            limit
            for limit in limits
            if limit.series not in counted
            or (limit.units and 100.0 * counted[limit.series] / limit.units >= lowest)
        ]

    def _due(
        self,
        usages: Sequence[LimitUsage],
        now: float,
        learned: Callable[[Limit], bool] | None = None,
    ) -> list[QuotaAlert]:
        alerts = []
        with self._lock:
            for usage in usages:
                crossed = [t for t in self.thresholds if usage.percent >= t]
                fresh = [
                    t
                    for t in crossed
                    if self._quiet_until.get((usage.pool, usage.limit.series, t), -1.0) <= now
                ]
                if not fresh:
                    continue
                quiet = _window_end(usage.limit, now)
                for t in crossed:
                    self._quiet_until[(usage.pool, usage.limit.series, t)] = quiet
                # One alert per crossing: the highest share newly crossed.
                alerts.append(_alert(usage, max(fresh), learned))
        for alert in alerts:
            logger.warning("%s", alert.message(), extra={"quota_alert": alert})
        return alerts


def _window_end(limit: Limit, now: float) -> float:
    window = limit.window
    if window.kind == "calendar":
        return window.bounds(now)[1]
    if window.kind == "sliding":
        return now + window.seconds
    return math.inf


def _alert(
    usage: LimitUsage, threshold: float, learned: Callable[[Limit], bool] | None
) -> QuotaAlert:
    resets = (
        dt.datetime.fromtimestamp(usage.resets_at, dt.timezone.utc).isoformat()
        if usage.resets_at is not None
        else None
    )
    return QuotaAlert(
        pool=usage.pool,
        limit=str(usage.limit),
        threshold=threshold,
        percent=round(usage.percent, 1),
        used=usage.limit.shown(usage.used),
        amount=usage.limit.amount,
        resets_at=resets,
        over=usage.limit.shown(usage.over),
        note=over_note(usage.limit, learned=bool(learned and learned(usage.limit)))
        if usage.over
        else "",
    )


@dataclass(frozen=True)
class Lifespan:
    """How long each pool, and the whole set, lasts at a given daily demand.

    Attributes:
        tokens_per_day: the demand the estimate is for.
        pools: days each pool lasts if it alone served the whole demand
            (``math.inf``: its renewing limits cover the demand for good).
        total: days the whole set lasts with every pool serving together.
        back_at: the pools that are full now (any limit, requests too, with no room
            left): when each comes back (epoch seconds), or ``None`` for a spent
            one-time credit. Such a pool lasts 0 days from now.
    """

    tokens_per_day: int
    pools: Mapping[str, float]
    total: float
    back_at: Mapping[str, float | None] = field(default_factory=dict)


def estimate_lifespan(
    ledger: Ledger,
    pool_limits: Mapping[str, Sequence[Limit]],
    tokens_per_day: int,
    now: float,
) -> Lifespan:
    """Days of service at ``tokens_per_day``: credits run out, daily limits renew.

    Each pool has a renewing capacity (tokens per day its renewing token limits
    allow: a day limit counts whole, a month limit a thirtieth, a sliding window as
    many times as it fits in a day; the tightest wins) and maybe a one-time credit
    (what is left of its ``/once`` token limits). Alone, a pool lasts forever if its
    capacity covers the demand and it has no credit, else as long as its credit or
    today's room holds out. Together, renewing capacity is used first and credits
    cover the rest: ``total = credits / (demand - capacity)`` when capacity falls
    short, forever otherwise.

    A pool with no room left now under any of its limits (requests too) lasts 0
    days; :attr:`Lifespan.back_at` says when it comes back.
    """
    if tokens_per_day <= 0:
        msg = f"tokens_per_day must be positive, got {tokens_per_day}"
        raise ValueError(msg)
    demand = float(tokens_per_day)
    pools: dict[str, float] = {}
    capacity_total = 0.0
    credit_total = 0.0
    back_at: dict[str, float | None] = {}
    for pool, limits in pool_limits.items():
        token_limits = [lim for lim in limits if lim.metric in ("tokens", "input_tokens")]
        usage = {u.limit: u for u in ledger.usage(pool, list(limits), now)} if limits else {}
        spent = [u for u in usage.values() if u.remaining <= 0]
        if spent:
            # Full now: it serves nothing until its fullest limits have room again.
            resets = [u.resets_at for u in spent]
            back_at[pool] = None if None in resets else max(r for r in resets if r is not None)
        if not token_limits:
            pools[pool] = 0.0 if spent else math.inf  # nothing counted in tokens runs out
            capacity_total = math.inf
            continue
        credits = [usage[lim].remaining for lim in token_limits if lim.window.kind == "once"]
        renewing = [_per_day(lim) for lim in token_limits if lim.window.kind != "once"]
        capacity = min(renewing) if renewing else math.inf
        if credits:
            credit = float(min(credits))
            pools[pool] = credit / min(demand, capacity)
            credit_total += credit
        else:
            pools[pool] = math.inf if capacity >= demand else _today(usage, demand)
            capacity_total += capacity
        if spent:
            pools[pool] = 0.0
    shortfall = demand - capacity_total
    total = math.inf if shortfall <= 0 else credit_total / shortfall
    return Lifespan(tokens_per_day, pools, total, back_at)


def _per_day(limit: Limit) -> float:
    window = limit.window
    if window.kind == "calendar":
        return float(limit.amount) if window.unit == "day" else limit.amount / 30.0
    return limit.amount * 86_400 / window.seconds


def _today(usage: Mapping[Limit, LimitUsage], demand: float) -> float:
    """A renewing pool too small for the demand lasts for what it has left now."""
    tokens = [u.remaining for u in usage.values() if u.limit.metric != "requests"]
    return min(tokens) / demand
