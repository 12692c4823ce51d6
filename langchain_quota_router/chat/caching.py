"""The caches a chat router wraps: LangChain's global cache looked up at each call,
and any cache counting its hits into the router's stats."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.caches import BaseCache
from langchain_core.globals import get_llm_cache
from langchain_core.messages import BaseMessage
from langchain_core.outputs import Generation

from langchain_quota_router.cache.disk import DiskResponseCache
from langchain_quota_router.quota.stats import RouterStats

__all__ = ["GlobalCache", "HitCounter"]


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
    """

    def __init__(self, inner: BaseCache, stats: RouterStats) -> None:
        self.inner = inner
        self._stats = stats

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
        return self._mark(self.inner.lookup(prompt, llm_string))

    async def alookup(self, prompt: str, llm_string: str) -> Sequence[Generation] | None:
        return self._mark(await self.inner.alookup(prompt, llm_string))

    def update(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        self.inner.update(prompt, llm_string, return_val)

    async def aupdate(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        await self.inner.aupdate(prompt, llm_string, return_val)

    def clear(self, **kwargs: Any) -> None:
        self.inner.clear(**kwargs)

    async def aclear(self, **kwargs: Any) -> None:
        await self.inner.aclear(**kwargs)

    def __repr__(self) -> str:
        return repr(self.inner)
