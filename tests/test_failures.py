"""Tests for classifying vendor exceptions, built the way each SDK builds them."""

from __future__ import annotations

from typing import Any

import cohere
import google.genai.errors as genai_errors
import groq
import httpx
import httpx2
import openai
import pytest
from cohere.core.api_error import ApiError
from langchain_core.exceptions import (
    ContextOverflowError,
    ModelAPIError,
    ModelConnectionError,
    ModelRateLimitError,
    ModelTimeoutError,
)
from langchain_google_genai.chat_models import (
    GoogleAPIError,
    GoogleContextOverflowError,
    GoogleRateLimitError,
)
from langchain_openai.chat_models.base import (
    OpenAIAuthenticationError,
    OpenAIContextOverflowError,
    OpenAIRateLimitError,
    OpenAITimeoutError,
)

from langchain_quota_router.quota.failures import (
    Failure,
    FailureKind,
    classify,
    parse_duration,
    redact,
)

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z

OPENAI_URL = "https://api.openai.com/v1/chat/completions"
GROQ_URL = "https://api.groq.com/openai/v1/chat/completions"


def openai_error(
    cls: type[openai.APIStatusError],
    status: int,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> openai.APIStatusError:
    """Build an openai status error as ``openai._client._make_status_error`` does."""
    request = httpx2.Request("POST", OPENAI_URL)
    response = httpx2.Response(status, headers=headers or {}, request=request)
    return cls(f"Error code: {status} - {body}", response=response, body=body)


def groq_error(
    cls: type[groq.APIStatusError],
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
    code: str = "rate_limit_exceeded",
) -> groq.APIStatusError:
    """Build a groq status error; groq keeps the whole ``{"error": ...}`` body."""
    body = {"error": {"message": message, "type": "tokens", "code": code}}
    request = httpx.Request("POST", GROQ_URL)
    response = httpx.Response(status, headers=headers or {}, request=request)
    return cls(f"Error code: {status} - {body}", response=response, body=body)


def gemini_429(quota_id: str, retry_delay: str | None = "47s") -> dict[str, Any]:
    """A Gemini 429 body with QuotaFailure and (optionally) RetryInfo details."""
    details: list[dict[str, Any]] = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [
                {
                    "quotaMetric": "generativelanguage.googleapis.com/"
                    "generate_content_free_tier_requests",
                    "quotaId": quota_id,
                    "quotaDimensions": {"location": "global", "model": "gemini-2.5"},
                    "quotaValue": "20",
                }
            ],
        },
        {
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [{"url": "https://ai.google.dev/gemini-api/docs/rate-limits"}],
        },
    ]
    if retry_delay is not None:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": retry_delay,
            }
        )
    return {
        "error": {
            "code": 429,
            "message": "You exceeded your current quota, please check your plan and "
            "billing details. * Quota exceeded for metric: "
            "generativelanguage.googleapis.com/generate_content_free_tier_requests, "
            "limit: 20, model: gemini-3.5-flash",
            "status": "RESOURCE_EXHAUSTED",
            "details": details,
        }
    }


def wrapped(outer: BaseException, cause: BaseException) -> BaseException:
    """Chain ``outer`` to ``cause`` as ``raise outer from cause`` does."""
    try:
        raise outer from cause
    except BaseException as caught:
        return caught


# --- OpenAI -------------------------------------------------------------------------


def test_openai_rate_limit_reads_retry_after_and_headers() -> None:
    error = openai_error(
        openai.RateLimitError,
        429,
        {
            "message": "Rate limit reached for gpt-4o-mini in organization org-x on "
            "requests per min (RPM): Limit 3, Used 3, Requested 1.",
            "type": "requests",
            "code": "rate_limit_exceeded",
        },
        {"Retry-After": "20", "X-RateLimit-Remaining-Requests": "0"},
    )
    failure = classify(error, now=NOW)
    assert failure == Failure(
        kind=FailureKind.RATE_LIMIT,
        status=429,
        retry_after=20.0,
        period="minute",
        message=failure.message,
        headers=failure.headers,
    )
    assert failure.headers["x-ratelimit-remaining-requests"] == "0"
    assert failure.message.startswith("RateLimitError (429): Rate limit reached")


