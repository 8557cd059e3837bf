"""Pytree math: the one place that knows how trees are flattened and how leaves are computed on.

Every function here takes and returns pytrees (nested dict / list / tuple / NamedTuple of tensors;
any tree ``torch.utils._pytree`` understands). ``None`` leaves mark parameters without a gradient:
an element-wise operation gives ``None`` wherever one of its input trees has ``None``; reductions
skip ``None`` leaves.

How leaves are computed (``shared/design.md`` §3):

* **eager**: leaves are grouped by ``(device, dtype)`` and each group is computed with one
  multi-tensor ``torch._foreach_*`` kernel, so an operation costs one Python call per group, not
  one per tensor;
* **under** ``torch.compile``, ``torch.func.vmap`` / ``grad`` / ``jvp``: plain per-tensor ops, which
  the compiler fuses and which every functorch transform supports.

Python-number scalars stay Python numbers. Tensor scalars (hyperparameters held in state, e.g. by
:func:`optax_torch.inject_hyperparams`) are read as exact Python numbers in the eager path when they
are plain CPU scalars, and used as tensors otherwise (compiled, vmapped, differentiated or on an
accelerator), so the result is the same either way.

Names and signatures follow ``optax.tree``.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import itertools
import operator
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.utils._pytree as _py_pytree  # the node registry (register_pytree_node fills both)

# The leaf-level kernels live in a private sibling module; nothing else of ours is imported here.
from optax_torch._tree_kernels import _as_number, _Foreach, _is_zero, _PerLeaf

_pytree: Any
try:  # optree-backed pytrees: ~6x faster flatten/unflatten than the pure-Python implementation.
    import torch.utils._cxx_pytree as _pytree
except ImportError:  # pragma: no cover - optree is a declared dependency
    import torch.utils._pytree as _pytree

__all__ = [
    "abs",
    "abs_sq",
    "add",
    "add_scale",
    "add_scalar",
    "all_finite",
    "allclose",
    "batch_shape",
    "bias_correction",
    "broadcast_prefix",
    "cast",
    "cast_like",
    "debias_factor",
    "clip",
    "conj",
    "div",
    "div_sqrt",
    "donate",
    "dtype",
    "flatten",
    "full_like",
    "get",
    "get_all_with_path",
    "leaf_norms",
    "leaves",
    "map",
    "map_params",
    "map_scalars",
    "max",
    "maximum",
    "min",
    "mul",
    "norm",
    "ones_like",
    "pow",
    "random_like",
    "real",
    "scale",
    "set",
    "size",
    "sign",
    "sqrt",
    "structure",
    "sub",
    "sum",
    "unflatten",
    "update_infinity_moment",
    "update_moment",
    "update_moment_per_elem_norm",
    "vdot",
    "where",
    "zeros_like",
]

Tree = Any
Scalar = float | int | torch.Tensor


# --------------------------------------------------------------------------------------------
# Flattening
# --------------------------------------------------------------------------------------------


# The hot trees of an optimizer step are plain lists of tensors (the adapter's parameters,
# gradients, updates and per-parameter moments): they are flattened without the pytree
# registry (~10x faster for 1,000 tensors), with the same treespec.
_LEAF_TYPES = (torch.Tensor, type(None))
_list_specs: dict[int, Any] = {}  # length -> treespec of a list of that many leaves
_list_spec_ids: dict[int, int] = {}  # id(treespec) -> length


def _list_spec(n: int) -> Any:
    spec = _list_specs.get(n)
    if spec is None:
        spec = _pytree.tree_structure([None] * n)
        _list_specs[n] = spec
        _list_spec_ids[id(spec)] = n
    return spec


# Leaf types checked by a set lookup before issubclass (per step, lists of thousands of leaves).
_COMMON_LEAF_TYPES = frozenset({torch.Tensor, torch.nn.Parameter, type(None)})


def _is_flat_list(tree: Any) -> bool:
    if torch.compiler.is_compiling():  # dynamo traces the pytree registry, not this shortcut
        return False
    if type(tree) is not list:
        return False
    types = builtins.set(builtins.map(type, tree))
    return types <= _COMMON_LEAF_TYPES or all(
        builtins.map(issubclass, types, itertools.repeat(_LEAF_TYPES))
    )


# Treespecs of trees made of tuples, NamedTuples and lists of leaves (optimizer states, lists of
# trees), by a hashable key of their structure: flattening them in Python is ~10x faster than
# the registry-driven flatten (~0.3 us per leaf), as for flat lists above.
_nested_specs: dict[Any, Any] = {}
_LEAF_KEY = "."


def _nested_leaves(tree: Any, out: list[Any]) -> Any:
    """Appends the leaves of ``tree`` to ``out`` and returns a key of its structure, when it is
    made of tuples, NamedTuples (not registered as pytree nodes of their own) and lists down to
    tensor or ``None`` leaves; ``None`` (with ``out`` partly filled) for any other tree."""
    t = type(tree)
    if t in _COMMON_LEAF_TYPES:
        out.append(tree)
        return _LEAF_KEY
    if t is list:
        if _is_flat_list(tree):
            out.extend(tree)
            return len(tree)
    elif not (t is tuple or (issubclass(t, tuple) and hasattr(t, "_fields"))) or (
        t in _py_pytree.SUPPORTED_NODES and t is not tuple
    ):
        return None
    keys = []
    for x in tree:
        key = _nested_leaves(x, out)
        if key is None:
            return None
        keys.append(key)
    return t, tuple(keys)


def _nested(tree: Any) -> tuple[list[Any], Any] | None:
    """``(leaves, key)`` by :func:`_nested_leaves`, or ``None`` (also under compile)."""
    t = type(tree)
    if (t is not tuple and t is not list and not hasattr(t, "_fields")) or (
        torch.compiler.is_compiling()
    ):
        return None
    out: list[Any] = []
    key = _nested_leaves(tree, out)
    return None if key is None else (out, key)


def flatten(tree: Tree) -> tuple[list[Any], Any]:
    """Returns ``(leaves, treespec)``; ``None`` counts as a leaf."""
    if _is_flat_list(tree):
        return list(tree), _list_spec(len(tree))
    nested = _nested(tree)
    if nested is not None:
        xs, key = nested
        spec = _nested_specs.get(key)
        if spec is None:
            xs, spec = _pytree.tree_flatten(tree)
            if len(_nested_specs) > 1024:
                _nested_specs.clear()
            if spec.num_leaves == len(nested[0]):
                _nested_specs[key] = spec
        return xs, spec
    return _pytree.tree_flatten(tree)


def unflatten(treespec: Any, leaves: Sequence[Any]) -> Tree:
    """Inverse of :func:`flatten`."""
    if not torch.compiler.is_compiling() and id(treespec) in _list_spec_ids:
        out = list(leaves)
        if len(out) != _list_spec_ids[id(treespec)]:
            raise ValueError(f"unflatten: {len(out)} leaves for {treespec}")
        return out
    return _pytree.tree_unflatten(list(leaves), treespec)


def leaves(tree: Tree) -> list[Any]:
    """The leaves of ``tree`` in flattening order, ``None`` leaves removed."""
    if _is_flat_list(tree):
        return [x for x in tree if x is not None]
    nested = _nested(tree)
    xs = _pytree.tree_leaves(tree) if nested is None else nested[0]
    return [x for x in xs if x is not None]


def structure(tree: Tree) -> Any:
    """The treespec of ``tree``."""
    if _is_flat_list(tree):
        return _list_spec(len(tree))
    return _pytree.tree_structure(tree)


def broadcast_prefix(prefix: Tree, tree: Tree) -> list[Any]:
    """Flat leaves of ``prefix`` repeated over the leaves of ``tree``.

    ``prefix`` must be a prefix of ``tree``'s structure, e.g. ``{"enc": False, "dec": True}`` for
    ``{"enc": {...}, "dec": ...}``.
    """
    import torch.utils._pytree as _py

    spec = _py.tree_structure(tree)
    out = _py._broadcast_to_and_flatten(prefix, spec)
    if out is None:
        raise ValueError(
            f"tree structure mismatch: {_py.tree_structure(prefix)} is not a prefix of {spec}"
        )
    return out


def _flatten_as(spec: Any, tree: Tree, what: str, ref: str = "the first tree") -> list[Any]:
    out, other = flatten(tree)
    if other is not spec and other != spec:
        raise ValueError(
            f"tree structure mismatch: {what} has structure\n  {other}\nbut expected\n  {spec}"
            + _path_difference(spec, tree, what, ref)
        )
    return out


def _path_difference(spec: Any, tree: Tree, what: str, ref: str) -> str:
    """The leaf paths in one structure and not the other (on the error path only)."""
    from optax_torch._validate import leaf_paths

    try:
        expected = leaf_paths(_pytree.tree_unflatten([None] * spec.num_leaves, spec))
        got = leaf_paths(tree)
    except Exception:  # an unusual spec: the structures above say it all
        return ""
    missing = [p for p in expected if p not in builtins.set(got)]
    extra = [p for p in got if p not in builtins.set(expected)]
    parts = []
    if missing:
        parts.append(f"in {ref} but not in {what}: {', '.join(missing[:5])}")
    if extra:
        parts.append(f"in {what} but not in {ref}: {', '.join(extra[:5])}")
    return f"\n({'; '.join(parts)})" if parts else ""


def _diagnose(trees: Sequence[Tree], names: Sequence[str]) -> Exception | None:
    """After a tree op failed: the leaf that made it fail, as an error naming its path (a leaf
    that is not a tensor, a sparse or integer tensor, or shapes or devices that differ from
    tree 0's). ``None`` where no leaf explains it. On the error path only."""
    from optax_torch._validate import describe_leaf, leaf_path

    flats = [flatten(t)[0] for t in trees]
    if any(len(f) != len(flats[0]) for f in flats):
        return None

    def name(k: int, i: int) -> str:
        base = names[k] if len(names) > k else f"tree #{k + 1}"
        return f"{base}{leaf_path(trees[k], i)}"

    for i in range(len(flats[0])):
        row = [f[i] for f in flats]
        if any(x is None for x in row):
            continue
        for k, x in enumerate(row):
            if not isinstance(x, torch.Tensor):
                return TypeError(f"{name(k, i)} is not a tensor: {describe_leaf(x)}")
            if x.layout != torch.strided:
                return TypeError(
                    f"{name(k, i)} is a sparse tensor ({describe_leaf(x)}); this "
                    "transformation takes dense tensors only (densify it with .to_dense(), or "
                    "use a transformation for sparse gradients)"
                )
        x0 = row[0]
        for k, x in enumerate(row[1:], 1):
            if x.shape != x0.shape and x.ndim and x0.ndim:
                return ValueError(
                    f"shape mismatch: {name(k, i)} has shape {tuple(x.shape)} but "
                    f"{name(0, i)} has shape {tuple(x0.shape)}"
                )
            if x.device != x0.device:
                return ValueError(
                    f"device mismatch: {name(k, i)} is on {x.device} but {name(0, i)} is on "
                    f"{x0.device}"
                )
    for i in range(len(flats[0])):  # last: an integer leaf, once nothing else explains it
        for k, x in enumerate(f[i] for f in flats):
            if isinstance(x, torch.Tensor) and not (x.is_floating_point() or x.is_complex()):
                return TypeError(
                    f"{name(k, i)} has dtype {x.dtype} ({describe_leaf(x)}); only "
                    "floating-point or complex tensors can be optimized"
                )
    return None


# --------------------------------------------------------------------------------------------
# Backends: the same list kernels, multi-tensor or per tensor
# --------------------------------------------------------------------------------------------


def _use_foreach() -> bool:
    return not (torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active())


def _backend() -> type[_Foreach] | type[_PerLeaf]:
    return _Foreach if _use_foreach() else _PerLeaf


def _any_requires_grad(lists: list[list[Any]]) -> bool:
    get = operator.attrgetter("requires_grad")
    return any(any(builtins.map(get, xs)) for xs in lists)


def _has_none(xs: list[Any]) -> bool:
    return any(builtins.map(operator.is_, xs, itertools.repeat(None)))


def _any_complex(xs: list[Any]) -> bool:
    return any(x.is_complex() for x in xs)


def _abs_sq_leaf(x: torch.Tensor) -> torch.Tensor:
    if x.is_complex():
        return torch.view_as_real(x).square().sum(-1).to(x.dtype)
    return x * x


def _groups(xs: list[Any]) -> list[list[int]]:
    """Indices of the tensors ``xs`` (no ``None``) grouped by (device, dtype), computed in C++,
    and split by :func:`_kinds`."""
    if len(xs) <= 1:
        return [list(range(len(xs)))] if xs else []
    kinds = _kinds(xs)
    if kinds is not None:
        return [[idx[i] for i in sub] for idx in kinds for sub in _groups([xs[i] for i in idx])]
    grouped = torch._C._group_tensors_by_device_and_dtype([xs], True)
    return [list(idx) for _, idx in grouped.values()]


def _kinds(xs: list[Any]) -> list[list[int]] | None:
    """Where ``xs`` mixes DTensors (sharded or replicated parameters: FSDP2, tensor parallel) and
    plain tensors, their indices by kind (multi-tensor kernels refuse the mix); else ``None``.
    Costs one dictionary lookup until ``torch.distributed.tensor`` is imported, then one pass
    over the types in C."""
    module = sys.modules.get("torch.distributed.tensor")
    if module is None:
        return None
    types = builtins.set(builtins.map(type, xs))
    if len(types) == 1:
        return None
    dtensor = module.DTensor
    flags = [issubclass(t, dtensor) for t in types]
    if all(flags) or not any(flags):
        return None
    is_d = {t: f for t, f in zip(types, flags)}
    return [
        [i for i, x in enumerate(xs) if is_d[type(x)]],
        [i for i, x in enumerate(xs) if not is_d[type(x)]],
    ]


def _dtensor_type() -> Any:
    """``DTensor`` if ``torch.distributed.tensor`` has been imported (else ``None``)."""
    module = sys.modules.get("torch.distributed.tensor")
    return None if module is None else module.DTensor


def _local_scalars(xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """0-d results of a reduction, as plain tensors where DTensors and plain tensors mix (a
    DTensor's pending cross-rank reduction is done here)."""
    if _kinds(xs) is None:
        return xs
    return [_global(x) for x in xs]


def _global(x: torch.Tensor) -> torch.Tensor:
    """The result of a reduction over a whole tree as a plain tensor: a DTensor's pending
    cross-rank reduction is done once, here, so that algorithms never hold DTensor scalars
    (which refuse to mix with the plain tensors of their state)."""
    dtensor = _dtensor_type()
    if dtensor is None or not isinstance(x, dtensor):
        return x
    from torch.distributed.tensor import Replicate

    d: Any = x
    return d.redistribute(d.device_mesh, [Replicate()] * d.device_mesh.ndim).to_local()


def _by_kind(op: Callable[..., Any], xs: list[torch.Tensor], *others: Any, **kw: Any) -> None:
    """Runs the in-place multi-tensor ``op(xs, *others, **kw)`` once, or once per kind where
    ``xs`` mixes DTensors and tensors (:func:`_kinds`); ``others`` that are lists are split
    alike, scalars passed on."""
    kinds = _kinds(xs)
    if kinds is None:
        if xs:
            op(xs, *others, **kw)
        return
    for idx in kinds:
        op(
            [xs[i] for i in idx],
            *([o[i] for i in idx] if isinstance(o, list) else o for o in others),
            **kw,
        )


def _add_into(xs: list[torch.Tensor], ys: list[torch.Tensor], alpha: float = 1) -> None:
    """``xs += alpha * ys`` in place for lists of tensors (no ``None``), one multi-tensor kernel
    per kind (:func:`_by_kind`; an update of another float dtype is cast to the target's)."""
    _by_kind(torch._foreach_add_, xs, ys, alpha=alpha)


def _addcdiv_into(
    xs: list[torch.Tensor], ys: list[torch.Tensor], zs: list[torch.Tensor], alpha: float = 1
) -> None:
    """``xs += alpha * ys / zs`` in place (lists of tensors of one dtype, no ``None``), one
    multi-tensor kernel per kind (:func:`_by_kind`)."""
    _by_kind(torch._foreach_addcdiv_, xs, ys, zs, value=alpha)


def _mul_into(xs: list[torch.Tensor], s: float) -> None:
    """``xs *= s`` in place for a list of tensors (no ``None``), one kernel per kind."""
    _by_kind(torch._foreach_mul_, xs, s)


class _Donated(threading.local):
    ids: frozenset[int] = frozenset()  # donated state tensors (donate())
    fresh: frozenset[int] = frozenset()  # intermediate updates the running member may consume
    spent: frozenset[int] = frozenset()  # intermediate updates consumed in this donate() block
    depth: int = 0  # how many donate() blocks are open


_donated = _Donated()


@contextlib.contextmanager
def donate(*trees: Tree, exclude: Sequence[Tree] = ()) -> Iterator[None]:
    """Lets the tree operations inside the block overwrite the tensors of ``trees`` in place.

    The owner of a state that will never be read again (the ``TorchOptimizer`` adapter, or a
    training loop that rebinds ``state``) can hand its buffers over, like JAX's buffer donation::

        with optax_torch.tree.donate(state):
            updates, state = tx.update(grads, state, params)

    Moment updates (:func:`update_moment`, :func:`update_moment_per_elem_norm`,
    :func:`add_scale` into a momentum buffer, :func:`maximum`) then write the new moments into the
    old buffers instead of allocating new ones: same numbers, fewer passes over memory, and no
    second copy of the state during the step. Each buffer is consumed at most once; only the
    eager multi-tensor path does this. Afterwards the donated tree must not be used: its tensors
    may hold the new values (and, if ``update`` raised half way, a mixture). Tensors that also
    appear in an ``exclude`` tree (e.g. the gradients and parameters) are never donated.

    Only donate to a transformation that reads each old state tensor once, in the operation that
    replaces it: ``optax_torch.is_donation_safe(tx)`` is true for all of the library's
    transformations and the combinators of such (see ``optax_torch.donation_safe``).
    """
    all_ids = list(builtins.map(id, itertools.chain.from_iterable(builtins.map(leaves, trees))))
    kept = builtins.set(
        builtins.map(id, itertools.chain.from_iterable(builtins.map(leaves, exclude)))
    )
    # A tensor that appears twice could be read after being overwritten: never donate it.
    ids = frozenset(all_ids)
    if len(ids) != len(all_ids):
        counts = collections.Counter(all_ids)
        ids = frozenset(i for i, c in counts.items() if c == 1)
    ids = ids.difference(kept)
    _donated.depth += 1
    try:
        with _donating(ids):
            yield
    finally:
        _donated.depth -= 1
        if not _donated.depth:
            _donated.fresh = _donated.spent = frozenset()


@contextlib.contextmanager
def _donating(ids: frozenset[int]) -> Iterator[None]:
    """Adds ``ids`` to the donated set for the block; on exit removes those it added and that
    were not consumed (consumption by the block, of these or of outer donations, stays)."""
    added = ids - _donated.ids
    _donated.ids = _donated.ids | added
    try:
        yield
    finally:
        _donated.ids = _donated.ids - added


class _Final(threading.local):
    armed: Any = None  # the updates tree whose final scaling may be deferred, or None
    factor: Any = None  # the deferred factor (a Python number), or None
    params: Any = None  # the parameters the caller adds the updates to, or None
    decay_armed: Any = None  # the updates tree whose weight decay may be deferred, or None
    decay: Any = None  # a deferred weight decay (a Python number) of those parameters, or None
    quotient_armed: bool = False  # whether the next div_sqrt may leave its quotient to the caller
    quotient: Any = None  # {id(den): numerator} of a deferred quotient, or None


_final = _Final()


@contextlib.contextmanager
def _deferred_scale(updates: Tree, params: Tree = None) -> Iterator[_Final]:
    """Lets the transformation run in the block leave its final ``tree.scale`` to the caller.

    The ``TorchOptimizer`` step adds the updates to the parameters with a multi-tensor
    ``add_(u, alpha=s)``, so a last ``scale(s)`` (the learning rate of most chains) folded into it
    costs no pass over memory and no new buffer (torch.optim's ``param.add_(buf, alpha=-lr)``).
    Inside the block, :func:`scale` called with the *armed* tree itself (first ``updates``, then
    as :func:`optax_torch.chain` passes it on to its last member) and a Python number returns the
    tree unscaled and records the factor in the yielded object (``factor``; ``None`` if nothing
    was deferred): the caller must then apply ``factor * updates``. Only transformations marked
    ``consumes_updates`` (their one operation computes their output) or ``_forwards_updates``
    (their output is an inner transformation's) are armed; any other sees nothing.

    With ``params`` (the tensors the caller will update), a decoupled weight decay before that
    final scale may be left to the caller too: :func:`add_scale` called with the tree armed for
    it (:func:`_arm_decay`), a Python number ``d`` and ``params`` itself returns the tree as it
    is and records ``decay = d``; the caller then computes ``p + factor * (u + d p)`` as
    ``p * (1 + factor d) + factor u`` (torch's AdamW: ``p.mul_(1 - lr wd)`` and one update
    pass, where adding ``d p`` to the updates costs a pass more). :func:`optax_torch.chain` arms
    the member before its last only when that last member is a ``scale`` by a Python number,
    which always defers.

    And the quotient of an adaptive method may be left to the caller as well: where only such
    deferred operations follow a member whose output is its last :func:`div_sqrt` (Adam), the
    chain arms that member (:func:`_arm_quotient`), and its ``div_sqrt`` returns the
    *denominator* tree and records ``quotient = {id(den): numerator}`` for each leaf it left
    undivided (eager, plain CPU-scalar hyperparameters, numerator and denominator of one
    dtype). The caller then adds ``factor * numerator / den`` to those parameters with one
    ``addcdiv_`` (torch's ``param.addcdiv_(exp_avg, denom, value=-step_size)``), where
    materialising the quotient costs two passes more."""
    names = ("armed", "factor", "params", "decay_armed", "decay", "quotient_armed", "quotient")
    prev = [getattr(_final, k) for k in names]
    _final.armed, _final.factor, _final.params = updates, None, params
    _final.decay_armed = _final.decay = _final.quotient = None
    _final.quotient_armed = False
    out = _Final()
    try:
        yield out
        out.factor, out.decay, out.quotient = _final.factor, _final.decay, _final.quotient
    finally:
        for k, v in zip(names, prev):
            setattr(_final, k, v)


@contextlib.contextmanager
def _arm_decay(updates: Tree | None) -> Iterator[None]:
    """Arms ``updates`` for a deferred weight decay in the block (see :func:`_deferred_scale`)."""
    prev = _final.decay_armed
    _final.decay_armed = updates
    try:
        yield
    finally:
        _final.decay_armed = prev


@contextlib.contextmanager
def _arm_quotient(armed: bool) -> Iterator[None]:
    """Arms (or disarms) the block's first :func:`div_sqrt` for a deferred quotient (see
    :func:`_deferred_scale`); only inside a ``_deferred_scale`` block with parameters."""
    prev = _final.quotient_armed
    _final.quotient_armed = armed and _final.params is not None
    try:
        yield
    finally:
        _final.quotient_armed = prev


@contextlib.contextmanager
def _arm(updates: Tree | None) -> Iterator[None]:
    """Arms ``updates`` (or disarms, with ``None``) for the block (see :func:`_deferred_scale`)."""
    prev = _final.armed
    _final.armed = updates
    try:
        yield
    finally:
        _final.armed = prev if _final.factor is None else None


def _take_donated(xs: list[Any], like: list[Any]) -> bool:
    """Whether every tensor of ``xs`` is donated (and dtype-compatible); consumes them if so."""
    ids = _donated.ids
    if not ids or not xs or not ids.issuperset(builtins.map(id, xs)):
        return False
    if not _same_dtypes(xs, like):
        return False
    _donated.ids = ids.difference(builtins.map(id, xs))
    return True


def _take_fresh(xs: list[Any], like: list[Any]) -> bool:
    """Like :func:`_take_donated`, for intermediate updates (:func:`_fresh_scope`)."""
    ids = _donated.fresh
    if not xs or not ids.issuperset(builtins.map(id, xs)) or not _same_dtypes(xs, like):
        return False
    taken = frozenset(builtins.map(id, xs))
    _donated.fresh = ids - taken
    _donated.spent = _donated.spent | taken
    return True


def _ids(tree: Tree) -> builtins.set[int]:
    """The ids of the tensors of ``tree`` (of its leaves, ``None`` left out)."""
    nested = None if _is_flat_list(tree) else _nested(tree)
    if nested is not None:
        xs = nested[0]
    elif _is_flat_list(tree):
        xs = tree
    elif isinstance(tree, tuple | list) and not torch.compiler.is_compiling():
        # (a tuple or list of trees, some of other kinds: each on its own)
        ids: builtins.set[int] = builtins.set()
        for t in tree:
            ids |= _ids(t)
        return ids
    else:
        xs = _pytree.tree_leaves(tree)
    ids = builtins.set(builtins.map(id, xs))
    ids.discard(id(None))
    return ids


def _offer(updates: Tree, kept: builtins.set[int]) -> frozenset[int]:
    """Inside a :func:`donate` block, the ids of the tensors of ``updates`` — an intermediate
    result that only the next member of a chain will read — that may be given to that member
    with :func:`_fresh_scope`: all but those in ``kept`` (the chain's inputs, every state), in
    the donated state, or twice. The chain keeps ``updates`` alive while the ids are in use, so
    that no id can be reused meanwhile."""
    if not _donated.depth:
        return frozenset()
    xs = updates if _is_flat_list(updates) else _pytree.tree_leaves(updates)
    xs = [x for x in xs if isinstance(x, torch.Tensor)]
    if not xs:
        return frozenset()
    ids = frozenset(builtins.map(id, xs))
    if len(ids) != len(xs):
        counts = collections.Counter(builtins.map(id, xs))
        ids = frozenset(i for i, c in counts.items() if c == 1)
    return ids.difference(kept, _donated.ids)


@contextlib.contextmanager
def _fresh_scope(ids: frozenset[int]) -> Iterator[None]:
    """Runs the block with ``ids`` (from :func:`_offer`) as the only intermediate updates that
    operations with a ``consumable`` tree may overwrite; restores the outer ones afterwards,
    less those consumed."""
    prev = _donated.fresh
    _donated.fresh = ids
    try:
        yield
    finally:
        _donated.fresh = prev - _donated.spent if prev else prev


@contextlib.contextmanager
def _owned(tree: Tree, others: Tree) -> Iterator[None]:
    """Inside a :func:`donate` block, lets the operations of the block overwrite ``tree`` — a
    temporary the calling transformation made and reads no more — as they do intermediate
    updates (``consumable``). Tensors also in ``others`` (the caller's inputs and state: an
    operation may have returned one of them as it was) or in the donated state are left alone.
    Outside a donation block (a pure ``update``) this does nothing."""
    if not _donated.depth:
        yield
        return
    with _fresh_scope(_offer(tree, _ids(others))):
        yield


_dtype_of = operator.attrgetter("dtype")


def _same_dtypes(xs: Sequence[Any], ys: Sequence[Any]) -> bool:
    if xs is ys:
        return True
    if torch.compiler.is_compiling():  # dynamo cannot trace attrgetter
        return all(x.dtype == y.dtype for x, y in zip(xs, ys))
    return all(builtins.map(operator.eq, builtins.map(_dtype_of, xs), builtins.map(_dtype_of, ys)))


def _apply(
    kernel: Callable[..., list[Any]],
    *trees: Tree,
    names: Sequence[str] = (),
    donatable: int | tuple[int, ...] | None = None,
    consumable: int | None = None,
) -> Tree:
    """Runs ``kernel(backend, leaves_0, leaves_1, ...)`` on the leaves of the trees.

    All trees must have the same structure. Where any tree has a ``None`` leaf the result is
    ``None`` (a parameter without gradient has no update, and no new state). In the multi-tensor
    backend the kernel runs once per (device, dtype) group of tree 0. If ``donatable`` names (the
    index of) a tree whose tensors are all donated (:func:`donate`), the kernel is called with
    ``inplace=<that index>`` and may write its result into that tree's tensors. ``consumable``
    does the same for intermediate updates only (donated by a chain to a member marked
    :func:`optax_torch.consumes_updates`), never for a donated state.
    """
    try:
        first, spec = flatten(trees[0])
        rest = [
            _flatten_as(
                spec,
                t,
                names[k + 1] if len(names) > k + 1 else f"tree #{k + 2}",
                names[0] if names else "the first tree",
            )
            for k, t in enumerate(trees[1:])
        ]
        lists = [first, *rest]
        n = len(first)
        valid: list[int] | None = None
        if any(_has_none(xs) for xs in lists):
            valid = [i for i in range(n) if all(xs[i] is not None for xs in lists)]
            lists = [[xs[i] for i in valid] for xs in lists]
        backend = _backend()
        if backend is _Foreach and torch.is_grad_enabled() and _any_requires_grad(lists):
            # recorded for autograd: pure per-tensor ops, no in-place temporaries
            backend = _PerLeaf
        extra: dict[str, Any] = {}
        if donatable is not None and backend is _Foreach and _donated.ids:
            for k in (donatable,) if isinstance(donatable, int) else donatable:
                if _take_donated(lists[k], lists[0]):
                    extra["inplace"] = k
                    break
        if (
            consumable is not None
            and "inplace" not in extra
            and backend is _Foreach
            and _donated.fresh
            and _take_fresh(lists[consumable], lists[0])
        ):
            extra["inplace"] = consumable
        # CPU multi-tensor kernels loop over tensors in C++ whatever their dtypes; grouping by
        # (device, dtype) only pays where fast fused kernels exist (accelerators).
        if backend is _PerLeaf or not lists[0]:
            groups = None
        elif lists[0][0].device.type == "cpu":
            groups = _kinds(lists[0])
        else:
            groups = _groups(lists[0])
            if len(groups) == 1:
                groups = None
        if groups is None:
            results = kernel(backend, *lists, **extra) if lists[0] else []
        else:
            results = [None] * len(lists[0])
            for idx in groups:
                group_lists = [[xs[i] for i in idx] for xs in lists]
                for i, r in zip(idx, kernel(backend, *group_lists, **extra)):
                    results[i] = r
        if valid is None:
            return unflatten(spec, results)
        out: list[Any] = [None] * n
        for i, r in zip(valid, results):
            out[i] = r
        return unflatten(spec, out)
    except (RuntimeError, TypeError, AttributeError, NotImplementedError) as e:
        problem = _diagnose(trees, names)
        if problem is None:
            raise
        raise problem from e


# --------------------------------------------------------------------------------------------
# Generic map
# --------------------------------------------------------------------------------------------


def map(f: Callable[..., Any], tree: Tree, *rest: Tree, is_leaf: Callable | None = None) -> Tree:
    """Applies ``f`` leaf by leaf (``None`` leaves of ``tree`` pass through untouched).

    A Python call per leaf: use the multi-tensor functions of this module in hot paths.
    """
    first, spec = _pytree.tree_flatten(tree, is_leaf=is_leaf)
    others = []
    for t in rest:
        xs, s = _pytree.tree_flatten(t, is_leaf=is_leaf)
        if s != spec:
            raise ValueError(f"tree structure mismatch in map: {s} vs {spec}")
        others.append(xs)
    out = [None if x is None else f(x, *(o[i] for o in others)) for i, x in enumerate(first)]
    return _pytree.tree_unflatten(out, spec)


# --------------------------------------------------------------------------------------------
# Arithmetic
# --------------------------------------------------------------------------------------------


def add(tree_x: Tree, tree_y: Tree, *other_trees: Tree) -> Tree:
    """Leafwise ``x + y (+ ...)``."""
    out = _apply(lambda b, xs, ys: b.add(xs, ys), tree_x, tree_y, names=("tree_x", "tree_y"))
    for t in other_trees:
        out = _apply(lambda b, xs, ys: b.add(xs, ys), out, t)
    return out


def sub(tree_x: Tree, tree_y: Tree) -> Tree:
    """Leafwise ``x - y``."""
    return _apply(lambda b, xs, ys: b.sub(xs, ys), tree_x, tree_y, names=("tree_x", "tree_y"))


def _fits_into(xs: list[Any], ys: list[Any]) -> bool:
    """Whether ``x * y`` (or ``x / y``) has ``x``'s dtype and shape for every pair (``y`` of
    ``x``'s dtype, 0-d or of ``x``'s shape): it may then be written into ``x``."""
    return _same_dtypes(xs, ys) and all(not y.dim() or y.shape == x.shape for x, y in zip(xs, ys))


def mul(tree_x: Tree, tree_y: Tree) -> Tree:
    """Leafwise ``x * y`` (``y`` may hold 0-d factors, one per leaf; written into ``tree_x`` if
    it holds intermediate updates that a chain donated, see
    :func:`optax_torch.consumes_updates`)."""

    def kernel(b, xs, ys, inplace=None):
        if inplace == 0 and _fits_into(xs, ys):
            torch._foreach_mul_(xs, ys)
            return xs
        return b.mul(xs, ys)

    return _apply(kernel, tree_x, tree_y, names=("tree_x", "tree_y"), consumable=0)


def div(tree_x: Tree, tree_y: Tree) -> Tree:
    """Leafwise ``x / y`` (``y`` may hold 0-d divisors, one per leaf; written into ``tree_x``
    as :func:`mul`)."""

    def kernel(b, xs, ys, inplace=None):
        if inplace == 0 and _fits_into(xs, ys):
            torch._foreach_div_(xs, ys)
            return xs
        return b.div(xs, ys)

    return _apply(kernel, tree_x, tree_y, names=("tree_x", "tree_y"), consumable=0)


def maximum(tree_x: Tree, tree_y: Tree) -> Tree:
    """Leafwise ``max(x, y)`` (written into ``tree_x`` if it is donated).

    Complex leaves are ordered by their real parts (moments held in a complex dtype are real).
    """

    def kernel(b, xs, ys, inplace=None):
        if _any_complex(xs):
            return [
                torch.where(x.real >= y.real, x, y) if x.is_complex() else torch.maximum(x, y)
                for x, y in zip(xs, ys)
            ]
        if inplace == 0:
            torch._foreach_maximum_(xs, ys)
            return xs
        return b.maximum(xs, ys)

    return _apply(kernel, tree_x, tree_y, names=("tree_x", "tree_y"), donatable=0)


def abs_sq(tree: Tree) -> Tree:
    """Leafwise ``|x| ** 2``: ``x * x`` for real leaves, ``re(x)**2 + im(x)**2`` for complex."""

    def kernel(b, xs):
        if _any_complex(xs):
            return [_abs_sq_leaf(x) for x in xs]
        return b.mul(xs, xs)

    return _apply(kernel, tree, names=("tree",))


def scale(scalar: Scalar, tree: Tree) -> Tree:
    """``scalar * tree`` (written into ``tree`` if it holds intermediate updates that a chain
    donated, see :func:`optax_torch.consumes_updates`)."""

    if (
        _final.armed is not None
        and tree is _final.armed
        and _final.factor is None
        and isinstance(scalar, int | float)
        and not isinstance(scalar, bool)
    ):
        _final.armed, _final.factor = None, scalar  # applied by the caller (_deferred_scale)
        return tree

    def kernel(b, xs, inplace=None):
        if inplace == 0:
            s = _as_number(scalar)
            if not isinstance(s, torch.Tensor) or s.device == xs[0].device:
                torch._foreach_mul_(xs, s)
                return xs
        return b.mul_scalar(xs, scalar)

    return _apply(kernel, tree, consumable=0)


def add_scalar(tree: Tree, scalar: Scalar) -> Tree:
    """``tree + scalar``, leafwise."""
    return _apply(lambda b, xs: b.add_scalar(xs, scalar), tree)


def add_scale(tree_x: Tree, scalar: Scalar, tree_y: Tree) -> Tree:
    """``x + scalar * y`` (written into ``tree_y`` as ``y * scalar + x`` if it is donated, the
    form of ``torch.optim.SGD``'s momentum buffer)."""

    if (
        _final.decay_armed is not None
        and tree_x is _final.decay_armed
        and _final.params is not None
        and tree_y is _final.params
        and _final.factor is None
        and _final.decay is None
        and isinstance(scalar, int | float)
        and not isinstance(scalar, bool)
    ):
        _final.decay = scalar  # applied by the caller (_deferred_scale)
        return tree_x

    def kernel(b, xs, ys, inplace=None):
        s = _as_number(scalar) if inplace is not None else scalar
        if inplace == 1 and not isinstance(s, torch.Tensor):
            torch._foreach_mul_(ys, s)
            torch._foreach_add_(ys, xs)
            return ys
        if inplace == 0 and not isinstance(s, torch.Tensor):
            torch._foreach_add_(xs, ys, alpha=s)
            return xs
        return b.add_scaled(xs, s, ys)

    return _apply(
        kernel, tree_x, tree_y, names=("tree_x", "tree_y"), donatable=(1, 0), consumable=0
    )


def div_sqrt(
    tree_x: Tree,
    tree_y: Tree,
    eps: Scalar = 0.0,
    eps_root: Scalar = 0.0,
    x_scale: Scalar = 1.0,
    y_scale: Scalar = 1.0,
    *,
    into: Tree | None = None,
) -> Tree:
    r"""The ratio at the heart of adaptive methods, in two passes over memory:

    .. math::
        \frac{x_{scale}\, x}{\sqrt{y_{scale}\, y + \epsilon_{root}} + \epsilon}

    e.g. Adam's :math:`\hat m / (\sqrt{\hat v} + \epsilon)` with the bias corrections given as
    the scales. Computed as ``sqrt(y + eps_root / y_scale) / sqrt(1 / y_scale) + eps``, then
    ``x / that * x_scale`` (the order of operations of ``torch.optim.Adam``).

    ``into``: a tree like ``tree_x`` whose buffers the result may be written into, if it holds
    intermediate updates that a chain donated (the incoming updates of a transformation that
    reads them for the last time here, e.g. Adam after gradient clipping: no new buffer).
    """
    inv_sqrt_scale = _scalar_sqrt_inv(y_scale)
    eps_root = _div_scalar(eps_root, y_scale)
    # armed by a chain inside the adapter's step: the quotient may be left to the parameter
    # update (an addcdiv_), this call returning the denominators (_deferred_scale)
    deferred: dict[int, torch.Tensor] | None = None
    if _final.quotient_armed:
        _final.quotient_armed = False  # (this call only)
        if _final.quotient is None:
            deferred = {}

    def kernel(b, xs, ys, *into_, inplace=None) -> list[Any]:
        out = into_[0] if inplace == 2 and _same_dtypes(ys, into_[0]) else None
        if deferred is not None and b is _Foreach and _same_dtypes(xs, ys):
            den = b.denominator(ys, eps, eps_root, inv_sqrt_scale, x_scale, out)
            if den is not None:
                deferred.update(zip(builtins.map(id, den), xs))
                return list(den)
        if out is not None:
            return b.div_sqrt(xs, ys, eps, eps_root, inv_sqrt_scale, x_scale, out=out)
        return b.div_sqrt(xs, ys, eps, eps_root, inv_sqrt_scale, x_scale)

    if into is None:
        result = _apply(kernel, tree_x, tree_y, names=("tree_x", "tree_y"))
    else:
        result = _apply(
            kernel, tree_x, tree_y, into, names=("tree_x", "tree_y", "into"), consumable=2
        )
    if deferred:
        _final.quotient = deferred
    return result


def _scalar_sqrt_inv(s: Scalar) -> Scalar:
    """``sqrt(1 / s)`` (the divisor that turns ``sqrt(y)`` into ``sqrt(s * y)``)."""
    if isinstance(s, torch.Tensor):
        return torch.sqrt(1 / s)
    return (1 / s) ** 0.5 if s != 1 else 1


def _div_scalar(a: Scalar, b: Scalar) -> Scalar:
    if _is_zero(a):
        return 0.0
    return a / b


def pow(tree: Tree, exponent: builtins.float | int) -> Tree:
    r"""Leafwise ``x ** exponent`` for a Python number ``exponent`` (``-0.5``: the reciprocal
    square root, as ``x ** -0.5`` computes it): one ``torch._foreach_pow`` per group in eager
    mode. Adafactor's :math:`g\,v^{-1/2}` over its unfactored leaves::

        >>> u = otx.tree.mul(grads, otx.tree.pow(v, -0.5))
    """
    return _apply(lambda b, xs: b.pow(xs, exponent), tree)


def sqrt(tree: Tree) -> Tree:
    """Leafwise square root."""
    return _apply(lambda b, xs: b.sqrt(xs), tree)


def abs(tree: Tree) -> Tree:
    """Leafwise absolute value."""
    return _apply(lambda b, xs: b.abs(xs), tree)


def sign(tree: Tree) -> Tree:
    """Leafwise sign, -1, 0 or 1 (written into ``tree`` if it holds updates that were donated,
    see :func:`optax_torch.consumes_updates`)."""

    def kernel(b, xs, inplace=None):
        if inplace == 0:
            torch._foreach_sign_(xs)
            return xs
        return b.sign(xs)

    return _apply(kernel, tree, consumable=0)


def clip(tree: Tree, min_value: Scalar | None = None, max_value: Scalar | None = None) -> Tree:
    """Leafwise clamp to ``[min_value, max_value]`` (either bound may be ``None``)."""
    return _apply(lambda b, xs: b.clamp(xs, min_value, max_value), tree)


def where(condition: Tree | torch.Tensor | bool, tree_x: Tree, tree_y: Tree) -> Tree:
    """Leafwise ``x if condition else y``; ``condition`` is a tree like ``tree_x`` or one scalar.

    ``None`` wherever one of the trees has ``None``, as every element-wise operation here (e.g. a
    state the ``TorchOptimizer`` adapter has not yet made for a parameter without gradient).
    """
    if isinstance(condition, bool | torch.Tensor):
        cond = torch.as_tensor(condition)
        return map(lambda x, y: None if y is None else torch.where(cond, x, y), tree_x, tree_y)
    return map(
        lambda x, y, c: None if y is None or c is None else torch.where(c, x, y),
        tree_x,
        tree_y,
        condition,
    )


# --------------------------------------------------------------------------------------------
# Reductions
# --------------------------------------------------------------------------------------------


def _result_dtype(xs: list[torch.Tensor]) -> torch.dtype:
    dtype = xs[0].dtype
    for x in xs[1:]:
        dtype = torch.promote_types(dtype, x.dtype)
    return dtype


def _reduce_leaves(partials: list[torch.Tensor], how: str) -> torch.Tensor:
    partials = _local_scalars(partials)
    dtype = _result_dtype(partials)
    stacked = torch.stack([p.to(dtype) for p in partials])
    return _global(stacked.sum() if how == "sum" else stacked.max())


def vdot(tree_x: Tree, tree_y: Tree) -> torch.Tensor:
    """``sum_i <x_i, y_i>`` over all leaves, as a 0-d tensor."""
    fx, spec = flatten(tree_x)
    fy = _flatten_as(spec, tree_y, "tree_y")
    pairs = [(x, y) for x, y in zip(fx, fy) if x is not None and y is not None]
    if not pairs:
        return torch.zeros(())
    return _reduce_leaves([torch.vdot(x.reshape(-1), y.reshape(-1)) for x, y in pairs], "sum")


def sum(tree: Tree) -> torch.Tensor:
    """Sum of all elements of all leaves, as a 0-d tensor."""
    xs = leaves(tree)
    if not xs:
        return torch.zeros(())
    return _reduce_leaves([x.sum() for x in xs], "sum")


def max(tree: Tree) -> torch.Tensor:
    """Largest element over all leaves (``-inf`` for an empty tree)."""
    xs = [x for x in leaves(tree) if x.numel()]
    if not xs:
        return torch.tensor(-float("inf"))
    return _reduce_leaves([x.max() for x in xs], "max")


def min(tree: Tree) -> torch.Tensor:
    """Smallest element over all leaves (``inf`` for an empty tree)."""
    xs = [x for x in leaves(tree) if x.numel()]
    if not xs:
        return torch.tensor(float("inf"))
    return -_reduce_leaves([-x.min() for x in xs], "max")


def _norm_ord(ord: int | float | str | None, who: str) -> int | float:
    """``ord`` as 1, 2 or ``inf`` (``None`` and ``"fro"`` are 2); a ValueError naming ``who``."""
    if ord is None or ord == "fro":
        return 2
    if ord in ("inf", builtins.float("inf")):
        return builtins.float("inf")
    if ord not in (1, 2):
        raise ValueError(f"{who}: unsupported ord={ord!r}; use 1, 2 or inf")
    return ord  # type: ignore[return-value]


def norm(tree: Tree, ord: int | float | str | None = 2, squared: bool = False) -> torch.Tensor:
    """Norm of the tree seen as one flat vector: ``ord`` in ``{1, 2, inf}`` (``None`` = 2).

    ``squared=True`` returns the squared norm (only for ``ord=2``). Computed with one multi-tensor
    norm per (device, dtype) group in eager mode.
    """
    ord = _norm_ord(ord, "norm")
    if squared and ord != 2:
        raise ValueError("norm: squared=True requires ord=2")
    xs = leaves(tree)
    if ord == builtins.float("inf"):
        xs = [x for x in xs if x.numel()]
    if not xs:
        return torch.zeros(())
    backend = _backend()
    partial: list[torch.Tensor] = []
    for idx in _groups(xs) if backend is _Foreach else [list(range(len(xs)))]:
        partial.extend(backend.norms([xs[i] for i in idx], ord))
    partial = _local_scalars(partial)
    if ord == builtins.float("inf"):
        return _reduce_leaves(partial, "max")
    if ord == 1:
        return _reduce_leaves(partial, "sum")
    dtype = _result_dtype(partial)
    stacked = torch.stack([p.to(dtype) for p in partial])
    if squared:
        return _global(stacked.square().sum())
    # vector_norm's gradient at a zero tree is 0 (a subgradient), where sqrt(sum of squares)
    # has an infinite derivative at 0 and gives NaN
    return _global(torch.linalg.vector_norm(stacked))


def all_finite(tree: Tree) -> torch.Tensor:
    """A 0-d bool tensor: whether every element of every leaf is finite."""
    xs = leaves(tree)
    if not xs:
        return torch.tensor(True)
    if _dtensor_type() is not None:  # counts reduce across shards (a product of bools does not)
        bad = _local_scalars([torch.isfinite(x).logical_not().sum() for x in xs])
        return _global(torch.stack(bad).sum() == 0)
    return torch.stack([torch.isfinite(x).all() for x in xs]).all()


# --------------------------------------------------------------------------------------------
# Creation and casting
# --------------------------------------------------------------------------------------------


def _dtype_for(x: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype | None:
    """``dtype`` for leaf ``x``: a real floating dtype given for a complex leaf means its complex
    counterpart (``float32`` -> ``complex64``), so that a state dtype such as ``mu_dtype`` or
    ``MultiSteps``' float32 accumulator never drops the imaginary part of complex parameters."""
    if dtype is not None and dtype.is_floating_point and x.is_complex():
        return dtype.to_complex()
    return dtype


def zeros_like(tree: Tree, dtype: torch.dtype | None = None) -> Tree:
    """A tree of zeros shaped like ``tree`` (optionally of another ``dtype``; for a complex leaf
    a real ``dtype`` means its complex counterpart)."""
    if dtype is None:
        return map(torch.zeros_like, tree)
    return map(lambda x: torch.zeros_like(x, dtype=_dtype_for(x, dtype)), tree)


def ones_like(tree: Tree, dtype: torch.dtype | None = None) -> Tree:
    """A tree of ones shaped like ``tree`` (``dtype`` as in :func:`zeros_like`)."""
    return map(lambda x: torch.ones_like(x, dtype=_dtype_for(x, dtype)), tree)


def full_like(tree: Tree, fill_value: Scalar, dtype: torch.dtype | None = None) -> Tree:
    """A tree filled with ``fill_value``, shaped like ``tree``."""
    if isinstance(fill_value, torch.Tensor):

        def fill(x: torch.Tensor) -> torch.Tensor:
            # out of place, so that a batched fill value works under torch.func.vmap
            value = fill_value.to(device=x.device, dtype=dtype or x.dtype)
            return value.expand(x.shape).clone(memory_format=torch.contiguous_format)

        return map(fill, tree)
    return map(lambda x: torch.full_like(x, fill_value, dtype=dtype), tree)


def cast(tree: Tree, dtype: torch.dtype | None) -> Tree:
    """Casts every floating or complex leaf to ``dtype`` (``None``: unchanged); a complex leaf
    given a real ``dtype`` goes to its complex counterpart (``float32`` -> ``complex64``): the
    imaginary part is never dropped."""
    if dtype is None:
        return tree
    return map(
        lambda x: x.to(_dtype_for(x, dtype)) if x.is_floating_point() or x.is_complex() else x,
        tree,
    )


def cast_like(tree: Tree, other_tree: Tree) -> Tree:
    """Casts each leaf of ``tree`` to the dtype of the matching leaf of ``other_tree``."""
    xs = leaves(tree)
    os_ = leaves(other_tree)
    dtype = operator.attrgetter("dtype")
    if len(xs) == len(os_) and list(builtins.map(dtype, xs)) == list(builtins.map(dtype, os_)):
        return tree
    return map(lambda x, o: x if o is None else x.to(o.dtype), tree, other_tree)


# --------------------------------------------------------------------------------------------
# Moments
# --------------------------------------------------------------------------------------------


def _scalar_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def bias_correction(moment: Tree, decay: Scalar, count: torch.Tensor) -> Tree:
    r"""Debiases an exponential moving average: ``moment / (1 - decay ** count)``.

    The correction factor is computed in float64 (like ``torch.optim``, which computes it in Python
    floats), then applied to each leaf in the leaf's dtype.
    """
    return scale(debias_factor(decay, count), moment)


def debias_factor(decay: Scalar, count: torch.Tensor) -> torch.Tensor:
    """``1 / (1 - decay ** count)`` as a 0-d float64 tensor on ``count``'s device."""
    count = torch.as_tensor(count)
    c = count.to(_scalar_dtype(count.device))
    d = decay.to(c) if isinstance(decay, torch.Tensor) else decay
    return 1 / (1 - d**c)


def _cast_to(xs: list[torch.Tensor], like: list[torch.Tensor]) -> list[torch.Tensor]:
    if _same_dtypes(xs, like):
        return xs
    return [x if x.dtype == y.dtype else x.to(y.dtype) for x, y in zip(xs, like)]


def update_moment(updates: Tree, moments: Tree, decay: Scalar, order: int) -> Tree:
    r"""EMA of the ``order``-th power of the updates: ``decay * m + (1 - decay) * g ** order``.

    Computed as ``lerp(m, g**order, 1 - decay)`` (the form ``torch.optim`` uses). The result has the
    dtype of ``updates``; cast it back with :func:`cast` for low-precision moments.
    """

    def kernel(b, gs, ms, inplace=None):
        ms = _cast_to(ms, gs)
        if order != 1:
            gs = b.pow(gs, order)
        w = _as_number(1 - decay)
        if inplace == 1 and not isinstance(w, torch.Tensor):
            torch._foreach_lerp_(ms, gs, w)
            return ms
        return b.lerp(ms, gs, w)

    return _apply(kernel, updates, moments, names=("updates", "moments"), donatable=1)


def update_moment_per_elem_norm(updates: Tree, moments: Tree, decay: Scalar, order: int) -> Tree:
    r"""EMA of ``|g| ** order``: ``decay * m + (1 - decay) * |g| ** order``.

    For ``order == 2`` this is ``m * decay + (1 - decay) * g * g`` (``torch.optim``'s form).
    For complex ``g`` the moment takes ``|g| ** order`` (real), as in optax.
    """

    def kernel(b, gs, ms, inplace=None):
        ms = _cast_to(ms, gs)
        d = _as_number(decay)
        if _any_complex(gs):  # |g|**order is real; the moment keeps its dtype
            mags = [_abs_sq_leaf(g).real for g in gs]
            if order != 2:
                mags = [x.sqrt() ** order for x in mags]
            return [m * d + x.to(m.dtype) * (1 - d) for m, x in zip(ms, mags)]
        if inplace == 1 and not isinstance(d, torch.Tensor):
            if order == 2:
                torch._foreach_mul_(ms, d)
                torch._foreach_addcmul_(ms, gs, gs, value=1 - d)
            else:
                gs = b.abs(gs) if order == 1 else b.pow(b.abs(gs), order)
                torch._foreach_lerp_(ms, gs, 1 - d)
            return ms
        if order == 2:
            return b.decay_add_sq(ms, gs, d)
        gs = b.abs(gs) if order == 1 else b.pow(b.abs(gs), order)
        return b.lerp(ms, gs, 1 - d)

    return _apply(kernel, updates, moments, names=("updates", "moments"), donatable=1)


def update_infinity_moment(updates: Tree, moments: Tree, decay: Scalar, eps: Scalar) -> Tree:
    r"""Infinity-norm moment (Adamax): ``max(|g| + eps, decay * m)``.

    For complex ``g`` the moment is real-valued (held in the moment's complex dtype).
    """

    def kernel(b, gs, ms):
        ms = _cast_to(ms, gs)
        if _any_complex(gs):
            return [
                torch.maximum(g.abs() + eps, m.real * decay).to(m.dtype) for g, m in zip(gs, ms)
            ]
        return b.maximum(b.add_scalar(b.abs(gs), eps), b.mul_scalar(ms, decay))

    return _apply(kernel, updates, moments, names=("updates", "moments"))


# Inspection, complex numbers, comparison and random trees (size, dtype, real, conj, allclose,
# batch_shape, random_like) live in a private sibling module; they are part of this namespace.
# Named access into states (get / set / get_all_with_path / map_params) lives in a private
# sibling module that walks containers; it is part of this namespace.
# Per-leaf norms and the scalar math on them (layer-wise methods) live in a private sibling
# module; they are part of this namespace.
from optax_torch._tree_blocks import leaf_norms, map_scalars  # noqa: E402
from optax_torch._tree_named import get, get_all_with_path, map_params, set  # noqa: E402
from optax_torch._tree_utils import (  # noqa: E402
    allclose,
    batch_shape,
    conj,
    dtype,
    random_like,
    real,
    size,
)
