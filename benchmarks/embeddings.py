"""10,000 chunks over three free-tier keys of one model: the router against the
LangChain class on one key, and against a fallback chain.

    python benchmarks/embeddings.py [--vendor openai|cohere] [--chunks N]

Three simulated keys of one embedding model with the catalog's free-tier limits
(the HTTP is real, on loopback; time is a ``FakeClock``) embed one document set:

- ``router``: ``QuotaRoutedEmbeddings`` over the three keys, with the catalog's
  limits and batch caps, an empty disk cache, and ``max_wait`` to wait for quota
  (on the fake clock) rather than fail;
- ``router, again``: the same set a second time, on that cache;
- ``one key``: the LangChain class on the first key as users build it, with its
  own retries (and, for Cohere, tenacity's 3 attempts and the SDK's batching);
- ``fallbacks``: ``Embeddings`` has no ``with_fallbacks``, so it is emulated as
  ``first.with_fallbacks([second, third])`` would behave: the first key's
  ``embed_documents`` on the whole set, on any error the second's, then the third's.

The vendor SDKs sleep between retries; their ``time`` (the OpenAI SDK's, the Cohere
SDK's, tenacity's) is replaced by one whose ``sleep`` advances the fake clock, so a
run takes seconds. ``sim s`` is the simulated time a variant took: the router's
waits for quota, the classes' sleeps between retries.

Vendors:

- ``openai`` (default): ``text-embedding-3-small`` at 8 dimensions, free tier
  3 RPM / 200 per 24 h / 40,000 TPM, 2,048 inputs and 300,000 tokens a call;
  ``OpenAIEmbeddings`` sends text (``check_embedding_ctx_length=False``: its
  token-id path needs tiktoken's download). Runs in well under a minute.
- ``cohere``: ``embed-english-light-v3.0`` (384 dimensions, Cohere's v1 endpoint
  takes no smaller size), trial keys 100 calls/minute, 96 texts a call. Takes a
  few minutes: the Cohere SDK's parsing of 384-float vectors dominates.

Printed per variant: chunks embedded, vendor 429s, vendor calls, wall time,
simulated time, and calls against the minimum the batch
limits allow (texts per call, and tokens per call where capped).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from langchain_core.embeddings import Embeddings

from langchain_quota_router import (
    DiskEmbeddingCache,
    QuotaRoutedEmbeddings,
    Route,
)
from langchain_quota_router.embeddings.batching import estimate_tokens
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.simulator import SimKey, Simulator
from langchain_quota_router.vendors.catalog import lookup

KEYS = [f"free-tier-key-{i}-0123456789abcdef" for i in range(3)]


@dataclass(frozen=True)
class Setup:
    """One vendor's free tier, as the simulator enforces and the catalog states it."""

    vendor: str
    model: str
    sim: dict[str, int]
    batch: int
    batch_tokens: int | None


SETUPS = {
    "openai": Setup(
        "openai", "text-embedding-3-small", {"rpm": 3, "rpd": 200, "tpm": 40_000}, 2048, 300_000
    ),
    "cohere": Setup("cohere", "embed-english-light-v3.0", {"rpm": 100}, 96, None),
}


@dataclass
class Result:
    name: str
    embedded: int
    refused: int
    calls: int
    seconds: float
    simulated: float
    error: str = ""


class FastForward:
    """``time`` for the vendor libraries: ``sleep`` advances the fake clock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waited = 0.0
        self._lock = threading.Lock()

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.waited += max(0.0, seconds)
            self.clock.advance(max(0.0, seconds))

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


@contextmanager
def fast_forward(clock: FakeClock) -> Iterator[FastForward]:
    """Point the vendor SDKs' and tenacity's ``time`` at a fast-forwarding clock."""
    import cohere.core.http_client as http_client
    import openai._base_client as openai_client
    import tenacity.nap as nap

    shim = FastForward(clock)
    saved = [(module, module.time) for module in (http_client, nap, openai_client)]
    for module, _ in saved:
        module.time = shim  # type: ignore[attr-defined]
    try:
        yield shim
    finally:
        for module, original in saved:
            module.time = original  # type: ignore[attr-defined]


def langchain_class(sim: Simulator, setup: Setup, key: str) -> Embeddings:
    """The vendor's LangChain class as a user builds it: its own retries on."""
    if setup.vendor == "openai":
        from langchain_openai import OpenAIEmbeddings

        return OpenAIEmbeddings(
            model=setup.model,
            api_key=key,  # type: ignore[arg-type]
            base_url=sim.openai_base_url,
            dimensions=8,
            check_embedding_ctx_length=False,
        )
    from langchain_cohere import CohereEmbeddings

    return CohereEmbeddings(
        model=setup.model,
        cohere_api_key=key,  # type: ignore[arg-type]
        base_url=sim.cohere_base_url,
    )


