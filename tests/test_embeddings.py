"""QuotaRoutedEmbeddings: the real LangChain embedding classes behind the router,
against the simulator; batches in each vendor's unit; one vector space; the cache."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings

from langchain_quota_router import (
    ConfigurationError,
    DiskEmbeddingCache,
    EmbeddingRoute,
    InMemoryEmbeddingCache,
    QuotaExhaustedError,
    QuotaRoutedChatModel,
    QuotaRoutedEmbeddings,
    Route,
)
from langchain_quota_router._config import routes_from_env
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.quota.status import read_status
from langchain_quota_router.simulator import SimKey, Simulator, vendor_embeddings, vendor_model
from langchain_quota_router.simulator._embed import embed_vector

MODELS = {
    "openai": "text-embedding-3-small",
    "gemini": "gemini-embedding-001",
    "cohere": "embed-english-light-v3.0",
}
# Small vectors keep the wire light; Cohere's v1 endpoint takes no size, so its
# smallest model.
SIZE = {"openai": 8, "gemini": 8, "cohere": 384}
SIZE_KWARG = {"openai": "dimensions", "gemini": "output_dimensionality"}
KEY = "sk-test-0123456789abcdef"


@pytest.fixture(params=["embed_documents", "embed_query", "aembed_documents", "aembed_query"])
def how(request: pytest.FixtureRequest) -> str:
    """Each way in (shadows the chat ``how``): a behaviour holds on all four."""
    return str(request.param)


def embed(router: Embeddings, how: str, texts: list[str]) -> list[list[float]]:
    """``texts`` embedded the way ``how`` says (queries one at a time)."""
    if how == "embed_documents":
        return router.embed_documents(texts)
    if how == "embed_query":
        return [router.embed_query(t) for t in texts]
    if how == "aembed_documents":
        return _LOOP.run_until_complete(router.aembed_documents(texts))

    async def queries() -> list[list[float]]:
        return [await router.aembed_query(t) for t in texts]

    return _LOOP.run_until_complete(queries())


# One loop for the module: the vendors' async clients keep their connections to
# the loop they first ran on.
_LOOP = asyncio.new_event_loop()


def calls_for(how: str, texts: int, batch: int) -> int:
    """Vendor calls the fewest batches allow."""
    return texts if "query" in how else -(-texts // batch)


@pytest.fixture(autouse=True, scope="module")
def _finalized_in_this_module() -> Iterator[None]:
    """Collect this module's SDK clients before the next module runs (see ``sims``)."""
    yield
    gc.collect()


@pytest.fixture
def sims(clock: FakeClock) -> Iterator[list[Simulator]]:
    made: list[Simulator] = []
    yield made
    for sim in made:
        sim.stop()
    # Run the SDK clients' finalizers now, not during some later import: one that
    # parses code while pytest's assertion rewriter builds an AST trips CPython
    # 3.11.7's "AST constructor recursion depth mismatch" (see
    # test_simulator_embeddings.py).
    gc.collect()


def start(sims: list[Simulator], clock: FakeClock, *keys: SimKey) -> Simulator:
    sim = Simulator(list(keys), clock=clock)
    sim.start()
    sims.append(sim)
    return sim


def emb(sim: Simulator, vendor: str, key: str, **kw: Any) -> Embeddings:
    if vendor in SIZE_KWARG:
        kw.setdefault(SIZE_KWARG[vendor], SIZE[vendor])
    return vendor_embeddings(sim, vendor, key, MODELS[vendor], **kw)


def served(sim: Simulator, key: str) -> tuple[int, int]:
    """(answered, refused with a 429) for ``key``."""
    stats = sim.stats(key)
    return stats.served, stats.refused


# ----------------------------------------------------------- each vendor class


