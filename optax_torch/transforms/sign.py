"""Sign-based scalings: sign, Rprop."""

from __future__ import annotations

from typing import NamedTuple

import torch

from optax_torch import _validate, tree
from optax_torch.base import EmptyState, GradientTransformation, Updates, donation_safe
from optax_torch.transforms.normalization import _like

__all__ = ["ScaleByRpropState", "scale_by_rprop", "scale_by_sign"]

Num = float | torch.Tensor


def scale_by_sign() -> GradientTransformation:
    r"""Replaces every update element by its sign: :math:`u \leftarrow \operatorname{sign}(u)`.

    (:math:`\operatorname{sign}(0) = 0`.) The core of signSGD and Signum.

    Reference: Bernstein et al., 2018, https://arxiv.org/abs/1802.04434

    Example::

        >>> tx = otx.chain(otx.scale_by_sign(), otx.scale(-1e-3))
    """

    def init_fn(params):
        del params
        return EmptyState()

    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        return tree.map(torch.sign, updates), state

    return GradientTransformation(init_fn, update_fn)


class ScaleByRpropState(NamedTuple):
    """State of :func:`scale_by_rprop`: per-element step sizes and the last (signed) step."""

    step_sizes: Updates
    prev_updates: Updates


def scale_by_rprop(
    learning_rate: Num,
    eta_minus: Num = 0.5,
    eta_plus: Num = 1.2,
    min_step_size: Num = 1e-6,
    max_step_size: Num = 50.0,
) -> GradientTransformation:
    r"""Rprop (iRprop⁻): per-element step sizes adapted to the sign agreement of the gradients.

    With :math:`s_k = g_k\, u_{k-1}` (element-wise; :math:`u_{k-1}` the previous step, zero at
    first):

    .. math::
        \eta_k = \begin{cases}
            \operatorname{clip}(\eta^+ \eta_{k-1}, \eta_{min}, \eta_{max}) & s_k > 0\\
            \operatorname{clip}(\eta^- \eta_{k-1}, \eta_{min}, \eta_{max}) & s_k < 0\\
            \eta_{k-1} & s_k = 0
        \end{cases},\qquad
        u_k = \begin{cases} 0 & s_k < 0\\ \eta_k \operatorname{sign}(g_k) & \text{otherwise}
        \end{cases}

    with :math:`\eta_0` = ``learning_rate``; the step is skipped (and forgotten) where the sign
    flipped. :func:`optax_torch.rprop` negates :math:`u_k` for descent; it then steps like
    ``torch.optim.Rprop`` (up to the clipping of an initial step size outside the bounds).

    **Differs from optax 0.2.8**, whose update emits the *previous* step
    (``state.prev_updates``) instead of :math:`u_k`: its updates lag one step behind (zero at the
    first step). The states are the same. See
    https://github.com/google-deepmind/optax/pull/1725.

    Args:
      learning_rate: the initial step size :math:`\eta_0`.
      eta_minus: the factor :math:`\eta^-` applied to a step size when the sign flips
        (default ``0.5``).
      eta_plus: the factor :math:`\eta^+` applied when the sign persists (default ``1.2``).
      min_step_size: the smallest step size :math:`\eta_{min}` (default ``1e-6``).
      max_step_size: the largest step size :math:`\eta_{max}` (default ``50.0``).

    References:
      Riedmiller & Braun, 1993, https://ieeexplore.ieee.org/document/298623;
      Igel & Hüsken, 2003, https://doi.org/10.1016/S0925-2312(01)00700-7

    Example::

        >>> tx = otx.chain(otx.scale_by_rprop(1e-2), otx.scale(-1.0))
    """
    _validate.check_non_negative("learning_rate", learning_rate)
    _validate.check_positive("eta_minus", eta_minus)
    _validate.check_positive("eta_plus", eta_plus)
    _validate.check_non_negative("min_step_size", min_step_size)
    _validate.check_non_negative("max_step_size", max_step_size)

    def new_step_size(g: torch.Tensor, prev: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        s = g * prev
        grown = torch.where(s > 0, step * _like(eta_plus, step), step * _like(eta_minus, step))
        lo = torch.as_tensor(min_step_size, dtype=step.dtype, device=step.device)
        hi = torch.as_tensor(max_step_size, dtype=step.dtype, device=step.device)
        clipped = torch.clamp(grown, min=lo, max=hi)
        return torch.where(s == 0, step, clipped)

    def new_update(g: torch.Tensor, prev: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        return torch.where(g * prev < 0, torch.zeros_like(g), step * torch.sign(g))

    def init_fn(params):
        if isinstance(learning_rate, torch.Tensor):
            # out of place (not ``tree.full_like``'s in-place fill): a learning rate batched by
            # ``torch.func.vmap`` then gives batched step sizes
            step_sizes = tree.map(lambda p: torch.zeros_like(p) + _like(learning_rate, p), params)
        else:
            step_sizes = tree.full_like(params, learning_rate)
        return ScaleByRpropState(step_sizes=step_sizes, prev_updates=tree.zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        step_sizes = tree.map(new_step_size, updates, state.prev_updates, state.step_sizes)
        updates = tree.map(new_update, updates, state.prev_updates, step_sizes)
        return updates, ScaleByRpropState(step_sizes=step_sizes, prev_updates=updates)

    return GradientTransformation(init_fn, update_fn)
