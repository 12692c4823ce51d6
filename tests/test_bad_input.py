"""Bad input gets a clear error naming the culprit, never a silent default.

Each case is something an operator could plausibly type, paste or generate: limit
strings, ``.env`` and TOML files, environment variables, base URLs, route fields,
router fields and call-time arguments. Every one must raise ``ConfigurationError``
(or, for a call's own arguments, ``ValueError``) whose message names the variable,
the file and entry, the route or the argument. Property-based tests then throw
generated limit strings and TOML files at the parsers.
"""

from __future__ import annotations

import math
import string
from pathlib import Path
from typing import Any

import pytest
from call_paths import ask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from langchain_quota_router import ConfigurationError, Limit, QuotaRoutedChatModel, Route
from langchain_quota_router._config import read_dotenv, router_kwargs_from_config, routes_from_env
from langchain_quota_router.quota.limits import MAX_AMOUNT, Window
from langchain_quota_router.vendors.catalog import load_catalog

KEY = "gsk-bad-input-key-0001"
NAN, INF = math.nan, math.inf


def fake() -> FakeListChatModel:
    return FakeListChatModel(responses=["fine"])


# ------------------------------------------------------------------ limit strings

BAD_LIMITS = [
    ("1" * 400 + "/minute", "too large"),
    (f"{MAX_AMOUNT + 1}/day", "too large"),
    ("10/" + "9" * 400 + "s", "rolling window"),
    ("10/99999999999999999999h", "rolling window"),
    ("10/87841h", "rolling window"),
    ("10/0." + "0" * 5000 + "1h", "rolling window"),
    ("10/0.5s", "whole number of seconds"),
    ("10/1e400s", "cannot parse"),
    ("nan/minute", "cannot parse"),
    ("inf tokens/minute", "cannot parse"),
    ("-5/minute", "negative"),
    ("10/minute\0", "cannot parse"),
    ("1,,,/minute", "cannot parse"),
    ("_1/minute", "cannot parse"),
    ("\u0661\u0660/minute", "cannot parse"),  # Arabic-Indic digits
    ("10/\uff4dinute", "cannot parse"),  # a full-width "m"
    ("10/day@", "cannot parse"),
    ("10/day@../../etc/passwd", "cannot parse"),
    ("10/day@Mars/Olympus", "unknown time zone"),
    ("10/day@" + "A" * 300, "unknown time zone"),
    ("10/minute@UTC", "only day and month"),
    ("10/2day", "takes no count"),
    ("10/fortnight", "unknown window"),
    ("", "cannot parse"),
]


@pytest.mark.parametrize(("text", "says"), BAD_LIMITS, ids=[t[:24] for t, _ in BAD_LIMITS])
def test_a_bad_limit_string_is_refused_by_name(text: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says) as caught:
        Limit.parse(text)
    assert repr(text)[:40] in str(caught.value) or "time zone" in says


GOOD_LIMITS = [
    ("1,000/day", "1000/day"),
    ("1_000 tokens / 2h", "1000 tokens/2h"),
    (" 10 / m ", "10/minute"),
    ("10/87840h", "10/87840h"),
    (f"{MAX_AMOUNT}/once", f"{MAX_AMOUNT}/once"),
    ("0/minute", "0/minute"),
    ("20/day@Etc/GMT+5", "20/day@Etc/GMT+5"),
    ("10/0.5h", "10/30m"),
]


@pytest.mark.parametrize(("text", "shown"), GOOD_LIMITS)
def test_an_unusual_but_valid_limit_is_accepted(text: str, shown: str) -> None:
    assert str(Limit.parse(text)) == shown


@pytest.mark.parametrize(
    "build",
    [
        lambda: Limit(10**20),
        lambda: Limit(10, "requests", Window("sliding", 0)),
        lambda: Limit(10, "requests", Window("sliding", 10**30)),
        lambda: Limit(10, "requests", Window("sliding", 1.5)),  # type: ignore[arg-type]
        lambda: Limit(10, "requests", Window("calendar", unit="week")),  # type: ignore[arg-type]
        lambda: Limit(10, "requests", Window("hourly")),  # type: ignore[arg-type]
        lambda: Limit(10, "requests", "minute"),  # type: ignore[arg-type]
    ],
)
def test_a_limit_built_by_hand_is_checked_too(build: Any) -> None:
    with pytest.raises(ConfigurationError):
        build()


# ------------------------------------------------------------------ environment

