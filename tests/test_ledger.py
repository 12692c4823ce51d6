"""The ledger contract: every backend (memory, SQLite, Redis) and the fail-open
wrapper pass these tests."""

from __future__ import annotations

import threading

import pytest

from langchain_quota_router import Limit
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.quota.ledger import Demand, Ledger, Refusal, Reservation
from langchain_quota_router.quota.ledger.memory import MemoryLedger

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a Thursday
ONE = Demand(1, 0, 0)


def limits(*texts: str) -> list[Limit]:
    return [Limit.parse(t) for t in texts]


def admitted(ledger: Ledger, pool: str, lims: list[Limit], n: int, now: float) -> int:
    return sum(isinstance(ledger.reserve(pool, lims, ONE, now), Reservation) for _ in range(n))


def test_admits_up_to_the_limit_then_refuses_with_when(ledger: Ledger) -> None:
    lims = limits("3/minute")
    assert admitted(ledger, "p", lims, 5, T0) == 3
    refusal = ledger.reserve("p", lims, ONE, T0 + 10)
    assert isinstance(refusal, Refusal)
    assert "3/minute" in refusal.reason
    assert refusal.retry_at == pytest.approx(T0 + 61)


def test_sliding_minute_never_admits_twice_the_limit_across_a_boundary(
    ledger: Ledger,
) -> None:
    lims = limits("10/minute")
    assert admitted(ledger, "p", lims, 10, T0 + 55) == 10
    # A fixed-window counter would reset at T0+60 and admit 10 more.
    assert admitted(ledger, "p", lims, 10, T0 + 61) == 0
    assert admitted(ledger, "p", lims, 10, T0 + 114) == 0
    assert admitted(ledger, "p", lims, 10, T0 + 116.5) == 10


def test_rolling_window_frees_what_left_it(ledger: Ledger) -> None:
    lims = limits("4/24h")
    assert admitted(ledger, "p", lims, 2, T0) == 2
    assert admitted(ledger, "p", lims, 2, T0 + 12 * 3600) == 2
    assert admitted(ledger, "p", lims, 1, T0 + 23 * 3600) == 0
    # The first two leave the window a day (plus one bucket) after they came.
    assert admitted(ledger, "p", lims, 3, T0 + 24 * 3600 + 1500) == 2


def test_calendar_day_resets_at_utc_midnight(ledger: Ledger) -> None:
    lims = limits("2/day")
    assert admitted(ledger, "p", lims, 3, T0 + 23.9 * 3600) == 2
    refusal = ledger.reserve("p", lims, ONE, T0 + 23.95 * 3600)
    assert isinstance(refusal, Refusal)
    assert refusal.retry_at == T0 + 86_400
    assert admitted(ledger, "p", lims, 3, T0 + 86_400) == 2


def test_day_in_a_zone_resets_at_that_zones_midnight(ledger: Ledger) -> None:
    lims = limits("1/day@America/Los_Angeles")
    # 2026-01-01 07:00 UTC is still Dec 31 in California (UTC-8).
    assert admitted(ledger, "p", lims, 2, T0 + 7 * 3600) == 1
    assert admitted(ledger, "p", lims, 1, T0 + 7.9 * 3600) == 0
    assert admitted(ledger, "p", lims, 1, T0 + 8 * 3600) == 1


def test_month_resets_on_the_first(ledger: Ledger) -> None:
    lims = limits("2/month")
    assert admitted(ledger, "p", lims, 3, T0 + 30 * 86_400) == 2  # Jan 31
    assert admitted(ledger, "p", lims, 1, T0 + 31 * 86_400) == 1  # Feb 1


def test_one_time_credit_never_resets(ledger: Ledger) -> None:
    lims = limits("100 tokens/once")
    res = ledger.reserve("p", lims, Demand(1, 60, 30), T0)
    assert isinstance(res, Reservation)
    ledger.settle(res, Demand(1, 60, 30), T0 + 1)
    refusal = ledger.reserve("p", lims, Demand(1, 10, 10), T0 + 400 * 86_400)
    assert isinstance(refusal, Refusal)
    assert refusal.retry_at is None


