"""Optimizers with adaptive or optimistic step sizes: Polyak SGD, optimistic gradient descent and Adam."""

from __future__ import annotations

__all__: list[str] = []
