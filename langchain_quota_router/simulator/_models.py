"""Which models the simulator serves per vendor, which are retired, and how."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from ._types import VENDORS, RetireStyle, SimModel, Vendor

# Served and listed while no models are configured for a vendor. In that mode
# every other name is served too (the simulator's behaviour before models could
# be configured), so these only fill the list-models answers. They include the
# names the test suites use. The limits are plausible figures for the listing,
# not vendor facts: the catalog keeps those.
DEFAULT_MODELS: dict[Vendor, tuple[SimModel, ...]] = {
    "openai": (
        SimModel("gpt-4o-mini", 128_000, 16_384),
        SimModel("gpt-4.1-mini", 1_047_576, 32_768),
        SimModel("gpt-4.1-nano", 1_047_576, 32_768),
    ),
    "groq": (
        SimModel("openai/gpt-oss-120b", 131_072, 65_536),
        SimModel("openai/gpt-oss-20b", 131_072, 65_536),
        SimModel("qwen/qwen3.6-27b", 131_072, 40_960),
        SimModel("llama-3.3-70b-versatile", 131_072, 32_768),
    ),
    "gemini": (
        SimModel("gemini-3.5-flash", 1_048_576, 65_536, "Gemini 3.5 Flash"),
        SimModel("gemini-3.5-flash-lite", 1_048_576, 65_536, "Gemini 3.5 Flash-Lite"),
        SimModel("gemini-2.5-flash", 1_048_576, 65_536, "Gemini 2.5 Flash"),
    ),
    "cohere": (
        SimModel("command-a-03-2025", 256_000, 8_000),
        SimModel("command-r-08-2024", 128_000, 4_000),
        SimModel("command-r", 128_000, 4_000),
    ),
}

# What each vendor answered for a model it had shut down: Groq first said
# "decommissioned" (400); the others answer as for a name they never had.
DEFAULT_STYLE: dict[Vendor, RetireStyle] = {
    "openai": "not_found",
    "groq": "decommissioned",
    "gemini": "not_found",
    "cohere": "not_found",
}


def model_id(vendor: Vendor, name: str) -> str:
    """Normalise a model name as the vendor's wire carries it.

    Gemini's resource name is ``models/<id>``; the chat path and our tables use
    the bare id.
    """
    if vendor == "gemini" and name.startswith("models/"):
        return name[len("models/") :]
    return name


def check_style(vendor: Vendor, style: RetireStyle | None) -> None:
    """Refuse a retirement style the vendor never answers with.

    Raises:
        ValueError: ``style`` is ``"decommissioned"`` for a vendor other than Groq.
    """
    if style == "decommissioned" and vendor != "groq":
        msg = f"only Groq answers 'decommissioned'; {vendor} cannot (use 'not_found' or 'gone')"
        raise ValueError(msg)


def style_of(vendor: Vendor, model: SimModel) -> RetireStyle:
    """The style a retired ``model`` is refused with on ``vendor``'s wire."""
    return model.retired_style or DEFAULT_STYLE[vendor]


class ModelTable:
    """The models of every vendor: configured ones, defaults, and retirements.

    A vendor with configured models serves exactly those (other names get the
    vendor's 404); a vendor without serves every name and lists
    ``DEFAULT_MODELS``. Retirements made with ``retire`` sit on top of either
    and are dropped by ``forget_retirements``. Not thread-safe: the simulator
    calls it under its lock.
    """

    def __init__(self, models: Mapping[Vendor, Iterable[str | SimModel]] | None = None) -> None:
        self._configured: dict[Vendor, dict[str, SimModel]] = {}
        self._retired: dict[tuple[Vendor, str], SimModel] = {}
        for vendor, entries in (models or {}).items():
            self.configure(vendor, entries)

    def configure(self, vendor: Vendor, models: Iterable[str | SimModel] | None) -> None:
        """Serve exactly ``models`` on ``vendor``'s wire (``None``: every name).

        Raises:
            ValueError: unknown vendor, or a style the vendor never answers with.
        """
        if vendor not in VENDORS:
            msg = f"vendor must be one of {VENDORS}, got {vendor!r}"
            raise ValueError(msg)
        if models is None:
            self._configured.pop(vendor, None)
            return
        table: dict[str, SimModel] = {}
        for entry in models:
            model = SimModel(entry) if isinstance(entry, str) else entry
            check_style(vendor, model.retired_style)
            model = dataclasses.replace(model, id=model_id(vendor, model.id))
            table[model.id] = model
        self._configured[vendor] = table

    def retire(
        self,
        vendor: Vendor,
        name: str,
        successor: str | None,
        style: RetireStyle | None,
    ) -> None:
        """Retire ``name`` on ``vendor``'s wire, configured or not."""
        check_style(vendor, style)
        name = model_id(vendor, name)
        base = self.lookup_configured(vendor, name) or SimModel(name)
        self._retired[(vendor, name)] = dataclasses.replace(
            base,
            retired=True,
            successor=successor if successor is not None else base.successor,
            retired_style=style if style is not None else base.retired_style,
        )

    def forget_retirements(self) -> None:
        """Undo every ``retire`` (retirements configured in ``SimModel`` stay)."""
        self._retired.clear()

    def lookup_configured(self, vendor: Vendor, name: str) -> SimModel | None:
        """The configured or default entry for ``name``, ignoring ``retire``."""
        table = self._configured.get(vendor)
        if table is not None:
            return table.get(name)
        return next((m for m in DEFAULT_MODELS[vendor] if m.id == name), None)

    def lookup(self, vendor: Vendor, name: str) -> SimModel | None:
        """The model a request for ``name`` reaches; ``None`` if not served at all.

        Check ``.retired`` on the answer: a retired model is known but refused.
        """
        name = model_id(vendor, name)
        retired = self._retired.get((vendor, name))
        if retired is not None:
            return retired
        found = self.lookup_configured(vendor, name)
        if found is None and vendor not in self._configured:
            return SimModel(name)  # no models configured: every name is served
        return found

    def listed(self, vendor: Vendor) -> list[SimModel]:
        """The models list-models answers with: served, not retired, in order."""
        table = self._configured.get(vendor)
        models = list(table.values()) if table is not None else list(DEFAULT_MODELS[vendor])
        return [m for m in models if not m.retired and (vendor, m.id) not in self._retired]
