"""Layer-wise normalised optimizers: LAMB, LARS, Fromage."""

from __future__ import annotations

__all__: list[str] = []
