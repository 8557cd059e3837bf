"""Constraints: keep_params_nonnegative, zero_nans."""

from __future__ import annotations

__all__: list[str] = []
