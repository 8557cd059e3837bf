"""Selective transformations: freeze, selective_transform."""

from __future__ import annotations

__all__: list[str] = []
