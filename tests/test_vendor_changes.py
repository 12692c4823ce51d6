"""When a vendor moves: retired models and revoked keys, over HTTP with the real classes.

The router meets each vendor's own answer to a retired model (through the simulator),
and ``quota-router doctor`` finds the same problems without spending a completion.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
from call_paths import ask
from langchain_cohere import ChatCohere
from langchain_core.language_models import BaseChatModel
from langchain_google_genai import ChatGoogleGenerativeAI
from langchain_groq import ChatGroq
from langchain_openai import ChatOpenAI

from langchain_quota_router import QuotaRoutedChatModel, Route, cli
from langchain_quota_router.cli.doctor import check_router
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.simulator import SimKey, Simulator

VENDORS = ["groq", "gemini", "openai", "cohere"]
CURRENT = {
    "groq": "openai/gpt-oss-120b",
    "gemini": "gemini-3.5-flash",
    "openai": "gpt-4.1-mini",
    "cohere": "command-a-03-2025",
}
RETIRED = {
    "groq": "llama-3.3-70b-versatile",
    "gemini": "gemini-2.5-flash",
    "openai": "gpt-4o-mini",
    "cohere": "command-r",
}
NOON_UTC = dt.datetime(2026, 11, 30, 12, tzinfo=dt.timezone.utc).timestamp()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOON_UTC)


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[Simulator]:
    keys = [SimKey(f"{v}-key", v) for v in VENDORS] + [SimKey(f"{v}-revoked", v) for v in VENDORS]
    models: Any = {v: [CURRENT[v], RETIRED[v]] for v in VENDORS}
    with Simulator(keys, clock=clock, models=models) as simulator:
        for vendor in VENDORS:
            simulator.retire(RETIRED[vendor], vendor=vendor)  # type: ignore[arg-type]
            simulator.disable(f"{vendor}-revoked")
        yield simulator


def vendor_model(sim: Simulator, vendor: str, model: str, key: str) -> BaseChatModel:
    """The vendor's LangChain class, built as a user builds it, pointed at the simulator."""
    if vendor == "groq":
        return ChatGroq(model=model, api_key=key, base_url=sim.groq_base_url)
    if vendor == "openai":
        return ChatOpenAI(model=model, api_key=key, base_url=sim.openai_base_url)
    if vendor == "gemini":
        return ChatGoogleGenerativeAI(model=model, google_api_key=key, base_url=sim.gemini_base_url)
    return ChatCohere(model=model, cohere_api_key=key, base_url=sim.cohere_base_url)


@pytest.mark.parametrize("vendor", VENDORS)
async def test_a_retired_model_costs_one_request_then_is_skipped(
    sim: Simulator, clock: FakeClock, vendor: str, how: str
) -> None:
    key = f"{vendor}-key"
    router = QuotaRoutedChatModel(
        routes=[
            Route(vendor_model(sim, vendor, RETIRED[vendor], key), name="retired"),
            Route(vendor_model(sim, vendor, CURRENT[vendor], key), name="current", priority=1),
        ],
        ledger="memory://",
        cache=False,
        clock=clock,
    )

    routes = [
        (await ask(router, how, f"question {i}")).response_metadata["route"] for i in range(5)
    ]

    assert routes == ["current"] * 5
    assert sim.requests_for_model(RETIRED[vendor], vendor=vendor) == 1  # type: ignore[arg-type]
    assert router.get_stats()["errors_per_route"] == {"retired": 1}


def doctor_router(sim: Simulator, clock: FakeClock, vendor: str) -> QuotaRoutedChatModel:
    return QuotaRoutedChatModel(
        routes=[
            Route(vendor_model(sim, vendor, CURRENT[vendor], f"{vendor}-key"), name="healthy"),
            Route(vendor_model(sim, vendor, RETIRED[vendor], f"{vendor}-key"), name="retired"),
            Route(vendor_model(sim, vendor, CURRENT[vendor], f"{vendor}-revoked"), name="revoked"),
        ],
        ledger="memory://",
        cache=False,
        clock=clock,
    )


@pytest.mark.parametrize("vendor", VENDORS)
def test_doctor_finds_the_retired_model_and_the_revoked_key_without_a_completion(
    sim: Simulator, clock: FakeClock, vendor: str
) -> None:
    router = doctor_router(sim, clock, vendor)

    checks = {c.route: c for c in check_router(router, today=dt.date(2026, 11, 30))}

    assert (checks["healthy"].key, checks["healthy"].model_served) == ("accepted", "served")
    assert checks["healthy"].usable
    assert (checks["retired"].key, checks["retired"].model_served) == ("accepted", "not served")
    assert not checks["retired"].usable
    assert checks["revoked"].key == "rejected"
    assert not checks["revoked"].usable
    assert sim.stats(f"{vendor}-key").received == 0  # no completion was spent


