"""COCOB: continuous coin betting, a learning-rate-free subgradient method."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from optax_torch import _validate, tree
from optax_torch.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    ScalarOrSchedule,
    Updates,
    donation_safe,
)
from optax_torch.combine import chain
from optax_torch.transforms import add_decayed_weights, scale_by_learning_rate

__all__ = ["COCOBState", "cocob", "scale_by_cocob"]

Num = float | torch.Tensor


class COCOBState(NamedTuple):
    """State of :func:`scale_by_cocob`."""

    init_particles: Updates  # the initial parameters w_1
    cumulative_gradients: Updates  # theta: minus the sum of the gradients
    scale: Updates  # L: the largest gradient magnitude seen
    subgradients: Updates  # G: the sum of the gradient magnitudes
    reward: Updates  # R: the gambler's reward


def scale_by_cocob(alpha: Num = 100.0, eps: Num = 1e-8) -> GradientTransformation:
    r"""Rescales updates by COCOB-Backprop (Algorithm 2 of Orabona & Tommasi, 2017).

    Per coordinate, with :math:`w_1` the initial parameters and :math:`L_0 = \epsilon`:

    .. math::
        L_k = \max(L_{k-1}, |g_k|),\quad G_k = G_{k-1} + |g_k|,\quad
        R_k = \max(R_{k-1} - g_k (w_k - w_1), 0),\quad \theta_k = \theta_{k-1} - g_k,\\
        w_{k+1} = w_1 + \frac{\theta_k}{L_k \max(G_k + L_k, \alpha L_k)} (L_k + R_k),\qquad
        u_k = w_{k+1} - w_k

    ``params`` are required; the state keeps a copy of the initial params.

    Args:
      alpha: the fraction-to-bet parameter (default 100).
      eps: the initial :math:`L` (avoids dividing by zero; default 1e-8).

    Reference: Orabona & Tommasi, `Training Deep Networks without Learning Rates Through Coin
    Betting <https://arxiv.org/abs/1705.07795>`_, 2017.

    Example::

        >>> tx = otx.contrib.scale_by_cocob()
    """
    _validate.check_non_negative("alpha", alpha)
    _validate.check_non_negative("eps", eps)

    def init_fn(params):
        _validate.check_real_params(params, "scale_by_cocob")
        return COCOBState(
            init_particles=tree.map(torch.clone, params),
            cumulative_gradients=tree.zeros_like(params),
            scale=tree.full_like(params, eps),
            subgradients=tree.zeros_like(params),
            reward=tree.zeros_like(params),
        )

    @donation_safe
    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_cocob needs params: call update(updates, state, params)")
        p0 = state.init_particles
        abs_g = tree.abs(updates)
        scale = tree.maximum(state.scale, abs_g)
        subgradients = tree.add(state.subgradients, abs_g)
        reward = tree.clip(
            tree.sub(state.reward, tree.mul(updates, tree.sub(params, p0))), min_value=0.0
        )
        cumulative = tree.sub(state.cumulative_gradients, updates)
        wealth_cap = tree.maximum(tree.add(subgradients, scale), tree.scale(alpha, scale))
        denom = tree.mul(scale, wealth_cap)
        bet = tree.mul(tree.div(cumulative, denom), tree.add(scale, reward))
        out = tree.sub(tree.add(p0, bet), params)
        return out, COCOBState(
            init_particles=p0,
            cumulative_gradients=cumulative,
            scale=scale,
            subgradients=subgradients,
            reward=reward,
        )

    return GradientTransformation(init_fn, update_fn)


def cocob(
    learning_rate: ScalarOrSchedule = 1.0,
    alpha: Num = 100.0,
    eps: Num = 1e-8,
    weight_decay: Num = 0.0,
    mask: Any | Callable[[Any], Any] | None = None,
) -> GradientTransformationExtraArgs:
    r"""COCOB-Backprop: coin betting, no learning rate to tune.

    ``chain(add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate,
    flip_sign=False), scale_by_cocob(alpha, eps))``: the (optionally L2-regularised) gradients,
    multiplied by ``learning_rate`` (default 1, e.g. to inject a schedule), feed the betting
    strategy of :func:`scale_by_cocob`, which returns the whole step.

    Args:
      learning_rate: a multiplier of the gradients (default 1), or a schedule.
      alpha: the fraction-to-bet parameter (default 100).
      eps: the initial :math:`L` (default 1e-8).
      weight_decay: L2 penalty added to the gradients (default 0).
      mask: a tree (or a function of the params returning one) of booleans: where to decay.

    Reference: Orabona & Tommasi, `Training Deep Networks without Learning Rates Through Coin
    Betting <https://arxiv.org/abs/1705.07795>`_, 2017.

    Example::

        >>> opt = otx.contrib.cocob()
    """
    _validate.check_finite("learning_rate", learning_rate)
    _validate.check_non_negative("weight_decay", weight_decay)
    return chain(
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate, flip_sign=False),
        scale_by_cocob(alpha, eps),
    )
