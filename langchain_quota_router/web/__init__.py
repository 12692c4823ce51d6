"""A status page for a router: quota bars per pool, route states, reset and enable.

One module per job; imports go one way (server -> app -> auth, page -> asgi):

- :mod:`~langchain_quota_router.web.app`: the ASGI app (:func:`create_app`), its
  endpoints and request parsing.
- :mod:`~langchain_quota_router.web.auth`: who may read and who may change (the
  admin token, the sign-in cookie, Host and cross-site checks).
- :mod:`~langchain_quota_router.web.page`: the HTML page and its SVG charts.
- :mod:`~langchain_quota_router.web.server`: uvicorn, :func:`make_server` and
  :func:`serve`.
- :mod:`~langchain_quota_router.web.asgi`: the ASGI types and the error they share.

Example:
    ```python
    from langchain_quota_router.web import serve

    serve(router, port=8765)  # http://127.0.0.1:8765/ until Ctrl+C; prints the token
    ```
"""

from langchain_quota_router.quota.status import status_snapshot
from langchain_quota_router.web.app import StatusApp, create_app
from langchain_quota_router.web.asgi import ASGIApp
from langchain_quota_router.web.auth import ADMIN_TOKEN_ENV, SESSION_COOKIE
from langchain_quota_router.web.page import history_chart, render_page
from langchain_quota_router.web.server import StatusServer, make_server, serve

__all__ = [
    "ADMIN_TOKEN_ENV",
    "SESSION_COOKIE",
    "ASGIApp",
    "StatusApp",
    "StatusServer",
    "create_app",
    "history_chart",
    "make_server",
    "render_page",
    "serve",
    "status_snapshot",
]
