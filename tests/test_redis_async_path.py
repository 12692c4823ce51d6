"""The Redis ledger's async path: no thread, settlements riding the next pipeline,
one shared read per interval, and nothing counted lost or counted twice."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from typing import Any

import pytest

from langchain_quota_router.quota.ledger import Demand, Ledger, Reservation, open_ledger
from langchain_quota_router.quota.limits import Limit

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
ESTIMATE = Demand(1, 40, 500)
SPENT = Demand(1, 10, 20)  # gives 510 tokens back, keeps less than the prompt's 40
LIMS = [Limit.parse("100000/minute"), Limit.parse("1000000 tokens/minute")]


def used(ledger: Ledger, now: float = T0) -> list[int]:
    return [u.used for u in ledger.usage("p", LIMS, now)]


def no_worker_thread(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make the ledger's worker thread fail, and note the threads pipelines leave
    from."""
    threads: list[str] = []
    send = ledger._apipeline  # type: ignore[attr-defined]

    def refuse() -> Any:
        msg = "the async path used the worker thread"
        raise AssertionError(msg)

    async def noted(c: Any, calls: Any) -> Any:
        threads.append(threading.current_thread().name)
        return await send(c, calls)

    monkeypatch.setattr(ledger, "_worker", refuse)
    monkeypatch.setattr(ledger, "_apipeline", noted)
    return threads