BAD_ENV = [
    ({"GROQ_LIMITS": ""}, "GROQ_LIMITS is empty"),
    ({"GROQ_LIMITS": " , "}, "GROQ_LIMITS is empty"),
    ({"GROQ_LIMITS": "30/minute,nan/day"}, "GROQ_LIMITS"),
    ({"GROQ_MAX_REQUESTS_PER_MINUTE": "9" * 400}, "GROQ_MAX_REQUESTS_PER_MINUTE"),
    ({"GROQ_MAX_REQUESTS_PER_MINUTE": str(MAX_AMOUNT + 1)}, "GROQ_MAX_REQUESTS_PER_MINUTE"),
    ({"GROQ_MAX_REQUESTS_PER_MINUTE": "1e3"}, "GROQ_MAX_REQUESTS_PER_MINUTE"),
    ({"GROQ_MAX_REQUESTS_PER_MINUTE": "nan"}, "GROQ_MAX_REQUESTS_PER_MINUTE"),
    ({"GROQ_MAX_TOKENS_PER_DAY": "-1"}, "GROQ_MAX_TOKENS_PER_DAY"),
    ({"GROQ_MAX_TOKENS_PER_DAY": ""}, "GROQ_MAX_TOKENS_PER_DAY"),
    ({"GROQ_PRIORITY": "nan"}, "GROQ_PRIORITY"),
    ({"GROQ_PRIORITY": "9" * 5000}, "GROQ_PRIORITY"),
    ({"GROQ_BASE_URL": "http://[::1"}, "GROQ_BASE_URL"),
    ({"GROQ_BASE_URL": "not a url"}, "GROQ_BASE_URL"),
    ({"GROQ_BASE_URL": "ftp://files.example.com"}, "GROQ_BASE_URL"),
    ({"GROQ_BASE_URL": "localhost:8080"}, "GROQ_BASE_URL"),
    ({"GROQ_BASE_URL": "http://example.com:99999"}, "GROQ_BASE_URL"),
    ({"GROQ_BASE_URL": "http://exa mple.com"}, "GROQ_BASE_URL"),
    ({"GROQ_BASE_URL": "http://example.com/\0"}, "GROQ_BASE_URL"),
    ({"GROQ_BASE_URL": ""}, "GROQ_BASE_URL"),
    ({"GROQ_MODEL": " , "}, "GROQ_MODEL"),
    ({"GROQ_API_KEY": KEY + "\0"}, "GROQ_API_KEY"),
    ({"GROQ_API_KEY": "gsk-half\nkey-0001"}, "GROQ_API_KEY"),
    ({"GROQ_API_KEYS": f"{KEY},gsk-other\x7fkey"}, "GROQ_API_KEYS"),
    ({"GROQ_MAX_PROMPTS_PER_DAY": "5"}, "GROQ_MAX_PROMPTS_PER_DAY"),
    ({"CLOUDFLARE_API_TOKEN": KEY, "CLOUDFLARE_ACCOUNT_ID": " "}, "CLOUDFLARE_ACCOUNT_ID"),
]


@pytest.mark.parametrize(("env", "names"), BAD_ENV, ids=[next(iter(e)) for e, _ in BAD_ENV])
def test_a_bad_environment_variable_is_named(env: dict[str, str], names: str) -> None:
    env = {"GROQ_API_KEY": KEY, **env} if "GROQ_API_KEY" not in env else env
    with pytest.raises(ConfigurationError, match=names) as caught:
        routes_from_env(env, dotenv=None)
    assert KEY not in str(caught.value)


def test_no_limits_from_the_environment_must_be_asked_for_in_words() -> None:
    (route,) = routes_from_env({"GROQ_API_KEY": KEY, "GROQ_LIMITS": "none"}, dotenv=None)
    assert route.limits == ()


# ------------------------------------------------------------------ .env and TOML files


def test_a_binary_dotenv_file_is_named(tmp_path: Path) -> None:
    file = tmp_path / "keys.env"
    file.write_bytes(b"\xff\xfe\x00GROQ_API_KEY=\x80\x81")
    with pytest.raises(ConfigurationError, match=r"keys\.env: not UTF-8"):
        read_dotenv(file)
    with pytest.raises(ConfigurationError, match=r"keys\.env"):
        routes_from_env({}, dotenv=file)