def test_openai_insufficient_quota_is_quota_exhausted() -> None:
    error = openai_error(
        openai.RateLimitError,
        429,
        {
            "message": "You exceeded your current quota, please check your plan and "
            "billing details.",
            "type": "insufficient_quota",
            "code": "insufficient_quota",
        },
    )
    failure = classify(error, now=NOW)
    assert failure.kind is FailureKind.QUOTA_EXHAUSTED
    assert failure.retry_after is None


def test_openai_reset_header_used_when_remaining_is_zero() -> None:
    error = openai_error(
        openai.RateLimitError,
        429,
        {"message": "Rate limit reached", "code": "rate_limit_exceeded"},
        {
            "x-ratelimit-remaining-requests": "5",
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": "2m59.56s",
        },
    )
    assert classify(error, now=NOW).retry_after == pytest.approx(179.56)


def test_retry_after_ms_header() -> None:
    error = openai_error(
        openai.RateLimitError, 429, {"message": "slow down"}, {"retry-after-ms": "1500"}
    )
    assert classify(error, now=NOW).retry_after == pytest.approx(1.5)


def test_retry_after_http_date() -> None:
    error = openai_error(
        openai.RateLimitError,
        429,
        {"message": "slow down"},
        {"retry-after": "Thu, 01 Jan 2026 00:00:30 GMT"},
    )
    assert classify(error, now=NOW).retry_after == pytest.approx(30.0)


@pytest.mark.parametrize(
    ("cls", "status", "kind"),
    [
        (openai.AuthenticationError, 401, FailureKind.AUTHENTICATION),
        (openai.PermissionDeniedError, 403, FailureKind.AUTHENTICATION),
        (openai.InternalServerError, 500, FailureKind.TRANSIENT),
        (openai.InternalServerError, 503, FailureKind.TRANSIENT),
        (openai.APIStatusError, 529, FailureKind.TRANSIENT),
        (openai.BadRequestError, 400, FailureKind.BAD_REQUEST),
        (openai.NotFoundError, 404, FailureKind.BAD_REQUEST),
        (openai.UnprocessableEntityError, 422, FailureKind.BAD_REQUEST),
        (openai.APIStatusError, 402, FailureKind.QUOTA_EXHAUSTED),
    ],
)
def test_openai_status_errors(
    cls: type[openai.APIStatusError], status: int, kind: FailureKind
) -> None:
    failure = classify(openai_error(cls, status, {"message": "nope"}), now=NOW)
    assert (failure.kind, failure.status) == (kind, status)


def test_openai_context_length_exceeded() -> None:
    error = openai_error(
        openai.BadRequestError,
        400,
        {
            "message": "This model's maximum context length is 128000 tokens.",
            "type": "invalid_request_error",
            "code": "context_length_exceeded",
        },
    )
    assert classify(error, now=NOW).kind is FailureKind.CONTEXT_TOO_LONG


@pytest.mark.parametrize(
    "error",
    [
        openai.APITimeoutError(request=httpx2.Request("POST", OPENAI_URL)),
        openai.APIConnectionError(request=httpx2.Request("POST", OPENAI_URL)),
    ],
    ids=["timeout", "connection"],
)
def test_openai_network_errors_are_transient(error: BaseException) -> None:
    failure = classify(error, now=NOW)
    assert (failure.kind, failure.status) == (FailureKind.TRANSIENT, None)


# --- langchain-openai wrappers (raised `from` the SDK error) --------------------------


def test_langchain_openai_rate_limit_wrapper() -> None:
    inner = openai_error(openai.RateLimitError, 429, {"message": "slow down"}, {"retry-after": "3"})
    outer = OpenAIRateLimitError(message=inner.message, response=inner.response, body=inner.body)
    failure = classify(wrapped(outer, inner), now=NOW)
    assert isinstance(outer, ModelRateLimitError)
    assert (failure.kind, failure.retry_after) == (FailureKind.RATE_LIMIT, 3.0)
    assert failure.message.startswith("OpenAIRateLimitError (429)")


