"""LaProp: momentum of the gradients normalised by their RMS (momentum and adaptivity separated)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from optax_torch import _validate, numerics, tree
from optax_torch.base import (
    GradientTransformation,
    Updates,
    donation_safe,
    elementwise,
    leafwise,
)

__all__ = ["ScaleByLaPropState", "scale_by_laprop"]

Num = float | torch.Tensor


class ScaleByLaPropState(NamedTuple):
    """State of :func:`scale_by_laprop`."""

    count: torch.Tensor  # 0-d int32
    mu: Updates  # momentum of the normalised gradients, in learning-rate units
    nu: Updates  # second moment
    lr_avg: torch.Tensor  # 0-d float64: b1-average of the learning rates (mu's debiasing)
    nu_norm: torch.Tensor  # 0-d float64: b2-average of ones (nu's debiasing, 1 - b2 ** k)


def scale_by_laprop(
    b1: Num = 0.9,
    b2: Num = 0.999,
    eps: Num = 1e-15,
    learning_rate: Num = 1.0,
) -> GradientTransformation:
    r"""Rescales updates by LaProp: the momentum of RMS-normalised gradients.

    .. math::
        v_k = \beta_2 v_{k-1} + (1-\beta_2) g_k^2,\quad
        c_k = \beta_2 c_{k-1} + (1-\beta_2),\quad
        m_k = \beta_1 m_{k-1} + (1-\beta_1)\,\eta_k\, \frac{g_k}{\sqrt{v_k / c_k} + \epsilon},\\
        a_k = \beta_1 a_{k-1} + (1-\beta_1)\,\eta_k,\qquad u_k = m_k / a_k

    (:math:`u_k = 0` while :math:`a_k = 0`). The momentum accumulates the normalised gradients
    scaled by the learning rate :math:`\eta_k` (``learning_rate``) and is debiased by the same
    average of the learning rates, :math:`a_k = \eta(1-\beta_1^k)` for a constant one, so that
    a changing learning rate weighs each gradient by its own step's rate; apply the learning rate
    itself afterwards (``scale_by_learning_rate``): the step is :math:`-\eta_k u_k`. With the
    default ``learning_rate=1`` this is LaProp with Adam's bias corrections.

    Args:
      b1: momentum decay (default 0.9).
      b2: decay of the second moment (default 0.999).
      eps: added to the RMS (default 1e-15).
      learning_rate: the current learning rate :math:`\eta_k` (a number, rebuilt per step by
        :class:`~optax_torch.TorchOptimizer`), default 1.

    Reference: Ziyin, Wang & Ueda, `LaProp: Separating Momentum and Adaptivity in Adam
    <https://arxiv.org/abs/2002.04839>`_, 2020 (timm's ``LaProp``).

    Example::

        >>> from optax_torch.transforms.laprop import scale_by_laprop
        >>> tx = otx.chain(scale_by_laprop(learning_rate=4e-4), otx.scale_by_learning_rate(4e-4))
    """
    _validate.check_decay("b1", b1)
    _validate.check_decay("b2", b2)
    _validate.check_non_negative("eps", eps)
    _validate.check_non_negative("learning_rate", learning_rate)

    def init_fn(params):
        zero = torch.zeros((), dtype=torch.float64)
        return ScaleByLaPropState(
            count=numerics.zero_count(),
            mu=tree.zeros_like(params),
            nu=tree.zeros_like(params),
            lr_avg=zero,
            nu_norm=zero.clone(),
        )

    @elementwise
    @leafwise
    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        nu = tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        nu_norm = state.nu_norm * b2 + (1 - b2)
        normed = tree.div_sqrt(updates, nu, eps, y_scale=1.0 / nu_norm)
        mu = tree.add_scale(tree.scale(b1, state.mu), learning_rate * (1 - b1), normed)
        lr_avg = state.lr_avg * b1 + (1 - b1) * learning_rate
        inv = torch.where(lr_avg != 0, 1.0 / torch.where(lr_avg != 0, lr_avg, 1.0), 0.0)
        out = tree.scale(inv, mu)
        count_inc = numerics.safe_increment(state.count)
        return out, ScaleByLaPropState(count_inc, mu, nu, lr_avg, nu_norm)

    return GradientTransformation(init_fn, update_fn)
