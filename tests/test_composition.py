"""The router inside the LangChain things users build: tools, structured output,
agents, graphs, fallbacks, batches, event streams and callbacks."""

from __future__ import annotations

import json
from typing import Any, TypedDict

import httpx
import openai
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from pydantic import BaseModel, Field
from support.routers import router

from langchain_quota_router import QuotaExhaustedError, QuotaRoutedChatModel, Route
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.testing import FakeVendorChatModel

# ------------------------------------------------------------------- helpers


@tool
def get_weather(city: str) -> str:
    """Return the weather in a city."""
    return f"sunny in {city}"


class Person(BaseModel):
    """A person."""

    name: str = Field(description="The person's name.")
    age: int = Field(description="The person's age.")


CALCULATOR = {
    "name": "calculator",
    "description": "Evaluate an arithmetic expression.",
    "parameters": {
        "type": "object",
        "properties": {"expression": {"type": "string"}},
        "required": ["expression"],
    },
}

PERSON_CALL = {"tool_calls": [{"name": "Person", "args": {"name": "Ada", "age": 36}}]}
WEATHER_CALL = {"tool_calls": [{"name": "get_weather", "args": {"city": "Oslo"}}]}


def fake(model: str, *script: Any) -> FakeVendorChatModel:
    return FakeVendorChatModel(model=model, script=list(script))


def rate_limit() -> openai.RateLimitError:
    request = httpx.Request("POST", "https://api.openai.com/v1/chat/completions")
    response = httpx.Response(429, headers={"retry-after": "20"}, request=request)
    return openai.RateLimitError("Rate limit reached", response=response, body=None)


def tool_names(kwargs: dict[str, Any]) -> list[str]:
    return [t["function"]["name"] for t in kwargs["tools"]]


def chat_openai(*responses: httpx.Response, bodies: list[Any] | None = None) -> Any:
    """A real ``ChatOpenAI`` answering from ``responses`` without a network."""
    from langchain_openai import ChatOpenAI

    queue = list(responses)

    def handle(request: httpx.Request) -> httpx.Response:
        if bodies is not None:
            bodies.append(json.loads(request.content))
        return queue.pop(0)

    transport = httpx.MockTransport(handle)
    return ChatOpenAI(
        model="gpt-4o-mini",
        api_key="sk-test",
        max_retries=0,
        http_client=httpx.Client(transport=transport),
        http_async_client=httpx.AsyncClient(transport=transport),
    )


def sse(*deltas: dict[str, Any]) -> httpx.Response:
    """An OpenAI chat completion stream, as the wire carries it."""
    events = [
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "delta": delta, "finish_reason": delta.pop("finish", None)}],
        }
        for delta in deltas
    ]
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})


# ------------------------------------------------------------ 1. bind_tools


def test_bind_tools_sends_each_route_openai_tools_and_tool_choice(clock):
    calc_call = {"tool_calls": [{"name": "calculator", "args": {"expression": "1+1"}}]}
    m1, m2 = fake("m1", rate_limit()), fake("m2", calc_call)
    llm = router(clock, Route(m1, name="openai", priority=1), Route(m2, name="groq", priority=2))
    bound = llm.bind_tools([get_weather, Person, CALCULATOR], tool_choice="calculator")

    answer = bound.invoke("what is 1+1?")

    for model in (m1, m2):
        seen = model.kwargs_seen[-1]
        assert all(t["type"] == "function" for t in seen["tools"])
        assert tool_names(seen) == ["get_weather", "Person", "calculator"]
        assert seen["tool_choice"] == "calculator"
    assert answer.response_metadata["route"] == "groq"
    assert answer.tool_calls[0]["name"] == "calculator"
    assert answer.tool_calls[0]["args"] == {"expression": "1+1"}


def test_bind_tools_gives_chat_openai_its_own_tool_choice_form(clock):
    bodies: list[Any] = []
    openai_429 = httpx.Response(
        429, headers={"retry-after": "20"}, json={"error": {"message": "slow down"}}
    )
    m2 = fake("m2", WEATHER_CALL)
    llm = router(
        clock,
        Route(chat_openai(openai_429, bodies=bodies), name="openai", priority=1),
        Route(m2, name="groq", priority=2),
    )

    answer = llm.bind_tools([get_weather], tool_choice="any").invoke("weather?")

    assert bodies[0]["tool_choice"] == "required"  # OpenAI's word for "any"
    assert bodies[0]["tools"][0]["function"]["name"] == "get_weather"
    assert m2.kwargs_seen[-1]["tool_choice"] == "any"
    assert answer.response_metadata["route"] == "groq"


