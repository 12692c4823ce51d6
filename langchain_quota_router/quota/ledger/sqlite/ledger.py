"""A ledger in a SQLite file, shared by every thread and process on the machine.

WAL journal so readers never wait for the writer; every operation runs in a
``BEGIN IMMEDIATE`` transaction, so check-and-reserve is atomic across processes
(the async operations of one event-loop turn share one, each in a savepoint: see
:mod:`.turns`; settlements that only give room back ride in the next one: see
:mod:`.giveback`); one thread of a process at a time asks for the write lock;
``synchronous=NORMAL`` so a committed reservation survives the process being killed
(not a power cut, which costs an fsync per call). One connection per thread, opened
anew in a forked child. The file is stamped with an ``application_id`` so a file
that is not a ledger is refused instead of scribbled on.

The file is watched: its device and inode are compared with the ones the ledger
opened, and its header read, at most every ``file_check_interval`` (0.1 s) when
it is used. A file deleted or replaced
under a running ledger (a cache cleaner, a restore) raises
:class:`~langchain_quota_router.LedgerError` naming it, because counting on into a
deleted file would admit the whole quota again. With ``?on_wipe=restart`` in the URL
the ledger warns once and starts afresh in a new file instead. A file overwritten
with garbage is a ``LedgerError`` naming the file too.

A file truncated in place (``: > ledger.db``: same inode, no content) is the
subtle one. The ledger's connections keep their locks and their ``-wal`` file, so
a new ledger on it would wait for them (and, created afresh, fight them), and the
last connection to close would write the old pages back into the emptied file
("database disk image is malformed" ever after). So: a file found empty beside a
``-wal`` journal that still holds pages is a ``LedgerError`` saying it was
truncated (``on_wipe=restart`` moves the stale journal aside and starts afresh);
a running ledger that finds its file emptied says the same; and no connection ever
checkpoints on close (``SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE``): the ledger
checkpoints itself, every few hundred commits and on :meth:`close`, only after
checking the file is still its own.

No operation waits for a lock longer than ``busy_timeout`` (URL option, seconds,
default 5); then it is a ``LedgerError`` naming the file and the lock it waited
for.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl
from weakref import WeakKeyDictionary

from langchain_quota_router.quota.errors import ConfigurationError, LedgerError
from langchain_quota_router.quota.ledger.buckets import BucketLedger
from langchain_quota_router.quota.ledger.contract import WouldWait
from langchain_quota_router.quota.ledger.fleet import FleetStore
from langchain_quota_router.quota.ledger.records import FULL_PREFIX
from langchain_quota_router.quota.ledger.sqlite.fleet import SQLiteFleetStore
from langchain_quota_router.quota.ledger.sqlite.giveback import GiveBacks
from langchain_quota_router.quota.ledger.sqlite.schema import APPLICATION_ID, SCHEMA, SCHEMA_VERSION
from langchain_quota_router.quota.ledger.sqlite.turns import SKIPPED, LoopTurns, Op, Outcome
from langchain_quota_router.quota.ledger.sqlite.wal import keep_wal_on_close
from langchain_quota_router.quota.ledger.types import (
    Demand,
    Hold,
    LimitUsage,
    Refusal,
    Reservation,
    encode_releases,
    may_land_late,
)
from langchain_quota_router.quota.limits import Limit

logger = logging.getLogger("langchain_quota_router")

#: Open reservations' leases live in the counters table, as rows of this reserved
#: series: bucket = expiry in ms << 20 | 20 bits of the lease id, amount = what the
#: lease releases (text). Beside the pool's counters, a reservation's lease lands
#: on the page its counters are on, and a commit costs per page written. Older
#: versions never read this series, so both can share a file.
_LEASE_SERIES = "\x00lease"
_LEASE_ID_BITS = 20


def _lease_key(lease_id: str, expires_at: float) -> int:
    """The bucket number a lease is stored under: ordered by expiry."""
    low = zlib.crc32(lease_id.encode()) & ((1 << _LEASE_ID_BITS) - 1)
    return (math.floor(expires_at * 1000) << _LEASE_ID_BITS) | low


_SQLITE_HEADER = b"SQLite format 3\x00"
#: Commits made inline (see SQLiteLedger._inline) between two checkpoints.
_CHECKPOINT_EVERY = 500
_T = TypeVar("_T")
#: Seconds an operation may wait for another connection's lock (``?busy_timeout=``).
BUSY_TIMEOUT = 5.0
#: The locks a ledger waits for, as its errors name them.
_WRITE_LOCK = "its write lock (BEGIN IMMEDIATE)"
_GATE = "its write lock, for another thread of this process"
#: Seconds a settlement that only gives room back may wait for the next
#: transaction (see giveback.py).
GIVE_BACK_DELAY = 0.05
_NOTHING = Demand(0, 0, 0)
#: A held give-back: the arguments of its settle().
_Held = tuple[Reservation, Demand, float]
_SCHEMA_LOCK = "the lock that creates its tables and switches its journal to WAL"


def _is_locked(exc: sqlite3.Error) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


@functools.lru_cache(maxsize=64)
def _read_sql(subjects: int, ranges: int) -> str:
    """The statement :meth:`SQLiteLedger._read` runs for this many hold subjects and
    ranges: one text per shape, so SQLite's statement cache prepares it once.

    Parameters: ?1 the pool, then the subjects, then (series, lo, hi) per range,
    then the lease series and the overdue bound.
    """
    marks = ",".join(f"?{2 + i}" for i in range(subjects))
    parts = [f"SELECT 0, subject, until, reason FROM holds WHERE subject IN ({marks})"]  # noqa: S608 - only placeholders
    n = 2 + subjects
    for i in range(ranges):
        parts.append(
            f"SELECT 1, {i}, TOTAL(amount), NULL FROM counters "  # noqa: S608 - only ints
            f"WHERE pool = ?1 AND series = ?{n} AND bucket BETWEEN ?{n + 1} AND ?{n + 2}"
        )
        n += 3
    parts.append(
        "SELECT 2, bucket, amount, NULL FROM counters "  # noqa: S608 - only ints
        f"WHERE pool = ?1 AND series = ?{n} AND bucket <= ?{n + 1}"
    )
    return " UNION ALL ".join(parts)


def path_from_url(url: str) -> Path:
    """The file a ``sqlite:///relative`` or ``sqlite:////absolute`` URL names."""
    url = url.split("?", 1)[0]
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        msg = (
            f"ledger URL {url!r} names no file: write sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
        raise ConfigurationError(msg)
    return Path(url[len(prefix) :]).expanduser()


class SQLiteLedger(BucketLedger):
    """Counts in a SQLite file. URL: ``sqlite:///path/to/ledger.db``.

    URL options: ``on_wipe``, ``raise`` (default) or ``restart``, what to do when
    the file is deleted, replaced or truncated while the ledger uses it;
    ``busy_timeout``, the seconds an operation may wait for a lock (default 5).
    See the module docs.

    Args:
        url: the ledger URL, or a filesystem path.
        on_wipe: overrides the URL's ``on_wipe``.
    """

    scheme = "sqlite"

    #: Seconds between two looks at the file (a ``stat`` and a read of its header)
    #: to notice it deleted, replaced or overwritten: often enough that a wiped file
    #: costs at most a few calls' counts, rarely enough to cost nothing per call.
    file_check_interval: float = 0.1

    def __init__(self, url: str | os.PathLike[str], *, on_wipe: str | None = None) -> None:
        super().__init__()
        query = ""
        if isinstance(url, str) and url.startswith("sqlite:"):
            self.path = path_from_url(url)
            query = url.partition("?")[2]
        else:
            self.path = Path(url).expanduser()
        options = dict(parse_qsl(query, keep_blank_values=True))
        unknown = sorted(set(options) - {"on_wipe", "busy_timeout"})
        if unknown:
            msg = (
                f"ledger URL {url!r}: unknown option {unknown[0]!r} (known: on_wipe, busy_timeout)"
            )
            raise ConfigurationError(msg)
        text = options.get("busy_timeout")
        try:
            self.busy_timeout = BUSY_TIMEOUT if text is None else float(text)
        except ValueError:
            self.busy_timeout = math.nan
        if not 0 <= self.busy_timeout < math.inf:
            msg = f"ledger URL {url!r}: busy_timeout must be seconds >= 0, got {text!r}"
            raise ConfigurationError(msg)
        on_wipe = on_wipe or options.get("on_wipe", "raise")
        if on_wipe not in ("raise", "restart"):
            msg = f"ledger URL {url!r}: on_wipe must be 'raise' or 'restart', got {on_wipe!r}"
            raise ConfigurationError(msg)
        self.on_wipe = on_wipe
        shown = [f"on_wipe={on_wipe}"] if on_wipe != "raise" else []
        if text is not None:
            shown.append(f"busy_timeout={text}")
        self.url = f"sqlite:///{self.path}" + ("?" + "&".join(shown) if shown else "")
        # (device, inode) of the file this ledger counts in; None until opened.
        self._identity: tuple[int, int] | None = None
        self._identity_lock = threading.Lock()
        # Monotonic time before which no thread looks at the file again.
        self._next_file_check = 0.0
        # A descriptor to read the file's header through, and (pid, file) it is for.
        self._header_fd = -1
        self._header_of: tuple[int, tuple[int, int] | None] | None = None
        self._local = threading.local()
        # Connections for operations the event loop tries without waiting (see
        # _inline), kept apart from those that may wait for a lock.
        self._nowait_local = threading.local()
        self._mode = threading.local()
        self._commits = 0
        # Connections inherited through fork() must never be used or closed by the
        # child; keep them referenced so garbage collection does not close them.
        self._orphans: list[sqlite3.Connection] = []
        # (pid, lock): one connection of this process at a time asks SQLite for
        # the write lock, so threads queue here rather than in SQLite's sleeping
        # busy handler, and the event loop never races its own worker.
        self._gate_state: tuple[int, threading.RLock] = (os.getpid(), threading.RLock())
        self._give_backs: GiveBacks[_Held] = GiveBacks(self._flush_give_backs, GIVE_BACK_DELAY)
        self._turns: WeakKeyDictionary[asyncio.AbstractEventLoop, LoopTurns] = WeakKeyDictionary()

    def _new_fleet_store(self) -> FleetStore:
        return SQLiteFleetStore(self, self.path)

    # ------------------------------------------------------------ connections

    @property
    def _here(self) -> threading.local:
        """This thread's connection state, for the current mode (waiting or not)."""
        return self._nowait_local if getattr(self._mode, "nowait", False) else self._local

    def _inline(self, operation: Callable[[], _T]) -> _T:
        """Run ``operation`` (one transaction) here, on a connection that never
        waits: should the file be locked, it raises :class:`WouldWait` with nothing
        done, and the caller hands the operation to the worker thread instead.

        Uncontended, a transaction on a local file is a few statements in the page
        cache (no fsync: WAL with ``synchronous=NORMAL``, and this connection never
        checkpoints; the worker does, every few hundred such commits), so the event
        loop may run it itself rather than pay a thread hop and the GIL's
        hand-offs for each call.
        """
        self._mode.nowait = True
        try:
            return operation()
        finally:
            self._mode.nowait = False

    def _checkpoint(self) -> None:
        """Copy the WAL into the file, if the file is still this ledger's."""
        with contextlib.suppress(sqlite3.Error, LedgerError):
            conn = self._connection()
            self.check_file()
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def check_file(self) -> None:
        """Raise :class:`LedgerError` if the file is no longer the one this ledger
        opened: deleted, replaced, truncated or overwritten."""
        if self._identity is None:
            return
        if self._file_identity() != self._identity:
            if self.on_wipe != "restart":
                raise LedgerError(self._wiped_message())
            return
        self._check_header()

    def _file_identity(self) -> tuple[int, int] | None:
        """(device, inode) of the ledger file now, or None if it is gone."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def _connection(self) -> sqlite3.Connection:
        here = self._here
        conn: sqlite3.Connection | None = getattr(here, "conn", None)
        pid = os.getpid()
        if conn is not None and here.pid == pid:
            now = time.monotonic()
            if now < self._next_file_check:
                return conn
            if self._file_identity() == here.identity:
                self._check_header()
                self._next_file_check = now + self.file_check_interval
                return conn
            self._wiped(here.identity)
        if conn is not None:
            self._orphans.append(conn)
            here.conn = None
        # Opening would create an empty file where the ledger was.
        known = self.on_wipe != "restart" and self._identity is not None
        if known and self._file_identity() != self._identity:
            raise LedgerError(self._wiped_message())
        conn = self._connect()
        identity = self._file_identity()
        with self._identity_lock:
            if self._identity is None or self.on_wipe == "restart":
                self._identity = identity
            elif identity != self._identity:
                conn.close()
                raise LedgerError(self._wiped_message())
        here.conn = conn
        here.pid = pid
        here.identity = identity
        return conn

    def _check_header(self) -> None:
        """Raise if the file no longer starts as a SQLite database does.

        With WAL, recent pages live in the ``-wal`` file, so SQLite would go on
        counting over a main file overwritten with garbage until a checkpoint;
        one ``pread`` of the header (with each look at the file) notices it.
        """
        if not hasattr(os, "pread"):
            return  # Windows: SQLite notices at the next checkpoint
        mark = (os.getpid(), self._identity)
        if self._header_of != mark:
            # Per process and per file (a restart after a wipe opens the new one;
            # the old descriptor is left open, as another thread may be reading it).
            with contextlib.suppress(OSError):
                self._header_fd = os.open(self.path, os.O_RDONLY)
                self._header_of = mark
            if self._header_of != mark:
                return
        try:
            header = os.pread(self._header_fd, 16, 0)
        except OSError:
            return
        if not header:
            raise LedgerError(self._truncated_message())
        if header != _SQLITE_HEADER:
            msg = (
                f"ledger file {str(self.path)!r} is damaged (it no longer starts as a "
                "SQLite database does); move it away and start afresh, or restore it"
            )
            raise LedgerError(msg)

    def _truncated_message(self, journal: int | None = None) -> str:
        left = f"; its WAL journal still holds {journal} bytes of it" if journal else ""
        return (
            f"ledger file {str(self.path)!r} was truncated (it is empty{left}) while a "
            "ledger used it: what it counted is lost, and counting on would admit the "
            "whole quota again. Restore it, or move it and its -wal and -shm files "
            "away (or open the ledger with ?on_wipe=restart) to start afresh"
        )

    def _check_not_truncated(self) -> None:
        """Before opening: refuse an empty file beside a WAL journal with pages in
        it (a ledger truncated in place), or with ``on_wipe=restart`` move the
        stale journal aside. Opening it would wait for the old connections' locks,
        then build a fresh ledger that they corrupt."""
        try:
            size = os.stat(self.path).st_size
            journal = os.stat(f"{self.path}-wal").st_size
        except OSError:
            return
        if size or not journal:
            return
        if self.on_wipe != "restart":
            raise LedgerError(self._truncated_message(journal))
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.replace(f"{self.path}{suffix}", f"{self.path}{suffix}.truncated-{stamp}")
        logger.warning(
            "ledger file %r was truncated while in use; starting afresh (on_wipe=restart), "
            "its stale journal moved aside to %r",
            str(self.path),
            f"{self.path}-wal.truncated-{stamp}",
        )

    def _wiped_message(self) -> str:
        return (
            f"ledger file {str(self.path)!r} was deleted or replaced while in use: "
            "what it counted is lost, and counting on would admit the whole quota "
            "again. Restore it, or open the ledger with ?on_wipe=restart to start "
            "afresh"
        )

    def _wiped(self, seen: tuple[int, int] | None) -> None:
        """React to the file changing under this thread's connection (``seen``)."""
        if self.on_wipe != "restart":
            raise LedgerError(self._wiped_message())
        with self._identity_lock:
            # Another thread already restarted on the new file: follow quietly.
            first = self._identity == seen
        if first:
            logger.warning(
                "ledger file %r was deleted or replaced while in use; starting afresh "
                "(on_wipe=restart): what it counted is lost",
                str(self.path),
            )

    def _connect(self) -> sqlite3.Connection:
        nowait = getattr(self._mode, "nowait", False)
        if nowait and not self.path.exists():
            raise WouldWait  # creating the file is the worker's job
        if self._identity is not None:
            self._check_header()  # a file emptied or overwritten is not made afresh
        else:
            self._check_not_truncated()
        busy_ms = 0 if nowait else round(self.busy_timeout * 1000)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path,
                timeout=busy_ms / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as exc:
            msg = f"cannot open ledger file {str(self.path)!r}: {exc}"
            raise LedgerError(msg) from exc
        keep_wal_on_close(conn, str(self.path))
        try:
            conn.execute(f"PRAGMA busy_timeout={busy_ms}")
            # Checkpoints are the ledger's own, after checking the file (_checkpoint).
            conn.execute("PRAGMA wal_autocheckpoint=0")
            self._prepare(conn)
        except sqlite3.OperationalError as exc:
            conn.close()
            if nowait and _is_locked(exc):
                raise WouldWait from exc
            if _is_locked(exc):
                raise LedgerError(self._locked_message(_SCHEMA_LOCK, exc)) from exc
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
        deadline = time.monotonic() + self.busy_timeout
        attempt = 0
        while True:
            try:
                self._ensure_schema(conn)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                return
            except sqlite3.OperationalError as exc:
                left = deadline - time.monotonic()
                if not _is_locked(exc) or left <= 0:
                    raise
                if getattr(self._mode, "nowait", False):
                    raise  # _connect turns it into WouldWait
                attempt += 1
                time.sleep(min(0.005 * attempt, left))
                # What is left of the wait, for the next attempt's lock.
                conn.execute(f"PRAGMA busy_timeout={max(1, round(left * 1000))}")

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        if conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID:
            self._check_version(conn)
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
            ).fetchone()[0]
            if app_id != APPLICATION_ID and (app_id != 0 or tables):
                msg = (
                    f"{str(self.path)!r} is a SQLite database of another program, "
                    "not a langchain-quota-router ledger; point the ledger at "
                    "another file"
                )
                raise LedgerError(msg)
            if app_id == 0:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._check_version(conn)

    def _check_version(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            msg = (
                f"ledger {str(self.path)!r} was written by a newer "
                f"langchain-quota-router (schema {version}); upgrade the package"
            )
            raise LedgerError(msg)

    def close(self) -> None:
        """Apply held give-backs, then close this thread's connections,
        checkpointing first if the file is still this ledger's (connections never
        checkpoint on close by themselves)."""
        try:
            self._flush_give_backs()
        except (LedgerError, WouldWait) as exc:
            logger.warning(
                "ledger %r closed with %d settlement(s) not applied (%s): what the "
                "calls did not spend stays counted until their leases run out",
                str(self.path),
                len(self._give_backs),
                exc,
            )
        for local in (self._local, self._nowait_local):
            conn = getattr(local, "conn", None)
            if conn is not None and local.pid == os.getpid():
                with contextlib.suppress(sqlite3.Error, LedgerError):
                    self.check_file()
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                conn.close()
            local.conn = None
        super().close()

    def _locked_message(self, lock: str, exc: object) -> str:
        return (
            f"ledger file {str(self.path)!r} stayed locked for {self.busy_timeout:g} s "
            f"(busy_timeout): another connection, in this process or another, holds "
            f"{lock} ({exc})"
        )

    # ------------------------------------------------------------ transactions

    def _broken(self, exc: sqlite3.Error, doing: str) -> LedgerError:
        """``exc`` as a LedgerError that names the file."""
        if isinstance(exc, sqlite3.OperationalError) or not isinstance(exc, sqlite3.DatabaseError):
            return LedgerError(f"ledger {str(self.path)!r} {doing}: {exc}")
        return LedgerError(
            f"ledger file {str(self.path)!r} is damaged ({exc}); move it away and "
            "start afresh, or restore it"
        )

    def _gate(self) -> threading.RLock:
        """This process's turn at the write lock (a forked child gets its own)."""
        pid, gate = self._gate_state
        if pid != os.getpid():
            self._gate_state = (pid, gate) = (os.getpid(), threading.RLock())
        return gate

    @contextmanager
    def _atomic(self) -> Iterator[None]:
        conn: sqlite3.Connection | None = getattr(self._local, "txn", None)
        if conn is None:
            with self._transaction():
                yield
            return
        # Inside a transaction already (a batch of the event loop's operations,
        # or held give-backs): this operation alone is undone if it fails.
        if getattr(self._local, "bare", False):
            yield
            return
        conn.execute("SAVEPOINT op")
        try:
            yield
        except sqlite3.Error as exc:
            self._undo(conn, "op")
            if getattr(self._mode, "nowait", False) and _is_locked(exc):
                raise WouldWait from exc
            raise self._broken(exc, "failed") from exc
        except BaseException:
            self._undo(conn, "op")
            raise
        conn.execute("RELEASE op")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One ``BEGIN IMMEDIATE ... COMMIT`` on this thread's connection (in the
        current mode), with the held give-backs applied first."""
        nowait = getattr(self._mode, "nowait", False)
        gate = self._gate()
        if not gate.acquire(timeout=0 if nowait else self.busy_timeout):
            if nowait:
                raise WouldWait
            raise LedgerError(self._locked_message(_GATE, "waited in this process"))
        try:
            conn = self._connection()
            # The primitives below run on it (this thread's, in the current mode).
            self._local.active = conn
            try:
                # busy_timeout is the whole wait: SQLite retries inside it.
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if nowait and _is_locked(exc):
                    raise WouldWait from exc
                if _is_locked(exc):
                    raise LedgerError(self._locked_message(_WRITE_LOCK, exc)) from exc
                raise self._broken(exc, "is unavailable") from exc
            except sqlite3.Error as exc:
                raise self._broken(exc, "is unavailable") from exc
            self._local.txn = conn
            applied: list[_Held] = []
            try:
                applied = self._apply_give_backs(conn)
                yield
            except sqlite3.Error as exc:
                self._rollback(conn)
                self._give_backs.put_back(applied)
                if nowait and _is_locked(exc):
                    raise WouldWait from exc
                raise self._broken(exc, "failed") from exc
            except BaseException:
                self._rollback(conn)
                self._give_backs.put_back(applied)
                raise
            finally:
                self._local.txn = None
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback(conn)
                self._give_backs.put_back(applied)
                if nowait and _is_locked(exc):
                    raise WouldWait from exc
                raise self._broken(exc, "could not commit") from exc
        finally:
            gate.release()
        self._commits += 1
        if self._commits % _CHECKPOINT_EVERY == 0:
            self._worker().submit(self._checkpoint)

    @staticmethod
    def _undo(conn: sqlite3.Connection, savepoint: str) -> None:
        with contextlib.suppress(sqlite3.Error):
            conn.execute(f"ROLLBACK TO {savepoint}")
            conn.execute(f"RELEASE {savepoint}")

    # ------------------------------------------------------------ give-backs

    def settle(self, reservation: Reservation, used: Demand, now: float) -> None:
        """Replace a reservation's estimate with what the call really spent.

        A settlement that only gives room back is held, at most
        ``GIVE_BACK_DELAY`` seconds, and applied in the next transaction (see
        :mod:`~langchain_quota_router.quota.ledger.sqlite.giveback`): until then
        the pool counts a little too much, never too little.
        """
        if self._may_hold(reservation, used, now):
            self._give_backs.add((reservation, used, now))
            return
        super().settle(reservation, used, now)

    def settle_now(self, reservation: Reservation, used: Demand, now: float) -> None:
        super().settle(reservation, used, now)

    def _may_hold(self, reservation: Reservation, used: Demand, now: float) -> bool:
        """Whether settling ``reservation`` with ``used`` only gives room back, and
        may be held: lost with the process, its lease would still keep ``used``
        counted (:func:`may_land_late`), and applied late, after that lease ran
        out, it would still only give back."""
        if reservation.pool in self.full_pools:
            return False  # lift what this process remembers at once
        return may_land_late(reservation, used)

    def _apply_give_backs(self, conn: sqlite3.Connection) -> list[_Held]:
        """Apply the held give-backs in the open transaction; those applied (to
        hold again should the transaction fail)."""
        items = self._give_backs.take()
        if not items:
            return items
        settle = super().settle
        conn.execute("SAVEPOINT give_backs")
        self._local.bare = True
        try:
            for reservation, used, now in items:
                settle(reservation, used, now)
        except WouldWait:
            self._local.bare = False
            self._undo(conn, "give_backs")
            self._give_backs.put_back(items)
            raise
        except Exception:  # noqa: BLE001 - one at a time below, each on its own
            self._local.bare = False
            self._undo(conn, "give_backs")
            return self._apply_one_by_one(items)
        finally:
            self._local.bare = False
        conn.execute("RELEASE give_backs")
        return items

    def _apply_one_by_one(self, items: list[_Held]) -> list[_Held]:
        settle = super().settle
        for reservation, used, now in items:
            try:
                settle(reservation, used, now)  # a savepoint each (see _atomic)
            except WouldWait:
                raise
            except Exception as exc:  # noqa: BLE001 - over-counted, never under
                logger.warning(
                    "could not give back what a call in pool %r did not spend: %s; "
                    "it stays counted (its lease releases the output estimate)",
                    reservation.pool,
                    exc,
                )
        return items

    def _flush_give_backs(self) -> None:
        """Apply the held give-backs now, in a transaction of their own."""
        if len(self._give_backs):
            with self._atomic():
                pass

    # ------------------------------------------------------------ async API

    def _loop_turns(self) -> LoopTurns:
        """The running loop's batches (see :mod:`.turns`)."""
        loop = asyncio.get_running_loop()
        turns = self._turns.get(loop)
        if turns is None or turns.pid != os.getpid():
            turns = self._turns[loop] = LoopTurns(loop, self._run_batch, self._worker, self._orphan)
        return turns

    def _run_batch(self, ops: list[Op], nowait: bool) -> list[Outcome]:
        """Run ``ops`` in one transaction: on this thread's connection that never
        waits when ``nowait`` (raising :class:`WouldWait`), else on the one that may."""
        self._mode.nowait = nowait
        try:
            outcomes: list[Outcome] = []
            with self._transaction():
                for op in ops:
                    future = op.future
                    if op.skippable and future is not None and future.cancelled():
                        outcomes.append(SKIPPED)
                        continue
                    try:
                        outcomes.append((True, op.fn()))
                    except WouldWait:
                        raise
                    except Exception as exc:  # noqa: BLE001 - this operation's alone
                        outcomes.append((False, exc))
            return outcomes
        finally:
            self._mode.nowait = False

    def _orphan(self, made: Any) -> None:
        """A reservation made for a caller that was cancelled meanwhile: take it back."""
        if not isinstance(made, Reservation):
            return
        if self._may_hold(made, _NOTHING, made.at):
            self._give_backs.add((made, _NOTHING, made.at))
        else:  # never a transaction on the loop's thread that may wait
            self._worker().submit(BucketLedger.settle, self, made, _NOTHING, made.at)

    async def areserve(
        self,
        pool: str,
        limits: Sequence[Limit],
        demand: Demand,
        now: float,
        *,
        key: str | None = None,
        model: str | None = None,
    ) -> Reservation | Refusal:
        """:meth:`reserve` in this loop turn's transaction (see :mod:`.turns`).

        A caller cancelled before the batch runs reserves nothing; one cancelled
        while it runs in the worker has its reservation taken back.
        """
        known = self.remembered(pool, demand, now)
        if known is not None:
            return known
        reserve = functools.partial(self.reserve, pool, limits, demand, now, key=key, model=model)
        made: Reservation | Refusal = await self._loop_turns().submit(reserve, skippable=True)
        return made

    async def asettle(self, reservation: Reservation, used: Demand, now: float) -> None:
        """:meth:`settle`: held without waiting when it only gives room back, else
        in this loop turn's transaction."""
        if self._may_hold(reservation, used, now):
            self._give_backs.add((reservation, used, now))
            return
        settle = functools.partial(BucketLedger.settle, self, reservation, used, now)
        await self._loop_turns().submit(settle, skippable=False)

    async def ausage(self, pool: str, limits: Sequence[Limit], now: float) -> list[LimitUsage]:
        """:meth:`usage` in this loop turn's transaction (held give-backs applied)."""
        usage = functools.partial(self.usage, pool, limits, now)
        found: list[LimitUsage] = await self._loop_turns().submit(usage, skippable=True)
        return found

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        # Nothing to roll back, or the file is beyond reading.
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")

    def _full_records(self) -> list[Hold]:
        # A plain read (WAL: never waits for a writer), no write lock.
        try:
            rows = (
                self._connection()
                .execute(
                    "SELECT subject, until, reason FROM holds WHERE subject >= ? AND subject < ?",
                    (FULL_PREFIX, FULL_PREFIX[:-1] + chr(ord(FULL_PREFIX[-1]) + 1)),
                )
                .fetchall()
            )
        except sqlite3.Error as exc:
            if getattr(self._mode, "nowait", False) and _is_locked(exc):
                raise WouldWait from exc
            raise self._broken(exc, "could not be read") from exc
        return [Hold(s, u, r) for s, u, r in rows]

    # ------------------------------------------------------- storage primitives

    def _sum(self, pool: str, series: str, lo: int, hi: int) -> int:
        row = self._local.active.execute(
            "SELECT TOTAL(amount) FROM counters "
            "WHERE pool = ? AND series = ? AND bucket BETWEEN ? AND ?",
            (pool, series, lo, hi),
        ).fetchone()
        return int(row[0])

    def _buckets(self, pool: str, series: str, lo: int, hi: int) -> list[tuple[int, int]]:
        rows = self._local.active.execute(
            "SELECT bucket, amount FROM counters WHERE pool = ? AND series = ? "
            "AND bucket BETWEEN ? AND ? AND amount > 0 ORDER BY bucket",
            (pool, series, lo, hi),
        ).fetchall()
        return [(int(b), int(a)) for b, a in rows]

    def _add(self, pool: str, series: str, bucket: int, amount: int) -> None:
        self._local.active.execute(
            "INSERT INTO counters (pool, series, bucket, amount) "
            "VALUES (:pool, :series, :bucket, MAX(0, :amount)) "
            "ON CONFLICT (pool, series, bucket) "
            "DO UPDATE SET amount = MAX(0, amount + :amount)",
            {"pool": pool, "series": series, "bucket": bucket, "amount": amount},
        )

    def _add_many(self, pool: str, adds: Sequence[tuple[str, int, int]]) -> None:
        self._local.active.executemany(
            "INSERT INTO counters (pool, series, bucket, amount) "
            "VALUES (?1, ?2, ?3, MAX(0, ?4)) "
            "ON CONFLICT (pool, series, bucket) DO UPDATE SET amount = MAX(0, amount + ?4)",
            [(pool, series, bucket, amount) for series, bucket, amount in adds],
        )

    def _read(
        self,
        pool: str,
        subjects: Sequence[str],
        ranges: Sequence[tuple[str, int, int]],
        now: float,
    ) -> tuple[list[Hold], list[int], list[tuple[str, str]]]:
        # One statement for the holds and every range: a reservation is on the hot
        # path of every call, and each statement costs as much as the work in it.
        params: list[object] = [pool, *subjects]
        for series, lo, hi in ranges:
            params += (series, lo, hi)
        params += (_LEASE_SERIES, _lease_key("", now) | ((1 << _LEASE_ID_BITS) - 1))
        sql = _read_sql(len(subjects), len(ranges))
        holds: list[Hold] = []
        sums = [0] * len(ranges)
        overdue: list[tuple[str, str]] = []
        for kind, a, b, c in self._local.active.execute(sql, params):
            if kind == 0:
                holds.append(Hold(a, b, c))
            elif kind == 1:
                sums[a] = int(b)
            else:
                overdue.append((str(a), str(b)))
        return holds, sums, overdue

    def _prune(self, pool: str, series: str, below: int) -> None:
        self._local.active.execute(
            "DELETE FROM counters WHERE pool = ? AND series = ? AND bucket < ?",
            (pool, series, below),
        )

    def _delete_pool(self, pool: str) -> None:
        self._local.active.execute("DELETE FROM counters WHERE pool = ?", (pool,))

    def _add_lease(
        self, pool: str, lease_id: str, expires_at: float, releases: Sequence[tuple[str, int, int]]
    ) -> bool:
        cursor = self._local.active.execute(
            "INSERT INTO counters (pool, series, bucket, amount) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (pool, series, bucket) DO NOTHING",
            (pool, _LEASE_SERIES, _lease_key(lease_id, expires_at), encode_releases(releases)),
        )
        return bool(cursor.rowcount > 0)

    def _overdue(self, pool: str, now: float) -> list[tuple[str, str]]:
        rows = self._local.active.execute(
            "SELECT bucket, amount FROM counters WHERE pool = ? AND series = ? AND bucket <= ?",
            (pool, _LEASE_SERIES, _lease_key("", now) | ((1 << _LEASE_ID_BITS) - 1)),
        ).fetchall()
        return [(str(b), str(a)) for b, a in rows]

    def _first_lease(self, pool: str) -> float | None:
        row = self._local.active.execute(
            "SELECT MIN(bucket) FROM counters WHERE pool = ? AND series = ?",
            (pool, _LEASE_SERIES),
        ).fetchone()
        return None if row[0] is None else (int(row[0]) >> _LEASE_ID_BITS) / 1000

    def _drop_lease(self, pool: str, lease_id: str, expires_at: float) -> bool:
        cursor = self._local.active.execute(
            "DELETE FROM counters WHERE pool = ? AND series = ? AND bucket = ?",
            (pool, _LEASE_SERIES, _lease_key(lease_id, expires_at)),
        )
        return bool(cursor.rowcount > 0)

    def _drop_leases(self, pool: str, lease_ids: Sequence[str]) -> None:
        # Overdue leases are named by their bucket (see _overdue).
        self._local.active.executemany(
            "DELETE FROM counters WHERE pool = ? AND series = ? AND bucket = ?",
            [(pool, _LEASE_SERIES, int(i)) for i in lease_ids],
        )

    def _holds(self, subjects: Sequence[str]) -> list[Hold]:
        marks = ",".join("?" * len(subjects))
        rows = self._local.active.execute(
            f"SELECT subject, until, reason FROM holds WHERE subject IN ({marks})",  # noqa: S608 - only placeholders are interpolated
            tuple(subjects),
        ).fetchall()
        return [Hold(s, u, r) for s, u, r in rows]

    def _all_holds(self) -> list[Hold]:
        rows = self._local.active.execute(
            "SELECT subject, until, reason FROM holds ORDER BY subject"
        ).fetchall()
        return [Hold(s, u, r) for s, u, r in rows]

    def _set_hold(self, hold: Hold) -> None:
        self._local.active.execute(
            "INSERT OR REPLACE INTO holds (subject, until, reason) VALUES (?, ?, ?)",
            (hold.subject, hold.until, hold.reason),
        )

    def _delete_hold(self, subject: str) -> None:
        self._local.active.execute("DELETE FROM holds WHERE subject = ?", (subject,))
