"""The built-in catalog: vendors, their models and their documented free-tier limits.

The catalog lets a route be named by a string (``Route("groq:openai/gpt-oss-120b")``)
and lets routes be read from the environment or a TOML file: it knows which vendor
kind (:mod:`langchain_quota_router.vendors.kinds`) talks to each vendor, at which base
URL, which environment variable holds the key, how the vendor pools its quota, the
limits a free (or lowest) tier lives by, and which models were retired for which.

The data lives in ``catalog.toml`` beside this module (package data), read and
validated once at import into :data:`CATALOG`; :func:`load_catalog` reads and validates
any other file the same way. Every vendor entry, and every model entry whose figures
have a source of their own, carries ``source`` (the page) and ``checked`` (the date it
was read): vendors change free tiers without notice, so check the page before trusting
a figure, and give ``limits=`` to override. An explicit ``limits=`` always replaces the
catalog's. :func:`stale_entries` lists the entries older than a given age.

The file::

    schema = 1

    [vendors.groq]                       # the name in "groq:model" (lower case)
    kind = "groq"                        # groq | openai | google | cohere
    env_prefix = "GROQ"                  # GROQ_API_KEY, GROQ_MODEL, GROQ_MAX_... vars
    key_env = ["GROQ_API_KEY"]           # single-key variables; [] = needs no key
    pool_scope = "organisation"          # organisation | project | account | key
    per_model = true                     # each model its own quota within the scope
    default_model = "openai/gpt-oss-120b"
    source = "https://console.groq.com/docs/rate-limits"
    checked = 2026-11-28                 # a TOML date (or "2026-11-28")
    # optional: base_url (may hold {account_id}), priority (0),
    # headers (the kind's: x-ratelimit | x-ratelimit-windowed | openrouter | none),
    # aliases (other names for the vendor, e.g. LangChain's provider name), note,
    # tiers (the vendor's paid tier names, e.g. ["tier-1", "tier-2"]),
    # default_tier (the tier of a key whose route names none: "free", the default,
    # or "unknown")

    [vendors.groq.models."openai/gpt-oss-120b"]
    limits = ["30/minute", "1000/24h", "8000 tokens/minute", "200000 tokens/24h"]
    # optional: context_window, prices = [input, output] USD per million tokens,
    # status (active | deprecated | retiring | retired; default active),
    # status_date (when the status takes effect; required for retiring and retired),
    # successors (models of the same vendor, first = preferred), note,
    # source + checked (both or neither; default: the vendor's),
    # tiers = { "tier-1" = [...] } (a paid tier's published limits)

    [vendors.cohere.models."embed-v4.0"]  # an embedding model: it has a dimension
    limits = ["100/minute", "1000/month"]
    dimension = 1536                     # the vector size it answers with by default
    batch_size = 96                      # most texts per call
    # optional: batch_tokens (most input tokens per call), counts_items (true where
    # the vendor may count each text as a request: Gemini)

``limits`` is required except on a retired model (``[]`` says "no published limits").

Tiers: ``limits`` are the free (or lowest) tier's figures; a model's ``tiers`` table
gives a paid tier's figures where the vendor publishes them. A route names its key's
tier (``Route("openai:gpt-4o-mini", tier="tier-1")``, ``OPENAI_TIER=tier-1``, ``tier =``
in TOML); :func:`tier_limits` says what that tier allows. A tier with no figures on
record (``"paid"``, ``"unknown"``, a vendor tier the model has no table for, or no tier
named where the vendor's ``default_tier`` is ``"unknown"``) is *unknown*: the free
figures are then provisional, held only until the vendor's own rate-limit headers
say what the key allows (see :class:`langchain_quota_router.quota.pools.PoolLimits`).
A file that does not validate raises :class:`ConfigurationError` naming the file, the
entry (vendor, model) and the field.

Model status:

- ``active``: nothing to say.
- ``deprecated``: still served; :func:`lookup` logs a warning (once per process)
  naming the successor.
- ``retiring``: served until ``status_date``; a warning with the date.
- ``retired``: shut down; :func:`lookup` (so ``Route("vendor:model")`` and the
  environment and TOML configurations) raises :class:`ConfigurationError` naming the
  successor. Retired entries stay in the catalog for that message, and so that
  :func:`successor_of` can name a successor when a vendor answers 404 at run time.

How each vendor is modelled (the figures and their caveats are in each entry's
``note``):

- **groq**: limits per organisation *and* model, so each (key, model) is one pool.
  Groq's "per day" limits replenish continuously, so they are written as rolling
  ``/24h`` windows: never more than the day's figure in any 24 hours.
- **gemini**: per Google Cloud project and model; the request day resets at midnight
  Pacific; tokens per minute count input tokens only. Keys: ``GEMINI_API_KEY`` or
  ``GOOGLE_API_KEY`` (the variable langchain-google-genai reads).
- **cohere**: a trial key's limits cover every model, so every catalog model of one
  key shares a single pool.
- **openrouter**: the ``:free`` models share one account-wide quota, so the catalog's
  ``:free`` models of one key share a single pool. Paid models are not in the catalog;
  they get a pool of their own and no limits.
- **mistral**, **cerebras**, **sambanova**, **ai21**: OpenAI-compatible free tiers
  (AI21's is a dollar credit: no limits for it).
- **cloudflare**: 10,000 *neurons* a day; each model's allowance is written as the
  output tokens that buys. The base URL needs the account id (``account_id=`` or
  ``CLOUDFLARE_ACCOUNT_ID``).
- **ollama**: a local server: no key, no limits, no cost.
- **huggingface**, **together**: credits in dollars or dynamic limits: no limits.
- **openai**: paid; the catalog carries OpenAI's published *free* tier, the most
  conservative figure. Its default ``gpt-4o-mini`` is retiring (2027-01-14) and the
  vendor's successor is not on record here, so it stays the default, with a warning.

Unknown models of a known vendor are allowed (vendors add models faster than any
catalog): they get no limits, no prices, a pool of their own, and a logged warning.
Unknown vendors are an error.
"""

