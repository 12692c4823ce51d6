"""The router's decisions for one call: who to try, in what order, what failures mean.

:class:`RoutedCall` holds everything that does not depend on *how* the vendor model
is called, so the four call paths of the chat model (sync and async, generate and
stream) share one policy:

1. estimate the demand (prompt tokens + the output budget);
2. order the routes by the strategy, the caller's ``preferred`` route first;
3. skip routes that cannot take the call (tools, context window), then ask the
   ledger to reserve; a refused route is never called;
4. after the call, settle the reservation with the vendor's usage, or classify the
   failure and block, cool down or disable;
5. when nobody is left, wait (bounded by ``max_wait``) or raise
   :class:`QuotaExhaustedError`.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langchain_core.messages import BaseMessage
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.utils.function_calling import convert_to_openai_tool

from langchain_quota_router._errors import QuotaExhaustedError
from langchain_quota_router._limits import Limit
from langchain_quota_router._status import model_subject
from langchain_quota_router._watch import QuotaAlert
from langchain_quota_router.ledger import Demand, Refusal, Reservation
from langchain_quota_router.vendors import catalog
from langchain_quota_router.vendors.adapters import take_captured_headers
from langchain_quota_router.vendors.failures import Failure, FailureKind, classify
from langchain_quota_router.vendors.headers import read_rate_limit_headers

if TYPE_CHECKING:
    from langchain_quota_router._chat_model import QuotaRoutedChatModel
    from langchain_quota_router._route import Route

logger = logging.getLogger("langchain_quota_router")

#: Call-time keyword arguments the router consumes itself.
ROUTER_KWARGS = ("preferred",)


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

    def served(self, route: str, *, fallback: bool) -> None:
        """Count a call a route answered (after others could not, if ``fallback``)."""
        with self._lock:
            self.total_calls += 1
            self.calls_per_route[route] += 1
            self.last_route = route
            if fallback:
                self.fallbacks += 1

    def failed(self, route: str) -> None:
        """Count a route's failure."""
        with self._lock:
            self.errors += 1
            self.errors_per_route[route] += 1

    def hit(self) -> None:
        """Count an answer from the cache."""
        with self._lock:
            self.cache_hits += 1

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


@dataclass(frozen=True)
class Attempt:
    """A route that admitted the call, with its reservation and vendor-shaped kwargs."""

    route: Route
    reservation: Reservation
    kwargs: dict[str, Any]


def usage_demand(message: BaseMessage | None, fallback_input: int) -> Demand:
    """What a vendor's answer says it spent (estimated when it says nothing)."""
    usage = getattr(message, "usage_metadata", None) if message is not None else None
    if usage:
        return Demand(1, int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0)))
    output = count_tokens_approximately([message]) if message is not None else 0
    return Demand(1, fallback_input, output)


def tag_message(message: BaseMessage, route: Route, *, first: bool = True) -> None:
    """Say in ``response_metadata`` which route answered, with which model.

    Stream chunks are merged by concatenating strings, so only the first chunk of a
    stream carries these keys (``first=False`` removes them from the others).
    """
    meta = message.response_metadata
    if not first:
        for key in ("route", "model_name", "model_provider"):
            meta.pop(key, None)
        return
    meta["route"] = route.name
    meta.setdefault("model_name", route.model_name)
    meta["model_provider"] = route.provider


