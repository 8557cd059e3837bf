"""Schedule-Free: interpolation and averaging instead of momentum and learning-rate decay."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from optax_torch import _validate, numerics, tree
from optax_torch import transforms as T
from optax_torch.alias import sgd
from optax_torch.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    OptState,
    Params,
    ScalarOrSchedule,
    with_extra_args_support,
)
from optax_torch.combine import chain
from optax_torch.contrib._dtypes import scalar_dtype
from optax_torch.schedules import warmup_constant_schedule

__all__ = [
    "ScheduleFreeState",
    "schedule_free",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "schedule_free_sgd",
]

Num = float | torch.Tensor


def _as_tensor(x: Num, dtype: torch.dtype) -> torch.Tensor:
    """``x`` as a 0-d tensor of ``dtype`` (a Python number converted exactly, not via float32)."""
    if isinstance(x, torch.Tensor):
        return x.to(dtype)
    return torch.tensor(x, dtype=dtype)


def _static_int(x: Any) -> Any:
    """A 0-d integer tensor (e.g. from ``inject_hyperparams``) read as an int; else ``x``."""
    if isinstance(x, torch.Tensor) and not x.is_floating_point():
        return int(x)
    return x


class ScheduleFreeState(NamedTuple):
    """State of :func:`schedule_free`."""

    b1: torch.Tensor  # 0-d, the params' lowest dtype
    weight_sum: torch.Tensor  # 0-d
    step_count: torch.Tensor  # 0-d int32, starts at 1
    max_lr: torch.Tensor  # 0-d
    base_optimizer_state: OptState
    z: Params


def schedule_free_eval_params(state: OptState, params: Params) -> Params:
    r"""Params for evaluation of :func:`schedule_free`: :math:`x = (y - (1-\beta_1) z) / \beta_1`.

    Args:
      state: a :class:`ScheduleFreeState` (the state of :func:`schedule_free` and friends).
      params: the current (training) parameters :math:`y`.

    Example::

        >>> eval_params = otx.contrib.schedule_free_eval_params(state, params)
    """
    b1 = getattr(state, "b1", None)
    z = getattr(state, "z", None)
    if b1 is None or z is None:
        raise ValueError("schedule_free_eval_params requires a ScheduleFreeState as input.")
    return tree.map(lambda y, zi: (y - (1.0 - b1) * zi) / b1, params, z)


def schedule_free(
    base_optimizer: GradientTransformation,
    learning_rate: ScalarOrSchedule,
    b1: Num = 0.9,
    weight_lr_power: Num = 2.0,
    state_dtype: torch.dtype | None = None,
) -> GradientTransformationExtraArgs:
    r"""Makes ``base_optimizer`` schedule-free.

    The base optimizer (without momentum) moves the sequence :math:`z`; the parameters the
    gradients are taken at are an interpolation of :math:`z` and the average :math:`x`:

    .. math::
        z_{t+1} = z_t + \text{base}(g_t),\quad
        c_t = \frac{\eta_{max,t}^{p}}{\sum_{i\le t} \eta_{max,i}^{p}},\quad
        x_{t+1} = (1 - c_t) x_t + c_t z_{t+1},\quad
        y_{t+1} = \beta_1 x_{t+1} + (1-\beta_1) z_{t+1}

    with :math:`\eta_{max,t}` the largest learning rate so far and :math:`p` =
    ``weight_lr_power``. :math:`x` is not stored: it is recomputed from the params :math:`y` and
    :math:`z`. Evaluate the model at :func:`schedule_free_eval_params`. Switch the base
    optimizer's momentum off (e.g. ``adam(lr, b1=0.0)``).

    Args:
      base_optimizer: the base optimizer to compute updates from.
      learning_rate: learning rate or schedule (with warmup, without decay); only used for the
        averaging weights, the base optimizer applies its own.
      b1: :math:`\beta_1` of the interpolation (must be > 0), default 0.9.
      weight_lr_power: the power :math:`p` of the averaging weights, default 2.0.
      state_dtype: dtype of the :math:`z` sequence (default: the params'). The updates keep
        the gradients' dtypes (optax returns them in the promoted dtype).

    Reference: Defazio et al., 2024, https://arxiv.org/abs/2405.15682

    Example::

        >>> opt = otx.contrib.schedule_free(otx.adam(1e-3, b1=0.0), 1e-3, b1=0.9)
        >>> eval_params = otx.contrib.schedule_free_eval_params(state, params)
    """
    _validate.check_finite("learning_rate", learning_rate)
    _validate.check_in_range("b1", b1, 0.0, 1.0, low_open=True)
    _validate.check_non_negative("weight_lr_power", weight_lr_power)
    base_optimizer = with_extra_args_support(base_optimizer)

    def init_fn(params):
        params_dtype = scalar_dtype(params)
        z = tree.map(lambda p: p.to(state_dtype or p.dtype, copy=True), params)
        return ScheduleFreeState(
            b1=_as_tensor(b1, params_dtype),
            weight_sum=torch.zeros((), dtype=params_dtype),
            step_count=torch.ones((), dtype=torch.int32),
            max_lr=torch.zeros((), dtype=params_dtype),
            base_optimizer_state=base_optimizer.init(params),
            z=z,
        )

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError("schedule_free needs params in update")
        lr = learning_rate(state.step_count) if callable(learning_rate) else learning_rate
        lr = _as_tensor(lr, state.max_lr.dtype)
        max_lr = torch.maximum(state.max_lr, lr)
        weight = max_lr**weight_lr_power
        next_total_weight = state.weight_sum + weight
        # A NaN weight stays NaN; 0/0 (a zero learning rate so far) gives 0.
        ck = torch.where(
            torch.isnan(weight) | torch.isnan(next_total_weight),
            torch.full_like(weight, float("nan")),
            torch.nan_to_num(weight / next_total_weight, nan=0.0, posinf=float("inf")),
        )
        base_updates, base_state = base_optimizer.update(
            updates, state.base_optimizer_state, params, **extra_args
        )
        z = tree.cast_like(tree.add(state.z, base_updates), state.z)
        # A parameter without gradient this step keeps its z.
        z = tree.map(lambda old, new: old if new is None else new, state.z, z)
        # x is recomputed from y and z (saves memory; stays exact if y is modified on top).
        prev_x = tree.map(lambda y, zi: (y - (1.0 - b1) * zi) / b1, params, state.z)
        x = tree.map(lambda xi, zi: (1.0 - ck) * xi + ck * zi, prev_x, z)
        new_params = tree.map(lambda xi, zi: b1 * xi + (1.0 - b1) * zi, x, z)
        # With a wider state_dtype the arithmetic is in that dtype (optax returns those updates
        # too); ours are cast back to the gradients' dtypes. No gradient, no update.
        new_updates = tree.cast_like(tree.sub(new_params, params), updates)
        new_updates = tree.map(lambda b, u: u, base_updates, new_updates)
        return new_updates, ScheduleFreeState(
            b1=state.b1,
            weight_sum=next_total_weight,
            step_count=numerics.safe_increment(state.step_count),
            max_lr=max_lr,
            base_optimizer_state=base_state,
            z=z,
        )

    return GradientTransformationExtraArgs(init_fn, update_fn)


def schedule_free_sgd(
    learning_rate: Num = 1.0,
    warmup_steps: int | None = None,
    b1: Num = 0.9,
    weight_decay: Num | None = None,
    weight_lr_power: Num = 2.0,
    state_dtype: torch.dtype | None = None,
) -> GradientTransformationExtraArgs:
    r"""Schedule-Free SGD: :func:`schedule_free` around ``sgd(learning_rate)``.

    With ``warmup_steps``, the learning rate warms up linearly from 0
    (:func:`optax_torch.warmup_constant_schedule`). The weight decay (applied before the SGD
    step, so multiplied by the learning rate as in PyTorch) is optional.

    Args:
      learning_rate: SGD learning rate, default 1.0.
      warmup_steps: length of the linear warmup (``None``: no warmup).
      b1: :math:`\beta_1` of the interpolation, default 0.9.
      weight_decay: weight decay strength (``None``: none).
      weight_lr_power: power of the averaging weights, default 2.0.
      state_dtype: dtype of the :math:`z` sequence.

    Reference: Defazio et al., 2024, https://arxiv.org/abs/2405.15682

    Example::

        >>> opt = otx.contrib.schedule_free_sgd(1.0, warmup_steps=100)
    """
    _validate.check_finite("learning_rate", learning_rate)
    warmup_steps = _static_int(warmup_steps)
    _validate.check_positive_int("warmup_steps", warmup_steps)
    _validate.check_non_negative("weight_decay", weight_decay)
    lr: ScalarOrSchedule = learning_rate
    if warmup_steps is not None:
        lr = warmup_constant_schedule(
            init_value=0, peak_value=learning_rate, warmup_steps=warmup_steps
        )
    optimizer: GradientTransformation = sgd(lr)
    if weight_decay is not None:
        optimizer = chain(T.add_decayed_weights(weight_decay), optimizer)
    return schedule_free(
        optimizer, learning_rate=lr, b1=b1, weight_lr_power=weight_lr_power, state_dtype=state_dtype
    )


def schedule_free_adamw(
    learning_rate: Num = 0.0025,
    warmup_steps: int | None = None,
    b1: Num = 0.9,
    b2: Num = 0.999,
    eps: Num = 1e-8,
    weight_decay: Num = 0.0,
    weight_lr_power: Num = 2.0,
    state_dtype: torch.dtype | None = None,
) -> GradientTransformationExtraArgs:
    r"""Schedule-Free AdamW: :func:`schedule_free` around AdamW without momentum.

    The base optimizer is ``chain(scale_by_rms(b2, eps, eps_in_sqrt=False,
    bias_correction=True), add_decayed_weights(weight_decay), scale_by_learning_rate(lr))``,
    i.e. Adam with ``b1=0`` without its always-zero first moment:

    .. math::
        z_{t+1} = z_t - \eta_t \left(\frac{g_t}{\sqrt{\hat v_t} + \epsilon} + \lambda y_t\right)

    Args:
      learning_rate: AdamW learning rate, default 0.0025.
      warmup_steps: length of the linear warmup (``None``: no warmup).
      b1: :math:`\beta_1` of the interpolation, default 0.9.
      b2: decay rate of the second moment, default 0.999.
      eps: added to the denominator outside the square root, default 1e-8.
      weight_decay: weight decay strength, default 0.0.
      weight_lr_power: power of the averaging weights, default 2.0.
      state_dtype: dtype of the :math:`z` sequence.

    Reference: Defazio et al., 2024, https://arxiv.org/abs/2405.15682

    Example::

        >>> opt = otx.contrib.schedule_free_adamw(1e-3, warmup_steps=100, weight_decay=1e-4)
    """
    _validate.check_finite("learning_rate", learning_rate)
    warmup_steps = _static_int(warmup_steps)
    _validate.check_positive_int("warmup_steps", warmup_steps)
    _validate.check_decay("b2", b2)
    _validate.check_non_negative("eps", eps)
    _validate.check_non_negative("weight_decay", weight_decay)
    lr: ScalarOrSchedule = learning_rate
    if warmup_steps is not None:
        lr = warmup_constant_schedule(
            init_value=0, peak_value=learning_rate, warmup_steps=warmup_steps
        )
    optimizer = chain(
        T.scale_by_rms(decay=b2, eps=eps, eps_in_sqrt=False, bias_correction=True),
        T.add_decayed_weights(weight_decay),
        T.scale_by_learning_rate(lr),
    )
    return schedule_free(
        optimizer, learning_rate=lr, b1=b1, weight_lr_power=weight_lr_power, state_dtype=state_dtype
    )
