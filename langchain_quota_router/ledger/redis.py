"""A ledger in Redis: one set of quotas for every process on every machine.

URL: ``redis://[[user]:password@]host[:port][/db][?option=value&...]`` (``rediss://``
for TLS). Options of our own:

==========================  =========================================================
``on_error=raise``          (default) fail closed: every operation raises
                            :class:`~langchain_quota_router.LedgerError` while Redis
                            does not answer, so nothing is sent unaccounted.
``on_error=local``          fail open: log one warning and count in this process's
                            memory until Redis answers again, then go back to Redis.
                            What was counted locally is not copied to Redis, and a
                            correction (``settle``) of a Redis reservation made while
                            Redis is away is dropped (Redis keeps the estimate).
``retry_interval=5``        with ``on_error=local``: seconds between attempts to
                            reach Redis again (calls in between stay local and fast).
``prefix=qr:``              namespace of every key, so several apps share a Redis.
==========================  =========================================================

Every other option goes to redis-py (``Redis.from_url``); the defaults here are short
so an unreachable Redis fails fast: ``socket_connect_timeout=0.5`` and
``socket_timeout=1`` (seconds). A dropped connection is retried once at once (a
restarted server leaves stale pooled connections); timeouts are not retried.

Atomicity comes from Lua scripts shipped with the package (``ledger/lua/*.lua``): each
of ``reserve``, ``settle``, ``observe`` and ``reset`` is one script, one round trip.
Python computes every bucket number and expiry (calendars and time zones stay
here) and passes them as arguments; the scripts only compare and count.

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

The counters of a pool are named through its index set inside ``reset``, so the
ledger needs a single Redis server (or a primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from langchain_quota_router._errors import ConfigurationError, LedgerError
from langchain_quota_router._limits import Limit, Metric, Window
from langchain_quota_router.ledger._url import redact_url
from langchain_quota_router.ledger.base import (
    KEY_PREFIX,
    LEARNED_PREFIX,
    MODEL_PREFIX,
    POOL_PREFIX,
    Demand,
    Hold,
    Ledger,
    LimitUsage,
    Refusal,
    Reservation,
)
from langchain_quota_router.ledger.memory import MemoryLedger

if TYPE_CHECKING:
    from redis import Redis
    from redis.commands.core import Script

logger = logging.getLogger("langchain_quota_router")

_T = TypeVar("_T")
_OnError = Literal["raise", "local"]

#: Connection defaults, overridable in the URL: fail fast when Redis is away.
_CONNECT_TIMEOUT = 0.5
_SOCKET_TIMEOUT = 1.0
_RETRY_INTERVAL = 5.0
_PREFIX = "qr:"
#: Counters outlive their window by this much (seconds), so a host whose clock is a
#: little behind still finds them.
_EXPIRY_MARGIN = 60.0
_SCRIPTS = ("reserve", "add", "observe", "prune", "reset")


@functools.cache
def _script_text(name: str) -> str:
    """The source of one of the package's Lua scripts."""
    folder = importlib.resources.files("langchain_quota_router.ledger") / "lua"
    return (folder / f"{name}.lua").read_text(encoding="utf-8")


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


def _encode_hold(until: float | None, reason: str) -> str:
    return f"{'' if until is None else repr(float(until))}|{reason}"


def _decode_hold(subject: str, value: str) -> Hold:
    until, reason = value.split("|", 1)
    return Hold(subject, float(until) if until else None, reason)


