"""A retired or unknown model never costs a call: marked in the ledger, rechecked rarely."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import vendor_errors as errors
from call_paths import ask

from langchain_quota_router import QuotaRoutedChatModel, Route
from langchain_quota_router.cli._report import report_data, status_text
from langchain_quota_router.quota import admission as _routing
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.quota.failures import FailureKind, classify
from langchain_quota_router.quota.ledger import Demand
from langchain_quota_router.testing import FakeVendorChatModel
from langchain_quota_router.web import status_snapshot

RETIRED = "llama-3.3-70b-versatile"


def make_router(
    clock: FakeClock,
    error: BaseException | None = None,
    *,
    ledger: str = "memory://",
    **options: Any,
) -> tuple[QuotaRoutedChatModel, dict[str, FakeVendorChatModel]]:
    """Routes [retired, full, healthy], in that order of priority."""
    fakes = {
        "retired": FakeVendorChatModel(
            model=RETIRED, provider="groq", script=[error or errors.groq_model_decommissioned()]
        ),
        "full": FakeVendorChatModel(model="full-model", script=["from full"]),
        "healthy": FakeVendorChatModel(model="healthy-model", script=["from healthy"]),
    }
    router = QuotaRoutedChatModel(
        routes=[
            Route(fakes["retired"], name="retired", priority=0),
            Route(fakes["full"], name="full", limits=["1/day"], priority=1),
            Route(fakes["healthy"], name="healthy", priority=2),
        ],
        ledger=ledger,
        clock=clock,
        cache=False,
        **options,
    )
    # Spend the full route's day (a second router on a shared ledger finds it spent).
    router.ledger_backend.reserve("full", router.pool_limits["full"], Demand(1, 0, 0), clock.now())
    return router, fakes


@pytest.mark.parametrize(
    "error",
    [
        errors.groq_model_decommissioned(),
        errors.openai_model_not_found(RETIRED),
        errors.gemini_model_not_found(RETIRED),
        errors.gone_410(),
    ],
    ids=["groq-400-decommissioned", "openai-404", "gemini-404", "410-gone"],
)
async def test_retired_full_healthy_serves_every_call_and_asks_the_retired_once(
    clock: FakeClock, how: str, error: BaseException
) -> None:
    router, fakes = make_router(clock, error)

    answers = [await ask(router, how, f"question {i}") for i in range(50)]

    assert [a.response_metadata["route"] for a in answers] == ["healthy"] * 50
    assert fakes["retired"].calls == 1
    assert fakes["full"].calls == 0


async def test_the_model_is_asked_again_once_per_recheck_interval(
    clock: FakeClock, how: str
) -> None:
    router, fakes = make_router(clock, model_recheck=600)
    await ask(router, how)
    clock.advance(599)
    await ask(router, how)
    assert fakes["retired"].calls == 1

    clock.advance(2)
    await ask(router, how)
    await ask(router, how)

    assert fakes["retired"].calls == 2


async def test_enable_lifts_the_mark_at_once(clock: FakeClock, how: str) -> None:
    router, fakes = make_router(clock)
    await ask(router, how)

    router.enable("retired")
    await ask(router, how)

    assert fakes["retired"].calls == 2


async def test_another_process_skips_it_through_the_ledger(
    clock: FakeClock, how: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    first, _ = make_router(clock, ledger=url)
    await ask(first, how)
    second, second_fakes = make_router(clock, ledger=url)

    answer = await ask(second, how)

    assert answer.response_metadata["route"] == "healthy"
    assert second_fakes["retired"].calls == 0


async def test_only_that_model_on_that_key_is_marked(clock: FakeClock, how: str) -> None:
    retired = FakeVendorChatModel(model=RETIRED, script=[errors.openai_model_not_found(RETIRED)])
    sibling = FakeVendorChatModel(model="current-model", script=["from sibling"])
    router = QuotaRoutedChatModel(
        routes=[
            Route(retired, name="old", key="one-key", priority=0),
            Route(sibling, name="new", key="one-key", priority=1),
        ],
        ledger="memory://",
        clock=clock,
        cache=False,
    )
    for _ in range(3):
        answer = await ask(router, how)
        assert answer.response_metadata["route"] == "new"
    assert (retired.calls, sibling.calls) == (1, 3)


def test_a_warning_once_per_process_names_the_route_and_model(
    clock: FakeClock, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_routing, "_warned_unavailable", set())  # a fresh process
    router, _ = make_router(clock, model_recheck=1)
    with caplog.at_level(logging.WARNING, logger="langchain_quota_router"):
        for _ in range(3):
            router.invoke("hi")
            clock.advance(2)
    warnings = [r.getMessage() for r in caplog.records if "no longer serves" in r.getMessage()]
    assert len(warnings) == 1
    assert "retired" in warnings[0]
    assert RETIRED in warnings[0]
    assert "enable" in warnings[0]
    assert "openai/gpt-oss-120b" in warnings[0]  # the catalog's successor


def test_status_report_and_page_show_it_unavailable_with_the_reason(clock: FakeClock) -> None:
    router, _ = make_router(clock)
    router.invoke("hi")

    page = {r["name"]: r for r in status_snapshot(router)["routes"]}
    report = {r["route"]: r for r in report_data(router)["routes"]}

    assert page["retired"]["state"] == report["retired"]["state"] == "unavailable"
    assert "decommissioned" in page["retired"]["reason"]
    assert "decommissioned" in report["retired"]["reason"]
    assert page["healthy"]["state"] == "ok"
    assert "unavailable" in status_text(router)


def test_a_wrong_base_url_404_is_a_bad_request_not_a_retired_model() -> None:
    assert classify(errors.wrong_endpoint_404()).kind is FailureKind.BAD_REQUEST


@pytest.mark.parametrize(
    "error",
    [
        errors.groq_model_decommissioned(),
        errors.openai_model_not_found(),
        errors.gemini_model_not_found(),
        errors.gone_410(),
    ],
)
def test_retired_model_answers_classify_as_model_unavailable(error: BaseException) -> None:
    assert classify(error).kind is FailureKind.MODEL_UNAVAILABLE


async def test_after_a_bad_request_one_more_route_that_is_called_is_tried(
    clock: FakeClock, how: str
) -> None:
    router, fakes = make_router(clock, errors.openai_bad_request())

    answer = await ask(router, how)

    assert answer.response_metadata["route"] == "healthy"
    assert (fakes["retired"].calls, fakes["full"].calls) == (1, 0)


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_model_recheck_must_be_a_finite_non_negative_number(clock: FakeClock, value: float) -> None:
    with pytest.raises(ValueError, match="model_recheck"):
        QuotaRoutedChatModel(
            routes=[FakeVendorChatModel()], ledger="memory://", clock=clock, model_recheck=value
        )


def test_model_recheck_that_is_not_a_number_is_refused(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="model_recheck"):
        QuotaRoutedChatModel(
            routes=[FakeVendorChatModel()], ledger="memory://", clock=clock, model_recheck="soon"
        )
