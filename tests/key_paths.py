"""The six ways into a KeyRotator, so every key-rotation behaviour runs on each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_quota_router import KeyRotator

WAYS = ["call", "acall", "rotate", "arotate", "key", "akey"]


async def use(rotator: KeyRotator, way: str, api: Callable[[str], Any], cost: int = 1) -> Any:
    """Call ``api(key)`` through ``rotator`` by ``way``; returns what ``api``
    returned. ``api`` raises to fail, as an HTTP client would."""
    if way == "call":
        return rotator.call(lambda *, api_key: api(api_key), cost=cost)
    if way == "acall":

        async def acalled(*, api_key: str) -> Any:
            return api(api_key)

        return await rotator.acall(acalled, cost=cost)
    if way == "rotate":

        @rotator.rotate(cost=cost)
        def rotated(*, api_key: str) -> Any:
            return api(api_key)

        return rotated()
    if way == "arotate":

        @rotator.rotate(cost=cost)
        async def arotated(*, api_key: str) -> Any:
            return api(api_key)

        return await arotated()
    if way == "key":
        with rotator.key(cost=cost) as key:
            return api(key.secret)
    async with rotator.akey(cost=cost) as key:
        return api(key.secret)
