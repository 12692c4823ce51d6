"""The status page: JSON and HTML in-process, the stdlib server, and a real Chromium."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_groq import ChatGroq

from langchain_quota_router import QuotaRoutedChatModel, Route
from langchain_quota_router._clock import FakeClock
from langchain_quota_router.testing import FakeVendorChatModel
from langchain_quota_router.web import create_app, make_server, serve, status_snapshot

SECRET = "gsk_" + "S3cr3tK3y" * 5  # looks like a Groq key; must never be shown


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
async def client(router: QuotaRoutedChatModel) -> Any:
    transport = httpx.ASGITransport(app=create_app(router))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def pool(snapshot: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in snapshot["pools"] if p["pool"] == name)


def route(snapshot: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in snapshot["routes"] if r["name"] == name)


def limit(snapshot: dict[str, Any], pool_name: str, text: str) -> dict[str, Any]:
    return next(x for x in pool(snapshot, pool_name)["limits"] if x["limit"] == text)


# ------------------------------------------------------------------ JSON


async def test_status_json_reports_usage_routes_and_stats(
    router: QuotaRoutedChatModel, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    router.invoke("one")
    router.invoke("two")

    answer = await client.get("/status.json")

    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    data = answer.json()
    assert set(data) >= {"routes", "pools", "holds", "stats"}
    minute = limit(data, "groq", "3/minute")
    assert minute["used"] == 2
    assert minute["limit_amount"] == 3
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
    router: QuotaRoutedChatModel, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    for _ in range(3):
        router.invoke("fill groq")
    ledger = router.ledger_backend
    ledger.block("gemini", clock.now() + 42, "rate_limit: 429 slow down")
    ledger.disable("groq-small", f"disabled: 401 Invalid API Key {SECRET}")

    data = (await client.get("/status.json")).json()

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
    kinds = {(h["kind"], tuple(h["routes"])) for h in data["holds"]}
    assert kinds == {("pool", ("gemini",)), ("key", ("groq-small",))}

    clock.advance(61)
    data = (await client.get("/status.json")).json()
    assert route(data, "groq")["state"] == "ok"
    assert route(data, "gemini")["state"] == "ok"
    assert route(data, "groq-small")["state"] == "disabled"


async def test_api_keys_are_never_shown(
    router: QuotaRoutedChatModel, client: httpx.AsyncClient
) -> None:
    router.ledger_backend.disable("groq-small", f"disabled: 401 Invalid API Key {SECRET}")

    page = (await client.get("/")).text
    data = (await client.get("/status.json")).text

    assert SECRET not in page
    assert SECRET not in data
    assert "[REDACTED]" in data


async def test_keys_no_pattern_catches_are_masked_too(clock: FakeClock) -> None:
    plain = "hunter2-hunter2"  # no vendor prefix: only knowing the key finds it
    router = QuotaRoutedChatModel(
        routes=[Route(ChatGroq(model="m", api_key=plain), name="groq", limits=["1/minute"])],
        ledger="memory://",
        cache=False,
        clock=clock,
    )
    router.ledger_backend.disable("groq", f"disabled: key {plain} was revoked")
    transport = httpx.ASGITransport(app=create_app(router))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
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
    assert snapshot["ledger"] == "sqlite"
    assert snapshot["stats"]["total_calls"] == 0  # counters are per process


# ------------------------------------------------------------------ HTML


async def test_page_shows_bars_states_and_buttons(
    router: QuotaRoutedChatModel, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    for _ in range(3):
        router.invoke("fill groq")
    router.ledger_backend.disable("groq-small", "disabled: 401")

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
    # A Reset per pool, an Enable only for the disabled route.
    assert page.count('action="reset"') == 3
    assert page.count('action="enable"') == 1
    enable_form = page[page.index('action="enable"') :][:200]
    assert 'name="route" value="groq-small"' in enable_form
    # Self-contained: no scripts, stylesheets, images or fonts from anywhere.
    assert "<script" not in page
    assert "<link" not in page
    assert not re.search(r"(src|href)=\"?(https?:)?//", page)
    assert "url(" not in page


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
    transport = httpx.ASGITransport(app=create_app(router))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
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
    router.ledger_backend.disable("groq-small", "disabled: 401")

    answer = await client.post("/enable", data={"route": "groq-small"})

    assert answer.status_code == 303
    assert router.ledger_backend.holds(clock.now()) == []
    page = (await client.get(answer.headers["location"])).text
    assert "Route &#x27;groq-small&#x27; was enabled." in page
    assert 'action="enable"' not in page


async def test_actions_take_json_too(
    router: QuotaRoutedChatModel, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    router.ledger_backend.disable("groq-small", "disabled: 401")
    answer = await client.post("/enable", json={"route": "groq-small"})
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


async def test_cross_site_posts_are_refused(
    router: QuotaRoutedChatModel, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    router.ledger_backend.disable("groq-small", "disabled: 401")
    evil = await client.post(
        "/enable", data={"route": "groq-small"}, headers={"origin": "https://evil.example"}
    )
    assert evil.status_code == 403
    fetched = await client.post(
        "/enable", data={"route": "groq-small"}, headers={"sec-fetch-site": "cross-site"}
    )
    assert fetched.status_code == 403
    assert router.ledger_backend.holds(clock.now()) != []
    same = await client.post(
        "/enable", data={"route": "groq-small"}, headers={"origin": "http://testserver"}
    )
    assert same.status_code == 303
    assert router.ledger_backend.holds(clock.now()) == []


async def test_lifespan_and_other_scopes(router: QuotaRoutedChatModel) -> None:
    app = create_app(router)
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


# ------------------------------------------------------------ stdlib server


@contextlib.contextmanager
def running(router: QuotaRoutedChatModel) -> Iterator[str]:
    """The status page on a free loopback port, in a thread; yields its base URL."""
    server = make_server(router, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_stdlib_server_serves_the_app(router: QuotaRoutedChatModel, clock: FakeClock) -> None:
    router.invoke("spend")
    router.ledger_backend.disable("groq-small", "disabled: 401")
    with running(router) as base:
        with urllib.request.urlopen(f"{base}/status.json", timeout=10) as answer:
            data = json.load(answer)
        assert limit(data, "groq", "3/minute")["used"] == 1
        with urllib.request.urlopen(f"{base}/", timeout=10) as answer:
            assert answer.headers["content-type"] == "text/html; charset=utf-8"
            assert 'data-route="groq-small" data-state="disabled"' in answer.read().decode()

        host = base.removeprefix("http://")
        conn = http.client.HTTPConnection(host, timeout=10)
        conn.request(
            "POST",
            "/enable",
            body="route=groq-small",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        answer = conn.getresponse()
        assert answer.status == 303
        assert answer.getheader("location") == "/?done=enable&route=groq-small"
        conn.close()
        assert router.ledger_backend.holds(clock.now()) == []

        conn = http.client.HTTPConnection(host, timeout=10)
        conn.request("POST", "/reset", body="nothing=here")
        answer = conn.getresponse()
        assert answer.status == 400
        assert b"form field 'route' is required" in answer.read()
        conn.close()

        conn = http.client.HTTPConnection(host, timeout=10)
        conn.request("HEAD", "/")
        answer = conn.getresponse()
        assert answer.status == 200
        assert answer.read() == b""
        conn.close()


def test_serve_runs_until_interrupted(
    router: QuotaRoutedChatModel,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    served: list[tuple[str, int]] = []

    def interrupted(self: Any) -> None:
        served.append(self.server_address[:2])
        raise KeyboardInterrupt

    monkeypatch.setattr("http.server.ThreadingHTTPServer.serve_forever", interrupted)

    serve(router, port=0)

    assert served
    assert served[0][0] == "127.0.0.1"
    assert f"http://127.0.0.1:{served[0][1]}/" in capsys.readouterr().err


# --------------------------------------------------------------- Chromium

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


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


def run_chromium(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def busy_router(clock: FakeClock) -> QuotaRoutedChatModel:
    router = make_router(clock)
    for _ in range(4):  # three fill groq's 3/minute; the fourth falls back to gemini
        router.invoke("hello " * 30)
    router.ledger_backend.block("gemini", clock.now() + 42, "rate_limit: 429 slow down")
    router.ledger_backend.disable("groq-small", "disabled: 401 invalid api key")
    return router


@pytest.mark.slow
def test_chromium_renders_the_page(chromium: str, clock: FakeClock, tmp_path: Path) -> None:
    router = busy_router(clock)
    with running(router) as base:
        dumped = run_chromium(chromium, tmp_path / "profile", "--dump-dom", f"{base}/")
        shot = tmp_path / "status.png"
        drawn = run_chromium(
            chromium,
            tmp_path / "profile",
            f"--screenshot={shot}",
            "--window-size=1000,800",
            "--hide-scrollbars",
            f"{base}/",
        )

    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = dumped.stdout
    assert "<title>Quota router status</title>" in dom
    assert 'data-route="groq" data-state="full"' in dom
    assert 'data-route="gemini" data-state="blocked"' in dom
    assert 'data-route="groq-small" data-state="disabled"' in dom
    assert dom.count('role="progressbar"') == 6
    assert drawn.returncode == 0, drawn.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (1000, 800)
    assert len(png) > 20_000  # a rendered page, not a blank one


class DevTools:
    """A minimal Chrome DevTools Protocol client over one page's WebSocket."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:  # skip events until our answer
            message = json.loads(self.socket.recv(timeout=30))
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                result: dict[str, Any] = message["result"]
                return result

    def evaluate(self, expression: str) -> Any:
        answer = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return answer["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(AssertionError):  # mid-navigation: no context yet
                value = self.evaluate(expression)
                if value:
                    return value
            time.sleep(0.05)
        pytest.fail(f"timed out waiting for {expression}")


@contextlib.contextmanager
def browser(chromium: str, profile: Path) -> Iterator[DevTools]:
    """A headless Chromium driven over DevTools, on a port it picks itself."""
    proc = subprocess.Popen(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its helper processes share our group id: stop them all
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None, "chromium exited early"
            assert time.monotonic() < deadline, "chromium did not open DevTools"
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        from websockets.sync.client import connect

        with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as socket:
            yield DevTools(socket)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.mark.slow
def test_chromium_clicks_reset_and_enable(chromium: str, clock: FakeClock, tmp_path: Path) -> None:
    try:
        import websockets.sync.client  # noqa: F401  (used by browser())
    except ImportError:
        message = "the click test drives Chromium over DevTools with the websockets package"
        if os.environ.get("CI"):
            pytest.fail(f"{message}, which is not installed")
        pytest.skip(f"{message}: pip install websockets")
    router = busy_router(clock)
    with running(router) as base, browser(chromium, tmp_path / "cdp-profile") as tools:
        tools.call("Page.navigate", url=f"{base}/")
        tools.wait_for("document.readyState === 'complete' && !!document.querySelector('h1')")

        tools.evaluate("document.querySelector('[data-pool=\"groq\"] button').click()")
        tools.wait_for("location.search.includes('done=reset')")
        tools.wait_for("document.readyState === 'complete'")
        notice = tools.evaluate("document.querySelector('.notice').textContent")
        assert notice == "Pool 'groq' was reset (via route 'groq')."
        assert (
            tools.evaluate("document.querySelector('[data-route=\"groq\"]').dataset.state") == "ok"
        )
        assert all(u.used == 0 for u in router.usage() if u.pool == "groq")

        tools.evaluate("document.querySelector('form[action=\"enable\"] button').click()")
        tools.wait_for("location.search.includes('done=enable')")
        tools.wait_for("document.readyState === 'complete'")
        assert tools.evaluate("document.querySelectorAll('form[action=\"enable\"]').length") == 0
        # Gemini's block is still there: only the key was enabled.
        holds = router.ledger_backend.holds(clock.now())
        assert [h.subject for h in holds] == ["pool:gemini"]
