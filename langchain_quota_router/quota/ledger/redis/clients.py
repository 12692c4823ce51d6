"""The Redis ledger's clients: one for threads, one per event loop for the async API,
and the batching of script calls on each loop's client.

Calls made in one turn of an event loop go out together, in one pipeline (and one
round trip): under load, calls share round trips instead of each paying its own.
Settlements that only give room back wait for the next such pipeline, or for a
timer of :data:`SETTLE_DELAY` seconds on the loop when none goes out.
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
#: Seconds a queued settlement waits for a pipeline to ride before one is sent for
#: it: the longest a pool looks fuller than it is because of this process.
SETTLE_DELAY = 0.002


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
    #: Whether a send of ``waiting`` is scheduled for the end of this turn.
    scheduled: bool = False
    #: The settle timer, while armed: a send for queued settlements, if no other
    #: send carries them first.
    timer: asyncio.TimerHandle | None = None
    #: The reads every caller on this loop shares while one is out (by name: the
    #: holds, the fleet clock): one round trip per interval, not one per caller.
    shared_reads: dict[str, asyncio.Future[Any]] = field(default_factory=dict)


#: Sends a batch of calls on a loop's client and answers each call's future.
SendBatch = Callable[
    [LoopClient, list[tuple[Call, asyncio.Future[Any]]]], Coroutine[Any, Any, None]
]


async def _close_with_loop(client: AsyncRedis, before: Callable[[], None]) -> AsyncIterator[None]:
    """An async generator the loop finalizes when it shuts down (``asyncio.run``,
    pytest, IPython call ``shutdown_asyncgens``): it runs ``before`` (sends what is
    queued) and closes the loop's client, so no connection outlives its loop."""
    try:
        yield
    finally:
        try:
            # Synchronous: the loop's pool no longer runs async generators now.
            before()
        finally:
            await client.aclose()


class LoopClients:
    """One redis.asyncio client per event loop (a client cannot change loops)."""

    def __init__(self, client_url: str, before_close: Callable[[], None]) -> None:
        self._client_url = client_url
        self._before_close = before_close
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
        made = LoopClient(
            client,
            {name: client.register_script(script_text(name)) for name in SCRIPTS},
            _close_with_loop(client, self._before_close),
        )
        await made.closer.__anext__()
        self._loops[loop] = made
        return made, True

    def forget(self) -> None:
        """Drop every loop's client without closing it: in a forked child, whose
        sockets are the parent's."""
        self._loops = weakref.WeakKeyDictionary()
        self._sending = set()

    def batched(self, c: LoopClient, call: Call, send: SendBatch) -> asyncio.Future[Any]:
        """Have ``send`` carry ``call`` with every other call made in this turn of
        the event loop, in one batch; the future of its reply."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        c.waiting.append((call, reply))
        if not c.scheduled:
            c.scheduled = True
            loop.call_soon(self._send_waiting, c, send)
        return reply

    def send_later(self, c: LoopClient, send: SendBatch, delay: float) -> None:
        """Have ``send`` go out in ``delay`` seconds with whatever is waiting then
        (perhaps nothing but what it carries), unless a send is already scheduled."""
        if not c.scheduled and c.timer is None:
            c.timer = asyncio.get_running_loop().call_later(delay, self._send_waiting, c, send)

    def _send_waiting(self, c: LoopClient, send: SendBatch) -> None:
        batch, c.waiting = c.waiting, []
        c.scheduled = False
        if c.timer is not None:  # this send carries what the timer was for
            c.timer.cancel()
            c.timer = None
        task = asyncio.get_running_loop().create_task(send(c, batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def shared(
        self, c: LoopClient, name: str, read: Callable[[], Coroutine[Any, Any, Any]]
    ) -> Any:
        """``read()``'s answer, shared by every caller on this loop who asks while
        it is out: one round trip for all of them."""
        out = c.shared_reads.get(name)
        if out is None:
            out = asyncio.ensure_future(read())
            c.shared_reads[name] = out
            out.add_done_callback(lambda _: c.shared_reads.pop(name, None))
        return await asyncio.shield(out)
