"""LARC: layer-wise adaptive rate control of the gradients (NVIDIA apex's ``LARC``)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from optax_torch import _validate, tree
from optax_torch.base import GradientTransformation, donation_safe

__all__ = ["ScaleByLarcState", "scale_by_larc"]

Num = float | torch.Tensor


class ScaleByLarcState(NamedTuple):
    """State of :func:`scale_by_larc` (none)."""


def scale_by_larc(
    learning_rate: Num = 0.1,
    trust_coefficient: Num = 0.02,
    clip: bool = True,
    eps: Num = 1e-8,
    weight_decay: Num = 0.0,
) -> GradientTransformation:
    r"""Layer-wise adaptive rate control (LARC), applied to the gradients before an optimizer.

    For each leaf (a layer's tensor) with parameter :math:`p` and gradient :math:`g`, where
    :math:`\lVert p\rVert \ne 0` and :math:`\lVert g\rVert \ne 0`:

    .. math::
        a = \frac{c\,\lVert p\rVert}{\lVert g\rVert + \lambda \lVert p\rVert + \epsilon},\qquad
        a \leftarrow \min(a / \gamma, 1) \text{ if clip},\qquad
        g \leftarrow a\,(g + \lambda p)

    and :math:`g` unchanged otherwise (no weight decay either), with :math:`c` =
    ``trust_coefficient``, :math:`\lambda` = ``weight_decay`` and :math:`\gamma` =
    ``learning_rate``. In *scale* mode (``clip=False``) the step of the following optimizer is
    :math:`\gamma a` times its usual one; in *clip* mode the local rate :math:`a` caps the global
    rate :math:`\gamma`. The weight decay is taken over from the optimizer (give the optimizer
    ``weight_decay=0``), as apex's wrapper does. The choice is a ``torch.where`` per leaf. Needs
    ``params``.

    Args:
      learning_rate: the optimizer's learning rate :math:`\gamma` (only used with ``clip``),
        default ``0.1``.
      trust_coefficient: :math:`c`, default ``0.02``.
      clip: clip mode (``True``, default) or scale mode.
      eps: added to the denominator, default ``1e-8``.
      weight_decay: L2 penalty :math:`\lambda` folded into the gradient, default ``0``.

    References:
      You et al., 2017, *Large Batch Training of Convolutional Networks*,
      https://arxiv.org/abs/1708.03888; NVIDIA apex, ``apex/parallel/LARC.py``,
      https://github.com/NVIDIA/apex/blob/master/apex/parallel/LARC.py

    Example::

        >>> tx = otx.chain(scale_by_larc(0.1, weight_decay=1e-4), otx.trace(0.9), otx.scale(-0.1))
    """
    _validate.check_finite("learning_rate", learning_rate)
    _validate.check_non_negative("trust_coefficient", trust_coefficient)
    _validate.check_non_negative("eps", eps)
    _validate.check_non_negative("weight_decay", weight_decay)

    def scale_leaf(g: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        param_norm = torch.linalg.vector_norm(p)
        grad_norm = torch.linalg.vector_norm(g)
        rate = trust_coefficient * param_norm / (grad_norm + param_norm * weight_decay + eps)
        if clip:
            rate = torch.clamp(rate / learning_rate, max=1.0)
        active = (param_norm != 0) & (grad_norm != 0)
        one = torch.ones_like(rate)
        rate = torch.where(active, rate, one)
        decay = torch.where(active, one * weight_decay, torch.zeros_like(rate))
        return (g + decay * p) * rate

    def init_fn(params):
        del params
        return ScaleByLarcState()

    @donation_safe
    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_larc needs params")
        return tree.map(scale_leaf, updates, params), state

    return GradientTransformation(init_fn, update_fn)
