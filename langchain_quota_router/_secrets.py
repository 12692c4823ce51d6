"""Names for API keys that are safe to show: in reports, logs, route names, ledger keys.

A key is never shown, stored in clear on a route, or written to the ledger. What is
shown instead is a short tag derived from a hash of the key (``"…a1f3"``), so two
keys of one vendor can be told apart without revealing a single character of either.
"""

from __future__ import annotations

import hashlib

__all__ = ["alias", "fingerprint"]

_ELLIPSIS = "\u2026"


def fingerprint(api_key: str, *, length: int = 4) -> str:
    """A short, non-reversible tag for an API key, such as ``"…a1f3"``.

    The tag is the first ``length`` hex digits of the key's SHA-256, never characters
    of the key itself (a key's own last four characters narrow a brute-force search
    and show up in vendor dashboards next to the account name).

    Args:
        api_key: the key.
        length: how many hex digits to keep (4 to 64). Four tell a handful of keys
            apart (two of ten keys collide with odds of about 1 in 1,500); callers
            that hold many keys may ask for more.

    Returns:
        ``"…"`` followed by ``length`` lowercase hex digits.
    """
    if not 4 <= length <= 64:
        msg = f"fingerprint length must be between 4 and 64, got {length}"
        raise ValueError(msg)
    digest = hashlib.sha256(api_key.encode("utf-8")).hexdigest()
    return f"{_ELLIPSIS}{digest[:length]}"


def alias(vendor: str, index: int | None, api_key: str, *, length: int = 4) -> str:
    """The name a key goes by: ``"groq#2 …a1f3"``, or ``"groq …a1f3"`` with no index.

    Args:
        vendor: the vendor's catalog name.
        index: the key's number in its configuration (``GROQ_API_KEY_2`` is 2), or
            ``None`` for a vendor's only, unnumbered key.
        api_key: the key.
        length: hex digits of the fingerprint (see :func:`fingerprint`).
    """
    number = "" if index is None else f"#{index}"
    return f"{vendor}{number} {fingerprint(api_key, length=length)}"
