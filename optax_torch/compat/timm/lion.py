"""timm's ``Lion`` on optax_torch (see :mod:`optax_torch.compat.timm`)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from optax_torch.base import GradientTransformation, identity
from optax_torch.combine import chain
from optax_torch.compat.timm._checks import check_scalar, max_lr_snapshot, wd_factor
from optax_torch.compat.torch_optim._common import TorchOptimDropIn, check_args, is_nonzero
from optax_torch.transforms import add_decayed_weights, scale, scale_by_learning_rate
from optax_torch.transforms.adaptive import scale_by_lion
from optax_torch.transforms.caution import caution as cautious

__all__ = ["Lion"]


def _lion_tx(
    lr,
    betas,
    weight_decay,
    caution,
    corrected_weight_decay,
    max_lr_snapshot,
    foreach=None,
    maximize=False,
) -> GradientTransformation:
    """The chain of one ``Lion`` param group:
    ``[maximize, caution?(lion), decoupled decay, -lr]``."""
    del foreach
    b1, b2 = betas
    lion = scale_by_lion(b1=b1, b2=b2)
    wd = wd_factor(lr, weight_decay, max_lr_snapshot if corrected_weight_decay else None)
    return chain(
        scale(-1.0) if maximize else identity(),
        cautious(lion) if caution else lion,
        add_decayed_weights(wd) if is_nonzero(weight_decay) else identity(),
        scale_by_learning_rate(lr),
    )


class Lion(TorchOptimDropIn):
    r"""timm's ``Lion`` (``timm.optim.Lion``) on optax_torch.

    Per param group, the chain ``scale(-1)`` (if ``maximize``) → ``scale_by_lion(b1, b2)``
    (wrapped in ``caution`` if ``caution``) → ``add_decayed_weights(wd)`` (decoupled: timm
    multiplies the parameters by ``1 - lr * weight_decay`` before the step; here
    ``weight_decay * p`` is added to the sign direction before the learning rate, the same step;
    with ``corrected_weight_decay`` the factor is ``lr / max_lr * weight_decay``, ``max_lr``
    the constructor's lr) → ``scale_by_learning_rate(lr)``.

    Args:
      params: parameters or param groups (torch's format).
      lr: learning rate, default ``1e-4``.
      betas: ``(beta1, beta2)``, default ``(0.9, 0.99)``.
      weight_decay: decoupled weight decay, default ``0``.
      caution: cautious updates (https://arxiv.org/abs/2411.16085), default ``False``.
      corrected_weight_decay: decay by ``lr ** 2 / max_lr`` instead of ``lr``, default ``False``.
      maximize: maximize the objective, default ``False``.
      foreach: accepted and ignored, default ``None``.

    Example::

        >>> opt = Lion(model.parameters(), lr=1e-4, weight_decay=1.0)

    State per parameter: ``exp_avg`` (timm's); the step count is internal.
    """

    _state_key_map: ClassVar[dict[str, str]] = {"1.mu": "exp_avg", "1.count": "step"}
    _hidden_state_keys: ClassVar[frozenset[str]] = frozenset({"step"})

    def __init__(
        self,
        params,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        caution: bool = False,
        corrected_weight_decay: bool = False,
        maximize: bool = False,
        foreach: bool | None = None,
    ) -> None:
        check_scalar("learning rate", lr)
        check_args(betas=betas)
        super().__init__(
            params,
            _lion_tx,
            lr=lr,
            betas=betas,
            weight_decay=weight_decay,
            caution=caution,
            corrected_weight_decay=corrected_weight_decay,
            max_lr_snapshot=max_lr_snapshot(lr, corrected_weight_decay),
            foreach=foreach,
            maximize=maximize,
        )

    def _adapt_entry(self, entry: dict[str, Any], expected: set[str]) -> dict[str, Any]:
        # timm keeps no step count (Lion's math does not use it).
        if "step" in expected and "step" not in entry:
            entry = {**entry, "step": torch.zeros((), dtype=torch.int32)}
        return entry
