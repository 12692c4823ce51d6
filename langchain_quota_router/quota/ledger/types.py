"""The ledger's plain data: what a call spends, what was reserved or refused, holds,
learned limits and usage reports.

Every reservation with an output estimate carries a lease: a record of what it
would give back (its output estimate, bucket by bucket) and when. Settling removes
the record; touching a pool (reserve, usage) first releases the pool's overdue ones,
so the quota of a process killed mid-call comes back when its lease runs out.

Counters are keyed by ``(pool, series, bucket)``: a series is one metric over one
window shape (``"tokens:s60"``, ``"requests:day@UTC"``), a bucket one slice of time.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from langchain_quota_router.quota.limits import Limit, Metric

#: How long (seconds) a reservation stays whole without being settled: past it, the
#: ledger takes its process for dead and releases its unspent output estimate.
DEFAULT_LEASE = 900.0


@dataclass(frozen=True)
class Demand:
    """What one call spends: requests, tokens and dollars, estimated or real.

    ``usd`` is in micro-dollars (whole numbers, as the ledger counts them).
    """

    requests: int = 1
    input_tokens: int = 0
    output_tokens: int = 0
    usd: int = 0

    def amount(self, metric: Metric) -> int:
        """How much of ``metric`` this demand counts (micro-dollars for ``usd``)."""
        if metric == "requests":
            return self.requests
        if metric == "tokens":
            return self.input_tokens + self.output_tokens
        if metric == "input_tokens":
            return self.input_tokens
        if metric == "usd":
            return self.usd
        return self.output_tokens


@dataclass(frozen=True)
class Reservation:
    """An admitted demand, counted in the ledger until it is settled.

    Attributes:
        pool: the pool it was counted in.
        demand: what was reserved.
        entries: ``(series, bucket, metric)`` for every counter it was added to,
            so :meth:`Ledger.settle` corrects the same buckets.
        at: when it was admitted.
        levels: ``(limit, used)`` for each limit, counting this reservation; lets
            the router notice a pool nearing a limit without another query.
            Empty when a backend does not report them.
        lease_id: the id of its lease in the ledger (``""``: no lease, nothing
            would be released when it runs out).
        expires_at: when its lease runs out (epoch seconds), if it has one.
    """

    pool: str
    demand: Demand
    entries: tuple[tuple[str, int, Metric], ...]
    at: float
    levels: tuple[tuple[Limit, int], ...] = ()
    lease_id: str = ""
    expires_at: float | None = None

    def releases(self) -> list[tuple[str, int, int]]:
        """``(series, bucket, amount)`` its lease gives back when it runs out: the
        output estimate. The request, the prompt and the estimated cost stay counted."""
        return releases_of(self.demand, self.entries)


def may_land_late(reservation: Reservation, used: Demand) -> bool:
    """Whether settling ``reservation`` with ``used`` may be applied a moment later
    (carried by the next transaction or pipeline) rather than before ``settle``
    returns.

    Only if losing it cannot count too little: were the process killed first, the
    reservation stays counted and its lease, when it runs out, keeps its floor
    (:func:`lease_floor`); that must hold at least ``used`` on every counter. A call
    that spent output tokens past the prompt's margin is settled at once: its lease
    would release them.
    """
    kept = lease_floor(reservation.demand) if reservation.lease_id else reservation.demand
    return all(used.amount(metric) <= kept.amount(metric) for _, _, metric in reservation.entries)


#: The metrics whose counts hold a demand's output estimate (see lease_floor).
_OUTPUT_METRICS = frozenset(("tokens", "output_tokens"))


def releases_of(
    demand: Demand, entries: Sequence[tuple[str, int, Metric]]
) -> list[tuple[str, int, int]]:
    """What a reservation of ``demand`` counted in ``entries`` gives back when its
    lease runs out: ``demand`` less its :func:`lease_floor`, the output estimate."""
    output = demand.output_tokens
    if not output:
        return []
    return [
        (series, bucket, output) for series, bucket, metric in entries if metric in _OUTPUT_METRICS
    ]


def lease_floor(demand: Demand) -> Demand:
    """What a reservation still counts once its lease ran out: the request (the
    vendor may have seen it) and the prompt, not the output it never reported; and
    its whole estimated cost (the vendor may have billed it: spend is never
    under-counted)."""
    return Demand(demand.requests, demand.input_tokens, 0, demand.usd)


class _LeaseIds:
    """Lease ids: a random prefix per process (drawn anew in a forked child) and a
    counter. Drawing 8 random bytes per reservation cost a system call each."""

    def __init__(self) -> None:
        self.renew()

    def renew(self) -> None:
        self.prefix = secrets.token_hex(6)
        self.count = itertools.count(1)


_LEASE_IDS = _LeaseIds()
if hasattr(os, "register_at_fork"):  # POSIX: a forked child draws its own prefix
    os.register_at_fork(after_in_child=_LEASE_IDS.renew)


def new_lease_id() -> str:
    """A reservation id, unique across processes and machines (48 random bits per
    process, then a count)."""
    ids = _LEASE_IDS
    return f"{ids.prefix}{next(ids.count):x}"


def encode_releases(releases: Sequence[tuple[str, int, int]]) -> str:
    """A lease's releases as one line of text (for backends that store text)."""
    return "\x1e".join(f"{s}\x1f{b}\x1f{a}" for s, b, a in releases)


