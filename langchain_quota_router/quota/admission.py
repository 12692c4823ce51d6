"""Admission: for one call, which routes or keys to ask, in what order, and what
their failures mean. The part of routing every client shares.

The quota core's clients (the chat model, embeddings, key rotators, the proxy) each
plan their own attempts; this module decides for all of them:

1. order the members (routes or keys) by the strategy, the caller's ``preferred``
   member first;
2. skip members whose pool is known full, blocked, disabled or whose model is gone,
   then ask the ledger to reserve; a refused member is never called;
3. after the call, settle the reservation, or classify the failure and block, cool
   down, disable or mark the model unavailable, and learn limits from headers;
4. when nobody is left, wait (bounded by ``max_wait``) or raise the error the
   client's ``error_for`` builds from why each member could not serve.

It knows nothing of messages, tools or LangChain: a member is anything with a name,
a pool, a credential, a priority, a provider and a model name.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import math
import re
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from langchain_quota_router.quota.clock import Clock
from langchain_quota_router.quota.errors import LedgerError
from langchain_quota_router.quota.failures import Failure, FailureKind, classify
from langchain_quota_router.quota.headers import (
    RateLimitHeader,
    read_rate_limit_headers,
)
from langchain_quota_router.quota.ledger import (
    Demand,
    Ledger,
    Refusal,
    Reservation,
)
from langchain_quota_router.quota.ledger.settle import asettle, settle
from langchain_quota_router.quota.limits import Limit
from langchain_quota_router.quota.pools import PoolLimits, Probe, RoomBoard
from langchain_quota_router.quota.secrets import MaskMemo, mask, redacted
from langchain_quota_router.quota.stats import RouterStats
from langchain_quota_router.quota.watch import AlertTracker

logger = logging.getLogger("langchain_quota_router")

# Why a member could not serve, in the words the final error is chosen by.
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
FAILURE_CATEGORIES: dict[FailureKind, Category] = {
    FailureKind.RATE_LIMIT: "quota",
    FailureKind.QUOTA_EXHAUSTED: "quota",
    FailureKind.AUTHENTICATION: "auth",
    FailureKind.TRANSIENT: "transient",
    FailureKind.CONTEXT_TOO_LONG: "context",
    FailureKind.MODEL_UNAVAILABLE: "unavailable",
    FailureKind.BAD_REQUEST: "other",
    FailureKind.UNKNOWN: "other",
}


Outcome = Literal["served", "skipped", "refused", "failed"]
"""What happened to a member on one call: it answered (``served``); it could not
take the call and was not asked (``skipped``: tools, context window, arguments); the
ledger turned it away (``refused``: pool full, blocked, key disabled, model
retired); or the vendor was called and failed (``failed``)."""


@dataclass(frozen=True)
class Considered:
    """One member considered for a call, in the order considered: how an answer
    (or an error) was reached.

    Attributes:
        name: the route's or key's name.
        outcome: ``served``, ``skipped``, ``refused`` or ``failed``.
        reason: why, in words (``pool full: 50/50 requests per 24h until 00:00
            UTC``, ``key disabled (401)``, ``vendor 429, retry in 47 s``).
    """

    name: str
    outcome: Outcome
    reason: str = ""

    def as_dict(self, label: str = "route") -> dict[str, str]:
        """The entry as plain data (``response_metadata["attempts"]``)."""
        return {label: self.name, "outcome": self.outcome, "reason": self.reason}


class Member(Protocol):
    """What admission needs of a route or a key."""

    @property
    def name(self) -> str: ...

    @property
    def pool(self) -> str: ...

    @property
    def credential(self) -> str: ...

    @property
    def priority(self) -> int: ...

    @property
    def provider(self) -> str: ...

    @property
    def model_name(self) -> str: ...


def model_subject(member: Member) -> str:
    """What the ledger marks unavailable for a member: its model on its key.

    Another model on the same key stays usable, and so does the same model on
    another key (vendors retire models for everyone, but a key may lack access).
    """
    return f"{member.credential}|{member.model_name}"


@dataclass(frozen=True, kw_only=True)
class Policy:
    """Everything admission needs from its client, taken once when it is built.

    Attributes:
        members: the routes or keys, in the order given.
        member_map: name -> member.
        pools: each pool's limits (configured, catalog, learned).
        ledger: where quota is counted.
        clock: what "now" is.
        stats: this process's counters (and the fleet's, when wired).
        alerts: threshold alerts as pools fill.
        strategy: ``"priority"`` (in priority order), ``"spread"`` (most room
            first), or order keys (see :data:`STRATEGIES`): ``"cost"``, ``"latency"``,
            or a tuple such as ``("free", "latency")``; priority breaks every tie.
        latency: each member's observed latency, for the ``"latency"`` key.
        max_wait: seconds a call may wait for quota before giving up.
        transient_cooldown: seconds a member rests after a 5xx or timeout.
        rate_limit_cooldown: seconds a member rests after a 429 that names no time.
        model_recheck: seconds before a retired model is asked again.
        error_for: builds the error raised when nobody can serve, from the
            categories, the (masked) reasons and the earliest reset.
        secrets: every configured key, longest first (masked out of every reason).
        successor_of: the model that replaces a member's retired model, if known.
        retry_bad_requests: after a request the vendor calls bad, try one more
            member before raising it (chat: another vendor may take it), or raise
            at once (a key rotator: another key would be refused the same way).
        probe_wait: seconds a call waits for the first answer on a pool whose
            limits are provisional (another call is out to read the vendor's
            headers) before it goes ahead under the provisional limits.
    """

    members: tuple[Any, ...]
    member_map: Mapping[str, Any]
    pools: PoolLimits
    ledger: Ledger
    clock: Clock
    stats: RouterStats
    alerts: AlertTracker
    strategy: str | tuple[str, ...]
    max_wait: float
    transient_cooldown: float
    rate_limit_cooldown: float
    model_recheck: float
    error_for: Callable[[set[str], Mapping[str, str], dt.datetime | None], BaseException]
    secrets: Callable[[], list[str]] = field(default=list, compare=False)
    successor_of: Callable[[Any], str | None] = field(default=lambda m: None, compare=False)
    retry_bad_requests: bool = True
    probe_wait: float = 30.0
    latency: Any = field(default=None, compare=False)
    #: When each (pool, limit series) last had a vendor's counter written (see
    #: :meth:`Admission.observe`).
    observed: dict[tuple[str, str], float] = field(default_factory=dict, compare=False)
    #: Masks the explanations' names and reasons (remembering the usual ones).
    masked: MaskMemo = field(default_factory=MaskMemo, compare=False)

    @functools.cached_property
    def order_keys(self) -> tuple[str, ...]:
        """The strategy as order keys (empty for ``priority`` and ``spread``)."""
        return order_keys(self.strategy)

    @functools.cached_property
    def uses_rooms(self) -> bool:
        """Whether the order reads each pool's room left."""
        return self.strategy == "spread" or "room" in self.order_keys

    @functools.cached_property
    def by_priority(self) -> tuple[Any, ...]:
        """The members in priority order (sorted once, not on every call)."""
        return tuple(sorted(self.members, key=lambda m: m.priority))

    @functools.cached_property
    def by_pool(self) -> dict[str, tuple[Any, ...]]:
        """Each pool's members, in priority order."""
        found: dict[str, list[Any]] = {}
        for member in self.by_priority:
            found.setdefault(member.pool, []).append(member)
        return {pool: tuple(members) for pool, members in found.items()}

    @functools.cached_property
    def rooms(self) -> RoomBoard:
        """Each pool's room as last seen, for ``strategy="spread"``."""
        return RoomBoard(self.by_pool)


