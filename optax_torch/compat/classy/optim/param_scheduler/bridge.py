r"""Between param schedulers (functions of the progress ``where``) and optax_torch schedules
(functions of the step count).

Classy Vision's task evaluates a step-interval scheduler before optimizer step :math:`t`
(0-based) of :math:`T` at ``where`` :math:`= t / T`, and an epoch-interval one at the start of
each epoch (``where`` :math:`= e \cdot S / T` for epoch :math:`e` of :math:`S` steps), holding
its value through the epoch. :func:`as_schedule` turns a param scheduler into the schedule
``count -> value`` with these values (``where`` computed as the same float64 division, so values
are Classy's bit for bit up to the scheduler's own ``cos`` / ``pow``); :func:`from_schedule`
turns a schedule back into a param scheduler.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from optax_torch import _validate
from optax_torch.base import Schedule
from optax_torch.compat.classy.optim.param_scheduler._base import (
    ClassyParamScheduler,
    ParamScheduler,
    UpdateInterval,
    _as_value,
    _float_count,
    _is_tensor,
)
from optax_torch.schedules._join import _as_count

__all__ = ["as_schedule", "from_schedule"]

# Tolerance (in steps) when ``where * total_steps`` should be a whole step count: ``t / T * T``
# may come out a rounding error below ``t``.
_STEP_TOLERANCE = 1e-6


def as_schedule(
    param_scheduler: ParamScheduler,
    total_steps: int,
    *,
    steps_per_epoch: int | None = None,
) -> Schedule:
    r"""An optax_torch schedule of the step count from a param scheduler of ``where``.

    .. math::
      v(t) = \mathrm{sched}\left(\frac{\min(\max(t, 0), T - 1)}{T}\right)

    and, with ``steps_per_epoch`` :math:`S` and a scheduler whose ``update_interval`` is
    ``UpdateInterval.EPOCH``, :math:`t` first rounded down to its epoch's start
    :math:`\lfloor t / S \rfloor S` (Classy updates such schedulers in ``on_epoch`` only). The
    count is clamped to the training: past the end, the schedule holds the value of the last
    step (Classy never evaluates ``where >= 1``).

    The schedule is traceable (``torch.compile``, ``vmap``) when the scheduler accepts tensors
    (all of this package's do).

    Args:
      param_scheduler: a :class:`ParamScheduler` (any callable of ``where``).
      total_steps: :math:`T`, the number of optimizer steps of the training (int >= 1).
      steps_per_epoch: :math:`S` (int >= 1), or None (default) to evaluate every scheduler at
        every step.

    Returns:
      A schedule: ``count -> value`` (float64 tensor shaped like ``count``).

    Example:
      >>> from optax_torch.compat.classy.optim.param_scheduler import (
      ...     LinearParamScheduler, as_schedule)
      >>> schedule = as_schedule(LinearParamScheduler(0.0, 1.0), total_steps=10)
      >>> schedule(5)
      tensor(0.5000, dtype=torch.float64)
    """
    _validate.check_positive_int("total_steps", total_steps)
    if steps_per_epoch is not None:
        _validate.check_positive_int("steps_per_epoch", steps_per_epoch)
    epoch = 0
    if getattr(param_scheduler, "update_interval", None) == UpdateInterval.EPOCH:
        epoch = steps_per_epoch or 0

    def schedule(count: Any) -> torch.Tensor:
        count = torch.clamp(_as_count(count), 0, total_steps - 1)
        if epoch:
            count = torch.div(count, epoch, rounding_mode="floor") * epoch
        where = _float_count(count) / total_steps
        return _as_value(param_scheduler(where), where)

    return schedule


class ScheduleParamScheduler(ClassyParamScheduler):
    r"""A param scheduler of ``where`` from a schedule of the step count (:func:`from_schedule`).

    :math:`v(w) = \mathrm{schedule}(\lfloor w T + 10^{-6} \rfloor)` (the steps completed at
    ``where`` :math:`w` of :math:`T` steps, tolerating rounding in :math:`w`). A Python ``where``
    gives a Python float; a tensor ``where``, a float64 tensor shaped like it. Its
    ``update_interval`` is ``UpdateInterval.STEP``.
    """

    update_interval = UpdateInterval.STEP

    def __init__(self, schedule: Schedule, total_steps: int) -> None:
        _validate.check_positive_int("total_steps", total_steps)
        self.schedule = schedule
        self.total_steps = total_steps

    def __call__(self, where: Any) -> Any:
        if _is_tensor(where):
            w = _float_count(where)
            count = torch.floor(w * self.total_steps + _STEP_TOLERANCE).to(torch.int64)
            return _as_value(self.schedule(count), w)
        count = math.floor(where * self.total_steps + _STEP_TOLERANCE)
        return float(self.schedule(torch.tensor(count, dtype=torch.int64)))


def from_schedule(schedule: Schedule, total_steps: int) -> ScheduleParamScheduler:
    r"""A param scheduler of ``where`` from an optax_torch schedule of the step count.

    The inverse of :func:`as_schedule` on the steps of the training:
    ``from_schedule(s, T)(t / T) == s(t)`` and ``as_schedule(from_schedule(s, T), T)(t) == s(t)``
    for ``0 <= t < T``. A ``where`` between steps gives the value of the step in progress
    (:math:`\lfloor w T \rfloor`).

    Args:
      schedule: a schedule (``count -> value``), e.g. from :mod:`optax_torch.schedules`.
      total_steps: :math:`T`, the number of optimizer steps of the training (int >= 1).

    Returns:
      A :class:`ScheduleParamScheduler` (a step-interval Classy param scheduler).

    Example:
      >>> from optax_torch.schedules import linear_schedule
      >>> from optax_torch.compat.classy.optim.param_scheduler import from_schedule
      >>> from_schedule(linear_schedule(1.0, 0.0, 10), total_steps=10)(0.5)
      0.5
    """
    return ScheduleParamScheduler(schedule, total_steps)
