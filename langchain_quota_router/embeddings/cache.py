"""A cache of vectors per text: re-embedding a document set calls no vendor.

A vector is kept under ``(model, dimension, input type, text)``: the model and the
size name the vector space, and the input type (``query`` or ``document``) is part of
it because vendors embed a search query and a document differently (Cohere's
``search_query`` and ``search_document``, Gemini's task types).

Vectors are stored as float64 bytes, so a cached vector is the one the vendor sent,
bit for bit. Like the response caches, an embedding cache never fails a call: when
its storage is unusable it logs one warning and behaves as an empty cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sys
import threading
from abc import ABC, abstractmethod
from array import array
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from langchain_quota_router._errors import ConfigurationError
from langchain_quota_router.cache.disk import default_cache_directory
from langchain_quota_router.quota.ledger.url import redact_url

__all__ = [
    "DiskEmbeddingCache",
    "EmbeddingCache",
    "InMemoryEmbeddingCache",
    "RedisEmbeddingCache",
    "vector_key",
]

logger = logging.getLogger("langchain_quota_router")

# Bumped whenever the key or the stored layout changes: old entries simply miss.
_FORMAT = "lcqe1"
_SQLITE_TIMEOUT = 2.0

Vector = list[float]


def vector_key(model: str, dimension: int | None, kind: str, text: str) -> str:
    """The storage key of one text's vector in one vector space."""
    digest = hashlib.sha256()
    for part in (model, str(dimension or "native"), kind):
        raw = part.encode("utf-8", "surrogatepass")
        digest.update(b"%d:" % len(raw))
        digest.update(raw)
    digest.update(text.encode("utf-8", "surrogatepass"))
    return f"{_FORMAT}:{digest.hexdigest()}"


def _pack(vector: Sequence[float]) -> bytes:
    packed = array("d", vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def _unpack(blob: Any) -> Vector | None:
    if not isinstance(blob, (bytes, bytearray)) or len(blob) % 8:
        return None
    values = array("d")
    values.frombytes(bytes(blob))
    if sys.byteorder == "big":
        values.byteswap()
    return values.tolist()


class EmbeddingCache(ABC):
    """Where vectors are kept between calls (and processes, for disk and Redis)."""

    @abstractmethod
    def get_many(self, keys: Sequence[str]) -> list[Vector | None]:
        """The vectors kept under ``keys``, ``None`` where there is none."""

    @abstractmethod
    def set_many(self, items: Mapping[str, Vector]) -> None:
        """Keep these vectors."""

    @abstractmethod
    def clear(self) -> None:
        """Forget every vector."""

    async def aget_many(self, keys: Sequence[str]) -> list[Vector | None]:
        """:meth:`get_many` off the event loop."""
        return await asyncio.to_thread(self.get_many, keys)

    async def aset_many(self, items: Mapping[str, Vector]) -> None:
        """:meth:`set_many` off the event loop."""
        await asyncio.to_thread(self.set_many, items)


class InMemoryEmbeddingCache(EmbeddingCache):
    """Vectors in this process's memory (tests, notebooks)."""

    def __init__(self) -> None:
        self._store: dict[str, Vector] = {}
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence[str]) -> list[Vector | None]:
        with self._lock:
            return [list(v) if (v := self._store.get(k)) is not None else None for k in keys]

    def set_many(self, items: Mapping[str, Vector]) -> None:
        with self._lock:
            self._store.update({k: list(v) for k, v in items.items()})

    def clear(self) -> None:
        with self._lock:
            self._store.clear()

    async def aget_many(self, keys: Sequence[str]) -> list[Vector | None]:
        return self.get_many(keys)

    async def aset_many(self, items: Mapping[str, Vector]) -> None:
        self.set_many(items)

    def __len__(self) -> int:
        return len(self._store)

    def __repr__(self) -> str:
        return f"InMemoryEmbeddingCache({len(self._store)} vectors)"


