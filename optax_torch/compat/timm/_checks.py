"""Shared pieces of the timm drop-ins: timm's constructor checks (with timm's messages), the
corrected-decay helpers, and state dicts with timm's Python-number counts (:class:`IntStepDropIn`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import Tensor

from optax_torch.compat.torch_optim._common import TorchOptimDropIn

__all__ = [
    "IntStepDropIn",
    "check_args",
    "check_scalar",
    "int_steps",
    "max_lr_snapshot",
    "wd_factor",
]


def check_scalar(name: str, value: Any, min_value: float = 0.0, max_value: float | None = None):
    """timm's ``_validate_scalar``: ``ValueError("Invalid <name>: <value>")``."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar or scalar tensor.")
        value_float = float(value.detach().cpu())
    else:
        value_float = float(value)
    if value_float < min_value or (max_value is not None and value_float >= max_value):
        raise ValueError(f"Invalid {name}: {value}")


def check_args(*, n_betas: int = 2, nan_ok: bool = False, **named: Any) -> None:
    """timm's torch-style constructor checks, in the order given, with their messages.

    ``lr``: ``>= 0`` (``Invalid learning rate: <lr>``); ``eps``: ``>= 0`` (``Invalid epsilon
    value: <eps>``); ``betas``: the first ``n_betas`` each in ``[0, 1)`` (``Invalid beta
    parameter at index <i>: <beta>``); any other name: ``>= 0`` (``Invalid <name> value:
    <value>``). ``nan_ok``: test ``value < 0`` (NaN passes, as in timm's ``Lars`` and ``SGDW``)
    instead of ``not value >= 0``.

    Example::

        >>> check_args(lr=lr, eps=eps, betas=betas)
    """
    for name, value in named.items():
        if name == "betas":
            for i in range(n_betas):
                if not 0.0 <= value[i] < 1.0:
                    raise ValueError(f"Invalid beta parameter at index {i}: {value[i]}")
        elif (value < 0.0) if nan_ok else not value >= 0.0:
            if name == "lr":
                raise ValueError(f"Invalid learning rate: {value}")
            raise ValueError(f"Invalid {'epsilon' if name == 'eps' else name} value: {value}")


def max_lr_snapshot(lr: Any, corrected_weight_decay: bool = False) -> float:
    """timm's ``_max_lr_snapshot``: the constructor's lr, for corrected weight decay."""
    max_lr = float(lr.detach()) if isinstance(lr, Tensor) else float(lr)
    if corrected_weight_decay and max_lr <= 0:
        raise ValueError(
            f"Corrected weight decay requires a positive max lr, got {max_lr}. Construct the "
            "optimizer with the peak lr."
        )
    return max_lr


def wd_factor(lr: Any, weight_decay: Any, max_lr: float | None) -> Any:
    """The decoupled decay coefficient *before* the learning rate: timm multiplies the params by
    ``1 - s * weight_decay`` with ``s = lr`` or, corrected, ``s = lr ** 2 / max_lr``; the chain
    adds ``weight_decay * p`` (times ``lr / max_lr`` when corrected) before ``-lr``."""
    if max_lr is None:
        return weight_decay
    return lr / max_lr * weight_decay


def int_steps(
    state_dict: dict[str, Any], numbers: Mapping[str, type] | None = None
) -> dict[str, Any]:
    """``state_dict`` with per-parameter entries as Python numbers, timm's types for the
    optimizers that count in Python: ``numbers`` maps an entry's key to ``int`` or ``float``
    (default ``{"step": int}``). A tensor count would make timm compute its bias corrections in
    float32 after loading. Loading needs no counterpart: a Python number is cast to the state's
    dtype like any saved value."""
    numbers = {"step": int} if numbers is None else numbers
    for entry in state_dict["state"].values():
        for key, kind in numbers.items():
            value = entry.get(key)
            if isinstance(value, Tensor):
                entry[key] = kind(value)
    return state_dict


class IntStepDropIn(TorchOptimDropIn):
    """A drop-in whose original keeps some per-parameter entries (``step`` at least) as Python
    numbers: its ``state_dict`` writes them so (:func:`int_steps`), for the original to load.

    ``_python_numbers`` maps the keys to ``int`` or ``float``; default ``{"step": int}``."""

    _python_numbers: ClassVar[Mapping[str, type]] = {"step": int}

    def state_dict(self) -> dict[str, Any]:
        return int_steps(super().state_dict(), self._python_numbers)
