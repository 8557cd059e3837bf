"""``torch.optim.SGD`` on optax_torch (see :mod:`optax_torch.compat.torch_optim`)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from optax_torch.base import GradientTransformation, identity
from optax_torch.combine import chain
from optax_torch.compat.torch_optim._common import (
    TorchOptimDropIn,
    check_differentiable,
    check_fused_foreach,
    is_nonzero,
)
from optax_torch.transforms import (
    add_decayed_weights,
    dampened_trace,
    scale,
    scale_by_learning_rate,
    trace,
)

__all__ = ["SGD"]


def _sgd_tx(
    lr,
    momentum,
    dampening,
    weight_decay,
    nesterov,
    maximize,
    foreach=None,
    differentiable=False,
    fused=None,
) -> GradientTransformation:
    """The chain of one ``SGD`` param group: ``[maximize, weight decay, momentum, -lr]``."""
    del foreach, fused
    check_differentiable(differentiable)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")
    if not is_nonzero(momentum):
        mom = identity()
    elif is_nonzero(dampening):
        mom = dampened_trace(momentum, dampening)
    else:
        mom = trace(decay=momentum, nesterov=nesterov)
    return chain(
        scale(-1.0) if maximize else identity(),
        add_decayed_weights(weight_decay) if is_nonzero(weight_decay) else identity(),
        mom,
        scale_by_learning_rate(lr),
    )


class SGD(TorchOptimDropIn):
    r"""``torch.optim.SGD`` on optax_torch: stochastic gradient descent with optional momentum.

    Per param group, the chain ``scale(-1)`` (if ``maximize``) → ``add_decayed_weights
    (weight_decay)`` → ``trace(momentum, nesterov)`` (with ``dampening``, an exact
    re-implementation of torch's buffer, initialised with the first gradient) →
    ``scale_by_learning_rate(lr)``, i.e. torch's

    .. math::
        g \leftarrow \pm g + \lambda p,\quad b \leftarrow \mu b + (1-\tau) g,\quad
        p \leftarrow p - \gamma\,(g + \mu b \text{ if nesterov else } b)

    Args:
      params: parameters or param groups (torch's format).
      lr: learning rate (float or 0-d tensor), default ``1e-3``.
      momentum: momentum factor, default ``0``.
      dampening: dampening for momentum, default ``0``.
      weight_decay: L2 penalty, default ``0``.
      nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``), default
        ``False``.
      maximize: maximize the objective, default ``False``.
      foreach, fused: accepted and ignored (see the module docstring), default ``None``.
      differentiable: must be ``False``.

    Example::

        >>> opt = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
        >>> loss.backward(); opt.step(); opt.zero_grad()

    The momentum buffer is exposed as ``opt.state[p]["momentum_buffer"]`` (created at the
    parameter's first step; with ``momentum=0`` there is no state at all).
    """

    _state_key_map: ClassVar[dict[str, str]] = {
        "2.trace": "momentum_buffer",
        "2.started": "momentum_started",
    }
    # Internal (torch's buffer exists once started): rebuilt by _adapt_entry on load.
    _hidden_state_keys: ClassVar[frozenset[str]] = frozenset({"momentum_started"})

    def _adapt_entry(self, entry: dict[str, Any], expected: set[str]) -> dict[str, Any]:
        # A torch.optim.SGD checkpoint has no "momentum_started": its buffer exists once started.
        if (
            "momentum_started" in expected
            and "momentum_started" not in entry
            and entry.get("momentum_buffer") is not None
        ):
            entry = {**entry, "momentum_started": torch.ones((), dtype=torch.bool)}
        return entry

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float | Tensor = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        check_differentiable(differentiable)
        check_fused_foreach(fused, foreach)
        super().__init__(
            params,
            _sgd_tx,
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            foreach=foreach,
            differentiable=differentiable,
            fused=fused,
        )
