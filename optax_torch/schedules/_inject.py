"""Injecting dynamically changing hyperparameters into gradient transformations."""

from __future__ import annotations

import functools
import inspect
import numbers
import warnings
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch

from optax_torch import numerics
from optax_torch.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    OptState,
    donation_safe,
    is_donation_safe,
    with_extra_args_support,
)

__all__ = [
    "InjectHyperparamsState",
    "InjectStatefulHyperparamsState",
    "StatefulSchedule",
    "WrappedSchedule",
    "WrappedScheduleState",
    "inject_hyperparams",
    "inject_stateful_hyperparams",
]


class InjectHyperparamsState(NamedTuple):
    """The state of :func:`inject_hyperparams`: step count, hyperparameters and inner state.

    Attributes:
      count: 0-d ``int32`` CPU tensor, the number of updates done so far (saturating, it never
        overflows). Schedules are evaluated at this count.
      hyperparams: ``{name: tensor}``, the current value of every numeric hyperparameter
        (scheduled ones hold the value used by the latest update, or the initial value after
        ``init``). Replace an unscheduled entry between steps to change the next update.
      inner_state: the state of the inner transformation.
    """

    count: torch.Tensor
    hyperparams: dict[str, Any]
    inner_state: OptState


class InjectStatefulHyperparamsState(NamedTuple):
    """The state of :func:`inject_hyperparams` (as in optax 0.2.8, which returns this type).

    Attributes:
      count: 0-d ``int32`` CPU tensor, the number of updates done so far (saturating).
      hyperparams: ``{name: tensor}``, the current value of every numeric hyperparameter
        (scheduled ones hold the value used by the latest update, or the initial value after
        ``init``). Replace an unscheduled entry between steps to change the next update.
      hyperparams_states: ``{name: schedule state}`` for each scheduled hyperparameter
        (:class:`WrappedScheduleState` for a plain schedule of the step count).
      inner_state: the state of the inner transformation.
    """

    count: torch.Tensor
    hyperparams: dict[str, Any]
    hyperparams_states: dict[str, Any]
    inner_state: OptState


@runtime_checkable
class StatefulSchedule(Protocol):
    """A schedule with a state of its own (optax's ``StatefulSchedule``).

    ``init()`` gives the initial state, ``update(state, **extra_args)`` the next one, and
    ``__call__(state, **extra_args)`` the value; the extra arguments are those given to the
    transformation's ``update`` (e.g. a loss ``value``, for a plateau schedule).
    """

    def init(self) -> Any: ...

    def update(self, state: Any, **extra_args: Any) -> Any: ...

    def __call__(self, state: Any, **extra_args: Any) -> Any: ...


class WrappedScheduleState(NamedTuple):
    """The state of a :class:`WrappedSchedule`: its own step count."""

    count: torch.Tensor


class WrappedSchedule:
    """A plain schedule (a function of the step count) as a :class:`StatefulSchedule`."""

    def __init__(self, schedule_fn: Callable[[torch.Tensor], Any]):
        self.schedule_fn = schedule_fn

    def init(self) -> WrappedScheduleState:
        return WrappedScheduleState(count=numerics.zero_count())

    def update(self, state: WrappedScheduleState, **extra_args: Any) -> WrappedScheduleState:
        del extra_args
        return WrappedScheduleState(count=numerics.safe_increment(state.count))

    def __call__(self, state: WrappedScheduleState, **extra_args: Any) -> Any:
        del extra_args
        return self.schedule_fn(state.count)


def _is_stateful_schedule(value: Any) -> bool:
    return all(callable(getattr(value, name, None)) for name in ("init", "update", "__call__"))


def _never_a_schedule(name: str) -> bool:
    """Parameters whose callables are functions, not schedules (masks, predicates, ...)."""
    return name == "mask" or name.endswith(("_mask", "_fn", "_function"))


def _is_numeric(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, torch.Tensor | numbers.Number):
        return True
    # numpy arrays (without importing numpy).
    return hasattr(value, "__array__") and hasattr(value, "dtype") and hasattr(value, "shape")


