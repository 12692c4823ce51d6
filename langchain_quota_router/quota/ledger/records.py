"""How a ledger names what it keeps in its table of holds.

A hold's subject says what it holds (``pool:``, ``key:``, ``model:``). The same
table keeps two kinds of record that are not holds, so every process sees them: a
limit a vendor's headers stated (``learned:``) and a pool some process found full
(``full:``, see :class:`~langchain_quota_router.quota.ledger.full.FullPools`).
"""

from __future__ import annotations

from collections.abc import Sequence

from langchain_quota_router.quota.ledger.types import Hold, LearnedLimit
from langchain_quota_router.quota.limits import Limit

POOL_PREFIX = "pool:"
KEY_PREFIX = "key:"
#: A model on one key that the vendor no longer serves (retired, unknown, gone).
MODEL_PREFIX = "model:"
#: Not a hold: a limit a vendor's headers stated, kept beside the holds so every
#: process sees it. ``holds()`` never lists these.
LEARNED_PREFIX = "learned:"
#: Not a hold either: a pool some process found full, until when and for what
#: demand, so other processes skip it without asking (see :class:`FullPools`).
FULL_PREFIX = "full:"
#: Separates the fields of a record's subject or text.
LEARNED_SEP = "\x1f"


def is_record(subject: str) -> bool:
    """Whether a hold-shaped entry is a record (learned limit, full pool), not a hold."""
    return subject.startswith((LEARNED_PREFIX, FULL_PREFIX))


def learned_record(pool: str, limit: Limit, now: float) -> Hold:
    """A learned limit as the hold-shaped record ledgers keep it in."""
    return Hold(f"{LEARNED_PREFIX}{pool}{LEARNED_SEP}{limit.series}", now, str(limit))


def learned_from(records: Sequence[Hold]) -> list[LearnedLimit]:
    """The learned limits among hold records."""
    found = []
    for record in records:
        if not record.subject.startswith(LEARNED_PREFIX):
            continue
        pool, _, _ = record.subject[len(LEARNED_PREFIX) :].rpartition(LEARNED_SEP)
        try:
            limit = Limit.parse(record.reason)
        except ValueError:
            continue  # written by a newer version with a grammar this one lacks
        found.append(LearnedLimit(pool, limit, record.until or 0.0))
    return found
