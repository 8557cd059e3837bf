"""Step-size rules: distance over gradients (DoG), Polyak, optimistic gradient."""

from __future__ import annotations

__all__: list[str] = []
