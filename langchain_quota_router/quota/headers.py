"""Read what a vendor's rate-limit response headers say about remaining quota.

Vendors covered:

* Groq and OpenAI: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, the reset
  a Go-style duration (``2m59.56s``). Groq's requests headers count per day and its
  tokens headers per minute; OpenAI's both count per minute. The headers do not say
  which, so ``window`` stays ``None`` and the route's own limits decide.
* Cerebras and Mistral name the window in the header:
  ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}-{minute,hour,day,month}``
  (Cerebras' reset in seconds). Older Mistral answers send
  ``x-ratelimitbysize-{limit,remaining}-{minute,month}``, counted in tokens.
* OpenRouter: ``x-ratelimit-{limit,remaining,reset}`` counted in requests, the reset
  in epoch milliseconds.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = ["RateLimitHeader", "header_window", "parse_duration", "read_rate_limit_headers"]

Metric = Literal["requests", "tokens"]
Window = Literal["second", "minute", "hour", "day", "month"]

_UNIT_SECONDS = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    # Go prints microseconds with the micro sign; some encoders turn it into mu.
    "µs": 1e-6,
    "μs": 1e-6,
    "ns": 1e-9,
}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
# "ms" and the microsecond spellings must be tried before "m" and "s".
_PART = rf"({_NUMBER})(ms|us|µs|μs|ns|h|m|s)"
_DURATION_RE = re.compile(rf"(?:{_PART})+")
_PART_RE = re.compile(_PART)
_PLAIN_RE = re.compile(_NUMBER)

# Epoch values this large are milliseconds (2001-09-09 onwards), smaller ones seconds.
_EPOCH_MS_FLOOR = 1e12
_EPOCH_S_FLOOR = 1e9


@dataclass(frozen=True)
class RateLimitHeader:
    """One quota counter a vendor reported on a response.

    Attributes:
        metric: what the counter counts.
        limit: the counter's size, when the vendor said.
        remaining: how much is left (never negative).
        reset_after: seconds from now until the counter refills, when the vendor said.
        window: the window the counter covers, when the header names it (Mistral).
    """

    metric: Metric
    limit: int | None
    remaining: int
    reset_after: float | None
    window: Window | None = None


def parse_duration(text: str) -> float | None:
    """Turn a vendor's wait time into seconds.

    Accepts Go-style durations (``2m59.56s``, ``1h2m3s``, ``250ms``, ``7.66s``) as
    sent in ``x-ratelimit-reset-*`` headers, Google's protobuf durations (``47s``) and
    plain seconds (``120``, ``0.5``).

    Args:
        text: the duration as the vendor wrote it.

    Returns:
        The duration in seconds, or ``None`` when ``text`` is not a duration.
    """
    value = text.strip()
    if _PLAIN_RE.fullmatch(value):
        return float(value)
    if not _DURATION_RE.fullmatch(value):
        return None
    return sum(float(amount) * _UNIT_SECONDS[unit] for amount, unit in _PART_RE.findall(value))


def read_rate_limit_headers(
    headers: Mapping[str, str], *, now: float | None = None
) -> list[RateLimitHeader]:
    """List the quota counters a response's headers report.

    Never raises: a counter whose remaining value is missing or malformed is left out,
    and a malformed limit or reset becomes ``None``.

    Args:
        headers: the response headers, in any letter case.
        now: the current time in seconds since the epoch, used to turn OpenRouter's
            absolute reset into seconds from now; defaults to ``time.time()``.

    Returns:
        One entry per counter found, in the order requests, tokens, Mistral's windows,
        OpenRouter's.
    """
    lowered = _lower_keys(headers)
    found: list[RateLimitHeader] = []
    metrics: tuple[Metric, ...] = ("requests", "tokens")
    named: tuple[Window, ...] = ("minute", "hour", "day", "month")
    for metric in metrics:
        for window in named:
            remaining = _to_int(lowered.get(f"x-ratelimit-remaining-{metric}-{window}"))
            if remaining is None:
                continue
            reset = lowered.get(f"x-ratelimit-reset-{metric}-{window}")
            found.append(
                RateLimitHeader(
                    metric=metric,
                    limit=_to_int(lowered.get(f"x-ratelimit-limit-{metric}-{window}")),
                    remaining=remaining,
                    reset_after=parse_duration(reset) if reset is not None else None,
                    window=window,
                )
            )
    for metric in metrics:
        remaining = _to_int(lowered.get(f"x-ratelimit-remaining-{metric}"))
        if remaining is not None:
            reset = lowered.get(f"x-ratelimit-reset-{metric}")
            found.append(
                RateLimitHeader(
                    metric=metric,
                    limit=_to_int(lowered.get(f"x-ratelimit-limit-{metric}")),
                    remaining=remaining,
                    reset_after=parse_duration(reset) if reset is not None else None,
                )
            )
    windows: tuple[Window, ...] = ("second", "minute", "hour", "day", "month")
    for window in windows:
        remaining = _to_int(lowered.get(f"x-ratelimitbysize-remaining-{window}"))
        if remaining is not None:
            found.append(
                RateLimitHeader(
                    metric="tokens",
                    limit=_to_int(lowered.get(f"x-ratelimitbysize-limit-{window}")),
                    remaining=remaining,
                    reset_after=None,
                    window=window,
                )
            )
    remaining = _to_int(lowered.get("x-ratelimit-remaining"))
    if remaining is not None:
        found.append(
            RateLimitHeader(
                metric="requests",
                limit=_to_int(lowered.get("x-ratelimit-limit")),
                remaining=remaining,
                reset_after=_reset_from_epoch(lowered.get("x-ratelimit-reset"), now),
            )
        )
    return found


# What Groq's unnamed headers count: requests per day (its daily budget refills
# continuously, hence a rolling 24 h), tokens per minute. OpenAI's both count per minute.
_UNNAMED_WINDOWS: dict[str, dict[Metric, str]] = {
    "groq": {"requests": "24h", "tokens": "minute"},
    "openai": {"requests": "minute", "tokens": "minute"},
}


def header_window(header: RateLimitHeader, provider: str | None) -> str:
    """The window (as a limit string writes it) a header's counter covers.

    The header's own name says it for Cerebras and Mistral; the vendor's habit for
    Groq and OpenAI; otherwise the reset time tells the smallest window that fits.

    Args:
        header: the counter read from the headers.
        provider: the vendor (``"groq"``, ``"openai"``, ...), when known.

    Returns:
        ``"minute"``, ``"hour"``, ``"24h"``, ``"day"`` or ``"month"``.
    """
    if header.window is not None:
        return header.window
    known = _UNNAMED_WINDOWS.get(provider or "")
    if known is not None:
        return known[header.metric]
    reset = header.reset_after
    if reset is None or reset <= 60:
        return "minute"
    if reset <= 3600:
        return "hour"
    return "24h"


def _lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    """Copy ``headers`` with lower-cased keys, dropping anything that is not text."""
    try:
        items = list(headers.items())
    except Exception:  # noqa: BLE001 - a foreign mapping must not break a call
        return {}
    return {
        key.lower(): value.strip()
        for key, value in items
        if isinstance(key, str) and isinstance(value, str)
    }


def _to_int(value: str | None) -> int | None:
    """Read a counter value; negative counts (a vendor's overshoot) become 0."""
    if value is None or not _PLAIN_RE.fullmatch(value.removeprefix("-")):
        return None
    number = float(value)
    return max(0, math.floor(number)) if math.isfinite(number) else None


def _reset_from_epoch(value: str | None, now: float | None) -> float | None:
    """Turn OpenRouter's reset (epoch milliseconds) into seconds from now.

    Small numbers are taken as a duration, since some OpenAI-compatible servers send
    seconds-until-reset in the same header.
    """
    if value is None:
        return None
    number = parse_duration(value)
    if number is None:
        return None
    if number < _EPOCH_S_FLOOR:
        return number
    epoch = number / 1000.0 if number >= _EPOCH_MS_FLOOR else number
    current = time.time() if now is None else now
    return max(0.0, epoch - current)
