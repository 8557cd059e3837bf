"""Clipping of updates: element-wise, by global norm, by block RMS, unit-wise (AGC), per example."""

from __future__ import annotations

import math
from typing import Any

import torch

from optax_torch import _validate, numerics, tree
from optax_torch.base import (
    EmptyState,
    GradientTransformation,
    _reuses_updates,
    donation_safe,
    elementwise,
    leafwise,
)
from optax_torch.transforms.normalization import _like, _root_sizes, unitwise_norm

__all__ = [
    "AdaptiveGradClipState",
    "ClipByBlockRMSState",
    "ClipByGlobalNormState",
    "ClipState",
    "adaptive_grad_clip",
    "clip",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "per_example_global_norm_clip",
    "per_example_layer_norm_clip",
    "unitwise_clip",
]

Num = float | torch.Tensor

ClipState = EmptyState
ClipByGlobalNormState = EmptyState
ClipByBlockRMSState = EmptyState
AdaptiveGradClipState = EmptyState


def clip(max_delta: float | torch.Tensor) -> GradientTransformation:
    """Clips every update element to ``[-max_delta, max_delta]``."""

    _validate.check_non_negative("max_delta", max_delta)

    def init_fn(params):
        del params
        return ClipState()

    @elementwise
    @leafwise
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

    _validate.check_non_negative("max_norm", max_norm)

    def init_fn(params):
        del params
        return ClipByGlobalNormState()

    @elementwise
    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        g_norm = tree.norm(updates)
        max_n = torch.as_tensor(max_norm, dtype=g_norm.dtype, device=g_norm.device)
        # the double where keeps the gradient finite (identity) at a zero tree, not NaN
        small = g_norm < max_n
        factor = torch.where(small, torch.ones_like(g_norm), max_n / torch.where(small, 1, g_norm))
        return tree.scale(factor, updates), state

    return GradientTransformation(init_fn, update_fn)


def clip_by_block_rms(threshold: Num) -> GradientTransformation:
    r"""Rescales each update block so that its root mean square is at most ``threshold``.

    .. math::
        u_b \leftarrow \frac{u_b}{\max\!\big(1,\ \sqrt{\operatorname{mean}(|u_b|^2)} /
        \text{threshold}\big)}

    for every leaf :math:`b` of the tree (a weight vector or matrix); Adafactor's update clipping.

    Args:
      threshold: the largest RMS an update block keeps.

    Reference: Shazeer & Stern, 2018, https://arxiv.org/abs/1804.04235

    Example::

        >>> tx = otx.chain(otx.clip_by_block_rms(1.0), otx.scale(-1e-2))
    """
    _validate.check_non_negative("threshold", threshold)

    def divisor(norm: torch.Tensor, root_size: Num) -> torch.Tensor:
        rms = norm / root_size  # elementwise: all blocks at once (tree.map_scalars)
        return torch.clamp(rms / _like(threshold, rms), min=1.0)

    def init_fn(params):
        del params
        return ClipByBlockRMSState()

    # divided in place when a chain donates the updates (one divisor per block, then one div)
    @leafwise
    @donation_safe
    @_reuses_updates
    def update_fn(updates, state, params=None):
        del params
        norms = tree.leaf_norms(updates)
        return tree.div(updates, tree.map_scalars(divisor, norms, _root_sizes(updates))), state

    return GradientTransformation(init_fn, update_fn)


def unitwise_clip(
    g_norm: torch.Tensor,
    max_norm: torch.Tensor,
    grad: torch.Tensor,
    div_eps: Num = 1e-6,
) -> torch.Tensor:
    r"""Clips ``grad`` unit-wise: where ``g_norm >= max_norm`` it is rescaled to ``max_norm``.

    .. math::
        g \leftarrow \begin{cases} g & \text{if } \lVert g\rVert < m,\\
        g\, m / \max(\lVert g \rVert, \text{div\_eps}) & \text{otherwise,}\end{cases}

    element by element, with the unit norms :math:`\lVert g\rVert` = ``g_norm`` and the bounds
    :math:`m` = ``max_norm`` given as tensors of ``grad``'s shape (see :func:`unitwise_norm`).

    Args:
      g_norm: the unit-wise norms of ``grad``, broadcast to its shape.
      max_norm: the largest norm of each unit, of the same shape.
      grad: the tensor to clip.
      div_eps: lower bound of the divisor (default ``1e-6``), against division by zero.

    Raises:
      ValueError: if the three shapes differ.
    """
    if not (g_norm.shape == max_norm.shape == grad.shape):
        raise ValueError(
            "unitwise_clip: g_norm, max_norm and grad must have the same shape, got "
            f"{tuple(g_norm.shape)}, {tuple(max_norm.shape)} and {tuple(grad.shape)}"
        )
    clipped = grad * (max_norm / torch.clamp(g_norm, min=_like(div_eps, g_norm)))
    return torch.where(g_norm < max_norm, grad, clipped)


