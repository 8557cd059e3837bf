"""DoG and DoWG: distance-over-gradients step sizes (learning-rate free)."""

from __future__ import annotations

__all__: list[str] = []
