"""Differential privacy: per-example clipping and noise (DP-SGD)."""

from __future__ import annotations

__all__: list[str] = []
