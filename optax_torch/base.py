"""Core types: gradient transformations, their states, and the simplest transforms.

An optimizer is a value, a pair of pure functions (see ``shared/design.md`` §1)::

    state = tx.init(params)
    updates, state = tx.update(grads, state, params)

Pytrees are any ``torch.utils._pytree`` tree (nested dict / list / tuple / NamedTuple) of tensors.
``None`` leaves (parameters without a gradient) pass through every transform unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Protocol

import torch

from optax_torch import _validate
from optax_torch import tree as _tree

__all__ = [
    "EmptyState",
    "GradientTransformation",
    "GradientTransformationExtraArgs",
    "OptState",
    "Params",
    "PyTree",
    "Schedule",
    "ScalarOrSchedule",
    "TransformInitFn",
    "TransformUpdateExtraArgsFn",
    "TransformUpdateFn",
    "Updates",
    "identity",
    "consumes_updates",
    "donation_safe",
    "elementwise",
    "leafwise",
    "init_empty_state",
    "is_consuming_updates",
    "is_donation_safe",
    "is_elementwise",
    "is_leafwise",
    "set_to_zero",
    "stateless",
    "stateless_with_tree_map",
    "with_extra_args_support",
]

PyTree = Any
Params = PyTree
Updates = PyTree
OptState = Any
Numeric = float | int | torch.Tensor
# A schedule maps an integer step-count tensor to a (0-d) tensor value.
Schedule = Callable[[torch.Tensor], torch.Tensor]
ScalarOrSchedule = float | torch.Tensor | Schedule


class TransformInitFn(Protocol):
    """``init(params) -> state``: a pure function building the initial state."""

    def __call__(self, params: Params) -> OptState: ...


class TransformUpdateFn(Protocol):
    """``update(updates, state, params=None) -> (updates, state)``: a pure function."""

    def __call__(
        self, updates: Updates, state: OptState, params: Params | None = None
    ) -> tuple[Updates, OptState]: ...


class TransformUpdateExtraArgsFn(Protocol):
    """``update(updates, state, params=None, **extra_args) -> (updates, state)``."""

    def __call__(
        self,
        updates: Updates,
        state: OptState,
        params: Params | None = None,
        **extra_args: Any,
    ) -> tuple[Updates, OptState]: ...


class _Pair(NamedTuple):
    init: Any
    update: Any


def _has_none(updates: Updates) -> bool:
    return _tree._has_none(_tree.flatten(updates)[0])


def _carry_over(new_state: OptState, old_state: OptState) -> OptState:
    """``new_state`` with each ``None`` leaf replaced by the old leaf at that position.

    A parameter whose gradient is ``None`` gets no update and no new state from the tree ops;
    its state is carried over unchanged (``torch.optim`` skips such parameters the same way).
    """
    new_leaves, spec = _tree.flatten(new_state)
    old_leaves, old_spec = _tree.flatten(old_state)
    if old_spec != spec:
        return new_state
    merged = [o if n is None else n for n, o in zip(new_leaves, old_leaves)]
    return _tree.unflatten(spec, merged)


_CARRIES = "_optax_torch_carries_none_of"


def _carrying_none(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` as an update function that keeps the old state of leaves whose gradient is None.

    Every :class:`GradientTransformation` wraps its ``update`` in this, so a bare transformation
    treats a ``None`` gradient as a chain does. The wrapper gets a code object of its own:
    ``torch.compile`` caches compiled code (and counts recompilations, up to a limit) per code
    object, so a wrapper shared by all transformations would make compiling the ``update`` of
    the ninth transformation in a process fail with ``fullgraph=True``.
    """

    def update(updates, state, params=None, **extra_args):
        try:
            new_updates, new_state = fn(updates, state, params, **extra_args)
        except AttributeError as e:
            if getattr(e, "obj", None) is state and state is not None:
                raise TypeError(_foreign_state_message(fn, state, e)) from e
            raise
        if _state_changed(state, new_state):
            raise TypeError(_changed_state_message(fn, state, new_state))
        if _has_none(updates):
            new_state = _carry_over(new_state, state)
        return new_updates, new_state

    functools.update_wrapper(update, fn)
    setattr(update, _CARRIES, fn)
    return _own_code(update)


