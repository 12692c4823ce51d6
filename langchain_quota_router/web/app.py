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
  session cookie (signed, expiring; see :class:`~langchain_quota_router.web.auth.Sessions`)
  and redirects (303) to ``/``. ``POST /logout`` signs out, which ends every session
  and form token on every worker sharing the ledger.
- ``POST /reset`` with form fields ``route`` and ``token``: forget what that route's
  pool has spent and lift its block, then redirect (303) to ``/``.
- ``POST /enable`` with form fields ``route`` and ``token``: re-enable a route whose
  key or model was refused, then redirect to ``/``.

Who may read and who may change is decided in :mod:`~langchain_quota_router.web.auth`
(the admin token, the sign-in cookie, Host and cross-site checks); this module
parses requests, asks it, and answers with the security headers every response carries.

Bad input is answered 400 with a message saying what is wrong (JSON nested deeper
than :data:`MAX_JSON_DEPTH` included), an unknown route 404, a body that does not
arrive within ``body_timeout`` seconds 408. What the log says of a request (its
path, its headers) is escaped: a newline or escape code in a URL cannot forge a
log line or recolour a terminal.

The page reads the router's ledger, so with a shared ledger (SQLite, Redis) a page
served by one process shows what every process spent, and the counters (calls,
fallbacks, errors, 429s, refusals, cache hits) every router counting in that ledger
made (``get_stats()["fleet"]``). API keys are never shown
(:class:`~langchain_quota_router.quota.secrets.Masker` masks every response).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
from collections.abc import Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from langchain_quota_router._errors import ConfigurationError, LedgerError
from langchain_quota_router.quota.secrets import Masker
from langchain_quota_router.quota.status import status_snapshot
from langchain_quota_router.web.asgi import HTTPError, Receive, Response, Scope, Send, header
from langchain_quota_router.web.auth import (
    SESSION_SECONDS,
    Access,
    Sessions,
    choose_admin_token,
    same_secret,
    session_cookie,
)
from langchain_quota_router.web.page import render_page, sign_in_page

if TYPE_CHECKING:
    from langchain_quota_router.chat.model import QuotaRoutedChatModel

__all__ = ["BODY_TIMEOUT", "MAX_BODY", "MAX_JSON_DEPTH", "StatusApp", "create_app"]

logger = logging.getLogger(__name__)

#: The largest POST body accepted; a form with a route name and a token is under 200 bytes.
MAX_BODY = 64 * 1024
#: The deepest JSON body accepted: a form is one flat object. Deeper nesting is
#: refused before parsing, which would otherwise recurse once per level.
MAX_JSON_DEPTH = 8
#: Seconds a client has to send a POST body once its headers are in, by default.
BODY_TIMEOUT = 10.0
#: What a log line quotes of a request at most.
_LOGGED_CHARS = 200

