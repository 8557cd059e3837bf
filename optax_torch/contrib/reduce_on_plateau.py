"""reduce_on_plateau: scale updates down when a monitored value stops improving."""

from __future__ import annotations

__all__: list[str] = []
