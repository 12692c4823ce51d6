"""The built-in catalog: vendors, their models and their documented free-tier limits.

The catalog lets a route be named by a string (``Route("groq:llama-3.3-70b-versatile")``)
and lets routes be read from the environment or a TOML file: it knows which LangChain
class talks to each vendor, at which base URL, which environment variable holds the key,
how the vendor pools its quota, and the limits a free (or lowest) tier lives by.

Every figure is dated (``VendorInfo.checked``) and sourced (``VendorInfo.source``).
Vendors change their free tiers often: check the page before trusting a figure, and give
``limits=`` to override. An explicit ``limits=`` always replaces the catalog's.

How each vendor is modelled:

- **groq**: limits per organisation *and* model, so each (key, model) is one pool.
  Groq's "per day" limits replenish continuously (its ``x-ratelimit-reset-requests``
  header counts down minutes, not hours to midnight), so they are written as rolling
  ``/24h`` windows: never more than the day's figure in any 24 hours, which stays
  within what a replenishing bucket allows.
- **gemini**: per Google Cloud project and model; the request day resets at midnight
  Pacific; tokens per minute count input tokens only. Keys: ``GEMINI_API_KEY`` or
  ``GOOGLE_API_KEY`` (the variable langchain-google-genai reads).
- **cohere**: a trial key's limits (20 chat calls a minute, 1,000 calls a month) cover
  every model, so every catalog model of one key shares a single pool.
- **openrouter**: the ``:free`` models share one account-wide quota (20 a minute, 50 a
  UTC day; 1,000 a day once 10 credits were bought: override with ``limits=``), so the
  catalog's ``:free`` models of one key share a single pool. Paid models are not in the
  catalog; they get a pool of their own and no limits.
- **mistral**: the free "Experiment" plan, per organisation and model (as the design
  notes record it): 1 request a second, 500,000 tokens a minute, 1e9 tokens a month.
- **together**: no free tier; limits depend on the account's spend tier and are not
  published per tier, so the catalog gives prices and no limits.
- **cloudflare**: Workers AI gives 10,000 *neurons* a day (00:00 UTC), and a neuron is
  not a token: each model costs a different number of neurons per input and per output
  token. The ledger counts tokens, so each model's daily allowance is written as the
  tokens that 10,000 neurons buy at that model's *output* rate (the dearer one):
  $0.11 of neurons (10,000 x $0.011/1,000) divided by the model's output price. It is
  conservative (input tokens are cheaper) and per model: if one account uses several
  models, each route believes it has the whole day's neurons; name a shared ``pool=``
  with one limit of your own for exact accounting. The base URL needs the account id
  (``account_id=`` or ``CLOUDFLARE_ACCOUNT_ID``).
- **openai**: paid; the catalog carries OpenAI's published *free* tier for
  gpt-4o-mini (3 requests a minute, 200 a day, 40,000 tokens a minute), the most
  conservative figure, with list prices of $0.15 / $0.60 per million tokens. Accounts
  on a paid tier should pass their own ``limits=`` (tier 1: 500/minute, 10,000/day,
  200,000 tokens/minute). OpenAI's daily limits replenish like Groq's, hence ``/24h``.
- **ollama**: a local server: no key, no limits, no cost.

Unknown models of a known vendor are allowed (vendors add models faster than any
catalog): they get no limits, no prices, a pool of their own, and a logged warning.
Unknown vendors are an error.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel

from langchain_quota_router._errors import ConfigurationError

__all__ = [
    "CATALOG",
    "ModelInfo",
    "VendorInfo",
    "build_chat_model",
    "default_api_key",
    "is_known",
    "lookup",
]

logger = logging.getLogger("langchain_quota_router")

ChatClass = Literal["groq", "openai", "google", "cohere"]
PoolScope = Literal["organisation", "project", "account", "key"]

_GEMINI_DAY = "20/day@America/Los_Angeles"


@dataclass(frozen=True)
class ModelInfo:
    """One model of a vendor and what its free (or lowest) tier allows.

    Attributes:
        model: the model's name as the vendor's API takes it.
        limits: limit strings :meth:`langchain_quota_router.Limit.parse` reads.
        context_window: the context size in tokens, when known.
        prices: USD per million input and output tokens; ``(0.0, 0.0)`` for models
            that cost nothing within the limits given.
    """

    model: str
    limits: tuple[str, ...]
    context_window: int | None = None
    prices: tuple[float, float] | None = None


@dataclass(frozen=True)
class VendorInfo:
    """One vendor: how to reach it, where its key lives and how it pools quota.

    Attributes:
        name: the catalog name (``"groq"``), the first half of ``"groq:model"``.
        env_prefix: the prefix of its environment variables (``GROQ`` for
            ``GROQ_API_KEY``, ``GROQ_API_KEY_1``, ``GROQ_MODEL``, ...).
        chat_class: which LangChain class talks to it (``"openai"``: ``ChatOpenAI``
            at ``base_url``).
        base_url: the API's base URL for OpenAI-compatible vendors (may hold an
            ``{account_id}`` placeholder); ``None`` uses the class's default.
        pool_scope: who the vendor counts quota for: an ``organisation`` or
            ``project`` (keys of one organisation share it, which a key alone cannot
            tell: give those routes one ``pool=``), an ``account`` or a ``key``.
        per_model: whether each model has its own quota within that scope (Groq,
            Gemini) or all models share one (Cohere trial keys, OpenRouter ``:free``).
        default_model: the model ``"vendor"`` alone means.
        models: the catalog's models by name.
        checked: ISO date the figures were taken.
        source: the vendor's page the figures come from.
        key_env: variables that may hold the vendor's single key, most specific
            first; empty for vendors that need no key.
        extra: the ``pip install 'langchain-quota-router[extra]'`` that brings its
            LangChain class.
        priority: where its routes go in line when read from the environment or a
            file (free first, paid last); ``Route(...)`` itself defaults to 0.
    """

    name: str
    env_prefix: str
    chat_class: ChatClass
    base_url: str | None
    pool_scope: PoolScope
    per_model: bool
    default_model: str
    models: Mapping[str, ModelInfo]
    checked: str
    source: str
    key_env: tuple[str, ...] = ()
    extra: str = ""
    priority: int = 0

    @property
    def requires_key(self) -> bool:
        """Whether calls to this vendor need an API key."""
        return bool(self.key_env)


def _models(*infos: ModelInfo) -> Mapping[str, ModelInfo]:
    return MappingProxyType({info.model: info for info in infos})


_VENDORS = (
    VendorInfo(
        name="groq",
        env_prefix="GROQ",
        chat_class="groq",
        base_url=None,
        pool_scope="organisation",
        per_model=True,
        default_model="llama-3.3-70b-versatile",
        models=_models(
            ModelInfo(
                "llama-3.3-70b-versatile",
                ("30/minute", "1000/24h", "12000 tokens/minute", "100000 tokens/24h"),
                context_window=131072,
                prices=(0.0, 0.0),
            ),
            ModelInfo(
                "llama-3.1-8b-instant",
                ("30/minute", "14400/24h", "6000 tokens/minute", "500000 tokens/24h"),
                context_window=131072,
                prices=(0.0, 0.0),
            ),
        ),
        checked="2025-11-01",
        source="https://console.groq.com/docs/rate-limits",
        key_env=("GROQ_API_KEY",),
        extra="groq",
        priority=0,
    ),
    VendorInfo(
        name="gemini",
        env_prefix="GEMINI",
        chat_class="google",
        base_url=None,
        pool_scope="project",
        per_model=True,
        default_model="gemini-2.5-flash",
        models=_models(
            ModelInfo(
                "gemini-2.5-flash",
                ("5/minute", _GEMINI_DAY, "250000 input tokens/minute"),
                context_window=1048576,
                prices=(0.0, 0.0),
            ),
            ModelInfo(
                "gemini-2.5-flash-lite",
                ("10/minute", _GEMINI_DAY, "250000 input tokens/minute"),
                context_window=1048576,
                prices=(0.0, 0.0),
            ),
        ),
        checked="2025-12-15",
        source="https://ai.google.dev/gemini-api/docs/rate-limits",
        key_env=("GEMINI_API_KEY", "GOOGLE_API_KEY"),
        extra="google",
        priority=1,
    ),
    VendorInfo(
        name="cohere",
        env_prefix="COHERE",
        chat_class="cohere",
        base_url=None,
        pool_scope="key",
        per_model=False,
        default_model="command-a-03-2025",
        models=_models(
            *(
                ModelInfo(model, ("20/minute", "1000/month"), context_window=ctx, prices=(0.0, 0.0))
                for model, ctx in (
                    ("command-a-03-2025", 256000),
                    ("command-r-08-2024", 128000),
                    ("command-r-plus-08-2024", 128000),
                    ("command-r7b-12-2024", 128000),
                    ("command-r", 128000),
                )
            )
        ),
        checked="2025-11-01",
        source="https://docs.cohere.com/docs/rate-limits",
        key_env=("COHERE_API_KEY", "CO_API_KEY"),
        extra="cohere",
        priority=2,
    ),
    VendorInfo(
        name="openrouter",
        env_prefix="OPENROUTER",
        chat_class="openai",
        base_url="https://openrouter.ai/api/v1",
        pool_scope="account",
        per_model=False,
        default_model="meta-llama/llama-3.3-70b-instruct:free",
        models=_models(
            *(
                ModelInfo(model, ("20/minute", "50/day"), context_window=ctx, prices=(0.0, 0.0))
                for model, ctx in (
                    ("meta-llama/llama-3.3-70b-instruct:free", 131072),
                    ("openai/gpt-oss-20b:free", 131072),
                    ("qwen/qwen3-coder:free", 262144),
                )
            )
        ),
        checked="2025-11-01",
        source="https://openrouter.ai/docs/api-reference/limits",
        key_env=("OPENROUTER_API_KEY",),
        extra="openai",
        priority=3,
    ),
    VendorInfo(
        name="mistral",
        env_prefix="MISTRAL",
        chat_class="openai",
        base_url="https://api.mistral.ai/v1",
        pool_scope="organisation",
        per_model=True,
        default_model="mistral-small-latest",
        models=_models(
            *(
                ModelInfo(
                    model,
                    ("1/second", "500000 tokens/minute", "1000000000 tokens/month"),
                    context_window=ctx,
                    prices=(0.0, 0.0),
                )
                for model, ctx in (
                    ("mistral-small-latest", 131072),
                    ("mistral-medium-latest", 131072),
                    ("mistral-large-latest", 131072),
                    ("open-mistral-nemo", 131072),
                )
            )
        ),
        checked="2025-11-01",
        source="https://docs.mistral.ai/deployment/laplateforme/tier/",
        key_env=("MISTRAL_API_KEY",),
        extra="openai",
        priority=4,
    ),
    VendorInfo(
        name="cloudflare",
        env_prefix="CLOUDFLARE",
        chat_class="openai",
        base_url="https://api.cloudflare.com/client/v4/accounts/{account_id}/ai/v1",
        pool_scope="account",
        # Neurons are account-wide, but each model buys a different number of tokens
        # with them, and one pool cannot hold two token figures (see module notes).
        per_model=True,
        default_model="@cf/meta/llama-3.1-8b-instruct-fp8-fast",
        models=_models(
            # $0.11 / $0.384 per M output tokens = 286,458 tokens a day.
            ModelInfo(
                "@cf/meta/llama-3.1-8b-instruct-fp8-fast",
                ("300/minute", "286000 tokens/day"),
                prices=(0.0, 0.0),
            ),
            # $0.11 / $2.253 per M output tokens = 48,824 tokens a day.
            ModelInfo(
                "@cf/meta/llama-3.3-70b-instruct-fp8-fast",
                ("300/minute", "48000 tokens/day"),
                context_window=24000,
                prices=(0.0, 0.0),
            ),
        ),
        checked="2025-11-01",
        source="https://developers.cloudflare.com/workers-ai/platform/pricing/",
        key_env=("CLOUDFLARE_API_KEY", "CLOUDFLARE_API_TOKEN"),
        extra="openai",
        priority=5,
    ),
    VendorInfo(
        name="ollama",
        env_prefix="OLLAMA",
        chat_class="openai",
        base_url="http://localhost:11434/v1",
        pool_scope="key",
        per_model=True,
        default_model="llama3.2",
        models=_models(
            ModelInfo("llama3.2", (), context_window=131072, prices=(0.0, 0.0)),
            ModelInfo("llama3.1", (), context_window=131072, prices=(0.0, 0.0)),
            ModelInfo("qwen2.5", (), context_window=32768, prices=(0.0, 0.0)),
        ),
        checked="2025-11-01",
        source="https://github.com/ollama/ollama/blob/main/docs/openai.md",
        key_env=(),
        extra="openai",
        priority=6,
    ),
    VendorInfo(
        name="together",
        env_prefix="TOGETHER",
        chat_class="openai",
        base_url="https://api.together.xyz/v1",
        pool_scope="organisation",
        per_model=True,
        default_model="meta-llama/Llama-3.3-70B-Instruct-Turbo",
        models=_models(
            ModelInfo(
                "meta-llama/Llama-3.3-70B-Instruct-Turbo",
                (),
                context_window=131072,
                prices=(0.88, 0.88),
            ),
            ModelInfo(
                "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo",
                (),
                context_window=131072,
                prices=(0.18, 0.18),
            ),
        ),
        checked="2025-11-01",
        source="https://docs.together.ai/docs/rate-limits",
        key_env=("TOGETHER_API_KEY",),
        extra="openai",
        priority=7,
    ),
    VendorInfo(
        name="openai",
        env_prefix="OPENAI",
        chat_class="openai",
        base_url=None,
        pool_scope="organisation",
        per_model=True,
        default_model="gpt-4o-mini",
        models=_models(
            ModelInfo(
                "gpt-4o-mini",
                ("3/minute", "200/24h", "40000 tokens/minute"),
                context_window=128000,
                prices=(0.15, 0.60),
            ),
        ),
        checked="2025-11-01",
        source="https://platform.openai.com/docs/guides/rate-limits",
        key_env=("OPENAI_API_KEY",),
        extra="openai",
        priority=8,
    ),
)

#: Every built-in vendor by name, in order of default priority (free first).
CATALOG: Mapping[str, VendorInfo] = MappingProxyType({v.name: v for v in _VENDORS})

_CLASSES: dict[ChatClass, tuple[str, str]] = {
    "groq": ("langchain_groq", "ChatGroq"),
    "openai": ("langchain_openai", "ChatOpenAI"),
    "google": ("langchain_google_genai", "ChatGoogleGenerativeAI"),
    "cohere": ("langchain_cohere", "ChatCohere"),
}


def _vendor(name: str) -> VendorInfo:
    info = CATALOG.get(name.strip().lower())
    if info is None:
        msg = f"unknown vendor {name!r}; the catalog knows: {', '.join(CATALOG)}"
        raise ConfigurationError(msg)
    return info


def lookup(spec: str, *, warn: bool = True) -> tuple[VendorInfo, ModelInfo]:
    """Find a catalog entry by ``"vendor:model"`` or ``"vendor"`` (its default model).

    Only the first ``:`` separates vendor from model, so OpenRouter's
    ``"openrouter:meta-llama/llama-3.3-70b-instruct:free"`` reads as expected.

    Args:
        spec: the spec.
        warn: log a warning for a model the catalog does not list.

    Returns:
        The vendor and the model. A model the catalog does not list comes back with
        no limits, no prices and (if ``warn``) a logged warning.

    Raises:
        ConfigurationError: the vendor is unknown (the message lists the known ones)
            or the spec is empty.
    """
    if not isinstance(spec, str) or not spec.strip():
        msg = f"a model spec must be a string like 'groq:llama-3.3-70b-versatile', got {spec!r}"
        raise ConfigurationError(msg)
    vendor_name, _, model = spec.strip().partition(":")
    vendor = _vendor(vendor_name)
    model = model.strip() or vendor.default_model
    info = vendor.models.get(model)
    if info is None:
        if not warn:
            return vendor, ModelInfo(model, ())
        logger.warning(
            "model %r is not in the catalog of %s (known: %s); it gets no limits: pass "
            "limits=[...] to keep it within its quota",
            model,
            vendor.name,
            ", ".join(vendor.models),
        )
        info = ModelInfo(model, ())
    return vendor, info


def is_known(vendor: VendorInfo, model: str) -> bool:
    """Whether ``model`` is one of the catalog's models of ``vendor``."""
    return model in vendor.models


