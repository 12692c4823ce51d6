"""What the router must know about each vendor class: now :mod:`.kinds`, by these names.

A vendor's adapter *is* its kind (:class:`~langchain_quota_router.vendors.kinds.VendorKind`):
the object that builds the class from the catalog also prepares a user's model, shapes
tools and messages and names the rate-limit header family. This module keeps the names
the rest of the package imports.
"""

from __future__ import annotations

from langchain_quota_router.vendors.kinds import VendorKind, kind_for, take_captured_headers

__all__ = ["VendorAdapter", "adapter_for", "take_captured_headers"]

#: The adapter of a route's model: its vendor kind.
VendorAdapter = VendorKind

#: The adapter for a model object: :func:`~langchain_quota_router.vendors.kinds.kind_for`.
adapter_for = kind_for
