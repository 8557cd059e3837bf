"""Reduce the learning rate when a monitored value stops improving."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from optax_torch import _validate, numerics, tree
from optax_torch.base import GradientTransformationExtraArgs
from optax_torch.contrib.schedule_free import _tree_dtype

__all__ = ["ReduceLROnPlateauState", "reduce_on_plateau"]

Num = float | int | torch.Tensor


class ReduceLROnPlateauState(NamedTuple):
    """State of :func:`reduce_on_plateau`."""

    scale: torch.Tensor  # 0-d, the params' lowest dtype
    best_value: torch.Tensor  # 0-d, the params' highest dtype
    plateau_count: torch.Tensor  # 0-d int32
    cooldown_count: torch.Tensor  # 0-d int32
    count: torch.Tensor  # 0-d int32
    avg_value: torch.Tensor  # 0-d, the params' highest dtype


def _as(x: Any, like: torch.Tensor) -> torch.Tensor:
    """``x`` as a tensor of ``like``'s dtype (Python numbers converted exactly)."""
    if isinstance(x, torch.Tensor):
        return x.to(like.dtype)
    return torch.tensor(x, dtype=like.dtype)


def reduce_on_plateau(
    factor: float = 0.1,
    patience: Num = 10,
    rtol: float = 1e-4,
    atol: float = 0.0,
    cooldown: Num = 0,
    accumulation_size: Num = 1,
    min_scale: Num = 0.0,
) -> GradientTransformationExtraArgs:
    r"""Scales the updates down when a monitored value (a loss) stops improving.

    ``update`` takes the value as the keyword argument ``value``. Values are averaged over
    ``accumulation_size`` calls; then the average :math:`\bar v` counts as an improvement if

    .. math::
        \bar v < (1 - \text{rtol})\, v_{best} - \text{atol},

    and after ``patience`` averages without improvement the scale is multiplied by ``factor``
    (not below ``min_scale``), after which ``cooldown`` averages pass without counting. The
    updates are multiplied by the current scale. Traceable (no branching on values).

    Args:
      factor: factor by which the scale is reduced, in (0, 1), default 0.1.
      patience: number of averages without improvement before reducing, default 10.
      rtol: relative tolerance for measuring a new optimum, in [0, 1], default 1e-4.
      atol: absolute tolerance for measuring a new optimum, default 0.
      cooldown: number of averages to wait after a reduction, default 0.
      accumulation_size: number of values averaged before the logic is applied, default 1
        (use more when the value is a minibatch loss).
      min_scale: the scale is not reduced below this, default 0.

    Example::

        >>> tx = otx.chain(otx.adam(1e-3), otx.contrib.reduce_on_plateau(patience=5))
        >>> updates, state = tx.update(grads, state, params, value=loss)
    """
    _validate.check_in_range("factor", factor, 0.0, 1.0, low_open=True, high_open=True)
    _validate.check_non_negative("rtol", rtol)
    _validate.check_non_negative("atol", atol)
    if not isinstance(rtol + atol, torch.Tensor) and rtol == 0.0 and atol == 0.0:
        raise ValueError(
            f"At least one of rtol or atol must be positive, got rtol={rtol} and atol={atol}."
        )
    _validate.check_in_range("rtol", rtol, 0.0, 1.0)
    _validate.check_non_negative("patience", patience)
    _validate.check_non_negative("cooldown", cooldown)
    if not isinstance(accumulation_size, torch.Tensor):
        _validate.check_positive_int("accumulation_size", accumulation_size)
    _validate.check_non_negative("min_scale", min_scale)

    def init_fn(params):
        lowest = _tree_dtype(params, "lowest")
        highest = _tree_dtype(params, "highest")
        zero = numerics.zero_count()
        return ReduceLROnPlateauState(
            scale=torch.ones((), dtype=lowest),
            best_value=torch.full((), float("inf"), dtype=highest),
            plateau_count=zero,
            cooldown_count=zero.clone(),
            count=zero.clone(),
            avg_value=torch.zeros((), dtype=highest),
        )

    def update_scale(state: ReduceLROnPlateauState) -> ReduceLROnPlateauState:
        avg = state.avg_value
        improved = avg < (1 - rtol) * state.best_value - atol
        best = torch.where(improved, avg.to(state.best_value.dtype), state.best_value)
        zero = torch.zeros_like(state.plateau_count)
        plateau = torch.where(improved, zero, numerics.safe_increment(state.plateau_count))
        reduce = plateau == patience
        in_cooldown = state.cooldown_count > 0
        scale = torch.maximum(
            torch.where(reduce, state.scale * factor, state.scale), _as(min_scale, state.scale)
        )
        cooldown_next = torch.where(reduce, _as(cooldown, zero), zero)
        return ReduceLROnPlateauState(
            scale=torch.where(in_cooldown, state.scale, scale),
            best_value=best,
            plateau_count=torch.where(in_cooldown | reduce, zero, plateau),
            cooldown_count=torch.where(in_cooldown, state.cooldown_count - 1, cooldown_next),
            count=zero,
            avg_value=torch.zeros_like(avg),
        )

    def update_fn(updates, state, params=None, *, value, **extra_args):
        del params, extra_args
        new_count = numerics.safe_increment(state.count)
        avg = (state.count * state.avg_value + _as(value, state.avg_value)) / new_count
        accumulated = state._replace(avg_value=avg.to(state.avg_value.dtype), count=new_count)
        updated = update_scale(accumulated)
        ready = new_count == accumulation_size
        new_state = ReduceLROnPlateauState(
            *(torch.where(ready, u, a) for u, a in zip(updated, accumulated))
        )
        return tree.scale(new_state.scale, updates), new_state

    return GradientTransformationExtraArgs(init_fn, update_fn)
