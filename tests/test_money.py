"""Dollar limits: written like the other limits, counted in micro-dollars, reserved
before a call at its estimated cost and settled to what it really cost."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from call_paths import ask
from support.routers import router

from langchain_quota_router import (
    ConfigurationError,
    Limit,
    QuotaExhaustedError,
    QuotaRoutedChatModel,
    Route,
    Window,
)
from langchain_quota_router.chat.routing import usage_demand
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.quota.ledger import Demand, Ledger, Reservation
from langchain_quota_router.quota.pricing import Prices, micro_dollars
from langchain_quota_router.testing import FakeVendorChatModel

# ------------------------------------------------------------------ writing them


@pytest.mark.parametrize(
    ("text", "dollars", "units", "shown"),
    [
        ("$5/month", 5, 5_000_000, "$5/month"),
        ("$0.50/day", 0.5, 500_000, "$0.50/day"),
        ("$20/once", 20, 20_000_000, "$20/once"),
        ("5 usd/month", 5, 5_000_000, "$5/month"),
        ("$0.005/day@America/Los_Angeles", 0.005, 5_000, "$0.005/day@America/Los_Angeles"),
        ("$1/minute", 1, 1_000_000, "$1/minute"),
        ("$2.5/24h", 2.5, 2_500_000, "$2.50/24h"),
        ("$1,000/month", 1000, 1_000_000_000, "$1000/month"),
    ],
)
def test_dollar_limit_strings_read_as_dollars(
    text: str, dollars: float, units: int, shown: str
) -> None:
    limit = Limit.parse(text)
    assert (limit.metric, limit.amount, limit.units, str(limit)) == ("usd", dollars, units, shown)
    assert Limit.parse(str(limit)) == limit


def test_a_limit_object_in_usd_means_dollars() -> None:
    month = Window("calendar", unit="month")
    assert Limit(5, "usd", month).units == 5_000_000
    assert Limit(0.5, "usd", month) == Limit.parse("$0.50/month")


@pytest.mark.parametrize(
    "text", ["$5 tokens/day", "3.5/day", "$0.0000001/day", "$-5/day", "$/day", "$nan/day"]
)
def test_bad_dollar_limits_are_refused_naming_them(text: str) -> None:
    with pytest.raises(ConfigurationError, match="limit"):
        Limit.parse(text)


def test_prices_count_in_micro_dollars_rounding_up() -> None:
    prices = Prices(0.15, 0.60)
    assert prices.cost(1000, 0) == 150  # $0.00015
    assert prices.cost(1, 1) == 1  # 0.75 micro-dollars, never rounded down to nothing
    assert Prices(1.0, 2.0, 0.1).cost(1000, 10, cached_tokens=900) == 100 + 90 + 20
    assert micro_dollars(0.003) == 3000
    assert micro_dollars(float("nan")) == 0


# -------------------------------------------------------------------- the ledger


def test_a_dollar_budget_admits_only_calls_it_can_pay_for(ledger: Ledger, clock: FakeClock) -> None:
    budget = [Limit.parse("$0.005/day")]
    first = ledger.reserve("p", budget, Demand(1, 0, 0, 3000), clock.now())
    assert isinstance(first, Reservation)
    second = ledger.reserve("p", budget, Demand(1, 0, 0, 3000), clock.now())
    assert not isinstance(second, Reservation)
    assert "$0.005/day is used up ($0.003 counted)" in second.reason
    (usage,) = ledger.usage("p", budget, clock.now())
    assert (usage.used, usage.limit.shown(usage.used), usage.percent) == (3000, 0.003, 60.0)


def test_settling_replaces_the_estimated_cost_with_the_real_one(
    ledger: Ledger, clock: FakeClock
) -> None:
    budget = [Limit.parse("$0.005/day")]
    made = ledger.reserve("p", budget, Demand(1, 10, 100, 3000), clock.now())
    assert isinstance(made, Reservation)
    ledger.settle(made, Demand(1, 10, 5, 1200), clock.now())
    assert ledger.usage("p", budget, clock.now())[0].used == 1200
    again = ledger.reserve("p", budget, Demand(1, 0, 0, 3000), clock.now())
    assert isinstance(again, Reservation)  # 1200 + 3000 fits in 5000


def test_a_lease_that_runs_out_keeps_the_estimated_cost(ledger: Ledger, clock: FakeClock) -> None:
    limits = [Limit.parse("$0.005/day"), Limit.parse("1000 tokens/day")]
    made = ledger.reserve("p", limits, Demand(1, 10, 100, 3000), clock.now())
    assert isinstance(made, Reservation)
    clock.advance(ledger.reservation_lease + 1)
    money, tokens = ledger.usage("p", limits, clock.now())
    # The unspent output estimate comes back; the money stays counted (the vendor
    # may have billed a call whose process died).
    assert (money.used, tokens.used) == (3000, 10)
    ledger.settle(made, Demand(1, 10, 5, 1000), clock.now())
    money, tokens = ledger.usage("p", limits, clock.now())
    assert (money.used, tokens.used) == (1000, 15)


@pytest.mark.parametrize(
    "text",
    ["$0.005/minute", "$0.005/90s", "$0.005/24h", "$0.005/day@Asia/Tokyo", "$0.005/month"],
)
def test_every_window_kind_holds_a_dollar_budget(
    ledger: Ledger, clock: FakeClock, text: str
) -> None:
    budget = [Limit.parse(text)]
    assert isinstance(ledger.reserve("p", budget, Demand(1, 0, 0, 3000), clock.now()), Reservation)
    assert not isinstance(
        ledger.reserve("p", budget, Demand(1, 0, 0, 3000), clock.now()), Reservation
    )
    clock.advance(32 * 86_400)  # past any of these windows
    assert isinstance(ledger.reserve("p", budget, Demand(1, 0, 0, 3000), clock.now()), Reservation)


# ------------------------------------------------------------------- the router


def _priced(name: str = "paid", *, prices: tuple[float, ...] = (1.0, 2.0), **kw: object) -> Route:
    fake = FakeVendorChatModel(
        **{k: v for k, v in kw.items() if k in ("reported_cost", "cached_tokens")}
    )
    limits = kw.get("limits", ["$1/day"])
    return Route(fake, name=name, prices=prices, limits=limits, pool=kw.get("pool"))  # type: ignore[arg-type]


async def test_a_call_settles_to_tokens_times_prices(clock: FakeClock, how: str) -> None:
    llm = router(clock, _priced())
    answer = await ask(llm, how, "what does a call cost?")
    usage = answer.usage_metadata
    assert usage is not None
    expected = Prices(1.0, 2.0).cost(usage["input_tokens"], usage["output_tokens"])
    (row,) = llm.usage()
    assert row.used == expected
    assert answer.response_metadata["cost"] == pytest.approx(expected / 1e6)


async def test_streamed_calls_cost_what_unstreamed_calls_cost(clock: FakeClock, how: str) -> None:
    reference = router(FakeClock(), _priced())
    reference.invoke("the same question")
    llm = router(clock, _priced())
    await ask(llm, how, "the same question")
    assert llm.usage()[0].used == reference.usage()[0].used > 0


async def test_the_vendors_reported_cost_wins_over_tokens_times_prices(
    clock: FakeClock, how: str
) -> None:
    llm = router(clock, _priced(reported_cost=0.0042))
    answer = await ask(llm, how)
    assert llm.usage()[0].used == 4200
    assert answer.response_metadata["cost"] == pytest.approx(0.0042)


async def test_cached_prompt_tokens_cost_the_cached_price(clock: FakeClock, how: str) -> None:
    llm = router(clock, _priced(prices=(1.0, 0.0, 0.25), cached_tokens=4))
    answer = await ask(llm, how, "a prompt long enough to be cached in part")
    usage = answer.usage_metadata
    assert usage is not None
    assert llm.usage()[0].used == (usage["input_tokens"] - 4) * 1 + 1  # 4 x 0.25 = 1


async def test_a_half_cent_budget_admits_exactly_one_call_of_three_tenths(
    clock: FakeClock, how: str
) -> None:
    # Estimated at $0.003 (100 output tokens x $30/M) and billed $0.003.
    route = _priced(prices=(0.0, 30.0), reported_cost=0.003, limits=["$0.005/day"])
    llm = router(clock, route, max_tokens=100)
    await ask(llm, how)
    with pytest.raises(QuotaExhaustedError, match=r"\$0.005/day"):
        await ask(llm, how)
    assert route.model.calls == 1  # type: ignore[attr-defined]
    assert llm.usage()[0].used == 3000


async def test_a_call_is_refused_before_it_is_sent_when_its_estimate_does_not_fit(
    clock: FakeClock, how: str
) -> None:
    paid = _priced(prices=(0.0, 30.0), limits=["$0.002/day"])
    free = Route(FakeVendorChatModel(), name="free", prices=(0.0, 0.0), priority=1)
    llm = router(clock, paid, free, max_tokens=100)  # $0.003 estimated > $0.002
    answer = await ask(llm, how)
    assert answer.response_metadata["route"] == "free"
    assert paid.model.calls == 0  # type: ignore[attr-defined]


async def test_a_pool_budget_counts_every_route_that_spends_it(clock: FakeClock, how: str) -> None:
    one = _priced(
        "one", prices=(0.0, 30.0), reported_cost=0.003, limits=["$0.005/day"], pool="acct"
    )
    two = _priced(
        "two", prices=(0.0, 30.0), reported_cost=0.003, limits=["$0.005/day"], pool="acct"
    )
    llm = router(clock, one, two, max_tokens=100)
    await ask(llm, how)
    with pytest.raises(QuotaExhaustedError):
        await ask(llm, how)


def test_a_timed_out_call_keeps_its_estimated_cost(clock: FakeClock) -> None:
    failing = FakeVendorChatModel(script=[TimeoutError("read timed out")])
    paid = Route(failing, name="paid", prices=(0.0, 30.0), limits=["$1/day"])
    free = Route(FakeVendorChatModel(), name="free", prices=(0.0, 0.0), priority=1)
    llm = router(clock, paid, free, max_tokens=100)
    llm.invoke("hi")
    assert next(u for u in llm.usage() if u.pool == "paid").used == 3000


def test_a_route_with_a_dollar_limit_and_no_prices_is_a_configuration_error(
    clock: FakeClock,
) -> None:
    with pytest.raises(ConfigurationError, match=r"route 'mystery'.*\$5/month.*prices"):
        router(clock, Route(FakeVendorChatModel(), name="mystery", limits=["$5/month"]))
    # A route sharing a budgeted pool needs prices too.
    priced = Route(FakeVendorChatModel(), name="a", pool="acct", prices=(1, 1), limits=["$5/month"])
    unpriced = Route(FakeVendorChatModel(), name="b", pool="acct")
    with pytest.raises(ConfigurationError, match="route 'b'"):
        router(clock, priced, unpriced)


def test_usage_usage_shows_dollar_limits_in_dollars(clock: FakeClock) -> None:
    from langchain_quota_router.quota.status import read_status

    llm = router(clock, _priced(reported_cost=0.25, limits=["$1/day"]))
    llm.invoke("hi")
    (row,) = read_status(llm).limits
    assert (row.metric, row.used, row.amount, row.remaining, row.percent) == (
        "usd",
        0.25,
        1,
        0.75,
        25.0,
    )
    assert row.limit == "$1/day"


def test_alerts_fire_on_dollar_limits(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    llm = router(clock, _priced(reported_cost=0.008, limits=["$0.01/day"]))
    with caplog.at_level(logging.WARNING, logger="langchain_quota_router"):
        llm.invoke("hi")
    assert "has used 80% of $0.01/day (0.008 of 0.01)" in caplog.text


def test_usage_demand_reads_the_reported_cost_only_from_a_priced_route() -> None:
    from langchain_core.messages import AIMessage

    message = AIMessage(
        "x",
        usage_metadata={"input_tokens": 10, "output_tokens": 2, "total_tokens": 12},
        response_metadata={"token_usage": {"cost": 0.5}},
    )
    assert usage_demand(message, 0) == Demand(1, 10, 2, 0)
    assert usage_demand(message, 0, _priced()).usd == 500_000


# ---------------------------------------------------------- environment and files


def test_dollar_limits_and_prices_from_the_environment() -> None:
    llm = QuotaRoutedChatModel.from_env(
        {
            "OPENAI_API_KEY_0": "sk-test-0123456789abcdef0123",
            "OPENAI_MAX_USD_PER_MONTH_0": "5",
            "OPENAI_MAX_USD_PER_DAY": "0.50",
            "OPENAI_PRICES_0": "0.2,0.8,0.1",
        },
        dotenv=None,
        ledger="memory://",
        cache=False,
    )
    (route,) = llm.routes
    assert {str(lim) for lim in route.limits if lim.metric == "usd"} == {"$5/month", "$0.50/day"}
    assert route.pricing == Prices(0.2, 0.8, 0.1)


def test_a_bad_dollar_variable_names_itself() -> None:
    with pytest.raises(ConfigurationError, match="OPENAI_MAX_USD_PER_DAY"):
        QuotaRoutedChatModel.from_env(
            {"OPENAI_API_KEY": "sk-test-0123456789abcdef0123", "OPENAI_MAX_USD_PER_DAY": "lots"},
            dotenv=None,
            ledger="memory://",
        )


def test_dollar_limits_from_a_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "router.toml"
    monkeypatch.setenv("MY_OPENAI", "sk-test-0123456789abcdef0123")
    path.write_text(
        """
