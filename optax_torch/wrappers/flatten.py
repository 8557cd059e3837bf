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


def _unflatten(like: PyTree, flat: torch.Tensor) -> PyTree:
    """Splits ``flat`` into tensors shaped (and typed) like the leaves of ``like``."""
    leaves, spec = tree.flatten(like)
    present = [x for x in leaves if x is not None]
    pieces = iter(torch.split(flat, [x.numel() for x in present]))
    out = [None if x is None else next(pieces).reshape(x.shape).to(x.dtype) for x in leaves]
    return tree.unflatten(spec, out)


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
    leaves must live on one device. ``None`` leaves (no gradient) are left out of the vector, so
    params and updates must have ``None`` at the same places.

    Args:
      inner: the transformation to run on the flat vector.

    Example::

        >>> tx = otx.flatten(otx.adam(1e-3))  # many small tensors: one Adam over one vector
    """
    inner = with_extra_args_support(inner)

    def init_fn(params):
        return inner.init(_flatten(params))

    def update_fn(updates, state, params=None, **extra_args):
        flat_params = None if params is None else _flatten(params)
        flat_updates, state = inner.update(_flatten(updates), state, flat_params, **extra_args)
        return _unflatten(updates, flat_updates), state

    return GradientTransformationExtraArgs(init_fn, update_fn)