@dataclass(frozen=True)
class Plan:
    """A member's demand, worked out before asking the ledger.

    Attributes:
        member: the route or key.
        demand: what to reserve.
        limits: the pool's limits now.
        payload: whatever the client needs to make the call (the chat model keeps
            the vendor kwargs and the prompt estimate here).
    """

    member: Any
    demand: Demand
    limits: tuple[Limit, ...]
    payload: Any = None


#: Seconds between two writes of a vendor's rate-limit counter that agrees with the
#: ledger, per pool and limit (one that has less left is written at once).
OBSERVE_EVERY = 1.0

#: What :meth:`Admission.plan` returns when no further member may be tried.
STOP = object()

#: What each named strategy orders by, key after key (priority breaks every tie):
#: ``free`` (members whose calls cost nothing first), ``cost`` (the expected cost of
#: this call), ``room`` (most room left in the pool first), ``latency`` (fastest
#: observed first; a member never observed first of all, so it gets measured).
STRATEGIES: dict[str, tuple[str, ...]] = {
    "priority": (),
    "spread": (),
    "cost": ("cost", "room"),
    "latency": ("free", "latency"),
}
ORDER_KEYS = ("free", "cost", "room", "latency", "priority")


def order_keys(strategy: str | Sequence[str]) -> tuple[str, ...]:
    """A strategy (a name of :data:`STRATEGIES` or a sequence of order keys) as the
    order keys it sorts by; a ValueError names what is unknown."""
    if isinstance(strategy, str):
        if strategy not in STRATEGIES:
            known = ", ".join(STRATEGIES)
            msg = f"unknown strategy {strategy!r}; known: {known} or a tuple of {ORDER_KEYS}"
            raise ValueError(msg)
        return STRATEGIES[strategy]
    keys = tuple(strategy)
    unknown = [k for k in keys if k not in ORDER_KEYS]
    if not keys or unknown:
        msg = f"a strategy tuple takes order keys from {ORDER_KEYS}, got {keys!r}"
        raise ValueError(msg)
    return keys


