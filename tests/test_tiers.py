"""Limits that match the key's tier: the catalog's figures per tier, the tier named
on a route, in the environment or in TOML, and a key of unknown tier held to no
guess before the vendor's own headers have been read."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from call_paths import ask
from langchain_core.exceptions import ModelRateLimitError

from langchain_quota_router import QuotaRoutedChatModel, Route
from langchain_quota_router._errors import ConfigurationError
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.quota.ledger.memory import MemoryLedger
from langchain_quota_router.quota.limits import Limit
from langchain_quota_router.quota.pools import PoolLimits
from langchain_quota_router.simulator import SimKey, Simulator
from langchain_quota_router.vendors.catalog import load_catalog, lookup, tier_limits

PAID = "sk-paid-tier-key-000000000000001"
FREE = "sk-free-tier-key-000000000000002"
PROMPTS = [f"question {i}" for i in range(20)]


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[Simulator]:
    keys = [
        # A key the vendor allows 100 a minute (a paid tier), and one at the free figures.
        SimKey(PAID, "openai", rpm=100, tpm=1_000_000),
        SimKey(FREE, "openai", rpm=3, rpd=200, tpm=40_000),
    ]
    with Simulator(keys, clock=clock) as simulator:
        yield simulator


def openai_router(sim: Simulator, clock: FakeClock, key: str, **route: Any) -> QuotaRoutedChatModel:
    return QuotaRoutedChatModel(
        routes=[Route("openai:gpt-4o-mini", api_key=key, base_url=sim.openai_base_url, **route)],
        ledger="memory://",
        cache=False,
        clock=clock,
    )


def served(outcomes: list[Any]) -> int:
    return sum(not isinstance(o, BaseException) for o in outcomes)


# ------------------------------------------------------------------ the catalog


def test_the_catalog_gives_limits_per_tier() -> None:
    vendor, info = lookup("openai:gpt-4o-mini", warn=False)
    assert tier_limits(vendor, info, "free") == (info.limits, False)
    assert tier_limits(vendor, info, "tier-1") == (
        ("500/minute", "10000/24h", "200000 tokens/minute"),
        False,
    )


@pytest.mark.parametrize("tier", [None, "unknown", "paid", "tier-3"])
def test_a_tier_without_figures_on_record_is_unknown_and_its_limits_provisional(
    tier: str | None,
) -> None:
    vendor, info = lookup("openai:gpt-4o-mini", warn=False)
    assert tier_limits(vendor, info, tier) == (info.limits, True)


def test_a_vendor_whose_keys_are_free_by_default_holds_them_to_the_free_figures() -> None:
    vendor, info = lookup("groq", warn=False)
    assert tier_limits(vendor, info, None) == (info.limits, False)
    assert tier_limits(vendor, info, "paid") == (info.limits, True)


def test_a_tier_the_vendor_does_not_have_is_refused_with_a_suggestion() -> None:
    with pytest.raises(ConfigurationError, match=r"did you mean 'tier-1'\?"):
        Route("openai:gpt-4o-mini", api_key=PAID, tier="tier1")


def test_tier_is_for_catalog_specs_only() -> None:
    from langchain_quota_router.testing import FakeVendorChatModel

    with pytest.raises(ConfigurationError, match="tier"):
        Route(FakeVendorChatModel(script=["hi"]), tier="free")


def test_a_catalog_file_s_tiers_are_checked(tmp_path: Path) -> None:
    file = tmp_path / "catalog.toml"
    file.write_text(
        "schema = 1\n[vendors.acme]\nkind = 'openai'\nenv_prefix = 'ACME'\n"
        "key_env = ['ACME_API_KEY']\npool_scope = 'key'\nper_model = true\n"
        "default_model = 'm'\nsource = 'https://acme.test'\nchecked = 2026-11-28\n"
        "tiers = ['gold']\n"
        "[vendors.acme.models.m]\nlimits = ['1/minute']\ntiers = { silver = ['2/minute'] }\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError, match="'silver' is not one of the vendor's tiers"):
        load_catalog(file)


def test_a_route_names_its_tier(sim: Simulator) -> None:
    free = Route("openai:gpt-4o-mini", api_key=PAID, tier="free")
    tier1 = Route("openai:gpt-4o-mini", api_key=PAID, tier="tier-1")
    unknown = Route("openai:gpt-4o-mini", api_key=PAID)
    assert [str(lim) for lim in free.limits] == ["3/minute", "200/24h", "40000 tokens/minute"]
    assert Limit.parse("500/minute") in tier1.limits
    assert not free.provisional_limits
    assert not tier1.provisional_limits
    assert unknown.provisional_limits
    assert unknown.catalog_limits


# ------------------------------------------------- the environment and TOML


def test_the_tier_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from langchain_quota_router._config import routes_from_env

    env = {"OPENAI_API_KEY_1": PAID, "OPENAI_API_KEY_2": FREE, "OPENAI_TIER_1": "tier-1"}
    first, second = routes_from_env(env, dotenv=None)
    assert Limit.parse("500/minute") in first.limits
    assert not first.provisional_limits
    assert second.provisional_limits  # no tier named: OpenAI's keys may be on any
    env["OPENAI_TIER"] = "free"
    assert not routes_from_env(env, dotenv=None)[1].provisional_limits


def test_a_tier_in_the_environment_that_the_vendor_lacks_names_the_variable() -> None:
    from langchain_quota_router._config import routes_from_env

    with pytest.raises(ConfigurationError, match="OPENAI_TIER: openai has no tier 'gold'"):
        routes_from_env({"OPENAI_API_KEY": PAID, "OPENAI_TIER": "gold"}, dotenv=None)


def test_the_tier_comes_from_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", PAID)
    file = tmp_path / "router.toml"
    file.write_text(
        '[[routes]]\nmodel = "openai:gpt-4o-mini"\ntier = "tier-1"\nledger = "memory://"\n',
        encoding="utf-8",
    )
    file.write_text(
        'ledger = "memory://"\n[[routes]]\nmodel = "openai:gpt-4o-mini"\ntier = "tier-1"\n',
        encoding="utf-8",
    )
    router = QuotaRoutedChatModel.from_config(file, cache=False)
    (route,) = router.routes
    assert isinstance(route, Route)
    assert route.tier == "tier-1"
    assert Limit.parse("500/minute") in route.limits


# ------------------------------------------------ a key of unknown tier, live


def test_a_batch_on_a_paid_key_of_unknown_tier_is_served_whole(
    sim: Simulator, clock: FakeClock
) -> None:
    router = openai_router(sim, clock, PAID)
    outcomes = router.batch(PROMPTS, return_exceptions=True)
    assert served(outcomes) == 20
    assert sim.stats(PAID).refused == 0  # no vendor 429
    (limits,) = router.pool_limits.values()
    assert Limit.parse("100/minute") in limits
    assert Limit.parse("3/minute") not in limits


async def test_an_abatch_on_a_paid_key_of_unknown_tier_is_served_whole(
    sim: Simulator, clock: FakeClock
) -> None:
    router = openai_router(sim, clock, PAID)
    outcomes = await router.abatch(PROMPTS, return_exceptions=True)
    assert served(outcomes) == 20
    assert sim.stats(PAID).refused == 0


@pytest.mark.parametrize("tier", [None, "free"])
async def test_a_batch_on_a_free_key_gets_what_the_free_tier_allows_and_no_429(
    sim: Simulator, clock: FakeClock, tier: str | None
) -> None:
    router = openai_router(sim, clock, FREE, tier=tier)
    outcomes = router.batch(PROMPTS, return_exceptions=True)
    assert served(outcomes) == 3
    assert all(isinstance(o, ModelRateLimitError) for o in outcomes if isinstance(o, Exception))
    clock.advance(61)
    outcomes = await router.abatch(PROMPTS, return_exceptions=True)
    assert served(outcomes) == 3
    assert sim.stats(FREE).refused == 0


async def ask_many(router: QuotaRoutedChatModel, how: str, n: int) -> list[Any]:
    """``n`` calls at once by ``how``: threads for the sync paths, tasks for the
    async ones."""
    if how in ("invoke", "stream"):
        with ThreadPoolExecutor(n) as pool:
            futures = [pool.submit(asyncio.run, ask(router, how, f"q{i}")) for i in range(n)]
            return [f.exception() or f.result() for f in futures]
    return list(
        await asyncio.gather(*(ask(router, how, f"q{i}") for i in range(n)), return_exceptions=True)
    )


async def test_calls_at_once_on_a_key_of_unknown_tier_wait_for_the_first_answer(
    sim: Simulator, clock: FakeClock, how: str
) -> None:
    paid = openai_router(sim, clock, PAID)
    assert served(await ask_many(paid, how, 10)) == 10
    free = openai_router(sim, clock, FREE)
    assert served(await ask_many(free, how, 10)) == 3
    assert sim.stats(PAID).refused == sim.stats(FREE).refused == 0


async def test_a_named_tier_is_enforced_from_the_first_call(
    sim: Simulator, clock: FakeClock, how: str
) -> None:
    router = openai_router(sim, clock, PAID, tier="tier-1")
    assert served(await ask_many(router, how, 10)) == 10
    (limits,) = router.pool_limits.values()
    assert Limit.parse("10000/24h") in limits  # the tier's figure: no header speaks of it


# ------------------------------------------------------- the core, generic


def test_a_probe_lets_one_call_out_and_wakes_the_others() -> None:
    limit = Limit.parse("3/minute")
    pools = PoolLimits(MemoryLedger(), {"p": (limit,)}, {}, {"p": (limit,)})
    mine, probe = pools.take_probe("p", stale_after=30)
    assert mine
    assert probe is not None
    other, same = pools.take_probe("p", stale_after=30)
    assert not other
    assert same is probe
    woke = threading.Event()
    waiter = threading.Thread(target=lambda: probe.done.wait(5) and woke.set())
    waiter.start()
    pools.end_probe("p", probe, tested=True)
    waiter.join(5)
    assert woke.is_set()
    assert pools.take_probe("p", stale_after=30) == (False, None)


def test_a_probe_whose_caller_vanished_is_taken_over() -> None:
    limit = Limit.parse("3/minute")
    pools = PoolLimits(MemoryLedger(), {"p": (limit,)}, {}, {"p": (limit,)})
    _, first = pools.take_probe("p", stale_after=30)
    mine, second = pools.take_probe("p", stale_after=0)
    assert mine
    assert second is not first
    assert first is not None
    assert first.done.is_set()


def test_a_learned_limit_that_agrees_keeps_the_other_provisional_figures() -> None:
    minute, day = Limit.parse("3/minute"), Limit.parse("200/24h")
    pools = PoolLimits(MemoryLedger(), {"p": (minute, day)}, {}, {"p": (minute, day)})
    pools._adopt("p", Limit.parse("2/minute"))
    assert set(pools["p"]) == {day, Limit.parse("2/minute")}
    assert pools.provisional("p") == (day,)
    pools._adopt("p", Limit.parse("100/minute"))  # more than the guessed tier allows
    assert pools["p"] == (Limit.parse("100/minute"),)


def test_configured_limits_are_never_provisional() -> None:
    minute = Limit.parse("3/minute")
    pools = PoolLimits(MemoryLedger(), {"p": (minute,)}, {"p": (minute,)}, {"p": (minute,)})
    assert not pools.untested("p")
