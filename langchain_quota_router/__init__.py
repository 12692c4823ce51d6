"""A LangChain chat model that spends free and cheap LLM quota wisely.

``QuotaRoutedChatModel`` wraps vendor chat models ("routes"), knows every key's
limits, sends each call where it fits and falls back when a vendor fails or says no.
"""

from langchain_quota_router._cache import DiskResponseCache
from langchain_quota_router._callbacks import (
    QuotaUsageCallbackHandler,
    get_quota_usage_callback,
)
from langchain_quota_router._chat_model import QuotaRoutedChatModel
from langchain_quota_router._errors import (
    ConfigurationError,
    LedgerError,
    QuotaExhaustedError,
    QuotaRouterError,
)
from langchain_quota_router._limits import Limit
from langchain_quota_router._route import Route

__all__ = [
    "ConfigurationError",
    "DiskResponseCache",
    "LedgerError",
    "Limit",
    "QuotaExhaustedError",
    "QuotaRoutedChatModel",
    "QuotaRouterError",
    "QuotaUsageCallbackHandler",
    "Route",
    "get_quota_usage_callback",
]
