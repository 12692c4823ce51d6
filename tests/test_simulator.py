"""The vendor simulator, driven by the real LangChain vendor classes over HTTP."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import groq
import httpx
import httpx2
import openai
import pytest
from langchain_core.exceptions import ModelRateLimitError
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.tools import tool

from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.simulator import (
    Fault,
    Reply,
    SimKey,
    Simulator,
    ToolCall,
    Vendor,
    vendor_model,
)
from langchain_quota_router.simulator._quota import go_duration

MODELS: dict[Vendor, str] = {
    "openai": "gpt-4o-mini",
    "groq": "llama-3.3-70b-versatile",
    "gemini": "gemini-2.5-flash",
    "cohere": "command-r",
}
VENDORS: list[Vendor] = list(MODELS)
# What a dropped connection surfaces as: the OpenAI SDK wraps it (also mid-stream),
# the groq SDK only before the body, the others let their HTTP library's error through
# (httpx, or httpx2 for the current google-genai and openai SDKs).
CUT_ERRORS = (
    openai.APIConnectionError,
    groq.APIConnectionError,
    httpx.TransportError,
    httpx2.TransportError,
)
# 2026-01-15 12:00:00 UTC: far from both UTC and Pacific midnight.
NOON_UTC = dt.datetime(2026, 1, 15, 12, tzinfo=dt.timezone.utc).timestamp()


@tool
def get_weather(city: str, days: int = 1) -> str:
    """Return the weather forecast for a city."""
    return f"sunny in {city} for {days} day(s)"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOON_UTC)


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[Simulator]:
    keys = [SimKey(f"key-{v}", v, rpm=100, tpm=100_000) for v in VENDORS]
    with Simulator(keys, clock=FakeClock(NOON_UTC)) as simulator:
        yield simulator


@pytest.fixture
def sim(shared_sim: Simulator) -> Simulator:
    """One server for the module (fast), with usage, stats and faults reset."""
    shared_sim.reset()
    return shared_sim


# Building a vendor model costs ~60 ms (its SDK loads the CA bundle), so tests
# that share the module's simulator share the models too.
_MODELS: weakref.WeakKeyDictionary[Simulator, dict[tuple[Any, ...], BaseChatModel]] = (
    weakref.WeakKeyDictionary()
)


def model_for(sim: Simulator, vendor: Vendor, key: str | None = None, **kw: Any) -> BaseChatModel:
    cache = _MODELS.setdefault(sim, {})
    wanted = (vendor, key, tuple(sorted(kw.items())))
    if wanted not in cache:
        cache[wanted] = vendor_model(sim, vendor, key or f"key-{vendor}", MODELS[vendor], **kw)
    return cache[wanted]


def join(chunks: Iterable[BaseMessage]) -> AIMessageChunk:
    """Add streamed chunks up the way LangChain does."""
    parts = list(chunks)
    assert parts
    assert all(isinstance(p, AIMessageChunk) for p in parts)
    total = cast(AIMessageChunk, parts[0])
    for part in parts[1:]:
        total = total + cast(AIMessageChunk, part)
    return total


def gemini_details(exc: BaseException) -> list[dict[str, Any]]:
    """The ``error.details`` of the google-genai error behind a LangChain error."""
    from google.genai import errors

    cause = exc.__cause__
    assert isinstance(cause, errors.ClientError)
    return cast(list[dict[str, Any]], cause.details["error"]["details"])


def quota_ids(exc: BaseException) -> list[str]:
    """The ``quotaId`` of every QuotaFailure violation in a Gemini 429."""
    return [v["quotaId"] for d in gemini_details(exc) for v in d.get("violations", [])]


def status_of(exc: BaseException) -> int:
    """The HTTP status a vendor exception carries, wherever the SDK put it."""
    for err in (exc, exc.__cause__):
        for attr in ("status_code", "code"):
            value = getattr(err, attr, None)
            if isinstance(value, int):
                return value
    raise AssertionError(f"no status on {exc!r}")


# --------------------------------------------------------------------- basics


def test_server_starts_quickly_and_stops() -> None:
    started = time.perf_counter()
    sim = Simulator([SimKey("k", "openai")]).start()
    elapsed = time.perf_counter() - started
    try:
        health = httpx.get(f"{sim.url}/_sim/health", timeout=2)
        assert health.json() == {"ok": True}
    finally:
        sim.stop()
    print(f"simulator started in {elapsed * 1000:.1f} ms")
    with pytest.raises(RuntimeError):
        _ = sim.url


def test_key_repr_never_shows_the_secret() -> None:
    key = SimKey("sk-very-secret", "openai", rpm=3)
    assert "sk-very-secret" not in repr(key)
    assert key.alias.startswith("key-")
    with pytest.raises(ValueError, match="vendor"):
        SimKey("k", "mistral")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.02, "20ms"),
        (7.66, "7.66s"),
        (179.56, "2m59.56s"),
        (3600, "1h0m0s"),
    ],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


# ----------------------------------------------------------------- per vendor


@pytest.mark.parametrize("vendor", VENDORS)
def test_invoke_reports_the_simulators_usage(sim: Simulator, vendor: Vendor) -> None:
    llm = model_for(sim, vendor)
    answer = llm.invoke("What is the capital of France?")
    again = llm.invoke("What is the capital of France?")

    assert isinstance(answer, AIMessage)
    assert answer.content == again.content
    assert "What is the capital of France?" in answer.text
    record = sim.requests(f"key-{vendor}")[-1]
    assert record.status == 200
    assert record.model == MODELS[vendor]
    assert answer.usage_metadata is not None
    assert answer.usage_metadata["input_tokens"] == record.input_tokens
    assert answer.usage_metadata["output_tokens"] == record.output_tokens
    stats = sim.stats(f"key-{vendor}")
    assert (stats.received, stats.served) == (2, 2)
    assert stats.output_tokens == 2 * record.output_tokens


@pytest.mark.parametrize("vendor", VENDORS)
def test_stream_has_several_chunks_and_usage(sim: Simulator, vendor: Vendor) -> None:
    llm = model_for(sim, vendor)
    text = llm.invoke("Tell me a short story").text
    chunks = list(llm.stream("Tell me a short story"))

    assert len(chunks) >= 4
    total = join(chunks)
    assert total.text == text
    record = sim.requests(f"key-{vendor}")[-1]
    assert record.stream
    if vendor == "cohere":
        # langchain-cohere's sync _stream leaves usage in additional_kwargs only.
        usage = total.additional_kwargs["token_count"]
    else:
        assert total.usage_metadata is not None
        usage = total.usage_metadata
    assert usage["input_tokens"] == record.input_tokens
    assert usage["output_tokens"] == record.output_tokens


@pytest.mark.parametrize("vendor", VENDORS)
async def test_astream_reports_usage(sim: Simulator, vendor: Vendor) -> None:
    llm = model_for(sim, vendor)
    chunks = [chunk async for chunk in llm.astream("Tell me a short story")]
    total = join(chunks)
    record = sim.requests(f"key-{vendor}")[-1]
    assert total.usage_metadata is not None
    assert total.usage_metadata["input_tokens"] == record.input_tokens
    assert total.usage_metadata["output_tokens"] == record.output_tokens


@pytest.mark.parametrize("vendor", VENDORS)
def test_tool_call_round_trip(sim: Simulator, vendor: Vendor) -> None:
    llm = model_for(sim, vendor).bind_tools([get_weather])
    question = HumanMessage("What is the weather in Paris?")
    call_msg = llm.invoke([question])

    assert isinstance(call_msg, AIMessage)
    assert len(call_msg.tool_calls) == 1
    call = call_msg.tool_calls[0]
    assert call["name"] == "get_weather"
    assert call["args"] == {"city": "x", "days": 1}  # built from the schema
    sent = sim.requests(f"key-{vendor}")[-1].body
    assert "get_weather" in json.dumps(sent["tools"])

    result = ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])
    final = llm.invoke([question, call_msg, result])
    assert not final.tool_calls
    assert "sunny in x" in final.text
    assert "get_weather" in final.text


@pytest.mark.parametrize("vendor", VENDORS)
def test_streamed_tool_call(sim: Simulator, vendor: Vendor) -> None:
    llm = model_for(sim, vendor).bind_tools([get_weather])
    total = join(list(llm.stream("What is the weather in Rome?")))
    calls = [(c["name"], c["args"]) for c in total.tool_calls]
    assert ("get_weather", {"city": "x", "days": 1}) in calls
    if vendor != "cohere":
        # langchain-cohere 0.6 gives every streamed tool-call chunk its own uuid
        # and repeats the whole call on the last chunk, so its merge has extras.
        assert len(calls) == 1


@pytest.mark.parametrize("vendor", VENDORS)
def test_scripted_replies_come_in_order(sim: Simulator, vendor: Vendor) -> None:
    key = f"key-{vendor}"
    sim.script(
        key,
        [
            Reply(tool_calls=[ToolCall("get_weather", {"city": "Oslo", "days": 3})]),
            Reply(text="It is snowing in Oslo.", output_tokens=42),
        ],
    )
    llm = model_for(sim, vendor).bind_tools([get_weather])
    first = llm.invoke("weather?")
    second = llm.invoke("weather?")
    third = llm.invoke("weather?")  # script used up: back to the default behaviour

    assert first.tool_calls[0]["args"] == {"city": "Oslo", "days": 3}
    assert second.text == "It is snowing in Oslo."
    assert second.usage_metadata is not None
    assert second.usage_metadata["output_tokens"] == 42
    assert third.tool_calls[0]["args"] == {"city": "x", "days": 1}


@pytest.mark.parametrize("vendor", VENDORS)
def test_max_tokens_truncates(sim: Simulator, vendor: Vendor) -> None:
    cap: dict[str, Any] = {
        "openai": {"max_tokens": 3},
        "groq": {"max_tokens": 3},
        "gemini": {"max_output_tokens": 3},
        "cohere": {},
    }[vendor]
    llm = model_for(sim, vendor, **cap)
    kwargs: dict[str, Any] = {"max_tokens": 3} if vendor == "cohere" else {}
    answer = llm.invoke("Please write a very long essay", **kwargs)
    assert answer.usage_metadata is not None
    assert answer.usage_metadata["output_tokens"] == 3
    assert len(answer.text) == 12


@pytest.mark.parametrize("vendor", VENDORS)
def test_429_when_the_minute_is_used_up_then_recovery(clock: FakeClock, vendor: Vendor) -> None:
    key = SimKey(f"tight-{vendor}", vendor, rpm=2)
    with Simulator([key], clock=clock) as sim:
        llm = model_for(sim, vendor, key.key)
        llm.invoke("one")
        clock.advance(10)
        llm.invoke("two")
        with pytest.raises(Exception) as caught:  # noqa: PT011 - vendor-specific types
            llm.invoke("three")

        assert status_of(caught.value) == 429
        stats = sim.stats(key.key)
        assert (stats.received, stats.served, stats.refused) == (3, 2, 1)  # no retry
        check_429_shape(vendor, caught.value, limit=2)

        clock.advance(30)  # the first request is 40 s old: still in the window
        with pytest.raises(Exception):  # noqa: PT011, B017
            llm.invoke("four")
        clock.advance(21)  # now 61 s: the first request has slid out
        assert llm.invoke("five").text
        assert sim.stats(key.key).served == 3


def check_429_shape(vendor: Vendor, exc: BaseException, limit: int) -> None:
    """Each vendor's own 429 format, as its SDK exposes it."""
    if vendor in ("openai", "groq"):
        assert isinstance(exc, (openai.RateLimitError, groq.RateLimitError))
        headers = exc.response.headers
        assert headers["retry-after"] == "50"  # oldest request frees in 50 s
        body = exc.response.json()["error"]
        assert body["code"] == "rate_limit_exceeded"
        assert body["type"] == "requests"
        assert "on requests per minute (RPM): Limit 2, Used 2, Requested 1" in body["message"]
        assert "Please try again in 50s." in body["message"]
        if vendor == "openai":
            assert headers["x-ratelimit-limit-requests"] == str(limit)
            assert headers["x-ratelimit-remaining-requests"] == "0"
    elif vendor == "gemini":
        from google.genai import errors

        cause = exc.__cause__
        assert isinstance(cause, errors.ClientError)
        assert cause.code == 429
        assert cause.status == "RESOURCE_EXHAUSTED"
        details = gemini_details(exc)
        failure = next(d for d in details if d["@type"].endswith("QuotaFailure"))
        violation = failure["violations"][0]
        assert violation["quotaId"] == "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
        assert violation["quotaValue"] == str(limit)
        retry = next(d for d in details if d["@type"].endswith("RetryInfo"))
        assert retry["retryDelay"] == "50s"
        assert "x-ratelimit-limit-requests" not in cause.response.headers
    else:
        from cohere.errors import TooManyRequestsError

        assert isinstance(exc, TooManyRequestsError)
        assert exc.body is not None
        assert f"limited to {limit} API calls / minute" in exc.body["message"]