def test_bound_tools_skip_a_route_that_cannot_call_tools(clock):
    plain = GenericFakeChatModel(messages=iter(["plain answer"]))
    m2 = fake("m2", WEATHER_CALL)
    llm = router(
        clock,
        Route(plain, name="plain", priority=1),
        Route(m2, name="tools", priority=2),
    )

    answer = llm.bind_tools([get_weather]).invoke("weather in Oslo?")

    assert answer.response_metadata["route"] == "tools"
    assert answer.tool_calls[0]["name"] == "get_weather"
    assert tool_names(m2.kwargs_seen[-1]) == ["get_weather"]


def test_a_route_that_cannot_call_tools_still_serves_plain_calls(clock):
    plain = GenericFakeChatModel(messages=iter(["plain answer"]))
    m2 = fake("m2", "from m2")
    llm = router(
        clock,
        Route(plain, name="plain", priority=1),
        Route(m2, name="tools", priority=2),
    )

    answer = llm.invoke("hi")

    assert answer.content == "plain answer"
    assert answer.response_metadata["route"] == "plain"
    assert m2.calls == 0


# ------------------------------------------------ 2. with_structured_output


def test_structured_output_returns_the_parsed_object(clock):
    llm = router(clock, Route(fake("m1", PERSON_CALL), name="groq"))

    assert llm.with_structured_output(Person).invoke("who?") == Person(name="Ada", age=36)


def test_structured_output_with_include_raw(clock):
    llm = router(clock, Route(fake("m1", PERSON_CALL), name="groq"))

    out = llm.with_structured_output(Person, include_raw=True).invoke("who?")

    assert out["parsed"] == Person(name="Ada", age=36)
    assert out["parsing_error"] is None
    assert isinstance(out["raw"], AIMessage)
    assert out["raw"].response_metadata["route"] == "groq"


def test_structured_output_falls_back_after_a_rate_limit(clock):
    m1, m2 = fake("m1", rate_limit()), fake("m2", PERSON_CALL)
    llm = router(clock, Route(m1, name="openai", priority=1), Route(m2, name="groq", priority=2))

    out = llm.with_structured_output(Person, include_raw=True).invoke("who?")

    assert out["parsed"] == Person(name="Ada", age=36)
    assert out["raw"].response_metadata["route"] == "groq"
    assert m1.calls == 1
    assert tool_names(m2.kwargs_seen[-1]) == ["Person"]


# ------------------------------------------------------ 3. create_agent


def test_agent_runs_its_tool_loop_and_switches_vendor_when_quota_runs_out(clock):
    from langchain.agents import create_agent

    m1 = fake("m1", WEATHER_CALL, "m1 should not answer twice")
    m2 = fake("m2", "It is sunny in Oslo.")
    llm = router(
        clock,
        Route(m1, name="groq", limits=["1/minute"], priority=1),
        Route(m2, name="gemini", priority=2),
    )
    agent = create_agent(model=llm, tools=[get_weather])

    result = agent.invoke({"messages": [("user", "weather in Oslo?")]})

    ai = [m for m in result["messages"] if isinstance(m, AIMessage)]
    assert [m.response_metadata["route"] for m in ai] == ["groq", "gemini"]
    assert ai[0].tool_calls[0]["name"] == "get_weather"
    assert result["messages"][-2].content == "sunny in Oslo"
    assert ai[-1].content == "It is sunny in Oslo."
    assert (m1.calls, m2.calls) == (1, 1)
    assert tool_names(m2.kwargs_seen[-1]) == ["get_weather"]


def test_agent_message_stream_names_the_vendor_of_each_turn(clock):
    from langchain.agents import create_agent

    llm = router(
        clock,
        Route(fake("m1", WEATHER_CALL), name="groq", limits=["1/minute"], priority=1),
        Route(fake("m2", "It is sunny."), name="gemini", priority=2),
    )
    agent = create_agent(model=llm, tools=[get_weather])

    turns: dict[str, AIMessageChunk] = {}
    for chunk, _ in agent.stream({"messages": [("user", "weather?")]}, stream_mode="messages"):
        if isinstance(chunk, AIMessageChunk):
            turns[chunk.id] = turns[chunk.id] + chunk if chunk.id in turns else chunk

    answers = list(turns.values())
    assert [a.response_metadata["route"] for a in answers] == ["groq", "gemini"]
    assert [a.response_metadata["model_name"] for a in answers] == ["m1", "m2"]
    assert answers[-1].content == "It is sunny."


# ------------------------------------------------------------- 4. LangGraph


def graph_of(llm: QuotaRoutedChatModel) -> Any:
    def call_model(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [llm.invoke(state["messages"])]}

    async def acall_model(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [await llm.ainvoke(state["messages"])]}

    # One node, two turns: invoke() runs call_model, ainvoke() runs acall_model.
    node = RunnableLambda(call_model, afunc=acall_model)
    builder = StateGraph(MessagesState)
    builder.add_node("first", node)
    builder.add_node("second", node)
    builder.add_edge(START, "first")
    builder.add_edge("first", "second")
    builder.add_edge("second", END)
    return builder.compile()


