"""The proxy as a Starlette application: OpenAI's endpoints over one router.

``create_proxy_app(router, embeddings=..., client_keys=...)`` serves:

- ``POST /v1/chat/completions``: through ``router.ainvoke`` / ``router.astream``
  (tools through ``router.bind_tools``), so a call here is routed, counted in the
  ledger, cached and settled exactly as a call in Python is;
- ``POST /v1/embeddings``: through any LangChain ``Embeddings``
  (``aembed_documents``), when one is given;
- ``GET /v1/models``: the router's own name(s), every route's name, and the
  embeddings model's name. A request naming a route goes there first
  (``preferred=``; it still falls back); one naming the router uses the strategy;
- ``GET /v1/usage``: what each client key spent (by fingerprint), for every proxy
  counting in this ledger; ``GET /metrics``: the router's Prometheus metrics, the
  per-client counters among them (``metrics`` extra);
- ``GET /health``: ``{"status": "ok", "in_flight": n}``, without a key.

Errors are OpenAI's error object with OpenAI's status: 400 naming the field, 401
for a wrong client key, 404 for an unknown model, 429 with ``Retry-After`` when
every route is full (with each route's reason), 502/503 when the vendors failed.

A client that goes away (mid-stream, or before the first token, or before a
non-streamed answer) cancels the vendor call at once: the router settles its
reservation with what was used. At shutdown, calls under way are given
``shutdown_grace`` seconds, then cancelled, which settles them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypeVar

from langchain_core.embeddings import Embeddings
from langchain_core.messages import AIMessage, AIMessageChunk
from openai.types import Model
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as Endpoint
from starlette.types import Receive, Scope, Send

from langchain_quota_router._errors import (
    NoRouteError,
    QuotaExhaustedError,
    RoutesContextOverflowError,
    RoutesInvalidRequestError,
)
from langchain_quota_router.proxy.auth import ClientKeys
from langchain_quota_router.proxy.stream import ChunkWriter, error_event
from langchain_quota_router.proxy.wire import (
    ChatPlan,
    WireError,
    completion,
    embedding_inputs,
    embedding_response,
    error_body,
    parse_chat,
    parse_embeddings,
    plan_chat,
    usage_of,
)
from langchain_quota_router.quota.fleet import FleetCounters, client_view
from langchain_quota_router.quota.secrets import Masker

if TYPE_CHECKING:
    from langchain_core.runnables import Runnable

    from langchain_quota_router.chat.model import QuotaRoutedChatModel

__all__ = ["MAX_BODY", "SHUTDOWN_GRACE", "ProxyApp", "create_proxy_app"]

logger = logging.getLogger("langchain_quota_router.proxy")

#: The largest request body accepted: room for a few images as data URLs.
MAX_BODY = 32 * 1024 * 1024
#: Seconds calls under way are given to finish at shutdown before they are cancelled.
SHUTDOWN_GRACE = 30.0

_T = TypeVar("_T")


class _ClientGoneError(Exception):
    """The client disconnected."""


async def _disconnected(receive: Receive) -> None:
    """Return when the client has gone (the request body was read already)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class ProxyApp:
    """An OpenAI-compatible endpoint over a router (see :func:`create_proxy_app`).

    Attributes:
        router: the chat model every chat completion goes through.
        embeddings: what ``/v1/embeddings`` goes through, if anything.
        keys: the client keys.
        names: the model names that mean "the router, by its strategy".
        embeddings_model: the model name of ``/v1/embeddings``.
    """

    def __init__(
        self,
        router: QuotaRoutedChatModel,
        *,
        embeddings: Embeddings | None = None,
        client_keys: Iterable[str] | None = None,
        names: Sequence[str] = ("quota-router",),
        embeddings_model: str = "quota-router-embeddings",
        shutdown_grace: float = SHUTDOWN_GRACE,
    ) -> None:
        self.router = router
        # A router configured with [[embedding_routes]] serves them by default.
        self.embeddings = embeddings or next(iter(router.embeddings), None)
        self.keys = ClientKeys(client_keys)
        self.names = tuple(names)
        self.embeddings_model = embeddings_model
        self.shutdown_grace = shutdown_grace
        self.masked = Masker([*router.keys_to_mask(), *self.keys.keys()])
        fleet = router.stats.fleet
        self.counters = (
            fleet if fleet is not None else FleetCounters(router.ledger_backend, router.clock)
        )
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._app = Starlette(
            routes=[
                Endpoint("/v1/chat/completions", self._chat, methods=["POST"]),
                Endpoint("/chat/completions", self._chat, methods=["POST"]),
                Endpoint("/v1/embeddings", self._embed, methods=["POST"]),
                Endpoint("/embeddings", self._embed, methods=["POST"]),
                Endpoint("/v1/models", self._models, methods=["GET"]),
                Endpoint("/models", self._models, methods=["GET"]),
                Endpoint("/v1/usage", self._usage, methods=["GET"]),
                Endpoint("/metrics", self._metrics, methods=["GET"]),
                Endpoint("/health", self._health, methods=["GET"]),
            ],
            exception_handlers={404: self._not_found, 405: self._not_allowed},
            lifespan=self._lifespan,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    @property
    def in_flight(self) -> int:
        """Calls under way."""
        return len(self._in_flight)

    # ------------------------------------------------------------- lifecycle

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        yield
        await self.drain(self.shutdown_grace)
        await asyncio.to_thread(self.counters.flush)

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for calls under way, then cancel the rest
        (the router settles each one's reservation)."""
        pending = set(self._in_flight)
        if pending:
            _, late = await asyncio.wait(pending, timeout=grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)

    def _track(self, awaitable: Awaitable[_T]) -> asyncio.Task[_T]:
        task = asyncio.ensure_future(awaitable)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        return task

    # ------------------------------------------------------------ endpoints

    async def _chat(self, request: Request) -> Response:
        try:
            client = self._client(request)
        except WireError as exc:
            return self._error(exc)
        try:
            chat = parse_chat(await self._body(request))
            preferred = self._model(chat.model)
            plan = plan_chat(chat, preferred)
            runnable = self._runnable(plan)
        except WireError as exc:
            self.counters.client_used(client, failed=True)
            return self._error(exc)
        except ClientDisconnect:  # gone before its request was read: nothing was spent
            return Response(status_code=499)
        if plan.stream:
            return await self._stream(request, plan, runnable, chat.model, client)
        task = self._track(runnable.ainvoke(plan.messages, **plan.kwargs))
        try:
            message = await self._unless_gone(request, task)
        except _ClientGoneError:
            self.counters.client_used(client)
            return Response(status_code=499)
        except Exception as exc:  # noqa: BLE001 - every failure is answered in OpenAI's shape
            self.counters.client_used(client, failed=True)
            return self._error(self._wire_error(exc))
        if not isinstance(message, AIMessage):  # pragma: no cover - a chat model's answer
            message = AIMessage(content=str(getattr(message, "content", message)))
        tokens_in, tokens_out = usage_of(message)
        self.counters.client_used(client, input_tokens=tokens_in, output_tokens=tokens_out)
        body = completion(message, chat.model, plan.schema_tool)
        meta = message.response_metadata
        headers = {
            "x-quota-router-route": self.masked(str(meta.get("route", ""))),
            "x-quota-router-model": self.masked(str(meta.get("model_name", ""))),
        }
        return _json(body.model_dump(mode="json", exclude_none=True), headers=headers)

    async def _stream(
        self,
        request: Request,
        plan: ChatPlan,
        runnable: Runnable[Any, Any],
        model: str,
        client: str,
    ) -> Response:
        relay = _Relay(runnable.astream(plan.messages, **plan.kwargs), self)
        try:
            # Nothing is sent before the first chunk: a call nobody can serve is
            # still a 429 (or 400...) with its status, not an error event.
            first = await self._unless_gone(request, self._track(relay.next()))
        except _ClientGoneError:
            relay.cancel()
            self.counters.client_used(client)
            return Response(status_code=499)
        except Exception as exc:  # noqa: BLE001 - answered in OpenAI's shape
            self.counters.client_used(client, failed=True)
            return self._error(self._wire_error(exc))
        writer = ChunkWriter(model, plan.schema_tool)
        return _EventStream(self._events(relay, first, writer, plan, client), relay, self)

    async def _events(
        self,
        relay: _Relay,
        first: AIMessageChunk | None,
        writer: ChunkWriter,
        plan: ChatPlan,
        client: str,
    ) -> AsyncIterator[bytes]:
        failed = False
        try:
            yield writer.start()
            chunk = first
            while chunk is not None:
                for data in writer.take(chunk):
                    yield data
                try:
                    chunk = await relay.next()
                except Exception as exc:  # noqa: BLE001 - the stream ends with an error event
                    failed = True
                    yield error_event(self._wire_error(exc).body())
                    return
            for data in writer.finish(plan.include_usage):
                yield data
        finally:
            # A client gone mid-stream lands here too: the router's stream is
            # cancelled, which settles its reservation.
            relay.cancel()
            self.counters.client_used(
                client,
                failed=failed,
                input_tokens=writer.input_tokens,
                output_tokens=writer.output_tokens,
            )

    async def _embed(self, request: Request) -> Response:
        try:
            client = self._client(request)
        except WireError as exc:
            return self._error(exc)
        try:
            body = parse_embeddings(await self._body(request))
            if self.embeddings is None or body.model != self.embeddings_model:
                raise self._unknown_model(body.model)
            texts = embedding_inputs(body)
        except WireError as exc:
            self.counters.client_used(client, failed=True)
            return self._error(exc)
        except ClientDisconnect:
            return Response(status_code=499)
        task = self._track(self.embeddings.aembed_documents(texts))
        try:
            vectors = await self._unless_gone(request, task)
            if len(vectors) != len(texts):
                msg = f"the embeddings gave {len(vectors)} vectors for {len(texts)} texts"
                raise RuntimeError(msg)
            if body.dimensions is not None and any(len(v) != body.dimensions for v in vectors):
                msg = (
                    f"dimensions: this model's vectors have {len(vectors[0])} dimensions, "
                    f"not {body.dimensions}"
                )
                raise WireError(HTTPStatus.BAD_REQUEST, msg, param="dimensions")
        except _ClientGoneError:
            self.counters.client_used(client)
            return Response(status_code=499)
        except Exception as exc:  # noqa: BLE001 - answered in OpenAI's shape
            self.counters.client_used(client, failed=True)
            return self._error(self._wire_error(exc))
        tokens = embedding_response(vectors, texts, body.model, body.encoding_format)
        self.counters.client_used(client, input_tokens=tokens.usage.prompt_tokens)
        return _json(tokens.model_dump(mode="json", warnings=False))

    async def _models(self, request: Request) -> Response:
        try:
            self._client(request)
        except WireError as exc:
            return self._error(exc)
        ids = [*self.names, *(self.masked(name) for name in self.router.route_map)]
        if self.embeddings is not None:
            ids.append(self.embeddings_model)
        data = [
            Model(id=name, object="model", created=0, owned_by="quota-router").model_dump(
                exclude_none=True
            )
            for name in ids
        ]
        return _json({"object": "list", "data": data})

    async def _usage(self, request: Request) -> Response:
        try:
            client = self._client(request)
        except WireError as exc:
            return self._error(exc)

        def read() -> dict[str, dict[str, int]]:
            self.counters.flush()
            return client_view(self.counters.store)

        rows = await asyncio.to_thread(read)
        data = [{"client": name, **row} for name, row in rows.items()]
        return _json({"object": "list", "you": client, "data": data})

    async def _metrics(self, request: Request) -> Response:
        try:
            self._client(request)
        except WireError as exc:
            return self._error(exc)
        try:
            from langchain_quota_router import metrics
        except ImportError:
            msg = "/metrics needs the metrics extra: pip install 'langchain-quota-router[metrics]'"
            return self._error(WireError(HTTPStatus.NOT_FOUND, msg))

        def scrape() -> tuple[bytes, str]:
            self.counters.flush()
            registry = metrics.make_registry(self.router)
            return metrics.exposition(registry, request.headers.get("accept"))

        body, content_type = await asyncio.to_thread(scrape)
        return Response(self.masked.body(body), media_type=content_type)

    async def _health(self, _request: Request) -> Response:
        return _json({"status": "ok", "in_flight": self.in_flight})

    async def _not_found(self, request: Request, _exc: Exception) -> Response:
        msg = f"no such endpoint: {request.method} {self.masked(request.url.path)[:200]}"
        return self._error(WireError(HTTPStatus.NOT_FOUND, msg))

    async def _not_allowed(self, request: Request, _exc: Exception) -> Response:
        msg = f"{request.method} is not allowed on {self.masked(request.url.path)[:200]}"
        return self._error(WireError(HTTPStatus.METHOD_NOT_ALLOWED, msg))

    # --------------------------------------------------------------- helpers

    def _client(self, request: Request) -> str:
        peer = request.client.host if request.client else None
        return self.keys.client(request.headers, peer)

    async def _body(self, request: Request) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                msg = f"the request body is larger than {MAX_BODY // (1024 * 1024)} MiB"
                raise WireError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, msg)
            chunks.append(chunk)
        return b"".join(chunks)

    def _model(self, model: str) -> str | None:
        """The route a request's ``model`` prefers (``None``: the router's strategy)."""
        if model in self.names:
            return None
        if model in self.router.route_map:
            return model
        raise self._unknown_model(model)

    def _unknown_model(self, model: str) -> WireError:
        known = [*self.names, *(self.masked(n) for n in self.router.route_map)]
        if self.embeddings is not None:
            known.append(self.embeddings_model)
        msg = (
            f"The model {self.masked(model)[:200]!r} does not exist here; "
            f"GET /v1/models lists {', '.join(known)}"
        )
        return WireError(HTTPStatus.NOT_FOUND, msg, param="model", code="model_not_found")

    def _runnable(self, plan: ChatPlan) -> Runnable[Any, Any]:
        if not plan.tools:
            return self.router
        try:
            return self.router.bind_tools(plan.tools, **plan.bind)
        except (TypeError, ValueError) as exc:
            msg = f"tools: {self.masked(str(exc))}"
            raise WireError(HTTPStatus.BAD_REQUEST, msg, param="tools") from None

    async def _unless_gone(self, request: Request, task: asyncio.Task[_T]) -> _T:
        """``task``'s result; if the client goes first, cancel it (the router settles)
        and raise :class:`_ClientGoneError`."""
        watcher = asyncio.ensure_future(_disconnected(request.receive))
        try:
            await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise _ClientGoneError
        return task.result()

    def _wire_error(self, exc: BaseException) -> WireError:
        """What the client is told of a failure: OpenAI's status and error object."""
        if isinstance(exc, WireError):
            return exc
        text = self.masked(" ".join(str(exc).split()) or type(exc).__name__)
        if isinstance(exc, NoRouteError):
            reasons = {self.masked(k): self.masked(v) for k, v in exc.reasons.items()}
            details: dict[str, Any] = {"reasons": reasons}
            if exc.resets_at is not None:
                details["resets_at"] = exc.resets_at.isoformat()
            if isinstance(exc, QuotaExhaustedError):
                headers = {}
                if exc.resets_at is not None:
                    wait = exc.resets_at.timestamp() - self.router.clock.now()
                    headers["retry-after"] = str(max(1, math.ceil(wait)))
                return WireError(
                    HTTPStatus.TOO_MANY_REQUESTS,
                    text,
                    kind="rate_limit_error",
                    code="rate_limit_exceeded",
                    headers=headers,
                    details=details,
                )
            if isinstance(exc, RoutesContextOverflowError):
                return WireError(
                    HTTPStatus.BAD_REQUEST,
                    text,
                    param="messages",
                    code="context_length_exceeded",
                    details=details,
                )
            if isinstance(exc, RoutesInvalidRequestError):
                return WireError(HTTPStatus.BAD_REQUEST, text, details=details)
            # Keys rejected, models gone, vendors down: the vendors' failure, not
            # the client's (a 401 here would tell the client its own key is wrong).
            return WireError(
                HTTPStatus.BAD_GATEWAY,
                text,
                kind="api_error",
                code="upstream_error",
                details=details,
            )
        if isinstance(exc, (ValueError, TypeError)):
            return WireError(HTTPStatus.BAD_REQUEST, text)
        status = getattr(exc, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500 and status != 429:
            # A vendor's own refusal of the request (the router tried another route).
            return WireError(status, text, code="upstream_refused")
        logger.warning(
            "the proxy answered 502 for %s", self.masked(f"{type(exc).__name__}: {text}")
        )
        return WireError(HTTPStatus.BAD_GATEWAY, text, kind="api_error", code="upstream_error")

    def _error(self, exc: WireError) -> Response:
        return _json(exc.body(), status=exc.status, headers=exc.headers)


def create_proxy_app(
    router: QuotaRoutedChatModel,
    *,
    embeddings: Embeddings | None = None,
    client_keys: Iterable[str] | None = None,
    names: Sequence[str] = ("quota-router",),
    embeddings_model: str = "quota-router-embeddings",
    shutdown_grace: float = SHUTDOWN_GRACE,
) -> ProxyApp:
    """The OpenAI-compatible ASGI app of ``router``.

    Args:
        router: every chat completion goes through it.
        embeddings: any LangChain ``Embeddings`` (``QuotaRoutedEmbeddings``...) for
            ``/v1/embeddings``; ``None``: the router's own (``router.embeddings``,
            from ``[[embedding_routes]]``), else no embeddings.
        client_keys: the keys clients must send; ``None`` reads
            ``$QUOTA_ROUTER_PROXY_KEYS``; none at all serves only this machine.
        names: the model names that mean "the router" (route names are models too).
        embeddings_model: the model name ``/v1/embeddings`` answers to.
        shutdown_grace: seconds calls under way get at shutdown before they are
            cancelled (and settled).

    Raises:
        ConfigurationError: for a client key shorter than 16 characters.
    """
    return ProxyApp(
        router,
        embeddings=embeddings,
        client_keys=client_keys,
        names=names,
        embeddings_model=embeddings_model,
        shutdown_grace=shutdown_grace,
    )


def _json(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(data, status_code=status, headers=headers)


class _Relay:
    """The router's stream, read by a task of its own.

    One task runs the whole stream (LangChain's context and callbacks stay in one
    task), ahead of the client by at most :attr:`AHEAD` chunks; cancelling it is
    cancelling the vendor call, and the router settles the reservation.
    """

    AHEAD = 64

    def __init__(self, stream: AsyncIterator[Any], app: ProxyApp) -> None:
        self._queue: asyncio.Queue[tuple[Any, BaseException | None]] = asyncio.Queue(self.AHEAD)
        self.task = app._track(self._produce(stream))

    async def _produce(self, stream: AsyncIterator[Any]) -> None:
        try:
            async for chunk in stream:
                await self._queue.put((chunk, None))
            await self._queue.put((None, None))
        except Exception as exc:  # noqa: BLE001 - handed to the reader
            await self._queue.put((None, exc))
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()  # type: ignore[attr-defined]

    async def next(self) -> AIMessageChunk | None:
        """The next chunk, ``None`` at the end; raises the stream's error."""
        if self._queue.empty():
            getter = asyncio.ensure_future(self._queue.get())
            try:
                await asyncio.wait({getter, self.task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not getter.done():
                    getter.cancel()  # a woken getter leaves its item in the queue
            if getter.done() and not getter.cancelled():
                chunk, exc = getter.result()
            elif not self._queue.empty():
                chunk, exc = self._queue.get_nowait()
            else:
                # Cancelled under the reader (a shutdown past its grace): never
                # let that pass for the end of the answer.
                msg = "the call was cancelled: the proxy is shutting down"
                raise RuntimeError(msg)
        else:
            chunk, exc = self._queue.get_nowait()
        if exc is not None:
            raise exc
        return chunk  # type: ignore[no-any-return]

    def cancel(self) -> None:
        """Stop the stream (the vendor call with it), if it is still running."""
        if not self.task.done():
            self.task.cancel()


class _EventStream(Response):
    """A ``text/event-stream`` response that notices a client going away at once.

    Starlette's ``StreamingResponse`` notices only when its next write fails (ASGI
    2.4 servers) or listens alongside; a vendor that is slow to send its next token
    would be kept streaming to nobody. Here the client's disconnect cancels the
    router's stream at once, which settles the call.
    """

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], relay: _Relay, app: ProxyApp) -> None:
        self.events = events
        self.relay = relay
        self.app = app
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def pump() -> None:
            try:
                await send(
                    {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
                )
                async for data in self.events:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                self.relay.cancel()
                await self.events.aclose()  # type: ignore[attr-defined]

        task = self.app._track(pump())
        watcher = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # The server is shutting down past its grace: the call is cancelled (and
            # settled); the client is told, rather than left with a cut stream.
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            body = error_body(
                "the proxy is shutting down: this answer is incomplete",
                "api_error",
                code="server_shutting_down",
            )
            with contextlib.suppress(BaseException):
                await send(
                    {"type": "http.response.body", "body": error_event(body), "more_body": True}
                )
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            raise
        finally:
            watcher.cancel()
            if not task.done():
                task.cancel()
            with contextlib.suppress(BaseException):
                await task
