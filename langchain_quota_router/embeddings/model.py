"""``QuotaRoutedEmbeddings``: one LangChain ``Embeddings`` in front of many vendor keys."""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from langchain_core.embeddings import Embeddings

from langchain_quota_router._errors import ConfigurationError, NoRouteError, no_route_error
from langchain_quota_router.embeddings.batching import estimate_tokens
from langchain_quota_router.embeddings.cache import (
    DiskEmbeddingCache,
    EmbeddingCache,
    vector_key,
)
from langchain_quota_router.embeddings.routing import BatchCall
from langchain_quota_router.quota.book import client_book
from langchain_quota_router.quota.clock import Clock, SystemClock
from langchain_quota_router.quota.ledger import LearnedLimit, Ledger, LimitUsage, open_ledger
from langchain_quota_router.quota.ledger.settle import asettle, settle
from langchain_quota_router.quota.limits import Limit
from langchain_quota_router.quota.watch import Lifespan
from langchain_quota_router.route import EmbeddingRoute, Route, route_keys
from langchain_quota_router.vendors import catalog
from langchain_quota_router.vendors.embedders import InputType

__all__ = ["QuotaRoutedEmbeddings"]

Vector = list[float]


class QuotaRoutedEmbeddings(Embeddings):
    """Embeddings that send each batch to a key with quota left, in one vector space.

    Every route must give vectors of one model and one dimension: the same model on
    several keys (or vendors) is what the router is for; two models would corrupt
    the user's index. ``embed_documents`` is cut into batches in each vendor's unit
    (its most texts and tokens per call), each batch reserved in the ledger before
    it is sent (one request per call; per text where the vendor may count texts,
    Gemini; its estimated tokens), the vendor class called for that one batch with
    its own batching and retries off; when a key runs out the remaining batches go
    to other keys. Vectors come back in input order, and are cached per text.

    Example:
        ```python
        from langchain_cohere import CohereEmbeddings
        from langchain_quota_router import QuotaRoutedEmbeddings, Route

        embeddings = QuotaRoutedEmbeddings(
            routes=[
                Route(CohereEmbeddings(model="embed-v4.0", cohere_api_key=k1),
                      limits=["100/minute", "1000/month"], pool="cohere-1"),
                Route("cohere:embed-v4.0", api_key=k2),  # the catalog's limits
            ],
        )
        vectors = embeddings.embed_documents(chunks)
        ```

    Args:
        routes: :class:`~langchain_quota_router.Route` objects made from
            ``Embeddings`` (or embedding specs such as ``"cohere:embed-v4.0"``); a
            bare ``Embeddings`` or spec string is wrapped in a default ``Route``.
        ledger: ``"memory://"``, ``"sqlite:///path.db"``, ``"redis://..."`` or a
            ``Ledger``; ``None``: the chat model's default ledger, so a chat route
            and an embedding route naming one ``pool=`` count together.
        cache: ``True`` (default): a :class:`DiskEmbeddingCache` beside the chat
            response cache; ``False``/``None``: none; or any
            :class:`~langchain_quota_router.embeddings.cache.EmbeddingCache`.
        strategy: ``"priority"`` or ``"spread"`` (the pool with most room first).
        max_wait: seconds a batch may wait for quota before the call raises.
        clock: what "now" is (tests pass a ``FakeClock``).
        transient_cooldown: seconds a route rests after a 5xx or a timeout.
        rate_limit_cooldown: seconds a pool is blocked after a 429 naming no time.
        model_recheck: seconds a route whose model is gone (or whose vectors were of
            another space) is skipped before it is asked again.
        alert_thresholds: percentages of any limit that log an alert once.
        fleet_counters: count calls for the fleet in the ledger.

    Raises:
        ConfigurationError: no routes, a chat route, routes on different models or
            dimensions (naming them), or a bad setting.
    """

    def __init__(
        self,
        routes: Sequence[Route | Embeddings | str],
        *,
        ledger: str | Ledger | None = None,
        cache: EmbeddingCache | bool | None = True,
        strategy: Literal["priority", "spread"] = "priority",
        max_wait: float = 0.0,
        clock: Clock | None = None,
        transient_cooldown: float = 30.0,
        rate_limit_cooldown: float = 60.0,
        model_recheck: float = 3600.0,
        alert_thresholds: Sequence[float] = (75.0, 90.0, 95.0),
        fleet_counters: bool = True,
    ) -> None:
        self.routes: tuple[EmbeddingRoute, ...] = tuple(_embedding_route(r) for r in routes or ())
        if not self.routes:
            msg = "QuotaRoutedEmbeddings needs at least one route"
            raise ConfigurationError(msg)
        if strategy not in ("priority", "spread"):
            msg = f"strategy must be 'priority' or 'spread', got {strategy!r}"
            raise ConfigurationError(msg)
        for what, value in (
            ("max_wait", max_wait),
            ("transient_cooldown", transient_cooldown),
            ("rate_limit_cooldown", rate_limit_cooldown),
            ("model_recheck", model_recheck),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                msg = f"{what} must be a finite number of seconds, not negative; got {value!r}"
                raise ConfigurationError(msg)
        if any(not 0 < t <= 100 for t in alert_thresholds):
            msg = f"alert_thresholds must be percentages in (0, 100], got {alert_thresholds}"
            raise ConfigurationError(msg)
        #: The model every route embeds with, and the dimension (when known before
        #: the first answer): together, this router's vector space.
        self.model_name, self._dimension = _one_vector_space(self.routes)
        # Cache keys name the space as configured, so they never change once the
        # first answer tells a dimension no route stated.
        self._space = (self.model_name, self._dimension)
        self._dimension_lock = threading.Lock()
        #: Routes taken out because their vectors are of another space: name -> why.
        self._excluded: dict[str, str] = {}
        self.strategy = strategy
        self.clock: Clock = clock or SystemClock()
        self.ledger_backend: Ledger = ledger if isinstance(ledger, Ledger) else open_ledger(ledger)
        self.cache: EmbeddingCache | None
        if cache is True:
            self.cache = DiskEmbeddingCache()
        elif cache is False or cache is None:
            self.cache = None
        elif isinstance(cache, EmbeddingCache):
            self.cache = cache
        else:
            msg = f"cache must be True, False or an EmbeddingCache, got {type(cache).__name__}"
            raise ConfigurationError(msg)
        keys = route_keys(self.routes)
        self._book, self._policy = client_book(
            self.routes,
            self.ledger_backend,
            self.clock,
            fleet_counters=fleet_counters,
            alert_thresholds=alert_thresholds,
            strategy=strategy,
            max_wait=float(max_wait),
            transient_cooldown=float(transient_cooldown),
            rate_limit_cooldown=float(rate_limit_cooldown),
            model_recheck=float(model_recheck),
            error_for=no_route_error,
            secrets=lambda: keys,
            successor_of=lambda m: catalog.successor_of(m.provider, m.model_name),
            # Every route embeds with the same model: a request one vendor calls bad
            # (a text too long) the next would refuse too.
            retry_bad_requests=False,
        )
        self.stats = self._book.stats

    def __repr__(self) -> str:
        return (
            f"QuotaRoutedEmbeddings(model={self.model_name!r}, dimension={self.dimension}, "
            f"routes={[r.name for r in self.routes]})"
        )

    # ------------------------------------------------------------ building

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        dotenv: str | os.PathLike[str] | None = ".env",
        **kwargs: Any,
    ) -> QuotaRoutedEmbeddings:
        """A router over the keys the chat model's ``from_env`` reads, for the
        embedding model named by ``<VENDOR>_EMBEDDING_MODEL``.

        ``COHERE_EMBEDDING_MODEL=embed-v4.0`` beside ``COHERE_API_KEY_1``,
        ``COHERE_API_KEY_2``... makes one route per Cohere key on that model, with
        the catalog's limits and batch cap, in the key's pool (shared with its chat
        routes where the vendor counts them together). Naming embedding models of
        two vendors is an error unless they are the same model. ``kwargs`` go to
        the constructor.
        """
        from langchain_quota_router._config import embedding_routes_from_env

        return cls(embedding_routes_from_env(environ, dotenv=dotenv), **kwargs)

    # ------------------------------------------------------------ Embeddings

    def embed_documents(self, texts: list[str]) -> list[Vector]:
        """Embed documents, batched in each vendor's unit; vectors in input order.

        Raises:
            NoRouteError: (its LangChain-typed subclasses) no route could embed a
                batch; its message and its ``embedded``/``remaining`` attributes say
                how many texts were embedded (they are in the cache) and which remain.
        """
        return self._embed(list(texts), "document")

    def embed_query(self, text: str) -> Vector:
        """Embed a search query (cached apart from documents: vendors embed the two
        differently)."""
        return self._embed([text], "query")[0]

    async def aembed_documents(self, texts: list[str]) -> list[Vector]:
        """:meth:`embed_documents` for async code: no ledger or cache I/O on the loop."""
        return await self._aembed(list(texts), "document")

    async def aembed_query(self, text: str) -> Vector:
        """:meth:`embed_query` for async code."""
        return (await self._aembed([text], "query"))[0]

    # ------------------------------------------------------------ the work

    def _embed(self, texts: list[str], kind: InputType) -> list[Vector]:
        work = _Work(self, texts, kind)
        if self.cache is not None and texts:
            work.found(self.cache.get_many(work.keys))
        while work.pending():
            try:
                vectors, count = self._batch(work)
            except Exception as exc:
                error = work.incomplete(exc)
                if error is exc:
                    raise
                raise error from exc.__cause__
            if self.cache is not None:
                self.cache.set_many(work.store(vectors, count))
            else:
                work.store(vectors, count)
        return work.results()

    async def _aembed(self, texts: list[str], kind: InputType) -> list[Vector]:
        work = _Work(self, texts, kind)
        if self.cache is not None and texts:
            work.found(await self.cache.aget_many(work.keys))
        while work.pending():
            try:
                vectors, count = await self._abatch(work)
            except Exception as exc:
                error = work.incomplete(exc)
                if error is exc:
                    raise
                raise error from exc.__cause__
            if self.cache is not None:
                await self.cache.aset_many(work.store(vectors, count))
            else:
                work.store(vectors, count)
        return work.results()

    def _batch(self, work: _Work) -> tuple[list[Vector], int]:
        """Embed the next batch on the first route with room: ``(vectors, texts)``."""
        call = BatchCall(self._policy, work.tokens, work.position, self._excluded)
        while True:
            for plan, reservation in call.admitted():
                route: EmbeddingRoute = plan.member
                batch = work.todo[work.position : work.position + plan.payload]
                try:
                    vectors = route.embedder.embed(route.embeddings, batch, work.kind)
                except Exception as exc:  # noqa: BLE001 - classified, then next route or raised
                    call.failed(plan, reservation, exc)
                    continue
                except BaseException:
                    settle(self.ledger_backend, reservation, plan.demand, self.clock.now())
                    raise
                problem = self._foreign(vectors, len(batch))
                if problem is not None:
                    self._excluded[route.name] = call.foreign(plan, reservation, problem)
                    continue
                call.embedded(plan, reservation)
                return vectors, len(batch)
            self.clock.sleep(call.wait_or_raise())

    async def _abatch(self, work: _Work) -> tuple[list[Vector], int]:
        """:meth:`_batch` without blocking the event loop."""
        call = BatchCall(self._policy, work.tokens, work.position, self._excluded)
        ledger = self.ledger_backend
        while True:
            async with contextlib.aclosing(call.aadmitted()) as admitted:
                async for plan, reservation in admitted:
                    route: EmbeddingRoute = plan.member
                    batch = work.todo[work.position : work.position + plan.payload]
                    try:
                        vectors = await route.embedder.aembed(route.embeddings, batch, work.kind)
                    except Exception as exc:  # noqa: BLE001 - classified, then next route or raised
                        await ledger.arun(call.failed, plan, reservation, exc)
                        continue
                    except BaseException:
                        await asettle(ledger, reservation, plan.demand, self.clock.now())
                        raise
                    problem = self._foreign(vectors, len(batch))
                    if problem is not None:
                        self._excluded[route.name] = await ledger.arun(
                            call.foreign, plan, reservation, problem
                        )
                        continue
                    await call.aembedded(plan, reservation)
                    return vectors, len(batch)
            await self.clock.asleep(call.wait_or_raise())

    def _foreign(self, vectors: list[Vector], expected: int) -> str | None:
        """Why an answer is not of this router's vector space, or None: the first
        answer fixes the dimension when no route stated it."""
        if len(vectors) != expected:
            return f"answered {len(vectors)} vectors for {expected} texts"
        sizes = {len(v) for v in vectors}
        with self._dimension_lock:
            if self._dimension is None and len(sizes) == 1:
                self._dimension = sizes.pop()
                return None
        wanted = self._dimension
        odd = sorted(s for s in sizes if s != wanted)
        if odd:
            return f"answered vectors of {odd[0]} dimensions, not this router's {wanted}"
        return None

    # ------------------------------------------------------------ operations

    @property
    def dimension(self) -> int | None:
        """The size of this router's vectors (``None`` until known)."""
        return self._dimension

    @property
    def members(self) -> tuple[EmbeddingRoute, ...]:
        """The routes, as the quota core's status model reads them."""
        return self.routes

    @property
    def route_map(self) -> dict[str, EmbeddingRoute]:
        """Routes by name."""
        return {r.name: r for r in self.routes}

    @property
    def pool_limits(self) -> dict[str, tuple[Limit, ...]]:
        """Each pool's limits as enforced now."""
        return self._book.pool_limits

    def keys_to_mask(self) -> list[str]:
        """Every API key the routes hold, longest first: never shown anywhere."""
        return self._policy.secrets()

    def usage(self) -> list[LimitUsage]:
        """Per pool and limit: used, remaining, percent and when it resets."""
        return self._book.usage()

    def lifespan(self, tokens_per_day: int) -> Lifespan:
        """How long each pool lasts at ``tokens_per_day``."""
        return self._book.lifespan(tokens_per_day)

    def learned_limits(self) -> list[LearnedLimit]:
        """Limits the vendors' headers stated for these pools, and when."""
        return self._book.learned_limits()

    def history(self, since: Any = None, step: Any = None) -> list[dict[str, Any]]:
        """Each pool's limits' use over time (see ``QuotaRoutedChatModel.history``)."""
        return self._book.history(since, step)

    def get_stats(self) -> dict[str, Any]:
        """Calls per route, fallbacks, errors, cache hits (per text): this process's,
        and the fleet's under ``"fleet"``."""
        return self._book.get_stats()

    def enable(self, route: str) -> bool:
        """Use a route again: lift its key's disable, its model's unavailable mark,
        and a taking out for vectors of another space. Returns whether any was set."""
        was = self._excluded.pop(route, None) is not None
        return self._book.enable(route) or was

    def reset(self, route: str) -> None:
        """Forget what a route's pool has spent and lift its block."""
        self._book.reset(route)


