"""No key in any file written, any line logged, or anything the router raises."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import random
import string
import sys
import threading
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from call_paths import ask
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.tools import tool
from pydantic import SecretStr

from langchain_quota_router import (
    ConfigurationError,
    NoRouteError,
    QuotaExhaustedError,
    QuotaRoutedChatModel,
    Route,
)
from langchain_quota_router._config import routes_from_env
from langchain_quota_router._errors import (
    RoutesAuthenticationError,
    RoutesInvalidRequestError,
    RoutesUnavailableError,
)
from langchain_quota_router.cli import main as cli_main
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.quota.secrets import RedactedError
from langchain_quota_router.quota.status import status_snapshot
from langchain_quota_router.route import route_keys
from langchain_quota_router.simulator import SimKey, Simulator
from langchain_quota_router.testing import FakeVendorChatModel
from langchain_quota_router.web import create_app

KEYS = {
    "groq": "gsk_SECRETgroqkey0001112223334445556667",
    "gemini": "AIzaSECRETgeminikey88899900011122233",
    "openai": "sk-proj-SECRETopenaikey44455566677788899",
    "cohere": "SECRETcoherekey1234567890abcdefghijklmn",
}
REVOKED = "sk-proj-SECRETrevokedkey000111222333444"
MODELS = {
    "groq": "groq:openai/gpt-oss-120b",
    "gemini": "gemini:gemini-3.5-flash",
    "openai": "openai:gpt-4o-mini",
    "cohere": "cohere:command-r-08-2024",
}


@tool
def lookup(city: str) -> str:
    """Look a city up."""
    return f"{city} is lovely"


def test_a_workload_writes_and_logs_no_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = FakeClock()
    sim_keys = [SimKey(KEYS["groq"], "groq", rpm=2)] + [
        SimKey(KEYS[v], v)
        for v in ("gemini", "openai", "cohere")  # type: ignore[misc]
    ]
    config = tmp_path / "router.toml"
    with Simulator(sim_keys, clock=clock) as sim, caplog.at_level(logging.DEBUG):
        bases = {
            "groq": sim.groq_base_url,
            "gemini": sim.gemini_base_url,
            "openai": sim.openai_base_url,
            "cohere": sim.cohere_base_url,
        }
        routes = [
            Route(MODELS[v], api_key=KEYS[v], base_url=bases[v], priority=i)
            for i, v in enumerate(KEYS)
        ]
        routes.insert(
            0, Route(MODELS["openai"], api_key=REVOKED, base_url=bases["openai"], name="old")
        )
        ledger = f"sqlite:///{tmp_path}/ledger.db"
        llm = QuotaRoutedChatModel(
            routes=routes, ledger=ledger, cache=True, clock=clock, max_wait=0
        )
        for i in range(6):  # groq's 2/minute is refused by the vendor, then known
            llm.invoke(f"question {i}")
        llm.invoke("question 0")  # a cache hit
        list(llm.stream("a streamed question"))
        llm.bind_tools([lookup]).invoke("Where is Lima?")
        asyncio.run(llm.ainvoke("an async question"))
        status = asyncio.run(_get(create_app(llm), "/status.json"))
        (tmp_path / "status.json").write_text(status)

        config.write_text(f'ledger = "{ledger}"\n[[routes]]\nmodel = "{MODELS["groq"]}"\n')
        with pytest.MonkeyPatch.context() as env:
            env.setenv("GROQ_API_KEY", KEYS["groq"])
            for fmt in ("json", "csv", "txt"):
                cli_main(["report", "--config", str(config), "--export", f"{tmp_path}/r.{fmt}"])
            cli_main(["status", "--config", str(config)])
    printed = capsys.readouterr()

    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name.startswith("ledger.db") for p in written)
    assert any("cache" in str(p) for p in written)
    assert llm.get_stats()["cache_hits"] == 1
    assert "disabled" in json.dumps(json.loads(status)["holds"])
    for secret in [*KEYS.values(), REVOKED]:
        needles = (secret, secret[-12:])
        for path in written:
            data = path.read_bytes()
            for needle in needles:
                assert needle.encode() not in data, f"{needle!r} found in {path}"
        for needle in needles:
            assert needle not in caplog.text
            assert needle not in printed.out + printed.err
            assert needle not in repr(llm)


async def _get(app: object, path: str) -> str:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://page") as client:
        response = await client.get(path)
        response.raise_for_status()
        return response.text


# ------------------------------------------------------------------ vendors that echo keys

ECHOED = {
    "groq": "plain-groq-secret-echoed-0001",
    "openai": "sk-proj-ECHOEDopenaikey55566677788899",
    "cohere": "plain-cohere-secret-echoed-0002",
    "gemini": "plain-gemini-secret-echoed-0003",
}


class _EchoServer(ThreadingHTTPServer):
    status = 401


class _EchoHandler(BaseHTTPRequestHandler):
    """A vendor that quotes the caller's key back in every error, in its body and
    a header, as some vendors (and many proxies) do."""

    server: _EchoServer

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        query = parse_qs(urlsplit(self.path).query)
        key = (
            self.headers.get("authorization", "").removeprefix("Bearer ").strip()
            or self.headers.get("x-goog-api-key", "")
            or query.get("key", [""])[0]
        )
        status = self.server.status
        said = (
            f"Incorrect API key provided: {key}"
            if status == 401
            else f"request from caller {key} failed with status {status}"
        )
        body: dict[str, object]
        if "generateContent" in self.path:
            names = {401: "UNAUTHENTICATED", 400: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED"}
            body = {"error": {"code": status, "message": said, "status": names.get(status)}}
        elif self.path.startswith("/v2/chat"):
            body = {"message": said}
        else:
            code = "invalid_api_key" if status == 401 else None
            body = {"error": {"message": said, "type": "invalid_request_error", "code": code}}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("x-echo", key)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def echo() -> Iterator[_EchoServer]:
    server = _EchoServer(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _echo_routes(server: _EchoServer, vendors: list[str]) -> list[Route]:
    root = f"http://127.0.0.1:{server.server_address[1]}"
    bases = {"groq": root, "openai": f"{root}/v1", "cohere": root, "gemini": root}
    return [
        Route(MODELS[v], api_key=ECHOED[v], base_url=bases[v], priority=i, timeout=10)
        for i, v in enumerate(vendors)
    ]


def _assert_no_key(error: BaseException) -> None:
    shown = "".join(traceback.format_exception(error))
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        shown += repr(current) + repr(current.args) + repr(vars(current))
        # What a traceback shows: the cause, else the context unless suppressed.
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    for secret in ECHOED.values():
        assert secret not in shown, f"a key leaks through {[type(e).__name__ for e in seen]}"


ECHO_CASES = [
    (401, RoutesAuthenticationError),
    (500, RoutesUnavailableError),
    (429, QuotaExhaustedError),
    (400, RoutesInvalidRequestError),
]


@pytest.mark.parametrize(("status", "expected"), ECHO_CASES)
async def test_no_key_in_what_the_router_raises_when_vendors_echo_it(
    echo: _EchoServer, how: str, status: int, expected: type[Exception]
) -> None:
    echo.status = status
    llm = QuotaRoutedChatModel(
        routes=_echo_routes(echo, ["groq", "openai", "cohere", "gemini"]),
        ledger="memory://",
        cache=False,
        max_wait=0,
    )
    with pytest.raises(expected) as caught:
        await ask(llm, how)
    _assert_no_key(caught.value)
    # The vendor's answer is still there to read, masked.
    assert "[REDACTED]" in "".join(traceback.format_exception(caught.value))
    # Asked again: the routes are disabled or resting, and their reasons (kept in the
    # ledger from the vendor's message) show no key either.
    with pytest.raises(NoRouteError) as again:
        await ask(llm, how)
    _assert_no_key(again.value)


@pytest.mark.parametrize("vendor", ["groq", "openai", "cohere", "gemini"])
def test_no_key_in_a_single_routes_bad_request(echo: _EchoServer, vendor: str) -> None:
    echo.status = 400
    llm = QuotaRoutedChatModel(
        routes=_echo_routes(echo, [vendor]), ledger="memory://", cache=False, max_wait=0
    )
    with pytest.raises(RoutesInvalidRequestError) as caught:
        llm.invoke("hello")
    _assert_no_key(caught.value)
    assert isinstance(caught.value.__cause__, RedactedError)
    assert caught.value.__cause__.status_code == 400


def test_a_vendor_error_without_a_key_is_raised_as_it_was() -> None:
    class VendorBadRequestError(Exception):
        status_code = 400

    class Refuses(FakeListChatModel):
        def _generate(self, *args: Any, **kwargs: Any) -> Any:
            raise VendorBadRequestError("unknown parameter 'foo'")

    llm = QuotaRoutedChatModel(
        routes=[Route(Refuses(responses=["x"]), name="r")], ledger="memory://", cache=False
    )
    with pytest.raises(VendorBadRequestError):
        llm.invoke("hello")


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"GROQ_API_KEY": ECHOED["groq"] + "\n"}, "GROQ_API_KEY"),
        ({"GROQ_API_KEY_2": f"  {ECHOED['groq']}\r\n"}, "GROQ_API_KEY_2"),
        ({"GROQ_API_KEYS": f"{ECHOED['groq']},other-key-0002\n"}, "GROQ_API_KEYS"),
        ({"GOOGLE_API_KEY": "\t" + ECHOED["gemini"]}, "GOOGLE_API_KEY"),
    ],
)
def test_a_key_with_surrounding_whitespace_is_stripped_with_a_warning_naming_the_variable(
    env: dict[str, str], variable: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        routes = routes_from_env(env, dotenv=None)
    held = {s for route in routes for s in route_keys([route])}
    assert held & {ECHOED["groq"], ECHOED["gemini"]}
    assert all(s == s.strip() for s in held)
    assert variable in caplog.text
    assert "stripped" in caplog.text
    for secret in ECHOED.values():
        assert secret not in caplog.text


def test_a_dotenv_key_from_a_file_with_a_trailing_newline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(f'GROQ_API_KEY="{ECHOED["groq"]}\\n"\n')
    (route,) = routes_from_env({}, dotenv=dotenv)
    assert route_keys([route]) == [ECHOED["groq"]]
    assert "GROQ_API_KEY" in caplog.text
    assert ECHOED["groq"] not in caplog.text


def test_a_key_with_a_newline_inside_is_refused_without_showing_it() -> None:
    broken = ECHOED["groq"].replace("-", "\n", 1)
    with pytest.raises(ConfigurationError, match="GROQ_API_KEY") as caught:
        routes_from_env({"GROQ_API_KEY": broken}, dotenv=None)
    shown = "".join(traceback.format_exception(caught.value))
    assert broken.split("\n")[1] not in shown


def test_no_echoed_key_in_the_log(echo: _EchoServer, caplog: pytest.LogCaptureFixture) -> None:
    llm = QuotaRoutedChatModel(
        routes=_echo_routes(echo, ["groq"]), ledger="memory://", cache=False, max_wait=0
    )
    with caplog.at_level(logging.WARNING), pytest.raises(RoutesAuthenticationError):
        llm.invoke("hello")
    assert ECHOED["groq"] not in caplog.text


# ------------------------------------------------------------------ keys echoed in part


def _random_key(prefix: str, length: int, seed: int) -> str:
    alphabet = string.ascii_letters + string.digits
    rng = random.Random(f"{prefix}{seed}")
    return prefix + "".join(rng.choice(alphabet) for _ in range(length))


#: Key shapes as vendors issue them: (prefix, characters after it).
KEY_SHAPES = {
    "groq": ("gsk_", 52),
    "openai": ("sk-", 48),
    "openai-project": ("sk-proj-", 56),
    "cerebras": ("csk-", 48),
    "gemini": ("AIza", 35),
    "cohere": ("", 40),
    "huggingface": ("hf_", 34),
}


class _VendorHTTPError(Exception):
    """A vendor's HTTP error as SDKs raise it: a status and the decoded body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Error code: {status} - {{'error': {{'message': {message!r}}}}}")
        self.status_code = status
        self.body = {"error": {"message": message}}