from __future__ import annotations

import datetime as dt
import difflib
import logging
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, NoReturn, TypeVar, get_args

from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel

from langchain_quota_router._errors import ConfigurationError
from langchain_quota_router.quota.limits import Limit
from langchain_quota_router.quota.pricing import Prices
from langchain_quota_router.vendors.embedders import EMBEDDERS
from langchain_quota_router.vendors.kinds import (
    HEADER_FAMILIES,
    KINDS,
    HeaderFamily,
    VendorKind,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "CATALOG",
    "CatalogEntry",
    "ModelInfo",
    "ModelStatus",
    "VendorInfo",
    "build_chat_model",
    "build_embeddings",
    "default_api_key",
    "find_model",
    "is_known",
    "load_catalog",
    "lookup",
    "model_status",
    "stale_entries",
    "successor_of",
    "tier_limits",
]

logger = logging.getLogger("langchain_quota_router")

PoolScope = Literal["organisation", "project", "account", "key"]
ModelStatus = Literal["active", "deprecated", "retiring", "retired"]

_POOL_SCOPES: tuple[PoolScope, ...] = get_args(PoolScope)
_STATUSES: tuple[ModelStatus, ...] = get_args(ModelStatus)
_T = TypeVar("_T", bound=str)


@dataclass(frozen=True)
class ModelInfo:
    """One model of a vendor: what its free (or lowest) tier allows, and its status.

    Attributes:
        model: the model's name as the vendor's API takes it.
        limits: limit strings :meth:`langchain_quota_router.Limit.parse` reads.
        context_window: the context size in tokens, when known.
        prices: USD per million input and output tokens; ``(0.0, 0.0)`` for models
            that cost nothing within the limits given; ``None``: not on record.
        cached_input_price: USD per million prompt tokens served from the vendor's
            prompt cache, where it prices them apart; ``None``: not on record
            (cached tokens are then costed at the input price, an upper bound).
        prices_source: the page the prices were read from (default: ``source``).
        prices_checked: the date the prices were read (default: ``checked``);
            ``quota-router doctor --max-age-days`` flags prices older than that.
        status: ``active``, ``deprecated`` (still served), ``retiring`` (served until
            ``status_date``) or ``retired`` (shut down).
        status_date: when the status took or takes effect (deprecated on, shuts down
            on, shut down on), when known.
        successors: the models of the same vendor to move to, preferred first.
        source: the page the model's figures and status come from (the vendor's page
            unless the model has its own); ``None`` for a model not in the catalog.
        checked: the date ``source`` was read; ``None`` for a model not in the catalog.
        note: what the figures leave out or assume.
        dimension: an embedding model's native vector size (what it answers with
            when no smaller size is asked for); ``None`` for a chat model.
        batch_size: an embedding model's most texts per call.
        batch_tokens: an embedding model's most input tokens per call, if capped.
        counts_items: whether the vendor may count each text of a batch as one
            request against the request limits (Gemini: disputed, so counted so).
        tiers: a paid tier's published limits, by tier name (``limits`` are the
            free or lowest tier's).
    """

    model: str
    limits: tuple[str, ...]
    context_window: int | None = None
    prices: tuple[float, float] | None = None
    status: ModelStatus = "active"
    status_date: dt.date | None = None
    successors: tuple[str, ...] = ()
    source: str | None = None
    checked: dt.date | None = None
    note: str = ""
    dimension: int | None = None
    batch_size: int | None = None
    batch_tokens: int | None = None
    counts_items: bool = False
    tiers: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    cached_input_price: float | None = None
    prices_source: str | None = None
    prices_checked: dt.date | None = None

    @property
    def pricing(self) -> Prices | None:
        """The prices as a route takes them, if on record."""
        if self.prices is None:
            return None
        return Prices(self.prices[0], self.prices[1], self.cached_input_price)

    @property
    def is_embedding(self) -> bool:
        """Whether this is an embedding model (it has a dimension), not a chat model."""
        return self.dimension is not None

    @property
    def successor(self) -> str | None:
        """The preferred model to move to, for a model that is not active."""
        if self.status == "active" or not self.successors:
            return None
        return self.successors[0]


