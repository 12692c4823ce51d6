"""What LangChain asks of the router on every call is worked out once per settings:
tracers and the vendors still see the router as it is now, after any change."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest
from call_paths import PATHS, ask
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from support.vendors import HeaderFake, openai_headers

from langchain_quota_router import QuotaRoutedChatModel, Route
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.testing import FakeVendorChatModel


class Tracer(BaseCallbackHandler):
    """Keeps what a tracer is told when a chat run starts."""

    def __init__(self) -> None:
        self.params: list[dict[str, Any]] = []
        self.metadata: list[dict[str, Any]] = []

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: Any,
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.params.append(kwargs["invocation_params"])
        self.metadata.append(dict(metadata or {}))


def make_router(clock: FakeClock) -> tuple[QuotaRoutedChatModel, FakeVendorChatModel]:
    fake = FakeVendorChatModel(model="m1")
    other = FakeVendorChatModel(model="m2")
    router = QuotaRoutedChatModel(
        routes=[Route(fake, name="a", limits=["100/minute"]), Route(other, name="b", priority=1)],
        ledger="memory://",
        clock=clock,
        cache=False,
    )
    return router, fake


@pytest.mark.parametrize("how", PATHS)
async def test_a_setting_changed_after_a_call_reaches_the_vendor_and_the_tracer(
    clock: FakeClock, how: str
) -> None:
    router, fake = make_router(clock)
    tracer = Tracer()
    await ask(router, how, config={"callbacks": [tracer]})

    router.temperature = 0.3
    router.max_tokens = 77
    await ask(router, how, config={"callbacks": [tracer]})

    assert fake.kwargs_seen[0].get("temperature") is None
    assert fake.kwargs_seen[-1]["temperature"] == 0.3
    assert fake.kwargs_seen[-1]["max_tokens"] == 77
    first, last = tracer.params[0], tracer.params[-1]
    assert first["temperature"] is None
    assert last["temperature"] == 0.3
    assert last["max_tokens"] == 77
    assert tracer.metadata[-1]["ls_temperature"] == 0.3
    assert tracer.metadata[-1]["ls_max_tokens"] == 77


@pytest.mark.parametrize("how", PATHS)
async def test_a_changed_strategy_takes_effect_at_the_next_call(clock: FakeClock, how: str) -> None:
    small, large = FakeVendorChatModel(model="m1"), FakeVendorChatModel(model="m2")
    router = QuotaRoutedChatModel(
        routes=[
            Route(small, name="small", limits=["10/minute"]),
            Route(large, name="large", limits=["100/minute"], priority=1),
        ],
        ledger="memory://",
        clock=clock,
        cache=False,
    )
    first = await ask(router, how)

    router.strategy = "spread"  # most room first: the large pool
    second = await ask(router, how)

    assert first.response_metadata["route"] == "small"
    assert second.response_metadata["route"] == "large"


@pytest.mark.parametrize("how", PATHS)
async def test_tracers_see_what_langchain_itself_would_report(clock: FakeClock, how: str) -> None:
    router, _ = make_router(clock)
    tracer = Tracer()

    await ask(router, how, config={"callbacks": [tracer]}, stop=["END"], preferred="b")

    langchain_params = BaseChatModel._get_invocation_params(router, stop=["END"], preferred="b")
    assert tracer.params[-1] == langchain_params
    assert tracer.params[-1]["routes"] == ["a", "b"]
    assert tracer.params[-1]["_type"] == "quota-router"
    assert tracer.metadata[-1]["ls_model_name"] == "m2"  # the preferred route's model
    assert tracer.metadata[-1]["ls_stop"] == ["END"]


def test_the_plain_call_gets_its_own_copy_of_the_tracing_params(clock: FakeClock) -> None:
    router, _ = make_router(clock)

    one = router._get_ls_params()
    one["ls_model_name"] = "scribbled"
    params = router._get_invocation_params()
    params["strategy"] = "scribbled"

    assert router._get_ls_params()["ls_model_name"] == "m1"
    assert router._get_invocation_params()["strategy"] == "priority"


def header_router(clock: FakeClock, ledger: str, headers: list[dict[str, str]]) -> Any:
    vendor = HeaderFake(model="m", provider="openai", headers=headers)
    return QuotaRoutedChatModel(
        routes=[Route(vendor, name="vendor", limits=["100/minute"])],
        ledger=ledger,
        cache=False,
        clock=clock,
    )


async def test_headers_that_agree_with_the_ledger_are_written_once_a_second(
    clock: FakeClock, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Real vendors send their counters with every answer. Where the vendor has at
    # least the room the ledger counts, writing its counter changes nothing: it
    # is written once a second per pool and limit, not on every call.
    llm = header_router(clock, "memory://", [openai_headers(100, 99)])
    writes: list[int] = []
    ledger = llm.ledger_backend
    real = ledger.observe
    monkeypatch.setattr(
        ledger,
        "observe",
        lambda pool, limit, left, now: (writes.append(left), real(pool, limit, left, now)),
    )
    for _ in range(10):
        await ask(llm, how)
        clock.advance(0.05)
    assert writes == [99]
    clock.advance(1.0)
    await ask(llm, how)
    assert writes == [99, 99]


async def test_a_vendor_with_less_left_than_the_ledger_counts_is_written_at_once(
    clock: FakeClock, how: str
) -> None:
    # The key is also used from elsewhere: the vendor has 40 left where the ledger
    # counts 98. That is written on the answer that says it, not a second later.
    llm = header_router(clock, "memory://", [openai_headers(100, 99), openai_headers(100, 40)])
    await ask(llm, how)
    await ask(llm, how)
    (usage,) = llm.usage()
    assert usage.used == 60


async def test_agreeing_headers_cost_an_async_call_no_trip_to_the_ledgers_thread(
    clock: FakeClock, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm = header_router(clock, f"sqlite:///{tmp_path}/l.db", [openai_headers(100, 99)])
    await llm.ainvoke("hello")  # its counter written once
    trips: list[str] = []
    ledger = llm.ledger_backend
    real = ledger.arun

    async def counted(fn: Any, /, *args: Any) -> Any:
        trips.append(getattr(fn, "__name__", repr(fn)))
        return await real(fn, *args)

    monkeypatch.setattr(ledger, "arun", counted)
    for _ in range(5):
        await llm.ainvoke("hello")
        clock.advance(0.05)
    assert trips == []
