"""Tests for the on-disk response cache (``DiskResponseCache``)."""

from __future__ import annotations

import copy
import datetime as dt
import logging
import os
import pickle
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, Generation

import langchain_quota_router
from langchain_quota_router._errors import ConfigurationError
from langchain_quota_router.cache.disk import CACHE_DIR_ENV, DiskResponseCache
from langchain_quota_router.quota.clock import FakeClock

PROMPT = '[{"lc": 1, "type": "constructor", "kwargs": {"content": "weather?"}}]'
LLM = "model=fake-1 temperature=0"
LOGGER = "langchain_quota_router"
REPO_ROOT = Path(langchain_quota_router.__file__).resolve().parent.parent


def answer(text: str = "It is sunny in Paris.") -> list[ChatGeneration]:
    """A typical one-message chat answer with a tool call and usage."""
    message = AIMessage(
        content=text,
        id="run-abc-0",
        tool_calls=[
            {
                "name": "get_weather",
                "args": {"city": "Paris", "units": ["C", "F"]},
                "id": "call_1",
                "type": "tool_call",
            }
        ],
        usage_metadata={
            "input_tokens": 12,
            "output_tokens": 7,
            "total_tokens": 19,
            "input_token_details": {"cache_read": 4},
        },
        response_metadata={"model_name": "fake-1", "finish_reason": "stop"},
        additional_kwargs={"raw": {"lc": 1, "looks": "like a serialised object"}},
    )
    return [ChatGeneration(message=message, generation_info={"finish_reason": "stop"})]


def cache_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache(tmp_path: Path, clock: FakeClock) -> DiskResponseCache:
    return DiskResponseCache(tmp_path / "cache", ttl=3600, clock=clock)


# -- round trip and keys --------------------------------------------------------------


def test_round_trip_chat_generation(cache: DiskResponseCache) -> None:
    original = answer()
    cache.update(PROMPT, LLM, original)

    got = cache.lookup(PROMPT, LLM)

    assert isinstance(got, list)  # LangChain only treats a list as a hit
    assert got == original
    (generation,) = got
    assert isinstance(generation, ChatGeneration)
    message = generation.message
    assert isinstance(message, AIMessage)
    assert message.tool_calls == original[0].message.tool_calls  # type: ignore[attr-defined]
    assert message.usage_metadata == original[0].message.usage_metadata  # type: ignore[attr-defined]
    assert message.response_metadata == {
        "model_name": "fake-1",
        "finish_reason": "stop",
    }
    assert message.additional_kwargs == {"raw": {"lc": 1, "looks": "like a serialised object"}}
    assert message.id == "run-abc-0"
    assert generation.generation_info == {"finish_reason": "stop"}


def test_round_trip_plain_generation(cache: DiskResponseCache) -> None:
    original = [
        Generation(text="one"),
        Generation(text="two", generation_info={"i": 2}),
    ]
    cache.update(PROMPT, LLM, original)
    assert cache.lookup(PROMPT, LLM) == original


def test_second_lookup_served_from_memory_is_equal(cache: DiskResponseCache) -> None:
    cache.update(PROMPT, LLM, answer())
    first = cache.lookup(PROMPT, LLM)
    second = cache.lookup(PROMPT, LLM)
    assert first == second == answer()
    assert first is not second


def test_miss_on_other_prompt_or_llm_string(cache: DiskResponseCache) -> None:
    cache.update(PROMPT, LLM, answer())
    assert cache.lookup(PROMPT + " ", LLM) is None
    assert cache.lookup(PROMPT, LLM + " ") is None
    assert cache.lookup("", "") is None


def test_key_split_is_unambiguous(cache: DiskResponseCache) -> None:
    cache.update("ab\x00", "c", answer("first"))
    assert cache.lookup("ab", "\x00c") is None
    assert cache.lookup("ab\x00", "c") == answer("first")


def test_huge_and_odd_prompts(cache: DiskResponseCache) -> None:
    huge = "x" * 2_000_000
    odd = "lone surrogate \ud800 and emoji \U0001f600"
    cache.update(huge, LLM, answer("huge"))
    cache.update(odd, LLM, answer("odd"))
    assert cache.lookup(huge, LLM) == answer("huge")
    assert cache.lookup(odd, LLM) == answer("odd")


def test_update_overwrites(cache: DiskResponseCache) -> None:
    cache.update(PROMPT, LLM, answer("old"))
    assert cache.lookup(PROMPT, LLM) == answer("old")
    cache.update(PROMPT, LLM, answer("new"))
    assert cache.lookup(PROMPT, LLM) == answer("new")


def test_empty_result_is_not_cached(cache: DiskResponseCache) -> None:
    cache.update(PROMPT, LLM, [])
    assert cache.lookup(PROMPT, LLM) is None