class _Work:
    """One call's texts: what the cache had, what is left to embed, and where."""

    def __init__(self, router: QuotaRoutedEmbeddings, texts: list[str], kind: InputType) -> None:
        self.router = router
        self.texts = texts
        self.kind = kind
        space = router._space
        self.keys = [vector_key(space[0], space[1], kind, t) for t in texts]
        self.vectors: list[Vector | None] = [None] * len(texts)
        self.todo: list[str] = []
        self.tokens: list[int] = []
        self.position = 0
        # A text that appears twice is embedded once.
        self._where: dict[str, list[int]] = {}
        self._set_todo()

    def _set_todo(self) -> None:
        self._where.clear()
        for index, text in enumerate(self.texts):
            if self.vectors[index] is None:
                self._where.setdefault(text, []).append(index)
        self.todo = list(self._where)
        self.tokens = [estimate_tokens(t) for t in self.todo]

    def found(self, cached: list[Vector | None]) -> None:
        hits = 0
        for index, vector in enumerate(cached):
            if vector is not None:
                self.vectors[index] = vector
                hits += 1
        for _ in range(hits):
            self.router.stats.hit()
        self._set_todo()

    def pending(self) -> bool:
        return self.position < len(self.todo)

    def store(self, vectors: list[Vector], count: int) -> dict[str, Vector]:
        """Put a batch's vectors in place; returns them by cache key."""
        fresh: dict[str, Vector] = {}
        batch = self.todo[self.position : self.position + count]
        for text, vector in zip(batch, vectors, strict=True):
            for index in self._where[text]:
                self.vectors[index] = vector
            fresh[self.keys[self._where[text][0]]] = vector
        self.position += count
        return fresh

    def results(self) -> list[Vector]:
        out = [v for v in self.vectors if v is not None]
        assert len(out) == len(self.texts)
        return out

    def incomplete(self, exc: Exception) -> Exception:
        """``exc``, saying how many texts were embedded and which remain."""
        remaining = [i for i, v in enumerate(self.vectors) if v is None]
        embedded = len(self.texts) - len(remaining)
        if self.kind == "query" or not remaining:
            return exc
        said = (
            f"embedded {embedded} of {len(self.texts)} texts (kept in the cache: asking "
            f"again embeds only the rest); {len(remaining)} remain: texts "
            f"{_ranges(remaining)}"
        )
        error: Exception = exc
        if isinstance(exc, NoRouteError):
            error = type(exc)(exc.reasons, exc.resets_at)
            error.args = (f"{said}. {exc}",)
        else:
            exc.add_note(said)
        error.embedded = embedded  # type: ignore[attr-defined]
        error.remaining = remaining  # type: ignore[attr-defined]
        return error


