"""The one router factory the tests share."""

from __future__ import annotations

from typing import Any

from langchain_quota_router import QuotaRoutedChatModel, Route
from langchain_quota_router.quota.clock import FakeClock


def router(clock: FakeClock, *routes: Route, **kw: Any) -> QuotaRoutedChatModel:
    """A router over ``routes`` on a fresh memory ledger, without a cache (both may be
    overridden by ``kw``), on the test's clock."""
    kw.setdefault("ledger", "memory://")
    kw.setdefault("cache", False)
    return QuotaRoutedChatModel(routes=list(routes), clock=clock, **kw)
