"""Fleet counters, kept where the ledger keeps its quota: one set for every process.

The router's own counters (``get_stats()``) are per process. These are the fleet's:
every router counting in the same ledger (the same SQLite file, the same Redis and
prefix) adds to them, and any process reading that ledger (``quota-router report``,
the status page, another worker) sees the totals.

A counter is named by a :data:`Key`, ``(kind, name, field)``:

- ``("route", "groq", "calls")``: per route ``calls``, ``fallbacks``,
  ``errors:<kind>`` (a :class:`~langchain_quota_router.quota.failures.FailureKind`
  value), ``rate_limited`` (the vendor's 429s), ``refused`` (the ledger kept a call
  from a full or blocked pool), ``cache_hits``, ``tokens_in``, ``tokens_out`` and
  ``cost`` (USD);
- ``("pool", "groq", "requests")``: per pool what the routers spent, ``requests``,
  ``input_tokens``, ``output_tokens`` (from which ``router.history()`` computes
  each limit's use over time), and ``refused``.

Each counter is kept at three resolutions (a *level*): the total since it was
first counted (level 0, bucket 0), hourly buckets (level 3600) kept
:data:`RETENTION` ``[3600]`` (35 days, so a monthly limit has its history), and,
for pools only, per-minute buckets (level 60) kept two days. Older buckets are
deleted when counts are written, at most every :data:`PRUNE_EVERY` seconds, so the
storage stays bounded whatever runs. A bucket is named by its start (epoch seconds).

Storage per backend, chosen by :func:`fleet_store` from the ledger's type (the
ledger's own tables and keys are never touched):

- memory: a store kept beside the :class:`~.memory.ledger.MemoryLedger`
  object (this process only, as its quota is);
- SQLite: a table ``fleet_counters`` in the ledger's file, written through a
  connection of its own (one per thread, opened anew in a forked child), one
  ``BEGIN IMMEDIATE`` transaction per batch;
- Redis: under the ledger's prefix, a hash per kind, level and bucket
  (``qr:fleet:pool:60:<bucket>``, fields ``<name>\\x1f<field>``), a hash per kind for
  the totals (``qr:fleet:route:total``) and a sorted set of each level's buckets
  (``qr:fleet:index:pool:60``) by which old ones are deleted; bucket hashes also
  expire by themselves;
- a fail-open ledger: its shared (primary) ledger's store.

Only route and pool names are stored, never a key.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import weakref
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from langchain_quota_router._errors import LedgerError

if TYPE_CHECKING:
    from langchain_quota_router.quota.ledger.contract import Ledger

__all__ = [
    "HOUR",
    "MINUTE",
    "PRUNE_EVERY",
    "RETENTION",
    "TOTAL",
    "FleetStore",
    "Key",
    "MemoryFleetStore",
    "RedisFleetStore",
    "Row",
    "SQLiteFleetStore",
    "fleet_store",
]

Key = tuple[str, str, str]
"""A counter: ``(kind, name, field)``, kind ``"route"`` or ``"pool"``."""

Row = tuple[int, int, Key]
"""Where an increment goes: ``(level, bucket start, key)``; level 0 is the total."""

TOTAL = 0
MINUTE = 60
HOUR = 3600
#: Seconds each level's buckets are kept: two days of minutes, 35 days of hours.
RETENTION: dict[int, int] = {MINUTE: 2 * 86_400, HOUR: 35 * 86_400}
#: Seconds (of the router's clock) between two deletions of old buckets by a store.
PRUNE_EVERY = 600.0
KINDS = ("route", "pool")
_SEP = "\x1f"


class FleetStore(ABC):
    """Where fleet counters are added up and read back (see the module docs)."""

    def __init__(self) -> None:
        self._pruned_at = -math.inf
        self._prune_lock = threading.Lock()

    def add(self, rows: Mapping[Row, float], now: float) -> None:
        """Add ``rows`` to the counters in one batch; delete buckets older than
        :data:`RETENTION` at most every :data:`PRUNE_EVERY` seconds of ``now``.

        Raises whatever the storage raises; the caller keeps the rows to try again.
        """
        with self._prune_lock:
            due = not self._pruned_at <= now < self._pruned_at + PRUNE_EVERY
        cutoffs = {level: math.floor(now) - keep for level, keep in RETENTION.items()}
        self._write(rows, cutoffs if due else None, now)
        if due:
            with self._prune_lock:
                self._pruned_at = now

    @abstractmethod
    def _write(self, rows: Mapping[Row, float], cutoffs: dict[int, int] | None, now: float) -> None:
        """Add ``rows``; with ``cutoffs``, also delete each level's buckets that start
        before its cutoff."""

    @abstractmethod
    def totals(self, kind: str) -> dict[Key, float]:
        """Every counter of ``kind`` since it was first counted."""

    @abstractmethod
    def buckets(self, kind: str, level: int, lo: float, hi: float) -> list[tuple[int, Key, float]]:
        """``(bucket start, key, value)`` of ``kind`` at ``level`` for buckets that
        start in ``[lo, hi)``."""

    @abstractmethod
    def row_count(self) -> int:
        """How many counter cells are stored (every level, the totals included)."""


def _accumulate(
    rows: Mapping[Row, float],
) -> dict[tuple[str, int, int], dict[tuple[str, str], float]]:
    """``rows`` grouped by ``(kind, level, bucket)``."""
    grouped: dict[tuple[str, int, int], dict[tuple[str, str], float]] = defaultdict(dict)
    for (level, bucket, (kind, name, field)), amount in rows.items():
        cell = grouped[(kind, level, bucket)]
        cell[(name, field)] = cell.get((name, field), 0) + amount
    return grouped


# --------------------------------------------------------------------- memory


class MemoryFleetStore(FleetStore):
    """Counters in this process's memory (for a memory ledger)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._cells: dict[tuple[str, int, int], dict[tuple[str, str], float]] = {}

    def _write(self, rows: Mapping[Row, float], cutoffs: dict[int, int] | None, now: float) -> None:
        with self._lock:
            for mark, values in _accumulate(rows).items():
                cell = self._cells.setdefault(mark, {})
                for counter, amount in values.items():
                    cell[counter] = cell.get(counter, 0) + amount
            if cutoffs is not None:
                old = [m for m in self._cells if m[1] in cutoffs and m[2] < cutoffs[m[1]]]
                for mark in old:
                    del self._cells[mark]

    def totals(self, kind: str) -> dict[Key, float]:
        with self._lock:
            cell = dict(self._cells.get((kind, TOTAL, 0), {}))
        return {(kind, name, field): value for (name, field), value in cell.items()}

    def buckets(self, kind: str, level: int, lo: float, hi: float) -> list[tuple[int, Key, float]]:
        with self._lock:
            found = [
                (bucket, dict(cell))
                for (k, lvl, bucket), cell in self._cells.items()
                if k == kind and lvl == level and lo <= bucket < hi
            ]
        return [
            (bucket, (kind, name, field), value)
            for bucket, cell in sorted(found, key=lambda x: x[0])
            for (name, field), value in cell.items()
        ]

    def row_count(self) -> int:
        with self._lock:
            return sum(len(cell) for cell in self._cells.values())


