"""The package's import graph, read from its source (every import statement,
wherever it is: module level, ``TYPE_CHECKING`` blocks, inside functions).

Run as a script (``python import_graph.py PACKAGE_DIR``) it prints the graph as
JSON: the tests read it from a fresh interpreter, because ``ast.parse`` on
CPython 3.11.7 can fail with "AST constructor recursion depth mismatch" while
another thread of the test process parses too (CPython gh-106905).
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

ROOT = "langchain_quota_router"


def _module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(package: Path) -> dict[str, Path]:
    return {_module_name(p, package): p for p in package.rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every project module ``name`` imports, wherever the import statement is."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" for alias in node.names] + [module]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith(ROOT):
                found.add(target)
    return found


def graph(package: Path) -> dict[str, list[str]]:
    """Module -> the project modules it imports (the root's lazy re-exports and a
    package's own submodules left out)."""
    modules = _modules(package)
    known = set(modules)
    found = {name: _imports(name, path, known) for name, path in modules.items()}
    found[ROOT] = set()
    return {
        name: sorted(d for d in deps if not name.startswith(d + "."))
        for name, deps in found.items()
    }


if __name__ == "__main__":
    print(json.dumps(graph(Path(sys.argv[1]))))
