"""The SQLite ledger across processes, crashes and files that are not ledgers."""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from langchain_quota_router import ConfigurationError, LedgerError, Limit
from langchain_quota_router.quota.ledger import (
    Demand,
    Reservation,
    default_ledger_url,
    open_ledger,
)
from langchain_quota_router.quota.ledger.memory import MemoryLedger
from langchain_quota_router.quota.ledger.sqlite import SQLiteLedger

T0 = 1_767_225_600.0
LIMITS = [Limit.parse("200/day")]


def _spend_until_refused(url: str, threads: int, out: multiprocessing.Queue[int]) -> None:
    ledger = open_ledger(url)
    counts: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        n = 0
        for _ in range(10):
            if isinstance(ledger.reserve("shared", LIMITS, Demand(1, 1, 1), T0), Reservation):
                n += 1
        with lock:
            counts.append(n)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put(sum(counts))


@pytest.mark.slow
def test_eight_processes_of_eight_threads_admit_exactly_the_daily_limit(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    SQLiteLedger(url).usage("shared", LIMITS, T0)  # create the file once
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[int] = ctx.Queue()
    procs = [ctx.Process(target=_spend_until_refused, args=(url, 8, out)) for _ in range(8)]
    for p in procs:
        p.start()
    totals = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    # 8 x 8 x 10 = 640 attempts on a limit of 200.
    assert sum(totals) == 200
    assert SQLiteLedger(url).usage("shared", LIMITS, T0)[0].used == 200


def test_a_committed_reservation_survives_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    child = textwrap.dedent(
        f"""
        import sys, time
        from langchain_quota_router import Limit
        from langchain_quota_router.quota.ledger import Demand
        from langchain_quota_router.quota.ledger.sqlite import SQLiteLedger
        ledger = SQLiteLedger({str(db)!r})
        ledger.reserve("p", [Limit.parse("10/day")], Demand(1, 0, 0), {T0})
        print("committed", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "committed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert SQLiteLedger(db).usage("p", [Limit.parse("10/day")], T0)[0].used == 1


def test_a_forked_child_gets_its_own_connection(tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "fork.db")
    ledger.reserve("p", LIMITS, Demand(), T0)
    pid = os.fork()
    if pid == 0:  # child: must not reuse the parent's connection
        code = 0
        try:
            ledger.reserve("p", LIMITS, Demand(), T0)
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    ledger.reserve("p", LIMITS, Demand(), T0)
    assert ledger.usage("p", LIMITS, T0)[0].used == 3


def test_a_file_that_is_not_a_database_is_refused_by_name(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping list: milk, eggs, bread, coffee, more coffee\n" * 50)
    with pytest.raises(LedgerError, match=r"notes\.txt.*not a langchain-quota-router ledger"):
        SQLiteLedger(notes).usage("p", LIMITS, T0)
    assert notes.read_text().startswith("shopping list")


def test_another_programs_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    other = tmp_path / "app.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    with pytest.raises(LedgerError, match=r"app\.db.*another program"):
        SQLiteLedger(other).reserve("p", LIMITS, Demand(), T0)
    with sqlite3.connect(other) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert tables == {"users"}


def test_a_ledger_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    SQLiteLedger(path).usage("p", LIMITS, T0)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version=99")
    with pytest.raises(LedgerError, match="newer"):
        SQLiteLedger(path).usage("p", LIMITS, T0)


def test_urls_name_relative_and_absolute_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert SQLiteLedger("sqlite:///rel/ledger.db").path == Path("rel/ledger.db")
    absolute = open_ledger(f"sqlite:///{tmp_path}/abs.db")
    assert isinstance(absolute, SQLiteLedger)
    assert absolute.path == tmp_path / "abs.db"
    absolute.reserve("p", LIMITS, Demand(), T0)
    assert (tmp_path / "abs.db").exists()
    with pytest.raises(ConfigurationError, match="names no file"):
        SQLiteLedger("sqlite:///")


def test_unknown_scheme_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match=r"'postgres://db/x'.*memory://, sqlite://"):
        open_ledger("postgres://db/x")


def test_default_ledger_is_env_var_else_user_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUOTA_ROUTER_LEDGER", "memory://")
    assert isinstance(open_ledger(None), MemoryLedger)
    monkeypatch.delenv("QUOTA_ROUTER_LEDGER")
    url = default_ledger_url()
    assert url.startswith("sqlite:///")
    assert url.endswith("ledger.db")
    # Not the cache directory, which cache cleaners empty.
    assert str(tmp_path / "xdg-state") in url  # platformdirs honours XDG_STATE_HOME
    assert "xdg-cache" not in url


def test_a_ledger_in_the_old_cache_place_is_moved_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("QUOTA_ROUTER_LEDGER")
    old = tmp_path / "xdg-cache" / "langchain-quota-router" / "ledger.db"
    old.parent.mkdir(parents=True)
    before = SQLiteLedger(old)
    assert isinstance(before.reserve("p", LIMITS, Demand(), T0), Reservation)
    before.close()
    with caplog.at_level(logging.INFO, logger="langchain_quota_router"):
        url = default_ledger_url()
    assert not old.exists()
    assert "moved the ledger" in caplog.text
    moved = open_ledger(url)
    assert moved.usage("p", LIMITS, T0)[0].used == 1
    # Once: a new file at the old place (an old version still running) stays put.
    SQLiteLedger(old).reserve("p", LIMITS, Demand(), T0)
    assert default_ledger_url() == url
    assert old.exists()


# ------------------------------------------------------------------ wiped files


def test_a_deleted_ledger_file_is_an_error_naming_it_never_a_fresh_quota(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    ledger = SQLiteLedger(path)
    ledger.file_check_interval = 0.0  # look at the file in every transaction
    day = [Limit.parse("100/day")]
    assert (
        sum(isinstance(ledger.reserve("p", day, Demand(), T0), Reservation) for _ in range(100))
        == 100
    )
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    for call in (
        lambda: ledger.reserve("p", day, Demand(), T0),
        lambda: ledger.usage("p", day, T0),
        lambda: ledger.holds(T0),
    ):
        with pytest.raises(LedgerError, match=r"ledger file .*ledger\.db.* deleted or replaced"):
            call()
    # Every thread, not only the one that noticed; and it stays an error.
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            ledger.reserve("p", day, Demand(), T0)
        except LedgerError as exc:
            errors.append(exc)

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert len(errors) == 1
    assert not path.exists()  # nothing was counted into a new file either


def test_a_wipe_is_noticed_within_the_check_interval(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = SQLiteLedger(path)
    assert ledger.file_check_interval <= 0.1
    ledger.reserve("p", LIMITS, Demand(), T0)
    path.unlink()
    time.sleep(ledger.file_check_interval + 0.01)
    with pytest.raises(LedgerError, match="deleted or replaced"):
        ledger.reserve("p", LIMITS, Demand(), T0)


def test_a_replaced_ledger_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = SQLiteLedger(path)
    ledger.file_check_interval = 0.0  # look at the file in every transaction
    ledger.reserve("p", LIMITS, Demand(), T0)
    other = tmp_path / "restored.db"
    SQLiteLedger(other).usage("p", LIMITS, T0)
    os.replace(other, path)
    with pytest.raises(LedgerError, match="deleted or replaced"):
        ledger.reserve("p", LIMITS, Demand(), T0)


def test_on_wipe_restart_starts_afresh_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ledger.db"
    ledger = open_ledger(f"sqlite:///{path}?on_wipe=restart")
    ledger.file_check_interval = 0.0  # look at the file in every transaction
    day = [Limit.parse("100/day")]
    for _ in range(30):
        ledger.reserve("p", day, Demand(), T0)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with caplog.at_level(logging.WARNING, logger="langchain_quota_router"):
        assert isinstance(ledger.reserve("p", day, Demand(), T0), Reservation)
        thread = threading.Thread(target=lambda: ledger.reserve("p", day, Demand(), T0))
        thread.start()
        thread.join()
    assert path.exists()
    assert ledger.usage("p", day, T0)[0].used == 2
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "starting afresh" in warnings[0]
    assert str(path) in warnings[0]


def test_on_wipe_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="on_wipe"):
        open_ledger("sqlite:///x.db?on_wipe=ignore")
    with pytest.raises(ConfigurationError, match="unknown option 'mode'"):
        open_ledger("sqlite:///x.db?mode=ro")


def test_a_file_overwritten_with_garbage_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = SQLiteLedger(path)
    ledger.file_check_interval = 0.0  # look at the file in every transaction
    ledger.reserve("p", LIMITS, Demand(), T0)
    ledger.close()
    size = path.stat().st_size
    with open(path, "r+b") as f:  # same file, same inode: only the content is gone
        f.write(os.urandom(size))
    Path(f"{path}-wal").unlink(missing_ok=True)
    Path(f"{path}-shm").unlink(missing_ok=True)
    with pytest.raises(LedgerError, match=r"ledger\.db"):
        ledger.reserve("p", LIMITS, Demand(), T0)


def test_a_file_overwritten_with_garbage_under_an_open_connection_is_an_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    ledger = SQLiteLedger(path)
    ledger.file_check_interval = 0.0  # look at the file in every transaction
    for _ in range(5):
        ledger.reserve("p", LIMITS, Demand(), T0)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.write(b"\xff" * max(size, 8192))
    # With WAL the recent pages are in the -wal file: SQLite alone would count on.
    for call in (
        lambda: ledger.reserve("p", LIMITS, Demand(), T0),
        lambda: ledger.usage("p", LIMITS, T0),
    ):
        with pytest.raises(LedgerError, match=r"ledger file .*ledger\.db.* is damaged"):
            call()


def test_ledger_in_an_unwritable_place_names_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LedgerError, match="cannot open ledger file"):
        SQLiteLedger(blocker / "ledger.db").usage("p", LIMITS, T0)


def _within(seconds: float, call: Callable[[], object]) -> BaseException | object:
    """``call()``'s result or error, or fail the test if it takes over ``seconds``
    (a daemon thread: a hang fails the test instead of hanging the suite)."""
    done: list[BaseException | object] = []

    def run() -> None:
        try:
            done.append(call())
        except BaseException as exc:  # the error is the answer under test
            done.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if not done:
        pytest.fail(f"still waiting after {seconds} s")
    return done[0]


_OTHER_PROCESS = textwrap.dedent(
    """
    import sys
    from langchain_quota_router.quota.ledger.sqlite import SQLiteLedger
    from langchain_quota_router.quota.limits import Limit
    SQLiteLedger(sys.argv[1]).usage("p", [Limit.parse("200/day")], 1_767_225_600.0)
    """
)


def test_a_ledger_file_truncated_under_a_running_ledger_is_an_error_naming_it_never_a_hang(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}?busy_timeout=1"
    holders = [SQLiteLedger(url)]
    for _ in range(5):
        assert isinstance(holders[0].reserve("p", LIMITS, Demand(), T0), Reservation)
    holders[0].fleet_store().totals("route")  # the fleet counters hold a connection too
    os.truncate(path, 0)  # what `: > ledger.db` does: same file, no content
    # A new ledger on it in the same process (the old one still holds its
    # connections and their locks): an error naming the file, not a wait.
    made = _within(10, lambda: SQLiteLedger(url).usage("p", LIMITS, T0))
    assert isinstance(made, LedgerError)
    assert str(path) in str(made)
    assert "truncated" in str(made)
    # The running ledger notices it too, within its check window, and so do its
    # fleet counters.
    time.sleep(holders[0].file_check_interval + 0.01)
    for call in (
        lambda: holders[0].reserve("p", LIMITS, Demand(), T0),
        lambda: holders[0].fleet_store().totals("route"),
    ):
        seen = _within(10, call)
        assert isinstance(seen, LedgerError)
        assert str(path) in str(seen)
    # A second process: the same error at once.
    other = subprocess.run(
        [sys.executable, "-c", _OTHER_PROCESS, url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert other.returncode != 0
    assert "LedgerError" in other.stderr
    assert str(path) in other.stderr
    # Its connections closed, the old ledger never wrote its WAL back into the
    # file that is no longer its ledger: the next start says what happened,
    # never "database disk image is malformed".
    holders[0].close()
    holders.clear()  # the fleet counters' connection is closed as the process ends
    gc.collect()
    assert path.stat().st_size == 0
    again = _within(10, lambda: SQLiteLedger(url).usage("p", LIMITS, T0))
    assert isinstance(again, LedgerError)
    assert "malformed" not in str(again)
    assert "truncated" in str(again)


def test_on_wipe_restart_starts_afresh_on_a_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    first = SQLiteLedger(path)
    for _ in range(5):
        first.reserve("p", LIMITS, Demand(), T0)
    os.truncate(path, 0)
    first.close()
    fresh = SQLiteLedger(f"sqlite:///{path}?on_wipe=restart&busy_timeout=1")
    assert _within(10, lambda: fresh.usage("p", LIMITS, T0)[0].used) == 0


def test_quota_router_status_on_a_truncated_ledger_answers_with_the_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    first = SQLiteLedger(url)
    first.reserve("p", LIMITS, Demand(), T0)
    os.truncate(path, 0)
    status = subprocess.run(
        [sys.executable, "-m", "langchain_quota_router.cli", "status"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "QUOTA_ROUTER_LEDGER": url, "GROQ_API_KEY": "gsk_" + "x" * 40},
    )
    assert status.returncode != 0
    assert str(path) in status.stdout + status.stderr
    assert "truncated" in status.stdout + status.stderr
    first.close()


def test_a_ledger_that_stays_locked_says_which_file_and_which_lock_after_its_busy_timeout(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}?busy_timeout=0.3"
    SQLiteLedger(url).usage("p", LIMITS, T0)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's long write
    try:
        started = time.monotonic()
        made = _within(10, lambda: SQLiteLedger(url).reserve("p", LIMITS, Demand(), T0))
        waited = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert isinstance(made, LedgerError)
    assert str(path) in str(made)
    assert "write lock" in str(made)
    assert waited < 3  # the configured 0.3 s and some slack, not 10 s per retry


def test_busy_timeout_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="busy_timeout"):
        open_ledger("sqlite:///x.db?busy_timeout=soon")
    with pytest.raises(ConfigurationError, match="busy_timeout"):
        open_ledger("sqlite:///x.db?busy_timeout=-1")
