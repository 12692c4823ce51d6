"""The Redis ledger: exact across processes, shared holds, failing closed or open.

The behaviour every backend shares is in ``test_ledger.py``; here is what only a
ledger on a server has: many processes, a server that goes away and comes back,
passwords in URLs, scripts the server forgets. Each test runs on a real
``redis-server`` (see ``redis_fixture.py``).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import logging
import multiprocessing
import random
import threading
import time
from collections.abc import Callable
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import pytest
from redis_fixture import command, start_redis

from langchain_quota_router import LedgerError
from langchain_quota_router._errors import ConfigurationError
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.quota.ledger import Demand, Refusal, Reservation, open_ledger
from langchain_quota_router.quota.ledger.memory import MemoryLedger
from langchain_quota_router.quota.ledger.redis import RedisLedger
from langchain_quota_router.quota.ledger.url import redact_url
from langchain_quota_router.quota.limits import Limit

pytestmark = pytest.mark.slow

NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC: far from any day boundary
DAILY = [Limit.parse("500/day")]
_CTX: Any = multiprocessing.get_context(
    "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
)


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _in_child(target: Callable[..., None], *args: Any) -> Any:
    """Run ``target(queue, *args)`` in another process; return what it puts."""
    queue: Queue[Any] = _CTX.Queue()
    process = _CTX.Process(target=target, args=(queue, *args))
    process.start()
    result = queue.get(timeout=30)
    process.join(timeout=30)
    assert process.exitcode == 0
    return result


# ------------------------------------------------------------------ exactness


def _reserve_many(queue: Queue[int], url: str, threads: int, tries: int) -> None:
    ledger = RedisLedger(url)  # each process its own ledger and connections
    admitted = [0] * threads

    def work(i: int) -> None:
        for _ in range(tries):
            if isinstance(ledger.reserve("shared", DAILY, Demand(), NOW), Reservation):
                admitted[i] += 1

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    queue.put(sum(admitted))


def test_processes_and_threads_admit_exactly_the_limit(redis_url: str) -> None:
    queue: Queue[int] = _CTX.Queue()
    processes = [
        _CTX.Process(target=_reserve_many, args=(queue, redis_url, 16, 12)) for _ in range(4)
    ]
    for p in processes:
        p.start()
    counts = [queue.get(timeout=60) for _ in processes]
    for p in processes:
        p.join(timeout=30)
        assert p.exitcode == 0
    # 4 x 16 x 12 = 768 tries for 500 places.
    assert sum(counts) == 500
    [usage] = RedisLedger(redis_url).usage("shared", DAILY, NOW)
    assert usage.used == 500


def test_a_forked_child_reuses_the_parents_ledger(redis_url: str) -> None:
    if _CTX.get_start_method() != "fork":
        pytest.skip("needs fork()")
    ledger = RedisLedger(redis_url)
    assert isinstance(ledger.reserve("p", DAILY, Demand(), NOW), Reservation)

    def child(queue: Queue[Any]) -> None:
        # The parent's pooled connection must not be shared: redis-py sees the
        # new pid and opens its own.
        queue.put(isinstance(ledger.reserve("p", DAILY, Demand(), NOW), Reservation))

    assert _in_child(child) is True
    assert ledger.usage("p", DAILY, NOW)[0].used == 2


def test_large_amounts_are_counted_exactly(redis_url: str) -> None:
    # Lua prints numbers above 1e14 in exponent form; amounts must go as strings.
    ledger = RedisLedger(redis_url)
    big = [Limit.parse("9000000000000000 tokens/once")]
    demand = Demand(input_tokens=10**15 + 1)
    reservation = ledger.reserve("p", big, demand, NOW)
    assert isinstance(reservation, Reservation)
    ledger.settle(reservation, Demand(input_tokens=3 * 10**15 + 7), NOW)
    ledger.observe("p", big[0], 10**15, NOW)
    assert ledger.usage("p", big, NOW)[0].used == 8 * 10**15


# ------------------------------------------------------------- the same as memory


def _unleased(result: Reservation | Refusal) -> Reservation | Refusal:
    if isinstance(result, Reservation):
        return dataclasses.replace(result, lease_id="", expires_at=None)
    return result


def test_matches_the_memory_ledger_on_a_random_run(redis_url: str) -> None:
    limits = [
        Limit.parse(text)
        for text in (
            "4/minute",
            "6/90s",
            "600 tokens/minute",
            "400 input tokens/minute",
            "20/day@America/Los_Angeles",
            "15/month",
            "3000 tokens/once",
            "5/minute",
        )
    ]
    memory, redis_ledger = MemoryLedger(), RedisLedger(redis_url)
    rng = random.Random(7)
    now = NOW
    open_reservations: list[tuple[Reservation, Reservation]] = []
    for step in range(600):
        now += rng.choice([0.0, 0.3, 1.0, 7.5, 31.0, 3600.0 * rng.random()])
        pool = rng.choice(["a", "b"])
        chosen = rng.sample(limits, rng.randint(1, 4))
        op = rng.random()
        if op < 0.6:
            demand = Demand(1, rng.randint(0, 150), rng.randint(0, 100))
            key = rng.choice([None, "k1", "k2"])
            got = redis_ledger.reserve(pool, chosen, demand, now, key=key)
            want = memory.reserve(pool, chosen, demand, now, key=key)
            # Redis leases every reservation (its id dedups a retried reserve);
            # the others only those with an output estimate to give back.
            assert _unleased(got) == _unleased(want), step
            if isinstance(got, Reservation) and isinstance(want, Reservation):
                open_reservations.append((got, want))
        elif op < 0.75 and open_reservations:
            got_r, want_r = open_reservations.pop(rng.randrange(len(open_reservations)))
            real = Demand(rng.randint(0, 1), rng.randint(0, 300), rng.randint(0, 200))
            redis_ledger.settle(got_r, real, now)
            memory.settle(want_r, real, now)
        elif op < 0.82:
            limit = rng.choice(chosen)
            remaining = rng.randint(-2, limit.amount + 5)
            redis_ledger.observe(pool, limit, remaining, now)
            memory.observe(pool, limit, remaining, now)
        elif op < 0.86:
            until = now + rng.choice([-5.0, 0.0, 12.5, 100.0])
            redis_ledger.block(pool, until, f"blocked at {step}")
            memory.block(pool, until, f"blocked at {step}")
        elif op < 0.89:
            redis_ledger.unblock(pool)
            memory.unblock(pool)
        elif op < 0.92:
            redis_ledger.disable("k1", "401 | bad key")
            memory.disable("k1", "401 | bad key")
        elif op < 0.95:
            redis_ledger.enable("k1")
            memory.enable("k1")
        elif op < 0.97:
            redis_ledger.reset(pool)
            memory.reset(pool)
        assert redis_ledger.usage(pool, limits, now) == memory.usage(pool, limits, now), step
        assert redis_ledger.holds(now) == sorted(memory.holds(now), key=lambda h: h.subject), step


# ------------------------------------------------------------------ shared holds


def _report_holds(queue: Queue[Any], url: str) -> None:
    ledger = RedisLedger(url)
    queue.put(
        (
            [h.subject for h in ledger.holds(NOW)],
            ledger.reserve("groq", DAILY, Demand(), NOW),
            ledger.reserve("gemini", DAILY, Demand(), NOW, key="k-bad"),
        )
    )


def test_holds_are_seen_by_every_ledger_and_process(redis_url: str) -> None:
    one, two = RedisLedger(redis_url), RedisLedger(redis_url)
    one.block("groq", NOW + 60, "429: retry after 60 s")
    two.disable("k-bad", "401: invalid key")

    assert two.reserve("groq", DAILY, Demand(), NOW) == Refusal(
        "groq", "429: retry after 60 s", NOW + 60
    )
    assert one.reserve("gemini", DAILY, Demand(), NOW, key="k-bad") == Refusal(
        "gemini", "401: invalid key", None
    )
    assert one.holds(NOW) == two.holds(NOW)

    subjects, groq, gemini = _in_child(_report_holds, redis_url)
    assert subjects == ["key:k-bad", "pool:groq"]
    assert groq == Refusal("groq", "429: retry after 60 s", NOW + 60)
    assert gemini == Refusal("gemini", "401: invalid key", None)

    two.unblock("groq")
    one.enable("k-bad")
    subjects, groq, gemini = _in_child(_report_holds, redis_url)
    assert subjects == []
    assert isinstance(groq, Reservation)
    assert isinstance(gemini, Reservation)


# --------------------------------------------------------------------- failures


def test_fail_closed_raises_and_keeps_what_was_committed(tmp_path: Path) -> None:
    server = start_redis(tmp_path)
    try:
        ledger = RedisLedger(server.url)
        limits = [Limit.parse("1000/day")]
        admitted = [0] * 4
        errors: list[LedgerError] = []
        crash = threading.Event()

        def work(i: int) -> None:
            try:
                while True:
                    if isinstance(ledger.reserve("p", limits, Demand(), NOW), Reservation):
                        admitted[i] += 1
                    if sum(admitted) >= 100:
                        crash.set()
            except LedgerError as exc:
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for w in workers:
            w.start()
        assert crash.wait(10)
        server.kill()  # a crash in the middle of the run, not a clean shutdown
        for w in workers:
            w.join(10)
        assert len(errors) == 4
        message = str(errors[0])
        assert f"Redis ledger {server.url} could not reserve in pool 'p'" in message
        assert "Connection" in message

        server.restart()  # same port, same append-only file
        before = sum(admitted)
        used = ledger.usage("p", limits, NOW)[0].used
        # A script that ran just before the crash may have lost only its reply:
        # counted, not admitted. Never the reverse.
        assert before <= used <= before + 4
        after = 0
        while isinstance(ledger.reserve("p", limits, Demand(), NOW), Reservation):
            after += 1
        assert before + after <= 1000
        assert ledger.usage("p", limits, NOW)[0].used == 1000
    finally:
        server.kill()


def test_an_unreachable_redis_fails_fast_and_clearly() -> None:
    ledger = RedisLedger(f"redis://127.0.0.1:{_closed_port()}/0")
    started = time.monotonic()
    with pytest.raises(LedgerError, match=r"Redis ledger redis://127\.0\.0\.1:\d+/0"):
        ledger.reserve("p", DAILY, Demand(), NOW)
    for call in (
        lambda: ledger.settle(
            Reservation("p", Demand(), (("requests:day@UTC", 1, "requests"),), NOW),
            Demand(2),
            NOW,
        ),
        lambda: ledger.usage("p", DAILY, NOW),
        lambda: ledger.holds(NOW),
        lambda: ledger.block("p", NOW + 1, "x"),
        lambda: ledger.reset("p"),
    ):
        with pytest.raises(LedgerError):
            call()
    assert time.monotonic() - started < 2


# --------------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    "template",
    [
        "redis://:s3cr3t-pw@127.0.0.1:{port}/0",
        "redis://admin:s3cr3t-pw@127.0.0.1:{port}/0?on_error=raise",
        "redis://127.0.0.1:{port}/0?password=s3cr3t-pw",
    ],
)
def test_passwords_never_show(template: str) -> None:
    url = template.format(port=_closed_port())
    ledger = RedisLedger(url)
    assert "s3cr3t" not in repr(ledger)
    assert "s3cr3t" not in ledger.url
    assert "127.0.0.1" in repr(ledger)
    with pytest.raises(LedgerError) as caught:
        ledger.reserve("p", DAILY, Demand(), NOW)
    assert "s3cr3t" not in str(caught.value)
    assert "***" in str(caught.value)


def test_passwords_never_show_with_a_real_server(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_redis(tmp_path, "--requirepass", "s3cr3t-pw")
    try:
        good = RedisLedger(server.url.replace("//", "//:s3cr3t-pw@"))
        assert isinstance(good.reserve("p", DAILY, Demand(), NOW), Reservation)
        wrong = RedisLedger(server.url.replace("//", "//:s3cr3t-pX@"))
        with pytest.raises(LedgerError) as caught:
            wrong.reserve("p", DAILY, Demand(), NOW)
        assert "s3cr3t" not in str(caught.value)
        assert "Authentication" in str(caught.value)
        failing_open = open_ledger(server.url.replace("//", "//:s3cr3t-pX@") + "?on_error=local")
        with caplog.at_level(logging.WARNING, logger="langchain_quota_router"):
            failing_open.reserve("p", DAILY, Demand(), NOW)
        assert caplog.records
        assert all("s3cr3t" not in r.getMessage() for r in caplog.records)
    finally:
        server.kill()


def test_redact_url() -> None:
    assert redact_url("rediss://u:p@h:1/2?password=p&x=1") == (
        "rediss://***@h:1/2?password=***&x=1"
    )
    assert redact_url("redis://h") == "redis://h"


# ------------------------------------------------------------------- scripts


def test_scripts_survive_script_flush(redis_url: str, redis_server: Any) -> None:
    ledger = RedisLedger(redis_url)
    assert isinstance(ledger.reserve("p", DAILY, Demand(), NOW), Reservation)
    assert command(redis_server.port, "SCRIPT", "FLUSH") == b"+OK"
    assert isinstance(ledger.reserve("p", DAILY, Demand(), NOW), Reservation)
    ledger.reset("p")
    assert ledger.usage("p", DAILY, NOW)[0].used == 0


def test_scripts_survive_a_server_restart(tmp_path: Path) -> None:
    server = start_redis(tmp_path)
    try:
        ledger = RedisLedger(server.url)
        assert isinstance(ledger.reserve("p", DAILY, Demand(), NOW), Reservation)
        server.restart()
        assert isinstance(ledger.reserve("p", DAILY, Demand(), NOW), Reservation)
        assert ledger.usage("p", DAILY, NOW)[0].used == 2
    finally:
        server.kill()


def test_scripts_ship_as_package_data() -> None:
    folder = importlib.resources.files("langchain_quota_router.quota.ledger.redis") / "lua"
    for name in ("_leases", "reserve", "settle", "observe", "usage", "reset"):
        assert "redis.call" in (folder / f"{name}.lua").read_text(encoding="utf-8")


# ---------------------------------------------------------------- keys and URLs


def _keys(port: int) -> dict[str, int]:
    import redis

    client = redis.Redis(port=port, decode_responses=True)
    try:
        return {str(key): client.pttl(key) for key in client.keys("*")}
    finally:
        client.close()


def test_keys_are_namespaced_and_expire(redis_url: str, redis_server: Any) -> None:
    ledger = RedisLedger(f"{redis_url}?prefix=app1:")
    other = RedisLedger(f"{redis_url}?prefix=app2:")
    limits = [Limit.parse(s) for s in ("3/minute", "9/day", "99 tokens/once")]
    assert isinstance(ledger.reserve("g:llama", limits, Demand(1, 5, 5), time.time()), Reservation)
    assert other.usage("g:llama", limits, time.time())[0].used == 0
    keys = _keys(redis_server.port)
    assert set(keys) == {
        "app1:counts:g:llama:requests:s60",
        "app1:counts:g:llama:requests:day@UTC",
        "app1:counts:g:llama:tokens:once",
        "app1:pool:g:llama",
        "app1:leases:g:llama",
        "app1:lease:g:llama",
        "app1:clients",
        "app1:clock",  # the fleet clock's reference: a few bytes, kept
        "app2:clock",
    }
    assert 60_000 < keys["app1:counts:g:llama:requests:s60"] <= 121_000
    assert 60_000 < keys["app1:counts:g:llama:requests:day@UTC"] <= 86_460_000
    assert keys["app1:counts:g:llama:tokens:once"] == -1
    # Lease keys live as long as a lease can (15 min) and a margin; not forever.
    assert 900_000 < keys["app1:leases:g:llama"] <= 961_000
    assert keys["app1:clients"] > 0

    ledger.reset("g:llama")
    assert set(_keys(redis_server.port)) == {"app1:clients", "app1:clock", "app2:clock"}


def test_old_buckets_are_pruned_on_reserve(redis_url: str, redis_server: Any) -> None:
    ledger = RedisLedger(redis_url)
    minute = [Limit.parse("1000/minute")]
    for second in range(0, 600, 5):
        ledger.reserve("p", minute, Demand(), NOW + second)
    import redis

    client = redis.Redis(port=redis_server.port, decode_responses=True)
    try:
        buckets = client.hkeys("qr:counts:p:requests:s60")
    finally:
        client.close()
    # One bucket per 5 s, only those of the last minute (plus the one at its edge).
    assert len(buckets) <= 13


def test_url_options_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="on_error"):
        RedisLedger("redis://127.0.0.1:6379/0?on_error=maybe")
    with pytest.raises(ConfigurationError, match="retry_interval"):
        RedisLedger("redis://127.0.0.1:6379/0?retry_interval=soon")
    with pytest.raises(ConfigurationError, match=r"\*\*\*"):
        RedisLedger("redis://:s3cr3t@127.0.0.1:6379/0?on_error=maybe")
    with pytest.raises(ConfigurationError, match="socket_timeout"):
        RedisLedger("redis://127.0.0.1:6379/0?socket_timeout=never")


def test_open_ledger_knows_both_schemes(redis_url: str) -> None:
    ledger = open_ledger(redis_url)
    assert isinstance(ledger, RedisLedger)
    assert isinstance(open_ledger("rediss://h:6380/0"), RedisLedger)


# ------------------------------------------------------------------ durability


def test_counts_survive_kill_9_and_a_restart_with_the_append_only_file(
    tmp_path: Path,
) -> None:
    server = start_redis(tmp_path, "--appendfsync", "always")
    try:
        ledger = RedisLedger(server.url)
        day = [Limit.parse("100/day")]
        admitted = [ledger.reserve("p", day, Demand(1, 5, 50), NOW) for _ in range(60)]
        assert all(isinstance(r, Reservation) for r in admitted)
        first = admitted[0]
        assert isinstance(first, Reservation)
        server.kill()  # SIGKILL: no shutdown save
        server.start()
        assert ledger.usage("p", day, NOW)[0].used == 60
        # The leases survived too: the restart does not free a killed call's estimate.
        ledger.settle(first, Demand(1, 5, 5), NOW)
        assert (
            sum(isinstance(ledger.reserve("p", day, Demand(), NOW), Reservation) for _ in range(50))
            == 40
        )
    finally:
        server.kill()


def test_a_server_that_forgets_on_restart_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_redis(tmp_path, "--appendonly", "no")
    try:
        with caplog.at_level(logging.WARNING, logger="langchain_quota_router"):
            ledger = RedisLedger(server.url)
            ledger.reserve("p", DAILY, Demand(), NOW)
            ledger.reserve("p", DAILY, Demand(), NOW)
        assert ledger.durable is False
        [warning] = [r.getMessage() for r in caplog.records]
        assert "appendonly no" in warning
        assert "appendonly yes, appendfsync everysec" in warning
    finally:
        server.kill()


def test_a_server_with_the_append_only_file_is_not_warned_about(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="langchain_quota_router"):
        ledger = RedisLedger(redis_url)
        ledger.reserve("p", DAILY, Demand(), NOW)
    assert ledger.durable is True
    assert caplog.records == []


def test_a_server_that_refuses_config_is_not_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_redis(tmp_path, "--rename-command", "CONFIG", "")
    try:
        with caplog.at_level(logging.WARNING, logger="langchain_quota_router"):
            ledger = RedisLedger(server.url)
            assert isinstance(ledger.reserve("p", DAILY, Demand(), NOW), Reservation)
        assert ledger.durable is None
        assert caplog.records == []
    finally:
        server.kill()


def test_two_routers_whose_clocks_differ_by_5s_admit_exactly_the_limit_together(
    redis_url: str, clock: FakeClock
) -> None:
    behind = FakeClock(clock.now() - 5)
    first = RedisLedger(redis_url, clock=clock.now)
    second = RedisLedger(redis_url, clock=behind.now)
    minute = [Limit.parse("30/minute")]
    admitted = 0
    for _ in range(60):  # a minute: each tries once a second
        for ledger, own in ((first, clock), (second, behind)):
            made = ledger.reserve("p", minute, Demand(), own.now())
            admitted += isinstance(made, Reservation)
        clock.advance(1)
        behind.advance(1)
    assert admitted == 30
    # Both read the same count, and the window frees for both at the same moment.
    assert first.usage("p", minute, clock.now())[0].used == 30
    assert second.usage("p", minute, behind.now())[0].used == 30
    refusal = second.reserve("p", minute, Demand(), behind.now())
    assert isinstance(refusal, Refusal)
    assert refusal.retry_at is not None
    assert refusal.retry_at - behind.now() == pytest.approx(1, abs=1)


def test_the_fleet_clock_is_the_clock_of_the_first_ledger_to_connect(
    redis_url: str, clock: FakeClock
) -> None:
    first = RedisLedger(redis_url, clock=clock.now)
    first.usage("p", DAILY, clock.now())
    later = RedisLedger(redis_url, clock=lambda: clock.now() + 3600)
    assert later.clock_offset() == -3600
    assert RedisLedger(redis_url, clock=clock.now).clock_offset() == 0
