"""The quickstart notebook runs top to bottom on this venv's Python, against the simulator,
and everything it imports comes from the ``notebook`` extra.

The suite stays offline and fast, so it does not build a fresh environment with
``pip install '.[notebook]'``. It checks the same promise two ways instead: the
notebook's own import statements each name a package the extra requires (directly),
and every distribution the kernel had loaded after running the whole notebook lies in
what the extra installs (its requirements and theirs), the kernel's own tooling, or
what any Python of this environment loads at start.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the package depends on tomli below 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
KERNEL = "quota-router-test-venv"
NEEDED = ("nbclient", "nbformat", "ipykernel", "pandas", "matplotlib")
PACKAGE = "langchain-quota-router"
#: What runs the notebook without being imported by it: the kernel.
KERNEL_TOOLING = ("ipykernel",)

# Appended to the notebook in memory: every top-level module the kernel has loaded.
MODULES_PROBE = """
import json as _json, sys as _sys
print("MODULES " + _json.dumps(sorted({_m.split(".")[0] for _m in list(_sys.modules)})))
"""

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


def extra_requirements(extra: str) -> set[str]:
    """The distributions ``pip install 'langchain-quota-router[extra]'`` asks for by name:
    the package's own dependencies, the extra's, and those of the extras it names."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    names: set[str] = set()
    todo = [*project["dependencies"], *extras[extra]]
    while todo:
        requirement = Requirement(todo.pop())
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        if canonicalize_name(requirement.name) == PACKAGE:
            for name in requirement.extras:
                todo.extend(extras[name])
            continue
        names.add(canonicalize_name(requirement.name))
    return names


def installed_closure(roots: set[str]) -> set[str]:
    """``roots`` and every distribution they require or may use, as installed here.

    Optional extras count: a package may import what it can use when it happens to be
    installed (httpx imports rich for its command line), and runs without it.
    """
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if canonicalize_name(name) in seen:
            continue
        seen.add(canonicalize_name(name))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        extras = ["", *(dist.metadata.get_all("Provides-Extra") or [])]
        for line in dist.requires or []:
            requirement = Requirement(line)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": e}) for e in extras):
                todo.append(requirement.name)
    return seen


def distributions_of(modules: set[str]) -> dict[str, set[str]]:
    """The installed distributions that provide each top-level module (stdlib: none)."""
    provided = metadata.packages_distributions()
    return {
        module: {canonicalize_name(d) for d in provided.get(module, [])}
        for module in modules
        if module not in sys.stdlib_module_names and not module.startswith("langchain_quota")
    }


def notebook_imports() -> set[str]:
    """The top-level modules the notebook's code cells import."""
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    modules: set[str] = set()
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        for node in ast.walk(ast.parse("".join(cell["source"]))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules


def test_the_notebook_extra_requires_what_the_notebook_imports() -> None:
    required = extra_requirements("notebook")
    imported = distributions_of(notebook_imports())
    assert {"pandas", "matplotlib", "langchain_core", "langchain"} <= set(imported)
    for module, distributions in imported.items():
        assert distributions & required, f"{module} ({distributions}) is not in the extra"
    # Nothing the notebook does not use: every requirement of the extra is needed
    # by an import of the notebook or by the simulator's vendors it builds.
    vendors = {"langchain-groq", "langchain-google-genai", "langchain-cohere"}
    base = extra_requirements("notebook") - set().union(*imported.values()) - vendors
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert base <= {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}


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
    notebook.cells.append(nbformat.v4.new_code_cell(MODULES_PROBE))
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
    # Everything the kernel loaded comes from the notebook extra (or runs the kernel,
    # or loads in any Python of this environment, like a .pth file's hooks).
    loaded = set(json.loads(text.split("MODULES ", 1)[1].splitlines()[0]))
    bare = subprocess.run(
        [sys.executable, "-c", "import sys; print(' '.join(m.split('.')[0] for m in sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    allowed = installed_closure(extra_requirements("notebook") | set(KERNEL_TOOLING))
    for module, distributions in distributions_of(loaded - set(bare)).items():
        if distributions:
            assert distributions & allowed, f"the notebook loaded {module} from {distributions}"
