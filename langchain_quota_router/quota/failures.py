"""Classify whatever a vendor chat model raised into what the router should do next.

The vendor packages are optional, so none is imported here. Exceptions are recognised
by their HTTP status (``status_code``, an integer ``code``, ``response.status_code``),
by the names of the classes they inherit from (which covers ``openai``, ``groq``,
``cohere``, ``google.genai``, ``httpx``/``httpx2`` and LangChain's ``Model*Error``
wrappers alike) and by the wording of the vendor's message. The ``__cause__`` /
``__context__`` chain is walked, because LangChain integrations re-raise the SDK's error
as the cause of their own (``GoogleRateLimitError`` carries no status; its cause does).
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

from langchain_quota_router.quota.headers import (
    parse_duration,
    read_rate_limit_headers,
)
from langchain_quota_router.quota.keyparts import key_parts

__all__ = [
    "Failure",
    "FailureKind",
    "Period",
    "classify",
    "parse_duration",
    "redact",
]

Period = Literal["minute", "hour", "day", "month"]


class FailureKind(str, Enum):
    """What kind of failure a vendor call ended in, which decides the router's move."""

    RATE_LIMIT = "rate_limit"
    """A 429 for a short window (per minute or hour): wait a little, try elsewhere."""
    QUOTA_EXHAUSTED = "quota_exhausted"
    """A daily or monthly quota wall, a 402, or credits or quota used up."""
    AUTHENTICATION = "authentication"
    """401, 403 or an invalid API key: the key is no good until someone fixes it."""
    TRANSIENT = "transient"
    """Timeout, connection error, 5xx, 529 overloaded: a short cooldown will do."""
    CONTEXT_TOO_LONG = "context_too_long"
    """The prompt does not fit this model: a model with a larger window may take it."""
    MODEL_UNAVAILABLE = "model_unavailable"
    """The model is retired, unknown or gone on this key (404 model not found, Groq's
    ``model_decommissioned``, 410, Gemini ``NOT_FOUND``): every call to it would fail."""
    BAD_REQUEST = "bad_request"
    """Any other 400/404/422: the request itself is wrong for this vendor."""
    UNKNOWN = "unknown"
    """Not recognisably a vendor or HTTP failure, e.g. a ``TypeError`` from a bug."""


@dataclass(frozen=True)
class Failure:
    """A vendor failure, reduced to what the router needs.

    Attributes:
        kind: the kind of failure.
        status: the HTTP status when known.
        retry_after: seconds from now the vendor asked us to wait, if it said.
        period: the window a quota wall or rate limit names, if it names one.
        message: one short line for reports; API keys are redacted.
        headers: the response headers with lower-cased names, or ``{}``.
    """

    kind: FailureKind
    status: int | None
    retry_after: float | None
    period: Period | None
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)


# Class names (anywhere in an exception's MRO) -> kind, and the status the class
# implies when no status is attached. Order matters: for each exception, outermost
# first, the earliest entry whose name is among its classes wins.
_TYPE_TABLE: dict[str, tuple[FailureKind, int | None]] = {
    "ContextOverflowError": (FailureKind.CONTEXT_TOO_LONG, None),
    "ModelRateLimitError": (FailureKind.RATE_LIMIT, 429),
    "RateLimitError": (FailureKind.RATE_LIMIT, 429),
    "TooManyRequestsError": (FailureKind.RATE_LIMIT, 429),
    "ModelAuthenticationError": (FailureKind.AUTHENTICATION, 401),
    "AuthenticationError": (FailureKind.AUTHENTICATION, 401),
    "UnauthorizedError": (FailureKind.AUTHENTICATION, 401),
    "InvalidTokenError": (FailureKind.AUTHENTICATION, 498),
    "ModelPermissionDeniedError": (FailureKind.AUTHENTICATION, 403),
    "PermissionDeniedError": (FailureKind.AUTHENTICATION, 403),
    "ForbiddenError": (FailureKind.AUTHENTICATION, 403),
    "ModelTimeoutError": (FailureKind.TRANSIENT, None),
    "APITimeoutError": (FailureKind.TRANSIENT, None),
    "TimeoutException": (FailureKind.TRANSIENT, None),
    "TimeoutError": (FailureKind.TRANSIENT, None),
    "GatewayTimeoutError": (FailureKind.TRANSIENT, 504),
    "ServiceUnavailableError": (FailureKind.TRANSIENT, 503),
    "InternalServerError": (FailureKind.TRANSIENT, 500),
    "ModelAPIError": (FailureKind.TRANSIENT, None),
    "ServerError": (FailureKind.TRANSIENT, None),
    "ModelConnectionError": (FailureKind.TRANSIENT, None),
    "APIConnectionError": (FailureKind.TRANSIENT, None),
    "TransportError": (FailureKind.TRANSIENT, None),
    "ConnectionError": (FailureKind.TRANSIENT, None),
    "ModelInvalidRequestError": (FailureKind.BAD_REQUEST, 400),
    "BadRequestError": (FailureKind.BAD_REQUEST, 400),
    "UnprocessableEntityError": (FailureKind.BAD_REQUEST, 422),
    "ModelNotFoundError": (FailureKind.BAD_REQUEST, 404),
    "NotFoundError": (FailureKind.BAD_REQUEST, 404),
    "GoneError": (FailureKind.MODEL_UNAVAILABLE, 410),
}

