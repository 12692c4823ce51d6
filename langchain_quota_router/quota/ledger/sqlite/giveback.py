"""Settlements that only give room back, held briefly to ride in the next transaction.

Most calls spend less than their estimate, so most settlements only lower counts.
Counting a little too much for a moment never admits too much, so such a
settlement need not cost a transaction of its own: it waits (at most ``delay``
seconds) for the next transaction this process makes on the file, and is applied
inside it. Settlements that raise a count are never held (see
:meth:`SQLiteLedger.settle`). A thread of the ledger's own flushes what is still
held after ``delay``; reads of usage, ``close()`` and ``settle_now`` flush first.

Held settlements belong to the process that made them: a forked child starts
with none, and the parent still applies its own. What is held when the interpreter exits is
applied by an ``atexit`` hook (not after ``os._exit`` or ``kill -9``: then the
leases release the output estimates, and counts stay high, never low).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

_Item = TypeVar("_Item")
logger = logging.getLogger("langchain_quota_router")


class GiveBacks(Generic[_Item]):
    """Held give-backs of one ledger in one process, and the thread that flushes them.

    Args:
        flush: applies whatever is held (takes it with :meth:`take`), in a
            transaction of its own; called by the flushing thread.
        delay: seconds a give-back may wait for another transaction.
    """

    def __init__(self, flush: Callable[[], None], delay: float) -> None:
        self.delay = delay
        # Weakly: a ledger dropped without close() must not be kept by its thread.
        self._flush = weakref.WeakMethod(flush)
        self._cond = threading.Condition(threading.Lock())
        self._items: list[_Item] = []
        self._pid = os.getpid()
        # Monotonic time the oldest held item was added (0.0: nothing held).
        self._since = 0.0
        self._thread: threading.Thread | None = None
        # Whether the thread sleeps until told (else it looks every `delay`
        # seconds by itself, and nobody need wake it: a wake-up per call would
        # cost more than the transaction it saves).
        self._idle = False
        _LIVE.add(self)

    def flush_now(self) -> None:
        """Apply what this process holds, here and now (at exit: the flushing
        thread, a daemon, would die with what it holds counted too high)."""
        flush = self._flush()
        if flush is not None and len(self):
            flush()

    def __len__(self) -> int:
        return len(self._items) if self._pid == os.getpid() else 0

    def add(self, item: _Item) -> None:
        """Hold ``item`` until the next transaction, or ``delay`` seconds."""
        self._forked()
        with self._cond:
            if not self._items:
                self._since = time.monotonic()
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=_run, args=(weakref.ref(self),), name="quota-ledger-giveback"
                    )
                    self._thread.daemon = True
                    self._thread.start()
                elif self._idle:
                    self._cond.notify()
            self._items.append(item)

    def take(self) -> list[_Item]:
        """Everything held, now the caller's to apply (or :meth:`put_back`)."""
        self._forked()
        if not self._items:  # the common case, without the lock
            return []
        with self._cond:
            items, self._items, self._since = self._items, [], 0.0
            return items

    def put_back(self, items: list[_Item]) -> None:
        """Hold ``items`` (taken, then not applied) again, ahead of newer ones."""
        if not items:
            return
        self._forked()
        with self._cond:
            if not self._items:
                self._since = time.monotonic()
                if self._idle:
                    self._cond.notify()
            self._items[:0] = items

    def _forked(self) -> None:
        """In a forked child, forget the parent's items, its thread and its lock
        (which another of the parent's threads may have held at the fork)."""
        pid = os.getpid()
        if self._pid != pid:
            self._cond = threading.Condition(threading.Lock())
            self._pid, self._items, self._since, self._thread = pid, [], 0.0, None
            self._idle = False

    def _wait(self) -> bool | None:
        """Block until something has been held ``delay`` seconds (True); None after
        a second of nothing held; False when the thread should end (it is not this
        process's)."""
        with self._cond:
            quiet_until = time.monotonic() + 1.0
            while True:
                if self._pid != os.getpid():
                    return False
                now = time.monotonic()
                if self._since:
                    left = self._since + self.delay - now
                    if left <= 0:
                        return True
                    self._cond.wait(left)
                elif now < quiet_until:
                    self._cond.wait(self.delay)
                else:
                    self._idle = True
                    self._cond.wait(1.0)
                    self._idle = False
                    if not self._since:
                        return None


#: Every ledger's held give-backs, applied when the interpreter exits.
_LIVE: weakref.WeakSet[GiveBacks[Any]] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for held in list(_LIVE):
        try:
            held.flush_now()
        except Exception:
            logger.debug("could not apply held give-backs at exit", exc_info=True)


def _run(ref: weakref.ref[GiveBacks[object]]) -> None:
    """The flushing thread: ends when its ledger is gone."""
    failures = 0
    while True:
        held = ref()
        if held is None:
            return
        due = held._wait()
        flush = held._flush()
        delay = held.delay
        del held
        if due is False or flush is None:
            return
        if due:
            try:
                flush()
                failures = 0
            except Exception:  # noqa: BLE001 - kept held; the next transaction applies it
                failures += 1
                time.sleep(min(delay * 2**failures, 5.0))
        del flush
