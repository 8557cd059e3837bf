"""Quasi-Newton optimizers: L-BFGS."""

from __future__ import annotations

__all__: list[str] = []
