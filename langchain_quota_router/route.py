"""A route: one vendor chat model (or embeddings model) behind one key, with the
limits that key lives by.

``Route(...)`` takes a chat model or a LangChain ``Embeddings`` (or a catalog spec of
either); given embeddings it makes an :class:`EmbeddingRoute`, the flavour of route
``QuotaRoutedEmbeddings`` takes. The chat model refuses embedding routes, and the
embeddings router chat routes: each names what it got.
"""

from __future__ import annotations

import inspect
import math
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, SecretStr

from langchain_quota_router._errors import ConfigurationError
from langchain_quota_router.quota.ledger.url import redact_url
from langchain_quota_router.quota.limits import MAX_AMOUNT, Limit, parse_limits
from langchain_quota_router.quota.pricing import Prices
from langchain_quota_router.quota.secrets import (
    MIN_KEY_LENGTH,
    alias,
    clean_key,
    fingerprint,
    mask,
    mask_url,
)
from langchain_quota_router.vendors.catalog import (
    build_chat_model,
    build_embeddings,
    default_api_key,
    find_model,
    is_known,
    lookup,
    tier_limits,
)
from langchain_quota_router.vendors.embedders import Embedder, embedder_for
from langchain_quota_router.vendors.kinds import VendorKind, kind_for

_SECRET_MARKS = ("api_key", "secret", "password", "credential", "access_token", "auth")


def _describe_model(model: BaseChatModel) -> tuple[str, str]:
    """The (provider, model name) LangChain's tracing would report for ``model``."""
    try:
        params = model._get_ls_params()
    except Exception:  # noqa: BLE001 - a third-party model's tracing hook must not break routing
        params = {}
    provider = str(params.get("ls_provider") or type(model).__name__.lower())
    name = params.get("ls_model_name")
    if not isinstance(name, str) or not name:
        for attr in ("model_name", "model", "model_id"):
            value = getattr(model, attr, None)
            if isinstance(value, str) and value:
                name = value
                break
        else:
            name = type(model).__name__
    return provider, name


