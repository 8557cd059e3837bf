"""Per-parameter values of group-wide state (torch's per-parameter step counts).

A param group's transform keeps group-wide leaves in its state (optax's single ``count``, NAdam's
``mu_product``, ASGD's ``eta``...). ``torch.optim`` keeps such values per parameter: a parameter
that gets no gradient at some steps, or joins late, has its own ``step``. A
:class:`~optax_torch.TorchOptimizer` subclass with ``_per_param_steps = True`` (the
``torch.optim`` drop-ins) reproduces that:

* While every active parameter steps together, nothing changes: one state, one update.
* When some active parameters have no gradient, or parameters get their first gradient while
  others already have state, the group's group-wide leaves *diverge*: their values are kept per
  parameter (``Slot.pp``: flat leaf index -> one value per parameter). A step then partitions the
  parameters that have a gradient by their values and runs ``tx.update`` once per partition, on
  the group's state with the partition's values and ``None`` gradients elsewhere (the transforms
  skip ``None`` leaves). When all values agree again, the group converges back to one state.

This is exact for transforms whose per-parameter math depends only on the parameter's own leaves
and the group-wide values, which is the case of every ``torch.optim`` algorithm.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from optax_torch import tree
from optax_torch.base import GradientTransformation, OptState
from optax_torch.wrappers import _state_layout as layout
from optax_torch.wrappers._state_layout import Slot


def shared_indices(plan: layout.Plan, leaves: list[Any]) -> list[int]:
    """Indices of the group-wide (not per-parameter) leaves present in a flat state."""
    return [k for k, ((_, j), x) in enumerate(zip(plan, leaves)) if j is None and x is not None]


def needs_split(slot: Slot, grads: list, key_map: dict[str, str]) -> bool:
    """Whether this step of the group needs per-parameter values of its group-wide leaves."""
    if slot.state is None:
        return False
    if slot.pp is not None:
        return True
    if not tree._has_none(grads) and all(slot.active):  # the common step: nothing to split
        return False
    holes = any(a and g is None for a, g in zip(slot.active, grads))
    joins = any(g is not None and not a for a, g in zip(slot.active, grads)) and any(slot.active)
    if not (holes or joins):
        return False
    leaves, spec = tree.flatten(slot.state)
    plan = layout.plan_for(slot, slot.state, spec, len(slot.active), key_map)
    return bool(shared_indices(plan, leaves))


def split_step(
    slot: Slot,
    tx: GradientTransformation,
    params: list,
    grads: list,
    key_map: dict[str, str],
    prepare: Callable[[OptState], OptState],
    extra_args: dict[str, Any],
) -> tuple[list, OptState, list[bool], list[Any], Any]:
    """One step of a group whose group-wide leaves are (or become) per parameter.

    ``prepare`` is applied to each partition's state before its update (injected
    hyperparameters). Returns ``(updates, new_state, active, new_leaves, spec)``; updates are
    ``None`` for parameters without a gradient. ``slot.pp`` is updated.
    """
    n = len(params)
    old_active = list(slot.active)
    state, active, fresh = layout.ensure_state(slot, tx, params, grads)
    leaves, spec = tree.flatten(state)
    plan = layout.plan_for(slot, state, spec, n, key_map)
    shared = shared_indices(plan, leaves)
    pp: layout.PerParam = slot.pp or {
        k: [leaves[k] if old_active[j] else None for j in range(n)] for k in shared
    }
    if fresh is not None:  # parameters that joined get the fresh group-wide values
        for j in range(n):
            if active[j] and not old_active[j]:
                for k in shared:
                    pp[k][j] = fresh[k]

    parts: dict[Any, list[int]] = {}
    for j, g in enumerate(grads):
        if g is not None:
            parts.setdefault(tuple(layout.value_key(pp[k][j]) for k in shared), []).append(j)

    updates: list = [None] * n
    new_leaves = list(leaves)
    for members in parts.values():
        sub = list(leaves)
        for k in shared:
            sub[k] = pp[k][members[0]]
        member_set = set(members)
        sub_grads = [g if j in member_set else None for j, g in enumerate(grads)]
        sub_updates, sub_state = tx.update(
            sub_grads, prepare(tree.unflatten(spec, sub)), params, **extra_args
        )
        out, out_spec = tree.flatten(sub_state)
        if out_spec != spec:
            raise RuntimeError(
                "TorchOptimizer: the transform returned a state whose structure differs from "
                "its input state"
            )
        if not isinstance(sub_updates, list | tuple) or len(sub_updates) != n:
            raise RuntimeError(
                "TorchOptimizer: the transform returned updates that do not match the list "
                "of parameters"
            )
        for k, ((_, j), x) in enumerate(zip(plan, out)):
            if j is None:
                if k in pp:
                    for m in members:
                        pp[k][m] = x
            elif j in member_set and x is not None:
                new_leaves[k] = x
        for m in members:
            updates[m] = sub_updates[m]

    slot.pp = layout.converge(pp, active, new_leaves)
    return updates, tree.unflatten(spec, new_leaves), active, new_leaves, spec