@pytest.mark.parametrize("vendor", list(MODELS))
def test_each_vendor_class_embeds_in_order_over_its_keys(
    sims: list[Simulator], clock: FakeClock, vendor: str, how: str
) -> None:
    keys = [f"{vendor}-key-{i}-0123456789" for i in range(2)]
    sim = start(sims, clock, *(SimKey(k, vendor) for k in keys))  # type: ignore[arg-type]
    router = QuotaRoutedEmbeddings(
        [
            Route(
                emb(sim, vendor, k),
                name=f"{vendor}{i}",
                limits=["2/minute"],
                batch_size=3,
                count_items=False,
            )
            for i, k in enumerate(keys)
        ],
        ledger="memory://",
        cache=False,
        clock=clock,
    )
    texts = [f"text {i}" for i in range(4)]
    vectors = embed(router, how, texts)
    model = MODELS[vendor]
    assert vectors == [embed_vector(model, SIZE[vendor], t) for t in texts]
    # The first key's two calls, then the second key: no vendor 429.
    first, second = (served(sim, k) for k in keys)
    assert first[0] + second[0] == calls_for(how, 4, 3)
    assert first == (2, 0)
    assert second[1] == 0
    assert router.dimension == SIZE[vendor]


def test_gemini_counts_each_text_as_a_request(sims: list[Simulator], clock: FakeClock) -> None:
    keys = [f"gemini-key-{i}-0123456789" for i in range(3)]
    sim = start(sims, clock, *(SimKey(k, "gemini", rpm=10) for k in keys))
    router = QuotaRoutedEmbeddings(
        [
            Route(emb(sim, "gemini", k), name=f"g{i}", limits=["10/minute"])
            for i, k in enumerate(keys)
        ],
        ledger="memory://",
        cache=False,
        clock=clock,
    )
    assert router.routes[0].count_items
    assert router.routes[0].batch_size == 100
    assert len(router.embed_documents([f"t{i}" for i in range(25)])) == 25
    sizes = [len(r.body["requests"]) for r in sim.requests()]
    # A batch never holds more texts than the pool's 10 requests a minute.
    assert sizes == [10, 10, 5]
    assert [len(sim.requests(k)) for k in keys] == [1, 1, 1]


def test_openai_batches_by_tokens_of_the_pool(sims: list[Simulator], clock: FakeClock) -> None:
    sim = start(sims, clock, SimKey(KEY, "openai"))
    router = QuotaRoutedEmbeddings(
        [Route(emb(sim, "openai", KEY), limits=["100/minute", "10 tokens/minute"])],
        ledger="memory://",
        cache=False,
        clock=clock,
        max_wait=120,
    )
    # 8 characters: 2 tokens each; 5 texts fit 10 tokens.
    vectors = router.embed_documents(["abcdefgh"] * 3 + [f"abcdefg{i}" for i in range(7)])
    assert len(vectors) == 10
    assert [len(r.body["input"]) for r in sim.requests(KEY)] == [5, 3]  # 8 distinct texts
    assert sim.stats(KEY).refused == 0


# ------------------------------------------------------------ no vendor 429s


def test_no_vendor_429_while_any_key_has_room(
    sims: list[Simulator], clock: FakeClock, how: str
) -> None:
    keys = [f"cohere-trial-{i}-0123456789" for i in range(3)]
    sim = start(sims, clock, *(SimKey(k, "cohere", rpm=2) for k in keys))
    router = QuotaRoutedEmbeddings(
        [
            Route(emb(sim, "cohere", k), name=f"c{i}", limits=["2/minute"], batch_size=2)
            for i, k in enumerate(keys)
        ],
        ledger="memory://",
        cache=False,
        clock=clock,
    )
    # Six calls' worth: every key's minute, to the last request.
    texts = [f"chunk {i}" for i in range(6 if "query" in how else 12)]
    assert len(embed(router, how, texts)) == len(texts)
    assert [served(sim, k) for k in keys] == [(2, 0)] * 3
    with pytest.raises(QuotaExhaustedError) as caught:
        embed(router, how, ["one more"])
    assert caught.value.resets_at is not None
    assert sum(sim.stats(k).received for k in keys) == 6


