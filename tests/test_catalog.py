"""The built-in catalog and ``Route("vendor:model")``: classes, limits, pools, keys."""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Iterator

import pytest
from langchain_cohere import ChatCohere
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage
from langchain_google_genai import ChatGoogleGenerativeAI
from langchain_groq import ChatGroq
from langchain_openai import ChatOpenAI

from langchain_quota_router import ConfigurationError, Limit, QuotaRoutedChatModel, Route
from langchain_quota_router._clock import FakeClock
from langchain_quota_router._secrets import fingerprint
from langchain_quota_router.simulator import SimKey, Simulator
from langchain_quota_router.vendors.catalog import CATALOG, build_chat_model, lookup

KEY = "gsk-catalog-test-key-0001"
FP = fingerprint(KEY)


def test_every_catalog_limit_parses_and_every_vendor_is_dated() -> None:
    assert set(CATALOG) == {
        "groq",
        "gemini",
        "openai",
        "cohere",
        "openrouter",
        "mistral",
        "together",
        "cloudflare",
        "ollama",
    }
    for vendor in CATALOG.values():
        dt.date.fromisoformat(vendor.checked)
        assert vendor.source.startswith("https://")
        assert vendor.default_model in vendor.models
        for name, model in vendor.models.items():
            assert model.model == name
            for text in model.limits:
                Limit.parse(text)
            if model.prices is not None:
                assert len(model.prices) == 2


def test_design_table_figures() -> None:
    groq = CATALOG["groq"].models["llama-3.3-70b-versatile"]
    assert [str(Limit.parse(t)) for t in groq.limits] == [
        "30/minute",
        "1000/24h",
        "12000 tokens/minute",
        "100000 tokens/24h",
    ]
    flash = CATALOG["gemini"].models["gemini-2.5-flash"]
    assert "20/day@America/Los_Angeles" in flash.limits
    assert "250000 input tokens/minute" in flash.limits
    assert CATALOG["openai"].models["gpt-4o-mini"].prices == (0.15, 0.60)
    assert CATALOG["openrouter"].models["meta-llama/llama-3.3-70b-instruct:free"].limits == (
        "20/minute",
        "50/day",
    )


def test_lookup_default_model_and_colons_in_model_names() -> None:
    vendor, model = lookup("groq")
    assert (vendor.name, model.model) == ("groq", "llama-3.3-70b-versatile")
    vendor, model = lookup("openrouter:meta-llama/llama-3.3-70b-instruct:free")
    assert vendor.name == "openrouter"
    assert model.model == "meta-llama/llama-3.3-70b-instruct:free"
    assert model.limits


def test_unknown_vendor_lists_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown vendor 'acme'.*groq.*openai"):
        lookup("acme:big-model")
    with pytest.raises(ConfigurationError, match="unknown vendor"):
        Route("acme:big-model", api_key="k")


def test_unknown_model_is_allowed_without_limits_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="langchain_quota_router"):
        route = Route("groq:some-new-model", api_key=KEY)
    assert route.limits == ()
    assert route.prices is None
    assert "some-new-model" in caplog.text
    assert "llama-3.3-70b-versatile" in caplog.text  # lists the known models


def test_groq_route_from_a_spec() -> None:
    route = Route("groq:llama-3.3-70b-versatile", api_key=KEY)
    assert isinstance(route.model, ChatGroq)
    assert route.model.max_retries == 0
    assert route.name == "groq:llama-3.3-70b-versatile"
    assert [str(lim) for lim in route.limits] == [
        "30/minute",
        "1000/24h",
        "12000 tokens/minute",
        "100000 tokens/24h",
    ]
    # Groq counts per organisation and model: one pool per key and model; the key
    # alias disables every route that uses the key.
    assert route.key == f"groq {FP}"
    assert route.pool == f"groq {FP}:llama-3.3-70b-versatile"
    assert route.context_window == 131072
    assert route.prices == (0.0, 0.0)
    assert route.model.groq_api_key is not None
    assert route.model.groq_api_key.get_secret_value() == KEY


def test_shared_pools_for_vendors_that_count_the_whole_key() -> None:
    a = Route("cohere:command-r-08-2024", api_key=KEY)
    b = Route("cohere:command-a-03-2025", api_key=KEY)
    assert a.pool == b.pool == f"cohere {FP}"
    free = Route("openrouter:openai/gpt-oss-20b:free", api_key=KEY)
    assert free.pool == f"openrouter {FP}"
    # A paid OpenRouter model does not eat the free models' quota.
    paid = Route("openrouter:anthropic/claude-sonnet-4", api_key=KEY)
    assert paid.pool == f"openrouter {FP}:anthropic/claude-sonnet-4"
    assert paid.limits == ()
    gemini = Route("gemini:gemini-2.5-flash-lite", api_key=KEY)
    assert gemini.pool == f"gemini {FP}:gemini-2.5-flash-lite"


