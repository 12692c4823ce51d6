"""Who may spend the owner's quota through the proxy: client keys.

A client sends its key as OpenAI's SDK sends an API key (``Authorization: Bearer
<key>``; ``api-key`` and ``x-api-key`` headers are read too). Keys come from
``client_keys=``, else ``$QUOTA_ROUTER_PROXY_KEYS`` (a comma list). They are:

- **required whenever the proxy listens beyond loopback**: with none configured,
  :func:`~langchain_quota_router.proxy.server.serve` generates one and prints it
  once (it is stored nowhere);
- **optional on loopback**: a program on this machine can already read the router's
  configuration and ledger, and the tools people point at a local endpoint (coding
  assistants, notebooks) often cannot send a key. Without keys the proxy still
  answers only requests that came from this machine (a loopback peer, no proxy's
  forwarding headers) under a loopback ``Host`` (a DNS-rebinding page's name is
  refused) and with no other site's ``Origin``: a web page the owner visits cannot
  spend the quota. On a machine shared with other users, set keys anyway.

Each request is counted under its key's fingerprint (``"…3f9a0c1b2d4e"``, SHA-256;
see :func:`~langchain_quota_router.quota.secrets.fingerprint`), never the key; keys
are added to the package's log guard so no log line shows one, and an error never
quotes the key it was sent.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from urllib.parse import urlsplit

from langchain_quota_router._errors import ConfigurationError
from langchain_quota_router.proxy.wire import WireError
from langchain_quota_router.quota.secrets import fingerprint, guard_logs
from langchain_quota_router.web.auth import is_loopback, same_secret

__all__ = ["CLIENT_KEYS_ENV", "LOCAL_CLIENT", "ClientKeys", "generate_key"]

CLIENT_KEYS_ENV = "QUOTA_ROUTER_PROXY_KEYS"
"""The environment variable holding the client keys (comma-separated)."""

#: The name usage is counted under for a request without a key (loopback only).
LOCAL_CLIENT = "local"
#: A client key shorter than this is refused: it could be guessed.
MIN_KEY_LENGTH = 16
_FORWARDING = ("forwarded", "x-forwarded-for", "x-real-ip")


def generate_key() -> str:
    """A new client key, shaped like the keys OpenAI clients expect (``sk-...``)."""
    return f"sk-qr-{secrets.token_urlsafe(32)}"


class ClientKeys:
    """The client keys and the check of each request against them.

    Args:
        keys: the keys; ``None`` reads ``$QUOTA_ROUTER_PROXY_KEYS``.

    Raises:
        ConfigurationError: for a key shorter than 16 characters.
    """

    def __init__(self, keys: Iterable[str] | None = None) -> None:
        source = "client_keys"
        if keys is None:
            source = f"${CLIENT_KEYS_ENV}"
            keys = os.environ.get(CLIENT_KEYS_ENV, "").split(",")
        cleaned = [k.strip() for k in keys if k.strip()]
        for key in cleaned:
            if len(key) < MIN_KEY_LENGTH:
                msg = (
                    f"{source}: a client key is too short to be safe; use at least "
                    f"{MIN_KEY_LENGTH} characters"
                )
                raise ConfigurationError(msg)
        # Fingerprints are computed once: counting a request must not hash a key.
        self._keys = {key: fingerprint(key, length=12) for key in cleaned}
        guard_logs(cleaned)

    @property
    def required(self) -> bool:
        """Whether a request must bring a key (some are configured)."""
        return bool(self._keys)

    def keys(self) -> list[str]:
        """The configured keys (to mask, or to print a generated one)."""
        return list(self._keys)

    def client(self, headers: Mapping[str, str], peer: str | None) -> str:
        """The client a request is counted under: its key's fingerprint, or
        :data:`LOCAL_CLIENT` for a keyless local request when no keys are configured.

        Args:
            headers: the request's headers (lowercase names).
            peer: the client's address.

        Raises:
            WireError: 401 for a missing or wrong key, 403 for a keyless request
                from beyond this machine.
        """
        given = _presented(headers)
        if self._keys:
            if given is None:
                msg = (
                    "no API key: send a client key of this proxy as a bearer token "
                    f"(Authorization: Bearer ...; the keys are in ${CLIENT_KEYS_ENV})"
                )
                raise WireError(
                    HTTPStatus.UNAUTHORIZED,
                    msg,
                    kind="invalid_request_error",
                    code="invalid_api_key",
                )
            # Every key is compared (in constant time): which one matched, and how
            # far, says nothing through the timing.
            found = None
            for key, mark in self._keys.items():
                if same_secret(given, key):
                    found = mark
            if found is None:
                msg = "the API key is not a client key of this proxy"
                raise WireError(
                    HTTPStatus.UNAUTHORIZED,
                    msg,
                    kind="invalid_request_error",
                    code="invalid_api_key",
                )
            return found
        _check_local(headers, peer)
        return LOCAL_CLIENT


def _presented(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    scheme, _, credentials = auth.strip().partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    for name in ("api-key", "x-api-key"):
        value = headers.get(name, "").strip()
        if value:
            return value
    return None


def _check_local(headers: Mapping[str, str], peer: str | None) -> None:
    """Refuse a keyless request that did not start on this machine."""
    refused = "this proxy has no client keys, so it serves only programs on its own machine"
    if peer is None or not is_loopback(peer) or any(headers.get(h) for h in _FORWARDING):
        raise WireError(HTTPStatus.FORBIDDEN, refused, kind="permission_error")
    host = headers.get("host", "")
    name = host.rsplit(":", 1)[0].strip("[]") if host else ""
    if not is_loopback(name):
        msg = f"{refused}: the Host header must name this machine (localhost, 127.0.0.1)"
        raise WireError(HTTPStatus.FORBIDDEN, msg, kind="permission_error")
    origin = headers.get("origin")
    if origin is not None:
        origin_host = urlsplit(origin.strip()).hostname or ""
        if not is_loopback(origin_host):
            msg = f"{refused}: requests from web pages of other sites are refused"
            raise WireError(HTTPStatus.FORBIDDEN, msg, kind="permission_error")
