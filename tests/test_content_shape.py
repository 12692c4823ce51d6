"""``content="text"``: the same ``.content`` shape whatever route answers.

Gemini answers with a list of content blocks where Groq and OpenAI give a string;
code written for ``ChatOpenAI`` breaks after a fallback to Gemini unless the router
makes text answers strings.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from call_paths import ask
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.tools import tool
from langchain_google_genai import ChatGoogleGenerativeAI
from langchain_openai import ChatOpenAI

from langchain_quota_router import QuotaRoutedChatModel, Route
from langchain_quota_router.chat.streaming import as_text
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.simulator import Reply, SimKey, Simulator, ToolCall

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
    keys = [SimKey("gemini-key", "gemini"), SimKey("openai-key", "openai")]
    with Simulator(keys, clock=clock) as simulator:
        yield simulator


def gemini(sim: Simulator, key: str = "gemini-key") -> ChatGoogleGenerativeAI:
    return ChatGoogleGenerativeAI(
        model="gemini-3.5-flash", google_api_key=key, base_url=sim.gemini_base_url
    )


def openai(sim: Simulator, key: str = "openai-key") -> ChatOpenAI:
    return ChatOpenAI(model="gpt-4o-mini", api_key=key, base_url=sim.openai_base_url)


def router(clock: FakeClock, *routes: Route, **kw: Any) -> QuotaRoutedChatModel:
    return QuotaRoutedChatModel(
        routes=list(routes), ledger="memory://", cache=False, clock=clock, **kw
    )


async def test_gemini_text_is_a_string_under_content_text(
    sim: Simulator, clock: FakeClock, how: str
) -> None:
    llm = router(clock, Route(gemini(sim), name="gemini"), content="text")
    answer = await ask(llm, how)
    assert isinstance(answer.content, str)
    assert answer.content.startswith("Simulated answer")


async def test_by_default_gemini_keeps_its_blocks(
    sim: Simulator, clock: FakeClock, how: str
) -> None:
    llm = router(clock, Route(gemini(sim), name="gemini"))
    answer = await ask(llm, how)
    assert isinstance(answer.content, list)


async def test_every_streamed_chunk_is_a_string(sim: Simulator, clock: FakeClock) -> None:
    llm = router(clock, Route(gemini(sim), name="gemini"), content="text")
    chunks = [chunk async for chunk in llm.astream("hello")]
    assert all(isinstance(c.content, str) for c in chunks)
    assert len(chunks) > 2


def test_a_fallback_to_gemini_keeps_openai_s_shape(sim: Simulator, clock: FakeClock) -> None:
    llm = router(
        clock,
        Route(openai(sim), name="openai", limits=["1/minute"], priority=1),
        Route(gemini(sim), name="gemini", priority=2),
        content="text",
    )
    first, second = llm.invoke("one"), llm.invoke("two")
    assert [first.response_metadata["route"], second.response_metadata["route"]] == [
        "openai",
        "gemini",
    ]
    assert isinstance(first.content, str)
    assert isinstance(second.content, str)


def test_a_tool_loop_moves_between_gemini_and_openai(sim: Simulator, clock: FakeClock) -> None:
    from langchain.agents import create_agent

    sim.add_key(SimKey("gemini-once", "gemini", rpm=1))
    sim.add_key(SimKey("openai-once", "openai", rpm=1))
    sim.add_key(SimKey("gemini-last", "gemini"))
    sim.script("gemini-once", [Reply(tool_calls=(ToolCall("get_weather", {"city": "Oslo"}),))])
    sim.script("openai-once", [Reply(tool_calls=(ToolCall("get_weather", {"city": "Lima"}),))])
    sim.script("gemini-last", [Reply(text="Oslo and Lima are both sunny.")])
    llm = router(
        clock,
        Route(gemini(sim, "gemini-once"), name="gemini", limits=["1/minute"], priority=1),
        Route(openai(sim, "openai-once"), name="openai", limits=["1/minute"], priority=2),
        Route(gemini(sim, "gemini-last"), name="gemini-2", priority=3),
        content="text",
    )
    agent = create_agent(model=llm, tools=[get_weather])
    result = agent.invoke({"messages": [("user", "Weather in Oslo and Lima?")]})
    answers = [m for m in result["messages"] if isinstance(m, AIMessage)]
    assert [m.response_metadata["route"] for m in answers] == ["gemini", "openai", "gemini-2"]
    assert [c["name"] for c in answers[0].tool_calls] == ["get_weather"]
    assert answers[-1].content == "Oslo and Lima are both sunny."
    tool_results = [m.content for m in result["messages"] if m.type == "tool"]
    assert tool_results == ["sunny in Oslo", "sunny in Lima"]


def test_only_text_becomes_a_string() -> None:
    text = AIMessage(content=[{"type": "text", "text": "a"}, "b", {"type": "text", "text": "c"}])
    as_text(text)
    assert text.content == "abc"
    blocks: list[str | dict[str, Any]] = [
        {"type": "text", "text": "look:"},
        {"type": "image", "url": "https://example.com/x.png"},
    ]
    mixed = AIMessage(content=list(blocks))
    as_text(mixed)
    assert mixed.content == blocks
    reasoning = AIMessageChunk(content=[{"type": "thinking", "thinking": "hm", "signature": "s"}])
    as_text(reasoning)
    assert isinstance(reasoning.content, list)
