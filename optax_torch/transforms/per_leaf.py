"""Per-leaf states: a transformation run on each leaf separately, and constant per-leaf tags."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from optax_torch import tree
from optax_torch.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    donation_safe,
    is_donation_safe,
    with_extra_args_support,
)

__all__ = ["PerLeafState", "TagLeavesState", "per_leaf", "tag_leaves"]


class PerLeafState(NamedTuple):
    """State of :func:`per_leaf`: one inner state per leaf (flattening order)."""

    states: list


class TagLeavesState(NamedTuple):
    """State of :func:`tag_leaves`: one 0-d tensor per leaf (``None`` for ``None`` leaves)."""

    tags: list


def per_leaf(inner: GradientTransformation) -> GradientTransformationExtraArgs:
    r"""Runs ``inner`` on each leaf separately, each with a state of its own.

    For every leaf :math:`x_j` of the params, ``inner`` sees the one-leaf tree ``[x_j]``: its
    group-wide values (step counts, norms over the tree) become per-leaf values, as in the
    ``torch.optim`` and timm optimizers that keep a ``step`` per parameter. A leaf whose update
    is ``None`` is skipped: its state is left as it is (its count does not advance). A ``None``
    parameter at ``init`` gets the state of ``inner.init([None])`` with every leaf ``None`` (no
    state, the same structure).

    Args:
      inner: the transformation to run per leaf.

    Returns:
      A transformation whose state is a :class:`PerLeafState`.

    Example::

        >>> tx = otx.per_leaf(otx.adam(1e-3))  # a step count per parameter
        >>> state = tx.init([torch.zeros(3), torch.zeros(2)])
        >>> updates, state = tx.update([torch.ones(3), None], state, params)  # 2nd: skipped
    """
    inner = with_extra_args_support(inner)

    def init_fn(params):
        states = []
        for x in tree.flatten(params)[0]:
            s = inner.init([x])
            if x is None:
                s = tree.unflatten(tree.structure(s), [None] * len(tree.flatten(s)[0]))
            states.append(s)
        return PerLeafState(states=states)

    def update_fn(updates, state, params=None, **extra_args):
        u_leaves, spec = tree.flatten(updates)
        p_leaves = [None] * len(u_leaves) if params is None else tree.flatten(params)[0]
        if len(state.states) != len(u_leaves):
            raise ValueError(
                f"per_leaf: the state has {len(state.states)} leaves, the updates {len(u_leaves)}"
            )
        out: list[Any] = []
        new_states = []
        for u, p, s in zip(u_leaves, p_leaves, state.states):
            if u is None:
                out.append(None)
                new_states.append(s)
                continue
            new_u, new_s = inner.update([u], s, None if params is None else [p], **extra_args)
            out.append(new_u[0])
            new_states.append(new_s)
        return tree.unflatten(spec, out), PerLeafState(states=new_states)

    if is_donation_safe(inner):  # each leaf's old state is read once, by inner
        donation_safe(update_fn)
    return GradientTransformationExtraArgs(init_fn, update_fn)


def tag_leaves(tags: list | Callable[[Any], list]) -> GradientTransformation:
    """Keeps a constant per leaf in the state (e.g. which branch of a :func:`partition` a
    parameter takes, as timm's ``Muon`` records ``use_muon``); the updates pass through.

    Args:
      tags: one value (a bool or a number) per leaf of the params, in flattening order, or a
        function ``params -> list``.

    Returns:
      A transformation whose state is a :class:`TagLeavesState` of 0-d tensors (``None`` for
      ``None`` parameters).

    Example::

        >>> tx = otx.tag_leaves([True, False])
        >>> tx.init([torch.zeros(2), torch.zeros(3)]).tags  # [tensor(True), tensor(False)]
    """

    def init_fn(params):
        leaves = tree.flatten(params)[0]
        values = tags(params) if callable(tags) else tags
        if len(values) != len(leaves):
            raise ValueError(f"tag_leaves: {len(values)} tags for {len(leaves)} leaves")
        return TagLeavesState(
            tags=[None if x is None else torch.tensor(v) for x, v in zip(leaves, values)]
        )

    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        return updates, state

    return GradientTransformation(init_fn, update_fn)
