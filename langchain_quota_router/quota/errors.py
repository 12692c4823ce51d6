"""The errors the quota core raises, without LangChain.

The base of the package's hierarchy, and the two errors the ledger, the limits and
the key handling raise. :mod:`langchain_quota_router._errors` re-exports them beside
the routing errors, which are also ``langchain_core`` exception types; this module
imports nothing, so the quota core runs without LangChain.
"""

from __future__ import annotations


class QuotaRouterError(Exception):
    """Base class of every error raised by langchain-quota-router."""


class ConfigurationError(QuotaRouterError, ValueError):
    """A route, limit, ledger URL or configuration file is wrong.

    The message names the culprit: the route, the limit string, the URL or the file.
    """


class LedgerError(QuotaRouterError):
    """The ledger could not be read or written, or its storage is not a ledger."""
