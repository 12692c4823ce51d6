"""What may be shown of a secret: the one place that decides, for every output.

A key is never shown, stored in clear on a route, or written to the ledger. What is
shown instead is a short tag derived from a hash of the key (``"…a1f3"``), so two
keys of one vendor can be told apart without revealing a single character of either.

Everything the package shows people (the status page, ``/status.json``, ``/metrics``,
the command line, the demo) goes through :class:`Masker`, which hides:

- every API key the router's vendor models hold (their ``SecretStr`` fields), even
  keys no pattern would recognise;
- anything shaped like a key or token (``sk-…``, ``gsk_…``, ``AIza…``, ``Bearer …``,
  ``key=…``), as :func:`langchain_quota_router.vendors.failures.redact` finds them in
  vendor messages;
- the user name and password of a URL (:func:`mask_url`), since a Redis ledger URL
  may carry them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, SecretStr

from langchain_quota_router.ledger._url import redact_url
from langchain_quota_router.vendors.failures import redact as redact_shapes

if TYPE_CHECKING:
    from langchain_quota_router._chat_model import QuotaRoutedChatModel

__all__ = ["REDACTED", "Masker", "alias", "fingerprint", "mask", "mask_url", "router_keys"]

_ELLIPSIS = "\u2026"

REDACTED = "[REDACTED]"
"""What stands in for a masked secret."""

#: Shorter "keys" are not masked: replacing every "ab" in a page would garble it, and
#: no vendor issues keys that short.
_MIN_KEY_LENGTH = 4


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


def router_keys(router: QuotaRoutedChatModel) -> list[str]:
    """Every API key the router's vendor models hold, longest first.

    Longest first, so that a key containing another is masked whole.

    Args:
        router: the router whose routes' models to read.

    Returns:
        The values of the models' ``SecretStr`` fields (at least four characters).
    """
    found: set[str] = set()
    for route in router.routes:
        model = route.model
        if not isinstance(model, BaseModel):
            continue
        for name in type(model).model_fields:
            value = getattr(model, name, None)
            if isinstance(value, SecretStr):
                secret = value.get_secret_value()
                if len(secret) >= _MIN_KEY_LENGTH:
                    found.add(secret)
    return sorted(found, key=lambda k: (-len(k), k))


def mask(text: str, keys: Iterable[str] = ()) -> str:
    """``text`` with the given keys, and anything shaped like a key, replaced.

    Args:
        text: text that may hold a key (a vendor's message, a route name, a report).
        keys: known keys to hide wherever they appear (see :func:`router_keys`).

    Returns:
        ``text`` with each secret replaced by ``[REDACTED]``.
    """
    for key in keys:
        if key:
            text = text.replace(key, REDACTED)
    return redact_shapes(text)


def mask_url(url: str, keys: Iterable[str] = ()) -> str:
    """A URL (such as a ledger's) without its user name, password or keys."""
    # Only a URL with credentials is rebuilt: taking apart and joining a URL with
    # no host turns "sqlite:///tmp/x.db" into "sqlite:/tmp/x.db".
    try:
        parts = urlsplit(url)
        credentials = "@" in parts.netloc or any(
            name.lower() in ("password", "username")
            for name, _ in parse_qsl(parts.query, keep_blank_values=True)
        )
    except ValueError:
        credentials = True
    return mask(redact_url(url) if credentials else url, keys)


class Masker:
    """Masks one router's keys, and key-shaped strings, in whatever is shown.

    Build one per output (a page, a report) with :meth:`for_router`; it reads the
    router's keys once.

    Example:
        ```python
        masked = Masker.for_router(router)
        print(masked(state.reason))
        ```
    """

    def __init__(self, keys: Iterable[str] = ()) -> None:
        """Mask ``keys`` (longest first) and key-shaped strings.

        Args:
            keys: the known keys.
        """
        self.keys = sorted({k for k in keys if k}, key=lambda k: (-len(k), k))

    @classmethod
    def for_router(cls, router: QuotaRoutedChatModel) -> Masker:
        """A masker for every key ``router``'s vendor models hold."""
        return cls(router_keys(router))

    def __call__(self, text: str) -> str:
        """``text`` masked (see :func:`mask`)."""
        return mask(text, self.keys)

    def url(self, url: str) -> str:
        """``url`` masked (see :func:`mask_url`)."""
        return mask_url(url, self.keys)

    def body(self, data: bytes) -> bytes:
        """Known keys replaced in an encoded response body: a last guard for output
        that was built before it was masked (a key typed into a form, say)."""
        for key in self.keys:
            data = data.replace(key.encode(), REDACTED.encode())
        return data
