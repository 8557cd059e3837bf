"""flatten: run a transformation on one flat vector of all parameters."""

from __future__ import annotations

import torch

from optax_torch import tree
from optax_torch.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    PyTree,
    with_extra_args_support,
)

__all__ = ["flatten"]


def _flatten(t: PyTree) -> torch.Tensor:
    """All tensors of ``t`` (``None`` leaves skipped) concatenated into one 1-d tensor of their
    promoted dtype."""
    xs = tree.leaves(t)
    if not xs:
        return torch.zeros(0)
    return torch.cat([x.reshape(-1) for x in xs])


def _unflatten(like: PyTree, flat: torch.Tensor, present: PyTree | None = None) -> PyTree:
    """Splits ``flat`` into tensors shaped (and typed) like the leaves of ``like``; leaves where
    ``present`` (a tree like ``like``) is ``None`` give ``None``."""
    leaves, spec = tree.flatten(like)
    keep = leaves if present is None else tree.flatten(present)[0]
    pieces = iter(torch.split(flat, [x.numel() for x in leaves if x is not None]))
    out = []
    for x, k in zip(leaves, keep):
        if x is None:
            out.append(None)
            continue
        piece = next(pieces)
        out.append(None if k is None else piece.reshape(x.shape).to(k.dtype))
    return tree.unflatten(spec, out)


def _fill_missing(updates: PyTree, params: PyTree) -> tuple[PyTree, torch.Tensor | None]:
    """``updates`` with zeros where a gradient is ``None`` but the parameter is not, and the
    flat boolean mask of the real gradients (``None`` when nothing was filled)."""
    us, spec = tree.flatten(updates)
    ps = tree.flatten(params)[0]
    if len(us) != len(ps) or tree.structure(params) != spec:
        raise ValueError("flatten: updates and params must have the same tree structure")
    if not any(u is None and p is not None for u, p in zip(us, ps)):
        return updates, None
    filled = [torch.zeros_like(p) if u is None and p is not None else u for u, p in zip(us, ps)]
    valid = [
        torch.full((p.numel(),), u is not None, dtype=torch.bool, device=p.device)
        for u, p in zip(us, ps)
        if p is not None
    ]
    return tree.unflatten(spec, filled), torch.cat(valid)


def _keep_missing(valid: torch.Tensor, new: PyTree, old: PyTree) -> PyTree:
    """The flat state ``new``, with ``old``'s entries where ``valid`` is ``False`` (for every
    state tensor laid out like the flat vector)."""

    def pick(n, o):
        if isinstance(n, torch.Tensor) and isinstance(o, torch.Tensor) and n.shape == valid.shape:
            return torch.where(valid, n, o)
        return n

    return tree.map(pick, new, old)


def flatten(inner: GradientTransformation) -> GradientTransformationExtraArgs:
    r"""Runs ``inner`` on one flat vector: all parameters (and updates) concatenated.

    ``inner.init`` and ``inner.update`` see a single 1-d tensor holding every leaf of the
    params / updates in flattening order; the updates are split back into the original
    structure and shapes. This trades one concatenation per step (and a flat copy in the
    state) for running ``inner``'s math on one tensor instead of many small ones. The state is
    ``inner``'s own state, over the flat vector (as in optax, there is no wrapper state).

    Leaves of different dtypes are concatenated in their promoted dtype (as
    ``jnp.concatenate`` does in optax), so ``inner`` computes and keeps its state in that dtype;
    each update is cast back to its gradient's dtype (optax returns the promoted dtype). All
    leaves must live on one device. The vector is laid out by the params (``None`` params are
    left out). A ``None`` gradient for a parameter gives a ``None`` update: ``inner`` sees zeros
    there, and the entries of every state tensor laid out like the vector are restored there
    (so element-wise states such as Adam's moments are kept; a shared step count still
    advances, as in a chain of masked transforms).

    Args:
      inner: the transformation to run on the flat vector.

    Example::

        >>> tx = otx.flatten(otx.adam(1e-3))  # many small tensors: one Adam over one vector
    """
    inner = with_extra_args_support(inner)

    def init_fn(params):
        return inner.init(_flatten(params))

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            flat_updates, new_state = inner.update(_flatten(updates), state, None, **extra_args)
            return _unflatten(updates, flat_updates), new_state
        # The vector is laid out by the params (as at init); a None gradient is a zero there,
        # whose state entries are then restored: the law "no gradient, no change".
        filled, valid = _fill_missing(updates, params)
        flat_updates, new_state = inner.update(
            _flatten(filled), state, _flatten(params), **extra_args
        )
        if valid is not None:
            new_state = _keep_missing(valid, new_state, state)
        return _unflatten(params, flat_updates, present=updates), new_state

    return GradientTransformationExtraArgs(init_fn, update_fn)
