"""Fleet counters: what every router sharing a ledger did, and each pool's use over time.

A router's :class:`~langchain_quota_router.chat.routing.RouterStats` counts this process's
calls; it also feeds a :class:`FleetCounters`, which adds the same events up in
memory and writes them to the ledger's storage
(:mod:`langchain_quota_router.quota.ledger.fleet`) from a background thread, at most every
``interval`` seconds (1 s). Nothing is written on a caller's path: counting an event
takes a lock and adds to a dict, so an asyncio caller never waits for I/O. Counts
are also written when this process reads them (``router.get_stats()``,
``router.history()``), by :meth:`FleetCounters.flush`, and at interpreter exit.

A write that fails (the ledger is down) keeps the counts for the next one and logs
one warning until a write succeeds again; nothing is ever raised into a call. While
writes fail, at most :data:`MAX_PENDING` cells are kept (the oldest are dropped).

:func:`fleet_view` reads the totals back (``get_stats()["fleet"]``) and
:func:`usage_history` turns the pools' spend into each limit's use over time
(``router.history()``).
"""

from __future__ import annotations

import atexit
import bisect
import contextlib
import datetime as dt
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from langchain_quota_router.quota.clock import iso
from langchain_quota_router.quota.errors import LedgerError
from langchain_quota_router.quota.ledger.fleet import (
    HOUR,
    MINUTE,
    RETENTION,
    TOTAL,
    FleetStore,
    Key,
    Row,
)
from langchain_quota_router.quota.limits import MICRO
from langchain_quota_router.quota.secrets import mask

if TYPE_CHECKING:
    from langchain_quota_router.quota.clock import Clock
    from langchain_quota_router.quota.ledger import Ledger
    from langchain_quota_router.quota.limits import Limit

__all__ = [
    "FLUSH_INTERVAL",
    "MAX_PENDING",
    "FleetCounters",
    "client_view",
    "fleet_view",
    "flush_all",
    "history_window",
    "reading_fleet",
    "usage_history",
]

logger = logging.getLogger("langchain_quota_router")

#: Seconds between two background writes of one router's counts.
FLUSH_INTERVAL = 1.0
#: Counter cells (counter x minute) kept in memory while writes fail.
MAX_PENDING = 200_000
#: The most points :func:`usage_history` computes per limit.
MAX_POINTS = 10_000

_Pending = dict[tuple[int, str, str, str], float]


class _State:
    """A router's counts not yet written, and where they go.

    Kept apart from :class:`FleetCounters` so counts of a router that was garbage
    collected are still written (by the background thread, or at exit).
    """

    def __init__(self, ledger: Ledger, store: FleetStore, clock: Clock, interval: float) -> None:
        self.ledger = ledger  # kept alive until the counts are written
        self.store = store
        self.clock = clock
        self.interval = interval
        self.lock = threading.Lock()
        self.flush_lock = threading.Lock()
        self.pending: _Pending = {}
        # Routes a call passed over because their pools were known full, counted
        # in bulk (expanded when written): [minute, routes, times].
        self.passed_over: list[list[Any]] = []
        self.registered = False
        self.orphaned = False
        self.failing = False
        self.flushed_at = -math.inf

    def flush(self) -> bool:
        """Write what is pending; keep it on failure. Never raises."""
        with self.flush_lock:
            with self.lock:
                pending, self.pending = self.pending, {}
                passed_over, self.passed_over = self.passed_over, []
            for minute, routes, times in passed_over:
                for route in routes:
                    for mark in (
                        (minute, "route", route.name, "refused"),
                        (minute, "pool", route.pool, "refused"),
                    ):
                        pending[mark] = pending.get(mark, 0) + times
            self.flushed_at = time.monotonic()
            if not pending:
                return True
            try:
                self.store.add(_rows(pending), self.clock.now())
            except Exception as exc:  # noqa: BLE001 - kept for the next write, never raised
                self._keep(pending)
                if not self.failing:
                    self.failing = True
                    logger.warning(
                        "could not write the fleet counters to the ledger (%s); they are "
                        "kept and written when it answers again",
                        mask(f"{type(exc).__name__}: {exc}"),
                    )
                return False
            if self.failing:
                self.failing = False
                logger.info("fleet counters are written to the ledger again")
            return True

    def _keep(self, pending: _Pending) -> None:
        with self.lock:
            for mark, amount in pending.items():
                self.pending[mark] = self.pending.get(mark, 0) + amount
            excess = len(self.pending) - MAX_PENDING
            if excess > 0:
                for mark in sorted(self.pending)[:excess]:
                    del self.pending[mark]


