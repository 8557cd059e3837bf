"""Masking: apply a transformation to a subset of the parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from optax_torch import tree
from optax_torch.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    PyTree,
    donation_safe,
    is_donation_safe,
    with_extra_args_support,
)

__all__ = ["MaskedNode", "MaskedState", "masked"]


class MaskedState(NamedTuple):
    """State of :func:`masked`: the inner state, with ``None`` for masked-out parameters."""

    inner_state: Any


class MaskedNode(NamedTuple):
    """optax's placeholder for a masked-out part of a tree: an empty container (no leaves).

    In optax, :func:`masked` replaces every masked-out leaf or subtree by ``MaskedNode()``
    before calling the inner transformation, so the inner state holds ``MaskedNode()`` there.
    optax_torch marks masked-out leaves with ``None`` instead (the library-wide marker of "no
    gradient, no state", which every tree operation passes through), so its states hold
    ``None`` where optax's hold ``MaskedNode()``; compare the two with that equivalence.

    ``MaskedNode`` is provided for code written against optax: it is a pytree node without
    leaves (all instances are equal), so tree operations skip it, and trees of updates, params
    or masks that contain it are accepted by :func:`masked` and every transformation (the
    node is passed through unchanged, as in optax). It loads with
    ``torch.load(weights_only=True)``.

    :func:`masked` itself produces it in one case: when the params are a single tensor (not a
    container) and it is masked out, the inner transformation is given ``MaskedNode()`` for the
    updates and params (``None`` there would read as "no params given").
    """


def _is_callable_mask(mask: Any) -> bool:
    return callable(mask) and not isinstance(mask, bool)


def _resolve(mask: PyTree | Callable[[PyTree], PyTree], like: PyTree) -> list[bool]:
    m = mask(like) if _is_callable_mask(mask) else mask
    flat = tree.broadcast_prefix(m, like)
    return [bool(x) for x in flat]


def _keep(t: PyTree, flags: list[bool]) -> PyTree:
    leaves, spec = tree.flatten(t)
    kept = tree.unflatten(spec, [x if f else None for x, f in zip(leaves, flags)])
    # A masked-out single tensor: an empty node, not None ("no params" to the inner transform).
    return MaskedNode() if kept is None and t is not None else kept


def masked(
    inner: GradientTransformation,
    mask: PyTree | Callable[[PyTree], PyTree],
    *,
    mask_compatible_extra_args: bool = False,
) -> GradientTransformationExtraArgs:
    """Applies ``inner`` only where ``mask`` is ``True``; other updates pass through unchanged.

    ``mask`` is a tree of booleans with the structure of the params (or a prefix of it, e.g.
    ``{"encoder": False, "head": True}``), or a function ``params -> mask``. The mask must not
    depend on tensor values. Masked-out leaves are given to ``inner`` as ``None`` (so ``inner``
    keeps no state for them and global quantities such as norms ignore them), where optax gives
    it :class:`MaskedNode` placeholders. Subtrees that already are ``MaskedNode()`` (or
    ``None``) hold no leaves and pass through.

    Example (no weight decay on biases and norms)::

        >>> decay = otx.masked(otx.add_decayed_weights(1e-2), lambda p: otx.tree.map(
        ...     lambda x: x.ndim > 1, p))
    """
    inner = with_extra_args_support(inner)

    def init_fn(params):
        flags = _resolve(mask, params)
        return MaskedState(inner_state=inner.init(_keep(params, flags)))

    def update_fn(updates, state, params=None, **extra_args):
        flags = _resolve(mask, updates)
        if mask_compatible_extra_args:
            spec = tree.structure(updates)
            extra_args = {
                k: (_keep(v, flags) if tree.structure(v) == spec else v)
                for k, v in extra_args.items()
            }
        new_masked, new_inner = inner.update(
            _keep(updates, flags),
            state.inner_state,
            None if params is None else _keep(params, flags),
            **extra_args,
        )
        if not any(flags):
            return updates, MaskedState(inner_state=new_inner)
        new_leaves, spec = tree.flatten(new_masked)
        old_leaves = tree.flatten(updates)[0]
        merged = [n if f else o for n, o, f in zip(new_leaves, old_leaves, flags)]
        return tree.unflatten(spec, merged), MaskedState(inner_state=new_inner)

    if is_donation_safe(inner):
        donation_safe(update_fn)
    return GradientTransformationExtraArgs(init_fn, update_fn)
