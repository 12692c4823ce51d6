"""Prometheus metrics for a router: quota per pool and limit, counters per route.

Needs the ``metrics`` extra (``pip install 'langchain-quota-router[metrics]'``, which
installs ``prometheus-client``). Three ways in:

- ``register(router)``: add the router's metrics to ``prometheus_client``'s default
  registry, for a service that already exposes it (``start_http_server``, a
  framework's ``/metrics`` route).
- ``make_asgi_app(router)``: an ASGI app serving only this router's metrics, to mount
  anywhere (``app.mount("/metrics", make_asgi_app(router))``).
- The status page (:func:`langchain_quota_router.web.create_app`) serves them at
  ``/metrics``.

Every scrape reads the router's ledger, so with a shared ledger (SQLite, Redis) the
quota gauges are the fleet's, whichever process is scraped. So are the
``quota_router_fleet_*`` counters: what every router counting in that ledger did
(``get_stats()["fleet"]``), the same whichever process is scraped (take ``max by
(route)`` across scrapes of several workers, never ``sum``). The other call counters
come from ``router.get_stats()`` and count the scraped process's calls only: scrape
every worker and ``sum by (route)``.

Metrics (gauges per pool and limit are labelled ``pool``, ``limit`` - the limit as
written, ``"10/day"`` -, ``metric`` - ``requests``, ``tokens``, ``input_tokens`` or
``output_tokens`` - and ``window`` - ``minute``, ``day@America/Los_Angeles``, ...):

==========================================  =========  ==========================================
``quota_router_limit_used``                 gauge      spent in the current window
``quota_router_limit_amount``               gauge      the limit's size
``quota_router_limit_remaining``            gauge      left in the current window
``quota_router_limit_reset_seconds``        gauge      seconds until the window frees up
                                                       (no sample for a one-time credit)
``quota_router_route_info``                 info       ``route``, ``provider``, ``model``,
                                                       ``pool``, ``priority``
``quota_router_route_state``                stateset   ``ok``, ``full``, ``blocked``,
                                                       ``unavailable``, ``disabled``
``quota_router_route_calls_total``          counter    calls a route served (this process)
``quota_router_route_errors_total``         counter    a route's failures (this process)
``quota_router_fallbacks_total``            counter    calls served after another route
                                                       could not (this process)
``quota_router_cache_hits_total``           counter    answers from the cache (this process)
``quota_router_ledger_read_seconds``        gauge      how long this scrape took to read
                                                       the ledger
==========================================  =========  ==========================================

The fleet's counters, per ``route`` (every router counting in the ledger, since it
first counted them; see :mod:`langchain_quota_router.quota.ledger.fleet`):

- ``quota_router_fleet_route_calls_total``: calls a route served;
- ``quota_router_fleet_route_fallbacks_total``: of those, served after another route
  could not;
- ``quota_router_fleet_route_errors_total`` (also labelled ``kind``: ``rate_limit``,
  ``quota_exhausted``, ``transient``, ``authentication``, ...): vendor failures;
- ``quota_router_fleet_route_rate_limited_total``: the vendor's 429s (rate limits and
  quota walls);
- ``quota_router_fleet_route_refused_total``: calls the ledger kept from the route,
  its pool full or blocked;
- ``quota_router_fleet_route_cache_hits_total``: answers from the cache the route
  first gave;
- ``quota_router_fleet_route_input_tokens_total``,
  ``quota_router_fleet_route_output_tokens_total``: tokens sent and received;
- ``quota_router_fleet_route_cost_usd_total``: what its answers cost (routes with
  prices);
- ``quota_router_fleet_client_requests_total``, ``..._errors_total``,
  ``..._input_tokens_total``, ``..._output_tokens_total``, per ``client`` (a proxy
  client key's fingerprint, never the key): what each program using
  ``quota-router proxy`` asked for.

Example:
    ```python
    from prometheus_client import start_http_server
    from langchain_quota_router import metrics

    metrics.register(router)
    start_http_server(9108)  # http://127.0.0.1:9108/metrics
    ```
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, get_args

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client import make_asgi_app as _prometheus_asgi_app
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        InfoMetricFamily,
        Metric,
        StateSetMetricFamily,
    )
    from prometheus_client.exposition import choose_encoder
except ImportError as exc:  # pragma: no cover - the extra is installed in tests
    _msg = (
        "langchain_quota_router.metrics needs prometheus-client: "
        "pip install 'langchain-quota-router[metrics]'"
    )
    raise ImportError(_msg) from exc

from langchain_quota_router.quota.secrets import Masker
from langchain_quota_router.quota.status import StateKind, Status, read_status

if TYPE_CHECKING:
    from langchain_quota_router.chat.model import QuotaRoutedChatModel

__all__ = ["RouterCollector", "exposition", "make_asgi_app", "make_registry", "register"]

_LIMIT_LABELS = ["pool", "limit", "metric", "window"]
_STATES: tuple[str, ...] = get_args(StateKind)
#: Counters read from ``get_stats()``: (name, key per route, key of the total). A
#: counter the stats give per route is labelled by route; else it is the router's.
_COUNTERS = (
    ("calls", "calls_per_route", "total_calls", "calls served"),
    ("errors", "errors_per_route", "errors", "vendor failures"),
    ("fallbacks", "fallbacks_per_route", "fallbacks", "calls served after another route could not"),
    ("cache_hits", "cache_hits_per_route", "cache_hits", "answers from the response cache"),
)


class RouterCollector:
    """A ``prometheus_client`` collector over one router.

    Each scrape reads the ledger once (:func:`~langchain_quota_router.quota.status.read_status`,
    the same rows the status page and ``quota-router report`` show) and yields fresh
    metric families; nothing is kept between scrapes.
    """

    def __init__(self, router: QuotaRoutedChatModel, *, namespace: str = "quota_router") -> None:
        """Collect ``router``'s metrics.

        Args:
            router: the router to report on.
            namespace: the prefix of every metric name.
        """
        self.router = router
        self.namespace = namespace

    def describe(self) -> Iterator[Metric]:
        """The metric families without samples: registering must not read the ledger."""
        return self._families(None)

    def collect(self) -> Iterator[Metric]:
        """The router's metrics now."""
        return self._families(read_status(self.router))

    def _families(self, status: Status | None) -> Iterator[Metric]:
        ns = self.namespace
        masked = Masker.for_router(self.router)

        def gauge(name: str, doc: str, labels: list[str], unit: str = "") -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{ns}_{name}", doc, labels=labels, unit=unit)

        used = gauge("limit_used", "Spent in the limit's current window.", _LIMIT_LABELS)
        amount = gauge("limit_amount", "The limit's size.", _LIMIT_LABELS)
        remaining = gauge("limit_remaining", "Left in the limit's current window.", _LIMIT_LABELS)
        reset = gauge(
            "limit_reset_seconds",
            "Seconds until the limit's window frees up (none for a one-time credit).",
            _LIMIT_LABELS,
            unit="seconds",
        )
        info = InfoMetricFamily(
            f"{ns}_route", "A route: its vendor, model, pool and priority.", labels=["route"]
        )
        state = StateSetMetricFamily(
            f"{ns}_route_state", "Whether a route can take calls now.", labels=["route"]
        )
        read = gauge(
            "ledger_read_seconds", "How long this scrape took to read the ledger.", [], "seconds"
        )
        # The process counters are in memory: describe() names them as collect() will
        # (get_stats() would read the fleet's from the ledger).
        stats = self.router.stats.snapshot() if status is None else status.stats
        routes = list(self.router.route_map)
        counters = list(_counters(ns, stats, routes, masked))
        fleet = None if status is None else status.stats.get("fleet")
        counters += _fleet_counters(ns, fleet, routes, masked)
        counters.append(_cost_counter(ns, fleet, self.router, masked))
        if status is None:
            yield from (used, amount, remaining, reset, info, state, *counters, read)
            return

        for row in status.limits:
            labels = [masked(row.pool), masked(row.limit), row.metric, row.window]
            used.add_metric(labels, row.used)
            amount.add_metric(labels, row.amount)
            remaining.add_metric(labels, row.remaining)
            if row.resets_at is not None:
                reset.add_metric(labels, max(0.0, row.resets_at - status.now))
        for route in status.routes:
            name = masked(route.name)
            info.add_metric(
                [name],
                {
                    "provider": route.provider,
                    "model": masked(route.model),
                    "pool": masked(route.pool),
                    "priority": str(route.priority),
                },
            )
            state.add_metric([name], {kind: kind == route.state.kind for kind in _STATES})
        read.add_metric([], status.ledger_read_seconds)
        yield from (used, amount, remaining, reset, info, state, *counters, read)


