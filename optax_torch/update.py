"""Applying updates to parameters."""

from __future__ import annotations

from typing import Any

import torch

from optax_torch import tree
from optax_torch.base import Params, Updates

__all__ = ["apply_updates", "incremental_update", "periodic_update", "scale_gradient"]


def apply_updates(params: Params, updates: Updates) -> Params:
    """Returns ``params + updates`` (a new tree; ``params`` is not modified).

    Leaves whose update is ``None`` are returned unchanged. Each result keeps its parameter's dtype
    (an update of another dtype is cast), as in optax.

    Example::

        >>> updates, state = tx.update(grads, state, params)
        >>> params = optax_torch.apply_updates(params, updates)
    """

    def kernel(b, us, ps):
        if all(u.dtype == p.dtype for u, p in zip(us, ps)):
            return b.add(ps, us)
        # Mixed precision: add in the wider dtype, round once to the parameter's dtype.
        return [
            p + u
            if u.dtype == p.dtype
            else (p.to(torch.promote_types(p.dtype, u.dtype)) + u).to(p.dtype)
            for u, p in zip(us, ps)
        ]

    # Grouping follows the *updates*; parameters without an update pass through.
    summed = tree._apply(kernel, updates, params, names=("updates", "params"))
    return tree.map(lambda p, s: p if s is None else s, params, summed)


def incremental_update(new_tensors: Params, old_tensors: Params, step_size: float | torch.Tensor):
    """Polyak averaging: ``step_size * new + (1 - step_size) * old``.

    Used for target networks: ``step_size=1`` copies ``new``, ``step_size=0`` keeps ``old``.
    """
    return tree._apply(
        lambda b, olds, news: b.lerp(olds, news, step_size),
        old_tensors,
        new_tensors,
        names=("old_tensors", "new_tensors"),
    )


def periodic_update(
    new_tensors: Params, old_tensors: Params, steps: torch.Tensor, update_period: int
) -> Params:
    """Returns ``new_tensors`` every ``update_period`` steps (``steps % update_period == 0``), else
    ``old_tensors``. Traceable: the choice is a ``torch.where``, not a Python branch."""
    cond = torch.as_tensor(steps) % update_period == 0
    return tree.where(cond, new_tensors, old_tensors)


def scale_gradient(inputs: Any, scale: float | torch.Tensor) -> Any:
    """Returns ``inputs`` unchanged in the forward pass; scales their gradient by ``scale``.

    ``x.detach() + (x - x.detach()) * scale``: the value is exactly ``x`` and the derivative is
    ``scale``. ``scale == 1`` returns the inputs; ``scale == 0`` detaches them.

    Example::

        >>> y = otx.scale_gradient(x, 0.1)  # y == x; dL/dx = 0.1 * dL/dy
    """
    if not isinstance(scale, torch.Tensor) and scale == 1.0:
        return inputs
    if not isinstance(scale, torch.Tensor) and scale == 0.0:
        return tree.map(lambda x: x.detach(), inputs)
    return tree.map(lambda x: x.detach() + (x - x.detach()) * scale, inputs)
