"""Routes from the environment (and ``.env``) and router settings from a TOML file.

Environment conventions, for every catalog vendor (``P`` is its prefix: ``GROQ``,
``GEMINI``, ``COHERE``, ``OPENROUTER``, ``MISTRAL``, ``CEREBRAS``, ``SAMBANOVA``,
``CLOUDFLARE``, ``OLLAMA``, ``AI21``, ``HF``, ``TOGETHER``, ``OPENAI``)::

    P_API_KEY=k                      one key (Gemini also reads GOOGLE_API_KEY, Cohere
                                     CO_API_KEY, Cloudflare CLOUDFLARE_API_TOKEN,
                                     Hugging Face HF_TOKEN)
    P_API_KEY_1=k1, P_API_KEY_2=k2   numbered keys (0 too)
    P_API_KEYS=k0,k1                 a comma list; its keys are numbered 0, 1, ...
    P_MODEL=m  /  P_MODEL_1=m1,m2    the model(s) for every key / for key 1; a comma
                                     list makes one route per model for that key
    P_MAX_REQUESTS_PER_MINUTE=30     limit overrides, per vendor or per key (``_1``):
    P_MAX_TOKENS_PER_DAY_1=100000    REQUESTS / TOKENS / INPUT_TOKENS / OUTPUT_TOKENS
                                     per SECOND / MINUTE / HOUR / DAY / MONTH
    P_MAX_USD_PER_MONTH_0=5          dollars (``0.50`` too): reserved before each call
                                     at the route's prices, settled to its real cost
    P_PRICES=0.15,0.60[,0.075]       USD per million input, output (cached input)
                                     tokens, per vendor or per key, over the catalog's
    P_LIMITS="30/minute,1000/day"    the whole limit list, replacing the catalog's;
                                     ``none`` for no limits at all (empty is an error)
    P_PRIORITY=3, P_BASE_URL=url     priority and base URL, per vendor or per key
    P_TIER=tier-1, P_TIER_1=free     the key's tier with the vendor, which picks the
                                     catalog's limits (see ``Route(tier=...)``)
    CLOUDFLARE_ACCOUNT_ID[_n]        Cloudflare's account id
    OLLAMA_MODEL / OLLAMA_BASE_URL   Ollama needs no key: either one adds its route
    P_EMBEDDING_MODEL=embed-v4.0     the embedding model of every key of P, for
                                     ``QuotaRoutedEmbeddings.from_env`` (COHERE,
                                     GEMINI, OPENAI); the chat routes ignore it

A per-key setting wins over the vendor-wide one. A ``MAX_*`` override replaces the
catalog limit of the same kind and window (keeping its time zone or rolling span)
and otherwise adds a limit (``N/day`` is the UTC calendar day). A model the catalog
lists as retired is an error naming the variable and the successor.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_quota_router._errors import ConfigurationError
from langchain_quota_router.quota.admission import order_keys
from langchain_quota_router.quota.book import pool_table
from langchain_quota_router.quota.limits import MAX_AMOUNT, Limit, Window, parse_whole
from langchain_quota_router.quota.secrets import alias, clean_key
from langchain_quota_router.route import EmbeddingRoute, Route, check_base_url
from langchain_quota_router.vendors.catalog import (
    CATALOG,
    VendorInfo,
    default_api_key,
    lookup,
    tier_limits,
)

__all__ = ["read_dotenv", "router_kwargs_from_config", "routes_from_env"]

logger = logging.getLogger("langchain_quota_router")

_DEFAULT_DOTENV = ".env"

# ------------------------------------------------------------------ .env files

_DOTENV_LINE = re.compile(
    r"""^\s*(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_.\-]*)\s*=\s*(?P<value>.*?)\s*$"""
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def _unquote(raw: str, where: str) -> str:
    if raw[:1] in ("'", '"'):
        quote = raw[0]
        end = raw.find(quote, 1)
        if quote == '"':
            # Find the closing quote that is not escaped.
            end, i, out = -1, 1, []
            while i < len(raw):
                ch = raw[i]
                if ch == "\\" and i + 1 < len(raw):
                    out.append(_ESCAPES.get(raw[i + 1], "\\" + raw[i + 1]))
                    i += 2
                    continue
                if ch == '"':
                    end = i
                    break
                out.append(ch)
                i += 1
            value = "".join(out)
        else:
            value = raw[1:end] if end > 0 else ""
        if end < 0:
            msg = f"{where}: unterminated {quote} quote"
            raise ConfigurationError(msg)
        rest = raw[end + 1 :].strip()
        if rest and not rest.startswith("#"):
            msg = f"{where}: unexpected text after the closing quote: {rest!r}"
            raise ConfigurationError(msg)
        return value
    if raw.startswith("#"):
        return ""  # KEY= # a comment
    # Unquoted: a " #" starts a comment; a "#" inside a value (a URL fragment) does not.
    return re.split(r"\s+#", raw, maxsplit=1)[0].strip()


def read_dotenv(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a ``.env`` file: ``KEY=VALUE`` lines, quotes, comments, ``export``.

    Single-quoted values are literal; double-quoted ones understand ``\\n``,
    ``\\t``, ``\\"`` and ``\\\\``; unquoted values end at a `` #`` comment. There is no
    variable expansion and no multi-line value.

    Raises:
        ConfigurationError: naming the file and line of anything else.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except OSError as exc:
        msg = f"cannot read {file}: {exc.strerror or exc}"
        raise ConfigurationError(msg) from None
    except UnicodeDecodeError as exc:
        msg = f"{file}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
        raise ConfigurationError(msg) from None
    except ValueError:  # a null byte in the path
        msg = f"cannot read {str(path)!r}: the path holds a null byte"
        raise ConfigurationError(msg) from None
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _DOTENV_LINE.match(line)
        where = f"{file}, line {number}"
        if match is None:
            msg = f"{where}: expected KEY=VALUE"
            raise ConfigurationError(msg)
        key = match["key"]
        if key in lines:
            # Never the values: either may be a key.
            logger.warning(
                "%s: %s is set again (first on line %d); the later value is used",
                where,
                key,
                lines[key],
            )
        lines[key] = number
        values[key] = _unquote(match["value"], where)
    return values


def _environment(
    environ: Mapping[str, str] | None, dotenv: str | os.PathLike[str] | None
) -> dict[str, str]:
    env = dict(os.environ if environ is None else environ)
    if dotenv is None:
        return env
    path = Path(dotenv)
    if str(dotenv) == _DEFAULT_DOTENV and not path.exists():
        # The default .env is optional; a file the caller named is not.
        return env
    # The real environment wins: a .env file only fills in what is not set.
    return {**read_dotenv(path), **env}


# ------------------------------------------------------------------ environment

_WINDOWS = {"SECOND": "second", "MINUTE": "minute", "HOUR": "hour", "DAY": "day", "MONTH": "month"}
_METRIC_WORDS = {
    "REQUESTS": "",
    "TOKENS": " tokens",
    "INPUT_TOKENS": " input tokens",
    "OUTPUT_TOKENS": " output tokens",
    "USD": " usd",
}
_SETTING = re.compile(
    r"""^(?:
        (?P<keys>API_KEYS)
      | (?P<key>API_KEY)
      | MAX_(?P<metric>[A-Z_]+?)_PER_(?P<window>[A-Z]+)
      | (?P<name>MODEL|PRIORITY|BASE_URL|LIMITS|ACCOUNT_ID|TIER|PRICES)
    )(?:_(?P<index>\d+))?$""",
    re.VERBOSE,
)


@dataclass
class _Key:
    index: int | None
    secret: str | None
    variable: str


@dataclass
class _Settings:
    """One vendor's settings: vendor-wide (index ``None``) and per key index."""

    models: dict[int | None, tuple[str, list[str]]] = field(default_factory=dict)
    priority: dict[int | None, tuple[str, int]] = field(default_factory=dict)
    base_url: dict[int | None, tuple[str, str]] = field(default_factory=dict)
    account_id: dict[int | None, tuple[str, str]] = field(default_factory=dict)
    tier: dict[int | None, tuple[str, str]] = field(default_factory=dict)
    limits: dict[int | None, tuple[str, list[Limit]]] = field(default_factory=dict)
    maxima: dict[int | None, list[tuple[str, Limit]]] = field(default_factory=dict)
    prices: dict[int | None, tuple[str, tuple[float, ...]]] = field(default_factory=dict)

    def pick(self, table: Mapping[int | None, Any], index: int | None) -> Any:
        if index is not None and index in table:
            return table[index]
        return table.get(None)


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _int(variable: str, value: str) -> int:
    # The grammar of a limit's amount: int() alone would take "٣٠" as 30.
    number = parse_whole(value.strip())
    if number is None:
        msg = f"{variable}={value!r}: expected a whole number written in ASCII digits"
        raise ConfigurationError(msg)
    return number


