"""The proxy on uvicorn: one process, ``workers`` processes, or any ASGI server.

- :func:`make_server` / :func:`serve`: one process serving a router you built.
- ``quota-router proxy --workers N``: N uvicorn worker processes, each building the
  router from ``$QUOTA_ROUTER_CONFIG`` (or the environment) through :func:`app_from_env`,
  all counting in the same ledger.
- Any ASGI server, with the same factory::

      QUOTA_ROUTER_CONFIG=router.toml QUOTA_ROUTER_PROXY_KEYS=sk-... \\
          uvicorn --factory langchain_quota_router.proxy.server:app_from_env --port 4000

Shutdown (SIGTERM, Ctrl+C) stops taking connections, gives calls under way
``shutdown_grace`` seconds, then cancels them: each settles its reservation.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from langchain_quota_router._errors import ConfigurationError
from langchain_quota_router.proxy.app import SHUTDOWN_GRACE, ProxyApp
from langchain_quota_router.proxy.auth import CLIENT_KEYS_ENV, generate_key
from langchain_quota_router.web.auth import is_loopback
from langchain_quota_router.web.server import AsgiServer, bind, uvicorn_for

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings

    from langchain_quota_router.chat.model import QuotaRoutedChatModel

__all__ = ["CONFIG_ENV", "ProxyServer", "app_from_env", "make_server", "serve", "serve_workers"]

CONFIG_ENV = "QUOTA_ROUTER_CONFIG"
_EXTRA = "pip install 'langchain-quota-router[proxy,web]'"


def _uvicorn() -> ModuleType:
    return uvicorn_for("the proxy's server", _EXTRA)


def keys_for(host: str, client_keys: Iterable[str] | None) -> tuple[list[str] | None, bool]:
    """The client keys to serve ``host`` with, and whether one was generated here:
    beyond loopback, no configured key means a generated one."""
    keys = list(client_keys) if client_keys is not None else None
    configured = keys if keys is not None else os.environ.get(CLIENT_KEYS_ENV, "").split(",")
    if is_loopback(host) or any(k.strip() for k in configured):
        return keys, False
    return [generate_key()], True


class ProxyServer(AsgiServer):
    """The proxy on uvicorn, bound but not serving yet (see :func:`make_server`)."""

    def __init__(self, app: ProxyApp, sock: socket.socket, *, key_generated: bool) -> None:
        super().__init__(app, sock, _uvicorn(), grace=app.shutdown_grace)
        self.app = app
        self.key_generated = key_generated

    @property
    def url(self) -> str:
        """The OpenAI base URL, such as ``http://127.0.0.1:4000/v1``."""
        return self._base_url() + "/v1"


def make_server(
    router: QuotaRoutedChatModel,
    host: str = "127.0.0.1",
    port: int = 4000,
    *,
    embeddings: Embeddings | None = None,
    client_keys: Iterable[str] | None = None,
    shutdown_grace: float = SHUTDOWN_GRACE,
    **app_options: Any,
) -> ProxyServer:
    """A bound, not yet serving, proxy for ``router`` (``port=0`` picks a free port).

    Beyond loopback, with no client key given or in ``$QUOTA_ROUTER_PROXY_KEYS``, a
    key is generated (``server.app.keys.keys()``; ``server.key_generated``).

    Raises:
        ImportError: without uvicorn (the ``web`` extra), naming it.
    """
    _uvicorn()
    keys, generated = keys_for(host, client_keys)
    app = ProxyApp(
        router,
        embeddings=embeddings,
        client_keys=keys,
        shutdown_grace=shutdown_grace,
        **app_options,
    )
    return ProxyServer(app, bind(host, port, backlog=1024), key_generated=generated)


def _announce(url: str, keys: list[str], generated: bool, workers: int) -> None:
    lines = [f"quota router proxy on {url} ({workers} worker(s); Ctrl+C to stop)"]
    if generated:
        lines.append(
            f"client key (shown once; set ${CLIENT_KEYS_ENV} to choose your own): {keys[0]}"
        )
    elif keys:
        lines.append(f"clients must send one of the {len(keys)} key(s) in ${CLIENT_KEYS_ENV}")
    else:
        lines.append("no client keys: only programs on this machine are served")
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()


def serve(
    router: QuotaRoutedChatModel,
    host: str = "127.0.0.1",
    port: int = 4000,
    **options: Any,
) -> None:
    """Serve ``router`` in this process until interrupted; print the address (and a
    generated client key, once)."""
    server = make_server(router, host, port, **options)
    _announce(server.url, server.app.keys.keys(), server.key_generated, 1)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def app_from_env() -> ProxyApp:
    """The proxy of the router ``$QUOTA_ROUTER_CONFIG`` names (else the environment's),
    with the client keys of ``$QUOTA_ROUTER_PROXY_KEYS``: the factory each worker
    process calls (``uvicorn --factory``)."""
    from langchain_quota_router.chat.model import QuotaRoutedChatModel

    path = os.environ.get(CONFIG_ENV)
    if path:
        if not Path(path).is_file():
            msg = f"config file {path} (${CONFIG_ENV}) does not exist"
            raise ConfigurationError(msg)
        router = QuotaRoutedChatModel.from_config(path)
    else:
        router = QuotaRoutedChatModel.from_env()
    return ProxyApp(router)


def serve_workers(
    config: str | None,
    host: str = "127.0.0.1",
    port: int = 4000,
    workers: int = 2,
    *,
    shutdown_grace: float = SHUTDOWN_GRACE,
) -> None:
    """Serve with ``workers`` uvicorn processes, each building the router from
    ``config`` (else ``$QUOTA_ROUTER_CONFIG``, else the environment); they share the
    configured ledger and so every limit."""
    uvicorn = _uvicorn()
    keys, generated = keys_for(host, None)
    if config is not None:
        os.environ[CONFIG_ENV] = str(Path(config).resolve())
    if keys:  # the workers read the keys (a generated one too) from the environment
        os.environ[CLIENT_KEYS_ENV] = ",".join(keys)
    shown = f"[{host}]" if ":" in host else host
    listed = [k for k in os.environ.get(CLIENT_KEYS_ENV, "").split(",") if k.strip()]
    _announce(f"http://{shown}:{port}/v1", listed, generated, workers)
    uvicorn.run(
        "langchain_quota_router.proxy.server:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        lifespan="on",
        loop="asyncio",
        http="h11",
        ws="none",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=shutdown_grace,
    )
