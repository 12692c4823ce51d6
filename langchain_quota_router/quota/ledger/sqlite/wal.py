"""Keeping SQLite from writing a connection's WAL back into the main file on close.

When the last connection to a WAL database closes, SQLite checkpoints: it copies
the pages of the ``-wal`` file into the main file. If the main file was truncated
or overwritten meanwhile (``: > ledger.db``), that writes the old ledger's pages
into a file that is no longer it, and every later open fails with "database disk
image is malformed". ``SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE`` turns that off: the
ledger checkpoints itself, after it has checked the file is still its own.
"""

from __future__ import annotations

import ctypes
import os
import sqlite3
import sys
from typing import Any

#: SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, from sqlite3.h (SQLite 3.28 and later).
_NO_CKPT_ON_CLOSE = 1006


def keep_wal_on_close(conn: sqlite3.Connection, path: str) -> bool:
    """Tell ``conn`` never to checkpoint when it closes; whether that took.

    Python 3.12 has ``Connection.setconfig``. Before it, the ``sqlite3 *`` handle
    is read from CPython's connection object (its first field) and checked by
    asking SQLite which file it has open before anything is set through it.
    """
    setconfig = getattr(conn, "setconfig", None)
    if setconfig is not None:
        setconfig(_NO_CKPT_ON_CLOSE, True)
        return True
    return _through_ctypes(conn, path)


def _through_ctypes(conn: sqlite3.Connection, path: str) -> bool:
    if sys.implementation.name != "cpython" or sqlite3.sqlite_version_info < (3, 28, 0):
        return False
    library = _library()
    if library is None:
        return False
    try:
        handle = ctypes.c_void_p.from_address(id(conn) + object.__basicsize__).value
        if not handle:
            return False
        opened = library.sqlite3_db_filename(ctypes.c_void_p(handle), b"main")
        names = {os.path.abspath(path), os.path.realpath(path)}
        if opened is None or os.fsdecode(opened) not in names:
            return False  # not the handle we think it is: touch nothing
        done = ctypes.c_int(0)
        code = library.sqlite3_db_config(
            ctypes.c_void_p(handle),
            ctypes.c_int(_NO_CKPT_ON_CLOSE),
            ctypes.c_int(1),
            ctypes.byref(done),
        )
    except (OSError, ValueError, AttributeError):
        return False
    return code == 0 and done.value == 1


_LIBRARY: list[Any] = []


def _library() -> Any:
    """The SQLite library the ``sqlite3`` module uses (None if it cannot be found)."""
    if not _LIBRARY:
        try:
            import _sqlite3

            library: Any = ctypes.CDLL(_sqlite3.__file__)
            library.sqlite3_db_filename.restype = ctypes.c_char_p
            library.sqlite3_db_filename.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            library.sqlite3_db_config.restype = ctypes.c_int
        except (ImportError, OSError, AttributeError):
            library = None
        _LIBRARY.append(library)
    return _LIBRARY[0]
