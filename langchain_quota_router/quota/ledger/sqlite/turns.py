"""Group commit: the ledger operations one event-loop turn asks for, in one transaction.

Two hundred tasks reserving at once would otherwise make two hundred transactions,
each taking the file's write lock and appending to its journal. Instead each
operation asked for during one turn of the loop is queued, and one callback
(``loop.call_soon``) runs the whole queue in one transaction on the loop's own
connection, which never waits for a lock. If the file is locked (another process
writes), the whole batch goes to the ledger's worker thread, which may wait; while
the worker holds or waits for the lock, later batches queue behind it instead of
racing it for the lock, and it takes them all in its next transaction.

This module knows nothing of SQLite: the ledger supplies ``run(ops, nowait)``, which
runs the operations in one transaction and returns each one's outcome, raising
:class:`~langchain_quota_router.quota.ledger.contract.WouldWait` (with nothing done)
when ``nowait`` and the lock is taken.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from langchain_quota_router.quota.ledger.contract import WouldWait


@dataclass(slots=True)
class Op:
    """One queued operation: ``fn()`` runs inside the batch's transaction.

    Attributes:
        fn: the operation.
        future: where its outcome goes (None: nobody waits for it).
        skippable: whether it may be left undone when its caller gave up first
            (a reservation may; a settlement may not).
    """

    fn: Callable[[], Any]
    future: asyncio.Future[Any] | None
    skippable: bool


#: Operations run or answered per callback on the loop: a batch of hundreds run
#: at once would hold the loop for tens of milliseconds, and answering hundreds of
#: callers at once wakes them all in one turn. The rest follow in the next turn.
CHUNK = 64
#: An operation's outcome: (True, result) or (False, the exception it raised).
Outcome = tuple[bool, Any]
SKIPPED: Outcome = (True, None)


class LoopTurns:
    """Batches the operations of one event loop, one transaction per loop turn.

    Args:
        loop: the event loop whose callers queue operations.
        run: runs a batch in one transaction (see the module docs).
        worker: the ledger's worker thread, for batches that must wait.
        orphaned: called on the loop with the result of an operation whose caller
            was cancelled after it ran (a reservation to take back).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        run: Callable[[list[Op], bool], list[Outcome]],
        worker: Callable[[], Executor],
        orphaned: Callable[[Any], None],
    ) -> None:
        self.loop = loop
        self.pid = os.getpid()
        self._run = run
        self._worker = worker
        self._orphaned = orphaned
        self._ops: list[Op] = []
        # Handed to the worker, guarded by _lock; _waiting while it has some.
        self._lock = threading.Lock()
        self._queued: list[Op] = []
        self._waiting = False

    def submit(self, fn: Callable[[], Any], *, skippable: bool) -> asyncio.Future[Any]:
        """Queue ``fn`` for this turn's transaction; its outcome arrives in the future."""
        future = self.loop.create_future()
        if not self._ops:
            self.loop.call_soon(self._flush)
        self._ops.append(Op(fn, future, skippable))
        return future

    def _flush(self) -> None:
        """Run this turn's operations: inline if the lock is free, else in the worker."""
        ops, self._ops = self._ops[:CHUNK], self._ops[CHUNK:]
        if not ops:
            return
        if self._ops:
            self.loop.call_soon(self._flush)
        if not self._waiting:
            try:
                outcomes = self._run(ops, True)
            except WouldWait:
                pass
            except Exception as exc:  # noqa: BLE001 - every operation of the batch failed
                self._deliver(ops, [(False, exc)] * len(ops))
                return
            else:
                self._deliver(ops, outcomes)
                return
        # Only this loop's thread sets _waiting, so the worker cannot have just
        # cleared it for a batch that needs it set again: it picks these up.
        with self._lock:
            self._queued += ops
            start = not self._waiting
            self._waiting = True
        if start:
            self._worker().submit(self._drain)

    def _drain(self) -> None:
        """In the worker: run what is queued, one transaction per pass, until none is."""
        while True:
            with self._lock:
                ops, self._queued = self._queued, []
                if not ops:
                    self._waiting = False
                    return
            try:
                outcomes = self._run(ops, False)
            except Exception as exc:  # noqa: BLE001 - every operation of the batch failed
                outcomes = [(False, exc)] * len(ops)
            try:
                self.loop.call_soon_threadsafe(self._deliver, ops, outcomes)
            except RuntimeError:  # the loop is closed: nobody waits for these
                for op, (ok, value) in zip(ops, outcomes, strict=True):
                    if ok and op.future is not None:
                        self._orphaned(value)

    def _deliver(self, ops: list[Op], outcomes: list[Outcome]) -> None:
        if len(ops) > CHUNK:
            self.loop.call_soon(self._deliver, ops[CHUNK:], outcomes[CHUNK:])
            ops, outcomes = ops[:CHUNK], outcomes[:CHUNK]
        for op, (ok, value) in zip(ops, outcomes, strict=True):
            future = op.future
            if future is None:
                continue
            if future.cancelled():
                if ok:
                    self._orphaned(value)
            elif ok:
                future.set_result(value)
            else:
                future.set_exception(value)
