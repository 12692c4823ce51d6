"""A status page for a router: quota bars per pool, route states, reset and enable.

``create_app(router)`` returns a plain ASGI application (no web framework needed):

- ``GET /``: an HTML page with a usage bar per pool and limit, each route's state
  (ok, full until, blocked until, disabled), a Reset button per pool and an Enable
  button per disabled route.
- ``GET /status.json``: the same as JSON (see :func:`status_snapshot`).
- ``POST /reset`` with form field ``route``: forget what that route's pool has spent
  and lift its block, then redirect (303) to ``/``.
- ``POST /enable`` with form field ``route``: re-enable a route whose key was
  disabled after an authentication failure, then redirect to ``/``.

Bad input is answered 400 with a message saying what is wrong, an unknown route 404,
and a cross-site form post 403.

The page reads the router's ledger, so with a shared ledger (SQLite, Redis) a page
served by one process shows what every process spent. API keys are never shown:
routes are named by their route names, and hold reasons are redacted.

``serve(router)`` runs the app on the standard library's threading HTTP server; any
ASGI server can run ``create_app(router)`` too (``uvicorn.run(create_app(router))``).

Example:
    ```python
    from langchain_quota_router.web import serve

    serve(router, port=8765)  # http://127.0.0.1:8765/ until Ctrl+C
    ```
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import ipaddress
import json
import logging
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from pydantic import SecretStr

from langchain_quota_router._status import model_subject, route_states
from langchain_quota_router.ledger.base import KEY_PREFIX, MODEL_PREFIX, POOL_PREFIX
from langchain_quota_router.vendors.failures import redact

if TYPE_CHECKING:
    from langchain_quota_router._chat_model import QuotaRoutedChatModel
    from langchain_quota_router.ledger import LimitUsage

__all__ = ["ASGIApp", "create_app", "make_server", "render_page", "serve", "status_snapshot"]

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
"""An ASGI 3 application."""

#: The largest POST body accepted; a form with one route name is a few dozen bytes.
MAX_BODY = 64 * 1024

_FORM = "application/x-www-form-urlencoded"
_REDACTED = "[REDACTED]"


# --------------------------------------------------------------------- the data


def _iso(epoch: float | None) -> str | None:
    """``epoch`` as an ISO 8601 UTC timestamp (whole seconds), or ``None``."""
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="seconds")


def _limit_entry(usage: LimitUsage) -> dict[str, Any]:
    return {
        "limit": str(usage.limit),
        "metric": usage.limit.metric,
        "used": usage.used,
        "limit_amount": usage.limit.amount,
        "remaining": usage.remaining,
        "percent": round(usage.percent, 2),
        "resets_at": _iso(usage.resets_at),
        "resets_at_epoch": usage.resets_at,
        "learned_at": _iso(usage.learned_at),
        "learned_at_epoch": usage.learned_at,
    }


def _secrets(router: QuotaRoutedChatModel) -> list[str]:
    """Every API key the routes' models hold (their ``SecretStr`` fields)."""
    found = []
    for route in router.routes:
        model = route.model
        for name in type(model).model_fields:
            value = getattr(model, name, None)
            if isinstance(value, SecretStr) and len(value.get_secret_value()) >= 4:
                found.append(value.get_secret_value())
    # Longest first, so a key that contains another is masked whole.
    return sorted(set(found), key=len, reverse=True)


def _mask(text: str, secrets: list[str]) -> str:
    """``text`` without the router's keys or anything that looks like a key."""
    for secret in secrets:
        text = text.replace(secret, _REDACTED)
    return redact(text)


