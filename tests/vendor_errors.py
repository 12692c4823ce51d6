"""Real vendor exceptions, built the way each SDK builds them, for routing tests."""

from __future__ import annotations

from typing import Any

import google.genai.errors as genai_errors
import groq
import httpx
import httpx2
import openai


def openai_rate_limit(retry_after: str | None = "20") -> openai.RateLimitError:
    """OpenAI's 429 for a per-minute limit, with a retry-after header."""
    headers = {"retry-after": retry_after} if retry_after else {}
    body = {"message": "Rate limit reached for requests", "code": "rate_limit_exceeded"}
    return openai.RateLimitError(
        "Error code: 429", response=_openai_response(429, headers), body=body
    )


def openai_auth_error() -> openai.AuthenticationError:
    """OpenAI's 401, echoing (part of) the bad key as OpenAI does."""
    body = {
        "message": "Incorrect API key provided: sk-proj-abcdefghijklmnopqrstuvwxyz123456.",
        "code": "invalid_api_key",
    }
    return openai.AuthenticationError(
        "Error code: 401", response=_openai_response(401, {}), body=body
    )


def openai_bad_request(
    message: str = "Invalid 'temperature'",
) -> openai.BadRequestError:
    """OpenAI's 400 for a request no vendor would take."""
    body = {"message": message, "code": "invalid_value"}
    return openai.BadRequestError("Error code: 400", response=_openai_response(400, {}), body=body)


def openai_context_too_long() -> openai.BadRequestError:
    """OpenAI's 400 when the prompt is past the context window."""
    body = {
        "message": "maximum context length is 8192",
        "code": "context_length_exceeded",
    }
    return openai.BadRequestError("Error code: 400", response=_openai_response(400, {}), body=body)


def openai_timeout() -> openai.APITimeoutError:
    """The OpenAI SDK's timeout."""
    return openai.APITimeoutError(request=httpx2.Request("POST", _OPENAI_URL))


def groq_daily_wall() -> groq.RateLimitError:
    """Groq's 429 once the requests-per-day quota is spent."""
    body = {
        "error": {
            "message": "Rate limit reached for model `llama-3.3-70b-versatile` on "
            "requests per day (RPD): Limit 1000, Used 1000, Requested 1. "
            "Please try again in 1h2m3s.",
            "type": "requests",
            "code": "rate_limit_exceeded",
        }
    }
    request = httpx.Request("POST", "https://api.groq.com/openai/v1/chat/completions")
    response = httpx.Response(429, headers={"retry-after": "3723"}, request=request)
    return groq.RateLimitError("Error code: 429", response=response, body=body)


def gemini_minute_limit(retry_delay: str = "47s") -> genai_errors.ClientError:
    """Gemini's RESOURCE_EXHAUSTED for a per-minute quota, with RetryInfo."""
    body: dict[str, Any] = {
        "error": {
            "code": 429,
            "message": "You exceeded your current quota.",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {"quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}
                    ],
                },
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": retry_delay,
                },
            ],
        }
    }
    return genai_errors.ClientError(429, body)


_OPENAI_URL = "https://api.openai.com/v1/chat/completions"


def _openai_response(status: int, headers: dict[str, str]) -> httpx2.Response:
    return httpx2.Response(status, headers=headers, request=httpx2.Request("POST", _OPENAI_URL))


def openai_model_not_found(model: str = "gpt-4o-mini") -> openai.NotFoundError:
    """OpenAI's 404 for a model that is gone or never was (OpenAI-style vendors too)."""
    body = {
        "message": f"The model `{model}` does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "param": None,
        "code": "model_not_found",
    }
    return openai.NotFoundError("Error code: 404", response=_openai_response(404, {}), body=body)


def groq_model_decommissioned(model: str = "llama-3.3-70b-versatile") -> groq.BadRequestError:
    """Groq's 400 for a model it has shut down."""
    body = {
        "error": {
            "message": f"The model `{model}` has been decommissioned and is no longer "
            "supported. Please refer to https://console.groq.com/docs/deprecations for a "
            "recommendation on which model to use instead.",
            "type": "invalid_request_error",
            "code": "model_decommissioned",
        }
    }
    request = httpx.Request("POST", "https://api.groq.com/openai/v1/chat/completions")
    response = httpx.Response(400, request=request)
    return groq.BadRequestError("Error code: 400", response=response, body=body)


def gemini_model_not_found(model: str = "gemini-2.5-flash") -> genai_errors.ClientError:
    """Gemini's 404 NOT_FOUND for a model it does not serve."""
    body: dict[str, Any] = {
        "error": {
            "code": 404,
            "message": f"models/{model} is not found for API version v1beta, or is not "
            "supported for generateContent. Call ListModels to see the list of available "
            "models and their supported methods.",
            "status": "NOT_FOUND",
        }
    }
    return genai_errors.ClientError(404, body)


def gone_410() -> openai.APIStatusError:
    """A 410 Gone, as a retired endpoint (GitHub Models) answers."""
    body = {"code": "gone", "message": "This endpoint has been retired."}
    return openai.APIStatusError("Error code: 410", response=_openai_response(410, {}), body=body)


def wrong_endpoint_404() -> openai.NotFoundError:
    """A 404 from a wrong base URL: the user's configuration, not a retired model."""
    body = {"message": "no such endpoint: POST /v2/chat/completions"}
    return openai.NotFoundError("Error code: 404", response=_openai_response(404, {}), body=body)
