"""The ``quota-router`` command line, driven in-process through ``main([...])``."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_openai import ChatOpenAI

from langchain_quota_router import QuotaRoutedChatModel, Route, cli
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.simulator import SimKey, Simulator
from langchain_quota_router.testing import FakeVendorChatModel

COMMANDS = ["status", "report", "reset", "enable", "chat", "simulate", "demo", "serve"]
SECRET = "sk-test-THISKEYMUSTNEVERBEPRINTED0123456789"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_fits(text: str) -> None:
    # The ledger's URL is printed whole: a path is no table row.
    for line in text.splitlines():
        if line.startswith("ledger  "):
            continue
        assert len(line) <= 80, f"{len(line)} columns: {line!r}"


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def make_router(ledger_url: str, clock: FakeClock) -> Callable[[], QuotaRoutedChatModel]:
    """Routers over one SQLite ledger, as separate processes would build them."""

    def make() -> QuotaRoutedChatModel:
        return QuotaRoutedChatModel(
            routes=[
                Route(
                    FakeVendorChatModel(model="llama"),
                    name="groq",
                    limits=["30/minute", "10/day", "2000 tokens/day"],
                    priority=1,
                ),
                Route(
                    FakeVendorChatModel(model="flash"),
                    name="gemini",
                    pool="gemini-project",
                    limits=["5/minute", "20/day@America/Los_Angeles"],
                    priority=2,
                ),
                Route(
                    ChatOpenAI(model="gpt-4o-mini", api_key=SECRET, base_url="http://127.0.0.1:9"),
                    name="openai",
                    limits=["100000 tokens/once"],
                    priority=9,
                ),
            ],
            ledger=ledger_url,
            cache=False,
            clock=clock,
        )

    return make


@pytest.fixture
def router_cli(
    monkeypatch: pytest.MonkeyPatch, make_router: Callable[[], QuotaRoutedChatModel]
) -> Callable[[], QuotaRoutedChatModel]:
    """Commands get a fresh router over the test's ledger, whatever --config says."""
    monkeypatch.setattr(cli, "_load_router", lambda config: make_router())
    return make_router


@pytest.fixture
def spent(router_cli: Callable[[], QuotaRoutedChatModel]) -> QuotaRoutedChatModel:
    """Ten calls made by 'another process': groq's 10/day is used up, gemini took one."""
    router = router_cli()
    for i in range(11):
        router.invoke(f"question {i}")
    return router


# ------------------------------------------------------------------ help


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert out.startswith(f"usage: quota-router {command}")


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in COMMANDS:
        assert command in out


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys)
    assert code == 2
    assert "usage: quota-router" in out


def test_unknown_option_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "status", "--bogus")
    assert code == 2
    assert "unrecognized arguments: --bogus" in err


# ---------------------------------------------------------------- status


def test_status_shows_each_route_from_the_shared_ledger(
    capsys: pytest.CaptureFixture[str], spent: QuotaRoutedChatModel
) -> None:
    code, out, _ = run(capsys, "status")
    assert code == 0
    assert_fits(out)
    lines = out.splitlines()
    assert lines[0].split() == ["ROUTE", "POOL", "USED/LIMIT", "USAGE", "RESETS", "STATE"]
    groq = next(line for line in lines if line.startswith("groq"))
    assert "10/10 req/day" in groq
    assert "[##########] 100%" in groq
    assert groq.rstrip().endswith("full")
    gemini = next(line for line in lines if line.startswith("gemini"))
    assert "gemini-project" in gemini
    assert "[#" in gemini
    assert gemini.rstrip().endswith("ok")
    assert "24h00m" in groq  # the clock starts at midnight UTC: a full day to go


def test_status_shows_blocked_and_disabled_routes(
    capsys: pytest.CaptureFixture[str], spent: QuotaRoutedChatModel, clock: FakeClock
) -> None:
    ledger = spent.ledger_backend
    ledger.block("gemini-project", clock.now() + 600, "rate_limit: 429")
    ledger.disable(spent.route_map["openai"].key, "disabled: 401")
    code, out, _ = run(capsys, "status")
    assert code == 0
    assert_fits(out)
    assert "blocked " in next(line for line in out.splitlines() if line.startswith("gemini"))
    assert "disabled" in next(line for line in out.splitlines() if line.startswith("openai"))
    assert "blocked HH:MM" in out