# Statuses that are not "other 4xx = bad request". 498 is Cohere's invalid token, 499
# a request the gateway saw closed, 529 Anthropic's "overloaded".
_STATUS_KINDS: dict[int, FailureKind] = {
    401: FailureKind.AUTHENTICATION,
    402: FailureKind.QUOTA_EXHAUSTED,
    403: FailureKind.AUTHENTICATION,
    408: FailureKind.TRANSIENT,
    409: FailureKind.TRANSIENT,
    410: FailureKind.MODEL_UNAVAILABLE,
    413: FailureKind.CONTEXT_TOO_LONG,
    425: FailureKind.TRANSIENT,
    429: FailureKind.RATE_LIMIT,
    498: FailureKind.AUTHENTICATION,
    499: FailureKind.TRANSIENT,
}

_CONTEXT_RE = re.compile(
    r"context_length_exceeded|context[ _]length|context window|maximum context"
    r"|prompt is too long|too many tokens|input tokens exceed"
    r"|exceeds the maximum number of tokens|token limit|reduce the length"
    r"|maximum (?:input )?length|input is too long"
)
# Credits or paid quota used up; these never clear with a short wait.
_BILLING_RE = re.compile(
    r"insufficient[ _](?:quota|credits?|balance|funds)|credit balance is too low"
    r"|out of credits|payment required|billing[ _]hard[ _]limit"
)
# Gemini says "You exceeded your current quota" even for per-minute limits, so this
# wording only means a quota wall when nothing names a shorter window.
_QUOTA_WORDING_RE = re.compile(r"exceeded (?:your|the) current quota|quota exceeded")
# A model the vendor no longer (or never) serves on this key. A 404 alone is not enough:
# a wrong base URL answers 404 too, and that is the user's configuration, not the model.
_MODEL_GONE_RE = re.compile(
    r"model_not_found|model_decommissioned|has been decommissioned|no longer supported"
    r"|model[^.]{0,80}(?:does not exist|not found|is not supported for generatecontent)"
    r"|models/[^ ]+ is not found|not_found"
)
_AUTH_WORDING_RE = re.compile(
    r"api[ _]key not valid|invalid[ _]api[ _]key|api_key_invalid|incorrect api key"
)
# Longest window first: when a message names several, the longest one is the wall.
_PERIOD_RES: tuple[tuple[Period, re.Pattern[str]], ...] = (
    ("month", re.compile(r"per[ _-]?month|monthly|/ ?month\b|\bmonth(?:ly)? limit")),
    ("day", re.compile(r"per[ _-]?day|\((?:rpd|tpd)\)|daily|/ ?day\b|\bday limit")),
    ("hour", re.compile(r"per[ _-]?hour|hourly|/ ?hour\b")),
    ("minute", re.compile(r"per[ _-]?min(?:ute|\b)|\((?:rpm|tpm)\)|/ ?min(?:ute|\b)")),
)
_TRY_AGAIN_RE = re.compile(
    r"(?:try again|retry) (?:in|after) ([0-9][0-9.hmsuµn]*)"
    r"(?: ?(seconds?|secs?|minutes?|mins?|hours?)\b)?",
    re.IGNORECASE,
)
_WORD_UNITS = {"m": 60.0, "h": 3600.0}