@dataclass(frozen=True)
class VendorInfo:
    """One vendor: how to reach it, where its key lives and how it pools quota.

    Attributes:
        name: the catalog name (``"groq"``), the first half of ``"groq:model"``.
        env_prefix: the prefix of its environment variables (``GROQ`` for
            ``GROQ_API_KEY``, ``GROQ_API_KEY_1``, ``GROQ_MODEL``, ...).
        kind: the vendor kind that builds and adapts its LangChain class
            (``KINDS["openai"]``: ``ChatOpenAI`` at ``base_url``).
        base_url: the API's base URL for OpenAI-compatible vendors (may hold an
            ``{account_id}`` placeholder); ``None`` uses the class's default.
        pool_scope: who the vendor counts quota for: an ``organisation`` or
            ``project`` (keys of one organisation share it, which a key alone cannot
            tell: give those routes one ``pool=``), an ``account`` or a ``key``.
        per_model: whether each model has its own quota within that scope (Groq,
            Gemini) or all models share one (Cohere trial keys, OpenRouter ``:free``).
        default_model: the model ``"vendor"`` alone means.
        models: the catalog's models by name, retired ones included.
        checked: the date the vendor's figures were read.
        source: the vendor's page the figures come from.
        key_env: variables that may hold the vendor's single key, most specific
            first; empty for vendors that need no key.
        extra: the ``pip install 'langchain-quota-router[extra]'`` that brings its
            LangChain class.
        priority: where its routes go in line when read from the environment or a
            file (free first, paid last); ``Route(...)`` itself defaults to 0.
        headers: the rate-limit header family the vendor answers with.
        aliases: other names :func:`lookup` and friends accept for the vendor
            (LangChain's provider name, ``google_genai`` for Gemini).
        note: what the figures leave out or assume.
        tiers: the vendor's paid tier names (``"tier-1"``...), besides ``"free"``,
            ``"paid"`` and ``"unknown"``, which every vendor takes.
        default_tier: the tier of a key whose route names none: ``"free"`` (the
            catalog's figures hold from the first call) or ``"unknown"`` (they are
            provisional until the vendor's headers are read).
    """

    name: str
    env_prefix: str
    kind: VendorKind
    base_url: str | None
    pool_scope: PoolScope
    per_model: bool
    default_model: str
    models: Mapping[str, ModelInfo]
    checked: dt.date
    source: str
    key_env: tuple[str, ...] = ()
    extra: str = ""
    priority: int = 0
    headers: HeaderFamily = "none"
    aliases: tuple[str, ...] = ()
    note: str = ""
    tiers: tuple[str, ...] = ()
    default_tier: str = "free"

    @property
    def requires_key(self) -> bool:
        """Whether calls to this vendor need an API key."""
        return bool(self.key_env)

    @property
    def chat_class(self) -> str:
        """The name of the vendor's kind (``"groq"``, ``"openai"``, ...)."""
        return self.kind.name


@dataclass(frozen=True)
class CatalogEntry:
    """One dated fact of the catalog: a vendor, or a model with a source of its own.

    Attributes:
        vendor: the vendor's name.
        model: the model's name; ``None`` for the vendor's own entry.
        source: the page the entry was read from.
        checked: the date it was read.
    """

    vendor: str
    model: str | None
    source: str
    checked: dt.date

    def age_days(self, today: dt.date | None = None) -> int:
        """Days since the entry was read."""
        return ((today or dt.date.today()) - self.checked).days


# ---------------------------------------------------------------------- loading

_TOP_FIELDS = {"schema", "vendors"}
_VENDOR_REQUIRED = {
    "kind",
    "env_prefix",
    "key_env",
    "pool_scope",
    "per_model",
    "default_model",
    "source",
    "checked",
    "models",
}
_VENDOR_OPTIONAL = {
    "base_url",
    "priority",
    "headers",
    "aliases",
    "note",
    "tiers",
    "default_tier",
}
#: Tier names every vendor takes: the free figures, and a paid tier with none on record.
COMMON_TIERS = ("free", "paid", "unknown")
_MODEL_FIELDS = {
    "limits",
    "context_window",
    "prices",
    "status",
    "status_date",
    "successors",
    "source",
    "checked",
    "note",
    "dimension",
    "batch_size",
    "batch_tokens",
    "counts_items",
    "tiers",
    "cached_input_price",
    "prices_source",
    "prices_checked",
}
_EMBEDDING_FIELDS = ("batch_size", "batch_tokens", "counts_items")
_VENDOR_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_ENV_PREFIX = re.compile(r"^[A-Z][A-Z0-9_]*$")
_PLACEHOLDER = re.compile(r"\{([^}]*)\}")


