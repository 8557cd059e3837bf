"""Small exact numerical helpers shared by transforms."""

from __future__ import annotations

import torch

__all__ = [
    "abs_sq",
    "safe_increment",
    "safe_int32_increment",
    "safe_norm",
    "safe_root_mean_squares",
    "safe_sqrt",
    "zero_count",
]


def zero_count() -> torch.Tensor:
    """A fresh step counter: a 0-d int32 tensor on the CPU, like ``torch.optim``'s ``step``.

    Counters live on the CPU so that eager steps read them without a device synchronisation;
    0-d CPU tensors combine freely with accelerator tensors.
    """
    return torch.zeros((), dtype=torch.int32)


def safe_increment(count: torch.Tensor) -> torch.Tensor:
    """``count + 1``, saturating at the largest value of ``count``'s integer dtype (no overflow)."""
    count = torch.as_tensor(count)
    if count.is_floating_point():
        return count + 1
    max_value = torch.iinfo(count.dtype).max
    return torch.where(count < max_value, count + 1, torch.full_like(count, max_value))


safe_int32_increment = safe_increment
"""optax's name of :func:`safe_increment` (for the int32 step counters)."""


def abs_sq(x: torch.Tensor) -> torch.Tensor:
    """``|x|**2`` (real-valued for complex ``x``)."""
    return (x.conj() * x).real if x.is_complex() else x * x


def safe_norm(
    x: torch.Tensor, min_norm: float, ord: int | float | str | None = None, dim=None, keepdim=False
) -> torch.Tensor:
    """``max(||x||, min_norm)`` whose gradient is zero (not NaN) where ``||x|| <= min_norm``."""
    norm = torch.linalg.vector_norm(x, ord if ord is not None else 2, dim=dim, keepdim=keepdim)
    small = norm <= min_norm
    # Recompute on a masked input so the backward pass never divides by zero.
    masked = torch.where(small, torch.ones_like(norm), norm)
    return torch.where(small, torch.as_tensor(min_norm, dtype=norm.dtype), masked)


def safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(x)`` for ``x >= 0``, whose gradient at ``x = 0`` is 0 (a subgradient) instead of
    the infinite derivative that makes the backward pass give NaN (``inf * 0``)."""
    positive = x > 0
    root = torch.sqrt(torch.where(positive, x, torch.ones_like(x)))
    return torch.where(positive, root, torch.zeros_like(root))


def safe_root_mean_squares(x: torch.Tensor, min_rms: float) -> torch.Tensor:
    """``max(sqrt(mean(x**2)), min_rms)`` with a NaN-free gradient."""
    rms = safe_sqrt(torch.mean(abs_sq(x)))
    small = rms <= min_rms
    return torch.where(small, torch.as_tensor(min_rms, dtype=rms.dtype), rms)
