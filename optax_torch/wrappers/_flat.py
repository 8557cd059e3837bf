"""Flat buffers for the compiled step of element-wise transformations (private).

``TorchOptimizer(compile=True)`` runs a transformation marked :func:`optax_torch.elementwise`
on one flat buffer per (device, dtype) of a param group instead of one tensor per parameter:

* the parameters become views into a flat buffer the optimizer owns (``p.data`` is re-pointed
  once; the values are copied), so the compiled step writes all of them with one kernel;
* the gradients are copied into a flat gradient buffer at each step (one pass);
* the functional state is kept over the flat buffers (``tx.init([flat, ...])``), and the
  per-parameter state that ``optimizer.state`` and ``state_dict`` show is made of views into
  it, so it is always up to date and torch's layout is unchanged.

The compiled graph then sees a handful of tensors whatever the model: it compiles in about a
second, once, and fuses the whole step into one pass over memory.
"""

from __future__ import annotations

import functools
import weakref
from collections import defaultdict
from typing import Any, cast

import torch

from optax_torch.base import OptState


def _is_namedtuple(obj: Any) -> bool:
    return isinstance(obj, tuple) and hasattr(obj, "_fields")


_PLAIN = (torch.Tensor, torch.nn.Parameter)


# The storages of the flat buffers made here (data pointer -> number of live buffers on it).
_OWNED: dict[int, int] = {}


def _own(buf: torch.Tensor) -> None:
    ptr = buf.untyped_storage().data_ptr()
    _OWNED[ptr] = _OWNED.get(ptr, 0) + 1
    weakref.finalize(buf, _disown, ptr)


def _disown(ptr: int) -> None:
    left = _OWNED.pop(ptr, 1) - 1
    if left > 0:
        _OWNED[ptr] = left


def _own_storage(p: torch.Tensor) -> bool:
    """Whether ``p`` has its storage to itself or lives in a flat buffer made here (not in
    someone else's bucket, e.g. ``ZeroRedundancyOptimizer(parameters_as_bucket_view=True)``,
    whose buffer must keep receiving the updates)."""
    storage = p.untyped_storage()
    return (
        storage.nbytes() == p.numel() * p.element_size() and p.storage_offset() == 0
    ) or storage.data_ptr() in _OWNED


def supported(params: list[torch.Tensor]) -> bool:
    """Whether the parameters can live in flat buffers: plain tensors (no subclass such as a
    DTensor), dense, contiguous, each with its own storage or in a flat buffer made here."""
    return bool(params) and all(
        type(p) in _PLAIN and p.layout == torch.strided and p.is_contiguous() and _own_storage(p)
        for p in params
    )


# The automatic choice (compile_step(flat=None)): one tensor per parameter for at most this many
# tensors of at least this many elements on average. Measured (AdamW, 50 M params in 10 tensors,
# CPU): the per-tensor graph runs at torch's fused speed and compiles in ~5 s; the flat step pays
# a copy of the gradients (two more passes over memory than fused's seven, ~1.4x fused).
PER_TENSOR_MAX_TENSORS = 16
PER_TENSOR_MIN_AVERAGE_NUMEL = 2**20


def chosen(flat: bool | None, params: list[torch.Tensor]) -> bool:
    """Whether a compiled element-wise step runs on flat buffers: ``flat`` if given, otherwise
    flat unless the group is a few large tensors (see ``PER_TENSOR_MAX_TENSORS``)."""
    if flat is not None:
        return flat
    n = len(params)
    if n > PER_TENSOR_MAX_TENSORS:
        return True
    return sum(p.numel() for p in params) < n * PER_TENSOR_MIN_AVERAGE_NUMEL


