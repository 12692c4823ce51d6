"""What ``status`` and ``report`` show: a router's pools, limits, holds and lifespan.

Everything is read from the router's ledger, so a report made by a fresh process
shows what every process sharing that ledger has spent.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, SecretStr

from langchain_quota_router._status import RouteState, model_subject, route_states
from langchain_quota_router.cli import _format as fmt
from langchain_quota_router.ledger import Hold, LimitUsage
from langchain_quota_router.ledger.base import KEY_PREFIX, MODEL_PREFIX, POOL_PREFIX

if TYPE_CHECKING:
    from langchain_quota_router._chat_model import QuotaRoutedChatModel
    from langchain_quota_router._route import Route


def secrets_of(router: QuotaRoutedChatModel) -> list[str]:
    """Every API key the router's models hold, so output can mask them."""
    found: list[str] = []
    for route in router.routes:
        model = route.model
        if not isinstance(model, BaseModel):
            continue
        for name in type(model).model_fields:
            value = getattr(model, name, None)
            if isinstance(value, SecretStr) and value.get_secret_value():
                found.append(value.get_secret_value())
    return found


def tightest(usage: list[LimitUsage], pool: str) -> LimitUsage | None:
    """The pool's limit closest to full (ties: the one that resets last)."""
    mine = [u for u in usage if u.pool == pool]
    if not mine:
        return None
    return max(mine, key=lambda u: (u.percent, u.resets_at or math.inf))


def lifespan(router: QuotaRoutedChatModel, tokens_per_day: int) -> dict[str, float] | None:
    """Days each pool (and ``"all"``: the whole set) lasts at ``tokens_per_day``.

    The router's own estimate (:meth:`QuotaRoutedChatModel.lifespan`): one-time
    credits run out at ``remaining / N`` days; renewing limits (per minute, day,
    month) last forever when they cover ``N`` a day, else for what is left today;
    the whole set uses renewing room first and credits for the shortfall.

    Returns:
        Days per pool plus ``"all"``, or ``None`` when this version has no estimate.
    """
    method = getattr(router, "lifespan", None)
    if not callable(method):
        return None
    estimate = method(tokens_per_day)
    pools = getattr(estimate, "pools", None)
    total = getattr(estimate, "total", None)
    if pools is None or not isinstance(total, (int, float)):
        return None
    return {**{str(k): float(v) for k, v in dict(pools).items()}, "all": float(total)}


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


def _days_value(days: float) -> float | str:
    return "inf" if math.isinf(days) else round(days, 3)


# ---------------------------------------------------------------- status


def status_text(router: QuotaRoutedChatModel) -> str:
    """One line per route: its pool's tightest limit, a bar, reset time and state."""
    now = router.clock.now()
    usage = router.usage()
    states = route_states(router.routes, usage, router.ledger_backend.holds(now))
    rows: list[list[str]] = []
    legend = False
    for route in router.routes:
        top = tightest(usage, route.pool)
        state = states[route.name]
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
                f"{fmt.count(top.used)}/{fmt.count(top.limit.amount)} {fmt.short_limit(top.limit)}",
                fmt.bar(top.percent),
                fmt.duration(None if top.resets_at is None else top.resets_at - now),
                shown,
            ]
        )
    headers = ["ROUTE", "POOL", "USED/LIMIT", "USAGE", "RESETS", "STATE"]
    _fit_names(headers, rows)
    text = fmt.table(headers, rows)
    if legend:
        text += "\nblocked HH:MM: resting after a vendor error or quota wall until then (local)"
    return text


