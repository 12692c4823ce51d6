"""The router over the real vendor classes, through the simulator over HTTP.

The vendor models are built the way a user builds them, SDK retries left at their
defaults: the router must turn them off itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_cohere import ChatCohere
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.tools import tool
from langchain_google_genai import ChatGoogleGenerativeAI
from langchain_groq import ChatGroq
from langchain_openai import ChatOpenAI
from support.routers import router

from langchain_quota_router import QuotaRoutedChatModel, Route
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.simulator import Fault, Reply, SimKey, Simulator, ToolCall

VENDORS = ["groq", "gemini", "openai", "cohere"]
MODELS = {
    "groq": "openai/gpt-oss-120b",
    "gemini": "gemini-3.5-flash",
    "openai": "gpt-4o-mini",
    "cohere": "command-r-08-2024",
}
NOON_UTC = dt.datetime(2026, 1, 15, 12, tzinfo=dt.timezone.utc).timestamp()


@tool
def get_weather(city: str) -> str:
    """Return the weather forecast for a city."""
    return f"sunny in {city}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOON_UTC)


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[Simulator]:
    keys = [SimKey(f"{v}-key-1", v) for v in VENDORS] + [SimKey(f"{v}-key-2", v) for v in VENDORS]
    with Simulator(keys, clock=clock) as simulator:
        yield simulator


def user_model(sim: Simulator, vendor: str, key: str, **kw: Any) -> BaseChatModel:
    """A vendor model built as a user would: the SDK's own retries left on."""
    model = MODELS[vendor]
    if vendor == "groq":
        return ChatGroq(model=model, api_key=key, base_url=sim.groq_base_url, **kw)
    if vendor == "openai":
        return ChatOpenAI(model=model, api_key=key, base_url=sim.openai_base_url, **kw)
    if vendor == "gemini":
        return ChatGoogleGenerativeAI(
            model=model, google_api_key=key, base_url=sim.gemini_base_url, **kw
        )
    return ChatCohere(model=model, cohere_api_key=key, base_url=sim.cohere_base_url, **kw)


def pair(
    sim: Simulator, clock: FakeClock, vendor: str, first_limits: list[str] | None = None
) -> QuotaRoutedChatModel:
    """Two routes: ``vendor`` first, a fallback of the same vendor on another key."""
    return router(
        clock,
        Route(user_model(sim, vendor, f"{vendor}-key-1"), name="first", limits=first_limits),
        Route(user_model(sim, vendor, f"{vendor}-key-2"), name="second", priority=1),
    )


@pytest.mark.parametrize("vendor", VENDORS)
def test_plain_call_with_usage_from_the_vendors_numbers(
    sim: Simulator, clock: FakeClock, vendor: str
) -> None:
    llm = pair(sim, clock, vendor, ["1000000 tokens/day"])
    message = llm.invoke("What is the capital of France?")
    assert isinstance(message, AIMessage)
    assert message.text
    meta = message.response_metadata
    assert meta["route"] == "first"
    assert meta["model_name"]
    assert meta["model_provider"]
    stats = sim.stats(f"{vendor}-key-1")
    assert message.usage_metadata is not None
    assert message.usage_metadata["input_tokens"] == stats.input_tokens
    assert message.usage_metadata["output_tokens"] == stats.output_tokens
    (usage,) = llm.usage()
    assert usage.used == stats.input_tokens + stats.output_tokens


@pytest.mark.parametrize("vendor", VENDORS)
def test_streamed_call(sim: Simulator, clock: FakeClock, vendor: str) -> None:
    llm = pair(sim, clock, vendor)
    chunks = list(llm.stream("Tell me a short story about a fox."))
    assert len(chunks) > 1
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert isinstance(total, AIMessageChunk)
    assert total.text
    assert total.response_metadata["route"] == "first"
    assert total.response_metadata["model_name"] in (MODELS[vendor], f"models/{MODELS[vendor]}")


@pytest.mark.parametrize("vendor", VENDORS)
def test_tool_call(sim: Simulator, clock: FakeClock, vendor: str) -> None:
    llm = pair(sim, clock, vendor).bind_tools([get_weather])
    message = llm.invoke("What's the weather in Paris?")
    assert isinstance(message, AIMessage)
    assert [c["name"] for c in message.tool_calls] == ["get_weather"]


@pytest.mark.parametrize("vendor", VENDORS)
def test_429_falls_back_after_exactly_one_request(
    sim: Simulator, clock: FakeClock, vendor: str
) -> None:
    sim.add_key(SimKey(f"{vendor}-tiny", vendor, rpm=1))  # type: ignore[arg-type]
    llm = router(
        clock,
        Route(user_model(sim, vendor, f"{vendor}-tiny"), name="tiny"),  # the router knows no limits
        Route(user_model(sim, vendor, f"{vendor}-key-2"), name="second", priority=1),
    )
    assert llm.invoke("one").response_metadata["route"] == "tiny"
    assert llm.invoke("two").response_metadata["route"] == "second"
    stats = sim.stats(f"{vendor}-tiny")
    # OpenAI's headers said 0 requests left this minute: the router learned that
    # limit and never sent the doomed second request. The others answered it with one
    # 429 (no hidden SDK retries).
    expected = (1, 0) if vendor == "openai" else (2, 1)
    assert (stats.received, stats.refused) == expected
    assert llm.invoke("three").response_metadata["route"] == "second"
    assert sim.stats(f"{vendor}-tiny").received == expected[0]  # not asked again


