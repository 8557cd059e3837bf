"""``TorchOptimizer``: runs a gradient transformation as a ``torch.optim.Optimizer``.

The adapter of ``shared/design.md`` §4. One transform per param group; the group's parameters are
given to the transform as a Python list of tensors, the functional state lives in the adapter and
is mirrored into ``optimizer.state[p]`` (per-parameter dicts, torch's layout) so that
``state_dict()`` / ``load_state_dict()``, LR schedulers, ``GradScaler`` and code that inspects
``optimizer.state`` work as with any torch optimizer.
"""

from __future__ import annotations

import inspect
import numbers
from collections import defaultdict
from collections.abc import Callable, Iterable
from copy import deepcopy
from itertools import chain as _iter_chain
from typing import Any

import torch
from torch.optim.optimizer import Optimizer, required

from optax_torch import tree
from optax_torch.base import GradientTransformation, OptState, with_extra_args_support

__all__ = ["TorchOptimizer"]

_LR = "lr"
_LEARNING_RATE = "learning_rate"
_HYPERPARAMS = "hyperparams"

# Hyperparameter values that can be compared by value to decide whether a rebuilt transform
# would be the same as the cached one.
_VALUE_TYPES = (int, float, bool, str, type(None), torch.dtype)


class _MissingLearningRateError(KeyError):
    """``group["lr"]`` on an optimizer whose transform has no adjustable learning rate."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0])


_NO_LR_MESSAGE = (
    "this TorchOptimizer was built from a ready GradientTransformation, so its learning rate is "
    "fixed inside the transform and its param groups have no 'lr' (a torch LR scheduler cannot "
    "change it). Alternatives: pass the optimizer factory and its hyperparameters instead, e.g. "
    "TorchOptimizer(params, optax_torch.adamw, lr=1e-3, weight_decay=1e-2), whose 'lr' is live; "
    "or build the transform with optax_torch.inject_hyperparams(optax_torch.adamw)("
    "learning_rate=1e-3), whose numeric hyperparameters become param-group keys; or give the "
    "transform an optax_torch schedule as its learning_rate."
)


class _ParamGroup(dict):
    """A param group of an optimizer without an ``lr`` key: ``group["lr"]`` explains why."""

    def __missing__(self, key):
        if key in (_LR, _LEARNING_RATE):
            raise _MissingLearningRateError(_NO_LR_MESSAGE)
        raise KeyError(key)


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
    if _is_namedtuple(node):
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


def _make_plan(state: OptState, n: int, key_map: dict[str, str]) -> list[tuple[str, int | None]]:
    """``(name, param index or None)`` for every leaf of ``state``, in flattening order."""
    labels, spec = tree.flatten(_labels(state, n, (), None))
    if spec != tree.structure(state):
        raise TypeError(
            "TorchOptimizer: the transform's state contains a container type that the adapter "
            "cannot name (use NamedTuple, tuple, list and dict states)"
        )
    out: list[tuple[str, int | None]] = []
    for lab in labels:
        name: str = lab.name
        out.append((key_map.get(name, name), lab.index))
    return out


def _is_namedtuple(obj: Any) -> bool:
    return isinstance(obj, tuple) and hasattr(obj, "_fields")


def _is_transform(obj: Any) -> bool:
    return isinstance(obj, GradientTransformation)


def _cache_key(hp: dict[str, Any]) -> tuple | None:
    """A key equal for two hyperparameter dicts that build the same transform (None: no cache).

    Numbers compare by value, callables and containers by identity; tensors are never cached
    (a transform reads a tensor's value when it is built, and LR schedulers fill tensors in
    place).
    """
    key = []
    for name, v in hp.items():
        if isinstance(v, _VALUE_TYPES):
            key.append((name, type(v), v))
        elif isinstance(v, tuple | list) and all(isinstance(x, _VALUE_TYPES) for x in v):
            key.append((name, type(v), tuple(v)))
        elif isinstance(v, torch.Tensor) or (
            isinstance(v, tuple | list) and any(isinstance(x, torch.Tensor) for x in v)
        ):
            return None
        else:
            key.append((name, "id", id(v)))
    return tuple(key)


def _number(v: Any) -> Any:
    """A 0-d tensor hyperparameter as a Python number (other values unchanged)."""
    if isinstance(v, torch.Tensor) and v.dim() == 0:
        return v.item()
    return v


class _Slot:
    """Per param group runtime data of a :class:`TorchOptimizer`."""

    def __init__(self, n: int):
        self.state: OptState | None = None  # functional state; None before the first step
        self.active: list[bool] = [False] * n  # params whose state has been allocated
        self.tx_key: tuple | None = None  # cache of the transform built from the group
        self.tx: GradientTransformation | None = None
        self.tx_hp: dict[str, Any] | None = None
        self.probe_spec: Any = None  # structure of tx.init([]) when the state was created
        self.plan_spec: Any = None
        self.plan: list[tuple[str, int | None]] = []
        self.leaves: list[Any] | None = None  # flat state leaves not yet mirrored in .state
        self.spec: Any = None


class TorchOptimizer(Optimizer):
    r"""A ``torch.optim.Optimizer`` that runs an optax_torch gradient transformation.

    ``tx`` is either an optimizer factory (``optax_torch.adamw``, ``optax_torch.sgd``, or any
    function returning a :class:`~optax_torch.GradientTransformation`) together with its
    hyperparameters as keyword arguments, or a ready transformation.

    **Factory** (recommended): the factory's parameters become param-group keys, with defaults
    from its signature (a parameter without default is required, like torch's ``required``).
    ``learning_rate`` is spelled ``lr`` in param groups (and accepted as either name in the
    arguments) so that ``torch.optim.lr_scheduler`` works. Hyperparameters are *live*: at each
    step the group's transform is rebuilt from its current values (``factory(**hp)`` only builds
    closures, and is cached while the values do not change), so an LR scheduler writing
    ``group["lr"]`` or a user writing ``group["weight_decay"]`` changes the next step, with the
    Python-double arithmetic of ``torch.optim``. Param groups may override any hyperparameter.

    **Ready transform**: param groups carry no hyperparameters, unless the transform was built
    with :func:`optax_torch.inject_hyperparams`, in which case its numeric hyperparameters are
    exposed as group keys (``learning_rate`` as ``lr``) and written into the state's
    ``hyperparams`` before each update; after the update the group shows the values used
    (scheduled ones included). Without an injectable learning rate, ``group["lr"]`` (hence
    attaching an LR scheduler) raises a ``KeyError`` explaining the alternatives, and param
    groups that set ``lr`` are rejected with a ``TypeError``.

    Args:
      params: an iterable of tensors, of ``(name, tensor)`` pairs, or of dicts defining param
        groups (torch's format; a group may override hyperparameters).
      tx: an optimizer factory or a ready :class:`~optax_torch.GradientTransformation`.
      **hyperparams: the factory's hyperparameters (``lr`` or ``learning_rate``, ...); names the
        factory does not accept raise ``TypeError``. With a ready transform only injectable
        hyperparameters may be given.

    Example::

        >>> model = torch.nn.Linear(4, 2)
        >>> opt = TorchOptimizer(model.parameters(), optax_torch.adamw, lr=1e-3, weight_decay=0.1)
        >>> sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)
        >>> model(torch.randn(8, 4)).square().sum().backward()
        >>> opt.step(); opt.zero_grad(); sched.step()
        >>> opt2 = TorchOptimizer(model.parameters(), optax_torch.chain(
        ...     optax_torch.clip_by_global_norm(1.0), optax_torch.adam(1e-3)))

    ``step(closure=None, **extra_args)`` evaluates ``closure`` under ``torch.enable_grad()`` and
    returns its loss, then, under ``torch.no_grad()``, runs each group's ``update`` on the list of
    gradients (``None`` for parameters whose ``.grad`` is ``None``) and the list of parameters,
    and adds the updates to the parameters in place with one multi-tensor ``_foreach_add_`` per
    group. ``extra_args`` are passed to ``update`` (e.g. ``value=loss``).

    State: allocated lazily, at the first step where a parameter has a gradient (parameters that
    never get one keep no state, like torch). ``optimizer.state[p]`` holds, for each parameter,
    the state leaves that mirror it, named by their path in the state tree (adamw: ``"0.mu"``,
    ``"0.nu"``), plus the group-wide leaves (``"0.count"``), like torch stores ``step`` in every
    parameter's entry. These dicts are brought up to date when ``optimizer.state`` is read, so
    steps pay nothing for them. ``state_dict()`` has torch's layout, ``{"state": {index: {name:
    value}}, "param_groups": [...]}``, and loads with ``torch.load(weights_only=True)``; callable
    hyperparameters (schedules, mask functions) are left out of ``param_groups`` and kept from
    the current optimizer on load. ``load_state_dict`` rebuilds the functional state exactly and
    checks it (keys, shapes, number of parameters); on error it raises ``ValueError`` and leaves
    the optimizer unchanged.

    Deviations from ``torch.optim``:

    * Step counts are per param group (torch's are per parameter): a parameter whose gradient is
      ``None`` at some steps is skipped (parameter and state untouched), but when it next gets a
      gradient it sees the group's count (e.g. in Adam's bias correction). Groups where no
      parameter has a gradient are skipped entirely, count included.
    * Changing a hyperparameter that changes the *structure* of the state (e.g. ``momentum``
      from ``None`` to a number) after the first step raises ``ValueError``.
    * Not differentiable (``step`` always runs under ``torch.no_grad()``); use the functional
      ``tx.update`` with ``torch.func`` to differentiate through a step.
    * Transforms must not return state tensors that alias the gradients (the adapter does not
      copy them); state that aliases the parameters at ``init`` is copied.
    * Sparse gradients are not supported; complex parameters are handled only as far as the
      transform supports them.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        tx: GradientTransformation | Callable[..., GradientTransformation],
        **hyperparams: Any,
    ):
        self._otx_slots: list[_Slot] = []
        self._otx_state: defaultdict[Any, dict[str, Any]] = defaultdict(dict)
        self._otx_state_key_map: dict[str, str] = dict(getattr(self, "_state_key_map", {}))
        self._otx_factory: Callable[..., GradientTransformation] | None
        self._otx_tx: GradientTransformation | None
        if isinstance(tx, GradientTransformation):
            ready = with_extra_args_support(tx)
            self._otx_factory = None
            self._otx_tx = ready
            self._otx_name = "a ready GradientTransformation"
            self._otx_arg_of: dict[str, str] = {}
            self._otx_positional: list[str] = []
            param_list: list[Any] = list(params)
            params = param_list
            probe = self._probe_state(ready, param_list)
            defaults, self._otx_inject = self._inject_defaults(probe)
            unknown = sorted(set(hyperparams) - set(defaults) - {_LEARNING_RATE})
            if _LEARNING_RATE in hyperparams and _LR not in defaults:
                unknown = sorted({*unknown, _LEARNING_RATE})
            if unknown:
                raise TypeError(
                    f"TorchOptimizer: hyperparameter(s) {', '.join(map(repr, unknown))} given "
                    "with a ready GradientTransformation, which has no such adjustable "
                    "hyperparameter"
                    + (f" (adjustable: {', '.join(sorted(defaults))})" if defaults else "")
                    + ". Pass the optimizer factory instead, e.g. TorchOptimizer(params, "
                    "optax_torch.adamw, lr=1e-3), or build the transform with "
                    "optax_torch.inject_hyperparams."
                )
            hyperparams = self._normalize_lr(dict(hyperparams), "TorchOptimizer()")
            defaults.update(hyperparams)
        elif callable(tx):
            self._otx_factory = tx
            self._otx_tx = None
            self._otx_name = getattr(tx, "__qualname__", None) or repr(tx)
            defaults = self._factory_defaults(tx, hyperparams)
            self._otx_inject = {}
        else:
            raise TypeError(
                "TorchOptimizer: tx must be a GradientTransformation or a function returning "
                f"one (e.g. optax_torch.adamw), got {type(tx).__name__}"
            )
        super().__init__(params, defaults)
        if self._otx_factory is not None and self.param_groups:
            # Injectable hyperparameters of a factory built with inject_hyperparams.
            tx0 = self._transform_for(0, self.param_groups[0], check=False)
            probe = self._probe_state(tx0, self.param_groups[0]["params"])
            _, inject = self._inject_defaults(probe)
            self._otx_inject = {k: v for k, v in inject.items() if k in self.defaults}

    # ----------------------------------------------------------------------------------------
    # Hyperparameters
    # ----------------------------------------------------------------------------------------

    def _factory_defaults(self, factory: Callable, hyperparams: dict[str, Any]) -> dict[str, Any]:
        try:
            signature = inspect.signature(factory)
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"TorchOptimizer: cannot read the signature of {factory!r}: {e}"
            ) from None
        params = signature.parameters
        var_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        named = [
            p
            for p in params.values()
            if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        ]
        names = {p.name for p in named}
        lr_arg = _LEARNING_RATE if _LEARNING_RATE in names and _LR not in names else None
        self._otx_arg_of = {(_LR if p.name == lr_arg else p.name): p.name for p in named}
        self._otx_positional = [
            p.name for p in named if p.kind is inspect.Parameter.POSITIONAL_ONLY
        ]
        hyperparams = self._normalize_lr(dict(hyperparams), "TorchOptimizer()")
        unknown = sorted(set(hyperparams) - set(self._otx_arg_of))
        if unknown and not var_keyword:
            accepted = ", ".join(self._otx_arg_of)
            raise TypeError(
                f"TorchOptimizer: {self._otx_name} has no hyperparameter(s) "
                f"{', '.join(map(repr, unknown))}; accepted: {accepted}"
            )
        for name in unknown:  # **kwargs factories: extra names are hyperparameters too
            self._otx_arg_of[name] = name
        defaults: dict[str, Any] = {}
        for key, arg in self._otx_arg_of.items():
            if key in hyperparams:
                defaults[key] = hyperparams[key]
            else:
                p = params.get(arg)
                if p is not None and p.default is not inspect.Parameter.empty:
                    defaults[key] = p.default
                else:
                    defaults[key] = required
        return defaults

    def _lr_is_key(self) -> bool:
        return _LR in self._otx_arg_of or _LR in self._otx_inject

    def _normalize_lr(self, d: dict[str, Any], where: str) -> dict[str, Any]:
        """Renames ``learning_rate`` to ``lr`` (both given: ``TypeError``)."""
        if _LEARNING_RATE in d and (self._otx_factory is None or _LR in self._otx_arg_of):
            if _LR in d:
                raise TypeError(f"{where}: give either 'lr' or 'learning_rate', not both")
            d[_LR] = d.pop(_LEARNING_RATE)
        return d

    @staticmethod
    def _probe_state(tx: GradientTransformation, params: list) -> OptState:
        """A state of ``tx`` used only to read its structure (init on no parameters if possible)."""
        try:
            return tx.init([])
        except Exception:
            flat: list[torch.Tensor] = []
            for p in params:
                if isinstance(p, dict):
                    flat.extend(p["params"] if isinstance(p["params"], list) else [p["params"]])
                elif isinstance(p, tuple):
                    flat.append(p[1])
                else:
                    flat.append(p)
            with torch.no_grad():
                return tx.init([p.detach() for p in flat])

    @staticmethod
    def _find_hyperparams(state: OptState) -> dict[str, Any] | None:
        if _is_namedtuple(state) and _HYPERPARAMS in getattr(state, "_fields"):  # noqa: B009
            hp = getattr(state, _HYPERPARAMS)
        else:
            try:
                hp = tree.get(state, _HYPERPARAMS, None)
            except KeyError:  # ambiguous: several injected transforms
                return None
        return hp if isinstance(hp, dict) else None

    def _inject_defaults(self, probe: OptState) -> tuple[dict[str, Any], dict[str, str]]:
        """Group defaults and ``{group key: hyperparams key}`` for injectable hyperparameters."""
        hp = self._find_hyperparams(probe)
        if not hp:
            return {}, {}
        defaults, inject = {}, {}
        for name, v in hp.items():
            if not isinstance(v, torch.Tensor | numbers.Number):
                continue
            key = _LR if name == _LEARNING_RATE else name
            defaults[key] = _number(v)
            inject[key] = name
        return defaults, inject

    def _group_hyperparams(self, group: dict[str, Any]) -> dict[str, Any]:
        return {arg: group[key] for key, arg in self._otx_arg_of.items()}

    def _call_factory(self, hp: dict[str, Any]) -> GradientTransformation:
        hp = dict(hp)
        positional = [hp.pop(name) for name in self._otx_positional]
        assert self._otx_factory is not None
        tx = self._otx_factory(*positional, **hp)
        if not _is_transform(tx):
            raise TypeError(
                f"TorchOptimizer: {self._otx_name}(...) returned {type(tx).__name__}, "
                "not a GradientTransformation"
            )
        return with_extra_args_support(tx)

    def _transform_for(
        self, gi: int, group: dict[str, Any], check: bool = True
    ) -> GradientTransformation:
        """The transform of param group ``gi`` for the group's current hyperparameters."""
        if self._otx_factory is None:
            assert self._otx_tx is not None
            return self._otx_tx
        slot = self._otx_slots[gi]
        hp = self._group_hyperparams(group)
        key = _cache_key(hp)
        if key is not None and key == slot.tx_key and slot.tx is not None:
            return slot.tx
        tx = self._call_factory(hp)
        if not check:
            slot.tx_key, slot.tx, slot.tx_hp = key, tx, hp
            return tx
        if slot.state is not None and slot.probe_spec is not None:
            try:
                spec = tree.structure(tx.init([]))
            except Exception:
                spec = slot.probe_spec
            if spec != slot.probe_spec:
                old = slot.tx_hp or {}
                changed = sorted(k for k in hp if k in old and not _same(hp[k], old[k]))
                raise ValueError(
                    f"TorchOptimizer: param group {gi}: the new value(s) of "
                    f"{', '.join(changed) or 'its hyperparameters'} change the structure of "
                    f"the optimizer state of {self._otx_name} (e.g. turning momentum or amsgrad "
                    "on or off), which is not supported after the first step; create a new "
                    "optimizer instead"
                )
        slot.tx_key, slot.tx, slot.tx_hp = key, tx, hp
        return tx

    # ----------------------------------------------------------------------------------------
    # Param groups
    # ----------------------------------------------------------------------------------------

    def _normalize_group(self, group: dict[str, Any]) -> dict[str, Any]:
        """Hook for subclasses: adjusts a param group before it is used (add or load)."""
        return group

    @torch._disable_dynamo
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Adds a param group (torch's semantics); its hyperparameters are checked by building
        its transform, and the missing ones are filled from the defaults."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")
        if not self._lr_is_key():
            for bad in (_LR, _LEARNING_RATE):
                if bad in param_group:
                    raise TypeError(
                        f"TorchOptimizer: a param group sets {bad!r}, but {_NO_LR_MESSAGE}"
                    )
            param_group = _ParamGroup(param_group)
        else:
            self._normalize_lr(param_group, "TorchOptimizer param group")
        param_group = self._normalize_group(param_group)
        super().add_param_group(param_group)
        n = len(param_group["params"])
        self._otx_slots.append(_Slot(n))
        try:
            self._transform_for(len(self.param_groups) - 1, param_group, check=False)
        except Exception:
            self.param_groups.pop()
            self._otx_slots.pop()
            raise

    # ----------------------------------------------------------------------------------------
    # Step
    # ----------------------------------------------------------------------------------------

    def step(self, closure: Callable[[], Any] | None = None, **extra_args: Any) -> Any:
        """Performs one optimization step (see the class docstring).

        Args:
          closure: optional; re-evaluates the model and returns the loss (run with grad enabled).
          **extra_args: extra keyword arguments for the transforms' ``update``.

        Returns:
          The closure's loss, or ``None``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            for gi, group in enumerate(self.param_groups):
                self._step_group(gi, group, extra_args)
        return loss

    def _step_group(self, gi: int, group: dict[str, Any], extra_args: dict[str, Any]) -> None:
        params = group["params"]
        grads: list[torch.Tensor | None] = []
        any_grad, all_grad = False, True
        for j, p in enumerate(params):
            g = p.grad
            if g is None:
                all_grad = False
            else:
                if g.is_sparse:
                    raise RuntimeError(
                        f"TorchOptimizer: param group {gi}, parameter {j} has a sparse gradient; "
                        "sparse gradients are not supported (use a dense gradient or "
                        "torch.optim.SparseAdam)"
                    )
                if g.shape != p.shape or g.dtype != p.dtype:
                    raise ValueError(
                        f"TorchOptimizer: param group {gi}, parameter {j}: gradient of shape "
                        f"{tuple(g.shape)} and dtype {g.dtype} for a parameter of shape "
                        f"{tuple(p.shape)} and dtype {p.dtype}"
                    )
                any_grad = True
            grads.append(g)
        if not any_grad:
            return
        while len(self._otx_slots) <= gi:  # groups appended to param_groups by hand
            self._otx_slots.append(_Slot(len(self.param_groups[len(self._otx_slots)]["params"])))
        slot = self._otx_slots[gi]
        if len(slot.active) != len(params):
            raise RuntimeError(
                f"TorchOptimizer: param group {gi} changed from {len(slot.active)} to "
                f"{len(params)} parameters; use add_param_group to add parameters"
            )
        tx = self._transform_for(gi, group)
        state, active = self._ensure_state(slot, tx, params, grads)
        if self._otx_inject:
            state = self._write_hyperparams(state, group)
        # The adapter owns the state and never reads the old one again: donate its buffers, so
        # moments are updated in place (torch.optim's memory traffic, no second copy of the state).
        with tree.donate(state, exclude=(grads, params)):
            updates, new_state = tx.update(grads, state, params, **extra_args)

        new_leaves, spec = tree.flatten(new_state)
        if not all_grad:  # keep the old state where the gradient was None
            old_leaves, old_spec = tree.flatten(state)
            if old_spec != spec:
                raise RuntimeError(
                    f"TorchOptimizer: the transform of param group {gi} returned a state whose "
                    "structure differs from its input state"
                )
            new_leaves = [o if x is None else x for x, o in zip(new_leaves, old_leaves)]
            new_state = tree.unflatten(spec, new_leaves)

        if not isinstance(updates, list | tuple) or len(updates) != len(params):
            raise RuntimeError(
                f"TorchOptimizer: the transform of param group {gi} returned updates that do "
                "not match the list of parameters"
            )
        if all_grad and not any(u is None for u in updates):
            ps, us = params, updates
        else:
            ps = [p for p, u in zip(params, updates) if u is not None]
            us = [u for u in updates if u is not None]
        if ps:
            # In-place add casts an update of another floating dtype to the parameter's dtype.
            torch._foreach_add_(ps, list(us))

        slot.state = new_state
        slot.active = active
        if self._otx_inject:
            self._read_hyperparams(new_state, group)
        slot.leaves, slot.spec = new_leaves, spec  # mirrored into .state when it is read

    def _ensure_state(self, slot: _Slot, tx, params: list, grads: list) -> tuple[OptState, list]:
        """The group's state with state allocated for every parameter that has a gradient."""
        active = slot.active
        need = [g is not None and not a for g, a in zip(grads, active)]
        if not any(need):
            return slot.state, active
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
        fresh = self._unalias(fresh, params)
        if slot.state is None:
            state = fresh
            slot.probe_spec = self._probe_spec(tx)
        else:
            old_leaves, old_spec = tree.flatten(slot.state)
            fresh_leaves, fresh_spec = tree.flatten(fresh)
            if old_spec != fresh_spec:
                raise RuntimeError(
                    "TorchOptimizer: the state made for new parameters does not match the "
                    "structure of the existing state"
                )
            state = tree.unflatten(
                old_spec, [f if o is None else o for o, f in zip(old_leaves, fresh_leaves)]
            )
        return state, now_active

    @staticmethod
    def _probe_spec(tx) -> Any:
        try:
            return tree.structure(tx.init([]))
        except Exception:
            return None

    @staticmethod
    def _unalias(state: OptState, params: list) -> OptState:
        """Copies state leaves that share memory with a parameter (updated in place later)."""
        ptrs = {p.untyped_storage().data_ptr() for p in params if p.numel()}
        leaves, spec = tree.flatten(state)
        if not any(
            isinstance(x, torch.Tensor) and x.numel() and x.untyped_storage().data_ptr() in ptrs
            for x in leaves
        ):
            return state
        return tree.unflatten(
            spec,
            [
                x.clone()
                if isinstance(x, torch.Tensor)
                and x.numel()
                and x.untyped_storage().data_ptr() in ptrs
                else x
                for x in leaves
            ],
        )

    def _write_hyperparams(self, state: OptState, group: dict[str, Any]) -> OptState:
        hp = self._find_hyperparams(state)
        if hp is None:
            return state
        new = dict(hp)
        for key, name in self._otx_inject.items():
            if name not in hp:
                continue
            v, old = group[key], hp[name]
            if isinstance(v, torch.Tensor) or not isinstance(old, torch.Tensor):
                new[name] = v
            elif isinstance(v, numbers.Number) and not isinstance(v, bool):
                new[name] = torch.tensor(v, dtype=old.dtype, device=old.device)
            else:
                new[name] = v
        if _is_namedtuple(state) and _HYPERPARAMS in getattr(state, "_fields"):  # noqa: B009
            return getattr(state, "_replace")(**{_HYPERPARAMS: new})  # noqa: B009
        return tree.set(state, **{_HYPERPARAMS: new})

    def _read_hyperparams(self, state: OptState, group: dict[str, Any]) -> None:
        hp = self._find_hyperparams(state)
        if hp is None:
            return
        for key, name in self._otx_inject.items():
            if name in hp and not isinstance(group[key], torch.Tensor):
                group[key] = _number(hp[name])

    # ----------------------------------------------------------------------------------------
    # optimizer.state mirror
    # ----------------------------------------------------------------------------------------

    def _plan_for(self, slot: _Slot, state: OptState, spec: Any, n: int):
        if slot.plan_spec is None or spec != slot.plan_spec:
            slot.plan = _make_plan(state, n, self._otx_state_key_map)
            slot.plan_spec = spec
        return slot.plan

    @property
    def state(self) -> defaultdict[Any, dict[str, Any]]:  # type: ignore[override]
        """Per-parameter state dicts (torch's ``optimizer.state``), brought up to date on read."""
        for slot, group in zip(self._otx_slots, self.param_groups):
            if slot.leaves is not None:
                self._sync_state(slot, group["params"], slot.leaves, slot.spec)
                slot.leaves = None
        return self._otx_state

    @state.setter
    def state(self, value: defaultdict[Any, dict[str, Any]]) -> None:
        self._otx_state = value

    def _sync_state(self, slot: _Slot, params: list, leaves: list, spec: Any) -> None:
        """Writes the group's state leaves into ``self.state[p]`` (per-parameter dicts)."""
        plan = self._plan_for(slot, slot.state, spec, len(params))
        active_params = [p for p, a in zip(params, slot.active) if a]
        store = self._otx_state
        entries = {id(p): store[p] for p in active_params}
        for (name, j), leaf in zip(plan, leaves):
            if leaf is None:
                continue
            if j is None:
                for p in active_params:
                    entries[id(p)][name] = leaf
            elif slot.active[j]:
                entries[id(params[j])][name] = leaf

    def _shared_names(self, slot: _Slot) -> set[str]:
        return {name for name, j in slot.plan if j is None}

    # ----------------------------------------------------------------------------------------
    # state_dict / load_state_dict
    # ----------------------------------------------------------------------------------------

    @torch._disable_dynamo
    def state_dict(self) -> dict[str, Any]:
        """The optimizer state in torch's layout (see the class docstring).

        Group-wide 0-d state (step counts) is copied into each parameter's entry, so that
        loading the dict into a ``torch.optim`` optimizer that updates ``step`` in place works.
        State-dict pre and post hooks run as in torch.
        """
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)

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

        param_groups = [pack_group(g) for g in self.param_groups]
        state = self.state  # brings the per-parameter dicts up to date (and the naming plans)
        shared: dict[int, set[str]] = {}
        for group, slot in zip(self.param_groups, self._otx_slots):
            names = self._shared_names(slot)
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
                    else x
                )
                for name, x in v.items()
            }
        state_dict = {"state": packed_state, "param_groups": param_groups}
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            hook_result = post_hook(self, state_dict)
            if hook_result is not None:
                state_dict = hook_result
        return state_dict

    @torch._disable_dynamo
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Loads a state made by :meth:`state_dict` (of an optimizer with the same transform).

        The functional state is rebuilt from a fresh ``init`` of the group's transform (built
        from the loaded hyperparameters) and filled with the loaded values, cast to the dtype
        and device of the fresh state. Raises ``ValueError`` naming the problem (different
        number of groups or parameters, missing or unexpected keys, shape mismatch) and leaves
        the optimizer unchanged. Load-state-dict pre and post hooks run as in torch.
        """
        state_dict = state_dict.copy()
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            hook_result = pre_hook(self, state_dict)
            if hook_result is not None:
                state_dict = hook_result
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict):
            raise ValueError(
                "load_state_dict: expected a dict with 'state' and 'param_groups' entries"
            )
        groups = self.param_groups
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

        new_groups, new_slots = [], []
        for gi, (group, saved) in enumerate(zip(groups, saved_groups)):
            merged = {k: v for k, v in group.items() if k != "params"}
            merged.update({k: v for k, v in saved.items() if k not in ("params", "param_names")})
            merged["params"] = group["params"]
            if "param_names" in saved:
                merged["param_names"] = saved["param_names"]
            merged = type(group)(merged) if isinstance(group, _ParamGroup) else merged
            if self._lr_is_key():
                self._normalize_lr(merged, "load_state_dict param group")
            merged = self._normalize_group(merged)
            params = group["params"]
            entries = {}
            for j, idx in enumerate(saved["params"]):
                e = saved_state.get(idx)
                if isinstance(e, dict) and any(v is not None for v in e.values()):
                    entries[j] = e
            slot = _Slot(len(params))
            new_slots.append(slot)
            new_groups.append(merged)
            if self._otx_factory is None:
                tx = self._otx_tx
            else:
                hp = self._group_hyperparams(merged)
                tx = self._call_factory(hp)
                slot.tx_key, slot.tx, slot.tx_hp = _cache_key(hp), tx, hp
            if entries:
                self._load_group(gi, slot, tx, params, entries, saved["params"])

        self.param_groups = new_groups
        self._otx_slots = new_slots
        self._otx_state = defaultdict(dict)
        for slot in self._otx_slots:
            if slot.state is not None:
                slot.leaves, slot.spec = tree.flatten(slot.state)
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def _load_group(self, gi, slot: _Slot, tx, params, entries: dict, saved_ids: list) -> None:
        """Rebuilds param group ``gi``'s state from its per-parameter entries into ``slot``."""
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
        plan = _make_plan(template, n, self._otx_state_key_map)
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
            entries[j] = self._adapt_entry(entries[j], expected)
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
        for (name, j), x in zip(plan, leaves):
            if x is None:
                out.append(None)
            elif j is None:
                j0 = min(entries)
                out.append(fill(x, entries[j0][name], f"{where(j0)}, key {name!r}"))
            elif active[j]:
                out.append(fill(x, entries[j][name], f"{where(j)}, key {name!r}"))
            else:
                out.append(None)
        slot.state = tree.unflatten(spec, out)
        slot.active = active
        slot.probe_spec = self._probe_spec(tx)
        slot.plan, slot.plan_spec = plan, spec

    def _adapt_entry(self, entry: dict[str, Any], expected: set[str]) -> dict[str, Any]:
        """Hook for subclasses: adapts a loaded per-parameter entry (e.g. from torch.optim)."""
        del expected
        return entry

    # ----------------------------------------------------------------------------------------
    # Pickling / copying
    # ----------------------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        out = super().__getstate__()  # reads self.state: the per-parameter dicts are up to date
        out.update(
            {k: v for k, v in self.__dict__.items() if k.startswith("_otx_") and k != "_otx_state"}
        )
        return out

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        store = state.pop("state", None)
        super().__setstate__(state)
        self._otx_state = store if store is not None else defaultdict(dict)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return a is b
    try:
        return bool(a == b)
    except Exception:
        return a is b
