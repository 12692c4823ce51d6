"""Chat routing: the quota core's admission, planned in terms of messages and tools.

:class:`Settings` is built once from the router's fields; :class:`RoutedCall` holds
one call's state and yields :class:`Attempt` objects that carry everything the vendor
call needs (the messages in that vendor's shape, vendor-shaped kwargs, stop words),
so each of the four call paths of the chat model only calls the vendor and reports
the outcome. What is chat here: the demand (prompt tokens + the output budget), which
routes can take a call (tools, ``bind_tools`` options, context window), the vendor
kwargs, and what an answer spent. Everything else (order, reservations, failures,
waiting, the final error) is :mod:`langchain_quota_router.quota.admission`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import BaseMessage
from langchain_core.messages.utils import count_tokens_approximately

from langchain_quota_router.chat.tokens import TokenEstimator
from langchain_quota_router.quota.admission import Admission, Category, Plan, Policy
from langchain_quota_router.quota.failures import FailureKind, classify
from langchain_quota_router.quota.ledger import Demand, Reservation
from langchain_quota_router.quota.ledger.settle import settle
from langchain_quota_router.quota.limits import MICRO
from langchain_quota_router.quota.pools import PoolLimits
from langchain_quota_router.quota.pricing import micro_dollars
from langchain_quota_router.quota.secrets import redacted
from langchain_quota_router.quota.stats import RouterStats
from langchain_quota_router.quota.watch import QuotaAlert
from langchain_quota_router.vendors import catalog
from langchain_quota_router.vendors.adapters import take_captured_headers

if TYPE_CHECKING:
    from langchain_quota_router.route import Route

__all__ = [
    "ROUTER_KWARGS",
    "TOOL_OPTIONS",
    "Attempt",
    "PoolLimits",
    "RoutedCall",
    "RouterStats",
    "Settings",
]

#: Call-time keyword arguments the router consumes itself.
ROUTER_KWARGS = ("preferred", "tool_options", "json_mode")

#: ``bind_tools`` options that belong to the tools, not to the call: they go through
#: each vendor model's own ``bind_tools``.
TOOL_OPTIONS = ("strict", "parallel_tool_calls")


@dataclass(frozen=True, kw_only=True)
class Settings(Policy):
    """The admission policy plus what planning a chat call needs, taken once."""

    default_output_tokens: int
    max_tokens: int | None
    temperature: float | None
    tokens: TokenEstimator
    text_content: bool = False
    tool_kwargs: dict[tuple[str, int, str], tuple[Any, dict[str, Any]]] = field(
        default_factory=dict, compare=False
    )
    #: What LangChain asks of the router on every call, built with the settings:
    #: its invocation params (without ``stop``) and LangSmith params (no call kwargs).
    invocation: Mapping[str, Any] = field(default_factory=dict, compare=False)
    ls_params: LangSmithParams = field(default_factory=LangSmithParams, compare=False)
    #: Each route's vendor kwargs for a call with no arguments of its own.
    plain_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False)

    @property
    def routes(self) -> tuple[Route, ...]:
        return self.members

    @property
    def route_map(self) -> Mapping[str, Route]:
        return self.member_map


@dataclass(frozen=True)
class _Chat:
    """What a chat plan carries besides the demand."""

    prompt: int
    route_kwargs: dict[str, Any]


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
        text_content: answers that hold only text get a string ``.content``.
        started: when the vendor call was about to start (the router's clock).
    """

    route: Route
    reservation: Reservation
    messages: list[BaseMessage]
    kwargs: dict[str, Any]
    stop: list[str] | None
    prompt_tokens: int = 0
    text_content: bool = False
    started: float = 0.0