# --------------------------------------------------------------------- SQLite

_TABLE = """
CREATE TABLE IF NOT EXISTS fleet_counters (
    kind   TEXT    NOT NULL,
    level  INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    name   TEXT    NOT NULL,
    field  TEXT    NOT NULL,
    value  REAL    NOT NULL,
    PRIMARY KEY (kind, level, bucket, name, field)
) WITHOUT ROWID
"""
_UPSERT = (
    "INSERT INTO fleet_counters (kind, level, bucket, name, field, value) "
    "VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (kind, level, bucket, name, field) DO UPDATE SET value = value + excluded.value"
)
_BUSY_TIMEOUT = 10.0


class SQLiteFleetStore(FleetStore):
    """Counters in a table of the ledger's SQLite file, beside its quota.

    Opens the file read-write but never creates it (a deleted ledger is not
    brought back as a file that is not a ledger): a file the ledger has not made
    yet is made by asking the ledger first.
    """

    def __init__(self, ledger: Ledger, path: Path) -> None:
        super().__init__()
        # Weakly: the store is kept per ledger object, as long as the ledger lives.
        self._ledger = weakref.ref(ledger)
        self.path = Path(path)
        self._local = threading.local()
        # Connections inherited through fork() are never used or closed by the child.
        self._orphans: list[sqlite3.Connection] = []

    def _identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        identity = self._identity()
        if conn is not None and self._local.pid == os.getpid():
            if identity == self._local.identity:
                return conn
            # The file was deleted or replaced: the ledger says what to do about it.
            conn.close()
        elif conn is not None:
            self._orphans.append(conn)
        self._local.conn = None
        from langchain_quota_router.quota.ledger.sqlite.ledger import _APPLICATION_ID

        if identity is None:
            self._make_file()
            identity = self._identity()
        uri = f"file:{quote(str(self.path.resolve()))}?mode=rw"
        try:
            conn = sqlite3.connect(
                uri,
                uri=True,
                timeout=_BUSY_TIMEOUT,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            msg = f"cannot open ledger file {str(self.path)!r} for fleet counters: {exc}"
            raise LedgerError(msg) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT * 1000)}")
            # As the ledger's own: a commit survives the process, without an fsync
            # that would hold the write lock the routers' reservations wait for.
            conn.execute("PRAGMA synchronous=NORMAL")
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            if app_id == 0:
                self._make_file()
                app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            if app_id != _APPLICATION_ID:
                msg = f"{str(self.path)!r} is not a langchain-quota-router ledger"
                raise LedgerError(msg)
            conn.execute(_TABLE)
        except BaseException:
            conn.close()
            raise
        self._local.conn = conn
        self._local.pid = os.getpid()
        self._local.identity = identity
        return conn

    def _make_file(self) -> None:
        """Have the ledger make (or check) its file, or say why it cannot."""
        ledger = self._ledger()
        if ledger is None:
            msg = f"the ledger of {str(self.path)!r} is gone"
            raise LedgerError(msg)
        ledger.learned()

    def _write(self, rows: Mapping[Row, float], cutoffs: dict[int, int] | None, now: float) -> None:
        values = [
            (kind, level, bucket, name, field, amount)
            for (level, bucket, (kind, name, field)), amount in rows.items()
        ]
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_UPSERT, values)
            for level, cutoff in (cutoffs or {}).items():
                for kind in KINDS:
                    conn.execute(
                        "DELETE FROM fleet_counters WHERE kind = ? AND level = ? AND bucket < ?",
                        (kind, level, cutoff),
                    )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def totals(self, kind: str) -> dict[Key, float]:
        cursor = self._connection().execute(
            "SELECT name, field, value FROM fleet_counters "
            "WHERE kind = ? AND level = ? AND bucket = 0",
            (kind, TOTAL),
        )
        return {(kind, name, field): float(value) for name, field, value in cursor}

    def buckets(self, kind: str, level: int, lo: float, hi: float) -> list[tuple[int, Key, float]]:
        cursor = self._connection().execute(
            "SELECT bucket, name, field, value FROM fleet_counters "
            "WHERE kind = ? AND level = ? AND bucket >= ? AND bucket < ? ORDER BY bucket",
            (kind, level, _int_bound(lo), _int_bound(hi)),
        )
        return [(int(b), (kind, name, field), float(v)) for b, name, field, v in cursor]

    def row_count(self) -> int:
        (count,) = self._connection().execute("SELECT count(*) FROM fleet_counters").fetchone()
        return int(count)