def run(
    name: str, chunks: list[str], setup: Setup, body: Callable[..., list[list[float]]]
) -> Result:
    clock = FakeClock()
    keys = [SimKey(k, setup.vendor, **setup.sim) for k in KEYS]  # type: ignore[arg-type]
    with Simulator(keys, clock=clock) as sim:
        with fast_forward(clock):
            started, simulated = time.perf_counter(), clock.now()
            error = ""
            try:
                vectors = body(sim, clock)
            except Exception as exc:
                vectors = []
                error = f"{type(exc).__name__} (status {getattr(exc, 'status_code', '-')})"
            seconds = time.perf_counter() - started
            simulated = clock.now() - simulated
        assert not vectors or len(vectors) == len(chunks)
        stats = [sim.stats(k) for k in KEYS]
        return Result(
            name,
            len(vectors),
            sum(s.refused for s in stats),
            sum(s.received for s in stats),
            seconds,
            simulated,
            error,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vendor", choices=sorted(SETUPS), default="openai")
    parser.add_argument("--chunks", type=int, default=10_000)
    args = parser.parse_args(argv)
    setup = SETUPS[args.vendor]
    # Quiet: the router's quota alerts and tenacity's retry lines would bury the table.
    for name in ("langchain_quota_router", "langchain_cohere", "openai"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    chunks = [
        f"chunk {i}: free-tier keys embed documents for retrieval, one batch at a time."
        for i in range(args.chunks)
    ]
    cache_dir = Path(tempfile.mkdtemp(prefix="qr-bench-emb-"))

    def router(cache: bool) -> Callable[..., list[list[float]]]:
        def body(sim: Simulator, clock: FakeClock) -> list[list[float]]:
            # The catalog's limits and caps, as Route("vendor:model") takes them.
            info = lookup(f"{setup.vendor}:{setup.model}")[1]
            routes = [
                Route(
                    langchain_class(sim, setup, k),
                    name=f"{setup.vendor}#{i}",
                    limits=list(info.limits),
                )
                for i, k in enumerate(KEYS)
            ]
            embeddings = QuotaRoutedEmbeddings(
                routes,
                ledger="memory://",
                cache=DiskEmbeddingCache(cache_dir) if cache else False,
                clock=clock,
                max_wait=3600,
            )
            return embeddings.embed_documents(chunks)

        return body

    def one_key(sim: Simulator, clock: FakeClock) -> list[list[float]]:
        return langchain_class(sim, setup, KEYS[0]).embed_documents(chunks)

    def fallbacks(sim: Simulator, clock: FakeClock) -> list[list[float]]:
        first, second, third = (langchain_class(sim, setup, k) for k in KEYS)
        try:
            return first.embed_documents(chunks)
        except Exception:
            try:
                return second.embed_documents(chunks)
            except Exception:
                return third.embed_documents(chunks)

    results = [
        # The cache directory starts empty: the first pass is the router's own work.
        run("router", chunks, setup, router(cache=True)),
        run("router, again (cache on)", chunks, setup, router(cache=True)),
        run("one key, own retries", chunks, setup, one_key),
        run("with_fallbacks (emulated)", chunks, setup, fallbacks),
    ]
    tokens = sum(estimate_tokens(c) for c in chunks)
    minimum = math.ceil(len(chunks) / setup.batch)
    if setup.batch_tokens:
        minimum = max(minimum, math.ceil(tokens / setup.batch_tokens))
    limits = ", ".join(f"{k}={v}" for k, v in setup.sim.items())
    print(
        f"{len(chunks)} chunks (~{tokens} tokens), {setup.vendor} {setup.model}, "
        f"3 keys ({limits}; {setup.batch} texts a call); minimum calls {minimum}"
    )
    print(
        f"{'variant':28} {'embedded':>9} {'429s':>6} {'calls':>6} {'vs min':>8} "
        f"{'wall s':>7} {'sim s':>9}"
    )
    for r in results:
        ratio = f"{r.calls / minimum:.2f}x" if r.calls else "0"
        print(
            f"{r.name:28} {r.embedded:>9} {r.refused:>6} {r.calls:>6} {ratio:>8} "
            f"{r.seconds:>7.1f} {r.simulated:>9.1f}" + (f"  {r.error}" if r.error else "")
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
