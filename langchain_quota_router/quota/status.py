"""One status model for the page, the command line, the metrics and the demo.

Every view of a router's quota is computed here, once: each route's state
(:func:`route_states`), each pool's limit rows (:class:`LimitRow`), the holds, and the
whole picture (:func:`read_status`). ``/status.json`` and ``quota-router report --json``
are both :meth:`Status.as_dict`, so they give the same fields for the same facts;
the page, ``quota-router status``, ``/metrics`` and the demo render the same rows.

A route's state comes from the ledger alone (holds and usage), so every process that
shares the ledger reports the same state for the same facts. Whatever is shown is
masked by :class:`~langchain_quota_router.quota.secrets.Masker`.

JSON field names follow the Python names: a limit row's ``amount`` is
``Limit.amount``, ``used``/``remaining``/``percent``/``resets_at``/``learned_at`` are
``LimitUsage``'s; a route's ``name`` is ``Route.name``. Times are ISO 8601 in UTC
(``resets_at``) and epoch seconds (``resets_at_epoch``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, TypeVar

from langchain_quota_router.quota.admission import model_subject
from langchain_quota_router.quota.clock import Clock, iso
from langchain_quota_router.quota.ledger import Hold, Ledger, LimitUsage
from langchain_quota_router.quota.ledger.records import KEY_PREFIX, MODEL_PREFIX, POOL_PREFIX
from langchain_quota_router.quota.limits import dollars, to_micro
from langchain_quota_router.quota.secrets import Masker
from langchain_quota_router.quota.watch import Lifespan, estimate_lifespan, over_note

__all__ = [
    "HoldRow",
    "LimitRow",
    "PoolRow",
    "RouteRow",
    "RouteState",
    "Source",
    "StateKind",
    "Status",
    "amount_text",
    "iso",
    "lifespan_days",
    "limit_row",
    "merge_stats",
    "over_text",
    "read_status",
    "route_states",
    "status_snapshot",
    "tightest",
]

StateKind = Literal["ok", "full", "blocked", "unavailable", "disabled"]


@dataclass(frozen=True)
class RouteState:
    """Whether a route can take calls now, and if not, why and until when.

    Attributes:
        kind: ``"ok"``; ``"full"`` (a limit is used up; ``until`` is when every
            used-up limit has freed up, ``None`` for a spent one-time credit);
            ``"blocked"`` (resting after a vendor error or quota wall);
            ``"unavailable"`` (the vendor no longer serves the model on this key;
            asked again at ``until``) or ``"disabled"`` (its key was rejected).
            ``router.enable(route)`` / ``quota-router enable`` lifts the last two.
        until: when the state ends by itself (epoch seconds), if it does.
        reason: the ledger's reason, as recorded (callers mask secrets).
    """

    kind: StateKind
    until: float | None = None
    reason: str = ""


class Source(Protocol):
    """A client of the quota core whose status can be read: a chat router, a key
    rotator, an embeddings router."""

    @property
    def members(self) -> Sequence[Any]: ...
    @property
    def ledger_backend(self) -> Ledger: ...
    @property
    def pool_limits(self) -> dict[str, Any]: ...

    clock: Clock

    def usage(self) -> list[LimitUsage]: ...
    def get_stats(self) -> dict[str, Any]: ...
    def keys_to_mask(self) -> list[str]: ...
    def lifespan(self, tokens_per_day: int) -> Lifespan: ...


def route_states(
    routes: Iterable[Any], usage: Sequence[LimitUsage], holds: Sequence[Hold]
) -> dict[str, RouteState]:
    """Each route's state: a disabled key wins, then an unavailable model, then a
    block, then a full limit."""
    by_subject = {hold.subject: hold for hold in holds}
    full: dict[str, list[LimitUsage]] = {}
    for u in usage:
        if u.remaining <= 0:
            full.setdefault(u.pool, []).append(u)
    states: dict[str, RouteState] = {}
    for route in routes:
        for prefix, subject, kind in (
            (KEY_PREFIX, route.credential, "disabled"),
            (MODEL_PREFIX, model_subject(route), "unavailable"),
            (POOL_PREFIX, route.pool, "blocked"),
        ):
            hold = by_subject.get(prefix + subject)
            if hold is not None:
                states[route.name] = RouteState(kind, hold.until, hold.reason)  # type: ignore[arg-type]
                break
        else:
            spent = full.get(route.pool)
            if spent:
                # Room comes back when every used-up limit has freed some; a
                # one-time credit never does.
                ends = [u.resets_at for u in spent]
                until = None if None in ends else max(e for e in ends if e is not None)
                reason = ", ".join(f"{u.limit} is used up" for u in spent)
                states[route.name] = RouteState("full", until, reason)
            else:
                states[route.name] = RouteState("ok")
    return states


class _Spent(Protocol):
    """A limit's usage: a :class:`LimitUsage` or a :class:`LimitRow`."""

    @property
    def pool(self) -> str: ...
    @property
    def percent(self) -> float: ...
    @property
    def resets_at(self) -> float | None: ...


