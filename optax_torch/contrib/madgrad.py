"""MADGRAD: momentumized, adaptive, dual-averaged gradient."""

from __future__ import annotations

__all__: list[str] = []
