"""A real ``redis-server`` for tests: started on a free loopback port, in a temp dir.

``start_redis(tmp_path)`` gives a private server a test may stop, kill and restart
(append-only file on, so a restart keeps what was written). The ``redis_server``
fixture is one server for the whole session; ``redis_url`` empties it before each
test. Import both into ``conftest.py`` to use them::

    from redis_fixture import redis_server, redis_url  # noqa: F401

Without ``redis-server`` on PATH the tests that need it are skipped, or fail when
the ``CI`` environment variable is set (a CI job must not skip them silently).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

MISSING = (
    "redis-server is not installed: apt-get install redis-server (the Redis ledger tests need it)"
)
_START_TIMEOUT = 10.0
_POLL = 0.005


def redis_binary() -> str:
    """Path of ``redis-server``; skips the test (fails it on CI) when missing."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    return binary


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def command(port: int, *args: str, timeout: float = 1.0) -> bytes:
    """Send one command in RESP and return the first line of the reply.

    A raw socket, so the fixture does not depend on the client under test.
    """
    payload = f"*{len(args)}\r\n".encode()
    for arg in args:
        data = arg.encode()
        payload += b"$%d\r\n%s\r\n" % (len(data), data)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.split(b"\r\n", 1)[0]


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1 with its data in ``directory``.

    Args:
        directory: where the append-only file (and the log) live.
        extra_args: more ``redis-server`` options, such as
            ``("--requirepass", "secret")``.
    """

    def __init__(self, directory: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.directory = directory
        self.extra_args = extra_args
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the server (on a new free port the first time) and wait for PING."""
        binary = redis_binary()
        self.directory.mkdir(parents=True, exist_ok=True)
        # A port picked free may be taken before Redis binds it: try a few.
        for _ in range(5 if not self.port else 1):
            port = self.port or _free_port()
            self.process = subprocess.Popen(
                [
                    binary,
                    *("--port", str(port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "yes", "--dir", str(self.directory)),
                    *("--daemonize", "no", "--logfile", str(self.directory / "redis.log")),
                    *self.extra_args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_ready(port):
                self.port = port
                return
        log = self.directory / "redis.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        msg = f"redis-server did not start in {self.directory}:\n{tail}"
        raise RuntimeError(msg)

    def _wait_ready(self, port: int) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            with contextlib.suppress(OSError):
                reply = command(port, "PING")
                # "-LOADING ..." while it reads the append-only file back.
                if reply == b"+PONG" or reply.startswith(b"-NOAUTH"):
                    return True
            time.sleep(_POLL)
        self._signal(signal.SIGKILL)
        return False

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        """Shut down cleanly (SIGTERM: the append-only file is flushed)."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """Kill the process (SIGKILL), as a crash would."""
        self._signal(signal.SIGKILL)

    def restart(self) -> None:
        """Stop if running, then start again on the same port with the same data."""
        self.stop()
        self.start()

    def flushall(self) -> None:
        """Delete every key of every database."""
        reply = command(self.port, "FLUSHALL")
        if reply != b"+OK":
            msg = f"FLUSHALL failed: {reply!r}"
            raise RuntimeError(msg)


def start_redis(tmp_path: Path, *extra_args: str) -> RedisServer:
    """Start a private ``redis-server`` with its data under ``tmp_path``."""
    server = RedisServer(tmp_path / "redis", tuple(extra_args))
    server.start()
    return server


_shared: RedisServer | None = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One ``redis-server`` for the whole session (do not stop it in a test)."""
    global _shared  # one server even if two modules import this fixture
    if _shared is None:
        _shared = start_redis(tmp_path_factory.mktemp("redis-session"))
    yield _shared
    _shared.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of the session's Redis, emptied for this test."""
    if not redis_server.running:
        redis_server.start()
    redis_server.flushall()
    return redis_server.url
