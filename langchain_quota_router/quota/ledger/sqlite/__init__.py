"""The ledger in a SQLite file (``sqlite:///path/to/ledger.db``)."""

from langchain_quota_router.quota.ledger.sqlite.fleet import SQLiteFleetStore
from langchain_quota_router.quota.ledger.sqlite.ledger import SQLiteLedger

__all__ = ["SQLiteFleetStore", "SQLiteLedger"]
