"""The caches a chat router wraps: LangChain's global cache looked up at each call,
and any cache counting its hits into the router's stats."""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

from langchain_core.caches import BaseCache
from langchain_core.globals import get_llm_cache
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, BaseMessage, ChatMessage, ToolMessage
from langchain_core.outputs import Generation

from langchain_quota_router.cache.disk import DiskResponseCache
from langchain_quota_router.quota.stats import RouterStats

__all__ = ["OWN_KEY", "GlobalCache", "HitCounter", "prompt_key"]

#: The router's own key of the call in progress, while LangChain runs a call the
#: router's cache missed: LangChain's own lookup is then skipped (it would miss
#: too) and its update files the answer under this key.
OWN_KEY: ContextVar[str | None] = ContextVar("quota_router_prompt_key", default=None)


def prompt_key(messages: Sequence[BaseMessage]) -> str:
    """The router's own cache key for a conversation: what each message says to a
    vendor (its kind, content, name, tool calls, tool call id and status, vendor
    extras), not its id or response metadata (which route answered it, usage).

    LangChain's key (``dumps`` of every field) costs more than a cache hit's
    lookup; this one is a few microseconds. A message with a value JSON cannot
    write falls back to LangChain's serialization, so no two conversations share
    a key.
    """
    rows: list[list[Any]] = []
    for message in messages:
        row: list[Any] = [message.type, message.content, message.name]
        if isinstance(message, AIMessage) and message.tool_calls:
            row.append(message.tool_calls)
        elif isinstance(message, ToolMessage):
            row.extend((message.tool_call_id, message.status))
        elif isinstance(message, ChatMessage):
            row.append(message.role)
        if message.additional_kwargs:
            row.append(message.additional_kwargs)
        rows.append(row)
    try:
        return "qr1:" + json.dumps(rows, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError):
        plain = [m.model_copy(update={"id": None, "response_metadata": {}}) for m in messages]
        return "qr1lc:" + dumps(plain)


class GlobalCache(BaseCache):
    """LangChain's global cache, looked up at each call (it may change after the
    router is built); no global cache is a cache that never hits."""

    def lookup(self, prompt: str, llm_string: str) -> Sequence[Generation] | None:
        cache = get_llm_cache()
        return cache.lookup(prompt, llm_string) if cache is not None else None

    async def alookup(self, prompt: str, llm_string: str) -> Sequence[Generation] | None:
        cache = get_llm_cache()
        return await cache.alookup(prompt, llm_string) if cache is not None else None

    def update(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        cache = get_llm_cache()
        if cache is not None:
            cache.update(prompt, llm_string, return_val)

    async def aupdate(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        cache = get_llm_cache()
        if cache is not None:
            await cache.aupdate(prompt, llm_string, return_val)

    def clear(self, **kwargs: Any) -> None:
        cache = get_llm_cache()
        if cache is not None:
            cache.clear(**kwargs)

    def __repr__(self) -> str:
        return "LangChain's global cache"


class HitCounter(BaseCache):
    """The user's cache, counting hits into the router's stats.

    A hit is marked ``response_metadata["cache_hit"] = True`` with no cost, so
    reports never charge twice for one answer.

    Attributes:
        own_keys: whether calls are filed under the router's own key
            (:func:`prompt_key`): for every cache given to the router, not for
            LangChain's global cache, which other models share (and key).
    """

    def __init__(self, inner: BaseCache, stats: RouterStats) -> None:
        self.inner = inner
        self._stats = stats
        self.own_keys = not isinstance(inner, GlobalCache)

    def _mark(self, found: Sequence[Generation] | None) -> Sequence[Generation] | None:
        if not found:
            return found
        first = getattr(found[0], "message", None)
        route = first.response_metadata.get("route") if isinstance(first, BaseMessage) else None
        self._stats.hit(route if isinstance(route, str) else None)
        # DiskResponseCache hands out fresh copies; other caches (InMemoryCache) may
        # return the very objects the first caller received, which must not change.
        fresh = isinstance(self.inner, DiskResponseCache)
        marked: list[Generation] = []
        for generation in found:
            message = getattr(generation, "message", None)
            if isinstance(message, BaseMessage):
                metadata = {k: v for k, v in message.response_metadata.items() if k != "cost"}
                metadata["cache_hit"] = True
                # This answer was reached through the cache, not the routes it
                # was first reached through.
                metadata["attempts"] = (
                    [{"route": route, "outcome": "served", "reason": "cache hit"}]
                    if isinstance(route, str)
                    else []
                )
                if fresh:
                    message.response_metadata = metadata
                else:
                    copy = message.model_copy(update={"response_metadata": metadata})
                    generation = generation.model_copy(update={"message": copy})
            marked.append(generation)
        return marked

    def lookup(self, prompt: str, llm_string: str) -> Sequence[Generation] | None:
        if OWN_KEY.get() is not None:  # looked up under the router's key: a miss
            return None
        return self._mark(self.inner.lookup(prompt, llm_string))

    async def alookup(self, prompt: str, llm_string: str) -> Sequence[Generation] | None:
        if OWN_KEY.get() is not None:
            return None
        return self._mark(await self.inner.alookup(prompt, llm_string))

    def update(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        self.inner.update(OWN_KEY.get() or prompt, llm_string, return_val)

    async def aupdate(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        await self.inner.aupdate(OWN_KEY.get() or prompt, llm_string, return_val)

    def clear(self, **kwargs: Any) -> None:
        self.inner.clear(**kwargs)

    async def aclear(self, **kwargs: Any) -> None:
        await self.inner.aclear(**kwargs)

    def __repr__(self) -> str:
        return repr(self.inner)
