"""Classy Vision's ``RMSPropTF`` optimizer (``classy_vision.optim.rmsprop_tf``): RMSProp with
``eps`` inside the square root, on optax_torch."""

from __future__ import annotations

from typing import ClassVar

from optax_torch.base import GradientTransformation, identity
from optax_torch.combine import chain
from optax_torch.compat.classy.optim._families import RMSPropFamily
from optax_torch.compat.classy.optim._registry import register_optimizer
from optax_torch.compat.torch_optim._common import TorchOptimDropIn, check_args, is_nonzero
from optax_torch.transforms import (
    add_decayed_weights,
    scale_by_learning_rate,
    scale_by_stddev,
    trace,
)
from optax_torch.transforms.monitoring import count_steps
from optax_torch.transforms.rms_root_state import scale_by_rms_root_state

__all__ = ["RMSPropTF", "RMSpropTFOptimizer"]


def _rmsprop_tf_tx(lr, momentum, alpha, eps, centered, weight_decay) -> GradientTransformation:
    """The chain of one ``RMSpropTFOptimizer`` param group:
    ``[L2 decay, step count, rms with its root stored | stddev (eps in the root), momentum,
    -lr]``."""
    if centered:
        scaling = scale_by_stddev(decay=alpha, eps=eps, eps_in_sqrt=True)
    else:
        scaling = scale_by_rms_root_state(decay=alpha, eps=eps)
    return chain(
        add_decayed_weights(weight_decay) if is_nonzero(weight_decay) else identity(),
        count_steps(),
        scaling,
        trace(decay=momentum) if momentum > 0 else identity(),
        scale_by_learning_rate(lr),
    )


class RMSpropTFOptimizer(TorchOptimDropIn):
    r"""Classy Vision's ``RMSpropTFOptimizer`` (a ``torch.optim.Optimizer``) on optax_torch.

    Per param group, ``add_decayed_weights(weight_decay)`` (L2) → ``count_steps()`` →
    :func:`~optax_torch.transforms.rms_root_state.scale_by_rms_root_state` ``(alpha, eps)`` or, if
    ``centered``, ``scale_by_stddev(alpha, eps, eps_in_sqrt=True)`` → ``trace(momentum)`` (if
    ``momentum > 0``) → ``scale_by_learning_rate(lr)``, i.e. Classy's

    .. math::
        g \leftarrow g + \lambda p,\quad
        d \leftarrow \sqrt{\alpha d + (1-\alpha) g^2 + \epsilon} \;\text{(the root is
        stored)},\quad b \leftarrow \mu b + g/d,\quad p \leftarrow p - \gamma b

    or, if centred, :math:`v \leftarrow \alpha v + (1-\alpha) g^2`, :math:`\bar g \leftarrow
    \alpha \bar g + (1-\alpha) g`, :math:`d = \sqrt{v - \bar g^2 + \epsilon}`; all states
    start at 0 (timm's ``RMSpropTF`` starts :math:`v` at 1 and stores :math:`v`, not its root).
    Classy's non-centred ``square_avg.add_(eps).sqrt_()`` works in place, so its stored
    ``square_avg`` is :math:`d`; this is reproduced (checkpoints are interchangeable).

    Args:
      params: parameters or param groups.
      lr: learning rate, default ``1e-2``.
      alpha: smoothing constant, default ``0.99``.
      eps: added inside the square root, default ``1e-8``.
      weight_decay: L2 penalty, default ``0``.
      momentum: momentum factor, default ``0``.
      centered: centred RMS, default ``False``.

    Example::

        >>> opt = RMSpropTFOptimizer(model.parameters(), lr=0.01, momentum=0.9)

    State per parameter: ``step``, ``square_avg``, ``momentum_buffer`` (if ``momentum > 0``),
    ``grad_avg`` (if ``centered``), as Classy's (whose ``step`` is a Python int, ours a tensor).
    """

    _state_key_map: ClassVar[dict[str, str]] = {
        "1.count": "step",
        "2.nu": "square_avg",
        "2.mu": "grad_avg",
        "3.trace": "momentum_buffer",
    }

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
    ) -> None:
        check_args(lr=lr, eps=eps, momentum=momentum, weight_decay=weight_decay, alpha=alpha)
        super().__init__(
            params,
            _rmsprop_tf_tx,
            lr=lr,
            momentum=momentum,
            alpha=alpha,
            eps=eps,
            centered=centered,
            weight_decay=weight_decay,
        )


@register_optimizer("rmsprop_tf")
class RMSPropTF(RMSPropFamily):
    """Classy Vision's ``RMSPropTF``: :class:`RMSpropTFOptimizer` with scheduled param groups
    (see :class:`ClassyOptimizer`).

    Args:
      lr: learning rate, default ``0.1``.
      momentum: momentum factor, default ``0``.
      weight_decay: L2 penalty, default ``0``.
      alpha: smoothing constant of the squared-gradient average, default ``0.99``.
      eps: added inside the square root, default ``1e-8``.
      centered: divide by the centred RMS, default ``False``.

    Example::

        >>> opt = RMSPropTF(lr=0.01, momentum=0.9); opt.set_param_groups(model.parameters())
    """

    _drop_in = RMSpropTFOptimizer
    _config_name = "RMSPropTF"
