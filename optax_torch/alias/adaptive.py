"""Adaptive-moment optimizers beyond Adam: AdaBelief, Adadelta, Adafactor, Adamax(W), Adan, Lion, NovoGrad, RAdam, SM3, Yogi."""

from __future__ import annotations

__all__: list[str] = []