def test_status_clips_long_names_to_80_columns(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, ledger_url: str
) -> None:
    long_name = "a-very-long-route-name-that-goes-on-and-on"
    router = QuotaRoutedChatModel(
        routes=[
            Route(
                FakeVendorChatModel(),
                name=long_name,
                pool="an-even-longer-pool-name-for-a-google-cloud-project",
                limits=["1000000 input tokens/minute"],
            )
        ],
        ledger=ledger_url,
        cache=False,
        clock=FakeClock(),
    )
    router.ledger_backend.block(router.routes[0].pool, router.clock.now() + 60, "x")
    monkeypatch.setattr(cli, "_load_router", lambda config: router)
    code, out, _ = run(capsys, "status")
    assert code == 0
    assert_fits(out)
    assert "a-very-lon" in out


def test_status_fits_a_wider_terminal_and_keeps_states_whole(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, ledger_url: str
) -> None:
    long_name = "a-very-long-route-name-that-goes-on-and-on"
    pool = "an-even-longer-pool-name-for-a-google-cloud-project"
    router = QuotaRoutedChatModel(
        routes=[Route(FakeVendorChatModel(), name=long_name, pool=pool, limits=["9/minute"])],
        ledger=ledger_url,
        cache=False,
        clock=FakeClock(),
    )
    router.ledger_backend.disable(router.routes[0].key, "disabled: 401")
    monkeypatch.setattr(cli, "_load_router", lambda config: router)
    monkeypatch.setenv("COLUMNS", "160")
    code, out, _ = run(capsys, "status")
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith("a-very"))
    assert long_name in line  # nothing clipped: the terminal is wide enough
    assert pool in line
    assert line.rstrip().endswith("disabled")
    assert max(len(line) for line in out.splitlines()) <= 160
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(capsys, "status")
    assert_fits(out)
    assert next(line for line in out.splitlines() if line.startswith("a-very")).endswith("disabled")


# ---------------------------------------------------------------- report


def test_report_text_lists_every_pool_and_limit(
    capsys: pytest.CaptureFixture[str], spent: QuotaRoutedChatModel
) -> None:
    code, out, _ = run(capsys, "report")
    assert code == 0
    assert_fits(out)
    assert "pool groq  (routes: groq)" in out
    assert "pool gemini-project  (routes: gemini)" in out
    for limit in ("30/minute", "10/day", "2000 tokens/day", "20/day@America/Los_Angeles"):
        assert limit in out
    assert "2026-01-02T00:00Z" in out  # groq's UTC day resets at midnight
    assert "holds  none" in out


def test_report_json_has_used_limit_remaining_percent_and_resets(
    capsys: pytest.CaptureFixture[str], spent: QuotaRoutedChatModel
) -> None:
    code, out, _ = run(capsys, "report", "--json")
    assert code == 0
    data = json.loads(out)
    groq = next(p for p in data["pools"] if p["pool"] == "groq")
    day = next(limit for limit in groq["limits"] if limit["limit"] == "10/day")
    assert day == {
        "pool": "groq",
        "limit": "10/day",
        "metric": "requests",
        "window": "day",
        "used": 10,
        "amount": 10,
        "remaining": 0,
        "percent": 100.0,
        "resets_at": "2026-01-02T00:00:00+00:00",
        "resets_at_epoch": 1767312000.0,
        "learned_at": None,
        "learned_at_epoch": None,
        "held": 0,
        "over": 0,
        "note": "",
    }
    assert [r["state"] for r in data["routes"]] == ["full", "ok", "ok"]
    assert data["holds"] == []
    assert data["lifespan"] is None


