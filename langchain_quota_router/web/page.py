"""The status page as HTML: CSS, the page itself, each pool's history chart (inline SVG).

Pure functions from a :func:`~langchain_quota_router.quota.status.status_snapshot` to
text: no requests, no tokens. The page carries no JavaScript and no outside
assets, so the app's Content-Security-Policy can forbid both; its forms post to
relative addresses, so it also works mounted under a path prefix.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_quota_router.quota.clock import iso
from langchain_quota_router.quota.status import amount_text, over_text

__all__ = ["history_chart", "render_page", "sign_in_page"]


def _ago(seconds: float) -> str:
    """A short span: ``45s``, ``3m 20s``, ``5h 2m``, ``2d 3h``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def _stamp(epoch: float) -> str:
    """``epoch`` for people: ``2026-01-01 00:01:00 UTC``."""
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _when(epoch: float, now: float) -> str:
    """A relative time (``in 3m 20s``) with the absolute one as a tooltip."""
    return f'<time datetime="{iso(epoch)}" title="{_stamp(epoch)}">in {_ago(epoch - now)}</time>'


def _level(percent: float) -> str:
    if percent >= 90:
        return "high"
    if percent >= 70:
        return "mid"
    return "low"


_CSS = """
:root { --ok: #1a7f37; --mid: #bf8700; --high: #cf222e; --muted: #57606a;
        --line: #d0d7de; --bg: #f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       margin: 0 auto; max-width: 960px; padding: 20px; color: #1f2328; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 24px 0 8px; }
.sub, .muted { color: var(--muted); }
.notice { background: #dafbe1; border: 1px solid #aceebb; padding: 6px 10px;
          border-radius: 6px; margin: 12px 0; }
.stats { display: flex; gap: 10px; flex-wrap: wrap; margin: 12px 0; }
.stat { background: var(--bg); border: 1px solid var(--line); border-radius: 6px;
        padding: 6px 12px; }
.stat b { font-size: 18px; display: block; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line);
         vertical-align: top; }
th { background: var(--bg); font-weight: 600; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff;
         font-weight: 600; font-size: 12px; }
.state-ok { background: var(--ok); }
.state-full { background: var(--mid); }
.state-blocked { background: var(--high); }
.state-disabled { background: #6e7781; }
.state-unavailable { background: #6e7781; }
.reason { font-size: 12px; color: var(--muted); max-width: 360px; }
.pools { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr));
         gap: 12px; }
.pool { border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
.pool header { display: flex; justify-content: space-between; align-items: center; }
.pool h3 { font-size: 15px; margin: 0; }
.limit { margin: 8px 0; }
.limit .row { display: flex; justify-content: space-between; gap: 12px; font-size: 13px; }
.limit .row span:first-child { white-space: nowrap; }
.limit .row span:last-child { text-align: right; }
.bar { height: 12px; background: #eaeef2; border-radius: 6px; overflow: hidden;
       margin-top: 3px; }
.fill { height: 100%; border-radius: 6px; }
.fill.low { background: var(--ok); }
.fill.mid { background: var(--mid); }
.fill.high { background: var(--high); }
.limit .over { font-size: 12px; color: var(--high); margin-top: 2px; }
form { display: inline; margin: 0; }
button { font: inherit; font-size: 12px; padding: 2px 10px; border-radius: 6px;
         border: 1px solid var(--line); background: #fff; cursor: pointer; }
button:hover { background: var(--bg); }
code { font-size: 12px; }
.chart { display: block; width: 100%; height: auto; margin-top: 8px; }
.chart .grid { stroke: var(--line); stroke-width: 1; }
.chart .axis { fill: var(--muted); font-size: 10px; }
.chart polyline { fill: none; stroke-width: 1.6; stroke-linejoin: round; }
.legend { font-size: 12px; color: var(--muted); }
.legend .key { display: inline-block; width: 10px; height: 3px; margin: 0 4px 3px 8px; }
"""


_CSS += """
.owner { margin: 12px 0; font-size: 13px; }
.owner input { font: inherit; font-size: 12px; padding: 2px 6px; width: 18em; }
"""


def _head(title: str, *, refresh: bool = False) -> list[str]:
    return [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # Refresh now and then: the page is a live view of a shared ledger.
        *(['<meta http-equiv="refresh" content="15">'] if refresh else []),
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
    ]