def _read_vendor(vendor: VendorInfo, env: Mapping[str, str]) -> tuple[list[_Key], _Settings]:
    """Every key and setting of one vendor found in ``env``."""
    prefix = vendor.env_prefix + "_"
    keys: list[_Key] = []
    settings = _Settings()
    listed: dict[int, str] = {}
    numbered: dict[int, str] = {}
    for variable in sorted(env):
        if not variable.startswith(prefix):
            continue
        match = _SETTING.match(variable[len(prefix) :])
        value = env[variable]
        if match is None:
            if variable[len(prefix) :].startswith("MAX_"):
                msg = (
                    f"{variable}: not a limit this package reads; write "
                    f"{prefix}MAX_<REQUESTS|TOKENS|INPUT_TOKENS|OUTPUT_TOKENS|USD>_PER_"
                    "<SECOND|MINUTE|HOUR|DAY|MONTH>[_<key number>]"
                )
                raise ConfigurationError(msg)
            continue  # Someone else's variable (GOOGLE_CLOUD_PROJECT, OPENAI_ORG_ID...).
        index = int(match["index"]) if match["index"] is not None else None
        if match["keys"]:
            if index is not None:
                msg = f"{variable}: a key list takes no number; use {prefix}API_KEY_{index}"
                raise ConfigurationError(msg)
            for position, secret in enumerate(_split(clean_key(value, variable))):
                listed[position] = variable
                keys.append(_Key(position, secret, f"{variable}[{position}]"))
        elif match["key"]:
            if not value.strip():
                continue
            if index is not None:
                numbered[index] = variable
            keys.append(_Key(index, clean_key(value, variable), variable))
        elif match["metric"]:
            settings.maxima.setdefault(index, []).append(
                (variable, _max_limit(variable, match["metric"], match["window"], value))
            )
        elif match["name"] == "MODEL":
            models = _split(value)
            if not models:
                msg = f"{variable} is empty; name at least one model"
                raise ConfigurationError(msg)
            settings.models[index] = (variable, models)
        elif match["name"] == "PRIORITY":
            settings.priority[index] = (variable, _int(variable, value))
        elif match["name"] == "BASE_URL":
            settings.base_url[index] = (variable, check_base_url(value.strip(), variable))
        elif match["name"] == "PRICES":
            settings.prices[index] = (variable, _prices(variable, value))
        elif match["name"] == "ACCOUNT_ID":
            if not value.strip():
                msg = f"{variable} is empty; set the account id or unset the variable"
                raise ConfigurationError(msg)
            settings.account_id[index] = (variable, value.strip())
        elif match["name"] == "TIER":
            if not value.strip():
                msg = f"{variable} is empty; name the key's tier or unset the variable"
                raise ConfigurationError(msg)
            settings.tier[index] = (variable, value.strip())
        else:
            settings.limits[index] = (variable, _limit_list(variable, value))
    for position, variable in listed.items():
        if position in numbered:
            msg = (
                f"{numbered[position]} and {variable} both define {vendor.env_prefix} key "
                f"{position}; use one or the other"
            )
            raise ConfigurationError(msg)
    # Keys of the single-key variables (GROQ_API_KEY; GEMINI's GOOGLE_API_KEY ...).
    for variable in vendor.key_env:
        if variable.startswith(prefix) and variable[len(prefix) :] == "API_KEY":
            continue  # Read above.
        secret = clean_key(env.get(variable, ""), variable)
        if secret:
            keys.append(_Key(None, secret, variable))
    return _dedupe(keys), settings


