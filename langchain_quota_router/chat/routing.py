"""The routing core: for one call, who to try, in what order, and what failures mean.

It knows nothing of the chat model that drives it. :class:`Settings` is built once
from the router's fields; :class:`RoutedCall` holds one call's state and yields
:class:`Attempt` objects that carry everything the vendor call needs (the messages in
that vendor's shape, vendor-shaped kwargs, stop words), so each of the four call paths
of the chat model only calls the vendor and reports the outcome:

1. estimate the demand (prompt tokens + the output budget);
2. order the routes by the strategy, the caller's ``preferred`` route first;
3. skip routes that cannot take the call (tools, ``bind_tools`` options, context
   window), then ask the ledger to reserve; a refused route is never called;
4. after the call, settle the reservation with the vendor's usage, or classify the
   failure and block, cool down, disable or mark the model unavailable;
5. when nobody is left, wait (bounded by ``max_wait``) or raise the LangChain-typed
   error that says why (see :mod:`langchain_quota_router._errors`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import logging
import math
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.messages.utils import count_tokens_approximately

from langchain_quota_router._errors import (
    ConfigurationError,
    LedgerError,
    NoRouteError,
    QuotaExhaustedError,
    RoutesAuthenticationError,
    RoutesContextOverflowError,
    RoutesInvalidRequestError,
    RoutesModelNotFoundError,
    RoutesUnavailableError,
)
from langchain_quota_router.chat.tokens import TokenEstimator
from langchain_quota_router.quota.failures import Failure, FailureKind, classify
from langchain_quota_router.quota.headers import (
    RateLimitHeader,
    header_window,
    read_rate_limit_headers,
)
from langchain_quota_router.quota.ledger import (
    Demand,
    LearnedLimit,
    Ledger,
    LimitUsage,
    Refusal,
    Reservation,
)
from langchain_quota_router.quota.ledger.settle import asettle, settle
from langchain_quota_router.quota.limits import Limit
from langchain_quota_router.quota.secrets import mask, redacted, route_keys
from langchain_quota_router.quota.status import model_subject
from langchain_quota_router.quota.watch import AlertTracker, QuotaAlert
from langchain_quota_router.vendors import catalog
from langchain_quota_router.vendors.adapters import take_captured_headers

if TYPE_CHECKING:
    from langchain_quota_router.chat.route import Route
    from langchain_quota_router.quota.clock import Clock

logger = logging.getLogger("langchain_quota_router")

#: Call-time keyword arguments the router consumes itself.
ROUTER_KWARGS = ("preferred", "tool_options", "json_mode")

#: ``bind_tools`` options that belong to the tools, not to the call: they go through
#: each vendor model's own ``bind_tools``.
TOOL_OPTIONS = ("strict", "parallel_tool_calls")

# Why a route could not serve, in the words the final error is chosen by.
Category = Literal[
    "quota", "context", "auth", "unavailable", "transient", "tools", "argument", "other"
]
_HOLD_CATEGORIES: dict[str, Category] = {
    FailureKind.RATE_LIMIT.value: "quota",
    FailureKind.QUOTA_EXHAUSTED.value: "quota",
    FailureKind.TRANSIENT.value: "transient",
    "disabled": "auth",
    "model": "unavailable",
}
_FAILURE_CATEGORIES: dict[FailureKind, Category] = {
    FailureKind.RATE_LIMIT: "quota",
    FailureKind.QUOTA_EXHAUSTED: "quota",
    FailureKind.AUTHENTICATION: "auth",
    FailureKind.TRANSIENT: "transient",
    FailureKind.CONTEXT_TOO_LONG: "context",
    FailureKind.MODEL_UNAVAILABLE: "unavailable",
    FailureKind.BAD_REQUEST: "other",
    FailureKind.UNKNOWN: "other",
}
_TYPED_ERRORS: dict[Category, type[NoRouteError]] = {
    "context": RoutesContextOverflowError,
    "auth": RoutesAuthenticationError,
    "unavailable": RoutesModelNotFoundError,
    "tools": RoutesInvalidRequestError,
    "transient": RoutesUnavailableError,
}


@dataclass
class RouterStats:
    """Counters of what a router did since it was built (thread-safe)."""

    total_calls: int = 0
    calls_per_route: Counter[str] = field(default_factory=Counter)
    fallbacks: int = 0
    errors: int = 0
    errors_per_route: Counter[str] = field(default_factory=Counter)
    cache_hits: int = 0
    last_route: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: Where every event is counted for the fleet too: a ``_fleet.FleetCounters``
    #: (it writes to the ledger from a background thread), or None.
    fleet: Any = field(default=None, repr=False, compare=False)

    def served(self, route: str, *, fallback: bool, cost: float | None = None) -> None:
        """Count a call a route answered (after others could not, if ``fallback``),
        and its cost (USD) when known."""
        with self._lock:
            self.total_calls += 1
            self.calls_per_route[route] += 1
            self.last_route = route
            if fallback:
                self.fallbacks += 1
        fleet = self.fleet
        if fleet is not None:
            fleet.served(route, fallback=fallback, cost=cost)

    def failed(self, route: str, kind: str = "unknown") -> None:
        """Count a route's failure, of ``kind`` (a ``FailureKind`` or its value;
        ``rate_limit`` and ``quota_exhausted`` are the vendor's 429s)."""
        with self._lock:
            self.errors += 1
            self.errors_per_route[route] += 1
        fleet = self.fleet
        if fleet is not None:
            fleet.failed(route, str(getattr(kind, "value", kind)))

    def refused(self, route: str, pool: str | None = None) -> None:
        """Count a call the ledger kept from ``route`` (its pool full or blocked)."""
        fleet = self.fleet
        if fleet is not None:
            fleet.refused(route, pool)

    def refused_all(self, routes: Sequence[Route]) -> None:
        """:meth:`refused` for each of ``routes``, passed over by one call because
        their pools are known full (counted in bulk: cheap for a thousand)."""
        fleet = self.fleet
        if fleet is not None:
            fleet.refused_all(routes)

    def spent(self, route: str, pool: str, used: Demand) -> None:
        """Count what a call through ``route`` spent of ``pool``: what the ledger
        settled it with (the fleet's usage history is made of these)."""
        fleet = self.fleet
        if fleet is not None:
            fleet.spent(route, pool, used.requests, used.input_tokens, used.output_tokens)

    def hit(self, route: str | None = None) -> None:
        """Count an answer from the cache (first given by ``route``, when known)."""
        with self._lock:
            self.cache_hits += 1
        fleet = self.fleet
        if fleet is not None:
            fleet.hit(route)

    def snapshot(self) -> dict[str, Any]:
        """A plain-dict copy, safe to print or serialise."""
        with self._lock:
            return {
                "total_calls": self.total_calls,
                "calls_per_route": dict(self.calls_per_route),
                "fallbacks": self.fallbacks,
                "errors": self.errors,
                "errors_per_route": dict(self.errors_per_route),
                "cache_hits": self.cache_hits,
                "last_route": self.last_route,
            }


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

    def learn(self, route: Route, seen: RateLimitHeader, now: float) -> Limit | None:
        """Turn a vendor's rate-limit header into a limit of the route's pool.

        Returns the limit to observe the header against: a configured limit of the
        same metric and window when there is one (it wins over what the vendor
        says), else the learned limit, now recorded in the ledger.
        """
        if seen.limit is None:
            return None
        window = header_window(seen, route.provider)
        noun = "" if seen.metric == "requests" else " tokens"
        try:
            limit = Limit.parse(f"{seen.limit}{noun}/{window}")
        except ConfigurationError:
            return None
        for configured in self._configured.get(route.pool, ()):
            if configured.series == limit.series:
                return configured
        if limit not in self.current.get(route.pool, ()):
            self.ledger.learn(route.pool, limit, now)
            logger.info("route %s: learned %s from the vendor's headers", route.name, limit)
        self._adopt(route.pool, limit)
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