ledger = "memory://"
cache = false

[[routes]]
model = "openai:gpt-4o-mini"
api_key_env = "MY_OPENAI"
limits = ["$5/month", "$0.50/day", "3/minute"]
prices = [0.15, 0.60, 0.075]
""",
        encoding="utf-8",
    )
    llm = QuotaRoutedChatModel.from_config(path)
    (route,) = llm.routes
    assert [str(lim) for lim in route.limits] == ["$5/month", "$0.50/day", "3/minute"]
    assert route.pricing == Prices(0.15, 0.60, 0.075)


# ---------------------------------------------------------------- seeing the spend


def test_spend_per_route_and_pool_in_stats_and_metrics(clock: FakeClock) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from langchain_quota_router import metrics

    one = _priced("one", reported_cost=0.25, limits=["$1/day"], pool="acct")
    two = _priced("two", reported_cost=0.5, limits=["$1/day"], pool="acct")
    llm = router(clock, one, two)
    llm.invoke("a", preferred="one")
    llm.invoke("b", preferred="two")
    fleet = llm.get_stats()["fleet"]
    assert (fleet["routes"]["one"]["cost"], fleet["routes"]["two"]["cost"]) == (0.25, 0.5)
    assert fleet["pools"]["acct"]["cost"] == 0.75
    assert fleet["cost"] == 0.75

    registry = CollectorRegistry(auto_describe=True)
    metrics.register(llm, registry)
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    assert found["quota_router_cost_usd_total", (("pool", "acct"), ("route", "one"))] == 0.25
    assert found["quota_router_cost_usd_total", (("pool", "acct"), ("route", "two"))] == 0.5
    limit = (("limit", "$1/day"), ("metric", "usd"), ("pool", "acct"), ("window", "day"))
    assert found["quota_router_limit_used", limit] == 0.75
    assert found["quota_router_limit_amount", limit] == 1


def test_status_report_page_and_history_show_dollars(clock: FakeClock) -> None:
    from langchain_quota_router.cli._report import report_data, report_text, status_text
    from langchain_quota_router.quota.status import status_snapshot
    from langchain_quota_router.web.page import render_page

    llm = router(clock, _priced(reported_cost=0.25, limits=["$1/day"]))
    llm.invoke("hi")
    clock.advance(120)
    assert "$0.25/$1.00 usd/day" in status_text(llm)
    report = report_text(report_data(llm))
    assert "$1/day" in report
    assert "$0.25" in report
    assert "$0.75" in report
    page = render_page(status_snapshot(llm), history=llm.history())
    assert "$0.25 / $1 used · $0.75 left" in page
    (last,) = [row for row in llm.history() if row["limit"] == "$1/day"][-1:]
    assert (last["metric"], last["used"], last["amount"], last["percent"]) == (
        "usd",
        0.25,
        1,
        25.0,
    )