# Things that look like credentials: vendor key prefixes, bearer tokens, and long
# base64/hex-ish runs mixing letters and digits (Cohere and Mistral keys are bare).
# One alternation, so a message is scanned once rather than once per shape.
_SECRET_RE = re.compile(
    r"\b(?:"
    # OpenAI-style (sk-, sk-proj-, rk-, pk-) and Cerebras (csk-).
    r"(?:c?sk|rk|pk)-[A-Za-z0-9_\-*.]{3,}"
    r"|gsk_[A-Za-z0-9_*]{3,}"
    # Hugging Face tokens; a shorter tail is a name ("hf_token"), not a token.
    r"|hf_[A-Za-z0-9]{12,}"
    r"|AIza[0-9A-Za-z_\-*]{10,}"
    r"|(?i:bearer)\s+\S+"
    r"|(?i:api[_-]?key|key|token)=[^\s&'\"]+"
    # Bare keys, but not model ids or URL paths, which hold "-", "/" and "_".
    r"|(?=[A-Za-z0-9]*\d)(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{32,}\b"
    r")"
)
_REDACTED = "[REDACTED]"
_MESSAGE_LIMIT = 240
_CHAIN_LIMIT = 10
_SEARCH_DEPTH = 8


def classify(exc: BaseException, *, now: float | None = None) -> Failure:
    """Say what kind of failure ``exc`` is and what the vendor asked for.

    Args:
        exc: the exception a vendor chat model (or its SDK, or httpx) raised.
        now: the current time in seconds since the epoch, used for HTTP-date
            ``retry-after`` values and epoch resets; defaults to ``time.time()``.

    Returns:
        The failure, never raising: anything unrecognised is ``FailureKind.UNKNOWN``.
    """
    chain = list(_walk_chain(exc))
    status = next(filter(None, map(_status_of, chain)), None)
    type_kind, type_status = _kind_from_types(chain)
    headers = _headers_of(chain)
    bodies = [body for error in chain if (body := _body_of(error)) is not None]
    text = " ".join([*map(_safe_str, chain), *map(_dump, bodies)]).lower()
    quota_ids = [str(value) for body in bodies for value in _find(body, "quotaId")]

    if status is None:
        status = type_status
    kind, period = _decide(status, type_kind, text, quota_ids)
    return Failure(
        kind=kind,
        status=status,
        retry_after=_retry_after(headers, bodies, text, now),
        period=period,
        message=_message(exc, chain, bodies, status),
        headers=headers,
    )


def _decide(
    status: int | None,
    type_kind: FailureKind | None,
    text: str,
    quota_ids: list[str],
) -> tuple[FailureKind, Period | None]:
    """Combine status, exception types and wording into a kind and a period."""
    if type_kind is FailureKind.CONTEXT_TOO_LONG:
        return type_kind, None
    if status is not None:
        kind = _STATUS_KINDS.get(status)
        if kind is None:
            kind = FailureKind.TRANSIENT if status >= 500 else FailureKind.BAD_REQUEST
    elif type_kind is not None:
        kind = type_kind
    else:
        return FailureKind.UNKNOWN, None

    if (
        kind is FailureKind.BAD_REQUEST
        and status in (None, 400, 404)
        and _MODEL_GONE_RE.search(text)
    ):
        # Groq answers a shut-down model with 400 model_decommissioned, OpenAI-style
        # vendors with 404 model_not_found, Gemini with 404 NOT_FOUND.
        return FailureKind.MODEL_UNAVAILABLE, None
    if kind is FailureKind.BAD_REQUEST and _CONTEXT_RE.search(text):
        return FailureKind.CONTEXT_TOO_LONG, None
    if kind is FailureKind.BAD_REQUEST and _AUTH_WORDING_RE.search(text):
        # Gemini answers a bad key with 400 INVALID_ARGUMENT "API key not valid".
        return FailureKind.AUTHENTICATION, None
    billing = _BILLING_RE.search(text) is not None
    if billing and (kind is FailureKind.BAD_REQUEST or status == 403):
        # Anthropic sends "credit balance is too low" as a 400, some gateways a 403.
        return FailureKind.QUOTA_EXHAUSTED, _period_in(text)
    if kind is FailureKind.QUOTA_EXHAUSTED:
        return kind, _period_in(text)
    if kind is not FailureKind.RATE_LIMIT:
        return kind, None

    # Gemini's quotaId is the most precise evidence; then the vendor's wording.
    period = _period_in(" ".join(quota_ids).lower()) or _period_in(text)
    if billing or period in ("day", "month"):
        return FailureKind.QUOTA_EXHAUSTED, period
    if period is None and _QUOTA_WORDING_RE.search(text):
        return FailureKind.QUOTA_EXHAUSTED, None
    return FailureKind.RATE_LIMIT, period