class DiskEmbeddingCache(EmbeddingCache):
    """Vectors on disk (:mod:`diskcache`, SQLite underneath), shared by threads and
    processes, beside the chat model's response cache.

    Args:
        directory: where to keep them; default ``embeddings`` inside the response
            cache's directory (``$QUOTA_ROUTER_CACHE_DIR`` or the user cache dir).
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self._directory = Path(directory) if directory is not None else None
        self._store: Any = None
        self._broken = False
        self._lock = threading.Lock()

    @property
    def directory(self) -> Path:
        """Where the vectors are kept."""
        return self._directory or default_cache_directory() / "embeddings"

    def _open(self) -> Any:
        if self._store is not None or self._broken:
            return self._store
        with self._lock:
            if self._store is None and not self._broken:
                try:
                    import diskcache

                    self._store = diskcache.Cache(str(self.directory), timeout=_SQLITE_TIMEOUT)
                except Exception as exc:  # noqa: BLE001 - a cache never fails a call
                    self._disable(exc)
        return self._store

    def _disable(self, exc: BaseException) -> None:
        if not self._broken:
            self._broken = True
            logger.warning(
                "embedding cache at %s is unusable (%s: %s); embedding without it",
                self.directory,
                type(exc).__name__,
                exc,
            )

    def get_many(self, keys: Sequence[str]) -> list[Vector | None]:
        store = self._open()
        if store is None:
            return [None] * len(keys)
        try:
            return [_unpack(store.get(key)) for key in keys]
        except Exception as exc:  # noqa: BLE001 - a cache never fails a call
            self._disable(exc)
            return [None] * len(keys)

    def set_many(self, items: Mapping[str, Vector]) -> None:
        store = self._open()
        if store is None or not items:
            return
        try:
            with store.transact():
                for key, vector in items.items():
                    store.set(key, _pack(vector))
        except Exception as exc:  # noqa: BLE001 - a cache never fails a call
            self._disable(exc)

    def clear(self) -> None:
        store = self._open()
        if store is not None:
            store.clear()

    def close(self) -> None:
        """Close the database (it reopens on the next use)."""
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def __repr__(self) -> str:
        return f"DiskEmbeddingCache({str(self.directory)!r})"


class RedisEmbeddingCache(EmbeddingCache):
    """Vectors in Redis, shared by every worker of a fleet (extra ``redis``).

    Args:
        url: the Redis URL (``redis://host:6379/1``).
        ttl: seconds a vector stays; ``None`` (default) keeps it until Redis evicts it.
        prefix: the namespace of this cache's keys.
    """

    def __init__(self, url: str, *, ttl: float | None = None, prefix: str = "qr:vector:") -> None:
        try:
            import redis
        except ImportError as exc:
            msg = (
                "RedisEmbeddingCache needs the 'redis' extra: "
                "pip install 'langchain-quota-router[redis]'"
            )
            raise ConfigurationError(msg) from exc
        if ttl is not None and not ttl > 0:
            msg = f"cache ttl must be positive seconds or None, got {ttl!r}"
            raise ConfigurationError(msg)
        self._ttl = ttl
        self._prefix = prefix
        self._url = redact_url(url)
        self._client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=2.0)
        self._down = False

    def _failed(self, exc: BaseException) -> None:
        if not self._down:
            self._down = True
            logger.warning(
                "embedding cache at %s is unreachable (%s: %s); embedding without it",
                self._url,
                type(exc).__name__,
                exc,
            )

    def get_many(self, keys: Sequence[str]) -> list[Vector | None]:
        if not keys:
            return []
        try:
            found = self._client.mget([self._prefix + k for k in keys])
        except Exception as exc:  # noqa: BLE001 - a cache never fails a call
            self._failed(exc)
            return [None] * len(keys)
        self._down = False
        return [_unpack(blob) for blob in found]

    def set_many(self, items: Mapping[str, Vector]) -> None:
        if not items:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            expiry = None if self._ttl is None else max(1, int(self._ttl))
            for key, vector in items.items():
                pipe.set(self._prefix + key, _pack(vector), ex=expiry)
            pipe.execute()
        except Exception as exc:  # noqa: BLE001 - a cache never fails a call
            self._failed(exc)

    def clear(self) -> None:
        for key in self._client.scan_iter(match=self._prefix + "*", count=500):
            self._client.delete(key)

    def __repr__(self) -> str:
        return f"RedisEmbeddingCache({self._url!r})"