def counted_pipelines(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    trips: list[list[str]] = []
    send = ledger._apipeline  # type: ignore[attr-defined]

    async def counted(c: Any, calls: Any) -> Any:
        trips.append([call.script for call in calls])
        return await send(c, calls)

    monkeypatch.setattr(ledger, "_apipeline", counted)
    return trips


async def test_a_settlement_giving_room_back_is_sent_by_the_loop_without_a_thread(
    make_ledger: Callable[[str], Ledger], monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger, other = make_ledger("redis"), make_ledger("redis")
    made = await ledger.areserve("p", LIMS, ESTIMATE, T0)
    assert isinstance(made, Reservation)
    threads = no_worker_thread(ledger, monkeypatch)
    await ledger.asettle(made, SPENT, T0)
    for _ in range(100):  # no reserve follows: the loop's timer sends it
        await asyncio.sleep(0.005)
        if used(other) == [1, 30]:
            break
    assert used(other) == [1, 30]
    assert threads == [threading.current_thread().name]


async def test_settlements_ride_the_next_pipeline(
    make_ledger: Callable[[str], Ledger], monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = make_ledger("redis")
    made = [await ledger.areserve("p", LIMS, ESTIMATE, T0) for _ in range(3)]
    trips = counted_pipelines(ledger, monkeypatch)
    for m in made:
        assert isinstance(m, Reservation)
        await ledger.asettle(m, SPENT, T0)
    again = await ledger.areserve("p", LIMS, ESTIMATE, T0)
    assert isinstance(again, Reservation)
    assert trips == [["settle", "settle", "settle", "reserve"]]
    assert used(ledger) == [4, 3 * 30 + 540]


async def test_a_settlement_that_adds_goes_out_with_the_turns_reserves(
    make_ledger: Callable[[str], Ledger], monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger, other = make_ledger("redis"), make_ledger("redis")
    made = await ledger.areserve("p", LIMS, ESTIMATE, T0)
    assert isinstance(made, Reservation)
    trips = counted_pipelines(ledger, monkeypatch)
    await asyncio.gather(
        ledger.asettle(made, Demand(1, 10, 900), T0),  # spent more than estimated
        *(ledger.areserve("p", LIMS, ESTIMATE, T0) for _ in range(5)),
    )
    assert trips == [["settle"] + ["reserve"] * 5]
    # Awaited: written before asettle returned.
    assert used(other) == [6, 910 + 5 * 540]


async def test_the_holds_are_read_once_for_a_hundred_callers(
    make_ledger: Callable[[str], Ledger], monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = make_ledger("redis")
    await ledger.areserve("p", LIMS, ESTIMATE, T0)  # connects, reads the fleet clock
    reads: list[str] = []
    remote = ledger._aremote  # type: ignore[attr-defined]

    async def counted(operation: str, call: Any) -> Any:
        reads.append(operation)
        return await remote(operation, call)

    monkeypatch.setattr(ledger, "_aremote", counted)
    ledger.full_pools.synced_at = float("-inf")  # the sync is due
    ledger._offset_due = float("-inf")  # type: ignore[attr-defined]  # and the clock's
    made = await asyncio.gather(*(ledger.areserve("p", LIMS, ESTIMATE, T0) for _ in range(100)))
    assert all(isinstance(m, Reservation) for m in made)
    assert sorted(reads) == ["read holds", "read the fleet clock"]


async def test_a_deferred_settlement_is_in_what_this_process_reads(
    make_ledger: Callable[[str], Ledger], monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = make_ledger("redis")
    made = await ledger.areserve("p", LIMS, ESTIMATE, T0)
    assert isinstance(made, Reservation)
    threads = no_worker_thread(ledger, monkeypatch)
    await ledger.asettle(made, SPENT, T0)
    assert [u.used for u in await ledger.ausage("p", LIMS, T0)] == [1, 30]
    assert len(threads) == 1  # the read carried the settlement
    made = await ledger.areserve("p", LIMS, ESTIMATE, T0)
    assert isinstance(made, Reservation)
    await ledger.asettle(made, SPENT, T0)
    assert used(ledger) == [2, 60]  # the sync read sends it first too


def test_a_settlement_queued_when_the_loop_ends_is_sent(redis_url: str) -> None:
    ledger, other = open_ledger(redis_url), open_ledger(redis_url)

    async def main() -> None:
        made = await ledger.areserve("p", LIMS, ESTIMATE, T0)
        assert isinstance(made, Reservation)
        await ledger.asettle(made, SPENT, T0)  # queued; the loop ends at once

    asyncio.run(main())
    assert ledger._queued == []  # type: ignore[attr-defined]
    assert used(other) == [1, 30]
    ledger.close()
    other.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
async def test_a_forked_child_does_not_send_its_parents_settlements_again(
    make_ledger: Callable[[str], Ledger],
) -> None:
    ledger = make_ledger("redis")
    made = [await ledger.areserve("p", LIMS, ESTIMATE, T0) for _ in range(2)]
    for m in made:
        assert isinstance(m, Reservation)
        await ledger.asettle(m, SPENT, T0)  # queued, not sent yet
    assert _closed_in_a_forked_child(ledger) == 0
    assert used(ledger) == [2, 60]  # given back once, by the parent


def _closed_in_a_forked_child(ledger: Ledger) -> int:
    """Fork; the child closes ``ledger`` (sending what it queued); its exit code."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            ledger.close()
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_calls_are_packed_as_redis_py_packs_them() -> None:
    from redis.asyncio.connection import Connection

    from langchain_quota_router.quota.ledger.redis.scripts import Call, pack, sha

    calls = [
        Call("reserve", ["qr:holds", "qr:counts:pöol:tokens:s60"], ["1.5", 0, -480, "", 10**15]),
        Call("settle", [], ["x" * 70_000]),
    ]
    theirs = Connection().pack_commands(
        [("EVALSHA", sha(c.script), len(c.keys), *c.keys, *c.args) for c in calls]
    )
    assert pack(calls) == b"".join(theirs)


def test_what_reserves_on_a_pool_send_alike_is_worked_out_once(
    make_ledger: Callable[[str], Ledger],
) -> None:
    ledger: Any = make_ledger("redis")
    first, *_ = ledger._reserve_call("p", LIMS, ESTIMATE, T0, None, None, None)
    second, *_ = ledger._reserve_call("p", LIMS, SPENT, T0 + 90, "k", None, None)
    assert second.keys is first.keys
    other, *_ = ledger._reserve_call("q", LIMS, ESTIMATE, T0, None, None, None)
    assert other.keys is not first.keys
    assert other.keys[-1] == "qr:counts:q:" + LIMS[1].series


async def test_a_settlement_its_lease_would_undo_is_sent_before_asettle_returns(
    make_ledger: Callable[[str], Ledger],
) -> None:
    # 60 tokens spent of 540 reserved gives room back, but the lease would keep
    # only the prompt (40) were this process killed before it landed: not queued.
    ledger, other = make_ledger("redis"), make_ledger("redis")
    made = await ledger.areserve("p", LIMS, ESTIMATE, T0)
    assert isinstance(made, Reservation)
    await ledger.asettle(made, Demand(1, 40, 20), T0)
    assert ledger._queued == []  # type: ignore[attr-defined]
    assert used(other) == [1, 60]
