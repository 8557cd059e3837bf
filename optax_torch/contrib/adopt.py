"""ADOPT: Adam with the second moment of the previous step (converges for any beta2)."""

from __future__ import annotations

__all__: list[str] = []
