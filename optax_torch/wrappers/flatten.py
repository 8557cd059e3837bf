"""flatten: run a transformation on one flat vector of all parameters."""

from __future__ import annotations

__all__: list[str] = []
