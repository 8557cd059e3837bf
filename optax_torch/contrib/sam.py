"""SAM: sharpness-aware minimization, and gradient normalisation."""

from __future__ import annotations

__all__: list[str] = []
