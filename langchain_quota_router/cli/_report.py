"""What ``status`` and ``report`` show: a router's pools, limits, holds, lifespan,
the fleet's counters and each pool's use over time.

Everything is read from the router's ledger, so a report made by a fresh process
shows what every process sharing that ledger has spent and counted. The data is the
one status model (:mod:`langchain_quota_router.quota.status`): ``report --json`` is
exactly what the status page's ``/status.json`` gives. ``report --history`` gives
``router.history()``'s rows instead (``--csv``: one row per time, pool and limit).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import textwrap
from typing import TYPE_CHECKING, Any

from langchain_quota_router.cli import _format as fmt
from langchain_quota_router.quota.status import (
    amount_text,
    over_text,
    read_status,
    status_snapshot,
    tightest,
)

if TYPE_CHECKING:
    from langchain_quota_router.chat.model import QuotaRoutedChatModel


def _iso_minutes(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    moment = dt.datetime.fromtimestamp(timestamp, dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%MZ")


def _local_time(timestamp: float, now: float) -> str:
    moment = dt.datetime.fromtimestamp(timestamp)
    if timestamp - now < 86_400:
        return moment.strftime("%H:%M")
    return moment.strftime("%m-%d %H:%M")


# ---------------------------------------------------------------- status


def status_text(router: QuotaRoutedChatModel) -> str:
    """One line per route: its pool's tightest limit, a bar, reset time and state."""
    status = read_status(router)
    now = status.now
    limits = status.limits
    rows: list[list[str]] = []
    legend = False
    for route in status.routes:
        top = tightest(limits, route.pool)
        state = route.state
        if state.kind == "blocked" and state.until is not None:
            shown = f"blocked {_local_time(state.until, now)}"
            legend = True
        elif state.kind == "unavailable":
            shown = "unavailable (model gone)"
        else:
            shown = state.kind
        if top is None:
            rows.append([route.name, route.pool, "no limits", "", "", shown])
            continue
        rows.append(
            [
                route.name,
                route.pool,
                f"{fmt.quantity(top.used, top.metric)}/{fmt.quantity(top.amount, top.metric)} "
                f"{fmt.short_limit(top)}",
                fmt.bar(top.percent),
                fmt.duration(None if top.resets_at is None else top.resets_at - now),
                shown,
            ]
        )
    headers = ["ROUTE", "POOL", "USED/LIMIT", "USAGE", "RESETS", "STATE"]
    width = fmt.terminal_width()
    _fit_names(headers, rows, width)
    text = fmt.table(headers, rows)
    for row in limits:
        if row.over:  # a count the bar cannot show: say how much and why
            line = f"{row.pool} {row.limit}: {over_text(row.as_dict())}"
            text += "\n" + textwrap.fill(line, width, subsequent_indent="  ")
    if legend:
        text += "\nblocked HH:MM: resting after a vendor error or quota wall until then (local)"
    fleet = status.stats.get("fleet")
    if fleet:
        text += "\n" + fmt.clip(_fleet_line(fleet), width)
    return text


def _fleet_line(fleet: dict[str, Any]) -> str:
    """The fleet's counters in one line."""
    return (
        f"fleet: {fleet['total_calls']} calls, {fleet['fallbacks']} fallbacks, "
        f"{fleet['errors']} errors, {fleet['rate_limited']} vendor 429s, "
        f"{fleet['refused']} kept out, {fleet['cache_hits']} cache hits"
    )


