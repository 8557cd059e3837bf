"""timm's ``SGDW`` on optax_torch (see :mod:`optax_torch.compat.timm`)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from optax_torch.base import GradientTransformation, identity
from optax_torch.combine import chain
from optax_torch.compat.timm._checks import check_args, max_lr_snapshot
from optax_torch.compat.timm.adamw import decoupled_decay
from optax_torch.compat.torch_optim._common import TorchOptimDropIn, is_nonzero
from optax_torch.transforms import dampened_trace, scale, scale_by_learning_rate, trace
from optax_torch.transforms.caution import caution as cautious

__all__ = ["SGDW"]


def _sgdw_tx(
    lr=1e-3,
    momentum=0.0,
    dampening=0.0,
    weight_decay=0.0,
    nesterov=False,
    caution=False,
    corrected_weight_decay=False,
    max_lr_snapshot=1e-3,
    maximize=False,
    foreach=None,
    differentiable=False,
) -> GradientTransformation:
    """The chain of one ``SGDW`` param group:
    ``[maximize, caution?(momentum), decoupled decay, -lr]``."""
    del foreach, differentiable
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")
    if not is_nonzero(momentum):
        mom = identity()
    else:
        if is_nonzero(dampening):
            mom = dampened_trace(momentum, dampening)
        else:
            mom = trace(decay=momentum, nesterov=nesterov)
        mom = cautious(mom) if caution else mom
    return chain(
        scale(-1.0) if maximize else identity(),
        mom,
        decoupled_decay(weight_decay, lr, corrected_weight_decay, max_lr_snapshot),
        scale_by_learning_rate(lr),
    )


class SGDW(TorchOptimDropIn):
    r"""timm's ``SGDW`` (registry names ``sgdw``, ``csgdw``, with Nesterov momentum) on
    optax_torch: SGD with decoupled weight decay.

    Per param group, the chain ``scale(-1)`` (if ``maximize``) → ``trace(momentum, nesterov)``
    (``dampened_trace`` with ``dampening``; wrapped in ``caution`` if ``caution``; nothing if
    ``momentum == 0``) → ``add_decayed_weights(weight_decay)`` (decoupled; rate ``weight_decay *
    lr / max_lr_snapshot`` with ``corrected_weight_decay``) → ``scale_by_learning_rate(lr)``,
    i.e. timm's

    .. math::
        b \leftarrow \mu b + (1-\tau) g,\quad
        p \leftarrow p\,(1 - \lambda s) - \gamma\,\phi(g + \mu b \text{ if nesterov else } b)

    Args:
      params: parameters or param groups (torch's format).
      lr: learning rate, default ``1e-3``.
      momentum: momentum factor, default ``0``.
      dampening: dampening, default ``0``.
      weight_decay: decoupled weight decay, default ``0``.
      nesterov: Nesterov momentum, default ``False``.
      caution: cautious updates (with momentum only, as timm), default ``False``.
      corrected_weight_decay: decay scaled by ``lr ** 2 / max_lr``, default ``False``.
      maximize: maximize the objective, default ``False``.
      foreach, differentiable: accepted and ignored (timm's step is not differentiable either).

    Example::

        >>> opt = SGDW(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    State per parameter: ``momentum_buffer`` (with ``momentum != 0``; timm also stores
    ``momentum_buffer = None`` when ``momentum == 0``, here there is no state then).
    """

    _state_key_map: ClassVar[dict[str, str]] = {
        "1.trace": "momentum_buffer",
        "1.started": "momentum_started",
    }
    _hidden_state_keys: ClassVar[frozenset[str]] = frozenset({"momentum_started"})

    def _adapt_entry(self, entry: dict[str, Any], expected: set[str]) -> dict[str, Any]:
        # timm's entries: no "momentum_started" (its buffer exists once started), and
        # "momentum_buffer": None without momentum.
        entry = {k: v for k, v in entry.items() if v is not None}
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
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        caution: bool = False,
        corrected_weight_decay: bool = False,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
    ) -> None:
        check_args(lr=lr, momentum=momentum, weight_decay=weight_decay, nan_ok=True)
        snapshot = max_lr_snapshot(lr, corrected_weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(
            params,
            _sgdw_tx,
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            caution=caution,
            corrected_weight_decay=corrected_weight_decay,
            max_lr_snapshot=snapshot,
            maximize=maximize,
            foreach=foreach,
            differentiable=differentiable,
        )
