"""Step-size rules: distance over gradients (DoG), Polyak, optimistic gradient."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from optax_torch import _validate, numerics, tree
from optax_torch.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    Updates,
    donation_safe,
    init_empty_state,
)

__all__ = [
    "ScaleByDistanceOverGradientsState",
    "ScaleByOptimisticGradientState",
    "scale_by_distance_over_gradients",
    "scale_by_optimistic_gradient",
    "scale_by_polyak",
]

Num = float | torch.Tensor

_NO_PARAMS_MSG = "You are using a transformation that requires the current value of parameters"


class ScaleByOptimisticGradientState(NamedTuple):
    """State of :func:`scale_by_optimistic_gradient`."""

    is_initial_step: torch.Tensor  # 0-d bool
    previous_gradient: Updates


def scale_by_optimistic_gradient(alpha: Num = 1.0, beta: Num = 1.0) -> GradientTransformation:
    r"""Computes generalized optimistic gradients.

    .. math::
        u_k = (\alpha + \beta)\, g_k - \beta\, g_{k-1}

    with :math:`g_{-1} = g_0` at the first step (so the first update is :math:`\alpha g_0`).

    Args:
      alpha: coefficient of generalized optimistic gradient descent (default 1.0).
      beta: coefficient of the negative momentum (default 1.0).

    Reference: Mokhtari et al., 2019, https://arxiv.org/abs/1901.08511

    Example::

        >>> tx = otx.chain(otx.scale_by_optimistic_gradient(), otx.scale_by_learning_rate(0.01))
    """
    _validate.check_finite("alpha", alpha)
    _validate.check_finite("beta", beta)

    def init_fn(params):
        return ScaleByOptimisticGradientState(
            is_initial_step=torch.tensor(True), previous_gradient=tree.zeros_like(params)
        )

    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        previous = tree.where(state.is_initial_step, updates, state.previous_gradient)
        new_updates = tree.add_scale(tree.scale(alpha + beta, updates), -beta, previous)
        new_state = ScaleByOptimisticGradientState(
            is_initial_step=torch.zeros((), dtype=torch.bool), previous_gradient=updates
        )
        return new_updates, new_state

    return GradientTransformation(init_fn, update_fn)


class ScaleByDistanceOverGradientsState(NamedTuple):
    """State of :func:`scale_by_distance_over_gradients`."""

    max_dist: Any  # a 0-d tensor per parameter
    grad_sum_of_squares: Any  # a shape-(1,) tensor per parameter
    init_params: Any  # the initial parameters, in ``param_dtype``


def scale_by_distance_over_gradients(
    reps_rel: Num = 1e-6,
    eps: Num = 1e-8,
    param_dtype: torch.dtype | None = torch.float32,
    global_scale: Num = 1.0,
) -> GradientTransformation:
    r"""Distance-over-gradients (DoG), learning-rate-free, one step size per parameter tensor.

    For each parameter tensor :math:`x` (the "layer-wise DoG", LDoG, of the paper):

    .. math::
        \bar r_k = \max(\bar r_{k-1}, \|x_k - x_0\|_2),\quad
        \bar r_{-1} = r_\epsilon (1 + \|x_0\|_2),\quad
        G_k = G_{k-1} + \|g_k\|_2^2,\quad
        u_k = s\, \frac{\bar r_k}{\sqrt{G_k + \epsilon}}\, g_k

    The state holds one copy of the initial parameters plus two scalars per parameter tensor.
    The authors recommend model averaging with this optimizer. Note that ``global_scale=1.0``
    gives *ascent* directions; use ``-1.0`` (or chain a negative scale) to descend.

    Args:
      reps_rel: :math:`r_\epsilon`, sets the initial step size (default 1e-6; the authors
        recommend 1e-4 for models with batch norm).
      eps: :math:`\epsilon`, avoids a division by zero (default 1e-8).
      param_dtype: dtype of the stored initial parameters (default ``torch.float32``; ``None``
        keeps the parameters' dtypes).
      global_scale: :math:`s`, a global factor, typically 1.0 or -1.0.

    Unlike optax, a 0-d parameter gets a 0-d update (optax returns shape ``(1,)`` there).

    Reference: Ivgi et al., 2023, https://arxiv.org/abs/2302.12022

    Example::

        >>> tx = otx.scale_by_distance_over_gradients(global_scale=-1.0)
    """
    _validate.check_positive("reps_rel", reps_rel)
    _validate.check_non_negative("eps", eps)
    _validate.check_finite("global_scale", global_scale)

    def stored(x: torch.Tensor) -> torch.Tensor:
        # A complex parameter is stored in param_dtype's complex counterpart (a cast to the real
        # param_dtype would drop its imaginary part).
        if param_dtype is None:
            return x
        return x.to(param_dtype.to_complex() if x.is_complex() else param_dtype)

    def init_fn(params):
        return ScaleByDistanceOverGradientsState(
            max_dist=tree.map(lambda x: reps_rel * (1 + torch.linalg.vector_norm(x)), params),
            grad_sum_of_squares=tree.map(
                lambda x: torch.zeros(1, dtype=x.dtype.to_real(), device=x.device), params
            ),
            init_params=tree.map(stored, params),
        )

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(_NO_PARAMS_MSG)
        dist = tree.map(torch.linalg.vector_norm, tree.sub(params, state.init_params))
        # (in the state's dtype: a float16 param's distance to its float32 copy is float32)
        max_dist = tree.map(lambda m, d: torch.maximum(m, d.to(m.dtype)), state.max_dist, dist)
        g_sos = tree.map(
            lambda g, s: s + numerics.abs_sq(g).sum(), updates, state.grad_sum_of_squares
        )

        def step(g, d, s):
            eta = global_scale * (d / torch.sqrt(s + eps))
            return eta.reshape(()).to(g.real.dtype) * g

        new_updates = tree.map(step, updates, max_dist, g_sos)
        return new_updates, ScaleByDistanceOverGradientsState(
            max_dist=max_dist, grad_sum_of_squares=g_sos, init_params=state.init_params
        )

    return GradientTransformation(init_fn, update_fn)


def scale_by_polyak(
    f_min: Num = 0.0,
    max_learning_rate: Num = 1.0,
    eps: Num = 0.0,
    variant: str = "sps",
) -> GradientTransformationExtraArgs:
    r"""Scales the updates by Polyak's step size.

    .. math::
        u_k = \min\left\{\frac{f(x_k) - f^\star}{\|g_k\|^2 + \epsilon},\,
              \gamma_{\max}\right\} g_k

    and :math:`u_k = 0` where :math:`\|g_k\|^2 + \epsilon` is below float64's machine epsilon.
    With ``variant="sps+"`` the gap :math:`f(x_k) - f^\star` is replaced by its positive part.
    ``update`` takes the loss value as the keyword argument ``value``:
    ``tx.update(grads, state, params, value=loss)``.

    Args:
      f_min: :math:`f^\star`, a lower bound on the objective (default 0).
      max_learning_rate: :math:`\gamma_{\max}`, the largest step size (default 1).
      eps: :math:`\epsilon`, added to the denominator (default 0).
      variant: ``"sps"`` or ``"sps+"`` (checked at construction; optax checks it at the first
        update).

    References: Loizou et al., 2021, https://arxiv.org/abs/2002.10542; Garrigos et al., 2023,
    https://arxiv.org/abs/2307.14528

    Example::

        >>> tx = otx.chain(otx.scale_by_polyak(), otx.scale(-1.0))
        >>> updates, state = tx.update(grads, state, params, value=loss)
    """
    _validate.check_finite("f_min", f_min)
    _validate.check_non_negative("max_learning_rate", max_learning_rate)
    _validate.check_non_negative("eps", eps)
    if variant not in ("sps", "sps+"):
        raise ValueError(f"variant must be 'sps' or 'sps+', got variant={variant!r}")

    @donation_safe  # no state to read
    def update_fn(updates, state, params=None, *, value, **extra_args):
        del params, extra_args
        grad_sq_norm = tree.norm(updates, squared=True)
        dtype, device = grad_sq_norm.dtype, grad_sq_norm.device
        gap = torch.as_tensor(value - f_min).to(dtype=dtype, device=device)
        if variant == "sps+":
            gap = torch.relu(gap)
        denom = grad_sq_norm + eps
        step = torch.minimum(
            gap / denom, torch.as_tensor(max_learning_rate, dtype=dtype, device=device)
        )
        step = torch.where(denom <= torch.finfo(torch.float64).eps, torch.zeros_like(step), step)
        return tree.scale(step, updates), state

    return GradientTransformationExtraArgs(init_empty_state, update_fn)
