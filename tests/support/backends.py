"""The ledger backends, named once: parametrise over these, never a hand-written list."""

from __future__ import annotations

#: Every ledger backend, the fail-open wrapper (over Redis) and the slices wrapper
#: (over SQLite and over Redis).
BACKENDS = ["memory", "sqlite", "redis", "redis-failopen", "sqlite-sliced", "redis-sliced"]

#: The slices wrapper over each shared backend.
SLICED = ["sqlite-sliced", "redis-sliced"]

#: The backends themselves, without the wrapper.
STORES = ["memory", "sqlite", "redis"]

#: The backends several processes share: what "exact across processes" is tested on.
SHARED = ["sqlite", "redis"]

#: The backends whose rows live in memory or in a file: no server needed.
LOCAL = ["memory", "sqlite"]