def test_demand_larger_than_a_limit_is_refused_for_good(ledger: Ledger) -> None:
    refusal = ledger.reserve("p", limits("100 tokens/minute"), Demand(1, 80, 40), T0)
    assert isinstance(refusal, Refusal)
    assert refusal.retry_at is None
    assert "more than 100 tokens/minute allows" in refusal.reason


def test_token_kinds_count_what_they_say(ledger: Ledger) -> None:
    lims = limits("100 tokens/minute", "50 input tokens/minute")
    assert isinstance(ledger.reserve("p", lims, Demand(1, 40, 50), T0), Reservation)
    used = {u.limit.metric: u.used for u in ledger.usage("p", lims, T0)}
    assert used == {"tokens": 90, "input_tokens": 40}
    # 20 more input tokens would break the input limit though total tokens fit.
    assert isinstance(ledger.reserve("p", lims, Demand(1, 20, 0), T0), Refusal)


def test_refusal_counts_nothing_anywhere(ledger: Ledger) -> None:
    lims = limits("10/minute", "100 tokens/minute")
    ledger.reserve("p", lims, Demand(1, 90, 0), T0)
    assert isinstance(ledger.reserve("p", lims, Demand(1, 20, 0), T0), Refusal)
    used = [u.used for u in ledger.usage("p", lims, T0)]
    assert used == [1, 90]


def test_settle_replaces_the_estimate_with_real_usage(ledger: Ledger) -> None:
    lims = limits("1000 tokens/minute", "5/minute")
    res = ledger.reserve("p", lims, Demand(1, 100, 400), T0)
    assert isinstance(res, Reservation)
    ledger.settle(res, Demand(1, 100, 20), T0 + 1)
    assert [u.used for u in ledger.usage("p", lims, T0 + 1)] == [120, 1]
    res2 = ledger.reserve("p", lims, Demand(1, 10, 10), T0 + 2)
    assert isinstance(res2, Reservation)
    ledger.settle(res2, Demand(1, 10, 900), T0 + 3)  # more than estimated: counted
    assert ledger.usage("p", lims, T0 + 3)[0].used == 1030


def test_observe_lowers_room_to_what_the_vendor_says_but_never_raises_it(
    ledger: Ledger,
) -> None:
    lim = Limit.parse("100/day")
    ledger.reserve("p", [lim], ONE, T0)
    ledger.observe("p", lim, 10, T0 + 1)
    assert ledger.usage("p", [lim], T0 + 1)[0].remaining == 10
    ledger.observe("p", lim, 50, T0 + 2)
    assert ledger.usage("p", [lim], T0 + 2)[0].remaining == 10
    assert admitted(ledger, "p", [lim], 20, T0 + 3) == 10


def test_block_refuses_until_it_ends(ledger: Ledger) -> None:
    lims = limits("100/minute")
    ledger.block("p", T0 + 30, "rate_limit: slow down")
    refusal = ledger.reserve("p", lims, ONE, T0 + 10)
    assert isinstance(refusal, Refusal)
    assert refusal.reason == "rate_limit: slow down"
    assert refusal.retry_at == T0 + 30
    assert [h.subject for h in ledger.holds(T0 + 10)] == ["pool:p"]
    assert isinstance(ledger.reserve("p", lims, ONE, T0 + 30), Reservation)
    assert ledger.holds(T0 + 30) == []


def test_unblock_lifts_a_block(ledger: Ledger) -> None:
    ledger.block("p", T0 + 3600, "cooling down")
    ledger.unblock("p")
    assert isinstance(ledger.reserve("p", [], ONE, T0), Reservation)