@pytest.mark.parametrize("vendor", ["groq", "openai"])
def test_rate_limit_headers_keep_the_router_from_sending_a_refused_request(
    sim: Simulator, clock: FakeClock, vendor: str
) -> None:
    # The vendor allows 3 a day; the router was told 1000/day (an outdated catalog).
    sim.add_key(SimKey(f"{vendor}-strict", vendor, rpd=3, rpm=3))  # type: ignore[arg-type]
    limits = ["1000/day"] if vendor == "groq" else ["1000/minute"]
    llm = router(
        clock,
        Route(user_model(sim, vendor, f"{vendor}-strict"), name="strict", limits=limits),
        Route(user_model(sim, vendor, f"{vendor}-key-2"), name="second", priority=1),
    )
    served = [llm.invoke(f"call {i}").response_metadata["route"] for i in range(5)]
    assert served == ["strict"] * 3 + ["second"] * 2
    stats = sim.stats(f"{vendor}-strict")
    assert (stats.received, stats.refused) == (3, 0)


@pytest.mark.parametrize("vendor", VENDORS)
def test_authentication_failure_disables_that_key_only(
    sim: Simulator, clock: FakeClock, vendor: str
) -> None:
    llm = router(
        clock,
        Route(user_model(sim, vendor, "revoked-key"), name="revoked"),
        Route(user_model(sim, vendor, f"{vendor}-key-2"), name="good", priority=1),
    )
    assert llm.invoke("one").response_metadata["route"] == "good"
    clock.advance(3 * 86_400)
    assert llm.invoke("two").response_metadata["route"] == "good"
    assert sim.requests("revoked-key") == [] or len(sim.requests("revoked-key")) == 1
    credential = llm.route_map["revoked"].credential
    assert "revoked-key" not in credential  # a fingerprint, never the key
    assert [h.subject for h in llm.ledger_backend.holds(clock.now())] == [f"key:{credential}"]
    (hold,) = llm.ledger_backend.holds(clock.now())
    assert "router.enable('revoked')" in hold.reason
    assert "quota-router enable revoked" in hold.reason


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_fixed_key_is_a_fresh_credential_in_a_persistent_ledger(
    sim: Simulator, clock: FakeClock, vendor: str, tmp_path: Any
) -> None:
    ledger = f"sqlite:///{tmp_path}/ledger.db"
    before = QuotaRoutedChatModel(
        routes=[
            Route(user_model(sim, vendor, "revoked-key"), name="main"),
            Route(user_model(sim, vendor, f"{vendor}-key-2"), name="backup", priority=1),
        ],
        ledger=ledger,
        cache=False,
        clock=clock,
    )
    assert before.invoke("one").response_metadata["route"] == "backup"

    # The user fixes the key in the configuration; a new process starts.
    after = QuotaRoutedChatModel(
        routes=[
            Route(user_model(sim, vendor, f"{vendor}-key-1"), name="main"),
            Route(user_model(sim, vendor, f"{vendor}-key-2"), name="backup", priority=1),
        ],
        ledger=ledger,
        cache=False,
        clock=clock,
    )
    assert after.invoke("two").response_metadata["route"] == "main"


@pytest.mark.parametrize("vendor", VENDORS)
def test_stream_cut_before_its_first_chunk_falls_back(
    sim: Simulator, clock: FakeClock, vendor: str
) -> None:
    sim.inject(f"{vendor}-key-1", Fault.CUT_STREAM, after_chunks=0)
    llm = pair(sim, clock, vendor)
    chunks = list(llm.stream("Tell me about foxes."))
    text = "".join(c.text for c in chunks)
    assert text
    assert chunks[0].response_metadata["route"] == "second"


@pytest.mark.parametrize("vendor", VENDORS)
async def test_async_call_and_stream(sim: Simulator, clock: FakeClock, vendor: str) -> None:
    llm = pair(sim, clock, vendor)
    message = await llm.ainvoke("hello")
    assert message.response_metadata["route"] == "first"
    chunks = [c async for c in llm.astream("hello again")]
    assert "".join(c.text for c in chunks)


def test_agent_conversation_moves_groq_to_gemini_to_cohere(
    sim: Simulator, clock: FakeClock
) -> None:
    from langchain.agents import create_agent

    for vendor in ("groq", "gemini", "cohere"):
        sim.add_key(SimKey(f"{vendor}-once", vendor, rpm=1))  # type: ignore[arg-type]
    sim.script("groq-once", [Reply(tool_calls=(ToolCall("get_weather", {"city": "Paris"}),))])
    sim.script("gemini-once", [Reply(tool_calls=(ToolCall("get_weather", {"city": "Rome"}),))])
    sim.script("cohere-once", [Reply(text="Paris and Rome are both sunny.")])
    llm = router(
        clock,
        *(
            Route(user_model(sim, v, f"{v}-once"), name=v, limits=["1/minute"], priority=i)
            for i, v in enumerate(("groq", "gemini", "cohere"))
        ),
    )
    agent = create_agent(model=llm, tools=[get_weather])
    result = agent.invoke({"messages": [("user", "Weather in Paris and Rome?")]})
    answers = [m for m in result["messages"] if isinstance(m, AIMessage)]
    assert [m.response_metadata["route"] for m in answers] == ["groq", "gemini", "cohere"]
    assert answers[-1].text == "Paris and Rome are both sunny."
    tool_results = [m.content for m in result["messages"] if m.type == "tool"]
    assert tool_results == ["sunny in Paris", "sunny in Rome"]


@pytest.mark.parametrize("vendor", VENDORS)
def test_max_tokens_reaches_every_vendor_in_its_own_words(
    sim: Simulator, clock: FakeClock, vendor: str
) -> None:
    # Gemini rejects max_tokens (its name is max_output_tokens): the router renames it.
    llm = pair(sim, clock, vendor)
    message = llm.invoke("Write a long essay about the sea and the sky and the land.", max_tokens=5)
    assert message.response_metadata["route"] == "first"
    assert message.usage_metadata is not None
    assert message.usage_metadata["output_tokens"] <= 5
