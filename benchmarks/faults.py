"""The ledger's promise under faults: kill -9 mid-call, a Redis restart, a Redis outage.

    .venv/bin/python benchmarks/faults.py [--processes 4] [--threads 4]

Prints, per backend (SQLite, Redis):

- **kill -9**: processes of threads reserve, "call the vendor" (a sleep) and settle
  on a pool of ``150/day``; half the processes are killed with ``kill -9`` mid-call,
  then the others spend the pool until it refuses. Admitted vs the limit, and the
  quota each killed call still holds before and after its lease runs out (by design
  only its prompt stays: the vendor may have seen the request).
- **Redis restart**: threads call a router (fake vendor) on a pool of ``300/day``
  while ``redis-server`` (append-only file, ``appendfsync everysec``) is killed
  with ``kill -9`` and restarted. Admitted vs the limit, and answers lost: calls the
  vendor answered whose caller got an error instead (target 0).
- **Bad days** (issue 17), one row each with what was admitted, what the vendor
  received and what the ledger says at the end (target: admitted <= limit, ledger
  = vendor): processes started together then a Redis outage (``on_error=local``);
  five short-lived workers during an outage on a full pool; staggered recovery; a
  process ending mid-outage whose journal the next one hands back; a clock stepped
  back 2 s, 30 s and 1 h on memory, SQLite and Redis; two Redis ledgers whose clocks
  are 5 s apart.
- **Truncated SQLite file**: ``: > ledger.db`` under a running ledger; how long a
  new ledger (same process, second process) and ``quota-router status`` take to
  answer, and the file's size once the old ledger closed (0: no WAL written back).

Redis scenarios need ``redis-server`` on PATH (skipped otherwise).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from langchain_quota_router import QuotaRoutedChatModel, Route
from langchain_quota_router.quota.ledger import Demand, Reservation, open_ledger
from langchain_quota_router.quota.ledger.redis import RedisLedger
from langchain_quota_router.quota.limits import Limit
from langchain_quota_router.testing import FakeVendorChatModel

# The Redis launcher the tests use: one way to start a throwaway server.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from redis_fixture import RedisServer, start_redis

T0 = 1_800_000_000.0  # 2027-01-15 08:00 UTC: far from any day boundary
LEASE = 60.0
PROMPT, ESTIMATE = 40, 400
KILL_LIMITS = [Limit.parse("150/day"), Limit.parse("10000000 tokens/day")]
_CTX: Any = multiprocessing.get_context(
    "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
)


# ------------------------------------------------------------------- kill -9


def _caller_process(url: str, log: str, threads: int, vendor_seconds: float) -> None:
    ledger = open_ledger(url)
    ledger.reservation_lease = LEASE
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def caller(n: int) -> None:
        for i in range(100_000):
            res = ledger.reserve("shared", KILL_LIMITS, Demand(1, PROMPT, ESTIMATE), T0)
            if not isinstance(res, Reservation):
                return
            call = f"{os.getpid()}-{n}-{i}"
            os.write(fd, f"in {call}\n".encode())  # one write: all or nothing
            time.sleep(vendor_seconds * (1 + n / threads))  # threads out of step
            output = (n * 7 + i) % 50
            os.write(fd, f"settling {call} {PROMPT + output}\n".encode())
            ledger.settle(res, Demand(1, PROMPT, output), T0 + 1)

    workers = [threading.Thread(target=caller, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def kill_9(url: str, folder: Path, processes: int, threads: int) -> dict[str, Any]:
    """Kill half the processes mid-run; what the pool holds before and after leases."""
    killed = max(1, processes // 2)
    logs = [folder / f"calls-{i}.log" for i in range(processes)]
    # The processes to kill call a slow vendor (50 ms), so they die mid-call; the
    # others (2 ms) start once they are dead and spend the pool until it refuses.
    procs = [
        _CTX.Process(
            target=_caller_process, args=(url, str(p), threads, 0.05 if i < killed else 0.002)
        )
        for i, p in enumerate(logs)
    ]
    for p in procs[:killed]:
        p.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if all(p.exists() and p.read_text().count("settling") >= 3 for p in logs[:killed]):
            break
        time.sleep(0.005)
    for p in procs[:killed]:
        os.kill(p.pid, signal.SIGKILL)
    for p in procs[killed:]:
        p.start()
    for p in procs:
        p.join(timeout=60)
    started, finished = set(), {}
    for log in logs:
        for line in log.read_text().splitlines():
            kind, call, *rest = line.split()
            if kind == "in":
                started.add(call)
            else:
                finished[call] = int(rest[0])
    reported = sum(finished.values())
    observer = open_ledger(url)
    observer.reservation_lease = LEASE
    _, before = (u.used for u in observer.usage("shared", KILL_LIMITS, T0 + 2))
    requests, after = (u.used for u in observer.usage("shared", KILL_LIMITS, T0 + LEASE + 1))
    observer.close()
    # Killed calls: admitted, never settled (some died before they could log "in").
    # A call killed while settling counts as settled: at most one per killed thread.
    killed_calls = requests - len(finished)
    per_call = max(killed_calls, 1)
    return {
        "admitted": requests,
        "limit": KILL_LIMITS[0].amount,
        "killed calls": killed_calls,
        "held per killed call before lease expiry": (before - reported) / per_call,
        "held per killed call after lease expiry": (after - reported) / per_call,
    }


# ------------------------------------------------------------ Redis restart


def redis_restart(folder: Path, threads: int) -> dict[str, Any]:
    """Kill -9 and restart redis-server under a busy router; answers lost, admitted."""
    server = start_redis(folder / "restart", "--appendfsync", "everysec")
    vendor = FakeVendorChatModel(model="m", script=["An answer."])
    router = QuotaRoutedChatModel(
        routes=[Route(vendor, name="a", limits=["300/day"])],
        ledger=server.url,
        cache=False,
    )
    answers = errors = 0
    lock = threading.Lock()
    stop = threading.Event()

    def caller() -> None:
        nonlocal answers, errors
        while not stop.is_set():
            try:
                router.invoke("Hello")
            except Exception:  # any error counts; running out of quota ends the run
                with lock:
                    errors += 1
                time.sleep(0.01)
                continue
            with lock:
                answers += 1

    workers = [threading.Thread(target=caller) for _ in range(threads)]
    try:
        for w in workers:
            w.start()
        while answers < 120:
            time.sleep(0.001)
        time.sleep(1.2)  # let appendfsync everysec write the first part
        server.kill()
        time.sleep(0.3)
        server.start()
        time.sleep(2.0)
        stop.set()
        for w in workers:
            w.join(timeout=30)
        counted = open_ledger(server.url).usage("a", [Limit.parse("300/day")], time.time())
        return {
            "admitted (vendor calls)": vendor.calls,
            "limit": 300,
            "counted by Redis after restart": counted[0].used,
            "answers lost": vendor.calls - answers,
        }
    finally:
        stop.set()
        server.kill()


# ------------------------------------------------------------------- outage


def _vendor_call(ledger: Any, limits: list[Limit], now: float, sent: list[int]) -> int:
    """Reserve, "call the vendor" (count it), settle: 1 if the call was sent."""
    made = ledger.reserve("p", limits, Demand(1, 10, 0), now)
    if not isinstance(made, Reservation):
        return 0
    sent[0] += 1
    ledger.settle(made, Demand(1, 10, 0), now)
    return 1


def _fleet_process(
    url: str, limit: str, before: int, delay: float, events: dict[str, Any], out: Any
) -> None:
    ledger = open_ledger(url)
    limits = [Limit.parse(limit)]
    sent = [0]
    events["go"].wait()
    admitted = sum(_vendor_call(ledger, limits, T0, sent) for _ in range(before))
    out.put(None)
    events["down"].wait()
    during = 0
    while events["down"].is_set() and not events["up"].is_set():
        got = _vendor_call(ledger, limits, T0, sent)
        during += got
        time.sleep(0.0 if got else 0.01)
    time.sleep(delay)  # staggered recovery: some come back later than others
    admitted += during + sum(_vendor_call(ledger, limits, T0, sent) for _ in range(400))
    ledger.close()
    out.put((admitted, sent[0], during))


def fleet_outage(
    folder: Path, limit: str, processes: int, before: int, delays: list[float], seconds: float
) -> dict[str, Any]:
    """Processes started together call a pool; Redis stops for ``seconds``; they
    come back (each ``delays[i]`` later) and spend what is left."""
    server = start_redis(folder / "redis")
    url = f"{server.url}?on_error=local&retry_interval=0.2&journal={folder / 'journal'}"
    events = {name: _CTX.Event() for name in ("go", "down", "up")}
    out = _CTX.Queue()
    procs = [
        _CTX.Process(target=_fleet_process, args=(url, limit, before, delays[i], events, out))
        for i in range(processes)
    ]
    try:
        for p in procs:
            p.start()
        events["go"].set()
        for _ in procs:
            out.get(timeout=60)
        server.stop()
        events["down"].set()
        time.sleep(seconds)
        server.start()
        events["up"].set()
        results = [out.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        ledger = RedisLedger(server.url).usage("p", [Limit.parse(limit)], T0)[0].used
        return {
            "limit": Limit.parse(limit).amount,
            "admitted": sum(r[0] for r in results),
            "vendor": sum(r[1] for r in results),
            "ledger": ledger,
            "note": f"{sum(r[2] for r in results)} admitted during the outage",
        }
    finally:
        server.kill()


def _short_lived(url: str, out: Any) -> None:
    ledger = open_ledger(url)
    sent = [0]
    admitted = sum(_vendor_call(ledger, [Limit.parse("50/day")], T0, sent) for _ in range(10))
    ledger.close()
    out.put((admitted, sent[0]))


def workers_during_outage(folder: Path) -> dict[str, Any]:
    """A 50/day pool filled to 50; Redis stops; five workers run one after another."""
    server = start_redis(folder / "redis")
    url = f"{server.url}?on_error=local&retry_interval=0.2&journal={folder / 'journal'}"
    try:
        filler = open_ledger(url)
        sent = [0]
        admitted = sum(_vendor_call(filler, [Limit.parse("50/day")], T0, sent) for _ in range(60))
        filler.close()
        server.stop()
        out = _CTX.Queue()
        during = 0
        for _ in range(5):
            worker = _CTX.Process(target=_short_lived, args=(url, out))
            worker.start()
            got, calls = out.get(timeout=60)
            worker.join(timeout=30)
            admitted += got
            sent[0] += calls
            during += got
        server.start()
        open_ledger(url).usage("p", [Limit.parse("50/day")], T0)  # the next process
        ledger = RedisLedger(server.url).usage("p", [Limit.parse("50/day")], T0)[0].used
        return {
            "limit": 50,
            "admitted": admitted,
            "vendor": sent[0],
            "ledger": ledger,
            "note": f"{during} admitted by the 5 workers",
        }
    finally:
        server.kill()


def _ends_mid_outage(url: str, events: dict[str, Any], out: Any) -> None:
    ledger = open_ledger(url)
    sent = [0]
    day = [Limit.parse("100/day")]
    admitted = sum(_vendor_call(ledger, day, T0, sent) for _ in range(20))
    out.put(None)
    events["down"].wait()
    admitted += sum(_vendor_call(ledger, day, T0, sent) for _ in range(5))
    ledger.close()  # Redis away: its journal keeps what it admitted
    out.put((admitted, sent[0]))


def journal_hand_back(folder: Path) -> dict[str, Any]:
    """A process ends during the outage; the next one hands its journal back."""
    server = start_redis(folder / "redis")
    url = f"{server.url}?on_error=local&retry_interval=0.2&journal={folder / 'journal'}"
    try:
        events = {"down": _CTX.Event()}
        out = _CTX.Queue()
        gone = _CTX.Process(target=_ends_mid_outage, args=(url, events, out))
        gone.start()
        out.get(timeout=60)
        server.stop()
        events["down"].set()
        admitted, sent = out.get(timeout=60)
        gone.join(timeout=30)
        server.start()
        day = [Limit.parse("100/day")]
        held = RedisLedger(server.url).usage("p", day, T0)[0].used
        open_ledger(url).usage("p", day, T0)  # the next process starts
        ledger = RedisLedger(server.url).usage("p", day, T0)[0].used
        return {
            "limit": 100,
            "admitted": admitted,
            "vendor": sent,
            "ledger": ledger,
            "note": f"{held} counted before the journal was read (slice held)",
        }
    finally:
        server.kill()


# --------------------------------------------------------------------- clocks


def clock_step_back(url: str, step: float) -> dict[str, Any]:
    """20 calls on 30/minute, the clock set back ``step`` s, then 30 more tried."""
    ledger = open_ledger(url)
    minute = [Limit.parse("30/minute")]
    now, sent = T0, [0]
    admitted = sum(_vendor_call(ledger, minute, now, sent) for _ in range(20))
    admitted += sum(_vendor_call(ledger, minute, now - step, sent) for _ in range(30))
    used = ledger.usage("p", minute, now - step)[0].used
    ledger.close()
    return {"limit": 30, "admitted": admitted, "vendor": sent[0], "ledger": used, "note": ""}


def skewed_clocks(redis_url: str) -> dict[str, Any]:
    """Two ledgers over one Redis whose clocks are 5 s apart, a call each a second."""
    clocks = [T0, T0 - 5]
    ledgers = [RedisLedger(redis_url, clock=lambda i=i: clocks[i]) for i in range(2)]
    minute = [Limit.parse("30/minute")]
    sent = [0]
    admitted = 0
    for _ in range(60):
        for i, ledger in enumerate(ledgers):
            admitted += _vendor_call(ledger, minute, clocks[i], sent)
        clocks[0] += 1
        clocks[1] += 1
    used = ledgers[0].usage("p", minute, clocks[0])[0].used
    return {"limit": 30, "admitted": admitted, "vendor": sent[0], "ledger": used, "note": ""}


# ---------------------------------------------------------- truncated SQLite

_OPEN_AND_READ = (
    "import sys\n"
    "from langchain_quota_router.quota.ledger.sqlite import SQLiteLedger\n"
    "from langchain_quota_router.quota.limits import Limit\n"
    "SQLiteLedger(sys.argv[1]).usage('p', [Limit.parse('100/day')], 1.8e9)\n"
)


def truncated_sqlite(folder: Path) -> list[tuple[str, str]]:
    """``: > ledger.db`` under a running ledger: how long until each reader knows."""
    from langchain_quota_router.quota.ledger.sqlite import SQLiteLedger

    path = folder / "ledger.db"
    url = f"sqlite:///{path}"
    first = SQLiteLedger(url)
    for _ in range(5):
        first.reserve("p", [Limit.parse("100/day")], Demand(), T0)
    first.fleet_store().totals("route")
    os.truncate(path, 0)
    rows = []
    started = time.monotonic()
    try:
        SQLiteLedger(url).usage("p", [Limit.parse("100/day")], T0)
        answer = "opened (no error)"
    except Exception as exc:  # the answer under test
        answer = type(exc).__name__
    rows.append(("new ledger, same process", f"{time.monotonic() - started:.2f} s, {answer}"))
    for name, argv in (
        ("new ledger, second process", [sys.executable, "-c", _OPEN_AND_READ, url]),
        ("quota-router status", [sys.executable, "-m", "langchain_quota_router.cli", "status"]),
    ):
        started = time.monotonic()
        env = {**os.environ, "QUOTA_ROUTER_LEDGER": url, "GROQ_API_KEY": "gsk_" + "x" * 40}
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
            answer = f"exit {done.returncode}"
        except subprocess.TimeoutExpired:
            answer = "still waiting after 60 s"
        rows.append((name, f"{time.monotonic() - started:.2f} s, {answer}"))
    first.close()
    del first
    import gc

    gc.collect()
    rows.append(("file size after the old ledger closed", f"{path.stat().st_size} bytes"))
    return rows


def _table(rows: list[tuple[str, dict[str, Any]]]) -> None:
    head = f"{'scenario':<52} {'limit':>5} {'admitted':>8} {'vendor':>6} {'ledger':>6}  ok"
    print(head)
    print("-" * len(head))
    for name, r in rows:
        ok = r["admitted"] <= r["limit"] and r["ledger"] == r["vendor"]
        print(
            f"{name:<52} {r['limit']:>5} {r['admitted']:>8} {r['vendor']:>6} {r['ledger']:>6}"
            f"  {'yes' if ok else 'NO'}  {r['note']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    options = parser.parse_args()
    # Alerts and fail-open warnings are expected here; the figures say the rest.
    logging.getLogger("langchain_quota_router").setLevel(logging.ERROR)
    have_redis = shutil.which("redis-server") is not None
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        backends: dict[str, str] = {"sqlite": f"sqlite:///{folder}/ledger.db"}
        server: RedisServer | None = None
        if have_redis:
            server = start_redis(folder / "kill9")
            backends["redis"] = server.url
        try:
            for backend, url in backends.items():
                work = folder / backend
                work.mkdir()
                result = kill_9(url, work, options.processes, options.threads)
                shape = f"{options.processes} processes x {options.threads} threads"
                print(f"## kill -9 mid-call, {backend} ({shape}, half killed)")
                print(f"   per call: prompt {PROMPT} tokens, output estimate {ESTIMATE}")
                for key, value in result.items():
                    print(
                        f"   {key}: {value:.1f}"
                        if isinstance(value, float)
                        else f"   {key}: {value}"
                    )
        finally:
            if server is not None:
                server.kill()
        if not have_redis:
            print("redis-server is not installed: skipping the Redis scenarios", file=sys.stderr)
            return
        print(f"## Redis kill -9 and restart under a router ({options.threads} threads)")
        for key, value in redis_restart(folder, options.threads).items():
            print(f"   {key}: {value}")
        rows: list[tuple[str, dict[str, Any]]] = []
        for name, run in (
            (
                f"{options.processes} processes started together, outage",
                lambda f: fleet_outage(f, "100/day", options.processes, 15, [0.0] * 9, 2.0),
            ),
            ("5 short-lived workers during an outage, pool full", workers_during_outage),
            (
                "staggered recovery (0, 0.3, 0.6, 0.9 s)",
                lambda f: fleet_outage(f, "200/day", 4, 25, [0.0, 0.3, 0.6, 0.9], 2.0),
            ),
            ("a process ends mid-outage, next one reads journal", journal_hand_back),
        ):
            work = folder / name.split()[0].replace("(", "") / str(len(rows))
            rows.append((name, run(work)))
        server = start_redis(folder / "clocks")
        try:
            backends = {
                "memory": "memory://",
                "sqlite": f"sqlite:///{folder}/clock.db",
                "redis": server.url,
            }
            for backend, url in backends.items():
                for step in (2, 30, 3600):
                    if backend == "sqlite":
                        url = f"sqlite:///{folder}/clock-{step}.db"
                    elif backend == "redis":
                        server.flushall()
                    rows.append(
                        (f"{backend}: clock stepped back {step} s", clock_step_back(url, step))
                    )
            server.flushall()
            rows.append(("redis: two ledgers, clocks 5 s apart", skewed_clocks(server.url)))
        finally:
            server.kill()
        print("## Bad days (issue 17): admitted <= limit and ledger = vendor in every row")
        _table(rows)
        print("## A SQLite ledger truncated (: > ledger.db) under a running ledger")
        for name, value in truncated_sqlite(folder / "truncated"):
            print(f"   {name}: {value}")


if __name__ == "__main__":
    main()
