"""Classy Vision's ``AdamW`` optimizer (``classy_vision.optim.adamw``) on the optax_torch
``torch.optim.AdamW`` drop-in."""

from __future__ import annotations

from typing import Any

from optax_torch.compat.classy.optim._registry import check, register_optimizer
from optax_torch.compat.classy.optim.classy_optimizer import ClassyOptimizer
from optax_torch.compat.torch_optim import AdamW as _AdamW

__all__ = ["AdamW"]


@register_optimizer("adamw")
class AdamW(ClassyOptimizer):
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

    def __init__(
        self,
        lr: float = 0.001,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        amsgrad: bool = False,
    ) -> None:
        super().__init__()
        self._lr = lr
        self._betas = betas
        self._eps = eps
        self._weight_decay = weight_decay
        self._amsgrad = amsgrad

    def prepare(self, param_groups: Any) -> None:
        self.optimizer = _AdamW(
            param_groups,
            lr=self._lr,
            betas=self._betas,
            eps=self._eps,
            weight_decay=self._weight_decay,
            amsgrad=self._amsgrad,
        )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> AdamW:
        """Instantiates an ``AdamW`` from a configuration (defaults filled into ``config``)."""
        config.setdefault("lr", 0.01)
        config.setdefault("betas", [0.9, 0.999])
        config.setdefault("eps", 1e-8)
        config.setdefault("weight_decay", 0.01)
        config.setdefault("amsgrad", False)
        if type(config["betas"]) is list:
            config["betas"] = tuple(config["betas"])
        betas = config["betas"]
        check(
            type(betas) is tuple
            and len(betas) == 2
            and type(betas[0]) is float
            and type(betas[1]) is float
            and 0.0 <= betas[0] < 1.0
            and 0.0 <= betas[1] < 1.0,
            "Config must contain a tuple 'betas' in [0, 1) for AdamW optimizer",
        )
        return cls(
            lr=config["lr"],
            betas=config["betas"],
            eps=config["eps"],
            weight_decay=config["weight_decay"],
            amsgrad=config["amsgrad"],
        )
