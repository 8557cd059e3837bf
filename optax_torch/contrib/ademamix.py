"""AdEMAMix and its simplified form: a mix of a fast and a slow EMA of the gradients."""

from __future__ import annotations

__all__: list[str] = []
