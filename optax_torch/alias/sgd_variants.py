"""SGD variants: sign-based (signSGD, Signum, Rprop), optimistic, Polyak step size, noisy SGD."""

from __future__ import annotations

__all__: list[str] = []