def _transform_name(fn: Callable[..., Any]) -> str:
    """``scale_by_adam`` for ``scale_by_adam.<locals>.update_fn``."""
    name = getattr(fn, "__qualname__", None) or repr(fn)
    return name.split(".<locals>")[0]


def _state_kind(state: Any) -> str:
    fields = getattr(state, "_fields", None)
    if fields is not None:
        return f"{type(state).__name__}({', '.join(fields)})"
    if isinstance(state, tuple):
        return f"a tuple of {len(state)}"
    return type(state).__name__


def _state_changed(state: Any, new_state: Any) -> bool:
    """A state of another structure (a plain tuple for a NamedTuple of the same length, e.g. a
    state that went through a serialiser, is the same)."""
    if isinstance(state, tuple) and isinstance(new_state, tuple):
        return len(state) != len(new_state)
    return type(state) is not type(new_state)


def _foreign_state_message(fn: Callable[..., Any], state: Any, error: AttributeError) -> str:
    return (
        f"{_transform_name(fn)}: update got a state {_state_kind(state)} that has no "
        f"{getattr(error, 'name', None)!r} (is it the state of another optimizer or "
        "transformation? pass the state made by this transformation's init)"
    )


def _changed_state_message(fn: Callable[..., Any], state: Any, new_state: Any) -> str:
    return (
        f"{_transform_name(fn)}: update returned a state of another structure than the one it "
        f"was given: {_state_kind(new_state)} for {_state_kind(state)} (an update must return "
        "a state of the structure its init makes)"
    )


_CHECKED = "_optax_torch_checked_init"


def _checking_init(init: Callable[..., Any]) -> Callable[..., Any]:
    """``init`` that refuses parameters it cannot optimize: an integer or boolean tensor that
    the state would mirror, or a leaf that is not a tensor (``TypeError`` naming its path).
    One pass over the leaves, at init only; stateless transformations accept any leaf."""
    if init is init_empty_state or getattr(init, _CHECKED, False):
        return init

    def checked(params, *args, **kwargs):
        if torch.compiler.is_compiling():
            return init(params, *args, **kwargs)
        leaves = _tree.flatten(params)[0]
        bad = [
            i for i, x in enumerate(leaves) if x is not None and not _validate.is_float_tensor(x)
        ]
        if not bad:
            return init(params, *args, **kwargs)
        try:
            state = init(params, *args, **kwargs)
        except Exception as e:
            raise TypeError(_bad_param_message(init, params, leaves[bad[0]], bad[0])) from e
        mirrored = {
            (tuple(x.shape), x.dtype)
            for x in _tree.leaves(state)
            if isinstance(x, torch.Tensor) and not _validate.is_float_tensor(x)
        }
        for i in bad:
            x = leaves[i]
            if isinstance(x, torch.Tensor) and (tuple(x.shape), x.dtype) in mirrored:
                raise TypeError(_bad_param_message(init, params, x, i))
        return state

    functools.update_wrapper(checked, init)
    setattr(checked, _CHECKED, True)
    return checked


def _bad_param_message(init: Callable[..., Any], params: Any, leaf: Any, index: int) -> str:
    what = "not a tensor" if not isinstance(leaf, torch.Tensor) else f"of dtype {leaf.dtype}"
    return (
        f"{_transform_name(init)}: params{_validate.leaf_path(params, index)} is "
        f"{what} ({_validate.describe_leaf(leaf)}); only floating-point or complex tensors "
        "can be optimized (leave the others out of the tree, or mask them out with "
        "optax_torch.masked / set_to_zero)"
    )


