"""``torch.optim.RMSprop`` on optax_torch (see :mod:`optax_torch.compat.torch_optim`)."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from optax_torch.base import GradientTransformation, identity
from optax_torch.combine import chain
from optax_torch.compat.torch_optim._common import (
    TorchOptimDropIn,
    check_args,
    check_differentiable,
    is_nonzero,
)
from optax_torch.transforms import (
    add_decayed_weights,
    scale,
    scale_by_learning_rate,
    scale_by_rms,
    scale_by_stddev,
    trace,
)
from optax_torch.transforms.monitoring import count_steps

__all__ = ["RMSprop"]


def _rmsprop_tx(
    lr,
    momentum,
    alpha,
    eps,
    centered,
    weight_decay,
    capturable=False,
    foreach=None,
    maximize=False,
    differentiable=False,
) -> GradientTransformation:
    """The chain of one ``RMSprop`` param group:
    ``[maximize, L2 decay, step count, rms | stddev (eps outside the root), momentum, -lr]``."""
    del capturable, foreach
    check_differentiable(differentiable)
    if centered:
        scaling = scale_by_stddev(decay=alpha, eps=eps, eps_in_sqrt=False)
    else:
        scaling = scale_by_rms(decay=alpha, eps=eps, eps_in_sqrt=False)
    return chain(
        scale(-1.0) if maximize else identity(),
        add_decayed_weights(weight_decay) if is_nonzero(weight_decay) else identity(),
        count_steps(),
        scaling,
        trace(decay=momentum) if momentum > 0 else identity(),
        scale_by_learning_rate(lr),
    )


class RMSprop(TorchOptimDropIn):
    r"""``torch.optim.RMSprop`` on optax_torch.

    Per param group, the chain ``scale(-1)`` (if ``maximize``) → ``add_decayed_weights
    (weight_decay)`` (L2) → ``count_steps()`` (torch's ``step``) → ``scale_by_rms(alpha, eps,
    eps_in_sqrt=False)`` or, if ``centered``, ``scale_by_stddev(alpha, eps, eps_in_sqrt=False)``
    → ``trace(momentum)`` (if ``momentum > 0``) → ``scale_by_learning_rate(lr)``, i.e. torch's

    .. math::
        g \leftarrow \pm g + \lambda p,\quad v \leftarrow \alpha v + (1-\alpha) g^2,\quad
        \bar g \leftarrow \alpha \bar g + (1-\alpha) g \;\text{(centered)},\\
        d = \sqrt{v - \bar g^2} + \epsilon \;\text{(centered) or}\; \sqrt{v} + \epsilon,\quad
        b \leftarrow \mu b + g/d,\quad p \leftarrow p - \gamma\, b \;\;(\text{or } g/d
        \text{ without momentum})

    with :math:`v, \bar g, b` starting at 0.

    Args:
      params: parameters or param groups (torch's format).
      lr: learning rate (float or 0-d tensor), default ``1e-2``.
      alpha: smoothing constant :math:`\alpha` of the squared-gradient average, default
        ``0.99``.
      eps: added to the denominator (outside the square root), default ``1e-8``.
      weight_decay: L2 penalty, default ``0``.
      momentum: momentum factor :math:`\mu`, default ``0``.
      centered: divide by the centred RMS (an estimate of the standard deviation), default
        ``False``.
      capturable, foreach: accepted and ignored (see the module docstring).
      maximize: maximize the objective, default ``False``.
      differentiable: must be ``False`` (``NotImplementedError`` otherwise).

    Example::

        >>> opt = RMSprop(model.parameters(), lr=1e-2, momentum=0.9, centered=True)
        >>> loss.backward(); opt.step(); opt.zero_grad()

    State per parameter: ``step``, ``square_avg``, ``momentum_buffer`` (if ``momentum > 0``) and
    ``grad_avg`` (if ``centered``), as in torch. Deviation: ``alpha`` must be in ``[0, 1)``
    (torch accepts any ``alpha >= 0``); ``alpha >= 1`` raises ``ValueError`` naming ``decay``.
    """

    _state_key_map: ClassVar[dict[str, str]] = {
        "2.count": "step",
        "3.nu": "square_avg",
        "3.mu": "grad_avg",
        "4.trace": "momentum_buffer",
    }

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        check_args(lr=lr, eps=eps, momentum=momentum, weight_decay=weight_decay, alpha=alpha)
        check_differentiable(differentiable)
        super().__init__(
            params,
            _rmsprop_tx,
            lr=lr,
            momentum=momentum,
            alpha=alpha,
            eps=eps,
            centered=centered,
            weight_decay=weight_decay,
            capturable=capturable,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
        )
