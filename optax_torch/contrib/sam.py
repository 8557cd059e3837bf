"""SAM (Sharpness-Aware Minimization) and the gradient normalization it uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from optax_torch import tree
from optax_torch.base import (
    EmptyState,
    GradientTransformation,
    GradientTransformationExtraArgs,
    OptState,
    Params,
    Updates,
    donation_safe,
)
from optax_torch.update import apply_updates

__all__ = ["NormalizeState", "SAMState", "normalize", "sam"]

NormalizeState = EmptyState
"""State of :func:`normalize` (optax's ``NormalizeState`` is ``EmptyState`` too)."""


def normalize() -> GradientTransformation:
    r"""Normalizes the updates by their global L2 norm: :math:`u = g / \|g\|_2`.

    The norm is over all leaves together. Used by :func:`sam` for the adversarial step.

    Example::

        >>> adv_opt = otx.chain(otx.contrib.normalize(), otx.sgd(0.05))
    """

    @donation_safe  # stateless
    def update_fn(updates, state, params=None):
        del params
        return tree.scale(1 / tree.norm(updates), updates), state

    return GradientTransformation(lambda params: NormalizeState(), update_fn)


class SAMState(NamedTuple):
    """State of :func:`sam`.

    Attributes:
      steps_since_sync: adversarial steps taken since the last outer update (0-d int32).
      opt_state: state of the outer optimizer.
      adv_state: state of the inner adversarial optimizer.
      cache: the outer parameters (``None`` in opaque mode).
    """

    steps_since_sync: torch.Tensor
    opt_state: OptState
    adv_state: OptState
    cache: Params | None


def _pick(cond: torch.Tensor, if_true: Any, if_false: Any) -> Any:
    return tree.where(cond, if_true, if_false)


def sam(
    optimizer: GradientTransformation,
    adv_optimizer: GradientTransformation,
    sync_period: int = 2,
    reset_state: bool = True,
    opaque_mode: bool = False,
    batch_axis_name: str | None = None,
) -> GradientTransformationExtraArgs:
    r"""SAM: Sharpness-Aware Minimization.

    Steps with the adversarial optimizer ``sync_period - 1`` times, then applies the outer
    optimizer, at the outer parameters, to the gradient taken at the adversarial point:

    .. math::
        \tilde w = w + \rho\, \frac{\nabla L(w)}{\|\nabla L(w)\|},\qquad
        w \leftarrow w - \eta \nabla L(\tilde w)

    for ``adv_optimizer = chain(normalize(), sgd(rho))``, ``optimizer = sgd(eta)`` and
    ``sync_period=2`` (the paper's SAM). In the default (transparent) mode each call to
    ``update`` is one step: adversarial steps move the parameters away and the outer step
    moves them back to the cached outer parameters plus the outer update. In opaque mode each
    call runs the adversarial steps internally and needs ``update(..., grad_fn=grad_fn)`` with
    ``grad_fn(params, i) -> grads`` (called ``sync_period - 1`` times).

    Args:
      optimizer: the outer optimizer.
      adv_optimizer: the inner adversarial optimizer.
      sync_period: how often the outer optimizer runs, default 2 (every other step).
      reset_state: reset the adversarial optimizer's state after each outer step (default).
      opaque_mode: run the adversarial steps inside ``update`` (see above); needed when other
        side effects of a step (e.g. batch-norm statistics) must only see outer steps.
      batch_axis_name: JAX's ``pmean`` axis in opaque mode; not supported (``None`` only):
        average the gradients across processes inside ``grad_fn`` instead.

    Reference: Foret et al., 2021, https://arxiv.org/abs/2010.01412

    Example::

        >>> opt = otx.contrib.sam(otx.sgd(0.01), otx.chain(otx.contrib.normalize(), otx.sgd(0.1)))
    """
    if not isinstance(sync_period, int) or sync_period < 1:
        raise ValueError(f"Synchronization period must be >= 1, got sync_period={sync_period!r}")
    if batch_axis_name is not None:
        raise ValueError(
            f"batch_axis_name={batch_axis_name!r} is JAX's pmean axis and is not supported: "
            "average the gradients inside grad_fn instead"
        )

    def init_fn(params):
        return SAMState(
            steps_since_sync=torch.zeros((), dtype=torch.int32),
            opt_state=optimizer.init(params),
            adv_state=adv_optimizer.init(params),
            cache=None if opaque_mode else tree.map(lambda p: p.detach().clone(), params),
        )

    def transparent_update_fn(
        updates: Updates,
        state: SAMState,
        params: Params | None = None,
        *,
        grad_fn: Callable[[Params, int], Updates] | None = None,
        **extra_args: Any,
    ) -> tuple[Updates, SAMState]:
        del grad_fn, extra_args
        first_step = state.steps_since_sync == 0
        last_step = state.steps_since_sync == sync_period - 1
        adv_updates, adv_state = adv_optimizer.update(updates, state.adv_state, params)
        adv_updates = tree.scale(-1, adv_updates)
        opt_updates, opt_state = optimizer.update(updates, state.opt_state, state.cache)
        opt_updates = tree.add(tree.sub(state.cache, params), opt_updates)
        cache = _pick(first_step, params, state.cache)
        new_updates = _pick(last_step, opt_updates, adv_updates)
        if reset_state:
            adv_state = _pick(last_step, adv_optimizer.init(params), adv_state)
        else:
            adv_state = _pick(last_step, state.adv_state, adv_state)
        opt_state = _pick(last_step, opt_state, state.opt_state)
        return new_updates, SAMState(
            steps_since_sync=(state.steps_since_sync + 1) % sync_period,
            opt_state=opt_state,
            adv_state=adv_state,
            cache=cache,
        )

    def opaque_update_fn(
        updates: Updates,
        state: SAMState,
        params: Params | None = None,
        *,
        grad_fn: Callable[[Params, int], Updates] | None = None,
        **extra_args: Any,
    ) -> tuple[Updates, SAMState]:
        del extra_args
        if grad_fn is None:
            raise ValueError("grad_fn must be provided when opaque_mode=True.")
        adv_params = params
        adv_updates = updates
        adv_state = state.adv_state
        for i in range(sync_period - 1):
            adv_updates, adv_state = adv_optimizer.update(adv_updates, adv_state, adv_params)
            adv_params = apply_updates(adv_params, tree.scale(-1, adv_updates))
            adv_updates = grad_fn(adv_params, i)
        if reset_state:
            adv_state = adv_optimizer.init(params)
        new_updates, opt_state = optimizer.update(adv_updates, state.opt_state, params)
        return new_updates, SAMState(
            steps_since_sync=torch.zeros((), dtype=torch.int32),
            opt_state=opt_state,
            adv_state=adv_state,
            cache=None,
        )

    update_fn = opaque_update_fn if opaque_mode else transparent_update_fn
    return GradientTransformationExtraArgs(init_fn, update_fn)
