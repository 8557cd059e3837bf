"""GaLore: optimizer states in a low-rank projection of the gradients of matrix weights."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from optax_torch import _validate, numerics, tree
from optax_torch import transforms as T
from optax_torch.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    OptState,
    Params,
    ScalarOrSchedule,
    Updates,
)
from optax_torch.combine import chain

__all__ = ["GaLoreDimensionNumbers", "GaLoreState", "galore", "scale_by_galore"]


class GaLoreDimensionNumbers(NamedTuple):
    """Which axes of a weight form the 2-d matrix GaLore projects.

    The weight is reshaped to ``(prod(reduction axes), prod(output axes))``; every axis must be
    one or the other. E.g. attention weights ``(embed, heads, head_dim)``:
    ``GaLoreDimensionNumbers(reduction_axis=0, output_axis=(1, 2))``.
    """

    reduction_axis: Sequence[int] | int = 0
    output_axis: Sequence[int] | int = 1


GaLoreDimNumsOrFn = GaLoreDimensionNumbers | Params | Callable[[Params], Params | None]


class GaLoreState(NamedTuple):
    """State of :func:`scale_by_galore`.

    Attributes:
      count: number of update steps taken (0-d int32).
      base_optimizer_state: the base optimizer's state, on the low-rank gradients of the
        projected parameters and the full gradients of the others.
      projector: the projection matrix of each projected parameter (``(0, 0)`` for the others).
    """

    count: torch.Tensor
    base_optimizer_state: OptState
    projector: Updates


class _Spec:
    """A dimension-numbers leaf hidden from pytree flattening (it is a NamedTuple)."""

    __slots__ = ("dim_nums",)

    def __init__(self, dim_nums: GaLoreDimensionNumbers):
        self.dim_nums = dim_nums


def _reshape_fns(x: torch.Tensor, d: GaLoreDimensionNumbers):
    """``(to_2d, from_2d)`` for ``x`` read as a (reduction, output) matrix."""
    if x.ndim < 2:
        raise ValueError(f"GaLore requires tensors with rank >= 2, got shape {tuple(x.shape)}")

    def norm(a: Sequence[int] | int) -> tuple[int, ...]:
        return tuple(ax % x.ndim for ax in ((a,) if isinstance(a, int) else a))

    red, out = norm(d.reduction_axis), norm(d.output_axis)
    if set(red) & set(out):
        raise ValueError(
            f"Reduction axes {red} and output axes {out} must be disjoint. "
            f"Got dim_nums={d} for shape {tuple(x.shape)}"
        )
    if len(set(red) | set(out)) != x.ndim:
        raise ValueError(
            f"All axes must be specified. Got reduction={red}, output={out} for tensor with "
            f"{x.ndim} dimensions"
        )
    perm = red + out
    inv = tuple(sorted(range(x.ndim), key=lambda i: perm[i]))
    shape = tuple(x.shape[a] for a in perm)
    flat = (math.prod([x.shape[a] for a in red]), math.prod([x.shape[a] for a in out]))
    return (lambda y: y.permute(perm).reshape(flat)), (lambda y: y.reshape(shape).permute(inv))


def _refresh(cond: torch.Tensor, compute: Callable[[], torch.Tensor], keep: torch.Tensor):
    """``compute()`` where ``cond`` else ``keep``: eagerly only computed when needed (reading
    the CPU step count); when traced, computed and selected with ``torch.where``."""
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return torch.where(cond, compute(), keep)
    return compute() if bool(cond) else keep


def scale_by_galore(
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 1.0,
    base_optimizer: GradientTransformation | None = None,
    weight_dimension_numbers: GaLoreDimNumsOrFn | None = None,
) -> GradientTransformation:
    r"""Scales updates by GaLore: the base optimizer runs on low-rank projected gradients.

    For a matrix gradient :math:`G \in \mathbb R^{m\times n}` with :math:`m \ge n` (else
    mirrored, projecting from the right), every ``update_proj_gap`` steps :math:`P` = the first
    :math:`r = \min(\text{rank}, m, n)` left singular vectors of :math:`G` (SVD in float32, as
    optax), and

    .. math::
        R = P^T G,\qquad u = \text{scale}\cdot P\, \text{base}(R).

    Other parameters get the base optimizer's update of their full gradient. The base
    optimizer must not need the params (``scale_by_adam``, ``scale_by_rms``, ...; not
    ``adamw``): it sees low-rank shaped tensors. Singular vectors are defined up to sign and
    LAPACK implementations may pick other signs than JAX's: sign-equivariant base optimizers
    (Adam, SGD) give the same updates, the projector and base state may differ in sign.

    The SVD runs only on refresh steps, decided by reading the CPU step count eagerly; under
    ``torch.compile`` it is computed every step and selected with ``torch.where``.

    Args:
      rank: target rank of the projection, default 128.
      update_proj_gap: steps between projector refreshes, default 200.
      scale: factor on the projected-back updates, default 1.0.
      base_optimizer: the transformation in the low-rank space (default ``scale_by_adam()``).
      weight_dimension_numbers: ``None`` (project the 2-d parameters), one
        :class:`GaLoreDimensionNumbers` (for every parameter of rank >= 2), a tree of them with
        ``None`` for parameters not to project, or a function ``params -> tree``.

    Reference: Zhao et al., 2024, https://arxiv.org/abs/2403.03507

    Example::

        >>> tx = otx.chain(otx.contrib.scale_by_galore(rank=16), otx.scale_by_learning_rate(1e-2))
    """
    # integer 0-d tensors (e.g. from inject_hyperparams) are read once: they fix shapes
    if isinstance(rank, torch.Tensor) and not rank.is_floating_point():
        rank = int(rank)
    if isinstance(update_proj_gap, torch.Tensor):
        update_proj_gap = int(update_proj_gap)
    if not isinstance(rank, int) or isinstance(rank, bool):
        raise TypeError(f"`rank` must be an int, got {type(rank)}")
    if rank <= 0:
        raise ValueError(f"`rank` must be positive, got rank={rank}")
    _validate.check_positive_int("update_proj_gap", update_proj_gap)
    _validate.check_finite("scale", scale)
    base = base_optimizer if base_optimizer is not None else T.scale_by_adam()

    def dim_nums(params) -> list[GaLoreDimensionNumbers | None]:
        xs = tree.flatten(params)[0]
        w = weight_dimension_numbers
        if w is None:
            return [GaLoreDimensionNumbers() if x is not None and x.ndim == 2 else None for x in xs]
        if isinstance(w, GaLoreDimensionNumbers):
            return [w if x is not None and x.ndim >= 2 else None for x in xs]
        resolved = w(params) if callable(w) else w
        import torch.utils._pytree as _py

        wrapped = _py.tree_map(
            lambda d: None if d is None else _Spec(d),
            resolved,
            is_leaf=lambda d: d is None or isinstance(d, GaLoreDimensionNumbers),
        )
        flat = tree.broadcast_prefix(wrapped, params)
        return [None if x is None or s is None else s.dim_nums for x, s in zip(xs, flat)]

    def shapes(x: torch.Tensor, d: GaLoreDimensionNumbers | None):
        if d is None:
            return torch.zeros((0, 0), dtype=x.dtype, device=x.device), torch.zeros_like(x)
        m, n = _reshape_fns(x, d)[0](x).shape
        r = min(rank, m, n)
        proj = (m, r) if m >= n else (n, r)
        proxy = (r, n) if m >= n else (m, r)
        return (
            torch.zeros(proj, dtype=x.dtype, device=x.device),
            torch.zeros(proxy, dtype=x.dtype, device=x.device),
        )

    def init_fn(params):
        leaves, spec = tree.flatten(params)
        if not tree.leaves(params):
            return GaLoreState(numerics.zero_count(), base.init(params), params)
        pairs = [None if x is None else shapes(x, d) for x, d in zip(leaves, dim_nums(params))]
        projectors = tree.unflatten(spec, [None if p is None else p[0] for p in pairs])
        proxies = tree.unflatten(spec, [None if p is None else p[1] for p in pairs])
        return GaLoreState(numerics.zero_count(), base.init(proxies), projectors)

    def update_fn(updates, state, params=None):
        del params
        refresh = state.count % update_proj_gap == 0
        leaves, spec = tree.flatten(updates)
        projectors = tree.flatten(state.projector)[0]
        specs = dim_nums(updates)
        low: list[Any] = []
        new_proj: list[Any] = []
        for g, p, d in zip(leaves, projectors, specs):
            if g is None or d is None:
                low.append(g)
                new_proj.append(p)
                continue
            g2 = _reshape_fns(g, d)[0](g)
            m, n = g2.shape
            r = min(rank, m, n)
            if m >= n:
                p = _refresh(
                    refresh,
                    lambda g2=g2, r=r: torch.linalg.svd(g2.float(), full_matrices=False)[0][
                        :, :r
                    ].to(g.dtype),
                    p,
                )
                low.append(p.mT @ g2)
            else:
                p = _refresh(
                    refresh,
                    lambda g2=g2, r=r: torch.linalg.svd(g2.float(), full_matrices=False)[2][
                        :r, :
                    ].mT.to(g.dtype),
                    p,
                )
                low.append(g2 @ p)
            new_proj.append(p)
        low_updates, base_state = base.update(tree.unflatten(spec, low), state.base_optimizer_state)
        out: list[Any] = []
        for u, g, p, d in zip(tree.flatten(low_updates)[0], leaves, new_proj, specs):
            if u is None or g is None or d is None:
                out.append(u)
                continue
            m, n = _reshape_fns(g, d)[0](g).shape
            full = p @ u if m >= n else u @ p.mT
            out.append((scale * _reshape_fns(g, d)[1](full)).to(g.dtype))
        return tree.unflatten(spec, out), GaLoreState(
            count=numerics.safe_increment(state.count),
            base_optimizer_state=base_state,
            projector=tree.unflatten(spec, new_proj),
        )

    return GradientTransformation(init_fn, update_fn)


def galore(
    learning_rate: ScalarOrSchedule,
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 1.0,
    base_optimizer: GradientTransformation | None = None,
    weight_decay: float | torch.Tensor = 0.0,
    mask: Any | Callable[[Params], Any] | None = None,
    weight_dimension_numbers: GaLoreDimNumsOrFn | None = None,
) -> GradientTransformationExtraArgs:
    r"""GaLore: memory-efficient training by gradient low-rank projection.

    ``chain(scale_by_galore(rank, update_proj_gap, scale, base_optimizer,
    weight_dimension_numbers), add_decayed_weights(weight_decay, mask),
    scale_by_learning_rate(learning_rate))``: the base optimizer (default Adam) keeps its state
    for :math:`P^T G` instead of :math:`G`, and the weight decay is applied in the full space.
    See :func:`scale_by_galore` for the math.

    Args:
      learning_rate: learning rate or schedule.
      rank: target rank of the projection, default 128.
      update_proj_gap: steps between projector refreshes (SVDs), default 200.
      scale: factor on the projected-back updates, default 1.0.
      base_optimizer: gradient-only transformation in the low-rank space (default
        ``scale_by_adam()``; not ``adamw``: use ``weight_decay`` here).
      weight_decay: decoupled weight decay, default 0.
      mask: mask (tree or function) of the parameters to decay.
      weight_dimension_numbers: see :func:`scale_by_galore`.

    Reference: Zhao et al., 2024, https://arxiv.org/abs/2403.03507

    Example::

        >>> opt = otx.contrib.galore(1e-2, rank=16, weight_decay=0.01)
    """
    _validate.check_finite("learning_rate", learning_rate)
    _validate.check_non_negative("weight_decay", weight_decay)
    return chain(
        scale_by_galore(
            rank=rank,
            update_proj_gap=update_proj_gap,
            scale=scale,
            base_optimizer=base_optimizer,
            weight_dimension_numbers=weight_dimension_numbers,
        ),
        T.add_decayed_weights(weight_decay, mask),
        T.scale_by_learning_rate(learning_rate),
    )