def _rows(pending: _Pending) -> dict[Row, float]:
    """Pending minute counts as the store's rows: a total, an hourly bucket, and for
    pools a minute bucket."""
    rows: dict[Row, float] = {}
    for (bucket, kind, name, field), amount in pending.items():
        key: Key = (kind, name, field)
        marks: tuple[Row, ...] = ((TOTAL, 0, key), (HOUR, bucket - bucket % HOUR, key))
        if kind == "pool" or field.startswith("latency_"):
            # Latencies by the minute too: strategy="latency" weighs recent ones more.
            marks += ((MINUTE, bucket, key),)
        for mark in marks:
            rows[mark] = rows.get(mark, 0) + amount
    return rows


class FleetCounters:
    """Counts a router's events for the fleet and writes them to the ledger's storage.

    Args:
        ledger: the router's ledger; counts go to its store
            (:meth:`~langchain_quota_router.quota.ledger.Ledger.fleet_store`).
        clock: the router's clock: each event is counted in the minute it happened.
        interval: seconds between two background writes.
    """

    def __init__(self, ledger: Ledger, clock: Clock, *, interval: float = FLUSH_INTERVAL) -> None:
        self._state = _State(ledger, ledger.fleet_store(), clock, interval)
        weakref.finalize(self, _orphan, self._state)

    @property
    def store(self) -> FleetStore:
        """Where the counts are written."""
        return self._state.store

    @property
    def pending(self) -> int:
        """Counter cells not yet written."""
        return len(self._state.pending)

    # --------------------------------------------------------------- events

    def served(self, route: str, *, fallback: bool, cost: float | None = None) -> None:
        """A call ``route`` answered (after others could not, if ``fallback``)."""
        self._count(
            (
                ("route", route, "calls", 1),
                ("route", route, "fallbacks", 1 if fallback else 0),
                ("route", route, "cost", float(cost) if cost else 0),
            )
        )

    def failed(self, route: str, kind: str) -> None:
        """A vendor failure of ``route``, of ``kind`` (a ``FailureKind`` value); a
        rate limit or quota wall (the vendor's 429) is also counted as such."""
        limited = kind in ("rate_limit", "quota_exhausted")
        self._count(
            (
                ("route", route, f"errors:{kind}", 1),
                ("route", route, "rate_limited", 1 if limited else 0),
            )
        )

    def refused(self, route: str, pool: str | None) -> None:
        """The ledger kept a call from ``route`` (its pool full or blocked)."""
        cells = [("route", route, "refused", 1)]
        if pool is not None:
            cells.append(("pool", pool, "refused", 1))
        self._count(cells)

    def refused_all(self, routes: Sequence[Any]) -> None:
        """:meth:`refused` for each of ``routes`` (pools known full, passed over
        by one call): O(1) here, expanded when written, so a call that passes
        over a thousand full routes does not pay for counting them one by one."""
        state = self._state
        minute = _minute(state.clock.now())
        with state.lock:
            last = state.passed_over[-1] if state.passed_over else None
            if last is not None and last[0] == minute and last[1] == routes:
                last[2] += 1
            else:
                state.passed_over.append([minute, routes, 1])
        if not state.registered:
            _register(state)

    def latency(self, route: str, seconds: float) -> None:
        """How long ``route`` took to its first token or answer (see
        :mod:`langchain_quota_router.quota.latency`)."""
        self._add_route(route, (("latency_s", seconds), ("latency_n", 1)))

    def hedged(self, route: str, *, won: bool) -> None:
        """A hedge: ``route`` was started because the first route was slow; ``won``
        if it answered first."""
        self._add_route(route, (("hedged", 1), ("hedge_won", 1 if won else 0)))

    def _add_route(self, route: str, fields: tuple[tuple[str, float], ...]) -> None:
        self._count([("route", route, field, amount) for field, amount in fields])

    def hit(self, route: str | None) -> None:
        """An answer from the cache (first given by ``route``, when known)."""
        self._count((("route", route or "", "cache_hits", 1),))

    def spent(
        self,
        route: str,
        pool: str,
        requests: int,
        input_tokens: int,
        output_tokens: int,
        usd: int = 0,
    ) -> None:
        """What a call through ``route`` spent of ``pool``, as the ledger settled it
        (``usd`` in micro-dollars)."""
        self._count(_spent_cells(route, pool, requests, input_tokens, output_tokens, usd))

    def answered(
        self,
        route: str,
        pool: str,
        used: tuple[int, int, int, int],
        *,
        fallback: bool,
        cost: float | None = None,
    ) -> None:
        """:meth:`served` and :meth:`spent` of one answer (``used``: requests,
        input and output tokens, micro-dollars), counted in one go: every call
        makes both."""
        cells = _spent_cells(route, pool, *used)
        cells.append(("route", route, "calls", 1))
        if fallback:
            cells.append(("route", route, "fallbacks", 1))
        if cost:
            cells.append(("route", route, "cost", float(cost)))
        self._count(cells)

    def _count(self, cells: Sequence[tuple[str, str, str, float]]) -> None:
        """Add each ``(kind, name, field, amount)`` to this minute's counts."""
        state = self._state
        minute = _minute(state.clock.now())
        with state.lock:
            pending = state.pending
            for kind, name, field, amount in cells:
                if amount:
                    mark = (minute, kind, name, field)
                    pending[mark] = pending.get(mark, 0) + amount
        if not state.registered:
            _register(state)

    def client_used(
        self, client: str, *, failed: bool = False, input_tokens: int = 0, output_tokens: int = 0
    ) -> None:
        """A request of a proxy client named ``client`` (its key's fingerprint, never
        the key): answered (with the tokens it spent) or ``failed``."""
        self._count(
            (
                ("client", client, "requests", 1),
                ("client", client, "errors", 1 if failed else 0),
                ("client", client, "tokens_in", input_tokens),
                ("client", client, "tokens_out", output_tokens),
            )
        )

    def flush(self) -> bool:
        """Write what is pending now (in this thread); ``False`` if the ledger did
        not take it (it is kept for the next write)."""
        return self._state.flush()


