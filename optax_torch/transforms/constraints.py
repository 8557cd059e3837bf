"""Constraints: keep_params_nonnegative, zero_nans."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from optax_torch import _validate, tree
from optax_torch.base import EmptyState, GradientTransformation, donation_safe, init_empty_state

__all__ = [
    "NonNegativeParamsState",
    "ZeroNansState",
    "keep_params_nonnegative",
    "zero_nans",
]

NonNegativeParamsState = EmptyState
"""State of :func:`keep_params_nonnegative` (an alias of :class:`~optax_torch.EmptyState`)."""

_NO_PARAMS_MSG = "You are using a transformation that requires the current value of parameters"


def keep_params_nonnegative() -> GradientTransformation:
    r"""Modifies the updates so that the parameters stay non-negative (:math:`\geq 0`).

    .. math::
        u_k \leftarrow \begin{cases} -p_k & \text{if } p_k + u_k < 0 \\ u_k & \text{otherwise}
        \end{cases}

    so a step that would cross zero lands on zero. Put it last in a chain. The parameters are
    expected to be non-negative already; a negative parameter is moved to 0 by its next update.
    Complex parameters have no sign: ``init`` refuses them (``ValueError`` naming the leaf).

    Example::

        >>> tx = otx.chain(otx.sgd(0.1), otx.keep_params_nonnegative())
    """

    @donation_safe  # no state to read
    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(_NO_PARAMS_MSG)

        def clamp(u: torch.Tensor, p: torch.Tensor | None) -> torch.Tensor | None:
            if p is None:
                return None
            return torch.where((p + u) < 0.0, -p, u)

        return tree.map(clamp, updates, params), state

    def init_fn(params):
        _validate.check_real_params(params, "keep_params_nonnegative")
        return init_empty_state(params)

    return GradientTransformation(init_fn, update_fn)


class ZeroNansState(NamedTuple):
    """State of :func:`zero_nans`: per parameter, a 0-d bool tensor, ``True`` iff a NaN was found
    (and zeroed) in that update at the last call to ``update``."""

    found_nan: Any


def zero_nans() -> GradientTransformation:
    r"""Replaces NaNs in the updates with 0 (infinities are left alone).

    The state records, per parameter, whether a NaN was found at the last ``update``; the
    transformation itself never reads it, it is there for the user to inspect.

    Example::

        >>> tx = otx.chain(otx.zero_nans(), otx.adam(1e-3))
        >>> otx.tree.get(state, "found_nan")
    """

    def init_fn(params):
        return ZeroNansState(
            found_nan=tree.map(lambda p: torch.zeros((), dtype=torch.bool, device=p.device), params)
        )

    @donation_safe  # the old state is never read
    def update_fn(updates, state, params=None):
        del params, state
        found_nan = tree.map(lambda u: torch.isnan(u).any(), updates)
        updates = tree.map(lambda u: torch.where(torch.isnan(u), torch.zeros_like(u), u), updates)
        return updates, ZeroNansState(found_nan=found_nan)

    return GradientTransformation(init_fn, update_fn)
