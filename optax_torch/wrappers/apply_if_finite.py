"""apply_if_finite: skip updates with non-finite values, up to a number of consecutive failures."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from optax_torch import numerics, tree
from optax_torch._validate import check_non_negative
from optax_torch.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    with_extra_args_support,
)

__all__ = ["ApplyIfFiniteState", "apply_if_finite"]


class ApplyIfFiniteState(NamedTuple):
    """State of :func:`apply_if_finite`.

    Attributes:
      notfinite_count: consecutive updates that held an inf or a NaN (0-d int32); reset to 0 by
        a finite update.
      last_finite: whether the last update was finite (0-d bool).
      total_notfinite: updates that held an inf or a NaN since ``init`` (0-d int32), never reset.
      inner_state: the state of the wrapped transformation.
    """

    notfinite_count: Any
    last_finite: Any
    total_notfinite: Any
    inner_state: Any


def apply_if_finite(
    inner: GradientTransformation, max_consecutive_errors: int
) -> GradientTransformationExtraArgs:
    r"""Wraps ``inner`` so that updates holding an inf or a NaN are skipped.

    When the incoming updates hold a non-finite value, the wrapped transformation's state is
    left unchanged and zero updates are returned, unless this is the
    ``max_consecutive_errors + 1``-th non-finite update in a row: then the wrapper gives up and
    applies it. With :math:`c` the consecutive count,

    .. math::
        c_t = \begin{cases} 0 & g_t \text{ finite} \\ c_{t-1} + 1 & \text{otherwise}\end{cases},
        \qquad (u_t, s_t) = \begin{cases} \mathrm{inner}(g_t, s_{t-1})
            & g_t \text{ finite or } c_t > \texttt{max\_consecutive\_errors} \\
            (0, s_{t-1}) & \text{otherwise} \end{cases}

    Branch-free (the wrapped transformation runs on every step and its result is selected with
    ``torch.where``), so it compiles; the skipped state is restored exactly.

    Args:
      inner: the transformation to protect.
      max_consecutive_errors: how many non-finite updates in a row are skipped before giving
        up and applying them (``>= 0``).

    Example::

        >>> opt = otx.apply_if_finite(otx.adam(1e-3), max_consecutive_errors=5)
        >>> state = opt.init(params)
        >>> updates, state = opt.update(grads, state, params)  # zeros if grads hold a NaN
    """
    check_non_negative("max_consecutive_errors", max_consecutive_errors)
    inner = with_extra_args_support(inner)

    def init_fn(params):
        return ApplyIfFiniteState(
            notfinite_count=numerics.zero_count(),
            last_finite=torch.tensor(True),
            total_notfinite=numerics.zero_count(),
            inner_state=inner.init(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        isfinite = tree.all_finite(updates)
        notfinite_count = torch.where(
            isfinite,
            torch.zeros_like(state.notfinite_count),
            numerics.safe_increment(state.notfinite_count),
        )
        accept = torch.logical_or(isfinite, notfinite_count > max_consecutive_errors)
        new_updates, new_inner = inner.update(updates, state.inner_state, params, **extra_args)
        new_updates = tree.map(lambda u: torch.where(accept, u, torch.zeros_like(u)), new_updates)
        new_inner = tree.map(
            lambda n, o: (
                torch.where(accept, n, o).to(o.dtype)
                if isinstance(n, torch.Tensor) and isinstance(o, torch.Tensor)
                else n
            ),
            new_inner,
            state.inner_state,
        )
        total_notfinite = torch.where(
            isfinite, state.total_notfinite, numerics.safe_increment(state.total_notfinite)
        )
        return new_updates, ApplyIfFiniteState(
            notfinite_count=notfinite_count,
            last_finite=isfinite,
            total_notfinite=total_notfinite,
            inner_state=new_inner,
        )

    return GradientTransformationExtraArgs(init_fn, update_fn)
