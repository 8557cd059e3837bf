"""Hyperparameter validation at construction time (``ValueError`` naming the argument and value).

Constructors call these on the arguments they receive. Only plain Python numbers are checked:
tensors (e.g. the 0-d hyperparameters :func:`optax_torch.inject_hyperparams` passes, which may be
traced) and schedules (callables) pass through, as do ``None`` values (for optional arguments).

Each check returns its value, so a constructor can write ``eps = check_non_negative("eps", eps)``.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "check_decay",
    "check_finite",
    "check_in_range",
    "check_non_negative",
    "check_positive",
    "check_positive_int",
]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fail(name: str, value: Any, what: str) -> None:
    raise ValueError(f"{name} must be {what}, got {name}={value!r}")


def check_finite(name: str, value: Any) -> Any:
    """A number that is not NaN or infinite (e.g. a learning rate, which may be negative)."""
    if _is_number(value) and not math.isfinite(value):
        _fail(name, value, "finite")
    return value


def check_non_negative(name: str, value: Any) -> Any:
    """A finite number ``>= 0`` (e.g. ``eps``, a weight decay, a clipping threshold)."""
    if _is_number(value) and not (math.isfinite(value) and value >= 0):
        _fail(name, value, "a finite number >= 0")
    return value


def check_positive(name: str, value: Any) -> Any:
    """A finite number ``> 0``."""
    if _is_number(value) and not (math.isfinite(value) and value > 0):
        _fail(name, value, "a finite number > 0")
    return value


def check_decay(name: str, value: Any, *, allow_one: bool = False) -> Any:
    """A decay rate in ``[0, 1)`` (``[0, 1]`` with ``allow_one``), e.g. Adam's ``b1``/``b2``."""
    if _is_number(value):
        ok = 0 <= value <= 1 if allow_one else 0 <= value < 1
        if not ok:
            _fail(name, value, "in [0, 1]" if allow_one else "in [0, 1)")
    return value


def check_in_range(
    name: str,
    value: Any,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Any:
    """A number in the interval from ``low`` to ``high`` (closed unless ``*_open``)."""
    if _is_number(value):
        ok_low = value > low if low_open else value >= low
        ok_high = value < high if high_open else value <= high
        if not (ok_low and ok_high):
            interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
            _fail(name, value, f"in {interval}")
    return value


def check_positive_int(name: str, value: Any) -> Any:
    """An ``int >= 1`` (e.g. ``every_k_schedule``, a history size, a period)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        if callable(value) or value is None:
            return value
        _fail(name, value, "an integer >= 1")
    return value
