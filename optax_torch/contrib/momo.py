"""MoMo and MoMo-Adam: model-based momentum with Polyak-type adaptive step size."""

from __future__ import annotations

__all__: list[str] = []
