"""The package's shape: a small pinned public API, a quota core that needs no
LangChain, and imports that point one way (no cycle, not even under
``TYPE_CHECKING`` or inside a function)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import langchain_quota_router
import langchain_quota_router.testing

PACKAGE = Path(langchain_quota_router.__file__).parent
ROOT = "langchain_quota_router"


def test_public_api_is_pinned() -> None:
    assert langchain_quota_router.__all__ == [
        "ConfigurationError",
        "DiskEmbeddingCache",
        "DiskResponseCache",
        "EmbeddingCache",
        "EmbeddingRoute",
        "InMemoryEmbeddingCache",
        "Key",
        "KeyLease",
        "KeyRotator",
        "LearnedLimit",
        "Ledger",
        "LedgerError",
        "Lifespan",
        "Limit",
        "LimitUsage",
        "NoRouteError",
        "QuotaAlert",
        "QuotaExhaustedError",
        "QuotaRoutedChatModel",
        "QuotaRoutedEmbeddings",
        "QuotaRouterError",
        "QuotaUsageCallbackHandler",
        "RedisEmbeddingCache",
        "RedisResponseCache",
        "Route",
        "RouteUsage",
        "RouterStats",
        "RoutesAuthenticationError",
        "RoutesContextOverflowError",
        "RoutesInvalidRequestError",
        "RoutesModelNotFoundError",
        "RoutesUnavailableError",
        "Window",
        "get_quota_usage_callback",
    ]
    for name in langchain_quota_router.__all__:
        assert getattr(langchain_quota_router, name) is not None
    assert set(langchain_quota_router.__all__) <= set(dir(langchain_quota_router))
    assert langchain_quota_router.testing.__all__ == ["FakeClock", "FakeVendorChatModel"]


def test_every_documented_error_is_exported() -> None:
    from langchain_quota_router import _errors

    documented = {
        name
        for name, value in vars(_errors).items()
        if isinstance(value, type)
        and issubclass(value, Exception)
        and not name.startswith("_")
        and value.__module__.startswith(ROOT)
    }
    assert documented <= set(langchain_quota_router.__all__)


def test_the_quota_core_imports_without_langchain() -> None:
    code = (
        "import sys\n"
        "import langchain_quota_router.quota.admission, langchain_quota_router.quota.book\n"
        "import langchain_quota_router.quota.status, langchain_quota_router.quota.ledger\n"
        "import langchain_quota_router.quota.fleet, langchain_quota_router.quota.watch\n"
        "avoid = ('langchain_core', 'langchain_quota_router.chat')\n"
        "loaded = [m for m in sys.modules if m.startswith(avoid)]\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def _graph() -> dict[str, set[str]]:
    script = Path(__file__).parent / "support" / "import_graph.py"
    out = subprocess.run(
        [sys.executable, str(script), str(PACKAGE)], capture_output=True, text=True, check=True
    )
    return {name: set(deps) for name, deps in json.loads(out.stdout).items()}


def test_no_module_imports_the_package_root() -> None:
    offenders = sorted(n for n, deps in _graph().items() if ROOT in deps)
    assert offenders == []


def test_imports_have_no_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == []


def test_packages_import_one_way() -> None:
    """Not only modules: the packages (quota, chat, keys, embeddings, proxy, web...)
    form no cycle either, so each can be read knowing only those below it."""
    top = {
        name: {d.split(".")[1] for d in deps if d.count(".") >= 1} - {name.split(".")[1]}
        for name, deps in _graph().items()
        if name.count(".") >= 1
    }
    packages: dict[str, set[str]] = {}
    for name, deps in top.items():
        packages.setdefault(name.split(".")[1], set()).update(deps)
    order: list[str] = []
    remaining = dict(packages)
    while remaining:
        ready = sorted(p for p, deps in remaining.items() if not (deps & set(remaining)))
        assert ready, f"packages in a cycle: {sorted(remaining)}"
        order.extend(ready)
        for p in ready:
            del remaining[p]
    assert order.index("quota") < order.index("chat")


def test_the_core_imports_only_the_core() -> None:
    graph = _graph()
    core = f"{ROOT}.quota"
    leaks = {
        name: sorted(d for d in deps if not d.startswith(core))
        for name, deps in graph.items()
        if name.startswith(core)
    }
    assert {name: deps for name, deps in leaks.items() if deps} == {}
