"""Classy Vision's ``Adam`` optimizer (``classy_vision.optim.adam``) on the optax_torch
``torch.optim.Adam`` drop-in."""

from __future__ import annotations

from typing import ClassVar

from optax_torch.compat.classy.optim._families import AdamFamily
from optax_torch.compat.classy.optim._registry import register_optimizer
from optax_torch.compat.torch_optim import Adam as _Adam

__all__ = ["Adam"]


@register_optimizer("adam")
class Adam(AdamFamily):
    """Classy Vision's ``Adam``: :class:`optax_torch.compat.torch_optim.Adam` with
    scheduled param groups (see :class:`ClassyOptimizer`).

    Args:
      lr: learning rate, default ``0.1``.
      betas: coefficients of the running averages, default ``(0.9, 0.999)``.
      eps: denominator term, default ``1e-8``.
      weight_decay: L2 penalty, default ``0.0``.
      amsgrad: AMSGrad variant, default ``False``.

    Example::

        >>> opt = Adam(lr=1e-3); opt.set_param_groups(model.parameters())
    """

    _drop_in = _Adam
    _config_defaults: ClassVar[dict[str, float]] = {"lr": 0.1, "weight_decay": 0.0}
    _config_name = "Adam"

    def __init__(
        self,
        lr: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(lr, betas, eps, weight_decay, amsgrad)
