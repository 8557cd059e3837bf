"""Normalisations: centralisation, update-norm and block normalisation, trust ratio, unit-wise norms."""

from __future__ import annotations

__all__: list[str] = []
