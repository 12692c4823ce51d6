"""The simulator's models: configured models, list-models endpoints, retired models.

Every vendor's own SDK (``openai``, ``groq``, ``google.genai``, ``cohere``) lists
the models over real HTTP, and the real LangChain vendor classes hit retired ones.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any, cast

import cohere
import groq
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.simulator import (
    Fault,
    RetireStyle,
    SimKey,
    SimModel,
    Simulator,
    Vendor,
    vendor_model,
)

NOON_UTC = dt.datetime(2026, 1, 15, 12, tzinfo=dt.timezone.utc).timestamp()
VENDORS: list[Vendor] = ["openai", "groq", "gemini", "cohere"]
# Served on each wire; the last one of each is retired by configuration.
SERVED: dict[Vendor, list[str]] = {
    "openai": ["gpt-4.1-mini", "gpt-4o-mini"],
    "groq": ["openai/gpt-oss-120b", "openai/gpt-oss-20b", "qwen/qwen3.6-27b"],
    "gemini": ["gemini-3.5-flash", "gemini-3.5-flash-lite"],
    "cohere": ["command-a-03-2025", "command-r-08-2024"],
}
RETIRED: dict[Vendor, str] = {
    "openai": "gpt-3.5-turbo-0301",
    "groq": "llama-3.3-70b-versatile",
    "gemini": "gemini-2.5-flash",
    "cohere": "command-r",
}
RETIRED_GEMINI_MESSAGE = (
    "models/gemini-2.5-flash is not found for API version {version}, or is not supported "
    "for generateContent. Call ListModels to see the list of available models and their "
    "supported methods."
)
COHERE_NOT_FOUND = (
    "model 'command-r' not found, make sure the correct model ID was used and that you "
    "have access to the model."
)


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[Simulator]:
    keys = [SimKey(f"key-{v}", v, rpm=100) for v in VENDORS]
    models: dict[Vendor, list[str | SimModel]] = {
        vendor: [
            *SERVED[vendor],
            SimModel(RETIRED[vendor], retired=True, successor=SERVED[vendor][0]),
        ]
        for vendor in VENDORS
    }
    with Simulator(keys, models=models, clock=FakeClock(NOON_UTC)) as simulator:
        yield simulator


@pytest.fixture
def sim(shared_sim: Simulator) -> Simulator:
    shared_sim.reset()
    return shared_sim


# ------------------------------------------------------------ SDK list calls


def openai_client(sim: Simulator, key: str = "key-openai") -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.openai_base_url, api_key=key, max_retries=0)


def groq_client(sim: Simulator, key: str = "key-groq") -> groq.Groq:
    return groq.Groq(base_url=sim.groq_base_url, api_key=key, max_retries=0)


def genai_client(sim: Simulator, key: str = "key-gemini", version: str | None = None) -> Any:
    options = genai_types.HttpOptions(base_url=sim.url, api_version=version)
    return genai.Client(api_key=key, http_options=options)


def cohere_client(sim: Simulator, key: str = "key-cohere") -> cohere.ClientV2:
    return cohere.ClientV2(api_key=key, base_url=sim.url)


def listed_by_sdk(sim: Simulator, vendor: Vendor, key: str | None = None) -> list[str]:
    """The model ids the vendor's own SDK lists (every page)."""
    key = key or f"key-{vendor}"
    if vendor == "openai":
        return [m.id for m in openai_client(sim, key).models.list()]
    if vendor == "groq":
        return [m.id for m in groq_client(sim, key).models.list().data]
    if vendor == "gemini":
        client = genai_client(sim, key)  # kept: a dropped Client closes its connection
        return [str(m.name) for m in client.models.list()]
    return [str(m.name) for m in cohere_client(sim, key).models.list().models]


@pytest.mark.parametrize("vendor", VENDORS)
def test_each_sdk_lists_the_served_models_not_the_retired_one(
    sim: Simulator, vendor: Vendor
) -> None:
    listed = listed_by_sdk(sim, vendor)
    if vendor == "gemini":
        assert listed == [f"models/{name}" for name in SERVED[vendor]]
    else:
        assert listed == SERVED[vendor]
    assert [m.id for m in sim.models(vendor)] == SERVED[vendor]


def test_openai_and_groq_model_objects(sim: Simulator) -> None:
    first = next(iter(openai_client(sim).models.list()))
    assert (first.object, first.owned_by, first.created) == ("model", "system", 1_700_000_000)
    assert openai_client(sim).models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"

    listed = groq_client(sim).models.list()
    assert listed.object == "list"
    oss = listed.data[0]
    assert (oss.id, oss.owned_by) == ("openai/gpt-oss-120b", "openai")
    extra = oss.model_dump()
    assert extra["context_window"] == 128_000
    assert extra["active"] is True
    # A slash in the id: the groq SDK puts it in the path as it is.
    assert groq_client(sim).models.retrieve("qwen/qwen3.6-27b").id == "qwen/qwen3.6-27b"