class FlatGroup:
    """The parameters of one param group as views into one flat buffer per (device, dtype),
    or with ``stacked=True`` one ``(k, *shape)`` buffer per (device, dtype, shape) for the
    ``k`` parameters of that shape (the compiled step of :func:`optax_torch.leafwise`
    chains: one ``vmap``-ed step per buffer)."""

    def __init__(self, params: list[torch.Tensor], stacked: bool = False):
        self.stacked = stacked
        by_kind: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        for j, p in enumerate(params):
            by_kind[(p.device, p.dtype, tuple(p.shape)) if stacked else (p.device, p.dtype)].append(
                j
            )
        self.buckets: list[list[int]] = list(by_kind.values())
        # bucket, and where in it: flat (start, numel); stacked (index, numel)
        self.where: list[tuple[int, int, int]] = [(0, 0, 0)] * len(params)
        self.flat_params: list[torch.Tensor] = []
        self.flat_grads: list[torch.Tensor] = []
        self.grad_views: list[list[torch.Tensor]] = []
        self.shapes = [p.shape for p in params]
        with torch.no_grad():
            for b, idx in enumerate(self.buckets):
                first = params[idx[0]]
                if stacked:
                    size: tuple[int, ...] = (len(idx), *first.shape)
                else:
                    size = (sum(params[j].numel() for j in idx),)
                buf = torch.empty(size, dtype=first.dtype, device=first.device)
                _own(buf)
                grads = torch.zeros_like(buf)
                start = 0
                views = []
                for i, j in enumerate(idx):
                    p, n = params[j], params[j].numel()
                    if stacked:
                        self.where[j] = (b, i, n)
                        view, grad_view = buf[i], grads[i]
                    else:
                        self.where[j] = (b, start, n)
                        view = buf[start : start + n].view(p.shape)
                        grad_view = grads[start : start + n].view(p.shape)
                        start += n
                    view.copy_(p)
                    p.data = view
                    views.append(grad_view)
                self.flat_params.append(buf)
                self.flat_grads.append(grads)
                self.grad_views.append(views)
        self.ptrs = [p.data_ptr() for p in params]

    def holds(self, params: list[torch.Tensor]) -> bool:
        """Whether ``params`` still are the views made at construction (nobody re-pointed them)."""
        return len(params) == len(self.ptrs) and all(
            p.data_ptr() == ptr and p.shape == s
            for p, ptr, s in zip(params, self.ptrs, self.shapes)
        )

    def load_grads(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """Copies the gradients into the flat gradient buffers (one multi-tensor copy)."""
        for idx, views in zip(self.buckets, self.grad_views):
            torch._foreach_copy_(views, [grads[j] for j in idx])
        return self.flat_grads

    # ----------------------------------------------------------------------------------------
    # The state: per-parameter lists <-> per-bucket flat tensors
    # ----------------------------------------------------------------------------------------

    def to_flat(self, state: OptState) -> OptState:
        """The state over the flat buffers, from a state over the parameters (a copy). Stacked:
        each bucket's entries (of one shape, e.g. a factored moment's rows) stacked, or ``None``
        where all are ``None``."""
        n = len(self.where)

        def join(xs: list[Any]) -> list[Any]:
            out = []
            for idx in self.buckets:
                parts = [xs[j] for j in idx]
                if self.stacked:
                    out.append(_stack(parts))
                    continue
                if not all(
                    isinstance(x, torch.Tensor) and x.numel() == self.where[j][2]
                    for x, j in zip(parts, idx)
                ):
                    raise NotFlat
                out.append(torch.cat([x.reshape(-1) for x in parts]))
            return out

        return _map_param_lists(state, n, join)

    def to_params(self, flat_state: OptState) -> OptState:
        """The state over the parameters as views into ``flat_state`` (shared storage)."""

        def split(xs: list[Any]) -> list[Any]:
            out = []
            for j, (b, start, n) in enumerate(self.where):
                x = xs[b]
                if self.stacked:
                    if x is not None and not (
                        isinstance(x, torch.Tensor) and x.dim() and len(x) == len(self.buckets[b])
                    ):
                        raise NotFlat
                    out.append(None if x is None else x[start])
                    continue
                if not isinstance(x, torch.Tensor) or x.numel() != self.flat_params[b].numel():
                    raise NotFlat
                out.append(x[start : start + n].view(self.shapes[j]))
            return out

        return _map_param_lists(flat_state, len(self.buckets), split)


def _stack(parts: list[Any]) -> torch.Tensor | None:
    """The state entries of one stacked bucket as one tensor (``None`` if all are ``None``)."""
    if all(x is None for x in parts):
        return None
    first = parts[0]
    if not all(
        isinstance(x, torch.Tensor)
        and x.shape == first.shape
        and x.dtype == first.dtype
        and x.device == first.device
        for x in parts
    ):
        raise NotFlat
    return torch.stack(parts)


class NotFlat(Exception):
    """A state leaf of a parameter list is not one tensor shaped like its parameter."""


def _map_param_lists(node: Any, n: int, fn: Any) -> Any:
    """``node`` with every list of length ``n`` that mirrors the parameter list (the first
    such list on each path: the adapter's naming rule) replaced by ``fn(list)``."""
    if _is_namedtuple(node):
        fields = getattr(node, "_fields")  # noqa: B009
        return type(node)(*(_map_param_lists(getattr(node, f), n, fn) for f in fields))
    if type(node) is list and len(node) == n:
        return fn(node)
    if isinstance(node, list | tuple):
        return type(node)(_map_param_lists(v, n, fn) for v in node)
    if isinstance(node, dict):
        items = {k: _map_param_lists(v, n, fn) for k, v in node.items()}
        return items if type(node) is dict else type(node)(items)
    return node


# --------------------------------------------------------------------------------------------
# The stacked step: one vmap-ed update per (device, dtype, shape) buffer
# --------------------------------------------------------------------------------------------

Path = tuple[Any, ...]


def state_paths(flat_state: OptState, n: int) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """The paths (container keys) in a state over ``n`` buffers of its per-buffer lists (the
    lists ``_map_param_lists`` maps) and of its other tensors (shared by all leaves: a step
    count, hyperparameters)."""
    lists: list[Path] = []
    shared: list[Path] = []

    def walk(node: Any, path: Path) -> None:
        if type(node) is list and len(node) == n:
            lists.append(path)
        elif isinstance(node, list | tuple):
            for k, v in enumerate(node):
                walk(v, (*path, k))
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(v, (*path, k))
        elif isinstance(node, torch.Tensor):
            shared.append(path)

    walk(flat_state, ())
    return tuple(lists), tuple(shared)


def _get(node: Any, path: Path) -> Any:
    for k in path:
        node = node[k]
    return node


def _set_many(node: Any, paths: tuple[Path, ...], values: list[Any]) -> Any:
    """``node`` with the nodes at ``paths`` replaced by ``values`` (containers rebuilt)."""
    if not paths:
        return node
    if paths[0] == ():
        return values[0]
    by_key: dict[Any, tuple[list[Path], list[Any]]] = {}
    for path, value in zip(paths, values):
        sub = by_key.setdefault(path[0], ([], []))
        sub[0].append(path[1:])
        sub[1].append(value)

    def child(k: Any, v: Any) -> Any:
        if k not in by_key:
            return v
        return _set_many(v, tuple(by_key[k][0]), by_key[k][1])

    if _is_namedtuple(node):
        return type(node)(*(child(k, v) for k, v in enumerate(node)))
    if isinstance(node, list | tuple):
        return type(node)(child(k, v) for k, v in enumerate(node))
    items = {k: child(k, v) for k, v in node.items()}
    return items if type(node) is dict else type(node)(items)


Segment = tuple[str, Any, Path, tuple[tuple[Path, ...], tuple[Path, ...]]]


def stacked_plan(tx: Any, flat_state: OptState = None, n: int = 0) -> tuple[Segment, ...] | None:
    """How the stacked step runs ``tx`` on ``n`` stacked buffers: its members in order, each
    ``("leaf", member, state path, state_paths)`` (a :func:`optax_torch.leafwise` member,
    ``vmap``-ed over each buffer) or ``("elem", member, state path, ((), ()))`` (an
    :func:`optax_torch.elementwise` one, global norms included: run on the stacked buffers
    as they are, since its result does not depend on how the parameters are packed). ``None``
    if some member is neither (and no chain of such members). Without ``flat_state``: the
    segments without their state paths (whether ``tx`` can run stacked)."""
    from optax_torch.base import _unwrap, is_elementwise, is_leafwise

    def plan(t: Any, path: Path) -> list[Segment] | None:
        if is_leafwise(t):
            paths = ((), ()) if flat_state is None else state_paths(_get(flat_state, path), n)
            return [("leaf", t, path, paths)]
        if is_elementwise(t):
            return [("elem", t, path, ((), ()))]
        members = getattr(_unwrap(t.update), _MEMBERS, None)
        if members is None:
            return None
        out: list[Segment] = []
        for i, m in enumerate(members):
            sub = plan(m, (*path, i))
            if sub is None:
                return None
            out += sub
        return out

    segments = plan(tx, ())
    return None if segments is None else tuple(segments)


_MEMBERS = "_optax_torch_members"  # (set by chain on its update: its members, in order)


def stacked_update_in_place(
    grads: list[torch.Tensor],
    state: OptState,
    params: list[torch.Tensor],
    plan: tuple[Segment, ...],
    barrier: bool = False,
    **extra_args: Any,
) -> None:
    """One step of a chain of :func:`optax_torch.leafwise` and :func:`optax_torch.elementwise`
    members (:func:`stacked_plan`) on stacked buffers, written into them. A leafwise member
    runs for each ``(k, *shape)`` buffer on a one-leaf tree, ``vmap``-ed over the ``k``
    parameters (its shared state, e.g. the step count, is not batched and evolves alike in
    every buffer: it is taken from the first); an element-wise one runs on the buffers as they
    are. ``barrier`` writes the new state through an opaque copy (works around an inductor
    bug, pytorch/pytorch#188228: an outer-loop-fused kernel whose local buffer is a mutation
    output fails to compile)."""
    from optax_torch._tree_kernels import _realize
    from optax_torch.compiled import _add_into, _copy_into

    updates = list(grads)
    new_states = []
    with torch.no_grad():
        for kind, member, path, paths in plan:
            old = _get(state, path)
            if kind == "elem":
                updates, new = member.update(updates, old, params, **extra_args)
            else:
                updates, new = _vmapped(member, updates, old, params, paths, extra_args)
            new_states.append((old, new))
        _add_into(params, updates)
        through = _realize if barrier else None
        for old, new in new_states:
            _copy_into(old, new, through)


def _vmapped(member, updates, state, params, paths, extra_args):
    """A leafwise ``member``'s update on stacked buffers: ``vmap``-ed over each."""
    list_paths, shared_paths = paths
    in_lists = [_get(state, path) for path in list_paths]

    def one(g, p, mine, present):  # one parameter of a buffer, as a one-leaf tree
        st = _set_many(state, list_paths, [[x] for x in mine])
        out, new_state = member.update([g], st, [p], **extra_args)
        new_mine = [_get(new_state, path)[0] for path, there in zip(list_paths, present) if there]
        return out[0], new_mine, [_get(new_state, path) for path in shared_paths]

    outs, new_lists, shared = [], [[] for _ in list_paths], None
    for b in range(len(params)):
        mine = [xs[b] for xs in in_lists]  # (None where the state has no entry)
        present = [x is not None for x in mine]
        step = torch.func.vmap(
            functools.partial(one, present=present),
            in_dims=(0, 0, [0 if there else None for there in present]),
            out_dims=cast(Any, (0, 0, None)),  # (the shared state is not batched)
        )
        u, new_mine, new_shared = step(updates[b], params[b], mine)
        outs.append(u)
        it = iter(new_mine)
        for xs, there in zip(new_lists, present):
            xs.append(next(it) if there else None)
        if shared is None:
            shared = new_shared
    new_state = _set_many(state, (*list_paths, *shared_paths), [*new_lists, *(shared or [])])
    return outs, new_state
