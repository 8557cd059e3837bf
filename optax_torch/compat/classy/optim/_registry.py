"""The optimizer registry of :mod:`optax_torch.compat.classy.optim` (Classy Vision's)."""

from __future__ import annotations

import copy
import traceback
from typing import Any

from optax_torch.compat.classy.optim.classy_optimizer import ClassyOptimizer

__all__ = [
    "OPTIMIZER_REGISTRY",
    "build_optimizer",
    "build_optimizer_schedulers",
    "register_optimizer",
]

OPTIMIZER_REGISTRY: dict[str, type[ClassyOptimizer]] = {}
OPTIMIZER_CLASS_NAMES: set[str] = set()
OPTIMIZER_REGISTRY_TB: dict[str, str] = {}
OPTIMIZER_CLASS_NAMES_TB: dict[str, str] = {}


def build_optimizer(config: dict[str, Any]) -> ClassyOptimizer:
    """Builds the optimizer registered as ``config["name"]`` with its ``from_config(config)``
    (which fills in the defaults, in ``config`` itself, as Classy Vision's)."""
    return OPTIMIZER_REGISTRY[config["name"]].from_config(config)


def build_optimizer_schedulers(config: dict[str, Any]) -> dict[str, Any]:
    """The param schedulers of ``config["param_schedulers"]`` (``{option: scheduler config}``),
    each built with ``num_epochs = config["num_epochs"]`` by ``build_param_scheduler``."""
    from optax_torch.compat.classy.optim.param_scheduler import build_param_scheduler

    param_scheduler_config = copy.deepcopy(config.get("param_schedulers", {}))
    for cfg in param_scheduler_config.values():
        cfg["num_epochs"] = config["num_epochs"]
    return {param: build_param_scheduler(cfg) for param, cfg in param_scheduler_config.items()}


def register_optimizer(name: str, bypass_checks: bool = False):
    """Class decorator registering a :class:`ClassyOptimizer` subclass as ``name`` for
    :func:`build_optimizer` (``ValueError`` on duplicate names or classes, as Classy Vision)."""

    def register_optimizer_cls(cls):
        if not bypass_checks:
            if name in OPTIMIZER_REGISTRY:
                msg = "Cannot register duplicate optimizer ({}). Already registered at \n{}\n"
                raise ValueError(msg.format(name, OPTIMIZER_REGISTRY_TB[name]))
            if not issubclass(cls, ClassyOptimizer):
                raise ValueError(
                    f"Optimizer ({name}: {cls.__name__}) must extend ClassyVisionOptimizer"
                )
            if cls.__name__ in OPTIMIZER_CLASS_NAMES:
                msg = (
                    "Cannot register optimizer with duplicate class name({})."
                    + "Previously registered at \n{}\n"
                )
                raise ValueError(msg.format(cls.__name__, OPTIMIZER_CLASS_NAMES_TB[cls.__name__]))
        tb = "".join(traceback.format_stack())
        OPTIMIZER_REGISTRY[name] = cls
        OPTIMIZER_CLASS_NAMES.add(cls.__name__)
        OPTIMIZER_REGISTRY_TB[name] = tb
        OPTIMIZER_CLASS_NAMES_TB[cls.__name__] = tb
        return cls

    return register_optimizer_cls


def check(condition: bool, message: str) -> None:
    """Classy Vision's config ``assert``: ``AssertionError(message)`` (also under ``-O``)."""
    if not condition:
        raise AssertionError(message)


def is_pos_float(number: Any) -> bool:
    return type(number) is float and number >= 0.0
