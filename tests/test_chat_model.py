"""The router as a chat model: every call path, its metadata, and bad configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_openai import ChatOpenAI

from langchain_quota_router import (
    ConfigurationError,
    LedgerError,
    Limit,
    QuotaRoutedChatModel,
    Route,
)
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.testing import FakeVendorChatModel


def two_routes(clock: FakeClock, **kw: Any) -> QuotaRoutedChatModel:
    return QuotaRoutedChatModel(
        routes=[
            Route(
                FakeVendorChatModel(model="llama", provider="groq"),
                name="groq",
                limits=["100/minute"],
                priority=1,
            ),
            Route(
                FakeVendorChatModel(model="gemini", provider="google_genai"),
                name="gemini",
                priority=2,
            ),
        ],
        ledger="memory://",
        cache=False,
        clock=clock,
        **kw,
    )


# ------------------------------------------------------------- call paths


def test_invoke_says_which_route_model_and_provider_answered(clock: FakeClock) -> None:
    message = two_routes(clock).invoke("hello")
    assert isinstance(message, AIMessage)
    assert message.content == "echo: hello"
    meta = message.response_metadata
    assert (meta["route"], meta["model_name"], meta["model_provider"]) == (
        "groq",
        "llama",
        "groq",
    )


async def test_ainvoke(clock: FakeClock) -> None:
    message = await two_routes(clock).ainvoke("hello")
    assert message.response_metadata["route"] == "groq"


def test_batch_and_abatch_route_every_input(clock: FakeClock) -> None:
    llm = two_routes(clock)
    assert [m.content for m in llm.batch(["a", "b", "c"])] == [
        "echo: a",
        "echo: b",
        "echo: c",
    ]


async def test_abatch(clock: FakeClock) -> None:
    out = await two_routes(clock).abatch(["a", "b"])
    assert [m.content for m in out] == ["echo: a", "echo: b"]


def test_stream_carries_model_name_once_and_usage(clock: FakeClock) -> None:
    chunks = list(two_routes(clock).stream("one two three"))
    assert len(chunks) > 3
    total: AIMessageChunk = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert total.content == "echo: one two three"
    assert total.response_metadata["model_name"] == "llama"
    assert total.response_metadata["route"] == "groq"
    assert total.usage_metadata is not None
    assert total.usage_metadata["output_tokens"] > 0


async def test_astream_and_astream_events(clock: FakeClock) -> None:
    llm = two_routes(clock)
    chunks = [c async for c in llm.astream("one two")]
    assert "".join(str(c.content) for c in chunks) == "echo: one two"
    events = [e async for e in llm.astream_events("one two", version="v2")]
    kinds = [e["event"] for e in events]
    assert kinds.count("on_chat_model_start") == 1
    assert kinds.count("on_chat_model_end") == 1
    assert kinds.count("on_chat_model_stream") >= 3


def test_invoke_with_streaming_true_streams_from_the_route(clock: FakeClock) -> None:
    message = two_routes(clock, streaming=True).invoke("one two")
    assert message.content == "echo: one two"
    assert message.response_metadata["route"] == "groq"


def test_a_route_that_cannot_stream_still_streams_one_chunk(clock: FakeClock) -> None:
    class NoStream(FakeVendorChatModel):
        _stream = BaseChatModel._stream  # unimplemented: the route cannot stream

    llm = QuotaRoutedChatModel(
        routes=[Route(NoStream(model="plain"), name="plain")],
        ledger="memory://",
        cache=False,
        clock=clock,
    )
    chunks = list(llm.stream("hi"))
    assert "".join(str(c.content) for c in chunks) == "echo: hi"


def test_bare_chat_models_become_routes(clock: FakeClock) -> None:
    llm = QuotaRoutedChatModel(
        routes=[FakeVendorChatModel(model="x")],
        ledger="memory://",
        cache=False,
        clock=clock,
    )
    assert llm.routes[0].name == "fake:x"
    assert llm.invoke("hi").response_metadata["route"] == "fake:x"


# ------------------------------------------------------ bad configuration


def test_no_routes_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="at least one route"):
        QuotaRoutedChatModel(routes=[], ledger="memory://")


def test_two_routes_with_one_name_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="two routes are named 'groq'"):
        QuotaRoutedChatModel(
            routes=[
                Route(FakeVendorChatModel(), name="groq"),
                Route(FakeVendorChatModel(), name="groq"),
            ],
            ledger="memory://",
        )


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        ("30 per minute", r"route 'groq': cannot parse limit '30 per minute'"),
        ("-5/minute", r"route 'groq': limit '-5/minute' is negative"),
        ("10/fortnight", r"unknown window 'fortnight'"),
        ("10/day@Mars/Olympus", r"unknown time zone 'Mars/Olympus'"),
    ],
)
def test_a_bad_limit_names_the_route_and_the_string(limit: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Route(FakeVendorChatModel(), name="groq", limits=[limit])


def test_negative_limit_object_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="negative"):
        Limit(-1)


def test_a_model_that_is_not_a_chat_model_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match=r"route 'x'.*must be a LangChain chat model"):
        Route(object(), name="x")  # type: ignore[arg-type]


def test_unknown_ledger_scheme_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown ledger URL 'mongodb://x'"):
        QuotaRoutedChatModel(routes=[FakeVendorChatModel()], ledger="mongodb://x")


def test_a_ledger_file_that_is_not_ours_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "x.db").write_text("definitely not sqlite " * 100)
    llm = QuotaRoutedChatModel(
        routes=[FakeVendorChatModel()], ledger=f"sqlite:///{tmp_path}/x.db", cache=False
    )
    with pytest.raises(LedgerError, match=r"x\.db.*not a langchain-quota-router ledger"):
        llm.invoke("hi")


def test_routes_sharing_a_pool_may_not_disagree_on_its_limits() -> None:
    with pytest.raises(ConfigurationError, match="share pool 'org' but give it different"):
        QuotaRoutedChatModel(
            routes=[
                Route(FakeVendorChatModel(), name="a", pool="org", limits=["1/minute"]),
                Route(FakeVendorChatModel(), name="b", pool="org", limits=["2/minute"]),
            ],
            ledger="memory://",
        )


def test_unknown_argument_is_an_error_not_silently_ignored() -> None:
    with pytest.raises(ValueError, match="strategie"):
        QuotaRoutedChatModel(routes=[FakeVendorChatModel()], strategie="spread")  # type: ignore[call-arg]


def test_repr_never_shows_an_api_key() -> None:
    secret = "sk-test-0123456789abcdefSECRET"
    vendor = ChatOpenAI(model="gpt-4o-mini", api_key=secret)  # type: ignore[arg-type]
    llm = QuotaRoutedChatModel(routes=[Route(vendor, name="openai")], ledger="memory://")
    assert secret not in repr(llm)
    assert secret not in repr(llm.routes[0])
    assert secret not in str(llm._get_llm_string())