def test_disabled_key_is_refused_until_enabled(ledger: Ledger) -> None:
    ledger.disable("groq-key-1", "disabled: bad key")
    refusal = ledger.reserve("p", [], ONE, T0 + 10**6, key="groq-key-1")
    assert isinstance(refusal, Refusal)
    assert refusal.retry_at is None
    # Other keys on the same pool are unaffected.
    assert isinstance(ledger.reserve("p", [], ONE, T0, key="groq-key-2"), Reservation)
    ledger.enable("groq-key-1")
    assert isinstance(ledger.reserve("p", [], ONE, T0, key="groq-key-1"), Reservation)


def test_reset_forgets_a_pool_and_lifts_its_block(ledger: Ledger) -> None:
    lims = limits("1/day")
    ledger.reserve("p", lims, ONE, T0)
    ledger.reserve("q", lims, ONE, T0)
    ledger.block("p", T0 + 3600, "x")
    ledger.reset("p")
    assert isinstance(ledger.reserve("p", lims, ONE, T0), Reservation)
    assert isinstance(ledger.reserve("q", lims, ONE, T0), Refusal)


def test_usage_reports_used_remaining_percent_and_reset(ledger: Ledger) -> None:
    lims = limits("4/day", "10/minute")
    admitted(ledger, "p", lims, 3, T0 + 100)
    day, minute = ledger.usage("p", lims, T0 + 100)
    assert (day.used, day.remaining, day.percent) == (3, 1, 75.0)
    assert day.resets_at == T0 + 86_400
    assert minute.resets_at == pytest.approx(T0 + 161)
    assert ledger.usage("empty", lims, T0)[1].resets_at is not None


def test_pools_are_independent(ledger: Ledger) -> None:
    lims = limits("1/minute")
    assert admitted(ledger, "a", lims, 2, T0) == 1
    assert admitted(ledger, "b", lims, 2, T0) == 1


