"""Token usage per route and model, through LangChain callbacks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.tracers.context import register_configure_hook


@dataclass
class RouteUsage:
    """What one route and model spent while a handler listened."""

    route: str
    model_name: str
    calls: int = 0
    cache_hits: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


class QuotaUsageCallbackHandler(BaseCallbackHandler):
    """Adds up token usage and cost per route and model.

    Pass it as a callback (``llm.invoke(..., config={"callbacks": [handler]})``) or
    use :func:`get_quota_usage_callback`. Answers from the cache count as calls and
    hits but spend no tokens or money. Thread-safe.

    Attributes:
        usage: ``(route, model_name)`` -> :class:`RouteUsage`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.usage: dict[tuple[str, str], RouteUsage] = {}

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        """Count the usage of each answer."""
        for generations in response.generations:
            for generation in generations:
                if isinstance(generation, ChatGeneration) and isinstance(
                    generation.message, AIMessage
                ):
                    self._count(generation.message)

    def _count(self, message: AIMessage) -> None:
        meta = message.response_metadata
        route = str(meta.get("route") or "unrouted")
        model = str(meta.get("model_name") or "unknown")
        hit = bool(meta.get("cache_hit"))
        usage = message.usage_metadata
        with self._lock:
            entry = self.usage.setdefault((route, model), RouteUsage(route, model))
            entry.calls += 1
            if hit:
                entry.cache_hits += 1
                return
            if usage:
                entry.input_tokens += usage["input_tokens"]
                entry.output_tokens += usage["output_tokens"]
            entry.cost += float(meta.get("cost") or 0.0)

    @property
    def total_tokens(self) -> int:
        """Tokens spent across every route."""
        with self._lock:
            return sum(u.total_tokens for u in self.usage.values())

    @property
    def total_cost(self) -> float:
        """USD spent across every route with known prices."""
        with self._lock:
            return sum(u.cost for u in self.usage.values())

    def __repr__(self) -> str:
        with self._lock:
            rows = ", ".join(
                f"{u.route}/{u.model_name}: {u.calls} calls, {u.total_tokens} tokens"
                for u in self.usage.values()
            )
        return f"QuotaUsageCallbackHandler({rows})"


_current_handler: ContextVar[QuotaUsageCallbackHandler | None] = ContextVar(
    "quota_usage_callback", default=None
)
register_configure_hook(_current_handler, inheritable=True)


@contextmanager
def get_quota_usage_callback() -> Iterator[QuotaUsageCallbackHandler]:
    """Count the usage of every chat model call made inside the ``with`` block.

    Example:
        ```python
        with get_quota_usage_callback() as usage:
            llm.invoke("Hello")
        print(usage.usage)
        ```
    """
    handler = QuotaUsageCallbackHandler()
    token = _current_handler.set(handler)
    try:
        yield handler
    finally:
        _current_handler.reset(token)
