"""D-Adaptation AdamW: learning-rate-free AdamW from a distance-to-solution estimate."""

from __future__ import annotations

from typing import NamedTuple

import torch

from optax_torch import _validate, numerics, tree
from optax_torch.base import (
    GradientTransformationExtraArgs,
    ScalarOrSchedule,
    Updates,
    donation_safe,
)
from optax_torch.contrib._dtypes import scalar_dtype

__all__ = ["DAdaptAdamWState", "dadapt_adamw"]

Num = float | torch.Tensor


class DAdaptAdamWState(NamedTuple):
    """State of :func:`dadapt_adamw`."""

    exp_avg: Updates  # EMA of d * g
    exp_avg_sq: Updates  # EMA of g^2
    grad_sum: Updates  # s: EMA of d * g with rate sqrt(beta2)
    estim_lr: torch.Tensor  # 0-d: d, the distance (learning rate) estimate
    numerator_weighted: torch.Tensor  # 0-d: r, the weighted sum of <g, s / (sqrt(v) + eps)>
    count: torch.Tensor  # 0-d int32


def dadapt_adamw(
    learning_rate: ScalarOrSchedule = 1.0,
    betas: tuple[Num, Num] = (0.9, 0.999),
    eps: Num = 1e-8,
    estim_lr0: Num = 1e-6,
    weight_decay: Num = 0.0,
) -> GradientTransformationExtraArgs:
    r"""Learning-rate-free AdamW by D-Adaptation.

    AdamW whose base learning rate :math:`d_k` is an estimate of the distance to the solution
    (in the infinity norm), starting from :math:`d_0` = ``estim_lr0``. With :math:`\gamma_k` the
    ``learning_rate`` (schedule), :math:`\rho = \sqrt{\beta_2}` and
    :math:`\delta_k = d_k \gamma_k \sqrt{1-\beta_2^{k}} / (1-\beta_1^{k})`:

    .. math::
        r_k = \rho\, r_{k-1} + (1-\rho)\, \delta_k
              \Big\langle g_k, \frac{s_{k-1}}{\sqrt{v_{k-1}} + \epsilon}\Big\rangle,\quad
        m_k = \beta_1 m_{k-1} + (1-\beta_1) \delta_k g_k,\quad
        v_k = \beta_2 v_{k-1} + (1-\beta_2) g_k^2,\\
        s_k = \rho\, s_{k-1} + (1-\rho)\, \delta_k g_k,\quad
        d_{k+1} = \max\Big(d_k, \frac{r_k}{(1-\rho)\|s_k\|_1}\Big),\quad
        u_k = -\frac{m_k}{\sqrt{v_k} + \epsilon} - \lambda \delta_k x_k

    Inner products and norms are over the whole tree. ``params`` are required. The whole step
    is returned (no learning rate to chain).

    Args:
      learning_rate: a schedule multiplier of the estimated step (default 1); a linear decay
        from 1 to 0 after a 0-20% warm-up is recommended.
      betas: :math:`(\beta_1, \beta_2)` of the underlying AdamW (default (0.9, 0.999)).
      eps: AdamW's epsilon (default 1e-8).
      estim_lr0: the initial (under-)estimate :math:`d_0` (default 1e-6).
      weight_decay: decoupled (AdamW) weight decay :math:`\lambda` (default 0); chain
        :func:`optax_torch.add_decayed_weights` first for L2 decay.

    Reference: Defazio & Mishchenko, `Learning-Rate-Free Learning by D-Adaptation
    <https://arxiv.org/abs/2301.07733>`_, ICML 2023.

    Example::

        >>> opt = otx.contrib.dadapt_adamw(otx.linear_schedule(1.0, 0.0, 1000))
    """
    beta1, beta2 = betas
    _validate.check_finite("learning_rate", learning_rate)
    _validate.check_decay("betas[0]", beta1)
    _validate.check_decay("betas[1]", beta2)
    _validate.check_non_negative("eps", eps)
    _validate.check_positive("estim_lr0", estim_lr0)
    _validate.check_non_negative("weight_decay", weight_decay)
    sb2 = beta2**0.5

    def init_fn(params):
        _validate.check_real_params(params, "dadapt_adamw")
        dtype = scalar_dtype(params)
        return DAdaptAdamWState(
            exp_avg=tree.zeros_like(params),
            exp_avg_sq=tree.zeros_like(params),
            grad_sum=tree.zeros_like(params),
            estim_lr=torch.as_tensor(estim_lr0, dtype=torch.float64).to(dtype),
            numerator_weighted=torch.zeros((), dtype=dtype),
            count=numerics.zero_count(),
        )

    @donation_safe  # grad_sum and exp_avg_sq are read before (never after) their replacement
    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("dadapt_adamw needs params: call update(updates, state, params)")
        dtype = state.numerator_weighted.dtype
        sched = learning_rate(state.count) if callable(learning_rate) else learning_rate
        count_inc = numerics.safe_increment(state.count)
        k = count_inc.to(torch.float64)
        bc = (1 - beta2**k) ** 0.5 / (1 - beta1**k)
        dlr = (state.estim_lr * sched * bc).to(dtype)
        s_weighted = tree.div_sqrt(state.grad_sum, state.exp_avg_sq, eps)
        numerator_acum = tree.vdot(updates, s_weighted)
        dg = tree.scale(dlr, updates)
        exp_avg = tree.update_moment(dg, state.exp_avg, beta1, 1)
        exp_avg_sq = tree.update_moment_per_elem_norm(updates, state.exp_avg_sq, beta2, 2)
        grad_sum = tree.update_moment(dg, state.grad_sum, sb2, 1)
        grad_sum_l1 = tree.norm(grad_sum, ord=1)
        numerator_weighted = (sb2 * state.numerator_weighted + (1 - sb2) * dlr * numerator_acum).to(
            dtype
        )
        d_estimate = numerator_weighted / ((1 - sb2) * grad_sum_l1)
        estim_lr = torch.maximum(state.estim_lr, d_estimate.to(dtype))
        ratio = tree.div_sqrt(exp_avg, exp_avg_sq, eps)
        out = tree.sub(tree.scale(-weight_decay * dlr, params), ratio)
        return out, DAdaptAdamWState(
            exp_avg=exp_avg,
            exp_avg_sq=exp_avg_sq,
            grad_sum=grad_sum,
            estim_lr=estim_lr,
            numerator_weighted=numerator_weighted,
            count=count_inc,
        )

    return GradientTransformationExtraArgs(init_fn, update_fn)