class Route:
    """One place a call can go: a chat model, its quota and its place in line.

    Args:
        model: any LangChain chat model (``ChatGroq(...)``, ``ChatOpenAI(...)``, a
            fake in tests), or a catalog spec (``"groq:openai/gpt-oss-120b"``,
            ``"gemini"`` for the vendor's default model; see
            :mod:`langchain_quota_router.vendors.catalog`). A spec builds the vendor's
            chat model and takes its limits, prices and context window from the
            catalog unless given here; a model the catalog lists as retired is an
            error naming its successor, a deprecated or retiring one a logged
            warning. The router calls a copy whose SDK retries are off.
        api_key: with a spec only: the key (default: the vendor's environment
            variable, e.g. ``GROQ_API_KEY``). It lives only in the vendor model, as
            a ``SecretStr``; the route knows it by its fingerprint (``…a1f3``).
        base_url: with a spec only: another address for the vendor's API.
        name: what reports, errors and ``response_metadata["route"]`` call this
            route; unique within a router. Defaults to ``provider:model``.
        limits: the key's limits for this model, as strings (``"30/minute"``,
            ``"12000 tokens/minute"``, ``"20/day@America/Los_Angeles"``) or
            :class:`Limit` objects.
        tier: with a spec only: the key's tier with the vendor (``"free"``,
            ``"tier-1"``, ``"paid"``...), which picks the catalog's limits. Where
            the catalog has no figures for it, or where no tier is named and the
            vendor's keys may be on any (OpenAI), the tier is unknown: the free
            figures are provisional, the first call on the key goes out alone and
            the limits its answer's headers state replace them.
        priority: lower goes first under ``strategy="priority"`` (free before paid).
        pool: the quota this route spends. Routes naming the same pool share it
            (a Gemini project, a Groq organisation); defaults to the route's name.
            The pool's limits are those given by the routes that name it; two
            routes may not give it different limits. With a spec it defaults to
            the key's quota as the vendor counts it: ``"groq …a1f3:model"`` where
            each model has its own quota, ``"cohere …a1f3"`` where all share one.
        credential: the identity of the route's credentials, which the router
            disables when the vendor rejects them. Defaults to the vendor, the base
            URL and the API key's fingerprint (``"groq …a1f3"``), read from the
            model's secret fields: every route using one key shares it, and a
            fixed key in the configuration is a fresh credential, never one
            disabled before. A model with no secret fields gets the route's name.
            Never put the API key itself here.
        key: the former name of ``credential``, still accepted.
        prices: USD per million input and output tokens, ``(input, output)``, or
            ``(input, output, cached_input)`` where the vendor prices prompt-cache
            reads apart. What a call costs is reserved before it (and settled to the
            vendor's reported cost, else tokens x prices) in the pool's dollar
            limits (``"$5/month"``); it overrides the catalog's. A route whose pool
            has a dollar limit needs prices; ``(0, 0)`` is a free route.
        context_window: the model's context size in tokens; a prompt that does
            not fit skips this route.
        batch_size: embedding routes only (see :class:`EmbeddingRoute`).
        count_items: embedding routes only (see :class:`EmbeddingRoute`).
        **model_kwargs: with a spec only: more arguments for the vendor class
            (``timeout=30``, ``temperature=0``; ``account_id=`` for Cloudflare).

    Given a LangChain ``Embeddings`` object or an embedding model's spec
    (``"cohere:embed-v4.0"``), ``Route(...)`` makes an :class:`EmbeddingRoute`.

    Raises:
        ConfigurationError: a bad model, spec, limit or argument; a spec naming a
            retired model (the message names its successor); a spec whose key is
            neither given nor in the environment (the message names the variable).
    """

    __slots__ = (
        "_accepts_run_manager",
        "adapter",
        "catalog_limits",
        "context_window",
        "credential",
        "limits",
        "model",
        "model_name",
        "name",
        "output_budget",
        "pool",
        "prices",
        "pricing",
        "priority",
        "provider",
        "provisional_limits",
        "tier",
    )

    def __new__(cls, model: Any = None, *args: Any, **kwargs: Any) -> Route:
        # Route(CohereEmbeddings(...)) and Route("cohere:embed-v4.0") are embedding
        # routes: one public name for both flavours.
        if cls is Route and _names_embeddings(model):
            return super().__new__(EmbeddingRoute)
        return super().__new__(cls)

    def __init__(
        self,
        model: BaseChatModel | Embeddings | str,
        *,
        api_key: str | SecretStr | None = None,
        base_url: str | None = None,
        name: str | None = None,
        limits: Sequence[str | Limit] | str | Limit | None = None,
        priority: int = 0,
        pool: str | None = None,
        credential: str | None = None,
        key: str | None = None,
        prices: tuple[float, float] | tuple[float, float, float] | Prices | None = None,
        context_window: int | None = None,
        batch_size: int | None = None,
        count_items: bool | None = None,
        tier: str | None = None,
        **model_kwargs: Any,
    ) -> None:
        _check_identities(model, name, pool, credential, key)
        if batch_size is not None or count_items is not None:
            msg = (
                f"route {name or model!r}: batch_size and count_items are for embedding "
                "routes (a LangChain Embeddings object or an embedding model's spec)"
            )
            raise ConfigurationError(msg)
        from_catalog = provisional = False
        if isinstance(model, str):
            spec = _from_catalog(model, api_key, base_url, model_kwargs, tier=tier)
            model = spec.model
            name = name or spec.name
            from_catalog = limits is None
            provisional = from_catalog and spec.provisional
            limits = spec.limits if limits is None else limits
            pool = pool or spec.pool
            credential = credential or key or spec.key
            prices = spec.prices if prices is None else prices
            context_window = spec.context_window if context_window is None else context_window
        elif api_key is not None or base_url is not None or tier is not None or model_kwargs:
            given = sorted(
                [
                    n
                    for n, v in (("api_key", api_key), ("base_url", base_url), ("tier", tier))
                    if v is not None
                ]
                + list(model_kwargs)
            )
            msg = (
                f"route {name or '<unnamed>'!r}: {', '.join(given)} may only be given with a "
                "catalog spec such as Route('groq:openai/gpt-oss-120b', api_key=...); "
                "set them on the chat model you pass instead"
            )
            raise ConfigurationError(msg)
        if not isinstance(model, BaseChatModel):
            msg = (
                f"route {name or '<unnamed>'!r}: model must be a LangChain chat model "
                f"(a BaseChatModel such as ChatGroq or ChatOpenAI) or Embeddings, got "
                f"{type(model).__name__}"
            )
            raise ConfigurationError(msg)
        self.adapter: VendorKind = kind_for(model)
        # A copy with the vendor SDK's own retries off: a 429 must reach the router
        # at once, not after seconds of silent retries.
        self.model = self.adapter.prepare(model)
        self.provider, self.model_name = _describe_model(model)
        self.name = name or f"{self.provider}:{self.model_name}"
        if not isinstance(self.name, str) or not self.name.strip():
            msg = f"route name must be a non-empty string, got {name!r}"
            raise ConfigurationError(msg)
        self.limits: tuple[Limit, ...] = parse_limits(limits, owner=f"route {self.name!r}")
        #: The limits are the catalog's figures, not the user's: a limit the vendor's
        #: headers state replaces a catalog figure, never a configured one.
        self.catalog_limits = from_catalog
        #: The catalog's figures are a guess (the key's tier is unknown): they hold
        #: only until the vendor's headers say what the key allows.
        self.provisional_limits = provisional
        #: The key's tier as the route named it (``None``: the vendor's default).
        self.tier = tier
        if isinstance(priority, bool) or not isinstance(priority, int):
            msg = f"route {self.name!r}: priority must be an int, got {priority!r}"
            raise ConfigurationError(msg)
        self.priority = priority
        self.pool = pool or self.name
        self.credential = credential or key or _credential_of(model, self.provider) or self.name
        self.pricing = _check_prices(self.name, prices)
        self.prices = None if self.pricing is None else (self.pricing.input, self.pricing.output)
        if context_window is not None and (
            isinstance(context_window, bool)
            or not isinstance(context_window, int)
            or not 0 < context_window <= MAX_AMOUNT
        ):
            msg = (
                f"route {self.name!r}: context_window must be a positive whole number of "
                f"tokens, got {context_window!r}"
            )
            raise ConfigurationError(msg)
        self.context_window = context_window
        self._accepts_run_manager = "run_manager" in inspect.signature(model._generate).parameters
        # Read once: probing a pydantic model for attributes it lacks is slow, and
        # the router needs this on every call.
        self.output_budget: int | None = next(
            (
                value
                for value in (
                    getattr(self.model, name, None)
                    for name in ("max_tokens", "max_output_tokens", "max_completion_tokens")
                )
                if isinstance(value, int) and not isinstance(value, bool) and value > 0
            ),
            None,
        )

    @property
    def key(self) -> str:
        """The former name of :attr:`credential` (an identity, not an API key)."""
        return self.credential

    def cost(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> float | None:
        """USD for that many tokens on this route (rounded up to the micro-dollar),
        if its prices are known."""
        if self.pricing is None:
            return None
        return self.pricing.dollars(input_tokens, output_tokens, cached_tokens)

    def identity(self) -> dict[str, Any]:
        """What makes this route's answers its own, for cache keys (no secrets)."""
        try:
            params = {k: repr(v) for k, v in model_params(self.model).items()}
        except Exception:  # noqa: BLE001 - third-party models may not report params
            params = {}
        return {
            "name": self.name,
            "class": f"{type(self.model).__module__}.{type(self.model).__qualname__}",
            "model": self.model_name,
            "params": params,
        }

    def __repr__(self) -> str:
        # Never the model's repr: third-party models may print credentials.
        limits = ", ".join(str(limit) for limit in self.limits)
        return (
            f"Route(name={self.name!r}, model={self.provider}:{self.model_name}, "
            f"pool={self.pool!r}, priority={self.priority}, limits=[{limits}])"
        )


def _check_identities(
    model: object, name: object, pool: object, credential: object, key: object
) -> None:
    """Refuse a name, pool or credential that is given but is not a non-empty string
    (an empty one would silently fall back to the default)."""
    label = name if isinstance(name, str) and name.strip() else None
    label = label or (model if isinstance(model, str) else type(model).__name__)
    for argument, value in (
        ("name", name),
        ("pool", pool),
        ("credential", credential),
        ("key", key),
    ):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            msg = f"route {label!r}: {argument} must be a non-empty string, got {value!r}"
            raise ConfigurationError(msg)
        control = _control_character(value)
        if control is not None:
            # A newline or escape code would be written raw into logs, ledgers and
            # terminals: a forged log line, a recoloured terminal.
            msg = (
                f"route {label!r}: {argument} {value!r} holds a control character "
                f"({control!r}); use printable characters only"
            )
            raise ConfigurationError(msg)


def _control_character(value: object) -> str | None:
    """The first control character (newline, escape, NUL, ...) in ``value``, if any."""
    if not isinstance(value, str):
        return None
    return next((ch for ch in value if unicodedata.category(ch) == "Cc"), None)


def _check_prices(route: str, prices: object) -> Prices | None:
    """``prices`` (two or three finite, non-negative numbers) as :class:`Prices`, or
    a ConfigurationError naming the route."""
    if prices is None:
        return None
    if isinstance(prices, Prices):
        return prices
    if (
        not isinstance(prices, (tuple, list))
        or len(prices) not in (2, 3)
        or not all(
            isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p) and p >= 0
            for p in prices
        )
    ):
        msg = (
            f"route {route!r}: prices must be (input, output) or (input, output, "
            f"cached_input) USD per million tokens, finite numbers, not negative; "
            f"got {prices!r}"
        )
        raise ConfigurationError(msg)
    cached = float(prices[2]) if len(prices) == 3 else None
    return Prices(float(prices[0]), float(prices[1]), cached)


