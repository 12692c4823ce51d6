"""quota-router proxy: OpenAI's wire over the router, as a client sees it on loopback."""

from __future__ import annotations

import base64
import json
import logging
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from support.proxy import FakeEmbeddings, running_proxy

from langchain_quota_router import QuotaRoutedChatModel, Route
from langchain_quota_router.proxy.stream import ChunkWriter
from langchain_quota_router.proxy.wire import ChatRequest, plan_chat
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.testing import FakeVendorChatModel

CLIENT_KEY = "sk-qr-client-key-0123456789abcdef"
VENDOR_KEY = "gsk_VendorSecret0123456789abcdefABCDEF"
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
HI = [{"role": "user", "content": "hi"}]


def _router(clock: FakeClock, *routes: Route) -> QuotaRoutedChatModel:
    return QuotaRoutedChatModel(routes=list(routes), ledger="memory://", cache=False, clock=clock)


def _route(name: str, script: list[Any] | None = None, **options: Any) -> Route:
    model = FakeVendorChatModel(model=f"{name}-model", script=script or [], **options)
    return Route(model, name=name, limits=options.pop("limits", ["100/day"]))


@pytest.fixture
def served(clock: FakeClock) -> Iterator[tuple[httpx.Client, QuotaRoutedChatModel]]:
    router = _router(
        clock,
        _route(
            "groq",
            [
                "Hello from groq, friend",
                {"tool_calls": [{"name": "weather", "args": {"city": "Oslo"}}]},
            ],
        ),
        _route("gemini", ["Hello from gemini"]),
    )
    with running_proxy(router) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        yield http, router


def _events(body: str) -> list[Any]:
    assert "\r" not in body
    assert body.endswith("\n\n")
    out = []
    for block in body.split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        data = block[len("data: ") :]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


# ------------------------------------------------------------------ answers


def test_a_chat_completion_is_routed_and_answered_in_openai_shape(
    served: tuple[httpx.Client, QuotaRoutedChatModel],
) -> None:
    http, router = served
    reply = http.post("/chat/completions", json={"model": "quota-router", "messages": HI})
    assert reply.status_code == 200
    body = reply.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hello from groq, friend",
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] > 0
    assert (
        body["usage"]["total_tokens"]
        == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )
    assert reply.headers["x-quota-router-route"] == "groq"
    assert router.get_stats()["calls_per_route"]["groq"] == 1


def test_a_model_naming_a_route_goes_there_first(
    served: tuple[httpx.Client, QuotaRoutedChatModel],
) -> None:
    http, _ = served
    reply = http.post("/chat/completions", json={"model": "gemini", "messages": HI})
    assert reply.json()["choices"][0]["message"]["content"] == "Hello from gemini"
    assert reply.headers["x-quota-router-route"] == "gemini"


def test_models_lists_the_router_and_its_routes_and_an_unknown_one_is_404(
    served: tuple[httpx.Client, QuotaRoutedChatModel],
) -> None:
    http, _ = served
    listed = http.get("/models").json()
    assert [m["id"] for m in listed["data"]] == ["quota-router", "groq", "gemini"]
    assert all(m["object"] == "model" for m in listed["data"])
    reply = http.post("/chat/completions", json={"model": "gpt-4o", "messages": HI})
    assert reply.status_code == 404
    error = reply.json()["error"]
    assert error["param"] == "model"
    assert error["code"] == "model_not_found"
    assert "gpt-4o" in error["message"]


