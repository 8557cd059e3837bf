"""apply_every: accumulate gradients and apply them every k steps."""

from __future__ import annotations

from typing import NamedTuple

import torch

from optax_torch import numerics, tree
from optax_torch._validate import check_positive_int
from optax_torch.base import GradientTransformation, Updates, donation_safe

__all__ = ["ApplyEvery", "apply_every"]


class ApplyEvery(NamedTuple):
    """State of :func:`apply_every`: a step counter (0-d int32, modulo ``k``) and the
    accumulated gradients."""

    count: torch.Tensor
    grad_acc: Updates


def apply_every(k: int | torch.Tensor = 1) -> GradientTransformation:
    r"""Accumulates updates and emits their sum every ``k`` steps (zeros in between).

    .. math::
        a_t = g_t + [t \bmod k \ne 0]\; a_{t-1}, \qquad u_t = [t \bmod k = k - 1]\; a_t

    Unlike :class:`MultiSteps`, the transformations chained before or after this one still
    update their states on every step, so ``apply_every(2)`` on batches of ``N/2`` is not the
    same as batches of ``N``; use :class:`MultiSteps` for that equivalence. Branch-free.

    Args:
      k: emit the accumulated updates every ``k`` steps (an ``int >= 1`` or a 0-d integer
        tensor).

    Example::

        >>> tx = otx.chain(otx.apply_every(4), otx.sgd(0.1))
    """
    if not isinstance(k, torch.Tensor):  # a 0-d tensor is not checked (it may be traced)
        check_positive_int("k", k)

    def init_fn(params):
        return ApplyEvery(count=numerics.zero_count(), grad_acc=tree.zeros_like(params))

    @donation_safe  # grad_acc is read once, by the add that replaces it
    def update_fn(updates, state, params=None):
        del params
        c = state.count % k
        keep = (c != 0).to(torch.float64)
        grad_acc = tree.add_scale(updates, keep, state.grad_acc)
        emit = (c == k - 1).to(torch.float64)
        updates = tree.scale(emit, grad_acc)
        count = (numerics.safe_increment(state.count) % k).to(state.count.dtype)
        return updates, ApplyEvery(count=count, grad_acc=grad_acc)

    return GradientTransformation(init_fn, update_fn)
