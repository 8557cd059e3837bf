"""Muon: momentum orthogonalized by Newton-Schulz iterations."""

from __future__ import annotations

__all__: list[str] = []