class _Reader:
    """Reads one catalog file; every complaint names the file, entry and field."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, entry: str, field: str | None, problem: str) -> NoReturn:
        where = f"{self.file}: {entry}" if entry else self.file
        if field is not None:
            where += f", field {field!r}" if entry else f": field {field!r}"
        msg = f"{where}: {problem}"
        raise ConfigurationError(msg)

    def fields(
        self, entry: str, table: Any, required: set[str], optional: set[str]
    ) -> dict[str, Any]:
        if not isinstance(table, dict):
            self.fail(entry, None, f"must be a table, got {_kind_of(table)}")
        unknown = sorted(set(table) - required - optional)
        if unknown:
            known = ", ".join(sorted(required | optional))
            self.fail(entry, unknown[0], f"unknown field; known: {known}")
        missing = sorted(required - set(table))
        if missing:
            self.fail(entry, missing[0], "missing")
        return table

    def string(self, entry: str, field: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(entry, field, f"must be a non-empty string, got {_kind_of(value)}")
        return value.strip()

    def strings(self, entry: str, field: str, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.fail(entry, field, f"must be a list of strings, got {value!r}")
        return tuple(value)

    def boolean(self, entry: str, field: str, value: Any) -> bool:
        if not isinstance(value, bool):
            self.fail(entry, field, f"must be true or false, got {value!r}")
        return value

    def integer(self, entry: str, field: str, value: Any, *, positive: bool = False) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or (positive and value <= 0):
            what = "a positive whole number" if positive else "a whole number"
            self.fail(entry, field, f"must be {what}, got {value!r}")
        return value

    def choice(self, entry: str, field: str, value: Any, choices: Sequence[_T]) -> _T:
        found = next((choice for choice in choices if choice == value), None)
        if found is None:
            known = ", ".join(map(str, choices))
            self.fail(entry, field, f"must be one of {known}, got {value!r}")
        return found

    def date(self, entry: str, field: str, value: Any) -> dt.date:
        # TOML has a date type; a quoted ISO date is accepted too. A date-time is not a
        # date: the catalog records the day a page was read.
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value
        try:
            return dt.date.fromisoformat(value.strip() if isinstance(value, str) else "")
        except ValueError:
            self.fail(entry, field, f"must be a date like 2026-11-28, got {value!r}")

    def url(self, entry: str, field: str, value: Any) -> str:
        text = self.string(entry, field, value)
        if not text.startswith(("https://", "http://")):
            self.fail(entry, field, f"must be an http(s) URL, got {text!r}")
        return text

    def limits(self, entry: str, field: str, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(entry, field, f"must be a list of limit strings, got {value!r}")
        for text in value:
            try:
                Limit.parse(text)
            except ConfigurationError as exc:
                self.fail(entry, field, str(exc))
        return tuple(value)

    def prices(self, entry: str, field: str, value: Any) -> tuple[float, float]:
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(
                isinstance(p, (int, float)) and not isinstance(p, bool) and 0 <= p < math.inf
                for p in value
            )
        ):
            self.fail(
                entry, field, f"must be [input, output] USD per million tokens, got {value!r}"
            )
        return (float(value[0]), float(value[1]))


def _kind_of(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _read_file(path: str | os.PathLike[str] | None) -> tuple[str, bytes]:
    if path is None:
        resource = resources.files(__package__ or "langchain_quota_router.vendors")
        data = resource.joinpath("catalog.toml")
        return str(data), data.read_bytes()
    file = Path(path)
    try:
        return str(file), file.read_bytes()
    except OSError as exc:
        msg = f"cannot read catalog {file}: {exc.strerror or exc}"
        raise ConfigurationError(msg) from None
    except ValueError:  # a null byte in the path
        msg = f"cannot read catalog {str(path)!r}: the path holds a null byte"
        raise ConfigurationError(msg) from None


def load_catalog(path: str | os.PathLike[str] | None = None) -> Mapping[str, VendorInfo]:
    """Read and validate a catalog file.

    Args:
        path: a TOML file in the catalog's schema (see the module docstring); ``None``
            reads the built-in ``catalog.toml``.

    Returns:
        Every vendor by name, in order of priority (free first).

    Raises:
        ConfigurationError: the file cannot be read, is not TOML, or an entry does not
            validate; the message names the file, the entry and the field.
    """
    file, raw = _read_file(path)
    reader = _Reader(file)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        # tomllib's message carries the line and column.
        msg = f"{file}: not valid TOML: {exc}"
        raise ConfigurationError(msg) from None
    except RecursionError:
        msg = f"{file}: not valid TOML: arrays or tables nested too deeply"
        raise ConfigurationError(msg) from None
    reader.fields("", data, _TOP_FIELDS, set())
    if reader.integer("", "schema", data["schema"]) != 1:
        reader.fail("", "schema", f"this version reads schema 1, got {data['schema']!r}")
    tables = data["vendors"]
    if not isinstance(tables, dict) or not tables:
        reader.fail("", "vendors", "must hold at least one [vendors.NAME] table")
    vendors = [_read_vendor(reader, name, table) for name, table in tables.items()]
    _check_names(reader, vendors)
    vendors.sort(key=lambda v: v.priority)
    return MappingProxyType({v.name: v for v in vendors})


def _read_vendor(reader: _Reader, name: str, table: Any) -> VendorInfo:
    entry = f"vendor {name!r}"
    if not _VENDOR_NAME.match(name):
        reader.fail(entry, None, "a vendor name is lower case letters, digits, '-' and '_'")
    fields = reader.fields(entry, table, _VENDOR_REQUIRED, _VENDOR_OPTIONAL)
    kind = KINDS[reader.choice(entry, "kind", fields["kind"], sorted(KINDS))]
    env_prefix = reader.string(entry, "env_prefix", fields["env_prefix"])
    if not _ENV_PREFIX.match(env_prefix):
        reader.fail(
            entry, "env_prefix", f"must be an upper-case variable prefix, got {env_prefix!r}"
        )
    base_url = None
    if "base_url" in fields:
        base_url = reader.url(entry, "base_url", fields["base_url"])
        odd = [p for p in _PLACEHOLDER.findall(base_url) if p != "account_id"]
        if odd:
            reader.fail(
                entry, "base_url", f"only {{account_id}} may be filled in, not {{{odd[0]}}}"
            )
    source = reader.url(entry, "source", fields["source"])
    checked = reader.date(entry, "checked", fields["checked"])
    raw_models = fields["models"]
    if not isinstance(raw_models, dict) or not raw_models:
        reader.fail(entry, "models", 'must hold at least one [vendors.NAME.models."MODEL"] table')
    tiers = reader.strings(entry, "tiers", fields.get("tiers", []))
    for tier in tiers:
        if tier in COMMON_TIERS or not _VENDOR_NAME.match(tier):
            reader.fail(entry, "tiers", f"{tier!r} is not a paid tier's name")
    default_tier = reader.choice(
        entry, "default_tier", fields.get("default_tier", "free"), ("free", "unknown")
    )
    models = {
        model: _read_model(reader, name, model, raw, source, checked, tiers)
        for model, raw in raw_models.items()
    }
    for info in models.values():
        _check_successors(reader, name, info, models)
    default = reader.string(entry, "default_model", fields["default_model"])
    if default not in models:
        reader.fail(entry, "default_model", f"{default!r} is not one of the vendor's models")
    if models[default].status == "retired":
        reader.fail(entry, "default_model", f"{default!r} is retired")
    return VendorInfo(
        name=name,
        env_prefix=env_prefix,
        kind=kind,
        base_url=base_url,
        pool_scope=reader.choice(entry, "pool_scope", fields["pool_scope"], _POOL_SCOPES),
        per_model=reader.boolean(entry, "per_model", fields["per_model"]),
        default_model=default,
        models=MappingProxyType(models),
        checked=checked,
        source=source,
        key_env=reader.strings(entry, "key_env", fields["key_env"]),
        extra=kind.extra,
        priority=reader.integer(entry, "priority", fields.get("priority", 0)),
        headers=reader.choice(
            entry, "headers", fields.get("headers", kind.headers), HEADER_FAMILIES
        ),
        aliases=tuple(
            a.lower() for a in reader.strings(entry, "aliases", fields.get("aliases", []))
        ),
        note=_note(reader, entry, fields),
        tiers=tiers,
        default_tier=default_tier,
    )


def _read_tiers(
    reader: _Reader, entry: str, value: Any, known: tuple[str, ...]
) -> Mapping[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        example = '{ "tier-1" = [...] }'
        reader.fail(entry, "tiers", f"must be a table such as {example}, got {value!r}")
    for tier in value:
        if tier not in known:
            names = ", ".join(known) or "none"
            reader.fail(entry, "tiers", f"{tier!r} is not one of the vendor's tiers ({names})")
    return MappingProxyType(
        {tier: reader.limits(entry, f"tiers.{tier}", limits) for tier, limits in value.items()}
    )


def _read_model(
    reader: _Reader,
    vendor: str,
    model: str,
    table: Any,
    vendor_source: str,
    vendor_checked: dt.date,
    vendor_tiers: tuple[str, ...] = (),
) -> ModelInfo:
    entry = f"vendor {vendor!r}, model {model!r}"
    status = reader.choice(
        entry,
        "status",
        table.get("status", "active") if isinstance(table, dict) else "active",
        _STATUSES,
    )
    required = set() if status == "retired" else {"limits"}
    fields = reader.fields(entry, table, required, _MODEL_FIELDS - required)
    if status == "active":
        for field in ("status_date", "successors"):
            if field in fields:
                reader.fail(entry, field, "only a deprecated, retiring or retired model has one")
    status_date = None
    if "status_date" in fields:
        status_date = reader.date(entry, "status_date", fields["status_date"])
    elif status in ("retiring", "retired"):
        reader.fail(entry, "status_date", f"missing: a {status} model needs its shutdown date")
    if "dimension" not in fields:
        for field in _EMBEDDING_FIELDS:
            if field in fields:
                reader.fail(entry, field, "only an embedding model (with a dimension) has one")
    if ("source" in fields) != ("checked" in fields):
        missing = "checked" if "source" in fields else "source"
        reader.fail(
            entry,
            missing,
            "missing: a model with a source of its own needs both source and checked",
        )
    if ("prices_source" in fields) != ("prices_checked" in fields):
        missing = "prices_checked" if "prices_source" in fields else "prices_source"
        reader.fail(entry, missing, "missing: prices with a source of their own need both fields")
    for field in ("cached_input_price", "prices_source"):
        if field in fields and "prices" not in fields:
            reader.fail(entry, field, "only a model with prices has one")
    cached_price = None
    if "cached_input_price" in fields:
        cached_price = reader.prices(
            entry, "cached_input_price", [fields["cached_input_price"], 0.0]
        )[0]
    return ModelInfo(
        model=model,
        limits=reader.limits(entry, "limits", fields.get("limits", [])),
        context_window=(
            reader.integer(entry, "context_window", fields["context_window"], positive=True)
            if "context_window" in fields
            else None
        ),
        prices=reader.prices(entry, "prices", fields["prices"]) if "prices" in fields else None,
        status=status,
        status_date=status_date,
        successors=reader.strings(entry, "successors", fields.get("successors", [])),
        source=reader.url(entry, "source", fields["source"])
        if "source" in fields
        else vendor_source,
        checked=reader.date(entry, "checked", fields["checked"])
        if "checked" in fields
        else vendor_checked,
        note=_note(reader, entry, fields),
        dimension=_optional_int(reader, entry, fields, "dimension"),
        batch_size=_optional_int(reader, entry, fields, "batch_size"),
        batch_tokens=_optional_int(reader, entry, fields, "batch_tokens"),
        counts_items=reader.boolean(entry, "counts_items", fields.get("counts_items", False)),
        tiers=_read_tiers(reader, entry, fields.get("tiers", {}), vendor_tiers),
        cached_input_price=cached_price,
        prices_source=reader.url(entry, "prices_source", fields["prices_source"])
        if "prices_source" in fields
        else None,
        prices_checked=reader.date(entry, "prices_checked", fields["prices_checked"])
        if "prices_checked" in fields
        else None,
    )


def _optional_int(reader: _Reader, entry: str, fields: Mapping[str, Any], name: str) -> int | None:
    if name not in fields:
        return None
    return reader.integer(entry, name, fields[name], positive=True)


def _note(reader: _Reader, entry: str, fields: Mapping[str, Any]) -> str:
    if "note" not in fields:
        return ""
    return reader.string(entry, "note", fields["note"])


def _check_successors(
    reader: _Reader, vendor: str, info: ModelInfo, models: Mapping[str, ModelInfo]
) -> None:
    entry = f"vendor {vendor!r}, model {info.model!r}"
    for successor in info.successors:
        if successor == info.model:
            reader.fail(entry, "successors", "a model cannot succeed itself")
        if successor not in models:
            reader.fail(
                entry,
                "successors",
                f"{successor!r} is not a model of vendor {vendor!r} in this catalog",
            )
        if models[successor].status == "retired":
            reader.fail(entry, "successors", f"{successor!r} is retired itself")


def _check_names(reader: _Reader, vendors: list[VendorInfo]) -> None:
    taken: dict[str, str] = {v.name: v.name for v in vendors}
    for vendor in vendors:
        for alias in vendor.aliases:
            if alias in taken and taken[alias] != vendor.name:
                reader.fail(
                    f"vendor {vendor.name!r}",
                    "aliases",
                    f"{alias!r} already names vendor {taken[alias]!r}",
                )
            taken[alias] = vendor.name


#: Every built-in vendor by name, in order of default priority (free first).
CATALOG: Mapping[str, VendorInfo] = load_catalog()


# ---------------------------------------------------------------------- looking up


def _find_vendor(vendor: str | VendorInfo) -> VendorInfo | None:
    if isinstance(vendor, VendorInfo):
        return vendor
    name = vendor.strip().lower()
    info = CATALOG.get(name)
    if info is not None:
        return info
    return next((v for v in CATALOG.values() if name in v.aliases), None)


def _vendor(name: str) -> VendorInfo:
    info = _find_vendor(name)
    if info is None:
        close = difflib.get_close_matches(name.strip().lower(), list(CATALOG), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        msg = f"unknown vendor {name!r}; {hint}the catalog knows: {', '.join(CATALOG)}"
        raise ConfigurationError(msg)
    return info


def _model_of(vendor: VendorInfo, model: str) -> ModelInfo | None:
    info = vendor.models.get(model)
    if info is None and model.startswith("models/"):
        # langchain-google-genai may report Gemini models by their resource name.
        info = vendor.models.get(model.removeprefix("models/"))
    return info


def _spec(vendor: VendorInfo, model: str) -> str:
    return f"{vendor.name}:{model}"


def _alternatives(vendor: VendorInfo, info: ModelInfo) -> str:
    first, *rest = (repr(_spec(vendor, s)) for s in info.successors)
    return first + (f" (or {', '.join(rest)})" if rest else "")


def _retired_message(vendor: VendorInfo, info: ModelInfo) -> str:
    when = f" on {info.status_date.isoformat()}" if info.status_date else ""
    checked = info.checked.isoformat() if info.checked else "?"
    what = (
        f"{_spec(vendor, info.model)} was retired by the vendor{when} "
        f"({info.source}, checked {checked})"
    )
    if info.successors:
        return f"{what}; use {_alternatives(vendor, info)} instead"
    return f"{what}; the catalog names no successor: pick another model of {vendor.name!r}"


def _status_warning(vendor: VendorInfo, info: ModelInfo) -> str:
    spec = _spec(vendor, info.model)
    date = info.status_date.isoformat() if info.status_date else None
    if info.status == "retiring":
        what = f"{spec} is retiring: the vendor shuts it down on {date}"
    else:
        what = f"{spec} is deprecated{f' since {date}' if date else ''} (still served for now)"
    move = (
        f"move to {_alternatives(vendor, info)}"
        if info.successors
        else f"see {info.source} for its successor"
    )
    return f"{what}; {move}"


# (vendor, model) pairs already warned about in this process: a fleet of routes over
# one deprecated model says so once, not once per key.
_warned: set[tuple[str, str]] = set()


def lookup(spec: str, *, warn: bool = True) -> tuple[VendorInfo, ModelInfo]:
    """Find a catalog entry by ``"vendor:model"`` or ``"vendor"`` (its default model).

    Only the first ``:`` separates vendor from model, so OpenRouter's
    ``"openrouter:openai/gpt-oss-20b:free"`` reads as expected.

    Args:
        spec: the spec.
        warn: log a warning for a model the catalog does not list, and (once per
            process) for a deprecated or retiring one.

    Returns:
        The vendor and the model. A model the catalog does not list comes back with
        no limits, no prices and (if ``warn``) a logged warning.

    Raises:
        ConfigurationError: the vendor is unknown (the message lists the known ones),
            the spec is empty, or the model is retired (the message names its
            successor). To read a retired model's entry, use
            ``CATALOG[vendor].models[model]``.
    """
    if not isinstance(spec, str) or not spec.strip():
        msg = f"a model spec must be a string like 'groq:openai/gpt-oss-120b', got {spec!r}"
        raise ConfigurationError(msg)
    vendor_name, _, model = spec.strip().partition(":")
    vendor = _vendor(vendor_name)
    model = model.strip() or vendor.default_model
    info = vendor.models.get(model)
    if info is None:
        if warn:
            logger.warning(
                "model %r is not in the catalog of %s (known: %s); it gets no limits: pass "
                "limits=[...] to keep it within its quota",
                model,
                vendor.name,
                ", ".join(m.model for m in vendor.models.values() if m.status != "retired"),
            )
        return vendor, ModelInfo(model, ())
    if info.status == "retired":
        raise ConfigurationError(_retired_message(vendor, info))
    if warn and info.status != "active" and (vendor.name, model) not in _warned:
        _warned.add((vendor.name, model))
        logger.warning("%s", _status_warning(vendor, info))
    return vendor, info


def tier_limits(
    vendor: VendorInfo, info: ModelInfo, tier: str | None
) -> tuple[tuple[str, ...], bool]:
    """What a key of ``tier`` may spend on a model, as the catalog knows it.

    Args:
        vendor: the vendor.
        info: the model.
        tier: the key's tier as the route names it; ``None``: the vendor's
            ``default_tier``.

    Returns:
        The limit strings, and whether they are provisional: the tier is unknown
        (no tier named where the vendor's keys may be on any, ``"paid"``,
        ``"unknown"``, or a vendor tier with no figures on record), so the free
        figures stand only until the vendor's headers say what the key allows.

    Raises:
        ConfigurationError: a tier the vendor does not have (the message lists them).
    """
    if tier is None:
        tier = vendor.default_tier
    if not isinstance(tier, str) or tier.strip().lower() not in (*COMMON_TIERS, *vendor.tiers):
        known = (*COMMON_TIERS, *vendor.tiers)
        close = difflib.get_close_matches(str(tier).strip().lower(), known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        msg = f"{vendor.name} has no tier {tier!r}; {hint}its tiers: {', '.join(known)}"
        raise ConfigurationError(msg)
    tier = tier.strip().lower()
    if tier == "free":
        return info.limits, False
    figures = info.tiers.get(tier)
    if figures is not None:
        return figures, False
    return info.limits, bool(info.limits)


def is_known(vendor: VendorInfo, model: str) -> bool:
    """Whether ``model`` is one of the catalog's models of ``vendor``."""
    return model in vendor.models


