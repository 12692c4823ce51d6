"""A headless Chromium for the browser tests: run it once, or drive it over DevTools.

``run_chromium`` runs one command (``--dump-dom``, ``--screenshot``) and exits;
``browser`` starts Chromium with remote debugging and yields a :class:`DevTools`
client for its page, which types, clicks and reads as a person would. The
DevTools client needs the ``websockets`` package.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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


def run_chromium(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``chromium`` headless once with ``args`` (a profile of its own), capturing its output."""
    return subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


class DevTools:
    """A minimal Chrome DevTools Protocol client over one page's WebSocket."""

    def __init__(self, socket: Any) -> None:
        """Speak DevTools over ``socket``, a connected ``websockets`` sync client."""
        self.socket = socket
        self.next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (failing the test on an error)."""
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:  # skip events until our answer
            message = json.loads(self.socket.recv(timeout=30))
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                result: dict[str, Any] = message["result"]
                return result

    def evaluate(self, expression: str, *, wait: bool = False) -> Any:
        """The value of a JavaScript ``expression`` in the page (awaited, with ``wait``)."""
        answer = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=wait
        )
        return answer["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20) -> Any:
        """Poll ``expression`` until it is truthy and return it; fail the test after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(AssertionError):  # mid-navigation: no context yet
                value = self.evaluate(expression)
                if value:
                    return value
            time.sleep(0.05)
        pytest.fail(f"timed out waiting for {expression}")

    def open(self, url: str) -> None:
        """Navigate and wait until the new document has loaded."""
        self.call("Page.navigate", url=url)
        self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'")

    def click(self, selector: str) -> None:
        """Click the first element matching a CSS ``selector``."""
        self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")

    def type(self, selector: str, text: str) -> None:
        """Focus a field and type into it, as a person would."""
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.call("Input.insertText", text=text)

    def text(self) -> str:
        """The page's visible text, as a person reads it."""
        return str(self.evaluate("document.body ? document.body.innerText : ''"))


@contextlib.contextmanager
def browser(chromium: str, profile: Path, *flags: str) -> Iterator[DevTools]:
    """A headless Chromium driven over DevTools, on a port it picks itself."""
    proc = subprocess.Popen(
        [
            chromium,
            *CHROMIUM_FLAGS,
            *flags,
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
        from websockets.sync.client import connect as ws_connect

        with ws_connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as socket:
            yield DevTools(socket)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
