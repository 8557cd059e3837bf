"""``TorchOptimizer``: runs a gradient transformation as a ``torch.optim.Optimizer``.

The adapter of ``shared/design.md`` §4. One transform per param group; the group's parameters are
given to the transform as a Python list of tensors, the functional state lives in the adapter and
is mirrored into ``optimizer.state[p]`` (per-parameter dicts, torch's layout) so that
``state_dict()`` / ``load_state_dict()``, LR schedulers, ``GradScaler`` and code that inspects
``optimizer.state`` work as with any torch optimizer.

This module holds the class: construction, hyperparameters, param groups and ``step``. The
mapping of the functional state onto torch's per-parameter layout (``optimizer.state``,
``state_dict``, ``load_state_dict``) is in :mod:`optax_torch.wrappers._state_layout`, the
hyperparameter helpers in :mod:`optax_torch.wrappers._hyperparams`.
"""

from __future__ import annotations

import contextlib
import math
import operator
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, cast

import torch
from torch.optim.optimizer import Optimizer

from optax_torch import tree
from optax_torch.base import (
    GradientTransformation,
    _may_defer_scale,
    _share_code,
    is_donation_safe,
    is_elementwise,
    with_extra_args_support,
)
from optax_torch.compiled import compiled_step_fn
from optax_torch.wrappers import _flat, _format
from optax_torch.wrappers import _per_param as per_param
from optax_torch.wrappers import _state_layout as layout
from optax_torch.wrappers._hyperparams import (
    LEARNING_RATE,
    LR,
    NO_LR_MESSAGE,
    ParamGroup,
    cache_key,
    factory_defaults,
    inject_defaults,
    probe_state,
    read_hyperparams,
    rename_learning_rate,
    same,
    write_hyperparams,
)
from optax_torch.wrappers._state_layout import Slot

__all__ = ["TorchOptimizer"]