def test_unserialisable_result_is_skipped_quietly(
    cache: DiskResponseCache, caplog: pytest.LogCaptureFixture
) -> None:
    message = AIMessage(content="x", response_metadata={"at": dt.datetime(2026, 1, 1)})
    cache.update(PROMPT, LLM, [ChatGeneration(message=message)])
    assert cache.lookup(PROMPT, LLM) is None
    assert cache.directory is not None  # still enabled
    assert cache_warnings(caplog) == []


# -- mutation safety ------------------------------------------------------------------


def test_mutating_a_result_does_not_change_the_cache(cache: DiskResponseCache) -> None:
    original = answer()
    cache.update(PROMPT, LLM, original)
    original[0].message.content = "mutated before lookup"

    # The first lookup revives from disk, later ones come from memory: check both.
    for _ in range(3):
        got = cache.lookup(PROMPT, LLM)
        assert got == answer()
        assert got is not None
        generation = got[0]
        assert isinstance(generation, ChatGeneration)
        message = generation.message
        assert isinstance(message, AIMessage)
        message.id = "lc-run-changed"
        message.response_metadata["injected"] = True
        message.tool_calls[0]["args"]["city"] = "Berlin"
        assert message.usage_metadata is not None
        message.usage_metadata["total_tokens"] = 0
        generation.message = AIMessage(content="replaced")
        got.append(ChatGeneration(message=AIMessage(content="extra")))


# -- TTL ------------------------------------------------------------------------------


def test_ttl_expiry_by_clock(cache: DiskResponseCache, clock: FakeClock, tmp_path: Path) -> None:
    cache.update(PROMPT, LLM, answer())
    clock.advance(3599)
    assert cache.lookup(PROMPT, LLM) == answer()
    clock.advance(1)
    assert cache.lookup(PROMPT, LLM) is None

    # The expired entry was deleted, not just hidden: a reader whose clock is back
    # at the write time does not find it either.
    rewound = DiskResponseCache(tmp_path / "cache", ttl=3600, clock=FakeClock())
    assert rewound.lookup(PROMPT, LLM) is None


def test_ttl_none_never_expires(tmp_path: Path, clock: FakeClock) -> None:
    cache = DiskResponseCache(tmp_path, ttl=None, clock=clock)
    cache.update(PROMPT, LLM, answer())
    clock.advance(50 * 365 * 86400)
    assert cache.lookup(PROMPT, LLM) == answer()


def test_ttl_as_timedelta(tmp_path: Path, clock: FakeClock) -> None:
    cache = DiskResponseCache(tmp_path, ttl=dt.timedelta(minutes=1), clock=clock)
    assert cache.ttl == 60.0
    cache.update(PROMPT, LLM, answer())
    clock.advance(59.5)
    assert cache.lookup(PROMPT, LLM) is not None
    clock.advance(0.5)
    assert cache.lookup(PROMPT, LLM) is None


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), dt.timedelta(0), "60"])
def test_bad_ttl_is_rejected(tmp_path: Path, ttl: object) -> None:
    with pytest.raises(ConfigurationError, match="ttl"):
        DiskResponseCache(tmp_path, ttl=ttl)  # type: ignore[arg-type]


@pytest.mark.parametrize("size_limit", [0, -5, 1.5])
def test_bad_size_limit_is_rejected(tmp_path: Path, size_limit: object) -> None:
    with pytest.raises(ConfigurationError, match="size_limit"):
        DiskResponseCache(tmp_path, size_limit=size_limit)  # type: ignore[arg-type]


# -- directory ------------------------------------------------------------------------


def test_default_directory_honours_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "from-env"
    monkeypatch.setenv(CACHE_DIR_ENV, str(target))
    cache = DiskResponseCache()
    assert cache.directory == target
    assert not target.exists()  # constructing does not touch the disk

    cache.update(PROMPT, LLM, answer())
    assert target.is_dir()
    assert DiskResponseCache(target).lookup(PROMPT, LLM) == answer()


def test_default_directory_without_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    directory = DiskResponseCache().directory
    assert directory is not None
    assert directory.name == "responses"
    assert "langchain-quota-router" in str(directory)


def test_repr_shows_directory_and_ttl(tmp_path: Path) -> None:
    text = repr(DiskResponseCache(tmp_path, ttl=90))
    assert str(tmp_path) in text
    assert "ttl=90.0" in text


# -- sharing: processes, threads, fork, pickling -------------------------------------


