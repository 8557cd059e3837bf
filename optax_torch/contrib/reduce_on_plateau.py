"""Reduce the learning rate when a monitored value stops improving."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from optax_torch import _validate, numerics, tree
from optax_torch.base import GradientTransformationExtraArgs
from optax_torch.contrib._dtypes import scalar_dtype

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
    *,
    mode: str = "min",
    threshold: float | None = None,
    threshold_mode: str = "rel",
    eps: Num = 0.0,
) -> GradientTransformationExtraArgs:
    r"""Scales the updates down when a monitored value (a loss) stops improving.

    ``update`` takes the value as the keyword argument ``value``. Values are averaged over
    ``accumulation_size`` calls; then the average :math:`\bar v` counts as an improvement if

    .. math::
        \bar v < (1 - \text{rtol})\, v_{best} - \text{atol}
        \quad (\text{or, with } \texttt{mode="max"}:
        \bar v > (1 + \text{rtol})\, v_{best} + \text{atol}),

    and after ``patience`` averages without improvement the scale is multiplied by ``factor``
    (not below ``min_scale``; a decrease of at most ``eps`` is skipped), after which ``cooldown``
    averages pass without counting. The updates are multiplied by the current scale. Traceable
    (no branching on values).

    **torch's** ``ReduceLROnPlateau``: with ``lr`` the group's learning rate when the scheduler
    starts, ``ReduceLROnPlateau(opt, mode, factor, patience=p, threshold, threshold_mode,
    cooldown, min_lr, eps)`` sets the learning rates ``lr * scale`` of::

        reduce_on_plateau(factor, patience=p + 1, cooldown=cooldown, min_scale=min_lr / lr,
                          mode=mode, threshold=threshold, threshold_mode=threshold_mode,
                          eps=eps / lr)

    fed the same values (torch reduces once ``patience`` is *exceeded*; here once it is
    reached, optax's convention). Values are compared in the params' highest dtype (torch: Python
    doubles). One difference remains: with ``min_scale`` above the current scale, the scale is
    raised to ``min_scale`` (optax), where torch leaves a learning rate below ``min_lr`` alone.

    Args:
      factor: factor by which the scale is reduced, in (0, 1), default 0.1.
      patience: number of averages without improvement before reducing, default 10.
      rtol: relative tolerance for measuring a new optimum, in [0, 1], default 1e-4.
      atol: absolute tolerance for measuring a new optimum, default 0.
      cooldown: number of averages to wait after a reduction, default 0.
      accumulation_size: number of values averaged before the logic is applied, default 1
        (use more when the value is a minibatch loss).
      min_scale: the scale is not reduced below this, default 0.
      mode: ``"min"`` (default: the value should decrease) or ``"max"`` (should increase; the
        best value starts at :math:`-\infty`). torch's ``mode``.
      threshold: torch's form of the tolerance, default ``None`` (use ``rtol`` and ``atol``,
        which must then keep their defaults when ``threshold`` is given): ``threshold_mode="rel"``
        means ``rtol=threshold, atol=0``, ``"abs"`` means ``rtol=0, atol=threshold``;
        ``threshold=0`` (any strict improvement) is allowed.
      threshold_mode: ``"rel"`` (default) or ``"abs"``, see ``threshold``.
      eps: a reduction that would lower the scale by ``eps`` or less is skipped (the patience and
        cooldown counters still reset), default 0. torch's ``eps`` divided by the learning rate.

    Example::

        >>> tx = otx.chain(otx.adam(1e-3), otx.contrib.reduce_on_plateau(patience=5))
        >>> updates, state = tx.update(grads, state, params, value=loss)
        >>> # torch's ReduceLROnPlateau(opt, "max", patience=2, threshold=0.01,
        >>> #                           threshold_mode="abs") on accuracy:
        >>> tx = otx.chain(otx.adam(1e-3), otx.contrib.reduce_on_plateau(
        ...     patience=3, mode="max", threshold=0.01, threshold_mode="abs"))
    """
    _validate.check_in_range("factor", factor, 0.0, 1.0, low_open=True, high_open=True)
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got mode={mode!r}")
    if threshold_mode not in ("rel", "abs"):
        raise ValueError(
            f"threshold_mode must be 'rel' or 'abs', got threshold_mode={threshold_mode!r}"
        )
    if threshold is not None:
        if (
            isinstance(rtol, torch.Tensor)
            or isinstance(atol, torch.Tensor)
            or rtol != 1e-4
            or atol != 0.0
        ):
            raise ValueError(
                f"Give either threshold (torch's form, got threshold={threshold}) or rtol and "
                f"atol (got rtol={rtol}, atol={atol}), not both."
            )
        _validate.check_non_negative("threshold", threshold)
        rtol, atol = (threshold, 0.0) if threshold_mode == "rel" else (0.0, threshold)
    else:
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
    _validate.check_non_negative("eps", eps)
    maximize = mode == "max"
    skips_small = isinstance(eps, torch.Tensor) or eps != 0.0

    def init_fn(params):
        lowest = scalar_dtype(params, "lowest")
        highest = scalar_dtype(params, "highest")
        zero = numerics.zero_count()
        return ReduceLROnPlateauState(
            scale=torch.ones((), dtype=lowest),
            best_value=torch.full((), -math.inf if maximize else math.inf, dtype=highest),
            plateau_count=zero,
            cooldown_count=zero.clone(),
            count=zero.clone(),
            avg_value=torch.zeros((), dtype=highest),
        )

    def update_scale(state: ReduceLROnPlateauState) -> ReduceLROnPlateauState:
        avg = state.avg_value
        if maximize:
            improved = avg > (1 + rtol) * state.best_value + atol
        else:
            improved = avg < (1 - rtol) * state.best_value - atol
        best = torch.where(improved, avg.to(state.best_value.dtype), state.best_value)
        zero = torch.zeros_like(state.plateau_count)
        plateau = torch.where(improved, zero, numerics.safe_increment(state.plateau_count))
        reduce = plateau == patience
        in_cooldown = state.cooldown_count > 0
        scale = torch.maximum(
            torch.where(reduce, state.scale * factor, state.scale), _as(min_scale, state.scale)
        )
        if skips_small:  # torch's eps: a decrease of at most eps is not applied
            small = (scale < state.scale) & (state.scale - scale <= _as(eps, state.scale))
            scale = torch.where(reduce & small, state.scale, scale)
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