def _dedupe(keys: list[_Key]) -> list[_Key]:
    # GROQ_API_KEY is often also GROQ_API_KEY_1, GEMINI_API_KEY also GOOGLE_API_KEY:
    # one key, one set of routes. The numbered variable is the more specific name.
    ordered = sorted(keys, key=lambda k: (k.index is None, k.index or 0))
    seen: set[str | None] = set()
    unique = []
    for key in ordered:
        if key.secret in seen:
            continue
        seen.add(key.secret)
        unique.append(key)
    return unique


def _max_limit(variable: str, metric: str, window: str, value: str) -> Limit:
    if metric not in _METRIC_WORDS or window not in _WINDOWS:
        msg = (
            f"{variable}: unknown limit; the metric is one of {', '.join(_METRIC_WORDS)} "
            f"and the window one of {', '.join(_WINDOWS)}"
        )
        raise ConfigurationError(msg)
    if metric == "USD":
        # Dollars, as written: OPENAI_MAX_USD_PER_MONTH=5, ..._PER_DAY=0.50 ($ optional).
        text = value.strip().removeprefix("$").strip()
        if text.startswith("-"):
            msg = f"{variable}={value!r}: a limit cannot be negative"
            raise ConfigurationError(msg)
        try:
            return Limit.parse(f"{text} usd/{_WINDOWS[window]}")
        except ConfigurationError:
            msg = f"{variable}={value!r}: expected dollars such as 5 or 0.50"
            raise ConfigurationError(msg) from None
    amount = _int(variable, value)
    if amount < 0:
        msg = f"{variable}={value!r}: a limit cannot be negative"
        raise ConfigurationError(msg)
    if amount > MAX_AMOUNT:
        msg = f"{variable}={value!r}: a limit can be at most {MAX_AMOUNT}"
        raise ConfigurationError(msg)
    return Limit.parse(f"{amount}{_METRIC_WORDS[metric]}/{_WINDOWS[window]}")


def _prices(variable: str, value: str) -> tuple[float, ...]:
    """``P_PRICES=0.15,0.60`` (input, output; a third: cached input), USD per million."""
    parts = _split(value)
    try:
        numbers = tuple(float(p) for p in parts)
    except ValueError:
        numbers = ()
    if len(numbers) not in (2, 3) or not all(math.isfinite(n) and n >= 0 for n in numbers):
        msg = (
            f"{variable}={value!r}: expected input,output[,cached_input] USD per million "
            "tokens, such as 0.15,0.60"
        )
        raise ConfigurationError(msg)
    return numbers


def _limit_list(variable: str, value: str) -> list[Limit]:
    # An empty variable is most often an unset one expanded by a shell or a compose
    # file (GROQ_LIMITS=$GROQ_LIMITS): reading it as "no limits" would quietly drop
    # the catalog's free-tier limits and let the router overspend. No limits at all
    # must be asked for in so many words.
    if value.strip().lower() == "none":
        return []
    if not _split(value):
        msg = (
            f"{variable} is empty; list the limits ({variable}='30/minute,1000/day'), "
            f"write {variable}=none for no limits at all, or unset it to keep the "
            "catalog's limits"
        )
        raise ConfigurationError(msg)
    try:
        return [Limit.parse(item) for item in _split(value)]
    except ConfigurationError as exc:
        msg = f"{variable}: {exc}"
        raise ConfigurationError(msg) from None


def _span(window: Window) -> str:
    """Which override a window answers to: a day is a calendar day or 24 rolling hours."""
    if window.kind == "calendar":
        return window.unit
    return {1: "second", 60: "minute", 3600: "hour", 86400: "day"}.get(window.seconds, "")


def _family(limit: Limit) -> str:
    # A token override replaces an input-token limit too (Gemini counts input only):
    # whoever writes MAX_TOKENS_PER_MINUTE means the tokens-per-minute figure.
    return "tokens" if limit.metric == "input_tokens" else limit.metric


def _apply_maxima(base: Sequence[Limit], maxima: Iterable[Limit]) -> list[Limit]:
    limits = list(base)
    for override in maxima:
        replaced = False
        for i, limit in enumerate(limits):
            if _family(limit) == _family(override) and _span(limit.window) == _span(
                override.window
            ):
                # Keep the catalog's window (its zone, or a rolling day) and metric
                # family; take the user's amount.
                metric = override.metric if override.metric != "tokens" else limit.metric
                limits[i] = Limit(override.amount, metric, limit.window)
                replaced = True
        if not replaced:
            limits.append(override)
    return limits


