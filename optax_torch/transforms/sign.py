"""Sign-based scalings: sign, Rprop."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from optax_torch import _validate, tree
from optax_torch.base import (
    EmptyState,
    GradientTransformation,
    Updates,
    donation_safe,
    elementwise,
    leafwise,
)
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
        _validate.check_real_params(params, "scale_by_sign")
        del params
        return EmptyState()

    @elementwise
    @leafwise
    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        return tree.map(torch.sign, updates), state

    return GradientTransformation(init_fn, update_fn)


class ScaleByRpropState(NamedTuple):
    """State of :func:`scale_by_rprop`: per-element step sizes and the last (signed) step, or
    the last gradient with ``prev_gradients=True``."""

    step_sizes: Updates
    prev_updates: Updates


def _real(x: torch.Tensor) -> torch.Tensor:
    """A complex tensor as a real one with a trailing dimension of 2 (a view)."""
    return torch.view_as_real(x) if x.is_complex() else x


def _back(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Undoes :func:`_real` for a result computed on ``_real(like)``."""
    return torch.view_as_complex(x) if like.is_complex() else x


def scale_by_rprop(
    learning_rate: Num,
    eta_minus: Num = 0.5,
    eta_plus: Num = 1.2,
    min_step_size: Num = 1e-6,
    max_step_size: Num = 50.0,
    *,
    always_clip: bool = False,
    prev_gradients: bool = False,
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
    ``torch.optim.Rprop`` (up to the clipping of an initial step size outside the bounds, see
    ``always_clip``). Complex leaves are treated as pairs of real numbers (real and imaginary
    parts have their own step sizes, both starting at ``learning_rate``), as in
    ``torch.optim.Rprop``.

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
      max_step_size: the largest step size :math:`\eta_{max}` (default ``50.0``; may be
        ``inf``).
      always_clip: *extension* (not in optax). ``False`` (optax): a step size is clipped to
        :math:`[\eta_{min}, \eta_{max}]` only when it changes (:math:`s_k \ne 0`). ``True``
        (``torch.optim.Rprop``): clipped at every step, :math:`\eta_k = \operatorname{clip}
        (\eta_{k-1}, \eta_{min}, \eta_{max})` where :math:`s_k = 0`, so an initial step size
        outside the bounds is clipped at the first step (and the step sizes follow bounds
        changed during training).
      prev_gradients: *extension* (not in optax). ``False`` (optax): ``state.prev_updates`` holds
        the last step :math:`u_k`. ``True`` (``torch.optim.Rprop``'s ``prev``): it holds the last
        gradient, zeroed where the sign flipped, :math:`g_k [s_k \ge 0]`, and :math:`s_k = g_k
        g_{k-1}[s_{k-1} \ge 0]`. Same signs, hence same steps, while the products do not
        underflow to zero and the step sizes stay positive.

    References:
      Riedmiller & Braun, 1993, https://ieeexplore.ieee.org/document/298623;
      Igel & Hüsken, 2003, https://doi.org/10.1016/S0925-2312(01)00700-7

    Example::

        >>> tx = otx.chain(otx.scale_by_rprop(1e-2), otx.scale(-1.0))
        >>> # torch.optim.Rprop's form and state:
        >>> tx = otx.chain(otx.scale_by_rprop(1e-2, always_clip=True, prev_gradients=True),
        ...                otx.scale(-1.0))
    """
    _validate.check_non_negative("learning_rate", learning_rate)
    _validate.check_positive("eta_minus", eta_minus)
    _validate.check_positive("eta_plus", eta_plus)
    _validate.check_non_negative("min_step_size", min_step_size)
    if not (isinstance(max_step_size, float) and max_step_size == math.inf):
        _validate.check_non_negative("max_step_size", max_step_size)

    def step_leaf(
        g: torch.Tensor, prev: torch.Tensor, step: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(new step size, update, new prev)`` of one leaf."""
        gr, pr, sr = _real(g), _real(prev), _real(step)
        s = gr * pr
        grown = torch.where(s > 0, sr * _like(eta_plus, sr), sr * _like(eta_minus, sr))
        lo = torch.as_tensor(min_step_size, dtype=sr.dtype, device=sr.device)
        hi = torch.as_tensor(max_step_size, dtype=sr.dtype, device=sr.device)
        if always_clip:
            new_step = torch.clamp(torch.where(s == 0, sr, grown), min=lo, max=hi)
        else:
            new_step = torch.where(s == 0, sr, torch.clamp(grown, min=lo, max=hi))
        flipped = s < 0
        zero = torch.zeros_like(gr)
        update = torch.where(flipped, zero, new_step * torch.sign(gr))
        new_prev = torch.where(flipped, zero, gr) if prev_gradients else update
        return _back(new_step, step), _back(update, g), _back(new_prev, prev)

    def init_leaf(p: torch.Tensor) -> torch.Tensor:
        # out of place (not an in-place fill): a learning rate batched by ``torch.func.vmap``
        # then gives batched step sizes
        zeros = _real(torch.zeros_like(p))
        if isinstance(learning_rate, torch.Tensor):
            return _back(zeros + _like(learning_rate, zeros), p)
        return _back(torch.full_like(zeros, learning_rate), p)

    def init_fn(params):
        return ScaleByRpropState(
            step_sizes=tree.map(init_leaf, params), prev_updates=tree.zeros_like(params)
        )

    @elementwise
    @leafwise
    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        gs, spec = tree.flatten(updates)
        prevs, prev_spec = tree.flatten(state.prev_updates)
        steps, step_spec = tree.flatten(state.step_sizes)
        if prev_spec != spec or step_spec != spec:
            raise ValueError("scale_by_rprop: the updates do not match the state's structure")
        out = [
            (None, None, None) if g is None or p is None or s is None else step_leaf(g, p, s)
            for g, p, s in zip(gs, prevs, steps)
        ]
        step_sizes = tree.unflatten(spec, [o[0] for o in out])
        new_updates = tree.unflatten(spec, [o[1] for o in out])
        prev = tree.unflatten(spec, [o[2] for o in out])
        return new_updates, ScaleByRpropState(step_sizes=step_sizes, prev_updates=prev)

    return GradientTransformation(init_fn, update_fn)
