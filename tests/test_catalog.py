"""The built-in catalog and ``Route("vendor:model")``: data, sources, status, classes, pools."""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
from langchain_cohere import ChatCohere
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage
from langchain_google_genai import ChatGoogleGenerativeAI
from langchain_groq import ChatGroq
from langchain_openai import ChatOpenAI

from langchain_quota_router import ConfigurationError, Limit, QuotaRoutedChatModel, Route
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.quota.secrets import fingerprint
from langchain_quota_router.simulator import SimKey, Simulator
from langchain_quota_router.vendors import adapters, catalog
from langchain_quota_router.vendors.catalog import (
    CATALOG,
    build_chat_model,
    find_model,
    load_catalog,
    lookup,
    model_status,
    stale_entries,
    successor_of,
)
from langchain_quota_router.vendors.kinds import KINDS, kind_for

KEY = "gsk-catalog-test-key-0001"
FP = fingerprint(KEY)
FACT_SHEET_DAY = dt.date(2026, 11, 28)


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees the once-per-process status warnings afresh."""
    monkeypatch.setattr(catalog, "_warned", set())


# ------------------------------------------------------------------ the data file


def test_the_catalog_is_package_data() -> None:
    assert resources.files("langchain_quota_router.vendors").joinpath("catalog.toml").is_file()
    assert dict(load_catalog()) == dict(CATALOG)


def test_every_vendor_and_model_is_sourced_dated_and_valid() -> None:
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
        "cerebras",
        "sambanova",
        "ai21",
        "huggingface",
    }
    priorities = [vendor.priority for vendor in CATALOG.values()]
    assert priorities == sorted(priorities)
    assert len(set(priorities)) == len(priorities)
    for vendor in CATALOG.values():
        assert isinstance(vendor.checked, dt.date)
        assert vendor.source.startswith("https://")
        assert vendor.kind is KINDS[vendor.chat_class]
        assert vendor.models[vendor.default_model].status != "retired"
        for name, model in vendor.models.items():
            assert model.model == name
            assert model.source is not None
            assert model.source.startswith("https://")
            assert isinstance(model.checked, dt.date)
            for text in model.limits:
                Limit.parse(text)
            if model.prices is not None:
                assert len(model.prices) == 2
            for successor in model.successors:
                assert vendor.models[successor].status != "retired"


def test_figures_of_the_november_2026_fact_sheet() -> None:
    groq = CATALOG["groq"]
    assert groq.default_model == "openai/gpt-oss-120b"
    for name in ("openai/gpt-oss-120b", "openai/gpt-oss-20b", "qwen/qwen3.6-27b"):
        # Groq's budgets refill continuously: rolling /24h, never calendar days.
        assert [str(Limit.parse(t)) for t in groq.models[name].limits] == [
            "30/minute",
            "1000/24h",
            "8000 tokens/minute",
            "200000 tokens/24h",
        ]
        assert groq.models[name].checked == FACT_SHEET_DAY
    gemini = CATALOG["gemini"].models
    assert gemini["gemini-3.5-flash-lite"].limits[:2] == (
        "15/minute",
        "500/day@America/Los_Angeles",
    )
    assert "20/day@America/Los_Angeles" in gemini["gemini-3.6-flash"].limits
    assert "250000 input tokens/minute" in gemini["gemini-3.5-flash"].limits
    assert CATALOG["cohere"].default_model == "command-a-03-2025"
    assert CATALOG["mistral"].models["mistral-small-latest"].limits == (
        "1/second",
        "50000 tokens/minute",
        "4000000 tokens/month",
    )
    assert CATALOG["openrouter"].models["openai/gpt-oss-20b:free"].limits == (
        "20/minute",
        "50/day",
    )
    assert CATALOG["cloudflare"].default_model.endswith("-fast")
    assert CATALOG["cerebras"].models["gpt-oss-120b"].limits == (
        "5/minute",
        "30000 tokens/minute",
        "1000000 tokens/hour",
        "1000000 tokens/24h",
    )
    assert CATALOG["sambanova"].models["Meta-Llama-3.3-70B-Instruct"].limits == (
        "20/minute",
        "20/24h",
        "200000 tokens/24h",
    )
    assert CATALOG["ai21"].models["jamba-large"].limits == ("10/second", "200/minute")
    gpt = CATALOG["openai"].models["gpt-4o-mini"]
    assert (gpt.status, gpt.status_date) == ("retiring", dt.date(2027, 1, 14))
    assert gpt.prices == (0.15, 0.60)


def test_dollar_credits_are_not_limits_and_say_so() -> None:
    for name in ("ai21", "huggingface"):
        vendor = CATALOG[name]
        assert "dollars" in vendor.note
        for model in vendor.models.values():
            assert not any("$" in text for text in model.limits)
    assert CATALOG["huggingface"].models["openai/gpt-oss-120b"].limits == ()


def test_unconfirmed_model_lists_say_so() -> None:
    for name in ("cerebras", "sambanova", "ai21", "huggingface"):
        assert "not confirmed" in CATALOG[name].note


@pytest.mark.parametrize(
    ("vendor", "model", "status", "successor"),
    [
        ("groq", "llama-3.3-70b-versatile", "retired", "openai/gpt-oss-120b"),
        ("groq", "llama-3.1-8b-instant", "retired", "openai/gpt-oss-20b"),
        ("gemini", "gemini-2.5-flash", "deprecated", "gemini-3.5-flash"),
        ("cohere", "command-r", "deprecated", "command-r-08-2024"),
        ("mistral", "open-mistral-nemo", "retired", "ministral-8b-latest"),
        (
            "cloudflare",
            "@cf/meta/llama-3.1-8b-instruct",
            "deprecated",
            "@cf/meta/llama-3.1-8b-instruct-fp8-fast",
        ),
        ("openai", "gpt-4o-mini", "retiring", None),  # the fact sheet names none
        ("groq", "openai/gpt-oss-120b", "active", None),
    ],
)
def test_status_and_successor(vendor: str, model: str, status: str, successor: str | None) -> None:
    assert model_status(vendor, model) == status
    assert successor_of(vendor, model) == successor
    assert CATALOG[vendor].models[model].successor == successor


def test_status_lookups_never_raise() -> None:
    assert model_status("groq", "some-new-model") is None
    assert successor_of("acme", "llama-3.3-70b-versatile") is None
    # LangChain's provider name and Gemini's resource name both find the entry.
    assert successor_of("google_genai", "models/gemini-2.5-flash") == "gemini-3.5-flash"
    # Without a vendor, the first vendor that lists the model answers.
    assert successor_of(None, "llama-3.3-70b-versatile") == "openai/gpt-oss-120b"
    assert model_status(None, "no-such-model") is None
    entry = find_model(None, "llama-3.1-8b-instant")  # retired entries are found too
    assert entry is not None
    assert (entry.status, entry.status_date) == ("retired", dt.date(2026, 8, 16))
    assert find_model("groq", "nope") is None


def test_stale_entries_for_the_doctor() -> None:
    fresh = stale_entries(90, today=FACT_SHEET_DAY)
    assert all(entry.model is not None for entry in fresh)  # every vendor was re-read
    assert ("gemini", "gemini-2.5-flash-lite") in {(e.vendor, e.model) for e in fresh}
    assert [e.checked for e in fresh] == sorted(e.checked for e in fresh)
    later = stale_entries(90, today=FACT_SHEET_DAY + dt.timedelta(days=91))
    vendors = {e.vendor for e in later if e.model is None}
    assert vendors == set(CATALOG)
    groq = next(e for e in later if e.vendor == "groq" and e.model is None)
    assert groq.source == "https://console.groq.com/docs/rate-limits"
    assert groq.age_days(FACT_SHEET_DAY + dt.timedelta(days=91)) == 91


def test_readme_table_matches_the_catalog() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([a-z0-9]+)` \| `([^`]+)`", readme, flags=re.MULTILINE)
    assert dict(rows) == {name: vendor.default_model for name, vendor in CATALOG.items()}


# ------------------------------------------------------------------ bad files

GOOD = """
schema = 1

