"""The status page: JSON and HTML in-process, its access rules, uvicorn, and a real Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.client
import http.server
import json
import logging
import os
import re
import shutil
import socket
import struct
import threading
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_groq import ChatGroq
from support.browser import DevTools, browser, run_chromium

from langchain_quota_router import ConfigurationError, QuotaRoutedChatModel, Route
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.testing import FakeVendorChatModel
from langchain_quota_router.web import (
    ADMIN_TOKEN_ENV,
    SESSION_COOKIE,
    StatusApp,
    StatusServer,
    create_app,
    make_server,
    serve,
    status_snapshot,
)

SECRET = "gsk_" + "S3cr3tK3y" * 5  # looks like a Groq key; must never be shown
TOKEN = "owner-" + "T0k3n" * 6  # the admin token of every app here
OWNER = {"authorization": f"Bearer {TOKEN}"}
FORM = {"content-type": "application/x-www-form-urlencoded"}


def make_router(clock: FakeClock, ledger: str = "memory://") -> QuotaRoutedChatModel:
    return QuotaRoutedChatModel(
        routes=[
            Route(
                FakeVendorChatModel(model="openai/gpt-oss-120b", provider="groq"),
                name="groq",
                limits=["3/minute", "2000 tokens/minute", "100/day"],
                priority=1,
            ),
            Route(
                FakeVendorChatModel(model="gemini-3.5-flash", provider="google_genai"),
                name="gemini",
                limits=["5/minute", "20/day@America/Los_Angeles"],
                priority=2,
            ),
            Route(
                ChatGroq(model="openai/gpt-oss-20b", api_key=SECRET),
                name="groq-small",
                limits=["1000 tokens/once"],
                priority=3,
            ),
        ],
        ledger=ledger,
        cache=False,
        clock=clock,
    )


@pytest.fixture
def router(clock: FakeClock) -> QuotaRoutedChatModel:
    return make_router(clock)


@pytest.fixture
def app(router: QuotaRoutedChatModel) -> StatusApp:
    return create_app(router, admin_token=TOKEN)


@contextlib.asynccontextmanager
async def connect(
    app: Any,
    base_url: str = "http://testserver",
    client: tuple[str, int] = ("127.0.0.1", 50000),
    headers: dict[str, str] | None = None,
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for ``app`` in-process; ``client`` is the caller's address."""
    transport = httpx.ASGITransport(app=app, client=client)
    async with httpx.AsyncClient(transport=transport, base_url=base_url, headers=headers) as c:
        yield c


@pytest.fixture
async def client(app: StatusApp) -> AsyncIterator[httpx.AsyncClient]:
    """The owner, on this machine, sending the token as a bearer credential."""
    async with connect(app, headers=OWNER) as c:
        yield c


@pytest.fixture
async def local(app: StatusApp) -> AsyncIterator[httpx.AsyncClient]:
    """Anyone on this machine, without the token."""
    async with connect(app) as c:
        yield c


def pool(snapshot: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in snapshot["pools"] if p["pool"] == name)


def route(snapshot: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in snapshot["routes"] if r["name"] == name)


def limit(snapshot: dict[str, Any], pool_name: str, text: str) -> dict[str, Any]:
    return next(x for x in pool(snapshot, pool_name)["limits"] if x["limit"] == text)


def key_of(router: QuotaRoutedChatModel, name: str) -> str:
    """The identity the ledger disables a route's key by (not the key itself)."""
    return router.route_map[name].key


def disable(router: QuotaRoutedChatModel, name: str, reason: str) -> None:
    """Disable a route's key, as a 401 from its vendor would."""
    router.ledger_backend.disable(key_of(router, name), reason)


def groq_used(router: QuotaRoutedChatModel) -> int:
    """Requests groq's 3/minute holds."""
    return next(u.used for u in router.usage() if str(u.limit) == "3/minute")


# ------------------------------------------------------------------ JSON


async def test_status_json_reports_usage_routes_and_stats(
    router: QuotaRoutedChatModel, local: httpx.AsyncClient, clock: FakeClock
) -> None:
    router.invoke("one")
    router.invoke("two")

    answer = await local.get("/status.json")

    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    data = answer.json()
    assert set(data) >= {"routes", "pools", "holds", "stats"}
    minute = limit(data, "groq", "3/minute")
    assert minute["used"] == 2
    assert minute["amount"] == 3
    assert minute["remaining"] == 1
    assert minute["percent"] == pytest.approx(66.67)
    # Sliding window: free again one minute after the bucket of the last call.
    assert minute["resets_at"] == "2026-01-01T00:01:01+00:00"
    day = limit(data, "gemini", "20/day@America/Los_Angeles")
    assert day["used"] == 0
    # Midnight in Los Angeles is 08:00 UTC.
    assert day["resets_at"] == "2026-01-01T08:00:00+00:00"
    once = limit(data, "groq-small", "1000 tokens/once")
    assert once["resets_at"] is None
    assert [r["name"] for r in data["routes"]] == ["groq", "gemini", "groq-small"]
    assert {r["state"] for r in data["routes"]} == {"ok"}
    assert route(data, "groq")["calls"] == 2
    assert data["holds"] == []
    assert data["stats"] == router.get_stats()
    assert data["stats"]["total_calls"] == 2
    assert data["now"] == "2026-01-01T00:00:00+00:00"


