"""ACProp: AdaBelief with an asynchronous (previous-step) denominator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from optax_torch import _validate, numerics, tree
from optax_torch.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    ScalarOrSchedule,
    donation_safe,
)
from optax_torch.combine import chain
from optax_torch.transforms import (
    ScaleByBeliefState,
    add_decayed_weights,
    scale_by_learning_rate,
)

__all__ = ["acprop", "scale_by_acprop"]

Num = float | torch.Tensor


def scale_by_acprop(
    b1: Num = 0.9,
    b2: Num = 0.999,
    eps: Num = 1e-16,
    eps_root: Num = 1e-16,
) -> GradientTransformation:
    r"""Rescales updates by ACProp: the gradient over the *previous* centred second moment.

    .. math::
        m_k = \beta_1 m_{k-1} + (1-\beta_1) g_k,\quad
        s_k = \beta_2 s_{k-1} + (1-\beta_2)(g_k - m_{k-1})^2 + \bar\epsilon,\quad
        u_k = \frac{g_k}{\sqrt{s_{k-1} / (1-\beta_2^{k-1})} + \epsilon}

    with :math:`u_1 = g_1 / (1 + \epsilon)` (the first denominator is taken as 1). The state is
    :class:`optax_torch.ScaleByBeliefState` (as optax's).

    Args:
      b1: decay rate of the average of the gradients (default 0.9).
      b2: decay rate of the average of the squared prediction errors (default 0.999).
      eps: added to the denominator (default 1e-16).
      eps_root: :math:`\bar\epsilon`, added to the second moment (default 1e-16); must be
        non-zero to differentiate through the step.

    Reference: Zhuang et al., `Momentum Centering and Asynchronous Update for Adaptive Gradient
    Methods <https://arxiv.org/abs/2110.05454>`_, NeurIPS 2021.

    Example::

        >>> tx = otx.chain(otx.contrib.scale_by_acprop(), otx.scale_by_learning_rate(1e-3))
    """
    _validate.check_decay("b1", b1)
    _validate.check_decay("b2", b2)
    _validate.check_non_negative("eps", eps)
    _validate.check_non_negative("eps_root", eps_root)

    def init_fn(params):
        return ScaleByBeliefState(
            count=numerics.zero_count(), mu=tree.zeros_like(params), nu=tree.zeros_like(params)
        )

    @donation_safe  # old mu and nu are read before (never after) the ops that replace them
    def update_fn(updates, state, params=None):
        del params
        initial = state.count == 0
        count_inc = numerics.safe_increment(state.count)
        # nu_hat = nu_{k-1} / (1 - b2^{k-1}), and 1 at the first step: 0 * nu + 1 there.
        t = torch.where(initial, count_inc, state.count)
        factor = torch.where(initial, 0.0, tree.debias_factor(b2, t))
        shift = torch.where(initial, 1.0, 0.0).to(factor.dtype)
        nu_hat = tree.add_scalar(tree.scale(factor, state.nu), shift)
        out = tree.div_sqrt(updates, nu_hat, eps)
        prediction_error = tree.sub(updates, state.mu)
        mu = tree.update_moment(updates, state.mu, b1, 1)
        nu = tree.update_moment_per_elem_norm(prediction_error, state.nu, b2, 2)
        nu = tree.add_scalar(nu, eps_root)
        return out, ScaleByBeliefState(count=count_inc, mu=mu, nu=nu)

    return GradientTransformation(init_fn, update_fn)


def acprop(
    learning_rate: ScalarOrSchedule,
    b1: Num = 0.9,
    b2: Num = 0.999,
    eps: Num = 1e-16,
    eps_root: Num = 1e-16,
    weight_decay: Num = 0.0,
    mask: Any | Callable[[Any], Any] | None = None,
) -> GradientTransformationExtraArgs:
    r"""ACProp: AdaBelief's centred second moment with an asynchronous update.

    ``chain(scale_by_acprop(b1, b2, eps, eps_root), add_decayed_weights(weight_decay, mask),
    scale_by_learning_rate(learning_rate))``: the step at :math:`k` divides the current gradient
    by the centred second moment of the steps before it (see :func:`scale_by_acprop`):

    .. math::
        \theta_k = \theta_{k-1} - \alpha_k \Big(\frac{g_k}{\sqrt{\hat s_{k-1}} + \epsilon}
        + \lambda \theta_{k-1}\Big)

    Args:
      learning_rate: a number, a 0-d tensor or a schedule.
      b1, b2, eps, eps_root: see :func:`scale_by_acprop`.
      weight_decay: decoupled weight decay, multiplied by the learning rate (default 0).
      mask: a tree (or a function of the params returning one) of booleans: where to decay.

    Reference: Zhuang et al., `Momentum Centering and Asynchronous Update for Adaptive Gradient
    Methods <https://arxiv.org/abs/2110.05454>`_, NeurIPS 2021.

    Example::

        >>> opt = otx.contrib.acprop(1e-3)
    """
    _validate.check_finite("learning_rate", learning_rate)
    _validate.check_non_negative("weight_decay", weight_decay)
    return chain(
        scale_by_acprop(b1=b1, b2=b2, eps=eps, eps_root=eps_root),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
