"""Factored second-moment estimation (Adafactor)."""

from __future__ import annotations

__all__: list[str] = []
