"""Joining schedules, and the conventions every schedule of this package follows.

A schedule is a pure function ``count -> value``:

* ``count`` is an integer step count: a 0-d integer tensor (``int32`` in optimizer states), a
  Python ``int``, or a batched tensor of counts (e.g. under :func:`torch.func.vmap`);
* the value is a **float64** tensor shaped like ``count``, on ``count``'s device (float32 on
  ``"mps"``, which has no float64). Float64 makes the values equal to the Python-double arithmetic
  of :mod:`torch.optim.lr_scheduler`; a 0-d tensor never promotes the float32 leaves it scales.

Schedules never branch in Python on tensor values, so the same function runs eagerly, under
``torch.compile(fullgraph=True)`` and under :func:`torch.func.vmap`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch

from optax_torch.base import Schedule

__all__ = ["join_schedules"]


def _scalar_dtype(device: torch.device) -> torch.dtype:
    """The dtype of schedule values on ``device``: float64, or float32 where float64 is missing."""
    return torch.float32 if device.type == "mps" else torch.float64


def _as_count(count: Any) -> torch.Tensor:
    """``count`` as a tensor (a Python ``int`` becomes a 0-d CPU tensor)."""
    return torch.as_tensor(count)


def _float_count(count: Any) -> torch.Tensor:
    """``count`` as a float64 tensor (exact for counts below 2**53) on its own device."""
    count = _as_count(count)
    return count.to(_scalar_dtype(count.device))


def _as_value(value: Any, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a schedule value: a float tensor shaped like ``like``, on its device."""
    dtype = _scalar_dtype(like.device)
    if isinstance(value, torch.Tensor):
        if value.dtype != dtype:
            value = value.to(dtype)
        if value.shape != like.shape:
            value = torch.zeros_like(like, dtype=dtype) + value
        return value
    return torch.full_like(like, value, dtype=dtype)


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    r"""Sequentially apply multiple schedules.

    The value at step :math:`t` is that of the schedule :math:`s_i` whose interval contains
    :math:`t`, evaluated at the number of steps since that interval began:

    .. math::
      \begin{cases}
        s_0(t), & \text{if } t < b_1 \\
        s_i(t - b_i), & \text{if } b_i \leq t < b_{i+1} \\
        s_n(t - b_n), & \text{if } t \geq b_n
      \end{cases}

    Args:
      schedules: A list of callables (expected to be schedules). Each schedule receives a step
        count indicating the number of steps since the previous boundary transition.
      boundaries: A list of integers (of length one less than ``schedules``) that indicate when to
        transition between schedules.

    Returns:
      schedule
        A function that maps step counts to values.

    Examples:
      >>> from optax_torch.schedules import constant_schedule, join_schedules
      >>> from optax_torch.schedules import linear_schedule
      >>> warmup = linear_schedule(0.0, 1.0, transition_steps=10)
      >>> schedule_fn = join_schedules([warmup, constant_schedule(1.0)], [10])
      >>> schedule_fn(5)
      tensor(0.5000, dtype=torch.float64)
      >>> schedule_fn(20)
      tensor(1., dtype=torch.float64)
    """
    schedules = list(schedules)
    boundaries = list(boundaries)
    if len(boundaries) != len(schedules) - 1:
        raise ValueError(
            f"join_schedules: {len(schedules)} schedules need {len(schedules) - 1} boundaries, "
            f"got boundaries={boundaries!r}"
        )
    for i, (a, b) in enumerate(itertools.pairwise(boundaries)):
        if not (isinstance(a, int | float) and isinstance(b, int | float)):
            continue  # tensors: not checked (they may be traced)
        if not a <= b:
            raise ValueError(
                f"join_schedules: boundaries must be in increasing order, got "
                f"boundaries[{i}]={a!r} > boundaries[{i + 1}]={b!r} (boundaries={boundaries!r})"
            )
    for i, b in enumerate(boundaries):
        if isinstance(b, float) and math.isnan(b):
            raise ValueError(f"join_schedules: boundaries[{i}] is {b!r}")

    def schedule(step):
        step = _as_count(step)
        output = _as_value(schedules[0](step), step)
        for boundary, next_schedule in zip(boundaries, schedules[1:]):
            later = _as_value(next_schedule(step - boundary), step)
            output = torch.where(step < boundary, output, later)
        return output

    return schedule