def test_doctor_names_the_successor_and_flags_a_stale_catalog_entry(
    sim: Simulator, clock: FakeClock
) -> None:
    router = doctor_router(sim, clock, "groq")

    checks = {c.route: c for c in check_router(router, today=dt.date(2027, 6, 1))}

    assert "openai/gpt-oss-120b" in checks["retired"].catalog
    assert checks["healthy"].stale
    assert any("days old" in p for p in checks["healthy"].problems)


def test_doctor_reports_learned_limits_that_disagree_with_configured_ones(
    sim: Simulator, clock: FakeClock
) -> None:
    model = vendor_model(sim, "groq", CURRENT["groq"], "groq-key")
    router = QuotaRoutedChatModel(
        routes=[Route(model, name="groq", limits=["30/minute"])],
        ledger="memory://",
        cache=False,
        clock=clock,
    )
    from langchain_quota_router.quota.limits import Limit

    router.ledger_backend.learn("groq", Limit.parse("20/minute"), clock.now())

    (check,) = check_router(router, today=dt.date(2026, 11, 30))

    assert check.learned == ("20/minute (configured: 30/minute)",)


def test_the_doctor_command_prints_a_table_or_json_and_exits_1_when_a_route_is_unusable(
    sim: Simulator,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    router = doctor_router(sim, clock, "openai")
    monkeypatch.setattr(cli, "_load_router", lambda config: router)

    code = cli.main(["doctor"])
    table = capsys.readouterr().out
    json_code = cli.main(["doctor", "--json"])
    data = json.loads(capsys.readouterr().out)

    assert code == json_code == 1
    assert "ROUTE" in table
    assert "revoked" in table
    assert "openai-revoked" not in table  # never the key
    assert {d["route"]: d["usable"] for d in data} == {
        "healthy": True,
        "retired": False,
        "revoked": False,
    }


def test_the_doctor_command_exits_0_when_every_route_is_usable(
    sim: Simulator,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = vendor_model(sim, "cohere", CURRENT["cohere"], "cohere-key")
    router = QuotaRoutedChatModel(
        routes=[Route(model, name="cohere")], ledger="memory://", cache=False, clock=clock
    )
    monkeypatch.setattr(cli, "_load_router", lambda config: router)

    assert cli.main(["doctor"]) == 0
    assert "cohere" in capsys.readouterr().out


@pytest.mark.parametrize("configured", [False, True])
def test_a_limit_the_vendor_states_replaces_the_catalogs_figure_not_a_configured_one(
    sim: Simulator, clock: FakeClock, configured: bool
) -> None:
    # The catalog says Groq allows 1,000 requests a day; this organisation has 500.
    sim.add_key(SimKey("groq-small", "groq", rpd=500))
    limits = {"limits": ["1000/24h"]} if configured else {}
    route = Route(
        "groq:openai/gpt-oss-120b", api_key="groq-small", base_url=sim.groq_base_url, **limits
    )
    router = QuotaRoutedChatModel(routes=[route], ledger="memory://", cache=False, clock=clock)

    router.invoke("hi")

    requests = [str(x) for x in router.pool_limits[route.pool] if x.metric == "requests"]
    if configured:
        assert requests == ["1000/24h"]
        assert router.learned_limits() == []
    else:
        assert "1000/24h" not in requests
        assert "500/24h" in requests
        assert [str(x.limit) for x in router.learned_limits()] == ["500/24h"]


def test_doctor_flags_catalog_prices_older_than_max_age_days(
    sim: Simulator, clock: FakeClock
) -> None:
    def route(name: str, prices: tuple[float, float]) -> Route:
        model = ChatOpenAI(model="gpt-4o-mini", api_key="openai-key", base_url=sim.openai_base_url)
        return Route(model, name=name, prices=prices)

    router = QuotaRoutedChatModel(
        routes=[route("catalog", (0.15, 0.60)), route("own", (0.2, 0.9))],
        ledger="memory://",
        cache=False,
        clock=clock,
    )

    checks = {c.route: c for c in check_router(router, today=dt.date(2026, 11, 30))}

    # The catalog's gpt-4o-mini prices are from the 2025 price list: stale at 90 days.
    assert checks["catalog"].stale_prices
    assert checks["catalog"].prices.startswith("catalog, read 2025-01-01")
    assert any("prices are old" in p for p in checks["catalog"].problems)
    # prices= on the route overrides the catalog: nothing to re-check there.
    assert (checks["own"].prices, checks["own"].stale_prices) == ("configured", False)
    # A generous age limit lets them be.
    later = check_router(router, today=dt.date(2026, 11, 30), max_age_days=1000)
    assert not any(c.stale_prices for c in later)