def _check_indexes(vendor: VendorInfo, keys: list[_Key], settings: _Settings) -> None:
    known = {k.index for k in keys if k.index is not None}
    tables: list[Mapping[int | None, Any]] = [
        settings.models,
        settings.priority,
        settings.base_url,
        settings.account_id,
        settings.limits,
        settings.prices,
    ]
    for table in tables:
        for index, entry in table.items():
            if index is not None and index not in known:
                _no_such_key(vendor, entry[0], index, known)
    for index, entries in settings.maxima.items():
        if index is not None and index not in known:
            _no_such_key(vendor, entries[0][0], index, known)


def _no_such_key(vendor: VendorInfo, variable: str, index: int, known: set[int]) -> None:
    have = ", ".join(str(i) for i in sorted(known)) or "none"
    msg = (
        f"{variable} is set but there is no {vendor.env_prefix} key {index} "
        f"(numbered keys: {have}; set {vendor.env_prefix}_API_KEY_{index})"
    )
    raise ConfigurationError(msg)


def _looked_for() -> str:
    names = []
    for vendor in CATALOG.values():
        if vendor.requires_key:
            p = vendor.env_prefix
            names.append(f"{p}_API_KEY, {p}_API_KEY_<n>, {p}_API_KEYS")
            names.extend(k for k in vendor.key_env if k != f"{p}_API_KEY")
        else:
            names.append(f"{vendor.env_prefix}_MODEL or {vendor.env_prefix}_BASE_URL")
    return ", ".join(names)


def routes_from_env(
    environ: Mapping[str, str] | None = None,
    *,
    dotenv: str | os.PathLike[str] | None = ".env",
) -> list[Route]:
    """Build routes from the environment variables people already use for their keys.

    See the module documentation for every variable. Each key gets one route per
    model (``P_MODEL``, default the catalog's default model), named by the key's
    alias (``"groq#1 …a1f3"``; ``"groq#1 …a1f3:model"`` when a key has several
    models) and placed in line by the catalog's vendor order, free first: groq,
    gemini, cohere, openrouter, mistral, cerebras, sambanova, cloudflare, ollama,
    ai21, huggingface, together, openai.

    Args:
        environ: the variables to read; default ``os.environ``.
        dotenv: a ``.env`` file whose values fill in what ``environ`` does not set
            (the environment wins); ``None`` reads none. The default ``".env"`` may
            be missing; any other path must exist.

    Returns:
        The routes, in vendor order.

    Raises:
        ConfigurationError: no key at all (listing the variables looked for), or a
            bad setting (naming the variable).
    """
    env = _environment(environ, dotenv)
    routes: list[Route] = []
    for vendor in CATALOG.values():
        keys, settings = _read_vendor(vendor, env)
        if not keys and not vendor.requires_key and (settings.models or settings.base_url):
            keys = [_Key(None, None, f"{vendor.env_prefix}_MODEL")]
        _check_indexes(vendor, keys, settings)
        length = _fingerprint_length(keys)
        for key in keys:
            routes.extend(_key_routes(vendor, key, settings, length))
    if not routes:
        msg = f"no API keys found in the environment; looked for {_looked_for()}"
        raise ConfigurationError(msg)
    return routes


def embedding_routes_from_env(
    environ: Mapping[str, str] | None = None,
    *,
    dotenv: str | os.PathLike[str] | None = ".env",
) -> list[Route]:
    """Embedding routes from the environment: ``<P>_EMBEDDING_MODEL`` names the
    model, the vendor's usual key variables (as :func:`routes_from_env` reads them)
    the keys.

    Each key of a vendor whose ``<P>_EMBEDDING_MODEL`` is set (``COHERE``,
    ``GEMINI``, ``OPENAI``) gets one route on that model, named
    ``"<key alias>:<model>"`` (``"cohere#1 …a1f3:embed-v4.0"``), with the catalog's
    limits and batch cap, in the key's pool as the vendor counts it (a Cohere key's
    chat and embedding routes share one), at the vendor's priority and base URL
    (``<P>_PRIORITY``, ``<P>_BASE_URL``). The chat limits variables do not apply.

    Raises:
        ConfigurationError: no ``<P>_EMBEDDING_MODEL`` set, a model that is not an
            embedding model, or a vendor whose model is named but which has no key.
    """
    env = _environment(environ, dotenv)
    routes: list[Route] = []
    for vendor in CATALOG.values():
        variable = f"{vendor.env_prefix}_EMBEDDING_MODEL"
        model = env.get(variable, "").strip()
        if not model:
            continue
        keys, settings = _read_vendor(vendor, env)
        keys = [k for k in keys if k.secret is not None]
        if not keys:
            msg = f"{variable}={model!r} is set but no {vendor.name} key was found"
            raise ConfigurationError(msg)
        length = _fingerprint_length(keys)
        per_key = vendor.per_model or model not in vendor.models
        for key in keys:
            assert key.secret is not None
            name = alias(vendor.name, key.index, key.secret, length=length)
            key_id = alias(vendor.name, None, key.secret, length=length)
            base_entry = settings.pick(settings.base_url, key.index)
            priority_entry = settings.pick(settings.priority, key.index)
            try:
                route = Route(
                    f"{vendor.name}:{model}",
                    api_key=key.secret,
                    base_url=base_entry[1] if base_entry else None,
                    name=f"{name}:{model}",
                    priority=priority_entry[1] if priority_entry else vendor.priority,
                    pool=f"{key_id}:{model}" if per_key else key_id,
                    key=key_id,
                )
            except ConfigurationError as exc:
                msg = f"{variable} ({vendor.name} key {name}): {exc}"
                raise ConfigurationError(msg) from None
            if not isinstance(route, EmbeddingRoute):
                msg = f"{variable}={model!r}: not an embedding model in the catalog"
                raise ConfigurationError(msg)
            routes.append(route)
    if not routes:
        wanted = ", ".join(
            f"{v.env_prefix}_EMBEDDING_MODEL"
            for v in CATALOG.values()
            if any(m.is_embedding for m in v.models.values())
        )
        msg = f"no embedding model named in the environment; set one of {wanted}"
        raise ConfigurationError(msg)
    return routes


