"""Composition of transformations: ``chain``, ``named_chain`` and ``partition``."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple

from optax_torch import tree
from optax_torch.base import (
    _DECAYS_BY_NUMBER,
    _ENDS_IN_DIV_SQRT,
    GradientTransformation,
    GradientTransformationExtraArgs,
    OptState,
    PyTree,
    _copy_marks,
    _forwards_updates,
    _has_mark,
    _is_identity,
    _may_defer_scale,
    _scales_by_number,
    donation_safe,
    elementwise,
    is_consuming_updates,
    is_donation_safe,
    is_elementwise,
    is_leafwise,
    leafwise,
    with_extra_args_support,
)
from optax_torch.transforms.masking import masked

__all__ = [
    "MultiTransformState",
    "PartitionState",
    "chain",
    "multi_transform",
    "named_chain",
    "partition",
]


def chain(*args: GradientTransformation) -> GradientTransformationExtraArgs:
    """Applies transformations in sequence; the state is the tuple of their states.

    ``chain()`` is the identity, and ``chain`` is associative up to the nesting of states.
    Extra keyword arguments given to ``update`` reach every member. Where a gradient is ``None``
    (a parameter without gradient this step) the update is ``None`` and that parameter's state is
    carried over unchanged, so it resumes where it stopped when its gradient comes back (step
    counts are shared by the whole tree, so they advance meanwhile).

    Example::

        >>> tx = otx.chain(otx.clip_by_global_norm(1.0), otx.scale_by_adam(), otx.scale(-1e-3))
        >>> state = tx.init(params)
        >>> updates, state = tx.update(grads, state, params)
    """
    transforms = [with_extra_args_support(t) for t in args]

    def init_fn(params):
        return tuple(t.init(params) for t in transforms)

    def update_fn(updates, state, params=None, **extra_args):
        if not isinstance(state, tuple) or len(state) != len(transforms):
            raise ValueError(
                f"chain of {len(transforms)} transformations got a state of "
                f"{type(state).__name__} with {len(state) if isinstance(state, tuple) else '?'} "
                "entries: pass the state made by this chain's init"
            )
        new_state = []
        if not tree._donated.depth:
            for s, t in zip(state, transforms):
                updates, new_s = t.update(updates, s, params, **extra_args)
                new_state.append(new_s)
            return updates, tuple(new_state)
        # Inside ``tree.donate`` (the adapter's step): each intermediate update is read only by
        # the next member, so a next member marked ``consumes_updates`` may write into it (e.g.
        # ``scale`` rescales in place). Other members never see it as donated.
        given = tree._donated.fresh
        # Never offered: tensors the caller still sees, and any state (a member's output may
        # be its own new state, which a later pass-through member hands on). The input updates
        # the caller gave this chain are not the caller's any more: once the first member has
        # written its output into them, that output is offered on like any other.
        inputs = (updates, params, state)
        mine = given if consuming[0] else frozenset()
        # The TorchOptimizer step may fold a final scale into the parameter update: passed on
        # to the last member when it is handed this chain's very input (tree._deferred_scale).
        final = tree._final.armed is not None and tree._final.armed is updates
        last = last_to_arm
        kept: set[int] | None = None  # ids never offered, gathered at the first offer
        for i, (s, t) in enumerate(zip(state, transforms)):
            armed = updates if final and i == last and may_defer[i] else None
            decay_armed = updates if final and i == decay_to_arm else None
            with (
                tree._fresh_scope(given if consuming[i] else frozenset()),
                tree._arm(armed),
                tree._arm_decay(decay_armed),
                tree._arm_quotient(final and i == quotient_to_arm),
            ):
                out, new_s = t.update(updates, s, params, **extra_args)
            new_state.append(new_s)
            given = frozenset()
            if all_safe and i + 1 < len(transforms) and consuming[i + 1]:
                if kept is None:
                    kept = tree._ids((inputs, new_state))
                    if mine:  # (only the first member may have spent them)
                        kept -= mine & tree._donated.spent
                else:
                    kept |= tree._ids(new_s)
                given = tree._offer(out, kept)
            elif kept is not None:
                kept |= tree._ids(new_s)
            updates = out
        return updates, tuple(new_state)

    consuming = [is_consuming_updates(t) for t in transforms]
    # The member whose final scale may be folded into the parameter update: the last one, or
    # the last before trailing identities (rmsprop's ``identity()`` in place of a momentum).
    last_to_arm = len(transforms) - 1
    while last_to_arm > 0 and _is_identity(transforms[last_to_arm]):
        last_to_arm -= 1
    may_defer = [_may_defer_scale(t) for t in transforms]
    # The member before a last ``scale`` by a Python number (which always defers) may leave a
    # weight decay of the parameters to the caller too (``adamw``: add_decayed_weights, then
    # the learning rate; tree._deferred_scale).
    decay_to_arm = (
        last_to_arm - 1
        if last_to_arm >= 1
        and may_defer[last_to_arm - 1]
        and _scales_by_number(transforms[last_to_arm])
        else None
    )
    # The member whose output only deferred operations follow (the final scale, a deferred
    # decay, identities) and is its one div_sqrt (Adam, RMSprop) may leave that quotient to the
    # caller too (adamw: the parameter update is then one addcdiv_, as torch's).
    quotient_to_arm = None
    if last_to_arm >= 1 and _scales_by_number(transforms[last_to_arm]):
        q = last_to_arm - 1
        while q > 0 and (
            _is_identity(transforms[q])
            or (q == decay_to_arm and _has_mark(transforms[q], _DECAYS_BY_NUMBER))
        ):
            q -= 1
        if _has_mark(transforms[q], _ENDS_IN_DIV_SQRT):
            quotient_to_arm = q
    all_safe = all(is_donation_safe(t) for t in transforms)
    if all_safe:
        donation_safe(update_fn)
    if transforms:  # a chain reads its input updates only through its first member
        _copy_marks(transforms[0], update_fn)
    if all(is_elementwise(t) for t in transforms):
        elementwise(update_fn)
    if all(is_leafwise(t) for t in transforms):
        leafwise(update_fn)
    # its members, for the compiled step on stacked buffers (wrappers/_flat.stacked_plan)
    update_fn._optax_torch_members = tuple(transforms)
    _forwards_updates(update_fn)
    # Each member keeps the state of None-gradient leaves itself.
    return GradientTransformationExtraArgs._unwrapped(init_fn, update_fn)


def named_chain(*args: tuple[str, GradientTransformation]) -> GradientTransformationExtraArgs:
    """Like :func:`chain`, with a name for each member; the state is a dict keyed by the names.

    Example::

        >>> tx = otx.named_chain(("clip", otx.clip(1.0)), ("adam", otx.adam(1e-3)))
        >>> state = tx.init(params); state["adam"]
    """
    names = [name for name, _ in args]
    if len(names) != len(set(names)):
        raise ValueError(f"named_chain needs unique names, got {names}")
    transforms = [(name, with_extra_args_support(t)) for name, t in args]

    def init_fn(params):
        return {name: t.init(params) for name, t in transforms}

    def update_fn(updates, state, params=None, **extra_args):
        new_state = {}
        for name, t in transforms:
            updates, new_s = t.update(updates, state[name], params, **extra_args)
            new_state[name] = new_s
        return updates, new_state

    if all(is_donation_safe(t) for _, t in transforms):
        donation_safe(update_fn)
    return GradientTransformationExtraArgs._unwrapped(init_fn, update_fn)


class PartitionState(NamedTuple):
    """State of :func:`partition`: one inner state per label."""

    inner_states: dict[Hashable, OptState]


MultiTransformState = PartitionState
"""optax's older name of :class:`PartitionState`."""


