"""Fleet counters in this process's memory, beside a memory ledger (this process
only, as its quota is)."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from langchain_quota_router.quota.ledger.fleet import TOTAL, FleetStore, Key, Row, accumulate


class MemoryFleetStore(FleetStore):
    """Counters in this process's memory (for a memory ledger)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._cells: dict[tuple[str, int, int], dict[tuple[str, str], float]] = {}

    def _write(self, rows: Mapping[Row, float], cutoffs: dict[int, int] | None, now: float) -> None:
        with self._lock:
            for mark, values in accumulate(rows).items():
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