def test_messages_of_every_role_reach_the_vendor(clock: FakeClock) -> None:
    vendor = FakeVendorChatModel(script=["done"])
    router = _router(clock, Route(vendor, name="only", limits=["9/day"]))
    messages = [
        {"role": "developer", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    with running_proxy(router) as server:
        reply = httpx.post(
            f"{server.url}/chat/completions",
            json={
                "model": "quota-router",
                "messages": messages,
                "tools": [WEATHER],
                "tool_choice": "required",
                "parallel_tool_calls": False,
                "max_completion_tokens": 50,
                "temperature": 0.2,
                "stop": "END",
                "seed": 7,
                "user": "someone",
            },
        )
    assert reply.status_code == 200, reply.text
    seen = vendor.kwargs_seen[0]
    assert seen["tool_choice"] == "any"
    assert seen["parallel_tool_calls"] is False
    assert seen["max_tokens"] == 50
    assert seen["temperature"] == 0.2
    assert "seed" not in seen  # kept by the request model, not sent to vendors


def test_tool_calls_come_back_as_openai_tool_calls(
    served: tuple[httpx.Client, QuotaRoutedChatModel],
) -> None:
    http, _ = served
    http.post("/chat/completions", json={"model": "groq", "messages": HI})
    reply = http.post(
        "/chat/completions", json={"model": "groq", "messages": HI, "tools": [WEATHER]}
    )
    choice = reply.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function"
    assert call["function"] == {"name": "weather", "arguments": '{"city": "Oslo"}'}
    assert call["id"]


# ------------------------------------------------------------------ streams


def test_a_stream_is_openai_chunks_role_first_then_finish_usage_and_done(
    served: tuple[httpx.Client, QuotaRoutedChatModel],
) -> None:
    http, _ = served
    request = {
        "model": "groq",
        "messages": HI,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with http.stream("POST", "/chat/completions", json=request) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = _events(reply.read().decode())
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello from groq, friend"
    assert len([c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]) > 1
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] > 0


def test_without_include_usage_no_usage_chunk(
    served: tuple[httpx.Client, QuotaRoutedChatModel],
) -> None:
    http, _ = served
    with http.stream(
        "POST", "/chat/completions", json={"model": "groq", "messages": HI, "stream": True}
    ) as reply:
        events = _events(reply.read().decode())
    assert all(e == "[DONE]" or e["choices"] for e in events)


def test_streamed_tool_calls_have_an_integer_index_and_the_id_only_first() -> None:
    from langchain_core.messages import AIMessageChunk
    from langchain_core.messages.tool import tool_call_chunk

    writer = ChunkWriter("quota-router")
    pieces = [  # Gemini-style: no index; then OpenAI-style: index, id once
        tool_call_chunk(name="weather", args='{"city": ', id=None, index=None),
        tool_call_chunk(name=None, args='"Oslo"}', id=None, index=None),
        tool_call_chunk(name="news", args="{}", id="call_b", index=None),
    ]
    events = [
        e for p in pieces for e in writer.take(AIMessageChunk(content="", tool_call_chunks=[p]))
    ]
    deltas = [json.loads(e[6:])["choices"][0]["delta"]["tool_calls"][0] for e in events]
    assert [d["index"] for d in deltas] == [0, 0, 1]
    assert deltas[0]["id"].startswith("call_")
    assert deltas[0]["function"]["name"] == "weather"
    assert "id" not in deltas[1]
    assert "name" not in deltas[1]["function"]
    assert deltas[2]["id"] == "call_b"
    finish = json.loads(writer.finish(False)[0][6:])
    assert finish["choices"][0]["finish_reason"] == "tool_calls"


def test_an_error_after_the_first_chunk_ends_the_stream_with_an_error_the_sdk_raises(
    clock: FakeClock,
) -> None:
    router = _router(clock, _route("flaky", ["one two three four five"], fail_after_chunks=2))
    with running_proxy(router) as server:
        with httpx.stream(
            "POST",
            f"{server.url}/chat/completions",
            json={
                "model": "quota-router",
                "messages": HI,
                "stream": True,
            },
        ) as reply:
            events = _events(reply.read().decode())
        assert "[DONE]" not in events
        assert events[-1]["error"]["type"] == "api_error"
        assert "mid-stream" in events[-1]["error"]["message"]
        client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)
        stream = client.chat.completions.create(model="quota-router", messages=HI, stream=True)  # type: ignore[arg-type]
        got: list[Any] = []

        def read() -> None:
            got.extend(stream)

        with pytest.raises(openai.APIError, match="mid-stream"):
            read()
        assert got  # the text before the error arrived, then the SDK raised


# ------------------------------------------------------------------- errors


def test_every_route_full_is_429_with_retry_after_and_each_routes_reason(clock: FakeClock) -> None:
    router = _router(clock, _route("groq", limits=["1/day"]), _route("gemini", limits=["1/day"]))
    with running_proxy(router) as server:
        for _ in range(2):
            assert (
                httpx.post(
                    f"{server.url}/chat/completions", json={"model": "quota-router", "messages": HI}
                ).status_code
                == 200
            )
        for stream in (False, True):
            reply = httpx.post(
                f"{server.url}/chat/completions",
                json={"model": "quota-router", "messages": HI, "stream": stream},
            )
            assert reply.status_code == 429
            assert reply.headers["retry-after"] == "86400"  # the fake clock is at midnight
            error = reply.json()["error"]
            assert error["type"] == "rate_limit_error"
            assert set(error["reasons"]) == {"groq", "gemini"}
            assert error["resets_at"].startswith("2026-01-02T00:00:00")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": HI}, "model"),
        (
            {"model": "quota-router", "messages": [{"role": "robot", "content": "x"}]},
            "messages[0].role",
        ),
        ({"model": "quota-router", "messages": HI, "temperature": 5}, "temperature"),
        ({"model": "quota-router", "messages": HI, "n": 2}, "n"),
        ({"model": "quota-router", "messages": HI, "max_tokens": 0}, "max_tokens"),
        (
            {"model": "quota-router", "messages": [{"role": "tool", "content": "x"}]},
            "messages[0].tool_call_id",
        ),
        (
            {
                "model": "quota-router",
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{oops"},
                            }
                        ],
                    }
                ],
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            {
                "model": "quota-router",
                "messages": HI,
                "tools": [WEATHER],
                "tool_choice": {"type": "function", "function": {"name": "nope"}},
            },
            "tool_choice.function.name",
        ),
        (
            {"model": "quota-router", "messages": HI, "response_format": {"type": "xml"}},
            "response_format.type",
        ),
    ],
)
def test_a_bad_request_is_400_naming_the_field(
    served: tuple[httpx.Client, QuotaRoutedChatModel], body: dict[str, Any], param: str
) -> None:
    http, router = served
    reply = http.post("/chat/completions", json=body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert param in error["message"]
    assert router.get_stats()["total_calls"] == 0


def test_a_body_that_is_not_json_is_400(served: tuple[httpx.Client, QuotaRoutedChatModel]) -> None:
    http, _ = served
    reply = http.post(
        "/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert reply.status_code == 400
    assert "not valid JSON" in reply.json()["error"]["message"]


# --------------------------------------------------------- structured output


def test_json_object_asks_each_vendor_in_json_mode(clock: FakeClock) -> None:
    vendor = FakeVendorChatModel(script=['{"a": 1}'])
    router = _router(clock, Route(vendor, name="only", limits=["9/day"]))
    with running_proxy(router) as server:
        reply = httpx.post(
            f"{server.url}/chat/completions",
            json={
                "model": "quota-router",
                "messages": HI,
                "response_format": {"type": "json_object"},
            },
        )
    assert json.loads(reply.json()["choices"][0]["message"]["content"]) == {"a": 1}
    assert vendor.kwargs_seen[0]["response_format"] == {"type": "json_object"}


def test_json_schema_is_asked_for_through_a_forced_tool_and_answered_as_content() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    request = ChatRequest.model_validate(
        {
            "model": "m",
            "messages": HI,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "Person", "schema": schema},
            },
        }
    )
    plan = plan_chat(request, None)
    assert plan.tools == [
        {"type": "function", "function": {"name": "Person", "parameters": schema}}
    ]
    assert plan.bind == {"tool_choice": "Person"}
    assert plan.schema_tool == "Person"


