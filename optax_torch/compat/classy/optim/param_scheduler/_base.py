"""The base classes of the param schedulers, ``UpdateInterval``, the registry, and the helpers
that let one expression of a schedule run on Python floats and on tensors.

A param scheduler maps the training progress ``where`` (a number in ``[0, 1)``) to a value. With a
Python number, every scheduler here does the arithmetic of Classy Vision (fvcore) operation for
operation and returns what it returns (same values, same types, same exceptions). With a tensor
(0-d, or batched under :func:`torch.func.vmap`), the same expression runs on torch operations:
the value is a float64 tensor shaped like ``where``, on its device (the convention of
:mod:`optax_torch.schedules`), without any Python branch on tensor values, so it also runs under
``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

import bisect
import copy
import inspect
import math
import traceback
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any

import torch

from optax_torch.schedules._join import _as_value, _float_count

__all__ = [
    "PARAM_SCHEDULER_REGISTRY",
    "PARAM_SCHEDULER_REGISTRY_TB",
    "ClassyParamScheduler",
    "ParamScheduler",
    "UpdateInterval",
    "build_param_scheduler",
    "register_param_scheduler",
]


# ---------------------------------------------------------------------------------------------
# Helpers: one expression for Python numbers (Classy's exact arithmetic) and tensors (traceable).
# ---------------------------------------------------------------------------------------------


def _is_tensor(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def _where(where: Any) -> Any:
    """A tensor ``where`` as a float64 tensor (float32 on ``"mps"``); a number unchanged."""
    return _float_count(where) if _is_tensor(where) else where


def _out(value: Any, where: Any) -> Any:
    """The scheduler's value: a float64 tensor shaped like a tensor ``where``; else unchanged."""
    return _as_value(value, where) if _is_tensor(where) else value


def _cos(x: Any) -> Any:
    return torch.cos(x) if _is_tensor(x) else math.cos(x)


def _trunc(x: Any) -> Any:
    """``int(x)`` (truncation towards zero), kept as a float tensor for tensors."""
    return torch.trunc(x) if _is_tensor(x) else int(x)


def _bisect_right(boundaries: Sequence[Any], x: Any) -> Any:
    """``bisect.bisect_right(boundaries, x)`` (sorted ``boundaries``): how many are ``<= x``."""
    if not _is_tensor(x):
        return bisect.bisect_right(boundaries, x)  # pyright: ignore[reportArgumentType]
    count = torch.zeros_like(x)
    for b in boundaries:
        count = count + (x >= b).to(x.dtype)
    return count


def _pick(values: Sequence[Any], index: Any, like: Any = None) -> Any:
    """``values[index]``; for a tensor ``index``, a select chain that clamps it to the list.

    ``like`` (the tensor ``where``) sets the value's dtype, shape and device.
    """
    if not _is_tensor(index):
        return values[index]
    like = index if like is None else like
    out = _as_value(values[0], like)
    for i in range(1, len(values)):
        out = torch.where(index >= i, _as_value(values[i], like), out)
    return out


# ---------------------------------------------------------------------------------------------
# Base classes.
# ---------------------------------------------------------------------------------------------


class ParamScheduler:
    """Base class for parameter schedulers (``fvcore.common.param_scheduler.ParamScheduler``).

    A parameter scheduler defines a mapping from a progress value in [0, 1) to a number (e.g.
    learning rate). Subclasses override ``__call__(where)``.

    ``where`` may be a Python number (Classy's arithmetic and return types, exactly) or a tensor
    (a float64 tensor shaped like ``where`` comes back; traceable by ``torch.compile`` and
    ``torch.func.vmap``). With a tensor ``where``, the range checks that Classy makes on a float
    (``RuntimeError`` for ``where >= 1``) are not made, and list look-ups clamp their index.
    """

    # To be used for comparisons with where
    WHERE_EPSILON = 1e-6

    def __call__(self, where: Any) -> Any:
        """Get the value of the param for a given point at training.

        We update params (such as learning rate) based on the percent progress of training
        completed. This allows a scheduler to be agnostic to the exact length of a particular run
        (e.g. 120 epochs vs 90 epochs), as long as the relative progress where params should be
        updated is the same. However, it assumes that the total length of training is known.

        Args:
          where: A float in [0,1) that represents how far training has progressed (or a tensor
            of such floats).
        """
        raise NotImplementedError("Param schedulers must override __call__")