def test_langchain_openai_context_overflow_wrapper() -> None:
    inner = openai_error(openai.BadRequestError, 400, {"message": "too long"})
    outer = OpenAIContextOverflowError(
        message=inner.message, response=inner.response, body=inner.body
    )
    assert classify(wrapped(outer, inner)).kind is FailureKind.CONTEXT_TOO_LONG


def test_langchain_openai_timeout_and_auth_wrappers() -> None:
    request = httpx2.Request("POST", OPENAI_URL)
    timeout = wrapped(OpenAITimeoutError(request), openai.APITimeoutError(request))
    assert classify(timeout).kind is FailureKind.TRANSIENT
    inner = openai_error(openai.AuthenticationError, 401, {"message": "bad key"})
    outer = OpenAIAuthenticationError(
        message=inner.message, response=inner.response, body=inner.body
    )
    assert classify(wrapped(outer, inner)).kind is FailureKind.AUTHENTICATION


@pytest.mark.parametrize(
    ("error", "kind", "status"),
    [
        (ModelRateLimitError("limited"), FailureKind.RATE_LIMIT, 429),
        (ModelTimeoutError("slow"), FailureKind.TRANSIENT, None),
        (ModelConnectionError("down"), FailureKind.TRANSIENT, None),
        (ModelAPIError("boom"), FailureKind.TRANSIENT, None),
        (ContextOverflowError("long"), FailureKind.CONTEXT_TOO_LONG, None),
    ],
)
def test_bare_langchain_core_errors(
    error: BaseException, kind: FailureKind, status: int | None
) -> None:
    failure = classify(error)
    assert (failure.kind, failure.status) == (kind, status)


# --- Groq ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "kind", "period", "retry_after"),
    [
        (
            "Rate limit reached for model `openai/gpt-oss-120b` in organization "
            "`org_01abc` service tier `on_demand` on tokens per minute (TPM): Limit "
            "12000, Used 11500, Requested 900. Please try again in 2.01s. Need more "
            "tokens? Upgrade to Dev Tier today at https://console.groq.com/settings/"
            "billing",
            FailureKind.RATE_LIMIT,
            "minute",
            2.01,
        ),
        (
            "Rate limit reached for model `openai/gpt-oss-120b` in organization "
            "`org_01abc` service tier `on_demand` on tokens per day (TPD): Limit "
            "100000, Used 99800, Requested 900. Please try again in 7m12.5s.",
            FailureKind.QUOTA_EXHAUSTED,
            "day",
            432.5,
        ),
        (
            "Rate limit reached for model `openai/gpt-oss-120b` in organization "
            "`org_01abc` service tier `on_demand` on requests per day (RPD): Limit "
            "1000, Used 1000, Requested 1. Please try again in 7.66s.",
            FailureKind.QUOTA_EXHAUSTED,
            "day",
            7.66,
        ),
    ],
    ids=["tpm", "tpd", "rpd"],
)
def test_groq_rate_limits(message: str, kind: FailureKind, period: str, retry_after: float) -> None:
    failure = classify(groq_error(groq.RateLimitError, 429, message), now=NOW)
    assert (failure.kind, failure.period) == (kind, period)
    assert failure.retry_after == pytest.approx(retry_after)


def test_groq_retry_after_header_beats_message() -> None:
    error = groq_error(
        groq.RateLimitError,
        429,
        "on tokens per minute (TPM): Please try again in 7.66s.",
        {"retry-after": "8"},
    )
    assert classify(error, now=NOW).retry_after == 8.0


def test_groq_request_too_large_is_context_too_long() -> None:
    # Groq sends 413 when one request exceeds the TPM limit: it never fits here.
    error = groq_error(
        groq.APIStatusError,
        413,
        "Request too large for model `openai/gpt-oss-20b` on tokens per minute "
        "(TPM): Limit 6000, Requested 7000.",
    )
    assert classify(error).kind is FailureKind.CONTEXT_TOO_LONG


def test_groq_context_length_exceeded() -> None:
    error = groq_error(
        groq.BadRequestError,
        400,
        "Please reduce the length of the messages or completion.",
        code="context_length_exceeded",
    )
    assert classify(error).kind is FailureKind.CONTEXT_TOO_LONG