class _KeyedVendor(FakeVendorChatModel):
    """A vendor model that holds its key as vendor models do (a ``SecretStr``)."""

    api_key: SecretStr


def _echoing(name: str, key: str, status: int, echoed: str, pool: str | None = None) -> Route:
    said = (
        f"Incorrect API key provided: {echoed}. You can find your API key at "
        "https://platform.example.com/account/api-keys."
        if status == 401
        else f"request from caller {echoed}... failed: unknown parameter 'foo'"
    )
    model = _KeyedVendor(api_key=SecretStr(key), script=[_VendorHTTPError(status, said)])
    return Route(model, name=name, pool=pool, limits=["100/day"])


def _shown_by(error: BaseException) -> str:
    shown = "".join(traceback.format_exception(error))
    current: BaseException | None = error
    seen: list[BaseException] = []
    while current is not None and current not in seen:
        seen.append(current)
        shown += repr(current) + repr(current.args) + repr(vars(current))
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return shown


def _cli_status(router: QuotaRoutedChatModel, monkeypatch: pytest.MonkeyPatch) -> str:
    import langchain_quota_router.cli as cli

    monkeypatch.setattr(cli, "_load_router", lambda config: router)
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    cli_main(["status"])
    monkeypatch.undo()
    return out.getvalue()


