"""Limits: how much of what a key may spend in which window.

A limit string reads like the vendor's own page::

    "30/minute"                      30 requests in any 60 s (sliding)
    "12000 tokens/minute"            input + output tokens in any 60 s (sliding)
    "250000 input tokens/minute"     only input tokens (Gemini counts these)
    "1000/day"                       calendar day, UTC
    "20/day@America/Los_Angeles"     calendar day in that zone (Gemini: Pacific)
    "1000/month"                     calendar month, UTC unless a zone is given
    "100000 tokens/24h", "1/90s"     rolling windows of that length
    "5000 tokens/once"               a one-time credit that never resets
    "$5/month", "$0.50/day"          dollars spent (any window above); "5 usd/month" too
    "$20/once"                       a prepaid credit in dollars

Dollar limits are counted in whole micro-dollars (``Limit.units``): the ledger adds
integers, exactly, on every backend. ``Limit.amount`` stays in dollars, as written.

Sliding and rolling windows are counted in buckets of 1/60 of the window (at least one
second). A bucket that overlaps the window counts whole, so the router may be a little
early to say "full" but never lets more than the limit through in any window.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from langchain_quota_router.quota.errors import ConfigurationError

Metric = Literal["requests", "tokens", "input_tokens", "output_tokens", "usd"]
WindowKind = Literal["sliding", "calendar", "once"]

MAX_AMOUNT = 2**53
"""The largest count a limit (or a token budget) may name: the Redis ledger counts in
Lua, whose numbers are doubles, exact up to 2**53. No vendor's quota comes near."""

MAX_WINDOW_SECONDS = 10 * 366 * 86_400
"""The longest rolling window, about ten years; ``/once`` is a credit that never
resets. Longer spans would overflow the arithmetic on epoch seconds."""

# More digits than this cannot be at most MAX_AMOUNT (16 digits) or a window count
# at most MAX_WINDOW_SECONDS: refuse them before int() reads thousands of digits.
_MAX_DIGITS = 20

#: Ledger units per dollar: dollar limits and costs are counted in micro-dollars.
MICRO = 1_000_000

_UNITS: dict[str, tuple[WindowKind, int]] = {
    "s": ("sliding", 1),
    "sec": ("sliding", 1),
    "second": ("sliding", 1),
    "m": ("sliding", 60),
    "min": ("sliding", 60),
    "minute": ("sliding", 60),
    "h": ("sliding", 3600),
    "hour": ("sliding", 3600),
    "day": ("calendar", 0),
    "month": ("calendar", 0),
    "once": ("once", 0),
}
_METRICS: dict[str, Metric] = {
    "": "requests",
    "request": "requests",
    "call": "requests",
    "token": "tokens",
    "input token": "input_tokens",
    "output token": "output_tokens",
    "usd": "usd",
    "dollar": "usd",
}
#: A whole number as limits write it: ASCII digits, grouped by "_" or ",".
_WHOLE = r"-?\d+(?:[_,]\d+)*"
_WHOLE_RE = re.compile(_WHOLE, re.ASCII)

_LIMIT_RE = re.compile(
    rf"""^\s*
    (?P<dollar>\$\s*)?
    (?P<amount>{_WHOLE}(?:\.\d+)?)\s*
    (?P<metric>(?:input\s+|output\s+)?(?:requests?|calls?|tokens?)|usd|dollars?)?\s*
    /\s*
    (?P<count>\d+(?:\.\d+)?)?\s*
    (?P<unit>[a-z]+)
    (?:\s*@\s*(?P<zone>[A-Za-z0-9_+\-/]+))?
    \s*$""",
    # ASCII: digits of other scripts (Arabic-Indic, full-width) are not a limit anyone
    # meant to write.
    re.VERBOSE | re.IGNORECASE | re.ASCII,
)


#: The last bucket a window's range reaches (see :meth:`Window.bucket_range`): as
#: large as a Lua number (a double) in a Redis script still holds exactly.
LATEST_BUCKET = 2**53 - 1