def adaptive_grad_clip(
    clipping: Num,
    eps: Num = 1e-3,
    axis: int | tuple[int, ...] | None = None,
) -> GradientTransformation:
    r"""Adaptive gradient clipping (AGC): clips each unit of the update relative to its parameter.

    .. math::
        u_i \leftarrow \begin{cases} u_i & \text{if } \lVert u_i \rVert < \lambda
        \max(\lVert p_i \rVert, \epsilon),\\
        \lambda \max(\lVert p_i \rVert, \epsilon)\, u_i / \lVert u_i \rVert &
        \text{otherwise,}\end{cases}

    for every unit :math:`i` (see :func:`unitwise_norm`) with :math:`\lambda` = ``clipping``.
    Needs ``params``.

    Args:
      clipping: the largest ratio of a unit's update norm to its parameter norm.
      eps: lower bound of the parameter norm (default ``1e-3``), so that zero-initialised
        parameters can move.
      axis: the axis or axes of the unit-wise norms (``None``: from each leaf's rank, see
        :func:`unitwise_norm`).

    Reference: Brock et al., 2021, https://arxiv.org/abs/2102.06171

    Example::

        >>> tx = otx.chain(otx.adaptive_grad_clip(0.01), otx.sgd(0.1, momentum=0.9))
    """
    _validate.check_non_negative("clipping", clipping)
    _validate.check_non_negative("eps", eps)

    def clip_leaf(u: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        g_norm = unitwise_norm(u, axis=axis)
        p_norm = unitwise_norm(p, axis=axis)
        max_norm = _like(clipping, p_norm) * torch.clamp(p_norm, min=_like(eps, p_norm))
        return unitwise_clip(g_norm, max_norm.to(g_norm.dtype), u)

    def init_fn(params):
        del params
        return AdaptiveGradClipState()

    @donation_safe
    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("adaptive_grad_clip needs params: call update(updates, state, params)")
        return tree.map(clip_leaf, updates, params), state

    return GradientTransformation(init_fn, update_fn)


def _batch_leaves(grads: Any, name: str) -> list[torch.Tensor]:
    """The leaves of ``grads`` (``None`` skipped), checked to share a leading batch axis."""
    xs = tree.leaves(grads)
    if xs:
        batch = xs[0].shape[0] if xs[0].ndim >= 1 else None
        if batch is None or any(x.ndim < 1 or x.shape[0] != batch for x in xs):
            raise ValueError(
                f"{name} expects every gradient leaf to have a batch axis in dimension 0 "
                f"(the same size for all); got shapes {[tuple(x.shape) for x in xs]}"
            )
    return xs


def _check_clip(name: str, value: Any) -> None:
    """A clipping norm: a number in ``[0, inf]`` (``inf`` means no clipping)."""
    _validate.check_in_range(name, value, 0.0, math.inf)


def per_example_global_norm_clip(grads: Any, l2_norm_clip: Num) -> tuple[Any, torch.Tensor]:
    r"""Clips each example's gradient to a global L2 norm, then sums over the examples (DP-SGD).

    Every leaf of ``grads`` carries a batch axis first. For example :math:`n` with gradient
    :math:`g^{(n)}` (all leaves' slices :math:`n` together):

    .. math::
        s = \sum_n \min\!\Big(1,\ \frac{C}{\lVert g^{(n)} \rVert_2}\Big)\, g^{(n)}

    with :math:`C` = ``l2_norm_clip`` (a zero gradient keeps the factor 1).

    Args:
      grads: a tree of per-example gradients, each leaf of shape ``(batch, ...)``.
      l2_norm_clip: the largest L2 norm of one example's gradient (``inf``: no clipping).

    Returns:
      ``(clipped_sum, num_clipped)``: the tree of summed clipped gradients (leaves without the
      batch axis) and, as a 0-d int32 tensor, the number of examples that were clipped.

    Raises:
      ValueError: if the leaves do not share a leading batch axis.

    Reference: Abadi et al., 2016, https://arxiv.org/abs/1607.00133

    Example::

        >>> g = [torch.tensor([[0.0, 0, 0], [0, 3, 4], [4, 0, 3], [3, 4, 0]])]
        >>> otx.per_example_global_norm_clip(g, 1.25)
        ([tensor([1.7500, 1.7500, 1.7500])], tensor(3, dtype=torch.int32))
    """
    _check_clip("l2_norm_clip", l2_norm_clip)
    return _clipped_sum(grads, l2_norm_clip, "per_example_global_norm_clip")


def _clipped_sum(grads: Any, l2_norm_clip: Num, name: str) -> tuple[Any, torch.Tensor]:
    xs = _batch_leaves(grads, name)
    if not xs:
        return grads, torch.zeros((), dtype=torch.int32)
    sq = [numerics.abs_sq(x).reshape(x.shape[0], -1).sum(dim=1) for x in xs]
    dtype = sq[0].dtype
    for s in sq[1:]:
        dtype = torch.promote_types(dtype, s.dtype)
    norms = torch.sqrt(torch.stack([s.to(dtype) for s in sq]).sum(dim=0))
    multipliers = torch.nan_to_num(
        torch.clamp(_like(l2_norm_clip, norms) / norms, max=1.0), nan=1.0
    )
    num_clipped = (multipliers < 1.0).sum().to(torch.int32)
    clipped_sum = tree.map(lambda g: torch.tensordot(multipliers.to(g.dtype), g, dims=1), grads)
    return clipped_sum, num_clipped


def per_example_layer_norm_clip(
    grads: Any, global_l2_norm_clip: Num, uniform: bool = True
) -> tuple[Any, Any]:
    r"""Clips each example's gradient layer by layer, then sums over the examples (DP-SGD).

    Every leaf (layer) :math:`i` of ``grads`` carries a batch axis first and is clipped on its own
    as :func:`per_example_global_norm_clip` does, to the norm

    .. math::
        C_i = C / \sqrt{K} \quad (\text{uniform}), \qquad
        C_i = C \sqrt{D_i / D} \quad (\text{otherwise}),

    with :math:`C` = ``global_l2_norm_clip``, :math:`K` the number of layers, :math:`D_i` the
    size of one example's gradient of layer :math:`i` and :math:`D` their total. With one layer
    this is :func:`per_example_global_norm_clip`.

    Args:
      grads: a tree of per-example gradients, each leaf of shape ``(batch, ...)``.
      global_l2_norm_clip: the overall clipping norm :math:`C`.
      uniform: split :math:`C` equally over the layers (default) or by their sizes.

    Returns:
      ``(clipped_sum, num_clipped)``: two trees with the structure of ``grads``: the summed
      clipped gradients, and per layer the number of examples clipped (0-d int32 tensors).

    Raises:
      ValueError: if the leaves do not share a leading batch axis.

    Reference: McMahan et al., 2017, https://arxiv.org/abs/1710.06963

    Example::

        >>> g = {"w": torch.ones(4, 2, 3), "b": torch.ones(4, 3)}
        >>> sums, counts = otx.per_example_layer_norm_clip(g, 1.0)
    """
    _check_clip("global_l2_norm_clip", global_l2_norm_clip)
    xs = _batch_leaves(grads, "per_example_layer_norm_clip")
    total = sum(x[0].numel() for x in xs)

    def layer_clip(g: torch.Tensor) -> Num:
        if uniform:
            return global_l2_norm_clip * (1.0 / len(xs)) ** 0.5
        return global_l2_norm_clip * (g[0].numel() / total if total else math.nan) ** 0.5

    leaves, spec = tree.flatten(grads)
    pairs = [
        (None, None) if g is None else _clipped_sum(g, layer_clip(g), "per_example_layer_norm_clip")
        for g in leaves
    ]
    return tree.unflatten(spec, [p[0] for p in pairs]), tree.unflatten(spec, [p[1] for p in pairs])
