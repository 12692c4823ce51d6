"""Failing open (``redis://...?on_error=local``): bounded during an outage, handed back after.

``FailOpenLedger`` wraps the Redis ledger and a ledger in this process's memory; the
contract suite (``test_ledger.py``) runs over it too. Here is what only the wrapper
does, on a real ``redis-server`` stopped and started under it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from redis_fixture import start_redis

from langchain_quota_router import LedgerError
from langchain_quota_router._errors import ConfigurationError
from langchain_quota_router.quota.ledger import Demand, Refusal, Reservation, open_ledger
from langchain_quota_router.quota.ledger.failopen import DEFAULT_SHARE, FailOpenLedger
from langchain_quota_router.quota.ledger.memory import MemoryLedger
from langchain_quota_router.quota.ledger.redis import RedisLedger
from langchain_quota_router.quota.limits import Limit

pytestmark = pytest.mark.slow

NOW = 1_800_000_000.0
DAY = [Limit.parse("100/day")]


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _admitted(ledger: Any, n: int, limits: list[Limit] = DAY) -> list[Reservation]:
    results = [ledger.reserve("p", limits, Demand(1, 10, 0), NOW) for _ in range(n)]
    return [r for r in results if isinstance(r, Reservation)]


def test_on_error_local_is_a_wrapper_over_redis(redis_url: str) -> None:
    ledger = open_ledger(f"{redis_url}?on_error=local&retry_interval=2&outage_share=0.25")
    assert isinstance(ledger, FailOpenLedger)
    assert isinstance(ledger.primary, RedisLedger)
    assert isinstance(ledger.fallback, MemoryLedger)
    assert (ledger.retry_interval, ledger.outage_share) == (2.0, 0.25)
    assert isinstance(open_ledger(redis_url), RedisLedger)
    for bad in ("retry_interval=soon", "outage_share=2", "outage_share=nan"):
        with pytest.raises(ConfigurationError, match=bad.split("=")[0]):
            open_ledger(f"{redis_url}?on_error=local&{bad}")
    with pytest.raises(ConfigurationError, match="outage_share goes with on_error=local"):
        open_ledger(f"{redis_url}?outage_share=0.5")


def test_an_outage_admits_a_share_of_the_room_left_and_hands_it_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_redis(tmp_path)
    try:
        url = f"{server.url}?on_error=local&retry_interval=0.05&outage_share=0.5"
        ledger = open_ledger(url)
        observer = RedisLedger(server.url)
        assert len(_admitted(ledger, 60)) == 60  # 40 left, as Redis last said

        server.stop()
        with caplog.at_level(logging.INFO, logger="langchain_quota_router"):
            local = _admitted(ledger, 50)
            # Half of the 40 left: not a fresh quota of 100.
            assert len(local) == 20
            for reservation in local[:15]:
                ledger.settle(reservation, Demand(1, 10, 0), NOW)
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1
            assert "on_error=local" in warnings[0]
            assert "50%" in warnings[0]

            server.start()
            time.sleep(0.06)
            # The first call to reach Redis again hands back what was counted here.
            assert ledger.usage("p", DAY, NOW)[0].used == 60 + 15
            assert any("answers again" in r.getMessage() for r in caplog.records)
        # Calls still open when Redis came back are handed back when they settle.
        for reservation in local[15:]:
            ledger.settle(reservation, Demand(1, 10, 0), NOW)
        assert observer.usage("p", DAY, NOW)[0].used == 80
        assert len(_admitted(ledger, 30)) == 20
    finally:
        server.kill()


def test_the_default_share_is_even_over_the_processes_seen(tmp_path: Path, redis_url: str) -> None:
    # Three other processes (ledgers with their own ids) use the same Redis.
    for _ in range(3):
        assert isinstance(RedisLedger(redis_url).reserve("q", DAY, Demand(), NOW), Reservation)
    server = start_redis(tmp_path)
    try:
        ledger = open_ledger(f"{server.url}?on_error=local&retry_interval=60")
        assert isinstance(ledger, FailOpenLedger)
        assert len(_admitted(ledger, 20)) == 20
        assert isinstance(ledger.primary, RedisLedger)
        assert ledger.primary.fleet_size() == 1
        server.stop()
        assert len(_admitted(ledger, 100)) == 80  # alone: all of the room left
    finally:
        server.kill()
    fleet = FailOpenLedger(RedisLedger(redis_url), retry_interval=60)
    assert len(_admitted(fleet, 20)) == 20
    assert fleet.primary.fleet_size() == 4  # type: ignore[attr-defined]
    fleet.primary.close()
    fleet.primary._client_url = f"redis://127.0.0.1:{_closed_port()}/0"  # type: ignore[attr-defined]
    assert len(_admitted(fleet, 100)) == 80 // 4


def test_redis_never_reachable_admits_a_share_of_each_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = open_ledger(f"redis://127.0.0.1:{_closed_port()}/0?on_error=local")
    with caplog.at_level(logging.WARNING, logger="langchain_quota_router"):
        admitted = _admitted(ledger, 20, [Limit.parse("500/day")])
    assert len(admitted) == 20
    assert len(_admitted(ledger, 100, [Limit.parse("500/day")])) == int(500 * DEFAULT_SHARE) - 20
    assert len(caplog.records) == 1


class _LostReply(RedisLedger):
    """Runs the reserve on the server, then loses the reply, as a timeout does."""

    lose = True

    def reserve(self, *args: Any, **kwargs: Any) -> Reservation | Refusal:
        result = super().reserve(*args, **kwargs)
        if self.lose:
            msg = f"Redis ledger {self.url} could not reserve: TimeoutError: Timeout reading"
            raise LedgerError(msg)
        return result


def test_a_reserve_whose_reply_was_lost_is_never_counted_twice(redis_url: str) -> None:
    primary = _LostReply(redis_url)
    ledger = FailOpenLedger(primary, retry_interval=0.0, outage_share=1.0)
    observer = RedisLedger(redis_url)
    admitted = _admitted(ledger, 1)
    assert len(admitted) == 1  # by the fallback
    assert observer.usage("p", DAY, NOW)[0].used == 1  # the phantom, for now
    ledger.settle(admitted[0], Demand(1, 10, 0), NOW)
    primary.lose = False
    assert ledger.usage("p", DAY, NOW)[0].used == 1  # phantom taken back, local handed in


def test_the_server_counts_a_retried_reserve_once(redis_url: str) -> None:
    ledger = RedisLedger(redis_url)
    first = ledger.reserve("p", DAY, Demand(1, 5, 50), NOW, lease_id="call-1")
    again = ledger.reserve("p", DAY, Demand(1, 5, 50), NOW, lease_id="call-1")
    assert isinstance(first, Reservation)
    assert isinstance(again, Reservation)
    assert ledger.usage("p", DAY, NOW)[0].used == 1
    ledger.settle(first, Demand(1, 5, 5), NOW)
    assert ledger.usage("p", DAY, NOW)[0].used == 1
