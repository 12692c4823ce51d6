"""A LangChain chat model that spends free and cheap LLM quota wisely.

``QuotaRoutedChatModel`` wraps vendor chat models ("routes"), knows every key's
limits, sends each call where it fits and falls back when a vendor fails or says no.
"""

from langchain_quota_router._cache import DiskResponseCache
from langchain_quota_router._callbacks import (
    QuotaUsageCallbackHandler,
    RouteUsage,
    get_quota_usage_callback,
)
from langchain_quota_router._chat_model import QuotaRoutedChatModel
from langchain_quota_router._errors import (
    ConfigurationError,
    LedgerError,
    NoRouteError,
    QuotaExhaustedError,
    QuotaRouterError,
)
from langchain_quota_router._limits import Limit, Window
from langchain_quota_router._route import Route
from langchain_quota_router._routing import RouterStats
from langchain_quota_router._watch import Lifespan, QuotaAlert
from langchain_quota_router.ledger import LearnedLimit, LimitUsage

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
