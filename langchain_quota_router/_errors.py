"""Errors raised by langchain-quota-router.

The hierarchy::

    QuotaRouterError                       base of everything raised here
    ├── ConfigurationError (ValueError)    bad routes, limits, URLs, files
    ├── LedgerError                        the ledger's storage failed or is not ours
    └── NoRouteError                       no route could serve the call; carries
        │                                  ``reasons`` and ``resets_at``
        ├── QuotaExhaustedError            quota is spent (a ModelRateLimitError)
        ├── RoutesContextOverflowError     every route: prompt too long
        │                                  (a ContextOverflowError)
        ├── RoutesAuthenticationError      every route: key rejected
        │                                  (a ModelAuthenticationError)
        ├── RoutesModelNotFoundError       every route: model gone (a ModelNotFoundError)
        ├── RoutesInvalidRequestError      no route can take this request (tools,
        │                                  bind_tools options; a ModelInvalidRequestError)
        └── RoutesUnavailableError         every route failed otherwise: 5xx, timeouts
                                           (a ModelAPIError)

Each ``NoRouteError`` is also the ``langchain_core.exceptions`` type its condition
has, so ``with_retry``, agent middleware and callers that catch LangChain's typed
errors see the router's failures as they see a single model's. When the router gives
up after a bad request, it re-raises the vendor's own exception, or a
``RoutesInvalidRequestError`` chained to a masked stand-in when that exception would
show a configured key.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from langchain_core.exceptions import (
    ContextOverflowError,
    ModelAPIError,
    ModelAuthenticationError,
    ModelInvalidRequestError,
    ModelNotFoundError,
    ModelRateLimitError,
)

from langchain_quota_router.quota.errors import ConfigurationError as ConfigurationError
from langchain_quota_router.quota.errors import LedgerError as LedgerError
from langchain_quota_router.quota.errors import QuotaRouterError as QuotaRouterError


class NoRouteError(QuotaRouterError):
    """No route could serve the call.

    Attributes:
        reasons: route name -> why that route could not serve, in the order tried.
        resets_at: the earliest moment (UTC) at which one of the routes frees up,
            or ``None`` when none will by itself.
        attempts: every route considered, in order, as an answer's
            ``response_metadata["attempts"]`` lists them: ``{"route", "outcome",
            "reason"}`` (set by the router when it raises).
    """

    summary = "no route can serve this call"
    #: The same, said of a key rotator's keys.
    key_summary = "no key can serve this call"

    def __init__(
        self,
        reasons: Mapping[str, str],
        resets_at: dt.datetime | None,
        *,
        keys: bool = False,
    ) -> None:
        self.reasons = dict(reasons)
        self.resets_at = resets_at
        self.attempts: list[dict[str, str]] = []
        lines = "; ".join(f"{name}: {why}" for name, why in self.reasons.items())
        when = (
            f"earliest reset {resets_at.isoformat()}"
            if resets_at is not None
            else "no route frees up by itself"
        )
        when = when.replace("no route frees", "none frees") if keys else when
        summary = self.key_summary if keys else self.summary
        super().__init__(f"{summary} ({lines}); {when}")


class QuotaExhaustedError(NoRouteError, ModelRateLimitError):
    """Every route's quota is spent, blocked or full for now; ``resets_at`` says when
    one frees up. A ``ModelRateLimitError``: retrying later may succeed."""


class RoutesContextOverflowError(NoRouteError, ContextOverflowError):
    """The prompt does not fit any route's context window."""

    summary = "the prompt is too long for every route"
    key_summary = "the request is too large for every key"


class RoutesAuthenticationError(NoRouteError, ModelAuthenticationError):
    """Every route's key was rejected (or is disabled after a rejection)."""

    summary = "every route's key was rejected"
    key_summary = "every key was rejected"


class RoutesModelNotFoundError(NoRouteError, ModelNotFoundError):
    """Every route's model is retired or unknown to its vendor."""

    summary = "no route's model is served by its vendor"
    key_summary = "no key's model is served by its vendor"


class RoutesInvalidRequestError(NoRouteError, ModelInvalidRequestError):
    """No route can take this request as asked (tools, ``bind_tools`` options)."""

    summary = "no route can take this request"
    key_summary = "no key can take this request"


class RoutesUnavailableError(NoRouteError, ModelAPIError):
    """Every route failed with a server error, a timeout or a dropped connection."""

    summary = "every route failed"
    key_summary = "every key failed"


_TYPED_ERRORS: dict[str, type[NoRouteError]] = {
    "context": RoutesContextOverflowError,
    "auth": RoutesAuthenticationError,
    "unavailable": RoutesModelNotFoundError,
    "tools": RoutesInvalidRequestError,
    "transient": RoutesUnavailableError,
}


def no_route_error(
    categories: set[str],
    reasons: Mapping[str, str],
    resets_at: dt.datetime | None,
    *,
    keys: bool = False,
) -> NoRouteError:
    """The LangChain-typed error for a call nobody could serve.

    Args:
        categories: why each route or key could not serve, in the quota core's words
            (``quota``, ``context``, ``auth``, ``unavailable``, ``tools``,
            ``transient``, ``other``).
        reasons: name -> why, in the order tried (already masked).
        resets_at: the earliest moment one of them frees up, if any does.
        keys: the members are a key rotator's keys (the message says "key").

    Returns:
        One kind when every route failed the same way (all keys rejected: a
        ``RoutesAuthenticationError``); ``RoutesUnavailableError`` when they failed
        in several ways none of which is quota; else ``QuotaExhaustedError``.
    """
    kind: type[NoRouteError] = QuotaExhaustedError
    if len(categories) == 1:
        kind = _TYPED_ERRORS.get(next(iter(categories)), QuotaExhaustedError)
    elif categories and "quota" not in categories and categories <= set(_TYPED_ERRORS):
        kind = RoutesUnavailableError
    return kind(reasons, resets_at, keys=keys)