@dataclass(frozen=True)
class _Prefix:
    """An API that is not in the catalog, known by its variables' prefix only."""

    env_prefix: str
    key_env: tuple[str, ...] = ()


@dataclass(frozen=True)
class KeySpec:
    """One key an API's variables name (see :func:`key_specs_from_env`).

    Attributes:
        secret: the key.
        limits: its own limits (``<P>_LIMITS[_<n>]``), or None for the rotator's.
        maxima: ``<P>_MAX_..._PER_...`` overrides, applied on top of the limits.
        suffix: ``"#<n>"`` for a numbered or listed key, ``""`` for ``<P>_API_KEY``.
    """

    secret: str
    limits: tuple[Limit, ...] | None
    maxima: tuple[Limit, ...]
    suffix: str

    def limits_over(self, base: Sequence[Limit]) -> tuple[Limit, ...] | None:
        """This key's limits given the rotator's ``base``: None when it has none of
        its own (the rotator's apply)."""
        if not self.maxima:
            return self.limits
        return tuple(_apply_maxima(self.limits if self.limits is not None else base, self.maxima))


def key_specs_from_env(
    prefix: str,
    environ: Mapping[str, str] | None = None,
    *,
    dotenv: str | os.PathLike[str] | None = ".env",
) -> list[KeySpec]:
    """Every key the environment gives an API by ``prefix`` (``SERP``), for
    :meth:`KeyRotator.from_env`, with the same variables and errors as the chat
    routes': ``SERP_API_KEYS=k1,k2``, ``SERP_API_KEY``, ``SERP_API_KEY_<n>``,
    ``SERP_LIMITS[_<n>]``, ``SERP_MAX_REQUESTS_PER_DAY[_<n>]``...

    Returns:
        The keys: the single key first, then by number.

    Raises:
        ConfigurationError: no key at all (naming the variables looked for), or a
            bad setting (naming the variable).
    """
    clean = prefix.strip().upper()
    if not re.fullmatch(r"[A-Z][A-Z0-9_]*", clean) or clean.endswith("_"):
        msg = f"{prefix!r} is not an environment variable prefix (letters, digits, _)"
        raise ConfigurationError(msg)
    env = _environment(environ, dotenv)
    api = _Prefix(clean)
    keys, settings = _read_vendor(api, env)  # type: ignore[arg-type]
    _check_indexes(api, keys, settings)  # type: ignore[arg-type]
    if not keys:
        msg = (
            f"no {clean} keys found in the environment; looked for {clean}_API_KEYS, "
            f"{clean}_API_KEY and {clean}_API_KEY_<n>"
        )
        raise ConfigurationError(msg)
    found = []
    for key in sorted(keys, key=lambda k: (k.index is not None, k.index or 0)):
        assert key.secret is not None
        index = key.index
        limits_entry = settings.pick(settings.limits, index)
        # API-wide maxima first, then this key's: the key's win where both apply.
        maxima = [lim for _, lim in settings.maxima.get(None, [])]
        if index is not None:
            maxima += [lim for _, lim in settings.maxima.get(index, [])]
        found.append(
            KeySpec(
                secret=key.secret,
                limits=tuple(limits_entry[1]) if limits_entry else None,
                maxima=tuple(maxima),
                suffix="" if index is None else f"#{index}",
            )
        )
    return found


def _fingerprint_length(keys: list[_Key]) -> int:
    # Two keys of one vendor with the same 4-digit tag would share a pool and a
    # disable switch: lengthen the tags of that vendor until they differ.
    secrets = [k.secret for k in keys if k.secret is not None]
    for length in (4, 8, 16):
        if len({alias("x", None, s, length=length) for s in secrets}) == len(secrets):
            return length
    return 64


def _key_routes(vendor: VendorInfo, key: _Key, settings: _Settings, length: int) -> list[Route]:
    index = key.index
    models_entry = settings.pick(settings.models, index)
    models: list[str] = models_entry[1] if models_entry else [vendor.default_model]
    priority_entry = settings.pick(settings.priority, index)
    base_entry = settings.pick(settings.base_url, index)
    account_entry = settings.pick(settings.account_id, index)
    limits_entry = settings.pick(settings.limits, index)
    tier_entry = settings.pick(settings.tier, index)
    prices_entry = settings.pick(settings.prices, index)
    # Vendor-wide maxima first, then this key's: the key's win where both apply.
    maxima = [lim for _, lim in settings.maxima.get(None, [])]
    if index is not None:
        maxima += [lim for _, lim in settings.maxima.get(index, [])]
    if key.secret is not None:
        name = alias(vendor.name, index, key.secret, length=length)
        key_id = alias(vendor.name, None, key.secret, length=length)
    else:
        name = key_id = vendor.name
    routes = []
    for model in models:
        spec = f"{vendor.name}:{model}"
        source = models_entry[0] if models_entry else key.variable
        try:
            _, info = lookup(spec, warn=False)  # Route warns once for an unknown model.
            tier = tier_entry[1] if tier_entry else None
            try:
                figures, _ = tier_limits(vendor, info, tier)
            except ConfigurationError as exc:
                msg = f"{tier_entry[0] if tier_entry else source}: {exc}"
                raise ConfigurationError(msg) from None
            limits: list[Limit] | None = None
            if limits_entry or maxima:
                # Limits of the user's own: configured, never replaced by headers.
                base = limits_entry[1] if limits_entry else [Limit.parse(s) for s in figures]
                limits = _apply_maxima(base, maxima)
            extra: dict[str, Any] = {}
            if account_entry:
                extra["account_id"] = account_entry[1]
            if prices_entry:
                extra["prices"] = prices_entry[1]
            route_name = name if len(models) == 1 else f"{name}:{model}"
            pool = (
                key_id if not vendor.per_model and model in vendor.models else f"{key_id}:{model}"
            )
            routes.append(
                Route(
                    spec,
                    api_key=key.secret,
                    base_url=base_entry[1] if base_entry else None,
                    name=route_name,
                    limits=limits,
                    priority=priority_entry[1] if priority_entry else vendor.priority,
                    pool=pool,
                    key=key_id,
                    tier=tier,
                    **extra,
                )
            )
        except ConfigurationError as exc:
            msg = f"{source} ({vendor.name} key {name}): {exc}"
            raise ConfigurationError(msg) from None
    return routes


