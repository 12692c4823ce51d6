"""``KeyRotator``: several keys of any API, each spent only while it has quota.

A client of the quota core like the chat model: every key is a member of its own
pool (or of a pool shared with other keys and with chat routes), admission asks
the ledger before a key is handed out, and a failure is classified and acted on as
a chat route's is (401/403 disables the key, 429/402 blocks it until the vendor's
reset, 5xx and timeouts cool it down and the next key is tried).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from langchain_quota_router._config import key_specs_from_env
from langchain_quota_router._errors import no_route_error
from langchain_quota_router.quota.admission import Admission, Plan, Policy
from langchain_quota_router.quota.book import client_book
from langchain_quota_router.quota.clock import Clock, SystemClock
from langchain_quota_router.quota.errors import ConfigurationError
from langchain_quota_router.quota.failures import Failure, FailureKind, classify
from langchain_quota_router.quota.ledger import Demand, Ledger, Reservation, open_ledger
from langchain_quota_router.quota.ledger.settle import asettle, settle
from langchain_quota_router.quota.limits import MAX_AMOUNT, Limit, parse_limits
from langchain_quota_router.quota.secrets import alias, clean_key, fingerprint, guard_logs
from langchain_quota_router.quota.watch import Lifespan

__all__ = ["Key", "KeyLease", "KeyRotator"]

_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., Any])

#: What ``classify=`` may return: a kind (or its value), a whole Failure, or None
#: for "classify it as a chat route's failure would be".
Classified = FailureKind | str | Failure | None


class Key:
    """One API key of a :class:`KeyRotator`, optionally with limits of its own.

    Args:
        secret: the key itself (never shown: reprs, logs and reports mask it).
        limits: this key's limits (``"100/month"``, ``Limit`` objects or one
            comma-separated string); default the rotator's ``limits``.
        pool: the quota this key spends, when shared with other keys or with chat
            routes (a Cohere trial key's chat route and its rerank calls name one
            pool); default a pool of its own.
        name: what reports and ``enable()`` call it; default ``"<rotator>#<n>"``.
        priority: lower goes first under ``strategy="priority"``; default the
            key's position.
    """

    __slots__ = ("limits", "name", "pool", "priority", "secret")

    def __init__(
        self,
        secret: str,
        *,
        limits: Sequence[str | Limit] | str | None = None,
        pool: str | None = None,
        name: str | None = None,
        priority: int | None = None,
    ) -> None:
        if not isinstance(secret, str) or not secret.strip():
            msg = f"a Key needs its secret as a non-empty string (key {name or '?'})"
            raise ConfigurationError(msg)
        self.secret = clean_key(secret, f"key {name}" if name else "a Key's secret")
        self.limits = None if limits is None else parse_limits(limits, owner=f"key {name or '?'}")
        self.pool = pool
        self.name = name
        self.priority = priority

    def __repr__(self) -> str:
        shown = self.name or fingerprint(self.secret)
        return f"Key({shown!r}, pool={self.pool!r})"


@dataclass(frozen=True)
class _Slot:
    """A key as admission sees it: a member of a pool."""

    name: str
    pool: str
    credential: str
    priority: int
    provider: str
    limits: tuple[Limit, ...]
    secret: str = field(repr=False)
    model_name: str = ""
    catalog_limits: bool = False


class KeyLease:
    """A key handed out by :meth:`KeyRotator.key`: use :attr:`secret`, then (when
    the real cost differs from the estimate) :meth:`report` it.

    Attributes:
        secret: the API key.
        name: the key's name in reports.
        pool: the pool it spends.
    """

    __slots__ = ("_headers", "_used", "name", "pool", "secret")

    def __init__(self, slot: _Slot) -> None:
        self.secret = slot.secret
        self.name = slot.name
        self.pool = slot.pool
        self._used: int | None = None
        self._headers: Mapping[str, str] | None = None

    def report(self, used: int | None = None, *, headers: Mapping[str, str] | None = None) -> None:
        """Say what the call really cost (in the unit of the limits), and/or hand
        over the API's rate-limit headers so the count stays honest."""
        if used is not None:
            self._used = _cost(used, "used")
        if headers is not None:
            self._headers = headers

    def __repr__(self) -> str:
        return f"KeyLease({self.name!r}, pool={self.pool!r})"


def _cost(value: Any, what: str = "cost") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_AMOUNT:
        msg = f"{what} must be a whole number from 0 to {MAX_AMOUNT}; got {value!r}"
        raise ValueError(msg)
    return value