@dataclass(frozen=True)
class Settings:
    """Everything the core needs from the router, taken once when it is built."""

    routes: tuple[Route, ...]
    route_map: Mapping[str, Route]
    pools: PoolLimits
    ledger: Ledger
    clock: Clock
    stats: RouterStats
    alerts: AlertTracker
    strategy: str
    max_wait: float
    transient_cooldown: float
    rate_limit_cooldown: float
    model_recheck: float
    default_output_tokens: int
    max_tokens: int | None
    temperature: float | None
    tokens: TokenEstimator
    tool_kwargs: dict[tuple[str, int, str], tuple[Any, dict[str, Any]]] = field(
        default_factory=dict, compare=False
    )

    @functools.cached_property
    def by_priority(self) -> tuple[Route, ...]:
        """The routes in priority order (sorted once, not on every call)."""
        return tuple(sorted(self.routes, key=lambda r: r.priority))

    @functools.cached_property
    def by_pool(self) -> dict[str, tuple[Route, ...]]:
        """Each pool's routes, in priority order."""
        found: dict[str, list[Route]] = {}
        for route in self.by_priority:
            found.setdefault(route.pool, []).append(route)
        return {pool: tuple(routes) for pool, routes in found.items()}

    @functools.cached_property
    def rooms(self) -> RoomBoard:
        """Each pool's room as last seen, for ``strategy="spread"``."""
        return RoomBoard(self.by_pool)


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
        shares = [(lim.amount - used) / lim.amount for lim, used in levels if lim.amount > 0]
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