_SpentT = TypeVar("_SpentT", bound=_Spent)


def tightest(usage: Iterable[_SpentT], pool: str) -> _SpentT | None:
    """The pool's limit closest to full (ties: the one that resets last).

    Args:
        usage: :class:`LimitUsage` or :class:`LimitRow` items of any pools.
        pool: the pool to look at.
    """
    mine = [u for u in usage if u.pool == pool]
    if not mine:
        return None
    return max(mine, key=lambda u: (u.percent, u.resets_at or math.inf))


def lifespan_days(router: Source, tokens_per_day: int) -> dict[str, float]:
    """Days each pool (and ``"all"``: the whole set) lasts at ``tokens_per_day``.

    The router's own estimate (:meth:`QuotaRoutedChatModel.lifespan`): one-time
    credits run out at ``remaining / N`` days; renewing limits (per minute, day,
    month) last forever when they cover ``N`` a day, else for what is left today;
    the whole set uses renewing room first and credits for the shortfall.
    """
    estimate = router.lifespan(tokens_per_day)
    return {**{str(k): float(v) for k, v in estimate.pools.items()}, "all": float(estimate.total)}


# ------------------------------------------------------------------ the rows


@dataclass(frozen=True)
class LimitRow:
    """One limit of one pool: how much is spent and when room comes back.

    Attributes:
        pool: the pool.
        limit: the limit as written (``"10/day"``, ``"6000 tokens/minute"``).
        metric: ``"requests"``, ``"tokens"``, ``"input_tokens"``, ``"output_tokens"``
            or ``"usd"`` (then ``used``, ``amount`` and ``remaining`` are dollars).
        window: the window as written (``"minute"``, ``"day@America/Los_Angeles"``,
            ``"24h"``, ``"once"``).
        used: what the window holds now.
        amount: the limit's size (``Limit.amount``).
        remaining: what is left (never negative).
        percent: share spent, 0-100, rounded to two decimals.
        resets_at: when the window frees up (epoch seconds); ``None`` for a one-time
            credit.
        learned_at: when a vendor's headers stated this limit; ``None`` when it was
            configured.
        held: of ``used``, what this process holds in local quota slices (counted
            in the shared ledger, not spent yet; 0 without slices).
        over: how much more than ``amount`` is counted (0 within the limit;
            ``percent`` stops at 100).
        note: why the count is over the limit, when it is.
    """

    pool: str
    limit: str
    metric: str
    window: str
    used: int | float
    amount: int | float
    remaining: int | float
    percent: float
    resets_at: float | None
    learned_at: float | None
    held: int = 0
    over: int | float = 0
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The row as JSON-ready data (times as ISO 8601 and as ``*_epoch``)."""
        return {
            "pool": self.pool,
            "limit": self.limit,
            "metric": self.metric,
            "window": self.window,
            "used": self.used,
            "amount": self.amount,
            "remaining": self.remaining,
            "percent": self.percent,
            "resets_at": iso(self.resets_at),
            "resets_at_epoch": self.resets_at,
            "learned_at": iso(self.learned_at),
            "learned_at_epoch": self.learned_at,
            "held": self.held,
            "over": self.over,
            "note": self.note,
        }


def amount_text(value: float, metric: str) -> str:
    """A limit row's ``used``, ``amount`` or ``remaining`` as people read it:
    dollars as ``$0.75`` for a dollar limit, else the count."""
    if metric == "usd":
        return dollars(to_micro(value))
    return str(value)


def over_text(row: Mapping[str, Any]) -> str:
    """A limit row (:meth:`LimitRow.as_dict`) over its amount, in words: ``6 more
    than it allows (9 counted): admitted before the vendor's limit was learned``."""
    metric = row["metric"]
    return (
        f"{amount_text(row['over'], metric)} more than it allows "
        f"({amount_text(row['used'], metric)} counted): {row['note']}"
    )