# ------------------------------------------------------------------ TOML files

_TOP_LEVEL = {
    "strategy",
    "hedge_after",
    "ledger",
    "cache",
    "max_wait",
    "default_output_tokens",
    "transient_cooldown",
    "rate_limit_cooldown",
    "max_tokens",
    "temperature",
    "routes",
    "pools",
    "keys",
    "embedding_routes",
}
_KEYS_KEYS = {"name", "env", "limits", "pool", "strategy", "max_wait", "param"}
_ROUTE_KEYS = {
    "model",
    "name",
    "api_key",
    "api_key_env",
    "base_url",
    "limits",
    "priority",
    "pool",
    "key",
    "prices",
    "context_window",
    "options",
    "tier",
}


def _load_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib  # a dependency on Python 3.10
    try:
        with path.open("rb") as handle:
            data: dict[str, Any] = tomllib.load(handle)
    except OSError as exc:
        msg = f"cannot read {path}: {exc.strerror or exc}"
        raise ConfigurationError(msg) from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message carries the line and column.
        msg = f"{path}: not valid TOML: {exc}"
        raise ConfigurationError(msg) from None
    except UnicodeDecodeError as exc:
        msg = f"{path}: not valid TOML: not UTF-8 text (byte offset {exc.start})"
        raise ConfigurationError(msg) from None
    except RecursionError:
        msg = f"{path}: not valid TOML: arrays or tables nested too deeply"
        raise ConfigurationError(msg) from None
    except ValueError:  # a null byte in the path
        msg = f"cannot read {str(path)!r}: the path holds a null byte"
        raise ConfigurationError(msg) from None
    return data


