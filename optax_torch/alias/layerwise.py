"""Layer-wise normalised optimizers: LAMB, LARS, Fromage (built on ``scale_by_trust_ratio``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from optax_torch import _validate
from optax_torch import transforms as T
from optax_torch.base import GradientTransformationExtraArgs, ScalarOrSchedule
from optax_torch.combine import chain

__all__ = ["fromage", "lamb", "lars"]

Num = float | torch.Tensor
MaskOrFn = Any | Callable[[Any], Any] | None


def lamb(
    learning_rate: ScalarOrSchedule,
    b1: Num = 0.9,
    b2: Num = 0.999,
    eps: Num = 1e-6,
    eps_root: Num = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: MaskOrFn = None,
) -> GradientTransformationExtraArgs:
    r"""LAMB: Adam with decoupled weight decay, rescaled layer by layer by the trust ratio.

    ``chain(scale_by_adam(b1, b2, eps, eps_root), add_decayed_weights(weight_decay, mask),
    scale_by_trust_ratio(), scale_by_learning_rate(learning_rate))``: for every layer (leaf)
    :math:`b`,

    .. math::
        r_b = \frac{\hat m_b}{\sqrt{\hat v_b + \epsilon_{root}} + \epsilon} + \lambda p_b,\qquad
        u_b = -\alpha_k \frac{\lVert p_b \rVert}{\lVert r_b \rVert}\, r_b

    (the ratio is 1 where either norm is zero, see :func:`optax_torch.scale_by_trust_ratio`).

    Args:
      learning_rate: a number, a 0-d tensor or a schedule ``count -> value``.
      b1, b2: decay rates of Adam's first and second moments.
      eps: added to the denominator outside the square root (default ``1e-6``).
      eps_root: added inside the square root.
      weight_decay: the decoupled weight decay :math:`\lambda` (or a schedule).
      mask: a tree of booleans (or a function ``params -> tree``) selecting the parameters to
        decay; ``None`` decays all of them.

    Reference: You et al., 2020, https://arxiv.org/abs/1904.00962

    Example::

        >>> opt = otx.lamb(1e-3, weight_decay=1e-2)
    """
    _validate.check_finite("learning_rate", learning_rate)
    _validate.check_decay("b1", b1)
    _validate.check_decay("b2", b2)
    _validate.check_non_negative("eps", eps)
    _validate.check_non_negative("eps_root", eps_root)
    _validate.check_non_negative("weight_decay", weight_decay)
    return chain(
        T.scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root),
        T.add_decayed_weights(weight_decay=weight_decay, mask=mask),
        T.scale_by_trust_ratio(),
        T.scale_by_learning_rate(learning_rate),
    )


def lars(
    learning_rate: ScalarOrSchedule,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_decay_mask: MaskOrFn = True,
    trust_coefficient: Num = 0.001,
    eps: Num = 0.0,
    trust_ratio_mask: MaskOrFn = True,
    momentum: Num = 0.9,
    nesterov: bool = False,
) -> GradientTransformationExtraArgs:
    r"""LARS: SGD with momentum on updates rescaled layer by layer by the trust ratio.

    ``chain(add_decayed_weights(weight_decay, weight_decay_mask),
    masked(scale_by_trust_ratio(trust_coefficient=trust_coefficient, eps=eps), trust_ratio_mask),
    scale_by_learning_rate(learning_rate), trace(momentum, nesterov))``: for every layer (leaf)
    :math:`b`,

    .. math::
        r_b = g_b + \lambda p_b,\qquad
        d_b = -\alpha_k \frac{c\, \lVert p_b \rVert}{\lVert r_b \rVert + \epsilon}\, r_b,\qquad
        t_b \leftarrow d_b + \mu\, t_b,\qquad u_b = t_b

    (Nesterov: :math:`u_b = d_b + \mu t_b`; the ratio is 1 where either norm is zero, see
    :func:`optax_torch.scale_by_trust_ratio`). The momentum accumulates the scaled steps (the
    learning rate comes before the momentum, as in optax).

    Args:
      learning_rate: a number, a 0-d tensor or a schedule ``count -> value``.
      weight_decay: the weight decay :math:`\lambda` (or a schedule), added before the ratio.
      weight_decay_mask: a tree of booleans (or a function ``params -> tree``) selecting the
        parameters to decay (default ``True``: all).
      trust_coefficient: the multiplier :math:`c` of the trust ratio (default ``1e-3``).
      eps: added to the update norm in the ratio's denominator.
      trust_ratio_mask: a tree of booleans (or a function) selecting the parameters whose updates
        are rescaled (default ``True``: all); biases and norms are often left out.
      momentum: the momentum :math:`\mu` (default ``0.9``).
      nesterov: use Nesterov momentum.

    Reference: You et al., 2017, https://arxiv.org/abs/1708.03888

    Example::

        >>> opt = otx.lars(0.1, weight_decay=1e-4)
    """
    _validate.check_finite("learning_rate", learning_rate)
    _validate.check_non_negative("weight_decay", weight_decay)
    _validate.check_non_negative("trust_coefficient", trust_coefficient)
    _validate.check_non_negative("eps", eps)
    _validate.check_decay("momentum", momentum)
    return chain(
        T.add_decayed_weights(weight_decay, mask=weight_decay_mask),
        T.masked(
            T.scale_by_trust_ratio(trust_coefficient=trust_coefficient, eps=eps),
            mask=trust_ratio_mask,
        ),
        T.scale_by_learning_rate(learning_rate),
        T.trace(decay=momentum, nesterov=nesterov),
    )


def fromage(
    learning_rate: ScalarOrSchedule, min_norm: Num = 1e-6
) -> GradientTransformationExtraArgs:
    r"""Fromage (Frobenius matched gradient descent): layer-wise relative steps with a shrink.

    ``chain(scale_by_trust_ratio(min_norm), scale_by_learning_rate(learning_rate * m),
    add_decayed_weights(m - 1))`` with :math:`m = 1/\sqrt{1 + \alpha^2}`: for every layer (leaf)
    :math:`b`,

    .. math::
        p_b \leftarrow \frac{1}{\sqrt{1+\alpha_k^2}}\left(p_b - \alpha_k
            \frac{\lVert p_b \rVert}{\lVert g_b \rVert}\, g_b\right)

    (norms clipped below at ``min_norm``), so each layer moves by a fixed fraction of its own size
    and the division by :math:`\sqrt{1+\alpha^2}` keeps its norm from growing. With a schedule,
    :math:`\alpha_k` and :math:`m` follow it.

    Args:
      learning_rate: a number, a 0-d tensor or a schedule ``count -> value``.
      min_norm: lower bound of the parameter and update norms in the ratio (default ``1e-6``).

    Reference: Bernstein et al., 2020, https://arxiv.org/abs/2002.03432

    Example::

        >>> opt = otx.fromage(1e-2)
    """
    _validate.check_finite("learning_rate", learning_rate)
    _validate.check_non_negative("min_norm", min_norm)
    if not callable(learning_rate):
        mult = 1 / (1 + learning_rate**2) ** 0.5
        return chain(
            T.scale_by_trust_ratio(min_norm),
            T.scale_by_learning_rate(learning_rate * mult),
            T.add_decayed_weights(mult - 1),
        )
    lr_fn = learning_rate

    def mult_fn(count):
        return 1 / (1 + lr_fn(count) ** 2) ** 0.5

    return chain(
        T.scale_by_trust_ratio(min_norm),
        T.scale_by_learning_rate(lambda count: mult_fn(count) * lr_fn(count)),
        T.add_decayed_weights(lambda count: mult_fn(count) - 1),
    )