@dataclass(frozen=True)
class _Plan:
    """A route's demand and vendor kwargs, worked out before asking the ledger."""

    route: Route
    prompt: int
    route_kwargs: dict[str, Any]
    demand: Demand
    limits: tuple[Limit, ...]
    model: str


#: What :meth:`RoutedCall._plan` returns when no further route may be tried.
_STOP = object()


@dataclass(frozen=True)
class Attempt:
    """A route that admitted the call, with everything its vendor call needs.

    Attributes:
        route: the route.
        reservation: what the ledger counted for it.
        messages: the conversation in the shape this vendor accepts.
        kwargs: the call's keyword arguments in this vendor's words (tools bound by
            its own ``bind_tools``, ``max_tokens`` renamed, SDK retries off).
        stop: stop sequences.
        prompt_tokens: the prompt's estimated tokens on this route.
    """

    route: Route
    reservation: Reservation
    messages: list[BaseMessage]
    kwargs: dict[str, Any]
    stop: list[str] | None
    prompt_tokens: int = 0


def usage_demand(message: BaseMessage | None, fallback_input: int) -> Demand:
    """What a vendor's answer says it spent (estimated when it says nothing)."""
    usage = getattr(message, "usage_metadata", None) if message is not None else None
    if usage:
        return Demand(1, int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0)))
    output = count_tokens_approximately([message]) if message is not None else 0
    return Demand(1, fallback_input, output)