def status_snapshot(router: QuotaRoutedChatModel) -> dict[str, Any]:
    """What the status page shows, as JSON-ready data.

    Args:
        router: the router whose routes, ledger and counters to report.

    Returns:
        ``{"now", "ledger", "routes", "pools", "holds", "stats"}``. ``pools`` lists
        each pool's limits with ``used``, ``limit_amount``, ``remaining``,
        ``percent`` and ``resets_at`` (ISO 8601, UTC); each route has a ``state``:
        ``"ok"``, ``"full"`` (a limit is used up; ``until`` is when every used-up
        limit has fully reset, a sliding window may take a call sooner), ``"blocked"``
        (the vendor said no until ``until``), ``"unavailable"`` (the vendor no longer
        serves the model; asked again at ``until``) or ``"disabled"`` (until enabled).
        Times are also given as epoch seconds (``*_epoch``).
    """
    now = router.clock.now()
    ledger = router.ledger_backend
    secrets = _secrets(router)
    # Read once: the ledger may be shared with other processes and change meanwhile.
    usages = router.usage()
    holds = ledger.holds(now)
    routes = list(router.route_map.values())
    states = route_states(routes, usages, holds)

    pools: dict[str, dict[str, Any]] = {}
    for pool in router.pool_limits:
        pools[pool] = {
            "pool": pool,
            "routes": [r.name for r in routes if r.pool == pool],
            "limits": [],
        }
    for usage in usages:
        pools[usage.pool]["limits"].append(_limit_entry(usage))

    stats = router.get_stats()
    route_entries = []
    for route in routes:
        state = states[route.name]
        route_entries.append(
            {
                "name": route.name,
                "provider": route.provider,
                "model": route.model_name,
                "pool": route.pool,
                "priority": route.priority,
                "limits": [str(limit) for limit in route.limits],
                "state": state.kind,
                "until": _iso(state.until),
                "until_epoch": state.until,
                "reason": _mask(state.reason, secrets) if state.reason else None,
                "calls": stats["calls_per_route"].get(route.name, 0),
                "errors": stats["errors_per_route"].get(route.name, 0),
            }
        )

    hold_entries = []
    for hold in holds:
        # Report holds by pool and by route name: a key label is never shown, in
        # case someone put a real key there.
        if hold.subject.startswith(POOL_PREFIX):
            pool = hold.subject[len(POOL_PREFIX) :]
            if pool not in pools:
                continue
            entry = {"kind": "pool", "pool": pool, "routes": pools[pool]["routes"]}
        elif hold.subject.startswith(MODEL_PREFIX):
            subject = hold.subject[len(MODEL_PREFIX) :]
            names = [r.name for r in routes if model_subject(r) == subject]
            if not names:
                continue
            entry = {"kind": "model", "pool": None, "routes": names}
        else:
            key = hold.subject[len(KEY_PREFIX) :]
            names = [r.name for r in routes if r.key == key]
            if not names:
                continue
            entry = {"kind": "key", "pool": None, "routes": names}
        entry.update(
            until=_iso(hold.until), until_epoch=hold.until, reason=_mask(hold.reason, secrets)
        )
        hold_entries.append(entry)

    return {
        "now": _iso(now),
        "now_epoch": now,
        # The scheme only: a Redis URL may hold a password.
        "ledger": getattr(ledger, "scheme", type(ledger).__name__),
        "routes": route_entries,
        "pools": list(pools.values()),
        "holds": hold_entries,
        "stats": stats,
    }


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
    return f'<time datetime="{_iso(epoch)}" title="{_stamp(epoch)}">in {_ago(epoch - now)}</time>'


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
"""


def _button(action: str, route: str, label: str, title: str) -> str:
    # Relative action: the page also works mounted under a path prefix.
    return (
        f'<form method="post" action="{action}">'
        f'<input type="hidden" name="route" value="{html.escape(route)}">'
        f'<button type="submit" title="{html.escape(title)}">{label}</button></form>'
    )


def render_page(snapshot: dict[str, Any], notice: str | None = None) -> str:
    """The HTML status page for a :func:`status_snapshot`.

    Args:
        snapshot: what :func:`status_snapshot` returned.
        notice: a line to show at the top (e.g. after a reset), as plain text.

    Returns:
        A self-contained HTML document: inline CSS, no scripts, no external assets.
    """
    e = html.escape
    now: float = snapshot["now_epoch"]
    stats = snapshot["stats"]
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # Refresh now and then: the page is a live view of a shared ledger.
        '<meta http-equiv="refresh" content="15">',
        "<title>Quota router status</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Quota router status</h1>",
        f'<div class="sub">as of {_stamp(now)} · ledger '
        f"<code>{e(str(snapshot['ledger']))}</code> · refreshes every 15 s</div>",
    ]
    if notice:
        parts.append(f'<div class="notice" role="status">{e(notice)}</div>')
    parts.append('<div class="stats">')
    for label, value in (
        ("calls", stats.get("total_calls", 0)),
        ("fallbacks", stats.get("fallbacks", 0)),
        ("errors", stats.get("errors", 0)),
        ("cache hits", stats.get("cache_hits", 0)),
        ("last route", stats.get("last_route") or "-"),
    ):
        parts.append(f'<div class="stat"><b>{e(str(value))}</b>{e(label)}</div>')
    parts.append("</div>")
    parts.append(
        '<div class="muted">Counters above are this process\'s; quotas below are the '
        "ledger's, shared by every process that uses it.</div>"
    )

    parts.append("<h2>Routes</h2>")
    parts.append(
        '<table id="routes"><thead><tr><th>Route</th><th>Model</th><th>Pool</th>'
        "<th>Priority</th><th>Calls</th><th>State</th><th></th></tr></thead><tbody>"
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
            f"<td>{route['calls']}</td>",
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
        if state == "disabled":
            action = _button("enable", route["name"], "Enable", "Use this route's key again")
        elif state == "unavailable":
            action = _button("enable", route["name"], "Enable", "Try this route's model again")
        cells.append(f"<td>{action}</td>")
        parts.append(
            f'<tr data-route="{e(route["name"])}" data-state="{state}">{"".join(cells)}</tr>'
        )
    parts.append("</tbody></table>")

    parts.append('<h2>Quota by pool</h2><div class="pools">')
    for pool in snapshot["pools"]:
        routes = pool["routes"]
        reset = _button(
            "reset",
            routes[0],
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
                f"<span>{limit['used']} / {limit['limit_amount']} used · "
                f"{limit['remaining']} left · {reset_text}</span></div>"
                f'<div class="bar" role="progressbar" aria-label="{e(limit["limit"])}" '
                f'aria-valuemin="0" aria-valuemax="100" aria-valuenow="{percent:.0f}">'
                f'<div class="fill {level}" style="width:{percent:.1f}%"></div></div></div>'
            )
        parts.append("</section>")
    parts.append("</div>")
    parts.append(
        '<p class="muted">JSON: <a href="status.json">status.json</a>. Reset forgets '
        "everything a pool has counted (for every process sharing the ledger).</p>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)


# ---------------------------------------------------------------- the ASGI app


class _HTTPError(Exception):
    """A response other than 2xx/3xx, with a message for people."""

    def __init__(
        self, status: HTTPStatus, message: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


class _StatusApp:
    """The ASGI application :func:`create_app` returns."""

    def __init__(self, router: QuotaRoutedChatModel) -> None:
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            msg = f"the status page serves HTTP only, not {kind!r}"
            raise RuntimeError(msg)
        try:
            status, headers, body = await self._handle(scope, receive)
        except _HTTPError as exc:
            status = exc.status
            headers = [("content-type", "text/plain; charset=utf-8"), *exc.headers]
            body = f"{exc.status.value} {exc.status.phrase}: {exc.message}\n".encode()
        # A last guard: no response carries a key, wherever it might have crept in
        # (a route or pool named after its key, a key typed into a form).
        for secret in _secrets(self.router):
            body = body.replace(secret.encode(), _REDACTED.encode())
        await send(
            {
                "type": "http.response.start",
                "status": int(status),
                "headers": [
                    (k.encode("latin-1"), v.encode("latin-1"))
                    for k, v in [
                        *headers,
                        ("content-length", str(len(body))),
                        ("cache-control", "no-store"),
                        ("x-content-type-options", "nosniff"),
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

    async def _handle(
        self, scope: Scope, receive: Receive
    ) -> tuple[HTTPStatus, list[tuple[str, str]], bytes]:
        path = scope["path"]
        method = scope["method"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        pages = {"/", "/index.html", "/status.json"}
        actions = {"/reset", "/enable"}
        if path not in pages and path not in actions:
            raise _HTTPError(HTTPStatus.NOT_FOUND, f"no page {path!r}; see / or /status.json")
        allowed = "GET, HEAD" if path in pages else "POST"
        if method not in allowed.split(", "):
            raise _HTTPError(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"{path} takes {allowed}, not {method}",
                [("allow", allowed)],
            )
        # Ledger reads are a few quick queries; they run inline rather than in a
        # thread pool, whose SQLite connection per thread would leak per request.
        if path == "/status.json":
            body = json.dumps(status_snapshot(self.router), indent=2).encode()
            return HTTPStatus.OK, [("content-type", "application/json")], body
        if path in pages:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            notice = _notice(query, self.router)
            page = render_page(status_snapshot(self.router), notice)
            return HTTPStatus.OK, [("content-type", "text/html; charset=utf-8")], page.encode()
        _check_origin(scope)
        route = _route_field(await _read_body(receive), _header(scope, "content-type"))
        action = path[1:]
        if route not in self.router.route_map:
            known = ", ".join(sorted(self.router.route_map))
            raise _HTTPError(HTTPStatus.NOT_FOUND, f"no route named {route!r}; routes: {known}")
        if action == "reset":
            self.router.reset(route)
        else:
            self.router.enable(route)
        logger.info("status page: %s route %s", action, route)
        # 303: the browser follows with a GET, so reloading the page does not repost.
        location = f"{root}/?done={action}&route={quote(route, safe='')}"
        return HTTPStatus.SEE_OTHER, [("location", location)], b""


def _notice(query: dict[str, list[str]], router: QuotaRoutedChatModel) -> str | None:
    """The line to show after a redirect from ``/reset`` or ``/enable``."""
    done = query.get("done", [""])[0]
    route = query.get("route", [""])[0]
    # Only known routes are echoed: the query string is anyone's to write.
    if route not in router.route_map:
        return None
    if done == "reset":
        return f"Pool {router.route_map[route].pool!r} was reset (via route {route!r})."
    if done == "enable":
        return f"Route {route!r} was enabled."
    return None


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.encode("latin-1")
    for key, value in scope.get("headers", []):
        if key.lower() == wanted:
            return bytes(value).decode("latin-1")
    return None


def _check_origin(scope: Scope) -> None:
    """Refuse cross-site form posts: any web page could otherwise reset quotas."""
    origin = _header(scope, "origin")
    if _header(scope, "sec-fetch-site") == "cross-site" or (
        origin not in (None, "null") and urlsplit(origin).netloc != _header(scope, "host")
    ):
        raise _HTTPError(HTTPStatus.FORBIDDEN, "cross-site requests may not change quotas")


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _HTTPError(HTTPStatus.BAD_REQUEST, "the client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise _HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _route_field(body: bytes, content_type: str | None) -> str:
    """The ``route`` form field of a POST body."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime == "application/json":
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise _HTTPError(HTTPStatus.BAD_REQUEST, "the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise _HTTPError(HTTPStatus.BAD_REQUEST, 'send a JSON object: {"route": "name"}')
        value = data.get("route")
        values = [value] if isinstance(value, str) else []
        if value is not None and not values:
            raise _HTTPError(HTTPStatus.BAD_REQUEST, "field 'route' must be a string")
    elif mime in ("", _FORM):
        try:
            fields = parse_qs(body.decode("utf-8"), errors="strict", max_num_fields=20)
        except (UnicodeDecodeError, ValueError) as exc:
            raise _HTTPError(HTTPStatus.BAD_REQUEST, f"cannot read the form: {exc}") from None
        values = fields.get("route", [])
    else:
        raise _HTTPError(
            HTTPStatus.BAD_REQUEST,
            f"send the form as {_FORM} (or JSON), not {mime}",
        )
    if not values:
        raise _HTTPError(HTTPStatus.BAD_REQUEST, "form field 'route' is required")
    if len(values) > 1:
        raise _HTTPError(HTTPStatus.BAD_REQUEST, "give form field 'route' once")
    route = values[0].strip()
    if not route:
        raise _HTTPError(HTTPStatus.BAD_REQUEST, "form field 'route' is empty")
    return route


def create_app(router: QuotaRoutedChatModel) -> ASGIApp:
    """The status page of ``router`` as an ASGI application.

    Args:
        router: the router to show and act on.

    Returns:
        An ASGI 3 application serving ``GET /``, ``GET /status.json``,
        ``POST /reset`` and ``POST /enable`` (see the module docstring). Run it
        with :func:`serve`, or with any ASGI server.
    """
    return _StatusApp(router)


# ------------------------------------------------------ a stdlib server for it


class _Handler(BaseHTTPRequestHandler):
    """Runs each request through the ASGI app, on the request's own thread."""

    server: _StatusServer
    server_version = "quota-router-status"

    def do_GET(self) -> None:
        self._run()

    def do_HEAD(self) -> None:
        self._run()

    def do_POST(self) -> None:
        self._run()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)

    def _run(self) -> None:
        target = urlsplit(self.path)
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.send_error(HTTPStatus.BAD_REQUEST, "bad Content-Length")
            return
        # Never read more than the app accepts; it answers 413 for the rest. The
        # connection closes after each response (HTTP/1.0), so unread bytes are harmless.
        body = self.rfile.read(min(length, MAX_BODY + 1))
        host, port = self.server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.0",
            "method": self.command,
            "scheme": "http",
            "path": unquote(target.path),
            "raw_path": target.path.encode("latin-1"),
            "query_string": target.query.encode("latin-1"),
            "root_path": "",
            "headers": [
                (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()
            ],
            "client": self.client_address[:2],
            "server": (str(host), int(port)),
        }
        sent: list[Message] = []
        delivered = False

        async def receive() -> Message:
            nonlocal delivered
            if delivered:
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: Message) -> None:
            sent.append(message)

        try:
            asyncio.run(_call(self.server.app, scope, receive, send))
        except Exception:
            logger.exception("status page failed on %s %s", self.command, self.path)
            if not sent:
                self.send_error(HTTPStatus.INTERNAL_SERVER_ERROR, "the status page failed")
                return
        start = next((m for m in sent if m["type"] == "http.response.start"), None)
        if start is None:
            self.send_error(HTTPStatus.INTERNAL_SERVER_ERROR, "the app sent no response")
            return
        self.send_response(int(start["status"]))
        for key, value in start.get("headers", []):
            self.send_header(bytes(key).decode("latin-1"), bytes(value).decode("latin-1"))
        self.end_headers()
        for message in sent:
            if message["type"] == "http.response.body" and self.command != "HEAD":
                self.wfile.write(message.get("body", b""))