def test_a_hundred_threads_admit_exactly_the_limit(ledger: Ledger) -> None:
    lims = limits("300/day", "100000 tokens/minute")
    counts: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        n = sum(
            isinstance(ledger.reserve("p", lims, Demand(1, 5, 5), T0), Reservation)
            for _ in range(6)
        )
        with lock:
            counts.append(n)

    threads = [threading.Thread(target=worker) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 300
    assert ledger.usage("p", lims, T0)[1].used == 3000


# ----------------------------------------------------------------------- leases


def test_an_unsettled_reservation_gives_back_its_output_estimate_when_its_lease_runs_out(
    ledger: Ledger,
) -> None:
    ledger.reservation_lease = 60.0
    lims = limits("1000 tokens/day", "10/day", "500 output tokens/day")
    res = ledger.reserve("p", lims, Demand(1, 100, 400), T0)
    assert isinstance(res, Reservation)
    assert res.expires_at == T0 + 60
    assert [u.used for u in ledger.usage("p", lims, T0 + 59)] == [500, 1, 400]
    # Its process died: the request and the prompt stay counted, the output goes.
    assert [u.used for u in ledger.usage("p", lims, T0 + 60)] == [100, 1, 0]
    assert [u.used for u in ledger.usage("p", lims, T0 + 3600)] == [100, 1, 0]


def test_the_next_reserve_on_the_pool_releases_overdue_leases(ledger: Ledger) -> None:
    ledger.reservation_lease = 60.0
    lims = limits("1000 tokens/day")
    assert isinstance(ledger.reserve("p", lims, Demand(1, 100, 800), T0), Reservation)
    assert isinstance(ledger.reserve("p", lims, Demand(1, 100, 800), T0 + 30), Refusal)
    # Another pool's leases are its own business.
    assert isinstance(ledger.reserve("q", lims, Demand(1, 0, 10), T0 + 61), Reservation)
    assert isinstance(ledger.reserve("p", lims, Demand(1, 100, 800), T0 + 61), Reservation)
    assert ledger.usage("p", lims, T0 + 62)[0].used == 1000


def test_a_settle_after_the_lease_ran_out_counts_real_usage_once(ledger: Ledger) -> None:
    ledger.reservation_lease = 60.0
    lims = limits("1000 tokens/day", "10/day")
    late = ledger.reserve("p", lims, Demand(1, 100, 400), T0)
    on_time = ledger.reserve("p", lims, Demand(1, 10, 40), T0)
    assert isinstance(late, Reservation)
    assert isinstance(on_time, Reservation)
    ledger.settle(on_time, Demand(1, 10, 5), T0 + 10)
    assert [u.used for u in ledger.usage("p", lims, T0 + 61)] == [100 + 15, 2]
    # A slow answer after all: its real spend is counted, nothing released twice.
    ledger.settle(late, Demand(1, 100, 50), T0 + 70)
    assert [u.used for u in ledger.usage("p", lims, T0 + 3600)] == [150 + 15, 2]


def test_record_counts_what_another_ledger_admitted_without_checking_room(
    ledger: Ledger,
) -> None:
    lims = limits("2/day", "100 tokens/day")
    elsewhere = MemoryLedger().reserve("p", lims, Demand(1, 10, 10), T0)
    assert isinstance(elsewhere, Reservation)
    for _ in range(3):
        ledger.record(elsewhere, Demand(1, 30, 20), T0 + 1)
    assert [u.used for u in ledger.usage("p", lims, T0 + 2)] == [3, 150]
    assert isinstance(ledger.reserve("p", lims, ONE, T0 + 2), Refusal)


@pytest.mark.parametrize("step_back", [2, 30, 3600])
def test_a_clock_that_steps_back_never_frees_quota(
    ledger: Ledger, clock: FakeClock, step_back: int
) -> None:
    lims = limits("30/minute")
    assert admitted(ledger, "p", lims, 20, clock.now()) == 20
    clock.advance(-step_back)
    # The 20 calls are stamped "later" than now: they still count.
    assert admitted(ledger, "p", lims, 30, clock.now()) == 10
    assert ledger.usage("p", lims, clock.now())[0].used == 30


def test_a_calendar_day_stepped_back_into_yesterday_keeps_todays_spend(
    ledger: Ledger, clock: FakeClock
) -> None:
    lims = limits("10/day")
    clock.set(T0 + 10)  # ten seconds into 2026-01-01
    assert admitted(ledger, "p", lims, 10, clock.now()) == 10
    clock.advance(-60)  # back into 2025-12-31
    assert admitted(ledger, "p", lims, 5, clock.now()) == 0


@pytest.mark.parametrize("seed", range(5))
def test_the_memory_ledgers_running_window_totals_match_a_full_count(seed: int) -> None:
    """The memory ledger keeps each window's total as it goes (reserves, settles
    that give back, the window sliding, the clock stepping back, old buckets
    pruned); whatever the order, usage equals adding the buckets up afresh."""
    import random

    rng = random.Random(seed)
    ledger = MemoryLedger()
    ledger.prune_interval = 5.0
    lims = limits("100000/minute", "10000000 tokens/minute")
    now = T0
    open_ones: list[Reservation] = []
    for _ in range(600):
        now += rng.choice([0.0, 0.3, 1.0, 2.5, 7.0, 61.0, -1.0, -20.0])
        made = ledger.reserve("p", lims, Demand(1, rng.randint(0, 50), 40), now)
        assert isinstance(made, Reservation)
        open_ones.append(made)
        if rng.random() < 0.6:
            done = open_ones.pop(rng.randrange(len(open_ones)))
            ledger.settle(done, Demand(1, done.demand.input_tokens, rng.randint(0, 60)), now)
        for limit, usage in zip(lims, ledger.usage("p", lims, now), strict=True):
            lo = limit.window.bucket_range(now)[0]
            buckets = ledger._counters.get(("p", limit.series), {})
            assert usage.used == sum(v for b, v in buckets.items() if b >= lo)
