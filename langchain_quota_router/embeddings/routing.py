"""Embedding routing: the quota core's admission, planned one batch at a time.

A :class:`BatchCall` is the admission of the next batch of a document set (or of one
query): for each route it cuts the batch that route may carry
(:mod:`~langchain_quota_router.embeddings.batching`) and reserves it in the vendor's
unit; the order, the reservations, failures, waiting and the final error are
:mod:`langchain_quota_router.quota.admission`'s. When a key runs out, the next batch
simply finds another route: every batch is admitted afresh.

What is embeddings here: the demand, a route taken out because its vectors are not
this router's vector space, and the cost of an answer.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_quota_router.embeddings.batching import batch_demand, batch_length
from langchain_quota_router.quota.admission import Admission, Plan, Policy, model_subject
from langchain_quota_router.quota.ledger import Reservation
from langchain_quota_router.quota.ledger.settle import asettle, settle
from langchain_quota_router.route import EmbeddingRoute

__all__ = ["BatchCall"]

logger = logging.getLogger("langchain_quota_router")


class BatchCall(Admission):
    """The admission of the batch that starts at text ``start``.

    Args:
        policy: the router's admission policy.
        tokens: every text's estimated tokens.
        start: the first text of this batch.
        excluded: route name -> why it is taken out (vectors of another space).
    """

    def __init__(
        self,
        policy: Policy,
        tokens: Sequence[int],
        start: int,
        excluded: Mapping[str, str],
    ) -> None:
        super().__init__(policy)
        self.tokens = tokens
        self.start = start
        self.excluded = excluded

    def plan(self, member: Any) -> Plan | object | None:
        """The batch ``member`` may carry from :attr:`start`, and its demand; the
        plan's payload is the number of texts."""
        route: EmbeddingRoute = member
        why = self.excluded.get(route.name)
        if why is not None:
            self.skip(route, why, "unavailable")
            return None
        length = batch_length(
            self.tokens,
            self.start,
            batch_size=route.batch_size,
            batch_tokens=route.batch_tokens,
            count_items=route.count_items,
            limits=self.pools[route.pool],
        )
        tokens = self.tokens[self.start : self.start + length]
        return self.plan_demand(route, batch_demand(tokens, count_items=route.count_items), length)

    # -------------------------------------------------------------- outcomes

    def embedded(self, plan: Plan, reservation: Reservation) -> None:
        """Settle a batch the vendor embedded, and count it."""
        settled = settle(self.ledger, reservation, plan.demand, self.clock.now())
        self.after_answer(
            plan.member, reservation, plan.demand, None, settled=settled, cost=_cost(plan)
        )

    async def aembedded(self, plan: Plan, reservation: Reservation) -> None:
        """:meth:`embedded` without blocking the event loop."""
        settled = await asettle(self.ledger, reservation, plan.demand, self.clock.now())
        note = functools.partial(
            self.after_answer,
            plan.member,
            reservation,
            plan.demand,
            None,
            settled=settled,
            cost=_cost(plan),
        )
        if not self.ledger.blocking or self.quiet(reservation, None):
            note()
        else:
            await self.ledger.arun(note)

    def failed(self, plan: Plan, reservation: Reservation, exc: BaseException) -> None:
        """Act on a vendor failure (the core's rules); return to try the next route,
        or raise."""
        self.failed_with(plan.member, reservation, exc)

    def foreign(self, plan: Plan, reservation: Reservation, problem: str) -> str:
        """Take a route out whose answer is not of this router's vector space.

        The vendor answered and was paid: the reservation is settled as spent. The
        route's model on its key is marked unavailable in the ledger (every process
        sharing it skips the route until ``router.enable(name)`` or the model
        recheck), and this router never asks it again. Returns the reason.
        """
        route: EmbeddingRoute = plan.member
        now = self.clock.now()
        settle(self.ledger, reservation, plan.demand, now)
        self.stats.spent(route.name, route.pool, plan.demand)
        self.stats.failed(route.name, "dimension")
        reason = (
            f"taken out: {problem}; its vectors cannot be mixed with this router's "
            f"(fix the route, then router.enable({route.name!r}))"
        )
        self.ledger.mark_unavailable(
            model_subject(route), now + self.policy.model_recheck, f"model {reason}"
        )
        self.skip(route, reason, "unavailable")
        logger.error("route %s %s", route.name, reason)
        return reason


def _cost(plan: Plan) -> float | None:
    route: EmbeddingRoute = plan.member
    if route.prices is None:
        return None
    return plan.demand.input_tokens * route.prices[0] / 1e6
