"""One call path, four ways in: what LangChain users rely on holds on every path.

Typed errors, vendor settings honoured, message adaptation, tools and their options,
tracing, cancellation and the cache key, each on invoke, ainvoke, stream and astream.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import vendor_errors as errors
from call_paths import ask
from langchain_core.caches import InMemoryCache
from langchain_core.callbacks import (
    BaseCallbackHandler,
    CallbackManagerForLLMRun,
)
from langchain_core.exceptions import (
    ContextOverflowError,
    ModelAPIError,
    ModelAuthenticationError,
    ModelInvalidRequestError,
    ModelRateLimitError,
)
from langchain_core.globals import set_llm_cache
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult, LLMResult
from langchain_core.rate_limiters import InMemoryRateLimiter
from langchain_core.tools import tool
from pydantic import PrivateAttr
from support.routers import router

from langchain_quota_router import NoRouteError, QuotaExhaustedError, Route
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.testing import FakeVendorChatModel


class Recording(FakeVendorChatModel):
    """A fake that remembers the messages it was sent and which method served."""

    _seen: list[list[BaseMessage]] = PrivateAttr(default_factory=list)
    _methods: list[str] = PrivateAttr(default_factory=list)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self._seen.append(messages)
        self._methods.append("generate")
        return super()._generate(messages, stop, run_manager, **kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        self._seen.append(messages)
        self._methods.append("stream")
        yield from super()._stream(messages, stop, run_manager, **kwargs)


class ChatCohere(Recording):
    """Named as the real class is, so the router treats it as Cohere."""


# ---------------------------------------------------------------- typed errors


@pytest.mark.parametrize(
    ("error", "expected", "langchain_type"),
    [
        (errors.openai_context_too_long, "RoutesContextOverflowError", ContextOverflowError),
        (errors.openai_auth_error, "RoutesAuthenticationError", ModelAuthenticationError),
        (errors.openai_timeout, "RoutesUnavailableError", ModelAPIError),
        (errors.openai_rate_limit, "QuotaExhaustedError", ModelRateLimitError),
    ],
)
async def test_when_every_route_fails_alike_the_error_has_langchains_type(
    clock: FakeClock, how: str, error: Any, expected: str, langchain_type: type
) -> None:
    llm = router(
        clock,
        Route(FakeVendorChatModel(model="a", script=[error()]), name="a"),
        Route(FakeVendorChatModel(model="b", script=[error()]), name="b", priority=1),
    )

    with pytest.raises(langchain_type) as caught:
        await ask(llm, how)

    assert type(caught.value).__name__ == expected
    assert isinstance(caught.value, NoRouteError)
    assert set(caught.value.reasons) == {"a", "b"}


async def test_a_prompt_past_every_context_window_is_a_context_overflow(
    clock: FakeClock, how: str
) -> None:
    llm = router(clock, Route(FakeVendorChatModel(), name="small", context_window=5))

    with pytest.raises(ContextOverflowError):
        await ask(llm, how, "a prompt far longer than five tokens, surely")


async def test_full_routes_are_a_rate_limit_error(clock: FakeClock, how: str) -> None:
    llm = router(clock, Route(FakeVendorChatModel(), name="a", limits=["1/day"]))
    await ask(llm, how)

    with pytest.raises(QuotaExhaustedError) as caught:
        await ask(llm, how)

    assert isinstance(caught.value, ModelRateLimitError)
    assert caught.value.resets_at is not None


async def test_tools_on_routes_that_cannot_call_tools_is_an_invalid_request(
    clock: FakeClock, how: str
) -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    @tool
    def lookup(query: str) -> str:
        """Look something up."""
        return query

    llm = router(clock, Route(FakeListChatModel(responses=["x"]), name="plain"))

    with pytest.raises(ModelInvalidRequestError, match="cannot call tools"):
        await ask(llm.bind_tools([lookup]), how)


async def test_an_argument_no_vendor_takes_is_the_callers_type_error_without_cooldown(
    clock: FakeClock, how: str
) -> None:
    class Strict(FakeVendorChatModel):
        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any):  # type: ignore[no-untyped-def]
            if "bogus" in kw:
                raise TypeError("create() got an unexpected keyword argument 'bogus'")
            return super()._generate(messages, stop, run_manager, **kw)

        def _stream(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any):  # type: ignore[no-untyped-def]
            if "bogus" in kw:
                raise TypeError("create() got an unexpected keyword argument 'bogus'")
            yield from super()._stream(messages, stop, run_manager, **kw)

    llm = router(clock, Route(Strict(model="a"), name="a"), Route(Strict(model="b"), name="b"))

    with pytest.raises(TypeError, match="bogus"):
        await ask(llm, how, bogus=1)

    assert (await ask(llm, how)).response_metadata["route"] == "a"  # no cooldown


# --------------------------------------------------------- the vendor's settings


async def test_messages_reach_each_vendor_in_its_shape_on_every_path(
    clock: FakeClock, how: str
) -> None:
    cohere = ChatCohere(model="command-a-03-2025")
    llm = router(clock, Route(cohere, name="cohere"))
    history = [
        HumanMessage("hi"),
        AIMessage(content=[{"type": "text", "text": "hello from gemini"}]),
        HumanMessage("and now?"),
    ]

    await ask(llm, how, history)

    sent = cohere._seen[-1]
    assert sent[1].content == "hello from gemini"  # list content became text


async def test_the_vendor_models_rate_limiter_is_acquired(clock: FakeClock, how: str) -> None:
    class Counting(InMemoryRateLimiter):
        acquired: int = 0

        def acquire(self, *, blocking: bool = True) -> bool:
            Counting.acquired += 1
            return True

        async def aacquire(self, *, blocking: bool = True) -> bool:
            Counting.acquired += 1
            return True

    Counting.acquired = 0
    vendor = FakeVendorChatModel(rate_limiter=Counting(requests_per_second=1))
    llm = router(clock, Route(vendor, name="a"))

    await ask(llm, how)
    await ask(llm, how)

    assert Counting.acquired == 2


async def test_disable_streaming_on_the_vendor_model_is_honoured(
    clock: FakeClock, how: str
) -> None:
    vendor = Recording(model="a", disable_streaming=True, script=["one two three"])
    llm = router(clock, Route(vendor, name="a"))

    answer = await ask(llm, how)

    assert answer.text == "one two three"
    assert vendor._methods == ["generate"]


async def test_output_version_v1_on_the_vendor_model_gives_content_blocks(
    clock: FakeClock, how: str
) -> None:
    vendor = FakeVendorChatModel(model="a", output_version="v1", script=["hello there"])
    llm = router(clock, Route(vendor, name="a"))

    answer = await ask(llm, how)

    assert isinstance(answer.content, list)
    assert answer.content[0]["type"] == "text"  # type: ignore[index]


# ------------------------------------------------------------------ tools


async def test_bind_tools_options_go_through_each_vendors_own_bind_tools(
    clock: FakeClock, how: str
) -> None:
    @tool
    def lookup(query: str) -> str:
        """Look something up."""
        return query

    vendor = FakeVendorChatModel(model="a", script=[{"tool_calls": [{"name": "lookup"}]}])
    llm = router(clock, Route(vendor, name="a"))

    await ask(llm.bind_tools([lookup], strict=True, parallel_tool_calls=False), how)

    seen = vendor.kwargs_seen[-1]
    assert (seen["strict"], seen["parallel_tool_calls"]) == (True, False)
    assert "tool_options" not in seen


async def test_an_option_no_route_can_honour_names_the_option_and_routes(
    clock: FakeClock, how: str
) -> None:
    class NoOptions(FakeVendorChatModel):
        def bind_tools(self, tools: Any, *, tool_choice: Any = None) -> Any:  # type: ignore[override]
            return super().bind_tools(tools, tool_choice=tool_choice)

    @tool
    def lookup(query: str) -> str:
        """Look something up."""
        return query

    llm = router(clock, Route(NoOptions(model="a"), name="plain-route"))

    with pytest.raises(ModelInvalidRequestError, match="strict") as caught:
        await ask(llm.bind_tools([lookup], strict=True), how)

    assert "plain-route" in str(caught.value)


def test_a_named_tool_choice_on_cohere_sends_only_that_tool() -> None:
    from langchain_cohere import ChatCohere as RealCohere

    from langchain_quota_router.vendors.kinds import KINDS

    @tool
    def weather(city: str) -> str:
        """Weather in a city."""
        return city

    @tool
    def news(topic: str) -> str:
        """News on a topic."""
        return topic

    model = RealCohere(model="command-a-03-2025", cohere_api_key="test-key")
    kwargs = KINDS["cohere"].bind_tools(model, [weather, news], "news")

    assert [t.function.name for t in kwargs["tools"]] == ["news"]
    assert kwargs["tool_choice"] == "REQUIRED"


async def test_json_mode_without_a_schema(clock: FakeClock, how: str) -> None:
    vendor = FakeVendorChatModel(model="a", script=['{"city": "Paris", "days": 2}'])
    llm = router(clock, Route(vendor, name="a"))
    structured = llm.with_structured_output(None, method="json_mode")

    if how in ("invoke", "ainvoke"):
        result = structured.invoke("x") if how == "invoke" else await structured.ainvoke("x")
    else:
        result = None
        if how == "stream":
            for part in structured.stream("x"):
                result = part
        else:
            async for part in structured.astream("x"):
                result = part

    assert result == {"city": "Paris", "days": 2}
    assert vendor.kwargs_seen[-1]["response_format"] == {"type": "json_object"}


# ------------------------------------------------------------------ tracing


class _Runs(BaseCallbackHandler):
    def __init__(self) -> None:
        self.starts: list[dict[str, Any]] = []
        self.ends: list[LLMResult] = []

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self.starts.append(kwargs.get("metadata") or {})

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        self.ends.append(response)


async def test_tracers_see_one_model_and_who_answered(clock: FakeClock, how: str) -> None:
    llm = router(
        clock,
        Route(FakeVendorChatModel(model="first-model", provider="groq"), name="a"),
        Route(FakeVendorChatModel(model="second-model"), name="b", priority=1),
    )
    runs = _Runs()

    answer = await ask(llm, how, config={"callbacks": [runs]})

    assert runs.starts[0]["ls_model_name"] == "first-model"
    assert runs.starts[0]["ls_provider"] == "groq"
    message = runs.ends[0].generations[0][0].message  # type: ignore[attr-defined]
    assert message.response_metadata["route"] == "a"
    assert answer.response_metadata["model_name"] == "first-model"
    if how in ("invoke", "ainvoke"):
        assert runs.ends[0].llm_output["model_name"] == "first-model"  # type: ignore[index]


# ------------------------------------------------------------ cancellation


class Slow(FakeVendorChatModel):
    """A vendor that takes its time: long enough for the caller to give up."""

    async def _agenerate(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:  # type: ignore[override]
        await asyncio.sleep(30)
        raise AssertionError("never reached")

    async def _astream(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> AsyncIterator[ChatGenerationChunk]:  # type: ignore[override]
        await asyncio.sleep(30)
        yield ChatGenerationChunk(message=AIMessageChunk(content="never"))


@pytest.mark.parametrize("how", ["ainvoke", "astream"])
async def test_a_cancelled_call_settles_its_reservation(clock: FakeClock, how: str) -> None:
    llm = router(
        clock,
        Route(Slow(model="slow"), name="slow", limits=["10/minute", "100000 tokens/minute"]),
        max_tokens=5000,
    )

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(ask(llm, how, "hello there"), timeout=0.05)

    used = {str(u.limit): u.used for u in llm.usage()}
    assert used["10/minute"] == 1  # the vendor was sent the request
    assert 0 < used["100000 tokens/minute"] < 100  # the 5,000-token output estimate is gone


# --------------------------------------------------------------- the cache


async def test_langchains_global_cache_is_counted_like_any_other(
    clock: FakeClock, how: str
) -> None:
    set_llm_cache(InMemoryCache())
    try:
        vendor = FakeVendorChatModel(model="a", script=["cached answer"])
        llm = router(clock, Route(vendor, name="a", limits=["100/day"]), cache=None)
        await ask(llm, "invoke")
        before = [u.used for u in llm.usage()]

        again = await ask(llm, how)

        assert vendor.calls == 1
        assert again.response_metadata.get("cache_hit") is True
        assert "cost" not in again.response_metadata
        assert [u.used for u in llm.usage()] == before
        assert llm.get_stats()["cache_hits"] == 1
    finally:
        set_llm_cache(None)


# ----------------------------------------------------------- retry-after: 0


async def test_retry_after_zero_means_now(clock: FakeClock, how: str) -> None:
    vendor = FakeVendorChatModel(model="a", script=[errors.openai_rate_limit("0"), "ok", "ok"])
    backup = FakeVendorChatModel(model="b")
    llm = router(clock, Route(vendor, name="a"), Route(backup, name="b", priority=1))

    assert (await ask(llm, how)).response_metadata["route"] == "b"
    assert (await ask(llm, how)).response_metadata["route"] == "a"


@pytest.mark.parametrize("how", ["ainvoke", "astream"])
async def test_async_paths_close_their_attempt_generators_on_the_loop(
    clock: FakeClock, how: str
) -> None:
    """An async generator left to the garbage collector is closed later through
    ``call_soon_threadsafe``: the router closes its own at once, so none reaches
    the loop's finalizer hook."""
    left: list[str] = []
    firstiter, finalizer = sys.get_asyncgen_hooks()
    assert finalizer is not None

    def hook(agen: Any) -> None:
        left.append(agen.__qualname__)
        finalizer(agen)

    # Generators started from here on are handed to ``hook`` if left to the GC.
    sys.set_asyncgen_hooks(firstiter, hook)
    try:
        llm = router(clock, Route(FakeVendorChatModel(), name="a", limits=["100/minute"]))
        for _ in range(3):
            await ask(llm, how, "hi")
        gc.collect()
    finally:
        sys.set_asyncgen_hooks(firstiter, finalizer)
    assert not [name for name in left if "attempts" in name or "admitted" in name]