@pytest.mark.parametrize("reader", [read_dotenv, router_kwargs_from_config, load_catalog])
def test_a_path_with_a_null_byte_is_named(reader: Any) -> None:
    with pytest.raises(ConfigurationError, match="null byte"):
        reader("conf\0ig.toml")


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe\x00garbage\x80",
        b"x = " + b"[" * 50_000 + b"]" * 50_000,
        b"x = " + b"{a=" * 5_000 + b"1" + b"}" * 5_000,
    ],
    ids=["binary", "deep-arrays", "deep-tables"],
)
def test_an_unreadable_toml_file_is_named(tmp_path: Path, body: bytes) -> None:
    file = tmp_path / "router.toml"
    file.write_bytes(body)
    with pytest.raises(ConfigurationError, match=r"router\.toml: not valid TOML"):
        router_kwargs_from_config(file, environ={})
    with pytest.raises(ConfigurationError, match=r"router\.toml: not valid TOML"):
        load_catalog(file)


ROUTE = '[[routes]]\nmodel = "groq"\n'
BAD_TOML = [
    ("max_wait = nan\n" + ROUTE, "max_wait"),
    ("max_wait = inf\n" + ROUTE, "max_wait"),
    ("transient_cooldown = -inf\n" + ROUTE, "transient_cooldown"),
    ("rate_limit_cooldown = -1\n" + ROUTE, "rate_limit_cooldown"),
    ("temperature = nan\n" + ROUTE, "temperature"),
    ("temperature = -0.5\n" + ROUTE, "temperature"),
    ("max_tokens = -5\n" + ROUTE, "max_tokens"),
    ("max_tokens = 0\n" + ROUTE, "max_tokens"),
    ("max_tokens = 1.5\n" + ROUTE, "max_tokens"),
    ("default_output_tokens = 99999999999999999\n" + ROUTE, "default_output_tokens"),
    ('cache = "dir\\u0000name"\n' + ROUTE, "cache"),
    (ROUTE + "prices = [nan, 1]\n", r"routes\[0\]\.prices"),
    (ROUTE + "prices = [1, inf]\n", r"routes\[0\]\.prices"),
    (ROUTE + "prices = [-1, 1]\n", r"routes\[0\].*prices"),
    (ROUTE + 'prices = ["a", "b"]\n', r"routes\[0\]\.prices"),
    (ROUTE + 'context_window = "big"\n', r"routes\[0\]\.context_window"),
    (ROUTE + "context_window = 0\n", r"routes\[0\].*context_window"),
    (ROUTE + "pool = 5\n", r"routes\[0\]\.pool"),
    (ROUTE + 'pool = ""\n', r"routes\[0\].*pool"),
    (ROUTE + 'name = ""\n', r"routes\[0\].*name"),
    (ROUTE + 'base_url = "http://[::1"\n', r"routes\[0\]\.base_url"),
    (ROUTE + 'base_url = "ftp://x"\n', r"routes\[0\]\.base_url"),
    (ROUTE + 'limits = ["10/' + "9" * 400 + 's"]\n', r"routes\[0\]\.limits"),
    (ROUTE + 'limits = ["1/minute\\u0000"]\n', r"routes\[0\]\.limits"),
    (ROUTE + "options = {timeout = nan}\n", r"routes\[0\].*timeout"),
    (ROUTE + "options = {temperature = inf}\n", r"routes\[0\].*temperature"),
    ('[pools.p]\nlimits = ["-1/day"]\n' + ROUTE + 'pool = "p"\n', r"pools\.p\.limits"),
]


@pytest.mark.parametrize(("body", "names"), BAD_TOML, ids=[b[:30] for b, _ in BAD_TOML])
def test_a_bad_toml_setting_is_named_with_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, names: str
) -> None:
    monkeypatch.setenv("GROQ_API_KEY", KEY)
    file = tmp_path / "router.toml"
    file.write_text(body)
    with pytest.raises(ConfigurationError, match=r"router\.toml") as caught:
        QuotaRoutedChatModel.from_config(file, ledger="memory://", cache=False)
    assert caught.match(names)


def test_a_toml_key_env_with_a_trailing_newline_is_stripped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    file = tmp_path / "router.toml"
    file.write_text(ROUTE + 'api_key_env = "MY_GROQ_KEY"\n')
    kwargs = router_kwargs_from_config(file, environ={"MY_GROQ_KEY": KEY + "\n"})
    (route,) = kwargs["routes"]
    assert route.model.groq_api_key.get_secret_value() == KEY
    assert "MY_GROQ_KEY" in caplog.text
    assert KEY not in caplog.text


