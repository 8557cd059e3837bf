"""Complex-valued optimization: run a real transformation on real and imaginary parts."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from optax_torch import tree
from optax_torch.base import GradientTransformation, OptState

__all__ = [
    "SplitRealAndImaginaryArrays",
    "SplitRealAndImaginaryState",
    "split_real_and_imaginary",
]


class SplitRealAndImaginaryArrays(NamedTuple):
    """A pair of real tensors split from a complex tensor (a node of the inner trees).

    Exported (optax keeps it private) so that states holding it load with
    ``torch.load(weights_only=True)``.
    """

    real: torch.Tensor
    imaginary: torch.Tensor


class SplitRealAndImaginaryState(NamedTuple):
    """State of :func:`split_real_and_imaginary`: the inner transformation's state."""

    inner_state: OptState


def _split(x: torch.Tensor) -> Any:
    if x.is_complex():
        return SplitRealAndImaginaryArrays(x.real, x.imag)
    return x


def _split_like(p: torch.Tensor, u: torch.Tensor | None) -> Any:
    """Splits ``u`` as its parameter ``p`` is split (a missing gradient of a complex parameter
    becomes a pair of missing gradients, so the trees keep the same structure)."""
    if u is None:
        return SplitRealAndImaginaryArrays(None, None) if p.is_complex() else None  # type: ignore[arg-type]
    return _split(u)


def _merge(x: Any) -> Any:
    if isinstance(x, SplitRealAndImaginaryArrays):
        if x.real is None or x.imaginary is None:
            return None
        return torch.complex(x.real, x.imaginary)
    return x


def _is_pair(x: Any) -> bool:
    return isinstance(x, SplitRealAndImaginaryArrays)


def split_real_and_imaginary(inner: GradientTransformation) -> GradientTransformation:
    r"""Splits complex updates (and params) into real and imaginary parts for ``inner``.

    Each complex leaf :math:`z = x + iy` becomes the pair :math:`(x, y)` of real leaves; the
    inner transformation works on those real trees, and each pair of transformed updates is
    merged back into :math:`u_x + i u_y`. Real leaves pass through to ``inner`` unchanged.
    (A transformation applied directly to complex tensors would instead treat :math:`z` as one
    number, e.g. Adam's :math:`|g|^2` mixes both parts.)

    Args:
      inner: the transformation applied to the real trees.

    Example::

        >>> opt = otx.contrib.split_real_and_imaginary(otx.adam(1e-3))
    """

    def init_fn(params):
        return SplitRealAndImaginaryState(inner.init(tree.map(_split, params)))

    def update_fn(updates, state, params=None):
        if params is None:
            split_params, split_updates = None, tree.map(_split, updates)
        else:
            split_params = tree.map(_split, params)
            split_updates = tree.map(_split_like, params, updates)
        new_updates, inner_state = inner.update(split_updates, state.inner_state, split_params)
        return tree.map(_merge, new_updates, is_leaf=_is_pair), SplitRealAndImaginaryState(
            inner_state
        )

    return GradientTransformation(init_fn, update_fn)
