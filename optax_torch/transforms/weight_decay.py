"""Weight decay added to the updates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from optax_torch import _validate, numerics, tree
from optax_torch.base import (
    _DECAYS_BY_NUMBER,
    EmptyState,
    GradientTransformation,
    ScalarOrSchedule,
    _mark,
    consumes_updates,
    donation_safe,
    elementwise,
    leafwise,
)
from optax_torch.transforms.masking import masked

__all__ = ["AddDecayedWeightsState", "WeightDecaySchedule", "add_decayed_weights"]

AddDecayedWeightsState = EmptyState


class WeightDecaySchedule(NamedTuple):
    """State of :func:`add_decayed_weights` when ``weight_decay`` is a schedule."""

    count: torch.Tensor


def add_decayed_weights(
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Any | Callable[[Any], Any] | None = None,
) -> GradientTransformation:
    r"""Adds ``weight_decay * params`` to the updates: :math:`u \leftarrow u + \lambda\, p`.

    Placed *before* an adaptive scaling this is L2 regularisation (``torch.optim.Adam``'s
    ``weight_decay``); placed *after* it and before the learning rate it is decoupled weight
    decay (AdamW, Loshchilov & Hutter, 2019).

    Args:
      weight_decay: the decay coefficient :math:`\lambda`, or a schedule ``count -> value``.
      mask: a tree of booleans (or a function ``params -> tree``) selecting the parameters to decay;
        ``None`` decays all of them.
    """

    _validate.check_finite("weight_decay", weight_decay)

    def init_fn(params):
        del params
        if callable(weight_decay):
            return WeightDecaySchedule(count=numerics.zero_count())
        return AddDecayedWeightsState()

    @elementwise
    @leafwise
    @consumes_updates
    @donation_safe
    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(
                "add_decayed_weights needs params: call update(updates, state, params)"
            )
        if callable(weight_decay):
            wd = weight_decay(state.count)
            state = WeightDecaySchedule(count=numerics.safe_increment(state.count))
        else:
            wd = weight_decay
        return tree.add_scale(updates, wd, params), state

    tx = GradientTransformation(init_fn, update_fn)
    if mask is not None:
        return masked(tx, mask)
    if isinstance(weight_decay, int | float) and not isinstance(weight_decay, bool):
        _mark(update_fn, _DECAYS_BY_NUMBER)  # (always deferred when armed: tree.add_scale)
    return tx
