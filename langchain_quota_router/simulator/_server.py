"""The simulator's HTTP server and its state: keys, quotas, scripts, faults, stats."""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import re
import socket
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from langchain_quota_router.quota.clock import Clock, SystemClock

from ._cohere import CohereWire
from ._embed import CohereEmbedWire, EmbedRequest, EmbedWire, GeminiEmbedWire, OpenAIEmbedWire
from ._engine import BadRequest, Completion, ParsedRequest, complete
from ._gemini import EMBED_QUOTA, GeminiWire
from ._models import ModelTable, check_style, style_of
from ._openai import OpenAIWire
from ._quota import KeyQuota
from ._types import (
    VENDORS,
    Endpoint,
    Fault,
    KeyStats,
    RecordedRequest,
    Reply,
    RetireStyle,
    SimKey,
    SimModel,
    Vendor,
    fingerprint,
)
from ._wire import HttpAnswer, StreamEvent, Wire

logger = logging.getLogger("langchain_quota_router.simulator")

_GEMINI_PATH = re.compile(
    r"^/(?P<version>v1(?:beta)?)/models/(?P<model>[^/:]+)"
    r":(?P<method>generateContent|streamGenerateContent|embedContent|batchEmbedContents)$"
)
# GET list-models / get-model paths: OpenAI, Cohere and Gemini (3.x) share /v1/models.
_MODELS_PATH = re.compile(r"^(?P<prefix>/openai)?/(?P<version>v1(?:beta)?)/models(?:/(?P<id>.+))?$")
_MAX_BODY = 32 * 1024 * 1024
_LOG_LIMIT = 10_000


@dataclass
class _PendingFault:
    fault: Fault
    times: int
    delay: float
    after_chunks: int
    status: int | None


@dataclass(frozen=True)
class _Route:
    """Where a request line leads: which wire, which endpoint, which model."""

    wire: Wire
    kind: Literal["chat", "embed", "list", "get"] = "chat"
    model: str = ""  # from the path (Gemini chat, get-model)
    stream: bool = False  # from the path (Gemini's streamGenerateContent)
    api_version: str = "v1"
    # What a Gemini 404 says is not supported; "generateContent" for both chat
    # methods, as Gemini words it. For embeds: the endpoint, for the embed wire.
    method: str = "generateContent"
    embed: EmbedWire | None = None  # for kind == "embed": its request/answer format


@dataclass
class _Outcome:
    """What the simulator decided for one request, ready to be written."""

    answer: HttpAnswer | None = None
    events: list[StreamEvent] | None = None
    headers: Mapping[str, str] | None = None
    cut_after: int | None = None  # content chunks to send before dropping the link