_GRAD = operator.attrgetter("grad")
_IS_SPARSE = operator.attrgetter("is_sparse")
_SHAPE = operator.attrgetter("shape")
_DTYPE = operator.attrgetter("dtype")


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
      gradient it sees the group's count (e.g. in Adam's bias correction), optax's semantics for
      a chain whose state may couple parameters. Groups where no parameter has a gradient are
      skipped entirely, count included. Subclasses that set ``_per_param_steps = True`` (the
      ``torch.optim`` drop-ins) keep every group-wide state value per parameter instead, as torch
      does (see :mod:`optax_torch.wrappers._per_param`): exact, at the cost of one ``tx.update``
      per distinct count on the steps where counts differ.
    * Changing a hyperparameter that changes the *structure* of the state (e.g. ``momentum``
      from ``None`` to a number) after the first step raises ``ValueError``.
    * Not differentiable (``step`` always runs under ``torch.no_grad()``); use the functional
      ``tx.update`` with ``torch.func`` to differentiate through a step.
    * Transforms must not return state tensors that alias the gradients (the adapter does not
      copy them); state that aliases the parameters at ``init`` is copied.
    * Sparse gradients are rejected unless a subclass sets ``_accepts_sparse_grads = True``
      (``SparseAdam``); complex parameters are handled only as far as the transform supports
      them.
    """

    # Subclasses whose transforms take sparse gradients (SparseAdam) set this to True.
    _accepts_sparse_grads: ClassVar[bool] = False
    # Subclasses set this to True for torch's per-parameter step counts (the drop-ins).
    _per_param_steps: ClassVar[bool] = False
    # State names kept internal: not in optimizer.state nor in state_dict (a subclass's
    # _adapt_entry rebuilds them on load, e.g. SGD's "momentum_started").
    _hidden_state_keys: ClassVar[frozenset[str]] = frozenset()
    # Refuse a negative or non-finite lr / weight_decay in a param group (torch.optim's own
    # constructor checks). The drop-ins set it False: they run their original's checks, and
    # some originals (timm's AdamP, SGDP, ...) accept a negative weight decay.
    _check_group_values: ClassVar[bool] = True
    # Stamp state dicts with the optax_torch format version (wrappers/_format.py). The drop-ins
    # do not: their layout is their original's, key for key (a stamped dict still loads).
    _format_stamp: ClassVar[bool] = True
    # Why the step cannot be compiled (compile_step then refuses with it), or None.
    _not_compilable: ClassVar[str | None] = None

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        tx: GradientTransformation | Callable[..., GradientTransformation],
        *,
        compile: bool | dict[str, Any] = False,
        **hyperparams: Any,
    ):
        self._otx_compile: dict[str, Any] | None = None
        self._otx_flat: bool | None = None  # compile_step's choice of flat buffers
        self._otx_slots: list[Slot] = []
        self._otx_state: layout.StateStore = layout.StateStore()
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
            probe = probe_state(ready, param_list)
            defaults, self._otx_inject = inject_defaults(probe)
            unknown = sorted(set(hyperparams) - set(defaults) - {LEARNING_RATE})
            if LEARNING_RATE in hyperparams and LR not in defaults:
                unknown = sorted({*unknown, LEARNING_RATE})
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
            self._otx_arg_of, self._otx_positional, defaults = factory_defaults(
                tx, hyperparams, self._otx_name
            )
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
            probe = probe_state(tx0, self.param_groups[0]["params"])
            _, inject = inject_defaults(probe)
            self._otx_inject = {k: v for k, v in inject.items() if k in self.defaults}
        if compile:
            self.compile_step(**(compile if isinstance(compile, dict) else {}))

    def compile_step(self, flat: bool | None = None, **options: Any) -> TorchOptimizer:
        """Runs the following steps compiled (``TorchOptimizer(..., compile=True)`` calls this;
        for a drop-in, call it after construction: ``opt = AdamW(...).compile_step()``).

        Each param group's whole step — its transformation, the parameter update and the
        write-back of the state into the buffers the optimizer owns — is one
        :func:`optax_torch.compile_update` graph (``torch.compile(fullgraph=True,
        dynamic=False)``; ``options`` override those and set ``backend``, ``mode`` or
        ``options``). The numbers equal the eager step up to the compiler's reassociation.

        Hyperparameters that are Python floats are given to the factory as 0-d float64 tensors
        when the group's transformation is built, and a rebuilt transformation reuses the
        compiled graph: an LR scheduler, or any new value of a float hyperparameter, never
        recompiles. A change of shapes, dtypes, state structure or of a non-float
        hyperparameter does. A step where some parameter of the group has no gradient, or
        where drop-ins keep per-parameter step counts that differ, runs eagerly on the same
        state.

        Chains marked :func:`optax_torch.elementwise` (Adam, AdamW, SGD, RMSprop, Lion,
        Adagrad, clipping, ...) run on one flat buffer per (device, dtype): the parameters are
        re-pointed into it at the first step and ``optimizer.state`` holds views of the flat
        state; they compile in seconds whatever the number of parameters, but each step first
        copies the gradients into a flat gradient buffer. Chains marked
        :func:`optax_torch.leafwise` and not element-wise (Lamb, Adafactor, ... : per-leaf
        statistics) run on one stacked ``(k, *shape)`` buffer per (device, dtype, shape), the
        step ``vmap``-ed over each: the graph has kernels per distinct shape, not per tensor
        (should that graph fail to compile, the group warns and runs one tensor per parameter);
        so do chains whose members are each element-wise or leafwise (a global-norm clip
        before Lamb).
        Other chains compile one tensor per parameter, which takes minutes for hundreds of
        tensors (see ``docs/performance.md``).

        Args:
          flat: for element-wise and leafwise chains, ``True`` runs on flat (stacked) buffers,
            ``False`` one tensor per parameter; ``None`` (default) chooses per param group: one
            tensor per parameter for a few large tensors (at most 16, of at least 2**20
            elements on average: the gradient copy would cost more than the compile time
            saved), flat (stacked) buffers otherwise.
          **options: for ``torch.compile``.

        Returns:
          ``self``.

        Raises:
          NotImplementedError: for the few drop-ins whose step cannot be traced (``timm.Kron``,
            ``torch_optim.Muon``, ``torch_optim.SparseAdam``), with the reason.
        """
        if self._not_compilable is not None:
            raise NotImplementedError(
                f"{type(self).__name__}: the step cannot be compiled ({self._not_compilable}); "
                "run it eagerly"
            )
        if flat is not None and not isinstance(flat, bool):
            raise TypeError(f"compile_step: flat must be True, False or None, got {flat!r}")
        self._otx_compile = dict(options)
        self._otx_flat = flat
        for slot in self._otx_slots:
            slot.step_fn, slot.tx, slot.tx_key = None, None, None
        return self

    # ----------------------------------------------------------------------------------------
    # Hyperparameters
    # ----------------------------------------------------------------------------------------

    def _lr_is_key(self) -> bool:
        return LR in self._otx_arg_of or LR in self._otx_inject

    def _normalize_lr(self, d: dict[str, Any], where: str) -> dict[str, Any]:
        """Renames ``learning_rate`` to ``lr`` (both given: ``TypeError``)."""
        if self._otx_factory is None or LR in self._otx_arg_of:
            rename_learning_rate(d, where)
        return d

    def _group_hyperparams(self, group: dict[str, Any]) -> dict[str, Any]:
        return {arg: group[key] for key, arg in self._otx_arg_of.items()}

    def _call_factory(self, hp: dict[str, Any]) -> GradientTransformation:
        hp = dict(hp)
        positional = [hp.pop(name) for name in self._otx_positional]
        assert self._otx_factory is not None
        tx = self._otx_factory(*positional, **hp)
        if not isinstance(tx, GradientTransformation):
            raise TypeError(
                f"TorchOptimizer: {self._otx_name}(...) returned {type(tx).__name__}, "
                "not a GradientTransformation"
            )
        return with_extra_args_support(tx)

    def _build(self, hp: dict[str, Any]) -> GradientTransformation:
        """The group's transform; for compiled steps with float hyperparameters as tensors, and
        sharing code objects with the transforms built before (the compiled graph is reused)."""
        if self._otx_compile is None:
            return self._call_factory(hp)
        with _share_code():
            return self._call_factory(self._compiled_hyperparams(hp))

    @staticmethod
    def _compiled_hyperparams(hp: dict[str, Any]) -> dict[str, Any]:
        """``hp`` with Python floats as 0-d float64 tensors (see :meth:`compile_step`)."""
        return {
            k: torch.tensor(v, dtype=torch.float64) if type(v) is float else v
            for k, v in hp.items()
        }

    def _transform_for(
        self, gi: int, group: dict[str, Any], check: bool = True
    ) -> GradientTransformation:
        """The transform of param group ``gi`` for the group's current hyperparameters."""
        if self._otx_factory is None:
            assert self._otx_tx is not None
            return self._otx_tx
        slot = self._otx_slots[gi]
        hp = self._group_hyperparams(group)
        key = cache_key(hp)
        if key is not None and key == slot.tx_key and slot.tx is not None:
            return slot.tx
        tx = self._build(hp)
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
                changed = sorted(k for k in hp if k in old and not same(hp[k], old[k]))
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
            for bad in (LR, LEARNING_RATE):
                if bad in param_group:
                    raise TypeError(
                        f"TorchOptimizer: a param group sets {bad!r}, but {NO_LR_MESSAGE}"
                    )
            param_group = ParamGroup(param_group)
        else:
            self._normalize_lr(param_group, "TorchOptimizer param group")
        param_group = self._normalize_group(param_group)
        super().add_param_group(param_group)
        n = len(param_group["params"])
        self._otx_slots.append(Slot(n))
        try:
            self._check_group(len(self.param_groups) - 1, self.param_groups[-1])
            self._transform_for(len(self.param_groups) - 1, param_group, check=False)
        except Exception:
            self.param_groups.pop()
            self._otx_slots.pop()
            raise

    @classmethod
    def _check_group(cls, gi: int, group: dict[str, Any]) -> None:
        """torch.optim's checks (a learning rate or weight decay must be >= 0: a negative value
        is a sign error, as ``torch.optim`` says at construction), and floating-point or complex
        parameters only (an integer tensor has no gradient to follow)."""
        for i, p in enumerate(group["params"]):
            if not (p.is_floating_point() or p.is_complex()):
                raise TypeError(
                    f"TorchOptimizer: parameter {i} of param group {gi} has dtype {p.dtype}; "
                    "only floating-point or complex tensors can be optimized"
                )
        if not cls._check_group_values:
            return
        for key, what in ((LR, "learning rate"), ("weight_decay", "weight_decay value")):
            value = group.get(key)
            if isinstance(value, torch.Tensor) and value.device.type == "cpu":
                value = value.item() if value.numel() == 1 else value
            if isinstance(value, int | float) and not (math.isfinite(value) and value >= 0):
                raise ValueError(
                    f"Invalid {what}: {value!r} ({key} in param group {gi} must be a finite "
                    "number >= 0)"
                )

    # ----------------------------------------------------------------------------------------
    # Step
    # ----------------------------------------------------------------------------------------

    def _check_grads(self, gi: int, params: list, grads: list) -> None:
        """Raises for the first gradient that is sparse (unless accepted) or whose shape or
        dtype is not its parameter's."""
        for j, (p, g) in enumerate(zip(params, grads)):
            if g is None:
                continue
            if g.is_sparse and not self._accepts_sparse_grads:
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
        if self._otx_state.written:  # optimizer.state[p] assigned from outside (see StateStore)
            self.load_state_dict(self.state_dict())
        with torch.no_grad():
            for gi, group in enumerate(self.param_groups):
                self._step_group(gi, group, extra_args)
        return loss

    def _step_group(self, gi: int, group: dict[str, Any], extra_args: dict[str, Any]) -> None:
        """One param group's step, one straight path for the eager and the compiled step:

        1. the gradients, gathered and checked (:meth:`_gradients`);
        2. group -> transform: built from the group's hyperparameters, or the cached one while
           they do not change (:meth:`_transform_for`);
        3. group -> state: state made for parameters with their first gradient, injectable
           hyperparameters written into it (:meth:`_state_in`);
        4. update: the transform's update and the parameter update, eager
           (:meth:`_run_eager`) or as one compiled graph (:meth:`_run_compiled`);
        5. write back: the new state kept, the hyperparameters used shown in the group
           (:meth:`_write_back`).

        Drop-ins keeping torch's per-parameter step counts take a detour through
        :mod:`._per_param` on steps where the counts differ (the same stages, once per count).
        """
        params = group["params"]
        grads, all_grad = self._gradients(gi, params)
        if grads is None:
            return
        slot = self._slot(gi, len(params))
        tx = self._transform_for(gi, group)
        if self._per_param_steps and per_param.needs_split(slot, grads, self._otx_state_key_map):
            self._step_group_per_param(slot, tx, params, grads, group, extra_args)
            return
        state, active = self._state_in(slot, tx, params, grads, group)
        if self._otx_compile is not None and all_grad:
            new_state, flat = self._run_compiled(slot, tx, params, grads, state, extra_args), None
        else:
            new_state, flat = self._run_eager(gi, tx, params, grads, state, all_grad, extra_args)
        self._write_back(slot, group, new_state, active, flat)

    def _gradients(self, gi: int, params: list) -> tuple[list | None, bool]:
        """The group's gradients (``None`` where a parameter has none) and whether all are
        present; ``(None, False)`` when no parameter has one (the group is skipped)."""
        grads: list[torch.Tensor | None] = list(map(_GRAD, params))
        present = [g for g in grads if g is not None]
        all_grad = len(present) == len(grads)
        # Checked over the whole list at once (per step, on thousands of tensors); the loop that
        # names the offending parameter runs only on failure. The shapes are compared pairwise as
        # they are made: a list of a thousand torch.Size objects would trigger the garbage
        # collector at every step, and now and then a full collection (~0.2 s with torch loaded).
        ps = params if all_grad else [p for p, g in zip(params, grads) if g is not None]
        if (
            (not self._accepts_sparse_grads and any(map(_IS_SPARSE, present)))
            or any(map(operator.ne, map(_SHAPE, present), map(_SHAPE, ps)))
            or any(map(operator.ne, map(_DTYPE, present), map(_DTYPE, ps)))
        ):
            self._check_grads(gi, params, grads)
        return (grads if present else None), all_grad

    def _slot(self, gi: int, n: int) -> Slot:
        """The runtime data of param group ``gi`` (made for groups appended by hand)."""
        while len(self._otx_slots) <= gi:  # groups appended to param_groups by hand
            self._otx_slots.append(Slot(len(self.param_groups[len(self._otx_slots)]["params"])))
        slot = self._otx_slots[gi]
        if len(slot.active) != n:
            raise RuntimeError(
                f"TorchOptimizer: param group {gi} changed from {len(slot.active)} to "
                f"{n} parameters; use add_param_group to add parameters"
            )
        return slot

    def _state_in(self, slot: Slot, tx, params, grads, group) -> tuple[Any, list[bool]]:
        """The state the update reads: made for parameters with their first gradient, with the
        group's injectable hyperparameters written into it; and the parameters with state."""
        state, active, _ = layout.ensure_state(slot, tx, params, grads)
        if self._otx_inject:
            state = write_hyperparams(state, group, self._otx_inject)
        return state, active

    def _run_compiled(self, slot: Slot, tx, params, grads, state, extra_args) -> Any:
        """The update as one compiled graph that writes the parameters and the state buffers
        in place; returns the new state."""
        if slot.step_fn is None:
            slot.step_fn = compiled_step_fn(**(self._otx_compile or {}))
        flat_state = self._flat_state(slot, tx, params, state)
        if flat_state is not None and slot.flat.stacked:
            # one (k, *shape) buffer per (device, dtype, shape), the step vmap-ed over each
            flat_grads = slot.flat.load_grads(grads)
            if self._run_stacked(slot, tx, flat_grads, flat_state, extra_args):
                return slot.flat_views
            state = slot.flat_views  # (the compile failed: one tensor per parameter instead)
        elif flat_state is not None:
            # one flat buffer per (device, dtype); .state holds views into it
            flat_grads = slot.flat.load_grads(grads)
            slot.step_fn(tx, flat_grads, flat_state, slot.flat.flat_params, **extra_args)
            return slot.flat_views
        slot.step_fn(tx, grads, state, params, **extra_args)  # one tensor per parameter
        return state

    def _run_stacked(self, slot: Slot, tx, grads, flat_state, extra_args) -> bool:
        """The stacked step (see ``_flat.stacked_update_in_place``); ``False`` where it does not
        compile: then the group runs one tensor per parameter from now on, with a warning."""
        if slot.stack_fn is None:
            slot.stack_fn = compiled_step_fn(
                _flat.stacked_update_in_place, **(self._otx_compile or {})
            )
        plan = _flat.stacked_plan(tx, flat_state, len(slot.flat.buckets))
        if slot.stack_ok:
            slot.stack_fn(
                grads, flat_state, slot.flat.flat_params, plan, slot.stack_barrier, **extra_args
            )
            return True
        # First call: compile errors (raised before anything runs) fall back, first to the
        # stacked step with an opaque write of the state (inductor bug #188228), then to
        # one tensor per parameter.
        from torch._dynamo.exc import TorchDynamoException

        errors = []
        for barrier in (False, True):
            try:
                slot.stack_fn(grads, flat_state, slot.flat.flat_params, plan, barrier, **extra_args)
            except TorchDynamoException as e:
                errors.append(f"{type(e).__name__}: {' '.join(str(e).split())[:300]}")
                continue
            slot.stack_ok, slot.stack_barrier = True, barrier
            return True
        slot.no_stack = True
        warnings.warn(
            f"{type(self).__name__}: the compiled step on stacked buffers failed to compile "
            f"({errors[-1]}); this param group compiles one tensor per parameter instead",
            RuntimeWarning,
            stacklevel=4,
        )
        return False

    def _run_eager(self, gi: int, tx, params, grads, state, all_grad, extra_args):
        """The update, eagerly: ``tx.update`` on the donated state, then the updates added to
        the parameters in place. Returns the new state and its flat leaves."""
        # The adapter owns the state and never reads the old one again: donate its buffers, so
        # moments are updated in place (torch.optim's memory traffic, no second copy of the state).
        # Only to a transformation marked donation-safe (all of the library's are): a custom one
        # that reads its old state twice always gets an intact state.
        # And a final scale (the learning rate) may be left to the parameter update below, which
        # then adds ``alpha * updates`` (torch.optim's ``param.add_(buf, alpha=-lr)``).
        deferred = None
        with contextlib.ExitStack() as stack:
            if is_donation_safe(tx):
                stack.enter_context(tree.donate(state, exclude=(grads, params)))
                if _may_defer_scale(tx):
                    deferred = stack.enter_context(tree._deferred_scale(grads, params))
            updates, new_state = tx.update(grads, state, params, **extra_args)
        alpha = 1 if deferred is None or deferred.factor is None else deferred.factor
        decay = None if deferred is None else deferred.decay
        quotient = None if deferred is None else deferred.quotient

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
        self._apply_updates(params, updates, all_grad, alpha, decay, quotient)
        return new_state, (new_leaves, spec)

    @staticmethod
    def _apply_updates(
        params: list,
        updates,
        all_grad: bool = False,
        alpha: Any = 1,
        decay: Any = None,
        quotient: dict | None = None,
    ) -> None:
        """``param += alpha * update`` in place, one multi-tensor add (``None`` updates skip
        their parameter; an update of another floating dtype is cast to the parameter's). With
        a deferred weight decay ``d``: ``param += alpha * (update + d * param)``, computed as
        ``param *= 1 + alpha * d`` first (torch's AdamW). With a deferred quotient (``{id(den):
        numerator}``, see ``tree._deferred_scale``) an update that is such a denominator adds
        ``alpha * numerator / den`` (one ``addcdiv_``, torch's Adam)."""
        if all_grad and not tree._has_none(updates):
            ps, us = params, updates
        else:
            ps = [p for p, u in zip(params, updates) if u is not None]
            us = [u for u in updates if u is not None]
        if not ps:
            return
        if decay is not None and decay != 0:
            tree._mul_into(list(ps), 1 + alpha * decay)
        if quotient:
            nums = [quotient.get(id(u)) for u in us]
            if tree._has_none(nums) or not tree._same_dtypes(ps, us):  # (not all deferred)
                us = [u if x is None else torch.div(x, u, out=u) for x, u in zip(nums, us)]
            else:
                tree._addcdiv_into(list(ps), cast("list[torch.Tensor]", nums), list(us), alpha)
                return
        tree._add_into(ps, list(us), alpha)

    def _write_back(self, slot: Slot, group, new_state, active, flat=None) -> None:
        """Keeps the new state (mirrored into ``.state`` when that is read) and shows the
        hyperparameters the update used (scheduled ones included) in the group."""
        slot.state = new_state
        slot.active = active
        if self._otx_inject:
            read_hyperparams(new_state, group, self._otx_inject)
        slot.leaves, slot.spec = flat if flat is not None else tree.flatten(new_state)

    def _flat_state(self, slot: Slot, tx, params, state) -> Any:
        """The state over flat buffers for a compiled element-wise step (see ``_flat``), or
        ``None`` where the group runs one tensor per parameter."""
        if self._otx_inject or not _flat.supported(params):
            return None
        if is_elementwise(tx):
            stacked = False
        elif not slot.no_stack and _flat.stacked_plan(tx) is not None:
            stacked = True  # leafwise (and element-wise) members
        else:
            return None
        if not _flat.chosen(self._otx_flat, params):
            return None
        if slot.flat is None or slot.flat.stacked != stacked or not slot.flat.holds(params):
            slot.flat, slot.flat_views = _flat.FlatGroup(params, stacked), None
        if slot.flat_views is not state:  # new, loaded, or replaced by an eager step
            try:
                flat_state = slot.flat.to_flat(state)
                views = slot.flat.to_params(flat_state)
            except _flat.NotFlat:
                return None
            slot.flat_state, slot.flat_views = flat_state, views
        return slot.flat_state

    @torch.no_grad()
    def _allocate_state(self) -> None:
        """Allocates the state of every parameter now, without a step (for drop-ins whose
        torch.optim original creates its state at construction, e.g. ``Adagrad``)."""
        for gi, group in enumerate(self.param_groups):
            params = group["params"]
            slot = self._slot(gi, len(params))
            state, active, _ = layout.ensure_state(
                slot, self._transform_for(gi, group), params, params
            )
            slot.state, slot.active = state, active
            slot.leaves, slot.spec = tree.flatten(state)

    def _step_group_per_param(self, slot, tx, params, grads, group, extra_args) -> None:
        """A step with per-parameter group-wide values (see :mod:`._per_param`)."""

        def prepare(state):
            return write_hyperparams(state, group, self._otx_inject) if self._otx_inject else state

        updates, new_state, active, leaves, spec = per_param.split_step(
            slot, tx, params, grads, self._otx_state_key_map, prepare, extra_args
        )
        self._apply_updates(params, updates)
        self._write_back(slot, group, new_state, active, (leaves, spec))

    # ----------------------------------------------------------------------------------------
    # optimizer.state mirror, state_dict / load_state_dict (see _state_layout)
    # ----------------------------------------------------------------------------------------

    @property
    def state(self) -> defaultdict[Any, dict[str, Any]]:  # type: ignore[override]
        """Per-parameter state dicts (torch's ``optimizer.state``), brought up to date on read."""
        for slot, group in zip(self._otx_slots, self.param_groups):
            layout.flush_mirror(
                slot,
                group["params"],
                self._otx_state,
                self._otx_state_key_map,
                self._hidden_state_keys,
            )
        return self._otx_state

    @state.setter
    def state(self, value: defaultdict[Any, dict[str, Any]]) -> None:
        # torch.optim.Optimizer.__init__ assigns an empty defaultdict: not a state to load
        self._otx_state = layout.StateStore(value)
        self._otx_state.written = bool(value)

    @torch._disable_dynamo
    def state_dict(self) -> dict[str, Any]:
        """The optimizer state in torch's layout (see the class docstring).

        Group-wide 0-d state (step counts) is copied into each parameter's entry, so that
        loading the dict into a ``torch.optim`` optimizer that updates ``step`` in place works.
        State-dict pre and post hooks run as in torch.
        """
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)
        param_groups, param_mappings = layout.pack_param_groups(self.param_groups)
        state = self.state  # brings the per-parameter dicts up to date (and the naming plans)
        packed_state = layout.pack_state(state, self.param_groups, self._otx_slots, param_mappings)
        state_dict = {"state": packed_state, "param_groups": param_groups}
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            hook_result = post_hook(self, state_dict)
            if hook_result is not None:
                state_dict = hook_result
        return _format.stamp(state_dict) if self._format_stamp else state_dict

    @torch._disable_dynamo
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Loads a state made by :meth:`state_dict` (of an optimizer with the same transform).

        The functional state is rebuilt from a fresh ``init`` of the group's transform (built
        from the loaded hyperparameters) and filled with the loaded values, cast to the dtype
        and device of the fresh state. Raises ``ValueError`` naming the problem (different
        number of groups or parameters, missing or unexpected keys, shape mismatch) and leaves
        the optimizer unchanged. Load-state-dict pre and post hooks run as in torch.
        """
        state_dict = _format.upgrade(state_dict)  # a copy, in the current format, unstamped
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            hook_result = pre_hook(self, state_dict)
            if hook_result is not None:
                state_dict = hook_result
        groups = self.param_groups
        saved_groups, saved_state = layout.check_state_dict(state_dict, groups)

        new_groups, new_slots = [], []
        for gi, (group, saved) in enumerate(zip(groups, saved_groups)):
            merged = {k: v for k, v in group.items() if k != "params"}
            merged.update({k: v for k, v in saved.items() if k not in ("params", "param_names")})
            merged["params"] = group["params"]
            if "param_names" in saved:
                merged["param_names"] = saved["param_names"]
            merged = type(group)(merged) if isinstance(group, ParamGroup) else merged
            if self._lr_is_key():
                self._normalize_lr(merged, "load_state_dict param group")
            merged = self._normalize_group(merged)
            params = group["params"]
            entries = layout.saved_entries(saved_state, saved["params"])
            slot = Slot(len(params))
            if gi < len(self._otx_slots):  # keep the compiled step and the flat buffers
                old = self._otx_slots[gi]
                slot.step_fn, slot.flat = old.step_fn, old.flat
                slot.stack_fn, slot.stack_ok = old.stack_fn, old.stack_ok
                slot.stack_barrier, slot.no_stack = old.stack_barrier, old.no_stack
            new_slots.append(slot)
            new_groups.append(merged)
            if self._otx_factory is None:
                tx = self._otx_tx
                assert tx is not None
            else:
                hp = self._group_hyperparams(merged)
                tx = self._build(hp)
                slot.tx_key, slot.tx, slot.tx_hp = cache_key(hp), tx, hp
            if entries:
                layout.load_group(
                    gi,
                    slot,
                    tx,
                    params,
                    entries,
                    saved["params"],
                    self._otx_state_key_map,
                    self._adapt_entry,
                    self._per_param_steps,
                )

        self.param_groups = new_groups
        self._otx_slots = new_slots
        self._otx_state = layout.StateStore()
        for slot in self._otx_slots:
            if slot.state is not None:
                slot.leaves, slot.spec = tree.flatten(slot.state)
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

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
        # The cached transforms and compiled steps are closures (not picklable): rebuilt.
        keep = self._otx_factory is None
        out["_otx_slots"] = [slot.without_transform(keep) for slot in self._otx_slots]
        return out

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        store = state.pop("state", None)
        super().__setstate__(state)
        self._otx_state = layout.StateStore(store or ())
