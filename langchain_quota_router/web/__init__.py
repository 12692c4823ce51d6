"""The status page of a router: see :mod:`langchain_quota_router.web.app`."""

from langchain_quota_router.web.app import (
    ADMIN_TOKEN_ENV,
    SESSION_COOKIE,
    ASGIApp,
    StatusApp,
    StatusServer,
    create_app,
    history_chart,
    make_server,
    render_page,
    serve,
    status_snapshot,
)

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
