"""Per-key quota windows the simulator enforces, the way each vendor counts."""

from __future__ import annotations

import datetime as dt
from collections import deque
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

from ._types import SimKey

LimitName = Literal["rpm", "rpd", "tpm", "tpd"]

MINUTE = 60.0
PACIFIC = ZoneInfo("America/Los_Angeles")


def go_duration(seconds: float) -> str:
    """Format seconds the way Go's ``time.Duration`` prints (``2m59.56s``, ``20ms``).

    OpenAI and Groq send their ``x-ratelimit-reset-*`` headers in this format.
    """
    millis = round(max(0.0, seconds) * 1000)
    if millis == 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: which limit, how full, and when room comes back."""

    limit_name: LimitName
    limit: int
    used: int
    requested: int
    retry_after: float


@dataclass(frozen=True)
class Usage:
    """A key's usage at one moment, for rate-limit headers."""

    minute_requests: int
    minute_tokens: int
    day_requests: int
    day_tokens: int
    minute_requests_reset: float  # seconds until a request slot frees
    minute_tokens_reset: float  # seconds until some tokens free
    day_reset: float  # seconds until the calendar day rolls over


class KeyQuota:
    """The windows of one key: a 60 s sliding log and a calendar-day counter.

    Not thread-safe: the simulator calls it under its lock.
    """

    def __init__(self, spec: SimKey) -> None:
        self.spec = spec
        # Gemini's daily quota resets at midnight Pacific time; the others at UTC.
        self.zone: dt.tzinfo = PACIFIC if spec.vendor == "gemini" else dt.timezone.utc
        self._minute: deque[tuple[float, int]] = deque()
        self._day: dt.date | None = None
        self._day_requests = 0
        self._day_tokens = 0

    def _roll(self, now: float) -> None:
        while self._minute and self._minute[0][0] <= now - MINUTE:
            self._minute.popleft()
        today = dt.datetime.fromtimestamp(now, self.zone).date()
        if today != self._day:
            self._day, self._day_requests, self._day_tokens = today, 0, 0

    def _to_midnight(self, now: float) -> float:
        today = dt.datetime.fromtimestamp(now, self.zone).date()
        midnight = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(0), tzinfo=self.zone)
        return midnight.timestamp() - now

    def check(self, now: float, tokens: int) -> Refusal | None:
        """Return why a request of ``tokens`` counted tokens is refused, or None."""
        self._roll(now)
        spec = self.spec
        if spec.rpd is not None and self._day_requests + 1 > spec.rpd:
            return Refusal("rpd", spec.rpd, self._day_requests, 1, self._to_midnight(now))
        if spec.tpd is not None and self._day_tokens + tokens > spec.tpd:
            return Refusal("tpd", spec.tpd, self._day_tokens, tokens, self._to_midnight(now))
        entries = list(self._minute)
        if spec.rpm is not None and len(entries) + 1 > spec.rpm:
            # The request fits once enough of the oldest entries slide out.
            freeing = entries[len(entries) - spec.rpm] if spec.rpm > 0 else None
            wait = freeing[0] + MINUTE - now if freeing else MINUTE
            return Refusal("rpm", spec.rpm, len(entries), 1, wait)
        used = sum(t for _, t in entries)
        if spec.tpm is not None and used + tokens > spec.tpm:
            wait = MINUTE
            remaining = used
            for stamp, spent in entries:
                remaining -= spent
                if remaining + tokens <= spec.tpm:
                    wait = stamp + MINUTE - now
                    break
            return Refusal("tpm", spec.tpm, used, tokens, wait)
        return None

    def record(self, now: float, tokens: int) -> None:
        """Count one served request that used ``tokens`` counted tokens."""
        self._roll(now)
        self._minute.append((now, tokens))
        self._day_requests += 1
        self._day_tokens += tokens

    def usage(self, now: float) -> Usage:
        """Return the key's usage now."""
        self._roll(now)
        oldest = self._minute[0][0] + MINUTE - now if self._minute else 0.0
        return Usage(
            minute_requests=len(self._minute),
            minute_tokens=sum(t for _, t in self._minute),
            day_requests=self._day_requests,
            day_tokens=self._day_tokens,
            minute_requests_reset=oldest,
            minute_tokens_reset=oldest,
            day_reset=self._to_midnight(now),
        )