def _spent_cells(
    route: str, pool: str, requests: int, input_tokens: int, output_tokens: int, usd: int
) -> list[tuple[str, str, str, float]]:
    return [
        ("route", route, "tokens_in", input_tokens),
        ("route", route, "tokens_out", output_tokens),
        ("pool", pool, "requests", requests),
        ("pool", pool, "input_tokens", input_tokens),
        ("pool", pool, "output_tokens", output_tokens),
        ("pool", pool, "usd", usd),
    ]


def _minute(now: float) -> int:
    return math.floor(now / MINUTE) * MINUTE


# --------------------------------------------------------- the background thread

_registry: set[_State] = set()
_registry_lock = threading.Lock()
_wake = threading.Event()
_thread: threading.Thread | None = None
_thread_pid = 0


def _register(state: _State) -> None:
    """Have the background thread write ``state``'s counts (started once per process)."""
    global _thread, _thread_pid
    with _registry_lock:
        _registry.add(state)
        state.registered = True
        if _thread is None or _thread_pid != os.getpid() or not _thread.is_alive():
            _thread = threading.Thread(target=_run, name="quota-router-fleet", daemon=True)
            _thread_pid = os.getpid()
            _thread.start()


def _orphan(state: _State) -> None:
    """The router is gone: write its last counts, then forget it (no I/O here)."""
    state.orphaned = True


def _run() -> None:
    while True:
        with _registry_lock:
            states = list(_registry)
        interval = min((s.interval for s in states), default=FLUSH_INTERVAL)
        _wake.wait(max(0.01, interval))
        _wake.clear()
        now = time.monotonic()
        for state in states:
            try:
                if state.pending and now - state.flushed_at >= state.interval * 0.9:
                    state.flush()
                if state.orphaned and not state.pending:
                    with _registry_lock:
                        _registry.discard(state)
            except Exception:
                logger.debug("fleet counters: a background write failed", exc_info=True)


def flush_all() -> None:
    """Write every router's pending counts now (at exit, and for tests)."""
    with _registry_lock:
        states = list(_registry)
    for state in states:
        state.flush()