def test_report_csv_has_one_row_per_pool_and_limit(
    capsys: pytest.CaptureFixture[str], spent: QuotaRoutedChatModel
) -> None:
    code, out, _ = run(capsys, "report", "--csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 3 + 2 + 1
    day = next(r for r in rows if r["pool"] == "groq" and r["limit"] == "10/day")
    assert (day["used"], day["amount"], day["remaining"], day["state"]) == ("10", "10", "0", "full")


def test_report_lifespan_credit_runs_out_and_daily_limits_renew(
    capsys: pytest.CaptureFixture[str], spent: QuotaRoutedChatModel
) -> None:
    code, out, _ = run(capsys, "report", "--json", "--avg-tokens", "1000")
    assert code == 0
    days = json.loads(out)["lifespan"]["days"]
    assert days["openai"] == 100.0  # 100000 tokens of credit at 1000 a day
    assert days["gemini-project"] == "inf"  # no token limit to run out
    code, out, _ = run(capsys, "report", "--avg-tokens", "1000")
    assert "lifespan at 1000 tokens/day" in out
    assert "100.0 days" in out or "100 days" in out


def test_report_lifespan_of_a_full_pool_says_when_it_comes_back(
    capsys: pytest.CaptureFixture[str], spent: QuotaRoutedChatModel
) -> None:
    # groq's 10/day is spent: its 2000 tokens/day would cover 500, but it serves
    # nothing before midnight.
    code, out, _ = run(capsys, "report", "--json", "--avg-tokens", "500")
    assert code == 0
    lifespan = json.loads(out)["lifespan"]
    assert lifespan["days"]["groq"] == 0.0
    assert lifespan["back_at"] == {"groq": "2026-01-02T00:00:00+00:00"}
    code, out, _ = run(capsys, "report", "--avg-tokens", "500")
    lifespan_lines = out[out.index("lifespan at 500 tokens/day") :].splitlines()
    groq = next(line for line in lifespan_lines if line.strip().startswith("groq "))
    assert "back 2026-01-02" in groq or "back 00:00 UTC" in groq
    assert "forever" not in groq


@pytest.mark.parametrize(("suffix", "check"), [(".json", json.loads), (".csv", str), (".txt", str)])
def test_report_export_picks_the_format_from_the_extension(
    capsys: pytest.CaptureFixture[str],
    spent: QuotaRoutedChatModel,
    tmp_path: Path,
    suffix: str,
    check: Callable[[str], Any],
) -> None:
    target = tmp_path / f"report{suffix}"
    code, out, _ = run(capsys, "report", "--export", str(target))
    assert code == 0
    assert f"report written to {target}" in out
    text = target.read_text()
    check(text)
    if suffix == ".csv":
        assert text.startswith("pool,routes,limit,")
    if suffix == ".txt":
        assert "pool groq" in text


def test_report_export_with_an_unknown_extension_exits_2(
    capsys: pytest.CaptureFixture[str], router_cli: Any, tmp_path: Path
) -> None:
    code, out, err = run(capsys, "report", "--export", str(tmp_path / "report.xlsx"))
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert ".json, .csv, .txt" in err


def test_report_json_and_csv_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "report", "--json", "--csv")
    assert code == 2
    assert "not allowed with" in err


# --------------------------------------------------------------- history


def flushed(router: QuotaRoutedChatModel) -> QuotaRoutedChatModel:
    """The router's fleet counts written to the ledger now, as its process would soon."""
    fleet = router.stats.fleet
    assert fleet is not None
    fleet.flush()
    return router


def test_report_history_csv_exports_the_rows(
    capsys: pytest.CaptureFixture[str], spent: QuotaRoutedChatModel, clock: FakeClock
) -> None:
    flushed(spent)
    clock.advance(90)
    code, out, _ = run(capsys, "report", "--history", "--csv", "--since", "2h", "--step", "30m")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == list(cli._report.HISTORY_COLUMNS)
    times = sorted({float(r["time_epoch"]) for r in rows})
    start = 1_767_225_600.0
    assert times == [start - 5400, start - 3600, start - 1800, start, start + 90]
    assert len(rows) == 5 * (3 + 2 + 1)  # every point, every pool's every limit
    last = {r["limit"]: r for r in rows if float(r["time_epoch"]) == start + 90}
    assert (last["10/day"]["used"], last["10/day"]["amount"], last["10/day"]["percent"]) == (
        "10",
        "10",
        "100.0",
    )
    assert last["10/day"]["time"] == "2026-01-01T00:01:30+00:00"
    assert last["20/day@America/Los_Angeles"]["used"] == "1"
    before = {r["limit"]: r for r in rows if float(r["time_epoch"]) == start}
    # Midnight, when the calls were made, ends the day before: nothing then.
    assert before["10/day"]["used"] == "0"