def test_a_vendor_429_sends_the_rest_to_another_key(
    sims: list[Simulator], clock: FakeClock
) -> None:
    # The ledger thinks the first key has room; the vendor says otherwise.
    sim = start(
        sims,
        clock,
        SimKey("cohere-a-0123456789", "cohere", rpm=1),
        SimKey("cohere-b-0123456789", "cohere"),
    )
    router = QuotaRoutedEmbeddings(
        [
            Route(emb(sim, "cohere", "cohere-a-0123456789"), name="a", batch_size=2),
            Route(emb(sim, "cohere", "cohere-b-0123456789"), name="b", priority=1, batch_size=2),
        ],
        ledger="memory://",
        cache=False,
        clock=clock,
    )
    texts = [f"t{i}" for i in range(6)]
    assert router.embed_documents(texts) == [embed_vector(MODELS["cohere"], 384, t) for t in texts]
    assert served(sim, "cohere-a-0123456789") == (1, 1)
    assert served(sim, "cohere-b-0123456789") == (2, 0)
    stats = router.get_stats()
    assert stats["calls_per_route"] == {"a": 1, "b": 2}
    assert stats["fleet"]["rate_limited"] == 1
    # The 429 blocked the pool: the next call does not ask the first key.
    router.embed_query("q")
    assert served(sim, "cohere-a-0123456789") == (1, 1)


# ------------------------------------------------------------ shared pools


def test_a_cohere_keys_chat_and_embedding_routes_share_one_pool(
    sims: list[Simulator], clock: FakeClock, how: str, tmp_path: Path
) -> None:
    sim = start(sims, clock, SimKey(KEY, "cohere"))
    chat = QuotaRoutedChatModel(
        routes=[
            Route(vendor_model(sim, "cohere", KEY, "command-r"), pool="trial", limits=["10/month"])
        ],
        ledger=f"sqlite:///{tmp_path}/ledger.db",
        cache=False,
        clock=clock,
    )
    router = QuotaRoutedEmbeddings(
        [Route(emb(sim, "cohere", KEY), pool="trial", limits=["10/month"], batch_size=1)],
        ledger=chat.ledger_backend,
        cache=False,
        clock=clock,
    )
    for _ in range(6):
        chat.invoke("hello")
    assert len(embed(router, how, ["a", "b", "c", "d"])) == 4
    with pytest.raises(QuotaExhaustedError):
        embed(router, how, ["e"])
    with pytest.raises(QuotaExhaustedError):
        chat.invoke("hello")
    assert sim.stats(KEY).served == 10
    assert {u.pool: u.used for u in router.usage()} == {"trial": 10}


# ------------------------------------------------------------ the cache


@pytest.mark.parametrize("store", ["memory", "disk"])
def test_re_embedding_a_document_set_calls_no_vendor(
    sims: list[Simulator], clock: FakeClock, tmp_path: Path, store: str, how: str
) -> None:
    sim = start(sims, clock, SimKey(KEY, "openai"))
    cache = InMemoryEmbeddingCache() if store == "memory" else DiskEmbeddingCache(tmp_path)
    router = QuotaRoutedEmbeddings(
        [Route(emb(sim, "openai", KEY))], ledger="memory://", cache=cache, clock=clock
    )
    texts = [f"doc {i}" for i in range(5)]
    first = embed(router, how, texts)
    calls = len(sim.requests(KEY))
    assert embed(router, how, texts) == first
    assert len(sim.requests(KEY)) == calls
    assert router.get_stats()["cache_hits"] == 5
    # A new router on the same cache: still no call.
    again = QuotaRoutedEmbeddings(
        [Route(emb(sim, "openai", KEY))], ledger="memory://", cache=cache, clock=clock
    )
    assert embed(again, how, texts[::-1]) == first[::-1]
    assert len(sim.requests(KEY)) == calls


