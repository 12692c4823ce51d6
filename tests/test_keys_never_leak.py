"""A whole workload with known keys: no key in any file written or any line logged."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import httpx
import pytest
from langchain_core.tools import tool

from langchain_quota_router import QuotaRoutedChatModel, Route
from langchain_quota_router._clock import FakeClock
from langchain_quota_router.cli import main as cli_main
from langchain_quota_router.simulator import SimKey, Simulator
from langchain_quota_router.web import create_app

KEYS = {
    "groq": "gsk_SECRETgroqkey0001112223334445556667",
    "gemini": "AIzaSECRETgeminikey88899900011122233",
    "openai": "sk-proj-SECRETopenaikey44455566677788899",
    "cohere": "SECRETcoherekey1234567890abcdefghijklmn",
}
REVOKED = "sk-proj-SECRETrevokedkey000111222333444"
MODELS = {
    "groq": "groq:openai/gpt-oss-120b",
    "gemini": "gemini:gemini-3.5-flash",
    "openai": "openai:gpt-4o-mini",
    "cohere": "cohere:command-r-08-2024",
}


@tool
def lookup(city: str) -> str:
    """Look a city up."""
    return f"{city} is lovely"


def test_a_workload_writes_and_logs_no_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = FakeClock()
    sim_keys = [SimKey(KEYS["groq"], "groq", rpm=2)] + [
        SimKey(KEYS[v], v)
        for v in ("gemini", "openai", "cohere")  # type: ignore[misc]
    ]
    config = tmp_path / "router.toml"
    with Simulator(sim_keys, clock=clock) as sim, caplog.at_level(logging.DEBUG):
        bases = {
            "groq": sim.groq_base_url,
            "gemini": sim.gemini_base_url,
            "openai": sim.openai_base_url,
            "cohere": sim.cohere_base_url,
        }
        routes = [
            Route(MODELS[v], api_key=KEYS[v], base_url=bases[v], priority=i)
            for i, v in enumerate(KEYS)
        ]
        routes.insert(
            0, Route(MODELS["openai"], api_key=REVOKED, base_url=bases["openai"], name="old")
        )
        ledger = f"sqlite:///{tmp_path}/ledger.db"
        llm = QuotaRoutedChatModel(
            routes=routes, ledger=ledger, cache=True, clock=clock, max_wait=0
        )
        for i in range(6):  # groq's 2/minute is refused by the vendor, then known
            llm.invoke(f"question {i}")
        llm.invoke("question 0")  # a cache hit
        list(llm.stream("a streamed question"))
        llm.bind_tools([lookup]).invoke("Where is Lima?")
        asyncio.run(llm.ainvoke("an async question"))
        status = asyncio.run(_get(create_app(llm), "/status.json"))
        (tmp_path / "status.json").write_text(status)

        config.write_text(f'ledger = "{ledger}"\n[[routes]]\nmodel = "{MODELS["groq"]}"\n')
        with pytest.MonkeyPatch.context() as env:
            env.setenv("GROQ_API_KEY", KEYS["groq"])
            for fmt in ("json", "csv", "txt"):
                cli_main(["report", "--config", str(config), "--export", f"{tmp_path}/r.{fmt}"])
            cli_main(["status", "--config", str(config)])
    printed = capsys.readouterr()

    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name.startswith("ledger.db") for p in written)
    assert any("cache" in str(p) for p in written)
    assert llm.get_stats()["cache_hits"] == 1
    assert "disabled" in json.dumps(json.loads(status)["holds"])
    for secret in [*KEYS.values(), REVOKED]:
        needles = (secret, secret[-12:])
        for path in written:
            data = path.read_bytes()
            for needle in needles:
                assert needle.encode() not in data, f"{needle!r} found in {path}"
        for needle in needles:
            assert needle not in caplog.text
            assert needle not in printed.out + printed.err
            assert needle not in repr(llm)


async def _get(app: object, path: str) -> str:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://page") as client:
        response = await client.get(path)
        response.raise_for_status()
        return response.text
