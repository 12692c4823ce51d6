"""Who may read the status page and who may change quotas: the admin token and its checks.

- **Signing in** with the admin token starts a session: a cookie holding its issue
  time, signed (HMAC) with a key derived from the admin token and the ledger's
  *session generation* (:class:`Sessions`). Every worker sharing the ledger
  checks it alike; it expires after ``session_seconds``; signing out (and starting
  a page, which is a restart) moves the generation on, which ends every session and
  form token everywhere. Only a number is kept in the ledger, never a secret.
- **Changing anything** (reset, enable) needs the admin token, every time: the
  ``token`` field the page's own forms carry once the owner has signed in (signed
  like the session, and as short-lived), or an ``Authorization: Bearer`` header
  from a script. A session cookie alone is not
  enough, so a forged cross-site form cannot ride on it. The token comes from
  ``admin_token=``, else ``$QUOTA_ROUTER_ADMIN_TOKEN``, else it is generated (and
  :func:`~langchain_quota_router.web.server.serve` prints it once).
- **Reading** (the page, ``/status.json``, ``/metrics``) is open to clients on the
  same machine (a loopback address, and no proxy's forwarding headers), and needs
  the token from anywhere else: a signed-in browser's cookie, or ``Authorization:
  Bearer`` (what Prometheus's ``authorization`` setting sends). Local readers can
  read the ledger's file anyway; remote ones would learn which vendors, keys'
  pools and models a service uses, and when its quota runs out. ``open_reads=``
  overrides the rule (``False`` behind a reverse proxy on the same machine).
- **The Host header** must name the address the request came in on (``localhost``
  too, on loopback) or one of ``allowed_hosts``: a DNS-rebinding page, whose Host
  and Origin are both the attacker's name, gets 403 for every request.
- **Cross-site posts** are refused: ``Origin: null``, an ``Origin`` (or, without
  one, a ``Referer``) not matching the Host, and ``Sec-Fetch-Site`` other than
  ``same-origin``.
- **Every response** (its headers are set in :mod:`~langchain_quota_router.web.app`)
  forbids framing (``X-Frame-Options: DENY``, CSP
  ``frame-ancestors 'none'``), scripts and outside resources (CSP ``default-src
  'none'``), caching and content sniffing.

Everything here decides and refuses (:class:`~langchain_quota_router.web.asgi.HTTPError`);
nothing here renders: the page code never sees the token, only the form value derived
from it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from collections.abc import Iterable
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from langchain_quota_router._errors import ConfigurationError
from langchain_quota_router.quota.ledger import Demand, Reservation
from langchain_quota_router.quota.limits import MAX_AMOUNT, Limit
from langchain_quota_router.web.asgi import HTTPError, Scope, header

if TYPE_CHECKING:
    from langchain_quota_router.quota.clock import Clock
    from langchain_quota_router.quota.ledger import Ledger

__all__ = [
    "ADMIN_TOKEN_ENV",
    "MIN_TOKEN_LENGTH",
    "SESSION_COOKIE",
    "SESSION_SECONDS",
    "Access",
    "Sessions",
    "choose_admin_token",
    "is_loopback",
    "same_secret",
    "session_cookie",
]

ADMIN_TOKEN_ENV = "QUOTA_ROUTER_ADMIN_TOKEN"  # noqa: S105 - a variable's name, not a token
"""The environment variable holding the admin token, when ``admin_token=`` is not given."""

#: An admin token shorter than this is refused: it could be guessed.
MIN_TOKEN_LENGTH = 16
#: The name of the signed-in owner's cookie.
SESSION_COOKIE = "quota_router_session"

#: How long a sign-in lasts, by default: a working day.
SESSION_SECONDS = 12 * 3600.0
#: The ledger pool whose request count is the session generation. No route names it,
#: so no status, chart or report shows it.
_GENERATION_POOL = "quota-router status page sessions"
_GENERATION_LIMITS = (Limit.parse(f"{MAX_AMOUNT}/once"),)

#: Headers a reverse proxy adds: a request that has one did not start on this machine.
_FORWARDING = ("forwarded", "x-forwarded-for", "x-real-ip")


def choose_admin_token(given: str | None) -> tuple[str, bool]:
    """The admin token to use, and whether it was generated here.

    Raises:
        ConfigurationError: for a token shorter than :data:`MIN_TOKEN_LENGTH`.
    """
    token = given if given is not None else os.environ.get(ADMIN_TOKEN_ENV, "")
    if not token:
        return secrets.token_urlsafe(24), True
    if len(token) < MIN_TOKEN_LENGTH:
        source = "admin_token" if given is not None else f"${ADMIN_TOKEN_ENV}"
        msg = (
            f"{source} is too short to be safe: use at least {MIN_TOKEN_LENGTH} characters "
            "(python -c 'import secrets; print(secrets.token_urlsafe())' makes one)"
        )
        raise ConfigurationError(msg)
    return token, False


def _derive(token: str, purpose: str) -> str:
    """A value for one purpose (the cookie, the forms) that does not reveal the token."""
    return hmac.new(token.encode(), f"quota-router {purpose}".encode(), hashlib.sha256).hexdigest()


def same_secret(given: str | None, expected: str) -> bool:
    """Whether ``given`` is the secret ``expected``, in time that does not depend on where
    they differ."""
    # compare_digest on bytes: on str it refuses non-ASCII, which anyone can send.
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) names this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str | None:
    """The name in a Host header (``[::1]:8765`` gives ``::1``), lowercased."""
    host = header.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        rest = host[end + 1 :] if end > 0 else ""
        if end <= 0 or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        return host[1:end]
    name, colon, port = host.partition(":")
    if colon and not port.isdigit():
        return None
    return name.rstrip(".") or None


class Sessions:
    """Signed, expiring sign-ins and form tokens, ended for every worker by a sign-out.

    A session is ``"<issued>.<signature>"``: its issue time (whole seconds, by the
    router's clock) signed with HMAC-SHA256 under a key derived from the admin token
    and the current *generation*, a number kept in the ledger as the request count of
    a pool no route names. Workers sharing the ledger share the generation; moving it
    on (a random step, so a fresh in-memory ledger never lands on an old number)
    refuses every session and form token signed before.
    """

    def __init__(self, token: str, ledger: Ledger, clock: Clock, lifetime: float) -> None:
        self._token = token
        self._ledger = ledger
        self._clock = clock
        self.lifetime = lifetime

    def now(self) -> int:
        """The router's clock, in whole seconds."""
        return int(self._clock.now())

    def generation(self) -> int:
        """The ledger's current generation."""
        (usage,) = self._ledger.usage(_GENERATION_POOL, _GENERATION_LIMITS, self._clock.now())
        return usage.used

    def rotate(self) -> None:
        """Move the generation on: every session and form token so far is refused."""
        now = self._clock.now()
        step = Demand(requests=secrets.randbelow(2**24) + 1)
        made = self._ledger.reserve(_GENERATION_POOL, _GENERATION_LIMITS, step, now)
        if not isinstance(made, Reservation):  # counted up to 2**53: start again
            self._ledger.reset(_GENERATION_POOL)
            made = self._ledger.reserve(_GENERATION_POOL, _GENERATION_LIMITS, step, now)
        if isinstance(made, Reservation):
            self._ledger.settle_now(made, step, now)

    def _sign(self, purpose: str, issued: int, generation: int) -> str:
        key = _derive(self._token, f"session key {generation}").encode()
        return hmac.new(key, f"{purpose} {issued}".encode(), hashlib.sha256).hexdigest()

    def issue(self, purpose: str, issued: int | None = None) -> str:
        """A signed value for ``purpose`` (``"session"``, ``"form"``) issued at
        ``issued`` (default now)."""
        when = self.now() if issued is None else issued
        return f"{when}.{self._sign(purpose, when, self.generation())}"

    def check(self, purpose: str, value: str | None) -> int | None:
        """The issue time of a valid, unexpired ``value`` for ``purpose``, else ``None``."""
        if not value:
            return None
        issued_text, _, signature = value.partition(".")
        if not issued_text.isascii() or not issued_text.isdigit() or len(issued_text) > 12:
            return None
        issued = int(issued_text)
        age = self._clock.now() - issued
        if not -60 <= age < self.lifetime:  # a minute's grace for clocks that disagree
            return None
        return (
            issued
            if same_secret(signature, self._sign(purpose, issued, self.generation()))
            else None
        )


class Access:
    """Who may read and who may change: the admin token and the names the page answers to."""

    def __init__(
        self,
        token: str,
        allowed_hosts: Iterable[str],
        open_reads: bool | None,
        sessions: Sessions,
    ) -> None:
        self.token = token
        self.allowed_hosts = frozenset(h.strip().lower().rstrip(".") for h in allowed_hosts)
        self.open_reads = open_reads
        self.sessions = sessions

    def check_host(self, scope: Scope) -> None:
        """Refuse a Host header this page was not bound to or told about (DNS rebinding)."""
        given = header(scope, "host")
        name = None if given is None else _host_name(given)
        if name is not None and self._host_allowed(name, scope.get("server")):
            return
        shown = "no Host header" if given is None else f"Host {given!r}"
        msg = (
            f"{shown} is not a name this page answers to; to serve it under another name, "
            "start it with --allow-host NAME (allowed_hosts=[...] in Python)"
        )
        raise HTTPError(HTTPStatus.FORBIDDEN, msg)

    def _host_allowed(self, name: str, server: Any) -> bool:
        if "*" in self.allowed_hosts or name in self.allowed_hosts:
            return True
        if not server:
            return False
        bound = str(server[0]).lower()
        # On loopback, "localhost" and "127.0.0.1" are the same page; a rebinding
        # attacker's name is neither.
        return name == bound or (is_loopback(bound) and is_loopback(name))

    def reads_open(self, scope: Scope) -> bool:
        """Whether this request may read without the token: it came from this machine."""
        if self.open_reads is not None:
            return self.open_reads
        client = scope.get("client")
        if not client or not is_loopback(str(client[0])):
            return False
        return not any(header(scope, name) for name in _FORWARDING)

    def session(self, scope: Scope) -> int | None:
        """When the owner's session was issued (now, for the token as a bearer
        credential), or ``None`` for someone not signed in."""
        if self._bearer(scope):
            return self.sessions.now()
        return self.sessions.check("session", self._cookie(scope))

    def signed_in(self, scope: Scope) -> bool:
        """The owner's valid session cookie, or the token as a bearer credential."""
        return self.session(scope) is not None

    @staticmethod
    def _cookie(scope: Scope) -> str | None:
        cookie = header(scope, "cookie")
        if not cookie:
            return None
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(cookie)
        except CookieError:
            return None
        morsel = jar.get(SESSION_COOKIE)
        return None if morsel is None else morsel.value

    def form_token(self, issued: int) -> str:
        """The token the page's forms carry for a session issued at ``issued``."""
        return self.sessions.issue("form", issued)

    def _bearer(self, scope: Scope) -> bool:
        auth = header(scope, "authorization") or ""
        scheme, _, credentials = auth.strip().partition(" ")
        return scheme.lower() == "bearer" and same_secret(credentials.strip(), self.token)

    def may_change(self, scope: Scope, fields: dict[str, list[str]]) -> bool:
        """The token came with the request itself: a form field or a bearer header."""
        if self._bearer(scope):
            return True
        given = fields.get("token", [])
        if len(given) != 1:
            return False
        # Both checked, always: the answer's timing says nothing about which matched.
        form = self.sessions.check("form", given[0]) is not None
        raw = same_secret(given[0], self.token)
        return form or raw

    @staticmethod
    def check_same_origin(scope: Scope) -> None:
        """Refuse a post another site's page sent (CSRF), by what the browser says."""
        refused = "cross-site requests may not change quotas"
        site = header(scope, "sec-fetch-site")
        if site is not None and site.strip().lower() not in ("same-origin", "none"):
            raise HTTPError(HTTPStatus.FORBIDDEN, f"{refused} (Sec-Fetch-Site: {site})")
        host = (header(scope, "host") or "").strip().lower()
        origin = header(scope, "origin")
        if origin is not None:
            if origin.strip().lower() == "null":
                # Sandboxed frames, file: and data: pages: no one to trust.
                raise HTTPError(HTTPStatus.FORBIDDEN, f"{refused} (Origin: null)")
            if _netloc(origin) != host:
                raise HTTPError(HTTPStatus.FORBIDDEN, f"{refused} (Origin: {origin})")
            return
        referer = header(scope, "referer")
        if referer and _netloc(referer) != host:
            raise HTTPError(HTTPStatus.FORBIDDEN, f"{refused} (Referer from another site)")


def _netloc(url: str) -> str | None:
    try:
        return urlsplit(url.strip()).netloc.lower()
    except ValueError:
        return None


def session_cookie(scope: Scope, value: str) -> str:
    """The session cookie (an empty value signs out): never readable by scripts,
    never sent with another site's requests."""
    parts = [
        f"{SESSION_COOKIE}={value}",
        f"Path={scope.get('root_path', '') or '/'}",
        "HttpOnly",
        "SameSite=Strict",
    ]
    if not value:
        parts.append("Max-Age=0")
    if scope.get("scheme") == "https":
        parts.append("Secure")
    return "; ".join(parts)