# ------------------------------------------------------------------ route fields

BAD_ROUTES: list[tuple[dict[str, Any], str]] = [
    ({"prices": ("a", "b")}, "prices"),
    ({"prices": (NAN, 1.0)}, "prices"),
    ({"prices": (1.0, INF)}, "prices"),
    ({"prices": (-1.0, 1.0)}, "prices"),
    ({"prices": (1.0,)}, "prices"),
    ({"prices": 5}, "prices"),
    ({"context_window": "big"}, "context_window"),
    ({"context_window": 1.5}, "context_window"),
    ({"context_window": NAN}, "context_window"),
    ({"context_window": 0}, "context_window"),
    ({"context_window": True}, "context_window"),
    ({"pool": 5}, "pool"),
    ({"pool": ""}, "pool"),
    ({"credential": 5}, "credential"),
    ({"key": ""}, "key"),
    ({"name": "  "}, "name"),
    ({"name": "mine\nWARNING forged line"}, "name"),
    ({"name": "mine\x1b[31m"}, "name"),
    ({"name": "mine\0"}, "name"),
    ({"pool": "shared\n"}, "pool"),
    ({"pool": "shared\x1b]0;title\x07"}, "pool"),
    ({"pool": "sha\0red"}, "pool"),
    ({"credential": "cred\r"}, "credential"),
    ({"key": "k\x1b"}, "key"),
    ({"priority": NAN}, "priority"),
    ({"priority": "1"}, "priority"),
    ({"limits": 5}, "limits"),
    ({"limits": [5]}, "limit"),
    ({"limits": ["nan/minute"]}, "nan/minute"),
]


@pytest.mark.parametrize(("kwargs", "names"), BAD_ROUTES, ids=[str(k) for k, _ in BAD_ROUTES])
def test_a_bad_route_field_is_named(kwargs: dict[str, Any], names: str) -> None:
    with pytest.raises(ConfigurationError, match=names) as caught:
        Route(fake(), name=kwargs.pop("name", "mine"), **kwargs)
    assert "route '" in str(caught.value)


BAD_SPECS: list[tuple[dict[str, Any], str]] = [
    ({"base_url": "http://[::1"}, "base_url"),
    ({"base_url": ""}, "base_url"),
    ({"base_url": "http://user:hunter2@[::1"}, "base_url"),
    ({"api_key": KEY + "\0"}, "api_key"),
    ({"api_key": 12345}, "api_key"),
    ({"timeout": NAN}, "timeout"),
    ({"temperature": -INF}, "temperature"),
]


@pytest.mark.parametrize(("kwargs", "names"), BAD_SPECS, ids=[str(k) for k, _ in BAD_SPECS])
def test_a_bad_catalog_route_argument_is_named(kwargs: dict[str, Any], names: str) -> None:
    kwargs = {"api_key": KEY, **kwargs}
    with pytest.raises(ConfigurationError, match=names) as caught:
        Route("groq", **kwargs)
    assert "route 'groq'" in str(caught.value)
    assert KEY not in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_a_route_key_with_surrounding_whitespace_is_stripped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    route = Route("groq", api_key=f"  {KEY}\n")
    assert route.model.groq_api_key.get_secret_value() == KEY  # type: ignore[attr-defined]
    assert route.credential == Route("groq", api_key=KEY).credential
    assert "api_key" in caplog.text
    assert "stripped" in caplog.text
    assert KEY not in caplog.text


# ------------------------------------------------------------------ router fields

BAD_ROUTER: list[dict[str, Any]] = [
    {"max_wait": NAN},
    {"max_wait": INF},
    {"max_wait": -1.0},
    {"transient_cooldown": NAN},
    {"rate_limit_cooldown": INF},
    {"model_recheck": NAN},
    {"max_tokens": -1},
    {"max_tokens": 0},
    {"max_tokens": MAX_AMOUNT + 1},
    {"max_tokens": True},
    {"default_output_tokens": True},
    {"temperature": NAN},
    {"temperature": INF},
    {"temperature": -1.0},
    {"default_output_tokens": -1},
    {"default_output_tokens": 10**30},
    {"timeout": NAN},
    {"timeout": -1.0},
    {"max_retries": -1},
    {"alert_thresholds": (NAN,)},
    {"alert_thresholds": (INF,)},
]


