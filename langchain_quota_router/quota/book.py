"""A client's book: its members and pools over one ledger, and what users ask of them.

The chat model, embeddings and key rotators each keep one :class:`QuotaBook`; it
answers ``usage()``, ``lifespan()``, ``learned_limits()``, ``history()``,
``get_stats()``, ``enable()`` and ``reset()`` the same way for all of them, and
feeds the status model (:mod:`langchain_quota_router.quota.status`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from langchain_quota_router.quota.admission import Member, Policy, model_subject
from langchain_quota_router.quota.clock import Clock
from langchain_quota_router.quota.errors import ConfigurationError, LedgerError
from langchain_quota_router.quota.fleet import (
    FleetCounters,
    fleet_view,
    history_window,
    reading_fleet,
    usage_history,
)
from langchain_quota_router.quota.ledger import LearnedLimit, Ledger, LimitUsage
from langchain_quota_router.quota.ledger.fleet import FleetStore
from langchain_quota_router.quota.ledger.records import KEY_PREFIX, MODEL_PREFIX
from langchain_quota_router.quota.limits import Limit
from langchain_quota_router.quota.pools import PoolLimits
from langchain_quota_router.quota.stats import RouterStats
from langchain_quota_router.quota.watch import AlertTracker, Lifespan, estimate_lifespan

logger = logging.getLogger("langchain_quota_router")


def client_book(
    members: Sequence[Any],
    ledger: Ledger,
    clock: Clock,
    *,
    noun: str = "route",
    fleet_counters: bool,
    alert_thresholds: Sequence[float],
    **policy: Any,
) -> tuple[QuotaBook, Policy]:
    """What a client of the core that is not the chat model (embeddings, a key
    rotator) stands on: the book of ``members`` and their pools, and the admission
    policy over the same pools and counters (``policy``: the rest of
    :class:`Policy`'s fields)."""
    names, pools, configured = pool_table(members, noun)
    stats = RouterStats()
    if fleet_counters:
        stats.fleet = FleetCounters(ledger, clock)
    pool_limits = PoolLimits(ledger, pools, configured)
    book = QuotaBook(names, ledger, pool_limits, clock, stats, noun=noun)
    return book, Policy(
        members=tuple(members),
        member_map=names,
        pools=pool_limits,
        ledger=ledger,
        clock=clock,
        stats=stats,
        alerts=AlertTracker(tuple(sorted(alert_thresholds))),
        **policy,
    )


def pool_table(
    members: Sequence[Any], noun: str = "route"
) -> tuple[dict[str, Any], dict[str, tuple[Limit, ...]], dict[str, tuple[Limit, ...]]]:
    """Check members' names and pools; return the name map, each pool's limits and
    the limits given explicitly (catalog figures give way to learned limits).

    Raises:
        ConfigurationError: two members share a name, or share a pool but give it
            different limits.
    """
    names: dict[str, Any] = {}
    pools: dict[str, tuple[Limit, ...]] = {}
    owner: dict[str, str] = {}
    for member in members:
        if member.name in names:
            msg = f"two {noun}s are named {member.name!r}; {noun} names must be unique"
            raise ConfigurationError(msg)
        names[member.name] = member
        known = pools.get(member.pool)
        if known and member.limits and set(known) != set(member.limits):
            msg = (
                f"{noun}s {owner[member.pool]!r} and {member.name!r} share pool "
                f"{member.pool!r} but give it different limits"
            )
            raise ConfigurationError(msg)
        if member.limits or member.pool not in pools:
            pools[member.pool] = tuple(member.limits)
            owner[member.pool] = member.name
    configured = {
        m.pool: tuple(m.limits)
        for m in members
        if m.limits and not getattr(m, "catalog_limits", False)
    }
    return names, pools, configured


class QuotaBook:
    """One client's members and pools over one ledger (see the module docstring).

    Args:
        members: the routes or keys.
        ledger: where quota is counted.
        pools: each pool's limits.
        clock: what "now" is.
        stats: this process's counters (fleet counters wired when ``fleet``).
        noun: what a member is called in messages (``"route"``, ``"key"``).
    """

    def __init__(
        self,
        members: Mapping[str, Any],
        ledger: Ledger,
        pools: PoolLimits,
        clock: Clock,
        stats: RouterStats,
        *,
        noun: str = "route",
    ) -> None:
        self.members = dict(members)
        self.ledger = ledger
        self.pools = pools
        self.clock = clock
        self.stats = stats
        self.noun = noun

    def named(self, name: str) -> Any:
        """The member called ``name``.

        Raises:
            ConfigurationError: no member has that name (the message lists them).
        """
        found = match_name(name, self.members)
        if found is None:
            msg = f"no {self.noun} named {name!r}; {self.noun}s: {sorted(self.members)}"
            raise ConfigurationError(msg)
        return self.members[found]

    @property
    def pool_limits(self) -> dict[str, tuple[Limit, ...]]:
        """Each pool's limits as enforced now (configured, learned, catalog)."""
        return dict(self.pools.current)

    def usage(self) -> list[LimitUsage]:
        """Per pool and limit: used, remaining, percent and when it resets;
        learned limits say when they were learned."""
        now = self.clock.now()
        pools = self.pools
        pools.refresh(now, every=0.0)
        learned = {(x.pool, x.limit): x.learned_at for x in pools.learned()}
        report: list[LimitUsage] = []
        for pool, limits in pools.current.items():
            for usage in self.ledger.usage(pool, limits, now):
                when = learned.get((pool, usage.limit))
                if when is not None and not pools.is_configured(pool, usage.limit):
                    usage = dataclasses.replace(usage, learned_at=when)
                report.append(usage)
        return report

    def lifespan(self, tokens_per_day: int) -> Lifespan:
        """How many days each pool, and the whole set, last at ``tokens_per_day``."""
        return estimate_lifespan(self.ledger, self.pool_limits, tokens_per_day, self.clock.now())

    def learned_limits(self) -> list[LearnedLimit]:
        """Limits the vendors' headers stated for these pools, and when."""
        return self.pools.learned()

    def history(
        self,
        since: float | dt.datetime | dt.timedelta | None = None,
        step: float | dt.timedelta | None = None,
    ) -> list[dict[str, Any]]:
        """Each pool's limits' use over time (see ``QuotaRoutedChatModel.history``)."""
        now = self.clock.now()
        start, seconds = history_window(now, since, step)
        self.flush_fleet()
        with reading_fleet():
            return usage_history(self.fleet_store(), self.pool_limits, now, start, seconds)

    def fleet_store(self) -> FleetStore:
        """Where the fleet's counters for this ledger are kept."""
        fleet = self.stats.fleet
        if isinstance(fleet, FleetCounters):
            return fleet.store
        return self.ledger.fleet_store()

    def flush_fleet(self) -> None:
        """Write this process's pending fleet counts now."""
        fleet = self.stats.fleet
        if isinstance(fleet, FleetCounters):
            fleet.flush()

    def fleet_view(self) -> dict[str, Any]:
        """The fleet's totals for these members and pools."""
        self.flush_fleet()
        with reading_fleet():
            return fleet_view(self.fleet_store(), list(self.members), list(self.pools.current))

    def get_stats(self) -> dict[str, Any]:
        """This process's counters, with the fleet's under ``"fleet"`` (``None``
        when the ledger cannot be read; a warning says why)."""
        stats = self.stats.snapshot()
        try:
            stats["fleet"] = self.fleet_view()
        except LedgerError as exc:
            logger.warning("could not read the fleet counters: %s", exc)
            stats["fleet"] = None
        return stats

    def enable(self, name: str) -> bool:
        """Use a member again: lift its key's disable and its model's unavailable
        mark. Returns whether there was anything to lift."""
        member: Member = self.named(name)
        now = self.clock.now()
        subjects = {h.subject for h in self.ledger.holds(now)}
        was = (
            KEY_PREFIX + member.credential in subjects
            or MODEL_PREFIX + model_subject(member) in subjects
        )
        self.ledger.enable(member.credential)
        self.ledger.make_available(model_subject(member))
        return was

    def reset(self, name: str) -> None:
        """Forget what a member's pool has spent and lift its block."""
        self.ledger.reset(self.named(name).pool)


def match_name(typed: str, names: Iterable[str]) -> str | None:
    """The name ``typed`` stands for: itself, or the one name it begins (a unique
    prefix), with ``...`` accepted for the ``…`` in generated names
    (``groq ...a1f3``), so every name can be typed back on a plain keyboard."""
    names = list(names)
    if typed in names:
        return typed

    def plain(text: str) -> str:
        return " ".join(text.replace("\u2026", "...").split())

    wanted = plain(typed)
    if not wanted:
        return None
    exact = [n for n in names if plain(n) == wanted]
    if len(exact) == 1:
        return exact[0]
    begun = [n for n in names if plain(n).startswith(wanted)]
    return begun[0] if len(begun) == 1 else None