def test_groq_connection_error() -> None:
    error = groq.APIConnectionError(request=httpx.Request("POST", GROQ_URL))
    assert classify(error).kind is FailureKind.TRANSIENT


# --- Gemini (google-genai and langchain-google-genai) -------------------------------


@pytest.mark.parametrize(
    ("quota_id", "kind", "period"),
    [
        (
            "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
            FailureKind.QUOTA_EXHAUSTED,
            "day",
        ),
        (
            "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
            FailureKind.RATE_LIMIT,
            "minute",
        ),
        (
            "GenerateContentInputTokensPerModelPerMinute-FreeTier",
            FailureKind.RATE_LIMIT,
            "minute",
        ),
    ],
)
def test_gemini_client_error(quota_id: str, kind: FailureKind, period: str) -> None:
    failure = classify(genai_errors.ClientError(429, gemini_429(quota_id)), now=NOW)
    assert (failure.kind, failure.period, failure.status) == (kind, period, 429)
    assert failure.retry_after == 47.0
    assert failure.message.startswith("ClientError (429): You exceeded your current")


def test_gemini_wrapped_by_langchain() -> None:
    inner = genai_errors.ClientError(
        429, gemini_429("GenerateRequestsPerDayPerProjectPerModel-FreeTier", "3.5s")
    )
    outer = GoogleRateLimitError(
        f"Error calling model 'gemini-3.5-flash' ({inner.status}): {inner}"
    )
    failure = classify(wrapped(outer, inner), now=NOW)
    assert (failure.kind, failure.period) == (FailureKind.QUOTA_EXHAUSTED, "day")
    assert (failure.status, failure.retry_after) == (429, 3.5)
    assert failure.message.startswith("GoogleRateLimitError (429): You exceeded")


def test_gemini_without_details_falls_back_to_message_retry() -> None:
    body = {
        "error": {
            "code": 429,
            "message": "Resource exhausted. Please retry in 27.3s.",
            "status": "RESOURCE_EXHAUSTED",
        }
    }
    failure = classify(genai_errors.ClientError(429, body), now=NOW)
    assert (failure.kind, failure.retry_after) == (FailureKind.RATE_LIMIT, 27.3)


def test_gemini_server_errors_are_transient() -> None:
    body = {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}
    assert classify(genai_errors.ServerError(503, body)).kind is FailureKind.TRANSIENT
    wrapper = GoogleAPIError(code=503, response_json=body)
    assert classify(wrapper).kind is FailureKind.TRANSIENT


def test_gemini_invalid_key_is_authentication() -> None:
    # Gemini answers a bad key with 400 INVALID_ARGUMENT, not 401.
    body = {
        "error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [{"reason": "API_KEY_INVALID"}],
        }
    }
    assert classify(genai_errors.ClientError(400, body)).kind is (FailureKind.AUTHENTICATION)


def test_gemini_context_overflow() -> None:
    body = {
        "error": {
            "code": 400,
            "message": "The input token count exceeds the maximum number of tokens allowed",
            "status": "INVALID_ARGUMENT",
        }
    }
    error = GoogleContextOverflowError(code=400, response_json=body)
    assert classify(error).kind is FailureKind.CONTEXT_TOO_LONG


def test_gemini_headers_come_from_the_response() -> None:
    response = httpx2.Response(429, headers={"Retry-After": "9"})
    error = genai_errors.ClientError(429, {"error": {"message": "x"}}, response)
    failure = classify(error, now=NOW)
    assert (failure.retry_after, failure.headers["retry-after"]) == (9.0, "9")