def find_model(vendor: str | VendorInfo | None, model: str) -> ModelInfo | None:
    """A model's catalog entry, retired ones included, or ``None``; never raises.

    Args:
        vendor: a catalog name, an alias (LangChain's provider name, such as
            ``google_genai``), or ``None`` for the first vendor, by priority, that lists
            the model (the router and the doctor may know a model only by its name).
            An unknown vendor finds nothing.
        model: the model's name (Gemini's ``models/...`` resource name too).
    """
    if vendor is None:
        for info in CATALOG.values():
            entry = _model_of(info, model)
            if entry is not None:
                return entry
        return None
    found = _find_vendor(vendor)
    return _model_of(found, model) if found is not None else None


def model_status(vendor: str | VendorInfo | None, model: str) -> ModelStatus | None:
    """A model's status in the catalog, or ``None`` when the catalog does not know it.

    Never raises; ``vendor`` is read as by :func:`find_model`.
    """
    entry = find_model(vendor, model)
    return entry.status if entry is not None else None


def successor_of(vendor: str | VendorInfo | None, model: str) -> str | None:
    """The model to move to from a deprecated, retiring or retired one, if named.

    Never raises: an active or unknown model, or an unknown vendor, gives ``None``;
    ``vendor`` is read as by :func:`find_model`. The router names it when a vendor
    answers that a model is gone.
    """
    entry = find_model(vendor, model)
    return entry.successor if entry is not None else None


