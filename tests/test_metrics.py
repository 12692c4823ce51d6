"""Prometheus metrics: scraped from /metrics and from a registry, parsed by prometheus_client."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable
from pathlib import Path

import httpx
import pytest
from langchain_groq import ChatGroq
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

import langchain_quota_router
from langchain_quota_router import QuotaRoutedChatModel, Route, metrics
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.quota.failures import FailureKind
from langchain_quota_router.testing import FakeVendorChatModel
from langchain_quota_router.web import create_app

TOKEN = "owner-" + "T0k3n" * 6
SECRET = "gsk_" + "S3cr3tK3y" * 5


@pytest.fixture
def router(clock: FakeClock) -> QuotaRoutedChatModel:
    router = QuotaRoutedChatModel(
        routes=[
            Route(
                FakeVendorChatModel(model="llama", provider="groq"),
                name="groq",
                limits=["3/minute", "100/day"],
                priority=1,
            ),
            Route(
                FakeVendorChatModel(model="flash", provider="google_genai"),
                name="gemini",
                limits=["5/minute", "20/day@America/Los_Angeles"],
                priority=2,
            ),
            Route(
                ChatGroq(model="openai/gpt-oss-20b", api_key=SECRET),
                name="paid",
                limits=["1000 tokens/once"],
                priority=3,
            ),
        ],
        ledger="memory://",
        cache=True,
        clock=clock,
    )
    for i in range(4):  # three fill groq's 3/minute, the fourth falls back to gemini
        router.invoke(f"hello {i}")
    router.invoke("hello 0")  # from the cache
    router.ledger_backend.disable(router.route_map["paid"].key, f"disabled: 401 {SECRET}")
    return router


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a text-format scrape, by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def limit_labels(pool: str, limit: str, metric: str, window: str) -> frozenset[tuple[str, str]]:
    return frozenset({"pool": pool, "limit": limit, "metric": metric, "window": window}.items())


def route_label(name: str) -> frozenset[tuple[str, str]]:
    return frozenset({"route": name}.items())


def check_router_metrics(text: str) -> None:
    """What the fixture's router must show, whichever way it was scraped."""
    found = samples(text)
    minute = limit_labels("groq", "3/minute", "requests", "minute")
    assert found["quota_router_limit_used", minute] == 3
    assert found["quota_router_limit_amount", minute] == 3
    assert found["quota_router_limit_remaining", minute] == 0
    assert found["quota_router_limit_reset_seconds", minute] == 61
    day = limit_labels(
        "gemini", "20/day@America/Los_Angeles", "requests", "day@America/Los_Angeles"
    )
    assert found["quota_router_limit_used", day] == 1
    assert found["quota_router_limit_reset_seconds", day] == 8 * 3600  # midnight in LA
    credit = limit_labels("paid", "1000 tokens/once", "tokens", "once")
    assert found["quota_router_limit_remaining", credit] == 1000
    assert ("quota_router_limit_reset_seconds", credit) not in found  # never resets

    def state(route: str) -> str:
        (kind,) = [
            dict(labels)["quota_router_route_state"]
            for (name, labels), value in found.items()
            if name == "quota_router_route_state" and dict(labels)["route"] == route and value
        ]
        return kind

    assert (state("groq"), state("gemini"), state("paid")) == ("full", "ok", "disabled")
    assert found["quota_router_route_calls_total", route_label("groq")] == 3
    assert found["quota_router_route_calls_total", route_label("gemini")] == 1
    assert found["quota_router_route_calls_total", route_label("paid")] == 0  # from zero
    assert found["quota_router_route_errors_total", route_label("groq")] == 0
    assert found["quota_router_fallbacks_total", frozenset()] == 1
    assert found["quota_router_cache_hits_total", frozenset()] == 1
    info = {
        dict(labels)["route"]: dict(labels) for (name, labels) in found if name.endswith("_info")
    }
    assert info["gemini"] == {
        "route": "gemini",
        "provider": "google_genai",
        "model": "flash",
        "pool": "gemini",
        "priority": "2",
    }
    assert found["quota_router_ledger_read_seconds", frozenset()] >= 0
    assert SECRET not in text


def check_names(families: Iterable[object]) -> None:
    """Prometheus conventions: counters end in _total, units are base units."""
    for family in families:
        name, kind = family.name, family.type  # type: ignore[attr-defined]
        assert name.startswith("quota_router_")
        sample_names = {s.name for s in family.samples}  # type: ignore[attr-defined]
        if kind == "counter":
            assert sample_names <= {f"{name}_total"}
        if "seconds" in name:
            assert name.endswith("_seconds")
        assert "milliseconds" not in name


async def test_metrics_endpoint_of_the_status_page(router: QuotaRoutedChatModel) -> None:
    app = create_app(router, admin_token=TOKEN)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        answer = await client.get("/metrics")
        again = await client.get("/metrics")

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=")
    check_router_metrics(answer.text)
    check_names(text_string_to_metric_families(answer.text))
    assert again.text.count("quota_router_limit_used{") == 2 + 2 + 1  # no duplicates