class UpdateInterval(Enum):
    """Enum for specifying update frequency for scheduler.

    Attributes:
      EPOCH (str): Update param before each epoch
      STEP (str): Update param before each optimizer step
    """

    EPOCH = "epoch"
    STEP = "step"

    @classmethod
    def from_config(
        cls, config: dict[str, Any], default: UpdateInterval | None = None
    ) -> UpdateInterval:
        """Fetches the update interval from a config.

        Args:
          config: The config for the parameter scheduler
          default: The value to use if the config doesn't specify an update interval. If not
            set, STEP is used.
        """
        if default is None:
            default = cls.STEP
        if "update_interval" not in config:
            return default
        if config.get("update_interval").lower() not in ["step", "epoch"]:  # pyright: ignore
            raise ValueError("Choices for update interval are 'step' or 'epoch'")
        return cls[config["update_interval"].upper()]


class ClassyParamScheduler(ParamScheduler):
    """Base class for Classy parameter schedulers.

    Attributes:
      update_interval: Specifies how often to update each parameter (before each epoch or each
        batch)
    """

    update_interval: UpdateInterval

    def __init__(self, update_interval: UpdateInterval):
        """Constructor for ClassyParamScheduler.

        Args:
          update_interval: Specifies the frequency of the param updates
        """
        self.update_interval = update_interval

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ClassyParamScheduler:
        """Instantiates a ClassyParamScheduler from a configuration.

        Args:
          config: A configuration for the ClassyParamScheduler.

        Returns:
          A ClassyParamScheduler instance.
        """
        raise NotImplementedError


def _classy_from_config(cls: Any, config: dict[str, Any]) -> Any:
    """Classy's generated ``from_config`` for the fvcore schedulers (``fvcore_schedulers.py``).

    The config's ``name`` must be the class's registry name (``AssertionError`` otherwise); the
    constructor's parameters are read from the config, ``num_epochs`` standing for
    ``num_updates``; ``update_interval`` defaults to the class's.
    """
    config = copy.copy(config)
    assert cls._register_name == config.pop("name")

    update_interval = UpdateInterval.from_config(config, cls._default_update_interval)
    param_names = inspect.signature(cls).parameters.keys()
    # config might contain values that are not used by constructor
    kwargs = {p: config[p] for p in param_names if p in config}

    # This argument was renamed when moving to fvcore
    if "num_updates" in param_names and "num_epochs" in config:
        kwargs["num_updates"] = config["num_epochs"]
    scheduler = cls(**kwargs)
    scheduler.update_interval = update_interval
    return scheduler


# ---------------------------------------------------------------------------------------------
# Registry.
# ---------------------------------------------------------------------------------------------

PARAM_SCHEDULER_REGISTRY: dict[str, Any] = {}
PARAM_SCHEDULER_REGISTRY_TB: dict[str, str] = {}


def build_param_scheduler(config: dict[str, Any]) -> ParamScheduler:
    """Builds a :class:`ParamScheduler` from a config.

    This assumes a 'name' key in the config which is used to determine what param scheduler class
    to instantiate. For instance, a config ``{"name": "my_scheduler", "foo": "bar"}`` will find a
    class that was registered as "my_scheduler" (see :func:`register_param_scheduler`) and call
    .from_config on it. An unknown name raises ``KeyError``, as in Classy.

    Example:
      >>> from optax_torch.compat.classy.optim.param_scheduler import build_param_scheduler
      >>> s = build_param_scheduler({"name": "cosine", "start_value": 0.1, "end_value": 0.0})
      >>> s(0.5)
      0.05
    """
    return PARAM_SCHEDULER_REGISTRY[config["name"]].from_config(config)


def register_param_scheduler(name: str, bypass_checks: bool = False) -> Callable[[Any], Any]:
    """Registers a :class:`ParamScheduler` subclass.

    This decorator allows instantiating a subclass of ParamScheduler from a configuration file.
    To use it, apply this decorator to a ParamScheduler subclass that implements a
    ``from_config`` classmethod::

        @register_param_scheduler("my_scheduler")
        class MyParamScheduler(ParamScheduler):
            ...

    To instantiate a param scheduler from a configuration file, see
    :func:`build_param_scheduler`. A duplicate name, or a class that does not extend
    :class:`ParamScheduler`, raises ``ValueError`` (unless ``bypass_checks``).
    """

    def register_param_scheduler_cls(cls: Any) -> Any:
        if not bypass_checks:
            if name in PARAM_SCHEDULER_REGISTRY:
                msg = "Cannot register duplicate param scheduler ({}). Already registered at \n{}\n"
                raise ValueError(msg.format(name, PARAM_SCHEDULER_REGISTRY_TB[name]))
            if not issubclass(cls, ParamScheduler):
                raise ValueError(
                    f"Param Scheduler ({name}: {cls.__name__}) must extend ParamScheduler"
                )
        tb = "".join(traceback.format_stack())
        PARAM_SCHEDULER_REGISTRY[name] = cls
        PARAM_SCHEDULER_REGISTRY_TB[name] = tb
        return cls

    return register_param_scheduler_cls
