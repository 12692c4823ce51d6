"""A ledger in Redis: one set of quotas for every process on every machine.

URL: ``redis://[[user]:password@]host[:port][/db][?option=value&...]`` (``rediss://``
for TLS). Options of our own:

==========================  =========================================================
``prefix=qr:``              namespace of every key, so several apps share a Redis.
``on_error=raise``          (default) fail closed: every operation raises
                            :class:`~langchain_quota_router.LedgerError` while Redis
                            does not answer, so nothing is sent unaccounted.
``on_error=local``          fail open: :func:`~langchain_quota_router.quota.ledger.open_ledger`
                            wraps this ledger in a
                            :class:`~langchain_quota_router.quota.ledger.failopen.FailOpenLedger`
                            (see there; ``retry_interval``, ``outage_share`` and ``journal`` are
                            its options).
==========================  =========================================================

Every other option goes to redis-py (``Redis.from_url``); the defaults here are short
so an unreachable Redis fails fast: ``socket_connect_timeout=0.5`` and
``socket_timeout=1`` (seconds). A dropped connection is retried once at once (a
restarted server leaves stale pooled connections); timeouts are not retried.

Atomicity comes from Lua scripts shipped with the package (``redis/lua/*.lua``, see
:mod:`~langchain_quota_router.quota.ledger.redis.scripts`): each
of ``reserve``, ``settle``, ``observe``, ``usage`` and ``reset`` is one script, one
round trip; holds are single commands.
Python computes every bucket number and expiry (calendars and time zones stay
here) and passes them as arguments; the scripts only compare and count.

**One clock for the fleet.** Hosts' clocks disagree (by seconds on a machine
without NTP, by hours on a VM restored from a snapshot), and a sliding window
judged by two clocks 5 s apart lets 5 s of spend slip out of it early. So every
ledger over one Redis stamps and judges time on one time line, the *fleet clock*:
the clock of the first ledger that connected (kept in ``qr:clock`` as its offset
from the server's ``TIME``). Each ledger measures, when it connects and then every
:attr:`RedisLedger.clock_check_interval` seconds, the offset between its own clock
(``time.time``; ``clock=`` for tests) and the fleet clock through the server's
``TIME``, rounded to the second (the finest bucket), and moves every time it is
given by that offset on the way in (buckets, lease expiries, holds) and back on the
way out (reset and retry times). Ledgers on hosts whose clocks agree measure 0 and
behave exactly as before; the server's clock only serves as the common ruler, so it
need not be right itself. Why not the server's ``TIME`` inside the scripts: calendar
windows and time zones are computed in Python, and callers (tests, replays) may run
on a clock of their own that the server's cannot stand in for.

Data layout, under the prefix (default ``qr:``):

- ``qr:counts:<pool>:<series>``: a hash, bucket number -> amount spent. It expires
  (PEXPIRE, relative, never shortened) when its newest bucket can no longer count:
  sliding windows a window plus a bucket after the spend, calendar windows at the
  window's end; one-time credits never. Buckets older than the window are deleted
  by ``reserve``, so a sum reads at most one window of buckets.
- ``qr:pool:<pool>``: a set naming the pool's counter hashes, so ``reset`` finds
  them without scanning the keyspace. It does not expire (a few names per pool).
- ``qr:holds``: a hash, subject (``pool:<pool>``, ``key:<key>``) ->
  ``"<until>|<reason>"``, ``until`` empty for a disabled key.
- ``qr:leases:<pool>`` (a sorted set, lease id by expiry) and ``qr:lease:<pool>``
  (a hash, lease id -> what it releases): the open reservations. ``reserve`` and
  ``usage`` first release the overdue ones; ``settle`` ends one. A reserve that
  arrives again with a lease id the pool holds (a retry after a lost reply) is
  not counted twice.

Counts are only as durable as the server: run it with the append-only file on
(``appendonly yes``, ``appendfsync everysec`` or ``always``). The ledger checks
``CONFIG GET appendonly`` when it connects and warns when counts would not survive
a restart (it stays quiet where ``CONFIG`` is not permitted).

The counters of a pool are named through its index set inside ``reset``, so the
ledger needs a single Redis server (or a primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from langchain_quota_router.quota.errors import ConfigurationError, LedgerError
from langchain_quota_router.quota.ledger.contract import Ledger, take_back
from langchain_quota_router.quota.ledger.fleet import FleetStore
from langchain_quota_router.quota.ledger.records import (
    FULL_PREFIX,
    KEY_PREFIX,
    MODEL_PREFIX,
    POOL_PREFIX,
    is_record,
    learned_from,
    learned_record,
)
from langchain_quota_router.quota.ledger.redis.clients import (
    SETTLE_DELAY,
    LoopClient,
    LoopClients,
    Waiting,
    connect,
)
from langchain_quota_router.quota.ledger.redis.fleet import RedisFleetStore
from langchain_quota_router.quota.ledger.redis.scripts import Call, apipeline, pipeline
from langchain_quota_router.quota.ledger.settle import SETTLER
from langchain_quota_router.quota.ledger.types import (
    Demand,
    Hold,
    LearnedLimit,
    LimitUsage,
    Refusal,
    Reservation,
    lease_floor,
    may_land_late,
    new_lease_id,
)
from langchain_quota_router.quota.ledger.url import redact_url
from langchain_quota_router.quota.limits import Limit, Metric, Window

if TYPE_CHECKING:
    from redis import Redis
    from redis.commands.core import Script

logger = logging.getLogger("langchain_quota_router")

_T = TypeVar("_T")
#: Every Redis ledger of this process: their queued settlements are sent at exit.
_LIVE: weakref.WeakSet[RedisLedger] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for ledger in list(_LIVE):
        with contextlib.suppress(Exception):
            ledger.flush()


def _forget_in_child() -> None:
    for ledger in list(_LIVE):
        ledger._forked()


# A forked child must not send the settlements its parent queued (the parent
# sends them), nor touch the parent's event-loop connections.
if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_forget_in_child)


_PREFIX = "qr:"
#: Counters outlive their window by this much (seconds), so a host whose clock is a
#: little behind still finds them.
_EXPIRY_MARGIN = 60.0
#: How long a process counts as one of the fleet after it last said it is alive
#: (:meth:`RedisLedger.fleet_size`; the fail-open wrapper does not rely on it).
_FLEET_WINDOW = 600.0
#: How long (seconds) Redis remembers a hand-back was applied: longer than a
#: journal waits for the next process to read it, in any reasonable case.
_HAND_BACK_MEMORY = 7 * 86_400.0
#: Options of the fail-open wrapper, which ``open_ledger`` takes off the URL.
WRAPPER_OPTIONS = ("on_error", "retry_interval", "outage_share", "journal")


def _password_of(url: str) -> str | None:
    """The password in ``url`` (user info or ``password=`` option), if any."""
    try:
        parts = urlsplit(url)
        password = unquote(parts.password) if parts.password else None
    except ValueError:
        return None
    for name, value in parse_qsl(parts.query):  # already unquoted
        if name == "password":
            password = value
    return password or None


@functools.cache
def _window_of(series: str) -> Window:
    """The window a series name (``"tokens:s60"``, ``"requests:day@UTC"``) counts."""
    shape = series.split(":", 1)[1]
    if shape == "once":
        return Window("once")
    if shape.startswith("s") and shape[1:].isdigit():
        return Window("sliding", seconds=int(shape[1:]))
    unit, zone = shape.split("@", 1)
    return Window("calendar", unit="day" if unit == "day" else "month", zone=zone)


def _expiry_ms(window: Window, bucket: int, now: float) -> int:
    """How long (ms from now) a counter holding ``bucket`` must live; 0 for ever.

    Relative, not absolute, so a ledger driven by a test clock far from the real
    one still keeps its counters as long as its windows need them.
    """
    if window.kind == "once":
        return 0
    end: float
    if window.kind == "sliding":
        end = (bucket + 1) * window.bucket_width + window.seconds
    else:
        end = window.bounds(bucket)[1]
    return math.ceil((max(end - now, 0.0) + _EXPIRY_MARGIN) * 1000)


def _hgetall(client: Redis, key: str) -> dict[str, str]:
    # The client decodes replies (decode_responses=True): every value is a str.
    return cast("dict[str, str]", client.hgetall(key))


@dataclass(frozen=True)
class _Queued:
    """A settlement waiting to be carried to Redis."""

    call: Call
    reservation: Reservation
    used: Demand
    now: float


@dataclass(frozen=True)
class _ReservePlan:
    """What every ``reserve.lua`` call on one pool with one set of limits sends
    alike: its keys, and each series' and limit's shape."""

    keys: list[str]
    pool_subject: str
    #: (series, window, metric, counter key) per distinct series, in order.
    series: tuple[tuple[str, Window, Metric, str], ...]
    #: (series position from 1, metric, units) per limit.
    limits: tuple[tuple[int, Metric, int], ...]


#: Reserve plans a ledger keeps (pools x limit sets) before starting afresh.
_PLANS_KEPT = 4096


def _encode_hold(until: float | None, reason: str) -> str:
    return f"{'' if until is None else repr(float(until))}|{reason}"


def _decode_hold(subject: str, value: str, offset: float = 0.0) -> Hold:
    """A hold as stored (``until`` on the fleet clock), ``until`` on the caller's."""
    until, reason = value.split("|", 1)
    return Hold(subject, float(until) - offset if until else None, reason)


