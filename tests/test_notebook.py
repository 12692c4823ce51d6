"""The quickstart notebook runs top to bottom on this venv's Python, against the simulator."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"
KERNEL = "quota-router-test-venv"
NEEDED = ("nbclient", "nbformat", "ipykernel", "pandas", "matplotlib")

# Appended to the notebook in memory: what the plot cell drew, read from the kernel.
PLOT_PROBE = """
import json, matplotlib, matplotlib.pyplot as plt
_ax = plt.gcf().axes[0]
print("PLOT " + json.dumps({
    "backend": matplotlib.get_backend().lower(),
    "lines": [line.get_label() for line in _ax.get_lines()],
    "points": [len(line.get_xdata()) for line in _ax.get_lines()],
    "title": _ax.get_title(),
}))
"""


def _require_notebook_tools() -> None:
    missing = []
    for name in NEEDED:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        message = f"the notebook test needs {', '.join(missing)} (pip install -e '.[dev]')"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI must run the notebook")
        pytest.skip(message)


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernel spec that runs this interpreter, so the notebook sees this venv.

    The spec lives in a private ``JUPYTER_PATH``: a ``python3`` kernel installed
    elsewhere on the machine (another Python, without this package) cannot win.
    """
    _require_notebook_tools()
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "quota-router tests",
        "language": "python",
        "env": {"MPLBACKEND": "Agg"},  # no display in tests
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    # Nothing may land in the user's home: Jupyter runtime files, IPython profile,
    # matplotlib's font cache, and the notebook's own temporary folder.
    for name, folder in (
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("JUPYTER_DATA_DIR", "jupyter-data"),
        ("IPYTHONDIR", "ipython"),
        ("MPLCONFIGDIR", "mpl"),
        ("TMPDIR", "kernel-tmp"),
    ):
        (tmp_path / folder).mkdir()
        monkeypatch.setenv(name, str(tmp_path / folder))
    return KERNEL


def _text(cell: Any, streams: tuple[str, ...] = ("stdout", "stderr")) -> str:
    """What a cell showed: its printed streams and the plain-text form of its results."""
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            if output["name"] in streams:
                parts.append(output["text"])
        elif output["output_type"] in ("execute_result", "display_data"):
            parts.append(str(output["data"].get("text/plain", "")))
    return "".join(parts)


def test_notebook_is_stored_without_outputs() -> None:
    _require_notebook_tools()
    import nbformat

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"stored with outputs: {cell.source[:60]!r}"
            assert cell.execution_count is None


@pytest.mark.slow
def test_quickstart_runs_top_to_bottom(kernel: str, tmp_path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(PLOT_PROBE))
    workdir = tmp_path / "cwd"
    workdir.mkdir()

    NotebookClient(
        notebook,
        timeout=180,
        startup_timeout=120,
        kernel_name=kernel,
        resources={"metadata": {"path": str(workdir)}},
    ).execute()

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    text = "\n".join(_text(cell) for cell in code)
    # The chain: groq first, then the fallback to gemini once groq's 3/minute is spent.
    chain_output = next(
        _text(c, ("stdout",)) for c in code if 'chain.invoke({"topic": topic})' in c.source
    )
    served_by = [line.split(":")[0].strip() for line in chain_output.splitlines() if line]
    assert served_by == ["groq", "groq", "groq", "gemini", "gemini"]
    assert "Simulated answer" in chain_output
    # The agent called its tool and answered from the result.
    agent_output = next(_text(c) for c in code if "create_agent" in c.source)
    assert "tool" in agent_output
    assert "cohere: 19 left" in agent_output
    # The usage table is a DataFrame (rendered as HTML too).
    table = next(c for c in code if "usage = pd.DataFrame" in c.source)
    assert any("text/html" in o.get("data", {}) for o in table.outputs)
    assert "3/minute" in _text(table)
    assert "'fallbacks': 4" in text
    # The plot: one line per pool, one point per recorded call.
    probe = json.loads(text.split("PLOT ", 1)[1].splitlines()[0])
    assert probe["backend"] == "agg"
    assert probe["lines"] == ["groq", "gemini", "cohere"]
    assert len(set(probe["points"])) == 1
    assert probe["points"][0] >= 10
    # Everything the notebook wrote went to its temporary folder, now removed.
    assert list(workdir.iterdir()) == []
    assert list((tmp_path / "kernel-tmp").iterdir()) == []
