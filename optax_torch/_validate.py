"""Hyperparameter validation at construction time (``ValueError`` naming the argument and value).

Constructors call these on the arguments they receive. Only plain Python numbers are checked:
tensors (e.g. the 0-d hyperparameters :func:`optax_torch.inject_hyperparams` passes, which may be
traced) and schedules (callables) pass through, as do ``None`` values (for optional arguments).

Each check returns its value, so a constructor can write ``eps = check_non_negative("eps", eps)``.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "check_decay",
    "check_finite",
    "check_in_range",
    "check_non_negative",
    "check_positive",
    "check_positive_int",
]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fail(name: str, value: Any, what: str) -> None:
    raise ValueError(f"{name} must be {what}, got {name}={value!r}")


def check_finite(name: str, value: Any) -> Any:
    """A number that is not NaN or infinite (e.g. a learning rate, which may be negative)."""
    if _is_number(value) and not math.isfinite(value):
        _fail(name, value, "finite")
    return value


def check_non_negative(name: str, value: Any) -> Any:
    """A finite number ``>= 0`` (e.g. ``eps``, a weight decay, a clipping threshold)."""
    if _is_number(value) and not (math.isfinite(value) and value >= 0):
        _fail(name, value, "a finite number >= 0")
    return value


def check_positive(name: str, value: Any) -> Any:
    """A finite number ``> 0``."""
    if _is_number(value) and not (math.isfinite(value) and value > 0):
        _fail(name, value, "a finite number > 0")
    return value


def check_decay(name: str, value: Any, *, allow_one: bool = False) -> Any:
    """A decay rate in ``[0, 1)`` (``[0, 1]`` with ``allow_one``), e.g. Adam's ``b1``/``b2``."""
    if _is_number(value):
        ok = 0 <= value <= 1 if allow_one else 0 <= value < 1
        if not ok:
            _fail(name, value, "in [0, 1]" if allow_one else "in [0, 1)")
    return value


def check_in_range(
    name: str,
    value: Any,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Any:
    """A number in the interval from ``low`` to ``high`` (closed unless ``*_open``)."""
    if _is_number(value):
        ok_low = value > low if low_open else value >= low
        ok_high = value < high if high_open else value <= high
        if not (ok_low and ok_high):
            interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
            _fail(name, value, f"in {interval}")
    return value


def check_positive_int(name: str, value: Any) -> Any:
    """An ``int >= 1`` (e.g. ``every_k_schedule``, a history size, a period)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        if callable(value) or value is None:
            return value
        _fail(name, value, "an integer >= 1")
    return value


# --------------------------------------------------------------------------------------------
# Trees: the leaves of params / gradients / states (called at init, and on error paths only)
# --------------------------------------------------------------------------------------------


def leaf_path(tree: Any, index: int) -> str:
    """The pytree path (e.g. ``['enc']['w']``, ``[0]``) of leaf ``index`` of ``tree``, in
    flattening order with ``None`` leaves counted (as :func:`optax_torch.tree.flatten`)."""
    from torch.utils import _pytree

    def is_leaf(x: Any) -> bool:
        return x is None

    with_paths, _ = _pytree.tree_flatten_with_path(tree, is_leaf=is_leaf)
    if not 0 <= index < len(with_paths):
        return f"<leaf {index}>"
    return _pytree.keystr(with_paths[index][0])


def leaf_paths(tree: Any) -> list[str]:
    """The pytree paths of all leaves of ``tree`` (``None`` leaves counted)."""
    from torch.utils import _pytree

    with_paths, _ = _pytree.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)
    return [_pytree.keystr(path) for path, _ in with_paths]


def describe_leaf(x: Any) -> str:
    """``tensor of shape (2, 3), dtype torch.float32 on cpu`` or ``float 1.0``."""
    import torch

    if isinstance(x, torch.Tensor):
        layout = "" if x.layout == torch.strided else f", layout {x.layout}"
        return f"tensor of shape {tuple(x.shape)}, dtype {x.dtype} on {x.device.type}{layout}"
    return f"{type(x).__name__} {x!r}"[:120]


def is_float_tensor(x: Any) -> bool:
    """A floating-point or complex tensor (what can be optimized)."""
    import torch

    return isinstance(x, torch.Tensor) and (x.is_floating_point() or x.is_complex())


def check_real_params(params: Any, who: str) -> None:
    """``ValueError`` (optax's type for this, e.g. in ``scale_by_sm3``) naming the first complex
    leaf of ``params``: a transformation that does not support complex parameters calls this at
    init (one pass over the leaves, at init only)."""
    import torch
    from torch.utils import _pytree

    leaves = _pytree.tree_leaves(params, is_leaf=lambda x: x is None)
    for i, x in enumerate(leaves):
        if isinstance(x, torch.Tensor) and x.is_complex():
            raise ValueError(
                f"{who} does not support complex parameters: params{leaf_path(params, i)} "
                f"is a {describe_leaf(x)} (split real and imaginary parts with "
                "optax_torch.contrib.split_real_and_imaginary, or use a transformation that "
                "supports complex parameters)"
            )
