"""timm's ``NvNovoGrad`` on optax_torch (see :mod:`optax_torch.compat.timm`)."""

from __future__ import annotations

from typing import ClassVar

import torch

from optax_torch.base import GradientTransformation, identity
from optax_torch.combine import chain
from optax_torch.compat.timm._checks import IntStepDropIn, check_args, max_lr_snapshot
from optax_torch.compat.torch_optim._common import is_nonzero
from optax_torch.transforms import add_decayed_weights, scale
from optax_torch.transforms.factorized import scale_by_novograd

__all__ = ["NvNovoGrad"]


def _nvnovograd_tx(
    lr,
    betas,
    eps,
    weight_decay,
    grad_averaging,
    amsgrad,
    decoupled_decay,
    corrected_weight_decay,
    max_lr_snapshot,
) -> GradientTransformation:
    """The chain of one ``NvNovoGrad`` param group: ``[novograd (L2 decay), lr, decoupled
    decay, -1]``."""
    b1, b2 = betas
    decay = is_nonzero(weight_decay)
    wd_scale = lr**2 / max_lr_snapshot if corrected_weight_decay else lr
    return chain(
        scale_by_novograd(
            b1,
            b2,
            eps,
            weight_decay=weight_decay if decay and not decoupled_decay else 0.0,
            grad_averaging=grad_averaging,
            amsgrad=amsgrad,
            nu_dtype=torch.get_default_dtype(),
        ),
        scale(lr),
        add_decayed_weights(wd_scale * weight_decay) if decay and decoupled_decay else identity(),
        scale(-1.0),
    )


class NvNovoGrad(IntStepDropIn):
    r"""timm's ``NvNovoGrad`` (NVIDIA's NovoGrad) on optax_torch.

    Per param group, the chain
    :func:`~optax_torch.transforms.factorized.scale_by_novograd` ``(b1, b2, eps,
    weight_decay, grad_averaging=, amsgrad=, nu_dtype=default dtype)`` (per-tensor second
    moment of :math:`\|g\|^2`, momentum of :math:`g / (\sqrt{v} + \epsilon) + \lambda p`) →
    ``scale(lr)`` → ``add_decayed_weights(wd_scale * weight_decay)`` (with ``decoupled_decay``:
    ``wd_scale`` is ``lr``, or ``lr**2 / max_lr_snapshot`` with ``corrected_weight_decay``) →
    ``scale(-1)``.

    Args:
      params: parameters or param groups (torch's format).
      lr: learning rate, default ``1e-3``.
      betas: ``(beta1, beta2)``, default ``(0.95, 0.98)``.
      eps: added to the denominator, default ``1e-8``.
      weight_decay: L2 penalty added to the normalised gradient (or decoupled), default ``0``.
      grad_averaging: scale the momentum's input by ``1 - beta1``, default ``False``.
      amsgrad: normalise by the running maximum of the second moment, default ``False``.
      decoupled_decay: decay the weights directly (``p *= 1 - lr * weight_decay``), default
        ``False``.
      corrected_weight_decay: with ``decoupled_decay``, decay by ``lr**2 / max_lr`` (``max_lr``
        the constructor's ``lr``), default ``False``.

    Example::

        >>> opt = NvNovoGrad(model.parameters(), lr=1e-2, betas=(0.95, 0.5))
        >>> loss.backward(); opt.step(); opt.zero_grad()

    State per parameter, as in timm: ``step``, ``exp_avg``, ``exp_avg_sq`` (0-d, in the default
    dtype) and ``max_exp_avg_sq`` (with ``amsgrad``). Deviations: ``step`` is a 0-d int32
    tensor (timm: a Python int); the first step of the second moment is the first step of the
    parameter (timm: the first step where the moment is still exactly 0).
    """

    _complex_as_real: ClassVar[bool] = False  # timm's step squares the gradient as is
    _state_key_map: ClassVar[dict[str, str]] = {
        "0.count": "step",
        "0.mu": "exp_avg",
        "0.nu": "exp_avg_sq",
        "0.nu_max": "max_exp_avg_sq",
    }

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.95, 0.98),
        eps=1e-8,
        weight_decay=0,
        grad_averaging=False,
        amsgrad=False,
        decoupled_decay=False,
        corrected_weight_decay=False,
    ) -> None:
        check_args(lr=lr, eps=eps, betas=betas)
        max_lr = max_lr_snapshot(lr, corrected_weight_decay)
        super().__init__(
            params,
            _nvnovograd_tx,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            grad_averaging=grad_averaging,
            amsgrad=amsgrad,
            decoupled_decay=decoupled_decay,
            corrected_weight_decay=corrected_weight_decay,
            max_lr_snapshot=max_lr,
        )
