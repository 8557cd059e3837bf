"""Per-leaf ("block") reductions and the scalar math on them: ``leaf_norms``, ``map_scalars``.

Part of the :mod:`optax_torch.tree` namespace. Layer-wise algorithms (LARS, LAMB, Adafactor's
relative step) compute one number per leaf: two norms, then a few scalar operations (a clip,
a ratio, a ``where``). Written leaf by leaf that is a dozen tiny kernels *per tensor*, which
dominates a step on models with many small tensors. Here the norms of all leaves are one
multi-tensor kernel per group, and the scalar math runs once on the stacked scalars of a
group, so the cost no longer grows with the number of tensors.
"""

from __future__ import annotations

import builtins
import operator
from collections.abc import Callable
from typing import Any

import torch

from optax_torch import tree as _tree

__all__ = ["leaf_norms", "map_scalars"]

Tree = Any


def leaf_norms(tree: Tree, ord: int | float | str | None = 2) -> Tree:
    """The norm of each leaf: a tree of 0-d tensors (``None`` leaves stay ``None``).

    ``ord`` in ``{1, 2, inf}`` (``None`` = 2), each leaf seen as one flat vector; the result of
    a leaf has its real dtype (a complex leaf's norm is real), as ``torch.linalg.vector_norm``.
    Eager: one multi-tensor norm per group; compiled, vmapped or differentiated: per-leaf norms
    (whose gradient at a zero leaf is 0, not NaN). With :func:`map_scalars` this is the per-block
    statistic of layer-wise methods without a kernel per tensor::

        >>> ratios = otx.tree.map_scalars(
        ...     lambda u, p: p / u, otx.tree.leaf_norms(updates), otx.tree.leaf_norms(params))
    """
    p = _tree._norm_ord(ord, "leaf_norms")
    return _tree._apply(lambda b, xs: b.norms(xs, p), tree)


def _stack_device(xs: list[Any]) -> torch.device | None:
    """The device of ``xs`` if they are plain 0-d tensors of one dtype on one device, else
    ``None`` (checked in C loops: a few µs for 1,000 scalars)."""
    if torch.compiler.is_compiling():  # dynamo cannot trace attrgetter; it unrolls this
        x0 = xs[0]
        same = builtins.all(
            type(x) is torch.Tensor
            and x.dim() == 0
            and x.dtype == x0.dtype
            and x.device == x0.device
            for x in xs
        )
        return x0.device if same else None
    if builtins.set(builtins.map(type, xs)) != {torch.Tensor}:
        return None
    if builtins.set(builtins.map(torch.Tensor.dim, xs)) != {0}:
        return None
    if len(builtins.set(builtins.map(_dtype, xs))) != 1:
        return None
    devices = builtins.set(builtins.map(_device, xs))
    return devices.pop() if len(devices) == 1 else None


_dtype = operator.attrgetter("dtype")
_device = operator.attrgetter("device")


_NUMBERS = frozenset({int, float})


def _stacked(lists: list[list[Any]]) -> list[torch.Tensor] | None:
    """Each list as a 1-D tensor, or ``None`` where they do not stack: the tensor lists must
    hold plain 0-d tensors of one dtype each, all on one device; a list of Python numbers
    becomes a tensor of the first tensor list's dtype (what a number next to that 0-d tensor
    computes in)."""
    ref = None
    device = None
    for xs in lists:
        if torch.compiler.is_compiling() or not _NUMBERS.issuperset(builtins.map(type, xs)):
            d = _stack_device(xs)
            if d is None or (device is not None and d != device):
                return None
            device = d
            if ref is None:
                ref = xs[0]
    if ref is None:
        return None
    return [
        torch.stack(xs)
        if not isinstance(xs[0], int | float)
        else torch.tensor(xs, dtype=ref.dtype, device=device)
        for xs in lists
    ]


def map_scalars(f: Callable[..., torch.Tensor], tree: Tree, *rest: Tree) -> Tree:
    r"""Applies an *elementwise* ``f`` to trees of 0-d tensors, once per group, not per leaf.

    The trees hold one scalar per leaf (e.g. :func:`leaf_norms` of the updates and of the
    parameters; a tree may also hold Python numbers, e.g. each leaf's size). Where every
    tree's scalars are plain 0-d tensors of one dtype (or Python numbers) on one device, each
    tree's scalars are stacked into a vector (numbers in the first tensor tree's dtype), ``f``
    runs once on those vectors, and its 1-D result is split back into 0-d tensors (views of
    it), one per leaf. Otherwise (DTensors, mixed dtypes or devices, no tensors at all) ``f``
    runs leaf by leaf, as :func:`map` would.

    So ``f`` must act element by element (arithmetic, ``torch.where``, ``clamp``,
    comparisons...) and return one tensor: its result is then that of ``map(f, tree, *rest)``.
    One difference to keep in mind: a 0-d tensor constant inside ``f`` promotes a 0-d leaf's
    dtype but not a vector's (``torch`` type promotion); cast such constants to the leaves'
    dtype and both forms agree. ``None`` leaves give ``None``.

    Example (LARS's trust ratio, one call for all layers)::

        >>> ratios = otx.tree.map_scalars(
        ...     lambda u, p: torch.where((u > 0) & (p > 0), p / u, 1.0),
        ...     otx.tree.leaf_norms(updates), otx.tree.leaf_norms(params))
    """
    first, spec = _tree.flatten(tree)
    others = [
        _tree._flatten_as(spec, t, f"tree #{k + 2}", "the first tree") for k, t in enumerate(rest)
    ]
    lists = [first, *others]
    n = len(first)
    valid = None
    if builtins.any(_tree._has_none(xs) for xs in lists):
        valid = [i for i in range(n) if builtins.all(xs[i] is not None for xs in lists)]
        lists = [[xs[i] for i in valid] for xs in lists]
    if not lists[0]:
        results: list[Any] = []
    elif (stacked := _stacked(lists)) is not None:
        results = list(f(*stacked).unbind(0))
    else:
        results = [f(*xs) for xs in zip(*lists)]
    if valid is None:
        return _tree.unflatten(spec, results)
    out: list[Any] = [None] * n
    for i, r in zip(valid, results):
        out[i] = r
    return _tree.unflatten(spec, out)
