"""GaLore: gradient low-rank projection for memory-efficient training."""

from __future__ import annotations

__all__: list[str] = []
