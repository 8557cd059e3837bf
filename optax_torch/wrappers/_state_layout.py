"""The functional state of :class:`~optax_torch.wrappers.TorchOptimizer` in torch's layout.

A param group's transform keeps one functional state tree for the group (a ``list`` of length
``n`` in it holds one leaf per parameter). This module maps that tree onto torch's per-parameter
layout, ``optimizer.state[p] = {name: value}``:

* the group's runtime data, :class:`Slot`, and the lazy allocation of state for parameters
  that get their first gradient (:func:`ensure_state`);
* naming: every leaf of the tree gets a name (its path, e.g. ``"0.mu"``, renamed by the
  optimizer's state key map) and the index of its parameter, or ``None`` for group-wide leaves
  such as step counts (:func:`make_plan`);
* the ``optimizer.state`` mirror, brought up to date when it is read (:func:`flush_mirror`);
* ``state_dict()``: packing param groups and per-parameter state with torch's indices
  (:func:`pack_param_groups`, :func:`pack_state`);
* ``load_state_dict()``: checking a saved dict (:func:`check_state_dict`) and rebuilding a
  group's functional state from its per-parameter entries (:func:`saved_entries`,
  :func:`load_group`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from copy import copy, deepcopy
from itertools import chain as _iter_chain
from typing import Any

import torch
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from optax_torch import tree
from optax_torch.base import GradientTransformation, OptState

# (name, index of the parameter or None for group-wide leaves), one per leaf of a state tree.
Plan = list[tuple[str, int | None]]
# Per-parameter values of group-wide leaves: flat leaf index -> one value per parameter.
PerParam = dict[int, list[Any]]


def is_namedtuple(obj: Any) -> bool:
    return isinstance(obj, tuple) and hasattr(obj, "_fields")


class Slot:
    """Per param group runtime data of a :class:`TorchOptimizer`."""

    def __init__(self, n: int):
        self.state: OptState | None = None  # functional state; None before the first step
        self.active: list[bool] = [False] * n  # params whose state has been allocated
        self.tx_key: tuple | None = None  # cache of the transform built from the group
        self.tx: GradientTransformation | None = None
        self.tx_hp: dict[str, Any] | None = None
        self.probe_spec: Any = None  # structure of tx.init([]) when the state was created
        self.plan_spec: Any = None
        self.plan: Plan = []
        self.leaves: list[Any] | None = None  # flat state leaves not yet mirrored in .state
        self.spec: Any = None
        # Per-parameter values of the group-wide leaves while they differ (see _per_param):
        # flat leaf index -> one value per parameter (None for parameters without state).
        self.pp: dict[int, list[Any]] | None = None
        self.step_fn: Any = None  # the compiled step (TorchOptimizer(compile=True))
        self.flat: Any = None  # _flat.FlatGroup: the params in flat buffers (compiled step)
        self.flat_state: OptState | None = None  # the state over those buffers
        self.flat_views: OptState | None = None  # self.state as views into flat_state
        # the stacked step (leafwise chains): its compiled function, whether it compiled (and
        # with the opaque state write), or failed to (the group then runs per tensor)
        self.stack_fn: Any = None
        self.stack_ok = False
        self.stack_barrier = False
        self.no_stack = False

    def without_transform(self, keep_transform: bool = False) -> Slot:
        """A shallow copy without the compiled step and (unless ``keep_transform``) the cached
        transform: closures, rebuilt on the next step."""
        out = copy(self)
        out.step_fn = out.stack_fn = None
        out.stack_ok = False
        out.flat = out.flat_state = out.flat_views = None  # rebuilt from .state
        if not keep_transform:
            out.tx_key, out.tx = None, None
        return out


class StateStore(defaultdict):
    """``optimizer.state``: the per-parameter dicts mirrored from the functional state, noting
    writes from outside (``written``). torch code assigns entries directly, e.g.
    ``ZeroRedundancyOptimizer.load_state_dict`` does ``optimizer.state[p] = {...}`` on its local
    optimizer; the adapter then reloads its functional state from these dicts before the next
    step. Reading, and the adapter's own mirroring, are not writes. Replacing a value inside an
    entry (``optimizer.state[p]["exp_avg"] = t``) is not noted: write the entry, or change the
    tensor in place."""

    def __init__(self, items: Any = ()):
        super().__init__(dict, items)
        self.written = False

    def __missing__(self, key: Any) -> dict[str, Any]:  # a new entry made by a read or a mirror
        value: dict[str, Any] = {}
        dict.__setitem__(self, key, value)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        self.written = True
        super().__setitem__(key, value)

    def __delitem__(self, key: Any) -> None:
        self.written = True
        super().__delitem__(key)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.written = True
        super().update(*args, **kwargs)

    def clear(self) -> None:
        self.written = True
        super().clear()

    def pop(self, *args: Any) -> Any:
        self.written = True
        return super().pop(*args)

    def __reduce__(self) -> Any:  # pickles (and deep-copies) as torch's plain defaultdict(dict)
        return (defaultdict, (dict,), None, None, iter(self.items()))


# --------------------------------------------------------------------------------------------
# State allocation
# --------------------------------------------------------------------------------------------


def probe_spec(tx: GradientTransformation) -> Any:
    """The structure of ``tx.init([])`` (None if that init fails)."""
    try:
        return tree.structure(tx.init([]))
    except Exception:
        return None


def _storages(x: Any) -> list[int]:
    """The data pointers of the storages behind a tensor: its own, or those of the inner tensors
    of a wrapper subclass (a DTensor's local shard) — the wrapper itself has no storage."""
    if not isinstance(x, torch.Tensor) or not x.numel():
        return []
    if is_traceable_wrapper_subclass(x):
        names, _ = x.__tensor_flatten__()
        return [ptr for name in names for ptr in _storages(getattr(x, name))]
    functorch: Any = torch._C._functorch  # pyright: ignore[reportAttributeAccessIssue]
    if functorch.is_functorch_wrapped_tensor(x):  # under torch.func.grad / vmap
        return _storages(functorch.get_unwrapped(x))
    return [x.untyped_storage().data_ptr()]


def unalias(state: OptState, params: list) -> OptState:
    """Copies state leaves that share memory with a parameter (updated in place later)."""
    ptrs = {ptr for p in params for ptr in _storages(p)}
    leaves, spec = tree.flatten(state)
    shared = [any(ptr in ptrs for ptr in _storages(x)) for x in leaves]
    if not any(shared):
        return state
    return tree.unflatten(spec, [x.clone() if s else x for x, s in zip(leaves, shared)])


def ensure_state(
    slot: Slot, tx: GradientTransformation, params: list, grads: list
) -> tuple[OptState, list, list[Any] | None]:
    """The group's state with state allocated for every parameter that has a gradient, the
    parameters with state, and the flat leaves of the fresh state (``None`` if none was made).
    """
    active = slot.active
    need = [g is not None and not a for g, a in zip(grads, active)]
    if not any(need):
        return slot.state, active, None
    n = len(params)
    if all(need):
        fresh = tx.init(list(params))
        now_active = [True] * n
    else:
        probe = [p if k else None for p, k in zip(params, need)]
        try:
            fresh = tx.init(probe)
            now_active = [a or k for a, k in zip(active, need)]
        except Exception:  # a transform whose init does not accept None parameters
            fresh = tx.init(list(params))
            now_active = [True] * n
    fresh = unalias(fresh, params)
    fresh_leaves, fresh_spec = tree.flatten(fresh)
    if slot.state is None:
        state = fresh
        slot.probe_spec = probe_spec(tx)
    else:
        old_leaves, old_spec = tree.flatten(slot.state)
        if old_spec != fresh_spec:
            raise RuntimeError(
                "TorchOptimizer: the state made for new parameters does not match the "
                "structure of the existing state"
            )
        state = tree.unflatten(
            old_spec, [f if o is None else o for o, f in zip(old_leaves, fresh_leaves)]
        )
    return state, now_active, fresh_leaves


# --------------------------------------------------------------------------------------------
# Naming the leaves
# --------------------------------------------------------------------------------------------


class _Label:
    """Leaf marker used to name the leaves of a state tree."""

    __slots__ = ("index", "name")

    def __init__(self, name: str, index: int | None):
        self.name = name
        self.index = index


def _labels(node: Any, n: int, path: tuple[str, ...], index: int | None) -> Any:
    """A copy of ``node`` with every leaf replaced by its :class:`_Label`.

    A ``list`` of length ``n`` outside any other such list mirrors the param group's parameter
    list: its ``j``-th element belongs to parameter ``j`` and is named by the list's path.
    """
    if is_namedtuple(node):
        fields = getattr(node, "_fields")  # noqa: B009
        return type(node)(*(_labels(getattr(node, f), n, (*path, f), index) for f in fields))
    if type(node) is list and index is None and len(node) == n:
        return [_labels(v, n, path, j) for j, v in enumerate(node)]
    if isinstance(node, list | tuple):
        return type(node)(_labels(v, n, (*path, str(i)), index) for i, v in enumerate(node))
    if isinstance(node, dict):
        items = {k: _labels(v, n, (*path, str(k)), index) for k, v in node.items()}
        if type(node) is dict:
            return items
        if isinstance(node, defaultdict):
            return type(node)(node.default_factory, items)
        return type(node)(items)
    return _Label(".".join(path), index)


def make_plan(state: OptState, n: int, key_map: dict[str, str]) -> Plan:
    """``(name, param index or None)`` for every leaf of ``state``, in flattening order."""
    labels, spec = tree.flatten(_labels(state, n, (), None))
    if spec != tree.structure(state):
        raise TypeError(
            "TorchOptimizer: the transform's state contains a container type that the adapter "
            "cannot name (use NamedTuple, tuple, list and dict states)"
        )
    out: Plan = []
    for lab in labels:
        name: str = lab.name
        out.append((key_map.get(name, name), lab.index))
    return out


def plan_for(slot: Slot, state: OptState, spec: Any, n: int, key_map: dict[str, str]) -> Plan:
    """The slot's plan for a state of structure ``spec`` (cached while the structure is kept)."""
    if slot.plan_spec is None or spec != slot.plan_spec:
        slot.plan = make_plan(state, n, key_map)
        slot.plan_spec = spec
    return slot.plan


def _shared_names(slot: Slot) -> set[str]:
    """The names of the group-wide leaves (in every parameter's entry)."""
    return {name for name, j in slot.plan if j is None}


def value_key(x: Any) -> Any:
    """A hashable key of a state value (tensors by dtype, shape and contents)."""
    if isinstance(x, torch.Tensor):
        return (x.dtype, tuple(x.shape), tuple(x.detach().reshape(-1).tolist()))
    return x if isinstance(x, int | float | bool | str | type(None)) else repr(x)


def converge(pp: PerParam, active: list[bool], leaves: list[Any]) -> PerParam | None:
    """Writes each group-wide value into ``leaves`` (the first active parameter's, as a
    placeholder while diverged); returns ``None`` when all active parameters agree."""
    first = active.index(True)
    agree = True
    for k, values in pp.items():
        leaves[k] = values[first]
        key = value_key(values[first])
        if agree and any(value_key(v) != key for v, a in zip(values, active) if a):
            agree = False
    return None if agree else pp


# --------------------------------------------------------------------------------------------
# optimizer.state mirror
# --------------------------------------------------------------------------------------------


def flush_mirror(
    slot: Slot,
    params: list,
    store: defaultdict[Any, dict[str, Any]],
    key_map: dict[str, str],
    hidden: frozenset[str] = frozenset(),
) -> None:
    """Writes the group's leaves not yet mirrored (``slot.leaves``) into ``store[p]``.

    Names in ``hidden`` are internal (not mirrored, hence not saved); a parameter gets an entry
    only when it has a mirrored value, as in torch.
    """
    if slot.leaves is None:
        return
    plan = plan_for(slot, slot.state, slot.spec, len(params), key_map)
    active_params = [p for p, a in zip(params, slot.active) if a]
    if not any(
        leaf is not None and name not in hidden for (name, _), leaf in zip(plan, slot.leaves)
    ):
        slot.leaves = None
        return
    entries = {id(p): store[p] for p in active_params}
    pp = slot.pp or {}
    for k, ((name, j), leaf) in enumerate(zip(plan, slot.leaves)):
        if leaf is None or name in hidden:
            continue
        if j is None and k in pp:  # diverged group-wide values: one per parameter
            for p, a, v in zip(params, slot.active, pp[k]):
                if a:
                    entries[id(p)][name] = v
        elif j is None:
            for p in active_params:
                entries[id(p)][name] = leaf
        elif slot.active[j]:
            entries[id(params[j])][name] = leaf
    slot.leaves = None


# --------------------------------------------------------------------------------------------
# state_dict
# --------------------------------------------------------------------------------------------


def pack_param_groups(groups: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """torch's packed ``param_groups`` (callables left out) and ``{id(param): index}``."""
    param_mappings: dict[int, int] = {}
    start_index = 0

    def pack_group(group: dict[str, Any]) -> dict[str, Any]:
        nonlocal start_index
        packed = {
            k: v
            for k, v in group.items()
            if k != "params" and not (callable(v) and not isinstance(v, torch.Tensor))
        }
        param_mappings.update(
            {
                id(p): i
                for i, p in enumerate(group["params"], start_index)
                if id(p) not in param_mappings
            }
        )
        packed["params"] = [param_mappings[id(p)] for p in group["params"]]
        start_index += len(packed["params"])
        return packed

    return [pack_group(g) for g in groups], param_mappings


def pack_state(
    state: dict[Any, dict[str, Any]],
    groups: list[dict[str, Any]],
    slots: list[Slot],
    param_mappings: dict[int, int],
) -> dict[Any, Any]:
    """torch's packed ``state``: ``{index: {name: value}}`` for the parameters with state.

    ``state`` must be up to date (mirror flushed). Group-wide 0-d leaves are cloned into each
    entry, so that a ``torch.optim`` optimizer updating ``step`` in place can load the dict.
    """
    shared: dict[int, set[str]] = {}
    for group, slot in zip(groups, slots):
        names = _shared_names(slot)
        for p in group["params"]:
            shared[id(p)] = names
    packed_state: dict[Any, Any] = {}
    for k, v in state.items():
        if not isinstance(k, torch.Tensor):
            packed_state[k] = v
            continue
        if not v:
            continue
        names = shared.get(id(k), set())
        packed_state[param_mappings[id(k)]] = {
            name: (
                x.clone()
                if name in names and isinstance(x, torch.Tensor) and x.dim() == 0
                else _settled(x)
            )
            for name, x in v.items()
        }
    return packed_state


def _settled(x: Any) -> Any:
    """A DTensor state leaf holding a pending reduction (a ``Partial`` placement, e.g. a factored
    second moment reduced over a sharded dimension, kept lazy by DTensor) is reduced to a
    ``Replicate`` one: checkpoints hold values, not per-rank partial sums."""
    placements = getattr(x, "placements", None)
    if placements is None or not any(p.is_partial() for p in placements):
        return x
    from torch.distributed.tensor import Replicate

    return x.redistribute(placements=[Replicate() if p.is_partial() else p for p in placements])


# --------------------------------------------------------------------------------------------
# load_state_dict
# --------------------------------------------------------------------------------------------


def check_state_dict(
    state_dict: Any, groups: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[Any, Any]]:
    """A copy of the saved param groups and the saved state, after checking that they fit
    ``groups`` (numbers of groups and parameters, no stray state entries)."""
    if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict):
        raise ValueError("load_state_dict: expected a dict with 'state' and 'param_groups' entries")
    saved_groups = deepcopy(state_dict["param_groups"])
    if len(groups) != len(saved_groups):
        raise ValueError(
            "loaded state dict has a different number of parameter groups "
            f"({len(saved_groups)}) than the optimizer ({len(groups)})"
        )
    for gi, (g, s) in enumerate(zip(groups, saved_groups)):
        if len(g["params"]) != len(s["params"]):
            raise ValueError(
                f"loaded state dict contains a parameter group ({gi}) that doesn't match the "
                f"size of optimizer's group: {len(s['params'])} parameters saved, "
                f"{len(g['params'])} in the optimizer"
            )
    saved_state = state_dict["state"]
    known = set(_iter_chain.from_iterable(s["params"] for s in saved_groups))
    stray = [k for k in saved_state if k not in known]
    if stray:
        raise ValueError(
            f"load_state_dict: state entries {stray[:10]} belong to no parameter of the "
            "saved param groups"
        )
    return saved_groups, saved_state


def saved_entries(saved_state: dict[Any, Any], saved_ids: list) -> dict[int, dict[str, Any]]:
    """``{j: entry}`` for the group's parameters ``j`` with a non-empty saved entry."""
    entries = {}
    for j, idx in enumerate(saved_ids):
        e = saved_state.get(idx)
        if isinstance(e, dict) and any(v is not None for v in e.values()):
            entries[j] = e
    return entries


def load_group(
    gi: int,
    slot: Slot,
    tx: GradientTransformation,
    params: list,
    entries: dict[int, dict[str, Any]],
    saved_ids: list,
    key_map: dict[str, str],
    adapt_entry: Callable[[dict[str, Any], set[str]], dict[str, Any]],
    per_param: bool = False,
) -> None:
    """Rebuilds param group ``gi``'s state from its per-parameter entries into ``slot``.

    The state is a fresh ``tx.init`` filled with the saved values, cast to the fresh leaves'
    dtype and device; ``adapt_entry(entry, expected_names)`` may adapt each entry first.
    Group-wide leaves take the first entry's value; with ``per_param``, differing values are
    kept per parameter (``slot.pp``). Raises ``ValueError`` on missing or unexpected keys and on
    shape mismatches.
    """
    n = len(params)
    probe = [p if j in entries else None for j, p in enumerate(params)]
    with torch.no_grad():
        try:
            template = tx.init(probe) if len(entries) < n else tx.init(list(params))
            active = [j in entries for j in range(n)]
        except Exception:
            template = tx.init(list(params))
            active = [True] * n
    leaves, spec = tree.flatten(template)
    plan = make_plan(template, n, key_map)
    shared = [(name, x) for (name, j), x in zip(plan, leaves) if j is None and x is not None]

    def where(j: int) -> str:
        return f"param group {gi}, parameter {j} (state id {saved_ids[j]!r})"

    for j in range(n):
        if not active[j]:
            continue
        if j not in entries:
            raise ValueError(
                f"load_state_dict: {where(j)} has no saved state but the transform needs it"
            )
        expected = {name for name, _ in shared}
        expected |= {name for (name, jj), x in zip(plan, leaves) if jj == j and x is not None}
        entries[j] = adapt_entry(entries[j], expected)
        got = {k for k, v in entries[j].items() if v is not None}
        missing, extra = sorted(expected - got), sorted(got - expected)
        if missing or extra:
            raise ValueError(
                f"load_state_dict: {where(j)}: the saved state does not match this "
                f"optimizer's state (is it from another optimizer or transform?): "
                + (f"missing keys {missing}" if missing else "")
                + ("; " if missing and extra else "")
                + (f"unexpected keys {extra}" if extra else "")
                + f"; expected keys {sorted(expected)}"
            )

    def fill(x: Any, saved: Any, what: str) -> Any:
        if isinstance(x, torch.Tensor):
            if not isinstance(saved, torch.Tensor):
                saved = torch.as_tensor(saved)
            if saved.shape != x.shape:
                raise ValueError(
                    f"load_state_dict: {what}: saved shape {tuple(saved.shape)} does not "
                    f"match the expected shape {tuple(x.shape)}"
                )
            return saved.to(device=x.device, dtype=x.dtype)
        return saved

    out = []
    pp: dict[int, list[Any]] = {}
    for k, ((name, j), x) in enumerate(zip(plan, leaves)):
        if x is None:
            out.append(None)
        elif j is None:
            j0 = min(entries)
            out.append(fill(x, entries[j0][name], f"{where(j0)}, key {name!r}"))
            if per_param:
                pp[k] = [
                    fill(x, entries[jj][name], f"{where(jj)}, key {name!r}") if active[jj] else None
                    for jj in range(n)
                ]
        elif active[j]:
            out.append(fill(x, entries[j][name], f"{where(j)}, key {name!r}"))
        else:
            out.append(None)
    if pp:
        slot.pp = converge(pp, active, out)
    slot.state = tree.unflatten(spec, out)
    slot.active = active
    slot.probe_spec = probe_spec(tx)
    slot.plan, slot.plan_spec = plan, spec
