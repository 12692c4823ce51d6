"""``quota-router proxy``: an OpenAI-compatible endpoint over the router, for every
program that speaks OpenAI's API (the ``openai`` SDK, ``ChatOpenAI``, coding tools,
chat front-ends), spending the same quotas, ledger and cache as the Python code.

Needs the ``proxy`` extra (Starlette) and the ``web`` extra (uvicorn)::

    from langchain_quota_router.proxy import create_proxy_app, serve

    serve(router, port=4000)  # http://127.0.0.1:4000/v1
    app = create_proxy_app(router, embeddings=my_embeddings)  # any ASGI server

Rooms: :mod:`~.wire` (requests and answers in OpenAI's format), :mod:`~.stream`
(server-sent events), :mod:`~.auth` (client keys), :mod:`~.app` (the Starlette
app), :mod:`~.server` (uvicorn, workers).
"""

from __future__ import annotations

from langchain_quota_router.proxy.app import ProxyApp, create_proxy_app
from langchain_quota_router.proxy.server import make_server, serve

__all__ = ["ProxyApp", "create_proxy_app", "make_server", "serve"]
