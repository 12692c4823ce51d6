"""The ledger in this process's memory (``memory://``)."""

from langchain_quota_router.quota.ledger.memory.fleet import MemoryFleetStore
from langchain_quota_router.quota.ledger.memory.ledger import MemoryLedger

__all__ = ["MemoryFleetStore", "MemoryLedger"]