def test_overrides_win() -> None:
    route = Route(
        "groq",
        api_key=KEY,
        name="fast",
        limits=["5/minute"],
        priority=3,
        pool="my-org",
        key="my-key",
        prices=(1.0, 2.0),
        context_window=8000,
        timeout=12.5,
        max_retries=4,  # The router still makes its own copy with retries off.
    )
    assert (route.name, route.priority, route.pool, route.key) == ("fast", 3, "my-org", "my-key")
    assert [str(lim) for lim in route.limits] == ["5/minute"]
    assert route.prices == (1.0, 2.0)
    assert route.context_window == 8000
    assert isinstance(route.model, ChatGroq)
    assert route.model.request_timeout == 12.5
    assert route.model.max_retries == 0
    assert Route("groq", api_key=KEY, limits=[]).limits == ()


def test_key_from_the_environment_and_a_missing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="GROQ_API_KEY"):
        Route("groq")
    with pytest.raises(ConfigurationError, match=r"GEMINI_API_KEY or GOOGLE_API_KEY"):
        Route("gemini")
    monkeypatch.setenv("GOOGLE_API_KEY", KEY)
    route = Route("gemini")
    assert isinstance(route.model, ChatGoogleGenerativeAI)
    assert route.key == f"gemini {FP}"


def test_extra_arguments_only_with_a_spec() -> None:
    with pytest.raises(ConfigurationError, match=r"api_key, timeout may only be given"):
        Route(FakeListChatModel(responses=["hi"]), api_key="k", timeout=3)
    with pytest.raises(ConfigurationError, match="base_url may only be given"):
        Route(FakeListChatModel(responses=["hi"]), base_url="http://x")


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "langchain_groq", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'langchain-quota-router\[groq\]'"):
        Route("groq", api_key=KEY)
    monkeypatch.setitem(sys.modules, "langchain_openai", None)
    with pytest.raises(ConfigurationError, match=r"langchain-quota-router\[openai\]"):
        build_chat_model("mistral", "mistral-small-latest", KEY)


@pytest.mark.parametrize(
    ("vendor", "url"),
    [
        ("openrouter", "https://openrouter.ai/api/v1"),
        ("mistral", "https://api.mistral.ai/v1"),
        ("together", "https://api.together.xyz/v1"),
        ("ollama", "http://localhost:11434/v1"),
    ],
)
def test_openai_compatible_vendors(vendor: str, url: str) -> None:
    route = Route(vendor, api_key=None if vendor == "ollama" else KEY)
    assert isinstance(route.model, ChatOpenAI)
    assert route.model.openai_api_base == url
    assert route.model.max_retries == 0
    assert route.name == f"{vendor}:{CATALOG[vendor].default_model}"


def test_ollama_needs_no_key_and_has_no_limits() -> None:
    route = Route("ollama:qwen2.5")
    assert route.limits == ()
    assert route.key == "ollama"
    assert route.pool == "ollama:qwen2.5"


def test_cloudflare_needs_an_account_id(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="CLOUDFLARE_ACCOUNT_ID"):
        Route("cloudflare", api_key=KEY)
    route = Route("cloudflare", api_key=KEY, account_id="abc123")
    assert isinstance(route.model, ChatOpenAI)
    assert route.model.openai_api_base == (
        "https://api.cloudflare.com/client/v4/accounts/abc123/ai/v1"
    )
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", "fromenv")
    route = Route("cloudflare:@cf/meta/llama-3.3-70b-instruct-fp8-fast", api_key=KEY)
    assert isinstance(route.model, ChatOpenAI)
    assert "accounts/fromenv/" in str(route.model.openai_api_base)
    assert "48000 tokens/day" in [str(lim) for lim in route.limits]


def test_gemini_and_cohere_classes() -> None:
    gemini = build_chat_model("gemini", "gemini-2.5-flash", KEY)
    assert isinstance(gemini, ChatGoogleGenerativeAI)
    assert gemini.max_retries == 1  # one attempt: no hidden retries
    cohere = build_chat_model("cohere", "command-r", KEY, base_url="http://127.0.0.1:9")
    assert isinstance(cohere, ChatCohere)
    assert cohere.base_url == "http://127.0.0.1:9"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    clock = FakeClock(dt.datetime(2026, 1, 15, 12, tzinfo=dt.timezone.utc).timestamp())
    keys = [SimKey(KEY, "groq"), SimKey("sk-or-sim", "openai")]
    with Simulator(keys, clock=clock) as simulator:
        yield simulator


def test_a_real_call_through_the_simulator(sim: Simulator) -> None:
    llm = QuotaRoutedChatModel(
        routes=[
            Route("groq:llama-3.3-70b-versatile", api_key=KEY, base_url=sim.groq_base_url),
            Route(
                "openrouter:meta-llama/llama-3.3-70b-instruct:free",
                api_key="sk-or-sim",
                base_url=sim.openai_base_url,
                priority=1,
            ),
        ],
        ledger="memory://",
        cache=False,
    )
    message = llm.invoke("What is the capital of France?")
    assert isinstance(message, AIMessage)
    assert message.text
    assert message.response_metadata["route"] == "groq:llama-3.3-70b-versatile"
    assert sim.stats(KEY).served == 1
    usage = {(u.pool, str(u.limit)): u.used for u in llm.usage()}
    assert usage[(f"groq {FP}:llama-3.3-70b-versatile", "30/minute")] == 1
