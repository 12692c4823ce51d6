"""The ledger in Redis (``redis://host:6379/0``; the client needs the ``redis`` extra)."""

from langchain_quota_router.quota.ledger.redis.fleet import RedisFleetStore
from langchain_quota_router.quota.ledger.redis.ledger import RedisLedger

__all__ = ["RedisFleetStore", "RedisLedger"]