def _to_hyperparam(value: Any, dtype: torch.dtype | None) -> Any:
    """A numeric hyperparameter as a tensor.

    Tensors are kept as they are (dtype, device, autograd history). Python / numpy floats become
    0-d CPU tensors of ``dtype`` (float64 by default, an exact copy of a Python float); integers
    become int64 tensors; anything else passes through unchanged.
    """
    if isinstance(value, torch.Tensor) or not _is_numeric(value):
        return value
    if isinstance(value, numbers.Integral):
        return torch.tensor(int(value), dtype=torch.int64)
    if isinstance(value, numbers.Real):
        return torch.tensor(float(value), dtype=dtype or torch.float64)
    tensor = torch.as_tensor(value)  # numpy array or complex number
    if tensor.is_floating_point() and dtype is not None:
        tensor = tensor.to(dtype)
    return tensor


def _schedule_value(value: Any, dtype: torch.dtype | None) -> Any:
    """A schedule's output as a hyperparameter (cast to ``hyperparam_dtype`` if one was given)."""
    if isinstance(value, torch.Tensor):
        if dtype is not None and value.is_floating_point() and value.dtype != dtype:
            value = value.to(dtype)
        return value
    return _to_hyperparam(value, dtype)


def inject_hyperparams(
    inner_factory: Callable[..., GradientTransformation],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: torch.dtype | None = None,
    *,
    schedule_args: str | Iterable[str] | None = None,
) -> Callable[..., GradientTransformationExtraArgs]:
    """Wrapper that injects hyperparameters (constants or schedules) into a transformation's state.

    This wrapper allows you to pass schedules (functions of the step count returning a numeric
    value) instead of constants for hyperparameters, and keeps the value of every numeric
    hyperparameter in the optimizer state as a tensor, where it can be read and changed between
    steps. You may only schedule numeric hyperparameters (boolean flags cannot be scheduled).

    On each ``update``, schedules are evaluated at the current step count, the inner
    transformation is rebuilt by calling ``inner_factory`` with the current hyperparameter values
    (tensors), and its ``update`` is applied. The inner factory must therefore accept tensors for
    the hyperparameters that are not static.

    For example, to use :func:`optax_torch.scale_by_adam` with a linear schedule for ``b1`` and a
    constant ``b2``::

      >>> import torch, optax_torch as otx
      >>> from optax_torch.schedules import inject_hyperparams, linear_schedule
      >>> b1_schedule = linear_schedule(0.1, 0.9, transition_steps=100)
      >>> scheduled_adam = inject_hyperparams(otx.scale_by_adam)(b1=b1_schedule, b2=0.99)

    You may change numeric hyperparameters that were not scheduled through the ``hyperparams``
    dict of the :class:`InjectStatefulHyperparamsState`::

      >>> params = {"w": torch.zeros(3)}
      >>> state = scheduled_adam.init(params)
      >>> updates, state = scheduled_adam.update({"w": torch.ones(3)}, state)
      >>> state.hyperparams["b2"] = torch.tensor(0.95, dtype=torch.float64)
      >>> updates, state = scheduled_adam.update(updates, state)  # uses b2 = 0.95

    Overriding a scheduled hyperparameter has no effect (above, ``b1`` cannot be changed by hand).

    Hyperparameter values (differences from optax):

    * Python floats become 0-d **float64 CPU** tensors (exact copies; ``hyperparam_dtype``
      overrides the dtype), not tensors of the parameters' dtype: 0-d tensors never promote the
      leaves they scale, and the values equal ``torch.optim``'s Python-double arithmetic.
    * Tensors passed by the caller are stored as given (dtype, device and autograd history kept,
      not copied), even when ``hyperparam_dtype`` is set, like strongly typed arrays in optax.
      This allows differentiating an update with respect to a hyperparameter.
    * Python integers become int64 tensors; bools, static args and other values are passed to
      ``inner_factory`` as they are and are not stored in the state.
    * Schedule outputs are stored as returned (float64 tensors for the schedules of this
      package), cast to ``hyperparam_dtype`` when it is given.
    * Which callables are schedules: optax treats every callable argument as a schedule unless
      it is in ``static_args``, so a ``mask`` function would be called with the step count.
      Here callables given for a parameter named ``mask``, ``*_mask``, ``*_fn`` or
      ``*_function`` are passed through as they are, and ``schedule_args`` (an *extension*)
      names the schedules explicitly: when given, every other callable is static.

    The state is an :class:`InjectStatefulHyperparamsState` as in optax 0.2.8:
    ``hyperparams_states`` holds the state of each scheduled hyperparameter; plain schedules are
    wrapped in :class:`WrappedSchedule` (a step count of their own), and a
    :class:`StatefulSchedule` (``init``/``update``/``__call__``) is used as it is, its ``update``
    and ``__call__`` receiving the extra keyword arguments given to ``update``.

    Args:
      inner_factory: a function that returns the inner :class:`GradientTransformation` given
        its hyperparameters.
      static_args: a string or iterable of strings naming parameters of ``inner_factory`` that
        are passed as they are (neither schedules nor tensors). All callables are treated as
        schedules by default, so a hyperparameter that is a non-schedule callable must be listed
        here. Defaults to ``()``.
      hyperparam_dtype: optional dtype override for the float hyperparameters created from
        Python numbers and from schedule outputs. Defaults to ``None`` (float64).
      schedule_args: *extension* (not in optax): a string or iterable of strings naming the
        parameters that are schedules. ``None`` (default): every callable not in
        ``static_args`` and not named like a function (see above) is a schedule.

    Returns:
      A callable that returns a :class:`GradientTransformationExtraArgs`. It accepts the same
      arguments as ``inner_factory`` (positional or keyword), except that schedules may be given
      in place of numeric constants.

    Raises:
      ValueError: if ``static_args`` or ``schedule_args`` names a parameter ``inner_factory``
        does not have, or a parameter is in both.
      TypeError: if the returned callable is given arguments ``inner_factory`` does not accept.
    """
    static_args = {static_args} if isinstance(static_args, str) else set(static_args)
    inner_signature = inspect.signature(inner_factory)
    parameters = inner_signature.parameters
    factory_name = getattr(inner_factory, "__qualname__", repr(inner_factory))

    if not static_args.issubset(parameters):
        raise ValueError(
            "`static_args` must specify a subset of `inner_factory`'s parameters. Given "
            f"`static_args`: {static_args}. `inner_factory` parameters: {set(parameters)}"
        )
    explicit_schedules: set[str] | None = None
    if schedule_args is not None:
        explicit_schedules = (
            {schedule_args} if isinstance(schedule_args, str) else set(schedule_args)
        )
        has_var_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        if not has_var_keyword and not explicit_schedules.issubset(parameters):
            raise ValueError(
                "`schedule_args` must specify a subset of `inner_factory`'s parameters. Given "
                f"`schedule_args`: {explicit_schedules}. `inner_factory` parameters: "
                f"{set(parameters)}"
            )
        if explicit_schedules & static_args:
            raise ValueError(
                f"parameters {explicit_schedules & static_args} are in both `static_args` and "
                "`schedule_args`"
            )

    def is_schedule(name: str, value: Any) -> bool:
        if not callable(value) or isinstance(value, torch.Tensor):
            return False
        if explicit_schedules is not None:
            return name in explicit_schedules
        return not _never_a_schedule(name)

    @functools.wraps(inner_factory)
    def wrapped_transform(*args: Any, **kwargs: Any) -> GradientTransformationExtraArgs:
        try:
            bound = inner_signature.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(
                f"inject_hyperparams({factory_name}): {e}. Accepted arguments: "
                f"{', '.join(parameters)}"
            ) from None
        bound.apply_defaults()

        arguments: dict[str, Any] = {}
        positional_only: list[str] = []
        for name, value in bound.arguments.items():
            kind = parameters[name].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                if value:
                    raise TypeError(
                        f"inject_hyperparams({factory_name}): extra positional arguments "
                        f"(*{name}) are not supported; pass hyperparameters by name"
                    )
            elif kind is inspect.Parameter.VAR_KEYWORD:
                arguments.update(value)  # **kwargs entries are hyperparameters like the others
            else:
                if kind is inspect.Parameter.POSITIONAL_ONLY:
                    positional_only.append(name)
                arguments[name] = value

        sched_hps: dict[str, Any] = {}  # name -> StatefulSchedule
        numeric_hps: dict[str, Any] = {}
        other_hps: dict[str, Any] = {}
        for name, value in arguments.items():
            if name in static_args or isinstance(value, bool):
                other_hps[name] = value
            elif is_schedule(name, value):
                sched_hps[name] = value if _is_stateful_schedule(value) else WrappedSchedule(value)
            elif explicit_schedules is not None and name in explicit_schedules:
                raise TypeError(
                    f"inject_hyperparams({factory_name}): `{name}` is in `schedule_args` but "
                    f"got a {type(value).__name__}, not a schedule"
                )
            elif _is_numeric(value):
                numeric_hps[name] = value
            else:
                other_hps[name] = value

        def build(hparams: dict[str, Any]) -> GradientTransformationExtraArgs:
            values = {**other_hps, **hparams}
            pos = [values.pop(name) for name in positional_only]
            return with_extra_args_support(inner_factory(*pos, **values))

        def init_fn(params):
            count = numerics.zero_count()
            hparams = {k: _to_hyperparam(v, hyperparam_dtype) for k, v in numeric_hps.items()}
            sched_states = {k: f.init() for k, f in sched_hps.items()}
            hparams.update(
                {
                    k: _schedule_value(f(sched_states[k]), hyperparam_dtype)
                    for k, f in sched_hps.items()
                }
            )
            return InjectStatefulHyperparamsState(
                count=count,
                hyperparams=hparams,
                hyperparams_states=sched_states,
                inner_state=build(hparams).init(params),
            )

        def update_fn(updates, state, params=None, **extra_args):
            # A new dict: the caller's state is never modified. Values the caller set by hand
            # (e.g. a Python float) are converted like the initial ones.
            hparams = {k: _to_hyperparam(v, hyperparam_dtype) for k, v in state.hyperparams.items()}
            hparams.update(
                {
                    k: _schedule_value(
                        f(state.hyperparams_states[k], **extra_args), hyperparam_dtype
                    )
                    for k, f in sched_hps.items()
                }
            )
            sched_states = {
                k: f.update(state.hyperparams_states[k], **extra_args) for k, f in sched_hps.items()
            }
            updates, inner_state = build(hparams).update(
                updates, state.inner_state, params, **extra_args
            )
            return updates, InjectStatefulHyperparamsState(
                count=numerics.safe_increment(state.count),
                hyperparams=hparams,
                hyperparams_states=sched_states,
                inner_state=inner_state,
            )

        try:  # donation-safe when the inner transformation is (it reads the hyperparameters once)
            probe_hps = dict(numeric_hps)
            probe_hps.update({k: f(f.init()) for k, f in sched_hps.items()})
            if is_donation_safe(build(probe_hps)):
                donation_safe(update_fn)
        except Exception:  # pragma: no cover - a factory that rejects plain values: stay safe
            pass
        return GradientTransformationExtraArgs(init_fn, update_fn)

    return wrapped_transform


def inject_stateful_hyperparams(
    inner_factory: Callable[..., GradientTransformation],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: torch.dtype | None = None,
) -> Callable[..., GradientTransformationExtraArgs]:
    """Deprecated alias of :func:`inject_hyperparams`, which handles stateful schedules too.

    Kept for optax compatibility (deprecated there since 0.1.9); warns ``DeprecationWarning``.
    """
    warnings.warn(
        "inject_stateful_hyperparams is deprecated, use inject_hyperparams instead",
        DeprecationWarning,
        stacklevel=2,
    )
    return inject_hyperparams(inner_factory, static_args, hyperparam_dtype)
