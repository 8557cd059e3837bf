"""Prodigy: an expeditiously adaptive, parameter-free learner."""

from __future__ import annotations

__all__: list[str] = []
