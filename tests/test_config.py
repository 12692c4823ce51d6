"""Routes from the environment and ``.env``; router settings from a TOML file."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage
from langchain_groq import ChatGroq
from langchain_openai import ChatOpenAI

from langchain_quota_router import (
    ConfigurationError,
    DiskResponseCache,
    Limit,
    QuotaRoutedChatModel,
)
from langchain_quota_router._config import read_dotenv, router_kwargs_from_config, routes_from_env
from langchain_quota_router.quota.secrets import alias, fingerprint
from langchain_quota_router.route import Route
from langchain_quota_router.simulator import SimKey, Simulator
from langchain_quota_router.vendors import catalog
from langchain_quota_router.vendors.catalog import CATALOG

G1, G2, G3 = "gsk-one-1111", "gsk-two-2222", "gsk-three-3333"


def env_routes(**env: str) -> list[Route]:
    return routes_from_env(env, dotenv=None)


def limits(route: Route) -> list[str]:
    return [str(lim) for lim in route.limits]


# ------------------------------------------------------------------ environment


def test_single_key_uses_the_catalog() -> None:
    (route,) = env_routes(GROQ_API_KEY=G1)
    assert route.name == alias("groq", None, G1) == f"groq {fingerprint(G1)}"
    assert isinstance(route.model, ChatGroq)
    assert route.model_name == "openai/gpt-oss-120b"
    assert "1000/24h" in limits(route)
    assert route.priority == 0
    assert route.key == f"groq {fingerprint(G1)}"


def test_numbered_keys_and_duplicates() -> None:
    routes = env_routes(GROQ_API_KEY=G1, GROQ_API_KEY_1=G1, GROQ_API_KEY_2=G2, GROQ_API_KEY_0=G3)
    # GROQ_API_KEY repeats key 1: one key, one route.
    assert [r.name for r in routes] == [
        alias("groq", 0, G3),
        alias("groq", 1, G1),
        alias("groq", 2, G2),
    ]
    assert len({r.pool for r in routes}) == 3


def test_comma_list_of_keys() -> None:
    routes = env_routes(OPENAI_API_KEYS=f"{G1}, {G2}", OPENAI_MODEL_1="gpt-4o-mini")
    assert [r.name for r in routes] == [alias("openai", 0, G1), alias("openai", 1, G2)]
    assert all(isinstance(r.model, ChatOpenAI) for r in routes)


def test_list_and_numbered_key_clash() -> None:
    with pytest.raises(ConfigurationError, match=r"OPENAI_API_KEY_0 and OPENAI_API_KEYS"):
        env_routes(OPENAI_API_KEYS=f"{G1},{G2}", OPENAI_API_KEY_0=G3)


def test_models_per_key_and_per_vendor() -> None:
    routes = env_routes(
        GROQ_API_KEY_1=G1,
        GROQ_API_KEY_2=G2,
        GROQ_MODEL="openai/gpt-oss-20b",
        GROQ_MODEL_2="openai/gpt-oss-120b, openai/gpt-oss-20b",
    )
    assert [(r.name, r.model_name) for r in routes] == [
        (alias("groq", 1, G1), "openai/gpt-oss-20b"),
        (f"{alias('groq', 2, G2)}:openai/gpt-oss-120b", "openai/gpt-oss-120b"),
        (f"{alias('groq', 2, G2)}:openai/gpt-oss-20b", "openai/gpt-oss-20b"),
    ]
    # Two models of one key: one key alias (a bad key disables both), two pools.
    assert routes[1].key == routes[2].key == f"groq {fingerprint(G2)}"
    assert routes[1].pool != routes[2].pool


def test_cohere_models_of_one_key_share_a_pool() -> None:
    routes = env_routes(COHERE_API_KEY=G1, COHERE_MODEL="command-r-08-2024,command-a-03-2025")
    assert routes[0].pool == routes[1].pool == f"cohere {fingerprint(G1)}"
    QuotaRoutedChatModel(routes=routes, ledger="memory://", cache=False)


def test_limit_overrides_per_vendor_and_per_key() -> None:
    routes = env_routes(
        GROQ_API_KEY_1=G1,
        GROQ_API_KEY_2=G2,
        GROQ_MAX_REQUESTS_PER_MINUTE="10",
        GROQ_MAX_TOKENS_PER_DAY_2="50_000",
        GROQ_MAX_REQUESTS_PER_MONTH="900",
    )
    first, second = routes
    # Replaced in place, keeping the catalog's rolling day; new windows added.
    assert limits(first) == [
        "10/minute",
        "1000/24h",
        "8000 tokens/minute",
        "200000 tokens/24h",
        "900/month",
    ]
    assert limits(second) == [
        "10/minute",
        "1000/24h",
        "8000 tokens/minute",
        "50000 tokens/24h",
        "900/month",
    ]


def test_token_override_replaces_geminis_input_token_limit_and_keeps_its_zone() -> None:
    (route,) = env_routes(
        GEMINI_API_KEY=G1,
        GEMINI_MAX_TOKENS_PER_MINUTE="100000",
        GEMINI_MAX_REQUESTS_PER_DAY="15",
    )
    assert route.model_name == "gemini-3.5-flash-lite"
    assert limits(route) == [
        "15/minute",
        "15/day@America/Los_Angeles",
        "100000 input tokens/minute",
    ]


def test_limits_priority_and_base_url() -> None:
    (route,) = env_routes(
        OPENAI_API_KEY=G1,
        OPENAI_LIMITS="100/minute, 5000 tokens/once",
        OPENAI_PRIORITY="-1",
        OPENAI_BASE_URL="http://127.0.0.1:9/v1",
    )
    assert limits(route) == ["100/minute", "5000 tokens/once"]
    assert route.priority == -1
    assert isinstance(route.model, ChatOpenAI)
    assert route.model.openai_api_base == "http://127.0.0.1:9/v1"


def test_vendor_order_is_free_first() -> None:
    routes = env_routes(
        OPENAI_API_KEY=G1,
        GROQ_API_KEY=G2,
        GOOGLE_API_KEY=G3,
        OPENROUTER_API_KEY="sk-or-1",
        MISTRAL_API_KEY="mi-1",
        COHERE_API_KEY="co-1",
    )
    names = [r.name.split(" ")[0] for r in routes]
    assert names == ["groq", "gemini", "cohere", "openrouter", "mistral", "openai"]
    priorities = [r.priority for r in routes]
    assert priorities == sorted(priorities)
    assert len(set(priorities)) == len(priorities)


def test_gemini_reads_both_variables_once() -> None:
    routes = env_routes(GEMINI_API_KEY=G1, GOOGLE_API_KEY=G1)
    assert len(routes) == 1
    routes = env_routes(GEMINI_API_KEY=G1, GOOGLE_API_KEY=G2)
    assert len(routes) == 2


def test_ollama_by_model_and_cloudflare_account() -> None:
    routes = env_routes(
        OLLAMA_MODEL="qwen2.5",
        CLOUDFLARE_API_TOKEN=G1,
        CLOUDFLARE_ACCOUNT_ID="acc42",
    )
    cloudflare, ollama = routes
    assert ollama.name == "ollama"
    assert ollama.model_name == "qwen2.5"
    assert isinstance(cloudflare.model, ChatOpenAI)
    assert "accounts/acc42/" in str(cloudflare.model.openai_api_base)


def test_new_openai_compatible_vendors_from_their_usual_variables() -> None:
    routes = env_routes(
        CEREBRAS_API_KEY=G1,
        SAMBANOVA_API_KEY=G2,
        AI21_API_KEY=G3,
        HF_API_KEY="hf-four-4444",
    )
    urls = {r.name.split(" ")[0]: str(getattr(r.model, "openai_api_base", "")) for r in routes}
    assert urls == {
        "cerebras": "https://api.cerebras.ai/v1",
        "sambanova": "https://api.sambanova.ai/v1",
        "ai21": "https://api.ai21.com/studio/v1",
        "huggingface": "https://router.huggingface.co/v1",
    }
    assert all(isinstance(r.model, ChatOpenAI) and r.model.max_retries == 0 for r in routes)


def test_a_retired_model_in_the_environment_names_the_variable_and_successor() -> None:
    with pytest.raises(ConfigurationError) as info:
        env_routes(GROQ_API_KEY=G1, GROQ_MODEL="llama-3.1-8b-instant")
    text = str(info.value)
    assert text.startswith("GROQ_MODEL ")
    assert "retired" in text
    assert "'groq:openai/gpt-oss-20b'" in text
    assert G1 not in text


def test_a_deprecated_model_in_the_environment_warns_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="langchain_quota_router"):
        routes = env_routes(COHERE_API_KEYS=f"{G1},{G2}", COHERE_MODEL="command-r")
    assert len(routes) == 2
    warnings = [r.getMessage() for r in caplog.records if "cohere:command-r " in r.getMessage()]
    assert len(warnings) == 1
    assert "'cohere:command-r-08-2024'" in warnings[0]


def test_unrelated_variables_are_ignored() -> None:
    routes = env_routes(
        GROQ_API_KEY=G1, GOOGLE_CLOUD_PROJECT="p", OPENAI_ORG_ID="org", GROQ_TIMEOUT="3"
    )
    assert len(routes) == 1


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GROQ_API_KEY_2": G1, "GROQ_MAX_TOKENS_PER_DAY_2": "lots"}, "GROQ_MAX_TOKENS_PER_DAY_2"),
        ({"GROQ_API_KEY_1": G1, "GROQ_MODEL_3": "x"}, r"GROQ_MODEL_3 .*no GROQ key 3"),
        ({"GROQ_API_KEY": G1, "GROQ_MAX_TOKENS_PER_WEEK": "5"}, "GROQ_MAX_TOKENS_PER_WEEK"),
        ({"GROQ_API_KEY": G1, "GROQ_MAX_CALLS_PER_DAY": "5"}, "GROQ_MAX_CALLS_PER_DAY"),
        ({"GROQ_API_KEY": G1, "GROQ_PRIORITY": "high"}, "GROQ_PRIORITY"),
        ({"GROQ_API_KEY": G1, "GROQ_LIMITS": "30 per minute"}, "GROQ_LIMITS"),
        ({"GROQ_API_KEY": G1, "GROQ_MAX_REQUESTS_PER_DAY": "-4"}, "GROQ_MAX_REQUESTS_PER_DAY"),
        ({"GROQ_API_KEY": G1, "GROQ_MODEL": " , "}, "GROQ_MODEL"),
        ({"GROQ_API_KEY_1": G1, "GROQ_API_KEYS_1": G2}, "GROQ_API_KEYS_1"),
        ({"CLOUDFLARE_API_KEY": G1}, r"CLOUDFLARE_API_KEY .*CLOUDFLARE_ACCOUNT_ID"),
    ],
)
def test_mistakes_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        routes_from_env(env, dotenv=None)


def test_no_keys_lists_what_was_looked_for() -> None:
    with pytest.raises(ConfigurationError) as info:
        routes_from_env({"HOME": "/home/x"}, dotenv=None)
    text = str(info.value)
    for name in ("GROQ_API_KEY", "GROQ_API_KEY_<n>", "OPENAI_API_KEYS", "GOOGLE_API_KEY"):
        assert name in text
    assert "OLLAMA_MODEL" in text


def test_router_from_env_routes() -> None:
    llm = QuotaRoutedChatModel(
        routes=routes_from_env({"GROQ_API_KEYS": f"{G1},{G2}", "GEMINI_API_KEY": G3}, dotenv=None),
        ledger="memory://",
        cache=False,
    )
    assert len(llm.routes) == 3


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here: the default file may be missing
    monkeypatch.setenv("GROQ_API_KEY", G1)
    assert [r.name for r in routes_from_env()] == [alias("groq", None, G1)]


# ------------------------------------------------------------------ .env


def test_dotenv_parsing(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text(
        "# keys\n"
        "\n"
        "export GROQ_API_KEY=plain   # a comment\n"
        "A='single # not a comment'\n"
        'B="double \\"quoted\\"\\nline"  # comment\n'
        "C=url#fragment\n"
        "D=\n"
        "E = spaced \n"
        "F= # only a comment\n",
        encoding="utf-8",
    )
    assert read_dotenv(path) == {
        "GROQ_API_KEY": "plain",
        "A": "single # not a comment",
        "B": 'double "quoted"\nline',
        "C": "url#fragment",
        "D": "",
        "E": "spaced",
        "F": "",
    }


@pytest.mark.parametrize("line", ["NOT A LINE", "A='open", 'B="open', "C='x' trailing"])
def test_dotenv_errors_name_file_and_line(tmp_path: Path, line: str) -> None:
    path = tmp_path / "keys.env"
    path.write_text(f"OK=1\n{line}\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"keys\.env, line 2"):
        read_dotenv(path)


def test_dotenv_does_not_override_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / ".env"
    path.write_text(f"GROQ_API_KEY={G1}\nGROQ_PRIORITY=7\nOPENAI_API_KEY={G3}\n", encoding="utf-8")
    routes = routes_from_env({"GROQ_API_KEY": G2}, dotenv=path)
    assert [r.name for r in routes] == [alias("groq", None, G2), alias("openai", None, G3)]
    assert routes[0].priority == 7  # filled in from .env
    monkeypatch.chdir(tmp_path)
    routes = routes_from_env({})  # the default ".env" in the working directory
    assert routes[0].name == alias("groq", None, G1)


def test_a_named_dotenv_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"missing\.env"):
        routes_from_env({"GROQ_API_KEY": G1}, dotenv=tmp_path / "missing.env")


# ------------------------------------------------------------------ TOML


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "router.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_toml_happy_path(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(
        tmp_path,
        f"""
