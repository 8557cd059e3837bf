"""timm's ``Adopt`` on optax_torch (see :mod:`optax_torch.compat.timm`)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from optax_torch.base import GradientTransformation, identity
from optax_torch.combine import chain
from optax_torch.compat.timm._checks import max_lr_snapshot
from optax_torch.compat.torch_optim._common import (
    TorchOptimDropIn,
    check_args,
    check_differentiable,
    is_nonzero,
)
from optax_torch.contrib.adopt import scale_by_adopt
from optax_torch.transforms import add_decayed_weights, scale, scale_by_learning_rate

__all__ = ["Adopt"]


def _clip_fn(clip_exp: float):
    def clip_value(count: torch.Tensor) -> torch.Tensor:
        return count.to(torch.float64) ** clip_exp

    return clip_value


def _adopt_tx(
    lr,
    betas,
    eps,
    weight_decay,
    clip_exp,
    decoupled,
    corrected_weight_decay,
    max_lr_snapshot,
    caution,
    maximize,
    foreach=None,
    capturable=False,
    differentiable=False,
) -> GradientTransformation:
    """The chain of one ``Adopt`` param group: ``[maximize, L2 decay, adopt (+ caution, decoupled
    decay), -lr]``."""
    del foreach, capturable
    check_differentiable(differentiable)
    b1, b2 = betas
    wd = weight_decay if is_nonzero(weight_decay) else 0.0
    if decoupled and corrected_weight_decay and wd:
        wd = wd * lr / max_lr_snapshot  # lr * wd' = lr ** 2 / max_lr * wd
    return chain(
        scale(-1.0) if maximize else identity(),
        add_decayed_weights(wd) if wd and not decoupled else identity(),
        scale_by_adopt(
            b1=b1,
            b2=b2,
            eps=eps,
            use_clipping=clip_exp is not None,
            clip_value_fn=_clip_fn(clip_exp if clip_exp is not None else 0.25),
            caution=caution,
            weight_decay=wd if decoupled else 0.0,
        ),
        scale_by_learning_rate(lr),
    )


class Adopt(TorchOptimDropIn):
    r"""timm's ``Adopt`` (ADOPT, timm 1.0) on optax_torch.

    Per param group, the chain ``scale(-1)`` (if ``maximize``) → ``add_decayed_weights
    (weight_decay)`` (L2, unless ``decoupled``) → :func:`optax_torch.contrib.scale_by_adopt`
    ``(b1, b2, eps, clip_value_fn=k ** clip_exp, caution, weight_decay)`` (decoupled decay and
    the cautious mask as its timm extensions; the first step of each parameter only fills the
    second moment) → ``scale_by_learning_rate(lr)``. With ``corrected_weight_decay`` the
    decoupled decay is ``lr ** 2 / max_lr * weight_decay`` (``max_lr`` the constructor's lr).

    Args:
      params: parameters or param groups.
      lr: learning rate, default ``1e-3``.
      betas: ``(beta1, beta2)``, default ``(0.9, 0.9999)``.
      eps: floor of the RMS, default ``1e-6``.
      clip_exp: clip the normalised gradient to ``(step - 1) ** clip_exp``; ``None`` for no
        clipping. Default ``0.333``.
      weight_decay: weight decay, default ``0``.
      decoupled: decoupled (AdamW-style) decay instead of L2, default ``False``.
      corrected_weight_decay: scale the decoupled decay by ``lr / max_lr``, default ``False``.
      caution: cautious updates, default ``False``.
      maximize: maximize the objective, default ``False``.
      foreach, capturable: accepted and ignored; differentiable: must be ``False``.

    Example::

        >>> opt = Adopt(model.parameters(), lr=1e-3, decoupled=True, weight_decay=0.01)

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq``, as in timm.
    """

    _state_key_map: ClassVar[dict[str, str]] = {
        "2.count": "step",
        "2.mu": "exp_avg",
        "2.nu": "exp_avg_sq",
    }

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.9999),
        eps: float = 1e-6,
        clip_exp: float | None = 0.333,
        weight_decay: float = 0.0,
        decoupled: bool = False,
        corrected_weight_decay: bool = False,
        *,
        caution: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        if isinstance(lr, Tensor):
            if foreach and not capturable:
                raise ValueError(
                    "lr as a Tensor is not supported for capturable=False and foreach=True"
                )
            if lr.numel() != 1:
                raise ValueError("Tensor lr must be 1-element")
        check_args(lr=lr, eps=eps, betas=betas, weight_decay=weight_decay)
        max_lr = max_lr_snapshot(lr, corrected_weight_decay)
        check_differentiable(differentiable)
        super().__init__(
            params,
            _adopt_tx,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            clip_exp=clip_exp,
            decoupled=decoupled,
            corrected_weight_decay=corrected_weight_decay,
            max_lr_snapshot=max_lr,
            caution=caution,
            maximize=maximize,
            foreach=foreach,
            capturable=capturable,
            differentiable=differentiable,
        )
