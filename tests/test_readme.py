"""The README says what is true: its commands run as written, its figures match the
scripts that print them."""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    """The text of a README section, from its heading to the next one."""
    start = README.index(f"\n### {title}\n")
    end = README.find("\n#", start + 1)
    return README[start : end if end != -1 else None]


def code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.DOTALL)


def test_the_jupyter_block_runs_in_the_quick_start_environment() -> None:
    quick = code_blocks(README[: README.index("\n## Use")], "bash")[0]
    assert ".venv/bin/pip install -e" in quick  # the Quick start installs into .venv
    (block,) = code_blocks(section("Jupyter"), "bash")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for command in block.strip().split("&&"):
        words = shlex.split(command)
        # A bare pip or jupyter is another environment's (or none at all).
        assert words[0].startswith(".venv/bin/"), command
        for word in words:
            found = re.fullmatch(r"\.\[(\w+)\]", word)
            if found:
                assert found[1] in extras, word


def _overhead_module() -> object:
    spec = importlib.util.spec_from_file_location("overhead", ROOT / "benchmarks/overhead.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


def test_the_overhead_benchmark_prints_the_readme_s_targets() -> None:
    targets = _overhead_module().TARGETS  # type: ignore[attr-defined]
    text = re.sub(r"\s+", " ", README)
    for ratio in ("(c)/(b)", "(j)/(b)", "(k)/(b)", "(d)/(a)", "(c)/(e)"):
        # The README's table of targets: "| (c)/(b): what it is ≤ 1.6 | 2.04 | missed |"
        row = re.search(re.escape(f"| {ratio}:") + r"[^|]*≤ ([\d.]+) \|", text)
        assert row is not None, f"the README states no target for {ratio}"
        assert float(row[1]) == targets[ratio], ratio
