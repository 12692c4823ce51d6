"""Ledger backends, chosen by URL.

==================================  =========================================
``memory://``                       this process only (tests, notebooks)
``sqlite:///relative/ledger.db``    a file shared by every process on a machine
``sqlite:////absolute/ledger.db``
``redis://host:6379/0``             one set of quotas for a fleet (extra ``redis``)
==================================  =========================================

With no URL the router uses a SQLite file in the user's cache directory, or the URL
in the ``QUOTA_ROUTER_LEDGER`` environment variable.
"""

from __future__ import annotations

import importlib
import os

import platformdirs

from langchain_quota_router._errors import ConfigurationError
from langchain_quota_router.ledger._url import redact_url
from langchain_quota_router.ledger.base import (
    Demand,
    Hold,
    LearnedLimit,
    Ledger,
    LimitUsage,
    Refusal,
    Reservation,
)

LEDGER_ENV = "QUOTA_ROUTER_LEDGER"

# scheme -> (module, class, the extra that installs its client library)
_BACKENDS: dict[str, tuple[str, str, str | None]] = {
    "memory": ("langchain_quota_router.ledger.memory", "MemoryLedger", None),
    "sqlite": ("langchain_quota_router.ledger.sqlite", "SQLiteLedger", None),
    "redis": ("langchain_quota_router.ledger.redis", "RedisLedger", "redis"),
    "rediss": ("langchain_quota_router.ledger.redis", "RedisLedger", "redis"),
}


def default_ledger_url() -> str:
    """``$QUOTA_ROUTER_LEDGER``, else a SQLite file in the user's cache directory."""
    url = os.environ.get(LEDGER_ENV)
    if url:
        return url
    folder = platformdirs.user_cache_dir("langchain-quota-router")
    return f"sqlite:///{os.path.join(folder, 'ledger.db')}"


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
    module_name, class_name, extra = _BACKENDS[scheme]
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


__all__ = [
    "LEDGER_ENV",
    "Demand",
    "Hold",
    "LearnedLimit",
    "Ledger",
    "LimitUsage",
    "Refusal",
    "Reservation",
    "default_ledger_url",
    "open_ledger",
]