class Admission:
    """The state and policy of one call's admission; see the module docstring.

    Clients subclass it (or use it as is) and override :meth:`plan` to say what a
    member's call would take, or why the member cannot take it.
    """

    def __init__(self, policy: Policy, *, preferred: str | None = None) -> None:
        self.policy = policy
        self.ledger = policy.ledger
        self.clock = policy.clock
        self.pools = policy.pools
        self.stats = policy.stats
        if preferred is not None and preferred not in policy.member_map:
            msg = (
                f"preferred route {preferred!r} is not one of this router's "
                f"routes: {sorted(policy.member_map)}"
            )
            raise ValueError(msg)
        self.preferred = preferred
        self.reasons: dict[str, str] = {}
        self.categories: dict[str, Category] = {}
        self.retry_ats: list[float] = []
        #: Members skipped because their pool is known to have no room at all: their
        #: reasons are written out only if someone reads them (see _write_known_full_reasons).
        self.known_full: list[Any] = []
        self._known_counted = 0
        #: What :attr:`considered` is built from: entries, and members known full
        #: (written out only when read).
        self._trail: list[Considered | Any] = []
        self.first_error: BaseException | None = None
        self.last_vendor_error: BaseException | None = None
        self.bad_request_retries_left: int | None = None
        self.waited = 0.0
        self.tried = 0
        #: The last rate-limit headers read, and what they said.
        self._headers_read: tuple[Mapping[str, str], list[RateLimitHeader]] | None = None
        #: The pool this call sends the first call on, while its answer is out.
        self._probe: tuple[str, Probe] | None = None

    # ------------------------------------------------------------ candidates

    def admitted(self) -> Iterator[tuple[Plan, Reservation]]:
        """Admitted members, best first, each with its reservation; each must end
        in :meth:`settled`, :meth:`failed_with` or an abandon of the client's."""
        ledger, now = self.ledger, self.clock.now()
        self.pools.refresh(now)
        if self._latency_due(now):
            self._refresh_latency(now)
        for pool in self._pools_to_read():
            self.policy.rooms.usage(pool, ledger.usage(pool, self.pools[pool], now))
        for plan in self._plans(now):
            if self.pools.untested(plan.member.pool):
                plan = self._after_probe(plan)
            member = plan.member
            made = ledger.reserve(
                member.pool,
                plan.limits,
                plan.demand,
                self.clock.now(),
                key=member.credential,
                model=model_subject(member),
            )
            if self._taken(plan, made):
                assert isinstance(made, Reservation)
                yield plan, made

    async def aadmitted(self) -> AsyncGenerator[tuple[Plan, Reservation], None]:
        """:meth:`admitted` for async callers: the ledger is never asked on the
        event loop (see :meth:`Ledger.areserve`)."""
        ledger, now = self.ledger, self.clock.now()
        if self.pools.due(now):
            await ledger.arun(self.pools.refresh, now)
        if self._latency_due(now):
            await ledger.arun(self._refresh_latency, now)
        for pool in self._pools_to_read():
            self.policy.rooms.usage(pool, await ledger.ausage(pool, self.pools[pool], now))
        for plan in self._plans(now):
            if self.pools.untested(plan.member.pool):
                plan = await self._aafter_probe(plan)
            member = plan.member
            made = await ledger.areserve(
                member.pool,
                plan.limits,
                plan.demand,
                self.clock.now(),
                key=member.credential,
                model=model_subject(member),
            )
            if self._taken(plan, made):
                assert isinstance(made, Reservation)
                yield plan, made

    # ------------------------------------------------------ provisional limits

    def _after_probe(self, plan: Plan) -> Plan:
        """``plan`` once its pool may be asked: its limits are provisional and no
        answer has been read, so one call goes out first (this one, or the others
        wait for it, at most ``probe_wait`` s); the limits are read again after."""
        pools, pool = self.pools, plan.member.pool
        deadline = time.monotonic() + self.policy.probe_wait
        while True:
            mine, probe = pools.take_probe(pool, stale_after=self.policy.probe_wait)
            if probe is None:
                break
            if mine:
                self._probe = (pool, probe)
                break
            left = deadline - time.monotonic()
            if left <= 0 or not probe.done.wait(left):
                break
        return dataclasses.replace(plan, limits=pools[pool])

    async def _aafter_probe(self, plan: Plan) -> Plan:
        """:meth:`_after_probe` for async callers: waits without blocking the loop."""
        pools, pool = self.pools, plan.member.pool
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.policy.probe_wait
        while True:
            mine, probe = pools.take_probe(pool, stale_after=self.policy.probe_wait)
            if probe is None:
                break
            if mine:
                self._probe = (pool, probe)
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(pools.add_waiter(probe, loop), left)
            except asyncio.TimeoutError:
                break
        return dataclasses.replace(plan, limits=pools[pool])

    def end_probe(self, *, tested: bool) -> None:
        """The call this one sent first on a provisional pool has ended: wake the
        calls waiting for it. ``tested``: its answer (headers or none) was read."""
        if self._probe is not None:
            pool, probe = self._probe
            self._probe = None
            self.pools.end_probe(pool, probe, tested=tested)

    def _latency_due(self, now: float) -> bool:
        board = self.policy.latency
        return board is not None and "latency" in self.policy.order_keys and board.due(now)

    def _refresh_latency(self, now: float) -> None:
        """Take in the fleet's latencies; a ledger that cannot say leaves this
        process's own (ordering is a preference, never a reason to fail a call)."""
        try:
            self.policy.latency.refresh(now)
        except Exception as exc:  # noqa: BLE001 - any storage error: keep what we know
            logger.debug("could not read the fleet's latencies: %s", exc)

    def _plans(self, now: float) -> Iterator[Plan]:
        """The members to ask the ledger for, in order, each with its demand
        (lazily: the caller stops at the first admitted one)."""
        closed = self.ledger.full_pools.closed(now)
        for member in self._ordered():
            if member.pool in closed:
                self._closed(member)
                continue
            plan = self.plan(member)
            if plan is STOP:
                return
            if isinstance(plan, Plan):
                yield plan

    def plan(self, member: Any) -> Plan | object | None:
        """What asking ``member`` would take: a :class:`Plan`, or None when it is
        skipped without asking the ledger, or :data:`STOP` when no more members
        may be tried. This one reserves one request; clients override it."""
        return self.plan_demand(member, Demand(1, 0, 0))

    def plan_demand(
        self, member: Any, demand: Demand, payload: Any = None, *, checked: bool = False
    ) -> Plan | object | None:
        """A :class:`Plan` for ``demand``, unless the pool is known full for it (then
        None, the refusal noted) or no more members may be tried (:data:`STOP`).
        ``checked``: the caller already asked whether the pool is known full."""
        if not checked and self.ledger.full_pools:  # any pool known full: is this one?
            floor = Demand(demand.requests, demand.input_tokens, 0)
            known = self.ledger.remembered(member.pool, floor, self.clock.now())
            if known is not None:
                self._refused(member, known)
                return None
        if self.bad_request_retries_left is not None and self.bad_request_retries_left <= 0:
            return STOP
        return Plan(member, demand, self.pools[member.pool], payload)

    def _taken(self, plan: Plan, made: Reservation | Refusal) -> bool:
        """Whether a reservation was made (a refusal is noted)."""
        member = plan.member
        if isinstance(made, Refusal):
            self.end_probe(tested=False)
            self._refused(member, made)
            return False
        if made.levels and self.policy.uses_rooms:
            self.policy.rooms.note(member.pool, made.levels)
        # After a bad request, one more member is tried: one that is called, not
        # one the ledger turned away without sending anything.
        if self.bad_request_retries_left is not None:
            self.bad_request_retries_left -= 1
        self._count_known_full()
        self.tried += 1
        return True

    def _refused(
        self, member: Any, refusal: Refusal, *, counted: bool = True, recorded: bool = True
    ) -> None:
        category = "quota" if refusal.limit is not None else _hold_category(refusal)
        if recorded:
            self.skip(
                member,
                refusal.reason,
                category,
                outcome="refused",
                words=refusal_words(refusal, self.clock.now()),
            )
        else:
            self.reasons[member.name] = refusal.reason
            self.categories[member.name] = category
        if counted:
            self.stats.refused(member.name, member.pool)
        if refusal.limit is not None:
            self.policy.rooms.full(member.pool)
        if refusal.retry_at is not None:
            self.retry_ats.append(refusal.retry_at)

    def _count_known_full(self) -> None:
        """Count the members passed over as known full since the last count."""
        if len(self.known_full) > self._known_counted:
            self.stats.refused_all(tuple(self.known_full[self._known_counted :]))
            self._known_counted = len(self.known_full)

    def _write_known_full_reasons(self) -> None:
        """Write out why the members known full were skipped (only when it is read:
        skipping a thousand full routes must not cost a thousand reasons)."""
        for member in self.known_full:
            known = self.ledger.full_pools.known(member.pool)
            if known is not None:
                self._refused(member, known, counted=False, recorded=False)
        self.known_full.clear()
        self._known_counted = 0

    def _closed(self, member: Any) -> None:
        """Skip a member whose pool is known to have no room at all (cheaply: a
        thousand such members must cost little more than one)."""
        self.known_full.append(member)
        self._trail.append(member)
        if self.policy.uses_rooms:
            self.policy.rooms.full(member.pool)

    def fell_back(self) -> bool:
        """Whether a member other than the first choice serves (full, skipped, failed)."""
        return bool(self.reasons or self.known_full)

    def skip(
        self,
        member: Any,
        reason: str,
        category: Category,
        *,
        outcome: Outcome = "skipped",
        words: str | None = None,
    ) -> None:
        """Note why ``member`` could not serve this call.

        ``reason`` goes to the error's ``reasons``; ``words`` (default: the reason)
        to the call's :attr:`considered` entries, under ``outcome``.
        """
        self.reasons[member.name] = reason
        self.categories[member.name] = category
        said = reason if words is None else words
        self._trail.append(Considered(member.name, outcome, said))
        logger.debug("%s %s: %s", self.describe(member), outcome, said)

    def served(self, member: Any, reason: str = "") -> None:
        """Note that ``member`` answered; a fallback is logged (INFO) with why the
        members before it did not."""
        self._trail.append(Considered(member.name, "served", reason))
        if logger.isEnabledFor(logging.INFO) and self.fell_back():
            before = self.considered[:-1]
            said = "; ".join(f"{c.name} {c.outcome} ({c.reason})" for c in before[:5])
            more = f"; and {len(before) - 5} more" if len(before) > 5 else ""
            logger.info("%s served after a fallback: %s%s", self.describe(member), said, more)

    @property
    def considered(self) -> list[Considered]:
        """Every member considered for this call, in order, with what happened and
        why. Members passed over because their pool was known full cost nothing on
        the call's path: their entries are written out here, when asked for."""
        out: list[Considered] = []
        full_pools, now = self.ledger.full_pools, self.clock.now()
        for entry in self._trail:
            if isinstance(entry, Considered):
                out.append(entry)
                continue
            known = full_pools.known(entry.pool)
            why = refusal_words(known, now) if known is not None else "pool known full"
            out.append(Considered(entry.name, "refused", why))
        return out

    def explain(self, label: str = "route") -> list[dict[str, str]]:
        """:attr:`considered` as plain data, with no configured key in it (a route
        name or a vendor's message may hold one)."""
        keys = self.keys()
        if not keys:
            return [c.as_dict(label) for c in self.considered]
        masked = self.policy.masked
        return [
            {label: masked(c.name, keys), "outcome": c.outcome, "reason": masked(c.reason, keys)}
            for c in self.considered
        ]

    def _ordered(self) -> Iterator[Any]:
        """The members in the order to try them (lazily: a call the first member
        serves never sorts the others)."""
        policy = self.policy
        preferred = policy.member_map.get(self.preferred) if self.preferred else None
        if preferred is not None:
            yield preferred
        if policy.order_keys:
            rest = [m for m in policy.by_priority if m is not preferred]
            rest.sort(key=self.order_key)  # stable: priority breaks ties
            yield from rest
            return
        if policy.strategy != "spread":
            for member in policy.by_priority:
                if member is not preferred:
                    yield member
            return
        rooms = policy.rooms
        best = rooms.best()
        first = [m for m in policy.by_pool.get(best, ()) if m is not preferred] if best else []
        yield from first
        rest = [m for m in policy.by_priority if m is not preferred and m not in first]
        rest.sort(key=lambda m: -rooms.room(m.pool))  # stable: priority breaks ties
        yield from rest

    def order_key(self, member: Any) -> tuple[float, ...]:
        """Where ``member`` goes under an order-key strategy (lower first)."""
        policy = self.policy
        found: list[float] = []
        for key in policy.order_keys:
            if key == "free":
                found.append(0.0 if self.expected_cost(member) == 0 else 1.0)
            elif key == "cost":
                found.append(float(self.expected_cost(member)))
            elif key == "room":
                found.append(-policy.rooms.room(member.pool))
            elif key == "latency":
                seen = policy.latency.seconds(member.name) if policy.latency else None
                found.append(-1.0 if seen is None else seen)
            else:
                found.append(float(member.priority))
        return tuple(found)

    def expected_cost(self, member: Any) -> int:
        """What this call would cost on ``member`` (micro-dollars), for the ``cost``
        and ``free`` order keys: clients that know their demand say; 0 here."""
        return 0

    def _pools_to_read(self) -> list[str]:
        """Under ``spread`` (or a ``room`` order key), the pools whose room to read
        for this call."""
        if not self.policy.uses_rooms:
            return []
        return self.policy.rooms.to_read()

    # -------------------------------------------------------------- outcomes

    def settled(self, plan: Plan, reservation: Reservation, used: Demand) -> bool:
        """Settle a served call with what it really used (a ledger failure is retried
        in the background, never raised: the vendor was paid). Returns whether the
        settlement is done."""
        return settle(self.ledger, reservation, used, self.clock.now())

    async def asettled(self, plan: Plan, reservation: Reservation, used: Demand) -> bool:
        """:meth:`settled` without blocking the event loop."""
        return await asettle(self.ledger, reservation, used, self.clock.now())

    def after_answer(
        self,
        member: Any,
        reservation: Reservation,
        used: Demand,
        headers: Mapping[str, str] | None,
        *,
        settled: bool,
        cost: float | None = None,
    ) -> list[Any]:
        """Everything after settling a paid answer: alerts, headers and counters.
        Returns the alerts now due."""
        now = self.clock.now()
        alerts: list[Any] = []
        reservation = _as_settled(reservation, used)
        try:
            # The vendor's counters first: an answer saying none is left raises the
            # alert itself (the call's own levels no longer tell, so the ledger does).
            if headers and self.observe(member, headers, now, reservation.levels):
                reservation = dataclasses.replace(reservation, levels=())
            if settled:
                pool = member.pool
                alerts = self.policy.alerts.check(
                    self.ledger,
                    pool,
                    self.pools[pool],
                    reservation,
                    now,
                    learned=lambda limit: self.pools.is_learned(pool, limit),
                )
        except LedgerError as exc:
            logger.warning("could not note pool %r after a paid answer: %s", member.pool, exc)
        finally:
            self.end_probe(tested=True)
        # Served by anyone but the first choice (full, skipped or failed): a fallback.
        fallback = self.fell_back()
        self.served(member, "fallback" if fallback else "first choice")
        self.stats.answered(member.name, member.pool, used, fallback=fallback, cost=cost)
        return alerts

    def quiet(
        self,
        reservation: Reservation,
        headers: Mapping[str, str] | None,
        used: Demand | None = None,
    ) -> bool:
        """Whether noting this answer cannot touch the ledger (no header that needs
        writing, see :meth:`observe`; no alert threshold near once settled with
        ``used``)."""
        levels = _as_settled(reservation, used).levels if used else reservation.levels
        if headers and any(
            action
            for _, _, action in self._header_actions(
                reservation.pool, headers, levels, self.clock.now()
            )
        ):
            return False
        if not self.policy.alerts.thresholds:
            return True
        limits = self.pools.current.get(reservation.pool, ())
        return bool(levels) and not self.policy.alerts.near(limits, levels)

    def failed_with(
        self,
        member: Any,
        reservation: Reservation,
        exc: BaseException,
        failure: Failure | None = None,
    ) -> None:
        """Act on a vendor failure; return to try the next member, or raise."""
        now = self.clock.now()
        failure = failure or classify(exc, now=now)
        # The message goes to the log and the ledger's reasons: never a key the
        # vendor echoed, even one no pattern recognises.
        failure = dataclasses.replace(
            failure, message=mask(failure.message, self.keys(), shapes=False)
        )
        self.stats.failed(member.name, failure.kind.value)
        self.last_vendor_error = exc
        # The vendor refused or never answered: it spent no tokens. Requests stay
        # counted for failures the vendor may have counted (5xx, timeouts), and so
        # does the estimated cost: a call that timed out may still be billed.
        spent = 1 if failure.kind == FailureKind.TRANSIENT else 0
        used = Demand(spent, 0, 0, reservation.demand.usd if spent else 0)
        settle(self.ledger, reservation, used, now)
        if spent:
            self.stats.spent(member.name, member.pool, used)
        self.skip(
            member,
            f"{failure.kind.value}: {failure.message}",
            FAILURE_CATEGORIES[failure.kind],
            outcome="failed",
            words=failure_words(failure),
        )
        try:
            if failure.headers:
                # A 429 states the limits as plainly as a success does.
                self.observe(member, failure.headers, now)
        finally:
            self.end_probe(tested=bool(failure.headers))
        until = self._act(member, failure, now)
        if until is not None:
            self.retry_ats.append(until)
        logger.warning(
            "%s failed (%s, status %s): %s; trying the next one",
            self.describe(member),
            failure.kind.value,
            failure.status,
            failure.message,
        )
        if failure.kind in (FailureKind.BAD_REQUEST, FailureKind.UNKNOWN):
            if self.first_error is None:
                self.first_error = exc
                self.bad_request_retries_left = 1
                if not self.policy.retry_bad_requests:
                    raise self.vendor_error() from None
            else:
                error = self.vendor_error()
                # The vendor's own exception as before; a stand-in keeps its masked
                # cause (``from None`` would drop it).
                raise error from (None if error is self.first_error else error.__cause__)

    def describe(self, member: Any) -> str:
        """How log lines name a member (``route groq``, ``key serp#1``)."""
        return f"route {member.name}"

    def enable_hint(self, member: Any) -> str:
        """How the user lifts a disabled member, in the reason the ledger keeps."""
        return f"router.enable({member.name!r}) or `quota-router enable {member.name}`"

    def _act(self, member: Any, failure: Failure, now: float) -> float | None:
        policy = self.policy
        kind = failure.kind
        wait = failure.retry_after
        if kind == FailureKind.AUTHENTICATION:
            self.ledger.disable(
                member.credential,
                f"disabled: {failure.message} (after fixing the key: {self.enable_hint(member)})",
            )
            return None
        if kind == FailureKind.MODEL_UNAVAILABLE:
            successor = policy.successor_of(member)
            hint = f"; the catalog names {successor!r} as its successor" if successor else ""
            self.ledger.mark_unavailable(
                model_subject(member),
                now + policy.model_recheck,
                f"model {member.model_name!r} unavailable{hint}: {failure.message}",
            )
            _warn_unavailable_once(self.describe(member), member, successor, policy.model_recheck)
            return None
        if kind == FailureKind.RATE_LIMIT:
            # retry-after: 0 means "now", not "the vendor said nothing".
            until = now + (wait if wait is not None else policy.rate_limit_cooldown)
        elif kind == FailureKind.QUOTA_EXHAUSTED:
            until = self._period_end(member, failure, now)
        elif kind == FailureKind.TRANSIENT:
            until = now + max(wait or 0.0, policy.transient_cooldown)
        else:
            return None
        if until <= now:
            return now
        self.ledger.block(member.pool, until, f"{kind.value}: {failure.message}")
        return until

    def _period_end(self, member: Any, failure: Failure, now: float) -> float:
        """When the window a quota wall names resets (the vendor's own clock)."""
        limits = self.pools[member.pool]
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

    def observe(
        self,
        member: Any,
        headers: Mapping[str, str],
        now: float,
        levels: Sequence[tuple[Limit, int]] = (),
    ) -> bool:
        """Bring the pool in line with what the vendor's headers say; whether
        anything was written.

        A counter that matches one of the pool's limits lowers its room. A counter
        with a size the pool has no limit for (or that contradicts a catalog figure)
        becomes a learned limit, unless a configured limit covers that metric and
        window. A counter at 0 with no size still blocks the pool until its reset.

        ``levels`` (an answered call's counts, see :class:`Reservation`) spare the
        ledger a write where the vendor agrees with it: a counter with at least the
        room the ledger already counts is written at most once per
        :data:`OBSERVE_EVERY` seconds per pool and limit (a window that slid since
        the call was admitted can leave the ledger a little behind the vendor;
        that once-a-second write catches it up).
        """
        wrote = False
        for seen, limit, action in self._header_actions(member.pool, headers, levels, now):
            if action == "learn":
                limit = self.pools.learn(member, seen, now) or limit
                # Nothing learned (a configured limit covers it): as a counter of
                # no limit, it blocks the pool only when it is at 0.
                if limit is not None:
                    action = "write"
                elif seen.remaining == 0:
                    action = "block"
                else:
                    action = ""
            if action == "write":
                assert limit is not None
                self.policy.observed[(member.pool, limit.series)] = now
                self.ledger.observe(member.pool, limit, seen.remaining, now)
            elif action == "block":
                wait = seen.reset_after
                until = now + (wait if wait is not None else self.policy.rate_limit_cooldown)
                self.ledger.block(member.pool, until, f"the vendor reports no {seen.metric} left")
            wrote = wrote or action in ("write", "block")
        return wrote

    def _header_actions(
        self,
        pool: str,
        headers: Mapping[str, str],
        levels: Sequence[tuple[Limit, int]],
        now: float,
    ) -> list[tuple[RateLimitHeader, Limit | None, str]]:
        """What each rate-limit header in ``headers`` asks of the ledger: ``"learn"``
        (a size the pool has no limit for), ``"write"`` (the vendor has less left
        than the ledger counts, or the once-a-second write is due), ``"block"`` (none
        left, of a counter the pool has no limit for), or ``""`` (it agrees)."""
        limits = self.pools[pool]
        counted = {lim.series: used for lim, used in levels}
        observed = self.policy.observed
        actions: list[tuple[RateLimitHeader, Limit | None, str]] = []
        read = self._headers_read
        if read is None or read[0] is not headers:  # quiet() then observe(): read once
            read = self._headers_read = (headers, read_rate_limit_headers(headers, now=now))
        for seen in read[1]:
            limit = _match_limit(limits, seen.metric, seen.limit, seen.reset_after)
            stated = seen.limit is not None and seen.limit > 0
            if stated and (
                limit is None
                or (limit.amount != seen.limit and not self.pools.is_configured(pool, limit))
            ):
                actions.append((seen, limit, "learn"))
            elif limit is None:
                actions.append((seen, None, "block" if seen.remaining == 0 else ""))
            else:
                level = counted.get(limit.series)
                agrees = (
                    level is not None
                    and seen.remaining >= limit.units - level
                    and now - observed.get((pool, limit.series), -math.inf) < OBSERVE_EVERY
                )
                actions.append((seen, limit, "" if agrees else "write"))
        return actions

    # ------------------------------------------------------------ giving up

    def wait_or_raise(self) -> float:
        """Nobody could serve: the seconds to wait before trying again, or raise."""
        self._count_known_full()
        self._write_known_full_reasons()
        if self.first_error is not None:
            raise self.vendor_error()
        now = self.clock.now()
        resets = min(self.retry_ats) if self.retry_ats else None
        budget = self.policy.max_wait - self.waited
        if resets is not None and budget > 0 and resets - now <= budget:
            delay = max(0.0, resets - now) + 0.001
            self.waited += delay
            self.reasons.clear()
            self.categories.clear()
            self.retry_ats.clear()
            logger.info("all routes are full; waiting %.1fs for quota", delay)
            return delay
        raise self.error(resets)

    def error(self, resets: float | None) -> BaseException:
        """The error that says why nobody could serve, as the client types it.

        No configured key survives in it: not in the reasons (a vendor's message may
        echo the key) and not in the chained vendor exception, which is replaced by
        a masked stand-in when its traceback would show a key.
        """
        keys = self.keys()
        categories: set[str] = set(self.categories.values())
        categories.discard("argument")
        when = dt.datetime.fromtimestamp(resets, dt.timezone.utc) if resets else None
        error = self.policy.error_for(categories, self.masked_reasons(keys), when)
        with contextlib.suppress(AttributeError, TypeError):  # a type with __slots__
            error.attempts = self.explain()  # type: ignore[attr-defined]
        if self.last_vendor_error is not None:
            error.__cause__ = redacted(self.last_vendor_error, keys)
        return error

    def vendor_error(self) -> BaseException:
        """The vendor's own exception for a bad request, as it is re-raised; when
        its traceback would show a configured key, the client's error for the
        ``"tools"`` category (a bad request) chained to a masked stand-in instead."""
        assert self.first_error is not None
        self._write_known_full_reasons()
        keys = self.keys()
        clean = redacted(self.first_error, keys)
        if clean is self.first_error:
            return clean
        error = self.policy.error_for({"tools"}, self.masked_reasons(keys), None)
        error.__cause__ = clean
        return error

    def surfaced(self, exc: BaseException) -> BaseException:
        """What to raise for a vendor error the caller must see as it is (a stream
        broken after its first chunk): the vendor's own, or a masked stand-in when
        its traceback would show a configured key."""
        return redacted(exc, self.keys())

    def keys(self) -> list[str]:
        """Every configured key, longest first."""
        return self.policy.secrets()

    def masked_reasons(self, keys: list[str] | None = None) -> dict[str, str]:
        """Why each member could not serve, with no configured key in it."""
        keys = self.keys() if keys is None else keys
        # Known keys only: the reasons' other text was redacted when classified.
        return {name: mask(why, keys, shapes=False) for name, why in self.reasons.items()}