@pytest.mark.parametrize("kwargs", BAD_ROUTER, ids=str)
def test_a_bad_router_field_is_named(kwargs: dict[str, Any]) -> None:
    (name,) = kwargs
    with pytest.raises(ConfigurationError, match=name):
        QuotaRoutedChatModel(routes=[fake()], ledger="memory://", cache=False, **kwargs)


# ------------------------------------------------------------------ call-time arguments

BAD_CALLS: list[dict[str, Any]] = [
    {"max_tokens": -5},
    {"max_tokens": 0},
    {"max_tokens": NAN},
    {"max_tokens": 1.5},
    {"max_tokens": "10"},
    {"max_tokens": True},
    {"max_tokens": 10**30},
    {"temperature": NAN},
    {"temperature": -INF},
    {"temperature": -1},
    {"temperature": "hot"},
]


@pytest.mark.parametrize("kwargs", BAD_CALLS, ids=str)
async def test_a_bad_call_argument_is_refused_before_quota_is_spent(
    kwargs: dict[str, Any], how: str
) -> None:
    llm = QuotaRoutedChatModel(
        routes=[Route(fake(), name="only", limits=["1/minute"])], ledger="memory://", cache=False
    )
    (name,) = kwargs
    with pytest.raises(ValueError, match=name):
        await ask(llm, how, **kwargs)
    # Nothing was reserved: the one request a minute is still there.
    assert (await ask(llm, how)).content == "fine"


# ------------------------------------------------------------------ properties

_UNITS = ["s", "sec", "second", "m", "min", "minute", "h", "hour", "day", "month", "once"]
_METRICS = ["", "request", "requests", "call", "token", "tokens", "input tokens", "output tokens"]
# Pieces of the grammar and the characters around it: generated strings land near
# valid ones far more often than uniformly random text would.
_PIECES = st.sampled_from(
    [
        *_UNITS,
        *_METRICS,
        *("/", "@", " ", ",", "_", ".", "-", "0", "1", "9", "60", "1e9", "99" * 12),
        *("nan", "inf", "UTC", "America/Los_Angeles", "Etc/GMT+5", "\0", "\n", "\u0661"),
    ]
)
_LIMITISH = st.lists(_PIECES, max_size=8).map("".join) | st.text(max_size=30)
_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    database=None,  # no .hypothesis directory in the checkout
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@_SETTINGS
@given(_LIMITISH)
def test_any_limit_string_parses_or_is_a_configuration_error(text: str) -> None:
    try:
        limit = Limit.parse(text)
    except ConfigurationError:
        return
    assert Limit.parse(str(limit)) == limit
    assert 0 <= limit.amount <= MAX_AMOUNT


@st.composite
def valid_limits(draw: st.DrawFn) -> str:
    amount = draw(st.integers(0, MAX_AMOUNT))
    metric = draw(st.sampled_from(_METRICS))
    unit = draw(st.sampled_from(_UNITS))
    count = ""
    if unit not in ("day", "month", "once"):
        count = draw(st.sampled_from(["", "1", "2", "90", "15", "0.5"]))
    zone = ""
    if unit in ("day", "month"):
        zone = draw(st.sampled_from(["", "@UTC", "@America/Los_Angeles", "@Etc/GMT-14"]))
    return f"{amount:,} {metric}/{count}{unit}{zone}".replace(" /", "/")


@_SETTINGS
@given(valid_limits())
def test_a_well_formed_limit_round_trips(text: str) -> None:
    if "0.5s" in text or "0.5sec" in text:  # half a second is not a window
        with pytest.raises(ConfigurationError, match="whole number of seconds"):
            Limit.parse(text)
        return
    limit = Limit.parse(text)
    assert Limit.parse(str(limit)) == limit


