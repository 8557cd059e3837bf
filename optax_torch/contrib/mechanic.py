"""Mechanic: learning-rate tuner wrapping any base optimizer (mechanize)."""

from __future__ import annotations

__all__: list[str] = []
