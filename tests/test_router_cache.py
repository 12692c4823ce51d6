"""The router's response cache, as a user notices it: a repeated call is free."""

from __future__ import annotations

import datetime as dt
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import call_paths
import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool, tool

from langchain_quota_router import DiskResponseCache, QuotaRoutedChatModel, Route
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.testing import FakeVendorChatModel

LOGGER = "langchain_quota_router"
PROMPT = "What is the answer?"
ANSWER = "The answer is 42."
TOOL_ANSWER = {"tool_calls": [{"name": "get_weather", "args": {"city": "Paris"}}]}
LIMITS = ["5/minute", "1000 tokens/minute"]
DAY = 24 * 3600.0
PATHS = ["invoke", "ainvoke", "stream", "astream"]


def make_router(
    clock: FakeClock,
    *,
    model: str = "m1",
    script: list[Any] | None = None,
    **options: Any,
) -> tuple[QuotaRoutedChatModel, FakeVendorChatModel]:
    fake = FakeVendorChatModel(model=model, script=script or [ANSWER])
    router = QuotaRoutedChatModel(
        routes=[Route(fake, name="a", limits=LIMITS)],
        ledger="memory://",
        clock=clock,
        **options,
    )
    return router, fake


def spent(router: QuotaRoutedChatModel) -> list[int]:
    return [u.used for u in router.usage()]


async def ask(llm: Any, how: str, prompt: str = PROMPT, **kwargs: Any) -> AIMessage:
    """One call by ``how`` (``call_paths.ask``), with this file's prompt by default."""
    return await call_paths.ask(llm, how, prompt, **kwargs)


def weather_tool() -> BaseTool:
    """A new tool object on every call, always with the same schema."""

    @tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        return "sunny"

    return get_weather


@tool
def get_time(city: str) -> str:
    """Current local time in a city."""
    return "noon"


# ------------------------------------------------------------- repeated calls


def test_second_invoke_comes_from_cache_and_spends_no_quota(clock: FakeClock) -> None:
    router, fake = make_router(clock)
    first = router.invoke(PROMPT)
    used = spent(router)

    second = router.invoke(PROMPT)

    assert second.content == first.content == ANSWER
    assert fake.calls == 1
    assert spent(router) == used
    assert router.get_stats()["cache_hits"] == 1
    assert second.response_metadata["cache_hit"] is True
    assert "cache_hit" not in first.response_metadata


def test_a_different_prompt_is_a_miss(clock: FakeClock) -> None:
    router, fake = make_router(clock)
    router.invoke(PROMPT)
    router.invoke("Something else?")
    assert fake.calls == 2
    assert router.get_stats()["cache_hits"] == 0