# -------------------------------------------------------------- embeddings


def test_embeddings_float_and_base64(clock: FakeClock) -> None:
    embeddings = FakeEmbeddings()
    router = _router(clock, _route("groq"))
    with running_proxy(router, embeddings=embeddings) as server:
        url = f"{server.url}/embeddings"
        floats = httpx.post(
            url, json={"model": "quota-router-embeddings", "input": ["ab", "abcd"]}
        ).json()
        packed = httpx.post(
            url,
            json={"model": "quota-router-embeddings", "input": "abc", "encoding_format": "base64"},
        ).json()
        tokens = httpx.post(url, json={"model": "quota-router-embeddings", "input": [[1, 2]]})
        models = [m["id"] for m in httpx.get(f"{server.url}/models").json()["data"]]
    assert [d["embedding"] for d in floats["data"]] == [[2.0, 0.5, -0.25], [4.0, 0.5, -0.25]]
    assert [d["index"] for d in floats["data"]] == [0, 1]
    assert floats["usage"]["prompt_tokens"] == 2
    vector = struct.unpack("<3f", base64.b64decode(packed["data"][0]["embedding"]))
    assert vector == (3.0, 0.5, -0.25)
    assert tokens.status_code == 400
    assert tokens.json()["error"]["param"] == "input"
    assert "quota-router-embeddings" in models
    assert embeddings.calls == [["ab", "abcd"], ["abc"]]


def test_the_routers_own_embeddings_are_served(clock: FakeClock) -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from langchain_quota_router import QuotaRoutedEmbeddings

    router = _router(clock, _route("groq"))
    router.embeddings.append(
        QuotaRoutedEmbeddings(
            [Route(DeterministicFakeEmbedding(size=3), name="embed", limits=["5/day"])],
            ledger=router.ledger_backend,
            cache=False,
            clock=clock,
        )
    )
    with running_proxy(router) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        reply = http.post(
            "/embeddings", json={"model": "quota-router-embeddings", "input": ["a", "b"]}
        )
    assert reply.status_code == 200
    assert [len(item["embedding"]) for item in reply.json()["data"]] == [3, 3]
    assert {u.pool: u.used for u in router.usage()}["embed"] == 1


