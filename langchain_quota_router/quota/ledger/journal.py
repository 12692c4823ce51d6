"""The fail-open wrapper's journal: what a process holds and admitted during an
outage, on local disk, so that a process that ends before the shared ledger
answers again does not take it with it.

One file per process (``<pid>-<random>.jsonl``) in a folder per ledger, locked
(``flock``) by its writer for as long as it lives. Lines are appended, one event
each: a slice taken, a call admitted from it, the real spend of that call, a slice
handed back. A file whose lock can be taken belongs to a process that is gone:
the next process to reach the shared ledger hands back what it lists (once: the
ledger remembers each hand-back by the slice's id) and deletes it.

What a line holds: pool names, counter series and buckets, amounts, ids. No keys,
no prompts.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_quota_router.quota.ledger.types import Demand

try:
    import fcntl
except ImportError:  # Windows: no flock; a journal is read only once its writer is gone
    fcntl = None  # type: ignore[assignment]

#: A file grown past this many bytes is rewritten with only what is still open.
_COMPACT_AT = 256 * 1024

Entries = list[tuple[str, int, str]]


def demand_of(values: list[int]) -> Demand:
    """A demand from its journal form ``[requests, input, output]``."""
    return Demand(int(values[0]), int(values[1]), int(values[2]))


def demand_list(demand: Demand) -> list[int]:
    """A demand in its journal form."""
    return [demand.requests, demand.input_tokens, demand.output_tokens]


@dataclass
class Orphan:
    """A slice listed by a journal whose process is gone, with what it admitted."""

    id: str
    pool: str
    entries: Entries
    demand: Demand
    calls: dict[str, tuple[Entries, Demand]] = field(default_factory=dict)

    def adds(self) -> list[tuple[str, int, int]]:
        """``(series, bucket, amount)`` that release the slice and count its calls."""
        found = [(s, b, -self.demand.amount(m)) for s, b, m in self.entries]  # type: ignore[arg-type]
        for entries, spent in self.calls.values():
            found += [(s, b, spent.amount(m)) for s, b, m in entries]  # type: ignore[arg-type]
        return [(s, b, a) for s, b, a in found if a]


class Journal:
    """This process's journal file in ``folder``, and the files of others."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._fd = -1
        self._path: Path | None = None
        self._pid = os.getpid()

    def write(self, event: dict[str, Any]) -> None:
        """Append one event (best effort: a journal that cannot be written costs
        precision, the slice stays counted, never quota)."""
        line = (json.dumps(event, separators=(",", ":")) + "\n").encode()
        with self._lock, contextlib.suppress(OSError):
            fd = self._own()
            os.write(fd, line)

    def rewrite(self, events: list[dict[str, Any]]) -> None:
        """Replace this process's journal with ``events`` if it grew large (or
        delete it when there is nothing left to say)."""
        with self._lock, contextlib.suppress(OSError):
            if self._fd < 0 or self._pid != os.getpid():
                return
            if events and os.fstat(self._fd).st_size < _COMPACT_AT:
                return
            if not events and self._path is not None:
                os.unlink(self._path)
                os.close(self._fd)
                self._fd, self._path = -1, None
                return
            os.ftruncate(self._fd, 0)
            for event in events:
                os.write(self._fd, (json.dumps(event, separators=(",", ":")) + "\n").encode())

    def _own(self) -> int:
        if self._fd >= 0 and self._pid == os.getpid():
            return self._fd
        # A forked child writes its own file; the parent's stays the parent's.
        self._pid = os.getpid()
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.folder / f"{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd, self._path = fd, path
        return fd

    def orphans(self) -> Iterator[tuple[Path, list[Orphan]]]:
        """The journals of processes that are gone, each with its open slices.

        The caller deletes a file (:meth:`forget`) once it has handed it back;
        each file stays locked while it is being read and handed back.
        """
        try:
            names = sorted(self.folder.glob("*.jsonl"))
        except OSError:
            return
        for path in names:
            if path == self._path:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                if fcntl is not None:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except OSError:
                        continue  # its process is alive and hands back itself
                with os.fdopen(os.dup(fd), encoding="utf-8", errors="replace") as f:
                    text = f.read()
                yield path, _replay(text)
            finally:
                os.close(fd)

    @staticmethod
    def forget(path: Path) -> None:
        with contextlib.suppress(OSError):
            path.unlink()


def _replay(text: str) -> list[Orphan]:
    slices: dict[str, Orphan] = {}
    for line in text.splitlines():
        try:
            event = json.loads(line)
            kind = event["e"]
            if kind == "slice":
                slices[event["id"]] = Orphan(
                    event["id"],
                    event["pool"],
                    [(s, int(b), m) for s, b, m in event["entries"]],
                    demand_of(event["demand"]),
                )
            elif kind == "call" and event["slice"] in slices:
                entries = [(s, int(b), m) for s, b, m in event["entries"]]
                slices[event["slice"]].calls[event["id"]] = (entries, demand_of(event["demand"]))
            elif kind == "used":
                for orphan in slices.values():
                    if event["id"] in orphan.calls:
                        entries, _ = orphan.calls[event["id"]]
                        orphan.calls[event["id"]] = (entries, demand_of(event["demand"]))
            elif kind == "done":
                slices.pop(event["slice"], None)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a crash: the slice stays counted
    return list(slices.values())