def usage_demand(
    message: BaseMessage | None, fallback_input: int, route: Route | None = None
) -> Demand:
    """What a vendor's answer says it spent (estimated when it says nothing): tokens,
    and on a priced ``route`` its cost in micro-dollars: the vendor's own reported
    cost where it gives one (OpenRouter's ``usage.cost``), else tokens x prices."""
    usage = getattr(message, "usage_metadata", None) if message is not None else None
    cached = 0
    if usage:
        spent = Demand(1, int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0)))
        details = usage.get("input_token_details") or {}
        cached = int(details.get("cache_read", 0) or 0)
    else:
        output = count_tokens_approximately([message]) if message is not None else 0
        spent = Demand(1, fallback_input, output)
    if route is None or route.pricing is None:
        return spent
    reported = vendor_cost(message)
    usd = (
        micro_dollars(reported)
        if reported is not None
        else route.pricing.cost(spent.input_tokens, spent.output_tokens, cached)
    )
    return Demand(spent.requests, spent.input_tokens, spent.output_tokens, usd)


def vendor_cost(message: BaseMessage | None) -> float | None:
    """The cost (USD) a vendor reported for an answer, if it did: OpenRouter's
    ``usage.cost``, which ChatOpenAI leaves in ``response_metadata["token_usage"]``."""
    if message is None:
        return None
    usage = message.response_metadata.get("token_usage")
    cost = usage.get("cost") if isinstance(usage, Mapping) else None
    if isinstance(cost, (int, float)) and not isinstance(cost, bool) and cost >= 0:
        return float(cost)
    return None