class RoutedCall:
    """The state and policy of one routed call; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        messages: Sequence[BaseMessage],
        kwargs: dict[str, Any],
        stop: list[str] | None,
    ) -> None:
        self.settings = settings
        self.ledger = settings.ledger
        self.clock = settings.clock
        self.pools = settings.pools
        self.stats = settings.stats
        kwargs = dict(kwargs)
        self.preferred: str | None = kwargs.pop("preferred", None)
        if self.preferred is not None and self.preferred not in settings.route_map:
            msg = (
                f"preferred route {self.preferred!r} is not one of this router's "
                f"routes: {sorted(settings.route_map)}"
            )
            raise ValueError(msg)
        self.tool_options: dict[str, Any] = dict(kwargs.pop("tool_options", None) or {})
        self.json_mode = bool(kwargs.pop("json_mode", False))
        self.kwargs = kwargs
        self.messages = list(messages)
        self.stop = stop
        self.tools: Sequence[Any] | None = kwargs.get("tools")
        self.tokens = settings.tokens
        # Counted once; each route's estimate scales it by what that route's vendor
        # reported for earlier prompts (see _tokens.TokenEstimator).
        self.raw_tokens = self.tokens.count(self.messages, self.tools)
        self.reasons: dict[str, str] = {}
        self.categories: dict[str, Category] = {}
        self.retry_ats: list[float] = []
        #: Routes skipped because their pool is known to have no room at all: their
        #: reasons are written out only if someone reads them (see _explain).
        self.known_full: list[Route] = []
        self._known_counted = 0
        self.first_error: BaseException | None = None
        self.argument_error: TypeError | None = None
        self.last_vendor_error: BaseException | None = None
        self.bad_request_retries_left: int | None = None
        self.waited = 0.0
        self.tried = 0
        self.alerts: list[QuotaAlert] = []

    # ------------------------------------------------------------ candidates

    def attempts(self) -> Iterator[Attempt]:
        """Admitted routes, best first; each must end in succeeded(), failed() or
        abandoned()."""
        ledger, now = self.ledger, self.clock.now()
        self.pools.refresh(now)
        for pool in self._pools_to_read():
            self.settings.rooms.usage(pool, ledger.usage(pool, self.pools[pool], now))
        for plan in self._plans(now):
            made = ledger.reserve(
                plan.route.pool,
                plan.limits,
                plan.demand,
                self.clock.now(),
                key=plan.route.credential,
                model=plan.model,
            )
            attempt = self._taken(plan, made)
            if attempt is not None:
                yield attempt

    async def aattempts(self) -> AsyncIterator[Attempt]:
        """:meth:`attempts` for the async paths: the ledger is never asked on the
        event loop (see :meth:`Ledger.areserve`)."""
        ledger, now = self.ledger, self.clock.now()
        if self.pools.due(now):
            await ledger.arun(self.pools.refresh, now)
        for pool in self._pools_to_read():
            self.settings.rooms.usage(pool, await ledger.ausage(pool, self.pools[pool], now))
        for plan in self._plans(now):
            made = await ledger.areserve(
                plan.route.pool,
                plan.limits,
                plan.demand,
                self.clock.now(),
                key=plan.route.credential,
                model=plan.model,
            )
            attempt = self._taken(plan, made)
            if attempt is not None:
                yield attempt

    def _plans(self, now: float) -> Iterator[_Plan]:
        """The routes to ask the ledger for, in order, each with its demand (lazily:
        the caller stops at the first admitted one)."""
        closed = self.ledger.full_pools.closed(now)
        for route in self._ordered():
            if route.pool in closed:
                self._closed(route)
                continue
            plan = self._plan(route)
            if plan is _STOP:
                return
            if isinstance(plan, _Plan):
                yield plan

    def _plan(self, route: Route) -> _Plan | object | None:
        """What asking ``route`` would take, or None when it is skipped without
        asking the ledger (it cannot take the call, or its pool is known full), or
        ``_STOP`` when no more routes may be tried."""
        prompt = self.tokens.for_route(route.name, self.raw_tokens)
        skip = self._cannot_take(route, prompt)
        if skip is not None:
            self._skip(route, *skip)
            return None
        # Known full for any demand of this size (the output only adds to it): no
        # need to work out the vendor's arguments, nor to ask the ledger.
        if self.ledger.full_pools:  # any pool known full at all: is this one?
            known = self.ledger.remembered(route.pool, Demand(1, prompt, 0), self.clock.now())
            if known is not None:
                self._refused(route, known)
                return None
        try:
            route_kwargs = self._route_kwargs(route)
        except TypeError as exc:
            # The route's own bind_tools does not take an option (strict=...).
            self._skip(route, f"cannot take these bind_tools options ({exc})", "tools")
            return None
        except Exception as exc:  # noqa: BLE001 - the route's own bind_tools refused
            self._skip(route, f"cannot take these tools ({exc})", "tools")
            return None
        if self.bad_request_retries_left is not None and self.bad_request_retries_left <= 0:
            return _STOP
        demand = Demand(1, prompt, self._output_budget(route, route_kwargs))
        return _Plan(
            route, prompt, route_kwargs, demand, self.pools[route.pool], model_subject(route)
        )

    def _taken(self, plan: _Plan, made: Reservation | Refusal) -> Attempt | None:
        """The attempt a reservation allows, or None (the refusal noted)."""
        route = plan.route
        if isinstance(made, Refusal):
            self._refused(route, made)
            return None
        if made.levels and self.settings.strategy == "spread":
            self.settings.rooms.note(route.pool, made.levels)
        # After a bad request, one more route is tried: one that is called, not
        # one the ledger turned away without sending anything.
        if self.bad_request_retries_left is not None:
            self.bad_request_retries_left -= 1
        self._count_known_full()
        self.tried += 1
        take_captured_headers()  # forget any stale headers from an earlier call
        return Attempt(
            route,
            made,
            route.adapter.messages(self.messages),
            plan.route_kwargs,
            self.stop,
            plan.prompt,
        )

    def _refused(self, route: Route, refusal: Refusal, *, counted: bool = True) -> None:
        category = "quota" if refusal.limit is not None else _hold_category(refusal)
        self._skip(route, refusal.reason, category)
        if counted:
            self.stats.refused(route.name, route.pool)
        if refusal.limit is not None:
            self.settings.rooms.full(route.pool)
        if refusal.retry_at is not None:
            self.retry_ats.append(refusal.retry_at)

    def _count_known_full(self) -> None:
        """Count the routes passed over as known full since the last count."""
        if len(self.known_full) > self._known_counted:
            self.stats.refused_all(tuple(self.known_full[self._known_counted :]))
            self._known_counted = len(self.known_full)

    def _explain(self) -> None:
        """Write out why the routes known full were skipped (only when it is read:
        skipping a thousand full routes must not cost a thousand reasons)."""
        for route in self.known_full:
            known = self.ledger.full_pools.known(route.pool)
            if known is not None:
                self._refused(route, known, counted=False)
        self.known_full.clear()
        self._known_counted = 0

    def _closed(self, route: Route) -> None:
        """Skip a route whose pool is known to have no room at all (cheaply: a
        thousand such routes must cost little more than one)."""
        self.known_full.append(route)
        if self.settings.strategy == "spread":
            self.settings.rooms.full(route.pool)

    def _fell_back(self) -> bool:
        """Whether a route other than the first choice serves (full, skipped, failed)."""
        return bool(self.reasons or self.known_full)

    def _skip(self, route: Route, reason: str, category: Category) -> None:
        self.reasons[route.name] = reason
        self.categories[route.name] = category

    def _ordered(self) -> Iterator[Route]:
        """The routes in the order to try them (lazily: a call the first route
        serves never sorts the others)."""
        settings = self.settings
        preferred = settings.route_map.get(self.preferred) if self.preferred else None
        if preferred is not None:
            yield preferred
        if settings.strategy != "spread":
            for route in settings.by_priority:
                if route is not preferred:
                    yield route
            return
        rooms = settings.rooms
        best = rooms.best()
        first = [r for r in settings.by_pool.get(best, ()) if r is not preferred] if best else []
        yield from first
        rest = [r for r in settings.by_priority if r is not preferred and r not in first]
        rest.sort(key=lambda r: -rooms.room(r.pool))  # stable: priority breaks ties
        yield from rest

    def _pools_to_read(self) -> list[str]:
        """Under ``spread``, the pools whose room to read for this call."""
        if self.settings.strategy != "spread":
            return []
        return self.settings.rooms.to_read()

    def _cannot_take(self, route: Route, prompt: int) -> tuple[str, Category] | None:
        if self.tools and type(route.model).bind_tools is BaseChatModel.bind_tools:
            return "cannot call tools", "tools"
        if route.context_window is not None and prompt > route.context_window:
            reason = (
                f"prompt of ~{prompt} tokens exceeds its context window of {route.context_window}"
            )
            return reason, "context"
        return None

    def _route_kwargs(self, route: Route) -> dict[str, Any]:
        """The call's kwargs in the route's own vendor form."""
        out = route.adapter.call_kwargs()
        out.update((k, v) for k, v in self.kwargs.items() if k not in ("tools", "tool_choice"))
        if self.settings.max_tokens is not None:
            out.setdefault("max_tokens", self.settings.max_tokens)
        if self.settings.temperature is not None:
            out.setdefault("temperature", self.settings.temperature)
        if self.json_mode:
            out.update(route.adapter.json_mode())
        if self.tools:
            out.update(self._vendor_tools(route))
        return route.adapter.generation_kwargs(out)

    def _vendor_tools(self, route: Route) -> dict[str, Any]:
        tools = self.tools
        assert tools is not None
        choice = self.kwargs.get("tool_choice")
        cache = self.settings.tool_kwargs
        mark = (route.name, id(tools), repr((choice, sorted(self.tool_options.items()))))
        known = cache.get(mark)
        if known is not None and known[0] is tools:
            return known[1]
        vendor_kwargs = route.adapter.bind_tools(
            route.model, tools, choice, **dict(self.tool_options)
        )
        if len(cache) > 256:
            cache.clear()
        # Keep the tools list referenced so its id() is not reused while cached.
        cache[mark] = (tools, vendor_kwargs)
        return vendor_kwargs

    def _output_budget(self, route: Route, route_kwargs: dict[str, Any]) -> int:
        for source in (route_kwargs, self.kwargs):
            for name in ("max_tokens", "max_output_tokens", "max_completion_tokens"):
                value = source.get(name)
                if isinstance(value, int) and value > 0:
                    return value
        if self.settings.max_tokens:
            return self.settings.max_tokens
        return route.output_budget or self.settings.default_output_tokens

    # -------------------------------------------------------------- outcomes

    def succeeded(
        self,
        attempt: Attempt,
        message: BaseMessage | None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Settle the reservation with real usage and note the route's headers
        (``headers``: those the vendor call captured, taken in the caller's context)."""
        if headers is None:
            headers = take_captured_headers()
        # The vendor answered and was paid: from here a ledger failure is retried
        # in the background or logged, never raised instead of the answer.
        used = usage_demand(message, attempt.prompt_tokens)
        settled = settle(self.ledger, attempt.reservation, used, self.clock.now())
        self._noted(attempt, message, headers, used, settled)

    async def asucceeded(self, attempt: Attempt, message: BaseMessage | None) -> None:
        """:meth:`succeeded` without blocking the event loop."""
        headers = take_captured_headers()
        ledger = self.ledger
        used = usage_demand(message, attempt.prompt_tokens)
        settled = await asettle(ledger, attempt.reservation, used, self.clock.now())
        if not ledger.blocking or self._quiet(attempt, message, headers):
            self._noted(attempt, message, headers, used, settled)
        else:
            await ledger.arun(self._noted, attempt, message, headers, used, settled)

    def _quiet(
        self, attempt: Attempt, message: BaseMessage | None, headers: Mapping[str, str] | None
    ) -> bool:
        """Whether noting this answer cannot touch the ledger (no headers to
        observe, no alert threshold near)."""
        if headers or (message is not None and message.response_metadata.get("headers")):
            return False
        if not self.settings.alerts.thresholds:
            return True
        lowest = self.settings.alerts.thresholds[0]
        levels = attempt.reservation.levels
        return bool(levels) and all(
            not lim.amount or 100.0 * used / lim.amount < lowest for lim, used in levels
        )

    def _noted(
        self,
        attempt: Attempt,
        message: BaseMessage | None,
        headers: Mapping[str, str] | None,
        used: Demand,
        settled: bool,
    ) -> None:
        """Everything after settling a paid answer: calibration, alerts, headers,
        cost and counters."""
        route = attempt.route
        now = self.clock.now()
        reported = getattr(message, "usage_metadata", None) if message is not None else None
        if reported and reported.get("input_tokens"):
            self.tokens.observe(route.name, self.raw_tokens, int(reported["input_tokens"]))
        try:
            if settled:
                self.alerts = self.settings.alerts.check(
                    self.ledger, route.pool, self.pools[route.pool], attempt.reservation, now
                )
            if message is not None:
                headers = headers or message.response_metadata.get("headers")
                if isinstance(headers, Mapping) and headers:
                    self._observe(route, headers, now)
        except LedgerError as exc:
            logger.warning("could not note pool %r after a paid answer: %s", route.pool, exc)
        cost = _message_cost(route, message) if message is not None else None
        if message is not None and cost is not None:
            message.response_metadata["cost"] = cost
        # Served by anyone but the first choice (full, skipped or failed): a fallback.
        self.stats.served(route.name, fallback=self._fell_back(), cost=cost)
        self.stats.spent(route.name, route.pool, used)

    def abandoned(
        self, attempt: Attempt, message: BaseMessage | None, *, error: bool = True
    ) -> None:
        """Settle a call that ended without a whole answer: a stream broken off after
        its first chunk, a stream the caller stopped reading, a cancelled task.

        The request stays counted (the vendor saw it) with what it sent so far; the
        unspent output estimate is released.
        """
        spent = usage_demand(message, attempt.prompt_tokens) if message is not None else None
        if spent is None:
            spent = Demand(1, attempt.prompt_tokens, 0)
        settle(self.ledger, attempt.reservation, spent, self.clock.now())
        route = attempt.route
        self.stats.spent(route.name, route.pool, spent)
        if error:
            self.stats.failed(route.name, "interrupted")
        else:
            self.stats.served(route.name, fallback=self._fell_back())

    async def aabandoned(
        self, attempt: Attempt, message: BaseMessage | None, *, error: bool = True
    ) -> None:
        """:meth:`abandoned` without blocking the event loop. Safe to await while
        the caller is being cancelled: the settlement runs to its end regardless."""
        done = asyncio.ensure_future(
            self.ledger.arun(functools.partial(self.abandoned, attempt, message, error=error))
        )
        await asyncio.shield(done)

    async def afailed(self, attempt: Attempt, exc: BaseException) -> None:
        """:meth:`failed` without blocking the event loop (raises as it does)."""
        await self.ledger.arun(self.failed, attempt, exc)

    def failed(self, attempt: Attempt, exc: BaseException) -> None:
        """Act on a vendor failure; return to try the next route, or raise."""
        route = attempt.route
        now = self.clock.now()
        if isinstance(exc, TypeError) and classify(exc, now=now).kind is FailureKind.UNKNOWN:
            # An argument this vendor's client does not take (model=... at call
            # time): the caller's mistake, not the vendor's. No cooldown.
            settle(self.ledger, attempt.reservation, Demand(0, 0, 0), now)
            self._skip(route, f"does not take this call's arguments ({exc})", "argument")
            self.argument_error = self.argument_error or exc
            return
        failure = classify(exc, now=now)
        # The message goes to the log and the ledger's reasons: never a key the
        # vendor echoed, even one no pattern recognises.
        failure = dataclasses.replace(
            failure, message=mask(failure.message, self._keys(), shapes=False)
        )
        self.stats.failed(route.name, failure.kind.value)
        self.last_vendor_error = exc
        # The vendor refused or never answered: it spent no tokens. Requests stay
        # counted for failures the vendor may have counted (5xx, timeouts).
        spent = 1 if failure.kind == FailureKind.TRANSIENT else 0
        settle(self.ledger, attempt.reservation, Demand(spent, 0, 0), now)
        if spent:
            self.stats.spent(route.name, route.pool, Demand(spent, 0, 0))
        self._skip(
            route, f"{failure.kind.value}: {failure.message}", _FAILURE_CATEGORIES[failure.kind]
        )
        if failure.headers:
            # A 429 states the limits as plainly as a success does.
            self._observe(route, failure.headers, now)
        until = self._act(route, failure, now)
        if until is not None:
            self.retry_ats.append(until)
        logger.warning(
            "route %s failed (%s, status %s): %s; trying the next route",
            route.name,
            failure.kind.value,
            failure.status,
            failure.message,
        )
        if failure.kind in (FailureKind.BAD_REQUEST, FailureKind.UNKNOWN):
            if self.first_error is None:
                self.first_error = exc
                self.bad_request_retries_left = 1
            else:
                error = self._vendor_error()
                # The vendor's own exception as before; a stand-in keeps its masked
                # cause (``from None`` would drop it).
                raise error from (None if error is self.first_error else error.__cause__)

    def _act(self, route: Route, failure: Failure, now: float) -> float | None:
        settings = self.settings
        kind = failure.kind
        wait = failure.retry_after
        if kind == FailureKind.AUTHENTICATION:
            self.ledger.disable(
                route.credential,
                f"disabled: {failure.message} (after fixing the key: "
                f"router.enable({route.name!r}) or `quota-router enable {route.name}`)",
            )
            return None
        if kind == FailureKind.MODEL_UNAVAILABLE:
            successor = successor_of(route)
            hint = f"; the catalog names {successor!r} as its successor" if successor else ""
            self.ledger.mark_unavailable(
                model_subject(route),
                now + settings.model_recheck,
                f"model {route.model_name!r} unavailable{hint}: {failure.message}",
            )
            _warn_unavailable_once(route, successor, settings.model_recheck)
            return None
        if kind == FailureKind.RATE_LIMIT:
            # retry-after: 0 means "now", not "the vendor said nothing".
            until = now + (wait if wait is not None else settings.rate_limit_cooldown)
        elif kind == FailureKind.QUOTA_EXHAUSTED:
            until = self._period_end(route, failure, now)
        elif kind == FailureKind.TRANSIENT:
            until = now + max(wait or 0.0, settings.transient_cooldown)
        else:
            return None
        if until <= now:
            return now
        self.ledger.block(route.pool, until, f"{kind.value}: {failure.message}")
        return until

    def _period_end(self, route: Route, failure: Failure, now: float) -> float:
        """When the window a quota wall names resets (the vendor's own clock)."""
        limits = self.pools[route.pool]
        if failure.period in ("day", "month"):
            for limit in limits:
                window = limit.window
                if window.kind == "calendar" and window.unit == failure.period:
                    return window.bounds(now)[1]
            return Limit.parse(f"1/{failure.period}").window.bounds(now)[1]
        if failure.retry_after is not None:
            return now + failure.retry_after
        calendar = [lim.window.bounds(now)[1] for lim in limits if lim.window.kind == "calendar"]
        return max(calendar) if calendar else now + 86_400

    def _observe(self, route: Route, headers: Mapping[str, str], now: float) -> None:
        """Bring the pool in line with what the vendor's headers say.

        A counter that matches one of the pool's limits lowers its room. A counter
        with a size the pool has no limit for (or that contradicts a catalog figure)
        becomes a learned limit, unless a configured limit covers that metric and
        window. A counter at 0 with no size still blocks the pool until its reset.
        """
        limits = self.pools[route.pool]
        for seen in read_rate_limit_headers(headers, now=now):
            limit = _match_limit(limits, seen.metric, seen.limit, seen.reset_after)
            stated = seen.limit is not None and seen.limit > 0
            if stated and (
                limit is None
                or (limit.amount != seen.limit and not self.pools.is_configured(route.pool, limit))
            ):
                limit = self.pools.learn(route, seen, now) or limit
            if limit is not None:
                self.ledger.observe(route.pool, limit, seen.remaining, now)
            elif seen.remaining == 0:
                wait = seen.reset_after
                until = now + (wait if wait is not None else self.settings.rate_limit_cooldown)
                self.ledger.block(route.pool, until, f"the vendor reports no {seen.metric} left")

    # ------------------------------------------------------------ giving up

    def wait_or_raise(self) -> float:
        """Nobody could serve: the seconds to wait before trying again, or raise."""
        self._count_known_full()
        self._explain()
        if self.first_error is not None:
            raise self._vendor_error()
        now = self.clock.now()
        resets = min(self.retry_ats) if self.retry_ats else None
        budget = self.settings.max_wait - self.waited
        if resets is not None and budget > 0 and resets - now <= budget:
            delay = max(0.0, resets - now) + 0.001
            self.waited += delay
            self.reasons.clear()
            self.categories.clear()
            self.retry_ats.clear()
            logger.info("all routes are full; waiting %.1fs for quota", delay)
            return delay
        raise self._error(resets)

    def _error(self, resets: float | None) -> BaseException:
        """The error that says why nobody could serve, typed as LangChain types it.

        No configured key survives in it: not in the reasons (a vendor's message may
        echo the key) and not in the chained vendor exception, which is replaced by
        a masked stand-in when its traceback would show a key.
        """
        keys = self._keys()
        categories = set(self.categories.values())
        if categories == {"argument"} and self.argument_error is not None:
            return redacted(self.argument_error, keys)
        categories.discard("argument")
        when = dt.datetime.fromtimestamp(resets, dt.timezone.utc) if resets else None
        kind: type[NoRouteError] = QuotaExhaustedError
        if len(categories) == 1:
            kind = _TYPED_ERRORS.get(next(iter(categories)), QuotaExhaustedError)
        elif categories and "quota" not in categories and categories <= set(_TYPED_ERRORS):
            kind = RoutesUnavailableError
        error = kind(self._masked_reasons(keys), when)
        if self.last_vendor_error is not None:
            error.__cause__ = redacted(self.last_vendor_error, keys)
        return error

    def _vendor_error(self) -> BaseException:
        """The vendor's own exception for a bad request, as the router re-raises it;
        when its traceback would show a configured key, a
        ``RoutesInvalidRequestError`` chained to a masked stand-in instead."""
        assert self.first_error is not None
        self._explain()
        keys = self._keys()
        clean = redacted(self.first_error, keys)
        if clean is self.first_error:
            return clean
        error = RoutesInvalidRequestError(self._masked_reasons(keys), None)
        error.__cause__ = clean
        return error

    def surfaced(self, exc: BaseException) -> BaseException:
        """What to raise for a vendor error the caller must see as it is (a stream
        broken after its first chunk): the vendor's own, or a masked stand-in when
        its traceback would show a configured key."""
        return redacted(exc, self._keys())

    def _keys(self) -> list[str]:
        return route_keys(self.settings.route_map.values())

    def _masked_reasons(self, keys: list[str]) -> dict[str, str]:
        # Known keys only: the reasons' other text was redacted when classified.
        return {name: mask(why, keys, shapes=False) for name, why in self.reasons.items()}


