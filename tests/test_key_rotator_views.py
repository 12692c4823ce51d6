"""Key rotators beside the routes wherever quota is shown: usage(), the status model
(/status.json, the page), quota-router status, /metrics, enable and reset by name,
and a [[keys]] table in a config file. Keys are masked everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from langchain_quota_router import (
    ConfigurationError,
    KeyRotator,
    QuotaExhaustedError,
    QuotaRoutedChatModel,
    Route,
    metrics,
)
from langchain_quota_router.cli import main as cli_main
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.quota.status import status_snapshot
from langchain_quota_router.testing import FakeVendorChatModel
from langchain_quota_router.web import create_app

K1 = "serp-view-key-one-0123456789abcdef"
K2 = "serp-view-key-two-fedcba9876543210"


@pytest.fixture
def router(clock: FakeClock, tmp_path: Path) -> QuotaRoutedChatModel:
    ledger = f"sqlite:///{tmp_path}/ledger.db"
    router = QuotaRoutedChatModel(
        routes=[Route(FakeVendorChatModel(), name="chat", limits=["5/day"])],
        ledger=ledger,
        cache=False,
        clock=clock,
    )
    serp = KeyRotator(
        "serp", keys=[K1, K2], limits=["2/day"], ledger=router.ledger_backend, clock=clock
    )
    router.key_rotators.append(serp)
    for _ in range(3):
        serp.call(lambda *, api_key: api_key)
    router.invoke("hi")
    return router


def test_usage_holds_the_keys_pools(router: QuotaRoutedChatModel) -> None:
    used = sorted(u.used for u in router.usage())
    assert used == [1, 1, 2]  # the route's pool, and two keys: 2 and 1 of 2/day


def test_status_shows_keys_beside_routes(router: QuotaRoutedChatModel) -> None:
    snapshot = status_snapshot(router)
    rows = {row["name"]: row for row in snapshot["routes"]}
    assert rows["chat"]["kind"] == "route"
    assert rows["serp#0"]["kind"] == "key"
    assert rows["serp#0"]["provider"] == "serp"
    assert rows["serp#0"]["state"] == "full"
    assert rows["serp#1"]["state"] == "ok"
    assert rows["serp#0"]["calls"] == 2
    text = json.dumps(snapshot)
    assert K1 not in text
    assert K2 not in text


async def test_the_page_and_status_json_show_keys(router: QuotaRoutedChatModel) -> None:
    app = create_app(router, admin_token="t" * 32)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        page = (await client.get("/")).text
        data = (await client.get("/status.json")).json()
    assert "serp#0" in page
    assert "serp#1" in {row["name"] for row in data["routes"]}
    assert K1 not in page
    assert K1 not in json.dumps(data)


def test_metrics_show_keys(router: QuotaRoutedChatModel) -> None:
    registry = CollectorRegistry(auto_describe=True)
    metrics.register(router, registry)
    text = generate_latest(registry).decode()
    assert 'route="serp#0"' in text
    assert K1 not in text


def test_enable_and_reset_reach_keys_by_name(
    router: QuotaRoutedChatModel, clock: FakeClock
) -> None:
    serp = router.key_rotators[0]
    ledger = router.ledger_backend
    credential = serp.members[0].credential
    ledger.disable(credential, "disabled: 401")
    assert router.enable("serp#0") is True
    assert ledger.holds(clock.now()) == []
    router.reset("serp#0")
    router.reset("serp#1")
    seen = [serp.call(lambda *, api_key: api_key) for _ in range(4)]
    assert seen == [K1, K1, K2, K2]
    with pytest.raises(QuotaExhaustedError):
        serp.call(lambda *, api_key: api_key)
    with pytest.raises(ConfigurationError, match="no route named 'serp#9'"):
        router.enable("serp#9")


def test_a_keys_table_in_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "gsk_" + "g" * 52)
    monkeypatch.setenv("SERP_API_KEYS", f"{K1},{K2}")
    monkeypatch.setenv("SERP_MAX_REQUESTS_PER_DAY_1", "7")
    config = tmp_path / "router.toml"
    config.write_text(
        f"""
