"""Inspection, complex numbers, comparison and random trees, part of :mod:`optax_torch.tree`.

``size``, ``dtype``, ``real``, ``conj``, ``allclose``, ``batch_shape`` and ``random_like``, with
``optax.tree``'s names and signatures (``random_like`` takes a seed or a ``torch.Generator``
where optax takes a JAX key).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any

import torch

from optax_torch import tree as _tree

__all__ = ["allclose", "batch_shape", "conj", "dtype", "random_like", "real", "size"]

Tree = Any


def size(tree: Tree) -> int:
    """The total number of elements of the leaves of ``tree``."""
    return builtins.sum(x.numel() for x in _tree.leaves(tree))


_DTYPE_HANDLERS = (None, "promote", "highest", "lowest")


def dtype(tree: Tree, mixed_dtype_handler: str | None = None) -> torch.dtype:
    """The dtype of the leaves of ``tree`` (``torch.get_default_dtype()`` for an empty tree).

    ``mixed_dtype_handler``: ``None`` raises ``ValueError`` on mixed dtypes; ``"promote"`` gives
    their promoted dtype; ``"highest"`` / ``"lowest"`` the greatest / least dtype in promotion
    order (``ValueError`` if two of them do not promote to one of them).
    """
    if mixed_dtype_handler not in _DTYPE_HANDLERS:
        raise ValueError(
            f"mixed_dtype_handler must be one of {_DTYPE_HANDLERS}, got {mixed_dtype_handler!r}"
        )
    dtypes = list(dict.fromkeys(x.dtype for x in _tree.leaves(tree)))
    if not dtypes:
        return torch.get_default_dtype()
    if len(dtypes) == 1:
        return dtypes[0]
    if mixed_dtype_handler is None:
        raise ValueError(
            f"tree.dtype: the tree has leaves of several dtypes {dtypes}; pass "
            "mixed_dtype_handler='promote', 'highest' or 'lowest'"
        )
    promoted = dtypes[0]
    for d in dtypes[1:]:
        promoted = torch.promote_types(promoted, d)
    if mixed_dtype_handler == "promote":
        return promoted
    for d in dtypes:
        if builtins.all(torch.promote_types(d, o) == o for o in dtypes) and mixed_dtype_handler == (
            "lowest"
        ):
            return d
        if builtins.all(torch.promote_types(o, d) == d for o in dtypes) and mixed_dtype_handler == (
            "highest"
        ):
            return d
    raise ValueError(
        f"tree.dtype: the dtypes {dtypes} have no {mixed_dtype_handler} element (some of them do "
        "not promote to one another)"
    )


def real(tree: Tree) -> Tree:
    """The real part of every leaf (real leaves unchanged)."""
    return _tree.map(lambda x: x.real if x.is_complex() else x, tree)


def conj(tree: Tree) -> Tree:
    """The complex conjugate of every leaf (real leaves unchanged)."""
    return _tree.map(lambda x: x.conj().resolve_conj() if x.is_complex() else x, tree)


def allclose(
    tree_x: Tree, tree_y: Tree, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False
) -> bool:
    """Whether both trees have one structure and all leaves are close (``torch.allclose``)."""
    xs, spec_x = _tree.flatten(tree_x)
    ys, spec_y = _tree.flatten(tree_y)
    if spec_x != spec_y:
        return False
    for x, y in zip(xs, ys):
        if x is None or y is None:
            if x is not y:
                return False
            continue
        if x.shape != y.shape or not torch.allclose(
            x, y.to(x.dtype), rtol=rtol, atol=atol, equal_nan=equal_nan
        ):
            return False
    return True


def batch_shape(tree: Tree, shape: tuple[int, ...] = ()) -> Tree:
    """Adds leading batch dimensions ``shape`` to every leaf (a broadcast view, no copy)."""
    return _tree.map(lambda x: x.expand(*shape, *x.shape), tree)


def random_like(
    rng_key: int | torch.Generator,
    target_tree: Tree,
    sampler: Callable[..., torch.Tensor] = torch.randn,
    dtype: torch.dtype | None = None,
) -> Tree:
    """A tree of random tensors shaped like ``target_tree``.

    ``rng_key`` is a seed or a ``torch.Generator`` (optax: a JAX key). ``sampler`` is called as
    ``sampler(shape, generator=..., dtype=..., device=...)`` (``torch.randn``, ``torch.rand``, or
    any function with that signature); leaves are drawn in flattening order.
    """
    gen = rng_key if isinstance(rng_key, torch.Generator) else torch.Generator()
    if not isinstance(rng_key, torch.Generator):
        gen.manual_seed(int(rng_key))

    dtensor = _tree._dtensor_type()

    def draw(x: torch.Tensor) -> torch.Tensor:
        out = sampler(x.shape, generator=gen, dtype=dtype or x.dtype, device=gen.device)
        out = out.to(x.device)
        if dtensor is not None and isinstance(x, dtensor):
            # every rank draws the whole tensor from the same generator state and keeps its
            # part: the same numbers as one process, no communication
            from torch.distributed.tensor import distribute_tensor

            d: Any = x
            return distribute_tensor(out, d.device_mesh, d.placements, src_data_rank=None)
        return out

    return _tree.map(draw, target_tree)
