"""A simulated day over four vendors: the router against plain ``with_fallbacks``.

    python benchmarks/vendors.py [--requests N]

Four simulated vendor keys with free-tier limits (Groq, Gemini, OpenAI, Cohere) serve
a day's workload whose demand is twice Groq's daily request limit, spread evenly
over 24 simulated hours (a fake clock; the HTTP is real, on loopback). Both variants
call the same real LangChain vendor classes with SDK retries off:

- ``with_fallbacks``: ``groq.with_fallbacks([gemini, openai, cohere])``;
- ``router``: ``QuotaRoutedChatModel`` over the same models, told each key's limits.

Printed per variant: requests served, requests that failed, HTTP requests sent to
vendors, and how many of those a vendor refused (429).
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
from dataclasses import dataclass

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable

from langchain_quota_router import QuotaExhaustedError, QuotaRoutedChatModel, Route
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.simulator import SimKey, Simulator, vendor_model

# Free-tier figures (see the catalog and DESIGN.md), as the simulator enforces them
# and as the router is told them. Days are UTC days, except Gemini's, which start at
# midnight Pacific (08:00 UTC), as the vendors count them.
VENDORS: dict[str, tuple[str, SimKey, list[str]]] = {
    "groq": (
        "openai/gpt-oss-120b",
        SimKey("groq-key", "groq", rpm=30, rpd=1000, tpm=8_000, tpd=200_000),
        ["30/minute", "1000/day", "8000 tokens/minute", "200000 tokens/day"],
    ),
    "gemini": (
        "gemini-3.5-flash",
        SimKey("gemini-key", "gemini", rpm=10, rpd=20),
        ["10/minute", "20/day@America/Los_Angeles"],
    ),
    "openai": (
        "gpt-4o-mini",
        SimKey("openai-key", "openai", rpm=3, rpd=200),
        ["3/minute", "200/day"],
    ),
    "cohere": (
        "command-r-08-2024",
        SimKey("cohere-key", "cohere", rpm=20, rpd=1000),
        ["20/minute", "1000/day"],
    ),
}


@dataclass
class Outcome:
    served: int = 0
    failed: int = 0
    sent: int = 0
    refused: int = 0


def run(variant: str, requests: int) -> Outcome:
    # A UTC day; Gemini's Pacific day turns over at 08:00 on the way.
    clock = FakeClock(dt.datetime(2026, 1, 15, tzinfo=dt.timezone.utc).timestamp())
    with Simulator([spec[1] for spec in VENDORS.values()], clock=clock) as sim:
        # The output budget is set on each model, in its own vendor's words, so the
        # plain with_fallbacks baseline is not tripped up by kwargs it cannot rename.
        models: dict[str, BaseChatModel] = {
            name: vendor_model(sim, name, key.key, model, **_budget(name))
            for name, (model, key, _) in VENDORS.items()
        }
        llm: Runnable[str, object]
        if variant == "with_fallbacks":
            first, *rest = models.values()
            llm = first.with_fallbacks(rest)
        else:
            llm = QuotaRoutedChatModel(
                routes=[
                    Route(models[name], name=name, limits=limits, priority=i)
                    for i, (name, (_, _, limits)) in enumerate(VENDORS.items())
                ],
                ledger="memory://",
                cache=False,
                clock=clock,
            )
        outcome = Outcome()
        step = 86_400 / requests
        for i in range(requests):
            try:
                llm.invoke(f"Request {i}: summarise the news in one line.")
                outcome.served += 1
            except QuotaExhaustedError:
                outcome.failed += 1
            except Exception:  # with_fallbacks raises the last vendor's error
                outcome.failed += 1
            clock.advance(step)
        for _, key, _ in VENDORS.values():
            stats = sim.stats(key.key)
            outcome.sent += stats.received
            outcome.refused += stats.refused
        return outcome


def _budget(vendor: str) -> dict[str, int]:
    return {"max_output_tokens": 40} if vendor == "gemini" else {"max_tokens": 40}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="twice Groq's 1000/day")
    args = parser.parse_args()
    tempfile.tempdir = tempfile.mkdtemp(prefix="qr-vendors-")
    # Gemini's day turns over once during the UTC day: it gets two days' worth.
    capacity = sum(
        int(limits[1].split("/")[0]) * (2 if name == "gemini" else 1)
        for name, (_, _, limits) in VENDORS.items()
    )
    print(
        f"{args.requests} requests over one simulated day; daily capacity of the four "
        f"keys: {capacity} requests"
    )
    print()
    print("| variant | served | failed | HTTP requests to vendors | refused by vendors (429) |")
    print("|---|---|---|---|---|")
    for variant in ("with_fallbacks", "router"):
        out = run(variant, args.requests)
        print(f"| {variant} | {out.served} | {out.failed} | {out.sent} | {out.refused} |")


if __name__ == "__main__":
    main()