@pytest.mark.slow
def test_hit_in_a_new_process_does_not_call_the_vendor(clock: FakeClock) -> None:
    router, fake = make_router(clock)
    router.invoke(PROMPT)
    assert fake.calls == 1
    child = textwrap.dedent(
        f"""
        import json
        from langchain_quota_router import QuotaRoutedChatModel, Route
        from langchain_quota_router.quota.clock import FakeClock
        from langchain_quota_router.testing import FakeVendorChatModel

        fake = FakeVendorChatModel(model="m1", script=[{ANSWER!r}])
        router = QuotaRoutedChatModel(
            routes=[Route(fake, name="a", limits={LIMITS!r})],
            ledger="memory://",
            clock=FakeClock(),
        )
        message = router.invoke({PROMPT!r})
        print(json.dumps({{"calls": fake.calls, "content": message.content}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", child],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "calls": 0,
        "content": ANSWER,
    }


# ------------------------------------------------------------ streams and invoke


@pytest.mark.parametrize("second_how", PATHS)
@pytest.mark.parametrize("first_how", PATHS)
async def test_an_answer_cached_by_one_call_path_serves_every_other(
    clock: FakeClock, first_how: str, second_how: str
) -> None:
    router, fake = make_router(clock)
    await ask(router, first_how)
    used = spent(router)

    again = await ask(router, second_how)

    assert fake.calls == 1
    assert again.content == ANSWER
    assert again.response_metadata["cache_hit"] is True
    assert spent(router) == used
    assert router.get_stats()["cache_hits"] == 1


@pytest.mark.parametrize("second_how", ["stream", "astream"])
@pytest.mark.parametrize("first_how", PATHS)
async def test_a_replayed_stream_carries_the_tool_calls(
    clock: FakeClock, first_how: str, second_how: str
) -> None:
    router, fake = make_router(clock, script=[TOOL_ANSWER])
    llm = router.bind_tools([weather_tool()])
    first = await ask(llm, first_how)

    again = await ask(llm, second_how)

    assert fake.calls == 1
    assert [(c["name"], c["args"]) for c in again.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert again.tool_calls == first.tool_calls


def test_a_stream_hit_replays_the_text_in_order(clock: FakeClock) -> None:
    router, fake = make_router(clock, script=["one two three four"])
    live = "".join(c.text for c in router.stream(PROMPT))
    replayed = "".join(c.text for c in router.stream(PROMPT))
    assert fake.calls == 1
    assert replayed == live == "one two three four"


def test_an_abandoned_stream_is_not_cached(clock: FakeClock) -> None:
    router, fake = make_router(clock, script=["one two three four"])
    for _chunk in router.stream(PROMPT):
        break
    assert router.invoke(PROMPT).content == "one two three four"
    assert fake.calls == 2
    assert router.get_stats()["cache_hits"] == 0


def test_a_stream_broken_midway_is_not_cached(clock: FakeClock) -> None:
    fake = FakeVendorChatModel(model="m1", script=["one two three four"], fail_after_chunks=1)
    router = QuotaRoutedChatModel(
        routes=[Route(fake, name="a", limits=LIMITS)], ledger="memory://", clock=clock
    )
    with pytest.raises(ConnectionError):
        list(router.stream(PROMPT))
    clock.advance(120)  # past the route's cooldown
    assert router.invoke(PROMPT).content == "one two three four"
    assert fake.calls == 2


# --------------------------------------------------------- whose answer it is


@pytest.mark.parametrize(
    ("one", "other"),
    [
        pytest.param({"model": "m1"}, {"model": "m2"}, id="model-name"),
        pytest.param({"script": ["from one"]}, {"script": ["from other"]}, id="script"),
        pytest.param({"temperature": 0.1}, {"temperature": 0.9}, id="temperature"),
        pytest.param({"max_tokens": 10}, {"max_tokens": 20}, id="max-tokens"),
    ],
)
def test_routers_over_different_models_never_share_answers(
    clock: FakeClock, one: dict[str, Any], other: dict[str, Any]
) -> None:
    first, first_fake = make_router(clock, **one)
    second, second_fake = make_router(clock, **other)
    first.invoke(PROMPT)

    answer = second.invoke(PROMPT)

    assert first_fake.calls == 1
    assert second_fake.calls == 1
    assert "cache_hit" not in answer.response_metadata


def test_the_same_router_config_in_a_new_object_shares_answers(
    clock: FakeClock,
) -> None:
    first, first_fake = make_router(clock)
    second, second_fake = make_router(clock)
    first.invoke(PROMPT)

    answer = second.invoke(PROMPT)

    assert (first_fake.calls, second_fake.calls) == (1, 0)
    assert answer.content == ANSWER
    assert answer.response_metadata["cache_hit"] is True


# ------------------------------------------------------------------- the key


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ({}, {"max_tokens": 10}),
        ({"max_tokens": 10}, {"max_tokens": 20}),
        ({}, {"temperature": 0.5}),
        ({"temperature": 0.2}, {"temperature": 0.5}),
        ({}, {"stop": ["END"]}),
    ],
)
@pytest.mark.parametrize("how", ["invoke", "stream"])
async def test_different_generation_parameters_miss(
    clock: FakeClock, how: str, one: dict[str, Any], other: dict[str, Any]
) -> None:
    router, fake = make_router(clock)
    await ask(router, how, **one)
    await ask(router, how, **other)
    assert fake.calls == 2
    assert router.get_stats()["cache_hits"] == 0


@pytest.mark.parametrize("how", PATHS)
async def test_same_generation_parameters_hit(clock: FakeClock, how: str) -> None:
    router, fake = make_router(clock)
    await ask(router.bind(max_tokens=10, temperature=0.5), how)
    await ask(router, how, max_tokens=10, temperature=0.5)
    assert fake.calls == 1


@pytest.mark.parametrize("how", PATHS)
async def test_the_same_tools_bound_again_as_new_objects_hit(clock: FakeClock, how: str) -> None:
    router, fake = make_router(clock, script=[TOOL_ANSWER])
    await ask(router.bind_tools([weather_tool()]), how)
    await ask(router.bind_tools([weather_tool()]), how)
    assert fake.calls == 1
    assert router.get_stats()["cache_hits"] == 1


@pytest.mark.parametrize("how", PATHS)
async def test_different_tools_miss(clock: FakeClock, how: str) -> None:
    router, fake = make_router(clock, script=[TOOL_ANSWER])
    await ask(router.bind_tools([weather_tool()]), how)
    await ask(router.bind_tools([get_time]), how)
    await ask(router.bind_tools([weather_tool(), get_time]), how)
    await ask(router, how)
    assert fake.calls == 4


def test_a_different_tool_choice_misses(clock: FakeClock) -> None:
    router, fake = make_router(clock, script=[TOOL_ANSWER])
    router.bind_tools([weather_tool()]).invoke(PROMPT)
    router.bind_tools([weather_tool()], tool_choice="get_weather").invoke(PROMPT)
    assert fake.calls == 2


@pytest.mark.parametrize("how", PATHS)
async def test_asking_for_another_route_is_not_served_the_first_routes_answer(
    clock: FakeClock, how: str
) -> None:
    fake_a = FakeVendorChatModel(model="m1", script=["from a"])
    fake_b = FakeVendorChatModel(model="m2", script=["from b"])
    router = QuotaRoutedChatModel(
        routes=[
            Route(fake_a, name="a", limits=LIMITS),
            Route(fake_b, name="b", limits=LIMITS, priority=1),
        ],
        ledger="memory://",
        clock=clock,
    )
    await ask(router, how)
    again = await ask(router, how, preferred="b")
    cached = await ask(router, how, preferred="b")
    assert (fake_a.calls, fake_b.calls) == (1, 1)
    assert again.content == cached.content == "from b"
    assert cached.response_metadata["cache_hit"] is True


@pytest.mark.parametrize("how", PATHS)
async def test_a_copy_with_other_settings_never_shares_answers(clock: FakeClock, how: str) -> None:
    router, fake = make_router(clock)
    await ask(router, how)
    warmer = router.model_copy(update={"temperature": 1.5})

    await ask(warmer, how)

    assert fake.calls == 2
    assert fake.kwargs_seen[-1]["temperature"] == 1.5


# ------------------------------------------------------------------------ TTL


@pytest.mark.parametrize("how", PATHS)
async def test_an_answer_older_than_24_hours_is_asked_again(clock: FakeClock, how: str) -> None:
    router, fake = make_router(clock)
    await ask(router, how)
    clock.advance(DAY + 1)

    again = await ask(router, how)

    assert fake.calls == 2
    assert "cache_hit" not in again.response_metadata
    # ... and the fresh answer is cached again from then on.
    await ask(router, how)
    assert fake.calls == 2


def test_an_answer_younger_than_24_hours_is_still_served(clock: FakeClock) -> None:
    router, fake = make_router(clock)
    router.invoke(PROMPT)
    clock.advance(DAY - 60)
    assert router.invoke(PROMPT).response_metadata["cache_hit"] is True
    assert fake.calls == 1


def test_a_given_disk_cache_uses_its_own_ttl(clock: FakeClock, tmp_path: Path) -> None:
    cache = DiskResponseCache(tmp_path / "c", ttl=dt.timedelta(minutes=5), clock=clock)
    router, fake = make_router(clock, cache=cache)
    router.invoke(PROMPT)
    clock.advance(299)
    router.invoke(PROMPT)
    clock.advance(2)
    router.invoke(PROMPT)
    assert fake.calls == 2


# ---------------------------------------------------------- choosing a cache


@pytest.mark.parametrize("how", PATHS)
async def test_cache_false_never_caches(clock: FakeClock, how: str, tmp_path: Path) -> None:
    router, fake = make_router(clock, cache=False)
    for _ in range(3):
        answer = await ask(router, how)
        assert "cache_hit" not in answer.response_metadata
    assert fake.calls == 3
    assert router.get_stats()["cache_hits"] == 0
    assert not (tmp_path / "default-cache").exists()


def test_the_default_cache_lives_in_the_configured_directory(
    clock: FakeClock, tmp_path: Path
) -> None:
    router, _ = make_router(clock)
    router.invoke(PROMPT)
    assert any((tmp_path / "default-cache").iterdir())


@pytest.mark.parametrize("how", PATHS)
async def test_any_langchain_cache_is_used(clock: FakeClock, how: str) -> None:
    cache = InMemoryCache()
    router, fake = make_router(clock, cache=cache)
    await ask(router, how)
    assert cache._cache  # the answer went into the user's own cache

    again = await ask(router, how)

    assert fake.calls == 1
    assert again.response_metadata["cache_hit"] is True
    assert router.get_stats()["cache_hits"] == 1


@pytest.mark.parametrize("how", PATHS)
async def test_cache_none_uses_langchains_global_cache(clock: FakeClock, how: str) -> None:
    previous = get_llm_cache()
    cache = InMemoryCache()
    set_llm_cache(cache)
    try:
        router, fake = make_router(clock, cache=None)
        await ask(router, how)
        again = await ask(router, how)
    finally:
        set_llm_cache(previous)
    assert fake.calls == 1
    assert cache._cache
    assert again.content == ANSWER


def test_a_later_hit_does_not_rewrite_the_first_answer(clock: FakeClock) -> None:
    # An in-memory cache hands back the very objects it stored, which are also the
    # objects the first caller received.
    fake = FakeVendorChatModel(model="m1", script=[ANSWER])
    router = QuotaRoutedChatModel(
        routes=[Route(fake, name="a", limits=LIMITS, prices=(1.0, 2.0))],
        ledger="memory://",
        clock=clock,
        cache=InMemoryCache(),
    )
    first = router.invoke(PROMPT)
    cost = first.response_metadata["cost"]

    second = router.invoke(PROMPT)

    assert second.response_metadata["cache_hit"] is True
    assert "cache_hit" not in first.response_metadata
    assert first.response_metadata["cost"] == cost


# -------------------------------------------------------- an unusable cache


@pytest.fixture
def unusable_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a regular file where the cache directory should be")
    monkeypatch.setenv("QUOTA_ROUTER_CACHE_DIR", str(blocker))
    return blocker


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


@pytest.mark.usefixtures("unusable_cache_dir")
async def test_an_unusable_cache_dir_never_fails_a_call(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    router, fake = make_router(clock)
    answers = []
    for how in PATHS * 2:
        answers.append(await ask(router, how))
        clock.advance(60)  # stay inside the route's 5/minute
    assert [a.content for a in answers] == [ANSWER] * len(answers)
    assert fake.calls == len(answers)  # nothing cached, nothing failed
    assert len(warnings_logged(caplog)) == 1


def test_building_a_router_over_an_unusable_cache_dir_logs_nothing(
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    unusable_cache_dir: Path,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    make_router(clock)
    assert warnings_logged(caplog) == []
    assert unusable_cache_dir.is_file()


# ------------------------------------------------------------------- stats


@pytest.mark.parametrize(
    "make_cache",
    [pytest.param(lambda: True, id="disk"), pytest.param(InMemoryCache, id="memory")],
)
def test_stats_count_only_real_hits(clock: FakeClock, make_cache: Callable[[], Any]) -> None:
    router, _ = make_router(clock, cache=make_cache())
    router.invoke(PROMPT)
    list(router.stream("other"))
    assert router.get_stats()["cache_hits"] == 0
    assert router.get_stats()["total_calls"] == 2


# ------------------------------------------------------------ the router's key


def history(answer: AIMessage, question: str = "And then?") -> list[Any]:
    return [HumanMessage(PROMPT), answer, HumanMessage(question)]


@pytest.mark.parametrize("how", PATHS)
async def test_a_conversation_is_keyed_by_what_the_vendor_is_sent(
    clock: FakeClock, how: str
) -> None:
    router, fake = make_router(clock)
    earlier = AIMessage(ANSWER, id="run-1", response_metadata={"route": "a", "cost": 0.1})
    await ask(router, how, history(earlier))
    # The same words, reached another time through another route: the vendor would
    # be sent the same conversation, so the answer is served again.
    again = AIMessage(ANSWER, id="run-2", response_metadata={"route": "b"})
    hit = await ask(router, how, history(again))
    assert fake.calls == 1
    assert hit.response_metadata["cache_hit"] is True

    # Anything the vendor would be sent differently is a different call.
    await ask(router, how, history(AIMessage("Another answer.")))
    called = AIMessage("", tool_calls=[{"name": "get_time", "args": {"city": "Rome"}, "id": "c1"}])
    await ask(router, how, [HumanMessage(PROMPT), called, ToolMessage("noon", tool_call_id="c1")])
    await ask(router, how, [HumanMessage(PROMPT), called, ToolMessage("noon", tool_call_id="c2")])
    await ask(router, how, [HumanMessage(PROMPT, name="ann")])
    assert fake.calls == 5


@pytest.mark.parametrize("how", PATHS)
async def test_values_json_cannot_write_are_still_keyed_apart(clock: FakeClock, how: str) -> None:
    router, fake = make_router(clock)
    one = HumanMessage(PROMPT, additional_kwargs={"blob": b"\x00one"})
    two = HumanMessage(PROMPT, additional_kwargs={"blob": b"\x00two"})

    await ask(router, how, [one])
    await ask(router, how, [one])
    await ask(router, how, [two])

    assert fake.calls == 2


@pytest.mark.parametrize("how", PATHS)
async def test_langchains_global_cache_keeps_langchains_key(clock: FakeClock, how: str) -> None:
    shared = InMemoryCache()
    set_llm_cache(shared)
    try:
        router, _ = make_router(clock, cache=None)
        await ask(router, how)
    finally:
        set_llm_cache(None)

    ((prompt, _llm_string),) = shared._cache
    assert prompt == dumps([HumanMessage(PROMPT)])