def partition(
    transforms: Mapping[Hashable, GradientTransformation],
    param_labels: PyTree | Callable[[PyTree], PyTree],
    *,
    mask_compatible_extra_args: bool = False,
) -> GradientTransformationExtraArgs:
    """Applies a different transformation to each labelled subset of the parameters.

    Args:
      transforms: label -> transformation.
      param_labels: a tree of labels with the params' structure (or a prefix of it), or a
        function ``params -> labels``.
      mask_compatible_extra_args: also mask extra arguments shaped like the params.

    Example (Adam on weights, SGD on biases)::

        >>> labels = {"w": "adam", "b": "sgd"}
        >>> tx = otx.partition({"adam": otx.adam(1e-3), "sgd": otx.sgd(1e-2)}, labels)
    """
    transforms = {k: with_extra_args_support(v) for k, v in transforms.items()}

    def labels_for(t):
        labels = param_labels(t) if callable(param_labels) else param_labels
        return labels, tree.broadcast_prefix(labels, t)

    def masked_for(labels, label):
        import torch.utils._pytree as _py

        flat, spec = _py.tree_flatten(labels)
        mask = _py.tree_unflatten([x == label for x in flat], spec)
        return masked(
            transforms[label], mask, mask_compatible_extra_args=mask_compatible_extra_args
        )

    def init_fn(params):
        labels, flat = labels_for(params)
        unknown = {x for x in flat if x is not None} - set(transforms)
        if unknown:
            raise ValueError(
                f"partition: labels {sorted(map(str, unknown))} have no transformation; "
                f"transforms are keyed {sorted(map(str, transforms))}"
            )
        return PartitionState(
            {label: masked_for(labels, label).init(params) for label in transforms}
        )

    def update_fn(updates, state, params=None, **extra_args):
        labels, _ = labels_for(updates)
        new_inner: dict[Hashable, Any] = {}
        for label in transforms:
            old = state.inner_states[label]
            updates, new_s = masked_for(labels, label).update(updates, old, params, **extra_args)
            new_inner[label] = new_s
        return updates, PartitionState(new_inner)

    if all(is_donation_safe(t) for t in transforms.values()):
        donation_safe(update_fn)
    # Each member (a masked transformation) keeps the state of None-gradient leaves itself.
    return GradientTransformationExtraArgs._unwrapped(init_fn, update_fn)


multi_transform = partition
