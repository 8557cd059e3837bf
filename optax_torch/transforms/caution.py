"""Cautious updates: mask update components whose sign disagrees with the gradient."""

from __future__ import annotations

from typing import Any

import torch

from optax_torch import _validate, tree
from optax_torch.base import (
    GradientTransformationExtraArgs,
    donation_safe,
    is_donation_safe,
    with_extra_args_support,
)

__all__ = ["caution"]


def _cautious(u: Any, g: Any, min_fraction: float) -> Any:
    if u is None or g is None:
        return u
    # A complex component agrees with the gradient when Re(conj(u) g) > 0: the real inner
    # product of the two as vectors of the plane (an angle under 90 degrees), as tree.vdot.
    agree = (u.conj() * g).real > 0 if u.is_complex() else u * g > 0
    mask = agree.to(u.real.dtype)
    return u * (mask / torch.clamp_min(mask.mean(), min_fraction))


def caution(inner: Any, min_fraction: float = 1e-3) -> GradientTransformationExtraArgs:
    r"""Runs ``inner`` and zeroes the components of its updates that point against the gradient.

    For each leaf, with :math:`u = \text{inner}(g)` (a descent direction *before* the learning
    rate's sign flip, e.g. Adam's :math:`\hat m / (\sqrt{\hat v} + \epsilon)`):

    .. math::
        \phi = \mathbb{1}[u \odot g > 0], \qquad
        u' = u \odot \phi \,/\, \max(\operatorname{mean}(\phi), \text{min\_fraction})

    On complex leaves a component agrees with the gradient when
    :math:`\operatorname{Re}(\bar u\, g) > 0` (the two, as vectors of the plane, less than 90
    degrees apart; the real case's :math:`u g > 0`). The rescaling keeps the update's average
    magnitude. Place it around the part of a chain that
    produces the direction, before ``scale_by_learning_rate``: ``chain(caution(scale_by_adam()),
    scale_by_learning_rate(lr))`` is timm's ``AdamW(caution=True)`` (timm masks the momentum with
    the same mask, since the Adam denominator is positive).

    Args:
      inner: the transformation whose updates are masked.
      min_fraction: lower bound of the mask's mean in the rescaling, default ``1e-3`` (timm's).

    Reference: Liang et al., `Cautious Optimizers: Improving Training with One Line of Code
    <https://arxiv.org/abs/2411.16085>`_, 2024.

    Example::

        >>> tx = otx.chain(otx.caution(otx.scale_by_lion()), otx.scale_by_learning_rate(1e-4))
    """
    _validate.check_positive("min_fraction", min_fraction)
    inner = with_extra_args_support(inner)

    def update_fn(updates, state, params=None, **extra_args):
        new_updates, new_state = inner.update(updates, state, params, **extra_args)
        masked = tree.map(lambda u, g: _cautious(u, g, min_fraction), new_updates, updates)
        return masked, new_state

    if is_donation_safe(inner):
        update_fn = donation_safe(update_fn)
    return GradientTransformationExtraArgs(inner.init, update_fn)