_FORM = "application/x-www-form-urlencoded"
_READS = {"/", "/index.html", "/status.json", "/metrics"}
_ACTIONS = {"/reset", "/enable", "/login", "/logout"}
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
        session_seconds: float = SESSION_SECONDS,
        body_timeout: float = BODY_TIMEOUT,
    ) -> None:
        """See :func:`create_app`."""
        self.router = router
        self.admin_token, self.token_generated = choose_admin_token(admin_token)
        for name, value in (("session_seconds", session_seconds), ("body_timeout", body_timeout)):
            if not 0 < value < float("inf"):
                msg = f"{name} must be a positive number of seconds, got {value!r}"
                raise ConfigurationError(msg)
        sessions = Sessions(self.admin_token, router.ledger_backend, router.clock, session_seconds)
        # A (re)started page ends the sessions and form tokens signed before it.
        try:
            sessions.rotate()
        except LedgerError as exc:
            # The page still starts (it shows the ledger's error per request); the
            # sessions of the last generation the ledger holds stay valid meanwhile.
            logger.warning("status page: could not end earlier sign-ins: %s", exc)
        self._access = Access(self.admin_token, allowed_hosts, open_reads, sessions)
        self.body_timeout = body_timeout
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
                    "status page refused %s %s: %s",
                    _loggable(scope["method"]),
                    _loggable(scope["path"]),
                    _loggable(exc.message),
                )
            status = exc.status
            headers = [("content-type", "text/plain; charset=utf-8"), *exc.headers]
            body = f"{exc.status.value} {exc.status.phrase}: {exc.message}\n".encode()
        except Exception as exc:  # noqa: BLE001 - answered here, so the answer has our headers
            # One masked line, no traceback: an exception's text may quote a key.
            masked = Masker.for_router(self.router)(f"{type(exc).__name__}: {exc}")
            logger.error(
                "status page failed on %s %s: %s",
                _loggable(scope["method"]),
                _loggable(scope["path"]),
                _loggable(masked),
            )
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
        session = self._access.session(scope)
        if path in _READS:
            if session is None and not self._access.reads_open(scope):
                return self._sign_in_required(path)
            return self._read(path, scope, session)
        self._access.check_same_origin(scope)
        body = await _read_body(receive, self.body_timeout)
        fields = _form_fields(body, header(scope, "content-type"))
        if path == "/login":
            return self._login(scope, fields)
        if path == "/logout":
            if session is not None:
                # Ends this session and every other, on every worker: a copied
                # cookie or page stops working too.
                self._access.sessions.rotate()
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
        logger.info("status page: %s route %s", action, _loggable(route))
        return _redirect(scope, action, route)

    def _read(self, path: str, scope: Scope, session: int | None) -> Response:
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
            form_token=None if session is None else self._access.form_token(session),
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
        signed = self._access.sessions.issue("session")
        return _redirect(scope, "login", cookie=session_cookie(scope, signed))

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


def _loggable(text: object) -> str:
    """``text`` for a log line: control and other unprintable characters escaped
    (``\\n``, ``\\x1b``), and clipped, so a request cannot forge or garble a line."""
    shown = "".join(
        ch if ch.isprintable() else ascii(ch)[1:-1] for ch in str(text)[: _LOGGED_CHARS + 1]
    )
    return shown if len(shown) <= _LOGGED_CHARS else shown[:_LOGGED_CHARS] + "..."


async def _read_body(receive: Receive, timeout: float) -> bytes:
    """The request body, within ``timeout`` seconds for the whole of it (a client
    that sends headers and then trickles the body is answered 408)."""
    try:
        async with asyncio.timeout(timeout):
            return await _receive_body(receive)
    except TimeoutError:
        msg = f"the request body did not arrive within {timeout:g} s"
        raise HTTPError(HTTPStatus.REQUEST_TIMEOUT, msg) from None


async def _receive_body(receive: Receive) -> bytes:
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
        depth = _json_depth(body)
        if depth > MAX_JSON_DEPTH:
            msg = (
                f"the JSON body is nested {depth} deep (at most {MAX_JSON_DEPTH}); "
                'send a flat object: {"route": "name"}'
            )
            raise HTTPError(HTTPStatus.BAD_REQUEST, msg)
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


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def _json_depth(body: bytes) -> int:
    """How deep ``body``'s arrays and objects nest (brackets inside strings aside)."""
    depth = deepest = 0
    for byte in _JSON_STRING.sub(b'""', body):
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    return deepest


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
    session_seconds: float = SESSION_SECONDS,
    body_timeout: float = BODY_TIMEOUT,
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
        session_seconds: how long a sign-in lasts (default 12 hours); signing out
            ends it sooner, for every worker sharing the ledger.
        body_timeout: seconds a client has to send a POST body (default 10); a
            slower one is answered 408.

    Returns:
        An ASGI 3 application serving ``GET /``, ``/status.json``, ``/metrics`` and
        ``POST /login``, ``/logout``, ``/reset``, ``/enable`` (see the module docstring).

    Raises:
        ConfigurationError: for an admin token shorter than 16 characters.
    """
    return StatusApp(
        router,
        admin_token=admin_token,
        allowed_hosts=allowed_hosts,
        open_reads=open_reads,
        session_seconds=session_seconds,
        body_timeout=body_timeout,
    )
