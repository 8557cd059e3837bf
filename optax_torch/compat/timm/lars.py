"""timm's ``Lars`` on optax_torch (see :mod:`optax_torch.compat.timm`)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from optax_torch.base import GradientTransformation, identity
from optax_torch.combine import chain
from optax_torch.compat.timm._checks import check_args
from optax_torch.compat.torch_optim._common import TorchOptimDropIn, is_nonzero
from optax_torch.transforms import dampened_trace, scale_by_learning_rate, trace
from optax_torch.transforms.normalization import scale_by_trust_ratio

__all__ = ["Lars"]


def _lars_tx(
    lr,
    momentum,
    dampening,
    weight_decay,
    nesterov,
    trust_coeff,
    eps,
    trust_clip,
    always_adapt,
    foreach=None,
) -> GradientTransformation:
    """The chain of one ``Lars`` param group: ``[trust ratio + L2 decay, momentum, -lr]``."""
    del foreach
    if is_nonzero(weight_decay) or always_adapt:
        adapt = scale_by_trust_ratio(
            trust_coefficient=trust_coeff,
            eps=eps,
            weight_decay=weight_decay,
            trust_clip=lr if trust_clip else None,
        )
    else:
        adapt = identity()
    if not is_nonzero(momentum):
        mom = identity()
    elif is_nonzero(dampening):
        mom = dampened_trace(momentum, dampening)
    else:
        mom = trace(decay=momentum, nesterov=nesterov)
    return chain(adapt, mom, scale_by_learning_rate(lr))


class Lars(TorchOptimDropIn):
    r"""timm's ``Lars`` (``timm.optim.Lars``, LARS / LARC) on optax_torch.

    Per param group, the chain ``scale_by_trust_ratio(trust_coeff, eps, weight_decay=...,
    trust_clip=lr if trust_clip)`` (when ``weight_decay != 0`` or ``always_adapt``: the ratio
    :math:`c\lVert p\rVert / (\lVert g\rVert + \lambda\lVert p\rVert + \epsilon)` applied to
    :math:`g + \lambda p`, clipped to :math:`\min(r/\text{lr}, 1)` with ``trust_clip``) →
    ``trace(momentum, nesterov)`` or ``dampened_trace`` (torch's SGD buffer, initialised with
    the first update) → ``scale_by_learning_rate(lr)``.

    Args:
      params: parameters or param groups (torch's format).
      lr: learning rate, default ``1.0``.
      momentum: momentum factor, default ``0``.
      dampening: dampening for momentum, default ``0``.
      weight_decay: L2 weight decay, default ``0``.
      nesterov: Nesterov momentum, default ``False``.
      trust_coeff: trust coefficient, default ``0.001``.
      eps: added to the ratio's denominator, default ``1e-8``.
      trust_clip: LARC clipping of the ratio, default ``False``.
      always_adapt: apply the ratio also where ``weight_decay == 0``, default ``False``.
      foreach: accepted and ignored, default ``None``.

    Example::

        >>> opt = Lars(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    State per parameter: ``momentum_buffer`` (with ``momentum != 0``), as timm.
    """

    _state_key_map: ClassVar[dict[str, str]] = {
        "1.trace": "momentum_buffer",
        "1.started": "momentum_started",
    }
    _hidden_state_keys: ClassVar[frozenset[str]] = frozenset({"momentum_started"})

    def __init__(
        self,
        params,
        lr=1.0,
        momentum=0,
        dampening=0,
        weight_decay=0,
        nesterov=False,
        trust_coeff=0.001,
        eps=1e-8,
        trust_clip=False,
        always_adapt=False,
        foreach: bool | None = None,
    ) -> None:
        check_args(lr=lr, momentum=momentum, weight_decay=weight_decay, nan_ok=True)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(
            params,
            _lars_tx,
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            trust_coeff=trust_coeff,
            eps=eps,
            trust_clip=trust_clip,
            always_adapt=always_adapt,
            foreach=foreach,
        )

    def _adapt_entry(self, entry: dict[str, Any], expected: set[str]) -> dict[str, Any]:
        # A timm checkpoint has no "momentum_started": its buffer exists once started.
        if (
            "momentum_started" in expected
            and "momentum_started" not in entry
            and entry.get("momentum_buffer") is not None
        ):
            entry = {**entry, "momentum_started": torch.ones((), dtype=torch.bool)}
        return entry