# --- Cohere -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "kind", "period"),
    [
        (
            "You are using a Trial key, which is limited to 1000 API calls / month. "
            "You can continue to use the Trial key for free or upgrade.",
            FailureKind.QUOTA_EXHAUSTED,
            "month",
        ),
        (
            "You are using a Trial key, which is limited to 20 API calls / minute.",
            FailureKind.RATE_LIMIT,
            "minute",
        ),
    ],
)
def test_cohere_too_many_requests(message: str, kind: FailureKind, period: str) -> None:
    error = cohere.TooManyRequestsError(
        body={"id": "abc", "message": message}, headers={"Retry-After": "4"}
    )
    failure = classify(error, now=NOW)
    assert (failure.kind, failure.period, failure.status) == (kind, period, 429)
    assert (failure.retry_after, failure.headers) == (4.0, {"retry-after": "4"})


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (cohere.UnauthorizedError(body={"message": "invalid token"}), "authentication"),
        (cohere.ForbiddenError(body={"message": "forbidden"}), "authentication"),
        (cohere.BadRequestError(body={"message": "invalid request"}), "bad_request"),
        (
            cohere.BadRequestError(
                body={
                    "message": "too many tokens: total number of tokens in the "
                    "prompt cannot exceed 4081"
                }
            ),
            "context_too_long",
        ),
        (cohere.InternalServerError(body={"message": "oops"}), "transient"),
        (cohere.ServiceUnavailableError(body={"message": "later"}), "transient"),
        (cohere.GatewayTimeoutError(body={"message": "later"}), "transient"),
        (ApiError(status_code=402, body={"message": "pay up"}), "quota_exhausted"),
        (ApiError(status_code=529, body=None), "transient"),
    ],
)
def test_cohere_errors(error: BaseException, kind: str) -> None:
    assert classify(error).kind == kind


# --- httpx, builtins, unknown -------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        httpx.ReadTimeout("read timed out"),
        httpx.ConnectError("connection refused"),
        httpx2.ConnectTimeout("connect timed out"),
        httpx2.RemoteProtocolError("server hung up"),
        TimeoutError(),
        ConnectionResetError(104, "Connection reset by peer"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_network_errors_are_transient(error: BaseException) -> None:
    failure = classify(error)
    assert (failure.kind, failure.status) == (FailureKind.TRANSIENT, None)


def httpx_status_error(status: int, message: str) -> httpx.HTTPStatusError:
    """Build what ``response.raise_for_status()`` raises for an OpenRouter reply."""
    request = httpx.Request("POST", "https://openrouter.ai/api/v1/chat/completions")
    response = httpx.Response(status, json={"error": {"message": message}}, request=request)
    return httpx.HTTPStatusError("failed", request=request, response=response)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, FailureKind.RATE_LIMIT),
        (402, FailureKind.QUOTA_EXHAUSTED),
        (401, FailureKind.AUTHENTICATION),
        (502, FailureKind.TRANSIENT),
        (422, FailureKind.BAD_REQUEST),
    ],
)
def test_httpx_status_error(status: int, kind: FailureKind) -> None:
    failure = classify(httpx_status_error(status, "nope"))
    assert (failure.kind, failure.status) == (kind, status)


@pytest.mark.parametrize("status", [429, 400, 403])
def test_insufficient_credits_read_from_httpx_response_body(status: int) -> None:
    failure = classify(httpx_status_error(status, "Insufficient credits"))
    assert failure.kind is FailureKind.QUOTA_EXHAUSTED
    assert failure.message == f"HTTPStatusError ({status}): Insufficient credits"


def test_openrouter_reset_header_gives_retry_after() -> None:
    request = httpx.Request("POST", "https://openrouter.ai/api/v1/chat/completions")
    headers = {
        "X-RateLimit-Limit": "20",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(int((NOW + 12) * 1000)),
    }
    response = httpx.Response(429, headers=headers, request=request)
    error = httpx.HTTPStatusError("429", request=request, response=response)
    assert classify(error, now=NOW).retry_after == pytest.approx(12.0)


def test_openrouter_daily_free_limit() -> None:
    error = httpx_status_error(429, "Rate limit exceeded: free-models-per-day")
    failure = classify(error)
    assert (failure.kind, failure.period) == (FailureKind.QUOTA_EXHAUSTED, "day")


def test_insufficient_credits_in_a_bad_request() -> None:
    # Anthropic sends a spent balance as 400 invalid_request_error.
    error = openai_error(
        openai.BadRequestError,
        400,
        {"message": "Your credit balance is too low to access the Anthropic API."},
    )
    assert classify(error).kind is FailureKind.QUOTA_EXHAUSTED