strategy = "spread"
ledger = "memory://"
cache = "cache-dir"
max_wait = 2
default_output_tokens = 128

[[routes]]
model = "groq:openai/gpt-oss-120b"
name = "groq-a"
api_key_env = "MY_GROQ"
pool = "org"

[[routes]]
model = "groq:openai/gpt-oss-120b"
name = "groq-b"
api_key = "{G2}"
pool = "org"
priority = 5
options = {{ timeout = 9 }}

[[routes]]
model = "openai:gpt-4o-mini"
base_url = "http://127.0.0.1:9/v1"
limits = ["100/minute"]
prices = [1, 2.5]
context_window = 1000
key = "paid"

[pools.org]
limits = ["30/minute", "12000 tokens/minute"]
""",
    )
    with caplog.at_level(logging.WARNING, logger="langchain_quota_router"):
        kwargs = router_kwargs_from_config(path, environ={"MY_GROQ": G1, "OPENAI_API_KEY": G3})
    assert "routes[1]" in caplog.text
    assert "in clear" in caplog.text
    assert G2 not in caplog.text
    assert kwargs["strategy"] == "spread"
    assert kwargs["max_wait"] == 2.0
    assert kwargs["default_output_tokens"] == 128
    assert isinstance(kwargs["cache"], DiskResponseCache)
    assert kwargs["cache"].directory == tmp_path / "cache-dir"
    a, b, paid = kwargs["routes"]
    assert limits(a) == limits(b) == ["30/minute", "12000 tokens/minute"]
    assert a.pool == b.pool == "org"
    assert a.priority == 0
    assert b.priority == 5
    assert isinstance(b.model, ChatGroq)
    assert b.model.request_timeout == 9
    assert paid.name == "openai:gpt-4o-mini"
    # The catalog's place for OpenAI: last.
    assert paid.priority == CATALOG["openai"].priority == max(v.priority for v in CATALOG.values())
    assert paid.prices == (1.0, 2.5)
    assert paid.context_window == 1000
    assert paid.key == "paid"
    llm = QuotaRoutedChatModel(**{**kwargs, "cache": False})
    assert len(llm.routes) == 3


def test_toml_default_key_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, 'cache = false\n[[routes]]\nmodel = "cohere"\n')
    kwargs = router_kwargs_from_config(path, environ={"CO_API_KEY": G1})
    (route,) = kwargs["routes"]
    assert route.key == f"cohere {fingerprint(G1)}"
    assert kwargs["cache"] is False


ENV = {"GROQ_API_KEY": G1}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('strategy = "fast\n', r"router\.toml: not valid TOML.*line 1"),
        ('colour = "blue"\n[[routes]]\nmodel = "groq"\n', "unknown setting colour"),
        ('strategy = "fast"\n[[routes]]\nmodel = "groq"\n', "strategy must be"),
        ('max_wait = "soon"\n[[routes]]\nmodel = "groq"\n', "max_wait must be"),
        ('cache = 3\n[[routes]]\nmodel = "groq"\n', "cache must be"),
        ('ledger = "memory://"\n', "no routes"),
        ('[[routes]]\nname = "x"\n', r"routes\[0\] \('x'\): model must be"),
        ('[[routes]]\nmodel = "groq"\n[[routes]]\nmodel = "acme:x"\n', r"routes\[1\]\.model"),
        ('[[routes]]\nmodel = "groq"\ncolour = 1\n', r"routes\[0\]: unknown key colour"),
        ('[[routes]]\nmodel = "groq"\nlimits = ["lots"]\n', r"routes\[0\]\.limits"),
        ('[[routes]]\nmodel = "groq"\nprices = [1]\n', r"routes\[0\]\.prices"),
        ('[[routes]]\nmodel = "groq"\npriority = "hi"\n', r"routes\[0\]\.priority"),
        ('[[routes]]\nmodel = "groq"\napi_key_env = "NOPE"\n', "NOPE, which is not set"),
        ('[[routes]]\nmodel = "openai"\n', r"routes\[0\]: no API key; set OPENAI_API_KEY"),
        (
            '[[routes]]\nmodel = "groq"\n[[routes]]\nmodel = "groq"\n',
            r"routes\[0\] and routes\[1\]",
        ),
        (
            '[[routes]]\nmodel = "groq"\npool = "p"\nlimits = ["1/minute"]\n'
            '[pools.p]\nlimits = ["2/minute"]\n',
            "give them once",
        ),
        ('[[routes]]\nmodel = "groq"\n[pools.q]\nlimits = ["2/minute"]\n', r"\[pools\.q\]"),
        ('[[routes]]\nmodel = "groq"\n[pools.q]\nsize = 1\n', r"pools\.q must hold"),
        ('[[routes]]\nmodel = "groq"\noptions = { temperature = "hot" }\n', r"routes\[0\]"),
    ],
)
def test_toml_errors_name_the_file_and_place(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigurationError, match=message) as info:
        router_kwargs_from_config(path, environ=ENV)
    assert "router.toml" in str(info.value)


def test_toml_retired_model_names_the_route_and_the_successor(tmp_path: Path) -> None:
    path = write(tmp_path, '[[routes]]\nmodel = "groq:llama-3.3-70b-versatile"\n')
    with pytest.raises(ConfigurationError) as info:
        router_kwargs_from_config(path, environ=ENV)
    text = str(info.value)
    assert text.startswith(f"{path}: routes[0].model: ")
    assert "'groq:openai/gpt-oss-120b'" in text


def test_toml_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"cannot read .*nothing\.toml"):
        router_kwargs_from_config(tmp_path / "nothing.toml")


def test_toml_route_through_the_simulator(tmp_path: Path) -> None:
    with Simulator([SimKey(G1, "groq")]) as sim:
        path = write(
            tmp_path,
            f"""
