"""``QuotaRoutedChatModel``: one chat model in front of many vendor keys."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import inspect
import json
import logging
import math
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Literal

from langchain_core.caches import BaseCache
from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.load import dumps
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
)
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.outputs import (
    ChatGeneration,
    ChatGenerationChunk,
    ChatResult,
)
from langchain_core.runnables import (
    Runnable,
    RunnableConfig,
    RunnableMap,
    RunnablePassthrough,
)
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from typing_extensions import Self

from langchain_quota_router._errors import (
    ConfigurationError,
    NoRouteError,
    no_route_error,
)
from langchain_quota_router.cache.disk import DiskResponseCache
from langchain_quota_router.chat import alerts, hedging
from langchain_quota_router.chat import streaming as vendor
from langchain_quota_router.chat.caching import OWN_KEY, GlobalCache, HitCounter, prompt_key
from langchain_quota_router.chat.routing import (
    TOOL_OPTIONS,
    Attempt,
    PoolLimits,
    RoutedCall,
    RouterStats,
    Settings,
    successor_of,
)
from langchain_quota_router.chat.streaming import (
    StreamRelay,
    as_text,
    replay,
    shaped,
    shaped_message,
    tag_message,
)
from langchain_quota_router.chat.tokens import TokenEstimator
from langchain_quota_router.embeddings.model import QuotaRoutedEmbeddings
from langchain_quota_router.keys import Key, KeyRotator
from langchain_quota_router.quota.admission import order_keys
from langchain_quota_router.quota.book import QuotaBook, pool_table
from langchain_quota_router.quota.clock import Clock, SystemClock
from langchain_quota_router.quota.fleet import (
    FleetCounters,
)
from langchain_quota_router.quota.latency import LatencyBoard
from langchain_quota_router.quota.ledger import LearnedLimit, Ledger, LimitUsage, open_ledger
from langchain_quota_router.quota.limits import MAX_AMOUNT, Limit, parse_limits
from langchain_quota_router.quota.secrets import guard_logs, mask
from langchain_quota_router.quota.watch import (
    AlertTracker,
    Lifespan,
)
from langchain_quota_router.route import EmbeddingRoute, Route, route_keys

logger = logging.getLogger("langchain_quota_router")


class QuotaRoutedChatModel(BaseChatModel):
    """A chat model that sends each call to the route with quota left.

    Each route is a vendor chat model behind one key, with that key's limits. Before a
    call the router estimates its tokens and reserves them in a ledger shared by every
    thread and process; a route without room is skipped without being called. A route
    that fails (rate limit, exhausted quota, bad key, timeout, 5xx) is blocked, cooled
    down or disabled, and the call moves on to the next route.

    Example:
        ```python
        from langchain_groq import ChatGroq
        from langchain_google_genai import ChatGoogleGenerativeAI
        from langchain_quota_router import QuotaRoutedChatModel, Route

        llm = QuotaRoutedChatModel(
            routes=[
                Route(ChatGroq(model="openai/gpt-oss-120b", max_retries=0),
                      name="groq", priority=1,
                      limits=["30/minute", "1000/24h", "8000 tokens/minute"]),
                Route(ChatGoogleGenerativeAI(model="gemini-3.5-flash-lite", max_retries=1),
                      name="gemini", priority=2,
                      limits=["15/minute", "500/day@America/Los_Angeles"]),
            ],
        )
        llm.invoke("Hello")
        ```
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    routes: list[Route]
    """Where calls may go; a bare chat model is wrapped in a default ``Route``."""

    ledger: str | Ledger | None = None
    """``"memory://"``, ``"sqlite:///path.db"``, ``"redis://host:6379/0"`` or a
    ``Ledger``. ``None``: ``$QUOTA_ROUTER_LEDGER``, else a SQLite file in the user's
    state directory."""

    cache: BaseCache | bool | None = True
    """``True``: a :class:`DiskResponseCache` (24 h). ``False``: no cache. Any
    LangChain ``BaseCache`` is used as given; ``None`` uses LangChain's global cache.
    A hit spends no quota, for ``invoke`` and ``stream`` alike."""

    strategy: str | tuple[str, ...] = "priority"
    """``"priority"``: lowest ``Route.priority`` first (free before paid).
    ``"spread"``: the route with the most room left first, so every key lasts.
    ``"cost"``: the route where *this* call (its prompt and output budget) costs
    least first (free routes, and routes without prices, cost 0), ties to the one
    with most room left. ``"latency"``: free routes first, then the fastest as
    observed by every process sharing the ledger (time to first token for streams,
    the whole call otherwise; a route never observed is tried first).
    A tuple of order keys (``"free"``, ``"cost"``, ``"room"``, ``"latency"``,
    ``"priority"``) sorts by each in turn: ``("latency",)`` is the fastest first,
    paid or not; ``("free", "cost", "latency")``. Priority breaks every tie, and a
    call's ``preferred=`` route always goes first."""

    hedge_after: float | None = None
    """Async calls only (``ainvoke``, ``astream``): when the first route has not
    answered (or sent its first token) after this many seconds, the next route is
    started too; the first to answer wins, the other is cancelled and its
    reservation settled. ``None`` (the default): no hedging. Synchronous calls are
    never hedged: a blocked vendor call cannot be cancelled, and a second thread
    would leave it running and billing."""

    max_wait: float = 0.0
    """Seconds a call may wait for quota to free up when every route is full,
    instead of raising ``QuotaExhaustedError`` at once."""

    transient_cooldown: float = 30.0
    """Seconds a route rests after a timeout, connection error or 5xx."""

    rate_limit_cooldown: float = 60.0
    """Seconds a pool is blocked after a 429 that says no retry-after."""

    model_recheck: float = 3600.0
    """Seconds a route whose model the vendor no longer serves (404 model not found,
    Groq's ``model_decommissioned``, 410) is skipped before the vendor is asked
    again, in case it was a glitch. ``router.enable(route)`` lifts it at once."""

    reservation_lease: float = 900.0
    """Seconds a call's reservation stays whole unsettled: long enough for a slow
    streamed answer. A reservation whose process died (``kill -9`` mid-call) is
    settled when its lease runs out, by whichever process next touches the pool:
    the request stays counted, the unspent output estimate is released. Set on the
    ledger the router counts in."""

    default_output_tokens: int = 256
    """Output tokens to reserve when neither the call nor the model sets max_tokens."""

    max_tokens: int | None = None
    """Output budget passed to every route and reserved in the ledger."""

    temperature: float | None = None
    """Sampling temperature passed to every route, if set."""

    stop: list[str] | None = None
    """Default stop sequences."""

    timeout: float | None = None
    """Accepted for drop-in compatibility; set timeouts on the vendor models."""

    max_retries: int | None = None
    """Accepted for drop-in compatibility. The router never retries a route: it falls
    back to the next one (vendor SDK retries should be off: ``max_retries=0``)."""

    streaming: bool = False
    """Stream from the routes even for ``invoke`` (tokens reach callbacks)."""

    alert_thresholds: tuple[float, ...] = (75.0, 90.0, 95.0)
    """Percentages of any limit at which a pool raises an alert: a logged warning
    and a LangChain custom event named ``"quota_alert"``, once per crossing per
    window."""

    clock: Clock = Field(default_factory=SystemClock, exclude=True)
    """Where time comes from; tests pass a ``FakeClock``."""

    key_rotators: list[KeyRotator] = Field(default_factory=list)
    """:class:`~langchain_quota_router.KeyRotator` objects for other APIs' keys, shown
    beside the routes wherever this router's quota is shown (``quota-router
    status``, the page, ``/status.json``, ``/metrics``); ``enable()`` and ``reset()``
    reach their keys by name. They count in their own ledger (pass this router's
    ``ledger_backend`` to share pools with routes). A ``[[keys]]`` table in a config
    file adds one."""

    embeddings: list[QuotaRoutedEmbeddings] = Field(default_factory=list)
    """:class:`~langchain_quota_router.QuotaRoutedEmbeddings` routers shown beside the
    routes, as ``key_rotators`` are (give them this router's ``ledger_backend`` to
    count embedding and chat calls on one key together)."""

    content: Literal["vendor", "text"] = "vendor"
    """The shape of an answer's ``.content``. ``"vendor"``: as the answering vendor
    gives it (a string from Groq and OpenAI, a list of blocks from Gemini).
    ``"text"``: a string whenever the answer holds only text, whoever answers, so
    code written for ``ChatOpenAI`` keeps working after a fallback to Gemini. What
    it costs: a thought signature Gemini attaches to a text block is dropped with
    the block (tool calls and their signatures are kept: a message that holds
    anything but text keeps its blocks), and streamed chunks lose their block
    ``index``."""

    fleet_counters: bool = True
    """Count calls, fallbacks, errors, cache hits, 429s, refusals and spend for the
    fleet, in the ledger's storage (written from a background thread, never on a
    call's path): ``get_stats()["fleet"]`` and :meth:`history` read them back in any
    process sharing the ledger. ``False``: this router adds nothing to them."""

    _ledger: Ledger | None = PrivateAttr(default=None)
    _book: QuotaBook = PrivateAttr()
    _ledger_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _route_map: dict[str, Route] = PrivateAttr(default_factory=dict)
    _by_priority: tuple[Route, ...] = PrivateAttr(default=())
    _pools: PoolLimits | None = PrivateAttr(default=None)
    #: (the id of the router it was built for, what it was built from, the settings).
    _settings: tuple[int, tuple[Any, ...], Settings] | None = PrivateAttr(default=None)
    _tokens: TokenEstimator = PrivateAttr(default_factory=TokenEstimator)
    _stats: RouterStats = PrivateAttr(default_factory=RouterStats)
    _tool_schemas: dict[int, tuple[Any, list[dict[str, Any]]]] = PrivateAttr(default_factory=dict)
    _llm_string_heads: dict[tuple[Any, ...], str] = PrivateAttr(default_factory=dict)
    _alerts: AlertTracker = PrivateAttr(default_factory=lambda: AlertTracker(()))

    # ------------------------------------------------------------ validation

    def __init__(self, **kwargs: Any) -> None:
        try:
            super().__init__(**kwargs)
        except ValidationError as exc:
            # Our own checks raise ConfigurationError naming the culprit; pydantic
            # would bury it in a ValidationError, so hand it back as it was raised.
            for error in exc.errors():
                cause = (error.get("ctx") or {}).get("error")
                if isinstance(cause, ConfigurationError):
                    raise cause from None
            raise

    @field_validator("max_tokens", "default_output_tokens", mode="before")
    @classmethod
    def _refuse_booleans_as_counts(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic would read True as 1 token.
        if isinstance(value, bool):
            msg = f"{info.field_name} must be a whole number of tokens, not {value!r}"
            raise ConfigurationError(msg)
        return value

    @field_validator("strategy", mode="before")
    @classmethod
    def _known_strategy(cls, value: Any) -> Any:
        if isinstance(value, list):
            value = tuple(value)
        if not isinstance(value, (str, tuple)):
            msg = f"strategy must be a name or a tuple of order keys, got {value!r}"
            raise ConfigurationError(msg)
        try:
            order_keys(value)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        return value

    @field_validator("hedge_after")
    @classmethod
    def _positive_hedge(cls, value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and value > 0):
            msg = f"hedge_after must be a finite number of seconds > 0, or None; got {value}"
            raise ConfigurationError(msg)
        return value

    @model_validator(mode="before")
    @classmethod
    def _wrap_bare_models(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("routes"), (list, tuple)):
            data = dict(data)
            data["routes"] = [
                Route(r) if isinstance(r, BaseChatModel) else r for r in data["routes"]
            ]
        return data

    @model_validator(mode="after")
    def _check_routes_and_build_pools(self) -> Self:
        if not self.routes:
            msg = "QuotaRoutedChatModel needs at least one route"
            raise ConfigurationError(msg)
        # Log lines quote route names, which may embed a key.
        guard_logs(route_keys(r for r in self.routes if isinstance(r, Route)))
        for route in self.routes:
            if not isinstance(route, Route):
                msg = f"routes must be Route objects or chat models, got {route!r}"
                raise ConfigurationError(msg)
            if isinstance(route, EmbeddingRoute):
                msg = (
                    f"route {route.name!r} holds an embeddings model: give it to "
                    "QuotaRoutedEmbeddings, not to the chat model"
                )
                raise ConfigurationError(msg)
        # Unique names, one set of limits per pool: the rule every client shares.
        names, pools, _ = pool_table(self.routes)
        for route in self.routes:
            dollar = next((lim for lim in pools[route.pool] if lim.metric == "usd"), None)
            if dollar is not None and route.pricing is None:
                msg = (
                    f"route {route.name!r}: its pool {route.pool!r} has a dollar limit "
                    f"({dollar}) but the route has no prices; give it "
                    "prices=(input, output) USD per million tokens ((0, 0) if free)"
                )
                raise ConfigurationError(msg)
        self._route_map = names
        self._by_priority = tuple(sorted(names.values(), key=lambda r: r.priority))
        # What the user gave explicitly; catalog figures give way to learned limits.
        configured: dict[str, tuple[Limit, ...]] = {}
        # Catalog figures of a key whose tier is unknown: held only until the
        # vendor's headers say what the key allows.
        provisional: dict[str, tuple[Limit, ...]] = {}
        for route in self.routes:
            if not route.catalog_limits and route.limits:
                configured[route.pool] = route.limits
            elif route.provisional_limits and route.limits:
                provisional[route.pool] = route.limits
        for name, value in (
            ("max_wait", self.max_wait),
            ("transient_cooldown", self.transient_cooldown),
            ("rate_limit_cooldown", self.rate_limit_cooldown),
            ("model_recheck", self.model_recheck),
        ):
            if not math.isfinite(value) or value < 0:
                msg = f"{name} must be a finite number of seconds, not negative; got {value}"
                raise ConfigurationError(msg)
        if not 0 <= self.default_output_tokens <= MAX_AMOUNT:
            msg = (
                f"default_output_tokens must be from 0 to {MAX_AMOUNT}; "
                f"got {self.default_output_tokens}"
            )
            raise ConfigurationError(msg)
        for problem in (
            _bad_call_argument("max_tokens", self.max_tokens),
            _bad_call_argument("temperature", self.temperature),
            _bad_call_argument("timeout", self.timeout),
        ):
            if problem is not None:
                raise ConfigurationError(problem)
        if self.max_retries is not None and self.max_retries < 0:
            msg = f"max_retries must not be negative; got {self.max_retries}"
            raise ConfigurationError(msg)
        if not (math.isfinite(self.reservation_lease) and self.reservation_lease > 0):
            msg = (
                "reservation_lease must be a finite number of seconds > 0; "
                f"got {self.reservation_lease}"
            )
            raise ConfigurationError(msg)
        if not isinstance(self.ledger, Ledger):
            self._ledger = open_ledger(self.ledger)
        else:
            self._ledger = self.ledger
        self._ledger.reservation_lease = self.reservation_lease
        self._pools = PoolLimits(self._ledger, pools, configured, provisional)
        self._book = QuotaBook(names, self._ledger, self._pools, self.clock, self._stats)
        if self.fleet_counters and self._stats.fleet is None:
            self._stats.fleet = FleetCounters(self._ledger, self.clock)
        if self._stats.latency_board is None:
            store = self._stats.fleet.store if self._stats.fleet is not None else None
            self._stats.latency_board = LatencyBoard(store)
        if self.cache is True:
            self.cache = DiskResponseCache(clock=self.clock)
        elif self.cache is None:
            # LangChain's global cache, looked up at each call as LangChain does, so
            # its hits are marked and counted like any other cache's.
            self.cache = GlobalCache()
        if isinstance(self.cache, BaseCache) and not isinstance(self.cache, HitCounter):
            self.cache = HitCounter(self.cache, self._stats)
        if any(not 0 < t <= 100 for t in self.alert_thresholds):
            msg = f"alert_thresholds must be percentages in (0, 100], got {self.alert_thresholds}"
            raise ConfigurationError(msg)
        self._alerts = AlertTracker(self.alert_thresholds)
        return self

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        dotenv: str | os.PathLike[str] | None = ".env",
        **kwargs: Any,
    ) -> QuotaRoutedChatModel:
        """A router over every key found in the environment (and a ``.env`` file).

        Reads the conventions people already use: ``GROQ_API_KEY``,
        ``GROQ_API_KEY_1..N``, ``OPENAI_API_KEYS=k1,k2``, per-key overrides such as
        ``OPENAI_MODEL_0`` and ``OPENAI_MAX_TOKENS_PER_DAY_0``, for every vendor of
        the built-in catalog. ``kwargs`` go to the constructor.
        """
        from langchain_quota_router._config import routes_from_env

        return cls(routes=routes_from_env(environ, dotenv=dotenv), **kwargs)

    @classmethod
    def from_config(cls, path: str | os.PathLike[str], **kwargs: Any) -> QuotaRoutedChatModel:
        """A router described by a TOML file (routes, pools, limits, strategy, ledger).

        ``kwargs`` override what the file says.
        """
        from langchain_quota_router._config import router_kwargs_from_config

        given = {**router_kwargs_from_config(path), **kwargs}
        specs = given.pop("key_rotators", [])
        embedding_routes = given.pop("embedding_routes", [])
        router = cls(**given)
        if embedding_routes:
            router.embeddings.append(
                QuotaRoutedEmbeddings(
                    embedding_routes,
                    ledger=router.ledger_backend,
                    clock=router.clock,
                    cache=given.get("cache", True) is not False,
                )
            )
        for spec in specs:
            if isinstance(spec, KeyRotator):
                router.key_rotators.append(spec)
                continue
            spec = dict(spec)
            name, pool = spec.pop("name"), spec.pop("pool", None)
            base = parse_limits(spec.get("limits", ()), owner=f"[[keys]] {name!r}")
            keys = [
                Key(
                    found.secret,
                    limits=found.limits_over(base),
                    pool=pool,
                    name=f"{name}{found.suffix}",
                )
                for found in spec.pop("keys")
            ]
            router.key_rotators.append(
                KeyRotator(name, keys, ledger=router.ledger_backend, clock=router.clock, **spec)
            )
        return router

    # ------------------------------------------------------------ public API

    @property
    def ledger_backend(self) -> Ledger:
        """The ledger this router counts in."""
        assert self._ledger is not None
        return self._ledger

    @property
    def route_map(self) -> dict[str, Route]:
        """Routes by name."""
        return self._route_map

    @property
    def pool_limits(self) -> dict[str, tuple[Limit, ...]]:
        """Each pool's limits: configured, learned from the vendor, or the catalog's."""
        return self._pool_table.current

    @property
    def _pool_table(self) -> PoolLimits:
        assert self._pools is not None
        return self._pools

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name in type(self).model_fields:
            # A field the settings may read changed: build them anew at the next call.
            self._settings = None

    def settings(self) -> Settings:
        """What the routing core works with, built once and kept until a field
        changes: by assignment (see ``__setattr__``) or in a copy
        (``model_copy(update=...)`` runs no validators and copies this cache, so the
        cache is keyed by the object it was built for: a copy is made while its
        original lives, so their ids differ). Every call reads it."""
        known = self.__pydantic_private__["_settings"]  # type: ignore[index]
        if known is not None and known[0] == id(self):
            settings: Settings = known[2]
            return settings
        return self._build_settings()

    def _build_settings(self) -> Settings:
        mark = (
            self.strategy,
            self.max_wait,
            self.transient_cooldown,
            self.rate_limit_cooldown,
            self.model_recheck,
            self.default_output_tokens,
            self.max_tokens,
            self.temperature,
            self.content,
            id(self.clock),
        )
        known = self._settings
        if known is not None and known[1] == mark:
            self._settings = (id(self), mark, known[2])
            return known[2]
        # Read once per settings, not on every call: every answer's explanation is
        # masked with them, and reading them walks every route's model fields.
        keys = route_keys(self.routes)
        settings = Settings(
            members=tuple(self.routes),
            member_map=self._route_map,
            error_for=functools.partial(_masked_no_route_error, tuple(self.routes)),
            secrets=lambda: keys,
            successor_of=successor_of,
            pools=self._pool_table,
            ledger=self.ledger_backend,
            clock=self.clock,
            stats=self._stats,
            alerts=self._alerts,
            strategy=self.strategy,
            max_wait=self.max_wait,
            transient_cooldown=self.transient_cooldown,
            rate_limit_cooldown=self.rate_limit_cooldown,
            model_recheck=self.model_recheck,
            default_output_tokens=self.default_output_tokens,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            tokens=self._tokens,
            text_content=self.content == "text",
            latency=self._stats.latency_board,
            invocation={**self._identifying_params, "_type": self._llm_type},
            ls_params=self._ls_params(None, {}),
        )
        self._settings = (id(self), mark, settings)
        return settings

    @property
    def members(self) -> tuple[Route, ...]:
        """The routes, as the quota core's status model reads them."""
        return tuple(self.routes)

    def keys_to_mask(self) -> list[str]:
        """Every API key the routes' vendor models (and the key rotators) hold,
        longest first: what every page, report and error must never show."""
        keys = set(route_keys(self.routes))
        for other in self.companions():
            keys.update(other.keys_to_mask())
        return sorted(keys, key=lambda k: (-len(k), k))

    @property
    def alert_tracker(self) -> AlertTracker:
        """Which alerts have fired, so each fires once per crossing per window."""
        return self._alerts

    @property
    def stats(self) -> RouterStats:
        """Live counters; see :meth:`get_stats` for a snapshot."""
        return self._stats

    def get_stats(self) -> dict[str, Any]:
        """Calls in total and per route, fallbacks, errors, cache hits, last route:
        this process's, since the router was built.

        ``"fleet"`` holds what every router sharing this ledger counted (this one
        included), read from the ledger: ``total_calls``, ``calls_per_route``,
        ``fallbacks``, ``errors``, ``errors_by_kind``, ``rate_limited`` (the
        vendors' 429s), ``refused`` (calls the ledger kept from full or blocked
        pools), ``cache_hits``, ``tokens_in``, ``tokens_out``, ``cost`` (USD), and
        per route and per pool under ``"routes"`` and ``"pools"`` (see
        :func:`langchain_quota_router.quota.fleet.fleet_view`). ``None`` when the ledger
        cannot be read (a warning says why).
        """
        return self._book.get_stats()

    def usage(self) -> list[LimitUsage]:
        """Per pool and limit (the key rotators' and embeddings' pools too): used,
        remaining, percent and when it resets.

        Limits learned from the vendor's headers say when (``learned_at``).
        """
        usage = self._book.usage()
        shown = {u.pool for u in usage}
        for other in self.companions():  # their pools too, each once
            usage.extend(u for u in other.usage() if u.pool not in shown)
            shown.update(u.pool for u in usage)
        return usage

    def lifespan(self, tokens_per_day: int) -> Lifespan:
        """How many days each pool, and the whole set, last at ``tokens_per_day``.

        One-time credits run out; daily and monthly limits renew.
        """
        return self._book.lifespan(tokens_per_day)

    def learned_limits(self) -> list[LearnedLimit]:
        """Limits the vendors' headers stated for this router's pools, and when.

        They are enforced beside the configured ones; a configured limit of the
        same metric and window always wins.
        """
        return self._book.learned_limits()

    def history(
        self,
        since: float | dt.datetime | dt.timedelta | None = None,
        step: float | dt.timedelta | None = None,
    ) -> list[dict[str, Any]]:
        """Each pool's limits' use over time, as plain rows (``pandas.DataFrame(rows)``).

        One row per point in time, pool and limit: ``time`` (ISO 8601, UTC),
        ``time_epoch`` (epoch seconds), ``pool``, ``limit`` (as written,
        ``"30/minute"``), ``metric``, ``window``, ``used`` (spent in the limit's
        window ending at that time), ``amount`` and ``percent`` (0-100).

        It is what the fleet's routers spent through this ledger (every process
        sharing it, counted as each call settled): usage the vendors report from
        other tools, and what a reset forgot, are not in it. Minutes are kept two
        days and hours 35 days.

        Args:
            since: the first time: epoch seconds, a datetime (naive is UTC) or a
                timedelta back from now; default 24 hours ago.
            step: seconds (or a timedelta) between points; default the shortest
                of 1, 5, 10, 15, 30 minutes, 1 ... 24 hours giving at most 240 points.

        Raises:
            LedgerError: when the ledger cannot be read.
        """
        return self._book.history(since, step)

    def enable(self, route: str) -> bool:
        """Use a route (or a key rotator's key) again: lift its key's disable (after
        an authentication failure) and its model's unavailable mark (after a
        model-not-found). Returns whether there was anything to lift."""
        other = self._companion_of(route)
        if other is not None:
            return bool(other.enable(route))
        return self._book.enable(route)

    def reset(self, route: str) -> None:
        """Forget what a route's (or a key rotator's key's) pool has spent and lift
        its block."""
        other = self._companion_of(route)
        if other is not None:
            other.reset(route)
            return
        self._book.reset(route)

    def companions(self) -> tuple[Any, ...]:
        """The key rotators and embeddings routers shown beside this router."""
        return (*self.key_rotators, *self.embeddings)

    def _companion_of(self, name: str) -> Any:
        """The key rotator or embeddings router with a member called ``name``,
        unless a route is called so."""
        if name in self._route_map:
            return None
        for other in self.companions():
            if any(member.name == name for member in other.members):
                return other
        return None

    def _named(self, route: str) -> Route:
        found: Route = self._book.named(route)
        return found

    # --------------------------------------------------- LangChain overrides

    @property
    def _llm_type(self) -> str:
        return "quota-router"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "routes": list(self._route_map),
            "strategy": self.strategy,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def _first_route(self, preferred: str | None = None) -> Route:
        """The route a call goes to first when every route has room."""
        if preferred in self._route_map:
            return self._route_map[preferred]
        return self._by_priority[0]

    def _get_invocation_params(
        self, stop: list[str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        # What LangChain's own builds from dict(self), under a warnings guard, on
        # every call: it changes only with the settings.
        return {**self.settings().invocation, "stop": stop, **kwargs}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        if stop is None and not kwargs:  # the common call: built with the settings
            return self.settings().ls_params.copy()
        return self._ls_params(stop, kwargs)

    def _ls_params(self, stop: list[str] | None, kwargs: Mapping[str, Any]) -> LangSmithParams:
        # One model, never a list: tracers price a run by its model. The model that
        # answered is in the output's response_metadata and llm_output.
        first = self._first_route(kwargs.get("preferred"))
        params = LangSmithParams(
            ls_provider=first.provider,
            ls_model_name=kwargs.get("model") or first.model_name,
            ls_model_type="chat",
        )
        temperature = kwargs.get("temperature", self.temperature)
        if temperature is not None:
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        if stop := stop or self.stop:
            params["ls_stop"] = stop
        return params

    def _get_llm_string(self, stop: list[str] | None = None, **kwargs: Any) -> str:
        # The cache key, from what the call really is: the routes and the router's
        # current settings (a model_copy(update=...) must not share answers), the
        # call's arguments (preferred= included) and the tools in a stable form
        # (tool objects' reprs hold memory addresses, which would make every
        # process miss). The settings part is kept, keyed by the settings: it is
        # read on every call, cache hits included.
        stop = stop or self.stop
        mark = (
            tuple(id(r) for r in self.routes),
            self.strategy,
            self.temperature,
            self.max_tokens,
            tuple(stop) if stop else None,
        )
        head = self._llm_string_heads.get(mark)
        if head is None:
            head = json.dumps(
                {
                    "routes": [r.identity() for r in self.routes],
                    "strategy": self.strategy,
                    "temperature": self.temperature,
                    "max_tokens": self.max_tokens,
                    "stop": stop,
                },
                sort_keys=True,
                default=repr,
            )
            if len(self._llm_string_heads) > 64:
                self._llm_string_heads.clear()
            self._llm_string_heads[mark] = head
        if not kwargs:
            return head
        params = {k: (self._tool_schema(v) if k == "tools" else v) for k, v in kwargs.items()}
        return head + json.dumps(params, sort_keys=True, default=repr)

    def get_num_tokens_from_messages(
        self,
        messages: list[BaseMessage],
        tools: Sequence[Any] | None = None,
    ) -> int:
        """The prompt's tokens, from the router's own estimator (no ``transformers``):
        what it would reserve for these messages and tools on the route that counts
        most (calibrated where a route's vendor has reported its counts; otherwise
        the conservative bound, never below what the vendor counts)."""
        raw = self._tokens.count(messages, tools)
        return max(self._tokens.for_route(route.name, raw) for route in self.routes)

    def get_num_tokens(self, text: str) -> int:
        """The tokens of ``text`` alone, from the router's estimator (an upper bound
        of what a vendor's tokenizer counts; no ``transformers`` needed)."""
        return self._tokens.count_text(text)

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools; each route gets them in its own vendor's form at call time.

        Args:
            tools: tools in any form LangChain accepts (``BaseTool``, functions,
                pydantic classes, OpenAI-format dicts).
            tool_choice: ``"auto"``, ``"any"``, ``"none"``, a tool name, or
                ``True``; passed to each route's own ``bind_tools``.
            **kwargs: ``strict=``, ``parallel_tool_calls=`` (given to each route's
                own ``bind_tools``; a route that cannot honour one is skipped, and
                when none can the error names the option and the routes); further
                arguments for every call.
        """
        tools = list(tools)
        for item in tools:
            convert_to_openai_tool(item)  # fail now, naming the tool, not mid-call
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        # Options of the tools themselves go through each vendor's own bind_tools
        # (which knows how its API spells them), not to the call as raw arguments.
        options = {k: kwargs.pop(k) for k in TOOL_OPTIONS if k in kwargs}
        if options:
            kwargs["tool_options"] = options
        return super().bind(tools=tools, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        include_raw: bool = False,
        method: Literal["function_calling", "json_mode", "json_schema"] | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Answers shaped by ``schema``.

        ``method="json_mode"`` asks each route for a JSON object in its vendor's own
        words (``response_format`` for OpenAI-style vendors and Cohere,
        ``response_mime_type`` for Gemini) and parses it (into ``schema`` when it is
        a pydantic class; ``schema`` may be ``None``). Every other method is served by
        tool calling, which every tool-capable vendor supports, so a structured call
        can fall back from one vendor to another. ``strict`` is accepted for
        compatibility and not forwarded.
        """
        if method not in (None, "function_calling", "json_mode", "json_schema"):
            msg = f"unknown structured output method {method!r}"
            raise ValueError(msg)
        del strict
        if method == "json_mode":
            return _json_mode(self.bind(json_mode=True), schema, include_raw=include_raw)
        if schema is None:
            msg = f"with_structured_output(method={method!r}) needs a schema"
            raise ValueError(msg)
        return super().with_structured_output(schema, include_raw=include_raw, **kwargs)

    # ------------------------------------------------------------ call paths
    # Each path only calls the vendor and reports the outcome; every decision is
    # the routing core's (RoutedCall), and every vendor call is made the same way
    # (_streaming), so the four paths cannot drift apart.

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        _check_call_arguments(kwargs)
        call = RoutedCall(self.settings(), messages, kwargs, stop or self.stop)
        while True:
            for attempt in call.attempts():
                try:
                    result = vendor.generate(attempt, run_manager)
                except Exception as exc:  # noqa: BLE001 - classified, then fallen back or raised
                    call.failed(attempt, exc)
                    continue
                except BaseException:
                    call.abandoned(attempt, None)
                    raise
                finished = _finish(call, attempt, result)
                alerts.dispatch_alerts(run_manager, call.alerts)
                return finished
            self.clock.sleep(call.wait_or_raise())

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        _check_call_arguments(kwargs)
        call = RoutedCall(self.settings(), messages, kwargs, stop or self.stop)
        while True:
            if self.hedge_after is not None:
                won = await hedging.race(
                    call,
                    functools.partial(vendor.agenerate, run_manager=run_manager),
                    functools.partial(_settle_lost_answer, call),
                    self.hedge_after,
                    self.clock,
                )
                if won is not None:
                    attempt, result = won
                    finished = _tagged(attempt, result)
                    await call.asucceeded(attempt, _first_message(result))
                    _explained(call, finished)
                    await alerts.adispatch_alerts(run_manager, call.alerts)
                    return finished
                await self.clock.asleep(call.wait_or_raise())
                continue
            async with contextlib.aclosing(call.aattempts()) as attempts:
                async for attempt in attempts:
                    try:
                        result = await vendor.agenerate(attempt, run_manager)
                    except Exception as exc:  # noqa: BLE001 - classified, then fallen back or raised
                        await call.afailed(attempt, exc)
                        continue
                    except BaseException:  # cancelled: settle what was reserved
                        await call.aabandoned(attempt, None)
                        raise
                    finished = _tagged(attempt, result)
                    await call.asucceeded(attempt, _first_message(result))
                    _explained(call, finished)
                    await alerts.adispatch_alerts(run_manager, call.alerts)
                    return finished
            await self.clock.asleep(call.wait_or_raise())

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        # LangChain gives _stream no run manager: remember this run (its id and
        # callbacks) so its quota alerts reach its own handlers (astream_events).
        config = alerts.with_run_id(config)
        token = alerts.STREAM_RUN.set(config)
        try:
            yield from super().stream(input, config, stop=stop, **kwargs)
        finally:
            with contextlib.suppress(ValueError):  # finished in another context
                alerts.STREAM_RUN.reset(token)

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        config = alerts.with_run_id(config)
        token = alerts.STREAM_RUN.set(config)
        inner = super().astream(input, config, stop=stop, **kwargs)
        try:
            async for chunk in inner:
                yield chunk
        finally:
            # A caller that stops reading closes this generator: close LangChain's
            # now, so the call settles now (async for would leave it to the GC).
            await inner.aclose()  # type: ignore[attr-defined]
            with contextlib.suppress(ValueError):  # finished in another context
                alerts.STREAM_RUN.reset(token)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        _check_call_arguments(kwargs)
        stop = stop or self.stop
        cache, prompt, llm_string = self._stream_cache(messages, stop, kwargs)
        if cache is not None:
            hit = cache.lookup(prompt, llm_string)
            if hit:
                yield from replay(hit)
                return
        call = RoutedCall(self.settings(), messages, kwargs, stop)
        while True:
            for attempt in call.attempts():
                relay = StreamRelay(attempt.route)
                try:
                    # The router's own stream() reports each token to callbacks;
                    # the vendor model must not report them a second time.
                    for chunk in vendor.stream(attempt):
                        shown = relay.take(chunk)
                        if shown:
                            call.responded(attempt)
                        yield from shaped(attempt, shown)
                    yield from shaped(attempt, relay.rest())
                except Exception as exc:
                    if relay.shown:
                        call.abandoned(attempt, relay.merged())
                        clean = call.surfaced(exc)
                        if clean is exc:
                            raise
                        raise clean from None
                    call.failed(attempt, exc)
                    continue
                except BaseException:  # the caller stopped reading, or was cancelled
                    call.abandoned(attempt, relay.merged(), error=False)
                    raise
                yield from _finish_stream(call, attempt, relay, cache, prompt, llm_string)
                alerts.dispatch_alerts(alerts.stream_run_manager(run_manager), call.alerts)
                return
            self.clock.sleep(call.wait_or_raise())

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        _check_call_arguments(kwargs)
        stop = stop or self.stop
        cache, prompt, llm_string = self._stream_cache(messages, stop, kwargs)
        if cache is not None:
            hit = await cache.alookup(prompt, llm_string)
            if hit:
                for chunk in replay(hit):
                    yield chunk
                return
        call = RoutedCall(self.settings(), messages, kwargs, stop)
        while True:
            if self.hedge_after is not None:
                won = await hedging.race(
                    call,
                    functools.partial(_first_token, call),
                    functools.partial(_settle_lost_stream, call),
                    self.hedge_after,
                    self.clock,
                )
                if won is None:
                    await self.clock.asleep(call.wait_or_raise())
                    continue
                attempt, opened = won
                relay, chunks = opened.relay, opened.chunks
                try:
                    for out in shaped(attempt, opened.shown):
                        yield out
                    async for chunk in chunks:
                        for out in shaped(attempt, relay.take(chunk)):
                            yield out
                    for out in shaped(attempt, relay.rest()):
                        yield out
                except Exception as exc:
                    # The caller already has text (or the stream ended empty).
                    await call.aabandoned(attempt, relay.merged())
                    clean = call.surfaced(exc)
                    if clean is exc:
                        raise
                    raise clean from None
                except BaseException:  # the caller stopped reading, or was cancelled
                    await call.aabandoned(attempt, relay.merged(), error=False)
                    raise
                message = shaped_message(attempt, relay.merged())
                await call.asucceeded(attempt, message)
                yield _tail_chunk(call, message)
                if cache is not None and message is not None:
                    await cache.aupdate(prompt, llm_string, [ChatGeneration(message=message)])
                manager = alerts.astream_run_manager(run_manager)
                await alerts.adispatch_alerts(manager, call.alerts)
                return
            async with contextlib.aclosing(call.aattempts()) as attempts:
                async for attempt in attempts:
                    relay = StreamRelay(attempt.route)
                    try:
                        async for chunk in vendor.astream(attempt):
                            shown = relay.take(chunk)
                            if shown:
                                call.responded(attempt)
                            for out in shaped(attempt, shown):
                                yield out
                        for out in shaped(attempt, relay.rest()):
                            yield out
                    except Exception as exc:
                        if relay.shown:
                            await call.aabandoned(attempt, relay.merged())
                            clean = call.surfaced(exc)
                            if clean is exc:
                                raise
                            raise clean from None
                        await call.afailed(attempt, exc)
                        continue
                    except BaseException:  # the caller stopped reading, or was cancelled
                        await call.aabandoned(attempt, relay.merged(), error=False)
                        raise
                    message = shaped_message(attempt, relay.merged())
                    await call.asucceeded(attempt, message)
                    yield _tail_chunk(call, message)
                    if cache is not None and message is not None:
                        await cache.aupdate(prompt, llm_string, [ChatGeneration(message=message)])
                    manager = alerts.astream_run_manager(run_manager)
                    await alerts.adispatch_alerts(manager, call.alerts)
                    return
            await self.clock.asleep(call.wait_or_raise())

    def _own_cache(self) -> HitCounter | None:
        """The router's cache when it files answers under the router's own key."""
        cache = self.cache
        return cache if isinstance(cache, HitCounter) and cache.own_keys else None

    def _generate_with_cache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # The router's own cache is looked up under the router's own key (see
        # caching.prompt_key); on a miss LangChain runs the call as ever and files
        # the answer under that key.
        cache = self._own_cache()
        if cache is None:
            return super()._generate_with_cache(messages, stop, run_manager, **kwargs)
        prompt = prompt_key(messages)
        hit = cache.lookup(prompt, self._get_llm_string(stop=stop, **kwargs))
        if isinstance(hit, list):
            generations = self._convert_cached_generations(hit)
            replay = getattr(self, "_replay_v2_events_for_cache_hit", None)
            if replay is not None:  # langchain-core >= 1.3
                replay(generations, run_manager=run_manager, **kwargs)
            return ChatResult(generations=generations)
        token = OWN_KEY.set(prompt)
        try:
            return super()._generate_with_cache(messages, stop, run_manager, **kwargs)
        finally:
            OWN_KEY.reset(token)

    async def _agenerate_with_cache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        cache = self._own_cache()
        if cache is None:
            return await super()._agenerate_with_cache(messages, stop, run_manager, **kwargs)
        prompt = prompt_key(messages)
        hit = await cache.alookup(prompt, self._get_llm_string(stop=stop, **kwargs))
        if isinstance(hit, list):
            generations = self._convert_cached_generations(hit)
            replay = getattr(self, "_areplay_v2_events_for_cache_hit", None)
            if replay is not None:
                await replay(generations, run_manager=run_manager, **kwargs)
            return ChatResult(generations=generations)
        token = OWN_KEY.set(prompt)
        try:
            return await super()._agenerate_with_cache(messages, stop, run_manager, **kwargs)
        finally:
            OWN_KEY.reset(token)

    def _stream_cache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
    ) -> tuple[BaseCache | None, str, str]:
        """The cache, prompt key and llm key LangChain's invoke would use (the
        router's own key for its own cache)."""
        cache: BaseCache | None
        if isinstance(self.cache, BaseCache):
            cache = self.cache
        elif self.cache is None:
            cache = get_llm_cache()
        else:
            cache = None
        if cache is None:
            return None, "", ""
        if self._own_cache() is not None:
            return cache, prompt_key(messages), self._get_llm_string(stop=stop, **kwargs)
        normalized = [
            m.model_copy(update={"id": None}) if getattr(m, "id", None) is not None else m
            for m in messages
        ]
        return cache, dumps(normalized), self._get_llm_string(stop=stop, **kwargs)

    def _tool_schema(self, tools: Any) -> Any:
        if not isinstance(tools, (list, tuple)):
            return tools
        known = self._tool_schemas.get(id(tools))
        if known is not None and known[0] is tools:
            return known[1]
        schemas = [convert_to_openai_tool(t) for t in tools]
        if len(self._tool_schemas) > 256:
            self._tool_schemas.clear()
        self._tool_schemas[id(tools)] = (tools, schemas)
        return schemas


@dataclass
class _Opened:
    """A route's stream up to its first token: what :func:`_first_token` hands the
    winner of a hedged ``astream``."""

    relay: StreamRelay
    chunks: AsyncIterator[ChatGenerationChunk]
    shown: list[ChatGenerationChunk]


async def _first_token(call: RoutedCall, attempt: Attempt) -> _Opened:
    """Open a route's stream and read it until its first chunk with content (or
    its end): a hedged ``astream`` races routes to this."""
    relay = StreamRelay(attempt.route)
    chunks = vendor.astream(attempt).__aiter__()
    async for chunk in chunks:
        shown = relay.take(chunk)
        if shown:
            call.responded(attempt)
            return _Opened(relay, chunks, shown)
    return _Opened(relay, chunks, [])


async def _settle_lost_answer(
    call: RoutedCall, attempt: Attempt, result: ChatResult | None
) -> None:
    """Settle a hedged ``ainvoke`` route that lost the race."""
    message = _first_message(result) if result is not None else None
    await call.aabandoned(attempt, message, error=False, counted=False)


async def _settle_lost_stream(call: RoutedCall, attempt: Attempt, opened: _Opened | None) -> None:
    """Settle a hedged ``astream`` route that lost the race (closing its stream)."""
    message = None
    if opened is not None:
        with contextlib.suppress(Exception):
            await opened.chunks.aclose()  # type: ignore[attr-defined]
        message = opened.relay.merged()
    await call.aabandoned(attempt, message, error=False, counted=False)


def _masked_no_route_error(
    routes: tuple[Route, ...],
    categories: set[str],
    reasons: Mapping[str, str],
    resets_at: dt.datetime | None,
) -> NoRouteError:
    """:func:`no_route_error` with route names masked too: a name may embed a key
    (``backup-<key>``), and the reasons are keyed by name."""
    keys = route_keys(routes)
    named = {mask(name, keys, shapes=False): why for name, why in reasons.items()}
    return no_route_error(categories, named, resets_at)


def _bad_call_argument(name: str, value: Any) -> str | None:
    """Why a ``max_tokens``, ``temperature`` or ``timeout`` no vendor takes is
    refused (``None`` when it is fine): a negative budget would make the ledger
    release quota it never reserved, and NaN compares false with every limit."""
    if value is None:
        return None
    if name == "max_tokens":
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_AMOUNT:
            return f"max_tokens must be a whole number from 1 to {MAX_AMOUNT}; got {value!r}"
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        return f"{name} must be a finite number, not negative; got {value!r}"
    return None


def _signed(function: Callable[..., Any]) -> None:
    """Give ``function`` its signature, worked out now: LangChain inspects
    ``_generate``'s on every call (to see whether it takes a run manager), and
    ``inspect`` reads a ``__signature__`` instead of building one each time."""
    function.__signature__ = inspect.signature(function)  # type: ignore[attr-defined]


_signed(QuotaRoutedChatModel._generate)
_signed(QuotaRoutedChatModel._agenerate)


def _check_call_arguments(kwargs: Mapping[str, Any]) -> None:
    """Refuse a call's ``max_tokens`` or ``temperature`` before any quota is reserved."""
    for name in ("max_tokens", "temperature"):
        problem = _bad_call_argument(name, kwargs.get(name))
        if problem is not None:
            raise ValueError(problem)


def _finish(call: RoutedCall, attempt: Attempt, result: ChatResult) -> ChatResult:
    """Tag an answer with its route, settle, and tell tracers who answered."""
    finished = _tagged(attempt, result)
    call.succeeded(attempt, _first_message(result))
    return _explained(call, finished)


def _explained(call: RoutedCall, result: ChatResult) -> ChatResult:
    """Say how the answer was reached: every route considered, in order, with what
    happened and why, on the message and in ``llm_output``."""
    attempts = call.explain()
    for generation in result.generations:
        generation.message.response_metadata["attempts"] = attempts
    result.llm_output = {**(result.llm_output or {}), "attempts": attempts}
    return result


def _first_message(result: ChatResult) -> BaseMessage | None:
    return result.generations[0].message if result.generations else None


def _tagged(attempt: Attempt, result: ChatResult) -> ChatResult:
    """The answer tagged with the route that gave it, for tracers too."""
    route = attempt.route
    for generation in result.generations:
        tag_message(generation.message, route)
        if attempt.text_content:
            as_text(generation.message)
    # LangChain tracers read llm_output: the model that answered, not the router.
    vendor_output = result.llm_output or {}
    usage = vendor_output.get("token_usage")
    if len(result.generations) == 1 and isinstance(usage, Mapping):
        # Where the vendor's own invoke() would put it (and where its reported cost,
        # OpenRouter's usage.cost, is read from when the call is settled).
        result.generations[0].message.response_metadata.setdefault("token_usage", usage)
    result.llm_output = {
        **vendor_output,
        # The vendor's own name for what answered (a dated snapshot) wins.
        "model_name": vendor_output.get("model_name") or route.model_name,
        "model_provider": route.provider,
        "route": route.name,
    }
    return result


def _finish_stream(
    call: RoutedCall,
    attempt: Attempt,
    relay: StreamRelay,
    cache: BaseCache | None,
    prompt: str,
    llm_string: str,
) -> Iterator[ChatGenerationChunk]:
    message = shaped_message(attempt, relay.merged())
    call.succeeded(attempt, message)
    yield _tail_chunk(call, message)
    if cache is not None and message is not None:
        cache.update(prompt, llm_string, [ChatGeneration(message=message)])


def _tail_chunk(call: RoutedCall, message: BaseMessage | None) -> ChatGenerationChunk:
    """The last chunk of a stream: how the answer was reached (``attempts``) and its
    cost, which only the whole answer gives. Stream chunks merge by adding values,
    so each appears on this chunk only."""
    metadata: dict[str, Any] = {"attempts": call.explain()}
    cost = message.response_metadata.get("cost") if message is not None else None
    if cost is not None:
        metadata["cost"] = cost
    if message is not None:
        message.response_metadata["attempts"] = metadata["attempts"]
    content: str | list[str | dict[str, Any]] = (
        [] if message is not None and not isinstance(message.content, str) else ""
    )
    return ChatGenerationChunk(
        message=AIMessageChunk(content=content, response_metadata=metadata, chunk_position="last")
    )


def _json_mode(
    llm: Runnable[LanguageModelInput, AIMessage],
    schema: dict[str, Any] | type | None,
    *,
    include_raw: bool,
) -> Runnable[LanguageModelInput, Any]:
    parser: Runnable[Any, Any] = (
        PydanticOutputParser(pydantic_object=schema)
        if isinstance(schema, type) and issubclass(schema, BaseModel)
        else JsonOutputParser()
    )
    if not include_raw:
        return llm | parser
    parsed = RunnablePassthrough.assign(
        parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
    )
    failed = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=llm) | parsed.with_fallbacks([failed], exception_key="parsing_error")