class Simulator:
    """A local HTTP server that speaks the OpenAI, Groq, Gemini and Cohere chat APIs,
    and the OpenAI, Gemini and Cohere embedding APIs.

    It enforces each configured key's limits with the vendor's own windows and
    refusals, answers deterministically (or from a script), and can inject faults,
    so the real LangChain vendor classes can be tested over real HTTP on loopback.

    Use it as a context manager (``with Simulator([...]) as sim: sim.url``) or call
    ``start()`` / ``stop()``. Time for quota windows comes from ``clock``; pass a
    ``FakeClock`` and ``advance`` it instead of sleeping.

    Models: a vendor given in ``models`` serves exactly those models (any other
    name gets that vendor's 404 for an unknown model); a vendor not given serves
    every model name and lists a few defaults. ``retire`` makes a model answer as
    the vendor does after a shutdown. The list-models endpoints (OpenAI
    ``GET /v1/models``, Groq ``GET /openai/v1/models``, Gemini
    ``GET /v1beta/models`` and ``/v1/models``, Cohere ``GET /v1/models``, and
    the get-model endpoints below them) answer from the same table; they check
    the key like chat does but count against no limit.

    Embeddings (OpenAI ``POST /v1/embeddings``, Gemini
    ``models/{model}:embedContent`` and ``:batchEmbedContents``, Cohere
    ``POST /v2/embed`` and ``/v1/embed``) answer deterministic unit vectors (see
    ``_embed.embed_vector``). An embed call counts against the same per-key
    limits as chat (one request, its input tokens), and gets the same 401s, 429s,
    faults and retired-model answers; scripts are for chat only.

    Args:
        keys: the keys to accept, with their limits.
        models: the models to serve per vendor: names or ``SimModel``s.
        clock: time source for quota windows (default: the system clock).
        port: TCP port on 127.0.0.1; 0 picks a free one.
        host: the address to bind (keep the default: loopback only).

    Raises:
        ValueError: ``models`` names an unknown vendor or a retirement style the
            vendor never answers with.
    """

    def __init__(
        self,
        keys: Iterable[SimKey] = (),
        *,
        models: Mapping[Vendor, Iterable[str | SimModel]] | None = None,
        clock: Clock | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
    ) -> None:
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._host = host
        self._port = port
        self._lock = threading.RLock()
        self._keys: dict[str, SimKey] = {}
        self._quotas: dict[str, KeyQuota] = {}
        self._disabled: set[str] = set()
        self._scripts: dict[str, collections.deque[Reply]] = {}
        self._faults: dict[str, collections.deque[_PendingFault]] = {}
        self._stats: dict[str, KeyStats] = {}
        self._models = ModelTable(models)
        self._model_stats: dict[tuple[Vendor, str], KeyStats] = {}
        # Bounded so a long-running simulator process does not grow forever.
        self._log: collections.deque[tuple[str, RecordedRequest]] = collections.deque(
            maxlen=_LOG_LIMIT
        )
        self._counter = 0
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        for key in keys:
            self.add_key(key)

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> Simulator:
        """Bind the port and serve in a background thread; return self."""
        if self._server is not None:
            return self
        server = _HTTPServer((self._host, self._port), _Handler)
        server.simulator = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"simulator:{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        logger.debug("simulator listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and release the port."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------------- URLs

    @property
    def port(self) -> int:
        """The TCP port the simulator listens on (after ``start``)."""
        if self._server is None:
            msg = "the simulator is not running: call start() or use it in a with block"
            raise RuntimeError(msg)
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The root URL, e.g. ``http://127.0.0.1:40123``."""
        return f"http://{self._host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """``base_url`` for ``ChatOpenAI`` / the ``openai`` SDK."""
        return f"{self.url}/v1"

    @property
    def groq_base_url(self) -> str:
        """``base_url`` for ``ChatGroq`` (the groq SDK appends ``/openai/v1/...``)."""
        return self.url

    @property
    def gemini_base_url(self) -> str:
        """``base_url`` for ``ChatGoogleGenerativeAI`` (the SDK appends ``v1beta/``)."""
        return self.url

    @property
    def cohere_base_url(self) -> str:
        """``base_url`` for ``ChatCohere`` (the SDK appends ``v2/chat``)."""
        return self.url

    # ------------------------------------------------------------ configuration

    def add_key(self, key: SimKey) -> None:
        """Accept ``key`` (replacing an earlier key with the same secret)."""
        with self._lock:
            self._keys[key.key] = key
            self._quotas[key.key] = KeyQuota(key)
            self._disabled.discard(key.key)

    def disable(self, key: str) -> None:
        """Answer 401 to ``key`` until ``enable`` is called."""
        with self._lock:
            self._disabled.add(key)

    def enable(self, key: str) -> None:
        """Accept ``key`` again after ``disable``."""
        with self._lock:
            self._disabled.discard(key)

    def script(self, key: str, replies: Sequence[Reply]) -> None:
        """Queue ``replies`` for ``key``: each served request takes the next one.

        Faulted and refused requests do not consume a reply.
        """
        with self._lock:
            self._scripts.setdefault(key, collections.deque()).extend(replies)

    def inject(
        self,
        key: str,
        fault: Fault,
        *,
        times: int = 1,
        delay: float = 0.2,
        after_chunks: int = 0,
        status: int | None = None,
    ) -> None:
        """Make the next ``times`` requests with ``key`` fail with ``fault``.

        Args:
            key: the key whose requests fail.
            fault: what goes wrong.
            times: how many requests it hits.
            delay: for ``Fault.SLOW``, real seconds to wait before answering.
            after_chunks: for ``Fault.CUT_STREAM``, content chunks sent before the
                connection drops.
            status: for ``SERVER_ERROR``/``OVERLOADED``, the status to send instead
                of 500/503 (e.g. 529).
        """
        if times < 1:
            msg = "times must be at least 1"
            raise ValueError(msg)
        with self._lock:
            self._faults.setdefault(key, collections.deque()).append(
                _PendingFault(fault, times, delay, after_chunks, status)
            )

    def set_models(self, vendor: Vendor, models: Iterable[str | SimModel] | None) -> None:
        """Serve exactly ``models`` on ``vendor``'s wire; ``None``: every name again.

        Like ``add_key``, this is configuration: ``reset`` keeps it.

        Args:
            vendor: the vendor whose models these are.
            models: names or ``SimModel``s, in list-models order.

        Raises:
            ValueError: unknown vendor, or a retirement style it never answers with.
        """
        with self._lock:
            self._models.configure(vendor, models)

    def retire(
        self,
        model: str,
        *,
        vendor: Vendor | None = None,
        successor: str | None = None,
        style: RetireStyle | None = None,
    ) -> None:
        """Make chat and embed requests for ``model`` answer as for a retired model.

        The model also leaves list-models. It need not be configured: a vendor
        serving every name then serves every name but this one. ``reset`` undoes
        it (a ``SimModel(retired=True)`` given as configuration stays retired).

        Args:
            model: the model's name.
            vendor: the wire it is retired on; ``None``: every vendor's.
            successor: the model to name instead (in the ``"gone"`` answer).
            style: ``"not_found"``, ``"decommissioned"`` (Groq only) or ``"gone"``;
                ``None``: the vendor's own (Groq ``"decommissioned"``, others
                ``"not_found"``).

        Raises:
            ValueError: ``style`` is not one the vendor answers with
                (``"decommissioned"`` needs ``vendor="groq"``).
        """
        vendors = VENDORS if vendor is None else (vendor,)
        for each in vendors:
            check_style(each, style)  # all or nothing
        with self._lock:
            for each in vendors:
                self._models.retire(each, model, successor, style)

    def reset(self) -> None:
        """Forget usage, stats, scripts, faults, retirements and the request log.

        Keys and configured models stay.
        """
        with self._lock:
            self._quotas = {k: KeyQuota(spec) for k, spec in self._keys.items()}
            self._disabled.clear()
            self._scripts.clear()
            self._faults.clear()
            self._stats.clear()
            self._model_stats.clear()
            self._models.forget_retirements()
            self._log.clear()

    # -------------------------------------------------------------- inspection

    def stats(self, key: str) -> KeyStats:
        """Return what happened so far to requests that carried ``key``."""
        with self._lock:
            return self._stats.get(key, KeyStats())

    def model_stats(self, model: str, *, vendor: Vendor | None = None) -> KeyStats:
        """Return what happened so far to chat and embed requests for ``model``.

        Every request naming the model counts, whatever the answer (401,
        429, fault, retired, served), so a test can tell how often a retired
        route was still called.

        Args:
            model: the model name the requests carried.
            vendor: only requests on this vendor's wire; ``None``: every wire.
        """
        with self._lock:
            found = [
                stats
                for (wire_vendor, name), stats in self._model_stats.items()
                if name == model and vendor in (None, wire_vendor)
            ]
        total = KeyStats()
        for stats in found:
            total = _added(total, {f.name: getattr(stats, f.name) for f in fields(KeyStats)})
        return total

    def requests_for_model(self, model: str, *, vendor: Vendor | None = None) -> int:
        """Return how many chat and embed requests named ``model``
        (``model_stats().received``)."""
        return self.model_stats(model, vendor=vendor).received

    def models(self, vendor: Vendor) -> list[SimModel]:
        """Return the models ``vendor``'s list-models endpoint answers with now."""
        with self._lock:
            return self._models.listed(vendor)

    def requests(self, key: str | None = None) -> list[RecordedRequest]:
        """Return the requests received (for ``key`` only, if given), oldest first.

        Only the last 10,000 requests are kept.
        """
        with self._lock:
            return [r for k, r in self._log if key is None or k == key]

    # ---------------------------------------------------------------- handling

    def _bump(self, key: str, **changes: int) -> None:
        self._stats[key] = _added(self._stats.get(key), changes)

    def _count(self, key: str, wire: Wire, model: str, **changes: int) -> None:
        """Count a chat or embed request's outcome for its key and for its model."""
        self._bump(key, **changes)
        where = (wire.vendor, model)
        self._model_stats[where] = _added(self._model_stats.get(where), changes)

    def _record(
        self,
        key: str,
        wire: Wire,
        model: str,
        stream: bool,
        status: int,
        body: Mapping[str, Any],
        completion: Completion | None = None,
        *,
        endpoint: Endpoint = "chat",
        embedded: EmbedRequest | None = None,
    ) -> None:
        """Log a request (``embedded``: the embed request served, for its tokens)."""
        input_tokens = completion.input_tokens if completion else 0
        if embedded is not None:
            input_tokens = embedded.input_tokens
        self._log.append(
            (
                key,
                RecordedRequest(
                    key_alias=fingerprint(key),
                    vendor=wire.vendor,
                    model=model,
                    stream=stream,
                    status=status,
                    input_tokens=input_tokens,
                    output_tokens=completion.output_tokens if completion else 0,
                    body=body,
                    endpoint=endpoint,
                ),
            )
        )

    def _take_fault(self, key: str) -> _PendingFault | None:
        queue = self._faults.get(key)
        if not queue:
            return None
        pending = queue[0]
        pending.times -= 1
        if pending.times <= 0:
            queue.popleft()
        return pending

    def _handle(
        self,
        route: _Route,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        raw_body: bytes,
    ) -> _Outcome:
        """Decide the answer to one chat or embed request (called by the HTTP handler)."""
        wire, path_model, path_stream = route.wire, route.model, route.stream
        endpoint: Endpoint = "embed" if route.embed is not None else "chat"
        key = wire.api_key(headers, query)
        try:
            loaded = json.loads(raw_body or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            loaded = None
        body: Mapping[str, Any] = loaded if isinstance(loaded, Mapping) else {}
        model = path_model or str(body.get("model", ""))
        stream = path_stream or bool(body.get("stream", False))

        with self._lock:
            self._count(key, wire, model, received=1)
            spec = self._authorized(wire, key)
            if spec is None:
                self._count(key, wire, model, unauthorized=1)
                self._record(key, wire, model, stream, 401, body, endpoint=endpoint)
                logger.info("%s %s: 401 unknown/disabled key", wire.vendor, fingerprint(key))
                return _Outcome(wire.unauthorized(fingerprint(key)))
            pending = self._take_fault(key)
            if pending is not None:
                self._count(key, wire, model, faults=1)

        if pending is not None:
            outcome = self._fault_outcome(key, wire, model, stream, body, pending, endpoint)
            if outcome is not None:
                return outcome

        if loaded is None or not isinstance(loaded, Mapping):
            with self._lock:
                self._record(key, wire, model, stream, 400, body, endpoint=endpoint)
            return _Outcome(wire.bad_request("request body is not a JSON object"))
        # Before the body is validated and before any quota: a vendor has no
        # quota for a model it does not serve. An empty name is left to parse();
        # a connection about to be cut answers nothing at all.
        cut = pending is not None and pending.fault is Fault.CUT_STREAM
        if model and not cut:
            with self._lock:
                found = self._models.lookup(wire.vendor, model)
                if found is None or found.retired:
                    style = "not_found" if found is None else style_of(wire.vendor, found)
                    answer = wire.model_unavailable(
                        model,
                        style,
                        found.successor if found else None,
                        api_version=route.api_version,
                        method=route.method,
                    )
                    self._count(key, wire, model, model_unavailable=1)
                    self._record(key, wire, model, stream, answer.status, body, endpoint=endpoint)
                    logger.info(
                        "%s %s: %d for model %s (%s)",
                        wire.vendor,
                        fingerprint(key),
                        answer.status,
                        model,
                        "unknown" if found is None else "retired",
                    )
                    return _Outcome(answer)
        if route.embed is not None:
            return self._handle_embed(key, spec, route, model, body, pending)
        try:
            request = wire.parse(body, path_model, path_stream)
        except BadRequest as exc:
            with self._lock:
                self._record(key, wire, model, stream, 400, body)
            return _Outcome(wire.bad_request(str(exc)))

        with self._lock:
            now = self.clock.now()
            quota = self._quotas[key]
            if pending is not None and pending.fault is Fault.CUT_STREAM:
                # A cut answer is never delivered: do not count it or use the script.
                completion = complete(request, self._peek_script(key))
                self._record(key, wire, model, stream, 0, body)
                return self._render(wire, request, completion, now, {}, pending.after_chunks)
            counted = request.input_tokens
            script = self._peek_script(key)
            if script is not None and script.input_tokens is not None:
                counted = script.input_tokens
            refusal = quota.check(now, counted)
            if refusal is not None:
                self._count(key, wire, model, refused=1)
                self._record(key, wire, model, stream, 429, body)
                logger.info(
                    "%s %s: 429 on %s (retry in %.1fs)",
                    wire.vendor,
                    fingerprint(key),
                    refusal.limit_name,
                    refusal.retry_after,
                )
                return _Outcome(wire.rate_limited(spec, request.model, refusal, quota.usage(now)))
            completion = complete(request, self._pop_script(key))
            spent = completion.input_tokens
            if spec.vendor != "gemini":  # Gemini's token quota counts input only.
                spent += completion.output_tokens
            quota.record(now, spent)
            self._count(
                key,
                wire,
                model,
                served=1,
                input_tokens=completion.input_tokens,
                output_tokens=completion.output_tokens,
            )
            self._record(key, wire, model, stream, 200, body, completion)
            headers_out = wire.success_headers(spec, quota.usage(now))
            return self._render(wire, request, completion, now, headers_out, None)

    def _fault_outcome(
        self,
        key: str,
        wire: Wire,
        model: str,
        stream: bool,
        body: Mapping[str, Any],
        pending: _PendingFault,
        endpoint: Endpoint,
    ) -> _Outcome | None:
        fault = pending.fault
        logger.info("%s %s: injected fault %s", wire.vendor, fingerprint(key), fault.name)
        if fault is Fault.SLOW:
            # Real time on purpose: the client's timeout is real time too.
            time.sleep(max(0.0, pending.delay))
            return None
        if fault is Fault.CUT_STREAM:
            return None
        with self._lock:
            if fault is Fault.UNAUTHORIZED:
                self._count(key, wire, model, unauthorized=1)
                self._record(key, wire, model, stream, 401, body, endpoint=endpoint)
                return _Outcome(wire.unauthorized(fingerprint(key)))
            status = pending.status or (500 if fault is Fault.SERVER_ERROR else 503)
            self._record(key, wire, model, stream, status, body, endpoint=endpoint)
            return _Outcome(wire.server_error(status))

    def _handle_embed(
        self,
        key: str,
        spec: SimKey,
        route: _Route,
        model: str,
        body: Mapping[str, Any],
        pending: _PendingFault | None,
    ) -> _Outcome:
        """Finish an embed request: parse, quota, answer (auth and faults are done).

        It counts against the key's limits exactly as a chat request does: one
        request, and its input tokens (there are no output tokens).
        """
        wire, embed = route.wire, route.embed
        assert embed is not None  # only embed routes come here
        try:
            request = embed.parse(body, route.model, route.method)
        except BadRequest as exc:
            with self._lock:
                self._record(key, wire, model, False, 400, body, endpoint="embed")
            return _Outcome(wire.bad_request(str(exc)))
        with self._lock:
            now = self.clock.now()
            quota = self._quotas[key]
            if pending is not None and pending.fault is Fault.CUT_STREAM:
                # No answer at all: nothing counted.
                self._record(key, wire, model, False, 0, body, endpoint="embed")
                return _Outcome(cut_after=0)
            refusal = quota.check(now, request.input_tokens)
            if refusal is not None:
                self._count(key, wire, model, refused=1)
                self._record(key, wire, model, False, 429, body, endpoint="embed")
                logger.info(
                    "%s %s: 429 on %s for an embed (retry in %.1fs)",
                    wire.vendor,
                    fingerprint(key),
                    refusal.limit_name,
                    refusal.retry_after,
                )
                usage = quota.usage(now)
                return _Outcome(embed.rate_limited(spec, request.model, refusal, usage))
            quota.record(now, request.input_tokens)
            self._count(key, wire, model, served=1, input_tokens=request.input_tokens)
            self._record(key, wire, model, False, 200, body, endpoint="embed", embedded=request)
            headers = wire.success_headers(spec, quota.usage(now))
            self._counter += 1
            rid = f"sim{self._counter:06d}"
        answer = embed.answer(request, rid)  # vectors are built outside the lock
        return _Outcome(HttpAnswer(answer.status, answer.body, {**answer.headers, **headers}))

    def _peek_script(self, key: str) -> Reply | None:
        queue = self._scripts.get(key)
        return queue[0] if queue else None

    def _pop_script(self, key: str) -> Reply | None:
        queue = self._scripts.get(key)
        return queue.popleft() if queue else None

    def _render(
        self,
        wire: Wire,
        request: ParsedRequest,
        completion: Completion,
        now: float,
        headers: Mapping[str, str],
        cut_after: int | None,
    ) -> _Outcome:
        self._counter += 1
        rid = f"sim{self._counter:06d}"
        if request.stream:
            events = wire.stream(request, completion, rid, now)
            return _Outcome(events=events, headers=headers, cut_after=cut_after)
        answer = wire.answer(request, completion, rid, now)
        answer = HttpAnswer(answer.status, answer.body, {**answer.headers, **headers})
        return _Outcome(answer=answer, cut_after=cut_after)

    def _authorized(self, wire: Wire, key: str) -> SimKey | None:
        """The key's spec if ``key`` may call ``wire`` now (caller holds the lock)."""
        spec = self._keys.get(key)
        if spec is None or spec.vendor != wire.vendor or key in self._disabled:
            return None
        return spec

    def _handle_models(
        self, route: _Route, headers: Mapping[str, str], query: Mapping[str, str]
    ) -> HttpAnswer:
        """Answer a list-models or get-model request: auth as for chat, no quota."""
        wire = route.wire
        key = wire.api_key(headers, query)
        with self._lock:
            self._bump(key, listed=1)
            if self._authorized(wire, key) is None:
                logger.info("%s %s: 401 listing models", wire.vendor, fingerprint(key))
                return wire.unauthorized(fingerprint(key))
            if route.kind == "list":
                try:
                    return wire.model_list(self._models.listed(wire.vendor), query)
                except BadRequest as exc:
                    return wire.bad_request(str(exc))
            found = self._models.lookup(wire.vendor, route.model)
            if found is not None and not found.retired:
                return wire.model_info(found)
            # Getting a retired model's details is "not found" (Groq's
            # "decommissioned" is a chat answer), unless the whole API is gone.
            gone = found is not None and style_of(wire.vendor, found) == "gone"
            return wire.model_unavailable(
                route.model,
                "gone" if gone else "not_found",
                found.successor if found else None,
                api_version=route.api_version,
                method="getModel",
            )

    def _route(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        query: Mapping[str, str],
    ) -> _Route | None:
        """Map a request line to the endpoint and vendor wire it addresses."""
        if method == "GET":
            match = _MODELS_PATH.match(path)
            if match is None:
                return None
            kind: Literal["list", "get"] = "get" if match["id"] else "list"
            model = unquote(match["id"] or "")
            version = match["version"]
            if match["prefix"]:
                wire = _WIRES["groq"] if version == "v1" else None
            elif version == "v1beta":
                wire = _WIRES["gemini"]
            else:
                wire = self._models_wire(headers, query)
            if wire is None:
                return None
            if wire.vendor == "gemini":
                model = model.removeprefix("models/")
            return _Route(wire, kind, model, api_version=version)
        if method != "POST":
            return None
        if path == "/v1/chat/completions":
            return _Route(_WIRES["openai"])
        if path == "/openai/v1/chat/completions":
            return _Route(_WIRES["groq"])
        if path == "/v2/chat":
            return _Route(_WIRES["cohere"])
        if path == "/v1/embeddings":
            return _embed_route("openai", "embeddings")
        if path in ("/v1/embed", "/v2/embed"):
            return _embed_route("cohere", path[1:3])
        match = _GEMINI_PATH.match(path)
        if match and match["method"] in ("embedContent", "batchEmbedContents"):
            return _embed_route("gemini", match["method"], match["model"], match["version"])
        if match:
            return _Route(
                _WIRES["gemini"],
                "chat",
                match["model"],
                match["method"].startswith("stream"),
                api_version=match["version"],
            )
        return None

    def _models_wire(self, headers: Mapping[str, str], query: Mapping[str, str]) -> Wire:
        """Tell whose ``GET /v1/models`` this is: OpenAI, Cohere and Gemini share it.

        Gemini sends its key as ``x-goog-api-key`` or ``?key=``; OpenAI and Cohere
        both send a bearer token, so a known key decides by its vendor, and an
        unknown one by the Cohere SDK's ``x-fern-sdk-name`` header (so its 401
        comes in Cohere's shape).
        """
        if "x-goog-api-key" in headers or "key" in query:
            return _WIRES["gemini"]
        with self._lock:
            spec = self._keys.get(_WIRES["openai"].api_key(headers, query))
        if spec is not None and spec.vendor in ("openai", "cohere"):
            return _WIRES[spec.vendor]
        if "cohere" in headers.get("x-fern-sdk-name", "").lower():
            return _WIRES["cohere"]
        return _WIRES["openai"]


def _added(stats: KeyStats | None, changes: Mapping[str, int]) -> KeyStats:
    current = stats or KeyStats()
    return replace(current, **{name: getattr(current, name) + n for name, n in changes.items()})


_WIRES: dict[Vendor, Wire] = {
    "openai": OpenAIWire("openai"),
    "groq": OpenAIWire("groq"),
    "gemini": GeminiWire(),
    "cohere": CohereWire(),
}
# Groq serves no embeddings. Gemini's embed 429s name the embed quotas.
_EMBED_WIRES: dict[Vendor, EmbedWire] = {
    "openai": OpenAIEmbedWire(_WIRES["openai"]),
    "gemini": GeminiEmbedWire(GeminiWire(EMBED_QUOTA)),
    "cohere": CohereEmbedWire(_WIRES["cohere"]),
}


def _embed_route(vendor: Vendor, method: str, model: str = "", version: str = "v1") -> _Route:
    embed = _EMBED_WIRES[vendor]
    return _Route(embed.base, "embed", model, api_version=version, method=method, embed=embed)


class _HTTPServer(ThreadingHTTPServer):
    """A threading server that remembers its simulator and open connections."""

    daemon_threads = True
    allow_reuse_address = True
    # socketserver's backlog of 5 drops the connects of a batch of 20 (the client
    # waits a second for the retransmit, or gives up): a vendor takes them all.
    request_queue_size = 128
    simulator: Simulator

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (timeouts, cut streams, test teardown) are routine for
        # a simulator of failing vendors, not errors worth a traceback.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)

    def track(self, sock: socket.socket, *, add: bool) -> None:
        with self._open_lock:
            if add:
                self._open.add(sock)
            else:
                self._open.discard(sock)

    def close_connections(self) -> None:
        """Drop kept-alive client connections so their threads end now."""
        with self._open_lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            with contextlib.suppress(OSError):  # already closed by the client
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    """Reads one request, asks the simulator, writes the answer (or cuts it)."""

    # HTTP/1.1 so streams are chunked: a dropped connection is then visibly
    # incomplete to the client instead of looking like a normal end of body.
    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    timeout = 30  # idle keep-alive connections give up their thread after this

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle plus
        # the client's delayed ACK adds ~40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        self.server.track(self.connection, add=False)
        with contextlib.suppress(OSError):  # the client may have gone already
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        # The default writes every request line to stderr; keys can sit in a
        # Gemini "?key=" query, so stay quiet and log our own redacted lines.
        return

    def do_GET(self) -> None:
        """List or get models, or the CLI's health check ``GET /_sim/health``."""
        parts = urlsplit(self.path)
        if parts.path == "/_sim/health":
            self._send_json(HttpAnswer(200, {"ok": True}))
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        query = dict(parse_qsl(parts.query))
        route = self.server.simulator._route("GET", parts.path, headers, query)
        if route is None:
            self._not_found()
            return
        answer = self.server.simulator._handle_models(route, headers, query)
        try:
            self._send_json(answer)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_POST(self) -> None:
        """Answer a chat or embed request on any of the vendors' paths."""
        parts = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        if length < 0 or length > _MAX_BODY:
            self._send_json(HttpAnswer(413, {"error": {"message": "body too large"}}))
            return
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        query = dict(parse_qsl(parts.query))
        route = self.server.simulator._route("POST", parts.path, headers, query)
        if route is None:
            self._not_found()
            return
        outcome = self.server.simulator._handle(route, headers, query, raw)
        try:
            self._write(outcome)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _not_found(self) -> None:
        self._send_json(
            HttpAnswer(404, {"error": {"message": f"no such endpoint: {self.command}"}})
        )

    def _write(self, outcome: _Outcome) -> None:
        if outcome.events is not None:
            self._send_stream(outcome.events, outcome.headers or {}, outcome.cut_after)
        elif outcome.cut_after is not None:
            self._drop()
        elif outcome.answer is not None:
            self._send_json(outcome.answer)

    def _send_json(self, answer: HttpAnswer) -> None:
        data = json.dumps(answer.body).encode()
        self.send_response(answer.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _send_stream(
        self,
        events: list[StreamEvent],
        headers: Mapping[str, str],
        cut_after: int | None,
    ) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.flush()
        sent = 0
        for event in events:
            if event.content and cut_after is not None and sent >= cut_after:
                self._drop()
                return
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event.data), event.data))
            self.wfile.flush()
            sent += event.content
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _drop(self) -> None:
        """Close the connection mid-answer, as a crashed upstream would."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
