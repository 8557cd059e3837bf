"""Complex-valued optimization: run a real transformation on real and imaginary parts
(``split_real_and_imaginary``, optax's; ``view_complex_as_real``, torch.optim's)."""

from __future__ import annotations

import operator
from typing import Any, NamedTuple

import torch

from optax_torch import tree
from optax_torch.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    OptState,
    _forwards_updates,
    donation_safe,
    elementwise,
    is_donation_safe,
    is_elementwise,
    is_leafwise,
    leafwise,
    with_extra_args_support,
)

__all__ = [
    "SplitRealAndImaginaryArrays",
    "SplitRealAndImaginaryState",
    "split_real_and_imaginary",
    "view_complex_as_real",
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


def _as_real(x: Any) -> Any:
    return torch.view_as_real(x) if isinstance(x, torch.Tensor) and x.is_complex() else x


def _is_complex(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.is_complex()


_DTYPE = operator.attrgetter("dtype")
_COMPLEX_DTYPES = frozenset({torch.complex32, torch.complex64, torch.complex128})


def _any_complex(xs: list[Any]) -> bool:
    """Whether any leaf is a complex tensor (per step over every leaf: the common case, plain
    tensors and ``None``, without a Python call per leaf)."""
    tensors = [x for x in xs if x is not None]
    if torch.compiler.is_compiling():  # dynamo cannot trace attrgetter
        return any(map(_is_complex, tensors))
    try:
        return any(map(_COMPLEX_DTYPES.__contains__, map(_DTYPE, tensors)))
    except AttributeError:  # a leaf without dtype (a Python number)
        return any(map(_is_complex, tensors))


def _as_complex(x: torch.Tensor) -> torch.Tensor:
    return torch.view_as_complex(x if x.stride(-1) == 1 else x.contiguous())


def _complex_like_params(node: Any, params: Any, spec: Any) -> Any:
    """``node`` with every subtree shaped like ``params`` turned complex where its parameter
    is complex (a real leaf of shape ``p.shape + (2,)`` viewed as complex)."""

    def leaf(s: Any, p: Any) -> Any:
        if (
            _is_complex(p)
            and isinstance(s, torch.Tensor)
            and s.is_floating_point()
            and s.shape == (*p.shape, 2)
        ):
            return _as_complex(s)
        return s

    if node is None or isinstance(node, torch.Tensor):
        return node
    if tree.structure(node) == spec:
        # Both flattened with their None leaves (tree.leaves drops them, which would misalign
        # the pairs as soon as a parameter is None).
        leaves, node_spec = tree.flatten(node)
        param_leaves, _ = tree.flatten(params)
        return tree.unflatten(
            node_spec, [leaf(s, p) for s, p in zip(leaves, param_leaves, strict=True)]
        )
    if hasattr(node, "_fields"):
        return type(node)(*(_complex_like_params(c, params, spec) for c in node))
    if isinstance(node, list | tuple):
        return type(node)(_complex_like_params(c, params, spec) for c in node)
    if isinstance(node, dict):
        return type(node)({k: _complex_like_params(v, params, spec) for k, v in node.items()})
    return node


def view_complex_as_real(inner: GradientTransformation) -> GradientTransformationExtraArgs:
    r"""Runs ``inner`` on complex leaves viewed as real pairs (``torch.view_as_real``), as
    ``torch.optim`` does.

    Each complex leaf :math:`z = x + iy` of the updates, params and state is given to ``inner`` as
    the real tensor of shape ``z.shape + (2,)`` holding :math:`(x, y)`, so element-wise math
    treats the two parts as independent coordinates (Adam's second moment is
    :math:`(g_x^2, g_y^2)`, not :math:`|g|^2`). The state keeps complex tensors where its
    parameter is complex (the real results viewed back with ``torch.view_as_complex``), so it
    has ``inner``'s structure, names and shapes: ``torch.optim``'s layout. Real leaves pass
    through unchanged, and a tree without complex leaves goes straight to ``inner``.

    Unlike :func:`split_real_and_imaginary` (optax's, a state of split pairs), the state is
    ``inner``'s own and the views keep in-place (donated) updates in place.

    Args:
      inner: the transformation to run on the real views.

    Example::

        >>> tx = otx.contrib.view_complex_as_real(otx.adam(1e-3))  # torch.optim.Adam's numbers
    """
    inner = with_extra_args_support(inner)

    def init_fn(params):
        state = inner.init(tree.map(_as_real, params))
        if not any(_is_complex(p) for p in tree.leaves(params)):
            return state
        return _complex_like_params(state, params, tree.structure(params))

    def update_fn(updates, state, params=None, **extra_args):
        state_leaves, state_spec = tree.flatten(state)
        if not (_any_complex(state_leaves) or _any_complex(tree.leaves(updates))):
            return inner.update(updates, state, params, **extra_args)
        complex_state = [_is_complex(x) for x in state_leaves]
        complex_updates = tree.map(_is_complex, updates)
        real_state = tree.unflatten(state_spec, [_as_real(x) for x in state_leaves])
        new_updates, new_state = inner.update(
            tree.map(_as_real, updates), real_state, tree.map(_as_real, params), **extra_args
        )
        new_updates = tree.map(
            lambda u, c: _as_complex(u) if c and u is not None else u,
            new_updates,
            complex_updates,
        )
        new_leaves, new_spec = tree.flatten(new_state)
        new_leaves = [
            _as_complex(x) if c and isinstance(x, torch.Tensor) and not x.is_complex() else x
            for x, c in zip(new_leaves, complex_state)
        ]
        return new_updates, tree.unflatten(new_spec, new_leaves)

    if is_donation_safe(inner):
        update_fn = donation_safe(update_fn)
    if is_elementwise(inner):  # real pairs of a flat complex buffer are still element-wise
        update_fn = elementwise(update_fn)
    if is_leafwise(inner):
        update_fn = leafwise(update_fn)
    # Real trees go to inner as given (complex ones as new views: inner then defers nothing).
    update_fn = _forwards_updates(update_fn)
    return GradientTransformationExtraArgs(init_fn, update_fn)