_TOML_VALUES = st.one_of(
    st.sampled_from(
        [
            *("nan", "inf", "-inf", "-1", "0", "1", "1.5", "1e400", "99999999999999999"),
            *('""', '"x"', '"30/minute"', '"nan/day"', '"http://[::1"', "[]", "[1, 2]", "{}"),
            *('["30/minute", "-1/day"]', "[nan, 1]", '"groq"', '"\\u0000"', "[[1]]", "true"),
        ]
    ),
    # Well-formed TOML strings of odd content: the loader, not the TOML parser, judges.
    st.text(alphabet=string.ascii_letters + string.digits + " /:@._-,", max_size=12).map(
        lambda s: f'"{s}"'
    ),
    st.integers(-(10**20), 10**20).map(str),
    st.floats().map(lambda f: repr(f).replace("e+", "e")),
)
_GOOD_VALUES = {
    "strategy": ['"priority"', '"spread"'],
    "max_wait": ["0", "2.5"],
    "transient_cooldown": ["30"],
    "rate_limit_cooldown": ["60.0"],
    "max_tokens": ["1", "512"],
    "temperature": ["0", "0.7"],
    "default_output_tokens": ["0", "256"],
    "cache": ["false", '"cache-dir"'],
    "name": ['"fast"', '"slow"'],
    "limits": ['["30/minute", "1000/day@America/Los_Angeles"]', '"12000 tokens/minute"', "[]"],
    "priority": ["0", "-3", "7"],
    "pool": ['"shared"'],
    "prices": ["[0, 0]", "[0.15, 0.6]"],
    "context_window": ["8192"],
    "base_url": ['"http://127.0.0.1:9/v1"', '"https://example.com"'],
    "options": ["{timeout = 30}", "{}"],
    "key": ['"team-key"'],
}
_TOP_KEYS = st.sampled_from(
    [
        *("strategy", "max_wait", "transient_cooldown", "rate_limit_cooldown", "max_tokens"),
        *("temperature", "default_output_tokens", "cache", "bogus"),
    ]
)
_ROUTE_KEYS = st.sampled_from(
    [
        *("model", "name", "limits", "priority", "pool", "prices", "context_window"),
        *("base_url", "api_key_env", "options", "key", "bogus"),
    ]
)


@st.composite
def toml_files(draw: st.DrawFn) -> str:
    def value(key: str) -> str:
        # Half the time a value that suits the key, so that files also get through.
        if draw(st.booleans()) and key in _GOOD_VALUES:
            return draw(st.sampled_from(_GOOD_VALUES[key]))
        return draw(_TOML_VALUES)

    lines = [f"{k} = {value(k)}" for k in draw(st.lists(_TOP_KEYS, max_size=3, unique=True))]
    for _ in range(draw(st.integers(0, 2))):
        lines.append("[[routes]]")
        if draw(st.integers(0, 5)):
            lines.append('model = "groq"')
        keys = draw(st.lists(_ROUTE_KEYS.filter(lambda k: k != "model"), max_size=3, unique=True))
        lines += [f"{k} = {value(k)}" for k in keys]
    if draw(st.integers(0, 4)) == 0:  # now and then, a file TOML itself refuses
        lines.append(draw(st.sampled_from(["[pools.p]", "limits = 5", "x = [", '"\\q"'])))
    return "\n".join(lines) + "\n"


@_SETTINGS
@given(toml_files())
def test_any_toml_file_loads_or_is_a_configuration_error_naming_it(
    tmp_path: Path, body: str
) -> None:
    file = tmp_path / "fuzzed.toml"
    file.write_text(body)
    try:
        kwargs = router_kwargs_from_config(file, environ={"GROQ_API_KEY": KEY})
    except ConfigurationError as exc:
        refused = str(exc)
    else:
        refused = ""
    if refused:
        assert "fuzzed.toml" in refused
        return
    # What the loader lets through, the router takes: every check names the file.
    kwargs.update(ledger="memory://", cache=False)
    QuotaRoutedChatModel(**kwargs)


def test_two_routes_giving_one_pool_different_limits_name_the_file(tmp_path: Path) -> None:
    # Found by the fuzzer above: the loader let it through and the router refused it
    # without naming the file.
    file = tmp_path / "fuzzed.toml"
    file.write_text(
        '[[routes]]\nmodel = "groq"\n[[routes]]\nmodel = "groq"\nname = "fast"\n'
        'limits = ["30/minute", "1000/day@America/Los_Angeles"]\n'
    )
    with pytest.raises(ConfigurationError, match=r"fuzzed\.toml: .*share pool"):
        router_kwargs_from_config(file, environ={"GROQ_API_KEY": KEY})


def test_an_unknown_window_lists_the_valid_ones() -> None:
    from langchain_quota_router.quota.limits import Limit

    with pytest.raises(ConfigurationError) as caught:
        Limit.parse("30/minut")
    for window in ("second", "minute", "hour", "day", "month", "once", "24h"):
        assert window in str(caught.value)


def test_a_misspelt_vendor_gets_a_suggestion() -> None:
    from langchain_quota_router import Route

    with pytest.raises(ConfigurationError, match="did you mean 'groq'"):
        Route("grok:openai/gpt-oss-120b", api_key="k")
