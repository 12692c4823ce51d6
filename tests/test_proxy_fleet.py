"""One ledger for everyone: ``quota-router proxy --workers 2`` and Python processes
using the router directly, over one SQLite file, are held to one limit together."""

from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from langchain_quota_router import QuotaExhaustedError, QuotaRoutedChatModel
from langchain_quota_router.simulator import SimKey, Simulator

SIM_KEY = "sk-sim-fleet-0123456789abcdef"
CLIENT_KEY = "sk-qr-fleet-client-0123456789abcdef"
THREADS = 4
TRIES = 5  # per thread: (8 proxy threads + 2 x 4 direct threads) x 5 = 80 attempts


def _direct_worker(config: str, go: Any, out: Any) -> None:
    os.environ["SIM_OPENAI_KEY"] = SIM_KEY
    router = QuotaRoutedChatModel.from_config(config)
    go.wait(60)  # everyone starts spending together

    def call() -> bool:
        try:
            router.invoke("hi")
        except QuotaExhaustedError:
            return False
        return True

    out.put(_spend(call, THREADS))


def _spend(call: Any, threads: int) -> int:
    served: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        n = sum(1 for _ in range(TRIES) if call())
        with lock:
            served.append(n)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(served)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_proxy_workers_and_python_processes_share_one_twenty_a_day_pool(tmp_path: Path) -> None:
    with Simulator([SimKey(SIM_KEY, "openai")]) as sim:
        config = tmp_path / "router.toml"
        config.write_text(
            f'ledger = "sqlite:///{tmp_path}/shared.db"\n'
            "cache = false\n\n"
            "[[routes]]\n"
            'name = "sim"\n'
            'model = "openai:gpt-4o-mini"\n'
            'api_key_env = "SIM_OPENAI_KEY"\n'
            f'base_url = "{sim.openai_base_url}"\n'
            'limits = ["20/day"]\n'
        )
        port = _free_port()
        env = {**os.environ, "SIM_OPENAI_KEY": SIM_KEY, "QUOTA_ROUTER_PROXY_KEYS": CLIENT_KEY}
        proxy = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "langchain_quota_router.cli",
                "proxy",
                "--config",
                str(config),
                "--port",
                str(port),
                "--workers",
                "2",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ctx = multiprocessing.get_context("spawn")
        out, go = ctx.Queue(), ctx.Event()
        direct = [ctx.Process(target=_direct_worker, args=(str(config), go, out)) for _ in range(2)]
        for p in direct:
            p.start()
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            assert len(psutil.Process(proxy.pid).children()) >= 2  # the two workers
            headers = {"authorization": f"Bearer {CLIENT_KEY}"}
            body = {"model": "quota-router", "messages": [{"role": "user", "content": "hi"}]}

            def through_proxy() -> bool:
                reply = httpx.post(
                    f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30
                )
                assert reply.status_code in (200, 429), reply.text
                return reply.status_code == 200

            # One call through the proxy before the Python processes start: they
            # would otherwise take all 20 before the first HTTP call lands.
            assert through_proxy()
            go.set()
            via_proxy = 1 + _spend(through_proxy, 2 * THREADS)
            via_python = sum(out.get(timeout=120) for _ in direct)
            for p in direct:
                p.join(timeout=60)
        finally:
            go.set()
            proxy.terminate()
            output, _ = proxy.communicate(timeout=30)
        assert via_proxy + via_python == 20
        assert via_proxy > 0
        assert sim.stats(SIM_KEY).served == 20
        assert proxy.returncode == 0, output
        assert CLIENT_KEY not in output