class _KeyCall(Admission):
    """One call's admission over a rotator's keys, reserving ``cost`` on each."""

    def __init__(self, policy: Policy, cost: int, preferred: str | None) -> None:
        super().__init__(policy, preferred=preferred)
        self.cost = cost

    def plan(self, member: Any) -> Plan | object | None:
        return self.plan_demand(member, _demand(self.pools[member.pool], self.cost))

    def describe(self, member: Any) -> str:
        return f"key {member.name}"

    def enable_hint(self, member: Any) -> str:
        return f"{member.provider}.enable({member.name!r}) or `quota-router enable {member.name}`"


def _demand(limits: Sequence[Limit], cost: int) -> Demand:
    """``cost`` in the unit of the pool's limits: tokens (with one request) where a
    limit counts tokens, else requests."""
    if any(lim.metric != "requests" for lim in limits):
        return Demand(1, cost, 0)
    return Demand(cost, 0, 0)


class KeyRotator:
    """Several keys of one API, each handed out only while it has quota left.

    Example:
        ```python
        serp = KeyRotator("serp", keys=["k1", "k2"], limits=["100/month"])

        @serp.rotate
        def search(query: str, *, api_key: str) -> dict:
            return requests.get(URL, params={"q": query, "api_key": api_key}).json()

        search("free tier llm")  # k1 until its 100 are spent, then k2
        ```

    Args:
        name: what the API is called in reports (``"serp"``); key names default to
            ``"<name>#<n>"``.
        keys: the keys, as strings or :class:`Key` objects (which may carry their
            own limits, pool and name).
        limits: each key's limits unless the :class:`Key` says otherwise; every key
            is its own quota pool unless it names a shared ``pool``.
        ledger: where quota is counted: a URL (``sqlite:///…``, ``redis://…``,
            ``memory://``) or a ``Ledger``; default the same ledger the chat model
            uses by default, so routes and keys naming one pool count together.
        strategy: ``"priority"`` (keys in the order given) or ``"spread"`` (the key
            with the most room left).
        max_wait: seconds a call may wait for a key to free up before
            ``QuotaExhaustedError``.
        clock: what "now" is (tests pass a ``FakeClock``).
        classify: ``exception -> FailureKind | Failure | None`` for APIs that
            report errors in their own way (None: as chat vendors' errors are read).
        observe: ``result -> headers | None``: the API's rate-limit headers (or a
            mapping in their words) read from a result, so counts stay honest.
        param: the keyword the key is passed as by :meth:`rotate` and :meth:`call`.
        transient_cooldown: seconds a key rests after a 5xx or a timeout.
        rate_limit_cooldown: seconds a key rests after a 429 naming no time.
        alert_thresholds: percentages of any limit that log an alert once.
        fleet_counters: count calls for the whole fleet in the ledger.
    """

    def __init__(
        self,
        name: str,
        keys: Sequence[str | Key],
        limits: Sequence[str | Limit] | str = (),
        *,
        ledger: str | Ledger | None = None,
        strategy: str = "priority",
        max_wait: float = 0.0,
        clock: Clock | None = None,
        classify: Callable[[BaseException], Classified] | None = None,
        observe: Callable[[Any], Mapping[str, Any] | None] | None = None,
        param: str = "api_key",
        transient_cooldown: float = 30.0,
        rate_limit_cooldown: float = 60.0,
        alert_thresholds: Sequence[float] = (75.0, 90.0, 95.0),
        fleet_counters: bool = True,
    ) -> None:
        if not isinstance(name, str) or not name.strip() or not name.isprintable():
            msg = f"a KeyRotator needs a printable name, got {name!r}"
            raise ConfigurationError(msg)
        if strategy not in ("priority", "spread"):
            msg = f"KeyRotator {name!r}: strategy must be 'priority' or 'spread', got {strategy!r}"
            raise ConfigurationError(msg)
        if not keys or isinstance(keys, str):
            msg = f"KeyRotator {name!r} needs a list of keys, got {keys!r:.20}"
            raise ConfigurationError(msg)
        for what, value in (
            ("max_wait", max_wait),
            ("transient_cooldown", transient_cooldown),
            ("rate_limit_cooldown", rate_limit_cooldown),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 <= value < float("inf")
            ):
                msg = (
                    f"KeyRotator {name!r}: {what} must be a finite number of seconds "
                    f">= 0, got {value!r}"
                )
                raise ConfigurationError(msg)
        if not param.isidentifier():
            msg = f"KeyRotator {name!r}: param must be a keyword name, got {param!r}"
            raise ConfigurationError(msg)
        self.name = name
        self.param = param
        self.strategy = strategy
        self.clock: Clock = clock or SystemClock()
        self._classify = classify
        self._observe = observe
        base = parse_limits(limits, owner=f"KeyRotator {name!r}")
        self._slots = tuple(self._slot(i, key, base) for i, key in enumerate(keys))
        self.ledger_backend: Ledger = ledger if isinstance(ledger, Ledger) else open_ledger(ledger)
        secrets = sorted({s.secret for s in self._slots}, key=lambda k: (-len(k), k))
        guard_logs(secrets)  # a log line never shows a key, even one an API echoed in part
        self._book, self._policy = client_book(
            self._slots,
            self.ledger_backend,
            self.clock,
            noun="key",
            fleet_counters=fleet_counters,
            alert_thresholds=alert_thresholds,
            strategy=strategy,
            max_wait=float(max_wait),
            transient_cooldown=float(transient_cooldown),
            rate_limit_cooldown=float(rate_limit_cooldown),
            model_recheck=3600.0,
            error_for=functools.partial(no_route_error, keys=True),
            secrets=lambda: secrets,
            retry_bad_requests=False,
        )
        self.stats = self._book.stats

    def _slot(self, index: int, key: str | Key, base: tuple[Limit, ...]) -> _Slot:
        if not isinstance(key, Key):
            if not isinstance(key, str):
                msg = (
                    f"KeyRotator {self.name!r}: key {index} must be a string or a Key, "
                    f"got {type(key).__name__}"
                )
                raise ConfigurationError(msg)
            key = Key(key)
        credential = alias(self.name, None, key.secret)
        return _Slot(
            name=key.name or f"{self.name}#{index}",
            pool=key.pool or credential,
            credential=credential,
            priority=index if key.priority is None else key.priority,
            provider=self.name,
            limits=base if key.limits is None else key.limits,
            secret=key.secret,
        )

    def __repr__(self) -> str:
        return f"KeyRotator({self.name!r}, keys={[s.name for s in self._slots]})"

    # ------------------------------------------------------------ building

    @classmethod
    def from_env(
        cls,
        prefix: str,
        environ: Mapping[str, str] | None = None,
        *,
        dotenv: str | None = ".env",
        **kwargs: Any,
    ) -> KeyRotator:
        """A rotator over the keys the environment names with ``prefix``.

        Reads ``<P>_API_KEYS=k1,k2``, ``<P>_API_KEY``, ``<P>_API_KEY_1..N``,
        ``<P>_LIMITS`` (and ``<P>_LIMITS_<n>``), and per key number
        ``<P>_MAX_REQUESTS_PER_DAY_<n>``, ``<P>_MAX_TOKENS_PER_MINUTE_<n>``…, with
        the chat model's rules and errors. ``kwargs`` go to the constructor
        (``ledger=``, ``strategy=``…); the name defaults to ``prefix.lower()``.
        """
        name = kwargs.pop("name", prefix.lower())
        base = parse_limits(kwargs.get("limits", ()), owner=f"KeyRotator {name!r}")
        keys = [
            Key(spec.secret, limits=spec.limits_over(base), name=f"{name}{spec.suffix}")
            for spec in key_specs_from_env(prefix, environ, dotenv=dotenv)
        ]
        return cls(name, keys, **kwargs)

    # ------------------------------------------------------------ calling

    @overload
    def rotate(self, fn: _F, /) -> _F: ...

    @overload
    def rotate(
        self, fn: None = None, /, *, cost: int = 1, param: str | None = None
    ) -> Callable[[_F], _F]: ...

    def rotate(
        self, fn: _F | None = None, /, *, cost: int = 1, param: str | None = None
    ) -> _F | Callable[[_F], _F]:
        """Decorate a function (sync or async) so each call gets a key with room,
        as the keyword ``api_key`` (or ``param``), falling over to the next key on
        a 429, 5xx or rejected key. ``@serp.rotate`` or ``@serp.rotate(cost=...)``."""
        _cost(cost)

        def decorate(func: _F) -> _F:
            if inspect.iscoroutinefunction(func):

                @functools.wraps(func)
                async def arotated(*args: Any, **kwargs: Any) -> Any:
                    return await self.acall(func, *args, cost=cost, _param=param, **kwargs)

                return arotated  # type: ignore[return-value]

            @functools.wraps(func)
            def rotated(*args: Any, **kwargs: Any) -> Any:
                return self.call(func, *args, cost=cost, _param=param, **kwargs)

            return rotated  # type: ignore[return-value]

        return decorate if fn is None else decorate(fn)

    def call(
        self,
        fn: Callable[..., _T],
        /,
        *args: Any,
        cost: int = 1,
        preferred: str | None = None,
        _param: str | None = None,
        **kwargs: Any,
    ) -> _T:
        """``fn(*args, api_key=<a key with room>, **kwargs)``, falling over to the
        next key as :meth:`rotate` does. ``cost`` is in the unit of the limits."""
        call = _KeyCall(self._policy, _cost(cost), preferred)
        param = _param or self.param
        while True:
            for plan, reservation in call.admitted():
                slot: _Slot = plan.member
                try:
                    result = fn(*args, **{**kwargs, param: slot.secret})
                except Exception as exc:  # noqa: BLE001 - classified, then next key or raised
                    self._failed(call, plan, reservation, exc)
                    continue
                except BaseException:
                    settle(self.ledger_backend, reservation, plan.demand, self.clock.now())
                    raise
                self._served(call, plan, reservation, plan.demand, self._headers(result))
                return result
            self.clock.sleep(call.wait_or_raise())

    async def acall(
        self,
        fn: Callable[..., Awaitable[_T] | _T],
        /,
        *args: Any,
        cost: int = 1,
        preferred: str | None = None,
        _param: str | None = None,
        **kwargs: Any,
    ) -> _T:
        """:meth:`call` for async code: ``fn`` may be async; the ledger is never
        asked on the event loop."""
        call = _KeyCall(self._policy, _cost(cost), preferred)
        param = _param or self.param
        ledger = self.ledger_backend
        while True:
            async with contextlib.aclosing(call.aadmitted()) as admitted:
                async for plan, reservation in admitted:
                    slot: _Slot = plan.member
                    try:
                        result = fn(*args, **{**kwargs, param: slot.secret})
                        if inspect.isawaitable(result):
                            result = await result
                    except Exception as exc:  # noqa: BLE001 - classified, then next key or raised
                        await ledger.arun(self._failed, call, plan, reservation, exc)
                        continue
                    except BaseException:
                        await asettle(ledger, reservation, plan.demand, self.clock.now())
                        raise
                    await self._aserved(call, plan, reservation, plan.demand, self._headers(result))
                    return result
            await self.clock.asleep(call.wait_or_raise())

    @contextlib.contextmanager
    def key(self, cost: int = 1, *, preferred: str | None = None) -> Iterator[KeyLease]:
        """A key with room for ``cost``, for code that cannot be wrapped:
        ``with serp.key() as key: fetch(key.secret)``.

        An exception in the block is classified (the key disabled, blocked or
        cooled down as for :meth:`call`) and raised: the block is not run again.
        """
        call = _KeyCall(self._policy, _cost(cost), preferred)
        while True:
            for plan, reservation in call.admitted():
                lease = KeyLease(plan.member)
                try:
                    yield lease
                except Exception as exc:
                    self._failed(call, plan, reservation, exc, again=False)
                    raise
                except BaseException:
                    settle(self.ledger_backend, reservation, plan.demand, self.clock.now())
                    raise
                self._served(call, plan, reservation, _spent(plan, lease), lease._headers)
                return
            self.clock.sleep(call.wait_or_raise())

    @contextlib.asynccontextmanager
    async def akey(self, cost: int = 1, *, preferred: str | None = None) -> AsyncIterator[KeyLease]:
        """:meth:`key` for async code: ``async with serp.akey() as key: ...``."""
        call = _KeyCall(self._policy, _cost(cost), preferred)
        ledger = self.ledger_backend
        while True:
            async with contextlib.aclosing(call.aadmitted()) as admitted:
                async for plan, reservation in admitted:
                    lease = KeyLease(plan.member)
                    try:
                        yield lease
                    except Exception as exc:
                        await ledger.arun(
                            functools.partial(self._failed, again=False),
                            call,
                            plan,
                            reservation,
                            exc,
                        )
                        raise
                    except BaseException:
                        await asettle(ledger, reservation, plan.demand, self.clock.now())
                        raise
                    await self._aserved(
                        call, plan, reservation, _spent(plan, lease), lease._headers
                    )
                    return
            await self.clock.asleep(call.wait_or_raise())

    # ------------------------------------------------------------ outcomes

    def _headers(self, result: Any) -> Mapping[str, str] | None:
        if self._observe is None:
            return None
        seen = self._observe(result)
        return {str(k): str(v) for k, v in seen.items()} if seen else None

    def _failure(self, exc: BaseException) -> Failure:
        now = self.clock.now()
        if self._classify is not None:
            said = self._classify(exc)
            if isinstance(said, Failure):
                return said
            if said is not None:
                found = classify(exc, now=now)
                return Failure(
                    kind=FailureKind(said),
                    status=found.status,
                    retry_after=found.retry_after,
                    period=found.period,
                    message=found.message,
                    headers=found.headers,
                )
        return classify(exc, now=now)

    def _failed(
        self,
        call: _KeyCall,
        plan: Plan,
        reservation: Reservation,
        exc: BaseException,
        *,
        again: bool = True,
    ) -> None:
        """Act on a failed use of a key. Returns (to try the next key) only when
        ``again`` and the failure is the key's, not the call's; else raises."""
        failure = self._failure(exc)
        if failure.kind is FailureKind.UNKNOWN:
            # The function's own error, not the API's answer: it may have reached
            # the API, so the reservation stays counted, and no other key is spent.
            settle(self.ledger_backend, reservation, plan.demand, self.clock.now())
            self.stats.failed(plan.member.name, failure.kind.value)
            clean = call.surfaced(exc)
            if clean is exc:
                raise exc
            raise clean from None
        call.failed_with(plan.member, reservation, exc, failure)
        if not again:
            return
        if failure.kind is FailureKind.CONTEXT_TOO_LONG:
            # Another key of the same API would be refused the same way.
            clean = call.surfaced(exc)
            if clean is exc:
                raise exc
            raise clean from None

    def _served(
        self,
        call: _KeyCall,
        plan: Plan,
        reservation: Reservation,
        used: Demand,
        headers: Mapping[str, str] | None,
    ) -> None:
        settled = settle(self.ledger_backend, reservation, used, self.clock.now())
        call.after_answer(plan.member, reservation, used, headers, settled=settled)

    async def _aserved(
        self,
        call: _KeyCall,
        plan: Plan,
        reservation: Reservation,
        used: Demand,
        headers: Mapping[str, str] | None,
    ) -> None:
        ledger = self.ledger_backend
        settled = await asettle(ledger, reservation, used, self.clock.now())
        if not ledger.blocking or call.quiet(reservation, headers):
            call.after_answer(plan.member, reservation, used, headers, settled=settled)
        else:
            await ledger.arun(
                functools.partial(
                    call.after_answer, plan.member, reservation, used, headers, settled=settled
                )
            )

    # ------------------------------------------------------------ operations

    @property
    def keys(self) -> list[str]:
        """The keys' names, in priority order."""
        return [s.name for s in sorted(self._slots, key=lambda s: s.priority)]

    @property
    def members(self) -> tuple[Any, ...]:
        """The keys as the status model reads them (name, pool, limits…)."""
        return self._slots

    def keys_to_mask(self) -> list[str]:
        """Every key, longest first: what no page, report or error may show."""
        return self._policy.secrets()

    @property
    def pool_limits(self) -> dict[str, tuple[Limit, ...]]:
        """Each pool's limits as enforced now."""
        return self._book.pool_limits

    def usage(self) -> list[Any]:
        """Per pool and limit: used, remaining, percent and when it resets."""
        return self._book.usage()

    def lifespan(self, tokens_per_day: int) -> Lifespan:
        """How long each pool lasts at ``tokens_per_day`` (in the limits' unit)."""
        return self._book.lifespan(tokens_per_day)

    def history(self, since: Any = None, step: Any = None) -> list[dict[str, Any]]:
        """Each pool's limits' use over time (see ``QuotaRoutedChatModel.history``)."""
        return self._book.history(since, step)

    def get_stats(self) -> dict[str, Any]:
        """Calls per key, fallbacks, errors: this process's, and the fleet's."""
        return self._book.get_stats()

    def enable(self, key: str) -> bool:
        """Use a key again after it was rejected (401/403). Returns whether it was
        disabled."""
        return self._book.enable(key)

    def reset(self, key: str) -> None:
        """Forget what a key's pool has spent and lift its block."""
        self._book.reset(key)


def _spent(plan: Plan, lease: KeyLease) -> Demand:
    """What a leased call spent: the reported cost, else the estimate."""
    used = lease._used
    if used is None:
        return plan.demand
    if plan.demand.input_tokens:
        return Demand(1, used, 0)
    return Demand(used, 0, 0)
