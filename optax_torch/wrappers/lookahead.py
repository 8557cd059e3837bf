"""Lookahead: slow and fast weights."""

from __future__ import annotations

import logging
from typing import NamedTuple

import torch

from optax_torch import tree
from optax_torch._validate import check_finite, check_positive_int
from optax_torch.base import (
    GradientTransformation,
    OptState,
    Params,
    Updates,
    donation_safe,
    is_donation_safe,
)

__all__ = ["LookaheadParams", "LookaheadState", "lookahead"]

_log = logging.getLogger(__name__)


class LookaheadState(NamedTuple):
    """State of :func:`lookahead`.

    Attributes:
      fast_state: the state of the fast optimizer.
      steps_since_sync: fast steps taken since the slow and fast parameters were last
        synchronised (0-d int32).
    """

    fast_state: OptState
    steps_since_sync: torch.Tensor


class LookaheadParams(NamedTuple):
    """The pair of parameters :func:`lookahead` optimises.

    Compute gradients with the fast parameters (``params.fast``); evaluate and deploy the slow
    ones (``params.slow``), which generalise better.

    Attributes:
      fast: the fast parameters (use these for gradient computation).
      slow: the slow parameters (use these for inference).

    Reference: Zhang et al., 2019, https://arxiv.org/abs/1907.08610
    """

    fast: Params
    slow: Params

    @classmethod
    def init_synced(cls, params: Params) -> LookaheadParams:
        """A synchronised pair: ``fast`` and ``slow`` are both ``params``."""
        return cls(slow=params, fast=params)


def lookahead(
    fast_optimizer: GradientTransformation,
    sync_period: int | torch.Tensor,
    slow_step_size: float | torch.Tensor,
    reset_state: bool = False,
) -> GradientTransformation:
    r"""Lookahead: "k steps forward, 1 step back".

    The fast optimizer updates the fast weights :math:`\phi` every step; every
    ``sync_period`` (:math:`k`) steps the slow weights :math:`\theta` move a fraction
    :math:`\alpha` (``slow_step_size``) of the way towards the fast weights, and the fast
    weights restart from the new slow weights:

    .. math::
        \phi_{t+1} = \phi_t + u_t \quad\text{(fast step, } u_t \text{ from the fast optimizer)}

        \text{every } k \text{ steps:}\quad
        \theta \leftarrow \theta + \alpha\,(\phi_{t+1} - \theta), \qquad
        \phi_{t+1} \leftarrow \theta

    Written as one update of the pair :class:`LookaheadParams` with :math:`s_t = 1` on
    synchronising steps and :math:`0` otherwise, and :math:`d_t = \phi_t + u_t - \theta_t`:

    .. math::
        \Delta\theta_t = \alpha\, s_t\, d_t, \qquad
        \Delta\phi_t = u_t - s_t\,(1 - \alpha)\, d_t

    so ``apply_updates(params, updates)`` performs both loops. The updates are a
    :class:`LookaheadParams` and must be applied unmodified, otherwise the slow and fast weights
    drift apart from the algorithm. Branch-free: runs eagerly and compiled alike.

    Args:
      fast_optimizer: the optimizer of the inner loop (e.g. ``adam(1e-3)``); it receives the
        gradients and ``params.fast``.
      sync_period: :math:`k`, the number of fast steps between synchronisations (``>= 1``).
      slow_step_size: :math:`\alpha`, the step size of the slow weights (``0.5`` in the paper).
      reset_state: reinitialise the fast optimizer's state (``fast_optimizer.init`` of the
        fast parameters) after each synchronisation.

    Returns:
      A :class:`GradientTransformation` whose ``init`` takes a :class:`LookaheadParams` (plain
      params are accepted too, as the fast params, with a logged warning) and whose ``update``
      takes the gradients with respect to ``params.fast`` and the :class:`LookaheadParams`, and
      returns :class:`LookaheadParams` updates.

    Reference: Zhang et al., *Lookahead Optimizer: k steps forward, 1 step back*, 2019,
    https://arxiv.org/abs/1907.08610

    Example::

        >>> opt = otx.lookahead(otx.adam(1e-3), sync_period=6, slow_step_size=0.5)
        >>> params = otx.LookaheadParams.init_synced({"w": torch.ones(3)})
        >>> state = opt.init(params)
        >>> grads = {"w": 2 * params.fast["w"]}  # gradients at the fast weights
        >>> updates, state = opt.update(grads, state, params)
        >>> params = otx.apply_updates(params, updates)  # evaluate with params.slow
    """
    if not isinstance(sync_period, torch.Tensor):  # a 0-d tensor is not checked
        check_positive_int("sync_period", sync_period)
    check_finite("slow_step_size", slow_step_size)

    def init_fn(params):
        fast_params = getattr(params, "fast", None)
        if fast_params is None:
            _log.warning(
                "`params` has no attribute `fast`. Continuing by assuming that only fast "
                "parameters were passed to lookahead init."
            )
            fast_params = params
        return LookaheadState(
            fast_state=fast_optimizer.init(fast_params),
            steps_since_sync=torch.zeros((), dtype=torch.int32),
        )

    def update_fn(updates, state, params=None):
        if params is None or not (hasattr(params, "fast") and hasattr(params, "slow")):
            raise TypeError(
                "lookahead's update needs the LookaheadParams (fast and slow weights): "
                f"update(updates, state, LookaheadParams(...)); got params of type {type(params)}"
            )
        updates, fast_state = fast_optimizer.update(updates, state.fast_state, params.fast)
        sync_next = state.steps_since_sync == sync_period - 1
        updates = _lookahead_update(updates, sync_next, params, slow_step_size)
        if reset_state:
            initial_state = fast_optimizer.init(params.fast)
            fast_state = tree.map(
                lambda current, init: torch.where(sync_next, init, current).to(current.dtype),
                fast_state,
                initial_state,
            )
        steps_since_sync = (state.steps_since_sync + 1) % sync_period
        return updates, LookaheadState(fast_state, steps_since_sync.to(torch.int32))

    if is_donation_safe(fast_optimizer):  # only the fast optimizer reads the old fast state
        donation_safe(update_fn)
    return GradientTransformation(init_fn, update_fn)


def _lookahead_update(
    updates: Updates,
    sync_next: torch.Tensor,
    params: LookaheadParams,
    slow_step_size: float | torch.Tensor,
) -> LookaheadParams:
    """The :class:`LookaheadParams` updates of one step (see :func:`lookahead` for the math)."""
    sync = sync_next.to(torch.float64)
    last_difference = tree.sub(tree.add(params.fast, updates), params.slow)
    slow_updates = tree.scale(slow_step_size * sync, last_difference)
    fast_updates = tree.add_scale(updates, -(sync * (1 - slow_step_size)), last_difference)
    return LookaheadParams(fast=fast_updates, slow=slow_updates)
