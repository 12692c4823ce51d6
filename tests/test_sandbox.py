"""The simulator is a sandbox for the user's own code: it serves keys out of the box,
prints what to paste, and the README's "Try it without keys" runs as written."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from langchain_quota_router import QuotaRoutedChatModel, Route
from langchain_quota_router.simulator import Simulator
from langchain_quota_router.simulator._cli import SANDBOX_KEYS, paste_lines

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def try_it_section() -> str:
    start = README.index("\n## Try it without keys\n")
    return README[start : README.index("\n## ", start + 1)]


@pytest.fixture
def sandbox() -> Iterator[Simulator]:
    with Simulator(list(SANDBOX_KEYS)) as sim:
        yield sim


def env_lines(text: str) -> dict[str, str]:
    return dict(re.findall(r"^([A-Z_]+)=(\S+)$", text, flags=re.MULTILINE))


def test_simulate_serves_keys_out_of_the_box_and_prints_what_to_paste() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "langchain_quota_router.simulator", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        lines = []
        while sum(line.startswith("base_url") for line in lines) < 4:
            lines.append(process.stdout.readline().rstrip("\n"))
        pasted = env_lines("\n".join(lines))
        served = httpx.post(
            f"{lines[0]}/v1/chat/completions",
            headers={"authorization": f"Bearer {pasted['OPENAI_API_KEY']}"},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            timeout=5,
        )
        assert served.status_code == 200
    finally:
        process.terminate()
        _, err = process.communicate(timeout=5)
    out = "\n".join(lines)
    assert "serving keys: none" not in err
    pasted = env_lines(out)
    url = lines[0]
    assert pasted["GROQ_API_KEY"] == "sim-groq-key"
    assert pasted["GROQ_BASE_URL"] == url
    assert pasted["OPENAI_BASE_URL"] == f"{url}/v1"
    assert {"GEMINI_API_KEY", "GEMINI_BASE_URL", "COHERE_API_KEY", "COHERE_BASE_URL"} <= set(pasted)
    assert '[[routes]]\nmodel = "groq:openai/gpt-oss-120b"' in out


def test_the_readme_s_try_it_section_runs_as_written(
    sandbox: Simulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in env_lines(paste_lines(sandbox, SANDBOX_KEYS)).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    (code,) = re.findall(r"```python\n(.*?)```", try_it_section(), flags=re.DOTALL)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md (Try it without keys)", "exec"), {})
    lines = printed.getvalue().splitlines()
    assert "sunny in" in lines[0]  # the agent's tool ran and its answer quotes it
    assert lines[-1].endswith("first choice")
    assert sum(s.received for s in (sandbox.stats(k.key) for k in SANDBOX_KEYS)) == 2


def test_the_printed_router_toml_works(sandbox: Simulator, tmp_path: Path) -> None:
    text = paste_lines(sandbox, SANDBOX_KEYS)
    toml = text[text.index("[[routes]]") :]
    for name, value in env_lines(text).items():
        if name.endswith("_API_KEY"):
            toml = toml.replace(f'api_key_env = "{name}"', f'api_key = "{value}"')
    config = tmp_path / "router.toml"
    config.write_text('ledger = "memory://"\n' + toml)
    llm = QuotaRoutedChatModel.from_config(config, cache=False)
    answer = llm.invoke("hello")
    assert answer.response_metadata["route"].startswith("groq")


def test_the_readme_s_config_example_is_a_valid_simulator_config(tmp_path: Path) -> None:
    from langchain_quota_router.simulator._cli import load_keys, load_models

    (example,) = re.findall(r"```json\n(.*?)```", try_it_section(), flags=re.DOTALL)
    path = tmp_path / "sim.json"
    path.write_text(example)
    assert [k.vendor for k in load_keys(path)] == ["groq", "gemini", "openai"]
    models = load_models(path)
    assert models is not None
    assert len(models["groq"]) == 2
    json.loads(example)


@pytest.mark.parametrize("vendor", ["groq", "gemini", "openai", "cohere"])
def test_a_route_honours_its_vendor_s_base_url_variable(
    sandbox: Simulator, monkeypatch: pytest.MonkeyPatch, vendor: str
) -> None:
    for name, value in env_lines(paste_lines(sandbox, SANDBOX_KEYS)).items():
        monkeypatch.setenv(name, value)
    model = {"groq": "openai/gpt-oss-120b", "gemini": "gemini-3.5-flash-lite"}.get(
        vendor, {"openai": "gpt-4o-mini", "cohere": "command-a-03-2025"}.get(vendor, "")
    )
    llm = QuotaRoutedChatModel(routes=[Route(f"{vendor}:{model}")], ledger="memory://", cache=False)
    assert llm.invoke("hello").text.startswith("Simulated answer")


@pytest.mark.parametrize("vendor", ["groq", "gemini", "openai", "cohere"])
def test_json_mode_answers_json_on_every_vendor(
    sandbox: Simulator, monkeypatch: pytest.MonkeyPatch, vendor: str
) -> None:
    for name, value in env_lines(paste_lines(sandbox, SANDBOX_KEYS)).items():
        monkeypatch.setenv(name, value)
    llm = QuotaRoutedChatModel.from_env(dotenv=None, ledger="memory://", cache=False)
    structured = llm.with_structured_output(None, method="json_mode")
    route = next(name for name in llm.route_map if name.startswith(vendor))
    answer = structured.invoke("Reply in JSON, please", preferred=route)
    assert isinstance(answer, dict)
    assert answer["answer"].startswith("Simulated answer")


def test_generated_names_can_be_typed_back(
    sandbox: Simulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from langchain_quota_router.cli import main
    from langchain_quota_router.quota.book import match_name

    for name, value in env_lines(paste_lines(sandbox, SANDBOX_KEYS)).items():
        monkeypatch.setenv(name, value)
    llm = QuotaRoutedChatModel.from_env(dotenv=None, ledger="memory://", cache=False)
    groq = next(name for name in llm.route_map if name.startswith("groq"))
    assert "\u2026" in groq  # as generated: "groq …19f5"
    typed = groq.replace("\u2026", "...")
    assert match_name(typed, llm.route_map) == groq
    assert match_name("groq", llm.route_map) == groq  # a unique prefix
    assert match_name("g", llm.route_map) is None  # groq or gemini: ambiguous
    llm.reset(typed)
    assert llm.enable("groq") is False
    assert main(["reset", "gem"]) == 0
    assert "reset pool" in capsys.readouterr().out
    # On the command line too, typed with "..." where the name has "…".
    assert main(["reset", typed]) == 0
    assert f"reset pool {llm.route_map[groq].pool} (routes: {groq})" in capsys.readouterr().out
    assert main(["enable", typed]) == 0
    assert f"{groq} was not disabled" in capsys.readouterr().out  # its real name
