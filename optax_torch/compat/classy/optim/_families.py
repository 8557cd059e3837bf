"""The shared bodies of Classy Vision's optimizers that differ only in their drop-in and their
defaults: ``Adam`` / ``AdamW`` and ``RMSProp`` / ``RMSPropTF``."""

from __future__ import annotations

from typing import Any, ClassVar, Self

from optax_torch.compat.classy.optim._registry import check, is_pos_float
from optax_torch.compat.classy.optim.classy_optimizer import ClassyOptimizer

__all__ = ["AdamFamily", "RMSPropFamily"]


class AdamFamily(ClassyOptimizer):
    """Classy's ``Adam`` and ``AdamW``: options ``lr, betas, eps, weight_decay, amsgrad``,
    ``prepare`` building ``_drop_in`` with them, and ``from_config`` with Classy's checks.

    A subclass sets ``_drop_in`` (the torch-style optimizer class), ``_config_defaults`` (the
    ``lr`` and ``weight_decay`` that ``from_config`` fills in) and ``_config_name`` (the name in
    the config messages)."""

    _drop_in: ClassVar[Any]
    _config_defaults: ClassVar[dict[str, float]]
    _config_name: ClassVar[str]

    def __init__(
        self,
        lr: float,
        betas: tuple[float, float],
        eps: float,
        weight_decay: float,
        amsgrad: bool,
    ) -> None:
        super().__init__()
        self._lr = lr
        self._betas = betas
        self._eps = eps
        self._weight_decay = weight_decay
        self._amsgrad = amsgrad

    def prepare(self, param_groups: Any) -> None:
        self.optimizer = self._drop_in(
            param_groups,
            lr=self._lr,
            betas=self._betas,
            eps=self._eps,
            weight_decay=self._weight_decay,
            amsgrad=self._amsgrad,
        )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Self:
        """Instantiates the optimizer from a configuration (defaults filled into ``config``)."""
        config.setdefault("lr", cls._config_defaults["lr"])
        config.setdefault("betas", [0.9, 0.999])
        config.setdefault("eps", 1e-8)
        config.setdefault("weight_decay", cls._config_defaults["weight_decay"])
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
            f"Config must contain a tuple 'betas' in [0, 1) for {cls._config_name} optimizer",
        )
        return cls(
            lr=config["lr"],
            betas=config["betas"],
            eps=config["eps"],
            weight_decay=config["weight_decay"],
            amsgrad=config["amsgrad"],
        )


class RMSPropFamily(ClassyOptimizer):
    """Classy's ``RMSProp`` and ``RMSPropTF``: the constructor with their (common) options and
    defaults, ``prepare`` building ``_drop_in`` with them, and ``from_config`` with Classy's
    defaults and checks (``_config_name`` in the messages)."""

    _drop_in: ClassVar[Any]
    _config_name: ClassVar[str]

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
        self.optimizer = self._drop_in(
            param_groups,
            lr=self._lr,
            momentum=self._momentum,
            weight_decay=self._weight_decay,
            alpha=self._alpha,
            eps=self._eps,
            centered=self._centered,
        )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Self:
        """Instantiates the optimizer from a configuration (defaults filled into ``config``)."""
        name = cls._config_name
        config.setdefault("lr", 0.1)
        config.setdefault("momentum", 0.0)
        config.setdefault("weight_decay", 0.0)
        config.setdefault("alpha", 0.99)
        config.setdefault("eps", 1e-8)
        config.setdefault("centered", False)
        for key in ["momentum", "alpha"]:
            check(
                config[key] >= 0.0 and config[key] < 1.0 and type(config[key]) is float,
                f"Config must contain a '{key}' in [0, 1) for {name} optimizer",
            )
        check(
            is_pos_float(config["eps"]),
            f"Config must contain a positive 'eps' for {name} optimizer",
        )
        check(
            isinstance(config["centered"], bool),
            f"Config must contain a boolean 'centered' param for {name} optimizer",
        )
        return cls(
            lr=config["lr"],
            momentum=config["momentum"],
            weight_decay=config["weight_decay"],
            alpha=config["alpha"],
            eps=config["eps"],
            centered=config["centered"],
        )
