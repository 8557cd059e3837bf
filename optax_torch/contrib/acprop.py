"""ACProp: AdaBelief's centred second moment with asynchronous (decoupled) update."""

from __future__ import annotations

__all__: list[str] = []