@pytest.mark.parametrize("version", ["v1", "v1beta"])
def test_gemini_lists_pages_and_gets_one_model(sim: Simulator, version: str) -> None:
    client = genai_client(sim, version=version)
    pager = client.models.list(config={"page_size": 1})
    assert [m.name for m in pager.page] == ["models/gemini-3.5-flash"]
    assert [m.name for m in pager] == [f"models/{n}" for n in SERVED["gemini"]]

    model = client.models.get(model="gemini-3.5-flash-lite")
    assert model.name == "models/gemini-3.5-flash-lite"
    assert model.supported_actions is not None
    assert "generateContent" in model.supported_actions
    assert model.input_token_limit == 128_000
    with pytest.raises(genai_errors.ClientError) as caught:
        client.models.get(model="gemini-2.5-flash")  # retired: not found
    assert (caught.value.code, caught.value.status) == (404, "NOT_FOUND")


def test_gemini_raw_list_shape_and_bad_page_token(sim: Simulator) -> None:
    raw = httpx.get(
        f"{sim.url}/v1beta/models",
        params={"pageSize": "1"},
        headers={"x-goog-api-key": "key-gemini"},
    )
    assert raw.status_code == 200
    body = raw.json()
    assert body["nextPageToken"]
    (model,) = body["models"]
    assert model["name"] == "models/gemini-3.5-flash"
    assert model["displayName"] == "gemini-3.5-flash"
    assert {"inputTokenLimit", "outputTokenLimit"} <= set(model)
    assert "generateContent" in model["supportedGenerationMethods"]
    last = httpx.get(
        f"{sim.url}/v1beta/models",
        params={"pageToken": body["nextPageToken"], "key": "key-gemini"},
    ).json()
    assert "nextPageToken" not in last
    bad = httpx.get(f"{sim.url}/v1beta/models?key=key-gemini&pageToken=nope")
    assert bad.status_code == 400
    assert bad.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_cohere_lists_pages_and_gets_one_model(sim: Simulator) -> None:
    client = cohere_client(sim)
    first = client.models.list(page_size=1)
    assert [m.name for m in first.models] == ["command-a-03-2025"]
    assert first.models[0].endpoints == ["chat"]
    assert first.models[0].context_length == 128_000
    rest = client.models.list(page_size=1, page_token=first.next_page_token)
    assert [m.name for m in rest.models] == ["command-r-08-2024"]
    assert rest.next_page_token is None
    assert client.models.list(endpoint="embed").models == []
    assert client.models.get("command-r-08-2024").name == "command-r-08-2024"
    with pytest.raises(cohere.NotFoundError):
        client.models.get("command-r")


# ------------------------------------------------------------ list-models auth


@pytest.mark.parametrize("vendor", VENDORS)
def test_listing_with_an_unknown_or_disabled_key_is_the_vendors_401(
    sim: Simulator, vendor: Vendor
) -> None:
    expected: type[Exception] = {
        "openai": openai.AuthenticationError,
        "groq": groq.AuthenticationError,
        "gemini": genai_errors.ClientError,
        "cohere": cohere.UnauthorizedError,
    }[vendor]
    for key in ("not-a-key", f"key-{vendor}"):
        with pytest.raises(expected) as caught:
            listed_by_sdk(sim, vendor, key)
        if vendor == "gemini":
            assert cast(genai_errors.ClientError, caught.value).status == "UNAUTHENTICATED"
        sim.disable(f"key-{vendor}")  # the second round: a revoked key
    assert sim.stats("not-a-key").listed == 1
    assert sim.stats("not-a-key").received == 0  # not a chat request


def test_openai_and_cohere_share_v1_models_by_key(sim: Simulator) -> None:
    # A key of another vendor on OpenAI's path is refused as chat would refuse it.
    with pytest.raises(openai.AuthenticationError):
        listed_by_sdk(sim, "openai", "key-groq")
    # An unknown key from the Cohere SDK gets Cohere's 401 body.
    with pytest.raises(cohere.UnauthorizedError) as caught:
        listed_by_sdk(sim, "cohere", "not-a-key")
    assert caught.value.body == {"message": "invalid api token"}


def test_listing_counts_against_no_limit(clock: FakeClock) -> None:
    with Simulator([SimKey("k", "groq", rpm=1, rpd=1)], clock=clock) as sim:
        for _ in range(3):
            assert listed_by_sdk(sim, "groq", "k")
        assert vendor_model(sim, "groq", "k", "openai/gpt-oss-20b").invoke("hi").text
        stats = sim.stats("k")
        assert (stats.listed, stats.received, stats.served) == (3, 1, 1)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOON_UTC)