ledger = "memory://"
cache = false
[[routes]]
model = "groq:openai/gpt-oss-20b"
base_url = "{sim.groq_base_url}"
""",
        )
        llm = QuotaRoutedChatModel(**router_kwargs_from_config(path, environ=ENV))
        message = llm.invoke("hello")
        assert isinstance(message, AIMessage)
        assert sim.stats(G1).served == 1


# ------------------------------------------------------------------ issue 17, item 8


@pytest.mark.parametrize("value", ["\u0663\u0660", "\uff13\uff10", "30\u0663"])
def test_environment_numbers_take_ascii_digits_only_as_limits_do(value: str) -> None:
    env = {"GROQ_API_KEY": "gsk-env-numbers-0001", "GROQ_MAX_REQUESTS_PER_MINUTE": value}
    with pytest.raises(ConfigurationError, match="GROQ_MAX_REQUESTS_PER_MINUTE"):
        routes_from_env(env, dotenv=None)
    with pytest.raises(ConfigurationError, match="cannot parse limit"):
        Limit.parse(f"{value}/minute")


def test_environment_numbers_are_grouped_as_limits_are() -> None:
    env = {"GROQ_API_KEY": "gsk-env-numbers-0001", "GROQ_MAX_REQUESTS_PER_MINUTE": "1,000"}
    (route,) = routes_from_env(env, dotenv=None)
    assert Limit.parse("1,000/minute") in route.limits


def test_a_dotenv_key_given_twice_is_named_with_both_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    file = tmp_path / ".env"
    file.write_text("GROQ_API_KEY=gsk-first-0001\n# a comment\nGROQ_API_KEY=gsk-second-0002\n")
    with caplog.at_level(logging.WARNING):
        values = read_dotenv(file)
    assert values["GROQ_API_KEY"] == "gsk-second-0002"
    assert "GROQ_API_KEY" in caplog.text
    assert "line 3" in caplog.text
    assert "line 1" in caplog.text
    assert "gsk-first" not in caplog.text
    assert "gsk-second" not in caplog.text