async def test_route_states_full_blocked_and_disabled(
    router: QuotaRoutedChatModel, local: httpx.AsyncClient, clock: FakeClock
) -> None:
    for _ in range(3):
        router.invoke("fill groq")
    ledger = router.ledger_backend
    ledger.block("gemini", clock.now() + 42, "rate_limit: 429 slow down")
    ledger.disable(key_of(router, "groq-small"), f"disabled: 401 Invalid API Key {SECRET}")

    data = (await local.get("/status.json")).json()

    groq = route(data, "groq")
    assert groq["state"] == "full"
    assert groq["until"] == "2026-01-01T00:01:01+00:00"
    assert "3/minute is used up" in groq["reason"]
    gemini = route(data, "gemini")
    assert gemini["state"] == "blocked"
    assert gemini["until"] == "2026-01-01T00:00:42+00:00"
    assert gemini["reason"] == "rate_limit: 429 slow down"
    small = route(data, "groq-small")
    assert small["state"] == "disabled"
    assert small["until"] is None
    kinds = {(h["kind"], h["pool"], tuple(h["routes"])) for h in data["holds"]}
    assert kinds == {("blocked", "gemini", ("gemini",)), ("disabled", None, ("groq-small",))}

    clock.advance(61)
    data = (await local.get("/status.json")).json()
    assert route(data, "groq")["state"] == "ok"
    assert route(data, "gemini")["state"] == "ok"
    assert route(data, "groq-small")["state"] == "disabled"


async def test_api_keys_are_never_shown(
    router: QuotaRoutedChatModel, client: httpx.AsyncClient
) -> None:
    disable(router, "groq-small", f"disabled: 401 Invalid API Key {SECRET}")

    page = (await client.get("/")).text
    data = (await client.get("/status.json")).text
    metrics = (await client.get("/metrics")).text

    for body in (page, data, metrics):
        assert SECRET not in body
    assert "[REDACTED]" in data


async def test_keys_no_pattern_catches_are_masked_too(clock: FakeClock) -> None:
    plain = "hunter2-hunter2"  # no vendor prefix: only knowing the key finds it
    router = QuotaRoutedChatModel(
        routes=[Route(ChatGroq(model="m", api_key=plain), name="groq", limits=["1/minute"])],
        ledger="memory://",
        cache=False,
        clock=clock,
    )
    disable(router, "groq", f"disabled: key {plain} was revoked")
    async with connect(create_app(router, admin_token=TOKEN), headers=OWNER) as c:
        bodies = [
            (await c.get("/")).text,
            (await c.get("/status.json")).text,
            (await c.post("/enable", data={"route": plain})).text,
        ]
    for body in bodies:
        assert plain not in body
    assert "disabled: key [REDACTED] was revoked" in bodies[1]


def test_status_snapshot_reads_a_ledger_shared_with_another_process(
    tmp_path: Path, clock: FakeClock
) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    worker = make_router(clock, url)
    viewer = make_router(clock, url)
    worker.invoke("spent elsewhere")

    snapshot = status_snapshot(viewer)

    assert limit(snapshot, "groq", "3/minute")["used"] == 1
    assert snapshot["ledger"] == url
    assert snapshot["stats"]["total_calls"] == 0  # counters are per process


# ------------------------------------------------------------------ HTML


