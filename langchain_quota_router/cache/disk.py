"""A persistent LLM response cache on disk, shared by threads and processes.

``DiskResponseCache`` is a :class:`langchain_core.caches.BaseCache` backed by
:mod:`diskcache` (SQLite underneath). Generations are stored with LangChain's own
JSON serialisation, stamped with the write time from an injectable clock so that
tests can expire entries without sleeping.

The cache never fails a model call: when its directory or database is unusable it
logs one warning and behaves as an empty cache for the rest of its life.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import logging
import os
import pickle
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import diskcache
import platformdirs
from langchain_core.caches import BaseCache
from langchain_core.load import dumps, loads
from langchain_core.load.serializable import Serializable
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import (
    ChatGeneration,
    ChatGenerationChunk,
    Generation,
    GenerationChunk,
)

from langchain_quota_router._errors import ConfigurationError
from langchain_quota_router.quota.clock import Clock, SystemClock

__all__ = ["CACHE_DIR_ENV", "DiskResponseCache", "default_cache_directory"]

logger = logging.getLogger("langchain_quota_router")

#: Environment variable that overrides the default cache directory.
CACHE_DIR_ENV = "QUOTA_ROUTER_CACHE_DIR"

# Bumped whenever the key derivation or the stored value layout changes, so that an
# old process and a new one sharing a directory simply miss instead of misreading.
_FORMAT = "lcqr1"

# Only these classes may be revived from disk. An explicit list (rather than the
# default "core") keeps langchain_core from warning about its changing default and
# means a tampered cache file can at most produce generations and AI messages, never
# e.g. a chat model pointed at a foreign base_url. The list is short on purpose:
# loads() scans its whole import mapping once per listed class on every call
# (about 10 us each), and LLMs and chat models only ever return these.
_ALLOWED_OBJECTS: tuple[type[Serializable], ...] = (
    Generation,
    GenerationChunk,
    ChatGeneration,
    ChatGenerationChunk,
    AIMessage,
    AIMessageChunk,
)
_ALLOWED_TYPES = frozenset(_ALLOWED_OBJECTS)

# langchain_core.load.dumps does not fail on values JSON cannot hold (datetimes,
# arbitrary objects in response_metadata): it writes a "not_implemented" stub that
# loads() later refuses. Such results are not cached at all. JSON escapes quotes
# inside strings, so this substring can only come from the structure itself.
_NOT_IMPLEMENTED_MARK = '"type": "not_implemented"'

# Number of already-deserialised hits kept in memory per cache instance.
_HOT_ENTRIES = 256

# SQLite busy timeout. A cache should not hold up a model call behind another
# process's write for diskcache's default of a minute; a busy database is a miss.
_SQLITE_TIMEOUT = 2.0
#: After a failure (a full disk, a lost directory) the cache rests this many seconds
#: before it tries the disk again, doubling after each failure in a row up to
#: _RETRY_MAX: space freed by an operator brings the cache back without a restart.
_RETRY_FIRST = 60.0
_RETRY_MAX = 3600.0


_WORKER_LOCK = threading.Lock()


def default_cache_directory() -> Path:
    """Return where the response cache lives when no directory is given.

    ``$QUOTA_ROUTER_CACHE_DIR`` if set and non-empty, else the per-user cache
    directory of ``langchain-quota-router`` with a ``responses`` subfolder.
    """
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("langchain-quota-router")) / "responses"


def _ttl_seconds(ttl: float | dt.timedelta | None) -> float | None:
    """Normalise a ``ttl`` argument to seconds, rejecting nonsense."""
    if ttl is None:
        return None
    seconds = ttl.total_seconds() if isinstance(ttl, dt.timedelta) else ttl
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        msg = f"cache ttl must be seconds, a timedelta or None, not {ttl!r}"
        raise ConfigurationError(msg)
    if not seconds > 0:  # also rejects NaN
        msg = f"cache ttl must be positive, got {ttl!r}"
        raise ConfigurationError(msg)
    return float(seconds)


def _cache_key(prompt: str, llm_string: str) -> str:
    """Return the fixed-length storage key for a ``(prompt, llm_string)`` pair."""
    # surrogatepass: prompts are arbitrary str and must never make hashing raise.
    prompt_bytes = prompt.encode("utf-8", "surrogatepass")
    digest = hashlib.sha256()
    # The length prefix makes the split point unambiguous even if the prompt itself
    # contains the separator.
    digest.update(b"%d:" % len(prompt_bytes))
    digest.update(prompt_bytes)
    digest.update(b"\x00")
    digest.update(llm_string.encode("utf-8", "surrogatepass"))
    return f"{_FORMAT}:{digest.hexdigest()}"


def _revivable(generation: Generation) -> bool:
    """Tell whether ``generation`` is made only of classes ``_ALLOWED_OBJECTS`` has."""
    if type(generation) not in _ALLOWED_TYPES:
        return False
    message = getattr(generation, "message", None)
    return message is None or type(message) in _ALLOWED_TYPES


def _thaw(blob: bytes) -> list[Generation]:
    """Rebuild generations from an in-memory snapshot made by ``pickle.dumps``.

    Unpickling is the cheapest way to get a fresh, independent object graph
    (about 3x faster than ``model_copy(deep=True)``). The bytes never leave this
    process and never come from disk, so this is not a deserialisation boundary.
    """
    generations: list[Generation] = pickle.loads(blob)  # noqa: S301 - our own bytes
    return generations


# Every live cache, so that a forked child can replace locks that another thread
# of the parent may have been holding at the moment of the fork.
_LIVE: weakref.WeakSet[DiskResponseCache] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for cache in list(_LIVE):
        cache._reset_locks()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


class DiskResponseCache(BaseCache):
    """Cache chat model responses on disk so repeated calls cost no quota.

    Entries are keyed by a SHA-256 of the prompt and the model's ``llm_string`` and
    hold LangChain-serialised generations together with the time they were written
    (by ``clock``). A lookup older than ``ttl`` is a miss and removes the entry.

    The disk is only touched on first use, so building a router is free. The cache
    is safe to share between threads, between processes using the same directory,
    and across ``os.fork()``. If the directory cannot be opened or the database
    fails (a full disk, say), one warning is logged on the ``langchain_quota_router``
    logger and the cache behaves as empty for a minute, then tries the disk again
    (waiting twice as long after each failure in a row, up to an hour, by
    ``clock``); it never raises from lookups or updates.

    Args:
        directory: where to keep the cache. Defaults to ``$QUOTA_ROUTER_CACHE_DIR``
            or the per-user cache directory (see :func:`default_cache_directory`).
        ttl: how long an entry stays valid, in seconds or as a timedelta; ``None``
            keeps entries until evicted by ``size_limit`` or cleared.
        clock: the time source used to stamp and age entries.
        size_limit: approximate maximum size of the cache on disk, in bytes.

    Raises:
        ConfigurationError: if ``ttl`` or ``size_limit`` is not positive.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        ttl: float | dt.timedelta | None = 86400.0,
        clock: Clock | None = None,
        size_limit: int = 2**30,
    ) -> None:
        if isinstance(size_limit, bool) or not isinstance(size_limit, int):
            msg = f"cache size_limit must be an int number of bytes, not {size_limit!r}"
            raise ConfigurationError(msg)
        if size_limit <= 0:
            msg = f"cache size_limit must be positive, got {size_limit!r}"
            raise ConfigurationError(msg)
        self._path = (
            Path(directory).expanduser() if directory is not None else default_cache_directory()
        )
        self._ttl = _ttl_seconds(ttl)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._size_limit = size_limit
        self._init_runtime_state()

    def _init_runtime_state(self) -> None:
        """Set up everything that is per-process and not pickled."""
        self._store: diskcache.Cache | None = None
        # While set, the cache is off until this time (by the clock), after a failure.
        self._resting_until: float | None = None
        self._failures_in_a_row = 0
        self._warned = False
        # Re-entrant: a failed open disables the cache while still holding it.
        self._open_lock = threading.RLock()
        # key -> (stored value string, pickled snapshot of the revived generations).
        # The disk is still read on every lookup and its value compared with the
        # remembered one, so an entry rewritten, expired or cleared by another
        # process is never served from memory; only the slow revival is skipped.
        self._hot: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._hot_lock = threading.Lock()
        _LIVE.add(self)

    def _reset_locks(self) -> None:
        """Give a freshly forked child new locks (see ``_after_fork_in_child``)."""
        self._open_lock = threading.RLock()
        self._hot_lock = threading.Lock()

    @property
    def directory(self) -> Path | None:
        """The cache directory, or ``None`` while the cache is off after a failure."""
        return None if self._resting_until is not None else self._path

    @property
    def ttl(self) -> float | None:
        """How long entries stay valid, in seconds; ``None`` means forever."""
        return self._ttl

    def __repr__(self) -> str:
        state = ", disabled until it retries" if self._resting_until is not None else ""
        where = str(self._path)
        return f"DiskResponseCache(directory={where!r}, ttl={self._ttl!r}{state})"

    # -- pickling: a copy reopens the same directory lazily ---------------------------

    def __getstate__(self) -> dict[str, Any]:
        return {
            "path": self._path,
            "ttl": self._ttl,
            "clock": self._clock,
            "size_limit": self._size_limit,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._path = state["path"]
        self._ttl = state["ttl"]
        self._clock = state["clock"]
        self._size_limit = state["size_limit"]
        self._init_runtime_state()

    # -- storage ----------------------------------------------------------------------

    def _open(self) -> diskcache.Cache | None:
        """Return the open diskcache, opening it on first use; ``None`` while off."""
        store = self._store
        if store is not None or self._resting():
            return store
        with self._open_lock:
            if self._store is None and not self._resting():
                try:
                    self._store = diskcache.Cache(
                        str(self._path),
                        timeout=_SQLITE_TIMEOUT,
                        size_limit=self._size_limit,
                        # Reads must not write: "least-recently-used" would turn
                        # every hit into an UPDATE behind SQLite's write lock.
                        eviction_policy="least-recently-stored",
                    )
                except Exception as exc:  # noqa: BLE001 - the cache must never fail a call
                    self._disable(exc)
                else:
                    if self._resting_until is not None:
                        logger.info("Response cache at %s works again.", self._path)
                    self._resting_until = None
            return self._store

    def _resting(self) -> bool:
        """Whether the cache is off after a failure and not yet due to try again."""
        until = self._resting_until
        return until is not None and self._clock.now() < until

    def _disable(self, exc: BaseException) -> None:
        """Turn the cache off for a while (see :data:`_RETRY_FIRST`), warning once."""
        with self._open_lock:
            if self._resting():
                return
            rest = min(_RETRY_MAX, _RETRY_FIRST * 2.0**self._failures_in_a_row)
            self._failures_in_a_row += 1
            self._resting_until = self._clock.now() + rest
            store, self._store = self._store, None
            first, self._warned = not self._warned, True
        with self._hot_lock:
            self._hot.clear()
        # One warning per cache: a disk that stays full must not fill the log too.
        logger.log(
            logging.WARNING if first else logging.DEBUG,
            "Response cache at %s is unusable (%s: %s); continuing without it, and "
            "trying it again in %.0f s.",
            self._path,
            type(exc).__name__,
            exc,
            rest,
        )
        if store is not None:
            try:
                store.close()
            except Exception:  # already broken; closing is best effort
                logger.debug("closing the broken response cache failed", exc_info=True)

    def _forget(self, key: str) -> None:
        with self._hot_lock:
            self._hot.pop(key, None)

    def _drop(self, store: diskcache.Cache, key: str, stored: str) -> None:
        """Delete ``key`` unless another writer replaced it since we read ``stored``."""
        self._forget(key)
        try:
            with store.transact():
                if store.get(key) == stored:
                    store.delete(key)
        except diskcache.Timeout:
            pass  # someone else is writing; the entry will be retried or evicted

    # -- BaseCache --------------------------------------------------------------------

    def lookup(self, prompt: str, llm_string: str) -> list[Generation] | None:
        """Return the cached generations for this prompt and model, or ``None``.

        Args:
            prompt: the serialised prompt, as LangChain passes it.
            llm_string: the serialised model configuration.

        Returns:
            Fresh copies of the cached generations (safe to mutate), or ``None`` on
            a miss, an expired entry, or a disabled cache.
        """
        try:
            return self._lookup(prompt, llm_string)
        except Exception as exc:  # noqa: BLE001 - the cache must never fail a call
            self._disable(exc)
            return None

    def _lookup(self, prompt: str, llm_string: str) -> list[Generation] | None:
        key = _cache_key(prompt, llm_string)
        # Recent hits and writes of this process are answered from memory with no
        # disk read: any stored answer is a valid answer, so another process
        # overwriting or clearing the entry meanwhile changes nothing a caller can
        # rely on, and skipping the read keeps a hit cheaper than a model call.
        with self._hot_lock:
            hot = self._hot.get(key)
            if hot is not None:
                self._hot.move_to_end(key)
        if hot is not None:
            written, snapshot = hot
            if self._ttl is None or self._clock.now() - written < self._ttl:
                return _thaw(snapshot)
            self._forget(key)

        store = self._open()
        if store is None:
            return None
        try:
            stored = store.get(key)
        except diskcache.Timeout:
            return None  # busy, not broken
        if stored is None:
            return None
        if not isinstance(stored, str):
            self._drop(store, key, stored)
            return None
        stamp, _, payload = stored.partition("\n")
        try:
            written = float(stamp)
        except ValueError:
            self._drop(store, key, stored)
            return None
        if self._ttl is not None and self._clock.now() - written >= self._ttl:
            self._drop(store, key, stored)
            return None
        try:
            revived = loads(payload, allowed_objects=_ALLOWED_OBJECTS)
        except Exception:  # one unreadable entry is a miss, not an outage
            logger.debug("dropping unreadable response cache entry", exc_info=True)
            self._drop(store, key, stored)
            return None
        if not (
            isinstance(revived, list)
            and revived
            and all(isinstance(item, Generation) for item in revived)
        ):
            self._drop(store, key, stored)
            return None
        generations: list[Generation] = revived
        self._remember(key, written, generations)
        # The caller gets the revived objects themselves: memory only keeps bytes.
        return generations

    def _remember(self, key: str, written: float, generations: Sequence[Generation]) -> None:
        """Keep a snapshot of an answer in memory for the next hits."""
        try:
            snapshot = pickle.dumps(list(generations), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # unpicklable extras: just revive from disk every time
            logger.debug("response cache entry not kept in memory", exc_info=True)
            return
        with self._hot_lock:
            self._hot[key] = (written, snapshot)
            self._hot.move_to_end(key)
            while len(self._hot) > _HOT_ENTRIES:
                self._hot.popitem(last=False)

    def update(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        """Store generations for this prompt and model, stamped with the clock.

        Empty results and results LangChain cannot serialise faithfully (e.g. a
        ``datetime`` in ``response_metadata``) are not cached.

        Args:
            prompt: the serialised prompt, as LangChain passes it.
            llm_string: the serialised model configuration.
            return_val: the generations to cache.
        """
        try:
            self._update(prompt, llm_string, return_val)
        except Exception as exc:  # noqa: BLE001 - the cache must never fail a call
            self._disable(exc)

    def _update(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        if not return_val:
            return  # a cached empty answer would be replayed as an empty ChatResult
        if not all(_revivable(generation) for generation in return_val):
            # Storing it would only produce a miss (and a delete) on every lookup.
            logger.debug("response not cached: it holds types the cache cannot revive")
            return
        store = self._open()
        if store is None:
            return
        try:
            payload = dumps(list(return_val))
        except Exception:  # an odd result is not cached, nothing more
            logger.debug("response not cached: cannot serialise it", exc_info=True)
            return
        if _NOT_IMPLEMENTED_MARK in payload:
            logger.debug("response not cached: it holds values JSON cannot represent")
            return
        key = _cache_key(prompt, llm_string)
        written = self._clock.now()
        stored = f"{written!r}\n{payload}"
        try:
            # expire= lets diskcache evict stale rows from disk on later writes even
            # if nobody looks them up again; our own check uses the injectable clock.
            store.set(key, stored, expire=self._ttl)
        except diskcache.Timeout:
            return  # busy, not broken: skip this write
        self._failures_in_a_row = 0
        self._remember(key, written, return_val)

    def clear(self, **kwargs: Any) -> None:
        """Remove every entry from the cache directory (for all processes).

        Args:
            **kwargs: accepted for ``BaseCache`` compatibility and ignored.
        """
        try:
            store = self._open()
            with self._hot_lock:
                self._hot.clear()
            if store is not None:
                store.clear(retry=True)
        except Exception as exc:  # noqa: BLE001 - the cache must never fail a call
            self._disable(exc)

    # The async variants run the sync ones in the cache's own worker thread: a
    # lookup is usually a local read well under a millisecond, but another process
    # writing (or a slow disk) can make it wait, and the event loop must not.

    def _worker(self) -> ThreadPoolExecutor:
        pid = os.getpid()
        state = self.__dict__.get("_worker_state")
        if state is None or state[0] != pid:
            with _WORKER_LOCK:
                state = self.__dict__.get("_worker_state")
                if state is None or state[0] != pid:
                    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quota-cache")
                    state = (pid, pool)
                    self.__dict__["_worker_state"] = state
        executor: ThreadPoolExecutor = state[1]
        return executor

    async def alookup(self, prompt: str, llm_string: str) -> list[Generation] | None:
        """Async :meth:`lookup`, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker(), self.lookup, prompt, llm_string)

    async def aupdate(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        """Async :meth:`update`, off the event loop."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._worker(), self.update, prompt, llm_string, return_val)

    async def aclear(self, **kwargs: Any) -> None:
        """Async :meth:`clear`, off the event loop."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._worker(), functools.partial(self.clear, **kwargs))

    def close(self) -> None:
        """Close this thread's database connection; the cache reopens on next use."""
        with self._open_lock:
            store, self._store = self._store, None
        with self._hot_lock:
            self._hot.clear()
        if store is not None:
            try:
                store.close()
            except Exception:  # closing is best effort
                logger.debug("closing the response cache failed", exc_info=True)