def test_graph_node_calls_the_router(clock):
    llm = router(clock, Route(fake("m1", "one", "two"), name="groq"))

    out = graph_of(llm).invoke({"messages": [("user", "hi")]})

    assert [m.content for m in out["messages"]] == ["hi", "one", "two"]
    assert out["messages"][-1].response_metadata["route"] == "groq"


async def test_graph_node_calls_the_router_async(clock):
    llm = router(clock, Route(fake("m1", "one", "two"), name="groq"))

    out = await graph_of(llm).ainvoke({"messages": [("user", "hi")]})

    assert [m.content for m in out["messages"]] == ["hi", "one", "two"]


class Flow(TypedDict):
    question: str
    answer: str


async def test_plain_state_graph_routes_around_a_full_key_async(clock):
    m1, m2 = fake("m1", "from m1"), fake("m2", "from m2")
    llm = router(
        clock,
        Route(m1, name="groq", limits=["1/minute"], priority=1),
        Route(m2, name="gemini", priority=2),
    )

    async def answer(state: Flow) -> dict[str, str]:
        return {"answer": (await llm.ainvoke(state["question"])).text}

    graph = StateGraph(Flow)
    graph.add_node("answer", answer)
    graph.add_edge(START, "answer")
    app = graph.compile()

    first = await app.ainvoke({"question": "a", "answer": ""})
    second = await app.ainvoke({"question": "b", "answer": ""})

    assert (first["answer"], second["answer"]) == ("from m1", "from m2")


# ------------------------------------------------------- 5. with_fallbacks


def full_router(clock: FakeClock) -> tuple[QuotaRoutedChatModel, FakeVendorChatModel]:
    m1 = fake("m1", "from router")
    llm = router(clock, Route(m1, name="groq", limits=["1/minute"]))
    llm.invoke("spend the only request")
    return llm, m1


def test_router_with_fallbacks_falls_back_when_every_route_is_full(clock):
    llm, _ = full_router(clock)
    with pytest.raises(QuotaExhaustedError):
        llm.invoke("again")
    backup = fake("backup", "from backup")

    chain = llm.with_fallbacks([backup], exceptions_to_handle=(QuotaExhaustedError,))

    answer = chain.invoke("again")

    assert answer.content == "from backup"
    assert backup.calls == 1


def test_router_with_fallbacks_bind_tools_reaches_routes_and_fallback(clock):
    m1 = fake("m1", WEATHER_CALL)
    llm = router(clock, Route(m1, name="groq", limits=["1/minute"]))
    backup = fake("backup", WEATHER_CALL)
    bound = llm.with_fallbacks([backup]).bind_tools([get_weather], tool_choice="any")

    first = bound.invoke("weather?")
    second = bound.invoke("weather?")

    assert first.response_metadata["route"] == "groq"
    assert tool_names(m1.kwargs_seen[-1]) == ["get_weather"]
    assert m1.kwargs_seen[-1]["tool_choice"] == "any"
    assert second.tool_calls[0]["name"] == "get_weather"
    assert tool_names(backup.kwargs_seen[-1]) == ["get_weather"]


def test_failing_model_with_fallbacks_reaches_the_router(clock):
    failing = fake("broken", openai.APIConnectionError(request=httpx.Request("POST", "https://x")))
    m1 = fake("m1", WEATHER_CALL)
    llm = router(clock, Route(m1, name="groq"))
    chain = failing.with_fallbacks([llm])

    assert chain.invoke("hi").response_metadata["route"] == "groq"
    answer = chain.bind_tools([get_weather]).invoke("weather?")

    assert answer.tool_calls[0]["name"] == "get_weather"
    assert tool_names(m1.kwargs_seen[-1]) == ["get_weather"]
    assert failing.calls == 2


# ------------------------------------------- 6. batch, events, streaming


def test_batch_with_tools_bound_spills_over_to_the_next_route(clock):
    m1, m2 = fake("m1", WEATHER_CALL), fake("m2", WEATHER_CALL)
    llm = router(
        clock,
        Route(m1, name="groq", limits=["2/minute"], priority=1),
        Route(m2, name="gemini", priority=2),
    )

    answers = llm.bind_tools([get_weather]).batch(["a", "b", "c"])

    routes = sorted(a.response_metadata["route"] for a in answers)
    assert routes == ["gemini", "groq", "groq"]
    assert [a.tool_calls[0]["name"] for a in answers] == ["get_weather"] * 3
    assert all(tool_names(k) == ["get_weather"] for k in m1.kwargs_seen + m2.kwargs_seen)


