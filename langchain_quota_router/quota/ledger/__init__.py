"""Ledger backends, chosen by URL.

==================================  =========================================
``memory://``                       this process only (tests, notebooks)
``sqlite:///relative/ledger.db``    a file shared by every process on a machine
``sqlite:////absolute/ledger.db``
``redis://host:6379/0``             one set of quotas for a fleet (extra ``redis``)
``redis://host/0?on_error=local``   the same, failing open: a ``FailOpenLedger``
                                    over Redis and this process's memory
``sqlite:///x.db?slices=on``        any of these admitting from local quota
``redis://host/0?slices=on``        slices: a ``SlicedLedger`` over it
==================================  =========================================

Slices are opt-in, not the default: a process then holds up to an eighth of a
pool's room that other processes cannot use until it is spent or given back (within
a second or two), and a process killed with ``kill -9`` leaves its slice counted until
the slice's lease runs out. Worth it where a pool has room for many calls per second
and the per-call write is the cost (see ``benchmarks/overhead.py``).

With no URL the router uses a SQLite file in the user's *state* directory
(platformdirs; not the cache directory, which cleaners may empty), or the URL in the
``QUOTA_ROUTER_LEDGER`` environment variable. A ledger found at the old place (the
cache directory of earlier versions) is moved there once.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import platformdirs

from langchain_quota_router.quota.errors import ConfigurationError
from langchain_quota_router.quota.ledger.buckets import BucketLedger
from langchain_quota_router.quota.ledger.contract import Ledger
from langchain_quota_router.quota.ledger.failopen import RETRY_INTERVAL, FailOpenLedger
from langchain_quota_router.quota.ledger.slices import SlicedLedger
from langchain_quota_router.quota.ledger.types import (
    DEFAULT_LEASE,
    Demand,
    Hold,
    LearnedLimit,
    LimitUsage,
    Refusal,
    Reservation,
)
from langchain_quota_router.quota.ledger.url import redact_url

LEDGER_ENV = "QUOTA_ROUTER_LEDGER"
_APP = "langchain-quota-router"
logger = logging.getLogger("langchain_quota_router")

# scheme -> ("module:Class", the extra that installs its client library). Named, not
# imported: a backend loads when a URL asks for it (memory loads anyway: it is the
# fail-open fallback), and no backend imports this module.
_BACKENDS: dict[str, tuple[str, str | None]] = {
    "memory": ("langchain_quota_router.quota.ledger.memory:MemoryLedger", None),
    "sqlite": ("langchain_quota_router.quota.ledger.sqlite:SQLiteLedger", None),
    "redis": ("langchain_quota_router.quota.ledger.redis:RedisLedger", "redis"),
    "rediss": ("langchain_quota_router.quota.ledger.redis:RedisLedger", "redis"),
}


def default_ledger_url() -> str:
    """``$QUOTA_ROUTER_LEDGER``, else a SQLite file in the user's state directory."""
    url = os.environ.get(LEDGER_ENV)
    if url:
        return url
    path = Path(platformdirs.user_state_dir(_APP)) / "ledger.db"
    path = _move_old_ledger(Path(platformdirs.user_cache_dir(_APP)) / "ledger.db", path)
    return f"sqlite:///{path}"


def _move_old_ledger(old: Path, new: Path) -> Path:
    """Move a ledger from where earlier versions kept it, once; the path to use."""
    if new.exists() or not old.exists():
        return new
    try:
        new.parent.mkdir(parents=True, exist_ok=True)
        # The journal files first: a ledger file never arrives without them.
        for suffix in ("-wal", "-shm", ""):
            source = old.with_name(old.name + suffix)
            if source.exists():
                os.replace(source, new.with_name(new.name + suffix))
    except OSError as exc:
        logger.warning(
            "could not move the ledger from %s to %s (%s); using it where it is", old, new, exc
        )
        return old if old.exists() else new
    logger.info("moved the ledger from the cache directory %s to %s", old, new)
    return new


def open_ledger(url: str | Ledger | None = None) -> Ledger:
    """The ledger a URL names (or the default one, or ``url`` itself if a Ledger).

    Raises:
        ConfigurationError: for an unknown scheme, naming the URL and the known ones,
            or when the backend's client library is not installed.
    """
    if isinstance(url, Ledger):
        return url
    if url is None:
        url = default_ledger_url()
    if not isinstance(url, str):
        msg = f"ledger must be a URL string or a Ledger, got {type(url).__name__}"
        raise ConfigurationError(msg)
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in _BACKENDS:
        known = ", ".join(f"{s}://" for s in _BACKENDS)
        msg = f"unknown ledger URL {redact_url(url)!r}: the scheme must be one of {known}"
        raise ConfigurationError(msg)
    if "slices=" in url:
        sliced = _sliced(url)
        if sliced is not None:
            return sliced
    if scheme in ("redis", "rediss"):
        query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
        if query.get("on_error") == "local":
            return _fail_open(url, query)
    target, extra = _BACKENDS[scheme]
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        msg = (
            f"ledger URL {redact_url(url)!r} needs the {extra!r} extra: "
            f"pip install 'langchain-quota-router[{extra}]' ({exc})"
        )
        raise ConfigurationError(msg) from exc
    backend: type[Ledger] = getattr(module, class_name)
    return backend(url)  # type: ignore[call-arg]


def _sliced(url: str) -> Ledger | None:
    """``...?slices=on``: the ledger without the option, wrapped in local slices
    (None for ``slices=off``: the ledger as it is)."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    value = dict(pairs).get("slices", "").lower()
    if value not in ("on", "off", "true", "false", "1", "0"):
        msg = f"ledger URL {redact_url(url)!r}: slices must be 'on' or 'off', got {value!r}"
        raise ConfigurationError(msg)
    # Not urlunsplit: it turns sqlite:///x.db (an empty host) into sqlite:/x.db.
    query = urlencode([(k, v) for k, v in pairs if k != "slices"])
    rest = url.split("?", 1)[0] + (f"?{query}" if query else "")
    inner = open_ledger(rest)
    return SlicedLedger(inner) if value in ("on", "true", "1") else inner


def _fail_open(url: str, query: dict[str, str]) -> Ledger:
    """``redis://...?on_error=local``: the Redis ledger wrapped to fail open."""
    shown = redact_url(url)
    options: dict[str, float | None] = {}
    for name, default in (("retry_interval", RETRY_INTERVAL), ("outage_share", None)):
        text = query.get(name)
        try:
            options[name] = float(text) if text is not None else default
        except ValueError:
            msg = f"ledger URL {shown!r}: {name} must be a number, got {text!r}"
            raise ConfigurationError(msg) from None
    parts = urlsplit(url)
    rest = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k not in ("on_error", "retry_interval", "outage_share", "journal")
    ]
    primary = open_ledger(urlunsplit(parts._replace(query=urlencode(rest))))
    try:
        return FailOpenLedger(
            primary,
            retry_interval=options["retry_interval"] or 0.0,
            outage_share=options["outage_share"],
            journal=query.get("journal") or None,
        )
    except ConfigurationError as exc:
        msg = f"ledger URL {shown!r}: {exc}"
        raise ConfigurationError(msg) from None


__all__ = [
    "DEFAULT_LEASE",
    "LEDGER_ENV",
    "BucketLedger",
    "Demand",
    "Hold",
    "LearnedLimit",
    "Ledger",
    "LimitUsage",
    "Refusal",
    "Reservation",
    "SlicedLedger",
    "default_ledger_url",
    "open_ledger",
]
