"""Run the simulator as its own process (``python -m ...simulator``): the CLI."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from ._server import Simulator
from ._types import VENDORS, SimKey, SimModel, Vendor

_KEY_FIELDS = {"key", "vendor", "rpm", "rpd", "tpm", "tpd"}

#: Keys served when a config names none, so the simulator works out of the box: one
#: per vendor, with that vendor's free-tier limits. They are not secrets: they open
#: nothing but this simulator.
SANDBOX_KEYS: tuple[SimKey, ...] = (
    SimKey("sim-groq-key", "groq", rpm=30, rpd=1000, tpm=8000),
    SimKey("sim-gemini-key", "gemini", rpm=15, rpd=500),
    SimKey("sim-openai-key", "openai", rpm=3, rpd=200, tpm=40_000),
    SimKey("sim-cohere-key", "cohere", rpm=20),
)

#: Each vendor's environment prefix, key variable and a model it serves.
_PASTE: dict[Vendor, tuple[str, str, str]] = {
    "groq": ("GROQ", "GROQ_API_KEY", "openai/gpt-oss-120b"),
    "gemini": ("GEMINI", "GEMINI_API_KEY", "gemini-3.5-flash-lite"),
    "openai": ("OPENAI", "OPENAI_API_KEY", "gpt-4o-mini"),
    "cohere": ("COHERE", "COHERE_API_KEY", "command-a-03-2025"),
}


def paste_lines(sim: Simulator, keys: Sequence[SimKey]) -> str:
    """What to paste to point one's own code at ``sim``: per vendor (its first
    key), the environment variables ``from_env()`` reads and a ``router.toml``
    snippet for ``from_config()``."""
    first: dict[Vendor, SimKey] = {}
    for key in keys:
        first.setdefault(key.vendor, key)
    urls: dict[Vendor, str] = {
        "groq": sim.groq_base_url,
        "gemini": sim.gemini_base_url,
        "openai": sim.openai_base_url,
        "cohere": sim.cohere_base_url,
    }
    env = ["# Paste into your shell or a .env file (QuotaRoutedChatModel.from_env()):"]
    toml = ["# Or into router.toml (QuotaRoutedChatModel.from_config('router.toml')):"]
    for vendor, key in first.items():
        prefix, variable, model = _PASTE[vendor]
        env.append(f"{variable}={key.key}")
        env.append(f"{prefix}_BASE_URL={urls[vendor]}")
        toml += [
            "[[routes]]",
            f'model = "{vendor}:{model}"',
            f'api_key_env = "{variable}"',
            f'base_url = "{urls[vendor]}"',
            "",
        ]
    return "\n".join([*env, "", *toml]).rstrip() + "\n"


_MODEL_FIELDS = {f.name for f in dataclasses.fields(SimModel)}


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        msg = f"{path}: cannot read simulator config: {exc}"
        raise ValueError(msg) from exc


def load_models(path: Path) -> dict[Vendor, list[str | SimModel]] | None:
    """Read the optional ``"models"`` table of a JSON config file.

    It maps a vendor to its models, each a name or an object with ``SimModel``'s
    fields: ``{"models": {"groq": ["openai/gpt-oss-120b", {"id":
    "llama-3.3-70b-versatile", "retired": true, "successor":
    "openai/gpt-oss-120b"}]}}``. Vendors left out serve every model name.

    Args:
        path: the JSON file.

    Returns:
        The models per vendor, or ``None`` when the file has no ``"models"``.

    Raises:
        ValueError: the table is malformed (the message names the file).
    """
    document = _read(path)
    table = document.get("models") if isinstance(document, dict) else None
    if table is None:
        return None
    if not isinstance(table, dict):
        msg = f'{path}: "models" must be an object of vendor: [models]'
        raise ValueError(msg)
    models: dict[Vendor, list[str | SimModel]] = {}
    for vendor, entries in table.items():
        if vendor not in VENDORS or not isinstance(entries, list):
            msg = f'{path}: "models" keys must be among {VENDORS}, each with a list'
            raise ValueError(msg)
        parsed: list[str | SimModel] = []
        for entry in entries:
            if isinstance(entry, str):
                parsed.append(entry)
                continue
            if not isinstance(entry, dict) or not _MODEL_FIELDS.issuperset(entry):
                fields = sorted(_MODEL_FIELDS)
                msg = f"{path}: {vendor} model {entry!r}: expected a name or fields {fields}"
                raise ValueError(msg)
            try:
                parsed.append(SimModel(**entry))
            except (TypeError, ValueError) as exc:
                msg = f"{path}: {vendor} model {entry!r}: {exc}"
                raise ValueError(msg) from exc
        models[vendor] = parsed
    return models


def load_keys(path: Path) -> list[SimKey]:
    """Read keys from a JSON config file.

    The file holds ``{"keys": [{"key": "...", "vendor": "groq", "rpm": 30,
    "rpd": 1000, "tpm": 12000, "tpd": 100000}, ...]}``; limits are optional
    (and so is a ``"models"`` table: see ``load_models``).

    Args:
        path: the JSON file.

    Returns:
        The keys, in file order.

    Raises:
        ValueError: the file is not such a document (the message names the file).
    """
    document = _read(path)
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        msg = f'{path}: expected an object with a "keys" list'
        raise ValueError(msg)
    keys: list[SimKey] = []
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not _KEY_FIELDS.issuperset(entry):
            fields = sorted(_KEY_FIELDS)
            msg = f"{path}: key #{number} must be an object with fields {fields}"
            raise ValueError(msg)
        try:
            keys.append(SimKey(**entry))
        except (TypeError, ValueError) as exc:
            msg = f"{path}: key #{number}: {exc}"
            raise ValueError(msg) from exc
    return keys


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the simulator until SIGINT/SIGTERM; print its URL as the first line.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit code: 0 after a clean stop, 2 on a bad config.
    """
    parser = argparse.ArgumentParser(
        prog="python -m langchain_quota_router.simulator",
        description="Local simulator of the OpenAI, Groq, Gemini and Cohere chat APIs.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--port", type=int, default=0, help="port (0: pick a free one)")
    parser.add_argument(
        "--config",
        type=Path,
        help='JSON file: {"keys": [{"key": "k1", "vendor": "groq", "rpm": 30, "rpd": 1000, '
        '"tpm": 8000, "tpd": 200000}], "models": {"groq": ["openai/gpt-oss-120b", {"id": '
        '"llama-3.3-70b-versatile", "retired": true}]}}; without keys, one sandbox key '
        "per vendor is served",
    )
    args = parser.parse_args(argv)
    try:
        keys = load_keys(args.config) if args.config else []
        keys = keys or list(SANDBOX_KEYS)
        models = load_models(args.config) if args.config else None
        sim = Simulator(keys, models=models, host=args.host, port=args.port)
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        # Signal handlers can only be installed from the main thread.
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    with sim:
        sys.stdout.write(f"{sim.url}\n\n{paste_lines(sim, keys)}")
        sys.stdout.flush()
        aliases = ", ".join(f"{k.vendor}:{k.alias}" for k in keys) or "none"
        sys.stderr.write(f"simulator serving keys: {aliases}\n")
        sys.stderr.flush()
        while not stop.wait(0.5):
            pass
    return 0