def _after_fork() -> None:
    """In a forked child: the parent's counts are the parent's to write."""
    global _registry_lock, _thread
    _registry_lock = threading.Lock()
    _thread = None
    for state in list(_registry):
        state.lock = threading.Lock()
        state.flush_lock = threading.Lock()
        state.pending = {}
        state.registered = False
    _registry.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
atexit.register(flush_all)


# ------------------------------------------------------------------ reading


@contextlib.contextmanager
def reading_fleet() -> Iterator[None]:
    """Turn a store's own errors (SQLite's, Redis's) into a ``LedgerError``."""
    try:
        yield
    except LedgerError:
        raise
    except Exception as exc:
        msg = f"could not read the fleet counters: {mask(f'{type(exc).__name__}: {exc}')}"
        raise LedgerError(msg) from exc


_ROUTE_FIELDS = (
    "calls",
    "fallbacks",
    "rate_limited",
    "refused",
    "cache_hits",
    "hedged",
    "hedge_won",
)
_TOKEN_FIELDS = ("tokens_in", "tokens_out")


def fleet_view(store: FleetStore, routes: Sequence[str], pools: Sequence[str]) -> dict[str, Any]:
    """The fleet's totals for these routes and pools, as ``get_stats()["fleet"]``.

    Returns:
        ``total_calls``, ``calls_per_route``, ``fallbacks``, ``fallbacks_per_route``,
        ``errors``, ``errors_per_route``, ``errors_by_kind``, ``rate_limited``,
        ``refused``, ``cache_hits``, ``tokens_in``, ``tokens_out``, ``cost``, and
        ``routes`` (per route: ``calls``, ``fallbacks``, ``errors``,
        ``errors_by_kind``, ``rate_limited``, ``refused``, ``cache_hits``,
        ``tokens_in``, ``tokens_out``, ``cost``) and ``pools`` (per pool:
        ``requests``, ``input_tokens``, ``output_tokens``, ``refused``) and
        ``clients`` (per proxy client key fingerprint: ``requests``, ``errors``,
        ``tokens_in``, ``tokens_out``). Counts are since the ledger first counted them.
    """
    route_totals = store.totals("route")
    pool_totals = store.totals("pool")
    per_route: dict[str, dict[str, Any]] = {}
    for route in routes:
        row: dict[str, Any] = dict.fromkeys((*_ROUTE_FIELDS, *_TOKEN_FIELDS), 0)
        row["errors"] = 0
        row["errors_by_kind"] = {}
        row["cost"] = 0.0
        per_route[route] = row
    unknown_hits = 0
    for (_, name, field), value in route_totals.items():
        if name == "" and field == "cache_hits":
            unknown_hits += int(value)
            continue
        row = per_route.get(name)  # type: ignore[assignment]
        if row is None:
            continue
        if field.startswith("errors:"):
            kind = field.split(":", 1)[1]
            row["errors_by_kind"][kind] = row["errors_by_kind"].get(kind, 0) + int(value)
            row["errors"] += int(value)
        elif field == "cost":
            row["cost"] = round(float(value), 9)
        elif field in row:
            row[field] = int(value)
    by_kind: dict[str, int] = {}
    for row in per_route.values():
        for kind, count in row["errors_by_kind"].items():
            by_kind[kind] = by_kind.get(kind, 0) + count

    def total(field: str) -> int:
        return sum(int(r[field]) for r in per_route.values())

    pool_rows: dict[str, dict[str, Any]] = {
        pool: {**dict.fromkeys(("requests", "input_tokens", "output_tokens", "refused"), 0)}
        for pool in pools
    }
    for row in pool_rows.values():
        row["cost"] = 0.0
    for (_, name, field), value in pool_totals.items():
        if name not in pool_rows:
            continue
        if field == "usd":  # micro-dollars, as the ledger counts them
            pool_rows[name]["cost"] = round(float(value) / MICRO, 6)
        elif field in pool_rows[name]:
            pool_rows[name][field] = int(value)
    return {
        "total_calls": total("calls"),
        "calls_per_route": {r: row["calls"] for r, row in per_route.items()},
        "fallbacks": total("fallbacks"),
        "fallbacks_per_route": {r: row["fallbacks"] for r, row in per_route.items()},
        "errors": total("errors"),
        "errors_per_route": {r: row["errors"] for r, row in per_route.items()},
        "errors_by_kind": by_kind,
        "rate_limited": total("rate_limited"),
        "refused": total("refused"),
        "cache_hits": total("cache_hits") + unknown_hits,
        "hedged": total("hedged"),
        "hedge_won": total("hedge_won"),
        "tokens_in": total("tokens_in"),
        "tokens_out": total("tokens_out"),
        "cost": round(sum(float(r["cost"]) for r in per_route.values()), 9),
        "routes": per_route,
        "pools": pool_rows,
        "clients": client_view(store),
    }


