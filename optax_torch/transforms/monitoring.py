"""Monitoring: snapshot, monitor, measure_with_ema."""

from __future__ import annotations

__all__: list[str] = []
