"""L-BFGS's scaling by the inverse-Hessian approximation (two-loop recursion)."""

from __future__ import annotations

__all__: list[str] = []
