"""The Redis ledger's Lua scripts (``lua/*.lua``): their text, their digests, and
calls to them sent in one pipeline by digest.

Each script is prefixed with ``_leases.lua``, the lease helpers they share.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis import Redis
    from redis.asyncio import Redis as AsyncRedis

SCRIPTS = ("reserve", "settle", "observe", "usage", "reset", "clock", "handback")


@functools.cache
def script_text(name: str) -> str:
    """The source of one of the package's Lua scripts."""
    folder = importlib.resources.files("langchain_quota_router.quota.ledger.redis") / "lua"
    prelude = (folder / "_leases.lua").read_text(encoding="utf-8")
    return prelude + (folder / f"{name}.lua").read_text(encoding="utf-8")


@functools.cache
def sha(name: str) -> str:
    """The digest Redis knows a script by (EVALSHA)."""
    return hashlib.sha1(script_text(name).encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class Call:
    """One script call, ready to send by either client."""

    script: str
    keys: list[str]
    args: list[str | int]


def pipeline(client: Redis, calls: Sequence[Call]) -> list[Any]:
    """Every call's script by its digest in one pipeline, errors as replies.

    By digest rather than through ``Script`` objects, whose pipelines first ask
    the server whether it knows them (a round trip more); a server that forgot
    them (restart, ``SCRIPT FLUSH``) gets them loaded and the calls resent.
    """
    from redis.exceptions import NoScriptError

    def send() -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for call in calls:
            pipe.evalsha(sha(call.script), len(call.keys), *call.keys, *call.args)
        replies: list[Any] = pipe.execute(raise_on_error=False)
        return replies

    replies = send()
    if any(isinstance(r, NoScriptError) for r in replies):
        for name in {call.script for call in calls}:
            client.script_load(script_text(name))
        replies = send()
    return replies


@functools.lru_cache(maxsize=8192)
def _bulk_key(key: str) -> bytes:
    """A key as a RESP bulk string (keys repeat from call to call: kept packed)."""
    data = key.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


@functools.cache
def _evalsha_head(name: str) -> tuple[bytes, int]:
    digest = sha(name).encode()
    return b"$7\r\nEVALSHA\r\n$%d\r\n%s\r\n" % (len(digest), digest), 3


def pack(calls: Sequence[Call]) -> bytes:
    """Every call as ``EVALSHA digest numkeys key... arg...`` in the Redis protocol,
    one buffer for all: what redis-py's pipeline sends, packed at a fraction of its
    cost (it joins the buffer again for every argument)."""
    parts: list[bytes] = []
    for call in calls:
        head, words = _evalsha_head(call.script)
        keys, args = call.keys, call.args
        numkeys = str(len(keys)).encode()
        parts.append(b"*%d\r\n" % (words + len(keys) + len(args)))
        parts.append(head)
        parts.append(b"$%d\r\n%s\r\n" % (len(numkeys), numkeys))
        parts += map(_bulk_key, keys)
        for arg in args:
            data = arg.encode() if isinstance(arg, str) else b"%d" % arg
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


async def apipeline(client: AsyncRedis, calls: Sequence[Call]) -> list[Any]:
    """:func:`pipeline` on an async client: the calls packed by :func:`pack`, sent
    on one of the pool's connections, each reply read in turn (an error reply is
    the reply). A dropped connection (stale after a server restart) is retried
    once, on another, as the client's own retry would."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import NoScriptError, ResponseError

    payload = pack(calls)
    pool = client.connection_pool

    async def send() -> list[Any]:
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await connection.send_packed_command(payload, check_health=False)
            replies: list[Any] = []
            for _ in calls:
                try:
                    replies.append(await connection.read_response())
                except ResponseError as exc:
                    replies.append(exc)
        except BaseException:
            # Replies may be left unread: the connection cannot be used again.
            await connection.disconnect()
            raise
        finally:
            await pool.release(connection)
        return replies

    try:
        replies = await send()
    except RedisConnectionError:
        replies = await send()
    if any(isinstance(r, NoScriptError) for r in replies):
        for name in {call.script for call in calls}:
            await client.script_load(script_text(name))
        replies = await send()
    return replies
