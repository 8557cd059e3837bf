"""apply_every: accumulate gradients and apply them every k steps."""

from __future__ import annotations

__all__: list[str] = []
