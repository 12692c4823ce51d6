"""Public value types of the vendor simulator: keys, scripted replies, faults, stats."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

Vendor = Literal["openai", "groq", "gemini", "cohere"]
"""The vendors whose wire formats the simulator speaks."""

VENDORS: tuple[Vendor, ...] = get_args(Vendor)

RetireStyle = Literal["not_found", "decommissioned", "gone"]
"""How a retired model's chat and embed requests are answered.

- ``"not_found"``: the vendor's own 404 for an unknown model (OpenAI and Groq
  ``model_not_found``, Gemini ``NOT_FOUND``, Cohere ``model '...' not found``).
- ``"decommissioned"``: Groq's 400 ``model_decommissioned`` (Groq only).
- ``"gone"``: 410 with ``{"error": {"code": "gone", ...}}``, as GitHub Models
  answered after its retirement (any vendor's wire).
"""

RETIRE_STYLES: tuple[RetireStyle, ...] = get_args(RetireStyle)

Endpoint = Literal["chat", "embed"]
"""Which kind of request: a chat completion or an embedding."""


def fingerprint(key: str) -> str:
    """Return a short, stable alias for an API key, safe to print or log.

    Args:
        key: the secret key.

    Returns:
        ``key-`` followed by the first 8 hex digits of the key's SHA-256.
    """
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class SimKey:
    """An API key the simulator accepts, with the limits it enforces for that key.

    Windows follow the vendor: ``rpm``/``tpm`` are sliding 60-second windows;
    ``rpd``/``tpd`` are calendar days, starting at midnight America/Los_Angeles
    for ``gemini`` and midnight UTC for everyone else. Token limits count input +
    output tokens, except for ``gemini`` where they count input tokens only (as
    Gemini's free tier does). ``None`` means "no such limit".

    Attributes:
        key: the secret key clients send. Never printed: see ``alias``.
        vendor: one of ``"openai"``, ``"groq"``, ``"gemini"``, ``"cohere"``.
        rpm: requests per minute.
        rpd: requests per day.
        tpm: tokens per minute.
        tpd: tokens per day.
    """

    key: str = field(repr=False)
    vendor: Vendor
    rpm: int | None = None
    rpd: int | None = None
    tpm: int | None = None
    tpd: int | None = None

    def __post_init__(self) -> None:
        if not self.key:
            msg = "SimKey.key must not be empty"
            raise ValueError(msg)
        if self.vendor not in VENDORS:
            msg = f"SimKey.vendor must be one of {VENDORS}, got {self.vendor!r}"
            raise ValueError(msg)
        for name in ("rpm", "rpd", "tpm", "tpd"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                msg = f"SimKey.{name} must be a non-negative int or None, got {value!r}"
                raise ValueError(msg)

    @property
    def alias(self) -> str:
        """A printable stand-in for the key (a hash prefix, never the key)."""
        return fingerprint(self.key)


@dataclass(frozen=True)
class SimModel:
    """A model the simulator serves on one vendor's wire, or has retired.

    The limits below are only reported by the list-models endpoints (Gemini
    ``inputTokenLimit``/``outputTokenLimit``, Cohere ``context_length``, Groq
    ``context_window``/``max_completion_tokens``); chat requests are not checked
    against them.

    Attributes:
        id: the name clients send (``gpt-4o-mini``; for Gemini without the
            ``models/`` prefix, which is dropped if given).
        context_window: input token limit to report.
        max_output_tokens: output token limit to report.
        display_name: Gemini's ``displayName`` (default: the id).
        owned_by: OpenAI/Groq ``owned_by`` (default: ``"system"`` on OpenAI; on
            Groq the id's prefix before ``/``, else ``"Groq"``).
        created: Unix time reported as ``created`` (OpenAI/Groq).
        retired: chat and embed requests are refused as for a retired model and it is
            left out of list-models.
        successor: the model the vendor names instead (named in the ``"gone"``
            answer; kept for tests to read).
        retired_style: how a retired model is refused; ``None``: the vendor's
            default (``"decommissioned"`` for Groq, ``"not_found"`` otherwise).
    """

    id: str
    context_window: int = 128_000
    max_output_tokens: int = 8_192
    display_name: str | None = None
    owned_by: str | None = None
    created: int = 1_700_000_000
    retired: bool = False
    successor: str | None = None
    retired_style: RetireStyle | None = None

    def __post_init__(self) -> None:
        if not self.id:
            msg = "SimModel.id must not be empty"
            raise ValueError(msg)
        for name in ("context_window", "max_output_tokens", "created"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                msg = f"SimModel.{name} must be a non-negative int, got {value!r}"
                raise ValueError(msg)
        if self.retired_style is not None and self.retired_style not in RETIRE_STYLES:
            msg = (
                f"SimModel.retired_style must be one of {RETIRE_STYLES}, got {self.retired_style!r}"
            )
            raise ValueError(msg)


@dataclass(frozen=True)
class ToolCall:
    """A tool call the simulated model makes.

    Attributes:
        name: the tool's name.
        args: the arguments, as a JSON object.
        id: the call's id; ``None`` lets the simulator make a deterministic one
            (and, as Gemini does, send none at all on the Gemini wire).
    """

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True)
class Reply:
    """A scripted answer, queued with ``Simulator.script``.

    Attributes:
        text: the answer's text (sent as the tool plan / content next to tool calls
            when both are given).
        tool_calls: tool calls to make.
        input_tokens: report (and count against the limits) this many input tokens
            instead of the simulator's own count.
        output_tokens: likewise for output tokens.
    """

    text: str = ""
    tool_calls: Sequence[ToolCall] = ()
    input_tokens: int | None = None
    output_tokens: int | None = None


class Fault(enum.Enum):
    """A failure to inject for a key with ``Simulator.inject``.

    Faulted requests never count against the key's quota.
    """

    SERVER_ERROR = "server_error"
    """Answer 500 in the vendor's error format."""
    OVERLOADED = "overloaded"
    """Answer 503 (or the ``status`` given to ``inject``, e.g. 529)."""
    UNAUTHORIZED = "unauthorized"
    """Answer 401 as for an unknown key."""
    SLOW = "slow"
    """Wait ``delay`` real seconds, then answer normally (counted if served)."""
    CUT_STREAM = "cut_stream"
    """Drop the connection after ``after_chunks`` content chunks (0: before the
    first); a non-streaming request gets no response at all."""


@dataclass(frozen=True)
class KeyStats:
    """What happened to the chat and embed requests that named one key (``Simulator.stats``)
    or one model (``Simulator.model_stats``).

    Attributes:
        received: chat and embed requests that arrived with this key (or for this
            model); embed calls count as one request each, like chat.
        served: requests answered with 200 (a cut stream is a fault, not served).
        refused: requests refused with 429 because a limit was reached.
        faults: requests that hit an injected fault (SLOW ones may also be served).
        unauthorized: requests answered 401 (unknown or disabled key, or fault).
        input_tokens: input tokens counted for served requests.
        output_tokens: output tokens counted for served requests.
        model_unavailable: requests refused because the model is retired, or not
            among the configured models (404, Groq's 400, or 410).
        listed: list-models and get-model requests with this key (any answer);
            they are not chat or embed requests: not in ``received``, never counted
            against a limit. Always 0 in ``model_stats``.
    """

    received: int = 0
    served: int = 0
    refused: int = 0
    faults: int = 0
    unauthorized: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    model_unavailable: int = 0
    listed: int = 0


@dataclass(frozen=True)
class RecordedRequest:
    """One request the simulator received, as kept by ``Simulator.requests``.

    Attributes:
        key_alias: the fingerprint of the key the request named (never the key).
        vendor: the wire the request came in on.
        model: the model it asked for.
        stream: whether it asked for a stream.
        status: the HTTP status answered (0 when the connection was cut).
        input_tokens: input tokens reported (0 unless served).
        output_tokens: output tokens reported (0 unless served).
        body: the parsed JSON body (empty if it was not JSON).
        endpoint: ``"chat"`` or ``"embed"``.
    """

    key_alias: str
    vendor: Vendor
    model: str
    stream: bool
    status: int
    input_tokens: int
    output_tokens: int
    body: Mapping[str, Any]
    endpoint: Endpoint = "chat"