async def _call(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    # asyncio.run wants a coroutine; an ASGI app only promises an awaitable.
    await app(scope, receive, send)


class _StatusServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: ASGIApp) -> None:
        self.app = app
        super().__init__(address, _Handler)


def make_server(
    router: QuotaRoutedChatModel, host: str = "127.0.0.1", port: int = 8765
) -> ThreadingHTTPServer:
    """A bound, not yet serving, HTTP server for the status page of ``router``.

    Call ``serve_forever()`` on it (in a thread if need be) and ``shutdown()`` to
    stop; ``server_address`` says the port when ``port=0`` picked a free one.

    Args:
        router: the router to show and act on.
        host: the address to bind; keep loopback unless a proxy adds
            authentication, since the page can reset quotas.
        port: the TCP port; 0 picks a free one.

    Returns:
        The server (a ``ThreadingHTTPServer``, one thread per request).
    """
    if not _is_loopback(host):
        logger.warning(
            "the status page on %s is reachable from other machines and has no "
            "authentication: anyone who reaches it can reset quotas",
            host,
        )
    return _StatusServer((host, port), create_app(router))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(router: QuotaRoutedChatModel, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve the status page of ``router`` until interrupted (Ctrl+C).

    Uses the standard library's threading HTTP server, so no web framework or ASGI
    server is needed.

    Args:
        router: the router to show and act on.
        host: the address to bind (default loopback only).
        port: the TCP port; 0 picks a free one.
    """
    server = make_server(router, host, port)
    bound_host, bound_port = server.server_address[:2]
    text = bound_host.decode() if isinstance(bound_host, bytes) else str(bound_host)
    shown = f"[{text}]" if ":" in text else text
    sys.stderr.write(f"quota router status on http://{shown}:{bound_port}/ (Ctrl+C to stop)\n")
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
