"""MoMo: momentum models with Polyak-type adaptive learning rates (SGD and Adam forms)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from optax_torch import _validate, numerics, tree
from optax_torch.base import (
    GradientTransformationExtraArgs,
    Params,
    ScalarOrSchedule,
    Updates,
    donation_safe,
)
from optax_torch.contrib._dtypes import scalar_dtype

__all__ = ["MomoAdamState", "MomoState", "momo", "momo_adam"]

Num = float | torch.Tensor

# optax compares the squared norm with ``jnp.finfo(float).eps``: float64's epsilon.
_TINY = torch.finfo(torch.float64).eps


def _check_args(name: str, params: Params | None, value) -> None:
    if params is None:
        raise ValueError(f"{name} needs params: call update(updates, state, params, value=loss)")
    if value is None:
        raise ValueError(
            f"{name} needs the latest loss value: call update(updates, state, params, value=loss)"
        )


def _validate_common(learning_rate, lower_bound, weight_decay) -> None:
    _validate.check_finite("learning_rate", learning_rate)
    _validate.check_finite("lower_bound", lower_bound)
    _validate.check_non_negative("weight_decay", weight_decay)


class MomoState(NamedTuple):
    """State of :func:`momo`."""

    exp_avg: Updates  # d: EMA of the gradients
    barf: torch.Tensor  # 0-d: EMA of the loss values
    gamma: torch.Tensor  # 0-d: EMA of <g, x>
    lb: torch.Tensor  # 0-d: the (estimated) lower bound of the loss
    count: torch.Tensor  # 0-d int32


def momo(
    learning_rate: ScalarOrSchedule = 1.0,
    beta: Num = 0.9,
    lower_bound: Num = 0.0,
    weight_decay: Num = 0.0,
    adapt_lower_bound: bool = False,
) -> GradientTransformationExtraArgs:
    r"""MoMo: SGD with momentum and a Polyak-type adaptive learning rate.

    Needs the latest (batch) loss: ``update(grads, state, params, value=loss)``. With
    :math:`\beta_k` = ``beta`` (0 at the first step), :math:`\alpha_k` the learning rate,
    :math:`\lambda` the weight decay and :math:`f_*` the lower bound:

    .. math::
        \bar f_k = \beta_k \bar f_{k-1} + (1-\beta_k) f(x_k),\quad
        d_k = \beta_k d_{k-1} + (1-\beta_k) g_k,\quad
        \gamma_k = \beta_k \gamma_{k-1} + (1-\beta_k) \langle g_k, x_k\rangle,\\
        \tau_k = \min\Big(\alpha_k, \frac{\big((1+\alpha_k\lambda)(\bar f_k - f_* - \gamma_k)
        + \langle d_k, x_k\rangle\big)_+}{\|d_k\|^2}\Big),\quad
        u_k = -\frac{\alpha_k\lambda}{1+\alpha_k\lambda} x_k - \tau_k d_k

    (no step where :math:`\|d_k\|^2` is below float64's epsilon). Inner products and norms are
    over the whole tree; the whole step is returned. With ``adapt_lower_bound`` the lower bound
    is re-estimated on the fly (Section 5 of the paper), never below ``lower_bound``.

    Args:
      learning_rate: the largest step size (default 1; may be chosen large), or a schedule.
      beta: the momentum (EMA) coefficient (default 0.9).
      lower_bound: a lower bound of the loss (default 0, right for most losses).
      weight_decay: weight decay :math:`\lambda` (default 0).
      adapt_lower_bound: estimate the lower bound on the fly (default ``False``).

    Reference: Schaipp et al., `MoMo: Momentum Models for Adaptive Learning Rates
    <https://arxiv.org/abs/2305.07583>`_, 2023.

    Example::

        >>> opt = otx.contrib.momo()
        >>> # updates, state = opt.update(grads, state, params, value=loss)
    """
    _validate_common(learning_rate, lower_bound, weight_decay)
    _validate.check_decay("beta", beta)

    def init_fn(params):
        _validate.check_real_params(params, "momo")
        dtype = scalar_dtype(params)
        return MomoState(
            exp_avg=tree.zeros_like(params),
            barf=torch.zeros((), dtype=dtype),
            gamma=torch.zeros((), dtype=dtype),
            lb=torch.as_tensor(lower_bound, dtype=dtype),
            count=numerics.zero_count(),
        )

    @donation_safe
    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del extra_args
        _check_args("momo", params, value)
        dtype = state.barf.dtype
        bt = torch.where(
            state.count == 0, torch.zeros((), dtype=dtype), torch.as_tensor(beta, dtype=dtype)
        )
        barf = bt * state.barf + (1 - bt) * torch.as_tensor(value, dtype=dtype)
        exp_avg = tree.update_moment(updates, state.exp_avg, bt, 1)
        gamma = bt * state.gamma + (1 - bt) * tree.vdot(updates, params)
        exp_avg_norm = tree.norm(exp_avg, squared=True)
        iprod = tree.vdot(exp_avg, params)
        alpha = learning_rate(state.count) if callable(learning_rate) else learning_rate
        decay = 1 + alpha * weight_decay
        if adapt_lower_bound:
            cap = decay * (barf - gamma) + iprod
            this_lb = torch.where(
                cap < decay * state.lb, torch.clamp(cap / (2 * decay), min=lower_bound), state.lb
            )
        else:
            this_lb = state.lb
        t1 = torch.clamp(decay * (barf - this_lb - gamma) + iprod, min=0.0) / exp_avg_norm
        t1 = torch.where(exp_avg_norm <= _TINY, torch.zeros_like(t1), t1)
        tau = torch.minimum(torch.as_tensor(alpha, dtype=t1.dtype), t1)
        out = tree.add_scale(tree.scale(-(alpha * weight_decay) / decay, params), -tau, exp_avg)
        if adapt_lower_bound:
            new_lb = torch.clamp((barf + iprod - gamma) - 0.5 * tau * exp_avg_norm, min=lower_bound)
        else:
            new_lb = state.lb
        return out, MomoState(
            exp_avg=exp_avg,
            barf=barf.to(dtype),
            gamma=gamma.to(dtype),
            lb=new_lb.to(dtype),
            count=numerics.safe_increment(state.count),
        )

    return GradientTransformationExtraArgs(init_fn, update_fn)


class MomoAdamState(NamedTuple):
    """State of :func:`momo_adam`."""

    exp_avg: Updates  # EMA of the gradients
    exp_avg_sq: Updates  # EMA of the squared gradients
    barf: torch.Tensor  # 0-d: EMA of the loss values
    gamma: torch.Tensor  # 0-d: EMA of <g, x>
    lb: torch.Tensor  # 0-d: the (estimated) lower bound of the loss
    count: torch.Tensor  # 0-d int32


def momo_adam(
    learning_rate: ScalarOrSchedule = 1e-2,
    b1: Num = 0.9,
    b2: Num = 0.999,
    eps: Num = 1e-8,
    lower_bound: Num = 0.0,
    weight_decay: Num = 0.0,
    adapt_lower_bound: bool = False,
) -> GradientTransformationExtraArgs:
    r"""MoMo-Adam: Adam(W) with a Polyak-type adaptive learning rate.

    Needs the latest (batch) loss: ``update(grads, state, params, value=loss)``. With Adam's
    moments :math:`m_k, v_k`, the preconditioner :math:`D_k = \epsilon + \sqrt{v_k /
    (1-\beta_2^k)}`, :math:`\rho_k = 1-\beta_1^k` and the EMAs :math:`\bar f_k, \gamma_k` of the
    loss and of :math:`\langle g_k, x_k\rangle` (rate :math:`\beta_1`):

    .. math::
        \tau_k = \min\Big(\frac{\alpha_k}{\rho_k}, \frac{\big((1+\alpha_k\lambda)
        (\bar f_k - \rho_k f_* - \gamma_k) + \langle m_k, x_k\rangle\big)_+}
        {\langle m_k, m_k / D_k\rangle}\Big),\quad
        u_k = -\frac{\alpha_k\lambda}{1+\alpha_k\lambda} x_k - \tau_k \frac{m_k}{D_k}

    (no step where the denominator is below float64's epsilon). Inner products are over the
    whole tree; the whole step is returned. With ``adapt_lower_bound`` the lower bound is
    re-estimated on the fly, never below ``lower_bound``.

    Args:
      learning_rate: the largest step size (default 1e-2), or a schedule.
      b1, b2: Adam's decay rates (default 0.9, 0.999).
      eps: Adam's epsilon (default 1e-8).
      lower_bound: a lower bound of the loss (default 0).
      weight_decay: AdamW-like weight decay :math:`\lambda` (default 0).
      adapt_lower_bound: estimate the lower bound on the fly (default ``False``).

    Reference: Schaipp et al., `MoMo: Momentum Models for Adaptive Learning Rates
    <https://arxiv.org/abs/2305.07583>`_, 2023.

    Example::

        >>> opt = otx.contrib.momo_adam()
        >>> # updates, state = opt.update(grads, state, params, value=loss)
    """
    _validate_common(learning_rate, lower_bound, weight_decay)
    _validate.check_decay("b1", b1)
    _validate.check_decay("b2", b2)
    _validate.check_non_negative("eps", eps)

    def init_fn(params):
        _validate.check_real_params(params, "momo_adam")
        dtype = scalar_dtype(params)
        return MomoAdamState(
            exp_avg=tree.zeros_like(params),
            exp_avg_sq=tree.zeros_like(params),
            barf=torch.zeros((), dtype=dtype),
            gamma=torch.zeros((), dtype=dtype),
            lb=torch.as_tensor(lower_bound, dtype=dtype),
            count=numerics.zero_count(),
        )

    @donation_safe
    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del extra_args
        _check_args("momo_adam", params, value)
        dtype = state.barf.dtype
        count_inc = numerics.safe_increment(state.count)
        k = count_inc.to(torch.float64)
        barf = b1 * state.barf + (1 - b1) * torch.as_tensor(value, dtype=dtype)
        exp_avg = tree.update_moment(updates, state.exp_avg, b1, 1)
        exp_avg_sq = tree.update_moment_per_elem_norm(updates, state.exp_avg_sq, b2, 2)
        bc2 = (1 - b2**k).to(dtype)
        # m / (eps + sqrt(v / bc2)), the preconditioned momentum
        exp_avg_weighted = tree.div_sqrt(exp_avg, exp_avg_sq, eps, y_scale=1 / bc2)
        exp_avg_norm = tree.vdot(exp_avg, exp_avg_weighted)
        gamma = b1 * state.gamma + (1 - b1) * tree.vdot(updates, params)
        iprod = tree.vdot(exp_avg, params)
        alpha = learning_rate(state.count) if callable(learning_rate) else learning_rate
        bc1 = (1 - b1**k).to(dtype)
        decay = 1 + alpha * weight_decay
        if adapt_lower_bound:
            cap = decay * (barf - gamma) + iprod
            this_lb = torch.where(
                cap < decay * bc1 * state.lb,
                torch.clamp(cap / (2 * bc1 * decay), min=lower_bound),
                state.lb,
            )
        else:
            this_lb = state.lb
        t1 = torch.clamp(decay * (barf - bc1 * this_lb - gamma) + iprod, min=0.0) / exp_avg_norm
        t1 = torch.where(exp_avg_norm <= _TINY, torch.zeros_like(t1), t1)
        tau = torch.minimum(torch.as_tensor(alpha / bc1, dtype=t1.dtype), t1)
        out = tree.add_scale(
            tree.scale(-(alpha * weight_decay) / decay, params), -tau, exp_avg_weighted
        )
        if adapt_lower_bound:
            new_lb = ((barf + iprod - gamma) - 0.5 * tau * exp_avg_norm) / bc1
            new_lb = torch.clamp(new_lb, min=lower_bound)
        else:
            new_lb = state.lb
        return out, MomoAdamState(
            exp_avg=exp_avg,
            exp_avg_sq=exp_avg_sq,
            barf=barf.to(dtype),
            gamma=gamma.to(dtype),
            lb=new_lb.to(dtype),
            count=count_inc,
        )

    return GradientTransformationExtraArgs(init_fn, update_fn)