def test_without_embeddings_the_endpoint_is_404(
    served: tuple[httpx.Client, QuotaRoutedChatModel],
) -> None:
    http, _ = served
    reply = http.post("/embeddings", json={"model": "quota-router-embeddings", "input": "x"})
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "model_not_found"


# ------------------------------------------------------------ client keys


def test_beyond_loopback_a_key_is_generated_and_required(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QUOTA_ROUTER_PROXY_KEYS", raising=False)
    router = _router(clock, _route("groq"))
    with running_proxy(router, host="0.0.0.0") as server:
        assert server.key_generated
        (key,) = server.app.keys.keys()
        url = f"http://127.0.0.1:{server.server_address[1]}/v1/models"
        assert httpx.get(url).status_code == 401
        assert (
            httpx.get(
                url, headers={"authorization": "Bearer sk-qr-wrong-key-0123456789"}
            ).status_code
            == 401
        )
        assert httpx.get(url, headers={"authorization": f"Bearer {key}"}).status_code == 200
        assert (
            httpx.get(f"http://127.0.0.1:{server.server_address[1]}/health").json()["status"]
            == "ok"
        )


def test_usage_is_counted_per_client_key_fingerprint_and_keys_never_shown(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    other = "sk-qr-other-client-fedcba9876543210"
    vendor = FakeVendorChatModel(script=["hi", RuntimeError(f"boom {VENDOR_KEY}")])
    router = _router(clock, Route(vendor, name="groq", limits=["9/day"]))
    with running_proxy(router, client_keys=[CLIENT_KEY, other]) as server:
        mine = {"authorization": f"Bearer {CLIENT_KEY}"}
        ok = httpx.post(
            f"{server.url}/chat/completions",
            headers=mine,
            json={"model": "quota-router", "messages": HI},
        )
        assert ok.status_code == 200
        failed = httpx.post(
            f"{server.url}/chat/completions",
            headers={"x-api-key": other},
            json={"model": "quota-router", "messages": HI},
        )
        assert failed.status_code >= 400
        wrong = httpx.get(f"{server.url}/usage", headers={"authorization": f"Bearer {CLIENT_KEY}x"})
        usage = httpx.get(f"{server.url}/usage", headers=mine).json()
        metrics = httpx.get(f"{server.url.removesuffix('/v1')}/metrics", headers=mine).text
    assert wrong.status_code == 401
    rows = {row["client"]: row for row in usage["data"]}
    from langchain_quota_router.quota.secrets import fingerprint

    me, them = fingerprint(CLIENT_KEY, length=12), fingerprint(other, length=12)
    assert usage["you"] == me
    assert rows[me]["requests"] == 1
    assert rows[me]["errors"] == 0
    assert rows[me]["tokens_out"] > 0
    assert rows[them]["requests"] == 1
    assert rows[them]["errors"] == 1
    assert router.get_stats()["fleet"]["clients"][me]["requests"] == 1
    assert f'quota_router_fleet_client_requests_total{{client="{me}"}} 1.0' in metrics
    everything = " ".join(
        [ok.text, failed.text, wrong.text, json.dumps(usage), metrics, caplog.text]
    )
    assert CLIENT_KEY not in everything
    assert other not in everything
    assert VENDOR_KEY not in everything
    assert CLIENT_KEY[-12:] not in everything


def test_without_keys_only_this_machine_is_served(
    served: tuple[httpx.Client, QuotaRoutedChatModel],
) -> None:
    http, _ = served
    assert http.get("/models").status_code == 200
    # A DNS-rebinding page reaches loopback under its own name; a web page sends its Origin.
    assert http.get("/models", headers={"host": "evil.example"}).status_code == 403
    assert http.get("/models", headers={"origin": "https://evil.example"}).status_code == 403
    assert http.get("/models", headers={"x-forwarded-for": "203.0.113.9"}).status_code == 403
    assert http.get("/models", headers={"origin": "http://localhost:3000"}).status_code == 200


def test_health_says_ok(served: tuple[httpx.Client, QuotaRoutedChatModel]) -> None:
    http, _ = served
    assert http.get(str(http.base_url).removesuffix("/v1/") + "/health").json() == {
        "status": "ok",
        "in_flight": 0,
    }


def test_the_cli_refuses_zero_workers(capsys: pytest.CaptureFixture[str]) -> None:
    from langchain_quota_router.cli import main

    assert main(["proxy", "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
