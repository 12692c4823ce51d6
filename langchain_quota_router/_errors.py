"""Errors raised by langchain-quota-router.

The hierarchy::

    QuotaRouterError                      base of everything raised here
    ├── ConfigurationError (ValueError)   bad routes, limits, URLs, files
    ├── LedgerError                       the ledger's storage failed or is not ours
    └── QuotaExhaustedError               no route can serve the call right now

Vendor errors (``openai.RateLimitError``, ``groq.AuthenticationError``, ...) are not
wrapped: when the router gives up after a bad request it re-raises the vendor's own
exception so callers keep catching what they already catch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping


class QuotaRouterError(Exception):
    """Base class of every error raised by langchain-quota-router."""


class ConfigurationError(QuotaRouterError, ValueError):
    """A route, limit, ledger URL or configuration file is wrong.

    The message names the culprit: the route, the limit string, the URL or the file.
    """


class LedgerError(QuotaRouterError):
    """The ledger could not be read or written, or its storage is not a ledger."""


class QuotaExhaustedError(QuotaRouterError):
    """No route could serve the call.

    Attributes:
        reasons: route name -> why that route could not serve, in the order tried.
        resets_at: the earliest moment (UTC) at which one of the routes frees up,
            or ``None`` when none ever will (one-time credits spent, keys disabled).
    """

    def __init__(
        self,
        reasons: Mapping[str, str],
        resets_at: dt.datetime | None,
    ) -> None:
        self.reasons = dict(reasons)
        self.resets_at = resets_at
        lines = "; ".join(f"{name}: {why}" for name, why in self.reasons.items())
        when = (
            f"earliest reset {resets_at.isoformat()}"
            if resets_at is not None
            else "no route frees up by itself"
        )
        super().__init__(f"no route can serve this call ({lines}); {when}")