def _own_code(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Gives a Python function a copy of its code object (see :func:`_carrying_none`): a
    combinator's ``update`` is one nested function for all its instances (every ``chain``), and
    ``torch.compile``'s per-code cache would fill up after eight of them."""
    # (Built inside a compiled region, e.g. by inject_hyperparams, a function is inlined, never
    # cached; and dynamo cannot trace code.replace.)
    if (
        isinstance(fn, types.FunctionType)
        and not _code_sharing.on
        and not torch.compiler.is_compiling()
    ):
        fn.__code__ = fn.__code__.replace()
    return fn


class _CodeSharing(threading.local):
    on: bool = False


_code_sharing = _CodeSharing()


@contextlib.contextmanager
def _share_code() -> Iterator[None]:
    """Transformations built in the block share their code objects with every other instance
    built from the same source (no :func:`_own_code` copy): a compiled step that takes the
    transformation as an argument then hits its cache when the transformation is rebuilt with
    new tensor hyperparameters (``TorchOptimizer(compile=True)``)."""
    prev = _code_sharing.on
    _code_sharing.on = True
    try:
        yield
    finally:
        _code_sharing.on = prev


def _unwrap(update: Callable[..., Any]) -> Callable[..., Any]:
    return getattr(update, _CARRIES, update)


class GradientTransformation(_Pair):
    """A pair of pure functions implementing a gradient transformation.

    Attributes:
      init: ``init(params) -> state``. Builds the initial optimizer state from an example of
        the parameters. Never mutates ``params``.
      update: ``update(updates, state, params=None) -> (new_updates, new_state)``. Transforms
        a pytree of updates (usually gradients, same structure as ``params``) and returns the
        new state. Never mutates its arguments: a step is a new value, so it can be compiled,
        vmapped and differentiated.

    Where a gradient is ``None`` (a parameter without gradient this step) the update is
    ``None`` and that parameter's state is carried over unchanged: every transformation keeps
    the old state leaves there (``update`` is wrapped to do so at construction).

    Example::

        >>> import torch, optax_torch as otx
        >>> tx = otx.chain(otx.scale_by_adam(), otx.scale(-1e-3))
        >>> params = {"w": torch.ones(3)}
        >>> state = tx.init(params)
        >>> updates, state = tx.update({"w": torch.full((3,), 0.5)}, state, params)
        >>> params = otx.apply_updates(params, updates)
    """

    __slots__ = ()

    init: TransformInitFn
    update: TransformUpdateFn

    def __new__(cls, init: Any, update: Any):
        if not hasattr(update, _CARRIES):
            update = _carrying_none(update)
        return super().__new__(cls, _checking_init(init), update)

    @classmethod
    def _unwrapped(cls, init: Any, update: Any) -> Any:
        """Builds the pair without the ``None``-state wrapper (for combinators whose members
        already keep their states, and wrappers of an already wrapped ``update``)."""
        return tuple.__new__(cls, (init, _own_code(update)))


class GradientTransformationExtraArgs(GradientTransformation):
    """A :class:`GradientTransformation` whose ``update`` accepts extra keyword arguments.

    Transforms that need more than the gradients (a loss ``value``, a random ``key``...)
    receive them as ``update(updates, state, params, **extra_args)``. :func:`chain` always
    returns this type and forwards extra arguments to the members that support them.
    """

    update: TransformUpdateExtraArgsFn  # type: ignore[assignment]


_DONATION_SAFE = "_optax_torch_donation_safe"


def donation_safe(update_fn: Callable) -> Callable:
    """Marks ``update_fn`` as safe to run on a donated state (:func:`optax_torch.tree.donate`).

    An update function is donation-safe when it reads each tensor of its old state once, in the
    tree operation that computes that tensor's replacement from the updates (``update_moment``,
    ``add_scale`` into a momentum buffer, ...), and never again afterwards. Every transformation
    of this library is marked; combinators are safe when all their members are. The
    ``TorchOptimizer`` adapter donates its state only to a donation-safe transformation, so a
    custom transformation is always run on an intact state unless its author marks it.
    """
    target = _unwrap(update_fn)
    setattr(target, _DONATION_SAFE, True)
    return update_fn


def is_donation_safe(tx: GradientTransformation) -> bool:
    """Whether ``tx.update`` is marked with :func:`donation_safe`."""
    update = _unwrap(tx.update)
    return bool(getattr(update, _DONATION_SAFE, False))


_CONSUMES_UPDATES = "_optax_torch_consumes_updates"


def consumes_updates(update_fn: Callable) -> Callable:
    """Marks ``update_fn`` as reading its input updates only in the one tree operation that
    computes its output from them (``tree.scale(s, updates)``, ``tree.add_scale(updates, wd,
    params)``), and never keeping them.

    Inside :func:`optax_torch.tree.donate` (the ``TorchOptimizer`` step), :func:`chain` donates
    the intermediate updates of one member to a next member marked so, which then writes its
    result into them: a learning-rate scaling or a decoupled decay costs no new buffer. Implies
    nothing without a donation block.
    """
    target = _unwrap(update_fn)
    setattr(target, _CONSUMES_UPDATES, True)
    return update_fn


def is_consuming_updates(tx: GradientTransformation) -> bool:
    """Whether ``tx.update`` is marked with :func:`consumes_updates` (or, privately,
    :func:`_reuses_updates`): whether a chain may donate its intermediate updates to it."""
    update = _unwrap(tx.update)
    return bool(getattr(update, _CONSUMES_UPDATES, False)) or bool(
        getattr(update, _REUSES_UPDATES, False)
    )


_REUSES_UPDATES = "_optax_torch_reuses_updates"


def _reuses_updates(update_fn: Callable) -> Callable:
    """Marks ``update_fn`` as reading its input updates for the last time in the tree operation
    that may write its output into them (given them as ``into=`` or as its consumable operand,
    e.g. ``tree.div_sqrt(mu, nu, into=updates)``, ``tree.mul(updates, factors)``), and never
    keeping them. Like :func:`consumes_updates`, it lets :func:`chain` donate the intermediate
    updates of the member before, so that the output needs no new buffer (Adam after gradient
    clipping, a trust ratio after weight decay); unlike it, the transformation may read them in
    several operations before, so a final ``scale`` is never deferred to the caller through it
    (``tree._deferred_scale``)."""
    setattr(_unwrap(update_fn), _REUSES_UPDATES, True)
    return update_fn


_FORWARDS_UPDATES = "_optax_torch_forwards_updates"


def _forwards_updates(update_fn: Callable) -> Callable:
    """Marks ``update_fn`` (a combinator or wrapper) as returning, as its updates, those of one
    inner transformation's ``update`` — or, in a :func:`chain`, of its last member's — with
    nothing done to them afterwards. Inside the ``TorchOptimizer`` step this lets a final
    ``scale`` be folded into the parameter update (``tree._deferred_scale``): the inner call
    that is given the very input object may defer it, any other sees nothing."""
    setattr(_unwrap(update_fn), _FORWARDS_UPDATES, True)
    return update_fn


def _may_defer_scale(tx: GradientTransformation) -> bool:
    """Whether ``tx``'s output updates may be a deferred ``tree.scale`` of its input updates:
    marked :func:`consumes_updates` (its one operation computes its output) or
    :func:`_forwards_updates`."""
    update = _unwrap(tx.update)
    return bool(getattr(update, _CONSUMES_UPDATES, False)) or bool(
        getattr(update, _FORWARDS_UPDATES, False)
    )


_ELEMENTWISE = "_optax_torch_elementwise"


def elementwise(update_fn: Callable) -> Callable:
    """Marks ``update_fn`` as blind to how the parameters are split into leaves.

    Its result on a tree of leaves, concatenated, equals its result on the concatenation of
    the leaves: it computes element by element, with scalars shared by the whole tree (step
    counts, hyperparameters) and at most reductions over the whole tree (a global norm), never
    per leaf (a per-leaf norm, a factored or matrix preconditioner) and never by tree position
    (masks). ``TorchOptimizer(compile=True)`` runs a transformation so marked on one flat
    buffer per (device, dtype) instead of one tensor per parameter: one small graph, compiled
    once, whatever the number of parameters. :func:`chain` is marked when all its members are.
    """
    target = _unwrap(update_fn)
    setattr(target, _ELEMENTWISE, True)
    return update_fn


def is_elementwise(tx: GradientTransformation) -> bool:
    """Whether ``tx.update`` is marked with :func:`elementwise`."""
    return bool(getattr(_unwrap(tx.update), _ELEMENTWISE, False))


_LEAFWISE = "_optax_torch_leafwise"


def leafwise(update_fn: Callable) -> Callable:
    """Marks ``update_fn`` as computing each leaf from that leaf alone.

    Its result on a tree, leaf by leaf, equals its result on each one-leaf tree: a leaf's
    update and new state depend on that leaf's gradient, state and parameter and on scalars
    shared by the whole tree (step counts, hyperparameters), never on other leaves (a global
    norm) or on the leaf's position in the tree (masks); the shared state (a step count)
    evolves without reading the leaves. Per-leaf statistics are allowed (a trust ratio, a
    factored second moment, a block RMS), and so is any element-wise transformation without
    reductions over the whole tree. It must also trace under ``torch.func.vmap``.

    ``TorchOptimizer(compile=True)`` runs a chain so marked (and not :func:`elementwise`) on
    one stacked buffer per (device, dtype, shape): the parameters of one shape become slices
    of a ``(k, *shape)`` buffer and the step is ``vmap``-ed over them, so the compiled graph
    has kernels per distinct shape, not per tensor (a transformer's ~100 tensors have ~10
    shapes). :func:`chain` is marked when all its members are; a chain whose members are each
    leafwise or :func:`elementwise` runs stacked too (the element-wise members on the stacked
    buffers as they are, e.g. a global-norm clip before Lamb).

    Example::

        >>> def init_fn(params):
        ...     return otx.EmptyState()
        >>> @otx.leafwise  # each leaf divided by its own RMS: a per-leaf statistic
        ... def update_fn(updates, state, params=None):
        ...     return [u / u.square().mean().sqrt().clamp(min=1e-12) for u in updates], state
        >>> tx = otx.GradientTransformation(init_fn, update_fn)
        >>> otx.is_leafwise(tx), otx.is_elementwise(tx)
        (True, False)
    """
    setattr(_unwrap(update_fn), _LEAFWISE, True)
    return update_fn


def is_leafwise(tx: GradientTransformation) -> bool:
    """Whether ``tx.update`` is marked with :func:`leafwise`."""
    return bool(getattr(_unwrap(tx.update), _LEAFWISE, False))


class EmptyState(NamedTuple):
    """The state of a stateless transformation."""


def init_empty_state(params: Params) -> EmptyState:
    """Init function for a transformation with an :class:`EmptyState`."""
    del params
    return EmptyState()


def identity() -> GradientTransformation:
    """Stateless transformation that returns the updates unchanged.

    Not to be confused with :func:`set_to_zero`, which leaves *parameters* unchanged.
    """

    @elementwise
    @leafwise
    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        return updates, state

    setattr(update_fn, _IDENTITY, True)  # (a chain arms the member before it, see chain)
    return GradientTransformation(init_empty_state, update_fn)


_IDENTITY = "_optax_torch_identity"
# On scale's update when its factor is a Python number: inside the adapter's step it always
# leaves that factor to the caller (tree._deferred_scale), so a chain may arm the member
# before it for a deferred weight decay.
_SCALES_BY_NUMBER = "_optax_torch_scales_by_number"


def _mark_scales_by_number(update_fn: Callable) -> Callable:
    """Marks ``update_fn`` as that of a ``scale`` by a Python number."""
    return _mark(update_fn, _SCALES_BY_NUMBER)


def _scales_by_number(tx: GradientTransformation) -> bool:
    """Whether ``tx`` is :func:`optax_torch.scale` by a Python number."""
    return _has_mark(tx, _SCALES_BY_NUMBER)


# On add_decayed_weights by a Python number, unmasked: armed inside the adapter's step it
# always leaves its decay to the caller (tree._deferred_scale), passing its updates on as they
# are.
_DECAYS_BY_NUMBER = "_optax_torch_decays_by_number"
# On a transformation whose output updates are the result of the one ``tree.div_sqrt`` of its
# step, nothing done to them afterwards (Adam and its kin): a chain may arm it to leave that
# quotient to the adapter's parameter update (tree._deferred_scale).
_ENDS_IN_DIV_SQRT = "_optax_torch_ends_in_div_sqrt"


def _mark(update_fn: Callable, mark: str) -> Callable:
    """Sets the (private) ``mark`` on ``update_fn``; returns it."""
    setattr(_unwrap(update_fn), mark, True)
    return update_fn


def _has_mark(tx: GradientTransformation, mark: str) -> bool:
    """Whether ``tx.update`` carries the (private) ``mark``."""
    return bool(getattr(_unwrap(tx.update), mark, False))


def _copy_marks(tx: GradientTransformation, update_fn: Callable, identity: bool = False) -> None:
    """Gives ``update_fn`` the marks of ``tx.update`` on how it treats donated updates
    (:func:`consumes_updates`, :func:`_reuses_updates`, and with ``identity`` the marks of
    :func:`identity`, of a scale or decay by a number and of an output made by ``div_sqrt``):
    for a wrapper, or a chain through its first member."""
    inner = _unwrap(tx.update)
    exact = (_IDENTITY, _SCALES_BY_NUMBER, _DECAYS_BY_NUMBER, _ENDS_IN_DIV_SQRT) if identity else ()
    for mark in (_CONSUMES_UPDATES, _REUSES_UPDATES, *exact):
        if getattr(inner, mark, False):
            setattr(_unwrap(update_fn), mark, True)


def _is_identity(tx: GradientTransformation) -> bool:
    """Whether ``tx`` is :func:`identity` (its updates are its input, untouched)."""
    return bool(getattr(_unwrap(tx.update), _IDENTITY, False))


def set_to_zero() -> GradientTransformation:
    """Stateless transformation that maps every update to zero (freezes parameters).

    Useful with :func:`optax_torch.partition` or :func:`optax_torch.masked` to keep part of a
    model fixed.
    """

    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        return _tree.zeros_like(updates), state

    return GradientTransformation(init_empty_state, update_fn)


def stateless(f: Callable[[Updates, Params | None], Updates]) -> GradientTransformation:
    """Builds a stateless transformation from ``f(updates, params) -> updates``.

    Example::

        >>> import optax_torch as otx
        >>> negate = otx.stateless(lambda u, p: otx.tree.scale(-1.0, u))
    """

    @donation_safe  # no state to read
    def update_fn(updates, state, params=None):
        del state
        return f(updates, params), EmptyState()

    return GradientTransformation(init_empty_state, update_fn)


def stateless_with_tree_map(
    f: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
) -> GradientTransformation:
    """Builds a stateless transformation from a per-tensor ``f(update, param) -> update``.

    ``f`` is mapped over the leaves (``param`` is ``None`` when ``params`` is not given). Prefer
    :func:`stateless` with :mod:`optax_torch.tree` operations for speed: they run as multi-tensor
    kernels instead of one Python call per leaf.
    """

    @donation_safe  # no state to read
    def update_fn(updates, state, params=None):
        del state
        if params is not None:
            return _tree.map(f, updates, params), EmptyState()
        return _tree.map(lambda u: f(u, None), updates), EmptyState()

    return GradientTransformation(init_empty_state, update_fn)


def with_extra_args_support(tx: GradientTransformation) -> GradientTransformationExtraArgs:
    """Wraps ``tx`` so that its ``update`` accepts (and ignores) extra keyword arguments."""
    if isinstance(tx, GradientTransformationExtraArgs):
        return tx

    def update(updates, state, params=None, **extra_args):
        del extra_args
        return tx.update(updates, state, params)

    if is_donation_safe(tx):
        donation_safe(update)
    _copy_marks(tx, update, identity=True)
    if is_elementwise(tx):
        elementwise(update)
    if is_leafwise(tx):
        leafwise(update)
    _forwards_updates(update)
    # tx.update already keeps the state of None-gradient leaves.
    return GradientTransformationExtraArgs._unwrapped(tx.init, update)