def test_report_history_as_json_text_and_export(
    capsys: pytest.CaptureFixture[str], spent: QuotaRoutedChatModel, tmp_path: Path
) -> None:
    flushed(spent)
    code, out, _ = run(capsys, "report", "--history", "--json", "--step", "1h")
    assert code == 0
    rows = json.loads(out)
    assert {r["pool"] for r in rows} == {"groq", "gemini-project", "openai"}
    code, out, _ = run(capsys, "report", "--history")
    assert code == 0
    assert_fits(out)
    assert out.splitlines()[1].split()[:4] == ["POOL", "LIMIT", "PEAK", "NOW"]
    groq_day = next(line for line in out.splitlines() if "10/day" in line)
    assert "100%" in groq_day
    assert groq_day.rstrip().endswith("█")
    target = tmp_path / "history.csv"
    code, out, _ = run(capsys, "report", "--history", "--export", str(target))
    assert code == 0
    assert target.read_text().startswith("time,time_epoch,pool,limit,")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--history", "--step", "0"], "--step 0"),
        (["--history", "--since", "soon"], "--since soon"),
        (["--history", "--since", "30d", "--step", "1s"], "larger step"),
        (["--since", "2h"], "go with --history"),
        (["--history", "--avg-tokens", "100"], "--avg-tokens"),
    ],
)
def test_report_history_options_are_checked(
    capsys: pytest.CaptureFixture[str], router_cli: Any, argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, "report", *argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert message in err


def test_report_history_since_an_iso_time(
    capsys: pytest.CaptureFixture[str], spent: QuotaRoutedChatModel
) -> None:
    code, out, _ = run(
        capsys, "report", "--history", "--csv", "--since", "2025-12-31T23:00", "--step", "1h"
    )
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert sorted({r["time"] for r in rows}) == [
        "2025-12-31T23:00:00+00:00",
        "2026-01-01T00:00:00+00:00",
    ]


# --------------------------------------------------------- reset, enable


def test_reset_a_route_forgets_its_pools_usage(
    capsys: pytest.CaptureFixture[str],
    spent: QuotaRoutedChatModel,
    make_router: Callable[[], QuotaRoutedChatModel],
) -> None:
    code, out, _ = run(capsys, "reset", "groq")
    assert code == 0
    assert "reset pool groq" in out
    usage = [u for u in make_router().usage() if u.pool == "groq"]
    assert all(u.used == 0 for u in usage)
    assert any(u.used for u in make_router().usage() if u.pool == "gemini-project")


def test_reset_a_pool_by_name_lifts_its_block(
    capsys: pytest.CaptureFixture[str],
    spent: QuotaRoutedChatModel,
    make_router: Callable[[], QuotaRoutedChatModel],
    clock: FakeClock,
) -> None:
    spent.ledger_backend.block("gemini-project", clock.now() + 600, "rate_limit")
    code, out, _ = run(capsys, "reset", "gemini-project")
    assert code == 0
    assert "(routes: gemini)" in out
    router = make_router()
    assert router.ledger_backend.holds(clock.now()) == []
    assert all(u.used == 0 for u in router.usage() if u.pool == "gemini-project")


def test_reset_an_unknown_name_exits_2_naming_routes_and_pools(
    capsys: pytest.CaptureFixture[str], router_cli: Any
) -> None:
    code, _, err = run(capsys, "reset", "mistral")
    assert code == 2
    assert err.count("\n") == 1
    assert "routes: groq, gemini, openai" in err
    assert "pools: groq, gemini-project, openai" in err


def test_enable_lifts_a_disabled_key(
    capsys: pytest.CaptureFixture[str],
    spent: QuotaRoutedChatModel,
    make_router: Callable[[], QuotaRoutedChatModel],
    clock: FakeClock,
) -> None:
    spent.ledger_backend.disable(spent.route_map["openai"].key, "disabled: 401")
    code, out, _ = run(capsys, "enable", "openai")
    assert code == 0
    assert "enabled openai" in out
    assert make_router().ledger_backend.holds(clock.now()) == []


def test_enable_on_a_healthy_route_says_there_was_nothing_to_do(
    capsys: pytest.CaptureFixture[str], spent: QuotaRoutedChatModel
) -> None:
    code, out, _ = run(capsys, "enable", "openai")
    assert code == 0
    assert "was not disabled; nothing to do" in out


def test_enable_an_unknown_route_exits_2(
    capsys: pytest.CaptureFixture[str], router_cli: Any
) -> None:
    code, _, err = run(capsys, "enable", "nope")
    assert code == 2
    assert "no route named 'nope'" in err
    assert "Traceback" not in err


# ------------------------------------------------------------------ chat


def test_chat_prints_the_answer_and_the_route(
    capsys: pytest.CaptureFixture[str], router_cli: Any
) -> None:
    code, out, err = run(capsys, "chat", "hello there", "--route", "gemini")
    assert code == 0
    assert out.strip() == "echo: hello there"  # the fake echoes
    assert "served by gemini (flash)" in err


def test_chat_with_an_unknown_route_exits_2(
    capsys: pytest.CaptureFixture[str], router_cli: Any
) -> None:
    code, _, err = run(capsys, "chat", "hi", "--route", "nope")
    assert code == 2
    assert "no route named 'nope'" in err


def test_chat_when_every_route_is_out_exits_1(
    capsys: pytest.CaptureFixture[str], spent: QuotaRoutedChatModel, clock: FakeClock
) -> None:
    for pool in ("gemini-project", "openai"):
        spent.ledger_backend.block(pool, clock.now() + 600, "rate_limit")
    code, out, err = run(capsys, "chat", "hi")
    assert code == 1
    assert out == ""
    assert err.startswith("quota-router: error: no route can serve this call")
    assert err.count("\n") == 1


# --------------------------------------------- real config files and keys


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator([SimKey(SECRET, "openai", rpm=30)]) as simulator:
        yield simulator


def write_config(tmp_path: Path, sim: Simulator, **extra: str) -> Path:
    body = "\n".join(f"{k} = {v}" for k, v in extra.items())
    path = tmp_path / "router.toml"
    path.write_text(
        f"""
ledger = "sqlite:///{tmp_path / "config-ledger.db"}"
cache = false
{body}

[[routes]]
model = "openai:gpt-4o-mini"
name = "openai"
api_key_env = "MY_OPENAI_KEY"
base_url = "{sim.openai_base_url}"
"""
    )
    return path


def test_chat_and_status_from_a_toml_config_over_the_simulator(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    sim: Simulator,
) -> None:
    monkeypatch.setenv("MY_OPENAI_KEY", SECRET)
    config = str(write_config(tmp_path, sim))
    code, out, err = run(capsys, "chat", "What is a quota?", "--config", config)
    assert code == 0, err
    assert "Simulated answer" in out
    assert "served by openai (gpt-4o-mini)" in err
    assert sim.stats(SECRET).served == 1

    # A second process reads the same ledger: the call is counted.
    code, out, _ = run(capsys, "report", "--json", "--config", config)
    assert code == 0
    limits = json.loads(out)["pools"][0]["limits"]
    assert any(limit["used"] == 1 for limit in limits if limit["metric"] == "requests")
    assert SECRET not in out


def test_the_config_env_var_is_used_without_config(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    sim: Simulator,
) -> None:
    monkeypatch.setenv("MY_OPENAI_KEY", SECRET)
    monkeypatch.setenv(cli.CONFIG_ENV, str(write_config(tmp_path, sim)))
    code, out, _ = run(capsys, "status")
    assert code == 0
    assert out.splitlines()[1].startswith("openai")


def test_without_config_the_environment_is_read(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setenv("GROQ_API_KEY", "gsk_" + "x" * 40)
    code, out, err = run(capsys, "status")
    assert code == 0, err
    assert "groq" in out
    assert "gsk_" not in out + err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("routes = [", "not valid TOML"),
        ("strategy = 'fastest'\n[[routes]]\nmodel = 'ollama:llama3'", "strategy must be"),
        ("[[routes]]\nmodel = 'nosuchvendor:x'", "unknown vendor 'nosuchvendor'"),
        ("[[routes]]\nmodel = 'groq'\nlimits = ['lots/day']", "cannot parse limit 'lots/day'"),
    ],
)
def test_bad_config_exits_2_with_one_clear_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    content: str,
    message: str,
) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "gsk_" + "x" * 40)
    path = tmp_path / "bad.toml"
    path.write_text(content)
    code, out, err = run(capsys, "status", "--config", str(path))
    assert code == 2
    assert out == ""
    assert err.startswith("quota-router: error: ")
    assert message in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_a_missing_config_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "report", "--config", str(tmp_path / "nope.toml"))
    assert code == 2
    assert "nope.toml (--config) does not exist" in err