def _int_bound(value: float) -> int:
    """A bucket bound SQLite compares as an integer (infinities clamped)."""
    if math.isinf(value):
        return 2**62 if value > 0 else -(2**62)
    return math.ceil(value)


# ---------------------------------------------------------------------- Redis


class RedisFleetStore(FleetStore):
    """Counters under the Redis ledger's prefix, through its client."""

    def __init__(self, ledger: Any) -> None:
        super().__init__()
        # Weakly: the store is kept per ledger object, as long as the ledger lives.
        self._ledger = weakref.ref(ledger)
        self.prefix: str = ledger.prefix

    def _client(self) -> Any:
        ledger = self._ledger()
        if ledger is None:
            msg = "the Redis ledger of these fleet counters is gone"
            raise LedgerError(msg)
        return ledger._redis()

    def _bucket_key(self, kind: str, level: int, bucket: int) -> str:
        if level == TOTAL:
            return f"{self.prefix}fleet:{kind}:total"
        return f"{self.prefix}fleet:{kind}:{level}:{bucket}"

    def _index_key(self, kind: str, level: int) -> str:
        return f"{self.prefix}fleet:index:{kind}:{level}"

    def _write(self, rows: Mapping[Row, float], cutoffs: dict[int, int] | None, now: float) -> None:
        client = self._client()
        pipe = client.pipeline(transaction=True)
        for (kind, level, bucket), values in _accumulate(rows).items():
            key = self._bucket_key(kind, level, bucket)
            for (name, field), amount in values.items():
                # Floats throughout: cost is one, and a field is never mixed.
                pipe.hincrbyfloat(key, f"{name}{_SEP}{field}", float(amount))
            if level != TOTAL:
                pipe.zadd(self._index_key(kind, level), {str(bucket): bucket})
                # A safety net: explicit pruning (below) keeps the count bounded.
                ttl = max(60, math.ceil(bucket + level + RETENTION[level] - now) + 3600)
                pipe.expire(key, ttl)
        pipe.execute()
        if cutoffs is None:
            return
        marks = [(kind, level) for level in cutoffs for kind in KINDS]
        ask = client.pipeline(transaction=False)
        for kind, level in marks:
            ask.zrangebyscore(self._index_key(kind, level), "-inf", f"({cutoffs[level]}")
        old = ask.execute()
        drop = client.pipeline(transaction=True)
        stale = False
        for (kind, level), buckets in zip(marks, old, strict=True):
            if buckets:
                stale = True
                drop.delete(*(self._bucket_key(kind, level, int(b)) for b in buckets))
                drop.zrem(self._index_key(kind, level), *buckets)
        if stale:
            drop.execute()

    def totals(self, kind: str) -> dict[Key, float]:
        cell = self._client().hgetall(self._bucket_key(kind, TOTAL, 0))
        return {_key(kind, field): float(value) for field, value in cell.items()}

    def buckets(self, kind: str, level: int, lo: float, hi: float) -> list[tuple[int, Key, float]]:
        client = self._client()
        lo_text = "-inf" if math.isinf(lo) else str(lo)
        hi_text = "+inf" if math.isinf(hi) else f"({hi}"
        found = [
            int(b) for b in client.zrangebyscore(self._index_key(kind, level), lo_text, hi_text)
        ]
        if not found:
            return []
        pipe = client.pipeline(transaction=False)
        for bucket in found:
            pipe.hgetall(self._bucket_key(kind, level, bucket))
        cells = pipe.execute()
        return [
            (bucket, _key(kind, field), float(value))
            for bucket, cell in sorted(zip(found, cells, strict=True), key=lambda x: x[0])
            for field, value in cell.items()
        ]

    def row_count(self) -> int:
        client = self._client()
        marks = [(kind, level) for kind in KINDS for level in RETENTION]
        ask = client.pipeline(transaction=False)
        for kind in KINDS:
            ask.hlen(self._bucket_key(kind, TOTAL, 0))
        for kind, level in marks:
            ask.zrange(self._index_key(kind, level), 0, -1)
        found = ask.execute()
        count = sum(int(n) for n in found[: len(KINDS)])
        sizes = client.pipeline(transaction=False)
        for (kind, level), buckets in zip(marks, found[len(KINDS) :], strict=True):
            for bucket in buckets:
                sizes.hlen(self._bucket_key(kind, level, int(bucket)))
        return count + sum(int(n) for n in sizes.execute())