async def test_abatch_with_tools_bound_spills_over_to_the_next_route(clock):
    m1, m2 = fake("m1", WEATHER_CALL), fake("m2", WEATHER_CALL)
    llm = router(
        clock,
        Route(m1, name="groq", limits=["2/minute"], priority=1),
        Route(m2, name="gemini", priority=2),
    )

    answers = await llm.bind_tools([get_weather]).abatch(["a", "b", "c"])

    routes = sorted(a.response_metadata["route"] for a in answers)
    assert routes == ["gemini", "groq", "groq"]
    assert all(a.tool_calls[0]["name"] == "get_weather" for a in answers)
    assert tool_names(m2.kwargs_seen[-1]) == ["get_weather"]


async def test_astream_events_streams_content_and_ends_once(clock):
    llm = router(clock, Route(fake("m1", "hello there world"), name="groq"))

    events = [e async for e in llm.astream_events("hi", version="v2")]

    streamed = [e for e in events if e["event"] == "on_chat_model_stream"]
    ends = [e for e in events if e["event"] == "on_chat_model_end"]
    assert "".join(e["data"]["chunk"].text for e in streamed) == "hello there world"
    assert len(ends) == 1
    assert ends[0]["data"]["output"].response_metadata["route"] == "groq"


def test_stream_aggregates_model_name_once(clock):
    llm = router(clock, Route(fake("m1", "hello there world"), name="groq"))

    total: AIMessageChunk | None = None
    for chunk in llm.stream("hi"):
        total = chunk if total is None else total + chunk

    assert total is not None
    assert total.content == "hello there world"
    assert total.response_metadata["model_name"] == "m1"
    assert total.response_metadata["route"] == "groq"
    assert total.usage_metadata is not None


def openai_stream() -> httpx.Response:
    return sse(
        {"role": "assistant", "content": ""},
        {"content": "Hello"},
        {"content": " world"},
        {"finish": "stop"},
    )


# ChatOpenAI reports model_name in each chunk's generation_info, which LangChain
# folds into response_metadata after the router's _stream has tagged the chunk.
ONE_MODEL_NAME = ("gpt-4o-mini", "gpt-4o-mini-2024-07-18")


def test_stream_from_chat_openai_reports_model_name_once(clock):
    llm = router(clock, Route(chat_openai(openai_stream()), name="openai"))

    total: AIMessageChunk | None = None
    for chunk in llm.stream("hi"):
        total = chunk if total is None else total + chunk

    assert total is not None
    assert total.content == "Hello world"
    assert total.response_metadata["route"] == "openai"
    assert total.response_metadata["model_name"] in ONE_MODEL_NAME


async def test_astream_events_from_chat_openai_end_with_model_name_once(clock):
    llm = router(clock, Route(chat_openai(openai_stream()), name="openai"))

    events = [e async for e in llm.astream_events("hi", version="v2")]

    (end,) = [e for e in events if e["event"] == "on_chat_model_end"]
    assert end["data"]["output"].content == "Hello world"
    assert end["data"]["output"].response_metadata["model_name"] in ONE_MODEL_NAME


# ------------------------------------------------------------ 7. callbacks


class Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[str] = []

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        self.events.append("start")

    def on_llm_end(self, *args: Any, **kwargs: Any) -> None:
        self.events.append("end")

    def on_llm_error(self, *args: Any, **kwargs: Any) -> None:
        self.events.append("error")


def test_callbacks_see_one_run_when_the_first_route_fails(clock):
    m1, m2 = fake("m1", rate_limit()), fake("m2", "from m2")
    llm = router(clock, Route(m1, name="openai", priority=1), Route(m2, name="groq", priority=2))
    recorder = Recorder()

    answer = llm.invoke("hi", config={"callbacks": [recorder]})

    assert answer.response_metadata["route"] == "groq"
    assert recorder.events == ["start", "end"]
    assert m1.calls == 1


async def test_callbacks_see_one_run_when_the_first_route_fails_streaming(clock):
    m1, m2 = fake("m1", rate_limit()), fake("m2", "from m2")
    llm = router(clock, Route(m1, name="openai", priority=1), Route(m2, name="groq", priority=2))
    recorder = Recorder()

    chunks = [c async for c in llm.astream("hi", config={"callbacks": [recorder]})]

    assert "".join(c.text for c in chunks) == "from m2"
    assert recorder.events == ["start", "end"]


def test_callbacks_see_one_error_when_every_route_fails(clock):
    m1, m2 = fake("m1", rate_limit()), fake("m2", rate_limit())
    llm = router(clock, Route(m1, name="openai", priority=1), Route(m2, name="groq", priority=2))
    recorder = Recorder()

    with pytest.raises(QuotaExhaustedError):
        llm.invoke("hi", config={"callbacks": [recorder]})

    assert recorder.events == ["start", "error"]
    assert (m1.calls, m2.calls) == (1, 1)