class RoutedCall(Admission):
    """One chat call's admission: plans each route in chat terms (see the module
    docstring) and turns each admitted route into an :class:`Attempt`."""

    settings: Settings

    def __init__(
        self,
        settings: Settings,
        messages: Sequence[BaseMessage],
        kwargs: dict[str, Any],
        stop: list[str] | None,
    ) -> None:
        kwargs = dict(kwargs)
        super().__init__(settings, preferred=kwargs.pop("preferred", None))
        self.settings = settings
        self.tool_options: dict[str, Any] = dict(kwargs.pop("tool_options", None) or {})
        self.json_mode = bool(kwargs.pop("json_mode", False))
        self.kwargs = kwargs
        #: No arguments of the call's own: each route's vendor kwargs are the settings'.
        self.plain = not kwargs and not self.json_mode and not self.tool_options
        self.messages = list(messages)
        self.stop = stop
        self.tools: Sequence[Any] | None = kwargs.get("tools")
        self.tokens = settings.tokens
        # Counted once; each route's estimate scales it by what that route's vendor
        # reported for earlier prompts (see chat.tokens.TokenEstimator).
        self.raw_tokens = self.tokens.count(self.messages, self.tools)
        self.argument_error: TypeError | None = None
        self.alerts: list[QuotaAlert] = []
        self._costs: dict[str, int] = {}
        self._responded: set[int] = set()

    # ------------------------------------------------------------ candidates

    def attempts(self) -> Iterator[Attempt]:
        """Admitted routes, best first; each must end in succeeded(), failed() or
        abandoned()."""
        for plan, reservation in self.admitted():
            yield self._attempt(plan, reservation)

    async def aattempts(self) -> AsyncGenerator[Attempt, None]:
        """:meth:`attempts` for the async paths: the ledger is never asked on the
        event loop (see :meth:`Ledger.areserve`)."""
        async with contextlib.aclosing(self.aadmitted()) as admitted:
            async for plan, reservation in admitted:
                yield self._attempt(plan, reservation)

    def _attempt(self, plan: Plan, reservation: Reservation) -> Attempt:
        route: Route = plan.member
        chat: _Chat = plan.payload
        take_captured_headers()  # forget any stale headers from an earlier call
        return Attempt(
            route,
            reservation,
            route.adapter.messages(self.messages),
            chat.route_kwargs,
            self.stop,
            chat.prompt,
            self.settings.text_content,
            self.clock.now(),
        )

    def plan(self, member: Any) -> Plan | object | None:
        """What asking route ``member`` would take, or None when it cannot take the
        call or its pool is known full, or ``STOP``."""
        route: Route = member
        prompt = self.tokens.for_route(route.name, self.raw_tokens)
        skip = self._cannot_take(route, prompt)
        if skip is not None:
            self.skip(route, *skip)
            return None
        # Known full for any demand of this size (the output only adds to it): no
        # need to work out the vendor's arguments, nor to ask the ledger.
        if self.ledger.full_pools:
            known = self.ledger.remembered(route.pool, Demand(1, prompt, 0), self.clock.now())
            if known is not None:
                self._refused(route, known)
                return None
        try:
            route_kwargs = self._plain_kwargs(route) if self.plain else self._route_kwargs(route)
        except TypeError as exc:
            # The route's own bind_tools does not take an option (strict=...).
            self.skip(route, f"cannot take these bind_tools options ({exc})", "tools")
            return None
        except Exception as exc:  # noqa: BLE001 - the route's own bind_tools refused
            self.skip(route, f"cannot take these tools ({exc})", "tools")
            return None
        output = self._output_budget(route, route_kwargs)
        usd = route.pricing.estimate(prompt, output) if route.pricing is not None else 0
        demand = Demand(1, prompt, output, usd)
        return self.plan_demand(route, demand, _Chat(prompt, route_kwargs), checked=True)

    def expected_cost(self, member: Any) -> int:
        """What this call would cost on route ``member`` (micro-dollars): its prompt
        as that route counts it and its output budget, at the route's prices (a
        route without prices counts as free)."""
        route: Route = member
        if route.pricing is None or route.pricing.free:
            return 0
        known = self._costs.get(route.name)
        if known is None:
            prompt = self.tokens.expected(route.name, self.raw_tokens)
            known = route.pricing.estimate(prompt, self._output_budget(route, {}))
            self._costs[route.name] = known
        return known

    def _cannot_take(self, route: Route, prompt: int) -> tuple[str, Category] | None:
        if self.tools and type(route.model).bind_tools is BaseChatModel.bind_tools:
            return "cannot call tools", "tools"
        if route.context_window is not None and prompt > route.context_window:
            reason = f"prompt of ~{prompt:,} tokens over the {route.context_window:,} context"
            return reason, "context"
        return None

    def _plain_kwargs(self, route: Route) -> dict[str, Any]:
        """:meth:`_route_kwargs` of a call with no arguments of its own (no tools,
        no JSON mode, no vendor kwargs): the same on every call, kept per settings."""
        known = self.settings.plain_kwargs.get(route.name)
        if known is None:
            known = self.settings.plain_kwargs[route.name] = self._route_kwargs(route)
        return known

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

    def responded(self, attempt: Attempt) -> None:
        """The route answered (or sent its first token): note how long it took,
        once per attempt, for ``strategy="latency"``."""
        if id(attempt) in self._responded:
            return
        self._responded.add(id(attempt))
        self.stats.latency(attempt.route.name, self.clock.now() - attempt.started, self.clock.now())

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
        self.responded(attempt)
        # The vendor answered and was paid: from here a ledger failure is retried
        # in the background or logged, never raised instead of the answer.
        used = usage_demand(message, attempt.prompt_tokens, attempt.route)
        settled = settle(self.ledger, attempt.reservation, used, self.clock.now())
        self._noted(attempt, message, headers, used, settled)

    async def asucceeded(self, attempt: Attempt, message: BaseMessage | None) -> None:
        """:meth:`succeeded` without blocking the event loop."""
        headers = take_captured_headers()
        self.responded(attempt)
        ledger = self.ledger
        used = usage_demand(message, attempt.prompt_tokens, attempt.route)
        plan = Plan(attempt.route, used, ())
        settled = await self.asettled(plan, attempt.reservation, used)
        if not ledger.blocking or self.quiet(attempt.reservation, _headers(message, headers), used):
            self._noted(attempt, message, headers, used, settled)
        else:
            await ledger.arun(self._noted, attempt, message, headers, used, settled)

    def _noted(
        self,
        attempt: Attempt,
        message: BaseMessage | None,
        headers: Mapping[str, str] | None,
        used: Demand,
        settled: bool,
    ) -> None:
        """Everything after settling a paid answer: calibration, then the core's
        alerts, headers and counters, with the answer's cost."""
        route = attempt.route
        reported = getattr(message, "usage_metadata", None) if message is not None else None
        if reported and reported.get("input_tokens"):
            self.tokens.observe(route.name, self.raw_tokens, int(reported["input_tokens"]))
        cost = used.usd / MICRO if route.pricing is not None else None
        if message is not None and cost is not None:
            message.response_metadata["cost"] = cost
        self.alerts = self.after_answer(
            route,
            attempt.reservation,
            used,
            _headers(message, headers),
            settled=settled,
            cost=cost,
        )

    def abandoned(
        self,
        attempt: Attempt,
        message: BaseMessage | None,
        *,
        error: bool = True,
        counted: bool = True,
    ) -> None:
        """Settle a call that ended without a whole answer: a stream broken off after
        its first chunk, a stream the caller stopped reading, a cancelled task.

        The request stays counted (the vendor saw it) with what it sent so far; the
        unspent output estimate is released. ``counted=False`` (a hedge that lost
        the race) counts it neither as served nor as failed.
        """
        route = attempt.route
        if message is not None:
            spent = usage_demand(message, attempt.prompt_tokens, route)
        else:
            # Nothing came back: the vendor may still bill the prompt.
            usd = route.pricing.cost(attempt.prompt_tokens, 0) if route.pricing else 0
            spent = Demand(1, attempt.prompt_tokens, 0, usd)
        settle(self.ledger, attempt.reservation, spent, self.clock.now())
        self.end_probe(tested=False)
        self.stats.spent(route.name, route.pool, spent)
        if not counted:
            return
        if error:
            self.stats.failed(route.name, "interrupted")
        else:
            fallback = self.fell_back()
            self.served(route, "stopped by the caller")
            self.stats.served(route.name, fallback=fallback)

    async def aabandoned(
        self,
        attempt: Attempt,
        message: BaseMessage | None,
        *,
        error: bool = True,
        counted: bool = True,
    ) -> None:
        """:meth:`abandoned` without blocking the event loop. Safe to await while
        the caller is being cancelled: the settlement runs to its end regardless."""
        done = asyncio.ensure_future(
            self.ledger.arun(
                functools.partial(self.abandoned, attempt, message, error=error, counted=counted)
            )
        )
        await asyncio.shield(done)

    async def afailed(self, attempt: Attempt, exc: BaseException) -> None:
        """:meth:`failed` without blocking the event loop (raises as it does)."""
        await self.ledger.arun(self.failed, attempt, exc)

    def failed(self, attempt: Attempt, exc: BaseException) -> None:
        """Act on a vendor failure; return to try the next route, or raise."""
        route = attempt.route
        now = self.clock.now()
        failure = classify(exc, now=now)
        if isinstance(exc, TypeError) and failure.kind is FailureKind.UNKNOWN:
            # An argument this vendor's client does not take (model=... at call
            # time): the caller's mistake, not the vendor's. No cooldown.
            settle(self.ledger, attempt.reservation, Demand(0, 0, 0), now)
            self.end_probe(tested=False)
            self.skip(route, f"does not take this call's arguments ({exc})", "argument")
            self.argument_error = self.argument_error or exc
            return
        self.failed_with(route, attempt.reservation, exc, failure)

    def error(self, resets: float | None) -> BaseException:
        """The core's error, except that a call every route refused for its
        arguments raises the vendor's own ``TypeError``."""
        if set(self.categories.values()) == {"argument"} and self.argument_error is not None:
            return redacted(self.argument_error, self.keys())
        return super().error(resets)


def _headers(
    message: BaseMessage | None, captured: Mapping[str, str] | None
) -> Mapping[str, str] | None:
    """The rate-limit headers of an answer: captured from the vendor's HTTP
    response, or left in ``response_metadata`` by the vendor class."""
    if captured:
        return captured
    if message is not None:
        found = message.response_metadata.get("headers")
        if isinstance(found, Mapping) and found:
            return found
    return None


def successor_of(route: Route) -> str | None:
    """The model the catalog names as the successor of a route's retired model."""
    return catalog.successor_of(route.provider, route.model_name) or catalog.successor_of(
        None, route.model_name
    )
