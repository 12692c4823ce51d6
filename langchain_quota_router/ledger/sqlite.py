"""A ledger in a SQLite file, shared by every thread and process on the machine.

WAL journal so readers never wait for the writer; every operation is one
``BEGIN IMMEDIATE`` transaction, so check-and-reserve is atomic across processes;
``synchronous=NORMAL`` so a committed reservation survives the process being killed
(not a power cut, which costs an fsync per call). One connection per thread, opened
anew in a forked child. The file is stamped with an ``application_id`` so a file
that is not a ledger is refused instead of scribbled on.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from langchain_quota_router._errors import ConfigurationError, LedgerError
from langchain_quota_router.ledger.base import Hold, Ledger

_APPLICATION_ID = 0x51524C47  # "QRLG"
_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    pool   TEXT    NOT NULL,
    series TEXT    NOT NULL,
    bucket INTEGER NOT NULL,
    amount INTEGER NOT NULL,
    PRIMARY KEY (pool, series, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS holds (
    subject TEXT PRIMARY KEY,
    until   REAL,
    reason  TEXT NOT NULL
) WITHOUT ROWID;
"""
_BUSY_TIMEOUT_MS = 10_000
_LOCKED_RETRIES = 5
_OPEN_RETRIES = 40


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


def path_from_url(url: str) -> Path:
    """The file a ``sqlite:///relative`` or ``sqlite:////absolute`` URL names."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        msg = (
            f"ledger URL {url!r} names no file: write sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
        raise ConfigurationError(msg)
    return Path(url[len(prefix) :]).expanduser()


class SQLiteLedger(Ledger):
    """Counts in a SQLite file. URL: ``sqlite:///path/to/ledger.db``.

    Args:
        url: the ledger URL, or a filesystem path.
    """

    scheme = "sqlite"

    def __init__(self, url: str | os.PathLike[str]) -> None:
        super().__init__()
        if isinstance(url, str) and url.startswith("sqlite:"):
            self.path = path_from_url(url)
        else:
            self.path = Path(url).expanduser()
        self.url = f"sqlite:///{self.path}"
        self._local = threading.local()
        # Connections inherited through fork() must never be used or closed by the
        # child; keep them referenced so garbage collection does not close them.
        self._orphans: list[sqlite3.Connection] = []

    # ------------------------------------------------------------ connections

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        pid = os.getpid()
        if conn is not None and self._local.pid == pid:
            return conn
        if conn is not None:
            self._orphans.append(conn)
        conn = self._connect()
        self._local.conn = conn
        self._local.pid = pid
        return conn

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path,
                timeout=_BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as exc:
            msg = f"cannot open ledger file {str(self.path)!r}: {exc}"
            raise LedgerError(msg) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            self._prepare(conn)
        except sqlite3.OperationalError as exc:
            conn.close()
            if _is_locked(exc):
                msg = f"ledger {str(self.path)!r} stayed locked while opening: {exc}"
                raise LedgerError(msg) from exc
            msg = f"cannot open ledger file {str(self.path)!r}: {exc}"
            raise LedgerError(msg) from exc
        except sqlite3.DatabaseError as exc:
            conn.close()
            msg = (
                f"{str(self.path)!r} is not a langchain-quota-router ledger "
                f"(SQLite says: {exc}); point the ledger at another file"
            )
            raise LedgerError(msg) from exc
        except LedgerError:
            conn.close()
            raise
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Create or check the schema and switch to WAL, riding out first-open races.

        When many threads or processes open a new file at once, SQLite answers some
        of the lock escalations involved (creating the schema, switching the
        journal to WAL) with an immediate "database is locked" instead of waiting.
        """
        for attempt in range(_OPEN_RETRIES):
            try:
                self._ensure_schema(conn)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                return
            except sqlite3.OperationalError as exc:
                if not _is_locked(exc) or attempt == _OPEN_RETRIES - 1:
                    raise
                time.sleep(0.005 * (attempt + 1))

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        if conn.execute("PRAGMA application_id").fetchone()[0] == _APPLICATION_ID:
            self._check_version(conn)
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
            ).fetchone()[0]
            if app_id != _APPLICATION_ID and (app_id != 0 or tables):
                msg = (
                    f"{str(self.path)!r} is a SQLite database of another program, "
                    "not a langchain-quota-router ledger; point the ledger at "
                    "another file"
                )
                raise LedgerError(msg)
            if app_id == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA application_id={_APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._check_version(conn)

    def _check_version(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > _SCHEMA_VERSION:
            msg = (
                f"ledger {str(self.path)!r} was written by a newer "
                f"langchain-quota-router (schema {version}); upgrade the package"
            )
            raise LedgerError(msg)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None

    # ------------------------------------------------------------ transactions

    @contextmanager
    def _atomic(self) -> Iterator[None]:
        conn = self._connection()
        for attempt in range(_LOCKED_RETRIES):
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                # busy_timeout already waited; a few more tries ride out a long
                # checkpoint before we give up with a clear error.
                if "locked" not in str(exc) or attempt == _LOCKED_RETRIES - 1:
                    msg = f"ledger {str(self.path)!r} is unavailable: {exc}"
                    raise LedgerError(msg) from exc
                time.sleep(0.05 * (attempt + 1))
        try:
            yield
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            msg = f"ledger {str(self.path)!r} failed: {exc}"
            raise LedgerError(msg) from exc
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                msg = f"ledger {str(self.path)!r} could not commit: {exc}"
                raise LedgerError(msg) from exc

    # ------------------------------------------------------- storage primitives

    def _sum(self, pool: str, series: str, lo: int, hi: int) -> int:
        row = self._local.conn.execute(
            "SELECT TOTAL(amount) FROM counters "
            "WHERE pool = ? AND series = ? AND bucket BETWEEN ? AND ?",
            (pool, series, lo, hi),
        ).fetchone()
        return int(row[0])

    def _buckets(self, pool: str, series: str, lo: int, hi: int) -> list[tuple[int, int]]:
        rows = self._local.conn.execute(
            "SELECT bucket, amount FROM counters WHERE pool = ? AND series = ? "
            "AND bucket BETWEEN ? AND ? AND amount > 0 ORDER BY bucket",
            (pool, series, lo, hi),
        ).fetchall()
        return [(int(b), int(a)) for b, a in rows]

    def _add(self, pool: str, series: str, bucket: int, amount: int) -> None:
        self._local.conn.execute(
            "INSERT INTO counters (pool, series, bucket, amount) "
            "VALUES (:pool, :series, :bucket, MAX(0, :amount)) "
            "ON CONFLICT (pool, series, bucket) "
            "DO UPDATE SET amount = MAX(0, amount + :amount)",
            {"pool": pool, "series": series, "bucket": bucket, "amount": amount},
        )

    def _add_many(self, pool: str, adds: Sequence[tuple[str, int, int]]) -> None:
        self._local.conn.executemany(
            "INSERT INTO counters (pool, series, bucket, amount) "
            "VALUES (?1, ?2, ?3, MAX(0, ?4)) "
            "ON CONFLICT (pool, series, bucket) DO UPDATE SET amount = MAX(0, amount + ?4)",
            [(pool, series, bucket, amount) for series, bucket, amount in adds],
        )

    def _settle(self, pool: str, deltas: Sequence[tuple[str, int, int]]) -> None:
        if len(deltas) != 1:
            super()._settle(pool, deltas)
            return
        # One statement is atomic on its own: no BEGIN/COMMIT round on the hot path.
        self._connection()
        try:
            self._add_many(pool, deltas)
        except sqlite3.Error as exc:
            msg = f"ledger {str(self.path)!r} failed: {exc}"
            raise LedgerError(msg) from exc

    def _read(
        self, pool: str, subjects: Sequence[str], ranges: Sequence[tuple[str, int, int]]
    ) -> tuple[list[Hold], list[int]]:
        # One statement for the holds and every range: a reservation is on the hot
        # path of every call, and each statement costs as much as the work in it.
        parts = [
            "SELECT 0, subject, until, reason FROM holds WHERE subject IN "  # noqa: S608
            f"({','.join('?' * len(subjects))})"  # only placeholders are interpolated
        ]
        params: list[object] = list(subjects)
        for i, (series, lo, hi) in enumerate(ranges):
            parts.append(
                f"SELECT 1, {i}, TOTAL(amount), NULL FROM counters "  # noqa: S608 - an int
                "WHERE pool = ? AND series = ? AND bucket BETWEEN ? AND ?"
            )
            params += [pool, series, lo, hi]
        holds: list[Hold] = []
        sums = [0] * len(ranges)
        for kind, a, b, c in self._local.conn.execute(" UNION ALL ".join(parts), params):
            if kind == 0:
                holds.append(Hold(a, b, c))
            else:
                sums[a] = int(b)
        return holds, sums

    def _prune(self, pool: str, series: str, below: int) -> None:
        self._local.conn.execute(
            "DELETE FROM counters WHERE pool = ? AND series = ? AND bucket < ?",
            (pool, series, below),
        )

    def _delete_pool(self, pool: str) -> None:
        self._local.conn.execute("DELETE FROM counters WHERE pool = ?", (pool,))

    def _holds(self, subjects: Sequence[str]) -> list[Hold]:
        marks = ",".join("?" * len(subjects))
        rows = self._local.conn.execute(
            f"SELECT subject, until, reason FROM holds WHERE subject IN ({marks})",  # noqa: S608 - only placeholders are interpolated
            tuple(subjects),
        ).fetchall()
        return [Hold(s, u, r) for s, u, r in rows]

    def _all_holds(self) -> list[Hold]:
        rows = self._local.conn.execute(
            "SELECT subject, until, reason FROM holds ORDER BY subject"
        ).fetchall()
        return [Hold(s, u, r) for s, u, r in rows]

    def _set_hold(self, hold: Hold) -> None:
        self._local.conn.execute(
            "INSERT OR REPLACE INTO holds (subject, until, reason) VALUES (?, ?, ?)",
            (hold.subject, hold.until, hold.reason),
        )

    def _delete_hold(self, subject: str) -> None:
        self._local.conn.execute("DELETE FROM holds WHERE subject = ?", (subject,))
