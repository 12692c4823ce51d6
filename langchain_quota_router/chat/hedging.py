"""Hedged async calls: when the first route is slow, start the next one too.

``QuotaRoutedChatModel(hedge_after=seconds)``: an async call (``ainvoke``,
``astream``) starts its first admitted route; if that has not answered (or sent its
first token) after ``hedge_after`` seconds of the router's clock, the next admitted
route is started as well, and so on. The first to answer wins; the others are
cancelled and their reservations settled (the request and the prompt's cost stay
counted: the vendor may bill a call it had begun; an answer that arrived anyway is
settled at what it spent). A route that fails is handled as without hedging (cooled
down, blocked, ...), and the next one is started at once.

Synchronous calls are not hedged: a blocked vendor call cannot be cancelled, and a
second thread would leave it running, and billing, behind the caller's back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from langchain_quota_router.quota.clock import Clock

if TYPE_CHECKING:
    from langchain_quota_router.chat.routing import Attempt, RoutedCall

__all__ = ["race"]

T = TypeVar("T")


async def race(
    call: RoutedCall,
    start: Callable[[Attempt], Awaitable[T]],
    settle_loser: Callable[[Attempt, T | None], Awaitable[None]],
    hedge_after: float,
    clock: Clock,
) -> tuple[Attempt, T] | None:
    """Run ``start`` on admitted routes, hedging after ``hedge_after`` seconds.

    Args:
        call: the call's routing state (its admitted attempts, its failures).
        start: what to await on a route until it has answered (``ainvoke``) or sent
            its first token (``astream``).
        settle_loser: settles a route that lost the race (with what its ``start``
            returned, if it finished anyway; ``None`` when it was cancelled).
        hedge_after: seconds before the next route is started too.
        clock: the router's clock (its ``asleep`` times the hedge).

    Returns:
        The winning attempt and what ``start`` returned for it, or ``None`` when no
        route is left (each refused or failed; the caller waits or raises).
    """
    attempts = call.aattempts()
    running: dict[asyncio.Future[T], Attempt] = {}
    hedges: list[Attempt] = []
    winner: Attempt | None = None
    more = True

    async def launch(*, hedge: bool) -> None:
        nonlocal more
        attempt = await anext(attempts, None)
        if attempt is None:
            more = False
            return
        running[asyncio.ensure_future(start(attempt))] = attempt
        if hedge:
            hedges.append(attempt)

    try:
        await launch(hedge=False)
        while running:
            timer = asyncio.ensure_future(clock.asleep(hedge_after)) if more else None
            waiting: set[asyncio.Future[Any]] = set(running)
            if timer is not None:
                waiting.add(timer)
            try:
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if timer is not None and not timer.done():
                    timer.cancel()
            # Failures first: a route that failed as another answered is still
            # handled as failed (cooled down, blocked), not dropped as a loser.
            finished = sorted(
                (task for task in running if task in done),
                key=lambda task: task.cancelled() or task.exception() is None,
            )
            if not finished:
                await launch(hedge=True)  # the first route is slow: start the next too
                continue
            for task in finished:
                attempt = running.pop(task)
                exc = task.exception()
                if exc is None:
                    winner = attempt
                    await _drop(running, settle_loser)
                    return attempt, task.result()
                if not isinstance(exc, Exception):
                    raise exc
                await call.afailed(attempt, exc)  # raises when the error must surface
            if not running and more:
                await launch(hedge=False)
        return None
    finally:
        await _drop(running, settle_loser)
        for attempt in hedges:
            call.stats.hedge(attempt.route.name, won=attempt is winner)


async def _drop(
    running: dict[asyncio.Future[T], Attempt],
    settle_loser: Callable[[Attempt, T | None], Awaitable[None]],
) -> None:
    """Cancel the routes still running and settle each (even while the caller is
    being cancelled)."""
    if not running:
        return
    losers = dict(running)
    running.clear()
    for task in losers:
        task.cancel()
    await asyncio.gather(*losers, return_exceptions=True)
    for task, attempt in losers.items():
        result = None
        if not task.cancelled() and task.exception() is None:
            result = task.result()  # answered just as it lost: settle what it spent
        with contextlib.suppress(Exception):
            await asyncio.shield(asyncio.ensure_future(settle_loser(attempt, result)))
