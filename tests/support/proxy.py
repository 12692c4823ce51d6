"""The proxy on a real uvicorn server on loopback, in a thread, for tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from langchain_core.embeddings import Embeddings

from langchain_quota_router.proxy import make_server
from langchain_quota_router.proxy.server import ProxyServer


@contextmanager
def running_proxy(router: Any, host: str = "127.0.0.1", **options: Any) -> Iterator[ProxyServer]:
    """``make_server(router, host, 0, **options)`` serving in a thread until the block ends."""
    server = make_server(router, host, 0, **options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


class FakeEmbeddings(Embeddings):
    """Three-dimensional vectors from a text's length, counting its calls."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return [[float(len(t)), 0.5, -0.25] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        await asyncio.sleep(0)
        return self.embed_documents(texts)