@pytest.mark.parametrize(
    "error",
    [TypeError("unsupported"), KeyError("x"), ValueError("bad"), RuntimeError()],
    ids=lambda error: type(error).__name__,
)
def test_bugs_are_unknown(error: BaseException) -> None:
    failure = classify(error)
    assert (failure.kind, failure.status, failure.headers) == (
        FailureKind.UNKNOWN,
        None,
        {},
    )


def test_unknown_wrapper_around_vendor_error_is_seen_through() -> None:
    inner = groq_error(groq.RateLimitError, 429, "tokens per minute (TPM)")
    failure = classify(wrapped(RuntimeError("call failed"), inner), now=NOW)
    assert (failure.kind, failure.status) == (FailureKind.RATE_LIMIT, 429)
    assert failure.message.startswith("RuntimeError (429): tokens per minute")


def test_implicit_context_chain_is_followed() -> None:
    def call_vendor() -> None:
        try:
            raise httpx.ConnectError("refused")
        except httpx.ConnectError:
            raise RuntimeError("could not reach vendor") from None

    with pytest.raises(RuntimeError) as caught:
        call_vendor()
    # `from None` hides the context from tracebacks, but it is still there.
    assert classify(caught.value).kind is FailureKind.TRANSIENT


def test_self_referencing_chain_terminates() -> None:
    error = ValueError("loop")
    error.__context__ = error
    assert classify(error).kind is FailureKind.UNKNOWN


# --- Messages and redaction ---------------------------------------------------------


def test_openai_incorrect_key_message_is_redacted() -> None:
    key = "sk-proj-abcDEF1234567890abcDEF1234567890"
    error = openai_error(
        openai.AuthenticationError,
        401,
        {
            "message": f"Incorrect API key provided: {key}. You can find your API key "
            "at https://platform.openai.com/account/api-keys.",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        },
    )
    failure = classify(error)
    assert failure.kind is FailureKind.AUTHENTICATION
    assert "abcDEF" not in failure.message
    assert "[REDACTED]" in failure.message
    assert "\n" not in failure.message


@pytest.mark.parametrize(
    "secret",
    [
        "sk-abc***************************xyz1",
        "sk-or-v1-0123456789abcdef0123456789abcdef",
        "gsk_0123456789ABCDEFabcdef0123456789",
        "AIzaSyA1234567890abcdefghijklmnopqrstu",
        "Bearer eyJhbGciOiJIUzI1NiJ9.abc.def",
        "0123456789abcdef0123456789abcdef0123",
        "Zx81kQm2LpR7vT0yWc4NbH6sJd9FgE3aUo5i",
    ],
)
def test_redact_hides_keys(secret: str) -> None:
    redacted = redact(f"key was {secret} here")
    assert secret not in redacted
    assert redacted.startswith("key was [REDACTED]")


def test_redact_keeps_ordinary_text() -> None:
    text = (
        "Rate limit reached for model `meta-llama/llama-4-scout-17b-16e-instruct` "
        "see https://ai.google.dev/gemini-api/docs/rate-limits"
    )
    assert redact(text) == text


def test_redact_applies_to_key_in_url_of_a_wrapper() -> None:
    error = RuntimeError(
        "GET https://x.googleapis.com/v1?key=AIzaSyA1234567890abcdefghijklm failed"
    )
    assert "AIza" not in classify(wrapped(error, TimeoutError())).message


def test_message_is_short() -> None:
    error = openai_error(openai.RateLimitError, 429, {"message": "x " * 1000})
    assert len(classify(error).message) <= 240


# --- parse_duration -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2m59.56s", 179.56),
        ("47s", 47.0),
        ("1h2m3s", 3723.0),
        ("250ms", 0.25),
        ("0.5s", 0.5),
        ("7.66s", 7.66),
        ("120", 120.0),
        (" 6s ", 6.0),
        ("1h30m", 5400.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "-5s", "1x", "inf", "nan", "s", "1s2"])
def test_parse_duration_garbage(text: str) -> None:
    assert parse_duration(text) is None