def _key(kind: str, field: str) -> Key:
    name, _, counter = field.rpartition(_SEP)
    return (kind, name, counter)


# ---------------------------------------------------------------- dispatching

_stores: weakref.WeakKeyDictionary[Ledger, FleetStore] = weakref.WeakKeyDictionary()
_stores_lock = threading.Lock()


def fleet_store(ledger: Ledger) -> FleetStore:
    """The fleet counters' store beside ``ledger`` (one per ledger object).

    A fail-open ledger counts in its primary's store; a ledger of a type this
    module does not know keeps its counters in this process's memory.
    """
    from langchain_quota_router.quota.ledger.failopen import FailOpenLedger

    shared = ledger.primary if isinstance(ledger, FailOpenLedger) else ledger
    try:
        with _stores_lock:
            store = _stores.get(shared)
            if store is None:
                store = _stores[shared] = _new_store(shared)
            return store
    except TypeError:  # not weakly referenceable or hashable: a store of its own
        return _new_store(shared)


def _new_store(ledger: Ledger) -> FleetStore:
    from langchain_quota_router.quota.ledger.sqlite.ledger import SQLiteLedger

    if isinstance(ledger, SQLiteLedger):
        return SQLiteFleetStore(ledger, ledger.path)
    try:
        from langchain_quota_router.quota.ledger.redis.ledger import RedisLedger
    except ImportError:  # pragma: no cover - the redis module imports without redis-py
        RedisLedger = None  # type: ignore[assignment,misc]  # noqa: N806
    if RedisLedger is not None and isinstance(ledger, RedisLedger):
        return RedisFleetStore(ledger)
    return MemoryFleetStore()