# ------------------------------------------------------- default: every name


def test_without_configured_models_every_name_is_served_and_defaults_listed(
    clock: FakeClock,
) -> None:
    with Simulator([SimKey("k", "openai")], clock=clock) as sim:
        assert vendor_model(sim, "openai", "k", "any-model-at-all").invoke("hi").text
        listed = listed_by_sdk(sim, "openai", "k")
        assert "gpt-4o-mini" in listed
        assert "any-model-at-all" not in listed
        sim.retire("gpt-4o-mini", vendor="openai")
        assert "gpt-4o-mini" not in listed_by_sdk(sim, "openai", "k")
        with pytest.raises(openai.NotFoundError):
            vendor_model(sim, "openai", "k", "gpt-4o-mini").invoke("hi")
        assert vendor_model(sim, "openai", "k", "gpt-4.1-mini").invoke("hi").text


# ------------------------------------------------------------- retired models


def error_of(vendor: Vendor, exc: BaseException) -> tuple[int, Any]:
    """(HTTP status, JSON body) of a vendor error, wherever its SDK keeps them."""
    if vendor in ("openai", "groq"):
        assert isinstance(exc, (openai.APIStatusError, groq.APIStatusError))
        return exc.response.status_code, exc.response.json()
    if vendor == "gemini":
        cause = exc.__cause__
        assert isinstance(cause, genai_errors.ClientError)
        return cause.code, cause.details
    assert isinstance(exc, cohere.core.api_error.ApiError)
    assert exc.status_code is not None
    return exc.status_code, exc.body


def gemini_not_found(version: str) -> dict[str, Any]:
    message = RETIRED_GEMINI_MESSAGE.format(version=version)
    return {"error": {"code": 404, "message": message, "status": "NOT_FOUND"}}


EXPECTED: dict[tuple[Vendor, RetireStyle], tuple[int, dict[str, Any]]] = {
    ("openai", "not_found"): (
        404,
        {
            "error": {
                "message": "The model `gpt-3.5-turbo-0301` does not exist or you do not "
                "have access to it.",
                "type": "invalid_request_error",
                "param": None,
                "code": "model_not_found",
            }
        },
    ),
    ("groq", "decommissioned"): (
        400,
        {
            "error": {
                "message": "The model `llama-3.3-70b-versatile` has been decommissioned "
                "and is no longer supported. Please refer to "
                "https://console.groq.com/docs/deprecations for a recommendation on "
                "which model to use instead.",
                "type": "invalid_request_error",
                "code": "model_decommissioned",
            }
        },
    ),
    ("groq", "not_found"): (
        404,
        {
            "error": {
                "message": "The model `llama-3.3-70b-versatile` does not exist or you do "
                "not have access to it.",
                "type": "invalid_request_error",
                "code": "model_not_found",
            }
        },
    ),
    ("cohere", "not_found"): (404, {"message": COHERE_NOT_FOUND}),
}