@dataclass(frozen=True)
class Window:
    """The span a limit counts over.

    Attributes:
        kind: ``"sliding"`` (minute, hour, any ``N/90s``-style rolling span),
            ``"calendar"`` (day or month starting at midnight in ``zone``) or
            ``"once"`` (a credit that never resets).
        seconds: the length of a sliding window.
        unit: ``"day"`` or ``"month"`` for calendar windows.
        zone: the IANA zone calendar windows start in.
    """

    kind: WindowKind
    seconds: int = 0
    unit: Literal["day", "month", ""] = ""
    zone: str = "UTC"
    _tz: ZoneInfo | None = field(default=None, init=False, repr=False, compare=False)
    # The calendar window last computed: every call in it reuses it.
    _span: tuple[float, float] = field(default=(0.0, 0.0), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in ("sliding", "calendar", "once"):
            msg = f"unknown limit window kind {self.kind!r}"
            raise ConfigurationError(msg)
        if self.kind == "sliding" and (
            isinstance(self.seconds, bool)
            or not isinstance(self.seconds, int)
            or not 1 <= self.seconds <= MAX_WINDOW_SECONDS
        ):
            msg = (
                f"a rolling window must be a whole number of seconds from 1 to "
                f"{MAX_WINDOW_SECONDS} (about ten years), got {self.seconds!r}"
            )
            raise ConfigurationError(msg)
        if self.kind == "calendar":
            if self.unit not in ("day", "month"):
                msg = f"a calendar window is a 'day' or a 'month', got {self.unit!r}"
                raise ConfigurationError(msg)
            try:
                object.__setattr__(self, "_tz", ZoneInfo(self.zone))
            except (ZoneInfoNotFoundError, ValueError, OSError, TypeError):
                msg = f"unknown time zone {self.zone!r} in a limit window"
                raise ConfigurationError(msg) from None

    @functools.cached_property  # read on every reservation
    def series(self) -> str:
        """A name for this window's counters, shared by limits with the same window."""
        if self.kind == "sliding":
            return f"s{self.seconds}"
        if self.kind == "calendar":
            return f"{self.unit}@{self.zone}"
        return "once"

    @functools.cached_property
    def bucket_width(self) -> int:
        """Seconds per counter bucket of a sliding window."""
        return max(1, self.seconds // 60)

    def bucket(self, now: float) -> int:
        """The bucket a spend at ``now`` is counted in."""
        if self.kind == "sliding":
            return math.floor(now / self.bucket_width)
        if self.kind == "calendar":
            return int(self.bounds(now)[0])
        return 0

    def bucket_range(self, now: float) -> tuple[int, int]:
        """The first and last bucket (inclusive) that count at ``now``.

        Every bucket from the window's start on counts, including buckets stamped
        later than ``now``: a clock that steps back (NTP, a VM restored, a host
        whose clock disagrees with the fleet's) must never free quota spent at
        "later" times, so those stay counted until the clock passes them again.
        """
        if self.kind == "sliding":
            return math.floor((now - self.seconds) / self.bucket_width), LATEST_BUCKET
        if self.kind == "calendar":
            return self.bucket(now), LATEST_BUCKET
        return 0, 0

    def bounds(self, now: float) -> tuple[float, float]:
        """Start and end (epoch seconds) of the calendar window holding ``now``."""
        span = self._span
        if span[0] <= now < span[1]:
            return span
        span = self._compute_bounds(now)
        object.__setattr__(self, "_span", span)
        return span

    def _compute_bounds(self, now: float) -> tuple[float, float]:
        assert self._tz is not None
        local = dt.datetime.fromtimestamp(now, self._tz)
        if self.unit == "day":
            start = dt.datetime(local.year, local.month, local.day, tzinfo=self._tz)
            nxt = local.date() + dt.timedelta(days=1)
            end = dt.datetime(nxt.year, nxt.month, nxt.day, tzinfo=self._tz)
        else:
            start = dt.datetime(local.year, local.month, 1, tzinfo=self._tz)
            year, month = divmod(local.month, 12)
            end = dt.datetime(local.year + year, month + 1, 1, tzinfo=self._tz)
        return start.timestamp(), end.timestamp()

    def frees_at(self, now: float, buckets: list[tuple[int, int]], excess: int) -> float | None:
        """When at least ``excess`` of what is counted now will have left the window.

        Args:
            now: the current time.
            buckets: ``(bucket, amount)`` pairs currently in the window.
            excess: how much must leave the window before the demand fits.

        Returns:
            Epoch seconds, or ``None`` for a one-time credit (it never frees up).
        """
        if self.kind == "once":
            return None
        if self.kind == "calendar":
            return self.bounds(now)[1]
        width = self.bucket_width
        freed = 0
        for bucket, amount in sorted(buckets):
            freed += amount
            if freed >= excess:
                # The bucket stops overlapping the window once its end is a full
                # window behind us.
                return float((bucket + 1) * width + self.seconds)
        return now + self.seconds

    def describe(self) -> str:
        """The window as a limit string writes it."""
        if self.kind == "once":
            return "once"
        if self.kind == "calendar":
            return self.unit if self.zone == "UTC" else f"{self.unit}@{self.zone}"
        for name, secs in (("hour", 3600), ("minute", 60), ("second", 1)):
            if self.seconds == secs:
                return name
        if self.seconds % 3600 == 0:
            return f"{self.seconds // 3600}h"
        if self.seconds % 60 == 0:
            return f"{self.seconds // 60}m"
        return f"{self.seconds}s"


@dataclass(frozen=True)
class Limit:
    """At most ``amount`` of ``metric`` in each ``window``.

    Build one from a string with :meth:`parse` (``Limit.parse("30/minute")``,
    ``Limit.parse("$5/month")``) or directly: ``Limit(30, "requests", Window("sliding",
    60))``, ``Limit(5, "usd", Window("calendar", unit="month"))`` (five dollars).

    ``amount`` is in the metric's own unit (dollars for ``"usd"``); the ledger counts
    :attr:`units`, whole numbers (micro-dollars for ``"usd"``).
    """

    amount: int | float
    metric: Metric = "requests"
    window: Window = field(default_factory=lambda: Window("sliding", 60))
    _units: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.metric not in _METRICS.values():
            msg = f"unknown limit metric {self.metric!r}"
            raise ConfigurationError(msg)
        amount = self.amount
        if self.metric == "usd":
            if (
                isinstance(amount, bool)
                or not isinstance(amount, (int, float))
                or not math.isfinite(amount)
            ):
                msg = f"a dollar limit's amount must be a number of dollars, got {amount!r}"
                raise ConfigurationError(msg)
            units = to_micro(amount)
        else:
            if isinstance(amount, bool) or not isinstance(amount, int):
                msg = f"limit amount must be an int, got {amount!r}"
                raise ConfigurationError(msg)
            units = amount
        if not isinstance(self.window, Window):
            msg = f"a limit's window must be a Window, got {self.window!r}"
            raise ConfigurationError(msg)
        if units < 0 or amount < 0:
            msg = f"limit {self.describe()!r} is negative"
            raise ConfigurationError(msg)
        if units > MAX_AMOUNT:
            msg = f"limit {self.describe()!r} is too large (at most {MAX_AMOUNT} units)"
            raise ConfigurationError(msg)
        object.__setattr__(self, "_units", units)

    @property
    def units(self) -> int:
        """The limit in the ledger's whole units: ``amount``, or micro-dollars for a
        dollar limit. Every comparison with what the ledger counts uses this."""
        return self._units

    def shown(self, units: int) -> int | float:
        """A count of this limit's ledger units in its own unit (dollars for ``usd``)."""
        return units / MICRO if self.metric == "usd" else units

    def show(self, units: int) -> str:
        """A count of this limit's units as people read it (``"$0.003"``, ``"3000"``)."""
        return dollars(units) if self.metric == "usd" else str(units)

    @functools.cached_property  # read on every reservation
    def series(self) -> str:
        """The name of this limit's counters in a pool."""
        return f"{self.metric}:{self.window.series}"

    @classmethod
    def parse(cls, text: str | Limit) -> Limit:
        """Read a limit string such as ``"12000 tokens/minute"`` or ``"$5/month"``.

        Raises:
            ConfigurationError: naming the string when it does not parse.
        """
        if isinstance(text, Limit):
            return text
        if not isinstance(text, str):
            msg = f"a limit must be a string like '30/minute' or a Limit, got {text!r}"
            raise ConfigurationError(msg)
        match = _LIMIT_RE.match(text)
        if match is None:
            msg = (
                f"cannot parse limit {text!r}: expected forms like '30/minute', "
                "'12000 tokens/minute', '1000/day@America/Los_Angeles', "
                "'100000 tokens/24h', '5000 tokens/once' or '$5/month'"
            )
            raise ConfigurationError(msg)
        if match["amount"].startswith("-"):
            msg = f"limit {text!r} is negative"
            raise ConfigurationError(msg)
        metric_word = re.sub(r"\s+", " ", (match["metric"] or "").lower())
        metric = _METRICS[metric_word.rstrip("s")] if metric_word != "usd" else "usd"
        if match["dollar"] is not None:
            if metric_word:
                msg = f"cannot parse limit {text!r}: write '$5/month' or '5 usd/month'"
                raise ConfigurationError(msg)
            metric = "usd"
        amount: int | float
        if metric == "usd":
            amount = parse_dollars(match["amount"], text)
        else:
            if "." in match["amount"]:
                msg = f"limit {text!r}: only dollar limits take a fraction"
                raise ConfigurationError(msg)
            whole = parse_whole(match["amount"])
            if whole is None or whole > MAX_AMOUNT:
                msg = f"limit {text!r} is too large (at most {MAX_AMOUNT})"
                raise ConfigurationError(msg)
            amount = whole
        unit = match["unit"].lower()
        if unit not in _UNITS and unit.endswith("s") and unit[:-1] in _UNITS:
            unit = unit[:-1]
        if unit not in _UNITS:
            msg = (
                f"cannot parse limit {text!r}: unknown window {match['unit']!r}; "
                f"windows are {', '.join(sorted(_UNITS))} (plurals too), "
                "or a span such as 24h, 90s, 15m"
            )
            raise ConfigurationError(msg)
        kind, unit_seconds = _UNITS[unit]
        count = match["count"]
        zone = match["zone"]
        if zone is not None and kind != "calendar":
            msg = f"limit {text!r}: only day and month windows take a time zone"
            raise ConfigurationError(msg)
        if kind == "sliding":
            # Exact arithmetic: a float overflows on a count of 400 digits and
            # rounds "10/0.1h"; a count longer than any sensible span is refused
            # before int() reads thousands of digits.
            sensible = count is None or len(count) <= 2 * _MAX_DIGITS
            seconds = Fraction(count or 1) * unit_seconds if sensible else Fraction(0)
            if not sensible or seconds.denominator != 1 or not 1 <= seconds <= MAX_WINDOW_SECONDS:
                msg = (
                    f"limit {text!r}: a rolling window must be a whole number of seconds "
                    f"from 1s to {MAX_WINDOW_SECONDS // 3600}h (about ten years); "
                    "'/once' is a credit that never resets"
                )
                raise ConfigurationError(msg)
            window = Window("sliding", seconds=int(seconds))
        elif count is not None:
            # "N/2day" is ambiguous (two calendar days? 48 rolling hours?): make the
            # user say which.
            msg = (
                f"limit {text!r}: a {unit} window takes no count; write rolling spans "
                "in hours ('100/48h') or use '/day' for the calendar day"
            )
            raise ConfigurationError(msg)
        elif kind == "calendar":
            window = Window(
                "calendar", unit="day" if unit == "day" else "month", zone=zone or "UTC"
            )
        else:
            window = Window("once")
        try:
            return cls(amount, metric, window)
        except ConfigurationError as exc:
            msg = f"limit {text!r}: {exc}"
            raise ConfigurationError(msg) from None

    def describe(self) -> str:
        """The limit as a string :meth:`parse` reads back."""
        if self.metric == "usd":
            return f"{dollars(to_micro(self.amount))}/{self.window.describe()}"
        noun = {
            "requests": "",
            "tokens": " tokens",
            "input_tokens": " input tokens",
            "output_tokens": " output tokens",
        }[self.metric]
        return f"{self.amount}{noun}/{self.window.describe()}"

    def __str__(self) -> str:
        return self.describe()


def to_micro(dollars_: float) -> int:
    """Dollars as whole micro-dollars (the ledger's unit), rounded to the nearest;
    read through its shortest decimal form, so ``0.1`` is exactly 100,000."""
    if not math.isfinite(dollars_):
        msg = f"not a number of dollars: {dollars_!r}"
        raise ConfigurationError(msg)
    return int((Decimal(repr(dollars_)) * MICRO).to_integral_value(ROUND_HALF_UP))


def dollars(units: int) -> str:
    """Micro-dollars as people write dollars: ``"$5"``, ``"$0.50"``, ``"$0.003"``."""
    sign = "-" if units < 0 else ""
    whole, micro = divmod(abs(units), MICRO)
    if not micro:
        return f"{sign}${whole}"
    cents = f"{micro:06d}".rstrip("0")
    return f"{sign}${whole}.{cents:0<2}"


def parse_dollars(text: str, where: str) -> int | float:
    """A dollar amount as a limit string writes it (``"5"``, ``"0.50"``, ``"1,000"``):
    an int when whole, else a float; finer than a micro-dollar is refused."""
    head, _, tail = text.partition(".")
    whole = parse_whole(head)
    if whole is None or whole > MAX_AMOUNT // MICRO or len(tail) > 2 * _MAX_DIGITS:
        msg = f"limit {where!r}: not a dollar amount the ledger can count"
        raise ConfigurationError(msg)
    if not tail.rstrip("0"):
        return whole
    if len(tail.rstrip("0")) > 6:
        msg = f"limit {where!r}: dollar amounts are counted to the micro-dollar (6 decimals)"
        raise ConfigurationError(msg)
    return float(f"{whole}.{tail}")


def parse_whole(text: str) -> int | None:
    """A whole number written as a limit's amount is (``"1_000"``, ``"1,000"``,
    ``"-5"``; ASCII digits only), or ``None`` when ``text`` is not one or has more
    digits than any limit could (so ``int()`` never reads thousands of them).

    The one grammar for numbers in limit strings, ``.env`` files and the environment.
    """
    if _WHOLE_RE.fullmatch(text) is None:
        return None
    digits = text.replace("_", "").replace(",", "")
    if len(digits.lstrip("-").lstrip("0")) > _MAX_DIGITS:
        return None
    return int(digits)


def parse_limits(limits: object, *, owner: str) -> tuple[Limit, ...]:
    """Read a route's ``limits=`` argument.

    Args:
        limits: ``None``, one limit string or ``Limit``, a comma-separated string
            of limits, or a sequence of strings and ``Limit`` objects.
        owner: who the limits belong to, for error messages.
    """
    if limits is None:
        return ()
    if isinstance(limits, str):
        # One string may list several, as GROQ_LIMITS does: "30/minute, 1000/day".
        items: object = [part.strip() for part in limits.split(",") if part.strip()]
    else:
        items = [limits] if isinstance(limits, Limit) else limits
    if not isinstance(items, (list, tuple)):
        msg = f"{owner}: limits must be a list of strings or Limit objects"
        raise ConfigurationError(msg)
    parsed = []
    for item in items:
        try:
            parsed.append(Limit.parse(item))
        except ConfigurationError as exc:
            msg = f"{owner}: {exc}"
            raise ConfigurationError(msg) from None
    return tuple(parsed)
