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


async def apipeline(client: AsyncRedis, calls: Sequence[Call]) -> list[Any]:
    """:func:`pipeline` on an async client."""
    from redis.exceptions import NoScriptError

    async def send() -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for call in calls:
            pipe.evalsha(sha(call.script), len(call.keys), *call.keys, *call.args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    replies = await send()
    if any(isinstance(r, NoScriptError) for r in replies):
        for name in {call.script for call in calls}:
            await client.script_load(script_text(name))
        replies = await send()
    return replies
