"""Real OpenAI clients, unchanged, against the proxy: the ``openai`` SDK (sync and
async), LangChain's ``ChatOpenAI`` and ``curl``. Each answers what it would from OpenAI."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from langchain_core.messages import AIMessage, BaseMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel
from support.proxy import FakeEmbeddings, running_proxy

from langchain_quota_router import QuotaRoutedChatModel, Route
from langchain_quota_router.proxy.server import ProxyServer
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.testing import FakeVendorChatModel

KEY = "sk-qr-conformance-0123456789abcdef"
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
HI = [{"role": "user", "content": "Say hello"}]


class Person(BaseModel):
    name: str
    age: int


class ToolAwareVendor(FakeVendorChatModel):
    """Calls the tool it is made to (or the first one) with sample arguments;
    otherwise says hello in several words."""

    def _next(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        tools = kwargs.get("tools") or []
        if tools:
            choice = kwargs.get("tool_choice")
            named = choice.get("function", {}).get("name") if isinstance(choice, dict) else choice
            tool = next((t for t in tools if t["function"]["name"] == named), tools[0])
            props = tool["function"].get("parameters", {}).get("properties", {})
            args = {
                k: (41 if v.get("type") == "integer" else "Ada" if k == "name" else "Oslo")
                for k, v in props.items()
            }
            self.script = [{"tool_calls": [{"name": tool["function"]["name"], "args": args}]}]
        else:
            self.script = ["Hello there, how are you today?"]
        return super()._next(messages, kwargs)


@pytest.fixture(scope="module")
def server() -> Iterator[ProxyServer]:
    router = QuotaRoutedChatModel(
        routes=[Route(ToolAwareVendor(chunk_words=2), name="fake", limits=["1000/day"])],
        ledger="memory://",
        cache=False,
        clock=FakeClock(),
    )
    with running_proxy(router, client_keys=[KEY], embeddings=FakeEmbeddings()) as running:
        yield running


@pytest.fixture
def sdk(server: ProxyServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0)


@pytest.fixture
def async_sdk(server: ProxyServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.url, api_key=KEY, max_retries=0)


@pytest.fixture
def chat(server: ProxyServer) -> ChatOpenAI:
    return ChatOpenAI(model="quota-router", base_url=server.url, api_key=KEY, max_retries=0)  # type: ignore[arg-type]


# ------------------------------------------------------------ the openai SDK


def test_sdk_completion(sdk: openai.OpenAI) -> None:
    answer = sdk.chat.completions.create(model="quota-router", messages=HI)  # type: ignore[arg-type]
    assert answer.choices[0].message.content == "Hello there, how are you today?"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert answer.usage.prompt_tokens > 0


def test_sdk_stream_with_usage(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="fake",
        messages=HI,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello there, how are you today?"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_sdk_tools_streamed_and_not(sdk: openai.OpenAI) -> None:
    answer = sdk.chat.completions.create(
        model="quota-router",
        messages=HI,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required",
    )
    (call,) = answer.choices[0].message.tool_calls or []
    assert call.function.name == "weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Oslo"}  # type: ignore[union-attr]
    with sdk.chat.completions.stream(
        model="quota-router",
        messages=HI,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
    ) as stream:
        final = stream.get_final_completion()
    (streamed,) = final.choices[0].message.tool_calls or []
    assert streamed.function.name == "weather"
    assert json.loads(streamed.function.arguments) == {"city": "Oslo"}
    assert final.choices[0].finish_reason == "tool_calls"


def test_sdk_json_schema_parses_into_the_model(sdk: openai.OpenAI) -> None:
    parsed = sdk.chat.completions.parse(
        model="quota-router",
        messages=HI,  # type: ignore[arg-type]
        response_format=Person,
    )
    assert parsed.choices[0].message.parsed == Person(name="Ada", age=41)


async def test_async_sdk_completion_and_stream(async_sdk: openai.AsyncOpenAI) -> None:
    answer = await async_sdk.chat.completions.create(model="quota-router", messages=HI)  # type: ignore[arg-type]
    assert answer.choices[0].message.content == "Hello there, how are you today?"
    stream = await async_sdk.chat.completions.create(
        model="quota-router",
        messages=HI,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith(
        "Hello"
    )
    assert chunks[-1].usage is not None


def test_sdk_embeddings_float_and_base64(sdk: openai.OpenAI) -> None:
    floats = sdk.embeddings.create(
        model="quota-router-embeddings", input=["ab", "abc"], encoding_format="float"
    )
    assert [d.embedding for d in floats.data] == [[2.0, 0.5, -0.25], [3.0, 0.5, -0.25]]
    packed = sdk.embeddings.create(
        model="quota-router-embeddings", input="abcd", encoding_format="base64"
    )
    assert isinstance(packed.data[0].embedding, str)
    default = sdk.embeddings.create(model="quota-router-embeddings", input="abcd")
    assert default.data[0].embedding == [4.0, 0.5, -0.25]  # the SDK asks for base64, decodes


def test_sdk_sees_models_and_errors(sdk: openai.OpenAI) -> None:
    assert [m.id for m in sdk.models.list()] == ["quota-router", "fake", "quota-router-embeddings"]
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="gpt-5", messages=HI)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="temperature"):
        sdk.chat.completions.create(model="fake", messages=HI, temperature=9)  # type: ignore[arg-type]
    bad = openai.OpenAI(base_url=sdk.base_url, api_key="sk-not-a-client-key-000000", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


# ------------------------------------------------------------------ ChatOpenAI


def test_chat_openai_invoke_and_stream(chat: ChatOpenAI) -> None:
    assert chat.invoke("Say hello").text == "Hello there, how are you today?"
    pieces = list(chat.stream("Say hello", stream_usage=True))
    assert len(pieces) > 2
    merged = pieces[0]
    for piece in pieces[1:]:
        merged += piece  # type: ignore[assignment]
    assert merged.text == "Hello there, how are you today?"
    assert merged.usage_metadata is not None
    assert merged.usage_metadata["output_tokens"] > 0


def test_chat_openai_bind_tools(chat: ChatOpenAI) -> None:
    answer = chat.bind_tools([WEATHER], tool_choice="weather").invoke("Weather?")
    assert answer.tool_calls[0]["name"] == "weather"
    assert answer.tool_calls[0]["args"] == {"city": "Oslo"}
    streamed = list(chat.bind_tools([WEATHER]).stream("Weather?"))
    merged = streamed[0]
    for piece in streamed[1:]:
        merged += piece  # type: ignore[assignment]
    assert merged.tool_calls[0]["args"] == {"city": "Oslo"}  # type: ignore[attr-defined]


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_chat_openai_with_structured_output(chat: ChatOpenAI, method: str) -> None:
    person = chat.with_structured_output(Person, method=method).invoke("Who?")  # type: ignore[arg-type]
    assert person == Person(name="Ada", age=41)


# ------------------------------------------------------------------------ curl


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl(server: ProxyServer) -> None:
    def curl(*args: str) -> str:
        out = subprocess.run(
            ["curl", "-sS", "--fail-with-body", "-H", f"Authorization: Bearer {KEY}", *args],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
        return out.stdout

    body = json.dumps({"model": "quota-router", "messages": HI})
    headers = ["-H", "Content-Type: application/json"]
    answer = json.loads(curl(*headers, "-d", body, f"{server.url}/chat/completions"))
    assert answer["choices"][0]["message"]["content"].startswith("Hello")
    streamed = curl(
        "-N",
        *headers,
        "-d",
        json.dumps({**json.loads(body), "stream": True}),
        f"{server.url}/chat/completions",
    )
    assert streamed.endswith("data: [DONE]\n\n")
    assert streamed.startswith('data: {"id":"chatcmpl-')
    assert "fake" in curl(f"{server.url}/models")
