"""A LangChain chat model that spends free and cheap LLM quota wisely.

``QuotaRoutedChatModel`` wraps vendor chat models ("routes"), knows every key's
limits, sends each call where it fits and falls back when a vendor fails or says no.
"""

from langchain_quota_router._errors import (
    ConfigurationError,
    LedgerError,
    NoRouteError,
    QuotaExhaustedError,
    QuotaRouterError,
)
from langchain_quota_router.cache.disk import DiskResponseCache
from langchain_quota_router.chat.callbacks import (
    QuotaUsageCallbackHandler,
    RouteUsage,
    get_quota_usage_callback,
)
from langchain_quota_router.chat.model import QuotaRoutedChatModel
from langchain_quota_router.chat.route import Route
from langchain_quota_router.chat.routing import RouterStats
from langchain_quota_router.quota.ledger import LearnedLimit, LimitUsage
from langchain_quota_router.quota.limits import Limit, Window
from langchain_quota_router.quota.watch import Lifespan, QuotaAlert

__all__ = [
    "ConfigurationError",
    "DiskResponseCache",
    "LearnedLimit",
    "LedgerError",
    "Lifespan",
    "Limit",
    "LimitUsage",
    "NoRouteError",
    "QuotaAlert",
    "QuotaExhaustedError",
    "QuotaRoutedChatModel",
    "QuotaRouterError",
    "QuotaUsageCallbackHandler",
    "Route",
    "RouteUsage",
    "RouterStats",
    "Window",
    "get_quota_usage_callback",
]