[vendors.acme]
kind = "openai"
env_prefix = "ACME"
key_env = ["ACME_API_KEY"]
base_url = "https://api.acme.test/v1"
pool_scope = "organisation"
per_model = true
default_model = "big"
source = "https://acme.test/limits"
checked = 2026-11-28

[vendors.acme.models.big]
limits = ["30/minute", "1000/24h"]
context_window = 8000
prices = [0.0, 0.0]

[vendors.acme.models.old]
status = "retired"
status_date = 2026-08-16
successors = ["big"]
source = "https://acme.test/deprecations"
checked = 2026-11-27
"""


def write_catalog(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad-catalog.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_user_catalog_loads(tmp_path: Path) -> None:
    loaded = load_catalog(write_catalog(tmp_path, GOOD))
    acme = loaded["acme"]
    assert acme.kind is KINDS["openai"]
    assert acme.headers == "x-ratelimit"  # the kind's, not given
    big, old = acme.models["big"], acme.models["old"]
    # A model without a source of its own carries its vendor's.
    assert (big.source, big.checked) == ("https://acme.test/limits", dt.date(2026, 11, 28))
    assert (old.source, old.checked) == ("https://acme.test/deprecations", dt.date(2026, 11, 27))
    assert old.limits == ()
    assert old.successor == "big"


def edit(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            edit('env_prefix = "ACME"\n', ""),
            r"vendor 'acme', field 'env_prefix': missing",
        ),
        (
            edit('limits = ["30/minute", "1000/24h"]\n', ""),
            r"vendor 'acme', model 'big', field 'limits': missing",
        ),
        (
            edit('"1000/24h"', '"1000 per day"'),
            r"vendor 'acme', model 'big', field 'limits': .*1000 per day",
        ),
        (edit('kind = "openai"', 'kind = "anthropic"'), r"vendor 'acme', field 'kind'.*anthropic"),
        (edit("per_model = true", 'per_model = "yes"'), r"vendor 'acme', field 'per_model'"),
        (
            edit("context_window = 8000", 'context_window = "8k"'),
            r"model 'big', field 'context_window'",
        ),
        (edit("prices = [0.0, 0.0]", "prices = [1]"), r"model 'big', field 'prices'"),
        (edit("prices = [0.0, 0.0]", "prices = [nan, 0]"), r"model 'big', field 'prices'"),
        (edit("prices = [0.0, 0.0]", "prices = [0, inf]"), r"model 'big', field 'prices'"),
        (edit('"1000/24h"', '"1000/99999999999h"'), r"model 'big', field 'limits'"),
        (edit('"1000/24h"', '"99999999999999999999/day"'), r"model 'big', field 'limits'"),
        (
            edit('successors = ["big"]', 'successors = ["bigger"]'),
            r"vendor 'acme', model 'old', field 'successors': 'bigger' is not a model",
        ),
        (
            edit("checked = 2026-11-28", 'checked = "2026-13-01"'),
            r"vendor 'acme', field 'checked': must be a date",
        ),
        (
            edit("checked = 2026-11-28", "checked = 2026-11-28T10:00:00"),
            r"vendor 'acme', field 'checked': must be a date",
        ),
        (
            edit("status_date = 2026-08-16\n", ""),
            r"model 'old', field 'status_date': missing",
        ),
        (
            edit("checked = 2026-11-27\n", ""),
            r"model 'old', field 'checked': missing",
        ),
        (edit('default_model = "big"', 'default_model = "old"'), r"field 'default_model'.*retired"),
        (edit('default_model = "big"', 'default_model = "tiny"'), r"field 'default_model'"),
        (edit("per_model = true", "per_model = true\ncolour = 1"), r"field 'colour': unknown"),
        (edit('pool_scope = "organisation"', 'pool_scope = "galaxy"'), r"field 'pool_scope'"),
        (edit('source = "https://acme.test/limits"', 'source = "acme"'), r"field 'source'"),
        (
            edit('base_url = "https://api.acme.test/v1"', 'base_url = "https://{region}.acme/v1"'),
            r"field 'base_url'.*region",
        ),
        (edit("schema = 1", "schema = 2"), r"field 'schema'"),
        (edit("[vendors.acme]", "[vendors.Acme]"), r"vendor 'Acme'"),
        (
            GOOD
            + GOOD.split("schema = 1")[1]
            .replace("acme", "beta")
            .replace("checked = 2026-11-28\n", 'checked = 2026-11-28\naliases = ["acme"]\n', 1),
            r"vendor 'beta', field 'aliases': 'acme' already names vendor 'acme'",
        ),
        (
            edit(
                "[vendors.acme.models.big]\n",
                "[vendors.acme.models.big]\nstatus_date = 2026-01-01\n",
            ),
            r"model 'big', field 'status_date'",
        ),
        (edit("schema = 1", 'schema = "1'), r"not valid TOML"),
    ],
)
def test_a_bad_catalog_names_the_file_the_entry_and_the_field(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write_catalog(tmp_path, text)
    with pytest.raises(ConfigurationError, match=message) as info:
        load_catalog(path)
    assert str(info.value).startswith(str(path))


def test_a_missing_catalog_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"cannot read catalog .*nothing\.toml"):
        load_catalog(tmp_path / "nothing.toml")


# ------------------------------------------------------------------ retired and deprecated


def test_a_retired_spec_names_the_successor(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigurationError, match=r"use 'groq:openai/gpt-oss-120b'") as info:
        Route("groq:llama-3.3-70b-versatile", api_key=KEY)
    text = str(info.value)
    assert "retired by the vendor on 2026-08-16" in text
    assert "'groq:qwen/qwen3.6-27b'" in text  # the vendor's second suggestion
    assert "https://console.groq.com/docs/deprecations" in text
    with pytest.raises(ConfigurationError, match=r"'mistral:ministral-8b-latest'"):
        lookup("mistral:open-mistral-nemo", warn=False)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("gemini:gemini-2.5-flash", ["deprecated", "'gemini:gemini-3.5-flash'"]),
        ("cohere:command-r", ["deprecated since 2025-09-15", "'cohere:command-r-08-2024'"]),
        ("openai:gpt-4o-mini", ["retiring", "2027-01-14", "deprecations"]),
    ],
)
def test_a_deprecated_or_retiring_spec_warns_once(
    caplog: pytest.LogCaptureFixture, spec: str, words: list[str]
) -> None:
    with caplog.at_level(logging.WARNING, logger="langchain_quota_router"):
        route = Route(spec, api_key=KEY)
        Route(spec, api_key=KEY, name="second")
    assert route.limits  # still built, with the catalog's limits
    warnings = [r.getMessage() for r in caplog.records if spec in r.getMessage()]
    assert len(warnings) == 1
    for word in words:
        assert word in warnings[0]


def test_lookup_without_warn_is_silent(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="langchain_quota_router"):
        lookup("gemini:gemini-2.5-flash", warn=False)
    assert not caplog.records


# ------------------------------------------------------------------ lookup and routes


def test_lookup_default_model_and_colons_in_model_names() -> None:
    vendor, model = lookup("groq")
    assert (vendor.name, model.model) == ("groq", "openai/gpt-oss-120b")
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
    assert "openai/gpt-oss-120b" in caplog.text  # lists the known models...
    assert "llama-3.3-70b-versatile" not in caplog.text  # ...that are still served


def test_groq_route_from_a_spec() -> None:
    route = Route("groq:openai/gpt-oss-120b", api_key=KEY)
    assert isinstance(route.model, ChatGroq)
    assert route.model.max_retries == 0
    assert route.name == "groq:openai/gpt-oss-120b"
    assert [str(lim) for lim in route.limits] == [
        "30/minute",
        "1000/24h",
        "8000 tokens/minute",
        "200000 tokens/24h",
    ]
    # Groq counts per organisation and model: one pool per key and model; the key
    # alias disables every route that uses the key.
    assert route.key == f"groq {FP}"
    assert route.pool == f"groq {FP}:openai/gpt-oss-120b"
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
    gemini = Route("gemini:gemini-3.5-flash-lite", api_key=KEY)
    assert gemini.pool == f"gemini {FP}:gemini-3.5-flash-lite"


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
        ("together", "https://api.together.ai/v1"),
        ("ollama", "http://localhost:11434/v1"),
        ("cerebras", "https://api.cerebras.ai/v1"),
        ("sambanova", "https://api.sambanova.ai/v1"),
        ("ai21", "https://api.ai21.com/studio/v1"),
        ("huggingface", "https://router.huggingface.co/v1"),
    ],
)
def test_openai_compatible_vendors(vendor: str, url: str) -> None:
    built = build_chat_model(vendor, CATALOG[vendor].default_model, KEY)
    assert isinstance(built, ChatOpenAI)
    assert built.openai_api_base == url
    assert built.max_retries == 0
    route = Route(vendor, api_key=None if vendor == "ollama" else KEY)
    assert isinstance(route.model, ChatOpenAI)
    assert route.model.openai_api_base == url
    assert route.model.max_retries == 0
    assert route.model.root_client.max_retries == 0
    assert route.name == f"{vendor}:{CATALOG[vendor].default_model}"


def test_together_moved_to_its_new_address() -> None:
    assert CATALOG["together"].base_url == "https://api.together.ai/v1"
    assert (
        "together.xyz"
        not in (resources.files("langchain_quota_router.vendors") / "catalog.toml").read_text()
    )


def test_new_vendors_read_their_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    # HF_TOKEN alone (set by many only to download models) must not start spending
    # Hugging Face credits.
    monkeypatch.setenv("HF_TOKEN", KEY)
    with pytest.raises(ConfigurationError, match="HF_API_KEY"):
        Route("huggingface")
    monkeypatch.setenv("HF_API_KEY", KEY)
    route = Route("huggingface")
    assert route.key == f"huggingface {FP}"
    assert route.limits == ()  # dollar credits are not limits
    with pytest.raises(ConfigurationError, match="CEREBRAS_API_KEY"):
        Route("cerebras")


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
    gemini = build_chat_model("gemini", "gemini-3.5-flash", KEY)
    assert isinstance(gemini, ChatGoogleGenerativeAI)
    assert gemini.max_retries == 1  # one attempt: no hidden retries
    cohere = build_chat_model("cohere", "command-r-08-2024", KEY, base_url="http://127.0.0.1:9")
    assert isinstance(cohere, ChatCohere)
    assert cohere.base_url == "http://127.0.0.1:9"


# ------------------------------------------------------------------ one place per kind


@pytest.mark.parametrize("vendor", sorted(CATALOG))
def test_one_kind_builds_and_adapts_each_vendor(vendor: str) -> None:
    info = CATALOG[vendor]
    built = build_chat_model(vendor, info.default_model, KEY, account_id="acc")
    # The kind the catalog names is the kind the model's class is found by.
    assert kind_for(built) is info.kind
    assert Route(built).adapter is info.kind


def test_kinds_and_their_header_families() -> None:
    assert sorted(KINDS) == ["cohere", "google", "groq", "openai"]
    assert {name: kind.headers for name, kind in KINDS.items()} == {
        "cohere": "none",
        "google": "none",
        "groq": "x-ratelimit",
        "openai": "x-ratelimit",
    }
    # A vendor speaking its own dialect through ChatOpenAI says so in the catalog.
    assert CATALOG["openrouter"].headers == "openrouter"
    assert CATALOG["cerebras"].headers == "x-ratelimit-windowed"
    assert CATALOG["openai"].headers == "x-ratelimit"
    generic = kind_for(FakeListChatModel(responses=["hi"]))
    assert generic.name == "generic"
    assert generic not in KINDS.values()


def test_the_adapters_module_keeps_its_names() -> None:
    assert adapters.adapter_for is kind_for
    assert isinstance(KINDS["cohere"], adapters.VendorAdapter)
    assert adapters.take_captured_headers() is None


# ------------------------------------------------------------------ a real call


@pytest.fixture
def sim() -> Iterator[Simulator]:
    clock = FakeClock(dt.datetime(2026, 1, 15, 12, tzinfo=dt.timezone.utc).timestamp())
    keys = [SimKey(KEY, "groq"), SimKey("sk-or-sim", "openai")]
    with Simulator(keys, clock=clock) as simulator:
        yield simulator


def test_a_real_call_through_the_simulator(sim: Simulator) -> None:
    llm = QuotaRoutedChatModel(
        routes=[
            Route("groq:openai/gpt-oss-120b", api_key=KEY, base_url=sim.groq_base_url),
            Route(
                "openrouter:openai/gpt-oss-20b:free",
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
    assert message.response_metadata["route"] == "groq:openai/gpt-oss-120b"
    assert sim.stats(KEY).served == 1
    usage = {(u.pool, str(u.limit)): u.used for u in llm.usage()}
    assert usage[(f"groq {FP}:openai/gpt-oss-120b", "30/minute")] == 1


def test_prices_are_dated_data_and_free_tiers_cost_nothing() -> None:
    from langchain_quota_router.vendors.catalog import find_model, price_entries, stale_prices

    mini = find_model("openai", "gpt-4o-mini")
    assert mini is not None
    assert mini.pricing is not None
    assert (mini.pricing.input, mini.pricing.output, mini.pricing.cached_input) == (
        0.15,
        0.60,
        None,  # not on record: cached tokens are costed at the input price
    )
    groq = find_model("groq", "openai/gpt-oss-120b")
    assert groq is not None
    assert groq.pricing is not None
    assert groq.pricing.free
    entries = {(e.vendor, e.model): e for e in price_entries()}
    assert entries[("openai", "gpt-4o-mini")].source == "https://platform.openai.com/docs/pricing"
    assert all(e.source and e.checked for e in entries.values())
    stale = stale_prices(90, today=dt.date(2026, 11, 30))
    assert ("openai", "gpt-4o-mini") in {(e.vendor, e.model) for e in stale}
    # AI21's prices are not on record: none guessed.
    jamba = find_model("ai21", "jamba-mini")
    assert jamba is not None
    assert jamba.pricing is None
