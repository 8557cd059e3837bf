"""Mechanic: a black-box learning-rate tuner wrapped around any optimizer."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from optax_torch import _validate, numerics, tree
from optax_torch.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    OptState,
    Updates,
    donation_safe,
    is_donation_safe,
    with_extra_args_support,
)
from optax_torch.contrib._dtypes import scalar_dtype

__all__ = ["MechanicState", "mechanize"]

Num = float | torch.Tensor


class MechanicState(NamedTuple):
    """State of :func:`mechanize`."""

    base_optimizer_state: OptState
    count: torch.Tensor  # 0-d int32
    r: torch.Tensor  # (num_betas,): the rewards
    m: torch.Tensor  # (num_betas,): the running maxima of |h|
    v: torch.Tensor  # (num_betas,): the sums of h^2
    s: torch.Tensor  # (num_betas,): the scale factors
    x0: Updates  # the reference point (the params at the first update)


def mechanize(
    base_optimizer: GradientTransformation,
    weight_decay: Num = 1e-2,
    eps: Num = 1e-8,
    s_init: Num = 1e-6,
    num_betas: int = 6,
) -> GradientTransformationExtraArgs:
    r"""Mechanic: learns the scale of ``base_optimizer``'s updates (its learning rate) online.

    With :math:`u_k` the base optimizer's update, :math:`x_{ref}` the params at the first
    update, :math:`S_{k-1} = \sum_i s_{k-1,i}` and :math:`\beta_i = 1 - 0.1^i` (``i = 1 ..
    num_betas``):

    .. math::
        \tilde g_k = g_k + \lambda S_{k-1} \frac{\|g_k\|}{\|x_k\| + \epsilon} x_k,\quad
        \Delta_{k-1} = \frac{x_{ref} - x_k}{S_{k-1} + \epsilon},\quad
        h_k = \langle \tilde g_k, \Delta_{k-1}\rangle,\\
        m_{k,i} = \max(\beta_i m_{k-1,i}, |h_k| + \epsilon),\quad
        v_{k,i} = \beta_i^2 v_{k-1,i} + h_k^2,\quad
        r_{k,i} = \beta_i r_{k-1,i} + \mathrm{clip}(h_k, \pm m_{k-1,i})\, s_{k-1,i},\\
        s_{k,i} = \frac{s_{init} m_{k,i} / n + (r_{k,i})_+}{\sqrt{v_{k,i}} + \epsilon},\quad
        x_{k+1} = x_{ref} - S_k (\Delta_{k-1} - u_k)

    and the returned update is :math:`x_{k+1} - x_k`. Norms and inner products are over the
    whole tree. Keep a learning-rate *schedule* in the base optimizer, with peak value 1 (or
    any constant): Mechanic learns the scale. ``params`` are required; extra arguments of
    ``update`` are passed on to ``base_optimizer``.

    Args:
      base_optimizer: the optimizer whose updates are scaled (e.g. ``adam(1.0)``).
      weight_decay: Mechanic's own weight decay :math:`\lambda` (default 1e-2), unrelated to
        the base optimizer's; it also reduces the variance between seeds.
      eps: stabilising constant (default 1e-8).
      s_init: the initial scale factor (default 1e-6).
      num_betas: the number of decay rates :math:`\beta_i = 1 - 0.1^i` (default 6).

    Reference: Cutkosky, Defazio & Mehta, `Mechanic: A Learning Rate Tuner
    <https://arxiv.org/abs/2306.00144>`_, 2023.

    Example::

        >>> schedule = otx.warmup_cosine_decay_schedule(0.0, 1.0, 100, 1000)
        >>> opt = otx.contrib.mechanize(otx.adam(schedule))
    """
    _validate.check_non_negative("weight_decay", weight_decay)
    _validate.check_non_negative("eps", eps)
    _validate.check_positive("s_init", s_init)
    _validate.check_positive_int("num_betas", num_betas)
    base = with_extra_args_support(base_optimizer)
    beta_values = [1.0 - 0.1**i for i in range(1, num_betas + 1)]

    def init_fn(params):
        _validate.check_real_params(params, "mechanize")
        dtype = scalar_dtype(params)
        return MechanicState(
            base_optimizer_state=base.init(params),
            count=numerics.zero_count(),
            r=torch.zeros(num_betas, dtype=dtype),
            m=torch.zeros(num_betas, dtype=dtype),
            v=torch.zeros(num_betas, dtype=dtype),
            s=torch.ones(num_betas, dtype=dtype) * s_init,
            x0=tree.map(torch.clone, params),
        )

    def update_fn(updates, state, params=None, **extra_args: Any):
        if params is None:
            raise ValueError("mechanize needs params: call update(updates, state, params)")
        count_inc = numerics.safe_increment(state.count)
        new_neg_updates, base_state = base.update(
            updates, state.base_optimizer_state, params, **extra_args
        )
        # The reference point is the params of the first update (not of init), so that
        # weights loaded after init are the ones used.
        x0 = tree.where(state.count == 0, params, state.x0)
        dtype = state.s.dtype
        s_sum = state.s.sum()
        grad_norm = tree.norm(updates)
        param_norm = tree.norm(params)
        updates = tree.add_scale(
            updates, weight_decay * s_sum * grad_norm / (param_norm + eps), params
        )
        delta_prev = tree.scale(1 / (s_sum + eps), tree.sub(x0, params))
        delta = tree.sub(delta_prev, new_neg_updates)
        h = tree.vdot(updates, delta_prev)
        clipped_h = torch.clamp(h.expand_as(state.m), -state.m, state.m)
        betas = torch.tensor(beta_values, dtype=dtype, device=state.s.device)
        m = torch.maximum(betas * state.m, torch.abs(h) + eps).to(dtype)
        v = (betas**2 * state.v + h**2).to(dtype)
        r = (betas * state.r + clipped_h * state.s).to(dtype)
        wealth = (s_init / num_betas) * m + torch.clamp(r, min=0.0)
        s = (wealth / (numerics.safe_sqrt(v) + eps)).to(dtype)  # v = 0 at first
        new_params = tree.add_scale(x0, -s.sum(), delta)
        out = tree.sub(new_params, params)
        return out, MechanicState(
            base_optimizer_state=base_state,
            count=count_inc,
            r=r,
            m=m,
            v=v,
            s=s,
            x0=x0,
        )

    if is_donation_safe(base):
        # The base optimizer's state is consumed by its own update; Mechanic's are computed afresh.
        update_fn = donation_safe(update_fn)
    return GradientTransformationExtraArgs(init_fn, update_fn)
