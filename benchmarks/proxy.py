"""What ``quota-router proxy`` costs: streamed calls through it against the fake called directly.

    python benchmarks/proxy.py [--quick] [--seconds S] [--concurrency 1,50,200]
                               [--rss-requests N]

The proxy runs in a process of its own (uvicorn, one worker) over a router with one
route: the project's fake vendor answering after 50 ms (``LatencyFake``), a memory
ledger, limits high enough never to refuse, no cache. A load generator (asyncio,
httpx, this process) keeps C streaming requests in flight (a closed loop) for S
seconds and reads each answer to ``[DONE]``. The baseline is the same fake called
directly, ``fake.astream(...)``, by C tasks in this process.

Per concurrency it prints requests/s, p50 and p99 of one call's time to its last
byte, and the added p50/p99 (proxy minus direct). Then it sends ``--rss-requests``
more streamed requests (at 50 in flight) and prints the proxy's RSS after a
warm-up and its peak (sampled every 0.2 s): growth after warm-up is what a leak
looks like.

The load generator shares the machine (and at 200 clients a good part of a core,
through httpx) with the proxy: added latency at 200 includes the client's own
queueing. LiteLLM's proxy is not compared: it is not installed here, and
installing it (with its proxy extra) pulls dozens of packages from the network;
run it yourself with the same fake behind an OpenAI-compatible endpoint to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import psutil
from _common import MP, LatencyFake, percentile
from langchain_core.messages import HumanMessage

from langchain_quota_router import QuotaRoutedChatModel, Route

ANSWER = "a short answer of about twelve words, streamed two words at a time"


def _fake() -> LatencyFake:
    return LatencyFake(script=[ANSWER], chunk_words=2, latency=0.05)


def _serve(port_out: Any) -> None:
    from langchain_quota_router.proxy import make_server

    router = QuotaRoutedChatModel(
        routes=[Route(_fake(), name="fake", limits=["1000000000/day"])],
        ledger="memory://",
        cache=False,
        fleet_counters=False,
    )
    server = make_server(router, "127.0.0.1", 0)
    port_out.put(server.server_address[1])
    server.serve_forever()


async def _closed_loop(one: Any, concurrency: int, seconds: float) -> list[float]:
    """Run ``one()`` back to back in ``concurrency`` tasks for ``seconds``; the
    duration of each call."""
    times: list[float] = []
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < stop:
            start = time.perf_counter()
            await one()
            times.append(time.perf_counter() - start)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return times


async def _measure(url: str, concurrency: int, seconds: float) -> dict[str, dict[str, float]]:
    fake = _fake()
    messages = [HumanMessage("hi")]

    async def direct() -> None:
        async for _ in fake.astream(messages):
            pass

    body = json.dumps(
        {"model": "quota-router", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    )
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:

        async def proxied() -> None:
            async with http.stream(
                "POST",
                "/chat/completions",
                content=body,
                headers={"content-type": "application/json"},
            ) as reply:
                tail = b""
                async for piece in reply.aiter_bytes():
                    tail = (tail + piece)[-32:]
                if reply.status_code != 200 or not tail.endswith(b"data: [DONE]\n\n"):
                    msg = f"bad answer: {reply.status_code} {tail!r}"
                    raise RuntimeError(msg)

        await _closed_loop(proxied, concurrency, min(1.0, seconds / 3))  # warm-up
        out = {}
        for name, one in (("direct", direct), ("proxy", proxied)):
            times = await _closed_loop(one, concurrency, seconds)
            out[name] = {
                "rps": len(times) / seconds,
                "p50": percentile(times, 0.5),
                "p99": percentile(times, 0.99),
                "n": len(times),
            }
    return out


async def _soak(url: str, requests: int, proc: psutil.Process) -> tuple[float, float, float]:
    body = {
        "model": "quota-router",
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    peak = 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.memory_info().rss / 2**20)
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        left = requests
        failed = 0
        warm = 0.0

        async def worker() -> None:
            nonlocal left, failed
            while left > 0:
                left -= 1
                try:
                    async with http.stream("POST", "/chat/completions", json=body) as reply:
                        async for _ in reply.aiter_bytes():
                            pass
                except httpx.TransportError:
                    failed += 1

        warmup = min(2000, requests // 10)
        left = warmup
        await asyncio.gather(*(worker() for _ in range(50)))
        warm = proc.memory_info().rss / 2**20
        sampler.start()
        left = requests
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(50)))
        elapsed = time.perf_counter() - start
        done.set()
        sampler.join()
    after = proc.memory_info().rss / 2**20
    print(
        f"  {requests} streamed requests in {elapsed:.1f} s ({requests / elapsed:.0f}/s), "
        f"{failed} dropped connections"
    )
    return warm, max(peak, after), after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 s per run, 5,000 for RSS")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", default="1,50,200")
    parser.add_argument("--rss-requests", type=int, default=100_000)
    args = parser.parse_args()
    seconds = 1.0 if args.quick else args.seconds
    rss_requests = 5_000 if args.quick else args.rss_requests

    ports = MP.Queue()
    server = MP.Process(target=_serve, args=(ports,), daemon=True)
    server.start()
    port = ports.get(timeout=60)
    url = f"http://127.0.0.1:{port}/v1"
    proc = psutil.Process(server.pid)
    print(f"proxy pid {server.pid} on {url}; fake vendor latency 50 ms; {os.cpu_count()} CPUs")
    print(
        f"{'clients':>7} {'direct/s':>9} {'proxy/s':>8} {'direct p50':>11} {'proxy p50':>10} "
        f"{'added p50':>10} {'direct p99':>11} {'proxy p99':>10} {'added p99':>10}"
    )
    try:
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            found = asyncio.run(_measure(url, concurrency, seconds))
            d, p = found["direct"], found["proxy"]
            print(
                f"{concurrency:>7} {d['rps']:>9.0f} {p['rps']:>8.0f} "
                f"{d['p50'] * 1000:>9.1f}ms {p['p50'] * 1000:>8.1f}ms "
                f"{(p['p50'] - d['p50']) * 1000:>8.1f}ms "
                f"{d['p99'] * 1000:>9.1f}ms {p['p99'] * 1000:>8.1f}ms "
                f"{(p['p99'] - d['p99']) * 1000:>8.1f}ms"
            )
        print(f"RSS of the proxy over {rss_requests} more streamed requests (50 in flight):")
        warm, peak, after = asyncio.run(_soak(url, rss_requests, proc))
        print(f"  after warm-up {warm:.1f} MiB, peak {peak:.1f} MiB, at the end {after:.1f} MiB")
    finally:
        server.terminate()
        server.join(10)


if __name__ == "__main__":
    main()
