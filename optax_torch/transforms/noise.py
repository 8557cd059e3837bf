"""Gradient noise: add_noise (annealed Gaussian noise), with its generator state in the optimizer state."""

from __future__ import annotations

__all__: list[str] = []
