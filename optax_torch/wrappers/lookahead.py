"""Lookahead: slow and fast weights."""

from __future__ import annotations

__all__: list[str] = []
