"""timm's ``AdamWLegacy`` (and ``timm.optim.AdamW``, which is ``torch.optim.AdamW``) on
optax_torch (see :mod:`optax_torch.compat.timm`)."""

from __future__ import annotations

from typing import Any, ClassVar

from optax_torch.base import GradientTransformation, identity
from optax_torch.combine import chain
from optax_torch.compat.timm._checks import max_lr_snapshot, wd_factor
from optax_torch.compat.torch_optim._common import TorchOptimDropIn, check_args, is_nonzero
from optax_torch.compat.torch_optim.adam import AdamW
from optax_torch.transforms import (
    add_decayed_weights,
    scale,
    scale_by_adam,
    scale_by_amsgrad,
    scale_by_learning_rate,
)
from optax_torch.transforms.caution import caution as cautious

__all__ = ["AdamW", "AdamWLegacy", "decoupled_decay"]


def decoupled_decay(
    weight_decay: Any, lr: Any, corrected_weight_decay: bool, max_lr: float
) -> GradientTransformation:
    r"""timm's decoupled decay before the learning rate: ``add_decayed_weights(weight_decay)``,
    or, with ``corrected_weight_decay``, ``add_decayed_weights(weight_decay * lr / max_lr)``
    (timm multiplies the parameters by :math:`1 - \lambda\gamma^2/\gamma_{max}`; the learning
    rate of the chain supplies one :math:`\gamma`). Identity when ``weight_decay == 0``."""
    if not is_nonzero(weight_decay):
        return identity()
    return add_decayed_weights(
        wd_factor(lr, weight_decay, max_lr if corrected_weight_decay else None)
    )


def _adamw_legacy_tx(
    lr=1e-3,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=1e-2,
    amsgrad=False,
    caution=False,
    corrected_weight_decay=False,
    max_lr_snapshot=1e-3,
    foreach=None,
    maximize=False,
    capturable=False,
    clipping_threshold=None,
) -> GradientTransformation:
    """The chain of one ``AdamWLegacy`` param group:
    ``[maximize, caution?(adam | amsgrad, RMS clip), decoupled decay, -lr]``."""
    del foreach, capturable
    b1, b2 = betas
    if amsgrad:
        scaling = scale_by_amsgrad(
            b1=b1, b2=b2, eps=eps, debias_after_max=True, clipping_threshold=clipping_threshold
        )
    else:
        scaling = scale_by_adam(b1=b1, b2=b2, eps=eps, clipping_threshold=clipping_threshold)
    return chain(
        scale(-1.0) if maximize else identity(),
        cautious(scaling) if caution else scaling,
        decoupled_decay(weight_decay, lr, corrected_weight_decay, max_lr_snapshot),
        scale_by_learning_rate(lr),
    )


class AdamWLegacy(TorchOptimDropIn):
    r"""timm's ``AdamWLegacy`` (``timm.optim.AdamWLegacy``, registry names ``adamwlegacy``,
    ``cadamw``, ``adamc``, ``cadamc``) on optax_torch.

    Per param group, the chain ``scale(-1)`` (if ``maximize``) → ``scale_by_adam(b1, b2, eps,
    clipping_threshold)`` or, with ``amsgrad``, ``scale_by_amsgrad(..., debias_after_max=True)``
    (the maximum of the raw second moments), wrapped in ``caution`` (if ``caution``) →
    ``add_decayed_weights(weight_decay)`` (decoupled; with ``corrected_weight_decay`` the rate is
    ``weight_decay * lr / max_lr_snapshot``) → ``scale_by_learning_rate(lr)``, i.e. timm's

    .. math::
        p \leftarrow p\,(1 - \lambda s) - \gamma\,\phi(\hat m / (c\,d)),\quad
        d = \sqrt{\hat v} + \epsilon,\quad
        c = \max(1, \operatorname{rms}(g / d) / \text{clipping\_threshold})

    with :math:`s = \gamma` (or :math:`\gamma^2/\gamma_{max}` with ``corrected_weight_decay``,
    :math:`\gamma_{max}` the constructor's lr, kept in the ``max_lr_snapshot`` group key),
    :math:`\phi` the cautious mask (identity without ``caution``) and :math:`c = 1` without
    ``clipping_threshold``.

    Args:
      params: parameters or param groups (torch's format).
      lr: learning rate, default ``1e-3``.
      betas: ``(beta1, beta2)``, default ``(0.9, 0.999)``.
      eps: added to the denominator, default ``1e-8``.
      weight_decay: decoupled weight decay, default ``1e-2``.
      amsgrad: AMSGrad, default ``False``.
      caution: cautious updates, default ``False``.
      corrected_weight_decay: decay scaled by ``lr ** 2 / max_lr``, default ``False``.
      maximize: maximize the objective, default ``False``.
      foreach, capturable: accepted and ignored.
      clipping_threshold: RMS update clipping (StableAdamW), default ``None`` (off).

    Example::

        >>> opt = AdamWLegacy(model.parameters(), lr=1e-3, caution=True)

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq`` and ``max_exp_avg_sq`` (with
    ``amsgrad``), as in timm (``step`` int32 here, a float tensor in timm).
    """

    _state_key_map: ClassVar[dict[str, str]] = {
        "1.count": "step",
        "1.mu": "exp_avg",
        "1.nu": "exp_avg_sq",
        "1.nu_max": "max_exp_avg_sq",
    }

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        caution: bool = False,
        corrected_weight_decay: bool = False,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        clipping_threshold: float | None = None,
    ) -> None:
        check_args(lr=lr, eps=eps, betas=betas)
        super().__init__(
            params,
            _adamw_legacy_tx,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            caution=caution,
            corrected_weight_decay=corrected_weight_decay,
            max_lr_snapshot=max_lr_snapshot(lr, corrected_weight_decay),
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            clipping_threshold=clipping_threshold,
        )