def default_api_key(
    vendor: str | VendorInfo, environ: Mapping[str, str] | None = None
) -> str | None:
    """The vendor's key from its usual environment variable, if one is set."""
    info = vendor if isinstance(vendor, VendorInfo) else _vendor(vendor)
    env = os.environ if environ is None else environ
    for name in info.key_env:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def _import_class(vendor: VendorInfo) -> type[BaseChatModel]:
    module_name, class_name = _CLASSES[vendor.chat_class]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        msg = (
            f"vendor {vendor.name!r} needs the {module_name.replace('_', '-')} package: "
            f"pip install 'langchain-quota-router[{vendor.extra}]'"
        )
        raise ConfigurationError(msg) from exc
    cls: type[BaseChatModel] = getattr(module, class_name)
    return cls


def _resolve_base_url(
    vendor: VendorInfo, base_url: str | None, kwargs: dict[str, Any]
) -> str | None:
    account_id = kwargs.pop("account_id", None)
    if base_url is not None:
        return base_url
    if vendor.base_url is None or "{account_id}" not in vendor.base_url:
        return vendor.base_url
    account_id = account_id or os.environ.get("CLOUDFLARE_ACCOUNT_ID", "").strip()
    if not account_id:
        msg = (
            f"vendor {vendor.name!r} needs an account id for its base URL "
            f"({vendor.base_url}): pass account_id=... or set CLOUDFLARE_ACCOUNT_ID"
        )
        raise ConfigurationError(msg)
    return vendor.base_url.format(account_id=account_id)


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
    installed costs nothing until it is used.

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
    cls = _import_class(info)
    options: dict[str, Any] = {"model": model}
    if info.chat_class == "groq":
        options.update(api_key=api_key, max_retries=0)
    elif info.chat_class == "openai":
        # Ollama ignores the key but the OpenAI SDK refuses to start without one.
        options.update(
            api_key=api_key if api_key is not None else info.name,
            max_retries=0,
            # The router reads usage from streams and headers of chat completions.
            stream_usage=True,
            use_responses_api=False,
        )
    elif info.chat_class == "google":
        # langchain-google-genai counts attempts: 1 is a single call, no retry.
        options.update(google_api_key=api_key, max_retries=1, vertexai=False)
    else:
        # ChatCohere has no client-wide retry setting; the router's CohereAdapter
        # sends request_options={"max_retries": 0} with every call.
        options.update(cohere_api_key=api_key)
    if url is not None:
        options["base_url"] = url
    return cls(**{**options, **extra_kwargs})