def _counters(
    ns: str, stats: dict[str, Any], routes: list[str], masked: Masker
) -> Iterator[CounterMetricFamily]:
    """The ``get_stats()`` counters: per route where the stats have them per route."""
    for name, per_route, total, doc in _COUNTERS:
        if per_route in stats:
            family = CounterMetricFamily(
                f"{ns}_route_{name}",
                f"{doc.capitalize()}, per route (this process).",
                labels=["route"],
            )
            # Every route from zero, so that rate() sees a route's first call.
            for route in routes:
                family.add_metric([masked(route)], stats[per_route].get(route, 0))
            yield family
        elif total in stats:
            family = CounterMetricFamily(f"{ns}_{name}", f"{doc.capitalize()} (this process).")
            family.add_metric([], stats[total])
            yield family


#: The fleet's counters per route: (name, field of get_stats()["fleet"]["routes"], doc, unit).
_FLEET_COUNTERS = (
    ("calls", "calls", "Calls a route served", ""),
    ("fallbacks", "fallbacks", "Calls a route served after another route could not", ""),
    ("rate_limited", "rate_limited", "Rate limits and quota walls (429s) a vendor answered", ""),
    ("refused", "refused", "Calls the ledger kept from a route, its pool full or blocked", ""),
    ("cache_hits", "cache_hits", "Answers from the cache a route first gave", ""),
    ("input_tokens", "tokens_in", "Tokens sent through a route", ""),
    ("output_tokens", "tokens_out", "Tokens a route's vendor answered with", ""),
    ("cost_usd", "cost", "What a route's answers cost, in US dollars", "usd"),
)


