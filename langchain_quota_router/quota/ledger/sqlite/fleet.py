"""Fleet counters in a table of the SQLite ledger's file, beside its quota.

A table ``fleet_counters`` written through a connection of its own (one per thread,
opened anew in a forked child), one ``BEGIN IMMEDIATE`` transaction per batch.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

from langchain_quota_router.quota.errors import LedgerError
from langchain_quota_router.quota.ledger.contract import Ledger
from langchain_quota_router.quota.ledger.fleet import KINDS, TOTAL, FleetStore, Key, Row
from langchain_quota_router.quota.ledger.sqlite.schema import APPLICATION_ID
from langchain_quota_router.quota.ledger.sqlite.wal import keep_wal_on_close

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
_BUSY_TIMEOUT = 5.0


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

    def _busy_timeout(self) -> float:
        ledger = self._ledger()
        return float(getattr(ledger, "busy_timeout", _BUSY_TIMEOUT))

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        ledger = self._ledger()
        check = getattr(ledger, "check_file", None)
        if check is not None:
            # Truncated or overwritten in place (same inode): never write into it.
            check()
        identity = self._identity()
        if conn is not None and self._local.pid == os.getpid():
            if identity == self._local.identity:
                return conn
            # The file was deleted or replaced: the ledger says what to do about it.
            conn.close()
        elif conn is not None:
            self._orphans.append(conn)
        self._local.conn = None
        if identity is None:
            self._make_file()
            identity = self._identity()
        uri = f"file:{quote(str(self.path.resolve()))}?mode=rw"
        try:
            busy = self._busy_timeout()
            conn = sqlite3.connect(
                uri,
                uri=True,
                timeout=busy,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            msg = f"cannot open ledger file {str(self.path)!r} for fleet counters: {exc}"
            raise LedgerError(msg) from exc
        keep_wal_on_close(conn, str(self.path.resolve()))
        try:
            conn.execute(f"PRAGMA busy_timeout={int(busy * 1000)}")
            # The ledger checkpoints, after checking the file is still its own.
            conn.execute("PRAGMA wal_autocheckpoint=0")
            # As the ledger's own: a commit survives the process, without an fsync
            # that would hold the write lock the routers' reservations wait for.
            conn.execute("PRAGMA synchronous=NORMAL")
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            if app_id == 0:
                self._make_file()
                app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            if app_id != APPLICATION_ID:
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