def test_queries_and_documents_are_cached_apart(sims: list[Simulator], clock: FakeClock) -> None:
    sim = start(sims, clock, SimKey(KEY, "cohere"))
    router = QuotaRoutedEmbeddings(
        [Route(emb(sim, "cohere", KEY))], ledger="memory://", cache=True, clock=clock
    )
    router.embed_documents(["same text"])
    router.embed_query("same text")
    sent = [r.body["input_type"] for r in sim.requests(KEY)]
    assert sent == ["search_document", "search_query"]
    router.embed_query("same text")
    router.embed_documents(["same text", "same text"])
    assert len(sim.requests(KEY)) == 2


def test_the_default_cache_lives_beside_the_response_cache(tmp_path: Path) -> None:
    router = QuotaRoutedEmbeddings([Route(DeterministicFakeEmbedding(size=4))], ledger="memory://")
    assert isinstance(router.cache, DiskEmbeddingCache)
    assert router.cache.directory == tmp_path / "default-cache" / "embeddings"
    assert router.embed_documents(["x"]) == router.embed_documents(["x"])
    assert router.get_stats()["cache_hits"] == 1


# ------------------------------------------------------------ one vector space


def test_routes_on_different_models_or_sizes_are_refused(
    sims: list[Simulator], clock: FakeClock
) -> None:
    sim = start(sims, clock, SimKey(KEY, "openai"))
    small = Route(emb(sim, "openai", KEY, dimensions=8), name="small")
    other = Route(emb(sim, "openai", KEY, dimensions=16), name="other")
    with pytest.raises(ConfigurationError, match=r"one dimension.*8: small; 16: other"):
        QuotaRoutedEmbeddings([small, other], ledger="memory://")
    large = Route(
        vendor_embeddings(sim, "openai", KEY, "text-embedding-3-large", dimensions=8),
        name="large",
    )
    with pytest.raises(
        ConfigurationError,
        match=r"same model.*text-embedding-3-small: small; text-embedding-3-large: large",
    ):
        QuotaRoutedEmbeddings([small, large], ledger="memory://")


def test_a_route_answering_another_size_is_taken_out(clock: FakeClock, how: str) -> None:
    # Classes the router knows nothing of: the first answer sets the size.
    four = Route(DeterministicFakeEmbedding(size=4), name="four", limits=["1/minute"])
    five = Route(DeterministicFakeEmbedding(size=5), name="five", priority=1)
    router = QuotaRoutedEmbeddings([four, five], ledger="memory://", cache=False, clock=clock)
    assert router.dimension is None
    assert len(embed(router, how, ["a"])[0]) == 4
    with pytest.raises(QuotaExhaustedError) as caught:
        embed(router, how, ["b"])
    assert "five" in caught.value.reasons
    assert "vectors of 5 dimensions, not this router's 4" in caught.value.reasons["five"]
    status = read_status(router)
    state = {r.name: r.state.kind for r in status.routes}
    assert state == {"four": "full", "five": "unavailable"}
    # Never asked again, in this process or (through the ledger) another one.
    clock.advance(61)
    assert len(embed(router, how, ["c"])[0]) == 4
    assert router.get_stats()["calls_per_route"] == {"four": 2}
    assert router.enable("five")


# ------------------------------------------------------------ failing mid-way


