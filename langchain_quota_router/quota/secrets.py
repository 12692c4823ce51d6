"""What may be shown of a secret: the one place that decides, for every output.

A key is never shown, stored in clear on a route, or written to the ledger. What is
shown instead is a short tag derived from a hash of the key (``"…a1f3"``), so two
keys of one vendor can be told apart without revealing a single character of either.

Everything the package shows people (the status page, ``/status.json``, ``/metrics``,
the command line, the demo) goes through :class:`Masker`, which hides:

- every API key the router's vendor models hold (their ``SecretStr`` fields), even
  keys no pattern would recognise, and any run of 12 or more of a key's characters
  (a vendor echoing a key's first 22 characters, a route name clipped mid-key; see
  :mod:`langchain_quota_router.quota.keyparts`);
- anything shaped like a key or token (``sk-…``, ``gsk_…``, ``AIza…``, ``Bearer …``,
  ``key=…``), as :func:`langchain_quota_router.quota.failures.redact` finds them in
  vendor messages;
- the user name and password of a URL (:func:`mask_url`), since a Redis ledger URL
  may carry them.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import traceback
from collections.abc import Iterable
from typing import Protocol
from urllib.parse import parse_qsl, urlsplit

from langchain_quota_router.quota.errors import ConfigurationError
from langchain_quota_router.quota.failures import redact as redact_shapes
from langchain_quota_router.quota.keyparts import KeyParts, key_parts
from langchain_quota_router.quota.ledger.url import redact_url


class HasKeys(Protocol):
    """Anything that holds API keys to mask: a router, a key rotator."""

    def keys_to_mask(self) -> list[str]: ...


__all__ = [
    "REDACTED",
    "Masker",
    "RedactedError",
    "alias",
    "clean_key",
    "exception_leaks",
    "fingerprint",
    "guard_logs",
    "mask",
    "mask_url",
    "redacted",
]

logger = logging.getLogger("langchain_quota_router")

_ELLIPSIS = "\u2026"

REDACTED = "[REDACTED]"
"""What stands in for a masked secret."""

#: Shorter "keys" are not masked: replacing every "ab" in a page would garble it, and
#: no vendor issues keys that short.
MIN_KEY_LENGTH = 4


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


def mask(text: str, keys: Iterable[str] = (), *, shapes: bool = True) -> str:
    """``text`` with the given keys (whole or in part), and anything shaped like a
    key, replaced.

    Args:
        text: text that may hold a key (a vendor's message, a route name, a report).
        keys: known keys to hide wherever they appear, and wherever 12 or more of
            their characters in a row appear (a router's ``keys_to_mask()``).
        shapes: also replace what merely looks like a key; ``False`` replaces only
            ``keys`` (for text already redacted once).

    Returns:
        ``text`` with each secret replaced by ``[REDACTED]``.
    """
    keys = [key for key in keys if key]
    return _masked(text, keys, key_parts(keys), shapes=shapes)


def _masked(text: str, keys: list[str], parts: KeyParts, *, shapes: bool) -> str:
    # Runs first: a whole key is a run too, and a key's head would otherwise
    # survive a shorter key's replacement inside it.
    text = parts.replace(text, REDACTED)
    for key in keys:
        if key in text:
            text = text.replace(key, REDACTED)
    return redact_shapes(text) if shapes else text


class MaskMemo:
    """``mask(text, keys, shapes=False)``, remembered for the texts seen lately: a
    router explains every answer with the same route names and the same few
    reasons, and masking each costs microseconds. Forgets all when given other
    ``keys`` (another list object) or when full."""

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._keys: list[str] | None = None
        self._seen: dict[str, str] = {}

    def __call__(self, text: str, keys: list[str]) -> str:
        if keys is not self._keys:
            self._keys, self._seen = keys, {}
        found = self._seen.get(text)
        if found is None:
            found = mask(text, keys, shapes=False)
            if len(self._seen) >= self._size:
                self._seen = {}
            self._seen[text] = found
        return found


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
        self._parts = key_parts(self.keys)

    @classmethod
    def for_router(cls, *sources: HasKeys) -> Masker:
        """A masker for every key the routers (and key rotators) hold."""
        return cls([key for source in sources for key in source.keys_to_mask()])

    def __call__(self, text: str) -> str:
        """``text`` masked (see :func:`mask`)."""
        return _masked(text, self.keys, self._parts, shapes=True)

    def url(self, url: str) -> str:
        """``url`` masked (see :func:`mask_url`)."""
        return mask_url(url, self.keys)

    def body(self, data: bytes) -> bytes:
        """Known keys replaced in an encoded response body: a last guard for output
        that was built before it was masked (a key typed into a form, say)."""
        # surrogateescape: bytes that are not UTF-8 pass through untouched.
        text = data.decode("utf-8", "surrogateescape")
        masked = _masked(text, self.keys, self._parts, shapes=False)
        return data if masked == text else masked.encode("utf-8", "surrogateescape")


# ------------------------------------------------------------------ log lines


class _LogGuard(logging.Filter):
    """Masks the keys routers were built with in every record of a logger: a last
    guard for a name that embeds a key (``backup-<key>``), which log lines quote."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._keys: frozenset[str] = frozenset()

    def add(self, keys: Iterable[str]) -> None:
        with self._lock:
            self._keys = self._keys | {k for k in keys if len(k) >= MIN_KEY_LENGTH}

    def filter(self, record: logging.LogRecord) -> bool:
        keys = self._keys
        if not keys:
            return True
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is the handler's to report
            return True
        masked = mask(text, keys, shapes=False)
        if masked != text:
            record.msg, record.args = masked, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = mask(
                "".join(traceback.format_exception(*record.exc_info)).rstrip("\n"),
                keys,
                shapes=False,
            )
        return True


_log_guard = _LogGuard()
logger.addFilter(_log_guard)


def guard_logs(keys: Iterable[str], *loggers: logging.Logger) -> None:
    """Mask ``keys`` (whole or in part) in every line the package logs from now on.

    Args:
        keys: the keys a router was built with (its ``keys_to_mask()``).
        loggers: more loggers to guard than the package's own
            (``langchain_quota_router``), such as a module's ``__name__`` logger.
    """
    _log_guard.add(keys)
    for extra in loggers:
        if _log_guard not in extra.filters:
            extra.addFilter(_log_guard)


# ------------------------------------------------------------------ configured keys

#: Characters no vendor key holds. A newline inside a key breaks the HTTP header it
#: is sent in, and the HTTP library's error then quotes the header: the key.
_CONTROL = frozenset(chr(c) for c in (*range(0x20), 0x7F))


def clean_key(secret: str, where: str) -> str:
    """A configured key without surrounding whitespace; refuses control characters.

    A key read from a file (``GROQ_API_KEY=$(cat key.txt)``) often ends in a newline,
    which the vendor rejects and the HTTP library echoes. It is stripped, with a
    warning that names where the key came from, never the key.

    Args:
        secret: the key as configured.
        where: the variable or argument that held it (``"GROQ_API_KEY_2"``).

    Returns:
        The key, stripped.

    Raises:
        ConfigurationError: the key holds a control character inside it (the message
            names ``where``, not the key).
    """
    stripped = secret.strip()
    if stripped != secret and stripped:
        logger.warning(
            "%s: the API key has surrounding whitespace (a trailing newline from a "
            "file?); it was stripped",
            where,
        )
    if any(ch in _CONTROL for ch in stripped):
        msg = f"{where}: the API key holds a control character (a newline, a tab, a null)"
        raise ConfigurationError(msg)
    return stripped


class RedactedError(Exception):
    """Stands in for a vendor's exception whose text held an API key.

    The router chains it (or raises it) where it would have chained the vendor's own
    exception, so that no traceback shows a key a vendor echoed back ("Incorrect API
    key provided: sk-..."). It keeps the vendor exception's type name, message (with
    every key masked) and HTTP status.

    Attributes:
        vendor_type: ``module.Class`` of the exception it replaces.
        status_code: the HTTP status the vendor answered, if known.
    """

    def __init__(self, message: str, vendor_type: str, status_code: int | None) -> None:
        super().__init__(message)
        self.vendor_type = vendor_type
        self.status_code = status_code


def _chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def exception_leaks(exc: BaseException, keys: Iterable[str]) -> bool:
    """Whether ``exc`` as a traceback prints (chained causes included) shows one of
    ``keys``, or a run of 12 or more of a key's characters."""
    text = "".join(traceback.format_exception(exc))
    keys = [key for key in keys if len(key) >= MIN_KEY_LENGTH]
    return any(key in text for key in keys) or bool(key_parts(keys).spans(text))


def redacted(exc: BaseException, keys: Iterable[str]) -> BaseException:
    """``exc`` itself when its traceback shows no key, else a :class:`RedactedError`.

    The stand-in carries the vendor exception's message (masked), its type name and
    status code, and its traceback (frames show code, never values); its own chain is
    cut, since the vendor's causes (an ``httpx.HTTPStatusError`` with the request's
    headers, say) are what may hold the key.

    Args:
        exc: a vendor's exception, about to be raised or chained by the router.
        keys: the router's keys (``keys_to_mask()``).
    """
    keys = list(keys)
    if not exception_leaks(exc, keys):
        return exc
    status = next(
        (
            code
            for error in _chain(exc)
            for code in (getattr(error, "status_code", None), getattr(error, "code", None))
            if isinstance(code, int) and not isinstance(code, bool) and 100 <= code < 600
        ),
        None,
    )
    kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the failure
        text = ""
    stand_in = RedactedError(f"{kind}: {mask(text, keys)}", kind, status)
    stand_in.__suppress_context__ = True
    return stand_in.with_traceback(exc.__traceback__)
