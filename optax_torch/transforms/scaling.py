"""Scaling by a constant, a learning rate, or a schedule."""

from __future__ import annotations

from typing import NamedTuple

import torch

from optax_torch import _validate, numerics, tree
from optax_torch.base import (
    EmptyState,
    GradientTransformation,
    ScalarOrSchedule,
    Schedule,
    _mark_scales_by_number,
    consumes_updates,
    donation_safe,
    elementwise,
    leafwise,
)

__all__ = [
    "ScaleByScheduleState",
    "ScaleState",
    "scale",
    "scale_by_inverse_time_decay",
    "scale_by_learning_rate",
    "scale_by_schedule",
]

ScaleState = EmptyState


class ScaleByScheduleState(NamedTuple):
    """State of :func:`scale_by_schedule`: the number of steps taken so far."""

    count: torch.Tensor  # 0-d int32


def scale(step_size: float | torch.Tensor) -> GradientTransformation:
    """Scales updates by a fixed ``step_size``: ``u <- step_size * u``.

    Example::

        >>> tx = otx.chain(otx.scale_by_adam(), otx.scale(-1e-3))
    """

    _validate.check_finite("step_size", step_size)

    def init_fn(params):
        del params
        return ScaleState()

    @elementwise
    @leafwise
    @consumes_updates
    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        return tree.scale(step_size, updates), state

    if isinstance(step_size, int | float) and not isinstance(step_size, bool):
        _mark_scales_by_number(update_fn)
    return GradientTransformation(init_fn, update_fn)


def scale_by_schedule(step_size_fn: Schedule) -> GradientTransformation:
    """Scales updates by ``step_size_fn(count)``, ``count`` being the number of previous updates.

    Example::

        >>> tx = otx.scale_by_schedule(otx.linear_schedule(1.0, 0.1, 100))
    """
    if isinstance(step_size_fn, int | float):  # tensors: injected values (inject_hyperparams)
        raise TypeError(
            f"scale_by_schedule: step_size_fn must be a schedule (a function of the step count), "
            f"got step_size_fn={step_size_fn!r}; use scale({step_size_fn!r}) for a constant"
        )

    def init_fn(params):
        del params
        return ScaleByScheduleState(count=numerics.zero_count())

    @elementwise
    @leafwise
    @consumes_updates
    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        step_size = step_size_fn(state.count)
        updates = tree.scale(step_size, updates)
        return updates, ScaleByScheduleState(count=numerics.safe_increment(state.count))

    return GradientTransformation(init_fn, update_fn)


def scale_by_learning_rate(
    learning_rate: ScalarOrSchedule, *, flip_sign: bool = True
) -> GradientTransformation:
    """Scales updates by ``-learning_rate`` (``+learning_rate`` if ``flip_sign=False``).

    ``learning_rate`` is a number, a 0-d tensor, or a schedule ``count -> value``. The last link of
    most optimizers: updates are *added* to parameters, so descent needs the minus sign.
    """
    _validate.check_finite("learning_rate", learning_rate)
    m = -1 if flip_sign else 1
    if callable(learning_rate):
        lr_fn = learning_rate
        return scale_by_schedule(lambda count: m * lr_fn(count))
    return scale(m * learning_rate)


def scale_by_inverse_time_decay(decay_rate: float | torch.Tensor) -> GradientTransformation:
    r"""Scales updates by an inverse-time decay of the step count.

    .. math::
        u_k \leftarrow \frac{u_k}{1 + \eta\,(k - 1)}

    with :math:`k` the 1-based step and :math:`\eta` = ``decay_rate``: the first update is left
    unchanged. This is ``torch.optim.Adagrad``'s ``lr_decay`` (``clr = lr / (1 + (step - 1) *
    lr_decay)``). It is :func:`scale_by_schedule` with the schedule ``count -> 1 / (1 +
    decay_rate * count)``, so its state is a :class:`ScaleByScheduleState` whose ``count`` is the
    number of updates taken (torch's ``step``).

    Args:
      decay_rate: :math:`\eta \ge 0` (``0``: no decay).

    Reference: the ``lr_decay`` of ``torch.optim.Adagrad`` (Duchi et al., 2011,
    https://jmlr.org/papers/v12/duchi11a.html, with a decaying step size).

    Example::

        >>> tx = otx.chain(
        ...     otx.scale_by_rss(0.0, 1e-10, eps_in_sqrt=False),
        ...     scale_by_inverse_time_decay(0.01),
        ...     otx.scale_by_learning_rate(1e-2),
        ... )
    """
    _validate.check_non_negative("decay_rate", decay_rate)

    def inverse_time_decay(count: torch.Tensor) -> torch.Tensor:
        d = decay_rate.to(torch.float64) if isinstance(decay_rate, torch.Tensor) else decay_rate
        return 1 / (1 + count.to(torch.float64) * d)

    return scale_by_schedule(inverse_time_decay)
