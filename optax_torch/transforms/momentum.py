"""Momentum (``trace``, ``dampened_trace``) and exponential moving averages (``ema``)."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from optax_torch import _validate, numerics, tree
from optax_torch.base import (
    GradientTransformation,
    Updates,
    donation_safe,
    elementwise,
    leafwise,
)

__all__ = ["DampenedTraceState", "EmaState", "TraceState", "dampened_trace", "ema", "trace"]


class TraceState(NamedTuple):
    """State of :func:`trace`: the momentum buffer."""

    trace: Updates


def trace(
    decay: float | torch.Tensor,
    nesterov: bool = False,
    accumulator_dtype: torch.dtype | None = None,
    *,
    dampening: float | torch.Tensor = 0.0,
) -> GradientTransformation:
    r"""Heavy-ball momentum, from a zero buffer.

    .. math::
        t_k = \text{decay}\, t_{k-1} + (1 - \text{dampening})\, g_k, \qquad
        u_k = t_k \;\; \text{or, with Nesterov,} \;\; u_k = g_k + \text{decay}\, t_k

    With the default ``dampening=0`` this is ``torch.optim.SGD``'s momentum buffer with
    ``dampening=0``. With ``dampening`` the buffer starts at zero (so the first step is damped
    too, unlike torch's SGD: see :func:`dampened_trace`) and the Nesterov term adds the *raw*
    gradient ``g_k``, as timm's ``SGDP`` does.

    Args:
      decay: the momentum coefficient.
      nesterov: use Nesterov momentum.
      accumulator_dtype: optional dtype of the buffer (``None``: the params' dtype).
      dampening: keyword only, the dampening of the gradient term in the buffer, default ``0``.

    Example::

        >>> tx = chain(trace(0.9, nesterov=True, dampening=0.1), scale_by_learning_rate(0.1))

    Reference: Polyak, 1964; Sutskever et al., 2013 (Nesterov form).
    """

    _validate.check_non_negative("decay", decay)
    _validate.check_finite("dampening", dampening)
    undamped = not isinstance(dampening, torch.Tensor) and dampening == 0

    def init_fn(params):
        return TraceState(trace=tree.zeros_like(params, dtype=accumulator_dtype))

    @elementwise
    @leafwise
    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        fresh = updates if undamped else tree.scale(1 - dampening, updates)
        new_trace = tree.add_scale(fresh, decay, tree.cast_like(state.trace, updates))
        out = tree.add_scale(updates, decay, new_trace) if nesterov else new_trace
        return out, TraceState(trace=tree.cast(new_trace, accumulator_dtype))

    return GradientTransformation(init_fn, update_fn)


class DampenedTraceState(NamedTuple):
    """State of :func:`dampened_trace`: the buffer and, per leaf, whether it has started."""

    trace: Updates
    started: Any  # per leaf, a 0-d bool tensor


def dampened_trace(
    decay: float | torch.Tensor,
    dampening: float | torch.Tensor = 0.0,
    nesterov: bool = False,
    accumulator_dtype: torch.dtype | None = None,
) -> GradientTransformation:
    r"""Heavy-ball momentum with dampening, in ``torch.optim.SGD``'s form.

    The buffer of each leaf starts as its first gradient (no dampening on that step), then

    .. math::
        t_k = \text{decay}\, t_{k-1} + (1 - \text{dampening})\, g_k, \qquad
        u_k = t_k \;\; \text{or, with Nesterov,} \;\; u_k = g_k + \text{decay}\, t_k

    With ``dampening=0`` the sequence equals :func:`trace`'s from the second step on; the first
    step differs only in that :func:`trace` starts from a zero buffer, which gives the same
    ``t_1 = g_1``. The ``started`` flag is per leaf, so a leaf that joins late (a ``None``
    gradient in :class:`~optax_torch.TorchOptimizer`) starts its own buffer.

    Args:
      decay: the momentum coefficient (torch's ``momentum``), ``>= 0``.
      dampening: the dampening of the gradient term, default ``0``.
      nesterov: Nesterov momentum (torch requires ``dampening == 0`` for it; allowed here).
      accumulator_dtype: optional dtype of the buffer (``None``: the params' dtype).

    Example::

        >>> tx = chain(dampened_trace(0.9, dampening=0.1), scale_by_learning_rate(0.1))

    Reference: ``torch.optim.SGD`` (Sutskever et al., 2013 for the Nesterov form).
    """

    _validate.check_non_negative("decay", decay)
    _validate.check_finite("dampening", dampening)

    def init_fn(params):
        return DampenedTraceState(
            trace=tree.zeros_like(params, dtype=accumulator_dtype),
            started=tree.map(lambda p: torch.zeros((), dtype=torch.bool, device=p.device), params),
        )

    @elementwise
    @leafwise
    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        old = tree.cast_like(state.trace, updates)
        damped = tree.add_scale(tree.scale(decay, old), 1 - dampening, updates)
        new_trace = tree.where(state.started, damped, updates)
        out = tree.add_scale(updates, decay, new_trace) if nesterov else new_trace
        started = tree.map(lambda u, s: torch.ones_like(s), updates, state.started)
        new_state = DampenedTraceState(tree.cast(new_trace, accumulator_dtype), started)
        return out, new_state

    return GradientTransformation(init_fn, update_fn)


class EmaState(NamedTuple):
    """State of :func:`ema`: the step count and the moving average."""

    count: torch.Tensor
    ema: Any


def ema(
    decay: float | torch.Tensor,
    debias: bool = True,
    accumulator_dtype: torch.dtype | None = None,
) -> GradientTransformation:
    r"""Exponential moving average of the updates.

    .. math::
        e_k = \text{decay}\, e_{k-1} + (1 - \text{decay})\, g_k, \qquad
        u_k = e_k / (1 - \text{decay}^k) \;\; (\text{with } \texttt{debias})

    Args:
      decay: the decay rate of the average.
      debias: divide by ``1 - decay**k`` to remove the bias towards the zero initialisation.
      accumulator_dtype: optional dtype of the average.
    """

    _validate.check_decay("decay", decay, allow_one=True)

    def init_fn(params):
        return EmaState(
            count=numerics.zero_count(), ema=tree.zeros_like(params, dtype=accumulator_dtype)
        )

    @elementwise
    @leafwise
    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        new_ema = tree.update_moment(updates, state.ema, decay, order=1)
        count_inc = numerics.safe_increment(state.count)
        out = tree.bias_correction(new_ema, decay, count_inc) if debias else new_ema
        return out, EmaState(count=count_inc, ema=tree.cast(new_ema, accumulator_dtype))

    return GradientTransformation(init_fn, update_fn)
