"""Linear algebra helpers: power_iteration, matrix_inverse_pth_root, global_norm."""

from __future__ import annotations

__all__: list[str] = []
