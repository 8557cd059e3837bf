"""Classy Vision's ``AdamW`` optimizer (``classy_vision.optim.adamw``) on the optax_torch
``torch.optim.AdamW`` drop-in."""

from __future__ import annotations

from typing import ClassVar

from optax_torch.compat.classy.optim._families import AdamFamily
from optax_torch.compat.classy.optim._registry import register_optimizer
from optax_torch.compat.torch_optim import AdamW as _AdamW

__all__ = ["AdamW"]


@register_optimizer("adamw")
class AdamW(AdamFamily):
    """Classy Vision's ``AdamW``: :class:`optax_torch.compat.torch_optim.AdamW` with
    scheduled param groups (see :class:`ClassyOptimizer`).

    Args:
      lr: learning rate, default ``0.001``.
      betas: coefficients of the running averages, default ``(0.9, 0.999)``.
      eps: denominator term, default ``1e-8``.
      weight_decay: decoupled weight decay, default ``0.01``.
      amsgrad: AMSGrad variant, default ``False``.

    Example::

        >>> opt = AdamW(lr=1e-3); opt.set_param_groups(model.parameters())
    """

    _drop_in = _AdamW
    _config_defaults: ClassVar[dict[str, float]] = {"lr": 0.01, "weight_decay": 0.01}
    _config_name = "AdamW"

    def __init__(
        self,
        lr: float = 0.001,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(lr, betas, eps, weight_decay, amsgrad)
