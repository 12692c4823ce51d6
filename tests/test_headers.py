"""Tests for reading vendors' rate-limit response headers."""

from __future__ import annotations

import httpx
import pytest

from langchain_quota_router.quota.headers import (
    RateLimitHeader,
    parse_duration,
    read_rate_limit_headers,
)

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def rows(found: list[RateLimitHeader]) -> list[tuple[object, ...]]:
    """Flatten headers to tuples so resets can be compared with ``pytest.approx``."""
    return [(h.metric, h.limit, h.remaining, h.reset_after, h.window) for h in found]


def test_groq_headers() -> None:
    # Groq: requests count per day, tokens per minute.
    headers = {
        "x-ratelimit-limit-requests": "14400",
        "x-ratelimit-limit-tokens": "18000",
        "x-ratelimit-remaining-requests": "14370",
        "x-ratelimit-remaining-tokens": "17997",
        "x-ratelimit-reset-requests": "2m59.56s",
        "x-ratelimit-reset-tokens": "7.66s",
    }
    assert rows(read_rate_limit_headers(headers)) == [
        ("requests", 14400, 14370, pytest.approx(179.56), None),
        ("tokens", 18000, 17997, pytest.approx(7.66), None),
    ]


def test_openai_headers_in_any_case_via_httpx() -> None:
    headers = httpx.Headers(
        {
            "X-RateLimit-Limit-Requests": "500",
            "X-RateLimit-Remaining-Requests": "499",
            "X-RateLimit-Reset-Requests": "120ms",
            "X-RateLimit-Limit-Tokens": "30000",
            "X-RateLimit-Remaining-Tokens": "0",
            "X-RateLimit-Reset-Tokens": "1h2m3s",
        }
    )
    assert rows(read_rate_limit_headers(headers)) == [
        ("requests", 500, 499, pytest.approx(0.12), None),
        ("tokens", 30000, 0, 3723.0, None),
    ]


def test_only_remaining_is_required() -> None:
    headers = {"x-ratelimit-remaining-tokens": "42"}
    assert read_rate_limit_headers(headers) == [RateLimitHeader("tokens", None, 42, None)]


def test_mistral_headers_carry_their_window() -> None:
    headers = {
        "x-ratelimitbysize-limit-minute": "500000",
        "x-ratelimitbysize-remaining-minute": "499000",
        "x-ratelimitbysize-limit-month": "1000000000",
        "x-ratelimitbysize-remaining-month": "999999000",
    }
    assert read_rate_limit_headers(headers) == [
        RateLimitHeader("tokens", 500000, 499000, None, window="minute"),
        RateLimitHeader("tokens", 1000000000, 999999000, None, window="month"),
    ]


def test_openrouter_reset_in_epoch_milliseconds() -> None:
    headers = {
        "X-RateLimit-Limit": "20",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(int((NOW + 42.5) * 1000)),
    }
    assert rows(read_rate_limit_headers(headers, now=NOW)) == [
        ("requests", 20, 0, pytest.approx(42.5), None)
    ]


@pytest.mark.parametrize(
    ("reset", "expected"),
    [
        (str(int(NOW + 10)), 10.0),  # epoch seconds
        ("30", 30.0),  # seconds from now
        (str(int((NOW - 5) * 1000)), 0.0),  # already past
        ("whenever", None),
    ],
)
def test_openrouter_reset_variants(reset: str, expected: float | None) -> None:
    headers = {"x-ratelimit-remaining": "3", "x-ratelimit-reset": reset}
    [found] = read_rate_limit_headers(headers, now=NOW)
    assert found.reset_after == expected


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"content-type": "application/json"},
        {"x-ratelimit-remaining-requests": ""},
        {"x-ratelimit-remaining-requests": "lots"},
        {"x-ratelimit-remaining-tokens": "1e400"},
        {"x-ratelimit-remaining-tokens": "nan"},
        {"x-ratelimitbysize-remaining-minute": "-"},
        {"x-ratelimit-remaining": "0x10"},
    ],
)
def test_malformed_or_missing_remaining_is_skipped(headers: dict[str, str]) -> None:
    assert read_rate_limit_headers(headers) == []


def test_malformed_limit_and_reset_become_none() -> None:
    headers = {
        "x-ratelimit-limit-requests": "many",
        "x-ratelimit-remaining-requests": "7",
        "x-ratelimit-reset-requests": "soon",
    }
    assert read_rate_limit_headers(headers) == [RateLimitHeader("requests", None, 7, None)]


def test_fractional_and_negative_counts() -> None:
    headers = {
        "x-ratelimit-remaining-requests": "12.9",
        "x-ratelimit-remaining-tokens": "-3",
    }
    remaining = [found.remaining for found in read_rate_limit_headers(headers)]
    # A negative count is a vendor's overshoot: nothing is left.
    assert remaining == [12, 0]


def test_non_text_values_are_ignored() -> None:
    headers: dict[str, object] = {
        "x-ratelimit-remaining-requests": 5,
        "x-ratelimit-remaining-tokens": "9",
    }
    found = read_rate_limit_headers(headers)  # type: ignore[arg-type]
    assert [item.metric for item in found] == ["tokens"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2m59.56s", 179.56),
        ("6s", 6.0),
        ("120ms", 0.12),
        ("1h30m", 5400.0),
        ("1m0.5s", 60.5),
        ("500us", 0.0005),
        ("1.5µs", 1.5e-6),
        ("20ns", 2e-8),
        ("0", 0.0),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "2 m", "m2", "1d", "1.2.3s", "--1s"])
def test_bad_durations(text: str) -> None:
    assert parse_duration(text) is None
