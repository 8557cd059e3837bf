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

import weakref
from collections import defaultdict
from typing import Any

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
    """The parameters of one param group as views into one flat buffer per (device, dtype)."""

    def __init__(self, params: list[torch.Tensor]):
        by_kind: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
        for j, p in enumerate(params):
            by_kind[(p.device, p.dtype)].append(j)
        self.buckets: list[list[int]] = list(by_kind.values())
        self.where: list[tuple[int, int, int]] = [(0, 0, 0)] * len(params)  # bucket, start, n
        self.flat_params: list[torch.Tensor] = []
        self.flat_grads: list[torch.Tensor] = []
        self.grad_views: list[list[torch.Tensor]] = []
        self.shapes = [p.shape for p in params]
        with torch.no_grad():
            for b, idx in enumerate(self.buckets):
                total = sum(params[j].numel() for j in idx)
                first = params[idx[0]]
                buf = torch.empty(total, dtype=first.dtype, device=first.device)
                _own(buf)
                grads = torch.zeros_like(buf)
                start = 0
                views = []
                for j in idx:
                    p, n = params[j], params[j].numel()
                    self.where[j] = (b, start, n)
                    view = buf[start : start + n].view(p.shape)
                    view.copy_(p)
                    p.data = view
                    views.append(grads[start : start + n].view(p.shape))
                    start += n
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
        """The state over the flat buffers, from a state over the parameters (a copy)."""
        n = len(self.where)

        def join(xs: list[Any]) -> list[Any]:
            out = []
            for idx in self.buckets:
                parts = [xs[j] for j in idx]
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
                if not isinstance(x, torch.Tensor) or x.numel() != self.flat_params[b].numel():
                    raise NotFlat
                out.append(x[start : start + n].view(self.shapes[j]))
            return out

        return _map_param_lists(flat_state, len(self.buckets), split)


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