def limit_row(usage: LimitUsage) -> LimitRow:
    """The row for one :class:`~langchain_quota_router.quota.ledger.LimitUsage`."""
    return LimitRow(
        pool=usage.pool,
        limit=str(usage.limit),
        metric=usage.limit.metric,
        window=usage.limit.window.describe(),
        used=usage.limit.shown(usage.used),
        amount=usage.limit.amount,
        remaining=usage.limit.shown(usage.remaining),
        percent=round(usage.percent, 2),
        resets_at=usage.resets_at,
        learned_at=usage.learned_at,
        held=usage.held,
        over=usage.limit.shown(usage.over),
        note=over_note(usage.limit, learned=usage.learned_at is not None) if usage.over else "",
    )


@dataclass(frozen=True)
class PoolRow:
    """A pool, the routes that spend it, and its limits."""

    pool: str
    routes: tuple[str, ...]
    limits: tuple[LimitRow, ...]

    def as_dict(self) -> dict[str, Any]:
        """The pool as JSON-ready data."""
        return {
            "pool": self.pool,
            "routes": list(self.routes),
            "limits": [row.as_dict() for row in self.limits],
        }


@dataclass(frozen=True)
class RouteRow:
    """A route, its state, and what this process and the fleet counted for it.

    Attributes:
        name: the route's name.
        provider: the vendor (``"groq"``, ``"google_genai"``, ...).
        model: the model's name.
        pool: the pool it spends.
        priority: lower goes first.
        limits: its configured limits, as written.
        state: whether it can take calls now (see :class:`RouteState`); the reason
            is masked.
        calls: calls it served in this process (``get_stats()``).
        errors: its failures in this process.
        fleet: what every router sharing the ledger counted for it
            (``get_stats()["fleet"]["routes"][name]``: ``calls``, ``fallbacks``,
            ``errors``, ``errors_by_kind``, ``rate_limited``, ``refused``,
            ``cache_hits``, ``tokens_in``, ``tokens_out``, ``cost``); ``None`` when
            the ledger could not say.
        kind: ``"route"`` (a chat or embeddings route) or ``"key"`` (a
            :class:`~langchain_quota_router.keys.KeyRotator`'s key, whose
            ``provider`` is the rotator's name).
    """

    name: str
    provider: str
    model: str
    pool: str
    priority: int
    limits: tuple[str, ...]
    state: RouteState
    calls: int
    errors: int
    fleet: dict[str, Any] | None = None
    kind: str = "route"

    def as_dict(self) -> dict[str, Any]:
        """The route as JSON-ready data.

        ``route`` repeats ``name``: ``report --json`` called it so before the page
        and the report shared one model, and scripts (and a test) still read it.
        """
        return {
            "name": self.name,
            "route": self.name,
            "provider": self.provider,
            "model": self.model,
            "pool": self.pool,
            "priority": self.priority,
            "limits": list(self.limits),
            "state": self.state.kind,
            "until": iso(self.state.until),
            "until_epoch": self.state.until,
            "reason": self.state.reason or None,
            "calls": self.calls,
            "errors": self.errors,
            "fleet": self.fleet,
            "kind": self.kind,
        }