def _period_in(text: str) -> Period | None:
    """Return the longest window ``text`` names, if any."""
    return next((period for period, regex in _PERIOD_RES if regex.search(text)), None)


def _walk_chain(exc: BaseException) -> Iterator[BaseException]:
    """Yield ``exc`` and its causes/contexts, outermost first, each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < _CHAIN_LIMIT:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _kind_from_types(
    chain: list[BaseException],
) -> tuple[FailureKind | None, int | None]:
    """Look the chain's class names up in the type table, outermost first."""
    for error in chain:
        # Table order, not MRO order: OpenAIContextOverflowError is a BadRequestError
        # first and a ContextOverflowError second, and the latter is what it means.
        names = {cls.__name__ for cls in type(error).__mro__}
        for name, found in _TYPE_TABLE.items():
            if name in names:
                return found
    return None, None


def _attr(obj: object, name: str) -> object:
    """``getattr`` that survives properties raising (httpx's ``.request`` does)."""
    try:
        return getattr(obj, name, None)
    except Exception:  # noqa: BLE001 - any failure here just means "not there"
        return None


def _as_status(value: object) -> int | None:
    """Accept ``value`` as an HTTP error status only if it is an int in 400-599."""
    if isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599:
        return value
    return None


def _status_of(error: BaseException) -> int | None:
    """Find the HTTP status on one exception or its response."""
    # openai/groq/cohere: status_code; google.genai: code (openai's code is a str).
    for name in ("status_code", "status", "code", "http_status"):
        if (status := _as_status(_attr(error, name))) is not None:
            return status
    response = _attr(error, "response")
    for name in ("status_code", "status"):
        if (status := _as_status(_attr(response, name))) is not None:
            return status
    return None


def _headers_of(chain: list[BaseException]) -> dict[str, str]:
    """Merge the response headers found along the chain, outermost winning."""
    merged: dict[str, str] = {}
    for error in chain:
        for source in (
            _attr(_attr(error, "response"), "headers"),
            _attr(error, "headers"),
        ):
            items = _attr(source, "items")
            if not callable(items):
                continue
            try:
                pairs = list(items())
            except Exception:  # noqa: BLE001, S112 - unreadable headers are no headers
                continue
            for pair in pairs:
                if isinstance(pair, tuple) and len(pair) == 2:
                    key, value = pair
                    if isinstance(key, str) and isinstance(value, str):
                        merged.setdefault(key.lower(), value)
    return merged


def _body_of(error: BaseException) -> object:
    """Return the vendor's decoded error body carried by ``error``, if any."""
    # openai/groq/cohere: body; google.genai: details (the decoded response JSON).
    for name in ("body", "details"):
        body = _attr(error, name)
        if isinstance(body, (dict, list, str)) and body:
            return body
    # httpx.HTTPStatusError keeps only the response; an unread stream raises here.
    response = _attr(error, "response")
    for reader in ("json", "text"):
        method = _attr(response, reader)
        try:
            body = method() if callable(method) else method
        except Exception:  # noqa: BLE001, S112 - an unreadable body is no body
            continue
        if isinstance(body, (dict, list, str)) and body:
            return body
    return None