def _fleet_counters(
    ns: str, fleet: dict[str, Any] | None, routes: list[str], masked: Masker
) -> list[CounterMetricFamily]:
    """The fleet's counters per route (every router counting in the ledger)."""
    per_route: dict[str, dict[str, Any]] = (fleet or {}).get("routes") or {}
    found: list[CounterMetricFamily] = []
    for name, field, doc, unit in _FLEET_COUNTERS:
        family = CounterMetricFamily(
            f"{ns}_fleet_route_{name}",
            f"{doc} (every router counting in this ledger).",
            labels=["route"],
            unit=unit,
        )
        if fleet is not None:
            for route in routes:
                family.add_metric([masked(route)], per_route.get(route, {}).get(field, 0))
        found.append(family)
    errors = CounterMetricFamily(
        f"{ns}_fleet_route_errors",
        "A route's vendor failures by kind (every router counting in this ledger).",
        labels=["route", "kind"],
    )
    for route in routes if fleet is not None else []:
        kinds = per_route.get(route, {}).get("errors_by_kind") or {}
        for kind, count in sorted(kinds.items()):
            errors.add_metric([masked(route), masked(kind)], count)
    found.insert(2, errors)
    clients: dict[str, dict[str, Any]] = (fleet or {}).get("clients") or {}
    for name, field, doc in _CLIENT_COUNTERS:
        family = CounterMetricFamily(
            f"{ns}_fleet_client_{name}",
            f"{doc}, per proxy client key fingerprint (every proxy counting in this ledger).",
            labels=["client"],
        )
        for client, row in clients.items():
            family.add_metric([masked(client)], row.get(field, 0))
        found.append(family)
    return found


#: The proxy's counters per client key: (name, field of get_stats()["fleet"]["clients"], doc).
_CLIENT_COUNTERS = (
    ("requests", "requests", "Requests a client of the proxy made"),
    ("errors", "errors", "Requests of a client the proxy answered with an error"),
    ("input_tokens", "tokens_in", "Tokens a client's requests sent"),
    ("output_tokens", "tokens_out", "Tokens a client's answers held"),
)


def _cost_counter(
    ns: str, fleet: dict[str, Any] | None, router: QuotaRoutedChatModel, masked: Masker
) -> CounterMetricFamily:
    """``<ns>_cost_usd_total``: dollars spent, per route and the pool it spends
    (``sum by (pool)`` for a pool's), as every router counting in the ledger settled
    them: the vendor's reported cost, else tokens x prices."""
    family = CounterMetricFamily(
        f"{ns}_cost",
        "US dollars spent per route and pool (every router counting in this ledger).",
        labels=["route", "pool"],
        unit="usd",
    )
    per_route: dict[str, dict[str, Any]] = (fleet or {}).get("routes") or {}
    if fleet is not None:
        for name, route in router.route_map.items():
            family.add_metric(
                [masked(name), masked(route.pool)], per_route.get(name, {}).get("cost", 0.0)
            )
    return family


def make_registry(router: QuotaRoutedChatModel) -> CollectorRegistry:
    """A registry holding only ``router``'s metrics (nothing of the process's)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(RouterCollector(router))
    return registry


def register(
    router: QuotaRoutedChatModel, registry: CollectorRegistry | None = None
) -> RouterCollector:
    """Add ``router``'s metrics to ``registry`` (default: prometheus_client's own).

    Args:
        router: the router to report on.
        registry: where to register; ``None`` is ``prometheus_client.REGISTRY``,
            which ``start_http_server`` and ``make_asgi_app()`` serve.

    Returns:
        The collector; ``registry.unregister(collector)`` removes it.
    """
    collector = RouterCollector(router)
    (REGISTRY if registry is None else registry).register(collector)
    return collector


def exposition(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """A scrape of ``registry``: the body and its content type.

    Args:
        registry: what to scrape.
        accept: the scraper's ``Accept`` header; OpenMetrics when it asks for it,
            else the Prometheus text format.
    """
    encoder: Callable[[CollectorRegistry], bytes]
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


def make_asgi_app(router: QuotaRoutedChatModel) -> Callable[..., Any]:
    """An ASGI app serving ``router``'s metrics (and nothing else) at any path.

    Mount it where the service's metrics belong, e.g.
    ``starlette_app.mount("/metrics", make_asgi_app(router))``. It has no access
    control of its own: mount it behind whatever guards the service's other metrics.
    """
    app: Callable[..., Any] = _prometheus_asgi_app(make_registry(router))
    return app
