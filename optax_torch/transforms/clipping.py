"""Clipping of updates: element-wise and by global norm."""

from __future__ import annotations

import torch

from optax_torch import tree
from optax_torch.base import EmptyState, GradientTransformation, donation_safe

__all__ = ["ClipByGlobalNormState", "ClipState", "clip", "clip_by_global_norm"]

ClipState = EmptyState
ClipByGlobalNormState = EmptyState


def clip(max_delta: float | torch.Tensor) -> GradientTransformation:
    """Clips every update element to ``[-max_delta, max_delta]``."""

    def init_fn(params):
        del params
        return ClipState()

    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        return tree.clip(updates, -max_delta, max_delta), state

    return GradientTransformation(init_fn, update_fn)


def clip_by_global_norm(max_norm: float | torch.Tensor) -> GradientTransformation:
    r"""Rescales all updates together so that their global L2 norm is at most ``max_norm``.

    .. math::
        u \leftarrow u \cdot \min\!\left(1, \frac{\text{max\_norm}}{\lVert u \rVert_2}\right)

    The norm is taken over all leaves as one vector (``torch.nn.utils.clip_grad_norm_`` without its
    ``1e-6``). Traceable: the choice is a ``torch.where`` on the norm, no host synchronisation.

    Reference: Pascanu et al., 2013, https://arxiv.org/abs/1211.5063
    """

    def init_fn(params):
        del params
        return ClipByGlobalNormState()

    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        g_norm = tree.norm(updates)
        max_n = torch.as_tensor(max_norm, dtype=g_norm.dtype, device=g_norm.device)
        factor = torch.where(g_norm < max_n, torch.ones_like(g_norm), max_n / g_norm)
        return tree.scale(factor, updates), state

    return GradientTransformation(init_fn, update_fn)