@pytest.mark.parametrize(
    ("vendor", "style"),
    [
        ("openai", None),
        ("groq", None),
        ("groq", "not_found"),
        ("gemini", None),
        ("cohere", None),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_a_retired_model_answers_as_its_vendor_does(
    sim: Simulator, vendor: Vendor, style: RetireStyle | None, stream: bool
) -> None:
    model = RETIRED[vendor]
    if style is not None:
        sim.retire(model, vendor=vendor, style=style)
    llm = vendor_model(sim, vendor, f"key-{vendor}", model)
    call = (lambda: list(llm.stream("hi"))) if stream else (lambda: llm.invoke("hi"))
    with pytest.raises(Exception) as caught:  # noqa: PT011 - vendor-specific types
        call()

    status, body = error_of(vendor, caught.value)
    if vendor == "gemini":
        # The google-genai SDK decides the API version; the message names it.
        version = "v1beta" if "v1beta" in str(caught.value.__cause__) else "v1"
        assert (status, body) == (404, gemini_not_found(version))
    else:
        wanted = style or ("decommissioned" if vendor == "groq" else "not_found")
        assert (status, body) == EXPECTED[(vendor, wanted)]
    stats = sim.model_stats(model, vendor=vendor)
    assert (stats.received, stats.model_unavailable, stats.served) == (1, 1, 0)
    assert sim.requests_for_model(model) == 1
    key_stats = sim.stats(f"key-{vendor}")
    assert (key_stats.model_unavailable, key_stats.refused, key_stats.served) == (1, 0, 0)
    assert sim.requests(f"key-{vendor}")[-1].status == status


def test_gemini_retired_on_v1beta_names_v1beta(sim: Simulator) -> None:
    raw = httpx.post(
        f"{sim.url}/v1beta/models/gemini-2.5-flash:generateContent",
        headers={"x-goog-api-key": "key-gemini"},
        json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
    )
    assert raw.status_code == 404
    assert raw.json() == gemini_not_found("v1beta")


@pytest.mark.parametrize("vendor", VENDORS)
def test_gone_style_is_410_on_every_wire(sim: Simulator, vendor: Vendor) -> None:
    model = SERVED[vendor][0]
    sim.retire(model, vendor=vendor, successor=SERVED[vendor][1], style="gone")
    with pytest.raises(Exception) as caught:  # noqa: PT011
        vendor_model(sim, vendor, f"key-{vendor}", model).invoke("hi")
    status, body = error_of(vendor, caught.value)
    assert status == 410
    assert body["error"]["code"] == "gone"
    assert f"Use `{SERVED[vendor][1]}` instead." in body["error"]["message"]
    assert model not in [m.id for m in sim.models(vendor)]


@pytest.mark.parametrize("vendor", VENDORS)
def test_unknown_model_is_the_vendors_404_when_models_are_configured(
    sim: Simulator, vendor: Vendor
) -> None:
    with pytest.raises(Exception) as caught:  # noqa: PT011
        vendor_model(sim, vendor, f"key-{vendor}", "no-such-model").invoke("hi")
    status, _ = error_of(vendor, caught.value)
    assert status == 404  # even on Groq: "decommissioned" is for models it had
    assert sim.model_stats("no-such-model").model_unavailable == 1
    assert vendor_model(sim, vendor, f"key-{vendor}", SERVED[vendor][0]).invoke("hi").text


def test_retired_requests_use_no_quota_and_faults_still_come_first(clock: FakeClock) -> None:
    models: dict[Vendor, list[str | SimModel]] = {"groq": ["openai/gpt-oss-20b"]}
    with Simulator([SimKey("k", "groq", rpm=1)], models=models, clock=clock) as sim:
        sim.retire("openai/gpt-oss-20b", vendor="groq")
        retired = vendor_model(sim, "groq", "k", "openai/gpt-oss-20b")
        sim.inject("k", Fault.SERVER_ERROR)
        with pytest.raises(groq.InternalServerError):
            retired.invoke("hi")  # the injected fault hits the next request, whatever it asks
        for _ in range(3):
            with pytest.raises(groq.BadRequestError):
                retired.invoke("hi")
        sim.reset()  # undoes the retirement, keeps the configured models
        assert retired.invoke("hi").text  # the minute's one request is still there
        assert sim.requests_for_model("openai/gpt-oss-20b", vendor="groq") == 1


def test_model_stats_add_up_over_wires(sim: Simulator) -> None:
    sim.retire("shared-name")  # every wire
    for vendor in ("openai", "cohere"):
        with pytest.raises(Exception):  # noqa: PT011, B017
            vendor_model(sim, vendor, f"key-{vendor}", "shared-name").invoke("hi")
    assert sim.requests_for_model("shared-name") == 2
    assert sim.requests_for_model("shared-name", vendor="cohere") == 1
    assert sim.model_stats("never-asked") == sim.model_stats("never-asked", vendor="groq")


def test_bad_retirement_styles_are_refused(sim: Simulator) -> None:
    with pytest.raises(ValueError, match="only Groq"):
        sim.retire("gpt-4o-mini", vendor="openai", style="decommissioned")
    with pytest.raises(ValueError, match="only Groq"):
        sim.retire("anything", style="decommissioned")  # every wire: not all can
    with pytest.raises(ValueError, match="only Groq"):
        Simulator(models={"cohere": [SimModel("c", retired=True, retired_style="decommissioned")]})
    with pytest.raises(ValueError, match="retired_style"):
        SimModel("m", retired_style="vanished")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="vendor"):
        sim.set_models("mistral", ["m"])  # type: ignore[arg-type]


def test_set_models_and_back_to_every_name(clock: FakeClock) -> None:
    with Simulator([SimKey("g", "gemini")], clock=clock) as sim:
        sim.set_models("gemini", ["models/gemini-3.6-flash"])  # the prefix is dropped
        assert [m.id for m in sim.models("gemini")] == ["gemini-3.6-flash"]
        llm = vendor_model(sim, "gemini", "g", "gemini-3.5-flash")
        with pytest.raises(Exception) as caught:  # noqa: PT011
            llm.invoke("hi")
        assert error_of("gemini", caught.value)[0] == 404
        sim.set_models("gemini", None)
        assert llm.invoke("hi").text
