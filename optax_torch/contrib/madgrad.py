"""MADGRAD: momentumized, adaptive, dual-averaged gradient method."""

from __future__ import annotations

from typing import NamedTuple

import torch

from optax_torch import _validate, numerics, tree
from optax_torch.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    Params,
    ScalarOrSchedule,
    Updates,
    donation_safe,
    elementwise,
    leafwise,
)
from optax_torch.combine import chain
from optax_torch.transforms import add_decayed_weights

__all__ = ["MadgradState", "madgrad", "scale_by_madgrad"]

Num = float | torch.Tensor


class MadgradState(NamedTuple):
    """State of :func:`scale_by_madgrad`."""

    count: torch.Tensor  # 0-d int32
    grad_sum_sq: Updates  # weighted sum of squared gradients (G_k)
    s: Updates  # weighted sum of gradients (s_k)
    x0: Params  # the initial parameters (x_0); () when recomputed (keep_x0=False)


def _cbrt(x: torch.Tensor) -> torch.Tensor:
    # G >= 0 (a sum of squares with positive weights): x ** (1/3) is the real cube root.
    return x.pow(1.0 / 3.0)


def scale_by_madgrad(
    learning_rate: ScalarOrSchedule,
    momentum: Num = 0.9,
    eps: Num = 1e-6,
    *,
    decoupled_weight_decay: Num = 0.0,
    keep_x0: bool = True,
) -> GradientTransformation:
    r"""Rescales updates by MADGRAD (dual averaging with a cube-root adaptive scale).

    With :math:`\lambda_k = (\eta_k + \epsilon)\sqrt{k + 1}` (``k`` the number of previous
    steps):

    .. math::
        G_{k+1} = G_k + \lambda_k g_k^2,\quad s_{k+1} = s_k + \lambda_k g_k,\quad
        z_{k+1} = x_0 - \frac{s_{k+1}}{G_{k+1}^{1/3} + \epsilon},\\
        x_{k+1} = (1 - \mu) z_{k+1} + \mu x_k,\qquad u_k = x_{k+1} - x_k

    The learning rate is part of the transformation (the update is a full step, not to be
    scaled again). ``params`` are required; the state keeps a copy of the initial params.

    Keyword extensions (timm's ``MADGRAD``): ``decoupled_weight_decay`` :math:`\lambda` shrinks
    the iterate first, :math:`x_k \leftarrow (1 - \eta_k \lambda)\, x_k`, and the step above
    runs from the shrunk :math:`x_k` (the update is still taken from the unshrunk one).
    ``keep_x0=False`` (only with :math:`\mu = 0`) keeps no copy of :math:`x_0` (the state's
    ``x0`` is ``()``): it is recomputed each step as
    :math:`x_0 = x_k + s_k / (G_k^{1/3} + \epsilon)`, exact for :math:`\mu = 0` and, with
    decoupled decay, the facebookresearch / timm form (the decay then also shrinks
    :math:`x_0`).

    Args:
      learning_rate: a number, a 0-d tensor or a schedule (of the step count).
      momentum: :math:`\mu`, in [0, 1) (default 0.9).
      eps: added to the learning rate and to the cube root (default 1e-6), as the official
        PyTorch implementation.
      decoupled_weight_decay: keyword-only; :math:`\lambda` (default 0: none).
      keep_x0: keyword-only; keep :math:`x_0` in the state (default ``True``); ``False``
        needs ``momentum == 0``.

    Reference: Defazio & Jelassi, `Adaptivity without Compromise: A Momentumized, Adaptive, Dual
    Averaged Gradient Method for Stochastic Optimization <https://arxiv.org/abs/2101.11075>`_,
    2021.

    Example::

        >>> tx = otx.contrib.scale_by_madgrad(1e-2)
    """
    _validate.check_finite("learning_rate", learning_rate)
    _validate.check_decay("momentum", momentum)
    _validate.check_non_negative("eps", eps)
    _validate.check_non_negative("decoupled_weight_decay", decoupled_weight_decay)
    if not keep_x0 and not (isinstance(momentum, int | float) and momentum == 0):
        raise ValueError(f"scale_by_madgrad: keep_x0=False needs momentum == 0, got {momentum}")
    decays = not (isinstance(decoupled_weight_decay, int | float) and decoupled_weight_decay == 0)

    def init_fn(params):
        return MadgradState(
            count=numerics.zero_count(),
            grad_sum_sq=tree.zeros_like(params),
            s=tree.zeros_like(params),
            x0=tree.map(torch.clone, params) if keep_x0 else (),
        )

    @elementwise
    @leafwise
    @donation_safe
    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_madgrad needs params: call update(updates, state, params)")
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        steps = numerics.safe_increment(state.count).to(torch.float64)
        lamb = (lr + eps) * torch.sqrt(steps)
        x = tree.scale(1 - lr * decoupled_weight_decay, params) if decays else params
        if keep_x0:
            x0 = state.x0
        else:  # x_0 from the iterate and the old sums
            x0 = tree.add(
                x, tree.div(state.s, tree.add_scalar(tree.map(_cbrt, state.grad_sum_sq), eps))
            )
        grad_sum_sq = tree.add_scale(state.grad_sum_sq, lamb, tree.mul(updates, updates))
        s = tree.add_scale(state.s, lamb, updates)
        sigma = tree.add_scalar(tree.map(_cbrt, grad_sum_sq), eps)
        z = tree.sub(x0, tree.div(s, sigma))
        x_new = z if not keep_x0 else tree.add_scale(tree.scale(1 - momentum, z), momentum, x)
        out = tree.sub(x_new, params)
        new_state = MadgradState(
            count=numerics.safe_increment(state.count),
            grad_sum_sq=grad_sum_sq,
            s=s,
            x0=state.x0,
        )
        return out, new_state

    return GradientTransformation(init_fn, update_fn)


def madgrad(
    learning_rate: ScalarOrSchedule,
    momentum: Num = 0.9,
    weight_decay: Num = 0.0,
    eps: Num = 1e-6,
) -> GradientTransformationExtraArgs:
    r"""MADGRAD: matches SGD with momentum on vision and Adam on language tasks.

    ``chain(add_decayed_weights(weight_decay), scale_by_madgrad(learning_rate, momentum, eps))``:
    the weight decay is added to the gradient (L2), before the dual averaging; see
    :func:`scale_by_madgrad` for the math.

    Args:
      learning_rate: a number, a 0-d tensor or a schedule.
      momentum: momentum, in [0, 1) (default 0.9).
      weight_decay: L2 regularisation strength (default 0).
      eps: stabilising constant (default 1e-6).

    Reference: Defazio & Jelassi, `Adaptivity without Compromise: A Momentumized, Adaptive, Dual
    Averaged Gradient Method for Stochastic Optimization <https://arxiv.org/abs/2101.11075>`_,
    2021.

    Example::

        >>> opt = otx.contrib.madgrad(1e-2, momentum=0.9, weight_decay=1e-4)
    """
    _validate.check_non_negative("weight_decay", weight_decay)
    return chain(
        add_decayed_weights(weight_decay),
        scale_by_madgrad(learning_rate=learning_rate, momentum=momentum, eps=eps),
    )
