"""Monitoring: count_steps, snapshot, monitor, measure_with_ema.

Measurements of the updates at some point of a chain, stored in the state (read them with
``optax_torch.tree.get(state, name)``); the updates pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from optax_torch import _validate, numerics, tree
from optax_torch.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    OptState,
    Params,
    Updates,
    donation_safe,
    elementwise,
    is_donation_safe,
    leafwise,
    stateless,
    with_extra_args_support,
)
from optax_torch.combine import chain
from optax_torch.transforms.momentum import ema

__all__ = [
    "CountState",
    "MonitorState",
    "SnapshotState",
    "count_steps",
    "measure_with_ema",
    "monitor",
    "snapshot",
]

Measure = Callable[[Updates], Any]


class SnapshotState(NamedTuple):
    """State of :func:`snapshot`: ``{measure_name: measurement}``."""

    measurement: dict[str, Any]


def snapshot(measure_name: str, measure: Measure) -> GradientTransformation:
    """Stores ``measure(updates)`` in the state under ``measure_name``; updates pass through.

    Useful to look at intermediate updates in a chain. At ``init`` the measurement is
    ``measure(params)``.

    Args:
      measure_name: the name to store the measurement under; read it back with
        ``optax_torch.tree.get(state, measure_name)``.
      measure: ``updates -> measurement`` (a tensor or a tree of tensors). In a chain it sees the
        updates as transformed by the earlier members.

    Example::

        >>> tx = otx.chain(
        ...     otx.sgd(0.1, momentum=0.9),
        ...     otx.snapshot("norm_before_clip", otx.tree.norm),
        ...     otx.clip_by_global_norm(0.05),
        ... )
        >>> updates, state = tx.update(grads, state)
        >>> otx.tree.get(state, "norm_before_clip")
    """

    def init_fn(params):
        return SnapshotState({measure_name: measure(params)})

    @donation_safe  # the old state is never read
    def update_fn(updates, state, params=None):
        del params, state
        return updates, SnapshotState({measure_name: measure(updates)})

    return GradientTransformation(init_fn, update_fn)


class MonitorState(NamedTuple):
    """State of :func:`monitor`: the last measurements by name, and each measure's own state."""

    measurements: dict[str, Any]
    measure_states: tuple[OptState, ...]


def monitor(
    measures: dict[str, GradientTransformation | Measure],
) -> GradientTransformationExtraArgs:
    """Stores measurements of the updates, stateful ones included (e.g. moving averages).

    Extends :func:`snapshot`. Each measure is either a function ``updates -> measurement`` or a
    transformation whose *output* is the measurement (e.g. :func:`measure_with_ema`); the
    updates pass through unchanged. As in optax, ``measurements`` is an empty dict after
    ``init`` and holds one entry per measure after the first ``update``.

    Args:
      measures: name -> measure.

    Example::

        >>> tx = otx.chain(
        ...     otx.sgd(0.1, momentum=0.9),
        ...     otx.monitor({
        ...         "norm_before_clip": otx.tree.norm,
        ...         "is_clipped_ema": otx.measure_with_ema(
        ...             lambda u: otx.tree.norm(u) > 1.0, decay=0.9),
        ...     }),
        ...     otx.clip_by_global_norm(1.0),
        ... )
        >>> otx.tree.get(state, "is_clipped_ema")
    """
    transforms: dict[str, GradientTransformationExtraArgs] = {}
    for name, measure in measures.items():
        if isinstance(measure, GradientTransformation):
            transforms[name] = with_extra_args_support(measure)
        else:
            transforms[name] = with_extra_args_support(
                stateless(lambda u, _, m=measure: m(u))  # type: ignore[misc]
            )
    names = tuple(transforms)

    def init_fn(params: Params) -> MonitorState:
        return MonitorState({}, tuple(transforms[name].init(params) for name in names))

    def update_fn(updates, state, params=None, **extra_args):
        measurements = {}
        new_states = []
        for name, old in zip(names, state.measure_states):
            measurements[name], new = transforms[name].update(updates, old, params, **extra_args)
            new_states.append(new)
        return updates, MonitorState(measurements, tuple(new_states))

    if all(is_donation_safe(t) for t in transforms.values()):
        donation_safe(update_fn)
    return GradientTransformationExtraArgs(init_fn, update_fn)


def _as_floating(x: Any, dtype: torch.dtype | None) -> Any:
    """A boolean or integer measurement (e.g. ``norm > threshold``) as ``dtype`` (``None``: the
    default float dtype)."""

    def to_float(v: Any) -> torch.Tensor:
        v = torch.as_tensor(v)
        if v.is_floating_point() or v.is_complex():
            return v
        return v.to(dtype or torch.get_default_dtype())

    return tree.map(to_float, x)


def measure_with_ema(
    measure: Measure,
    decay: float | torch.Tensor,
    debias: bool = True,
    accumulator_dtype: torch.dtype | None = None,
) -> GradientTransformationExtraArgs:
    r"""Records an exponential moving average of a measurement of the updates.

    .. math::
        e_k = \text{decay}\, e_{k-1} + (1 - \text{decay})\, \text{measure}(u_k),\qquad
        \text{output}_k = e_k / (1 - \text{decay}^k) \;\; (\text{with } \texttt{debias})

    ``chain(stateless(measure), ema(decay, debias, accumulator_dtype))`` whose EMA state is shaped
    like ``measure(params)``. Its *output* is the averaged measurement (not the updates): use it as
    a measure of :func:`monitor`. A boolean or integer measurement is averaged in
    ``accumulator_dtype``, or else in the default float dtype (``torch.get_default_dtype()``;
    optax uses JAX's default float dtype, and its state holds a bool after ``init`` and a float
    afterwards).

    Args:
      measure: ``updates -> measurement``.
      decay: the decay rate of the average, in [0, 1].
      debias: divide by ``1 - decay**k`` (default ``True``).
      accumulator_dtype: optional dtype of the average.

    Example::

        >>> m = otx.monitor({"norm_ema": otx.measure_with_ema(otx.tree.norm, decay=0.9)})
    """
    _validate.check_decay("decay", decay, allow_one=True)

    def measure_float(x):
        return _as_floating(measure(x), accumulator_dtype)

    base_ema = ema(decay, debias, accumulator_dtype)
    measurement_ema = base_ema._replace(init=lambda params: base_ema.init(measure_float(params)))
    return chain(stateless(lambda updates, _: measure_float(updates)), measurement_ema)


class CountState(NamedTuple):
    """State of :func:`count_steps`."""

    count: torch.Tensor


def count_steps() -> GradientTransformation:
    """Counts the steps taken; the updates pass through unchanged.

    For chains whose state should carry a step count that no transformation uses (e.g. the
    ``step`` that ``torch.optim.RMSprop`` and ``Adadelta`` keep per parameter). The count is an
    int32 0-d tensor saturating at the int32 maximum, like optax's counts.

    Example::

        >>> tx = chain(count_steps(), scale_by_rms(), scale_by_learning_rate(1e-2))
        >>> state = tx.init(params)   # state[0].count == 0
    """

    def init_fn(params):
        del params
        return CountState(count=numerics.zero_count())

    @elementwise
    @leafwise
    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        return updates, CountState(count=numerics.safe_increment(state.count))

    return GradientTransformation(init_fn, update_fn)