async def test_page_shows_bars_states_and_buttons(
    router: QuotaRoutedChatModel, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    for _ in range(3):
        router.invoke("fill groq")
    disable(router, "groq-small", "disabled: 401")

    answer = await client.get("/")

    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    page = answer.text
    assert "<title>Quota router status</title>" in page
    # One bar per pool and limit, filled to the percentage used.
    bars = re.findall(r'role="progressbar" aria-label="([^"]+)"[^>]*aria-valuenow="(\d+)"', page)
    assert ("3/minute", "100") in bars
    assert ("100/day", "3") in bars
    assert len(bars) == 3 + 2 + 1
    assert 'style="width:100.0%"' in page
    # Each route's state.
    assert re.search(r'data-route="groq" data-state="full"', page)
    assert re.search(r'data-route="gemini" data-state="ok"', page)
    assert re.search(r'data-route="groq-small" data-state="disabled"', page)
    assert ">full</span> resets <time" in page
    # A Reset per pool, an Enable only for the disabled route, each carrying a token
    # derived from the admin token (never the token itself).
    assert page.count('action="reset"') == 3
    assert page.count('action="enable"') == 1
    enable_form = page[page.index('action="enable"') :][:400]
    assert 'name="route" value="groq-small"' in enable_form
    assert re.search(r'name="token" value="[0-9]+\.[0-9a-f]{64}"', enable_form)
    assert TOKEN not in page
    assert 'action="login"' not in page
    # Self-contained: no scripts, stylesheets, images or fonts from anywhere.
    assert "<script" not in page
    assert "<link" not in page
    assert not re.search(r"(src|href)=\"?(https?:)?//", page)
    assert "url(" not in page


async def test_page_without_the_token_shows_no_buttons_but_a_sign_in_form(
    router: QuotaRoutedChatModel, local: httpx.AsyncClient
) -> None:
    disable(router, "groq-small", "disabled: 401")

    page = (await local.get("/")).text

    assert re.search(r'data-route="groq-small" data-state="disabled"', page)
    assert 'action="reset"' not in page
    assert 'action="enable"' not in page
    assert 'name="token"' in page
    assert 'type="password"' in page
    assert 'action="login"' in page


async def test_page_charts_each_pools_use_over_time_in_inline_svg(
    router: QuotaRoutedChatModel, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    for minute in range(0, 180, 20):  # a call every 20 minutes for three hours
        clock.set(1_767_225_600.0 + minute * 60)
        router.invoke(f"question {minute}")
    clock.advance(600)

    page = (await client.get("/")).text

    charts = re.findall(r'<svg class="chart" data-pool="([^"]+)" role="img"', page)
    assert charts == ["groq", "gemini", "groq-small"]
    groq = page[page.index('<svg class="chart" data-pool="groq"') :]
    groq = groq[: groq.index("</svg>")]
    lines = dict(
        re.findall(r'<polyline data-limit="([^"]+)" stroke="[^"]+" points="([^"]+)"', groq)
    )
    assert set(lines) == {"3/minute", "2000 tokens/minute", "100/day"}
    # The day's line climbs to 9 calls of 100: its last point is the highest.
    day = [tuple(map(float, p.split(","))) for p in lines["100/day"].split()]
    assert len(day) >= 100
    heights = [y for _, y in day]
    assert heights[-1] == min(heights) < heights[0]  # SVG y grows downwards
    assert "<title>100/day: 9% now</title>" in groq
    # The chart sits in the pool's section, beside its bars; its legend names the limits.
    section = page[page.index('<section class="pool" data-pool="groq"') :]
    section = section[: section.index("</section>")]
    assert "<svg" in section
    assert 'role="progressbar"' in section
    assert '<div class="legend">' in section
    # Drawn on the server: no script, no outside resource, nothing the CSP forbids.
    assert "<script" not in page
    assert "<image" not in page
    assert 'href="http' not in page


async def test_page_shows_the_fleets_counters_not_only_this_process(
    clock: FakeClock, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    worker = make_router(clock, url)
    for _ in range(4):  # three on groq, the fourth falls back to gemini
        worker.invoke("busy worker")
    fleet = worker.stats.fleet
    assert fleet is not None
    fleet.flush()
    viewer = make_router(clock, url)  # the page's own process, which made no call

    async with connect(create_app(viewer, admin_token=TOKEN), headers=OWNER) as c:
        page = (await c.get("/")).text

    assert 'data-counters="fleet"' in page
    stats = page[page.index('<div class="stats"') :]
    assert "<b>4</b>calls" in stats
    assert "<b>1</b>fallbacks" in stats
    assert "this process's" not in page
    assert "Counters are the fleet's" in page
    assert re.search(r'data-route="groq" data-state="full"><td><b>groq</b></td>.*?<td>3</td>', page)


async def test_head_and_index_html(client: httpx.AsyncClient) -> None:
    head = await client.head("/")
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) > 1000
    assert (await client.get("/index.html")).status_code == 200


async def test_page_escapes_what_it_shows(clock: FakeClock) -> None:
    router = QuotaRoutedChatModel(
        routes=[Route(FakeVendorChatModel(), name="<b>x</b>&", limits=["1/minute"])],
        ledger="memory://",
        cache=False,
        clock=clock,
    )
    router.ledger_backend.block("<b>x</b>&", clock.now() + 5, "<script>alert(1)</script>")
    async with connect(create_app(router, admin_token=TOKEN), headers=OWNER) as c:
        page = (await c.get("/")).text
    assert "<script>" not in page
    assert "<b>x</b>" not in page
    assert "&lt;b&gt;x&lt;/b&gt;&amp;" in page


# ------------------------------------------------------------------ actions


async def test_reset_clears_the_pool_and_its_block_then_redirects(
    router: QuotaRoutedChatModel, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    for _ in range(3):
        router.invoke("fill groq")
    router.ledger_backend.block("groq", clock.now() + 300, "quota_exhausted: daily")

    answer = await client.post("/reset", data={"route": "groq"})

    assert answer.status_code == 303
    assert answer.headers["location"] == "/?done=reset&route=groq"
    assert router.ledger_backend.holds(clock.now()) == []
    assert all(u.used == 0 for u in router.usage() if u.pool == "groq")
    page = (await client.get(answer.headers["location"])).text
    assert "Pool &#x27;groq&#x27; was reset" in page
    assert re.search(r'data-route="groq" data-state="ok"', page)


async def test_enable_lifts_a_disabled_key(
    router: QuotaRoutedChatModel, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    disable(router, "groq-small", "disabled: 401")

    answer = await client.post("/enable", data={"route": "groq-small"})

    assert answer.status_code == 303
    assert router.ledger_backend.holds(clock.now()) == []
    page = (await client.get(answer.headers["location"])).text
    assert "Route &#x27;groq-small&#x27; was enabled." in page
    assert 'action="enable"' not in page


async def test_actions_take_json_too(
    router: QuotaRoutedChatModel, local: httpx.AsyncClient, clock: FakeClock
) -> None:
    disable(router, "groq-small", "disabled: 401")
    answer = await local.post("/enable", json={"route": "groq-small", "token": TOKEN})
    assert answer.status_code == 303
    assert router.ledger_backend.holds(clock.now()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "form field 'route' is required"),
        ({"data": {"other": "x"}}, "form field 'route' is required"),
        ({"data": {"route": "  "}}, "form field 'route' is empty"),
        ({"content": b"route=groq&route=gemini"}, "give form field 'route' once"),
        ({"content": b"route=%ff"}, "cannot read the form"),
        ({"content": b"{", "headers": {"content-type": "application/json"}}, "not valid JSON"),
        ({"json": ["groq"]}, "send a JSON object"),
        ({"json": {"route": 3}}, "field 'route' must be a string"),
        ({"content": b"groq", "headers": {"content-type": "text/plain"}}, "not text/plain"),
    ],
)
async def test_bad_input_is_400_with_a_clear_message(
    client: httpx.AsyncClient, kwargs: dict[str, Any], message: str
) -> None:
    answer = await client.post("/reset", **kwargs)
    assert answer.status_code == 400
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"
    assert message in answer.text


async def test_unknown_route_is_404(
    router: QuotaRoutedChatModel, client: httpx.AsyncClient
) -> None:
    router.invoke("spend")
    for action in ("/reset", "/enable"):
        answer = await client.post(action, data={"route": "mistral"})
        assert answer.status_code == 404
        assert "no route named 'mistral'" in answer.text
        assert "gemini, groq, groq-small" in answer.text
    assert sum(u.used for u in router.usage()) > 0


async def test_wrong_paths_methods_and_sizes(client: httpx.AsyncClient) -> None:
    assert (await client.get("/nope")).status_code == 404
    wrong = await client.get("/reset")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    assert (await client.post("/status.json")).status_code == 405
    big = await client.post("/reset", content=b"route=" + b"x" * 70_000)
    assert big.status_code == 413


async def test_lifespan_and_other_scopes(app: StatusApp) -> None:
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    with pytest.raises(RuntimeError, match="HTTP only"):
        await app({"type": "websocket"}, receive, send)


async def test_the_app_mounts_under_a_path_prefix(router: QuotaRoutedChatModel) -> None:
    transport = httpx.ASGITransport(app=create_app(router, admin_token=TOKEN), root_path="/quota")
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=OWNER
    ) as c:
        assert (await c.get("/quota/status.json")).status_code == 200
        answer = await c.post("/quota/reset", data={"route": "groq"})
        assert answer.headers["location"] == "/quota/?done=reset&route=groq"
        signed = await c.post("/quota/login", data={"token": TOKEN})
        assert "Path=/quota;" in signed.headers["set-cookie"]


# ------------------------------------------------------ only the owner changes


async def test_a_post_without_the_token_changes_nothing(
    router: QuotaRoutedChatModel, local: httpx.AsyncClient, clock: FakeClock
) -> None:
    router.invoke("spend")
    disable(router, "groq-small", "disabled: 401")
    attempts = [
        {"data": {"route": "groq"}},  # a plain form post
        {"data": {"route": "groq", "token": "wrong-" + TOKEN}},
        {"data": {"route": "groq", "token": TOKEN[:-1]}},
        {"data": {"route": "groq", "token": "ünïcode"}},  # compared as bytes, no crash
        {"data": {"route": "groq", "token": [TOKEN, TOKEN]}},
        {"data": {"route": "groq"}, "headers": {"authorization": "Bearer nope"}},
        {"data": {"route": "groq"}, "headers": {"authorization": f"Basic {TOKEN}"}},
        {"json": {"route": "groq"}},
    ]
    for kwargs in attempts:
        for action in ("/reset", "/enable"):
            answer = await local.post(action, **kwargs)
            assert answer.status_code == 403, (action, kwargs)
            assert "need the admin token" in answer.text
    assert groq_used(router) == 1
    assert router.ledger_backend.holds(clock.now()) != []


async def test_a_session_cookie_alone_does_not_change_anything(
    router: QuotaRoutedChatModel, local: httpx.AsyncClient
) -> None:
    router.invoke("spend")
    signed = await local.post("/login", data={"token": TOKEN})
    assert signed.status_code == 303
    assert SESSION_COOKIE in local.cookies

    # The browser would send the cookie with a forged form; the form lacks the token.
    answer = await local.post("/reset", data={"route": "groq"})

    assert answer.status_code == 403
    assert groq_used(router) == 1


async def test_sign_in_then_the_pages_own_forms_reset(
    router: QuotaRoutedChatModel, local: httpx.AsyncClient
) -> None:
    router.invoke("spend")
    wrong = await local.post("/login", data={"token": "guess-" + TOKEN})
    assert wrong.status_code == 403
    assert SESSION_COOKIE not in local.cookies

    signed = await local.post("/login", data={"token": TOKEN})

    assert signed.status_code == 303
    assert signed.headers["location"] == "/?done=login"
    cookie = signed.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    for flag in ("HttpOnly", "SameSite=Strict", "Path=/"):
        assert flag in cookie
    assert TOKEN not in cookie
    page = (await local.get("/?done=login")).text
    assert "Signed in" in page
    form = re.search(r'<form method="post" action="reset">(.*?)</form>', page)
    assert form is not None
    fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', form.group(1)))
    assert fields["route"] == "groq"

    answer = await local.post("/reset", data=fields)

    assert answer.status_code == 303
    assert groq_used(router) == 0
    out = await local.post("/logout")
    assert out.status_code == 303
    assert "Max-Age=0" in out.headers["set-cookie"]
    assert 'action="reset"' not in (await local.get("/")).text


async def test_dns_rebinding_host_and_origin_both_the_attackers_is_refused(
    router: QuotaRoutedChatModel, app: StatusApp
) -> None:
    router.invoke("spend")
    # The attacker's name now resolves to 127.0.0.1: the browser connects locally
    # and sends the attacker's name as Host and as Origin. Even with the token.
    evil = {"host": "rebind.attacker.example:8765", "origin": "http://rebind.attacker.example:8765"}
    async with connect(app, base_url="http://127.0.0.1:8765", headers=evil) as c:
        for path in ("/", "/status.json", "/metrics"):
            answer = await c.get(path)
            assert answer.status_code == 403, path
            assert "not a name this page answers to" in answer.text
            assert "groq" not in answer.text
        answer = await c.post("/reset", data={"route": "groq", "token": TOKEN})
        assert answer.status_code == 403
        assert (await c.post("/login", data={"token": TOKEN})).status_code == 403
    assert groq_used(router) == 1


@pytest.mark.parametrize(
    ("base_url", "host", "allowed"),
    [
        ("http://127.0.0.1:8765", "127.0.0.1:8765", True),
        ("http://127.0.0.1:8765", "localhost:8765", True),  # loopback aliases
        ("http://127.0.0.1:8765", "LOCALHOST.", True),
        ("http://[::1]:8765", "[::1]:8765", True),
        ("http://192.0.2.10:8765", "192.0.2.10:8765", True),  # the bound address
        ("http://192.0.2.10:8765", "localhost:8765", False),  # not loopback
        ("http://127.0.0.1:8765", "127.0.0.1.nip.io:8765", False),
        ("http://127.0.0.1:8765", "localhost:8765@evil", False),
        ("http://127.0.0.1:8765", "", False),
    ],
)
async def test_the_host_header_must_name_the_bound_address(
    app: StatusApp, base_url: str, host: str, allowed: bool
) -> None:
    async with connect(app, base_url=base_url, headers={**OWNER, "host": host}) as c:
        answer = await c.get("/status.json")
    assert (answer.status_code == 200) is allowed


async def test_allowed_hosts_let_other_names_in(router: QuotaRoutedChatModel) -> None:
    app = create_app(router, admin_token=TOKEN, allowed_hosts=["Status.Example.org"])
    async with connect(app, headers={**OWNER, "host": "status.example.org"}) as c:
        assert (await c.get("/status.json")).status_code == 200
    async with connect(app, headers={**OWNER, "host": "other.example.org"}) as c:
        assert (await c.get("/status.json")).status_code == 403
    anything = create_app(router, admin_token=TOKEN, allowed_hosts=["*"])
    async with connect(anything, headers={**OWNER, "host": "other.example.org"}) as c:
        assert (await c.get("/status.json")).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "null"},  # sandboxed frame, file: or data: page
        {"origin": "null", "sec-fetch-site": "same-origin"},
        {"origin": "https://evil.example"},
        {"origin": "http://testserver:9999"},  # same host, another port: another origin
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
        {"referer": "https://evil.example/page"},
        {"origin": "http://[bad"},
    ],
)
async def test_cross_site_posts_are_refused_even_with_the_token(
    router: QuotaRoutedChatModel, client: httpx.AsyncClient, clock: FakeClock, headers: Any
) -> None:
    disable(router, "groq-small", "disabled: 401")
    for action, data in (
        ("/enable", {"route": "groq-small", "token": TOKEN}),
        ("/login", {"token": TOKEN}),
    ):
        answer = await client.post(action, data=data, headers=headers)
        assert answer.status_code == 403, action
        assert "cross-site requests may not change quotas" in answer.text
    assert router.ledger_backend.holds(clock.now()) != []


