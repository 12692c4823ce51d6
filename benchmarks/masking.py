"""What masking costs: ``mask()`` and ``Masker`` on a typical vendor message.

A 240-character message (a vendor's 401 echoing the first 22 characters of one of
ten configured keys, and the same message without key text: "clean") is masked many
times; the figure is the best of seven runs, per call.

Run: ``PYTHONPATH=. python benchmarks/masking.py``.
"""

from __future__ import annotations

import random
import string
import timeit

from langchain_quota_router.quota.secrets import Masker, mask

_ALPHABET = string.ascii_letters + string.digits


def _keys() -> list[str]:
    rng = random.Random(17)

    def body(n: int) -> str:
        return "".join(rng.choice(_ALPHABET) for _ in range(n))

    return [
        "gsk_" + body(52),
        "sk-" + body(48),
        "sk-proj-" + body(56),
        "csk-" + body(48),
        "AIza" + body(35),
        body(40),
        "hf_" + body(34),
        "gsk_" + body(52),
        "sk-proj-" + body(56),
        body(40),
    ]


def _message(key: str) -> str:
    text = (
        f"Error code: 401 - {{'error': {{'message': 'Incorrect API key provided: {key[:22]}'"
        ", 'type': 'invalid_request_error', 'code': 'invalid_api_key'}}. You can find your "
        "API key at https://platform.example.com/account/api-keys. Please check it."
    )
    return (text + " " * 240)[:240]


def main() -> None:
    keys = _keys()
    text = _message(keys[3])
    clean = text.replace(keys[3][:22], "[a key that is not ours]"[:22])
    masker = Masker(keys)
    runs = 2000
    for label, call in (
        ("mask(text, keys)", lambda: mask(text, keys)),
        ("Masker(keys)(text)", lambda: masker(text)),
        ("mask(text, keys, shapes=False)", lambda: mask(text, keys, shapes=False)),
        ("Masker(keys)(clean)", lambda: masker(clean)),
    ):
        best = min(timeit.repeat(call, number=runs, repeat=7)) / runs
        print(f"{label:34} {best * 1e6:7.1f} µs per 240-char message, 10 keys")
    shown = masker(text)
    print(f"masked: {shown[40:110]!r}")
    print(f"leaks the 22-char prefix: {keys[3][:22] in shown}")


if __name__ == "__main__":
    main()
