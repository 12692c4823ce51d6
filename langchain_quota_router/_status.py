"""Whether each route can take a call now: one rule for the page, the CLI and the demo.

A route's state comes from the ledger alone (holds and usage), so every process that
shares the ledger reports the same state for the same facts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from langchain_quota_router.ledger.base import (
    KEY_PREFIX,
    MODEL_PREFIX,
    POOL_PREFIX,
    Hold,
    LimitUsage,
)

if TYPE_CHECKING:
    from langchain_quota_router._route import Route

StateKind = Literal["ok", "full", "blocked", "unavailable", "disabled"]


@dataclass(frozen=True)
class RouteState:
    """Whether a route can take calls now, and if not, why and until when.

    Attributes:
        kind: ``"ok"``; ``"full"`` (a limit is used up; ``until`` is when every
            used-up limit has freed up, ``None`` for a spent one-time credit);
            ``"blocked"`` (resting after a vendor error or quota wall);
            ``"unavailable"`` (the vendor no longer serves the model on this key;
            asked again at ``until``) or ``"disabled"`` (its key was rejected).
            ``router.enable(route)`` / ``quota-router enable`` lifts the last two.
        until: when the state ends by itself (epoch seconds), if it does.
        reason: the ledger's reason, as recorded (callers mask secrets).
    """

    kind: StateKind
    until: float | None = None
    reason: str = ""


def model_subject(route: Route) -> str:
    """What the ledger marks unavailable for a route: its model on its key.

    Another model on the same key stays usable, and so does the same model on
    another key (vendors retire models for everyone, but a key may lack access).
    """
    return f"{route.key}|{route.model_name}"


def route_states(
    routes: Iterable[Route], usage: Sequence[LimitUsage], holds: Sequence[Hold]
) -> dict[str, RouteState]:
    """Each route's state: a disabled key wins, then an unavailable model, then a
    block, then a full limit."""
    by_subject = {hold.subject: hold for hold in holds}
    full: dict[str, list[LimitUsage]] = {}
    for u in usage:
        if u.remaining <= 0:
            full.setdefault(u.pool, []).append(u)
    states: dict[str, RouteState] = {}
    for route in routes:
        for prefix, subject, kind in (
            (KEY_PREFIX, route.key, "disabled"),
            (MODEL_PREFIX, model_subject(route), "unavailable"),
            (POOL_PREFIX, route.pool, "blocked"),
        ):
            hold = by_subject.get(prefix + subject)
            if hold is not None:
                states[route.name] = RouteState(kind, hold.until, hold.reason)  # type: ignore[arg-type]
                break
        else:
            spent = full.get(route.pool)
            if spent:
                # Room comes back when every used-up limit has freed some; a
                # one-time credit never does.
                ends = [u.resets_at for u in spent]
                until = None if None in ends else max(e for e in ends if e is not None)
                reason = ", ".join(f"{u.limit} is used up" for u in spent)
                states[route.name] = RouteState("full", until, reason)
            else:
                states[route.name] = RouteState("ok")
    return states
