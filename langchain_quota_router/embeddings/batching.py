"""Cutting a document set into batches in each vendor's unit.

A batch is as many texts as one call of the route may carry: no more than its
``batch_size`` (the vendor's cap), no more estimated input tokens than the vendor
takes per call or any token limit of its pool allows, and (where each text counts as
a request) no more texts than any request limit allows. Otherwise a batch could
never be admitted, however long the router waited.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from langchain_quota_router.quota.ledger import Demand
from langchain_quota_router.quota.limits import Limit

__all__ = ["batch_demand", "batch_length", "estimate_tokens"]


def estimate_tokens(text: str) -> int:
    """A text's input tokens, estimated as vendors' rule of thumb (4 characters a
    token, at least 1)."""
    return max(1, math.ceil(len(text) / 4))


def batch_length(
    tokens: Sequence[int],
    start: int,
    *,
    batch_size: int,
    batch_tokens: int | None,
    count_items: bool,
    limits: Sequence[Limit],
) -> int:
    """How many texts from ``start`` go into the next batch (at least one: a single
    text too large for any call is the vendor's to refuse).

    Args:
        tokens: each text's estimated tokens.
        start: the first text of the batch.
        batch_size: the route's most texts per call.
        batch_tokens: the route's most input tokens per call, if capped.
        count_items: each text counts as one request.
        limits: the route's pool's limits.
    """
    most = batch_size
    if count_items:
        for lim in limits:
            if lim.metric == "requests" and lim.units > 0:
                most = min(most, lim.units)
    token_cap = batch_tokens
    for lim in limits:
        if lim.metric in ("tokens", "input_tokens") and lim.units > 0:
            token_cap = lim.units if token_cap is None else min(token_cap, lim.units)
    end = min(len(tokens), start + max(1, most))
    if token_cap is None:
        return end - start
    total = 0
    for index in range(start, end):
        total += tokens[index]
        if total > token_cap and index > start:
            return index - start
    return end - start


def batch_demand(tokens: Sequence[int], *, count_items: bool) -> Demand:
    """What a batch reserves: one request per call (per text where texts count), and
    its estimated input tokens."""
    return Demand(len(tokens) if count_items else 1, sum(tokens), 0)
