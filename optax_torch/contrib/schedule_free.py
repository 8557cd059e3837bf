"""Schedule-free optimizers: schedule_free wrapper, schedule_free_sgd, schedule_free_adamw."""

from __future__ import annotations

__all__: list[str] = []