def stale_entries(
    max_age_days: int = 90,
    *,
    today: dt.date | None = None,
    catalog: Mapping[str, VendorInfo] | None = None,
) -> list[CatalogEntry]:
    """The catalog's entries read more than ``max_age_days`` ago, oldest first.

    An entry is a vendor, or a model whose source or date differs from its vendor's
    (a model that inherits its vendor's is as old as the vendor's entry).

    Args:
        max_age_days: the age past which an entry counts as stale.
        today: the date to measure from; default today.
        catalog: the catalog to check; default :data:`CATALOG`.
    """
    day = today or dt.date.today()
    entries: list[CatalogEntry] = []
    for vendor in (catalog or CATALOG).values():
        entries.append(CatalogEntry(vendor.name, None, vendor.source, vendor.checked))
        for model in vendor.models.values():
            source = model.source or vendor.source
            checked = model.checked or vendor.checked
            if (source, checked) != (vendor.source, vendor.checked):
                entries.append(CatalogEntry(vendor.name, model.model, source, checked))
    stale = [e for e in entries if e.age_days(day) > max_age_days]
    return sorted(stale, key=lambda e: e.checked)


def price_entries(
    *,
    catalog: Mapping[str, VendorInfo] | None = None,
) -> list[CatalogEntry]:
    """Every model's prices as a dated entry (``model`` is the model's name): where
    they were read and when (a model's own ``prices_source``/``prices_checked``,
    else its entry's). Models with no prices on record are left out."""
    entries = []
    for vendor in (catalog or CATALOG).values():
        for model in vendor.models.values():
            if model.prices is None or model.status == "retired":
                continue
            source = model.prices_source or model.source or vendor.source
            checked = model.prices_checked or model.checked or vendor.checked
            entries.append(CatalogEntry(vendor.name, model.model, source, checked))
    return entries


