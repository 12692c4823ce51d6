"""One status model: the page's JSON, ``report --json`` and the rows agree; one masker."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from langchain_openai import ChatOpenAI

from langchain_quota_router import QuotaRoutedChatModel, Route, cli
from langchain_quota_router.cli._report import CSV_COLUMNS, report_csv
from langchain_quota_router.quota.admission import model_subject
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.quota.secrets import REDACTED, Masker, mask, mask_url
from langchain_quota_router.quota.status import (
    LimitRow,
    limit_row,
    read_status,
    status_snapshot,
    tightest,
)
from langchain_quota_router.testing import FakeVendorChatModel
from langchain_quota_router.web import create_app

TOKEN = "owner-" + "T0k3n" * 6
PLAIN = "plainkey-with-no-known-shape"  # only knowing the key finds it


def make_router(clock: FakeClock) -> QuotaRoutedChatModel:
    return QuotaRoutedChatModel(
        routes=[
            Route(FakeVendorChatModel(model="llama"), name="groq", limits=["3/minute", "10/day"]),
            Route(
                FakeVendorChatModel(model="flash"),
                name="gemini",
                pool="gemini-project",
                limits=["5/minute", "20/day@America/Los_Angeles"],
                priority=2,
            ),
            Route(
                ChatOpenAI(model="gpt-4o-mini", api_key=PLAIN, base_url="http://127.0.0.1:9"),
                name="openai",
                limits=["100000 tokens/once"],
                priority=9,
            ),
        ],
        ledger="memory://",
        cache=False,
        clock=clock,
    )


@pytest.fixture
def router(clock: FakeClock) -> QuotaRoutedChatModel:
    router = make_router(clock)
    for _ in range(4):  # groq's 3/minute fills; the fourth call falls back to gemini
        router.invoke("hello")
    ledger = router.ledger_backend
    ledger.block("gemini-project", clock.now() + 30, "rate_limit: 429 slow down")
    ledger.disable(router.route_map["openai"].key, f"disabled: 401 bad key {PLAIN}")
    return router


async def get_json(router: QuotaRoutedChatModel, path: str) -> Any:
    transport = httpx.ASGITransport(app=create_app(router, admin_token=TOKEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        answer = await client.get(path)
        assert answer.status_code == 200
        return answer.json()


async def test_status_json_and_report_json_are_the_same_facts(
    router: QuotaRoutedChatModel,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(cli, "_load_router", lambda config: router)

    page = await get_json(router, "/status.json")
    assert cli.main(["report", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)

    assert report == page
    # And the facts are the expected ones, under the same names.
    states = {r["name"]: r["state"] for r in report["routes"]}
    assert states == {"groq": "full", "gemini": "blocked", "openai": "disabled"}
    groq = next(p for p in report["pools"] if p["pool"] == "groq")
    minute = next(x for x in groq["limits"] if x["limit"] == "3/minute")
    assert (minute["used"], minute["amount"], minute["remaining"]) == (3, 3, 0)
    assert "limit_amount" not in minute
    assert {h["kind"] for h in report["holds"]} == {"blocked", "disabled"}
    assert PLAIN not in json.dumps(report)


async def test_report_csv_columns_are_the_json_names(router: QuotaRoutedChatModel) -> None:
    data = status_snapshot(router)
    row = data["pools"][0]["limits"][0]
    # Every CSV column that is a fact of a limit has the JSON field's name.
    for column in CSV_COLUMNS:
        if column not in ("pool", "routes", "state", "lifespan_days"):
            assert column in row
    assert report_csv(data).splitlines()[0] == ",".join(CSV_COLUMNS)


def test_route_states_follow_one_rule(clock: FakeClock) -> None:
    router = make_router(clock)
    for _ in range(3):
        router.invoke("fill groq")
    status = read_status(router)
    groq = next(r for r in status.routes if r.name == "groq")
    # Full when a limit's remaining is zero; free again when the window frees up.
    assert groq.state.kind == "full"
    assert groq.state.until == clock.now() + 61
    assert groq.state.reason == "3/minute is used up"

    gemini = router.route_map["gemini"]
    until = clock.now() + 3600
    router.ledger_backend.mark_unavailable(model_subject(gemini), until, "model gone")
    router.ledger_backend.block("gemini-project", until, "rate_limit: 429")
    status = read_status(router)
    state = next(r for r in status.routes if r.name == "gemini").state
    assert (state.kind, state.until) == ("unavailable", until)  # the model, before the pool
    assert [(h.kind, h.pool, h.routes) for h in status.holds] == [
        ("unavailable", None, ("gemini",)),
        ("blocked", "gemini-project", ("gemini",)),
    ]


def test_holds_of_other_routers_sharing_the_ledger_are_left_out(clock: FakeClock) -> None:
    router = make_router(clock)
    router.ledger_backend.block("someone-elses-pool", clock.now() + 60, "not ours")
    router.ledger_backend.disable("someone-elses-key", "not ours")
    assert read_status(router).holds == ()


def test_limit_rows_and_tightest(router: QuotaRoutedChatModel) -> None:
    usage = router.usage()
    rows = [limit_row(u) for u in usage]
    assert rows == read_status(router).limits
    day = next(r for r in rows if r.limit == "20/day@America/Los_Angeles")
    assert day == LimitRow(
        pool="gemini-project",
        limit="20/day@America/Los_Angeles",
        metric="requests",
        window="day@America/Los_Angeles",
        used=1,
        amount=20,
        remaining=19,
        percent=5.0,
        resets_at=day.resets_at,
        learned_at=None,
    )
    # The same answer from LimitUsage and from the rows.
    top = tightest(usage, "groq")
    assert top is not None
    assert str(top.limit) == "3/minute"
    assert tightest(rows, "groq") == limit_row(top)
    assert tightest(rows, "nowhere") is None


def test_lifespan_is_part_of_the_status_when_asked(router: QuotaRoutedChatModel) -> None:
    assert status_snapshot(router)["lifespan"] is None
    span = status_snapshot(router, tokens_per_day=1000)["lifespan"]
    assert span["tokens_per_day"] == 1000
    # groq's 3/minute is full: it lasts nothing until the minute slides on.
    assert span["days"]["groq"] == 0.0
    assert span["back_at"]["groq"] is not None
    assert span["days"]["gemini-project"] == "inf"
    assert "all" in span["days"]


# ------------------------------------------------------------------ masking


def test_router_keys_are_every_secret_the_models_hold(router: QuotaRoutedChatModel) -> None:
    assert router.keys_to_mask() == [PLAIN]


def test_mask_hides_known_keys_and_key_shapes() -> None:
    text = f"key {PLAIN} and sk-proj-abcdefghijkl and Bearer xyz and ok-text"
    masked = mask(text, [PLAIN])
    assert PLAIN not in masked
    assert "sk-proj" not in masked
    assert "xyz" not in masked
    assert masked.count(REDACTED) == 3
    assert masked.endswith("ok-text")
    # A key that contains another is masked whole, not in pieces.
    assert Masker(["abcd", "abcdef"])("x abcdef y") == f"x {REDACTED} y"
    assert Masker(["abcd"]).body(b"abcd abcd") == f"{REDACTED} {REDACTED}".encode()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("memory://", "memory://"),
        ("sqlite:///tmp/ledger.db", "sqlite:///tmp/ledger.db"),
        ("sqlite:////abs/ledger.db", "sqlite:////abs/ledger.db"),
        ("redis://:pw@host:6379/0", "redis://***@host:6379/0"),
        ("redis://host:6379/0?password=pw", "redis://host:6379/0?password=***"),
    ],
)
def test_mask_url_hides_credentials_and_keeps_the_rest(url: str, shown: str) -> None:
    assert mask_url(url) == shown


async def test_every_output_masks_a_key_no_pattern_knows(
    router: QuotaRoutedChatModel,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(cli, "_load_router", lambda config: router)
    transport = httpx.ASGITransport(app=create_app(router, admin_token=TOKEN))
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://testserver",
        headers={"authorization": f"Bearer {TOKEN}"},
    ) as client:
        outputs = [(await client.get(path)).text for path in ("/", "/status.json", "/metrics")]
    for argv in (["status"], ["report"], ["report", "--json"], ["report", "--csv"]):
        assert cli.main(argv) == 0
        outputs.append(capsys.readouterr().out)
    outputs.append(json.dumps(status_snapshot(router)))
    for text in outputs:
        assert PLAIN not in text
    assert sum(REDACTED in text for text in outputs) >= 4  # the disabled key's reason