def _ranges(indexes: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"`` (at most eight spans shown)."""
    spans: list[tuple[int, int]] = []
    for i in indexes:
        if spans and spans[-1][1] == i - 1:
            spans[-1] = (spans[-1][0], i)
        else:
            spans.append((i, i))
    shown = [f"{a}-{b}" if a != b else str(a) for a, b in spans[:8]]
    return ", ".join(shown) + (", ..." if len(spans) > 8 else "")


def _embedding_route(route: Any) -> EmbeddingRoute:
    if isinstance(route, (Embeddings, str)) and not isinstance(route, Route):
        route = Route(route)
    if isinstance(route, EmbeddingRoute):
        return route
    if isinstance(route, Route):
        msg = (
            f"route {route.name!r} holds a chat model: QuotaRoutedEmbeddings takes "
            "routes of Embeddings (Route(CohereEmbeddings(...)) or "
            "Route('cohere:embed-v4.0'))"
        )
        raise ConfigurationError(msg)
    msg = f"routes must be Route objects or Embeddings, got {type(route).__name__}"
    raise ConfigurationError(msg)


def _one_vector_space(routes: Sequence[EmbeddingRoute]) -> tuple[str, int | None]:
    """The one model and dimension every route embeds with.

    Raises:
        ConfigurationError: routes on different models, or at different dimensions;
            the message names them.
    """
    by_model: dict[str, list[str]] = {}
    for route in routes:
        by_model.setdefault(route.model_name, []).append(route.name)
    if len(by_model) > 1:
        groups = "; ".join(f"{model}: {', '.join(names)}" for model, names in by_model.items())
        msg = (
            "every route of one QuotaRoutedEmbeddings must embed with the same model "
            f"(vectors of different models cannot share an index); got {groups}"
        )
        raise ConfigurationError(msg)
    by_dimension: dict[int, list[str]] = {}
    for route in routes:
        if route.dimension is not None:
            by_dimension.setdefault(route.dimension, []).append(route.name)
    if len(by_dimension) > 1:
        groups = "; ".join(f"{dim}: {', '.join(names)}" for dim, names in by_dimension.items())
        msg = (
            "every route of one QuotaRoutedEmbeddings must give vectors of one "
            f"dimension; got {groups}"
        )
        raise ConfigurationError(msg)
    return routes[0].model_name, next(iter(by_dimension), None)