def _number(where: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    if isinstance(value, bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        msg = f"{where} must be a {names}, got {value!r}"
        raise ConfigurationError(msg)
    return value


def _real(where: str, value: Any) -> float:
    """A finite, non-negative number (TOML also spells ``nan`` and ``inf``)."""
    number = float(_number(where, value, (int, float)))
    if not math.isfinite(number) or number < 0:
        msg = f"{where} must be a finite number, not negative; got {value!r}"
        raise ConfigurationError(msg)
    return number


def _whole(where: str, value: Any, minimum: int) -> int:
    number: int = _number(where, value, int)
    if not minimum <= number <= MAX_AMOUNT:
        msg = f"{where} must be a whole number from {minimum} to {MAX_AMOUNT}, got {value!r}"
        raise ConfigurationError(msg)
    return number


def router_kwargs_from_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Read a TOML file into keyword arguments for ``QuotaRoutedChatModel(**...)``.

    The file::

        strategy = "priority"            # or "spread"
        ledger = "sqlite:///usage.db"
        cache = true                     # false, or a directory for DiskResponseCache
        max_wait = 5.0
        default_output_tokens = 256

        [[routes]]
        model = "groq:openai/gpt-oss-120b"
        api_key_env = "GROQ_API_KEY_2"   # default: the vendor's variable (GROQ_API_KEY)
        limits = ["30/minute", "1000/day"]
        pool = "my-org"

        [pools.my-org]
        limits = ["12000 tokens/minute"] # a shared pool's limits, given once

        [[embedding_routes]]             # a QuotaRoutedEmbeddings beside the router
        model = "cohere:embed-v4.0"      # same keys as [[routes]], plus batch_size
        pool = "my-org"

        [[keys]]                         # a KeyRotator for another API
        name = "serp"
        env = "SERP"                     # SERP_API_KEYS, SERP_MAX_REQUESTS_PER_DAY_0...
        limits = ["100/month"]           # each key's own, unless pool = "..." names
                                         # a pool shared with routes or other keys

    Route keys: ``model`` (a catalog spec, required), ``name``, ``api_key_env`` or
    ``api_key`` (allowed, with a warning: keys belong in the environment),
    ``base_url``, ``limits``, ``priority`` (default: the catalog's vendor order),
    ``pool``, ``key``, ``tier`` (the key's tier with the vendor: ``"free"``,
    ``"tier-1"``...; see ``Route(tier=...)``), ``prices = [in, out]``,
    ``context_window`` and ``options`` (a table of more vendor-class arguments).
    Also accepted at the top: ``transient_cooldown``, ``rate_limit_cooldown``,
    ``max_tokens``, ``temperature``.

    Args:
        path: the TOML file.
        environ: where ``api_key_env`` and default keys are looked up; default
            ``os.environ``.

    Raises:
        ConfigurationError: naming the file and the line (syntax) or the setting,
            e.g. ``routes[2] ('fast').limits`` (meaning); a retired model names its
            successor.
    """
    file = Path(path)
    data = _load_toml(file)
    env = os.environ if environ is None else environ
    unknown = sorted(set(data) - _TOP_LEVEL)
    if unknown:
        msg = (
            f"{file}: unknown setting {', '.join(unknown)}; known: {', '.join(sorted(_TOP_LEVEL))}"
        )
        raise ConfigurationError(msg)
    kwargs: dict[str, Any] = {}
    for name in ("strategy", "ledger"):
        if name in data and not (name == "strategy" and isinstance(data[name], list)):
            kwargs[name] = _number(f"{file}: {name}", data[name], str)
    if isinstance(data.get("strategy"), list):
        kwargs["strategy"] = tuple(_number(f"{file}: strategy", k, str) for k in data["strategy"])
    if "strategy" in kwargs:
        try:
            order_keys(kwargs["strategy"])
        except ValueError as exc:
            msg = f"{file}: strategy must be a known strategy: {exc}"
            raise ConfigurationError(msg) from None
    if "hedge_after" in data:
        kwargs["hedge_after"] = _real(f"{file}: hedge_after", data["hedge_after"])
    for name in ("max_wait", "transient_cooldown", "rate_limit_cooldown", "temperature"):
        if name in data:
            kwargs[name] = _real(f"{file}: {name}", data[name])
    if "default_output_tokens" in data:
        kwargs["default_output_tokens"] = _whole(
            f"{file}: default_output_tokens", data["default_output_tokens"], 0
        )
    if "max_tokens" in data:
        kwargs["max_tokens"] = _whole(f"{file}: max_tokens", data["max_tokens"], 1)
    if "cache" in data:
        kwargs["cache"] = _cache(file, data["cache"])
    pools = _pools(file, data.get("pools", {}))
    raw_routes = data.get("routes")
    if not isinstance(raw_routes, list) or not raw_routes:
        msg = f"{file}: no routes; add at least one [[routes]] table with a model"
        raise ConfigurationError(msg)
    routes = [_toml_route(file, i, raw, pools, env) for i, raw in enumerate(raw_routes)]
    named: dict[str, int] = {}
    for i, route in enumerate(routes):
        if route.name in named:
            msg = (
                f"{file}: routes[{named[route.name]}] and routes[{i}] are both named "
                f'{route.name!r}; give one of them name = "..."'
            )
            raise ConfigurationError(msg)
        named[route.name] = i
    key_rotators = [
        _toml_keys(file, i, raw, pools, env) for i, raw in enumerate(_tables(file, data, "keys"))
    ]
    embedding_routes = [
        _toml_route(file, i, raw, pools, env, "embedding_routes")
        for i, raw in enumerate(_tables(file, data, "embedding_routes"))
    ]
    pools_named = (
        {r.pool for r in routes}
        | {r.pool for r in embedding_routes}
        | {k["pool"] for k in key_rotators if k.get("pool")}
    )
    unused = sorted(set(pools) - pools_named)
    if unused:
        msg = f"{file}: [pools.{unused[0]}] is not named by any route's pool"
        raise ConfigurationError(msg)
    try:  # the router's own rule (a shared pool has one set of limits), named here
        pool_table(routes)
    except ConfigurationError as exc:
        msg = f"{file}: {exc}"
        raise ConfigurationError(msg) from None
    kwargs["routes"] = routes
    if key_rotators:
        kwargs["key_rotators"] = key_rotators
    if embedding_routes:
        kwargs["embedding_routes"] = embedding_routes
    return kwargs


def _tables(file: Path, data: Mapping[str, Any], name: str) -> list[Any]:
    raw = data.get(name, [])
    if not isinstance(raw, list):
        msg = f"{file}: {name} must be written as [[{name}]] tables"
        raise ConfigurationError(msg)
    return raw


def _toml_keys(
    file: Path, index: int, raw: Any, pools: Mapping[str, list[str]], env: Mapping[str, str]
) -> dict[str, Any]:
    """One ``[[keys]]`` table as ``KeyRotator`` arguments: ``name``, ``keys`` (from
    the environment, as ``KeyRotator.from_env`` reads them), and the settings."""
    where = f"{file}: keys[{index}]"
    if not isinstance(raw, dict):
        msg = f"{where} must be a table"
        raise ConfigurationError(msg)
    unknown = sorted(set(raw) - _KEYS_KEYS)
    if unknown:
        msg = (
            f"{where}: unknown setting {', '.join(unknown)}; known: {', '.join(sorted(_KEYS_KEYS))}"
        )
        raise ConfigurationError(msg)
    for required in ("name", "env"):
        if not isinstance(raw.get(required), str) or not raw[required].strip():
            msg = f'{where}: {required} = "..." is required'
            raise ConfigurationError(msg)
    out: dict[str, Any] = {"name": raw["name"]}
    pool = raw.get("pool")
    if pool is not None:
        out["pool"] = _number(f"{where}.pool", pool, str)
    limits = raw.get("limits")
    if limits is not None:
        out["limits"] = _limit_strings(f"{where}.limits", limits)
    elif pool is not None and pool in pools:
        out["limits"] = pools[pool]
    for name in ("strategy", "param"):
        if name in raw:
            out[name] = _number(f"{where}.{name}", raw[name], str)
    if "max_wait" in raw:
        out["max_wait"] = _real(f"{where}.max_wait", raw["max_wait"])
    try:
        found = key_specs_from_env(raw["env"], env, dotenv=None)
    except ConfigurationError as exc:
        msg = f"{where} ({raw['name']!r}): {exc}"
        raise ConfigurationError(msg) from None
    out["keys"] = found
    return out


def _cache(file: Path, value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and "\0" in value:
        msg = f"{file}: cache: {value!r} is not a directory path (it holds a null byte)"
        raise ConfigurationError(msg)
    if isinstance(value, str) and value.strip():
        from langchain_quota_router.cache.disk import DiskResponseCache

        directory = Path(value).expanduser()
        if not directory.is_absolute():
            # Relative to the file, so the config means the same from any directory.
            directory = file.parent / directory
        try:
            return DiskResponseCache(directory)
        except (OSError, ValueError) as exc:
            msg = f"{file}: cache: cannot use {value!r} as a cache directory: {exc}"
            raise ConfigurationError(msg) from None
    msg = f"{file}: cache must be true, false or a directory path, got {value!r}"
    raise ConfigurationError(msg)


def _pools(file: Path, raw: Any) -> dict[str, list[str]]:
    if not isinstance(raw, dict):
        msg = f"{file}: pools must be tables like [pools.NAME] with limits = [...]"
        raise ConfigurationError(msg)
    pools: dict[str, list[str]] = {}
    for name, table in raw.items():
        where = f"{file}: pools.{name}"
        if not isinstance(table, dict) or set(table) != {"limits"}:
            msg = f"{where} must hold exactly one setting, limits = [...]"
            raise ConfigurationError(msg)
        pools[name] = _limit_strings(where + ".limits", table["limits"])
    return pools


def _limit_strings(where: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        msg = f"{where} must be a list of limit strings like '30/minute', got {value!r}"
        raise ConfigurationError(msg)
    for item in value:
        try:
            Limit.parse(item)
        except ConfigurationError as exc:
            msg = f"{where}: {exc}"
            raise ConfigurationError(msg) from None
    return list(value)


def _toml_route(
    file: Path,
    index: int,
    raw: Any,
    pools: Mapping[str, list[str]],
    env: Mapping[str, str],
    table: str = "routes",
) -> Route:
    where = f"{file}: {table}[{index}]"
    if not isinstance(raw, dict):
        msg = f"{where} must be a table ([[{table}]])"
        raise ConfigurationError(msg)
    if isinstance(raw.get("name"), str):
        where += f" ({raw['name']!r})"
    known = _ROUTE_KEYS | ({"batch_size"} if table == "embedding_routes" else set())
    unknown = sorted(set(raw) - known)
    if unknown:
        msg = f"{where}: unknown key {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        raise ConfigurationError(msg)
    spec = raw.get("model")
    if not isinstance(spec, str) or not spec.strip():
        msg = f"{where}: model must be a catalog spec such as 'groq:openai/gpt-oss-120b'"
        raise ConfigurationError(msg)
    try:
        vendor, _ = lookup(spec, warn=False)  # Route warns once for an unknown model.
    except ConfigurationError as exc:
        msg = f"{where}.model: {exc}"
        raise ConfigurationError(msg) from None
    args: dict[str, Any] = {}
    if "api_key" in raw and "api_key_env" in raw:
        msg = f"{where}: give api_key_env or api_key, not both"
        raise ConfigurationError(msg)
    if "api_key" in raw:
        args["api_key"] = clean_key(_number(f"{where}.api_key", raw["api_key"], str), where)
        logger.warning(
            '%s holds an API key in clear; prefer api_key_env = "..." and keep the key '
            "in the environment",
            where,
        )
    elif "api_key_env" in raw:
        variable = _number(f"{where}.api_key_env", raw["api_key_env"], str)
        secret = clean_key(env.get(variable, ""), f"{where}: {variable}")
        if not secret:
            msg = f"{where}: api_key_env names {variable}, which is not set"
            raise ConfigurationError(msg)
        args["api_key"] = secret
    elif vendor.requires_key:
        found = default_api_key(vendor, env)
        if found is None:
            msg = f"{where}: no API key; set {' or '.join(vendor.key_env)} or give api_key_env"
            raise ConfigurationError(msg)
        args["api_key"] = found
    for name in ("name", "base_url", "pool", "key", "tier"):
        if name in raw:
            args[name] = _number(f"{where}.{name}", raw[name], str)
    if "base_url" in args:
        check_base_url(args["base_url"], f"{where}.base_url")
    args["priority"] = _number(f"{where}.priority", raw.get("priority", vendor.priority), int)
    if "context_window" in raw:
        args["context_window"] = _number(f"{where}.context_window", raw["context_window"], int)
    if "prices" in raw:
        prices = raw["prices"]
        if (
            not isinstance(prices, list)
            or len(prices) not in (2, 3)
            or not all(
                isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p)
                for p in prices
            )
        ):
            msg = (
                f"{where}.prices must be [input, output] or [input, output, cached_input] "
                f"USD per million tokens, got {prices!r}"
            )
            raise ConfigurationError(msg)
        args["prices"] = tuple(float(p) for p in prices)
    pool = args.get("pool", "")
    if "limits" in raw:
        if pool in pools:
            msg = (
                f"{where}: gives limits and names pool {pool!r}, whose limits "
                f"[pools.{pool}] already sets; give them once"
            )
            raise ConfigurationError(msg)
        args["limits"] = _limit_strings(f"{where}.limits", raw["limits"])
    elif pool in pools:
        args["limits"] = pools[pool]
    if "batch_size" in raw:
        args["batch_size"] = _whole(f"{where}.batch_size", raw["batch_size"], 1)
    options = raw.get("options", {})
    if not isinstance(options, dict):
        msg = f"{where}.options must be a table of vendor-class arguments"
        raise ConfigurationError(msg)
    try:
        route = Route(spec, **args, **options)
        if (table == "embedding_routes") != isinstance(route, EmbeddingRoute):
            want = "an embedding model" if table == "embedding_routes" else "a chat model"
            msg = (
                f"model {spec!r} is not {want}: [[routes]] take chat models, "
                "[[embedding_routes]] embedding models"
            )
            raise ConfigurationError(msg)
        return route
    except ConfigurationError as exc:
        msg = f"{where}: {exc}"
        raise ConfigurationError(msg) from None
    except (TypeError, ValueError) as exc:
        # A vendor class refusing an argument from options (pydantic says ValueError).
        msg = f"{where}.options: {exc}"
        raise ConfigurationError(msg) from None
