"""Conditional transformations: skip updates, conditionally mask or transform, apply_if_finite."""

from __future__ import annotations

__all__: list[str] = []