def check_base_url(url: object, where: str) -> str:
    """``url`` if it is an http(s) URL with a host, else a ConfigurationError naming
    ``where`` (the variable, the TOML entry, the route)."""
    if not isinstance(url, str):
        msg = f"{where} must be a URL string, got {type(url).__name__}"
        raise ConfigurationError(msg)
    problem = None
    if not url.strip():
        problem = "it is empty; leave it unset for the vendor's own address"
    elif any(ch.isspace() or not ch.isprintable() for ch in url):
        problem = "it holds a space or a control character"
    else:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - reading it checks the port
            httpx.URL(url)
        except (ValueError, httpx.InvalidURL) as exc:
            problem = str(exc) or type(exc).__name__
        else:
            if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
                problem = "expected http:// or https:// and a host, e.g. http://localhost:11434/v1"
    if problem is not None:
        # Shown as given unless it may carry a password (mask_url cannot take
        # apart what does not parse).
        shown = mask_url(url) if "@" in url else mask(url)
        msg = f"{where}: {shown!r} is not a usable base URL: {problem}"
        raise ConfigurationError(msg)
    return url


@dataclass(frozen=True)
class _CatalogRoute:
    """What a catalog spec fills in for a route; never the key itself."""

    model: Any
    name: str
    limits: tuple[str, ...]
    pool: str
    key: str
    prices: Prices | None
    context_window: int | None
    provisional: bool = False