_CLIENT_FIELDS = ("requests", "errors", "tokens_in", "tokens_out")


def client_view(store: FleetStore) -> dict[str, dict[str, int]]:
    """What each client of the OpenAI-compatible proxy spent, by key fingerprint
    (every proxy process counting in this ledger, since it first counted them)."""
    clients: dict[str, dict[str, int]] = {}
    for (_, name, field), value in store.totals("client").items():
        if field in _CLIENT_FIELDS:
            row = clients.setdefault(name, dict.fromkeys(_CLIENT_FIELDS, 0))
            row[field] = int(value)
    return dict(sorted(clients.items()))


def history_window(
    now: float,
    since: float | dt.datetime | dt.timedelta | None,
    step: float | dt.timedelta | None,
) -> tuple[float, float]:
    """The start (epoch seconds) and step (seconds) a history is computed over.

    ``since``: epoch seconds, a datetime (naive is UTC), or a timedelta back from
    ``now``; default 24 hours back; never further back than hourly buckets are
    kept (35 days). ``step``: seconds or a timedelta; default the shortest of 1, 5,
    10, 15, 30 minutes, 1, 2, 3, 6, 12 or 24 hours that gives at most 240 points.

    Raises:
        ValueError: for a step that is not positive, or that many points.
    """
    if since is None:
        start = now - 86_400.0
    elif isinstance(since, dt.timedelta):
        start = now - since.total_seconds()
    elif isinstance(since, dt.datetime):
        moment = since if since.tzinfo else since.replace(tzinfo=dt.timezone.utc)
        start = moment.timestamp()
    elif isinstance(since, (int, float)) and not isinstance(since, bool):
        start = float(since)
    else:
        msg = f"since must be epoch seconds, a datetime or a timedelta, got {since!r}"
        raise TypeError(msg)
    if not math.isfinite(start):
        msg = f"since must be a finite time, got {since!r}"
        raise ValueError(msg)
    start = max(start, now - RETENTION[HOUR])
    if step is None:
        span = max(0.0, now - start)
        ladder = (60, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400)
        seconds = float(next((s for s in ladder if span / s <= 240), ladder[-1]))
    elif isinstance(step, dt.timedelta):
        seconds = step.total_seconds()
    elif isinstance(step, (int, float)) and not isinstance(step, bool):
        seconds = float(step)
    else:
        msg = f"step must be seconds or a timedelta, got {step!r}"
        raise TypeError(msg)
    if not (math.isfinite(seconds) and seconds > 0):
        msg = f"step must be a positive number of seconds, got {step!r}"
        raise ValueError(msg)
    if (now - start) / seconds > MAX_POINTS:
        msg = (
            f"a step of {seconds:g} s gives more than {MAX_POINTS} points since "
            f"{iso(start)}; choose a larger step"
        )
        raise ValueError(msg)
    return start, seconds


class _Series:
    """One pool counter's buckets at one level, for sums over ranges."""

    def __init__(self, buckets: Iterable[tuple[int, float]]) -> None:
        ordered = sorted(buckets)
        self.starts = [b for b, _ in ordered]
        self.sums = [0.0, *accumulate(v for _, v in ordered)]

    def between(self, lo: float, hi: float) -> float:
        """The sum of buckets that start in ``[lo, hi)``."""
        i = bisect.bisect_left(self.starts, lo)
        j = bisect.bisect_left(self.starts, hi)
        return self.sums[j] - self.sums[i] if j > i else 0.0


_FIELDS = {
    "requests": ("requests",),
    "tokens": ("input_tokens", "output_tokens"),
    "input_tokens": ("input_tokens",),
    "output_tokens": ("output_tokens",),
    "usd": ("usd",),
}


