"""Fleet counters in Redis, under the Redis ledger's prefix, through its client.

A hash per kind, level and bucket (``qr:fleet:pool:60:<bucket>``, fields
``<name>\\x1f<field>``), a hash per kind for the totals (``qr:fleet:route:total``)
and a sorted set of each level's buckets (``qr:fleet:index:pool:60``) by which old
ones are deleted; bucket hashes also expire by themselves.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping
from typing import Any

from langchain_quota_router.quota.errors import LedgerError
from langchain_quota_router.quota.ledger.fleet import (
    KINDS,
    RETENTION,
    TOTAL,
    FleetStore,
    Key,
    Row,
    accumulate,
)

_SEP = "\x1f"


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
        for (kind, level, bucket), values in accumulate(rows).items():
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
