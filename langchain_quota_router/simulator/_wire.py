"""What every vendor wire format must provide to the simulator's HTTP server."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._engine import Completion, ParsedRequest
from ._quota import Refusal, Usage
from ._types import SimKey, Vendor


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
