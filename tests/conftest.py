"""Fixtures shared by the whole suite: an isolated environment, a fake clock, ledgers."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis_fixture import redis_server, redis_url  # noqa: F401  (fixtures for every test)
from support.backends import BACKENDS

from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.quota.ledger import Ledger
from langchain_quota_router.quota.ledger.memory import MemoryLedger
from langchain_quota_router.quota.ledger.sqlite import SQLiteLedger

# Hypothesis imports these in the middle of a test, where pytest rewrites them (it
# parses their source). CPython 3.11.7 can fail such a parse with "AST constructor
# recursion depth mismatch" when a thread of an earlier test parses at the same time
# (gh-106905). Imported here, before any test starts a thread.
for _module in (
    "hypothesis.internal.conjecture.optimiser",
    "hypothesis.internal.conjecture.shrinker",
    "hypothesis.internal.conjecture.pareto",
    "hypothesis.internal.scrutineer",
    "hypothesis.internal.constants_ast",
    "hypothesis.internal.escalation",
):
    with contextlib.suppress(ImportError):
        importlib.import_module(_module)


@pytest.fixture(params=["invoke", "ainvoke", "stream", "astream"])
def how(request: pytest.FixtureRequest) -> str:
    """Each call path in turn (use with ``call_paths.ask``): a routing behaviour holds
    on all four or it does not hold."""
    return str(request.param)


@pytest.fixture(autouse=True)
def _fleet_counts_written_before_the_next_test() -> Iterator[None]:
    """A router's fleet counts are written by a background thread: write them at
    the end of the test that made them, never into the next test's ledger."""
    yield
    from langchain_quota_router.quota.fleet import flush_all

    flush_all()


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing a test does may touch the user's real cache directory or keys."""
    monkeypatch.setenv("QUOTA_ROUTER_LEDGER", f"sqlite:///{tmp_path}/default-ledger.db")
    monkeypatch.setenv("QUOTA_ROUTER_CACHE_DIR", str(tmp_path / "default-cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    for name in ("OPENAI_API_KEY", "GROQ_API_KEY", "GOOGLE_API_KEY", "COHERE_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def clock() -> FakeClock:
    """A clock that starts at 2026-01-01T00:00:00Z and moves only when told."""
    return FakeClock()


@pytest.fixture
def make_ledger(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[str], Ledger]]:
    """Build a fresh ledger of a named backend (``memory``, ``sqlite``, ``redis``,
    ``redis-failopen``, ``sqlite-sliced``, ``redis-sliced``)."""
    made: list[Ledger] = []

    def make(backend: str) -> Ledger:
        ledger: Ledger
        if backend == "memory":
            ledger = MemoryLedger()
        elif backend == "sqlite":
            ledger = SQLiteLedger(f"sqlite:///{tmp_path}/ledger-{len(made)}.db")
        elif backend == "redis":
            from langchain_quota_router.quota.ledger import open_ledger

            ledger = open_ledger(request.getfixturevalue("redis_url"))
        elif backend in ("sqlite-sliced", "redis-sliced"):
            from langchain_quota_router.quota.ledger import open_ledger

            inner = (
                f"sqlite:///{tmp_path}/ledger-{len(made)}.db"
                if backend == "sqlite-sliced"
                else request.getfixturevalue("redis_url")
            )
            ledger = open_ledger(inner + "?slices=on")
        elif backend == "redis-failopen":
            from langchain_quota_router.quota.ledger import open_ledger

            ledger = open_ledger(request.getfixturevalue("redis_url") + "?on_error=local")
        else:  # pragma: no cover
            raise ValueError(backend)
        made.append(ledger)
        return ledger

    yield make
    for ledger in made:
        ledger.close()


@pytest.fixture(params=BACKENDS)
def ledger(request: pytest.FixtureRequest, make_ledger: Callable[[str], Ledger]) -> Ledger:
    """Each ledger backend and wrapper in turn: every contract test runs against all."""
    return make_ledger(request.param)