def _hold_category(refusal: Refusal) -> Category:
    """What kind of hold refused a reservation, from the reason the ledger keeps."""
    reason = refusal.reason
    if reason.startswith("model "):
        return "unavailable"
    head = reason.split(":", 1)[0]
    return _HOLD_CATEGORIES.get(head, "quota")


def successor_of(route: Route) -> str | None:
    """The model the catalog names as the successor of a route's retired model."""
    return catalog.successor_of(route.provider, route.model_name) or catalog.successor_of(
        None, route.model_name
    )


_warned_unavailable: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def _warn_unavailable_once(route: Route, successor: str | None, recheck: float) -> None:
    """Say once per process that a route's model is gone, and what replaces it."""
    with _warned_lock:
        mark = (route.name, route.model_name)
        if mark in _warned_unavailable:
            return
        _warned_unavailable.add(mark)
    hint = f" The catalog names {successor!r} as its successor." if successor else ""
    logger.warning(
        "route %s: the vendor no longer serves model %r on this key; the route is "
        "skipped and asked again in %.0f s (router.enable(%r) or `quota-router "
        "enable %s` to try it now).%s",
        route.name,
        route.model_name,
        recheck,
        route.name,
        route.name,
        hint,
    )


def _message_cost(route: Route, message: BaseMessage) -> float | None:
    if route.prices is None:
        return None
    usage = getattr(message, "usage_metadata", None)
    if not usage:
        return None
    return route.cost(int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0)))


def _match_limit(
    limits: Sequence[Limit], metric: str, amount: int | None, reset_after: float | None
) -> Limit | None:
    """The pool limit a vendor's rate-limit header speaks of, if any."""
    same = [lim for lim in limits if lim.metric == metric]
    if amount is not None:
        exact = [lim for lim in same if lim.amount == amount]
        if exact:
            return exact[0]
    if reset_after is not None:
        # The smallest window that could still be running for that long.
        spans = [
            (lim.window.seconds if lim.window.kind == "sliding" else 86_400, lim)
            for lim in same
            if lim.window.kind != "once"
        ]
        fitting = sorted((s, i, lim) for i, (s, lim) in enumerate(spans) if s >= reset_after)
        if fitting:
            return fitting[0][2]
    return None