async def test_same_origin_posts_are_accepted(
    router: QuotaRoutedChatModel, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    disable(router, "groq-small", "disabled: 401")
    same = await client.post(
        "/enable",
        data={"route": "groq-small"},
        headers={
            "origin": "http://testserver",
            "sec-fetch-site": "same-origin",
            "referer": "http://testserver/",
        },
    )
    assert same.status_code == 303
    assert router.ledger_backend.holds(clock.now()) == []


async def test_every_response_forbids_framing_and_scripts(
    client: httpx.AsyncClient, local: httpx.AsyncClient
) -> None:
    answers = [
        await client.get("/"),
        await client.get("/status.json"),
        await client.get("/metrics"),
        await client.get("/nope"),
        await client.get("/reset"),
        await client.post("/reset", data={"route": "groq"}),
        await local.post("/reset", data={"route": "groq"}),
        await client.get("/", headers={"host": "evil.example"}),
        await client.post("/login", data={"token": TOKEN}),
    ]
    assert {a.status_code for a in answers} == {200, 303, 403, 404, 405}
    for answer in answers:
        assert answer.headers["x-frame-options"] == "DENY"
        policy = answer.headers["content-security-policy"]
        directives = {d.split()[0]: d.split()[1:] for d in policy.split("; ")}
        assert directives["frame-ancestors"] == ["'none'"]
        assert directives["default-src"] == ["'none'"]
        assert "script-src" not in directives  # falls back to 'none': no JavaScript
        assert directives["form-action"] == ["'self'"]
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["cache-control"] == "no-store"


async def test_a_failing_ledger_is_a_500_with_the_same_headers(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"ledger down, key {SECRET}")

    monkeypatch.setattr("langchain_quota_router.web.app.status_snapshot", broken)
    answer = await client.get("/status.json")
    assert answer.status_code == 500
    assert answer.headers["x-frame-options"] == "DENY"
    assert SECRET not in answer.text
    assert "ledger down" in caplog.text
    assert SECRET not in caplog.text


async def test_reads_from_another_machine_need_the_token(app: StatusApp) -> None:
    remote = ("198.51.100.7", 40000)
    async with connect(app, client=remote) as c:
        for path in ("/status.json", "/metrics"):
            answer = await c.get(path)
            assert answer.status_code == 401, path
            assert answer.headers["www-authenticate"].startswith("Bearer")
            assert "groq" not in answer.text
        page = await c.get("/")
        assert page.status_code == 401
        assert 'action="login"' in page.text
        assert "groq" not in page.text
        # A browser signs in; then its cookie reads.
        assert (await c.post("/login", data={"token": TOKEN})).status_code == 303
        assert (await c.get("/status.json")).status_code == 200
    async with connect(app, client=remote, headers=OWNER) as c:
        assert (await c.get("/metrics")).status_code == 200  # Prometheus' authorization
    # Through a proxy on this machine: the forwarding header says it came from afar.
    async with connect(app, headers={"x-forwarded-for": "198.51.100.7"}) as c:
        assert (await c.get("/status.json")).status_code == 401


async def test_open_reads_overrides_the_rule(router: QuotaRoutedChatModel) -> None:
    closed = create_app(router, admin_token=TOKEN, open_reads=False)
    async with connect(closed) as c:
        assert (await c.get("/status.json")).status_code == 401
    opened = create_app(router, admin_token=TOKEN, open_reads=True)
    async with connect(opened, client=("198.51.100.7", 1)) as c:
        assert (await c.get("/status.json")).status_code == 200
        # Reading is open; changing still is not.
        assert (await c.post("/reset", data={"route": "groq"})).status_code == 403


def test_admin_token_comes_from_the_argument_the_environment_or_is_generated(
    router: QuotaRoutedChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    generated = create_app(router)
    assert generated.token_generated
    assert len(generated.admin_token) >= 32
    assert create_app(router).admin_token != generated.admin_token
    monkeypatch.setenv(ADMIN_TOKEN_ENV, TOKEN)
    from_env = create_app(router)
    assert (from_env.admin_token, from_env.token_generated) == (TOKEN, False)
    assert create_app(router, admin_token="x" * 16).admin_token == "x" * 16
    with pytest.raises(ConfigurationError, match="at least 16 characters"):
        create_app(router, admin_token="short")
    monkeypatch.setenv(ADMIN_TOKEN_ENV, "short")
    with pytest.raises(ConfigurationError, match=ADMIN_TOKEN_ENV):
        create_app(router)


# ------------------------------------------------------------------ uvicorn


@contextlib.contextmanager
def running(router: QuotaRoutedChatModel, **options: Any) -> Iterator[StatusServer]:
    """The status page on uvicorn on a free loopback port, in a thread."""
    server = make_server(router, port=0, admin_token=TOKEN, **options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
        assert not thread.is_alive()


def request(
    server: StatusServer, method: str, path: str, body: str | None = None, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    host, port = server.server_address
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        answer = conn.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        conn.close()


def test_uvicorn_serves_the_app(router: QuotaRoutedChatModel, clock: FakeClock) -> None:
    router.invoke("spend")
    disable(router, "groq-small", "disabled: 401")
    with running(router) as server:
        assert server.url == f"http://127.0.0.1:{server.server_address[1]}/"
        with urllib.request.urlopen(f"{server.url}status.json", timeout=10) as answer:
            data = json.load(answer)
            assert answer.headers["x-frame-options"] == "DENY"
            assert "server" not in answer.headers
        assert limit(data, "groq", "3/minute")["used"] == 1
        with urllib.request.urlopen(server.url, timeout=10) as answer:
            assert answer.headers["content-type"] == "text/html; charset=utf-8"
            assert 'data-route="groq-small" data-state="disabled"' in answer.read().decode()

        status, _, _ = request(server, "POST", "/enable", "route=groq-small", **FORM)
        assert status == 403
        status, headers, _ = request(server, "POST", "/enable", "route=groq-small", **FORM, **OWNER)
        assert status == 303
        assert headers["location"] == "/?done=enable&route=groq-small"
        assert router.ledger_backend.holds(clock.now()) == []

        status, _, body = request(server, "POST", "/reset", "nothing=here", **OWNER)
        assert status == 400
        assert b"form field 'route' is required" in body
        status, headers, body = request(server, "HEAD", "/")
        assert status == 200
        assert body == b""
        assert int(headers["content-length"]) > 1000
        status, _, _ = request(server, "GET", "/status.json", Host="evil.example")
        assert status == 403


def test_serve_prints_the_address_and_a_generated_token_once(
    router: QuotaRoutedChatModel,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    served: list[StatusServer] = []

    def interrupted(self: StatusServer) -> None:
        served.append(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(StatusServer, "serve_forever", interrupted)

    serve(router, port=0)

    (server,) = served
    err = capsys.readouterr().err
    assert f"http://127.0.0.1:{server.server_address[1]}/" in err
    assert err.count(server.app.admin_token) == 1
    assert server.app.token_generated
    assert server.socket.fileno() == -1  # closed on the way out

    monkeypatch.setenv(ADMIN_TOKEN_ENV, TOKEN)
    serve(router, port=0)
    assert TOKEN not in capsys.readouterr().err


def test_without_uvicorn_the_server_names_the_extra(
    router: QuotaRoutedChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "uvicorn", None)
    with pytest.raises(ImportError, match=r"pip install 'langchain-quota-router\[web\]'"):
        make_server(router, port=0)
    create_app(router, admin_token=TOKEN)  # the ASGI app itself needs no server


# --------------------------------------------------------------- Chromium


@pytest.fixture
def chromium() -> str:
    """The Chromium binary; skipped without one, except under CI where it must exist."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    message = "Chromium is not installed (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}: CI must run the browser tests")
    pytest.skip(f"{message}: browser tests skipped")


@pytest.fixture
def devtools_client() -> None:
    """The click tests drive Chromium over DevTools with the websockets package."""
    try:
        import websockets.sync.client  # noqa: F401  (used by browser())
    except ImportError:
        message = "the click tests drive Chromium over DevTools with the websockets package"
        if os.environ.get("CI"):
            pytest.fail(f"{message}, which is not installed")
        pytest.skip(f"{message}: pip install websockets")


def busy_router(clock: FakeClock) -> QuotaRoutedChatModel:
    router = make_router(clock)
    for _ in range(4):  # three fill groq's 3/minute; the fourth falls back to gemini
        router.invoke("hello " * 30)
    router.ledger_backend.block("gemini", clock.now() + 42, "rate_limit: 429 slow down")
    disable(router, "groq-small", "disabled: 401 invalid api key")
    return router


@pytest.mark.slow
def test_chromium_renders_the_page(chromium: str, clock: FakeClock, tmp_path: Path) -> None:
    router = busy_router(clock)
    with running(router) as server:
        dumped = run_chromium(chromium, tmp_path / "profile", "--dump-dom", server.url)
        shot = tmp_path / "status.png"
        drawn = run_chromium(
            chromium,
            tmp_path / "profile",
            f"--screenshot={shot}",
            "--window-size=1000,800",
            "--hide-scrollbars",
            server.url,
        )

    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = dumped.stdout
    assert "<title>Quota router status</title>" in dom
    assert 'data-route="groq" data-state="full"' in dom
    assert 'data-route="gemini" data-state="blocked"' in dom
    assert 'data-route="groq-small" data-state="disabled"' in dom
    assert dom.count('role="progressbar"') == 6
    assert 'action="login"' in dom  # not signed in: no buttons, a sign-in form
    assert drawn.returncode == 0, drawn.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (1000, 800)
    assert len(png) > 20_000  # a rendered page, not a blank one


def sign_in(tools: DevTools, url: str) -> None:
    """Sign in through the page's own form, typing the token."""
    tools.open(url)
    assert tools.evaluate("document.querySelectorAll('form[action=\"reset\"]').length") == 0
    tools.type("input[name=token]", TOKEN)
    tools.click("form[action=login] button")
    tools.wait_for("location.search.includes('done=login') && document.readyState === 'complete'")


@pytest.mark.slow
@pytest.mark.usefixtures("devtools_client")
def test_chromium_signs_in_then_resets_and_enables(
    chromium: str, clock: FakeClock, tmp_path: Path
) -> None:
    router = busy_router(clock)
    with running(router) as server, browser(chromium, tmp_path / "cdp-profile") as tools:
        sign_in(tools, server.url)
        assert tools.evaluate("document.querySelector('.notice').textContent").startswith(
            "Signed in"
        )

        tools.click('[data-pool="groq"] button')
        tools.wait_for("location.search.includes('done=reset')")
        tools.wait_for("document.readyState === 'complete'")
        notice = tools.evaluate("document.querySelector('.notice').textContent")
        assert notice == "Pool 'groq' was reset (via route 'groq')."
        assert (
            tools.evaluate("document.querySelector('[data-route=\"groq\"]').dataset.state") == "ok"
        )
        assert all(u.used == 0 for u in router.usage() if u.pool == "groq")

        tools.click('form[action="enable"] button')
        tools.wait_for("location.search.includes('done=enable')")
        tools.wait_for("document.readyState === 'complete'")
        assert tools.evaluate("document.querySelectorAll('form[action=\"enable\"]').length") == 0
        # Gemini's block is still there: only the key was enabled.
        holds = router.ledger_backend.holds(clock.now())
        assert [h.subject for h in holds] == ["pool:gemini"]
        # No JavaScript ran on the page: the CSP forbids it, and the forms did it all.
        assert tools.evaluate("document.scripts.length") == 0
        # The usage charts are drawn: inline SVG the CSP lets through, laid out.
        assert tools.evaluate("document.querySelectorAll('svg.chart').length") == 3
        box = tools.evaluate(
            "(() => { const r = document.querySelector('svg.chart').getBoundingClientRect();"
            " return [r.width, r.height]; })()"
        )
        assert box[0] > 200
        assert box[1] > 50
        drawn = "document.querySelector('svg.chart polyline').getTotalLength()"
        assert tools.evaluate(drawn) > 100


ATTACKER_PAGE = """<!doctype html><html><body>
<h1>Win a prize</h1>
<form id="forged" method="post" action="{target}reset">
<input type="hidden" name="route" value="groq">
<input type="hidden" name="token" value="a-guess">
<button>Claim</button></form>
<iframe id="framed" src="{target}" width="600" height="300"></iframe>
</body></html>"""


@contextlib.contextmanager
def attacker_site(directory: Path, page: str) -> Iterator[str]:
    """Another origin on this machine (another port), serving ``page``; yields its URL."""
    directory.mkdir()
    (directory / "index.html").write_text(page)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.mark.slow
@pytest.mark.usefixtures("devtools_client")
def test_chromium_a_page_from_another_origin_cannot_reset(
    chromium: str, clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "langchain_quota_router.web")
    router = busy_router(clock)
    spent = groq_used(router)
    with (
        running(router) as server,
        attacker_site(tmp_path / "evil", ATTACKER_PAGE.format(target=server.url)) as evil,
        # rebind.test resolves to 127.0.0.1, as a DNS-rebinding attacker would arrange.
        browser(
            chromium, tmp_path / "cdp-profile", "--host-resolver-rules=MAP rebind.test 127.0.0.1"
        ) as tools,
    ):
        # The owner is signed in: the browser holds the session cookie.
        sign_in(tools, server.url)

        # Another origin frames the page (clickjacking): the browser refuses to show it.
        tools.open(evil)
        framed = tools.evaluate(
            "(() => { try { return document.getElementById('framed').contentDocument"
            "?.body?.innerText ?? 'blocked'; } catch (e) { return 'blocked'; } })()"
        )
        assert "Quota router status" not in framed
        tree = tools.call("Page.getFrameTree")["frameTree"]
        (child,) = tree["childFrames"]
        assert child["frame"]["url"] == "chrome-error://chromewebdata/"
        assert child["frame"]["unreachableUrl"] == server.url

        # A script on that page posts without CORS, riding on the cookie.
        tools.evaluate(
            f"fetch({json.dumps(server.url + 'reset')}, {{method: 'POST', mode: 'no-cors', "
            "credentials: 'include', body: new URLSearchParams({route: 'groq'})})"
            ".then(() => 'sent', () => 'failed')",
            wait=True,
        )
        # Its forged form: the browser goes there and is refused.
        tools.click("#forged button")
        tools.wait_for("location.pathname === '/reset' && document.readyState === 'complete'")
        assert "403 Forbidden: cross-site requests may not change quotas" in tools.text()
        assert groq_used(router) == spent

        # DNS rebinding: the attacker's name, pointing at the page's address.
        rebound = f"http://rebind.test:{server.server_address[1]}/"
        tools.open(rebound + "status.json")
        assert "is not a name this page answers to" in tools.text()
        assert "groq" not in tools.text()

    assert groq_used(router) == spent
    assert router.ledger_backend.holds(clock.now()) != []
    # Each attempt reached the page and was refused there, not lost on the way.
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert sum("POST /reset: cross-site" in m for m in refused) == 2  # fetch, then form
    assert any("GET /status.json" in m and "rebind.test" in m for m in refused)


# ------------------------------------------------------------ issue 17: a bad day for the page


async def test_a_forged_path_and_host_write_no_raw_newline_or_escape_into_the_log(
    app: StatusApp, caplog: pytest.LogCaptureFixture
) -> None:
    async with connect(app, headers={"host": "evil.example\x1b[2J"}) as c:
        with caplog.at_level(logging.INFO):
            answer = await c.get("/%0aWARNING%20forged%20line%1b[31m")
    assert answer.status_code == 403
    (record,) = [r for r in caplog.records if "refused" in r.getMessage()]
    line = record.getMessage()
    assert "\n" not in line
    assert "\x1b" not in line
    assert "\\nWARNING forged line\\x1b[31m" in line  # escaped, still readable


async def sign_in_as_owner(c: httpx.AsyncClient) -> dict[str, str]:
    """Sign in on the page; the fields of its Reset form (route and form token)."""
    assert (await c.post("/login", data={"token": TOKEN})).status_code == 303
    page = (await c.get("/")).text
    form = re.search(r'<form method="post" action="reset">(.*?)</form>', page)
    assert form is not None
    return dict(re.findall(r'name="(\w+)" value="([^"]*)"', form.group(1)))


async def test_a_session_expires(router: QuotaRoutedChatModel, clock: FakeClock) -> None:
    app = create_app(router, admin_token=TOKEN, session_seconds=600)
    async with connect(app, client=("203.0.113.9", 5000)) as remote:
        fields = await sign_in_as_owner(remote)
        clock.advance(599)
        assert (await remote.get("/status.json")).status_code == 200
        clock.advance(2)
        assert (await remote.get("/status.json")).status_code == 401
        router.invoke("spend")
        assert (await remote.post("/reset", data=fields)).status_code == 403
    assert groq_used(router) == 1


async def test_signing_out_ends_every_copy_of_the_session_and_page(
    router: QuotaRoutedChatModel, app: StatusApp
) -> None:
    async with (
        connect(app, client=("203.0.113.9", 5000)) as owner,
        connect(app, client=("198.51.100.7", 5000)) as thief,
    ):
        fields = await sign_in_as_owner(owner)
        thief.cookies.update(owner.cookies)  # a copied cookie and a saved page
        assert (await thief.get("/status.json")).status_code == 200
        assert (await owner.post("/logout")).status_code == 303
        assert (await thief.get("/status.json")).status_code == 401
        router.invoke("spend")
        assert (await thief.post("/reset", data=fields)).status_code == 403
        # Signing in again works, with a new form token.
        again = await sign_in_as_owner(owner)
        assert again["token"] != fields["token"]
        assert (await owner.post("/reset", data=again)).status_code == 303
    assert groq_used(router) == 0


async def test_a_restart_refuses_the_sessions_and_form_tokens_from_before(
    router: QuotaRoutedChatModel, app: StatusApp
) -> None:
    async with connect(app, client=("203.0.113.9", 5000)) as before:
        fields = await sign_in_as_owner(before)
        cookies = before.cookies
    restarted = create_app(router, admin_token=TOKEN)
    router.invoke("spend")
    async with connect(restarted, client=("203.0.113.9", 5000)) as after:
        after.cookies.update(cookies)
        assert (await after.get("/status.json")).status_code == 401
        assert (await after.post("/reset", data=fields)).status_code == 403
    assert groq_used(router) == 1


async def test_workers_sharing_a_ledger_share_sessions_and_sign_out(
    tmp_path: Path, clock: FakeClock
) -> None:
    ledger = f"sqlite:///{tmp_path}/ledger.db"
    first, second = make_router(clock, ledger), make_router(clock, ledger)
    workers = [create_app(first, admin_token=TOKEN), create_app(second, admin_token=TOKEN)]
    async with (
        connect(workers[0], client=("203.0.113.9", 5000)) as one,
        connect(workers[1], client=("203.0.113.9", 5000)) as other,
    ):
        fields = await sign_in_as_owner(one)
        other.cookies.update(one.cookies)
        first.invoke("spend")
        assert (await other.post("/reset", data=fields)).status_code == 303
        assert groq_used(first) == 0
        assert (await other.post("/logout")).status_code == 303
        assert (await one.get("/status.json")).status_code == 401


async def test_deeply_nested_json_is_a_400_naming_the_nesting(client: httpx.AsyncClient) -> None:
    body = "[" * 30_000 + "]" * 30_000
    answer = await client.post("/reset", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400
    assert "nested 30000 deep" in answer.text
    brackets_in_strings = json.dumps({"route": "[[[[[[[[[[[[[[[[[[[[[[[[", "x": "{{{{{{{{{"})
    answer = await client.post(
        "/reset", content=brackets_in_strings, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 404  # read fine: no such route


async def test_a_body_that_never_arrives_is_a_408(router: QuotaRoutedChatModel) -> None:
    app = create_app(router, admin_token=TOKEN, body_timeout=0.2)
    sent: list[dict[str, Any]] = []
    parts = [{"type": "http.request", "body": b"route=gr", "more_body": True}]

    async def receive() -> dict[str, Any]:
        if parts:
            return parts.pop()
        await asyncio.Event().wait()  # the rest never comes
        raise AssertionError  # pragma: no cover

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/reset",
        "headers": [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {TOKEN}".encode())],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8765),
    }
    async with asyncio.timeout(5):
        await app(scope, receive, send)
    assert sent[0]["status"] == 408
    assert b"did not arrive within 0.2 s" in sent[1]["body"]


def test_uvicorn_answers_a_trickled_body_408(router: QuotaRoutedChatModel) -> None:
    with running(router, body_timeout=0.3) as server:
        host, port = server.server_address
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(
                b"POST /reset HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 100\r\n\r\nroute=gr"
            )
            answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408")


async def test_the_page_starts_while_the_ledger_is_down(
    router: QuotaRoutedChatModel, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from langchain_quota_router import LedgerError

    def down(*args: Any, **kwargs: Any) -> Any:
        raise LedgerError("ledger down")

    monkeypatch.setattr(router.ledger_backend, "reserve", down)
    app = create_app(router, admin_token=TOKEN)
    assert "could not end earlier sign-ins" in caplog.text
    async with connect(app, headers=OWNER) as c:
        assert (await c.get("/status.json")).status_code == 200
