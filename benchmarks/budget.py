"""Dollar budgets and the cost strategy, measured.

1. **Overspend under concurrency.** A $0.005/day budget, calls estimated at $0.003
   (100 output tokens at $30/M) and billed $0.003 by the vendor (its reported cost):
   1, 20 and 50 concurrent ``ainvoke`` callers against one SQLite ledger. Reported:
   calls admitted, dollars spent, spent / budget. Then the same with a $0.05 budget
   (room for 16 calls). Target: never above the budget.
2. **Cost-strategy picks.** 300 calls of a mixed workload (prompts of ~10 to ~8,000
   tokens, ``max_tokens`` from 10 to 2,000) over three routes whose price ratios
   cross; the fake vendor answers with its whole output budget, so each call's cost is
   known on every route. Reported: dollars spent by ``strategy="cost"``, by the
   cheapest route for each call, and by a request-blind ranking (input + output price,
   what LiteLLM's cost-based routing does), and the extra dollars of each.

Run: ``PYTHONPATH=. python benchmarks/budget.py`` from the project (about 3 seconds).
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from langchain_quota_router import QuotaExhaustedError, QuotaRoutedChatModel, Route
from langchain_quota_router.quota.pricing import Prices
from langchain_quota_router.testing import FakeVendorChatModel


class _Billed(FakeVendorChatModel):
    """A vendor that takes ``delay`` seconds, answers with its whole output budget
    and (when ``reported_cost`` is set) reports its cost like OpenRouter."""

    delay: float = 0.01

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        await asyncio.sleep(self.delay)
        result = self._generate(messages, stop, None, **kw)
        message = result.generations[0].message
        assert isinstance(message, AIMessage)
        usage = message.usage_metadata
        assert usage is not None
        out = int(kw.get("max_tokens") or usage["output_tokens"])
        usage["output_tokens"] = out
        usage["total_tokens"] = usage["input_tokens"] + out
        return ChatResult(generations=[ChatGeneration(message=message)])


# ------------------------------------------------------------------ 1. overspend


async def _overspend(budget: str, callers: int, folder: Path) -> tuple[int, float]:
    ledger = f"sqlite:///{folder}/budget-{budget[1:].replace('/', '-')}-{callers}.db"
    llm = QuotaRoutedChatModel(
        routes=[
            Route(
                _Billed(reported_cost=0.003),
                name="paid",
                prices=(0.0, 30.0),
                limits=[budget],
            )
        ],
        ledger=ledger,
        cache=False,
        max_tokens=100,
        fleet_counters=False,
    )

    async def caller(i: int) -> list[float]:
        # Each caller asks until refused (at most 20 times): even one caller alone
        # meets the budget's end.
        spent = []
        for n in range(20):
            try:
                answer = await llm.ainvoke(f"question {i}.{n}")
            except QuotaExhaustedError:
                break
            spent.append(float(answer.response_metadata["cost"]))
        return spent

    found = [c for costs in await asyncio.gather(*map(caller, range(callers))) for c in costs]
    return len(found), sum(found)


def overspend() -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for budget, dollars in (("$0.005/day", 0.005), ("$0.05/day", 0.05)):
            for callers in (1, 20, 50):
                calls, spent = asyncio.run(_overspend(budget, callers, Path(tmp)))
                rows.append(
                    {
                        "budget": budget,
                        "callers": callers,
                        "calls": calls,
                        "spent": round(spent, 6),
                        "ratio": round(spent / dollars, 3),
                    }
                )
    return rows


# ------------------------------------------------------------ 2. cost strategy

PRICES = {
    # Cheap input, dear output; dear input, cheap output; middling both.
    "reader": Prices(0.10, 10.0),
    "writer": Prices(5.00, 0.20),
    "middle": Prices(1.00, 2.00),
}


def _workload(n: int, seed: int = 20) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    calls = []
    for i in range(n):
        words = rng.choice([5, 50, 500, 2000, 8000])
        max_tokens = rng.choice([10, 50, 200, 1000, 2000])
        calls.append((f"call {i}: " + "word " * words, max_tokens))
    return calls


async def _picks(strategy: str, workload: list[tuple[str, int]]) -> tuple[float, float]:
    routes = [
        Route(_Billed(delay=0), name=name, prices=(p.input, p.output), priority=i)
        for i, (name, p) in enumerate(PRICES.items())
    ]
    llm = QuotaRoutedChatModel(
        routes=routes, ledger="memory://", cache=False, strategy=strategy, fleet_counters=False
    )
    spent = cheapest = 0.0
    for prompt, max_tokens in workload:
        answer = await llm.ainvoke(prompt, max_tokens=max_tokens)
        usage = answer.usage_metadata
        assert usage is not None
        spent += float(answer.response_metadata["cost"])
        cheapest += min(
            p.dollars(usage["input_tokens"], usage["output_tokens"]) for p in PRICES.values()
        )
    return spent, cheapest


async def _blind(workload: list[tuple[str, int]]) -> float:
    """What a request-blind ranking spends: always the route with the lowest
    input + output price, whatever the call."""
    best = min(PRICES, key=lambda n: PRICES[n].input + PRICES[n].output)
    llm = QuotaRoutedChatModel(
        routes=[
            Route(_Billed(delay=0), name=best, prices=(PRICES[best].input, PRICES[best].output))
        ],
        ledger="memory://",
        cache=False,
        fleet_counters=False,
    )
    spent = 0.0
    for prompt, max_tokens in workload:
        answer = await llm.ainvoke(prompt, max_tokens=max_tokens)
        spent += float(answer.response_metadata["cost"])
    return spent


def picks(n: int = 300) -> dict[str, float]:
    workload = _workload(n)
    spent, cheapest = asyncio.run(_picks("cost", workload))
    priority, _ = asyncio.run(_picks("priority", workload))
    blind = asyncio.run(_blind(workload))
    return {
        "calls": n,
        "cheapest": round(cheapest, 6),
        "cost_strategy": round(spent, 6),
        "cost_strategy_extra": round(spent - cheapest, 6),
        "request_blind": round(blind, 6),
        "request_blind_extra": round(blind - cheapest, 6),
        "priority_extra": round(priority - cheapest, 6),
    }


def main() -> None:
    started = time.perf_counter()
    print("1. dollar budget under concurrency (SQLite ledger, calls $0.003 each)")
    print(f"{'budget':<11} {'callers':>7} {'calls':>5} {'spent $':>9} {'spent/budget':>12}")
    for row in overspend():
        print(
            f"{row['budget']:<11} {row['callers']:>7} {row['calls']:>5} "
            f"{row['spent']:>9.4f} {row['ratio']:>12.3f}"
        )
    print()
    found = picks()
    print(f"2. cost-strategy picks over {found['calls']} mixed calls, three routes")
    print(f"   cheapest possible          ${found['cheapest']:.4f}")
    print(
        f"   strategy='cost'            ${found['cost_strategy']:.4f}"
        f"  (extra ${found['cost_strategy_extra']:.4f})"
    )
    print(
        f"   request-blind (in+out)     ${found['request_blind']:.4f}"
        f"  (extra ${found['request_blind_extra']:.4f})"
    )
    print(f"   strategy='priority'        extra ${found['priority_extra']:.4f}")
    print(f"\n({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