@pytest.mark.slow
def test_other_process_sees_entries_both_ways(tmp_path: Path) -> None:
    cache = DiskResponseCache(tmp_path, ttl=None)
    cache.update(PROMPT, LLM, answer("from parent"))
    script = textwrap.dedent(
        """
        import sys
        from langchain_core.messages import AIMessage
        from langchain_core.outputs import ChatGeneration
        from langchain_quota_router.cache.disk import DiskResponseCache

        directory, prompt, llm = sys.argv[1:4]
        cache = DiskResponseCache(directory, ttl=None)
        got = cache.lookup(prompt, llm)
        assert got is not None, "child missed the parent's entry"
        print(got[0].message.content)
        child = ChatGeneration(message=AIMessage(content="from child"))
        cache.update(prompt, llm + "/child", [child])
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), PROMPT, LLM],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "from parent"
    got = cache.lookup(PROMPT, LLM + "/child")
    assert got is not None
    assert got[0].message.content == "from child"  # type: ignore[attr-defined]


def test_another_instances_entries_are_seen_where_memory_has_none(
    tmp_path: Path,
) -> None:
    reader = DiskResponseCache(tmp_path)
    writer = DiskResponseCache(tmp_path)
    assert reader.lookup(PROMPT, LLM) is None
    writer.update(PROMPT, LLM, answer("v1"))
    assert reader.lookup(PROMPT, LLM) == answer("v1")
    writer.clear()
    assert writer.lookup(PROMPT, LLM) is None


def test_recent_hits_are_answered_from_memory_without_the_disk(
    cache: DiskResponseCache,
) -> None:
    cache.update(PROMPT, LLM, answer("v1"))

    class NoDisk:
        def get(self, *args: object, **kwargs: object) -> object:
            raise AssertionError("a recent hit must not read the disk")

    cache._store = NoDisk()  # type: ignore[assignment]
    assert cache.lookup(PROMPT, LLM) == answer("v1")


def test_threads_share_one_cache(cache: DiskResponseCache) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                cache.update(f"{PROMPT}{n}-{i}", LLM, answer(f"{n}-{i}"))
                assert cache.lookup(f"{PROMPT}{n}-{i}", LLM) == answer(f"{n}-{i}")
                assert cache.lookup(PROMPT, LLM) is None
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert cache.lookup(f"{PROMPT}7-19", LLM) == answer("7-19")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_usable_after_fork(cache: DiskResponseCache) -> None:
    cache.update(PROMPT, LLM, answer("before fork"))
    assert cache.lookup(PROMPT, LLM) is not None  # connection open in the parent

    pid = os.fork()
    if pid == 0:  # child: report through the exit code only
        code = 1
        try:
            if cache.lookup(PROMPT, LLM) == answer("before fork"):
                cache.update(PROMPT, LLM + "/child", answer("from child"))
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert cache.lookup(PROMPT, LLM + "/child") == answer("from child")
    assert cache.lookup(PROMPT, LLM) == answer("before fork")


def test_pickle_and_deepcopy_reopen_the_same_directory(
    cache: DiskResponseCache,
) -> None:
    cache.update(PROMPT, LLM, answer())
    for twin in (pickle.loads(pickle.dumps(cache)), copy.deepcopy(cache)):
        assert twin.directory == cache.directory
        assert twin.ttl == cache.ttl
        assert twin.lookup(PROMPT, LLM) == answer()


# -- degrading, never failing --------------------------------------------------------


def _exercise(cache: DiskResponseCache) -> None:
    # A prompt this process has not seen must go to the disk, where the fault is.
    assert cache.lookup(PROMPT + " (never seen)", LLM) is None
    for _ in range(3):
        assert cache.lookup(PROMPT, LLM) is None
        cache.update(PROMPT, LLM, answer())
        assert cache.lookup(PROMPT, LLM) is None
    cache.clear()


def test_directory_that_is_a_file_degrades(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_dir = tmp_path / "occupied"
    not_a_dir.write_text("I am a file")
    cache = DiskResponseCache(not_a_dir)

    _exercise(cache)

    (record,) = cache_warnings(caplog)
    assert str(not_a_dir) in record.getMessage()
    assert cache.directory is None
    assert "disabled" in repr(cache)
    assert not_a_dir.read_text() == "I am a file"


async def test_directory_that_is_a_file_degrades_async(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_dir = tmp_path / "occupied"
    not_a_dir.write_text("I am a file")
    cache = DiskResponseCache(not_a_dir)

    assert await cache.alookup(PROMPT, LLM) is None
    await cache.aupdate(PROMPT, LLM, answer())
    assert await cache.alookup(PROMPT, LLM) is None
    await cache.aclear()

    assert len(cache_warnings(caplog)) == 1


def test_corrupt_database_file_degrades(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    DiskResponseCache(tmp_path).update(PROMPT, LLM, answer())
    (database,) = tmp_path.glob("*.db")
    database.write_bytes(b"this is not an SQLite database at all " * 200)

    cache = DiskResponseCache(tmp_path)
    _exercise(cache)

    (record,) = cache_warnings(caplog)
    assert str(tmp_path) in record.getMessage()
    assert cache.directory is None


def test_corruption_after_opening_degrades(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = DiskResponseCache(tmp_path)
    cache.update(PROMPT, LLM, answer())
    assert cache.lookup(PROMPT, LLM) == answer()
    (database,) = tmp_path.glob("*.db")
    database.write_bytes(b"\xde\xad\xbe\xef" * 4096)
    for leftover in tmp_path.glob("*.db-*"):  # WAL and shared-memory files
        leftover.write_bytes(b"\x00" * 64)

    _exercise(cache)

    assert len(cache_warnings(caplog)) == 1
    assert cache.directory is None


def test_failing_store_degrades_without_raising(
    cache: DiskResponseCache, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def get(self, *args: object, **kwargs: object) -> object:
            raise OSError(28, "No space left on device")

        set = get
        clear = get

        def close(self) -> None:
            raise OSError("and closing fails too")

    cache.update(PROMPT, LLM, answer())
    cache._store = Broken()

    _exercise(cache)

    (record,) = cache_warnings(caplog)
    assert "No space left on device" in record.getMessage()


# -- clear and async ------------------------------------------------------------------


def test_clear_empties_the_cache(cache: DiskResponseCache, tmp_path: Path) -> None:
    cache.update(PROMPT, LLM, answer())
    cache.update(PROMPT, LLM + "2", answer())
    assert cache.lookup(PROMPT, LLM) is not None
    cache.clear()
    assert cache.lookup(PROMPT, LLM) is None
    assert cache.lookup(PROMPT, LLM + "2") is None
    assert DiskResponseCache(tmp_path / "cache").lookup(PROMPT, LLM) is None


async def test_async_variants(cache: DiskResponseCache, clock: FakeClock) -> None:
    assert await cache.alookup(PROMPT, LLM) is None
    await cache.aupdate(PROMPT, LLM, answer())
    assert await cache.alookup(PROMPT, LLM) == answer()
    await cache.aclear()
    assert await cache.alookup(PROMPT, LLM) is None
    await cache.aupdate(PROMPT, LLM, answer())
    clock.advance(3600)
    assert await cache.alookup(PROMPT, LLM) is None


# -- inside LangChain -----------------------------------------------------------------


def test_as_a_chat_model_cache(tmp_path: Path) -> None:
    cache = DiskResponseCache(tmp_path)
    model = FakeListChatModel(responses=["first", "second"], cache=cache)

    assert model.invoke("hello").content == "first"
    assert model.invoke("hello").content == "first"  # served from the cache
    assert model.invoke("other").content == "second"

    # A new model and cache on the same directory, as in a fresh process. The
    # responses are part of the fake model's llm_string, so they must match.
    again = FakeListChatModel(responses=["first", "second"], cache=DiskResponseCache(tmp_path))
    assert again.invoke("other").content == "second"
    assert again.invoke("hello").content == "first"


async def test_as_a_chat_model_cache_async(tmp_path: Path) -> None:
    cache = DiskResponseCache(tmp_path)
    model = FakeListChatModel(responses=["first", "second"], cache=cache)
    assert (await model.ainvoke("hello")).content == "first"
    assert (await model.ainvoke("hello")).content == "first"


def test_a_full_disk_rests_the_cache_and_it_comes_back_when_space_returns(
    tmp_path: Path,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import diskcache

    cache = DiskResponseCache(tmp_path, clock=clock)
    cache.update(PROMPT, LLM, answer())
    real_set = diskcache.Cache.set
    disk_full = True

    def set_on_a_full_disk(self: diskcache.Cache, *args: Any, **kwargs: Any) -> Any:
        if disk_full:
            raise sqlite3.OperationalError("database or disk is full")
        return real_set(self, *args, **kwargs)

    monkeypatch.setattr(diskcache.Cache, "set", set_on_a_full_disk)
    cache.update(PROMPT + " (a second prompt)", LLM, answer())
    assert cache.lookup(PROMPT, LLM) is None  # resting: the disk is not even asked
    # Still full a minute later: tried again, off again, and still one warning.
    clock.advance(61)
    assert cache.lookup(PROMPT, LLM) == answer()
    cache.update(PROMPT + " (a second prompt)", LLM, answer())
    assert cache.lookup(PROMPT, LLM) is None
    # Space returns: after the longer rest the cache reads and writes again.
    disk_full = False
    clock.advance(121)
    assert cache.lookup(PROMPT, LLM) == answer()
    cache.update(PROMPT + " (a second prompt)", LLM, answer())
    assert cache.lookup(PROMPT + " (a second prompt)", LLM) == answer()
    assert cache.directory == tmp_path
    (warning,) = cache_warnings(caplog)
    assert "disk is full" in warning.getMessage()
