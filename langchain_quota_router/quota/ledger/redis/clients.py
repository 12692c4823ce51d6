"""The Redis ledger's clients: one for threads, one per event loop for the async API,
and the batching of script calls on each loop's client.

Calls made in one turn of an event loop go out together, in one pipeline (and one
round trip): under load, calls share round trips instead of each paying its own.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langchain_quota_router.quota.ledger.redis.scripts import SCRIPTS, Call, script_text

if TYPE_CHECKING:
    from redis import Redis
    from redis.asyncio import Redis as AsyncRedis
    from redis.commands.core import AsyncScript, Script

#: Connection defaults, overridable in the URL: fail fast when Redis is away.
CONNECT_TIMEOUT = 0.5
SOCKET_TIMEOUT = 1.0
#: Connections per event loop for the async API, and how long (seconds) a call
#: waits for one before the ledger reports Redis unavailable.
ASYNC_CONNECTIONS = 32
POOL_WAIT = 10.0


def connect(client_url: str) -> tuple[Redis, dict[str, Script]]:
    """A client for ``client_url`` (it connects on first use), with every script
    registered."""
    from redis import Redis
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.retry import Retry

    client = Redis.from_url(
        client_url,
        decode_responses=True,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=SOCKET_TIMEOUT,
        # One immediate retry on a dropped connection (stale after a server
        # restart); never on a timeout, which may have run.
        retry=Retry(NoBackoff(), 1, (RedisConnectionError,)),
    )
    # register_script re-loads a script the server forgot (NOSCRIPT after SCRIPT
    # FLUSH or a restart).
    return client, {name: client.register_script(script_text(name)) for name in SCRIPTS}


#: A call waiting to be sent, and the future of its reply.
Waiting = tuple[Call, asyncio.Future[Any]]


@dataclass
class LoopClient:
    """A redis.asyncio client bound to one event loop, what closes it, and the
    script calls waiting to go out together (see :meth:`LoopClients.batched`)."""

    client: AsyncRedis
    scripts: dict[str, AsyncScript]
    closer: AsyncIterator[None]
    waiting: list[tuple[Call, asyncio.Future[Any]]] = field(default_factory=list)


#: Sends a batch of calls on a loop's client and answers each call's future.
SendBatch = Callable[
    [LoopClient, list[tuple[Call, asyncio.Future[Any]]]], Coroutine[Any, Any, None]
]


async def _close_with_loop(client: AsyncRedis) -> AsyncIterator[None]:
    """An async generator the loop finalizes when it shuts down (``asyncio.run``,
    pytest, IPython call ``shutdown_asyncgens``): it closes the loop's client, so no
    connection outlives its loop."""
    try:
        yield
    finally:
        await client.aclose()


class LoopClients:
    """One redis.asyncio client per event loop (a client cannot change loops)."""

    def __init__(self, client_url: str) -> None:
        self._client_url = client_url
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopClient] = (
            weakref.WeakKeyDictionary()
        )
        # Pipelines being sent (kept referenced until done).
        self._sending: set[asyncio.Task[None]] = set()

    async def get(self) -> tuple[LoopClient, bool]:
        """The running loop's client, and whether it was made just now (on first
        use there)."""
        loop = asyncio.get_running_loop()
        known = self._loops.get(loop)
        if known is not None:
            return known, False
        from redis.asyncio import BlockingConnectionPool
        from redis.asyncio import Redis as AsyncRedis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        # A thousand concurrent calls share a bounded pool and wait their turn for
        # a connection, rather than fail with "Too many connections".
        pool = BlockingConnectionPool.from_url(
            self._client_url,
            max_connections=ASYNC_CONNECTIONS,
            timeout=POOL_WAIT,
            decode_responses=True,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=SOCKET_TIMEOUT,
            retry=Retry(NoBackoff(), 1, (RedisConnectionError,)),
        )
        client = AsyncRedis.from_pool(pool)  # closing the client closes the pool
        closer = _close_with_loop(client)
        await closer.__anext__()
        made = LoopClient(
            client,
            {name: client.register_script(script_text(name)) for name in SCRIPTS},
            closer,
        )
        self._loops[loop] = made
        return made, True

    def batched(self, c: LoopClient, call: Call, send: SendBatch) -> asyncio.Future[Any]:
        """Have ``send`` carry ``call`` with every other call made in this turn of
        the event loop, in one batch; the future of its reply."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        c.waiting.append((call, reply))
        if len(c.waiting) == 1:
            loop.call_soon(self._send_waiting, c, send)
        return reply

    def _send_waiting(self, c: LoopClient, send: SendBatch) -> None:
        batch, c.waiting = c.waiting, []
        task = asyncio.get_running_loop().create_task(send(c, batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)
