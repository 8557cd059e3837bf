"""apply_if_finite: skip updates with non-finite values, up to a number of consecutive failures."""

from __future__ import annotations

__all__: list[str] = []
