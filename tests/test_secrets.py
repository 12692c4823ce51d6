"""Keys never show: fingerprints, aliases, and the repr of routes and routers."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from langchain_quota_router import QuotaRoutedChatModel, Route
from langchain_quota_router._config import router_kwargs_from_config, routes_from_env
from langchain_quota_router.quota.failures import redact
from langchain_quota_router.quota.secrets import Masker, MaskMemo, alias, fingerprint, mask

KEYS = {
    "GROQ_API_KEY_1": "gsk-SECRET-Qx7mP2zL9w",
    "GROQ_API_KEY_2": "gsk-SECRET-Rb4nT8vK1c",
    "GEMINI_API_KEY": "AIza-SECRET-Hd3jW6yF0s",
    "OPENAI_API_KEYS": "sk-SECRET-Ug5kM9qA2e,sk-SECRET-Vp8rB1xN4t",
    "COHERE_API_KEY": "co-SECRET-Wz2cL7hJ5m",
    "OPENROUTER_API_KEY": "sk-or-SECRET-Xy6fG3dS8b",
    "MISTRAL_API_KEY": "mi-SECRET-Ya9tK4pR7n",
    "TOGETHER_API_KEY": "tg-SECRET-Zc1vN6wQ3k",
    "CLOUDFLARE_API_TOKEN": "cf-SECRET-Ae4hD8mU2j",
    "CLOUDFLARE_ACCOUNT_ID": "acc",
}
SECRETS = [part for value in KEYS.values() for part in value.split(",") if "SECRET" in part]


def test_fingerprint_is_a_short_hash_tag() -> None:
    key = "gsk-abcdef"
    tag = fingerprint(key)
    assert tag == "\u2026" + hashlib.sha256(key.encode()).hexdigest()[:4]
    assert len(tag) == 5
    assert fingerprint(key) == tag  # stable across calls and processes
    assert fingerprint("gsk-abcdeg") != tag
    assert len(fingerprint(key, length=8)) == 9
    with pytest.raises(ValueError, match="length"):
        fingerprint(key, length=2)


def test_fingerprint_never_holds_characters_of_the_key_in_place() -> None:
    key = "0123456789abcdef0123"
    # The tag comes from the hash, not the key's own head or tail.
    assert fingerprint(key)[1:] not in (key[:4], key[-4:])


def test_alias() -> None:
    key = "gsk-abcdef"
    assert alias("groq", 2, key) == f"groq#2 {fingerprint(key)}"
    assert alias("groq", None, key) == f"groq {fingerprint(key)}"
    assert alias("groq", 0, key).startswith("groq#0 \u2026")


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text
        # Not even a recognisable piece of one.
        assert secret[-8:] not in text


def test_routes_and_router_from_env_never_show_keys(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        routes = routes_from_env(KEYS, dotenv=None)
        llm = QuotaRoutedChatModel(routes=routes, ledger="memory://", cache=False)
    assert len(routes) == 10
    texts = [repr(llm), str(llm), repr(routes), caplog.text, str(llm.get_stats())]
    for route in routes:
        texts += [repr(route), str(route), route.name, route.pool, route.key]
        texts += [repr(route.model), str(route.identity())]
        # The route holds no key of its own: only the vendor model, as a SecretStr.
        for slot in Route.__slots__:
            if slot != "model":
                texts.append(repr(getattr(route, slot)))
    texts += [repr(u) for u in llm.usage()]
    for text in texts:
        assert_no_secret(text)


def test_route_from_spec_never_shows_its_key() -> None:
    route = Route("groq", api_key=SECRETS[0])
    assert SECRETS[0] not in repr(route)
    assert SECRETS[0] not in repr(route.model)
    assert fingerprint(SECRETS[0]) in route.key


def test_toml_route_never_shows_its_key(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "r.toml"
    path.write_text(
        f'[[routes]]\nmodel = "groq"\napi_key = "{SECRETS[0]}"\n'
        '[[routes]]\nmodel = "gemini"\napi_key_env = "GEMINI_API_KEY"\n',
        encoding="utf-8",
    )
    with caplog.at_level(logging.DEBUG):
        kwargs = router_kwargs_from_config(path, environ=KEYS)
    assert_no_secret(caplog.text)
    assert_no_secret(repr(kwargs))


# ------------------------------------------------------------------ keys in part

PART_KEY = "csk-zFU89L0zlmq9jRh6ndx4Tq8WbNa2Lk5Pv0Ys3Hd7Rc1Mf6Ge"


@pytest.mark.parametrize(
    ("echoed", "why"),
    [
        (PART_KEY[:22], "the first 22 characters"),
        (PART_KEY[17:29], "12 characters from the middle"),
        (PART_KEY[-15:], "the tail"),
        (PART_KEY, "the whole key"),
    ],
)
def test_any_run_of_twelve_characters_of_a_key_is_masked(echoed: str, why: str) -> None:
    text = f"Incorrect API key provided: {echoed}. See your account."
    shown = mask(text, [PART_KEY], shapes=False)
    assert shown == "Incorrect API key provided: [REDACTED]. See your account.", why
    assert Masker([PART_KEY])(text) == shown
    assert redact(text, [PART_KEY]) == shown
    assert Masker([PART_KEY]).body(text.encode()) == shown.encode()


def test_eleven_characters_of_a_key_are_ordinary_text() -> None:
    text = f"model {PART_KEY[20:31]} refused"
    assert mask(text, [PART_KEY], shapes=False) == text


def test_two_parts_of_keys_side_by_side_are_one_mask() -> None:
    other = "Q" * 4 + "w9Xc2Vb7Nm4Lk1Jh8Gf5Ds3Az6"
    text = f"keys {PART_KEY[5:25]}{other[4:20]} and {other[-13:]}!"
    assert mask(text, [PART_KEY, other], shapes=False) == "keys [REDACTED] and [REDACTED]!"


@pytest.mark.parametrize(
    "key",
    [
        "csk-" + "a1b2c3d4e5" * 4,
        "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz12345678",
    ],
)
def test_cerebras_and_hugging_face_keys_are_masked_by_their_shape(key: str) -> None:
    assert redact(f"bad key {key[:22]} given") == "bad key [REDACTED] given"


def test_hf_names_are_not_keys() -> None:
    assert redact("set hf_token in the config") == "set hf_token in the config"


def test_a_remembered_mask_never_shows_a_key_it_was_not_given_before() -> None:
    memo = MaskMemo(size=2)
    first = ["sk-first-0123456789abcdefghij"]
    assert memo("served by sk-first-0123456789abcdefghij", first) == "served by [REDACTED]"
    assert memo("served by sk-first-0123456789abcdefghij", first) == "served by [REDACTED]"
    # Other keys (a router rebuilt with a new key): texts are masked afresh.
    second = ["sk-second-0123456789abcdefghij"]
    assert memo("sk-second-0123456789abcdefghij failed", second) == "[REDACTED] failed"
    for n in range(5):  # more texts than it keeps
        assert memo(f"text {n} sk-second-0123456789abcdefghij", second) == f"text {n} [REDACTED]"