def _fit_names(headers: list[str], rows: list[list[str]]) -> None:
    """Clip the route and pool columns so the table fits :data:`fmt.WIDTH`."""
    fixed = sum(max([len(headers[i])] + [len(r[i]) for r in rows]) for i in range(2, len(headers)))
    room = fmt.WIDTH - fixed - 2 * (len(headers) - 1)
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
    """Everything the report shows, as plain data (what ``--json`` prints)."""
    now = router.clock.now()
    usage = router.usage()
    holds = router.ledger_backend.holds(now)
    states = route_states(router.routes, usage, holds)
    secrets = secrets_of(router)
    routes_of: dict[str, list[str]] = {}
    for route in router.routes:
        routes_of.setdefault(route.pool, []).append(route.name)
    data: dict[str, Any] = {
        "generated_at": fmt.iso(now),
        "ledger": fmt.redact(getattr(router.ledger_backend, "url", ""), secrets),
        "routes": [_route_entry(route, states[route.name], secrets) for route in router.routes],
        "pools": [
            {
                "pool": pool,
                "routes": routes_of.get(pool, []),
                "limits": [_limit_entry(u) for u in usage if u.pool == pool],
            }
            for pool in router.pool_limits
        ],
        "holds": [_hold_entry(router, hold, secrets) for hold in holds],
        "lifespan": None,
    }
    if tokens_per_day is not None:
        days = lifespan(router, tokens_per_day)
        data["lifespan"] = {
            "tokens_per_day": tokens_per_day,
            "days": None if days is None else {k: _days_value(v) for k, v in days.items()},
        }
    return data


def _route_entry(route: Route, state: RouteState, secrets: list[str]) -> dict[str, Any]:
    return {
        "route": route.name,
        "provider": route.provider,
        "model": route.model_name,
        "pool": route.pool,
        "priority": route.priority,
        "state": state.kind,
        "until": fmt.iso(state.until) or None,
        "reason": fmt.redact(state.reason, secrets) or None,
    }


def _limit_entry(usage: LimitUsage) -> dict[str, Any]:
    return {
        "limit": str(usage.limit),
        "metric": usage.limit.metric,
        "window": usage.limit.window.describe(),
        "used": usage.used,
        "amount": usage.limit.amount,
        "remaining": usage.remaining,
        "percent": round(usage.percent, 1),
        "resets_at": fmt.iso(usage.resets_at) or None,
        "learned_at": fmt.iso(usage.learned_at) or None,
    }


def _hold_entry(router: QuotaRoutedChatModel, hold: Hold, secrets: list[str]) -> dict[str, Any]:
    if hold.subject.startswith(KEY_PREFIX):
        kind, name = "disabled", hold.subject[len(KEY_PREFIX) :]
        routes = [r.name for r in router.routes if r.key == name]
    elif hold.subject.startswith(MODEL_PREFIX):
        kind, name = "unavailable", hold.subject[len(MODEL_PREFIX) :]
        routes = [r.name for r in router.routes if model_subject(r) == name]
    else:
        kind, name = "blocked", hold.subject.removeprefix(POOL_PREFIX)
        routes = [r.name for r in router.routes if r.pool == name]
    return {
        "kind": kind,
        {"blocked": "pool", "disabled": "key"}.get(kind, "model"): fmt.redact(name, secrets),
        "routes": routes,
        "until": fmt.iso(hold.until) or None,
        "reason": fmt.redact(hold.reason, secrets),
    }


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
    state_of = {}
    for hold in data["holds"]:
        for route in hold["routes"]:
            state_of[route] = hold["kind"]
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
    out = [f"quota-router report  {data['generated_at']}", f"ledger  {data['ledger']}", ""]
    # Widths that add up to under 80 columns whatever the names.
    rows = [
        [
            fmt.clip(r["route"], 18),
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
                str(limit["used"]),
                str(limit["remaining"]),
                f"{limit['percent']:.0f}%",
                _iso_minutes(_epoch(limit["resets_at"])),
            ]
            for limit in pool["limits"]
        ]
        headers = ["LIMIT", "USED", "REMAINING", "USED %", "RESETS AT (UTC)"]
        table = fmt.table(headers, limit_rows, right=[1, 2, 3])
        out.extend("  " + line for line in table.splitlines())
    out.append("")
    if data["holds"]:
        out.append("holds")
        for hold in data["holds"]:
            who = ", ".join(hold["routes"]) or hold.get("pool") or hold.get("key", "")
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
            for name, days in span["days"].items():
                label = "all pools together" if name == "all" else name
                value = math.inf if days == "inf" else float(days)
                out.append(fmt.clip(f"  {label:<30} {fmt.days(value)}", fmt.WIDTH))
    return "\n".join(out)


def _epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    return dt.datetime.fromisoformat(iso).timestamp()
