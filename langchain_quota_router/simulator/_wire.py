"""What every vendor wire format must provide to the simulator's HTTP server."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ._engine import BadRequest, Completion, ParsedRequest
from ._quota import Refusal, Usage
from ._types import RetireStyle, SimKey, SimModel, Vendor

T = TypeVar("T")


@dataclass(frozen=True)
class HttpAnswer:
    """A complete (non-streamed) HTTP answer."""

    status: int
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamEvent:
    """One server-sent event, already encoded; ``content`` marks model output."""

    data: bytes
    content: bool = False


def sse(payload: Mapping[str, Any] | str, event: str | None = None) -> bytes:
    """Encode one server-sent event."""
    data = payload if isinstance(payload, str) else json.dumps(payload)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()


def gone(model: str, successor: str | None) -> HttpAnswer:
    """The 410 a retired endpoint answers (GitHub Models' shape), on any wire."""
    message = f"The model `{model}` has been retired and is no longer available."
    if successor:
        message += f" Use `{successor}` instead."
    return HttpAnswer(410, {"error": {"code": "gone", "message": message}})


def page(
    items: Sequence[T],
    size: str | None,
    token: str | None,
    *,
    default: int,
    maximum: int = 1000,
) -> tuple[list[T], str | None]:
    """Cut one page out of ``items`` for a paged list endpoint.

    The page token is the offset of the page's first item, as text: opaque
    enough for clients, which only hand it back.

    Args:
        items: everything there is to list, in order.
        size: the page size the client asked for (``None``/empty: ``default``);
            sizes above ``maximum`` are cut to it, as Gemini and Cohere do.
        token: the token from the previous page (``None``/empty: the first).
        default: the page size when none is asked for.
        maximum: the largest page served.

    Returns:
        The page and the next page's token (``None`` on the last page).

    Raises:
        BadRequest: the size or token is not one this endpoint handed out.
    """
    try:
        wanted = int(float(size)) if size else default
        start = int(token) if token else 0
    except ValueError as exc:
        msg = f"invalid page size or page token: {exc}"
        raise BadRequest(msg) from exc
    if wanted < 1 or start < 0 or start > len(items):
        msg = "invalid page size or page token"
        raise BadRequest(msg)
    end = start + min(wanted, maximum)
    return list(items[start:end]), (str(end) if end < len(items) else None)


class Wire(ABC):
    """A vendor's HTTP dialect: how keys arrive, requests look, answers and errors."""

    vendor: Vendor

    @abstractmethod
    def api_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str:
        """Return the API key the request carries ('' if none)."""

    @abstractmethod
    def parse(self, body: Mapping[str, Any], path_model: str, stream: bool) -> ParsedRequest:
        """Turn a request body into a vendor-neutral request.

        Raises:
            BadRequest: the body is not a valid request.
        """

    @abstractmethod
    def answer(
        self, request: ParsedRequest, completion: Completion, rid: str, now: float
    ) -> HttpAnswer:
        """The non-streamed 200 answer (``rid``: a fresh response id; ``now``: time)."""

    @abstractmethod
    def stream(
        self, request: ParsedRequest, completion: Completion, rid: str, now: float
    ) -> list[StreamEvent]:
        """The streamed 200 answer, event by event."""

    def success_headers(self, key: SimKey, usage: Usage) -> dict[str, str]:
        """Headers every 200 answer carries (rate-limit headers where the vendor
        sends them)."""
        del key, usage
        return {}

    @abstractmethod
    def rate_limited(self, key: SimKey, model: str, refusal: Refusal, usage: Usage) -> HttpAnswer:
        """The 429 answer for a request over one of the key's limits."""

    @abstractmethod
    def unauthorized(self, alias: str) -> HttpAnswer:
        """The answer for an unknown or disabled key."""

    @abstractmethod
    def server_error(self, status: int) -> HttpAnswer:
        """A 5xx answer (500 internal error, 503/529 overloaded)."""

    @abstractmethod
    def bad_request(self, message: str) -> HttpAnswer:
        """A 400 answer."""

    @abstractmethod
    def model_unavailable(
        self,
        model: str,
        style: RetireStyle,
        successor: str | None,
        *,
        api_version: str = "v1beta",
        method: str = "generateContent",
    ) -> HttpAnswer:
        """The answer for a retired or unknown ``model``.

        Args:
            model: the model the request named.
            style: which answer (see ``RetireStyle``).
            successor: the model to name instead, where the answer names one.
            api_version: the API version in the request's path (Gemini names it).
            method: the method asked for (Gemini names it).
        """

    @abstractmethod
    def model_list(self, models: Sequence[SimModel], query: Mapping[str, str]) -> HttpAnswer:
        """The 200 answer of the list-models endpoint (``query``: paging options).

        Raises:
            BadRequest: bad paging options.
        """

    @abstractmethod
    def model_info(self, model: SimModel) -> HttpAnswer:
        """The 200 answer of the get-model endpoint."""