def _as_settled(reservation: Reservation, used: Demand) -> Reservation:
    """``reservation`` with its levels as they stand once settled with ``used``: a
    call may cost more than its estimate (a vendor's reported cost), and alerts
    must see what was really spent."""
    demand = reservation.demand
    if not reservation.levels or used == demand:
        return reservation
    levels = tuple(
        (lim, level + used.amount(lim.metric) - demand.amount(lim.metric))
        for lim, level in reservation.levels
    )
    return Reservation(
        reservation.pool,
        demand,
        reservation.entries,
        reservation.at,
        levels,
        reservation.lease_id,
        reservation.expires_at,
    )


def _hold_category(refusal: Refusal) -> Category:
    """What kind of hold refused a reservation, from the reason the ledger keeps."""
    reason = refusal.reason
    if reason.startswith("model "):
        return "unavailable"
    head = reason.split(":", 1)[0]
    return _HOLD_CATEGORIES.get(head, "quota")


_METRIC_WORDS = {
    "requests": "requests",
    "tokens": "tokens",
    "input_tokens": "input tokens",
    "output_tokens": "output tokens",
}


def limit_words(limit: Limit) -> str:
    """A limit as a sentence reads it: ``50 requests per 24h``."""
    window = limit.window
    if window.kind == "once":
        span = "in all (a one-time credit)"
    elif window.kind == "calendar":
        span = f"per {window.unit}" + ("" if window.zone == "UTC" else f" ({window.zone})")
    else:
        span = f"per {window.describe()}"
    return f"{limit.amount:,} {_METRIC_WORDS.get(limit.metric, limit.metric)} {span}"


