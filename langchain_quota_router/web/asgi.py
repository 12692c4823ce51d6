"""The few ASGI pieces every module of the status page shares: types, a header, an error.

Kept apart so that :mod:`~langchain_quota_router.web.auth` can refuse a request
(raise :class:`HTTPError`) without importing the application that answers it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import Any

__all__ = ["ASGIApp", "HTTPError", "Message", "Receive", "Response", "Scope", "Send", "header"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
"""An ASGI 3 application."""

Response = tuple[HTTPStatus, list[tuple[str, str]], bytes]
"""A whole answer: its status, its headers (security headers are added later) and body."""


class HTTPError(Exception):
    """A response other than 2xx/3xx, with a message for people."""

    def __init__(
        self, status: HTTPStatus, message: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


def header(scope: Scope, name: str) -> str | None:
    """The value of request header ``name`` (lowercase), or ``None`` without one."""
    wanted = name.encode("latin-1")
    for key, value in scope.get("headers", []):
        if bytes(key).lower() == wanted:
            return bytes(value).decode("latin-1")
    return None
