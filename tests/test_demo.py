"""``quota-router demo``: a simulated day over four real vendor classes, no network."""

from __future__ import annotations

import io

import pytest

from langchain_quota_router import cli
from langchain_quota_router.cli.demo import DEMO_VENDORS, DemoResult, run_demo, scale_limit, sim_key
from langchain_quota_router.quota.limits import Limit


@pytest.fixture(scope="module")
def demo() -> tuple[DemoResult, str]:
    """One quiet run shared by the assertions below (it takes a few seconds)."""
    out = io.StringIO()
    result = run_demo(quiet=True, out=out)
    return result, out.getvalue()


def test_the_demo_finishes_well_under_a_minute(demo: tuple[DemoResult, str]) -> None:
    result, _ = demo
    assert result.wall_seconds < 30
    assert not result.stopped_early
    assert result.simulated_hours == pytest.approx(14)


def test_every_request_is_served(demo: tuple[DemoResult, str]) -> None:
    result, _ = demo
    assert result.requests > 100
    assert result.failed == 0
    assert result.served == result.requests


def test_calls_land_on_all_four_vendors(demo: tuple[DemoResult, str]) -> None:
    result, _ = demo
    assert result.vendors_used == {"groq", "gemini", "cohere", "openai"}
    assert result.fallbacks > 0


def test_no_429_from_vendors_whose_limits_the_router_knows(demo: tuple[DemoResult, str]) -> None:
    result, _ = demo
    assert result.vendor_429s == {"groq": 0, "gemini": 0, "cohere": 0, "openai": 0}
    # ...because the router did not send what the vendors would have refused.
    assert sum(result.refusals_avoided.values()) > 0
    # What reached the simulator is what the router says it sent, plus the faults.
    for name, calls in result.calls_per_route.items():
        assert result.vendor_requests[name] >= calls


def test_free_tiers_fill_up(demo: tuple[DemoResult, str]) -> None:
    result, _ = demo
    full = {u.pool for u in result.usage if u.remaining == 0}
    assert {"groq", "gemini"} <= full


def test_alerts_tell_when_daily_quotas_fill(demo: tuple[DemoResult, str]) -> None:
    result, _ = demo
    assert result.alerts >= 3


def test_cache_hits_spend_no_quota(demo: tuple[DemoResult, str]) -> None:
    result, _ = demo
    assert result.cache_hits > 0


def test_faults_are_absorbed_by_falling_back(demo: tuple[DemoResult, str]) -> None:
    result, _ = demo
    assert result.faults_injected == 2
    assert result.errors >= 2


def test_the_agent_finishes_its_tasks_with_tools(demo: tuple[DemoResult, str]) -> None:
    result, _ = demo
    assert result.agent_runs >= 3
    assert result.agent_finished == result.agent_runs
    assert result.tool_calls >= result.agent_runs


def test_the_summary_fits_80_columns(demo: tuple[DemoResult, str]) -> None:
    result, text = demo
    assert text.startswith("\nsummary\n")
    for line in text.splitlines():
        assert len(line) <= 80, line
    assert "429s received 0" in text
    assert f"cache hits {result.cache_hits}" in text
    assert "openai" in result.lifespan
    assert "all" in result.lifespan


def test_limits_are_the_catalogs_scaled_and_the_simulator_enforces_the_same() -> None:
    groq = next(v for v in DEMO_VENDORS if v.route == "groq")
    assert [str(limit) for limit in groq.limits] == [
        "30/minute",
        "50/24h",
        "400 tokens/minute",
        "10000 tokens/24h",
    ]
    key = sim_key("k", groq)
    assert (key.rpm, key.rpd, key.tpm, key.tpd) == (30, 50, 400, 10000)
    assert scale_limit(Limit.parse("20/day")) == Limit.parse("20/day")


def test_progress_lines_tell_the_story() -> None:
    out = io.StringIO()
    result = run_demo(out=out)
    text = out.getvalue()
    assert result.failed == 0
    # Told from the answers' own attempts, not guessed: groq's day is full.
    assert "groq -> gemini: groq refused, pool full: 50/50 requests per 24h until" in text
    assert "has used 35 of" not in text
    assert "key disabled (401)" in text or "vendor 401" in text
    # Two turns on one route read as turns, not as a fallback.
    assert "[gemini -> gemini]" not in text
    assert "(turns: " in text
    assert "operator: quota-router enable cohere" in text
    assert "agent:" in text
    assert "alert: groq has used" in text


def test_main_runs_the_demo_quietly(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "summary" in out
    assert "morning" not in out