def when_words(at: float | None, now: float | None = None) -> str:
    """When a moment comes, in UTC: ``00:00 UTC``, or with the date when it is not
    within a day."""
    if at is None:
        return "it is lifted"
    moment = dt.datetime.fromtimestamp(at, dt.timezone.utc)
    now = time.time() if now is None else now
    if 0 <= at - now <= 86_400:
        return moment.strftime("%H:%M UTC")
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def refusal_words(refusal: Refusal, now: float | None = None) -> str:
    """Why the ledger refused, in words: ``pool full: 50/50 requests per 24h until
    00:00 UTC``, ``key disabled (401)``, ``model retired``, ``blocked: vendor 429
    until 12:01 UTC``."""
    limit = refusal.limit
    if limit is not None:
        until = when_words(refusal.retry_at, now) if refusal.retry_at else None
        if refusal.room:
            head = f"pool short: {refusal.room:,} left of {limit_words(limit)}"
        else:
            head = f"pool full: {limit.amount:,}/{limit_words(limit)}"
        if until is None:
            return head if refusal.room else f"{head}, for good (larger than the limit)"
        return f"{head} until {until}"
    reason = refusal.reason
    if reason.startswith("model "):
        return "model retired or not served" + (
            f" (asked again at {when_words(refusal.retry_at, now)})" if refusal.retry_at else ""
        )
    head, _, rest = reason.partition(":")
    if head == "disabled":
        found = re.search(r"\b(40[13])\b", rest)
        return f"key disabled ({found[1]})" if found else "key disabled"
    what = {
        "rate_limit": "vendor rate limit",
        "quota_exhausted": "vendor quota spent",
        "transient": "cooling down after a vendor error",
    }.get(head, reason)
    return f"blocked: {what} until {when_words(refusal.retry_at, now)}"


