"""Quota alerts and usage judge a pool by the limits it is held to now, and say so
honestly when a count is over a limit (issue 18: "100% of 3/minute (9 of 3)")."""

from __future__ import annotations

import json
import logging

import pytest
from call_paths import ask
from support.vendors import HeaderFake, openai_headers, start

from langchain_quota_router import QuotaRoutedChatModel, Route, cli
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.quota.limits import Limit
from langchain_quota_router.quota.status import read_status, status_snapshot
from langchain_quota_router.quota.watch import AlertTracker
from langchain_quota_router.simulator import SimKey, Simulator
from langchain_quota_router.testing import FakeVendorChatModel
from langchain_quota_router.web.page import render_page

PAID = "sk-paid-tier-key-000000000000001"


def routed(clock: FakeClock, vendor: HeaderFake) -> QuotaRoutedChatModel:
    backup = FakeVendorChatModel(model="backup", script=["from backup"])
    return QuotaRoutedChatModel(
        routes=[
            Route(vendor, name="vendor", priority=0),
            Route(backup, name="backup", priority=1),
        ],
        ledger="memory://",
        cache=False,
        clock=clock,
    )


def alerts_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("quota alert")]


async def test_calls_out_when_a_larger_limit_is_learned_alert_on_that_limit_only(
    clock: FakeClock, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The vendor first states 3/minute; three calls go out under it, and the first
    # to answer says the key allows 100/minute. Six more calls then go out under
    # 100/minute: 9 in the minute, of 100. The two calls still out were admitted
    # under 3/minute, which the pool is no longer held to.
    vendor = HeaderFake(
        model="m",
        provider="openai",
        headers=[openai_headers(3, 2), *(openai_headers(100, 100 - n) for n in range(1, 10))],
    )
    llm = routed(clock, vendor)
    await ask(llm, how)
    assert [str(x.limit) for x in llm.learned_limits()] == ["3/minute"]
    clock.advance(61)

    caplog.set_level(logging.WARNING, logger="langchain_quota_router")
    holds, calls = [], []
    for i in range(3):  # one after the other: the i-th is counted i-th
        holds.append(vendor.hold_next())
        calls.append(start(llm, how, f"held {i}"))
        await holds[-1].wait_reached()
    holds[0].release()
    assert (await calls[0]).response_metadata["route"] == "vendor"
    assert [str(x.limit) for x in llm.learned_limits()] == ["100/minute"]
    for i in range(6):
        assert (await ask(llm, how, f"more {i}")).response_metadata["route"] == "vendor"
    for hold, call in zip(holds[1:], calls[1:], strict=True):
        hold.release()
        assert (await call).response_metadata["route"] == "vendor"

    assert alerts_in(caplog) == []
    assert [(str(u.limit), u.used, u.percent) for u in llm.usage() if u.pool == "vendor"] == [
        ("100/minute", 9, 9.0)
    ]


def test_the_catalog_free_figure_is_not_alerted_on_once_the_vendor_says_more(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    # As reported: an OpenAI key held to the catalog's free-tier 3/minute (named
    # "free", or before tiers existed) that the vendor allows 100/minute. Three
    # streams are open under 3/minute when the first answer teaches 100/minute.
    with Simulator([SimKey(PAID, "openai", rpm=100, tpm=1_000_000)], clock=clock) as sim:
        route = Route("openai:gpt-4o-mini", api_key=PAID, base_url=sim.openai_base_url, tier="free")
        llm = QuotaRoutedChatModel(routes=[route], ledger="memory://", cache=False, clock=clock)
        assert "3/minute" in [str(lim) for lim in llm.pool_limits[route.pool]]
        caplog.set_level(logging.WARNING, logger="langchain_quota_router")
        streams = [llm.stream(f"q{i}") for i in range(3)]
        for stream in streams:
            next(stream)  # admitted, under 3/minute
        list(streams[0])
        assert "100/minute" in [str(lim) for lim in llm.pool_limits[route.pool]]
        for i in range(6):
            llm.invoke(f"more {i}")
        for stream in streams[1:]:
            list(stream)

        assert alerts_in(caplog) == []
        minute = [
            u for u in llm.usage() if u.limit.window.seconds == 60 and u.limit.metric == "requests"
        ]
        assert [(str(u.limit), u.used) for u in minute] == [("100/minute", 9)]


def test_near_judges_the_limits_in_force_by_the_count_of_their_metric_and_window() -> None:
    tracker = AlertTracker((75.0,))
    catalog, learned, day = (Limit.parse(t) for t in ("3/minute", "100/minute", "200/24h"))
    # Counted under the catalog figure: 3 in the minute, 3 in the day.
    levels = [(catalog, 3), (day, 3)]
    assert tracker.near([learned, day], levels) == []
    assert tracker.near([catalog, day], levels) == [catalog]
    # A limit whose counter the reservation did not count: ask the ledger.
    tokens = Limit.parse("8000 tokens/minute")
    assert tracker.near([learned, tokens], levels) == [tokens]


async def test_a_count_over_a_limit_learned_lower_is_alerted_as_over_and_why(
    clock: FakeClock, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The vendor first states 100/minute. Three calls go out; six more follow, and
    # the last of them says the key now allows 3/minute, none left: 9 were
    # admitted before that limit was known. The third call out then answers.
    vendor = HeaderFake(
        model="m",
        provider="openai",
        headers=[*(openai_headers(100, 100 - n) for n in range(1, 7)), openai_headers(3, 0)],
    )
    llm = routed(clock, vendor)
    await ask(llm, how)
    clock.advance(61)
    caplog.set_level(logging.WARNING, logger="langchain_quota_router")
    holds, calls = [], []
    for i in range(3):
        holds.append(vendor.hold_next())
        calls.append(start(llm, how, f"held {i}"))
        await holds[-1].wait_reached()
    for i in range(6):
        assert (await ask(llm, how, f"more {i}")).response_metadata["route"] == "vendor"
    assert [str(x.limit) for x in llm.learned_limits()] == ["3/minute"]
    for hold, call in zip(holds, calls, strict=True):
        hold.release()
        assert (await call).response_metadata["route"] == "vendor"

    assert alerts_in(caplog) == [
        "quota alert: pool vendor is over 3/minute: 9 counted, 6 more than it allows "
        "(admitted before the vendor's limit was learned); resets 2026-01-01T00:02:02+00:00"
    ]
    (record,) = [r for r in caplog.records if r.getMessage().startswith("quota alert")]
    alert = record.quota_alert
    assert (alert.used, alert.amount, alert.over, alert.percent) == (9, 3, 6, 100.0)
    assert (await ask(llm, how)).response_metadata["route"] == "backup"


def test_status_report_and_page_say_why_a_count_is_over_a_limit_learned_lower(
    clock: FakeClock, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nine calls under the vendor's 100/minute; the ninth answer says 3/minute.
    vendor = HeaderFake(
        model="m",
        provider="openai",
        headers=[*(openai_headers(100, 100 - n) for n in range(1, 9)), openai_headers(3, 0)],
    )
    llm = routed(clock, vendor)
    for i in range(9):
        llm.invoke(f"q{i}")
    why = "6 more than it allows (9 counted): admitted before the vendor's limit was learned"

    (row,) = [r for r in read_status(llm).limits if r.pool == "vendor"]
    assert (row.limit, row.used, row.amount, row.percent) == ("3/minute", 9, 3, 100.0)
    assert (row.over, row.note) == (6, "admitted before the vendor's limit was learned")

    monkeypatch.setattr(cli, "_load_router", lambda config: llm)
    assert cli.main(["status"]) == 0
    assert f"vendor 3/minute: {why}" in " ".join(capsys.readouterr().out.split())
    assert cli.main(["report"]) == 0
    assert f"3/minute: {why}" in " ".join(capsys.readouterr().out.split())
    assert cli.main(["report", "--json"]) == 0
    (limit,) = json.loads(capsys.readouterr().out)["pools"][0]["limits"]
    assert (limit["used"], limit["amount"], limit["over"]) == (9, 3, 6)
    assert why.replace("'", "&#x27;") in render_page(status_snapshot(llm))


async def test_the_answer_that_says_none_is_left_raises_the_alert_itself(
    clock: FakeClock, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    # One call of 10/minute counted here; the vendor's headers say the key has
    # none left (it is used from elsewhere too). The pool is full from this
    # answer on, and this answer is the one that says so.
    vendor = HeaderFake(model="m", provider="openai", headers=[openai_headers(10, 0)])
    llm = QuotaRoutedChatModel(
        routes=[Route(vendor, name="vendor", limits=["10/minute"])],
        ledger="memory://",
        cache=False,
        clock=clock,
    )
    caplog.set_level(logging.WARNING, logger="langchain_quota_router")

    await ask(llm, how)

    (alert,) = alerts_in(caplog)
    assert alert.startswith("quota alert: pool vendor has used 100% of 10/minute (10 of 10)")