class RoutedCall:
    """The state and policy of one routed call; see the module docstring."""

    def __init__(
        self,
        router: QuotaRoutedChatModel,
        messages: Sequence[BaseMessage],
        kwargs: dict[str, Any],
    ) -> None:
        self.router = router
        # Read once: pydantic's private attributes are slow to reach on every use.
        self.ledger = router.ledger_backend
        self.clock = router.clock
        self.pool_limits = router.pool_limits
        self.stats = router.stats
        self.preferred: str | None = kwargs.pop("preferred", None)
        if self.preferred is not None and self.preferred not in router.route_map:
            msg = (
                f"preferred route {self.preferred!r} is not one of this router's "
                f"routes: {sorted(router.route_map)}"
            )
            raise ValueError(msg)
        self.kwargs = kwargs
        router.refresh_learned_limits(self.clock.now())
        self.tools: Sequence[Any] | None = kwargs.get("tools")
        self.input_tokens = count_tokens_approximately(messages) + _tool_tokens(self.tools)
        self.reasons: dict[str, str] = {}
        self.retry_ats: list[float] = []
        self.first_error: BaseException | None = None
        self.last_vendor_error: BaseException | None = None
        self.bad_request_retries_left: int | None = None
        self.waited = 0.0
        self.tried = 0
        self.alerts: list[QuotaAlert] = []

    # ------------------------------------------------------------ candidates

    def attempts(self) -> Iterator[Attempt]:
        """Admitted routes, best first; each must end in succeeded() or failed()."""
        for route in self._ordered():
            skip = self._cannot_take(route)
            if skip is not None:
                self.reasons[route.name] = skip
                continue
            try:
                route_kwargs = self.router.route_kwargs(route, self.kwargs)
            except Exception as exc:  # noqa: BLE001 - the route's own bind_tools refused
                self.reasons[route.name] = f"cannot take these tools ({exc})"
                continue
            demand = Demand(1, self.input_tokens, self._output_budget(route, route_kwargs))
            now = self.clock.now()
            if self.bad_request_retries_left is not None and self.bad_request_retries_left <= 0:
                return
            admitted = self.ledger.reserve(
                route.pool,
                self.pool_limits[route.pool],
                demand,
                now,
                key=route.key,
                model=model_subject(route),
            )
            if isinstance(admitted, Refusal):
                self.reasons[route.name] = admitted.reason
                if admitted.retry_at is not None:
                    self.retry_ats.append(admitted.retry_at)
                continue
            # After a bad request, one more route is tried: one that is called, not
            # one the ledger turned away without sending anything.
            if self.bad_request_retries_left is not None:
                self.bad_request_retries_left -= 1
            self.tried += 1
            take_captured_headers()  # forget any stale headers from an earlier call
            yield Attempt(route, admitted, route_kwargs)

    def _ordered(self) -> list[Route]:
        routes = list(self.router.routes)
        if self.router.strategy == "spread":
            rooms = {r.pool: self._room(r) for r in routes}
            routes.sort(key=lambda r: (-rooms[r.pool], r.priority))
        else:
            routes.sort(key=lambda r: r.priority)
        if self.preferred is not None:
            routes.sort(key=lambda r: r.name != self.preferred)
        return routes

    def _room(self, route: Route) -> float:
        limits = self.pool_limits[route.pool]
        if not limits:
            return 1.0
        usage = self.ledger.usage(route.pool, limits, self.clock.now())
        return min((u.remaining / u.limit.amount if u.limit.amount else 0.0) for u in usage)

    def _cannot_take(self, route: Route) -> str | None:
        if self.tools and not self.router.can_bind_tools(route):
            return "cannot call tools"
        if route.context_window is not None and self.input_tokens > route.context_window:
            return (
                f"prompt of ~{self.input_tokens} tokens exceeds its context window "
                f"of {route.context_window}"
            )
        return None

    def _output_budget(self, route: Route, route_kwargs: dict[str, Any]) -> int:
        for source in (route_kwargs, self.kwargs):
            for name in ("max_tokens", "max_output_tokens", "max_completion_tokens"):
                value = source.get(name)
                if isinstance(value, int) and value > 0:
                    return value
        if self.router.max_tokens:
            return self.router.max_tokens
        return route.output_budget or self.router.default_output_tokens

    # -------------------------------------------------------------- outcomes

    def succeeded(self, attempt: Attempt, message: BaseMessage | None) -> None:
        """Settle the reservation with real usage and note the route's headers."""
        route = attempt.route
        now = self.clock.now()
        self.ledger.settle(attempt.reservation, usage_demand(message, self.input_tokens), now)
        self.alerts = self.router.alert_tracker.check(
            self.ledger, route.pool, self.pool_limits[route.pool], attempt.reservation, now
        )
        if message is not None:
            self._observe_headers(route, message, now)
            cost = _message_cost(route, message)
            if cost is not None:
                message.response_metadata["cost"] = cost
        # Served by anyone but the first choice (full, skipped or failed): a fallback.
        self.stats.served(route.name, fallback=bool(self.reasons))

    def settle_partial(
        self, attempt: Attempt, message: BaseMessage | None, *, error: bool = True
    ) -> None:
        """Count what a stream spent before it broke off or was abandoned."""
        self.ledger.settle(
            attempt.reservation,
            usage_demand(message, self.input_tokens),
            self.clock.now(),
        )
        if error:
            self.stats.failed(attempt.route.name)
        else:
            self.stats.served(attempt.route.name, fallback=bool(self.reasons))

    def failed(self, attempt: Attempt, exc: BaseException) -> None:
        """Act on a vendor failure; return to try the next route, or raise."""
        route = attempt.route
        failure = classify(exc)
        now = self.clock.now()
        self.stats.failed(route.name)
        self.last_vendor_error = exc
        # The vendor refused or never answered: it spent no tokens. Requests stay
        # counted for failures the vendor may have counted (5xx, timeouts).
        spent = 1 if failure.kind == FailureKind.TRANSIENT else 0
        self.ledger.settle(attempt.reservation, Demand(spent, 0, 0), now)
        self.reasons[route.name] = f"{failure.kind.value}: {failure.message}"
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
                raise self.first_error from None

    def _act(self, route: Route, failure: Failure, now: float) -> float | None:
        router = self.router
        kind = failure.kind
        if kind == FailureKind.AUTHENTICATION:
            self.ledger.disable(route.key, f"disabled: {failure.message}")
            return None
        if kind == FailureKind.MODEL_UNAVAILABLE:
            successor = successor_of(route)
            hint = f"; the catalog names {successor!r} as its successor" if successor else ""
            self.ledger.mark_unavailable(
                model_subject(route),
                now + router.model_recheck,
                f"model {route.model_name!r} unavailable{hint}: {failure.message}",
            )
            _warn_unavailable_once(route, successor, router.model_recheck)
            return None
        if kind == FailureKind.RATE_LIMIT:
            until = now + (failure.retry_after or router.rate_limit_cooldown)
        elif kind == FailureKind.QUOTA_EXHAUSTED:
            until = self._period_end(route, failure, now)
        elif kind == FailureKind.TRANSIENT:
            until = now + max(failure.retry_after or 0.0, router.transient_cooldown)
        else:
            return None
        self.ledger.block(route.pool, until, f"{kind.value}: {failure.message}")
        return until

    def _period_end(self, route: Route, failure: Failure, now: float) -> float:
        """When the window a quota wall names resets (the vendor's own clock)."""
        limits = self.pool_limits[route.pool]
        if failure.period in ("day", "month"):
            for limit in limits:
                window = limit.window
                if window.kind == "calendar" and window.unit == failure.period:
                    return window.bounds(now)[1]
            return Limit.parse(f"1/{failure.period}").window.bounds(now)[1]
        if failure.retry_after:
            return now + failure.retry_after
        calendar = [lim.window.bounds(now)[1] for lim in limits if lim.window.kind == "calendar"]
        return max(calendar) if calendar else now + 86_400

    def _observe_headers(self, route: Route, message: BaseMessage, now: float) -> None:
        headers = take_captured_headers() or message.response_metadata.get("headers")
        if isinstance(headers, Mapping) and headers:
            self._observe(route, headers, now)

    def _observe(self, route: Route, headers: Mapping[str, str], now: float) -> None:
        """Bring the pool in line with what the vendor's headers say.

        A counter that matches one of the pool's limits lowers its room. A counter
        with a size the pool has no limit for becomes a learned limit (kept in the
        ledger, so every process enforces it), unless a configured limit covers
        that metric and window. A counter at 0 with no size still blocks the pool
        until its reset: the vendor said no more.
        """
        limits = self.pool_limits[route.pool]
        for seen in read_rate_limit_headers(headers, now=now):
            limit = _match_limit(limits, seen.metric, seen.limit, seen.reset_after)
            stated = seen.limit is not None and seen.limit > 0
            if stated and (
                limit is None
                or (limit.amount != seen.limit and not self.router.is_configured(route.pool, limit))
            ):
                # The vendor states a limit the pool lacks, or one a catalog figure
                # got wrong: the vendor is the better authority than the catalog.
                limit = self.router.learn_limit(route, seen, now) or limit
            if limit is not None:
                self.ledger.observe(route.pool, limit, seen.remaining, now)
            elif seen.remaining == 0:
                wait = seen.reset_after if seen.reset_after is not None else None
                until = now + (wait if wait is not None else self.router.rate_limit_cooldown)
                self.ledger.block(route.pool, until, f"the vendor reports no {seen.metric} left")

    # ------------------------------------------------------------ giving up

    def wait_or_raise(self) -> float:
        """Nobody could serve: the seconds to wait before trying again, or raise."""
        if self.first_error is not None:
            raise self.first_error
        now = self.clock.now()
        resets = min(self.retry_ats) if self.retry_ats else None
        budget = self.router.max_wait - self.waited
        if resets is not None and budget > 0 and resets - now <= budget:
            delay = max(0.0, resets - now) + 0.001
            self.waited += delay
            self.reasons.clear()
            self.retry_ats.clear()
            logger.info("all routes are full; waiting %.1fs for quota", delay)
            return delay
        error = QuotaExhaustedError(
            self.reasons,
            dt.datetime.fromtimestamp(resets, dt.timezone.utc) if resets else None,
        )
        if self.last_vendor_error is not None:
            raise error from self.last_vendor_error
        raise error


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


def _tool_tokens(tools: Sequence[Any] | None) -> int:
    if not tools:
        return 0
    chars = 0
    for tool in tools:
        try:
            chars += len(str(convert_to_openai_tool(tool)))
        except Exception:  # noqa: BLE001 - an odd tool shape only costs estimate accuracy
            chars += 200
    return math.ceil(chars / 4)


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
