"""Sign-based scalings: sign, Rprop."""

from __future__ import annotations

__all__: list[str] = []