def _shift(moment: float | None, seconds: float) -> float | None:
    """A moment moved from one clock to another (None stays None)."""
    return None if moment is None else moment + seconds


class RedisLedger(Ledger):
    """Counts in Redis. URL: ``redis://host:6379/0`` (options in the module docs).

    Thread-safe and fork-safe (redis-py opens new connections in a child process).
    The client connects on first use, not here. Fails closed: every operation
    raises :class:`~langchain_quota_router.LedgerError` while Redis does not
    answer; wrap it in a ``FailOpenLedger`` (``?on_error=local``) to fail open.

    Args:
        url: the ledger URL.
        clock: this host's clock, epoch seconds (default ``time.time``): the clock
            the ``now`` given to every operation is read from, measured against the
            fleet clock (see the module docs).

    Raises:
        ConfigurationError: the URL or one of its options is wrong, or the ``redis``
            extra is not installed.
    """

    scheme = "redis"
    native_async = True

    #: Seconds between two "alive" notes of this process (one round trip each), by
    #: which every process learns how many share the Redis (:meth:`fleet_size`).
    heartbeat_interval: float = 60.0
    #: Seconds between two measures of this host's clock against the fleet clock.
    clock_check_interval: float = 60.0

    def __init__(self, url: str, *, clock: Callable[[], float] | None = None) -> None:
        self.url = redact_url(url)
        try:
            import redis.connection
        except ImportError as exc:
            msg = (
                f"ledger URL {self.url!r} needs the 'redis' extra: "
                f"pip install 'langchain-quota-router[redis]' ({exc})"
            )
            raise ConfigurationError(msg) from exc
        options, self._client_url = self._split_options(url)
        on_error = options.get("on_error", "raise")
        if on_error != "raise":
            msg = (
                f"ledger URL {self.url!r}: RedisLedger itself fails closed; "
                f"on_error={on_error!r} is for open_ledger(), which wraps it "
                "(on_error must be 'raise' or 'local')"
            )
            raise ConfigurationError(msg)
        unexpected = sorted(set(options) & {"retry_interval", "outage_share", "journal"})
        if unexpected:
            msg = (
                f"ledger URL {self.url!r}: {unexpected[0]} goes with on_error=local, "
                "through open_ledger()"
            )
            raise ConfigurationError(msg)
        self.prefix = options.get("prefix", _PREFIX)
        # Kept only to scrub it from error messages that might echo it.
        self._secret = _password_of(url)
        try:
            # What Redis.from_url will do, so a bad URL fails here, not on first use.
            redis.connection.parse_url(self._client_url)  # type: ignore[no-untyped-call]
        except ValueError as exc:
            msg = f"ledger URL {self.url!r} is not a Redis URL redis-py reads: {self._scrub(exc)}"
            raise ConfigurationError(msg) from None
        self._holds_key = f"{self.prefix}holds"
        self._client: Redis | None = None
        self._scripts: dict[str, Script] = {}
        self._lock = threading.Lock()
        #: Whether the server keeps counts across a restart: None until checked, or
        #: when ``CONFIG`` is not permitted.
        self.durable: bool | None = None
        self._client_id = new_lease_id()
        self.clock: Callable[[], float] = clock if clock is not None else time.time
        # Fleet clock minus this host's clock (None until measured), and the
        # monotonic time of the next measure.
        self._offset: float | None = None
        self._offset_due = -math.inf
        self._fleet: int | None = None
        self._heartbeat_at = -math.inf
        # Settlements that only give room back, waiting for the next pipeline of
        # the loop that queued them (or its settle timer) to carry them.
        self._queued: list[_Queued] = []
        self._queue_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        _LIVE.add(self)
        self._loop_clients = LoopClients(self._client_url, self._before_loop_closes)
        self._reserve_plans: dict[tuple[str, tuple[Limit, ...]], _ReservePlan] = {}

    def _forked(self) -> None:
        """Start afresh in a forked child: no queue, no loop clients, free locks."""
        self._queued = []
        self._queue_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._loop_clients.forget()

    @staticmethod
    def _split_options(url: str) -> tuple[dict[str, str], str]:
        """Our options from the URL's query, and the URL left for redis-py."""
        parts = urlsplit(url)
        ours: dict[str, str] = {}
        theirs: list[tuple[str, str]] = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name == "prefix" or name in WRAPPER_OPTIONS:
                ours[name] = value
            else:
                theirs.append((name, value))
        return ours, urlunsplit(parts._replace(query=urlencode(theirs)))

    # ------------------------------------------------------------ connections

    def _redis(self) -> Redis:
        """The client, made on first use, with every script registered."""
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                self._client, self._scripts = connect(self._client_url)
            return self._client

    async def _aclient(self) -> LoopClient:
        """The running loop's client, made on first use there."""
        made, new = await self._loop_clients.get()
        if new and self.durable is None:
            # Asked once, in the worker thread: never a blocking call on the loop.
            with contextlib.suppress(RuntimeError):
                self._worker().submit(self._check_once)
        return made

    async def _send_batch(self, c: LoopClient, batch: list[Waiting]) -> None:
        """Send a turn's calls, carrying the settlements waiting to go, in one
        pipeline, and answer each call."""
        from redis.exceptions import RedisError

        carried = self._take_queued()
        if not carried and not batch:
            return
        calls = [item.call for item in carried] + [call for call, _ in batch]
        try:
            replies = await self._apipeline(c, calls)
        except (RedisError, OSError) as exc:
            self._settle_failed(carried, LedgerError(self._could_not("settle", exc)))
            for call, reply in batch:
                if not reply.done():
                    reply.set_exception(LedgerError(self._could_not(call.script, exc)))
            return
        self._settled(carried, replies[: len(carried)])
        for (call, reply), answer in zip(batch, replies[len(carried) :], strict=True):
            if reply.done():
                continue
            if isinstance(answer, RedisError):
                reply.set_exception(LedgerError(self._could_not(call.script, answer)))
            else:
                reply.set_result(answer)

    def _could_not(self, operation: str, exc: BaseException) -> str:
        return f"Redis ledger {self.url} could not {operation}: {self._scrub(exc)}"

    def _before_loop_closes(self) -> None:
        """Send what is queued when a loop closes (its timer will not fire)."""
        with contextlib.suppress(LedgerError):
            self._drain()

    async def _ashared(self, name: str, read: Callable[[LoopClient], Awaitable[_T]]) -> _T:
        """``read`` once for every caller on this loop asking meanwhile."""
        c = await self._aclient()

        async def once() -> _T:
            return await self._aremote(f"read {name}", read)

        return cast("_T", await self._loop_clients.shared(c, name, once))

    @staticmethod
    async def _apipeline(c: LoopClient, calls: Sequence[Call]) -> list[Any]:
        """:func:`~.scripts.pipeline` on the loop's async client."""
        return await apipeline(c.client, calls)

    async def _aremote(self, operation: str, call: Callable[[LoopClient], Awaitable[_T]]) -> _T:
        """:meth:`_remote` on the running loop's async client."""
        from redis.exceptions import RedisError

        try:
            return await call(await self._aclient())
        except RedisError as exc:
            msg = f"Redis ledger {self.url} could not {operation}: {self._scrub(exc)}"
            raise LedgerError(msg) from exc

    def check_durability(self) -> bool | None:
        """Ask the server whether counts survive its restart; warn when they do not.

        Returns:
            True with the append-only file on, False without, None when the server
            does not let us ask (``CONFIG`` renamed or not permitted).
        """
        from redis.exceptions import ResponseError

        def ask(client: Redis) -> dict[str, str]:
            return cast("dict[str, str]", client.config_get("append*"))

        try:
            config = self._remote("read its configuration", ask)
        except LedgerError as exc:
            if isinstance(exc.__cause__, ResponseError):
                return None  # CONFIG is not permitted here: nothing to say
            raise
        on = config.get("appendonly") == "yes"
        fsync = config.get("appendfsync", "")
        self.durable = on
        if not on:
            logger.warning(
                "Redis ledger %s runs without the append-only file (appendonly no): "
                "a restart of the server forgets every count and the fleet spends its "
                "quota again. Run it with appendonly yes, appendfsync everysec",
                self.url,
            )
        elif fsync == "no":
            logger.warning(
                "Redis ledger %s runs with appendfsync no: a crash of the host may "
                "lose recent counts; use appendfsync everysec or always",
                self.url,
            )
        return on

    def close(self) -> None:
        """Send what is queued, close the connections; the ledger reconnects if
        used again."""
        with contextlib.suppress(LedgerError):
            self._drain()
        super().close()
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _scrub(self, exc: BaseException) -> str:
        """``exc`` as text, with the password replaced should it echo it."""
        text = f"{type(exc).__name__}: {exc}"
        return text.replace(self._secret, "***") if self._secret else text

    def _remote(self, operation: str, call: Callable[[Redis], _T]) -> _T:
        """Run ``call`` against Redis, turning its errors into ``LedgerError``."""
        from redis.exceptions import RedisError

        first = self._client is None
        try:
            result = call(self._redis())
        except RedisError as exc:
            msg = f"Redis ledger {self.url} could not {operation}: {self._scrub(exc)}"
            raise LedgerError(msg) from exc
        if first and self.durable is None and operation != "read its configuration":
            self._check_once()
        return result

    def _check_once(self) -> None:
        # The operation itself succeeded; if asking failed, the next connect asks.
        with contextlib.suppress(LedgerError):
            self.check_durability()

    def _new_fleet_store(self) -> FleetStore:
        return RedisFleetStore(self)

    def fleet_size(self) -> int | None:
        """How many processes used this Redis in the last ten minutes, as last
        counted (None before the first count)."""
        return self._fleet

    def _heartbeat(self) -> None:
        """Tell Redis this process is alive and count the fleet (once a minute)."""
        self._heartbeat_at = time.monotonic()
        key, me, wall = f"{self.prefix}clients", f"{self._client_id}:{os.getpid()}", time.time()

        def beat(client: Redis) -> list[Any]:
            pipe = client.pipeline(transaction=True)
            pipe.zadd(key, {me: wall})
            pipe.zremrangebyscore(key, "-inf", wall - _FLEET_WINDOW)
            pipe.zcard(key)
            pipe.expire(key, int(_FLEET_WINDOW + _EXPIRY_MARGIN))
            return pipe.execute()

        # The reserve went through; a failed count waits for the next beat.
        with contextlib.suppress(LedgerError):
            self._fleet = int(self._remote("count the fleet", beat)[2])

    # ------------------------------------------------------------- fleet clock

    def clock_offset(self) -> float:
        """Seconds to add to this host's clock to read the fleet clock (measured
        when due: at the first use, then every :attr:`clock_check_interval`)."""
        if self._offset is None or time.monotonic() >= self._offset_due:
            self._measure_clock()
        assert self._offset is not None
        return self._offset

    def _measure_clock(self) -> None:
        key = f"{self.prefix}clock"

        def ask(_: Redis) -> list[str]:
            return cast("list[str]", self._scripts["clock"]([key], [repr(self.clock())]))

        before = self.clock()
        reply = self._remote("read the fleet clock", ask)
        self._set_offset(reply, before)

    async def _aclock_offset(self) -> float:
        """:meth:`clock_offset` through redis.asyncio."""
        if self._offset is None or time.monotonic() >= self._offset_due:
            key = f"{self.prefix}clock"

            async def measure(c: LoopClient) -> None:
                before = self.clock()
                reply = await c.scripts["clock"](keys=[key], args=[repr(before)])
                self._set_offset(reply, before)

            # One measure for every caller on this loop who finds it due meanwhile.
            await self._ashared("the fleet clock", measure)
        assert self._offset is not None
        return self._offset

    def _set_offset(self, reply: Sequence[Any], before: float) -> None:
        # Our clock at the moment the server read its own: halfway through.
        mine = (before + self.clock()) / 2
        fleet = int(reply[0]) + int(reply[1]) / 1e6 + float(reply[2])
        self._offset = float(round(fleet - mine))
        self._offset_due = time.monotonic() + self.clock_check_interval

    def _known_offset(self) -> float:
        """The offset last measured, without a round trip (0 before any): for
        expiry times, which have a minute's margin."""
        return self._offset or 0.0

    # ------------------------------------------------------------------- keys

    def _counter_key(self, pool: str, series: str) -> str:
        # Unambiguous: a series is always "<metric>:<window>" with one colon.
        return f"{self.prefix}counts:{pool}:{series}"

    def _index_key(self, pool: str) -> str:
        return f"{self.prefix}pool:{pool}"

    def _lease_keys(self, pool: str) -> list[str]:
        return [f"{self.prefix}leases:{pool}", f"{self.prefix}lease:{pool}"]

    # ------------------------------------------------------------------ policy

    def reserve(
        self,
        pool: str,
        limits: Sequence[Limit],
        demand: Demand,
        now: float,
        *,
        key: str | None = None,
        model: str | None = None,
        lease_id: str | None = None,
    ) -> Reservation | Refusal:
        """Count ``demand`` against every limit of ``pool`` if all have room.

        One Lua script releases overdue leases, checks the holds on the pool, on
        ``key`` and on ``model``, then every limit, and adds to every counter, or
        to none. ``lease_id`` (default: a new one) names the reservation: a reserve
        sent again with the same id after a lost reply is not counted twice. A pool
        this process knows is full is refused without a round trip (see
        :class:`~langchain_quota_router.quota.ledger.full.FullPools`).
        """
        full = self.full_pools
        known = full.refusal(pool, demand, now)
        if known is not None:
            return known
        if full.sync_due():
            full.replace(self._all_holds(), now)
            known = full.refusal(pool, demand, now)
            if known is not None:
                return known
        offset = self.clock_offset()
        call, entries, lease_id, expires_at = self._reserve_call(
            pool, limits, demand, now + offset, key, model, lease_id
        )

        carried = self._take_queued()

        def run(client: Redis) -> Any:
            if not carried:
                return self._scripts[call.script](call.keys, call.args)
            replies = pipeline(client, [*(item.call for item in carried), call])
            self._settled(carried, replies[:-1])
            if isinstance(replies[-1], Exception):
                raise replies[-1]
            return replies[-1]

        try:
            reply = self._remote(f"reserve in pool {pool!r}", run)
        except LedgerError as exc:
            self._settle_failed(carried, exc)
            raise
        if time.monotonic() - self._heartbeat_at >= self.heartbeat_interval:
            self._heartbeat()
        made = self._decode_reserve(
            reply, pool, limits, demand, now, entries, lease_id, expires_at, offset
        )
        if isinstance(made, Refusal) and made.room is not None:
            leases_key = self._lease_keys(pool)[0]
            with contextlib.suppress(LedgerError):  # only a hint, for us and others
                first = self._remote(
                    "read leases", lambda c: c.zrange(leases_key, 0, 0, withscores=True)
                )
                record = full.note(made, _first_score(first, offset))
                if record is not None:
                    self._set_hold(record)
        return made

    def reserve_slice(
        self, pool: str, limits: Sequence[Limit], demand: Demand, now: float
    ) -> Reservation | Refusal:
        """Reserve quota for a fail-open wrapper to admit from during an outage.

        Counted as any reservation, but its lease releases nothing when it runs
        out: it stays counted until :meth:`hand_back` releases it (by its holder,
        or by the process that reads the holder's journal). A refusal is not
        remembered as a full pool: nobody asked for a call.
        """
        offset = self.clock_offset()
        call, entries, lease_id, expires_at = self._reserve_call(
            pool, limits, demand, now + offset, None, None, None, keep=True
        )
        reply = self._remote(
            f"reserve in pool {pool!r}", lambda _: self._scripts[call.script](call.keys, call.args)
        )
        return self._decode_reserve(
            reply, pool, limits, demand, now, entries, lease_id, expires_at, offset
        )

    def hand_back(
        self, pool: str, marker: str, adds: Sequence[tuple[str, int, int]], now: float
    ) -> bool:
        """Add ``(series, bucket, amount)`` to a pool's counters once per ``marker``
        (amounts may be negative): how a fail-open wrapper releases a slice and
        counts the calls it admitted from it, in one step. Buckets are on the fleet
        clock (:meth:`clock_offset`); ``now`` is on the caller's.

        Returns:
            False if a hand-back with this marker was applied before.
        """
        now += self.clock_offset()
        keys = [self._index_key(pool), f"{self.prefix}handback:{marker}", self._holds_key]
        args: list[str | int] = [math.ceil(_HAND_BACK_MEMORY * 1000), FULL_PREFIX + pool]
        for series, bucket, amount in adds:
            keys.append(self._counter_key(pool, series))
            args += [bucket, amount, _expiry_ms(_window_of(series), bucket, now)]
        applied = self._remote(
            f"hand back in pool {pool!r}", lambda _: self._scripts["handback"](keys, args)
        )
        self.full_pools.forget(pool)
        return bool(applied)

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
        """:meth:`reserve` through redis.asyncio: one round trip on the caller's
        path (the fleet count and the full-pool sync, each at most once in a while,
        add one)."""
        full = self.full_pools
        known = full.refusal(pool, demand, now)
        if known is not None:
            return known
        if full.sync_due():
            await self._async_full_pools(now)
            known = full.refusal(pool, demand, now)
            if known is not None:
                return known
        offset = await self._aclock_offset()
        call, entries, lease_id, expires_at = self._reserve_call(
            pool, limits, demand, now + offset, key, model, None
        )
        sent = self._loop_clients.batched(await self._aclient(), call, self._send_batch)
        try:
            reply = await asyncio.shield(sent)
        except asyncio.CancelledError:
            # The script may have run: take the reservation back if it did.
            loop = asyncio.get_running_loop()
            decoded: asyncio.Future[Reservation | Refusal] = loop.create_future()

            def decode(done: asyncio.Future[Any]) -> None:
                if done.cancelled() or done.exception() is not None:
                    decoded.cancel()
                    return
                decoded.set_result(
                    self._decode_reserve(
                        done.result(),
                        pool,
                        limits,
                        demand,
                        now,
                        entries,
                        lease_id,
                        expires_at,
                        offset,
                    )
                )

            decoded.add_done_callback(functools.partial(take_back, self, now))
            sent.add_done_callback(decode)
            raise
        if time.monotonic() - self._heartbeat_at >= self.heartbeat_interval:
            self._heartbeat_at = time.monotonic()
            self._worker().submit(self._heartbeat)
        made = self._decode_reserve(
            reply, pool, limits, demand, now, entries, lease_id, expires_at, offset
        )
        if isinstance(made, Refusal) and made.room is not None:
            leases_key = self._lease_keys(pool)[0]
            with contextlib.suppress(LedgerError):  # only a hint, for us and others
                first = await self._aremote(
                    "read leases", lambda c: c.client.zrange(leases_key, 0, 0, withscores=True)
                )
                record = full.note(made, _first_score(first, offset))
                if record is not None:
                    value = _encode_hold(_shift(record.until, offset), record.reason)
                    await self._aremote(
                        "note a full pool",
                        lambda c: c.client.hset(self._holds_key, record.subject, value),
                    )
        return made

    def _reserve_call(
        self,
        pool: str,
        limits: Sequence[Limit],
        demand: Demand,
        now: float,
        key: str | None,
        model: str | None,
        lease_id: str | None,
        *,
        keep: bool = False,
    ) -> tuple[Call, dict[str, tuple[str, int, Metric]], str, float]:
        """The ``reserve.lua`` call for a demand, and what decoding its reply needs
        (``keep``: its lease releases nothing when it runs out)."""
        plan = self._reserve_plans.get((pool, tuple(limits)))
        if plan is None:
            plan = self._reserve_plan(pool, limits)
        entries: dict[str, tuple[str, int, Metric]] = {}
        args: list[str | int] = [
            repr(float(now)),
            plan.pool_subject,
            KEY_PREFIX + key if key else "",
            MODEL_PREFIX + model if model else "",
            len(plan.series),
        ]
        floor = demand if keep else lease_floor(demand)
        releases = []
        for series, window, metric, counter in plan.series:
            bucket = window.bucket(now)
            entries[series] = (series, bucket, metric)
            lo, hi = window.bucket_range(now)
            amount = demand.amount(metric)
            args += [lo, hi, bucket, amount, _expiry_ms(window, bucket, now)]
            give = amount - floor.amount(metric)
            if give:
                releases.append(f"{counter}\x1f{bucket}\x1f{give}")
        args.append(len(limits))
        for position, metric, units in plan.limits:
            args += [position, demand.amount(metric), units]
        # Every Redis reservation is leased, even one with nothing to release: its
        # id is what makes a retried reserve count once.
        lease_id = lease_id or new_lease_id()
        expires_at = now + self.reservation_lease
        args += [lease_id, repr(expires_at), "\x1e".join(releases)]
        args.append(math.ceil((self.reservation_lease + _EXPIRY_MARGIN) * 1000))
        return Call("reserve", plan.keys, args), entries, lease_id, expires_at

    def _reserve_plan(self, pool: str, limits: Sequence[Limit]) -> _ReservePlan:
        """What every reserve on ``pool`` with ``limits`` sends alike, worked out
        once (kept for a bounded number of pools and limit sets)."""
        # Distinct series in order of first appearance, as BucketLedger does.
        windows: dict[str, Limit] = {}
        for limit in limits:
            windows.setdefault(limit.series, limit)
        order = list(windows)
        series = tuple(
            (name, lim.window, lim.metric, self._counter_key(pool, name))
            for name, lim in windows.items()
        )
        plan = _ReservePlan(
            keys=[
                self._holds_key,
                self._index_key(pool),
                *self._lease_keys(pool),
                *(counter for *_, counter in series),
            ],
            pool_subject=POOL_PREFIX + pool,
            series=series,
            limits=tuple((order.index(lim.series) + 1, lim.metric, lim.units) for lim in limits),
        )
        if len(self._reserve_plans) >= _PLANS_KEPT:
            self._reserve_plans.clear()
        self._reserve_plans[(pool, tuple(limits))] = plan
        return plan

    @staticmethod
    def _decode_reserve(
        reply: list[Any],
        pool: str,
        limits: Sequence[Limit],
        demand: Demand,
        now: float,
        entries: dict[str, tuple[str, int, Metric]],
        lease_id: str,
        expires_at: float,
        offset: float,
    ) -> Reservation | Refusal:
        """The reservation or refusal a reply of ``reserve.lua`` means, its times
        on the caller's clock (``now``; the script ran at ``now + offset``)."""
        status = reply[0]
        if status in ("ok", "dup"):
            levels = tuple(
                (limit, int(used)) for limit, used in zip(limits, reply[1:], strict=False)
            )
            return Reservation(
                pool, demand, tuple(entries.values()), now, levels, lease_id, expires_at - offset
            )
        if status == "hold":
            hold = _decode_hold(reply[1], reply[2], offset)
            return Refusal(pool, hold.reason, hold.until)
        limit = limits[int(reply[1]) - 1]
        need = demand.amount(limit.metric)
        if status == "big":
            return Refusal(
                pool,
                f"needs {limit.show(need)} {limit.metric}, more than {limit} allows at all",
                None,
                limit,
            )
        used = int(reply[2])
        flat = [int(x) for x in reply[3:]]
        buckets = sorted(zip(flat[::2], flat[1::2], strict=True))
        retry_at = _shift(
            limit.window.frees_at(now + offset, buckets, used + need - limit.units), -offset
        )
        room = max(0, limit.units - used)
        why = f"{limit} is used up ({limit.show(used)} counted)"
        return Refusal(pool, why, retry_at, limit, room)

    def settle(self, reservation: Reservation, used: Demand, now: float) -> None:
        """Replace a reservation's estimate with what the call really spent (one
        script: it ends the lease and applies the correction for a live or an
        expired one), sent before this returns: a settled call stays counted even
        if the process is killed the next moment."""
        self._settle(reservation, used, now, cancel=False)

    def cancel(self, reservation: Reservation, now: float) -> None:
        """Take back a reservation that was never used, if the server holds it.

        For a reserve whose reply was lost: it may or may not have run. If its
        lease is on the server, everything it counted is removed; if not, nothing
        changes.
        """
        self._settle(reservation, Demand(0, 0, 0), now, cancel=True)

    def record(self, reservation: Reservation, used: Demand, now: float) -> None:
        """Count what a reservation made elsewhere spent (see :meth:`Ledger.record`)."""
        unleased = Reservation(reservation.pool, Demand(0, 0, 0), reservation.entries, now)
        self._settle(unleased, used, now, cancel=False)

    def _settle(self, reservation: Reservation, used: Demand, now: float, *, cancel: bool) -> None:
        call = self._settle_call(reservation, used, now, cancel=cancel)
        if call is not None:
            self._send_settle(call, reservation)

    def _send_settle(self, call: Call, reservation: Reservation) -> None:
        def run(client: Redis) -> None:
            self._scripts[call.script](call.keys, call.args)

        self._remote(f"settle in pool {reservation.pool!r}", run)
        if _gives_back(call):
            self.full_pools.forget(reservation.pool)

    # ------------------------------------------------- settlements carried later

    def _enqueue(self, c: LoopClient, item: _Queued) -> None:
        """Queue a settlement for the next pipeline of the loop (or of any thread
        of this process) to carry; the loop sends one for it within
        :data:`~.clients.SETTLE_DELAY` seconds if none goes out meanwhile."""
        with self._queue_lock:
            self._queued.append(item)
        self._loop_clients.send_later(c, self._send_batch, SETTLE_DELAY)

    def _take_queued(self) -> list[_Queued]:
        with self._queue_lock:
            taken, self._queued = self._queued, []
        return taken

    def flush(self) -> None:
        """Send the settlements waiting for a pipeline to carry them."""
        with self._flush_lock:
            taken = self._take_queued()
            if not taken:
                return

            def run(client: Redis) -> list[Any]:
                return pipeline(client, [item.call for item in taken])

            try:
                replies = self._remote("settle", run)
            except LedgerError as exc:
                self._settle_failed(taken, exc)
                return
            self._settled(taken, replies)

    def _settled(self, items: Sequence[_Queued], replies: Sequence[Any]) -> None:
        """Hand the settlements whose replies are errors to the settler's retries."""
        from redis.exceptions import RedisError

        for item, reply in zip(items, replies, strict=True):
            if isinstance(reply, RedisError):
                msg = f"Redis ledger {self.url} could not settle: {self._scrub(reply)}"
                self._settle_failed([item], LedgerError(msg))

    def _settle_failed(self, items: Sequence[_Queued], exc: LedgerError) -> None:
        for item in items:
            SETTLER.failed(exc, self, item.reservation, item.used, item.now)

    async def asettle(self, reservation: Reservation, used: Demand, now: float) -> None:
        """:meth:`settle` on the loop, without a thread, and without a round trip of
        its own when it only gives room back (the usual case: the output estimate
        was generous).

        Such a settlement is queued and carried by the next pipeline this process
        sends (a reserve's, a read's), or sent by the loop within
        :data:`~.clients.SETTLE_DELAY` seconds if none goes out. Until it lands the
        pool looks fuller than it is, never emptier; this process's own reads
        (:meth:`usage`, :meth:`ausage`) carry it first, and so does :meth:`close`.
        A settlement that adds to the count (the call spent more than estimated)
        goes out at once, in this turn's pipeline, and is awaited, so no process
        sees room that is not there; so does one whose loss could count too little
        (:func:`may_land_late`: a call that spent output tokens its lease would
        release were this process killed before the settlement landed).
        """
        call = self._settle_call(reservation, used, now, cancel=False)
        if call is None:
            return
        c = await self._aclient()
        if _gives_back(call) and not _takes(call) and may_land_late(reservation, used):
            self.full_pools.forget(reservation.pool)
            self._enqueue(c, _Queued(call, reservation, used, now))
            return
        await self._loop_clients.batched(c, call, self._send_batch)

    async def ausage(self, pool: str, limits: Sequence[Limit], now: float) -> list[LimitUsage]:
        """:meth:`usage` on the loop: one pipeline, which carries this process's
        queued settlements first, so the figures include them."""
        offset = await self._aclock_offset()
        names = list(dict.fromkeys(limit.series for limit in limits))
        keys = [*self._lease_keys(pool), *(self._counter_key(pool, n) for n in names)]
        call = Call("usage", keys, [repr(float(now + offset))])
        replies = await self._loop_clients.batched(await self._aclient(), call, self._send_batch)
        return self._usage_of(pool, limits, names, replies, now, offset)

    async def _async_full_pools(self, now: float) -> None:
        """Take in the fleet's ``full:`` records: one read for every caller on this
        loop that finds the sync due meanwhile."""
        values = await self._ashared("holds", lambda c: c.client.hgetall(self._holds_key))
        if self.full_pools.sync_due():  # the first of the callers who shared the read
            offset = await self._aclock_offset()
            holds = [_decode_hold(str(k), str(v), offset) for k, v in values.items()]
            self.full_pools.replace(holds, now)

    def _settle_call(
        self, reservation: Reservation, used: Demand, now: float, *, cancel: bool
    ) -> Call | None:
        """The ``settle.lua`` call for a settlement (None: nothing to send)."""
        pool = reservation.pool
        floor = lease_floor(reservation.demand)
        keys = [self._index_key(pool), *self._lease_keys(pool), self._holds_key]
        args: list[str | int] = [reservation.lease_id, FULL_PREFIX + pool]
        for series, bucket, metric in reservation.entries:
            live = used.amount(metric) - reservation.demand.amount(metric)
            expired = 0 if cancel else used.amount(metric) - floor.amount(metric)
            if live or expired:
                keys.append(self._counter_key(pool, series))
                args += [bucket, live, expired]
                args.append(_expiry_ms(_window_of(series), bucket, now + self._known_offset()))
        if len(args) == 2 and not reservation.lease_id:
            return None
        return Call("settle", keys, args)

    def _drain(self) -> None:
        """Send the queued settlements first, so what this process reads next
        includes them."""
        if self._queued:
            self.flush()

    def observe(self, pool: str, limit: Limit, remaining: int, now: float) -> None:
        """Lower the room ``limit`` has in ``pool`` to what the vendor says remains.

        Never raises room (see :meth:`Ledger.observe`). One Lua script.
        """
        now += self.clock_offset()
        lo, hi = limit.window.bucket_range(now)
        bucket = limit.window.bucket(now)
        keys = [self._index_key(pool), self._counter_key(pool, limit.series)]
        args = [
            lo,
            hi,
            bucket,
            limit.units,
            remaining,
            _expiry_ms(limit.window, bucket, now),
        ]
        self._remote(f"observe pool {pool!r}", lambda _: self._scripts["observe"](keys, args))

    def block(self, pool: str, until: float, reason: str) -> None:
        """Refuse every demand on ``pool`` until ``until`` (epoch seconds)."""
        self._set_hold(Hold(POOL_PREFIX + pool, until, reason))

    def unblock(self, pool: str) -> None:
        """Lift a :meth:`block`."""
        self._delete_hold(POOL_PREFIX + pool)
        self._delete_hold(FULL_PREFIX + pool)
        self.full_pools.forget(pool)

    def disable(self, key: str, reason: str) -> None:
        """Refuse every demand made with ``key`` until :meth:`enable`."""
        self._set_hold(Hold(KEY_PREFIX + key, None, reason))

    def enable(self, key: str) -> None:
        """Lift a :meth:`disable`."""
        self._delete_hold(KEY_PREFIX + key)

    def mark_unavailable(self, model: str, until: float, reason: str) -> None:
        """Refuse every demand for ``model`` (a model on one key) until ``until``."""
        self._set_hold(Hold(MODEL_PREFIX + model, until, reason))

    def make_available(self, model: str) -> None:
        """Lift a :meth:`mark_unavailable`."""
        self._delete_hold(MODEL_PREFIX + model)

    def learn(self, pool: str, limit: Limit, now: float) -> None:
        """Record a limit the vendor stated for ``pool`` (see :meth:`Ledger.learn`)."""
        self._set_hold(learned_record(pool, limit, now))

    def learned(self) -> list[LearnedLimit]:
        """Every limit learned from vendors' headers, in every pool."""
        return learned_from(self._all_holds())

    def holds(self, now: float) -> list[Hold]:
        """Every block and disabled key in force at ``now``, ordered by subject."""
        return [h for h in self._all_holds() if h.active(now) and not is_record(h.subject)]

    def _set_hold(self, hold: Hold) -> None:
        until = hold.until
        if until is not None:
            until += self.clock_offset()
        value = _encode_hold(until, hold.reason)
        self._remote(
            f"put {hold.subject!r} on hold",
            lambda client: client.hset(self._holds_key, hold.subject, value),
        )

    def _delete_hold(self, subject: str) -> None:
        self._remote(
            f"lift the hold on {subject!r}",
            lambda client: client.hdel(self._holds_key, subject),
        )

    def _all_holds(self) -> list[Hold]:
        values = self._remote("read holds", lambda c: _hgetall(c, self._holds_key))
        offset = self.clock_offset()
        return [_decode_hold(s, v, offset) for s, v in sorted(values.items())]

    def usage(self, pool: str, limits: Sequence[Limit], now: float) -> list[LimitUsage]:
        """What each of ``limits`` has spent in ``pool`` at ``now``.

        One script: releases overdue leases, then reads every counter, so the
        figures are one snapshot.
        """
        self._drain()
        offset = self.clock_offset()
        names = list(dict.fromkeys(limit.series for limit in limits))
        keys = [*self._lease_keys(pool), *(self._counter_key(pool, n) for n in names)]

        def run(client: Redis) -> list[list[str]]:
            return cast(
                "list[list[str]]", self._scripts["usage"](keys, [repr(float(now + offset))])
            )

        replies = self._remote(f"read pool {pool!r}", run)
        return self._usage_of(pool, limits, names, replies, now, offset)

    def _usage_of(
        self,
        pool: str,
        limits: Sequence[Limit],
        names: Sequence[str],
        replies: Sequence[Sequence[str]],
        now: float,
        offset: float,
    ) -> list[LimitUsage]:
        """What ``usage.lua``'s reply says each of ``limits`` has spent."""
        counters = {
            series: {int(flat[j]): int(flat[j + 1]) for j in range(0, len(flat), 2)}
            for series, flat in zip(names, replies, strict=True)
        }
        return [self._limit_usage(pool, lim, counters[lim.series], now, offset) for lim in limits]

    @staticmethod
    def _limit_usage(
        pool: str, limit: Limit, counter: dict[int, int], now: float, offset: float
    ) -> LimitUsage:
        """How much of ``limit`` a counter hash's buckets spend, as BucketLedger says
        (counted at ``now + offset`` on the fleet clock, reset time on the caller's)."""
        now += offset
        lo, hi = limit.window.bucket_range(now)
        buckets = sorted((b, a) for b, a in counter.items() if lo <= b <= hi and a)
        used = sum(a for _, a in buckets)
        if limit.window.kind == "sliding" and used:
            resets = limit.window.frees_at(now, buckets, used)
        else:
            resets = limit.window.frees_at(now, [], 0)
        return LimitUsage(pool, limit, used, _shift(resets, -offset))

    def reset(self, pool: str) -> None:
        """Forget everything counted in ``pool`` and lift its block (one script)."""
        self._drain()
        keys = [self._holds_key, self._index_key(pool), *self._lease_keys(pool)]
        self._remote(
            f"reset pool {pool!r}",
            lambda _: self._scripts["reset"](keys, [POOL_PREFIX + pool, FULL_PREFIX + pool]),
        )
        self.full_pools.forget(pool)


def _gives_back(call: Call) -> bool:
    """Whether a settle call gives room back (a negative live correction)."""
    return any(int(a) < 0 for a in call.args[3::4])


def _takes(call: Call) -> bool:
    """Whether a settle call adds to a count (for a live lease: one that ran out,
    minutes ago at least, is corrected a moment later either way)."""
    return any(int(a) > 0 for a in call.args[3::4])


def _first_score(reply: Any, offset: float) -> float | None:
    """The score of ``ZRANGE key 0 0 WITHSCORES``: the earliest lease's expiry, on
    the caller's clock."""
    return float(reply[0][1]) - offset if reply else None