def test_a_batch_no_route_can_take_says_what_was_embedded(
    sims: list[Simulator], clock: FakeClock, tmp_path: Path
) -> None:
    sim = start(sims, clock, SimKey(KEY, "cohere"))
    cache = InMemoryEmbeddingCache()
    router = QuotaRoutedEmbeddings(
        [Route(emb(sim, "cohere", KEY), name="trial", limits=["2/month"], batch_size=2)],
        ledger="memory://",
        cache=cache,
        clock=clock,
    )
    texts = [f"t{i}" for i in range(7)]
    with pytest.raises(QuotaExhaustedError) as caught:
        router.embed_documents(texts)
    error = caught.value
    assert str(error).startswith("embedded 4 of 7 texts (kept in the cache")
    assert "3 remain: texts 4-6" in str(error)
    assert error.remaining == [4, 5, 6]  # type: ignore[attr-defined]
    assert error.embedded == 4  # type: ignore[attr-defined]
    assert KEY not in str(error)
    assert len(cache) == 4
    router.reset("trial")
    assert len(router.embed_documents(texts)) == 7
    assert [len(r.body["texts"]) for r in sim.requests(KEY)] == [2, 2, 2, 1]


async def test_async_failure_says_the_same(clock: FakeClock) -> None:
    router = QuotaRoutedEmbeddings(
        [Route(DeterministicFakeEmbedding(size=3), limits=["1/month"], batch_size=2)],
        ledger="memory://",
        cache=False,
        clock=clock,
    )
    with pytest.raises(QuotaExhaustedError, match=r"embedded 2 of 3 texts .*1 remain: texts 2\."):
        await router.aembed_documents(["a", "b", "c"])


# ------------------------------------------------------------ routes and config


def test_route_makes_embedding_routes_from_objects_and_specs() -> None:
    spec = Route("cohere:embed-v4.0", api_key=KEY)
    assert isinstance(spec, EmbeddingRoute)
    assert (spec.dimension, spec.batch_size) == (1536, 96)
    # The key's pool, as its chat routes have it: Cohere counts every endpoint.
    assert spec.pool == Route("cohere", api_key=KEY).pool
    assert [str(x) for x in spec.limits] == ["100/minute", "1000/month"]
    gemini = Route("gemini:gemini-embedding-001", api_key=KEY)
    assert gemini.count_items
    assert gemini.batch_size == 100
    assert Route("gemini:gemini-embedding-001", api_key=KEY, count_items=False).count_items is False
    assert KEY not in repr(spec)
    with pytest.raises(ConfigurationError, match="holds an embeddings model"):
        QuotaRoutedChatModel(routes=[spec], ledger="memory://")
    with pytest.raises(ConfigurationError, match="holds a chat model"):
        QuotaRoutedEmbeddings([Route("cohere", api_key=KEY)], ledger="memory://")
    with pytest.raises(ConfigurationError, match="batch_size and count_items are for embedding"):
        Route("cohere", api_key=KEY, batch_size=5)


def test_from_env_reads_the_keys_and_the_embedding_model() -> None:
    env = {
        "COHERE_API_KEY_1": "co-first-0123456789abc",
        "COHERE_API_KEY_2": "co-second-0123456789xyz",
        "COHERE_EMBEDDING_MODEL": "embed-v4.0",
        "GROQ_API_KEY": "gsk-0123456789abcdefgh",
    }
    router = QuotaRoutedEmbeddings.from_env(env, dotenv=None, ledger="memory://", cache=False)
    names = [r.name for r in router.routes]
    assert [n.split(" ")[0] for n in names] == ["cohere#1", "cohere#2"]
    assert all(n.endswith(":embed-v4.0") for n in names)
    chat_pools = {r.pool for r in routes_from_env(env, dotenv=None) if r.provider == "cohere"}
    assert {r.pool for r in router.routes} == chat_pools
    with pytest.raises(ConfigurationError, match="COHERE_EMBEDDING_MODEL"):
        QuotaRoutedEmbeddings.from_env({"COHERE_API_KEY": KEY}, dotenv=None)
    with pytest.raises(ConfigurationError, match="not an embedding model"):
        QuotaRoutedEmbeddings.from_env(
            {"COHERE_API_KEY": KEY, "COHERE_EMBEDDING_MODEL": "command-r-08-2024"}, dotenv=None
        )
