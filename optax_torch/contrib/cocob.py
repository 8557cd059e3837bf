"""COCOB-Backprop: learning-rate-free optimization by coin betting."""

from __future__ import annotations

__all__: list[str] = []