def decode_releases(text: str) -> list[tuple[str, int, int]]:
    """The inverse of :func:`encode_releases`."""
    found = []
    for part in text.split("\x1e") if text else []:
        series, bucket, amount = part.split("\x1f")
        found.append((series, int(bucket), int(amount)))
    return found


@dataclass(frozen=True)
class Refusal:
    """Why a pool could not take a demand, and when it may.

    Attributes:
        pool: the pool that refused.
        reason: one line for people (``"30/minute is used up"``).
        retry_at: epoch seconds at which the demand would fit, or ``None`` when the
            pool never frees up by itself (credit spent, key disabled, demand larger
            than the limit).
        limit: the limit that refused, when one did.
        room: what that limit had left when it refused (a smaller demand may fit).
    """

    pool: str
    reason: str
    retry_at: float | None
    limit: Limit | None = None
    room: int | None = None


@dataclass(frozen=True)
class Hold:
    """A block on a pool (``until`` a time) or a disabled key (``until`` is None)."""

    subject: str
    until: float | None
    reason: str

    def active(self, now: float) -> bool:
        """Whether the hold still applies at ``now``."""
        return self.until is None or self.until > now


@dataclass(frozen=True)
class LearnedLimit:
    """A limit a vendor's rate-limit headers stated for a pool.

    Attributes:
        pool: the pool it applies to.
        limit: the limit, as the vendor stated it.
        learned_at: when it was last seen (epoch seconds).
    """

    pool: str
    limit: Limit
    learned_at: float


@dataclass(frozen=True)
class LimitUsage:
    """How much of one limit of one pool is spent.

    ``used`` and :attr:`remaining` are in the ledger's units (micro-dollars for a
    dollar limit: ``limit.shown(used)`` gives dollars).
    """

    pool: str
    limit: Limit
    used: int
    resets_at: float | None
    learned_at: float | None = None
    """When the vendor's headers stated this limit; ``None`` for a configured one."""
    held: int = 0
    """Of ``used``, what this process holds in local quota slices, counted in the
    shared ledger but not spent yet (see :mod:`~langchain_quota_router.quota.ledger.slices`)."""

    @property
    def remaining(self) -> int:
        """What is left (never negative), in the ledger's units."""
        return max(0, self.limit.units - self.used)

    @property
    def over(self) -> int:
        """How much more than the limit the window holds (0 within it), in the
        ledger's units. Admission never takes a window past a limit in force, so a
        count over one was admitted before the limit was (a limit learned or
        configured lower later) or spent beyond a call's estimate."""
        return max(0, self.used - self.limit.units)

    @property
    def percent(self) -> float:
        """Share of the limit spent, 0-100 (100 for a zero limit, and for a count
        over the limit: see :attr:`over`)."""
        if self.limit.units == 0:
            return 100.0
        return min(100.0, 100.0 * self.used / self.limit.units)
