"""The quota core's own errors: plain exceptions, so the core needs no LangChain.

``langchain_quota_router._errors`` builds the LangChain-typed errors on these (a
``QuotaExhaustedError`` is also a ``ModelRateLimitError``); see its docstring for
the whole hierarchy.
"""

from __future__ import annotations


class QuotaRouterError(Exception):
    """Base class of every error raised by langchain-quota-router."""


class ConfigurationError(QuotaRouterError, ValueError):
    """A route, key, limit, ledger URL or configuration file is wrong.

    The message names the culprit: the route, the limit string, the URL or the file.
    """


class LedgerError(QuotaRouterError):
    """The ledger could not be read or written, or its storage is not a ledger."""
