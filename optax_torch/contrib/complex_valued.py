"""split_real_and_imaginary: run a transformation on the real and imaginary parts separately."""

from __future__ import annotations

__all__: list[str] = []