def _fit_names(headers: list[str], rows: list[list[str]], width: int = fmt.WIDTH) -> None:
    """Clip the route and pool columns (never the others: a state is read whole)
    so the table fits ``width`` columns."""
    fixed = sum(max([len(headers[i])] + [len(r[i]) for r in rows]) for i in range(2, len(headers)))
    room = width - fixed - 2 * (len(headers) - 1)
    route_width = max([len(headers[0])] + [len(r[0]) for r in rows])
    pool_width = max([len(headers[1])] + [len(r[1]) for r in rows])
    if route_width + pool_width <= room:
        return
    # Route names matter more than pool names: they get 60 % of the room.
    route_cap = max(len(headers[0]), min(route_width, room * 3 // 5))
    pool_cap = max(len(headers[1]), room - min(route_width, route_cap))
    for row in rows:
        row[0] = fmt.clip(row[0], route_cap)
        row[1] = fmt.clip(row[1], pool_cap)


# ---------------------------------------------------------------- report


def report_data(router: QuotaRoutedChatModel, tokens_per_day: int | None = None) -> dict[str, Any]:
    """Everything the report shows, as plain data (what ``--json`` prints): the
    status page's ``/status.json``, with the lifespan at ``tokens_per_day``."""
    return status_snapshot(router, tokens_per_day=tokens_per_day)


def report_json(data: dict[str, Any]) -> str:
    """The report as indented JSON (``"inf"`` for a lifespan without end)."""
    return json.dumps(data, indent=2)


CSV_COLUMNS = (
    "pool",
    "routes",
    "limit",
    "metric",
    "window",
    "used",
    "amount",
    "remaining",
    "percent",
    "resets_at",
    "state",
    "lifespan_days",
)


def report_csv(data: dict[str, Any]) -> str:
    """One row per pool and limit, with the pool's state and lifespan repeated."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    days = (data["lifespan"] or {}).get("days") or {}
    for pool in data["pools"]:
        states = sorted({r["state"] for r in data["routes"] if r["pool"] == pool["pool"]} or {"ok"})
        lasts = days.get(pool["pool"], "")
        for limit in pool["limits"] or [None]:
            base = [pool["pool"], " ".join(pool["routes"])]
            if limit is None:
                values = ["", "", "", "", "", "", "", ""]
            else:
                values = [
                    limit["limit"],
                    limit["metric"],
                    limit["window"],
                    limit["used"],
                    limit["amount"],
                    limit["remaining"],
                    limit["percent"],
                    limit["resets_at"] or "",
                ]
            writer.writerow([*base, *values, "/".join(states), lasts])
    return buffer.getvalue()


def report_text(data: dict[str, Any]) -> str:
    """The report for people: routes, each pool's limits, holds, lifespan."""
    out = [f"quota-router report  {data['now']}", f"ledger  {data['ledger']}", ""]
    # Widths that add up to under 80 columns whatever the names.
    rows = [
        [
            fmt.clip(r["name"], 18),
            fmt.clip(f"{r['provider']}:{r['model']}", 24),
            fmt.clip(r["pool"], 16),
            str(r["priority"]),
            r["state"],
        ]
        for r in data["routes"]
    ]
    out.append(fmt.table(["ROUTE", "MODEL", "POOL", "PRIO", "STATE"], rows, right=[3]))
    for pool in data["pools"]:
        routes = ", ".join(pool["routes"])
        out.append("")
        out.append(fmt.clip(f"pool {pool['pool']}  (routes: {routes})", fmt.WIDTH))
        if not pool["limits"]:
            out.append("  no limits")
            continue
        limit_rows = [
            [
                fmt.clip(limit["limit"], 26),
                amount_text(limit["used"], limit["metric"]),
                amount_text(limit["remaining"], limit["metric"]),
                f"{limit['percent']:.0f}%",
                _iso_minutes(_epoch(limit["resets_at"])),
            ]
            for limit in pool["limits"]
        ]
        headers = ["LIMIT", "USED", "REMAINING", "USED %", "RESETS AT (UTC)"]
        table = fmt.table(headers, limit_rows, right=[1, 2, 3])
        out.extend("  " + line for line in table.splitlines())
        out.extend(
            textwrap.fill(
                f"{limit['limit']}: {over_text(limit)}",
                fmt.WIDTH,
                initial_indent="  ",
                subsequent_indent="    ",
            )
            for limit in pool["limits"]
            if limit.get("over")
        )
    fleet = data["stats"].get("fleet")
    if fleet:
        out.append("")
        out.append("fleet counters (every router counting in this ledger)")
        fleet_rows = [
            [
                fmt.clip(name, 13),
                *(
                    fmt.count(row[field])
                    for field in (
                        "calls",
                        "fallbacks",
                        "errors",
                        "rate_limited",
                        "refused",
                        "cache_hits",
                    )
                ),
                fmt.count(row["tokens_in"] + row["tokens_out"]),
                _dollars(row["cost"]),
            ]
            for name, row in fleet["routes"].items()
        ]
        headers = ["ROUTE", "CALLS", "FALLBK", "ERRORS", "429S", "KEPT", "HITS", "TOKENS", "COST"]
        table = fmt.table(headers, fleet_rows, right=list(range(1, 9)))
        out.extend("  " + line for line in table.splitlines())
    out.append("")
    if data["holds"]:
        out.append("holds")
        for hold in data["holds"]:
            who = ", ".join(hold["routes"])
            when = f" until {_iso_minutes(_epoch(hold['until']))}" if hold["until"] else ""
            line = f"  {hold['kind']} {who}{when}: {hold['reason']}"
            out.append(fmt.clip(line, fmt.WIDTH))
    else:
        out.append("holds  none (no route is blocked or disabled)")
    if data["lifespan"] is not None:
        span = data["lifespan"]
        out.append("")
        out.append(f"lifespan at {span['tokens_per_day']} tokens/day")
        if span["days"] is None:
            out.append("  not available in this version")
        else:
            back = span.get("back_at") or {}
            now = data.get("now_epoch")
            for name, days in span["days"].items():
                label = "all pools together" if name == "all" else name
                value = math.inf if days == "inf" else float(days)
                lasts = fmt.lasts(value, back.get(name), full=name in back, now=now)
                out.append(fmt.clip(f"  {label:<30} {lasts}", fmt.WIDTH))
    return "\n".join(out)


def _dollars(cost: float) -> str:
    if not cost:
        return "-"
    return f"${cost:.2f}" if cost >= 1 else f"${cost:.4f}"


def _epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    return dt.datetime.fromisoformat(iso).timestamp()


# ---------------------------------------------------------------- history

HISTORY_COLUMNS = (
    "time",
    "time_epoch",
    "pool",
    "limit",
    "metric",
    "window",
    "used",
    "amount",
    "percent",
)
_SPARKS = "▁▂▃▄▅▆▇█"


def history_csv(rows: list[dict[str, Any]]) -> str:
    """``router.history()``'s rows as CSV, one per time, pool and limit."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, HISTORY_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def history_json(rows: list[dict[str, Any]]) -> str:
    """``router.history()``'s rows as a JSON list."""
    return json.dumps(rows, indent=2)


def history_text(rows: list[dict[str, Any]]) -> str:
    """Each pool and limit's use over time, as a sparkline of its percentage."""
    if not rows:
        return "no history: no pool has limits"
    times = sorted({row["time_epoch"] for row in rows})
    lines: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        lines.setdefault((row["pool"], row["limit"]), []).append(float(row["percent"]))
    width = 32
    table = []
    for (pool, limit), values in lines.items():
        # At most `width` marks, each the highest percentage of its share of points.
        per = max(1, math.ceil(len(values) / width))
        peaks = [max(values[i : i + per]) for i in range(0, len(values), per)]
        spark = "".join(_SPARKS[min(7, math.floor(p / 12.5))] for p in peaks)
        table.append(
            [
                fmt.clip(pool, 14),
                fmt.clip(limit, 16),
                f"{max(values):.0f}%",
                f"{values[-1]:.0f}%",
                spark,
            ]
        )
    head = f"usage from {_iso_minutes(times[0])} to {_iso_minutes(times[-1])} (UTC)"
    body = fmt.table(["POOL", "LIMIT", "PEAK", "NOW", "USE OVER TIME"], table, right=[2, 3])
    return head + "\n" + body
