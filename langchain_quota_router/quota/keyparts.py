"""Finds where text repeats part of a configured key, so that part can be masked.

Vendors echo keys in part ("Incorrect API key provided: csk-zFU89L0zlm…"), and a
route may be named after its key and then clipped to fit a column: neither shows
the whole key, and neither matches a vendor's key shape. So any run of
:data:`RUN_LENGTH` or more characters that some configured key also holds counts as
key text, wherever it is.

:class:`KeyParts` is built once per set of keys (:func:`key_parts` keeps the last
few) and then scans a message in one pass over every sixth character, so masking
costs a few microseconds however many keys there are.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

__all__ = ["RUN_LENGTH", "KeyParts", "key_parts"]

RUN_LENGTH = 12
"""The shortest run of a key's characters that is masked. Twelve characters of a
random key narrow a search for the rest by more than 70 bits, and ordinary words,
model names and URLs share no run this long with a random key."""

#: Every run of RUN_LENGTH characters holds one of these aligned probes whole, so
#: probing every _PROBE-th position finds every run.
_PROBE = RUN_LENGTH // 2


class KeyParts:
    """The runs of :data:`RUN_LENGTH` characters held by a set of keys.

    Example:
        ```python
        parts = KeyParts(["csk-zFU89L0zlmq9jRh6ndxxxx"])
        parts.replace("key csk-zFU89L0zlmq9 refused", "[REDACTED]")
        # 'key [REDACTED] refused'
        ```
    """

    def __init__(self, keys: Iterable[str]) -> None:
        """Index every run of :data:`RUN_LENGTH` characters of ``keys``.

        Args:
            keys: the keys; those shorter than :data:`RUN_LENGTH` hold no run (mask
                them whole).
        """
        long = {key for key in keys if len(key) >= RUN_LENGTH}
        self._runs = frozenset(
            key[i : i + RUN_LENGTH] for key in long for i in range(len(key) - RUN_LENGTH + 1)
        )
        self._probes = frozenset(
            key[i : i + _PROBE] for key in long for i in range(len(key) - _PROBE + 1)
        )

    def __bool__(self) -> bool:
        """Whether there is any key long enough to hold a run."""
        return bool(self._runs)

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where ``text`` repeats key text: maximal ``(start, end)`` spans, in order.

        A span is the union of overlapping (or touching) runs, so a 22-character
        prefix of a key is one span, not eleven.
        """
        size = len(text)
        if size < RUN_LENGTH or not self._runs:
            return []
        runs, probes = self._runs, self._probes
        spans: list[tuple[int, int]] = []
        checked = -1  # every run start up to here has been looked at
        for probe in range(0, size - _PROBE + 1, _PROBE):
            if text[probe : probe + _PROBE] not in probes:
                continue
            # A run holding this probe starts at most _PROBE characters before it.
            first = max(checked + 1, probe - _PROBE)
            last = min(probe, size - RUN_LENGTH)
            for start in range(first, last + 1):
                if text[start : start + RUN_LENGTH] in runs:
                    end = start + RUN_LENGTH
                    if spans and start <= spans[-1][1]:
                        spans[-1] = (spans[-1][0], max(spans[-1][1], end))
                    else:
                        spans.append((start, end))
            checked = max(checked, last)
        return spans

    def replace(self, text: str, with_: str) -> str:
        """``text`` with each span of key text replaced by ``with_``."""
        spans = self.spans(text)
        if not spans:
            return text
        pieces: list[str] = []
        at = 0
        for start, end in spans:
            pieces += (text[at:start], with_)
            at = end
        pieces.append(text[at:])
        return "".join(pieces)


@functools.lru_cache(maxsize=32)
def _cached(keys: tuple[str, ...]) -> KeyParts:
    return KeyParts(keys)


def key_parts(keys: Iterable[str]) -> KeyParts:
    """The :class:`KeyParts` of ``keys``, built once per distinct set of keys."""
    return _cached(tuple(sorted(set(keys))))