class RedisLedger(Ledger):
    """Counts in Redis. URL: ``redis://host:6379/0`` (options in the module docs).

    Thread-safe and fork-safe (redis-py opens new connections in a child process).
    The client connects on first use, not here.

    Args:
        url: the ledger URL.

    Raises:
        ConfigurationError: the URL or one of its options is wrong, or the ``redis``
            extra is not installed.
    """

    scheme = "redis"

    def __init__(self, url: str) -> None:
        super().__init__()
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
        if on_error not in ("raise", "local"):
            msg = (
                f"ledger URL {self.url!r}: on_error must be 'raise' (fail closed) "
                f"or 'local' (fail open), got {on_error!r}"
            )
            raise ConfigurationError(msg)
        self.on_error: _OnError = "raise" if on_error == "raise" else "local"
        self.prefix = options.get("prefix", _PREFIX)
        try:
            self.retry_interval = float(options.get("retry_interval", _RETRY_INTERVAL))
        except ValueError:
            self.retry_interval = math.nan
        if not self.retry_interval >= 0:
            msg = f"ledger URL {self.url!r}: retry_interval must be a number of seconds >= 0"
            raise ConfigurationError(msg)
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
        # Fail-open state: while Redis is away, the monotonic time of the next try.
        self._next_try: float | None = None
        self._fallback: MemoryLedger | None = None
        # Reservations the fallback admitted, so they are settled where counted.
        self._local_reservations: weakref.WeakValueDictionary[int, Reservation] = (
            weakref.WeakValueDictionary()
        )

    @staticmethod
    def _split_options(url: str) -> tuple[dict[str, str], str]:
        """Our options from the URL's query, and the URL left for redis-py."""
        parts = urlsplit(url)
        ours: dict[str, str] = {}
        theirs: list[tuple[str, str]] = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name in ("on_error", "prefix", "retry_interval"):
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
                from redis import Redis
                from redis.backoff import NoBackoff
                from redis.exceptions import ConnectionError as RedisConnectionError
                from redis.retry import Retry

                client = Redis.from_url(
                    self._client_url,
                    decode_responses=True,
                    socket_connect_timeout=_CONNECT_TIMEOUT,
                    socket_timeout=_SOCKET_TIMEOUT,
                    # One immediate retry on a dropped connection (stale after a
                    # server restart); never on a timeout, which may have run.
                    retry=Retry(NoBackoff(), 1, (RedisConnectionError,)),
                )
                # register_script re-loads a script the server forgot (NOSCRIPT
                # after SCRIPT FLUSH or a restart).
                self._scripts = {
                    name: client.register_script(_script_text(name)) for name in _SCRIPTS
                }
                self._client = client
            return self._client

    def close(self) -> None:
        """Close the connections; the ledger reconnects if used again."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _scrub(self, exc: Exception) -> str:
        """``exc`` as text, with the password replaced should it echo it."""
        text = f"{type(exc).__name__}: {exc}"
        return text.replace(self._secret, "***") if self._secret else text

    def _failure(self, operation: str, exc: Exception) -> str:
        return f"Redis ledger {self.url} could not {operation}: {self._scrub(exc)}"

    def _remote(self, operation: str, call: Callable[[Redis], _T]) -> _T:
        """Run ``call`` against Redis, turning its errors into ``LedgerError``."""
        from redis.exceptions import RedisError

        try:
            return call(self._redis())
        except RedisError as exc:
            raise LedgerError(self._failure(operation, exc)) from exc

    def _run(
        self,
        operation: str,
        remote: Callable[[Redis], _T],
        local: Callable[[MemoryLedger], _T],
    ) -> tuple[_T, bool]:
        """Run an operation on Redis or, failing open, on the local ledger.

        Returns:
            The result and whether the local ledger served it.
        """
        if self.on_error == "raise":
            return self._remote(operation, remote), False
        if self._next_try is not None:
            with self._lock:
                waiting = self._next_try is not None and time.monotonic() < self._next_try
                if self._next_try is not None and not waiting:
                    # This caller tries Redis again; the others stay local meanwhile.
                    self._next_try = time.monotonic() + self.retry_interval
            if waiting:
                return local(self._local()), True
        try:
            value = self._remote(operation, remote)
        except LedgerError as exc:
            with self._lock:
                first = self._next_try is None
                self._next_try = time.monotonic() + self.retry_interval
            if first:
                logger.warning(
                    "%s; counting in this process's memory until Redis answers "
                    "again (on_error=local)",
                    exc,
                )
            return local(self._local()), True
        if self._next_try is not None:
            with self._lock:
                back = self._next_try is not None
                self._next_try = None
            if back:
                logger.info("Redis ledger %s answers again; counting there", self.url)
        return value, False

    def _local(self) -> MemoryLedger:
        """The in-memory ledger that serves while Redis is away (fail open)."""
        if self._fallback is None:
            with self._lock:
                if self._fallback is None:
                    self._fallback = MemoryLedger("memory://")
        return self._fallback

    # ------------------------------------------------------------------- keys

    def _counter_key(self, pool: str, series: str) -> str:
        # Unambiguous: a series is always "<metric>:<window>" with one colon.
        return f"{self.prefix}counts:{pool}:{series}"

    def _index_key(self, pool: str) -> str:
        return f"{self.prefix}pool:{pool}"

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
    ) -> Reservation | Refusal:
        """Count ``demand`` against every limit of ``pool`` if all have room.

        One Lua script checks the holds on the pool, on ``key`` and on ``model``,
        then every limit, and adds to every counter, or to none.
        """
        # Distinct series in order of first appearance, as the base class does.
        entries: dict[str, tuple[str, int, Metric]] = {}
        windows: dict[str, Window] = {}
        for limit in limits:
            series = limit.series
            if series not in entries:
                entries[series] = (series, limit.window.bucket(now), limit.metric)
                windows[series] = limit.window
        order = list(entries)
        keys = [self._holds_key, self._index_key(pool)]
        args: list[str | int] = [
            repr(float(now)),
            POOL_PREFIX + pool,
            KEY_PREFIX + key if key else "",
            MODEL_PREFIX + model if model else "",
            len(order),
        ]
        for series in order:
            _, bucket, metric = entries[series]
            window = windows[series]
            lo, hi = window.bucket_range(now)
            keys.append(self._counter_key(pool, series))
            args += [lo, hi, bucket, demand.amount(metric)]
            args.append(_expiry_ms(window, bucket, now))
        args.append(len(limits))
        for limit in limits:
            args += [
                order.index(limit.series) + 1,
                demand.amount(limit.metric),
                limit.amount,
            ]

        def remote(client: Redis) -> Reservation | Refusal:
            reply = self._scripts["reserve"](keys, args)
            return self._decode_reserve(reply, pool, limits, demand, now, entries)

        def local(ledger: MemoryLedger) -> Reservation | Refusal:
            return ledger.reserve(pool, limits, demand, now, key=key, model=model)

        result, served_locally = self._run(f"reserve in pool {pool!r}", remote, local)
        if served_locally and isinstance(result, Reservation):
            self._local_reservations[id(result)] = result
        return result

    @staticmethod
    def _decode_reserve(
        reply: list[Any],
        pool: str,
        limits: Sequence[Limit],
        demand: Demand,
        now: float,
        entries: dict[str, tuple[str, int, Metric]],
    ) -> Reservation | Refusal:
        """The reservation or refusal a reply of ``reserve.lua`` means."""
        status = reply[0]
        if status == "ok":
            levels = tuple(
                (limit, int(used)) for limit, used in zip(limits, reply[1:], strict=True)
            )
            return Reservation(pool, demand, tuple(entries.values()), now, levels)
        if status == "hold":
            hold = _decode_hold(reply[1], reply[2])
            return Refusal(pool, hold.reason, hold.until)
        limit = limits[int(reply[1]) - 1]
        need = demand.amount(limit.metric)
        if status == "big":
            return Refusal(
                pool,
                f"needs {need} {limit.metric}, more than {limit} allows at all",
                None,
                limit,
            )
        used = int(reply[2])
        flat = [int(x) for x in reply[3:]]
        buckets = sorted(zip(flat[::2], flat[1::2], strict=True))
        retry_at = limit.window.frees_at(now, buckets, used + need - limit.amount)
        return Refusal(pool, f"{limit} is used up ({used} counted)", retry_at, limit)

    def settle(self, reservation: Reservation, used: Demand, now: float) -> None:
        """Replace a reservation's estimate with what the call really spent.

        A reservation the local fallback admitted is settled there, even once Redis
        is back. A Redis reservation settled while Redis is away (``on_error=local``)
        keeps its estimate in Redis: the correction is dropped, not replayed.
        """
        if self._local_reservations.get(id(reservation)) is reservation:
            self._local().settle(reservation, used, now)
            return
        keys = [self._index_key(reservation.pool)]
        args: list[str | int] = []
        for series, bucket, metric in reservation.entries:
            delta = used.amount(metric) - reservation.demand.amount(metric)
            if delta:
                keys.append(self._counter_key(reservation.pool, series))
                args += [bucket, delta, _expiry_ms(_window_of(series), bucket, now)]
        if not args:
            return

        def remote(client: Redis) -> None:
            self._scripts["add"](keys, args)

        self._run(f"settle in pool {reservation.pool!r}", remote, lambda _: None)

    def observe(self, pool: str, limit: Limit, remaining: int, now: float) -> None:
        """Lower the room ``limit`` has in ``pool`` to what the vendor says remains.

        Never raises room (see :meth:`Ledger.observe`). One Lua script.
        """
        lo, hi = limit.window.bucket_range(now)
        bucket = limit.window.bucket(now)
        keys = [self._index_key(pool), self._counter_key(pool, limit.series)]
        args = [
            lo,
            hi,
            bucket,
            limit.amount,
            remaining,
            _expiry_ms(limit.window, bucket, now),
        ]

        def remote(client: Redis) -> None:
            self._scripts["observe"](keys, args)

        def local(ledger: MemoryLedger) -> None:
            ledger.observe(pool, limit, remaining, now)

        self._run(f"observe pool {pool!r}", remote, local)

    def block(self, pool: str, until: float, reason: str) -> None:
        """Refuse every demand on ``pool`` until ``until`` (epoch seconds)."""
        self._set_hold_or_local(Hold(POOL_PREFIX + pool, until, reason))

    def disable(self, key: str, reason: str) -> None:
        """Refuse every demand made with ``key`` until :meth:`enable`."""
        self._set_hold_or_local(Hold(KEY_PREFIX + key, None, reason))

    def enable(self, key: str) -> None:
        """Lift a :meth:`disable`."""
        self._delete_hold_or_local(KEY_PREFIX + key)

    def unblock(self, pool: str) -> None:
        """Lift a :meth:`block`."""
        self._delete_hold_or_local(POOL_PREFIX + pool)

    def _set_hold_or_local(self, hold: Hold) -> None:
        value = _encode_hold(hold.until, hold.reason)

        def remote(client: Redis) -> None:
            client.hset(self._holds_key, hold.subject, value)

        def local(ledger: MemoryLedger) -> None:
            with ledger._atomic():
                ledger._set_hold(hold)

        self._run(f"put {hold.subject!r} on hold", remote, local)

    def _delete_hold_or_local(self, subject: str) -> None:
        def remote(client: Redis) -> None:
            client.hdel(self._holds_key, subject)

        def local(ledger: MemoryLedger) -> None:
            with ledger._atomic():
                ledger._delete_hold(subject)

        self._run(f"lift the hold on {subject!r}", remote, local)

    def holds(self, now: float) -> list[Hold]:
        """Every block and disabled key in force at ``now``, ordered by subject."""

        def remote(client: Redis) -> list[Hold]:
            return [
                h
                for h in self._all_holds()
                if h.active(now) and not h.subject.startswith(LEARNED_PREFIX)
            ]

        found, _ = self._run("list holds", remote, lambda m: m.holds(now))
        return sorted(found, key=lambda h: h.subject)

    def usage(self, pool: str, limits: Sequence[Limit], now: float) -> list[LimitUsage]:
        """What each of ``limits`` has spent in ``pool`` at ``now``.

        Reads every counter in one transaction, so the figures are one snapshot.
        """
        names = list(dict.fromkeys(limit.series for limit in limits))

        def remote(client: Redis) -> list[LimitUsage]:
            pipe = client.pipeline(transaction=True)
            for series in names:
                pipe.hgetall(self._counter_key(pool, series))
            replies: list[dict[str, str]] = pipe.execute()
            counters = {
                series: {int(b): int(a) for b, a in fields.items()}
                for series, fields in zip(names, replies, strict=True)
            }
            return [self._limit_usage(pool, lim, counters[lim.series], now) for lim in limits]

        def local(ledger: MemoryLedger) -> list[LimitUsage]:
            return ledger.usage(pool, limits, now)

        report, _ = self._run(f"read pool {pool!r}", remote, local)
        return report

    @staticmethod
    def _limit_usage(pool: str, limit: Limit, counter: dict[int, int], now: float) -> LimitUsage:
        """How much of ``limit`` a counter hash's buckets spend, as the base says."""
        lo, hi = limit.window.bucket_range(now)
        buckets = sorted((b, a) for b, a in counter.items() if lo <= b <= hi and a)
        used = sum(a for _, a in buckets)
        if limit.window.kind == "sliding" and used:
            resets = limit.window.frees_at(now, buckets, used)
        else:
            resets = limit.window.frees_at(now, [], 0)
        return LimitUsage(pool, limit, used, resets)

    def reset(self, pool: str) -> None:
        """Forget everything counted in ``pool`` and lift its block (one script)."""
        keys = [self._holds_key, self._index_key(pool)]

        def remote(client: Redis) -> None:
            self._scripts["reset"](keys, [POOL_PREFIX + pool])

        def local(ledger: MemoryLedger) -> None:
            ledger.reset(pool)

        self._run(f"reset pool {pool!r}", remote, local)

    # ------------------------------------------------------- storage primitives
    # The public operations above are Lua scripts and do not use these. They
    # exist so the base class's contract holds and for tools that read one
    # counter; each is one Redis command or script, atomic by itself.

    @contextmanager
    def _atomic(self) -> Iterator[None]:
        """No grouping: Redis runs no Python, so each primitive is atomic alone."""
        yield

    def _hash(self, pool: str, series: str) -> dict[int, int]:
        key = self._counter_key(pool, series)
        fields = self._remote(f"read pool {pool!r}", lambda c: _hgetall(c, key))
        return {int(b): int(a) for b, a in fields.items()}

    def _sum(self, pool: str, series: str, lo: int, hi: int) -> int:
        return sum(a for b, a in self._hash(pool, series).items() if lo <= b <= hi)

    def _buckets(self, pool: str, series: str, lo: int, hi: int) -> list[tuple[int, int]]:
        return sorted((b, a) for b, a in self._hash(pool, series).items() if lo <= b <= hi and a)

    def _add(self, pool: str, series: str, bucket: int, amount: int) -> None:
        keys = [self._index_key(pool), self._counter_key(pool, series)]
        args = [bucket, amount, _expiry_ms(_window_of(series), bucket, time.time())]
        self._remote(f"count in pool {pool!r}", lambda _: self._scripts["add"](keys, args))

    def _prune(self, pool: str, series: str, below: int) -> None:
        key = self._counter_key(pool, series)
        self._remote(f"prune pool {pool!r}", lambda _: self._scripts["prune"]([key], [below]))

    def _delete_pool(self, pool: str) -> None:
        keys = [self._holds_key, self._index_key(pool)]
        self._remote(f"reset pool {pool!r}", lambda _: self._scripts["reset"](keys, [""]))

    def _holds(self, subjects: Sequence[str]) -> list[Hold]:
        def read(client: Redis) -> list[str | None]:
            return cast("list[str | None]", client.hmget(self._holds_key, subjects))

        values = self._remote("read holds", read)
        pairs = zip(subjects, values, strict=True)
        return [_decode_hold(s, v) for s, v in pairs if v is not None]

    def _all_holds(self) -> list[Hold]:
        values = self._remote("read holds", lambda c: _hgetall(c, self._holds_key))
        return [_decode_hold(s, v) for s, v in sorted(values.items())]

    def _set_hold(self, hold: Hold) -> None:
        value = _encode_hold(hold.until, hold.reason)
        self._remote(
            f"put {hold.subject!r} on hold",
            lambda client: client.hset(self._holds_key, hold.subject, value),
        )

    def _delete_hold(self, subject: str) -> None:
        self._remote(
            f"lift the hold on {subject!r}",
            lambda client: client.hdel(self._holds_key, subject),
        )