def test_no_keys_anywhere_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "status")
    assert code == 2
    assert "no API keys found" in err


def test_a_file_that_is_not_a_ledger_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes, not a database\n" * 100)
    monkeypatch.setenv("GROQ_API_KEY", "gsk_" + "x" * 40)
    config = tmp_path / "router.toml"
    config.write_text(f'ledger = "sqlite:///{notes}"\n[[routes]]\nmodel = "groq"\n')
    code, _, err = run(capsys, "status", "--config", str(config))
    assert code == 1  # a LedgerError: the configuration is fine, the file is not
    assert "notes.txt" in err
    assert err.count("\n") == 1
    assert notes.read_text().startswith("my notes")


def test_api_keys_are_never_printed(
    capsys: pytest.CaptureFixture[str],
    spent: QuotaRoutedChatModel,
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    # A vendor's 401 body quoting the key ends up in the hold's reason.
    spent.ledger_backend.disable(
        spent.route_map["openai"].key, f"disabled: Incorrect API key provided: {SECRET}"
    )
    spent.ledger_backend.block("groq", clock.now() + 60, f"rate_limit: key {SECRET}")
    outputs = []
    for argv in (["status"], ["report"], ["report", "--json"], ["report", "--csv"]):
        code, out, err = run(capsys, *argv)
        assert code == 0
        outputs.append(out + err)
    export = tmp_path / "report.txt"
    run(capsys, "report", "--export", str(export))
    outputs.append(export.read_text())
    for text in outputs:
        assert SECRET not in text
        assert SECRET[:20] not in text
    assert "[REDACTED]" in outputs[2]


# ---------------------------------------------- simulate, serve, demo


def test_simulate_delegates_to_the_simulator(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import langchain_quota_router.simulator as simulator

    seen: list[list[str]] = []
    monkeypatch.setattr(simulator, "main", lambda argv: seen.append(list(argv)) or 0)
    assert cli.main(["simulate", "--port", "8123", "--config", "keys.json"]) == 0
    assert seen == [["--host", "127.0.0.1", "--port", "8123", "--config", "keys.json"]]


def test_serve_runs_the_status_page_for_the_router(
    monkeypatch: pytest.MonkeyPatch, router_cli: Any
) -> None:
    from langchain_quota_router import web

    seen: list[tuple[Any, str, int, list[str]]] = []

    def serve(router: Any, host: str, port: int, allowed_hosts: list[str]) -> None:
        seen.append((router, host, port, allowed_hosts))

    monkeypatch.setattr(web, "serve", serve)
    assert cli.main(["serve", "--port", "9999"]) == 0
    assert cli.main(["serve", "--allow-host", "a.example", "--allow-host", "b.example"]) == 0
    (router, host, port, allowed), (_, _, _, more) = seen
    assert isinstance(router, QuotaRoutedChatModel)
    assert (host, port, allowed) == ("127.0.0.1", 9999, [])
    assert more == ["a.example", "b.example"]


def test_serve_without_uvicorn_names_the_extra(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, router_cli: Any
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # type: ignore[arg-type]
    code, out, err = run(capsys, "serve", "--port", "0")
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert "pip install 'langchain-quota-router[web]'" in err


def test_serve_with_a_short_admin_token_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, router_cli: Any
) -> None:
    monkeypatch.setenv("QUOTA_ROUTER_ADMIN_TOKEN", "hunter2")
    code, _, err = run(capsys, "serve", "--port", "0")
    assert code == 2
    assert "QUOTA_ROUTER_ADMIN_TOKEN is too short" in err
    assert "hunter2" not in err


def test_serve_without_the_web_module_says_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import langchain_quota_router

    monkeypatch.delattr(langchain_quota_router, "web", raising=False)
    monkeypatch.setitem(sys.modules, "langchain_quota_router.web", None)  # type: ignore[arg-type]
    code, _, err = run(capsys, "serve")
    assert code == 2
    assert "status page is not available" in err


def test_demo_rejects_a_non_positive_budget(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "demo", "--seconds", "0")
    assert code == 2
    assert "--seconds must be positive" in err
