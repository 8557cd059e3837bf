"""Conditional transformations: apply an inner transformation only at the steps a function picks.

:func:`conditionally_transform` passes the updates through unchanged at the other steps,
:func:`conditionally_mask` zeroes them; both keep the inner state unchanged there.
(``apply_if_finite`` and the ``skip_*`` functions live in :mod:`optax_torch.wrappers`.)
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import torch

from optax_torch import numerics, tree
from optax_torch.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    OptState,
    with_extra_args_support,
)

__all__ = [
    "ConditionFn",
    "ConditionallyMaskState",
    "ConditionallyTransformState",
    "conditionally_mask",
    "conditionally_transform",
]


class ConditionFn(Protocol):
    """``should_transform_fn(step, **extra_args) -> bool``: whether to apply the inner transform.

    ``step`` is a 0-d int32 tensor (the number of earlier ``update`` calls); the result is a 0-d
    bool tensor (or a Python bool). Write it with tensor ops (e.g. ``step % 4 == 0``), not
    Python branches on ``step``'s value, so that it compiles.
    """

    def __call__(self, step: torch.Tensor, **extra_args: Any) -> torch.Tensor | bool: ...


def _select(condition: torch.Tensor, if_true: Any, if_false: Any) -> Any:
    """Leafwise ``torch.where(condition, x, y)`` over two trees of the same structure (a leaf the
    inner transformation passed through unchanged, or a non-tensor leaf, is kept as is)."""

    def pick(x: Any, y: Any) -> Any:
        if x is y or not isinstance(x, torch.Tensor):
            return x
        return torch.where(condition, x, y)

    return tree.map(pick, if_true, if_false)


def _condition(should_transform_fn: ConditionFn, step: torch.Tensor, kwargs: dict) -> torch.Tensor:
    return torch.as_tensor(should_transform_fn(step, **kwargs), dtype=torch.bool)


class ConditionallyTransformState(NamedTuple):
    """State of :func:`conditionally_transform`: the inner state and a step counter."""

    inner_state: Any
    step: torch.Tensor  # 0-d int32


def conditionally_transform(
    inner: GradientTransformation,
    should_transform_fn: ConditionFn,
    forward_extra_args: bool = False,
) -> GradientTransformationExtraArgs:
    r"""Applies ``inner`` only at the steps where ``should_transform_fn(step)`` is true.

    .. math::
        (u_k, s_k) = \begin{cases} \mathrm{inner}(g_k, s_{k-1}) & \text{if }
        \mathrm{should\_transform\_fn}(k) \\ (g_k, s_{k-1}) & \text{otherwise} \end{cases}

    where :math:`k` counts earlier calls to ``update`` (from 0). At the other steps the updates
    pass through unchanged; use :func:`conditionally_mask` to zero them instead.

    Traceable: the inner update is computed at every step and the result selected with
    ``torch.where`` (optax's ``lax.cond`` computes one branch only), so a step costs the inner
    update even when it is skipped, and the condition may be a traced tensor.

    Args:
      inner: the inner transformation.
      should_transform_fn: ``step -> bool`` (a 0-d int32 tensor in, a 0-d bool tensor out). With
        ``forward_extra_args``, the extra keyword arguments of ``update`` are also passed to it.
      forward_extra_args: forward the extra arguments of ``update`` to ``should_transform_fn``
        (default ``False``).

    Example (clip only every other step)::

        >>> tx = otx.conditionally_transform(otx.clip(0.1), lambda step: step % 2 == 0)
    """
    inner = with_extra_args_support(inner)

    def init_fn(params):
        return ConditionallyTransformState(
            inner_state=inner.init(params), step=numerics.zero_count()
        )

    def update_fn(updates, state, params=None, **extra_args):
        condition = _condition(
            should_transform_fn, state.step, extra_args if forward_extra_args else {}
        )
        new_updates, new_inner = inner.update(updates, state.inner_state, params, **extra_args)
        return _select(condition, new_updates, updates), ConditionallyTransformState(
            inner_state=_select(condition, new_inner, state.inner_state),
            step=numerics.safe_increment(state.step),
        )

    return GradientTransformationExtraArgs(init_fn, update_fn)


class ConditionallyMaskState(NamedTuple):
    """State of :func:`conditionally_mask`: a step counter and the inner state."""

    step: torch.Tensor  # 0-d int32
    inner_state: OptState


def conditionally_mask(
    inner: GradientTransformation,
    should_transform_fn: ConditionFn,
    forward_extra_args: bool = False,
) -> GradientTransformationExtraArgs:
    r"""Applies ``inner`` only at the steps where ``should_transform_fn(step)`` is true, and
    gives zero updates at the other steps.

    .. math::
        (u_k, s_k) = \begin{cases} \mathrm{inner}(g_k, s_{k-1}) & \text{if }
        \mathrm{should\_transform\_fn}(k) \\ (0, s_{k-1}) & \text{otherwise} \end{cases}

    where :math:`k` counts earlier calls to ``update`` (from 0). Use
    :func:`conditionally_transform` to pass the updates through unchanged instead.

    Traceable: the inner update is computed at every step and the result selected with
    ``torch.where`` (see :func:`conditionally_transform`).

    Args:
      inner: the inner transformation.
      should_transform_fn: ``step -> bool`` (a 0-d int32 tensor in, a 0-d bool tensor out). With
        ``forward_extra_args``, the extra keyword arguments of ``update`` are also passed to it.
      forward_extra_args: forward the extra arguments of ``update`` to ``should_transform_fn``
        (default ``False``).

    Example (a warm-up: no updates for the first 100 steps)::

        >>> tx = otx.conditionally_mask(otx.adam(1e-3), lambda step: step >= 100)
    """
    inner = with_extra_args_support(inner)

    def init_fn(params):
        return ConditionallyMaskState(step=numerics.zero_count(), inner_state=inner.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        condition = _condition(
            should_transform_fn, state.step, extra_args if forward_extra_args else {}
        )
        new_updates, new_inner = inner.update(updates, state.inner_state, params, **extra_args)
        return _select(condition, new_updates, tree.zeros_like(new_updates)), (
            ConditionallyMaskState(
                step=numerics.safe_increment(state.step),
                inner_state=_select(condition, new_inner, state.inner_state),
            )
        )

    return GradientTransformationExtraArgs(init_fn, update_fn)