def _find(node: object, key: str, depth: int = 0) -> Iterator[object]:
    """Yield every value stored under ``key`` anywhere in a decoded JSON body."""
    if depth > _SEARCH_DEPTH:
        return
    if isinstance(node, dict):
        for name, value in node.items():
            if name == key:
                yield value
            yield from _find(value, key, depth + 1)
    elif isinstance(node, list):
        for item in node:
            yield from _find(item, key, depth + 1)


def _retry_after(
    headers: Mapping[str, str],
    bodies: list[object],
    text: str,
    now: float | None,
) -> float | None:
    """Find how long the vendor asked us to wait, from the most explicit signal."""
    current = time.time() if now is None else now
    candidates: tuple[Callable[[], float | None], ...] = (
        lambda: _retry_after_header(headers.get("retry-after"), current),
        lambda: _scaled(parse_duration(headers.get("retry-after-ms", "")), 1e-3),
        lambda: _max_or_none(
            limit.reset_after
            for limit in read_rate_limit_headers(headers, now=current)
            if limit.remaining == 0
        ),
        lambda: _max_or_none(
            parse_duration(value)
            for body in bodies
            for value in _find(body, "retryDelay")
            if isinstance(value, str)
        ),
        lambda: _try_again_in(text),
    )
    for candidate in candidates:
        seconds = candidate()
        if seconds is not None and math.isfinite(seconds):
            return max(0.0, seconds)
    return None


def _retry_after_header(value: str | None, now: float) -> float | None:
    """Read ``retry-after``: delta seconds or an HTTP date."""
    if value is None:
        return None
    seconds = parse_duration(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return when.timestamp() - now if when.tzinfo is not None else None


def _scaled(value: float | None, factor: float) -> float | None:
    """Multiply ``value`` by ``factor`` unless it is missing."""
    return None if value is None else value * factor


def _max_or_none(values: Iterable[float | None]) -> float | None:
    """Return the largest present value, or ``None`` when there is none."""
    present = [value for value in values if value is not None]
    return max(present) if present else None


def _try_again_in(text: str) -> float | None:
    """Read "Please try again in 7.66s" / "Please retry in 47.1s" from a message."""
    match = _TRY_AGAIN_RE.search(text)
    if match is None:
        return None
    seconds = parse_duration(match.group(1).rstrip("."))
    unit = (match.group(2) or "s")[0].lower()
    return _scaled(seconds, _WORD_UNITS.get(unit, 1.0))


def _message(
    exc: BaseException,
    chain: list[BaseException],
    bodies: list[object],
    status: int | None,
) -> str:
    """Build the one-line, redacted summary used in reports."""
    detail = next(
        (
            message
            for body in bodies
            for message in _find(body, "message")
            if isinstance(message, str) and message.strip()
        ),
        None,
    )
    if detail is None:
        detail = next(
            (
                message
                for error in chain
                if isinstance(message := _attr(error, "message"), str) and message.strip()
            ),
            None,
        )
    if detail is None:
        detail = next(filter(None, map(_safe_str, chain)), "")
    name = type(exc).__name__
    prefix = f"{name} ({status})" if status is not None else name
    line = redact(" ".join(detail.split()))
    text = f"{prefix}: {line}" if line else prefix
    if len(text) > _MESSAGE_LIMIT:
        text = text[: _MESSAGE_LIMIT - 1].rstrip() + "…"
    return text


def redact(text: str, keys: Iterable[str] = ()) -> str:
    """Replace anything in ``text`` that looks like an API key or token.

    Args:
        text: text that may echo a credential, e.g. OpenAI's "Incorrect API key
            provided: sk-...".
        keys: known keys: any run of 12 or more of their characters is replaced
            too, whatever its shape (see :mod:`~langchain_quota_router.quota.keyparts`).

    Returns:
        ``text`` with each suspected credential replaced by ``[REDACTED]``.
    """
    text = key_parts(keys).replace(text, _REDACTED)
    return _SECRET_RE.sub(_REDACTED, text)


def _safe_str(error: BaseException) -> str:
    """``str(error)`` that cannot raise."""
    try:
        return str(error)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the failure
        return ""


def _dump(body: object) -> str:
    """Render a decoded body as text for wording checks."""
    if isinstance(body, str):
        return body
    try:
        return json.dumps(body, default=str)
    except (TypeError, ValueError):
        return str(body)
