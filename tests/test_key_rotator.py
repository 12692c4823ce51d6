"""KeyRotator: the keys of any API, spent only while they have quota, on the same
ledger as the chat routes. Every behaviour runs through the six ways in (``way``:
call, acall, @rotate sync and async, key(), akey())."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from key_paths import WAYS, use

from langchain_quota_router import (
    ConfigurationError,
    Key,
    KeyRotator,
    QuotaExhaustedError,
    QuotaRoutedChatModel,
    Route,
    RoutesAuthenticationError,
)
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.quota.failures import FailureKind
from langchain_quota_router.testing import FakeVendorChatModel

K1 = "serp-key-one-0123456789abcdef"
K2 = "serp-key-two-fedcba9876543210"
K3 = "serp-key-three-a1b2c3d4e5f6a7b8"


@pytest.fixture(params=WAYS)
def way(request: pytest.FixtureRequest) -> str:
    """Each way into a rotator in turn."""
    return str(request.param)


def rotator(clock: FakeClock, *keys: str | Key, **kwargs: Any) -> KeyRotator:
    kwargs.setdefault("limits", ["3/day"])
    kwargs.setdefault("ledger", "memory://")
    return KeyRotator("serp", keys=list(keys or (K1, K2)), clock=clock, **kwargs)


def http_error(status: int, headers: dict[str, str] | None = None, body: str = "") -> Exception:
    request = httpx.Request("GET", "https://api.example.invalid/search")
    response = httpx.Response(status, headers=headers or {}, text=body, request=request)
    return httpx.HTTPStatusError(f"{status}", request=request, response=response)


class FakeAPI:
    """A search API: answers with the key it was given, or fails for some keys."""

    def __init__(self, failures: dict[str, Exception] | None = None) -> None:
        self.failures = dict(failures or {})
        self.seen: list[str] = []

    def __call__(self, key: str) -> str:
        self.seen.append(key)
        failure = self.failures.get(key)
        if failure is not None:
            raise failure
        return f"results for {key[:13]}"


# ------------------------------------------------------------------ admission


async def test_keys_are_spent_in_order_then_refused(clock: FakeClock, way: str) -> None:
    serp = rotator(clock)
    api = FakeAPI()
    for _ in range(6):
        await use(serp, way, api)
    assert api.seen == [K1] * 3 + [K2] * 3
    with pytest.raises(QuotaExhaustedError) as caught:
        await use(serp, way, api)
    assert set(caught.value.reasons) == {"serp#0", "serp#1"}
    assert caught.value.resets_at is not None
    assert caught.value.resets_at.isoformat() == "2026-01-02T00:00:00+00:00"
    assert len(api.seen) == 6  # the refused call reached no key


async def test_spread_spends_the_key_with_most_room(clock: FakeClock, way: str) -> None:
    serp = rotator(clock, strategy="spread", limits=["10/day"])
    api = FakeAPI()
    for _ in range(6):
        await use(serp, way, api)
    assert sorted(api.seen.count(k) for k in (K1, K2)) == [3, 3]


async def test_a_bounded_wait_for_the_next_window(clock: FakeClock, way: str) -> None:
    serp = rotator(clock, K1, limits=["2/minute"], max_wait=120)
    api = FakeAPI()
    for _ in range(3):
        await use(serp, way, api)
    assert api.seen == [K1] * 3
    assert clock.slept
    assert 0 < sum(clock.slept) <= 62  # the minute's oldest second frees up


async def test_cost_is_counted_in_the_unit_of_the_limits(clock: FakeClock, way: str) -> None:
    serp = rotator(clock, limits=["2000 tokens/minute"])
    api = FakeAPI()
    await use(serp, way, api, cost=1500)
    await use(serp, way, api, cost=1500)  # does not fit beside the first on K1
    assert api.seen == [K1, K2]
    usage = {u.pool: u.used for u in serp.usage()}
    assert sorted(usage.values()) == [1500, 1500]


def test_a_lease_reports_the_real_cost(clock: FakeClock) -> None:
    serp = rotator(clock, K1, limits=["2000 tokens/minute"])
    with serp.key(cost=1500) as key:
        key.report(used=200)
    with serp.key(cost=1500) as key:  # fits: only 200 were spent
        assert key.secret == K1
    assert [u.used for u in serp.usage()] == [1700]


# ------------------------------------------------------------------ failures


async def test_a_rejected_key_is_disabled_until_enabled(clock: FakeClock, way: str) -> None:
    serp = rotator(clock)
    api = FakeAPI({K1: http_error(401, body="invalid api key")})
    if way in ("key", "akey"):  # the block is not run again: the error is the caller's
        with pytest.raises(httpx.HTTPStatusError):
            await use(serp, way, api)
        assert await use(serp, way, api) == f"results for {K2[:13]}"
    else:
        assert await use(serp, way, api) == f"results for {K2[:13]}"
    assert await use(serp, way, api) == f"results for {K2[:13]}"
    assert api.seen.count(K1) == 1  # asked once, then skipped
    api.failures.clear()
    assert serp.enable("serp#0") is True
    assert serp.enable("serp#0") is False  # nothing left to lift
    assert await use(serp, way, api) == f"results for {K1[:13]}"


async def test_every_key_rejected_is_an_authentication_error(clock: FakeClock, way: str) -> None:
    serp = rotator(clock)
    api = FakeAPI({K1: http_error(403), K2: http_error(401)})
    for _ in range(2 if way in ("key", "akey") else 1):
        with pytest.raises((httpx.HTTPStatusError, RoutesAuthenticationError)):
            await use(serp, way, api)
    with pytest.raises(RoutesAuthenticationError):
        await use(serp, way, api)


async def test_a_429_blocks_the_key_until_its_retry_after(clock: FakeClock, way: str) -> None:
    serp = rotator(clock, limits=["100/day"])
    api = FakeAPI({K1: http_error(429, {"retry-after": "30"})})
    if way in ("key", "akey"):
        with pytest.raises(httpx.HTTPStatusError):
            await use(serp, way, api)
    await use(serp, way, api)
    assert api.seen[-1] == K2
    api.failures.clear()
    await use(serp, way, api)
    assert api.seen[-1] == K2  # still blocked
    clock.advance(31)
    await use(serp, way, api)
    assert api.seen[-1] == K1


async def test_a_server_error_cools_the_key_down(clock: FakeClock, way: str) -> None:
    serp = rotator(clock, limits=["100/day"], transient_cooldown=10)
    api = FakeAPI({K1: requests.ConnectionError("connection reset")})
    if way in ("key", "akey"):
        with pytest.raises(requests.ConnectionError):
            await use(serp, way, api)
    await use(serp, way, api)
    assert api.seen[-1] == K2
    api.failures.clear()
    clock.advance(11)
    await use(serp, way, api)
    assert api.seen[-1] == K1


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(http_error(400, body="bad query"), id="400"),
        pytest.param(ValueError("the function's own bug"), id="own-error"),
    ],
)
async def test_other_errors_are_raised_without_spending_another_key(
    clock: FakeClock, way: str, error: Exception
) -> None:
    serp = rotator(clock, limits=["100/day"])
    api = FakeAPI({K1: error})
    with pytest.raises(type(error)):
        await use(serp, way, api)
    assert api.seen == [K1]


def test_statuses_are_read_from_requests_and_from_any_status_attribute(clock: FakeClock) -> None:
    response = requests.Response()
    response.status_code = 401
    by_requests = requests.HTTPError("401 Client Error", response=response)

    class OddError(Exception):
        status = 429

    serp = rotator(clock, K1, K2, K3, limits=["100/day"])
    api = FakeAPI({K1: by_requests, K2: OddError("slow down")})
    assert serp.call(lambda *, api_key: api(api_key)) == f"results for {K3[:13]}"
    states = {h.reason.split(":")[0] for h in serp.ledger_backend.holds(clock.now())}
    assert states == {"disabled", "rate_limit"}


def test_classify_reads_errors_an_api_reports_its_own_way(clock: FakeClock) -> None:
    class ThrottledError(Exception):
        pass

    serp = rotator(
        clock,
        limits=["100/day"],
        classify=lambda exc: FailureKind.RATE_LIMIT if isinstance(exc, ThrottledError) else None,
    )
    api = FakeAPI({K1: ThrottledError("try later")})
    assert serp.call(lambda *, api_key: api(api_key)) == f"results for {K2[:13]}"


def test_observe_keeps_the_count_honest(clock: FakeClock) -> None:
    serp = rotator(
        clock,
        limits=["100/day"],
        observe=lambda result: {
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-limit-requests": "100",
        },
    )
    serp.call(lambda *, api_key: "ok")
    # The API says K1 has nothing left: the next call goes to K2 without asking K1.
    seen: list[str] = []
    serp.call(lambda *, api_key: seen.append(api_key))
    assert seen == [K2]


# ------------------------------------------------------------------ shared pools


async def test_a_chat_route_and_a_key_sharing_a_pool_count_together(
    clock: FakeClock, way: str, tmp_path: Path
) -> None:
    ledger = f"sqlite:///{tmp_path}/ledger.db"
    chat = QuotaRoutedChatModel(
        routes=[
            Route(FakeVendorChatModel(), name="cohere-chat", pool="cohere-trial", limits=["10/day"])
        ],
        ledger=ledger,
        cache=False,
        clock=clock,
    )
    rerank = KeyRotator(
        "cohere-rerank",
        keys=[Key(K1, pool="cohere-trial", limits=["10/day"])],
        ledger=ledger,
        clock=clock,
    )
    served = 0
    for i in range(20):
        try:
            if i % 2:
                chat.invoke("hi")
            else:
                await use(rerank, way, FakeAPI())
            served += 1
        except QuotaExhaustedError:
            pass
    assert served == 10


# ------------------------------------------------------------------ configuration


def test_from_env_reads_the_seed_conventions(clock: FakeClock) -> None:
    env = {
        "SERP_API_KEYS": f"{K1},{K2}",
        "SERP_LIMITS": "100/month",
        "SERP_MAX_REQUESTS_PER_DAY_0": "5",
        "SERP_MAX_REQUESTS_PER_DAY_1": "7",
    }
    serp = KeyRotator.from_env("SERP", env, dotenv=None, ledger="memory://", clock=clock)
    assert serp.keys == ["serp#0", "serp#1"]
    limits = {
        row.pool: sorted(str(u.limit) for u in serp.usage() if u.pool == row.pool)
        for row in serp.usage()
    }
    assert sorted(map(tuple, limits.values())) == [("100/month", "5/day"), ("100/month", "7/day")]


def test_from_env_numbered_and_single_keys(clock: FakeClock) -> None:
    env = {"SERP_API_KEY": K1, "SERP_API_KEY_2": K2, "SERP_LIMITS": "10/day"}
    serp = KeyRotator.from_env("SERP", env, dotenv=None, ledger="memory://", clock=clock)
    assert serp.keys == ["serp", "serp#2"]


@pytest.mark.parametrize(
    ("env", "culprit"),
    [
        ({}, "SERP_API_KEYS"),
        ({"SERP_API_KEY": K1, "SERP_MAX_REQUESTS_PER_DAY_3": "5"}, "SERP_MAX_REQUESTS_PER_DAY_3"),
        ({"SERP_API_KEY": K1, "SERP_MAX_REQUESTS_PER_DAY": "five"}, "SERP_MAX_REQUESTS_PER_DAY"),
        ({"SERP_API_KEY": K1, "SERP_LIMITS": "5/fortnight"}, "SERP_LIMITS"),
    ],
)
def test_from_env_errors_name_the_variable(env: dict[str, str], culprit: str) -> None:
    with pytest.raises(ConfigurationError, match=culprit):
        KeyRotator.from_env("SERP", env, dotenv=None, ledger="memory://")


@pytest.mark.parametrize(
    ("kwargs", "culprit"),
    [
        ({"keys": []}, "list of keys"),
        ({"keys": [K1, K1]}, None),
        ({"keys": [Key(K1, name="a"), Key(K2, name="a")]}, "two keys are named 'a'"),
        ({"strategy": "cheapest"}, "strategy"),
        ({"limits": ["5/fortnight"]}, "fortnight"),
        ({"max_wait": -1}, "max_wait"),
        (
            {"keys": [Key(K1, pool="p", limits=["1/day"]), Key(K2, pool="p", limits=["2/day"])]},
            "share pool 'p'",
        ),
    ],
)
def test_bad_configuration_names_the_culprit(kwargs: dict[str, Any], culprit: str | None) -> None:
    kwargs.setdefault("keys", [K1, K2])
    if culprit is None:  # the same key twice is one pool: fine, and counted once
        serp = KeyRotator("serp", ledger="memory://", **kwargs)
        assert len({u.pool for u in serp.usage()}) == 1 or not serp.usage()
        return
    with pytest.raises(ConfigurationError, match=culprit):
        KeyRotator("serp", ledger="memory://", **kwargs)


@pytest.mark.parametrize("cost", [0.5, -1, True, "1"])
def test_a_bad_cost_is_refused(clock: FakeClock, cost: Any) -> None:
    serp = rotator(clock)
    with pytest.raises(ValueError, match="cost"):
        serp.call(lambda *, api_key: None, cost=cost)


# ------------------------------------------------------------------ never a key


async def test_keys_never_show(
    clock: FakeClock, way: str, caplog: pytest.LogCaptureFixture
) -> None:
    serp = rotator(clock)
    echo = http_error(401, body=f"invalid api key {K1} and {K2}")
    api = FakeAPI({K1: echo, K2: http_error(401, body=f"bad key {K2}")})
    shown: list[str] = [repr(serp), repr(Key(K1)), repr(Key(K1, name="main"))]
    with caplog.at_level(logging.DEBUG, logger="langchain_quota_router"):
        for _ in range(3):
            try:
                await use(serp, way, api)
            except Exception as exc:
                shown.append(str(exc))
                shown.append(str(getattr(exc, "reasons", "")))
    shown.append(caplog.text)
    shown.extend(h.reason for h in serp.ledger_backend.holds(clock.now()))
    shown.append(str(serp.get_stats()))
    text = "\n".join(shown)
    assert K1 not in text
    assert K2 not in text


def test_a_lease_repr_shows_no_key(clock: FakeClock) -> None:
    serp = rotator(clock)
    with serp.key() as key:
        assert K1 not in repr(key)
        assert key.secret == K1


def test_errors_speak_of_keys(clock: FakeClock) -> None:
    serp = rotator(clock, K1, limits=["1/day"])
    serp.call(lambda *, api_key: None)
    with pytest.raises(QuotaExhaustedError, match="no key can serve this call"):
        serp.call(lambda *, api_key: None)
    other = rotator(clock, K2, limits=["5/day"])
    with pytest.raises(httpx.HTTPStatusError), other.key():
        raise http_error(401)
    (hold,) = other.ledger_backend.holds(clock.now())
    assert "serp.enable('serp#0')" in hold.reason


@pytest.mark.parametrize("way_in", ["call", "acall", "rotate", "arotate"])
async def test_headers_that_agree_are_written_once_a_second(
    clock: FakeClock, way_in: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An API that reports its counters on every answer, all agreeing with the
    # ledger: written once a second per pool and limit, not once per call.
    serp = rotator(
        clock,
        K1,
        limits=["100/day"],
        observe=lambda result: {
            "x-ratelimit-remaining-requests": "90",
            "x-ratelimit-limit-requests": "100",
        },
    )
    writes: list[int] = []
    real = serp.ledger_backend.observe

    def counted(pool: str, limit: Any, left: int, now: float) -> None:
        writes.append(left)
        real(pool, limit, left, now)

    monkeypatch.setattr(serp.ledger_backend, "observe", counted)
    for _ in range(5):
        await use(serp, way_in, lambda key: "ok")
        clock.advance(0.1)
    assert writes == [90]
    clock.advance(1.0)
    await use(serp, way_in, lambda key: "ok")
    assert writes == [90, 90]