def usage_history(
    store: FleetStore,
    pools: Mapping[str, Sequence[Limit]],
    now: float,
    since: float,
    step: float,
) -> list[dict[str, Any]]:
    """Each pool's limits' use over time, from what the fleet's routers spent.

    One row per point in time and limit: ``time`` (ISO 8601, UTC), ``time_epoch``
    (epoch seconds), ``pool``, ``limit`` (as written, ``"30/minute"``), ``metric``,
    ``window``, ``used`` (spent in the limit's window ending at that time),
    ``amount`` (the limit's size) and ``percent`` (0-100, two decimals). Points are
    the multiples of ``step`` from ``since`` on, and ``now``.

    Buckets that overlap a window count whole, as the ledger counts them: a
    sliding window is read in whole minutes (whole hours beyond the two days
    minutes are kept, where windows shorter than an hour have no points). A
    one-time credit counts everything spent through the routers before that time.
    """
    times = [t * step for t in range(math.ceil(since / step), math.floor(now / step) + 1)]
    times = [t for t in times if since <= t <= now]
    if not times or now - times[-1] >= 1.0:
        times.append(now)
    elif times[-1] < now:
        # Rows are stamped to the second: a grid point less than a second before
        # "now" would give two rows the same time (pandas' pivot refuses those).
        times[-1] = now
    # Minute buckets are whole from here on; before it, hourly buckets are read.
    complete = math.ceil((now - RETENTION[MINUTE]) / HOUR) * HOUR
    wanted = {
        (pool, f) for pool, limits in pools.items() for lim in limits for f in _FIELDS[lim.metric]
    }
    if not wanted:
        return []
    # Read only the buckets the first point's windows reach back to.
    first = times[0]
    starts = [first]
    for limits in pools.values():
        for lim in limits:
            if lim.window.kind == "sliding":
                starts.append(first - lim.window.seconds)
            elif lim.window.kind == "calendar":
                starts.append(lim.window.bounds(first - 0.001)[0])
    oldest = math.floor(min(starts) / HOUR) * HOUR
    minute: dict[tuple[str, str], list[tuple[int, float]]] = {}
    hour: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for level, found, lo in ((MINUTE, minute, max(oldest, complete)), (HOUR, hour, oldest)):
        for bucket, (_, name, field), value in store.buckets("pool", level, lo, math.inf):
            if (name, field) in wanted:
                found.setdefault((name, field), []).append((bucket, value))
    once = any(lim.window.kind == "once" for limits in pools.values() for lim in limits)
    totals = store.totals("pool") if once else {}
    by_minute = {mark: _Series(minute.get(mark, ())) for mark in wanted}
    by_hour = {mark: _Series(hour.get(mark, ())) for mark in wanted}

    def spent(mark: tuple[str, str], lo: float, hi: float) -> float:
        if lo >= complete:
            return by_minute[mark].between(lo, hi)
        if hi <= complete:
            return by_hour[mark].between(lo, hi)
        return by_hour[mark].between(lo, complete) + by_minute[mark].between(complete, hi)

    rows: list[dict[str, Any]] = []
    for t in times:
        stamp = iso(t)
        # A past point shows the window that ends there (midnight: the whole day
        # before); the last point, now, shows the windows as they are now.
        last = t >= now
        hi = math.inf if last else t
        moment = t if last else t - 0.001
        for pool, limits in pools.items():
            for limit in limits:
                marks = [(pool, f) for f in _FIELDS[limit.metric]]
                window = limit.window
                if window.kind == "once":
                    total = sum(totals.get(("pool", pool, f), 0.0) for f in _FIELDS[limit.metric])
                    used = max(0.0, total - sum(spent(m, hi, math.inf) for m in marks))
                else:
                    if window.kind == "sliding":
                        start = t - window.seconds
                    else:
                        start = window.bounds(moment)[0]
                    lo = math.floor(start / MINUTE) * MINUTE
                    if lo < complete:
                        if window.kind == "sliding" and window.seconds < HOUR:
                            continue  # no minute detail kept this far back
                        lo = math.floor(start / HOUR) * HOUR
                    used = sum(spent(m, lo, hi) for m in marks)
                amount = limit.units
                percent = min(100.0, 100.0 * used / amount) if amount else 100.0
                rows.append(
                    {
                        "time": stamp,
                        "time_epoch": t,
                        "pool": pool,
                        "limit": str(limit),
                        "metric": limit.metric,
                        "window": window.describe(),
                        "used": limit.shown(round(used)),
                        "amount": limit.amount,
                        "percent": round(percent, 2),
                    }
                )
    return rows
