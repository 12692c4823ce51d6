"""Small text helpers shared by the command line and the demo: bars, durations, tables."""

from __future__ import annotations

import datetime as dt
import math
import shutil
from collections.abc import Iterable, Sequence

from langchain_quota_router.quota.limits import Limit
from langchain_quota_router.quota.status import LimitRow

#: Terminal width every table must fit where the terminal's is not asked for.
WIDTH = 80


def terminal_width() -> int:
    """The terminal's width (``$COLUMNS`` first, as ``shutil`` reads it), never
    under :data:`WIDTH`'s 80 columns: a pipe or an unknown terminal gets 80."""
    return max(WIDTH, shutil.get_terminal_size((WIDTH, 24)).columns)


_METRIC_SHORT = {
    "requests": "req",
    "tokens": "tok",
    "input_tokens": "in",
    "output_tokens": "out",
    "usd": "usd",
}
_WINDOW_SHORT = {"minute": "min", "hour": "h", "second": "s", "month": "mo"}


def bar(percent: float, width: int = 10) -> str:
    """A usage bar such as ``[#####.....]  52%``."""
    percent = max(0.0, min(100.0, percent))
    filled = round(percent / 100 * width)
    # Anything spent shows at least one mark; only a full limit shows a full bar.
    if percent > 0 and filled == 0:
        filled = 1
    if percent < 100 and filled == width:
        filled = width - 1
    return f"[{'#' * filled}{'.' * (width - filled)}] {percent:3.0f}%"


def duration(seconds: float | None) -> str:
    """A short duration: ``45s``, ``12m``, ``3h12m``, ``2d5h``; ``-`` for never."""
    if seconds is None or math.isinf(seconds):
        return "-"
    seconds = max(0, math.ceil(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h"


def days(value: float) -> str:
    """Days of service: ``forever`` for infinity, else one decimal."""
    if math.isinf(value):
        return "forever"
    if value >= 100:
        return f"{value:.0f} days"
    return f"{value:.1f} days"


def lasts(
    value: float, back_at: str | None = None, *, full: bool = False, now: float | None = None
) -> str:
    """How long a pool lasts: days, or for a pool full now when it comes back
    (``back 14:00 UTC`` within a day of ``now``, else the day: ``back 2026-02-01``;
    ``spent`` for a one-time credit used up)."""
    if not full:
        return days(value)
    if back_at is None:
        return "spent"
    moment = dt.datetime.fromisoformat(back_at).astimezone(dt.timezone.utc)
    if now is not None and 0 <= moment.timestamp() - now < 86_400:
        return f"back {moment:%H:%M} UTC"
    return f"back {moment:%Y-%m-%d}"


def count(value: int) -> str:
    """A count in at most five characters: ``950``, ``12k``, ``1.2M``."""
    if value < 10_000:
        return str(value)
    if value < 100_000:
        return f"{value / 1000:.1f}".rstrip("0").rstrip(".") + "k"
    if value < 1_000_000:
        return f"{value // 1000}k"
    return f"{value / 1_000_000:.1f}M"


def quantity(value: float, metric: str) -> str:
    """A limit's count in few characters: dollars as ``$0.42``, else :func:`count`."""
    if metric == "usd":
        if value >= 1000:
            return f"${value / 1000:.1f}k"
        return f"${value:.2f}" if value >= 0.01 or value == 0 else f"${value:.4f}"
    return count(int(value))


def short_limit(limit: Limit | LimitRow) -> str:
    """A limit's unit in few characters: ``req/day``, ``tok/min``, ``in/min``."""
    described = limit.window.describe() if isinstance(limit, Limit) else limit.window
    # A calendar window's zone does not fit a table cell: "day@America/Los_Angeles".
    unit = described.split("@", 1)[0]
    return f"{_METRIC_SHORT[limit.metric]}/{_WINDOW_SHORT.get(unit, unit)}"


def iso(timestamp: float | None) -> str:
    """An epoch time as ISO 8601 in UTC (seconds), or ``""`` for never."""
    if timestamp is None:
        return ""
    moment = dt.datetime.fromtimestamp(timestamp, dt.timezone.utc)
    return moment.isoformat(timespec="seconds")


def clip(text: str, width: int) -> str:
    """Cut ``text`` to ``width`` characters, marking the cut with ``~``."""
    return text if len(text) <= width else text[: max(0, width - 1)] + "~"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: Iterable[int] = ()) -> str:
    """Rows as aligned columns (two spaces apart); ``right`` columns align right."""
    rows = [list(r) for r in rows]
    aligned_right = set(right)
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = []
    for row in [list(headers), *rows]:
        cells = [
            cell.rjust(w) if i in aligned_right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
