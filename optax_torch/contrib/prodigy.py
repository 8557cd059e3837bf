"""Prodigy: D-Adaptation AdamW whose distance estimate grows faster (learning-rate free)."""

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

__all__ = ["ProdigyState", "prodigy"]

Num = float | torch.Tensor


class ProdigyState(NamedTuple):
    """State of :func:`prodigy`."""

    exp_avg: Updates  # EMA of d * g
    exp_avg_sq: Updates  # EMA of (d * g)^2
    grad_sum: Updates  # s: weighted sum of the gradients
    params0: Updates  # the initial parameters x_0
    estim_lr: torch.Tensor  # 0-d: d, the distance (learning rate) estimate
    numerator_weighted: torch.Tensor  # 0-d: r, the weighted sum of <g, x_0 - x>
    count: torch.Tensor  # 0-d int32


def prodigy(
    learning_rate: ScalarOrSchedule = 1.0,
    betas: tuple[Num, Num] = (0.9, 0.999),
    beta3: Num | None = None,
    eps: Num = 1e-8,
    estim_lr0: Num = 1e-6,
    estim_lr_coef: Num = 1.0,
    weight_decay: Num = 0.0,
    safeguard_warmup: bool = False,
) -> GradientTransformationExtraArgs:
    r"""Prodigy: learning-rate-free AdamW that estimates the distance to the solution.

    With :math:`d_k` the distance estimate (``estim_lr``, starting at :math:`d_0` =
    ``estim_lr0``), :math:`\gamma_k` the ``learning_rate`` (schedule), and
    :math:`\delta_k = d_k \gamma_k \sqrt{1-\beta_2^{k}} / (1-\beta_1^{k})`:

    .. math::
        m_k = \beta_1 m_{k-1} + (1-\beta_1) d_k g_k,\quad
        v_k = \beta_2 v_{k-1} + (1-\beta_2) d_k^2 g_k^2,\\
        r_k = \beta_3 r_{k-1} + \frac{d_k}{d_0}\delta_k \langle g_k, x_0 - x_k\rangle,\quad
        s_k = \beta_3 s_{k-1} + \frac{\delta_k}{d_0} d_k g_k,\quad
        d_{k+1} = \max\Big(d_k,\, c\,\frac{r_k}{\|s_k\|_1}\Big),\\
        u_k = -\delta_k \Big(\frac{m_k}{\sqrt{v_k} + d_{k+1}\epsilon} + \lambda x_k\Big)

    (with ``safeguard_warmup`` the :math:`\delta_k` in :math:`s_k` is replaced by :math:`d_k`).
    Inner products and norms are over the whole tree. ``params`` are required; the state keeps
    a copy of the initial params. The whole step is returned (no learning rate to chain).

    Args:
      learning_rate: a schedule multiplier of the estimated step (default 1); a linear decay
        from 1 to 0 after a 0-20% warm-up is recommended.
      betas: :math:`(\beta_1, \beta_2)` of the underlying AdamW (default (0.9, 0.999)).
      beta3: decay of the estimates :math:`r, s` (default ``None``: :math:`\sqrt{\beta_2}`).
      eps: AdamW's epsilon, relative to :math:`d` (default 1e-8).
      estim_lr0: the initial (under-)estimate :math:`d_0` (default 1e-6).
      estim_lr_coef: :math:`c`, multiplies the estimates (default 1).
      weight_decay: decoupled (AdamW) weight decay :math:`\lambda` (default 0).
      safeguard_warmup: leave the learning rate out of :math:`s` (helps during warm-up).

    Reference: Mishchenko & Defazio, `Prodigy: An Expeditiously Adaptive Parameter-Free Learner
    <https://arxiv.org/abs/2306.06101>`_, 2023.

    Example::

        >>> opt = otx.contrib.prodigy(otx.linear_schedule(1.0, 0.0, 1000))
    """
    beta1, beta2 = betas
    _validate.check_finite("learning_rate", learning_rate)
    _validate.check_decay("betas[0]", beta1)
    _validate.check_decay("betas[1]", beta2)
    _validate.check_decay("beta3", beta3)
    _validate.check_non_negative("eps", eps)
    _validate.check_positive("estim_lr0", estim_lr0)
    _validate.check_non_negative("estim_lr_coef", estim_lr_coef)
    _validate.check_non_negative("weight_decay", weight_decay)
    b3 = beta2**0.5 if beta3 is None else beta3

    def init_fn(params):
        _validate.check_real_params(params, "prodigy")
        dtype = scalar_dtype(params)
        return ProdigyState(
            exp_avg=tree.zeros_like(params),
            exp_avg_sq=tree.zeros_like(params),
            grad_sum=tree.zeros_like(params),
            params0=tree.map(torch.clone, params),
            estim_lr=torch.as_tensor(estim_lr0, dtype=torch.float64).to(dtype),
            numerator_weighted=torch.zeros((), dtype=dtype),
            count=numerics.zero_count(),
        )

    @donation_safe
    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("prodigy needs params: call update(updates, state, params)")
        count_inc = numerics.safe_increment(state.count)
        sched = learning_rate(state.count) if callable(learning_rate) else learning_rate
        estim_lr = state.estim_lr
        dtype = estim_lr.dtype
        k = count_inc.to(torch.float64)
        bc = (1 - beta2**k) ** 0.5 / (1 - beta1**k)
        dlr = (estim_lr * sched * bc).to(dtype)
        dg = tree.scale(estim_lr, updates)
        numerator_acum = tree.vdot(updates, tree.sub(state.params0, params))
        exp_avg = tree.update_moment(dg, state.exp_avg, beta1, 1)
        exp_avg_sq = tree.update_moment_per_elem_norm(dg, state.exp_avg_sq, beta2, 2)
        s_coef = (estim_lr if safeguard_warmup else dlr) / estim_lr0
        grad_sum = tree.add_scale(tree.scale(s_coef, dg), b3, state.grad_sum)
        numerator_weighted = (
            b3 * state.numerator_weighted + (estim_lr / estim_lr0) * dlr * numerator_acum
        ).to(dtype)
        denominator = tree.norm(grad_sum, ord=1)
        lr_estimate = estim_lr_coef * numerator_weighted / denominator
        new_estim_lr = torch.maximum(estim_lr, lr_estimate.to(dtype))
        # (dlr is not folded into div_sqrt's x_scale: it is 0 when the schedule is)
        ratio = tree.div_sqrt(exp_avg, exp_avg_sq, eps=new_estim_lr * eps)
        out = tree.add_scale(tree.scale(-weight_decay * dlr, params), -dlr, ratio)
        return out, ProdigyState(
            exp_avg=exp_avg,
            exp_avg_sq=exp_avg_sq,
            grad_sum=grad_sum,
            params0=state.params0,
            estim_lr=new_estim_lr,
            numerator_weighted=numerator_weighted,
            count=count_inc,
        )

    return GradientTransformationExtraArgs(init_fn, update_fn)