def _from_catalog(
    spec: str,
    api_key: str | SecretStr | None,
    base_url: str | None,
    model_kwargs: dict[str, Any],
    *,
    embeddings: bool = False,
    tier: str | None = None,
) -> _CatalogRoute:
    """Build a route's vendor model (chat or ``embeddings``) and defaults from a
    catalog spec (limits for the key's ``tier``)."""
    vendor, info = lookup(spec)
    try:
        limits, provisional = tier_limits(vendor, info, tier)
    except ConfigurationError as exc:
        msg = f"route {spec!r}: {exc}"
        raise ConfigurationError(msg) from None
    secret = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
    if secret is not None and not isinstance(secret, str):
        msg = f"route {spec!r}: api_key must be a string, got {type(secret).__name__}"
        raise ConfigurationError(msg)
    if secret is not None:
        secret = clean_key(secret, f"route {spec!r}: api_key") or None
    if base_url is not None:
        check_base_url(base_url, f"route {spec!r}: base_url")
    for argument, value in model_kwargs.items():
        if isinstance(value, float) and not math.isfinite(value):
            msg = f"route {spec!r}: {argument} must be a finite number, got {value}"
            raise ConfigurationError(msg)
    if secret is None:
        secret = default_api_key(vendor)
    if secret is None and vendor.requires_key:
        msg = (
            f"route {spec!r} needs an API key: pass api_key=... or set "
            f"{' or '.join(vendor.key_env)}"
        )
        raise ConfigurationError(msg)
    build = build_embeddings if embeddings else build_chat_model
    chat = build(vendor.name, info.model, secret, base_url=base_url, **model_kwargs)
    key_alias = alias(vendor.name, None, secret) if secret is not None else vendor.name
    # Where a vendor counts all of a key's models together (Cohere trial keys,
    # OpenRouter's free models) one pool per key; elsewhere one per key and model.
    # A model the catalog does not know may be billed differently (a paid OpenRouter
    # model): it gets a pool of its own rather than eating the free quota.
    shared = not vendor.per_model and is_known(vendor, info.model)
    return _CatalogRoute(
        model=chat,
        name=f"{vendor.name}:{info.model}",
        limits=limits,
        pool=key_alias if shared else f"{key_alias}:{info.model}",
        key=key_alias,
        prices=info.pricing,
        context_window=info.context_window,
        provisional=provisional,
    )


