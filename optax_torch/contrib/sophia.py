"""Sophia (second-order clipped stochastic optimization) and the Hutchinson Hessian-diagonal estimator."""

from __future__ import annotations

__all__: list[str] = []