def _button(action: str, fields: dict[str, str], label: str, title: str) -> str:
    # Relative action: the page also works mounted under a path prefix.
    hidden = "".join(
        f'<input type="hidden" name="{name}" value="{html.escape(value)}">'
        for name, value in fields.items()
    )
    return (
        f'<form method="post" action="{action}">{hidden}'
        f'<button type="submit" title="{html.escape(title)}">{label}</button></form>'
    )


_SIGN_IN = (
    '<form class="owner" method="post" action="login">'
    '<label>Admin token <input type="password" name="token" autocomplete="current-password" '
    'required></label> <button type="submit">Sign in</button> '
    '<span class="muted">to reset pools and enable routes (the token '
    "<code>quota-router serve</code> printed, or <code>$QUOTA_ROUTER_ADMIN_TOKEN</code>)"
    "</span></form>"
)


#: Line colours of a pool's limits in its chart, in the order of its limits.
_PALETTE = ("#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#57606a")
_CHART_W, _CHART_H = 420, 130
_PAD_LEFT, _PAD_RIGHT, _PAD_TOP, _PAD_BOTTOM = 34, 8, 8, 18


def _clock_time(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%H:%M")


def history_chart(pool: str, rows: Sequence[Mapping[str, Any]], start: float, end: float) -> str:
    """A usage-over-time chart of one pool as inline SVG (no script, no asset).

    One line per limit: its percentage used at each point of ``rows`` (rows of
    ``router.history()`` for this pool) from ``start`` to ``end`` (epoch seconds),
    and an HTML legend under it.
    """
    e = html.escape
    lines: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        if row["pool"] == pool:
            lines.setdefault(str(row["limit"]), []).append(
                (float(row["time_epoch"]), float(row["percent"]))
            )
    if not lines:
        return ""
    span = max(end - start, 1.0)
    width = _CHART_W - _PAD_LEFT - _PAD_RIGHT
    height = _CHART_H - _PAD_TOP - _PAD_BOTTOM

    def x(t: float) -> float:
        return _PAD_LEFT + width * min(1.0, max(0.0, (t - start) / span))

    def y(percent: float) -> float:
        return _PAD_TOP + height * (1 - min(100.0, max(0.0, percent)) / 100)

    hours = round(span / 3600)
    label = f"Use of pool {pool} over the last {hours} hours, percent of each limit"
    parts = [
        f'<svg class="chart" data-pool="{e(pool)}" role="img" aria-label="{e(label)}" '
        f'viewBox="0 0 {_CHART_W} {_CHART_H}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{e(label)}</title>",
    ]
    for percent in (0, 50, 100):
        level = y(percent)
        parts.append(
            f'<line class="grid" x1="{_PAD_LEFT}" y1="{level:.1f}" '
            f'x2="{_CHART_W - _PAD_RIGHT}" y2="{level:.1f}"/>'
            f'<text class="axis" x="{_PAD_LEFT - 4}" y="{level + 3:.1f}" '
            f'text-anchor="end">{percent}%</text>'
        )
    base = _CHART_H - 4
    parts.append(
        f'<text class="axis" x="{_PAD_LEFT}" y="{base}">{_clock_time(start)} UTC</text>'
        f'<text class="axis" x="{_CHART_W - _PAD_RIGHT}" y="{base}" text-anchor="end">'
        f"now {_clock_time(end)}</text>"
    )
    legend = []
    for i, (limit, points) in enumerate(lines.items()):
        colour = _PALETTE[i % len(_PALETTE)]
        coords = " ".join(f"{x(t):.1f},{y(p):.1f}" for t, p in sorted(points))
        last = sorted(points)[-1][1]
        parts.append(
            f'<polyline data-limit="{e(limit)}" stroke="{colour}" points="{coords}">'
            f"<title>{e(limit)}: {last:.0f}% now</title></polyline>"
        )
        legend.append(f'<span class="key" style="background:{colour}"></span>{e(limit)}')
    parts.append("</svg>")
    parts.append(f'<div class="legend">{"".join(legend)}</div>')
    return "".join(parts)


def render_page(
    snapshot: dict[str, Any],
    notice: str | None = None,
    *,
    form_token: str | None = None,
    history: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """The HTML status page for a :func:`~langchain_quota_router.quota.status.status_snapshot`.

    Args:
        snapshot: what :func:`~langchain_quota_router.quota.status.status_snapshot` returned.
        notice: a line to show at the top (e.g. after a reset), as plain text.
        form_token: the value the Reset and Enable forms send as their ``token``
            field, for a signed-in owner; ``None`` shows a sign-in form instead.
        history: rows of ``router.history()``; each pool then gets a chart of its
            use over the rows' span, under its bars.

    Returns:
        A self-contained HTML document: inline CSS and SVG, no scripts, no
        external assets.
    """
    e = html.escape
    now: float = snapshot["now_epoch"]
    stats = snapshot["stats"]
    fleet = stats.get("fleet")
    parts = [
        *_head("Quota router status", refresh=True),
        "<h1>Quota router status</h1>",
        f'<div class="sub">as of {_stamp(now)} · ledger '
        f"<code>{e(str(snapshot['ledger']))}</code> · refreshes every 15 s</div>",
    ]
    if notice:
        parts.append(f'<div class="notice" role="status">{e(notice)}</div>')
    if form_token is None:
        parts.append(_SIGN_IN)
    else:
        parts.append(
            '<div class="owner">Signed in: you may reset pools and enable routes. '
            '<form method="post" action="logout"><button type="submit">Sign out</button>'
            "</form></div>"
        )
    counters = fleet if fleet else stats
    parts.append(f'<div class="stats" data-counters="{"fleet" if fleet else "process"}">')
    boxes: list[tuple[str, Any]] = [
        ("calls", counters.get("total_calls", 0)),
        ("fallbacks", counters.get("fallbacks", 0)),
        ("errors", counters.get("errors", 0)),
    ]
    if fleet:
        boxes += [
            ("vendor 429s", fleet["rate_limited"]),
            ("kept from full pools", fleet["refused"]),
        ]
    boxes += [
        ("cache hits", counters.get("cache_hits", 0)),
        ("last route here", stats.get("last_route") or "-"),
    ]
    for label, value in boxes:
        parts.append(f'<div class="stat"><b>{e(str(value))}</b>{e(label)}</div>')
    parts.append("</div>")
    if fleet:
        parts.append(
            '<div class="muted">Counters are the fleet\'s: every router counting in this '
            f"ledger, since it first counted them (this process: {stats.get('total_calls', 0)} "
            "calls). Quotas below are the ledger's too.</div>"
        )
    else:
        parts.append(
            "<div class=\"muted\">Counters above are this process's (the fleet's could not "
            "be read from the ledger); quotas below are the ledger's, shared by every "
            "process that uses it.</div>"
        )

    parts.append("<h2>Routes</h2>")
    parts.append(
        '<table id="routes"><thead><tr><th>Route</th><th>Model</th><th>Pool</th>'
        "<th>Priority</th><th>Calls</th><th>Errors</th><th>429s</th><th>Kept out</th>"
        "<th>State</th><th></th></tr></thead><tbody>"
    )
    for route in snapshot["routes"]:
        state = route["state"]
        label = state
        if state == "blocked" and route["until_epoch"] is not None:
            label = "blocked until"
        cells = [
            f"<td><b>{e(route['name'])}</b></td>",
            f"<td>{e(route['provider'])}:{e(route['model'])}</td>",
            f"<td>{e(route['pool'])}</td>",
            f"<td>{route['priority']}</td>",
            *_route_counters(route),
        ]
        state_html = f'<span class="badge state-{state}">{e(label)}</span>'
        if route["until_epoch"] is not None:
            # A sliding window may let a call in before it has fully reset: for a
            # full route say when it resets, not that it stays full until then.
            lead = "resets " if state == "full" else ""
            state_html += f" {lead}{_when(route['until_epoch'], now)}"
        elif state == "full":
            state_html += " (no reset: a one-time credit)"
        if route["reason"]:
            state_html += f'<div class="reason">{e(route["reason"])}</div>'
        cells.append(f"<td>{state_html}</td>")
        action = ""
        if form_token is not None and state in ("disabled", "unavailable"):
            title = "Use this route's key again" if state == "disabled" else "Try its model again"
            fields = {"route": route["name"], "token": form_token}
            action = _button("enable", fields, "Enable", title)
        cells.append(f"<td>{action}</td>")
        parts.append(
            f'<tr data-route="{e(route["name"])}" data-state="{state}">{"".join(cells)}</tr>'
        )
    parts.append("</tbody></table>")
    clients = (fleet or {}).get("clients") or {}
    if clients:
        # Programs using `quota-router proxy`, named by their key's fingerprint.
        parts.append("<h2>Proxy clients</h2>")
        parts.append(
            '<table id="clients"><thead><tr><th>Client key</th><th>Requests</th>'
            "<th>Errors</th><th>Tokens in</th><th>Tokens out</th></tr></thead><tbody>"
        )
        for client, row in clients.items():
            cells = [
                f"<td><code>{e(client)}</code></td>",
                *(
                    f"<td>{int(row.get(f, 0))}</td>"
                    for f in ("requests", "errors", "tokens_in", "tokens_out")
                ),
            ]
            parts.append(f'<tr data-client="{e(client)}">{"".join(cells)}</tr>')
        parts.append("</tbody></table>")

    parts.append('<h2>Quota by pool</h2><div class="pools">')
    for pool in snapshot["pools"]:
        routes = pool["routes"]
        reset = ""
        if form_token is not None and routes:
            reset = _button(
                "reset",
                {"route": routes[0], "token": form_token},
                "Reset",
                f"Forget what pool {pool['pool']} has spent and lift its block",
            )
        parts.append(
            f'<section class="pool" data-pool="{e(pool["pool"])}"><header>'
            f"<h3>{e(pool['pool'])}</h3>{reset}</header>"
            f'<div class="muted">routes: {e(", ".join(routes))}</div>'
        )
        if not pool["limits"]:
            parts.append('<div class="muted">no limits set</div>')
        for limit in pool["limits"]:
            percent = float(limit["percent"])
            level = _level(percent)
            resets = limit["resets_at_epoch"]
            reset_text = "never resets" if resets is None else f"resets {_when(resets, now)}"
            learned = ""
            if limit["learned_at_epoch"] is not None:
                learned = (
                    ' <span class="muted" title="stated by the vendor\'s rate-limit '
                    f'headers">learned {_ago(now - limit["learned_at_epoch"])} ago</span>'
                )
            parts.append(
                f'<div class="limit" data-limit="{e(limit["limit"])}">'
                f'<div class="row"><span><b>{e(limit["limit"])}</b>{learned}</span>'
                f"<span>{e(amount_text(limit['used'], limit['metric']))} / "
                f"{e(amount_text(limit['amount'], limit['metric']))} used · "
                f"{e(amount_text(limit['remaining'], limit['metric']))} left · "
                f"{reset_text}</span></div>"
                f'<div class="bar" role="progressbar" aria-label="{e(limit["limit"])}" '
                f'aria-valuemin="0" aria-valuemax="100" aria-valuenow="{percent:.0f}">'
                f'<div class="fill {level}" style="width:{percent:.1f}%"></div></div>'
                + (f'<div class="over">{e(over_text(limit))}</div>' if limit.get("over") else "")
                + "</div>"
            )
        if history:
            times = [float(row["time_epoch"]) for row in history]
            parts.append(history_chart(pool["pool"], history, min(times), max(times)))
        parts.append("</section>")
    parts.append("</div>")
    parts.append(
        '<p class="muted">JSON: <a href="status.json">status.json</a> · Prometheus: '
        '<a href="metrics">metrics</a>. Reset forgets everything a pool has counted (for '
        "every process sharing the ledger).</p>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)


def _route_counters(route: Mapping[str, Any]) -> list[str]:
    """A route's counter cells: the fleet's, else this process's."""
    fleet = route.get("fleet")
    if not fleet:
        return [f"<td>{route['calls']}</td>", f"<td>{route['errors']}</td>", *["<td>-</td>"] * 2]
    kinds = ", ".join(f"{k}: {n}" for k, n in sorted(fleet["errors_by_kind"].items()))
    title = f' title="{html.escape(kinds)}"' if kinds else ""
    return [
        f"<td>{fleet['calls']}</td>",
        f"<td{title}>{fleet['errors']}</td>",
        f"<td>{fleet['rate_limited']}</td>",
        f"<td>{fleet['refused']}</td>",
    ]


def sign_in_page(notice: str | None = None) -> str:
    """What a reader from another machine sees before signing in."""
    parts = [*_head("Quota router status: sign in"), "<h1>Quota router status</h1>"]
    if notice:
        parts.append(f'<div class="notice" role="status">{html.escape(notice)}</div>')
    parts.append('<p class="muted">This page is served to other machines only for its owner.</p>')
    parts.append(_SIGN_IN)
    parts.append("</body></html>")
    return "\n".join(parts)