def stale_prices(
    max_age_days: int = 90,
    *,
    today: dt.date | None = None,
    catalog: Mapping[str, VendorInfo] | None = None,
) -> list[CatalogEntry]:
    """The models whose prices were read more than ``max_age_days`` ago, oldest
    first (see :func:`price_entries`)."""
    day = today or dt.date.today()
    stale = [e for e in price_entries(catalog=catalog) if e.age_days(day) > max_age_days]
    return sorted(stale, key=lambda e: e.checked)


def default_api_key(
    vendor: str | VendorInfo, environ: Mapping[str, str] | None = None
) -> str | None:
    """The vendor's key from its usual environment variable, if one is set."""
    info = vendor if isinstance(vendor, VendorInfo) else _vendor(vendor)
    # Imported here: _secrets pulls in the ledger package, which the catalog's
    # readers (the ledger among them) must not need at import time.
    from langchain_quota_router.quota.secrets import clean_key

    env = os.environ if environ is None else environ
    for name in info.key_env:
        value = clean_key(env.get(name, ""), name)
        if value:
            return value
    return None


# ---------------------------------------------------------------------- building


def _resolve_base_url(
    vendor: VendorInfo, base_url: str | None, kwargs: dict[str, Any]
) -> str | None:
    account_id = kwargs.pop("account_id", None)
    if base_url is not None:
        return base_url
    # $GROQ_BASE_URL points every route of the vendor elsewhere (a proxy, the
    # simulator), as it does for routes read from the environment.
    variable = f"{vendor.env_prefix}_BASE_URL"
    from_env = os.environ.get(variable, "").strip()
    if from_env:
        if not from_env.startswith(("http://", "https://")):
            msg = f"{variable}={from_env!r} is not an http(s) URL"
            raise ConfigurationError(msg)
        return from_env
    if vendor.base_url is None or "{account_id}" not in vendor.base_url:
        return vendor.base_url
    variable = f"{vendor.env_prefix}_ACCOUNT_ID"
    account_id = account_id or os.environ.get(variable, "").strip()
    if not account_id:
        msg = (
            f"vendor {vendor.name!r} needs an account id for its base URL "
            f"({vendor.base_url}): pass account_id=... or set {variable}"
        )
        raise ConfigurationError(msg)
    return vendor.base_url.format(account_id=account_id)


