"""D-Adaptation AdamW: learning-rate-free Adam by distance estimation."""

from __future__ import annotations

__all__: list[str] = []
