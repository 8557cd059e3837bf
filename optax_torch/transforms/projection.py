"""AdamP / SGDP's projection: remove the radial component of updates to scale-invariant weights."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from optax_torch import _validate, tree
from optax_torch.base import (
    GradientTransformationExtraArgs,
    donation_safe,
    is_donation_safe,
    with_extra_args_support,
)
from optax_torch.transforms.caution import _cautious

__all__ = ["project_scale_invariant"]


def _project_leaf(
    u: torch.Tensor, g: torch.Tensor, p: torch.Tensor, delta: float, eps: float, caution: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(projected update, whether projected) of one leaf with ``p.dim() > 1``."""
    expand = (-1,) + (1,) * (p.dim() - 1)
    plain = _cautious(u, g, 1e-3) if caution else u
    out, projected = plain, torch.zeros((), dtype=torch.bool, device=p.device)
    # The channel view is tried first: where it projects, it wins (the layer view is the fallback).
    for view in (lambda x: x.reshape(1, -1), lambda x: x.reshape(x.size(0), -1)):
        p_view = view(p)
        cos = F.cosine_similarity(view(g), p_view, dim=1, eps=eps).abs()
        hit = cos.max() < delta / math.sqrt(p_view.size(1))
        p_n = p / p_view.norm(p=2, dim=1).add(eps).reshape(expand)
        v = u - p_n * view(p_n * u).sum(dim=1).reshape(expand)
        if caution:
            g_perp = g - p_n * view(p_n * g).sum(dim=1).reshape(expand)
            v = _cautious(v, g_perp, 1e-3)
            v = v - p_n * view(p_n * v).sum(dim=1).reshape(expand)
        out = torch.where(hit, v, out)
        projected = projected | hit
    return out, projected


def project_scale_invariant(
    inner: Any,
    delta: float = 0.1,
    wd_ratio: float = 0.1,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    caution: bool = False,
) -> GradientTransformationExtraArgs:
    r"""Runs ``inner`` and projects its updates off the radial direction of scale-invariant
    weights (AdamP / SGDP), with decoupled weight decay reduced on the projected weights.

    For each leaf :math:`p` with more than one dimension, with :math:`g` the gradient and
    :math:`u = \text{inner}(g)`: for the view :math:`V` = per output channel (rows of
    ``p.reshape(p.shape[0], -1)``), then the whole tensor (one row), if
    :math:`\max_\text{rows} |\cos(g, p)| < \delta / \sqrt{d}` (:math:`d` the row length; a
    weight whose gradient is nearly orthogonal to it, i.e. scale invariant), the update loses
    its radial part,

    .. math::
        \hat p = p / (\|p\|_\text{row} + \epsilon), \qquad
        u \leftarrow u - \hat p\, \langle \hat p, u\rangle_\text{row},

    and its decay is scaled by ``wd_ratio``; the first view that qualifies is used. The output is
    :math:`u + \lambda r p` with :math:`\lambda` = ``weight_decay`` and :math:`r` = ``wd_ratio``
    for projected leaves, 1 otherwise. With ``caution`` (timm's spherical cautious optimizer),
    a projected update is masked where it disagrees with the tangential gradient
    :math:`g - \hat p \langle \hat p, g\rangle` (the mask rescaled by its mean, floored at
    ``1e-3``) and projected again; other leaves get the plain cautious mask against :math:`g`.

    Args:
      inner: the transformation giving the direction (e.g. Adam's, or momentum for SGDP).
      delta: the cosine threshold :math:`\delta` (default 0.1).
      wd_ratio: decay factor of projected weights (default 0.1).
      eps: in the cosine and the normalisation (default 1e-8).
      weight_decay: decoupled decay :math:`\lambda` added to the update (default 0).
      caution: cautious masking (default ``False``).

    Needs ``params``; refuses complex ones at init. Reference: Heo et al., `AdamP: Slowing Down
    the Slowdown for Momentum Optimizers on Scale-invariant Weights
    <https://arxiv.org/abs/2006.08217>`_, ICLR 2021.

    Example::

        >>> from optax_torch.transforms.projection import project_scale_invariant
        >>> tx = otx.chain(project_scale_invariant(otx.scale_by_adam()),
        ...                otx.scale_by_learning_rate(1e-3))
    """
    _validate.check_non_negative("delta", delta)
    _validate.check_non_negative("wd_ratio", wd_ratio)
    _validate.check_non_negative("eps", eps)
    _validate.check_finite("weight_decay", weight_decay)
    inner = with_extra_args_support(inner)

    def leaf(u, g, p):
        if u is None or g is None:
            return u
        ratio: Any = 1.0
        if p.dim() > 1 and p.numel() > 0:
            u, projected = _project_leaf(u, g, p, delta, eps, caution)
            ratio = torch.where(projected, torch.tensor(float(wd_ratio), dtype=torch.float64), 1.0)
        elif caution:
            u = _cautious(u, g, 1e-3)
        if weight_decay != 0:
            u = u + p * (weight_decay * ratio)
        return u

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError("project_scale_invariant needs params")
        new_updates, new_state = inner.update(updates, state, params, **extra_args)
        out = tree.cast_like(tree.map(leaf, new_updates, updates, params), updates)  # 0-d leaves
        return out, new_state

    if is_donation_safe(inner):
        update_fn = donation_safe(update_fn)

    def init_fn(params):
        # cosines, norms and the cautious mask of real weights (timm's AdamP / SGDP neither)
        _validate.check_real_params(params, "project_scale_invariant")
        return inner.init(params)

    return GradientTransformationExtraArgs(init_fn, update_fn)