def test_success_headers_openai_per_minute(sim: Simulator) -> None:
    answer = model_for(sim, "openai").invoke("hello")
    headers = answer.response_metadata["headers"]
    record = sim.requests("key-openai")[-1]
    assert headers["x-ratelimit-limit-requests"] == "100"
    assert headers["x-ratelimit-remaining-requests"] == "99"
    assert headers["x-ratelimit-reset-requests"] == "1m0s"
    assert headers["x-ratelimit-limit-tokens"] == "100000"
    used = record.input_tokens + record.output_tokens
    assert headers["x-ratelimit-remaining-tokens"] == str(100_000 - used)


def test_groq_headers_requests_per_day_tokens_per_minute(clock: FakeClock) -> None:
    key = SimKey("gsk", "groq", rpm=30, rpd=1000, tpm=12_000)
    with Simulator([key], clock=clock) as sim:
        raw = httpx.post(
            f"{sim.groq_base_url}/openai/v1/chat/completions",
            headers={"authorization": "Bearer gsk"},
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert raw.status_code == 200
    assert raw.headers["x-ratelimit-limit-requests"] == "1000"  # per day
    assert raw.headers["x-ratelimit-remaining-requests"] == "999"
    assert raw.headers["x-ratelimit-reset-requests"] == "12h0m0s"  # to UTC midnight
    assert raw.headers["x-ratelimit-limit-tokens"] == "12000"  # per minute
    usage = raw.json()["usage"]
    assert raw.headers["x-ratelimit-remaining-tokens"] == str(12_000 - usage["total_tokens"])


@pytest.mark.parametrize("vendor", ["openai", "groq"])
def test_429_carries_rate_limit_headers_and_retry_after(clock: FakeClock, vendor: Vendor) -> None:
    key = SimKey("k", vendor, rpm=2, rpd=1000, tpm=12_000)
    with Simulator([key], clock=clock) as sim:
        llm = model_for(sim, vendor, "k")
        llm.invoke("one")
        clock.advance(10)
        llm.invoke("two")
        with pytest.raises((openai.RateLimitError, groq.RateLimitError)) as caught:
            llm.invoke("three")
        used = sum(r.input_tokens + r.output_tokens for r in sim.requests("k"))
    error = caught.value
    assert isinstance(error, (openai.RateLimitError, groq.RateLimitError))
    headers = error.response.headers
    assert headers["retry-after"] == "50"  # the first request slides out in 50 s
    if vendor == "groq":  # requests per day
        assert headers["x-ratelimit-limit-requests"] == "1000"
        assert headers["x-ratelimit-remaining-requests"] == "998"
        assert headers["x-ratelimit-reset-requests"] == "11h59m50s"  # to UTC midnight
    else:  # requests per minute
        assert headers["x-ratelimit-limit-requests"] == "2"
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert headers["x-ratelimit-reset-requests"] == "50s"
    # Tokens per minute for both.
    assert headers["x-ratelimit-limit-tokens"] == "12000"
    assert headers["x-ratelimit-remaining-tokens"] == str(12_000 - used)
    assert headers["x-ratelimit-reset-tokens"] == "50s"


def test_openai_raw_stream_puts_usage_on_a_last_empty_chunk(sim: Simulator) -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi there"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream(
        "POST",
        f"{sim.openai_base_url}/chat/completions",
        headers={"authorization": "Bearer key-openai"},
        json=body,
    ) as raw:
        assert raw.headers["content-type"] == "text/event-stream"
        lines = [line for line in raw.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    last = json.loads(lines[-2][len("data: ") :])
    assert last["choices"] == []
    assert last["usage"]["prompt_tokens"] == 2  # ceil(len("hi there") / 4)
    assert all(json.loads(line[6:])["usage"] is None for line in lines[:-2])


def test_gemini_key_may_come_in_the_query(sim: Simulator) -> None:
    raw = httpx.post(
        f"{sim.url}/v1beta/models/gemini-2.5-flash:generateContent?key=key-gemini",
        json={"contents": [{"role": "user", "parts": [{"text": "hello"}]}]},
    )
    assert raw.status_code == 200
    usage = raw.json()["usageMetadata"]
    assert usage["promptTokenCount"] == 2
    assert usage["totalTokenCount"] == 2 + usage["candidatesTokenCount"]


def test_groq_tokens_per_minute_and_daily_walls(clock: FakeClock) -> None:
    with Simulator([SimKey("gsk", "groq", tpm=30, rpd=3)], clock=clock) as sim:
        llm = model_for(sim, "groq", "gsk")
        sim.script("gsk", [Reply("ok", output_tokens=25)])
        llm.invoke("hello")
        with pytest.raises(groq.RateLimitError) as caught:
            llm.invoke("hello there friend")
        error = caught.value.response.json()["error"]
        assert error["type"] == "tokens"
        assert "on tokens per minute (TPM): Limit 30, Used 27, Requested 5" in error["message"]

        clock.advance(61)
        llm.invoke("a")
        clock.advance(61)
        llm.invoke("b")
        clock.advance(61)
        with pytest.raises(groq.RateLimitError) as caught:
            llm.invoke("c")
        error = caught.value.response.json()["error"]
        assert "requests per day (RPD): Limit 3, Used 3" in error["message"]
        retry_after = int(caught.value.response.headers["retry-after"])
        assert retry_after == pytest.approx(12 * 3600 - 183, abs=1)


def test_gemini_day_resets_at_pacific_midnight(clock: FakeClock) -> None:
    # 07:59 UTC on Jan 15 is 23:59 on Jan 14 in Los Angeles (PST, UTC-8).
    clock.set(dt.datetime(2026, 1, 15, 7, 59, tzinfo=dt.timezone.utc).timestamp())
    keys = [SimKey("g", "gemini", rpd=1), SimKey("q", "groq", rpd=1)]
    with Simulator(keys, clock=clock) as sim:
        gemini = model_for(sim, "gemini", "g")
        groq_llm = model_for(sim, "groq", "q")
        gemini.invoke("hi")
        groq_llm.invoke("hi")
        with pytest.raises(ModelRateLimitError) as caught:
            gemini.invoke("hi")
        assert quota_ids(caught.value) == ["GenerateRequestsPerDayPerProjectPerModel-FreeTier"]
        assert {
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": "60s",
        } in gemini_details(caught.value)

        clock.advance(61)  # 00:00:01 in Los Angeles, 08:00:01 UTC
        assert gemini.invoke("hi").text
        with pytest.raises(groq.RateLimitError):
            groq_llm.invoke("hi")  # Groq's day is a UTC day: still used up


def test_gemini_token_limit_counts_input_only(clock: FakeClock) -> None:
    with Simulator([SimKey("g", "gemini", tpm=20)], clock=clock) as sim:
        llm = model_for(sim, "gemini", "g")
        sim.script("g", [Reply("x" * 400)])  # 100 output tokens: not counted
        llm.invoke("a" * 40)  # 10 input tokens
        llm.invoke("b" * 40)  # 10 more: exactly at the limit
        with pytest.raises(ModelRateLimitError) as caught:
            llm.invoke("c")
        assert quota_ids(caught.value) == ["GenerateContentInputTokensPerModelPerMinute-FreeTier"]


@pytest.mark.parametrize("vendor", VENDORS)
def test_unknown_or_disabled_key_is_401(sim: Simulator, vendor: Vendor) -> None:
    with pytest.raises(Exception) as caught:  # noqa: PT011
        model_for(sim, vendor, "not-a-key").invoke("hi")
    assert status_of(caught.value) == 401
    assert sim.stats("not-a-key").unauthorized == 1

    sim.disable(f"key-{vendor}")
    with pytest.raises(Exception) as caught:  # noqa: PT011
        model_for(sim, vendor).invoke("hi")
    assert status_of(caught.value) == 401
    sim.enable(f"key-{vendor}")
    assert model_for(sim, vendor).invoke("hi").text


def test_key_of_another_vendor_is_401(sim: Simulator) -> None:
    with pytest.raises(openai.AuthenticationError):
        model_for(sim, "openai", "key-groq").invoke("hi")


@pytest.mark.parametrize("vendor", VENDORS)
def test_server_error_fault_is_not_retried_nor_counted(sim: Simulator, vendor: Vendor) -> None:
    key = f"key-{vendor}"
    sim.inject(key, Fault.SERVER_ERROR)
    llm = model_for(sim, vendor)
    with pytest.raises(Exception) as caught:  # noqa: PT011
        llm.invoke("hi")
    assert status_of(caught.value) == 500
    stats = sim.stats(key)
    assert (stats.received, stats.faults, stats.served) == (1, 1, 0)
    assert llm.invoke("hi").text  # the fault was for one request only


@pytest.mark.parametrize("vendor", VENDORS)
def test_overloaded_fault_in_a_stream(sim: Simulator, vendor: Vendor) -> None:
    sim.inject(f"key-{vendor}", Fault.OVERLOADED, status=503)
    with pytest.raises(Exception) as caught:  # noqa: PT011
        list(model_for(sim, vendor).stream("hi"))
    assert status_of(caught.value) == 503
    assert sim.stats(f"key-{vendor}").received == 1


def test_faults_do_not_use_quota(clock: FakeClock) -> None:
    with Simulator([SimKey("k", "openai", rpm=1)], clock=clock) as sim:
        sim.inject("k", Fault.SERVER_ERROR, times=2)
        sim.inject("k", Fault.UNAUTHORIZED)
        llm = model_for(sim, "openai", "k")
        for _ in range(3):
            with pytest.raises(Exception):  # noqa: PT011, B017
                llm.invoke("hi")
        assert llm.invoke("hi").text  # the one request the minute allows
        stats = sim.stats("k")
        assert (stats.faults, stats.unauthorized, stats.served) == (3, 1, 1)


def test_slow_fault_trips_the_client_timeout(sim: Simulator) -> None:
    sim.inject("key-openai", Fault.SLOW, delay=0.4)
    llm = model_for(sim, "openai", timeout=0.15)
    with pytest.raises(openai.APITimeoutError):
        llm.invoke("hi")
    assert sim.stats("key-openai").received == 1


@pytest.mark.parametrize("vendor", VENDORS)
def test_cut_stream_after_some_chunks(sim: Simulator, vendor: Vendor) -> None:
    sim.inject(f"key-{vendor}", Fault.CUT_STREAM, after_chunks=2)
    received: list[str] = []

    def consume() -> None:
        for chunk in model_for(sim, vendor).stream("Tell me a short story"):
            if chunk.text:
                received.append(chunk.text)

    with pytest.raises(CUT_ERRORS):
        consume()
    assert len(received) == 2
    stats = sim.stats(f"key-{vendor}")
    assert (stats.faults, stats.served) == (1, 0)


def test_cut_before_first_chunk_and_non_streaming(sim: Simulator) -> None:
    sim.inject("key-groq", Fault.CUT_STREAM, times=2)
    llm = model_for(sim, "groq")
    with pytest.raises(CUT_ERRORS):
        list(llm.stream("hi"))
    with pytest.raises(CUT_ERRORS):
        llm.invoke("hi")
    assert llm.invoke("hi").text
    assert sim.stats("key-groq").received == 3


def test_reset_forgets_usage(clock: FakeClock) -> None:
    with Simulator([SimKey("k", "cohere", rpm=1)], clock=clock) as sim:
        llm = model_for(sim, "cohere", "k")
        llm.invoke("hi")
        sim.reset()
        assert sim.stats("k").received == 0
        assert llm.invoke("hi").text


# ------------------------------------------------------------- own process


@pytest.mark.slow
def test_runs_as_its_own_process(tmp_path: Path) -> None:
    config = tmp_path / "sim.json"
    config.write_text(json.dumps({"keys": [{"key": "k1", "vendor": "openai", "rpm": 5}]}))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "langchain_quota_router.simulator",
            "--port",
            "0",
            "--config",
            str(config),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        answer = httpx.post(
            f"{url}/v1/chat/completions",
            headers={"authorization": "Bearer k1"},
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            timeout=5,
        )
        assert answer.status_code == 200
        assert answer.headers["x-ratelimit-remaining-requests"] == "4"
    finally:
        process.terminate()
        _, err = process.communicate(timeout=5)
    assert process.returncode == 0
    assert "k1" not in err  # only key aliases are printed


def test_bad_config_is_reported(tmp_path: Path) -> None:
    from langchain_quota_router.simulator import main

    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"keys": [{"key": "k", "vendor": "nobody"}]}))
    assert main(["--config", str(config)]) == 2


def test_config_may_hold_models(tmp_path: Path) -> None:
    from langchain_quota_router.simulator import SimModel, main
    from langchain_quota_router.simulator._cli import load_models

    config = tmp_path / "sim.json"
    retired = {"id": "llama-3.3-70b-versatile", "retired": True, "successor": "m"}
    config.write_text(json.dumps({"keys": [], "models": {"groq": ["m", retired]}}))
    assert load_models(config) == {
        "groq": ["m", SimModel("llama-3.3-70b-versatile", retired=True, successor="m")]
    }
    config.write_text(json.dumps({"keys": []}))
    assert load_models(config) is None
    bad = {"keys": [], "models": {"cohere": [{"id": "c", "retired_style": "decommissioned"}]}}
    config.write_text(json.dumps(bad))
    assert main(["--config", str(config)]) == 2