def _everything_shown(
    router: QuotaRoutedChatModel, error: BaseException, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    now = router.clock.now()
    return {
        "the raised error": _shown_by(error),
        "usage()": repr(router.usage()),
        "the ledger's holds": repr(router.ledger_backend.holds(now)),
        "status_snapshot": json.dumps(status_snapshot(router)),
        "quota-router status": _cli_status(router, monkeypatch),
    }


@pytest.mark.parametrize("shape", list(KEY_SHAPES))
async def test_a_key_echoed_in_part_shows_nowhere(
    shape: str, how: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix, length = KEY_SHAPES[shape]
    first, second = (_random_key(prefix, length, seed) for seed in (1, 2))
    echoed = {"the first 22 characters": first[:22], "a middle part": second[10:30]}
    router = QuotaRoutedChatModel(
        routes=[
            # Refused (401): the route's key is disabled, with the vendor's reason.
            _echoing("first", first, 401, echoed["the first 22 characters"]),
            # A bad request (400): raised to the caller.
            _echoing("second", second, 400, echoed["a middle part"]),
        ],
        ledger="memory://",
        cache=False,
        max_wait=0,
    )
    with caplog.at_level(logging.WARNING), pytest.raises(RoutesInvalidRequestError) as caught:
        await ask(router, how)
    shown = {**_everything_shown(router, caught.value, monkeypatch), "the log": caplog.text}
    assert "[REDACTED]" in shown["the raised error"]
    assert "disabled" in shown["status_snapshot"]
    for part, text in echoed.items():
        for where, output in shown.items():
            assert text not in output, f"{part} of the key shows in {where}"


async def test_a_route_and_pool_named_after_their_key_show_no_part_of_it(
    how: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = _random_key("", 40, 3)
    route = _echoing(f"backup-{key}", key, 401, "[not echoed]", pool=f"pool-{key}")
    router = QuotaRoutedChatModel(routes=[route], ledger="memory://", cache=False, max_wait=0)
    with caplog.at_level(logging.WARNING), pytest.raises(RoutesAuthenticationError) as caught:
        await ask(router, how)
    shown = {**_everything_shown(router, caught.value, monkeypatch), "the log": caplog.text}
    # The Python API answers with the names as given: they are the caller's own.
    del shown["usage()"], shown["the ledger's holds"]
    assert "backup-[REDACT" in shown["quota-router status"]  # masked, then clipped
    for where, output in shown.items():
        # Not the key, nor what is left of it when a column clips the name.
        for start in range(len(key) - 11):
            assert key[start : start + 12] not in output, f"part of the key shows in {where}"