def failure_words(failure: Failure) -> str:
    """A vendor failure in words: ``vendor 429, retry in 47 s``."""
    status = f"vendor {failure.status}" if failure.status else "vendor error"
    kind = failure.kind
    if kind is FailureKind.RATE_LIMIT:
        wait = failure.retry_after
        return f"{status}, retry in {wait:.0f} s" if wait is not None else f"{status}, rate limited"
    period = f" for the {failure.period}" if failure.period else ""
    words = {
        FailureKind.QUOTA_EXHAUSTED: f"quota spent{period}",
        FailureKind.AUTHENTICATION: "key rejected, disabled",
        FailureKind.MODEL_UNAVAILABLE: "model retired or not served",
        FailureKind.CONTEXT_TOO_LONG: "prompt too long for its context",
        FailureKind.TRANSIENT: "unavailable, cooling down",
        FailureKind.BAD_REQUEST: "bad request",
        FailureKind.UNKNOWN: "unexpected error",
    }[kind]
    message = failure.message.strip()
    if len(message) > 120:
        message = message[:117] + "..."
    return f"{status}, {words}" + (f": {message}" if message else "")


_warned_unavailable: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def _warn_unavailable_once(
    label: str, member: Member, successor: str | None, recheck: float
) -> None:
    """Say once per process that a route's model is gone, and what replaces it."""
    with _warned_lock:
        mark = (member.name, member.model_name)
        if mark in _warned_unavailable:
            return
        _warned_unavailable.add(mark)
    hint = f" The catalog names {successor!r} as its successor." if successor else ""
    logger.warning(
        "%s: the vendor no longer serves model %r on this key; it is "
        "skipped and asked again in %.0f s (router.enable(%r) or `quota-router "
        "enable %s` to try it now).%s",
        label,
        member.model_name,
        recheck,
        member.name,
        member.name,
        hint,
    )


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