@dataclass(frozen=True)
class HoldRow:
    """A hold the ledger keeps on this router's routes.

    Holds are named by pool and route names only: the ledger's key label is never
    shown, in case someone named a route after its key.

    Attributes:
        kind: ``"blocked"`` (a pool resting after a vendor error or quota wall),
            ``"disabled"`` (a key the vendor rejected) or ``"unavailable"`` (a
            model the vendor no longer serves on a key) - the route state it causes.
        pool: the pool, for a block; ``None`` otherwise.
        routes: the routes it holds.
        until: when it ends by itself (epoch seconds), if it does.
        reason: why (masked).
    """

    kind: StateKind
    pool: str | None
    routes: tuple[str, ...]
    until: float | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """The hold as JSON-ready data."""
        return {
            "kind": self.kind,
            "pool": self.pool,
            "routes": list(self.routes),
            "until": iso(self.until),
            "until_epoch": self.until,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Status:
    """Everything the page, the report and the metrics show about a router.

    Attributes:
        now: when it was read (the router's clock, epoch seconds).
        ledger: the ledger's URL, masked (no password).
        routes: every route with its state.
        pools: every pool with its limit rows.
        holds: blocks, disabled keys and unavailable models on this router's routes.
        stats: ``router.get_stats()``: this process's counters, and the fleet's
            (every router sharing the ledger) under ``"fleet"``.
        lifespan: ``{"tokens_per_day": N, "days": {pool: days, "all": days},
            "back_at": {pool: ISO time or None}}`` when asked for with
            ``tokens_per_day``; days without end are ``math.inf``; ``back_at`` names
            the pools full now (0 days) and when each comes back.
        ledger_read_seconds: how long reading the ledger took (wall clock).
    """

    now: float
    ledger: str
    routes: tuple[RouteRow, ...]
    pools: tuple[PoolRow, ...]
    holds: tuple[HoldRow, ...]
    stats: dict[str, Any]
    lifespan: dict[str, Any] | None = None
    ledger_read_seconds: float = field(default=0.0, compare=False)

    @property
    def limits(self) -> list[LimitRow]:
        """Every pool's limit rows, in one list."""
        return [row for pool in self.pools for row in pool.limits]

    def as_dict(self) -> dict[str, Any]:
        """What ``/status.json`` and ``quota-router report --json`` give.

        Returns:
            ``{"now", "now_epoch", "ledger", "routes", "pools", "holds", "stats",
            "lifespan"}``: see the row classes for each entry's fields. A lifespan
            without end is the string ``"inf"`` (JSON has no infinity).
        """
        lifespan = None
        if self.lifespan is not None:
            days = self.lifespan["days"]
            lifespan = {
                "tokens_per_day": self.lifespan["tokens_per_day"],
                "days": {k: "inf" if math.isinf(v) else round(v, 3) for k, v in days.items()},
                "back_at": dict(self.lifespan.get("back_at", {})),
            }
        return {
            "now": iso(self.now),
            "now_epoch": self.now,
            "ledger": self.ledger,
            "routes": [route.as_dict() for route in self.routes],
            "pools": [pool.as_dict() for pool in self.pools],
            "holds": [hold.as_dict() for hold in self.holds],
            "stats": self.stats,
            "lifespan": lifespan,
        }


# ------------------------------------------------------------------ reading


def read_status(*sources: Source, tokens_per_day: int | None = None) -> Status:
    """Read routers' (and key rotators') members, pools, holds and counters from
    their ledger, once.

    Args:
        sources: the router to report on, and any key rotators to show beside it
            (members named alike are shown once).
        tokens_per_day: also estimate how many days each pool lasts at this demand.

    Returns:
        The :class:`Status`, with every reason and the ledger URL masked.
    """
    if not sources:
        msg = "read_status needs at least one router or key rotator"
        raise ValueError(msg)
    # A router shows the key rotators and embeddings it was given beside its routes.
    expanded: list[Source] = []
    for source in sources:
        companions = getattr(source, "companions", None)
        for found in (source, *(companions() if companions is not None else ())):
            if not any(found is known for known in expanded):
                expanded.append(found)
    sources = tuple(expanded)
    masked = Masker([k for s in sources for k in s.keys_to_mask()])
    started = time.perf_counter()
    first = sources[0]
    now = first.clock.now()
    ledger = first.ledger_backend
    # Read once: the ledger may be shared with other processes and change meanwhile.
    usage: list[LimitUsage] = []
    holds: list[Hold] = []
    seen_ledgers: list[Ledger] = []
    for source in sources:
        usage.extend(u for u in source.usage() if u not in usage)
        if not any(source.ledger_backend is known for known in seen_ledgers):
            seen_ledgers.append(source.ledger_backend)
            holds.extend(source.ledger_backend.holds(now))
    read_seconds = time.perf_counter() - started
    routes: list[Any] = []
    kinds: dict[str, str] = {}
    for source in sources:
        kind = "route" if source is first or not hasattr(source, "rotate") else "key"
        for member in source.members:
            if member.name not in kinds:
                routes.append(member)
                kinds[member.name] = kind
    states = route_states(routes, usage, holds)
    # Names are masked here, before any output clips them: a name may embed a key
    # (``backup-<key>``), and a clipped key is no longer masked whole.
    stats = _masked_names(merge_stats([source.get_stats() for source in sources]), masked)
    fleet_routes: dict[str, Any] = (stats.get("fleet") or {}).get("routes") or {}

    route_rows = tuple(
        RouteRow(
            name=masked(route.name),
            provider=route.provider,
            model=route.model_name,
            pool=masked(route.pool),
            priority=route.priority,
            limits=tuple(str(limit) for limit in route.limits),
            state=RouteState(
                states[route.name].kind,
                states[route.name].until,
                masked(states[route.name].reason),
            ),
            calls=int(stats.get("calls_per_route", {}).get(route.name, 0)),
            errors=int(stats.get("errors_per_route", {}).get(route.name, 0)),
            fleet=fleet_routes.get(masked(route.name)),
            kind=kinds[route.name],
        )
        for route in routes
    )
    routes_of: dict[str, list[str]] = {}
    for route in routes:
        routes_of.setdefault(route.pool, []).append(masked(route.name))
    pool_limits: dict[str, Any] = {}
    for source in sources:
        for pool, limits in source.pool_limits.items():
            pool_limits.setdefault(pool, limits)
    pools = tuple(
        PoolRow(
            pool=masked(pool),
            routes=tuple(routes_of.get(pool, ())),
            limits=tuple(_masked_pool(limit_row(u), masked) for u in usage if u.pool == pool),
        )
        for pool in pool_limits
    )
    lifespan = None
    if tokens_per_day is not None:
        estimate = estimate_lifespan(ledger, pool_limits, tokens_per_day, now)
        lifespan = {
            "tokens_per_day": tokens_per_day,
            "days": {
                **{str(k): float(v) for k, v in estimate.pools.items()},
                "all": float(estimate.total),
            },
            # Pools full now: when each comes back (None: a spent credit, never).
            "back_at": {
                str(k): iso(v) if v is not None else None for k, v in estimate.back_at.items()
            },
        }
    return Status(
        now=now,
        ledger=masked.url(getattr(ledger, "url", "") or getattr(ledger, "scheme", "")),
        routes=route_rows,
        pools=pools,
        holds=_hold_rows(routes, holds, routes_of, masked),
        stats=stats,
        lifespan=lifespan,
        ledger_read_seconds=read_seconds,
    )


def merge_stats(snapshots: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several clients' ``get_stats()`` as one: counts added, per-name tables
    joined, the fleet's figures likewise (``None`` if any could not be read)."""
    if len(snapshots) == 1:
        return snapshots[0]
    merged: dict[str, Any] = _merge(snapshots)
    return merged


def _merge(items: Sequence[Any]) -> Any:
    present = [x for x in items if x is not None]
    if len(present) < len(items) and all(isinstance(x, dict) for x in present):
        return None  # a fleet view one source could not read: not a partial sum
    first = present[0]
    if isinstance(first, bool) or not isinstance(first, (int, float, dict)):
        return next((x for x in reversed(present) if x is not None), first)
    if isinstance(first, dict):
        keys: list[str] = []
        for item in present:
            keys.extend(k for k in item if k not in keys)
        return {k: _merge([item[k] for item in present if k in item]) for k in keys}
    return sum(present)


def _hold_rows(
    routes: Sequence[Any],
    holds: Sequence[Hold],
    routes_of: dict[str, list[str]],
    masked: Masker,
) -> tuple[HoldRow, ...]:
    """The holds that concern ``routes``; others (a ledger shared with routers of
    other routes) are left out, since no action here could lift them."""
    rows = []
    for hold in holds:
        pool: str | None = None
        kind: StateKind
        if hold.subject.startswith(POOL_PREFIX):
            kind, pool = "blocked", hold.subject[len(POOL_PREFIX) :]
            names = routes_of.get(pool, [])
        elif hold.subject.startswith(MODEL_PREFIX):
            subject = hold.subject[len(MODEL_PREFIX) :]
            kind, names = "unavailable", [r.name for r in routes if model_subject(r) == subject]
        else:
            key = hold.subject.removeprefix(KEY_PREFIX)
            kind, names = "disabled", [r.name for r in routes if r.credential == key]
        if names:
            rows.append(
                HoldRow(
                    kind,
                    None if pool is None else masked(pool),
                    tuple(masked(name) for name in names),
                    hold.until,
                    masked(hold.reason),
                )
            )
    return tuple(rows)


def _masked_pool(row: LimitRow, masked: Masker) -> LimitRow:
    return replace(row, pool=masked(row.pool))


def _masked_names(data: Any, masked: Masker) -> Any:
    """``data`` (counters keyed by route and pool names) with every key masked."""
    if isinstance(data, dict):
        return {
            masked(k) if isinstance(k, str) else k: _masked_names(v, masked)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [_masked_names(v, masked) for v in data]
    return data


def status_snapshot(*sources: Source, tokens_per_day: int | None = None) -> dict[str, Any]:
    """:func:`read_status` as JSON-ready data: what ``/status.json`` and
    ``quota-router report --json`` give (see :meth:`Status.as_dict`)."""
    return read_status(*sources, tokens_per_day=tokens_per_day).as_dict()
