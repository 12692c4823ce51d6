"""Keys for any API: rotate several keys of a search (or any other) API by the quota
each has left, on the same ledger as the chat routes."""

from langchain_quota_router.keys.rotator import Key, KeyLease, KeyRotator

__all__ = ["Key", "KeyLease", "KeyRotator"]
