"""``torch.optim.Adam`` and ``AdamW`` on optax_torch (see :mod:`optax_torch.compat.torch_optim`)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from optax_torch.base import GradientTransformation, identity
from optax_torch.combine import chain
from optax_torch.compat.torch_optim._common import (
    TorchOptimDropIn,
    check_adam_args,
    check_differentiable,
    check_fused_foreach,
    is_nonzero,
)
from optax_torch.transforms import (
    add_decayed_weights,
    scale,
    scale_by_adam,
    scale_by_amsgrad,
    scale_by_learning_rate,
)

__all__ = ["Adam", "AdamW"]


def _adam_tx(
    lr,
    betas,
    eps,
    weight_decay,
    amsgrad,
    maximize,
    foreach=None,
    capturable=False,
    differentiable=False,
    fused=None,
    decoupled_weight_decay=False,
) -> GradientTransformation:
    """The chain of one ``Adam`` param group:
    ``[maximize, L2 decay, adam | amsgrad, decoupled decay, -lr]``."""
    del foreach, capturable, fused
    check_differentiable(differentiable)
    b1, b2 = betas
    decay = add_decayed_weights(weight_decay) if is_nonzero(weight_decay) else identity()
    if amsgrad:
        scaling = scale_by_amsgrad(b1=b1, b2=b2, eps=eps, debias_after_max=True)
    else:
        scaling = scale_by_adam(b1=b1, b2=b2, eps=eps)
    return chain(
        scale(-1.0) if maximize else identity(),
        identity() if decoupled_weight_decay else decay,
        scaling,
        decay if decoupled_weight_decay else identity(),
        scale_by_learning_rate(lr),
    )


class Adam(TorchOptimDropIn):
    r"""``torch.optim.Adam`` on optax_torch.

    Per param group, the chain ``scale(-1)`` (if ``maximize``) → ``add_decayed_weights
    (weight_decay)`` (L2, before the moments) → ``scale_by_adam(b1, b2, eps)`` or, with
    ``amsgrad``, ``scale_by_amsgrad(..., debias_after_max=True)`` (torch's AMSGrad: maximum of
    the raw second moments) → ``add_decayed_weights(weight_decay)`` (if
    ``decoupled_weight_decay``, i.e. AdamW) → ``scale_by_learning_rate(lr)``.

    Args:
      params: parameters or param groups (torch's format).
      lr: learning rate (float or 0-d tensor), default ``1e-3``.
      betas: ``(beta1, beta2)``, default ``(0.9, 0.999)``.
      eps: added to the denominator, default ``1e-8``.
      weight_decay: weight decay, default ``0``.
      amsgrad: use AMSGrad, default ``False``.
      foreach, fused, capturable: accepted and ignored (see the module docstring).
      maximize: maximize the objective, default ``False``.
      differentiable: must be ``False``.
      decoupled_weight_decay: decoupled (AdamW) weight decay, default ``False``.

    Example::

        >>> opt = Adam(model.parameters(), lr=1e-3, amsgrad=True)
        >>> loss.backward(); opt.step(); opt.zero_grad()

    State per parameter: ``step`` (int32, shared by the group), ``exp_avg``, ``exp_avg_sq`` and
    ``max_exp_avg_sq`` (with ``amsgrad``), as in torch.
    """

    _state_key_map: ClassVar[dict[str, str]] = {
        "2.count": "step",
        "2.mu": "exp_avg",
        "2.nu": "exp_avg_sq",
        "2.nu_max": "max_exp_avg_sq",
    }

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        betas = check_adam_args(lr, betas, eps, weight_decay, foreach, capturable)
        check_differentiable(differentiable)
        check_fused_foreach(fused, foreach)
        super().__init__(
            params,
            _adam_tx,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            foreach=foreach,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=decoupled_weight_decay,
        )


class AdamW(Adam):
    r"""``torch.optim.AdamW`` on optax_torch: :class:`Adam` with decoupled weight decay.

    torch multiplies the parameters by ``1 - lr * weight_decay`` before the Adam step; here the
    decay ``weight_decay * p`` is added to the Adam direction before the learning rate, the same
    step (``p - lr * (adam + weight_decay * p)``).

    Args:
      params: parameters or param groups (torch's format).
      lr: learning rate (float or 0-d tensor), default ``1e-3``.
      betas: ``(beta1, beta2)``, default ``(0.9, 0.999)``.
      eps: added to the denominator, default ``1e-8``.
      weight_decay: decoupled weight decay, default ``1e-2``.
      amsgrad: use AMSGrad, default ``False``.
      maximize, foreach, capturable, differentiable, fused: as in :class:`Adam`.

    Example::

        >>> opt = AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    """

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
        )

    def _normalize_group(self, group: dict[str, Any]) -> dict[str, Any]:
        # Like torch.optim.AdamW: decoupled weight decay always, whatever a loaded state says.
        if "decoupled_weight_decay" in group:  # else filled from the defaults (True)
            group["decoupled_weight_decay"] = True
        return group
