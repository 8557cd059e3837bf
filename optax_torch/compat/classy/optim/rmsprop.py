"""Classy Vision's ``RMSProp`` optimizer (``classy_vision.optim.rmsprop``) on the optax_torch
``torch.optim.RMSprop`` drop-in."""

from __future__ import annotations

from optax_torch.compat.classy.optim._families import RMSPropFamily
from optax_torch.compat.classy.optim._registry import register_optimizer
from optax_torch.compat.torch_optim import RMSprop

__all__ = ["RMSProp"]


@register_optimizer("rmsprop")
class RMSProp(RMSPropFamily):
    """Classy Vision's ``RMSProp``: :class:`optax_torch.compat.torch_optim.RMSprop` with
    scheduled param groups (see :class:`ClassyOptimizer`).

    Args:
      lr: learning rate, default ``0.1``.
      momentum: momentum factor, default ``0``.
      weight_decay: L2 penalty, default ``0``.
      alpha: smoothing constant of the squared-gradient average, default ``0.99``.
      eps: added to the root of the average, default ``1e-8``.
      centered: divide by the centred RMS, default ``False``.

    Example::

        >>> opt = RMSProp(lr=0.01, momentum=0.9); opt.set_param_groups(model.parameters())
    """

    _drop_in = RMSprop
    _config_name = "RMSProp"
