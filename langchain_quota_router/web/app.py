"""A status page for a router: quota bars per pool, route states, reset and enable.

``create_app(router)`` returns a plain ASGI application (no web framework needed;
mount it in any ASGI framework, or run it with :func:`~langchain_quota_router.web.server.serve`):

- ``GET /``: an HTML page with a usage bar per pool and limit, a chart of each
  pool's use over the last 24 hours (inline SVG drawn on the server from
  ``router.history()``), each route's state (ok, full until, blocked until,
  unavailable, disabled), the fleet's counters and, for a signed-in owner, a Reset
  button per pool and an Enable button per disabled route. No JavaScript.
- ``GET /status.json``: the same as JSON (see
  :func:`~langchain_quota_router.quota.status.status_snapshot`; exactly what
  ``quota-router report --json`` prints).
- ``GET /metrics``: Prometheus metrics (see :mod:`langchain_quota_router.metrics`;
  needs the ``metrics`` extra).
- ``POST /login`` with form field ``token``: sign in with the admin token; sets a
  session cookie and redirects (303) to ``/``. ``POST /logout`` signs out.
- ``POST /reset`` with form fields ``route`` and ``token``: forget what that route's
  pool has spent and lift its block, then redirect (303) to ``/``.
- ``POST /enable`` with form fields ``route`` and ``token``: re-enable a route whose
  key or model was refused, then redirect to ``/``.

Who may read and who may change is decided in :mod:`~langchain_quota_router.web.auth`
(the admin token, the sign-in cookie, Host and cross-site checks); this module
parses requests, asks it, and answers with the security headers every response carries.

Bad input is answered 400 with a message saying what is wrong, an unknown route 404.

The page reads the router's ledger, so with a shared ledger (SQLite, Redis) a page
served by one process shows what every process spent, and the counters (calls,
fallbacks, errors, 429s, refusals, cache hits) every router counting in that ledger
made (``get_stats()["fleet"]``). API keys are never shown
(:class:`~langchain_quota_router.quota.secrets.Masker` masks every response).
"""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
import socket
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from langchain_quota_router._errors import LedgerError
from langchain_quota_router.quota.secrets import Masker
from langchain_quota_router.quota.status import iso, status_snapshot
from langchain_quota_router.web.asgi import HTTPError, Receive, Response, Scope, Send, header
from langchain_quota_router.web.auth import (
    ADMIN_TOKEN_ENV,
    Access,
    choose_admin_token,
    is_loopback,
    same_secret,
    session_cookie,
)

if TYPE_CHECKING:
    from langchain_quota_router.chat.model import QuotaRoutedChatModel

__all__ = [
    "MAX_BODY",
    "StatusApp",
    "StatusServer",
    "create_app",
    "history_chart",
    "make_server",
    "render_page",
    "serve",
]

logger = logging.getLogger(__name__)

#: The largest POST body accepted; a form with a route name and a token is under 200 bytes.
MAX_BODY = 64 * 1024

