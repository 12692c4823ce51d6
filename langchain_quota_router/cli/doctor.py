"""``quota-router doctor``: is every route usable, without spending a completion?

For each route it asks the vendor's list-models endpoint with the route's own key and
base URL (a request no vendor bills), and compares what it learns with the catalog and
the ledger:

- **key**: accepted, rejected (401/403), or unknown (the vendor could not be reached);
- **model**: served, not served (absent from the list, or the catalog says retired),
  or unknown (no list-models call for this kind of model);
- **catalog**: the entry's status (active, deprecated, retiring, retired) and its age;
  an entry read more than ``max_age_days`` ago is stale and worth re-checking;
- **learned**: limits the vendor's headers stated that disagree with the configured
  ones (same metric and window, another amount);
- **prices**: where the route's prices come from (configured, or the catalog with
  the date they were read); catalog prices read more than ``max_age_days`` ago are
  stale (a route's ``prices=`` overrides them, and is never flagged).

A route is unusable when its key is rejected or its model is not served.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from langchain_quota_router.quota.failures import FailureKind, classify
from langchain_quota_router.vendors import catalog

if TYPE_CHECKING:
    from langchain_quota_router.chat.model import QuotaRoutedChatModel
    from langchain_quota_router.route import Route

KeyVerdict = Literal["accepted", "rejected", "unknown"]
ModelVerdict = Literal["served", "not served", "unknown"]

#: How old a catalog entry may be before the doctor says to check it again.
MAX_AGE_DAYS = 90


@dataclass(frozen=True)
class RouteCheck:
    """What the doctor found for one route.

    Attributes:
        route: the route's name.
        model: the model it calls.
        key: whether the vendor accepted the route's key.
        model_served: whether the vendor serves the model to that key.
        catalog: the catalog's word on the model (``"active, read 2026-11-28"``,
            ``"retired 2026-08-16; successor openai/gpt-oss-120b"``, ``"not in the
            catalog"``).
        stale: the catalog entry is older than the doctor's age limit.
        prices: where the route's prices come from (``"configured"``, ``"catalog,
            read 2025-11-01"``, ``"none"``).
        stale_prices: the catalog's prices for the model are older than the limit.
        learned: learned limits that disagree with configured ones, as text.
        detail: why a check came out as it did (the vendor's message, redacted).
    """

    route: str
    model: str
    key: KeyVerdict
    model_served: ModelVerdict
    catalog: str
    stale: bool = False
    prices: str = "none"
    stale_prices: bool = False
    learned: tuple[str, ...] = ()
    detail: str = ""
    problems: tuple[str, ...] = field(default=())

    @property
    def usable(self) -> bool:
        """Whether calls can succeed on this route."""
        return self.key != "rejected" and self.model_served != "not served"

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        data = asdict(self)
        data["usable"] = self.usable
        data["learned"] = list(self.learned)
        data["problems"] = list(self.problems)
        return data


def check_router(
    router: QuotaRoutedChatModel,
    *,
    today: dt.date | None = None,
    max_age_days: int = MAX_AGE_DAYS,
) -> list[RouteCheck]:
    """Check every route of ``router``; see the module docstring.

    Args:
        router: the router whose routes to check.
        today: the date catalog ages are measured from (default: today, UTC).
        max_age_days: the age past which a catalog entry is stale.

    Returns:
        One check per route, in the router's order.
    """
    day = today or dt.datetime.now(dt.timezone.utc).date()
    listings: dict[int, tuple[set[str] | None, KeyVerdict, str]] = {}
    checks = []
    for route in router.routes:
        lister = _model_lister(route.model)
        # Routes sharing one SDK client (one key) are listed once.
        owner = getattr(lister, "__self__", None)
        client_id = id(owner) if owner is not None else id(route)
        if client_id not in listings:
            listings[client_id] = _list_models(lister)
        served, key, detail = listings[client_id]
        checks.append(_check(router, route, served, key, detail, day, max_age_days))
    return checks


def _check(
    router: QuotaRoutedChatModel,
    route: Route,
    served: set[str] | None,
    key: KeyVerdict,
    detail: str,
    day: dt.date,
    max_age_days: int,
) -> RouteCheck:
    info = catalog.find_model(route.provider, route.model_name) or catalog.find_model(
        None, route.model_name
    )
    problems: list[str] = []
    verdict: ModelVerdict = "unknown"
    if served is not None:
        verdict = "served" if route.model_name in served else "not served"
        if verdict == "not served":
            problems.append("the vendor's model list does not have this model")
    if info is None:
        described, stale = "not in the catalog", False
    else:
        described = info.status
        if info.status_date is not None:
            described += f" {info.status_date.isoformat()}"
        if info.successors:
            described += f"; successor {', '.join(info.successors)}"
        checked = info.checked
        stale = checked is not None and (day - checked).days > max_age_days
        if checked is not None:
            described += f"; read {checked.isoformat()}"
        if stale:
            problems.append(f"the catalog entry is {(day - checked).days} days old")  # type: ignore[operator]
        if info.status == "retired" and verdict == "unknown":
            verdict = "not served"
            problems.append("the catalog says the vendor retired it")
    prices, stale_prices = _prices(route, info, day, max_age_days)
    if stale_prices:
        problems.append(f"the catalog's prices are old ({prices})")
    if key == "rejected":
        problems.insert(0, "the vendor rejected the key")
    learned = tuple(_disagreements(router, route))
    problems.extend(f"learned {text}" for text in learned)
    return RouteCheck(
        route=route.name,
        model=route.model_name,
        key=key,
        model_served=verdict,
        catalog=described,
        stale=stale,
        prices=prices,
        stale_prices=stale_prices,
        learned=learned,
        detail=detail,
        problems=tuple(problems),
    )


def _prices(
    route: Route, info: catalog.ModelInfo | None, day: dt.date, max_age_days: int
) -> tuple[str, bool]:
    """Where a route's prices come from, and whether the catalog's are stale."""
    if route.pricing is None:
        return "none", False
    if info is None or info.pricing != route.pricing:
        return "configured", False
    dated = next(
        (
            e
            for e in catalog.price_entries()
            if e.model == info.model and catalog.find_model(e.vendor, e.model) is info
        ),
        None,
    )
    if dated is None:
        return "catalog", False
    age = (day - dated.checked).days
    shown = f"catalog, read {dated.checked.isoformat()} ({age} days ago) from {dated.source}"
    return shown, age > max_age_days


def _disagreements(router: QuotaRoutedChatModel, route: Route) -> Iterable[str]:
    """Learned limits of the route's pool that a configured limit contradicts."""
    configured = {limit.series: limit for limit in route.limits}
    for learned in router.learned_limits():
        if learned.pool != route.pool:
            continue
        mine = configured.get(learned.limit.series)
        if mine is not None and mine.amount != learned.limit.amount:
            yield f"{learned.limit} (configured: {mine})"


def _model_lister(model: Any) -> Callable[[], Any] | None:
    """The SDK call that lists the models a route's key can use, if there is one.

    ChatOpenAI keeps its SDK client as ``root_client``; ChatGroq's ``client`` is the
    groq SDK's ``chat.completions``, whose ``_client`` is the SDK client; the Gemini
    and Cohere classes keep their SDK client as ``client``.
    """
    candidates = (
        getattr(model, "root_client", None),
        getattr(getattr(model, "client", None), "_client", None),
        getattr(getattr(model, "client", None), "_completions", None),
        getattr(model, "client", None),
    )
    for candidate in candidates:
        if candidate is None:
            continue
        root = getattr(candidate, "_client", candidate)
        models = getattr(root, "models", None)
        lister = getattr(models, "list", None)
        if callable(lister):
            return lister  # type: ignore[no-any-return]
    return None


def _list_models(lister: Callable[[], Any] | None) -> tuple[set[str] | None, KeyVerdict, str]:
    """The model ids a key may use, whether the key was accepted, and why not."""
    if lister is None:
        return None, "unknown", "no list-models call for this kind of model"
    try:
        answer = lister()
    except Exception as exc:  # noqa: BLE001 - any vendor error is a finding, not a crash
        failure = classify(exc)
        if failure.kind is FailureKind.AUTHENTICATION:
            return None, "rejected", failure.message
        return None, "unknown", failure.message
    return _model_ids(answer), "accepted", ""


def _model_ids(answer: Any) -> set[str]:
    """Model ids from any SDK's list answer (a pager, or an object with a list)."""
    items = getattr(answer, "models", None)
    if items is None:
        items = getattr(answer, "data", None)
    if items is None:
        items = answer
    ids = set()
    for item in items:
        name = getattr(item, "id", None) or getattr(item, "name", None)
        if isinstance(name, str):
            # Gemini names models "models/gemini-3.5-flash".
            ids.add(name.removeprefix("models/"))
    return ids


def doctor_table(checks: list[RouteCheck]) -> str:
    """The checks as a table, one line per route, problems listed below."""
    from langchain_quota_router.cli import _format as fmt

    rows = [
        [
            check.route,
            check.key,
            check.model_served,
            ("stale: " if check.stale else "") + check.catalog,
            "yes" if check.usable else "NO",
        ]
        for check in checks
    ]
    text = fmt.table(["ROUTE", "KEY", "MODEL", "CATALOG", "USABLE"], rows)
    notes = [
        f"{check.route}: {problem}"
        for check in checks
        for problem in (*check.problems, *((check.detail,) if check.detail else ()))
    ]
    if notes:
        text += "\n\n" + "\n".join(notes)
    return text
