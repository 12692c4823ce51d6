"""A response cache in Redis, shared by every worker of a fleet (extra ``redis``).

    from langchain_quota_router.cache.redis import RedisResponseCache

    llm = QuotaRoutedChatModel(routes=..., ledger="redis://cache-host:6379/0",
                               cache=RedisResponseCache("redis://cache-host:6379/1"))

Entries are keyed and serialised exactly as :class:`DiskResponseCache` does, and
expire in Redis after ``ttl`` seconds. Like the disk cache it never fails a call:
when Redis cannot be reached a lookup is a miss and an update is skipped, with one
logged warning per outage.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Sequence
from typing import Any

from langchain_core.caches import BaseCache
from langchain_core.load import dumps, loads
from langchain_core.outputs import Generation

from langchain_quota_router._errors import ConfigurationError
from langchain_quota_router.cache.disk import (
    _ALLOWED_OBJECTS,
    _NOT_IMPLEMENTED_MARK,
    _cache_key,
    _revivable,
    _ttl_seconds,
)
from langchain_quota_router.quota.ledger.url import redact_url

logger = logging.getLogger("langchain_quota_router")


class RedisResponseCache(BaseCache):
    """A LangChain ``BaseCache`` in Redis: one set of cached answers for many workers.

    Args:
        url: the Redis URL (``redis://host:6379/1``).
        ttl: seconds an answer stays (24 h by default); ``None`` keeps it until
            Redis evicts it.
        prefix: the namespace of this cache's keys.
    """

    def __init__(
        self,
        url: str,
        *,
        ttl: float | dt.timedelta | None = 86_400.0,
        prefix: str = "qr:response:",
    ) -> None:
        try:
            import redis
        except ImportError as exc:
            msg = (
                "RedisResponseCache needs the 'redis' extra: "
                "pip install 'langchain-quota-router[redis]'"
            )
            raise ConfigurationError(msg) from exc
        self._ttl = _ttl_seconds(ttl)
        self._prefix = prefix
        self._url = redact_url(url)
        self._client = redis.Redis.from_url(
            url, socket_connect_timeout=0.5, socket_timeout=1.0, decode_responses=True
        )
        self._down = False
        self._lock = threading.Lock()

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            first, self._down = not self._down, True
        if first:
            logger.warning(
                "response cache at %s is unreachable (%s: %s); answering without it",
                self._url,
                type(exc).__name__,
                exc,
            )

    def _recovered(self) -> None:
        if self._down:
            with self._lock:
                self._down = False
            logger.info("response cache at %s answers again", self._url)

    def lookup(self, prompt: str, llm_string: str) -> list[Generation] | None:
        """The cached answer for this prompt and model, or ``None``."""
        try:
            payload = self._client.get(self._prefix + _cache_key(prompt, llm_string))
        except Exception as exc:  # noqa: BLE001 - the cache must never fail a call
            self._failed(exc)
            return None
        self._recovered()
        if not isinstance(payload, str):
            return None
        try:
            revived = loads(payload, allowed_objects=_ALLOWED_OBJECTS)
        except Exception:  # noqa: BLE001 - an unreadable entry is a miss
            return None
        if (
            isinstance(revived, list)
            and revived
            and all(isinstance(g, Generation) for g in revived)
        ):
            return revived
        return None

    def update(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        """Store an answer for every worker, for ``ttl`` seconds."""
        if not return_val or not all(_revivable(g) for g in return_val):
            return
        try:
            payload = dumps(list(return_val))
        except Exception:  # noqa: BLE001 - an odd answer is not cached, nothing more
            return
        if _NOT_IMPLEMENTED_MARK in payload:
            return
        key = self._prefix + _cache_key(prompt, llm_string)
        try:
            if self._ttl is None:
                self._client.set(key, payload)
            else:
                self._client.set(key, payload, px=int(self._ttl * 1000))
        except Exception as exc:  # noqa: BLE001 - the cache must never fail a call
            self._failed(exc)
            return
        self._recovered()

    def clear(self, **kwargs: Any) -> None:
        """Remove every answer of this cache (its prefix only)."""
        try:
            for key in self._client.scan_iter(match=self._prefix + "*"):
                self._client.delete(key)
        except Exception as exc:  # noqa: BLE001 - the cache must never fail a call
            self._failed(exc)

    def __repr__(self) -> str:
        return f"RedisResponseCache({self._url!r}, ttl={self._ttl})"
