"""A LangChain chat model that spends free and cheap LLM quota wisely.

``QuotaRoutedChatModel`` wraps vendor chat models ("routes"), knows every key's
limits, sends each call where it fits and falls back when a vendor fails or says no.
``QuotaRoutedEmbeddings`` does it for embeddings, batched in each vendor's unit and
never mixing vector spaces; ``KeyRotator`` for the keys of any other API, all on the
same ledger.

Names are imported when first used, so ``import langchain_quota_router.quota`` (the
quota core) does not load LangChain.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_quota_router._errors import (
        ConfigurationError,
        LedgerError,
        NoRouteError,
        QuotaExhaustedError,
        QuotaRouterError,
        RoutesAuthenticationError,
        RoutesContextOverflowError,
        RoutesInvalidRequestError,
        RoutesModelNotFoundError,
        RoutesUnavailableError,
    )
    from langchain_quota_router.cache.disk import DiskResponseCache
    from langchain_quota_router.cache.redis import RedisResponseCache
    from langchain_quota_router.chat.callbacks import (
        QuotaUsageCallbackHandler,
        RouteUsage,
        get_quota_usage_callback,
    )
    from langchain_quota_router.chat.model import QuotaRoutedChatModel
    from langchain_quota_router.embeddings.cache import (
        DiskEmbeddingCache,
        EmbeddingCache,
        InMemoryEmbeddingCache,
        RedisEmbeddingCache,
    )
    from langchain_quota_router.embeddings.model import QuotaRoutedEmbeddings
    from langchain_quota_router.keys import Key, KeyLease, KeyRotator
    from langchain_quota_router.quota.ledger import LearnedLimit, Ledger, LimitUsage
    from langchain_quota_router.quota.limits import Limit, Window
    from langchain_quota_router.quota.stats import RouterStats
    from langchain_quota_router.quota.watch import Lifespan, QuotaAlert
    from langchain_quota_router.route import EmbeddingRoute, Route

#: Public name -> the module it lives in.
_WHERE = {
    "ConfigurationError": "langchain_quota_router._errors",
    "DiskEmbeddingCache": "langchain_quota_router.embeddings.cache",
    "DiskResponseCache": "langchain_quota_router.cache.disk",
    "EmbeddingCache": "langchain_quota_router.embeddings.cache",
    "EmbeddingRoute": "langchain_quota_router.route",
    "InMemoryEmbeddingCache": "langchain_quota_router.embeddings.cache",
    "Key": "langchain_quota_router.keys",
    "KeyLease": "langchain_quota_router.keys",
    "KeyRotator": "langchain_quota_router.keys",
    "LearnedLimit": "langchain_quota_router.quota.ledger",
    "Ledger": "langchain_quota_router.quota.ledger",
    "LedgerError": "langchain_quota_router._errors",
    "Lifespan": "langchain_quota_router.quota.watch",
    "Limit": "langchain_quota_router.quota.limits",
    "LimitUsage": "langchain_quota_router.quota.ledger",
    "NoRouteError": "langchain_quota_router._errors",
    "QuotaAlert": "langchain_quota_router.quota.watch",
    "QuotaExhaustedError": "langchain_quota_router._errors",
    "QuotaRoutedChatModel": "langchain_quota_router.chat.model",
    "QuotaRoutedEmbeddings": "langchain_quota_router.embeddings.model",
    "QuotaRouterError": "langchain_quota_router._errors",
    "QuotaUsageCallbackHandler": "langchain_quota_router.chat.callbacks",
    "RedisEmbeddingCache": "langchain_quota_router.embeddings.cache",
    "RedisResponseCache": "langchain_quota_router.cache.redis",
    "Route": "langchain_quota_router.route",
    "RouteUsage": "langchain_quota_router.chat.callbacks",
    "RouterStats": "langchain_quota_router.quota.stats",
    "RoutesAuthenticationError": "langchain_quota_router._errors",
    "RoutesContextOverflowError": "langchain_quota_router._errors",
    "RoutesInvalidRequestError": "langchain_quota_router._errors",
    "RoutesModelNotFoundError": "langchain_quota_router._errors",
    "RoutesUnavailableError": "langchain_quota_router._errors",
    "Window": "langchain_quota_router.quota.limits",
    "get_quota_usage_callback": "langchain_quota_router.chat.callbacks",
}

__all__ = [
    "ConfigurationError",
    "DiskEmbeddingCache",
    "DiskResponseCache",
    "EmbeddingCache",
    "EmbeddingRoute",
    "InMemoryEmbeddingCache",
    "Key",
    "KeyLease",
    "KeyRotator",
    "LearnedLimit",
    "Ledger",
    "LedgerError",
    "Lifespan",
    "Limit",
    "LimitUsage",
    "NoRouteError",
    "QuotaAlert",
    "QuotaExhaustedError",
    "QuotaRoutedChatModel",
    "QuotaRoutedEmbeddings",
    "QuotaRouterError",
    "QuotaUsageCallbackHandler",
    "RedisEmbeddingCache",
    "RedisResponseCache",
    "Route",
    "RouteUsage",
    "RouterStats",
    "RoutesAuthenticationError",
    "RoutesContextOverflowError",
    "RoutesInvalidRequestError",
    "RoutesModelNotFoundError",
    "RoutesUnavailableError",
    "Window",
    "get_quota_usage_callback",
]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        msg = f"module 'langchain_quota_router' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