ledger = "sqlite:///{tmp_path}/ledger.db"
cache = false

[[routes]]
model = "groq:openai/gpt-oss-120b"

[[keys]]
name = "serp"
env = "SERP"
limits = ["100/month"]
"""
    )
    router = QuotaRoutedChatModel.from_config(config)
    (serp,) = router.key_rotators
    assert serp.keys == ["serp#0", "serp#1"]
    assert serp.ledger_backend is router.ledger_backend
    limits = sorted(str(u.limit) for u in serp.usage())
    assert limits == ["100/month", "100/month", "7/day"]
    code = cli_main(["status", "--config", str(config)])
    out = capsys.readouterr().out
    assert code == 0
    assert "serp#0" in out
    assert "serp#1" in out
    assert K1 not in out


@pytest.mark.parametrize(
    ("table", "culprit"),
    [
        ('name = "serp"', 'env = "..." is required'),
        ('name = "serp"\nenv = "SERP"\ncolour = "red"', "unknown setting colour"),
        ('name = "serp"\nenv = "NOPE"', "no NOPE keys found"),
    ],
)
def test_a_bad_keys_table_names_the_culprit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, table: str, culprit: str
) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "gsk_" + "g" * 52)
    monkeypatch.setenv("SERP_API_KEY", K1)
    config = tmp_path / "router.toml"
    config.write_text(
        f'ledger = "memory://"\n[[routes]]\nmodel = "groq:openai/gpt-oss-120b"\n[[keys]]\n{table}\n'
    )
    with pytest.raises(ConfigurationError, match=culprit) as caught:
        QuotaRoutedChatModel.from_config(config)
    assert "keys[0]" in str(caught.value)


def test_embeddings_beside_the_routes(clock: FakeClock, tmp_path: Path) -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from langchain_quota_router import QuotaRoutedEmbeddings

    router = QuotaRoutedChatModel(
        routes=[Route(FakeVendorChatModel(), name="chat", pool="trial", limits=["4/day"])],
        ledger=f"sqlite:///{tmp_path}/ledger.db",
        cache=False,
        clock=clock,
    )
    embed = QuotaRoutedEmbeddings(
        [Route(DeterministicFakeEmbedding(size=4), name="embed", pool="trial", limits=["4/day"])],
        ledger=router.ledger_backend,
        cache=False,
        clock=clock,
    )
    router.embeddings.append(embed)
    embed.embed_documents(["a", "b"])
    router.invoke("hi")
    rows = {row["name"]: row for row in status_snapshot(router)["routes"]}
    assert rows["embed"]["pool"] == "trial"
    assert [u.used for u in router.usage()] == [2]  # one pool, counted once
    router.reset("embed")
    assert [u.used for u in router.usage()] == [0]


def test_embedding_routes_in_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "gsk_" + "g" * 52)
    monkeypatch.setenv("COHERE_API_KEY", "c" * 40)
    config = tmp_path / "router.toml"
    config.write_text(
        f"""
ledger = "sqlite:///{tmp_path}/ledger.db"
cache = false

[[routes]]
model = "groq:openai/gpt-oss-120b"

[[embedding_routes]]
model = "cohere:embed-v4.0"
pool = "cohere-trial"
limits = ["1000/month"]
batch_size = 48
"""
    )
    router = QuotaRoutedChatModel.from_config(config)
    (embeddings,) = router.embeddings
    (route,) = embeddings.members
    assert route.pool == "cohere-trial"
    assert embeddings.ledger_backend is router.ledger_backend
    assert "cohere-trial" in {row["pool"] for row in status_snapshot(router)["routes"]}
    config.write_text(
        'ledger = "memory://"\n[[routes]]\nmodel = "groq:openai/gpt-oss-120b"\n'
        '[[embedding_routes]]\nmodel = "groq:openai/gpt-oss-120b"\n'
    )
    with pytest.raises(ConfigurationError, match=r"embedding_routes\[0\].*not an embedding model"):
        QuotaRoutedChatModel.from_config(config)