_BASE_URL_FIELDS = ("openai_api_base", "base_url", "groq_api_base", "api_base", "endpoint")


def _credential_of(model: Any, provider: str) -> str | None:
    """``"<provider> …a1f3"`` (plus ``@base URL`` when set) from a model's API key.

    ``None`` when the model holds no secret (a fake, a local server).
    """
    if not isinstance(model, BaseModel):
        return None
    secret = None
    for name in type(model).model_fields:
        value = getattr(model, name, None)
        if isinstance(value, SecretStr) and value.get_secret_value().strip():
            secret = value.get_secret_value().strip()
            break
    if secret is None:
        return None
    identity = f"{provider} {fingerprint(secret)}"
    for name in _BASE_URL_FIELDS:
        url = getattr(model, name, None)
        if isinstance(url, str) and url:
            return f"{identity}@{redact_url(url)}"
    return identity


def model_params(model: BaseChatModel) -> dict[str, Any]:
    """A model's identifying parameters, with anything secret-looking left out."""
    return {
        k: v
        for k, v in dict(model._identifying_params).items()
        if not any(mark in k.lower() for mark in _SECRET_MARKS)
    }


def route_keys(routes: Iterable[Route]) -> list[str]:
    """Every API key the routes' vendor models hold, longest first (so that a key
    containing another is masked whole): their ``SecretStr`` fields' values."""
    found: set[str] = set()
    for route in routes:
        model = route.model
        if not isinstance(model, BaseModel):
            continue
        for name in type(model).model_fields:
            value = getattr(model, name, None)
            if isinstance(value, SecretStr):
                secret = value.get_secret_value()
                if len(secret) >= MIN_KEY_LENGTH:
                    found.add(secret)
    return sorted(found, key=lambda k: (-len(k), k))


# ------------------------------------------------------------------ embeddings

#: Texts per call for an embeddings class and model the catalog does not know: the
#: smallest cap of the vendors it does (Cohere's 96).
DEFAULT_BATCH_SIZE = 96


def _names_embeddings(model: object) -> bool:
    """Whether ``model`` is a LangChain ``Embeddings`` or an embedding model's spec."""
    if isinstance(model, Embeddings):
        return True
    if not isinstance(model, str):
        return False
    try:
        _, info = lookup(model, warn=False)
    except ConfigurationError:
        return False  # Route.__init__ says what is wrong with it
    return info.is_embedding