async def test_openmetrics_for_a_scraper_that_asks_for_it(router: QuotaRoutedChatModel) -> None:
    app = create_app(router, admin_token=TOKEN)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        answer = await client.get(
            "/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"}
        )
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    families = {f.name: f for f in openmetrics_families(answer.text)}
    assert families["quota_router_route_calls"].type == "counter"
    assert families["quota_router_route_state"].type == "stateset"
    assert families["quota_router_route"].type == "info"
    assert families["quota_router_limit_reset_seconds"].unit == "seconds"
    groq = Sample("quota_router_route_calls_total", {"route": "groq"}, 3.0)
    assert groq in families["quota_router_route_calls"].samples


def test_fleet_counters_per_route_from_every_router_on_the_ledger(
    router: QuotaRoutedChatModel, clock: FakeClock, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    # The fixture's routes, counting in a shared file.
    worker = QuotaRoutedChatModel(routes=router.routes, ledger=url, cache=True, clock=clock)
    for i in range(4):  # three fill groq's 3/minute, the fourth falls back to gemini
        worker.invoke(f"fleet hello {i}")
    worker.invoke("fleet hello 0")  # from the cache
    worker.stats.failed("gemini", FailureKind.RATE_LIMIT)
    worker.stats.failed("gemini", FailureKind.TRANSIENT)
    fleet = worker.stats.fleet
    assert fleet is not None
    fleet.flush()
    # Scraped in another process (a viewer that made no call itself).
    viewer = QuotaRoutedChatModel(routes=worker.routes, ledger=url, cache=False, clock=clock)
    registry = CollectorRegistry(auto_describe=True)
    metrics.register(viewer, registry)

    text = generate_latest(registry).decode()
    found = samples(text)

    def fleet_count(name: str, route: str, **labels: str) -> float:
        key = frozenset({"route": route, **labels}.items())
        return found[f"quota_router_fleet_route_{name}_total", key]

    assert fleet_count("calls", "groq") == 3
    assert fleet_count("calls", "gemini") == 1
    assert fleet_count("calls", "paid") == 0  # every route from zero
    assert fleet_count("fallbacks", "gemini") == 1
    assert fleet_count("errors", "gemini", kind="rate_limit") == 1
    assert fleet_count("errors", "gemini", kind="transient") == 1
    assert fleet_count("rate_limited", "gemini") == 1
    assert fleet_count("refused", "groq") == 1  # the fourth call: groq was full
    assert fleet_count("cache_hits", "groq") == 1
    assert fleet_count("input_tokens", "groq") > 0
    assert fleet_count("output_tokens", "gemini") > 0
    assert fleet_count("cost_usd", "groq") == 0
    # This process's own counters stay its own.
    assert found["quota_router_route_calls_total", route_label("groq")] == 0
    check_names(text_string_to_metric_families(text))
    assert SECRET not in text


def test_register_in_a_registry_and_scrape(router: QuotaRoutedChatModel) -> None:
    registry = CollectorRegistry(auto_describe=True)
    collector = metrics.register(router, registry)

    check_router_metrics(generate_latest(registry).decode())

    with pytest.raises(ValueError, match="Duplicated timeseries"):
        metrics.register(router, registry)
    registry.unregister(collector)
    assert generate_latest(registry) == b""


def test_registering_reads_no_ledger(
    router: QuotaRoutedChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable(*args: object, **kwargs: object) -> None:
        raise AssertionError("describe() must not read the ledger")

    monkeypatch.setattr(metrics, "read_status", unreadable)
    registry = CollectorRegistry(auto_describe=True)
    metrics.register(router, registry)  # describe() only
    with pytest.raises(AssertionError, match="must not read"):
        generate_latest(registry)


def test_register_defaults_to_prometheus_clients_registry(router: QuotaRoutedChatModel) -> None:
    from prometheus_client import REGISTRY

    collector = metrics.register(router)
    try:
        assert b"quota_router_limit_used" in generate_latest(REGISTRY)
    finally:
        REGISTRY.unregister(collector)


async def test_mountable_asgi_app(router: QuotaRoutedChatModel) -> None:
    transport = httpx.ASGITransport(app=metrics.make_asgi_app(router))
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        answer = await client.get("/")
    assert answer.status_code == 200
    check_router_metrics(answer.text)
    assert "python_gc" not in answer.text  # only the router's metrics


async def test_metrics_without_prometheus_client_name_the_extra(
    router: QuotaRoutedChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # type: ignore[arg-type]
    monkeypatch.delitem(sys.modules, "langchain_quota_router.metrics")
    monkeypatch.delattr(langchain_quota_router, "metrics")
    with pytest.raises(ImportError, match=r"pip install 'langchain-quota-router\[metrics\]'"):
        importlib.import_module("langchain_quota_router.metrics")
    transport = httpx.ASGITransport(app=create_app(router, admin_token=TOKEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        answer = await client.get("/metrics")
        assert (await client.get("/status.json")).status_code == 200
    assert answer.status_code == 501
    assert "pip install 'langchain-quota-router[metrics]'" in answer.text
