"""ADOPT: Adam with the second moment of the previous step (converges for any beta2)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from optax_torch import _validate, numerics, tree
from optax_torch.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    ScalarOrSchedule,
    donation_safe,
    elementwise,
    leafwise,
)
from optax_torch.combine import chain
from optax_torch.transforms import ScaleByAdamState, scale_by_learning_rate
from optax_torch.transforms.caution import _cautious

__all__ = ["adopt", "scale_by_adopt"]

Num = float | torch.Tensor


def _default_clip_value(count: torch.Tensor) -> torch.Tensor:
    """``count ** 0.25``, computed in float64 (optax's ``lambda x: x**0.25`` under x64)."""
    return count.to(torch.float64) ** 0.25


def scale_by_adopt(
    b1: Num = 0.9,
    b2: Num = 0.9999,
    eps: Num = 1e-6,
    mu_dtype: torch.dtype | None = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[torch.Tensor], torch.Tensor] = _default_clip_value,
    caution: bool = False,
    weight_decay: Num = 0.0,
) -> GradientTransformation:
    r"""Rescales updates by the ADOPT algorithm.

    The gradient is normalised by the second moment of the *previous* steps (not including the
    current gradient), then averaged:

    .. math::
        \tilde g_k = \mathrm{clip}\big(g_k / \max(\sqrt{v_{k-1}}, \epsilon),\, c(k)\big),\quad
        m_k = \beta_1 m_{k-1} + (1-\beta_1) \tilde g_k,\quad
        v_k = \beta_2 v_{k-1} + (1-\beta_2) g_k^2,\quad u_k = m_k

    At the first step (``k = 0``) :math:`v_0 = g_0^2` and :math:`m` stays zero (so the first
    update is zero). ``clip`` is to :math:`[-c(k), c(k)]` with :math:`c` = ``clip_value_fn``
    of the step count (default :math:`k^{1/4}`) when ``use_clipping``. With ``nesterov`` the
    update is :math:`\beta_1 m_k + (1-\beta_1)\tilde g_k`.

    *Extensions* (timm's ``Adopt``, not in optax): with ``caution`` the update is masked where
    its sign disagrees with the gradient (:func:`optax_torch.caution`'s rescaled mask, applied to
    :math:`m_k` only); ``weight_decay`` adds decoupled decay :math:`\lambda p_k` to the update
    from the second step on (the first update stays zero, as in timm).

    The state is :class:`optax_torch.ScaleByAdamState` (as optax's).

    Args:
      b1: decay rate of the average of the normalised gradients (default 0.9).
      b2: decay rate of the average of the squared gradients (default 0.9999).
      eps: floor of :math:`\sqrt{v}` (default 1e-6).
      mu_dtype: optional dtype of the first moment.
      nesterov: use Nesterov momentum (default ``False``).
      use_clipping: clip the normalised gradients (default ``True``).
      clip_value_fn: the clipping value as a function of the (int32) step count; the default
        computes :math:`k^{1/4}` in float64.
      caution: *extension*: cautious masking of the update (default ``False``).
      weight_decay: *extension*: decoupled weight decay added after the first step (default 0);
        needs ``params``.

    Reference: Taniguchi et al., 2024, https://arxiv.org/abs/2411.02853

    Example::

        >>> tx = otx.chain(otx.contrib.scale_by_adopt(), otx.scale_by_learning_rate(1e-3))
    """
    _validate.check_decay("b1", b1)
    _validate.check_decay("b2", b2)
    _validate.check_non_negative("eps", eps)
    _validate.check_non_negative("weight_decay", weight_decay)
    decay = bool(weight_decay != 0)

    def init_fn(params):
        _validate.check_real_params(params, "scale_by_adopt")
        return ScaleByAdamState(
            count=numerics.zero_count(),
            mu=tree.zeros_like(params, dtype=mu_dtype),
            nu=tree.zeros_like(params),
        )

    @leafwise
    @donation_safe  # state.nu is read before (never after) the op that replaces it
    def update_fn(updates, state, params=None):
        if decay and params is None:
            raise ValueError("scale_by_adopt with weight_decay needs params")
        started = state.count > 0
        b1_ = torch.where(started, torch.as_tensor(b1, dtype=torch.float64), 1.0)
        b2_ = torch.where(started, torch.as_tensor(b2, dtype=torch.float64), 0.0)
        normed = tree.div(updates, tree.clip(tree.sqrt(state.nu), min_value=eps))
        if use_clipping:
            c = clip_value_fn(state.count)
            normed = tree.clip(normed, -c, c)
        nu = tree.update_moment_per_elem_norm(updates, state.nu, b2_, 2)
        mu = tree.update_moment(normed, state.mu, b1_, 1)
        out = tree.update_moment(normed, mu, b1_, 1) if nesterov else mu
        if caution:
            out = tree.map(lambda u, g: _cautious(u, g, 1e-3), out, updates)
        if decay:
            wd = torch.where(started, torch.as_tensor(weight_decay, dtype=torch.float64), 0.0)
            out = tree.map(lambda u, p: u if u is None else u + wd * p, out, params)
        mu = tree.cast(mu, mu_dtype)
        count_inc = numerics.safe_increment(state.count)
        return out, ScaleByAdamState(count=count_inc, mu=mu, nu=nu)

    if not caution:  # (the caution mask is rescaled per leaf)
        elementwise(update_fn)
    return GradientTransformation(init_fn, update_fn)


def adopt(
    learning_rate: ScalarOrSchedule,
    b1: Num = 0.9,
    b2: Num = 0.9999,
    eps: Num = 1e-6,
    mu_dtype: torch.dtype | None = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[torch.Tensor], torch.Tensor] = _default_clip_value,
) -> GradientTransformationExtraArgs:
    r"""ADOPT: Adam whose update normalises by the second moment of the previous steps.

    ``chain(scale_by_adopt(...), scale_by_learning_rate(learning_rate))``; see
    :func:`scale_by_adopt` for the math. ADOPT converges for any :math:`\beta_2`; the optional
    clipping (on by default) stabilises the early steps. The first update is zero.

    Args:
      learning_rate: a number, a 0-d tensor or a schedule.
      b1, b2, eps, mu_dtype, nesterov, use_clipping, clip_value_fn: see :func:`scale_by_adopt`.

    Reference: Taniguchi et al., `ADOPT: Modified Adam Can Converge with Any beta2 with the
    Optimal Rate <https://arxiv.org/abs/2411.02853>`_, NeurIPS 2024.

    Example::

        >>> opt = otx.contrib.adopt(3e-3)
    """
    _validate.check_finite("learning_rate", learning_rate)
    return chain(
        scale_by_adopt(
            b1=b1,
            b2=b2,
            eps=eps,
            mu_dtype=mu_dtype,
            nesterov=nesterov,
            use_clipping=use_clipping,
            clip_value_fn=clip_value_fn,
        ),
        scale_by_learning_rate(learning_rate),
    )
