"""Adaptive scalings beyond Adam: Adadelta, Adamax, Adan, AdaBelief, Yogi, RAdam, NovoGrad, Lion, SM3."""

from __future__ import annotations

__all__: list[str] = []
