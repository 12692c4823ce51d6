"""The status page on its own server: uvicorn on a socket, and ``serve`` for a terminal.

Needs the ``web`` extra (uvicorn); the ASGI app in :mod:`~langchain_quota_router.web.app`
does not, so it mounts in any ASGI server without it.

Example:
    ```python
    from langchain_quota_router.web import serve

    serve(router, port=8765)  # http://127.0.0.1:8765/ until Ctrl+C; prints the token
    ```
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
from collections.abc import Iterable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from langchain_quota_router.web.app import BODY_TIMEOUT, StatusApp, create_app
from langchain_quota_router.web.auth import ADMIN_TOKEN_ENV, SESSION_SECONDS, is_loopback

if TYPE_CHECKING:
    from langchain_quota_router.chat.model import QuotaRoutedChatModel

__all__ = ["AsgiServer", "StatusServer", "bind", "make_server", "serve", "uvicorn_for"]

logger = logging.getLogger(__name__)

_WEB_EXTRA = "pip install 'langchain-quota-router[web]'"


def uvicorn_for(server: str = "the status page's server", extra: str = _WEB_EXTRA) -> ModuleType:
    """The uvicorn module, or an ImportError naming ``server`` and the ``extra``
    command that installs it."""
    try:
        import uvicorn
    except ImportError as exc:
        msg = f"{server} needs uvicorn: {extra}"
        raise ImportError(msg) from exc
    return uvicorn


class AsgiServer:
    """An ASGI app on uvicorn, bound to its address but not serving yet: the status
    page's and the proxy's server.

    Call :meth:`serve_forever` (in a thread if need be) and :meth:`shutdown` from
    another thread to stop; :attr:`server_address` says the port when ``port=0``
    picked a free one.

    Args:
        app: the ASGI app.
        sock: a bound, listening socket.
        uvicorn: the uvicorn module.
        grace: seconds requests under way get when the server stops.
    """

    def __init__(
        self, app: Any, sock: socket.socket, uvicorn: ModuleType, *, grace: float = 5.0
    ) -> None:
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
            timeout_graceful_shutdown=grace,
        )
        self._server = uvicorn.Server(config)
        self._stopped = threading.Event()
        self._stopped.set()
        host, port = sock.getsockname()[:2]
        self.server_address: tuple[str, int] = (str(host), int(port))
        """The bound host and port."""

    def _base_url(self) -> str:
        host, port = self.server_address
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown`, SIGTERM, or Ctrl+C in the main thread."""
        self._stopped.clear()
        try:
            self._server.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop serving (requests under way get the grace period) and wait until it
        has."""
        self._server.should_exit = True
        self._stopped.wait()

    def server_close(self) -> None:
        """Close the listening socket."""
        self.socket.close()


class StatusServer(AsgiServer):
    """The status page on uvicorn, bound to its address but not serving yet.

    Made by :func:`make_server`; see :class:`AsgiServer` for serving and stopping.
    """

    def __init__(self, app: StatusApp, sock: socket.socket) -> None:
        """Serve ``app`` on the bound, listening socket ``sock``."""
        super().__init__(app, sock, uvicorn_for())
        self.app = app

    @property
    def url(self) -> str:
        """The page's address, such as ``http://127.0.0.1:8765/``."""
        return self._base_url() + "/"


def bind(host: str, port: int, *, backlog: int = 128) -> socket.socket:
    """A socket bound to ``host:port`` and listening: connections wait in the
    backlog until the server runs, so there is no start-up race."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
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
    session_seconds: float = SESSION_SECONDS,
    body_timeout: float = BODY_TIMEOUT,
) -> StatusServer:
    """A bound, not yet serving, uvicorn server for the status page of ``router``.

    Args:
        router: the router to show and act on.
        host: the address to bind (default loopback only).
        port: the TCP port; 0 picks a free one.
        admin_token: see :func:`create_app`.
        allowed_hosts: see :func:`create_app`.
        open_reads: see :func:`create_app`.
        session_seconds: see :func:`create_app`.
        body_timeout: see :func:`create_app`.

    Returns:
        The server; ``server.app.admin_token`` is the token.

    Raises:
        ImportError: without the ``web`` extra (uvicorn), naming it.
        ConfigurationError: for an admin token shorter than 16 characters.
    """
    uvicorn_for()
    app = create_app(
        router,
        admin_token=admin_token,
        allowed_hosts=allowed_hosts,
        open_reads=open_reads,
        session_seconds=session_seconds,
        body_timeout=body_timeout,
    )
    if not is_loopback(host):
        logger.warning(
            "the status page on %s is reachable from other machines: they need the "
            "admin token to read it, and everyone needs it to reset or enable; serve "
            "it over TLS (a reverse proxy) so the token is not sent in clear",
            host,
        )
    return StatusServer(app, bind(host, port))


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