def build_embeddings(
    vendor: str,
    model: str,
    api_key: str | None,
    *,
    base_url: str | None = None,
    **kwargs: Any,
) -> Embeddings:
    """Build the LangChain embeddings class for a catalog vendor, its retries off.

    As :func:`build_chat_model`, for an embedding model (``OpenAIEmbeddings``,
    ``GoogleGenerativeAIEmbeddings``, ``CohereEmbeddings``).

    Raises:
        ConfigurationError: unknown vendor, a vendor without embeddings, missing
            extra, missing key.
    """
    info = _vendor(vendor)
    extra_kwargs = dict(kwargs)
    url = _resolve_base_url(info, base_url, extra_kwargs)
    if api_key is None and info.requires_key:
        msg = f"vendor {info.name!r} needs an API key (set {' or '.join(info.key_env)})"
        raise ConfigurationError(msg)
    embedder = EMBEDDERS.get(info.kind.name)
    if embedder is None:
        msg = f"vendor {info.name!r} has no embeddings this package can build"
        raise ConfigurationError(msg)
    return embedder.build(model, api_key, vendor=info.name, base_url=url, **extra_kwargs)


def build_chat_model(
    vendor: str,
    model: str,
    api_key: str | None,
    *,
    base_url: str | None = None,
    **kwargs: Any,
) -> BaseChatModel:
    """Build the LangChain chat model for a catalog vendor, its SDK retries off.

    The vendor's package is imported only here, so a vendor whose extra is not
    installed costs nothing until it is used. The model's catalog status is not
    checked here (:func:`lookup` does that).

    Args:
        vendor: a catalog vendor name (``"groq"``, ``"openrouter"``, ...).
        model: the model name the vendor's API takes.
        api_key: the key; ``None`` for vendors that need none (Ollama). It is handed
            to the vendor class, which keeps it as a ``SecretStr``.
        base_url: overrides the vendor's base URL (a proxy, the simulator).
        **kwargs: more constructor arguments for the vendor class; they win over the
            defaults. ``account_id=`` fills Cloudflare's base URL (default:
            ``$CLOUDFLARE_ACCOUNT_ID``).

    Returns:
        ``ChatGroq``, ``ChatGoogleGenerativeAI``, ``ChatCohere`` or ``ChatOpenAI``.

    Raises:
        ConfigurationError: unknown vendor, missing extra, missing key or account id.
    """
    info = _vendor(vendor)
    extra_kwargs = dict(kwargs)
    url = _resolve_base_url(info, base_url, extra_kwargs)
    if api_key is None and info.requires_key:
        msg = f"vendor {info.name!r} needs an API key (set {' or '.join(info.key_env)})"
        raise ConfigurationError(msg)
    return info.kind.build(model, api_key, vendor=info.name, base_url=url, **extra_kwargs)
