"""Classy Vision's ``RMSProp`` optimizer (``classy_vision.optim.rmsprop``) on the optax_torch
``torch.optim.RMSprop`` drop-in."""

from __future__ import annotations

from typing import Any

from optax_torch.compat.classy.optim._registry import check, is_pos_float, register_optimizer
from optax_torch.compat.classy.optim.classy_optimizer import ClassyOptimizer
from optax_torch.compat.torch_optim import RMSprop

__all__ = ["RMSProp"]


@register_optimizer("rmsprop")
class RMSProp(ClassyOptimizer):
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

    def __init__(
        self,
        lr: float = 0.1,
        momentum: float = 0,
        weight_decay: float = 0,
        alpha: float = 0.99,
        eps: float = 1e-8,
        centered: bool = False,
    ) -> None:
        super().__init__()
        self._lr = lr
        self._momentum = momentum
        self._weight_decay = weight_decay
        self._alpha = alpha
        self._eps = eps
        self._centered = centered

    def prepare(self, param_groups: Any) -> None:
        self.optimizer = RMSprop(
            param_groups,
            lr=self._lr,
            momentum=self._momentum,
            weight_decay=self._weight_decay,
            alpha=self._alpha,
            eps=self._eps,
            centered=self._centered,
        )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RMSProp:
        """Instantiates a ``RMSProp`` from a configuration (defaults filled into ``config``)."""
        config.setdefault("lr", 0.1)
        config.setdefault("momentum", 0.0)
        config.setdefault("weight_decay", 0.0)
        config.setdefault("alpha", 0.99)
        config.setdefault("eps", 1e-8)
        config.setdefault("centered", False)
        for key in ["momentum", "alpha"]:
            check(
                config[key] >= 0.0 and config[key] < 1.0 and type(config[key]) is float,
                f"Config must contain a '{key}' in [0, 1) for RMSProp optimizer",
            )
        check(
            is_pos_float(config["eps"]),
            "Config must contain a positive 'eps' for RMSProp optimizer",
        )
        check(
            isinstance(config["centered"], bool),
            "Config must contain a boolean 'centered' param for RMSProp optimizer",
        )
        return cls(
            lr=config["lr"],
            momentum=config["momentum"],
            weight_decay=config["weight_decay"],
            alpha=config["alpha"],
            eps=config["eps"],
            centered=config["centered"],
        )