_FORM = "application/x-www-form-urlencoded"
_READS = {"/", "/index.html", "/status.json", "/metrics"}
_ACTIONS = {"/reset", "/enable", "/login", "/logout"}
_WEB_EXTRA = "pip install 'langchain-quota-router[web]'"
_SECURITY_HEADERS = [
    ("x-frame-options", "DENY"),
    # No scripts, fonts or outside resources at all; the page's own <style> and bar
    # widths are inline styles. form-action keeps even an injected form at home.
    (
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
    ("cross-origin-opener-policy", "same-origin"),
    # Other sites may not even load /status.json as an image or script.
    ("cross-origin-resource-policy", "same-origin"),
    ("cache-control", "no-store"),
]


# --------------------------------------------------------------------- the page


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
                f"<span>{limit['used']} / {limit['amount']} used · "
                f"{limit['remaining']} left · {reset_text}</span></div>"
                f'<div class="bar" role="progressbar" aria-label="{e(limit["limit"])}" '
                f'aria-valuemin="0" aria-valuemax="100" aria-valuenow="{percent:.0f}">'
                f'<div class="fill {level}" style="width:{percent:.1f}%"></div></div></div>'
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


# ---------------------------------------------------------------- the ASGI app


class StatusApp:
    """The status page of one router as an ASGI 3 application (see :func:`create_app`).

    Attributes:
        router: the router shown and acted on.
        admin_token: the token that allows reset and enable.
        token_generated: whether the token was generated (nobody chose it).
    """

    def __init__(
        self,
        router: QuotaRoutedChatModel,
        *,
        admin_token: str | None = None,
        allowed_hosts: Iterable[str] = (),
        open_reads: bool | None = None,
    ) -> None:
        """See :func:`create_app`."""
        self.router = router
        self.admin_token, self.token_generated = choose_admin_token(admin_token)
        self._access = Access(self.admin_token, allowed_hosts, open_reads)
        self._metrics_registry: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection (``http`` or ``lifespan``)."""
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            msg = f"the status page serves HTTP only, not {kind!r}"
            raise RuntimeError(msg)
        try:
            status, headers, body = await self._handle(scope, receive)
        except HTTPError as exc:
            if exc.status == HTTPStatus.FORBIDDEN:
                # The owner should hear of attempts: a forged post, a rebinding page.
                logger.warning(
                    "status page refused %s %s: %s", scope["method"], scope["path"], exc.message
                )
            status = exc.status
            headers = [("content-type", "text/plain; charset=utf-8"), *exc.headers]
            body = f"{exc.status.value} {exc.status.phrase}: {exc.message}\n".encode()
        except Exception as exc:  # noqa: BLE001 - answered here, so the answer has our headers
            # One masked line, no traceback: an exception's text may quote a key.
            masked = Masker.for_router(self.router)(f"{type(exc).__name__}: {exc}")
            logger.error("status page failed on %s %s: %s", scope["method"], scope["path"], masked)
            status = HTTPStatus.INTERNAL_SERVER_ERROR
            headers = [("content-type", "text/plain; charset=utf-8")]
            body = b"500 Internal Server Error: the status page failed; see the server's log\n"
        # A last guard: no response carries a key, wherever it might have crept in
        # (a route or pool named after its key, a key typed into a form).
        body = Masker.for_router(self.router).body(body)
        await send(
            {
                "type": "http.response.start",
                "status": int(status),
                "headers": [
                    (k.encode("latin-1"), v.encode("latin-1"))
                    for k, v in [
                        *headers,
                        ("content-length", str(len(body))),
                        *_SECURITY_HEADERS,
                    ]
                ],
            }
        )
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _handle(self, scope: Scope, receive: Receive) -> Response:
        path = scope["path"]
        method = scope["method"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        # Before anything else, reads included: a rebinding page must learn nothing.
        self._access.check_host(scope)
        if path not in _READS and path not in _ACTIONS:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"no page {path!r}; see / or /status.json")
        allowed = "GET, HEAD" if path in _READS else "POST"
        if method not in allowed.split(", "):
            raise HTTPError(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"{path} takes {allowed}, not {method}",
                [("allow", allowed)],
            )
        signed_in = self._access.signed_in(scope)
        if path in _READS:
            if not signed_in and not self._access.reads_open(scope):
                return self._sign_in_required(path)
            return self._read(path, scope, signed_in)
        self._access.check_same_origin(scope)
        fields = _form_fields(await _read_body(receive), header(scope, "content-type"))
        if path == "/login":
            return self._login(scope, fields)
        if path == "/logout":
            return _redirect(scope, "logout", cookie=session_cookie(scope, ""))
        if not self._access.may_change(scope, fields):
            msg = (
                "reset and enable need the admin token: sign in on the page (its forms "
                "send the token), or send 'Authorization: Bearer TOKEN'"
            )
            raise HTTPError(HTTPStatus.FORBIDDEN, msg)
        route = _one_field(fields, "route")
        if route not in self.router.route_map:
            known = ", ".join(sorted(self.router.route_map))
            raise HTTPError(HTTPStatus.NOT_FOUND, f"no route named {route!r}; routes: {known}")
        action = path[1:]
        if action == "reset":
            self.router.reset(route)
        else:
            self.router.enable(route)
        logger.info("status page: %s route %s", action, route)
        return _redirect(scope, action, route)

    def _read(self, path: str, scope: Scope, signed_in: bool) -> Response:
        # Ledger reads are a few quick queries; they run inline rather than in a
        # thread pool, whose SQLite connection per thread would leak per request.
        if path == "/status.json":
            body = json.dumps(status_snapshot(self.router), indent=2).encode()
            return HTTPStatus.OK, [("content-type", "application/json")], body
        if path == "/metrics":
            return self._metrics(header(scope, "accept"))
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        snapshot = status_snapshot(self.router)
        try:
            history = self.router.history(since=dt.timedelta(hours=24))
        except LedgerError as exc:  # the bars and states still show
            logger.warning("status page: could not read the usage history: %s", exc)
            history = None
        page = render_page(
            snapshot,
            _notice(query, self.router),
            form_token=self._access.form_token if signed_in else None,
            history=history,
        )
        return HTTPStatus.OK, [("content-type", "text/html; charset=utf-8")], page.encode()

    def _sign_in_required(self, path: str) -> Response:
        challenge = ("www-authenticate", 'Bearer realm="quota-router"')
        if path in ("/", "/index.html"):
            headers = [("content-type", "text/html; charset=utf-8"), challenge]
            return HTTPStatus.UNAUTHORIZED, headers, sign_in_page().encode()
        msg = (
            "reading the status from another machine needs the admin token: "
            "send 'Authorization: Bearer TOKEN', or sign in on the page"
        )
        raise HTTPError(HTTPStatus.UNAUTHORIZED, msg, [challenge])

    def _login(self, scope: Scope, fields: dict[str, list[str]]) -> Response:
        token = _one_field(fields, "token")
        if not same_secret(token, self.admin_token):
            raise HTTPError(HTTPStatus.FORBIDDEN, "that is not the admin token")
        return _redirect(scope, "login", cookie=session_cookie(scope, self._access.session))

    def _metrics(self, accept: str | None) -> Response:
        try:
            from langchain_quota_router import metrics
        except ImportError as exc:
            raise HTTPError(HTTPStatus.NOT_IMPLEMENTED, str(exc)) from None
        if self._metrics_registry is None:
            self._metrics_registry = metrics.make_registry(self.router)
        body, content_type = metrics.exposition(self._metrics_registry, accept)
        return HTTPStatus.OK, [("content-type", content_type)], body


def _redirect(
    scope: Scope, done: str, route: str | None = None, cookie: str | None = None
) -> Response:
    # 303: the browser follows with a GET, so reloading the page does not repost.
    location = f"{scope.get('root_path', '')}/?done={done}"
    if route is not None:
        location += f"&route={quote(route, safe='')}"
    headers = [("location", location)]
    if cookie is not None:
        headers.append(("set-cookie", cookie))
    return HTTPStatus.SEE_OTHER, headers, b""


def _notice(query: dict[str, list[str]], router: QuotaRoutedChatModel) -> str | None:
    """The line to show after a redirect from a form."""
    done = query.get("done", [""])[0]
    if done == "login":
        return "Signed in: you may reset pools and enable routes."
    if done == "logout":
        return "Signed out."
    route = query.get("route", [""])[0]
    # Only known routes are echoed: the query string is anyone's to write.
    if route not in router.route_map:
        return None
    if done == "reset":
        return f"Pool {router.route_map[route].pool!r} was reset (via route {route!r})."
    if done == "enable":
        return f"Route {route!r} was enabled."
    return None


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HTTPError(HTTPStatus.BAD_REQUEST, "the client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _form_fields(body: bytes, content_type: str | None) -> dict[str, list[str]]:
    """A POST body's fields: a URL-encoded form, or a JSON object of strings."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime == "application/json":
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise HTTPError(HTTPStatus.BAD_REQUEST, "the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise HTTPError(HTTPStatus.BAD_REQUEST, 'send a JSON object: {"route": "name"}')
        for name, value in data.items():
            if value is not None and not isinstance(value, str):
                raise HTTPError(HTTPStatus.BAD_REQUEST, f"field {name!r} must be a string")
        return {name: [value] for name, value in data.items() if isinstance(value, str)}
    if mime in ("", _FORM):
        try:
            return parse_qs(body.decode("utf-8"), errors="strict", max_num_fields=20)
        except (UnicodeDecodeError, ValueError) as exc:
            raise HTTPError(HTTPStatus.BAD_REQUEST, f"cannot read the form: {exc}") from None
    raise HTTPError(HTTPStatus.BAD_REQUEST, f"send the form as {_FORM} (or JSON), not {mime}")


def _one_field(fields: dict[str, list[str]], name: str) -> str:
    """The one, non-empty value of form field ``name``."""
    values = fields.get(name, [])
    if not values:
        raise HTTPError(HTTPStatus.BAD_REQUEST, f"form field {name!r} is required")
    if len(values) > 1:
        raise HTTPError(HTTPStatus.BAD_REQUEST, f"give form field {name!r} once")
    value = values[0].strip()
    if not value:
        raise HTTPError(HTTPStatus.BAD_REQUEST, f"form field {name!r} is empty")
    return value


def create_app(
    router: QuotaRoutedChatModel,
    *,
    admin_token: str | None = None,
    allowed_hosts: Iterable[str] = (),
    open_reads: bool | None = None,
) -> StatusApp:
    """The status page of ``router`` as an ASGI application, to run or mount anywhere.

    Args:
        router: the router to show and act on.
        admin_token: the token that allows reset and enable (and reading from other
            machines); default ``$QUOTA_ROUTER_ADMIN_TOKEN``, else a random one
            (``app.admin_token``), so that nobody can change anything by default.
        allowed_hosts: more names the ``Host`` header may give, besides the address
            the request came in on (and ``localhost`` on loopback): a reverse
            proxy's public name, say. ``"*"`` allows any (only behind a proxy that
            checks the name itself).
        open_reads: whether the page, ``/status.json`` and ``/metrics`` may be read
            without the token: ``None`` (default) for requests from this machine only,
            ``False`` for nobody (behind a reverse proxy on this machine), ``True``
            for everybody.

    Returns:
        An ASGI 3 application serving ``GET /``, ``/status.json``, ``/metrics`` and
        ``POST /login``, ``/logout``, ``/reset``, ``/enable`` (see the module docstring).

    Raises:
        ConfigurationError: for an admin token shorter than 16 characters.
    """
    return StatusApp(
        router, admin_token=admin_token, allowed_hosts=allowed_hosts, open_reads=open_reads
    )


# ------------------------------------------------------------- the server


def _uvicorn() -> ModuleType:
    """The uvicorn module, or an ImportError that says which extra installs it."""
    try:
        import uvicorn
    except ImportError as exc:
        msg = f"the status page's server needs uvicorn: {_WEB_EXTRA}"
        raise ImportError(msg) from exc
    return uvicorn


class StatusServer:
    """The status page on uvicorn, bound to its address but not serving yet.

    Made by :func:`make_server`. Call :meth:`serve_forever` (in a thread if need be)
    and :meth:`shutdown` from another thread to stop; :attr:`server_address` says
    the port when ``port=0`` picked a free one.
    """

    def __init__(self, app: StatusApp, sock: socket.socket) -> None:
        """Serve ``app`` on the bound, listening socket ``sock``."""
        uvicorn = _uvicorn()
        self.app = app
        self.socket = sock
        config = uvicorn.Config(
            app,
            lifespan="on",
            loop="asyncio",
            http="h11",
            ws="none",
            # The service's logging is the service's: uvicorn configures none, logs
            # no request lines (a URL may carry anything) and names no server.
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._stopped = threading.Event()
        self._stopped.set()
        host, port = sock.getsockname()[:2]
        self.server_address: tuple[str, int] = (str(host), int(port))
        """The bound host and port."""

    @property
    def url(self) -> str:
        """The page's address, such as ``http://127.0.0.1:8765/``."""
        host, port = self.server_address
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown`, or Ctrl+C in the main thread."""
        self._stopped.clear()
        try:
            self._server.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop serving (finishing requests under way) and wait until it has."""
        self._server.should_exit = True
        self._stopped.wait()

    def server_close(self) -> None:
        """Close the listening socket."""
        self.socket.close()


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        # Connections wait in the backlog until the server runs: no start-up race.
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def make_server(
    router: QuotaRoutedChatModel,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    admin_token: str | None = None,
    allowed_hosts: Iterable[str] = (),
    open_reads: bool | None = None,
) -> StatusServer:
    """A bound, not yet serving, uvicorn server for the status page of ``router``.

    Args:
        router: the router to show and act on.
        host: the address to bind (default loopback only).
        port: the TCP port; 0 picks a free one.
        admin_token: see :func:`create_app`.
        allowed_hosts: see :func:`create_app`.
        open_reads: see :func:`create_app`.

    Returns:
        The server; ``server.app.admin_token`` is the token.

    Raises:
        ImportError: without the ``web`` extra (uvicorn), naming it.
        ConfigurationError: for an admin token shorter than 16 characters.
    """
    _uvicorn()
    app = create_app(
        router, admin_token=admin_token, allowed_hosts=allowed_hosts, open_reads=open_reads
    )
    if not is_loopback(host):
        logger.warning(
            "the status page on %s is reachable from other machines: they need the "
            "admin token to read it, and everyone needs it to reset or enable; serve "
            "it over TLS (a reverse proxy) so the token is not sent in clear",
            host,
        )
    return StatusServer(app, _bind(host, port))


def serve(
    router: QuotaRoutedChatModel,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    admin_token: str | None = None,
    allowed_hosts: Iterable[str] = (),
    open_reads: bool | None = None,
) -> None:
    """Serve the status page of ``router`` on uvicorn until interrupted (Ctrl+C).

    Prints the page's address and, when it was generated here, the admin token
    (once: it is not logged or stored anywhere).

    Args:
        router: the router to show and act on.
        host: the address to bind (default loopback only).
        port: the TCP port; 0 picks a free one.
        admin_token: see :func:`create_app`.
        allowed_hosts: see :func:`create_app`.
        open_reads: see :func:`create_app`.

    Raises:
        ImportError: without the ``web`` extra (uvicorn), naming it.
    """
    server = make_server(
        router,
        host,
        port,
        admin_token=admin_token,
        allowed_hosts=allowed_hosts,
        open_reads=open_reads,
    )
    lines = [f"quota router status on {server.url} (Ctrl+C to stop)"]
    if server.app.token_generated:
        lines.append(
            f"admin token, to sign in for reset and enable (shown once; set "
            f"${ADMIN_TOKEN_ENV} to choose it): {server.app.admin_token}"
        )
    else:
        lines.append("admin token: the one you gave (sign in with it to reset or enable)")
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