class EmbeddingRoute(Route):
    """One place an embedding call can go: an embeddings model behind one key.

    Made by ``Route(CohereEmbeddings(...), ...)`` or ``Route("cohere:embed-v4.0")``;
    takes :class:`Route`'s ``api_key``, ``base_url``, ``name``, ``limits``,
    ``priority``, ``pool``, ``credential`` and ``prices``, and:

    Args:
        batch_size: the most texts in one call (default: the catalog's cap for the
            model, e.g. Cohere 96, Gemini 100, OpenAI 2,048; else 96).
        count_items: count each text of a batch as one request against the pool's
            request limits (default: the catalog's word; true for Gemini, whose
            free tier is reported to count items). ``False`` counts one per call.

    Attributes:
        dimension: the size of the vectors this route answers with, when known
            before the first answer (asked for on the object, or the catalog's
            native size for the model).
        batch_tokens: the most estimated input tokens in one call, if capped.

    A route with no ``pool=`` shares its key's pool as the catalog says the vendor
    counts (a Cohere trial key's chat and embed calls count together).
    """

    __slots__ = (
        "batch_size",
        "batch_tokens",
        "count_items",
        "dimension",
        "embedder",
        "embeddings",
    )

    def __init__(
        self,
        model: BaseChatModel | Embeddings | str,
        *,
        api_key: str | SecretStr | None = None,
        base_url: str | None = None,
        name: str | None = None,
        limits: Sequence[str | Limit] | str | Limit | None = None,
        priority: int = 0,
        pool: str | None = None,
        credential: str | None = None,
        key: str | None = None,
        prices: tuple[float, float] | tuple[float, float, float] | Prices | None = None,
        context_window: int | None = None,
        batch_size: int | None = None,
        count_items: bool | None = None,
        tier: str | None = None,
        **model_kwargs: Any,
    ) -> None:
        _check_identities(model, name, pool, credential, key)
        from_catalog = False
        if isinstance(model, str):
            spec = _from_catalog(model, api_key, base_url, model_kwargs, embeddings=True, tier=tier)
            model = spec.model
            name = name or spec.name
            from_catalog = limits is None
            limits = spec.limits if limits is None else limits
            pool = pool or spec.pool
            credential = credential or key or spec.key
            prices = spec.prices if prices is None else prices
        elif api_key is not None or base_url is not None or tier is not None or model_kwargs:
            msg = (
                f"route {name or '<unnamed>'!r}: api_key, base_url, tier and model arguments "
                "may only be given with a catalog spec such as "
                "Route('cohere:embed-v4.0', api_key=...); set them on the embeddings "
                "object you pass instead"
            )
            raise ConfigurationError(msg)
        if not isinstance(model, Embeddings):
            msg = (
                f"route {name or '<unnamed>'!r}: an embedding route needs a LangChain "
                f"Embeddings object, got {type(model).__name__}"
            )
            raise ConfigurationError(msg)
        if context_window is not None:
            msg = f"route {name or '<unnamed>'!r}: an embedding route has no context_window"
            raise ConfigurationError(msg)
        self.embedder: Embedder = embedder_for(model)
        #: The vendor embeddings object the router calls (a copy, retries off).
        self.embeddings: Embeddings = self.embedder.prepare(model)
        # ``model`` too, where code reads any route's vendor object (key masking).
        self.model = self.embeddings  # type: ignore[assignment]
        self.provider, self.model_name, asked = self.embedder.describe(model)
        self.name = name or f"{self.provider}:{self.model_name}"
        if not isinstance(self.name, str) or not self.name.strip():
            msg = f"route name must be a non-empty string, got {name!r}"
            raise ConfigurationError(msg)
        self.limits = parse_limits(limits, owner=f"route {self.name!r}")
        self.catalog_limits = from_catalog
        # Embedding answers carry no rate-limit headers the router reads: the tier's
        # figures (the free ones where the tier is unknown) stand from the first call.
        self.provisional_limits = False
        self.tier = tier
        if isinstance(priority, bool) or not isinstance(priority, int):
            msg = f"route {self.name!r}: priority must be an int, got {priority!r}"
            raise ConfigurationError(msg)
        self.priority = priority
        self.pool = pool or self.name
        self.credential = credential or key or _credential_of(model, self.provider) or self.name
        self.pricing = _check_prices(self.name, prices)
        self.prices = None if self.pricing is None else (self.pricing.input, self.pricing.output)
        info = find_model(self.provider, self.model_name)
        self.dimension = asked or (info.dimension if info is not None else None)
        self.batch_size = _positive(
            self.name,
            "batch_size",
            batch_size
            if batch_size is not None
            else (info.batch_size if info and info.batch_size else DEFAULT_BATCH_SIZE),
        )
        self.batch_tokens = info.batch_tokens if info is not None else None
        if count_items is not None and not isinstance(count_items, bool):
            msg = f"route {self.name!r}: count_items must be true or false, got {count_items!r}"
            raise ConfigurationError(msg)
        self.count_items = (
            count_items if count_items is not None else bool(info and info.counts_items)
        )
        # What chat routes carry and an embedding route has no use for.
        self.adapter = VendorKind()
        self.context_window = None
        self.output_budget = None
        self._accepts_run_manager = False

    def identity(self) -> dict[str, Any]:
        """What makes this route's vectors its own (no secrets)."""
        return {
            "name": self.name,
            "class": f"{type(self.embeddings).__module__}.{type(self.embeddings).__qualname__}",
            "model": self.model_name,
            "dimension": self.dimension,
        }

    def __repr__(self) -> str:
        limits = ", ".join(str(limit) for limit in self.limits)
        return (
            f"EmbeddingRoute(name={self.name!r}, model={self.provider}:{self.model_name}, "
            f"dimension={self.dimension}, batch_size={self.batch_size}, "
            f"pool={self.pool!r}, priority={self.priority}, limits=[{limits}])"
        )


def _positive(route: str, what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_AMOUNT:
        msg = f"route {route!r}: {what} must be a positive whole number, got {value!r}"
        raise ConfigurationError(msg)
    return value
