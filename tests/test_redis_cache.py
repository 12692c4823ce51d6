"""One cache for the fleet: a Redis-backed cache shared by two processes."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from langchain_quota_router.cache.redis import RedisResponseCache

WORKER = textwrap.dedent(
    """
    import sys
    from langchain_quota_router import QuotaRoutedChatModel, Route
    from langchain_quota_router.cache.redis import RedisResponseCache
    from langchain_quota_router.testing import FakeVendorChatModel

    url, ledger = sys.argv[1], sys.argv[2]
    vendor = FakeVendorChatModel(model="m1")
    llm = QuotaRoutedChatModel(
        routes=[Route(vendor, name="groq", limits=["100000 tokens/day"])],
        ledger=ledger,
        cache=RedisResponseCache(url + "/1"),
    )
    answer = llm.invoke("What is a fleet?")
    print(vendor.calls, answer.response_metadata.get("cache_hit", False), llm.usage()[0].used)
    """
)


def test_two_processes_share_answers_and_the_second_spends_no_quota(
    redis_url: str, tmp_path: Path
) -> None:
    base = redis_url.rsplit("/", 1)[0]
    ledger = f"sqlite:///{tmp_path}/ledger.db"
    outputs = [
        subprocess.run(
            [sys.executable, "-c", WORKER, base, ledger],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.split()
        for _ in range(2)
    ]
    first, second = outputs
    assert first[:2] == ["1", "False"]  # the first worker asked the vendor
    assert second[:2] == ["0", "True"]  # the second got the answer from Redis
    assert second[2] == first[2]  # and spent nothing more in the shared ledger


def test_an_unreachable_redis_is_a_miss_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = RedisResponseCache("redis://127.0.0.1:1/0")
    with caplog.at_level(logging.WARNING, logger="langchain_quota_router"):
        assert cache.lookup("p", "l") is None
        cache.update("p", "l", [])
        assert cache.lookup("p", "l") is None
    assert caplog.text.count("unreachable") == 1
