"""timm's ``NAdamW`` and ``NAdamLegacy`` on optax_torch (see :mod:`optax_torch.compat.timm`)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from optax_torch.base import GradientTransformation, identity
from optax_torch.combine import chain
from optax_torch.compat.timm._checks import IntStepDropIn, max_lr_snapshot
from optax_torch.compat.timm.adamw import decoupled_decay
from optax_torch.compat.torch_optim._common import TorchOptimDropIn, check_args, is_nonzero
from optax_torch.transforms import (
    add_decayed_weights,
    scale,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_nadam,
)
from optax_torch.transforms.caution import caution as cautious

__all__ = ["NAdamLegacy", "NAdamW"]


def _nadamw_tx(
    lr=1e-3,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=1e-2,
    caution=False,
    corrected_weight_decay=False,
    max_lr_snapshot=1e-3,
    foreach=None,
    maximize=False,
    capturable=False,
    clipping_threshold=None,
) -> GradientTransformation:
    """The chain of one ``NAdamW`` param group:
    ``[maximize, caution?(nesterov adam, RMS clip), decoupled decay, -lr]``."""
    del foreach, capturable
    b1, b2 = betas
    scaling = scale_by_adam(
        b1=b1,
        b2=b2,
        eps=eps,
        nesterov=True,
        nesterov_shared_debias=True,
        clipping_threshold=clipping_threshold,
    )
    return chain(
        scale(-1.0) if maximize else identity(),
        cautious(scaling) if caution else scaling,
        decoupled_decay(weight_decay, lr, corrected_weight_decay, max_lr_snapshot),
        scale_by_learning_rate(lr),
    )


class NAdamW(TorchOptimDropIn):
    r"""timm's ``NAdamW`` (registry names ``nadamw``, ``cnadamw``, ``nadamc``, ``cnadamc``)
    on optax_torch: AdamW with Nesterov momentum in the MLCommons AlgoPerf form.

    Per param group, the chain ``scale(-1)`` (if ``maximize``) → ``scale_by_adam(b1, b2, eps,
    nesterov=True, nesterov_shared_debias=True, clipping_threshold)`` (wrapped in ``caution`` if
    ``caution``) → ``add_decayed_weights`` (decoupled, as :class:`~.adamw.AdamWLegacy`, with
    ``corrected_weight_decay``) → ``scale_by_learning_rate(lr)``, i.e. timm's

    .. math::
        p \leftarrow p\,(1 - \lambda s) - \gamma\,\phi\Big(\frac{\beta_1 m_k + (1-\beta_1) g_k}
        {(1-\beta_1^k)\, c\, d}\Big),\quad d = \sqrt{\hat v_k} + \epsilon

    (:math:`s`, :math:`\phi`, :math:`c` as in :class:`~.adamw.AdamWLegacy`).

    Args:
      params: parameters or param groups (torch's format).
      lr: learning rate, default ``1e-3``.
      betas: ``(beta1, beta2)``, default ``(0.9, 0.999)``.
      eps: added to the denominator, default ``1e-8``.
      weight_decay: decoupled weight decay, default ``1e-2``.
      caution: cautious updates, default ``False``.
      corrected_weight_decay: decay scaled by ``lr ** 2 / max_lr``, default ``False``.
      maximize: maximize the objective, default ``False``.
      foreach, capturable: accepted and ignored.
      clipping_threshold: RMS update clipping (StableAdamW), default ``None`` (off).

    Reference: Dozat, 2016; Kasimbeg et al., 2025, AlgoPerf baselines
    (https://github.com/mlcommons/algorithmic-efficiency).

    Example::

        >>> opt = NAdamW(model.parameters(), lr=1e-3, weight_decay=0.05)

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq``, as in timm.
    """

    _state_key_map: ClassVar[dict[str, str]] = {
        "1.count": "step",
        "1.mu": "exp_avg",
        "1.nu": "exp_avg_sq",
    }

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        caution: bool = False,
        corrected_weight_decay: bool = False,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        clipping_threshold: float | None = None,
    ) -> None:
        check_args(lr=lr, eps=eps, betas=betas, weight_decay=weight_decay)
        super().__init__(
            params,
            _nadamw_tx,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            caution=caution,
            corrected_weight_decay=corrected_weight_decay,
            max_lr_snapshot=max_lr_snapshot(lr, corrected_weight_decay),
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            clipping_threshold=clipping_threshold,
        )


def _nadam_legacy_tx(
    lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, schedule_decay=4e-3
) -> GradientTransformation:
    """The chain of one ``NAdamLegacy`` param group: ``[L2 decay, nadam (schedule), -lr]``."""
    b1, b2 = betas
    return chain(
        add_decayed_weights(weight_decay) if is_nonzero(weight_decay) else identity(),
        scale_by_nadam(b1=b1, b2=b2, eps=eps, momentum_decay=schedule_decay),
        scale_by_learning_rate(lr),
    )


class NAdamLegacy(IntStepDropIn):
    r"""timm's ``NAdamLegacy`` (registry name ``nadamlegacy``) on optax_torch: NAdam with
    Dozat's momentum schedule and L2 weight decay.

    Per param group, the chain ``add_decayed_weights(weight_decay)`` (L2, before the moments) →
    ``scale_by_nadam(b1, b2, eps, momentum_decay=schedule_decay)`` →
    ``scale_by_learning_rate(lr)``: timm's step is ``torch.optim.NAdam``'s (see
    :func:`~optax_torch.scale_by_nadam`), with ``m_schedule`` the running product of the
    momentum coefficients.

    Args:
      params: parameters or param groups (torch's format).
      lr: learning rate, default ``2e-3``.
      betas: ``(beta1, beta2)``, default ``(0.9, 0.999)``.
      eps: added to the denominator, default ``1e-8``.
      weight_decay: L2 penalty, default ``0``.
      schedule_decay: momentum schedule decay :math:`\psi`, default ``4e-3``.

    Example::

        >>> opt = NAdamLegacy(model.parameters(), lr=2e-3)

    State per parameter: ``step``, ``m_schedule``, ``exp_avg``, ``exp_avg_sq``, as in timm (0-d
    tensors here; :meth:`state_dict` writes ``step`` and ``m_schedule`` as Python numbers, like
    timm, so that timm can load it).
    """

    _python_numbers: ClassVar[dict[str, type]] = {"step": int, "m_schedule": float}
    _state_key_map: ClassVar[dict[str, str]] = {
        "1.count": "step",
        "1.mu_product": "m_schedule",
        "1.mu": "exp_avg",
        "1.nu": "exp_avg_sq",
    }

    def __init__(
        self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, schedule_decay=4e-3
    ) -> None:
        check_args(lr=lr)
        super().__init__(
            params,
            _nadam_legacy_tx,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            schedule_decay=schedule_decay,
        )

    def _adapt_entry(self, entry: dict[str, Any], expected: set[str]) -> dict[str, Any]:
        # timm's Python float m_schedule, kept exact (torch.as_tensor would give float32).
        if isinstance(entry.get("m_schedule"), float):
            entry = {**entry, "m_schedule": torch.tensor(entry["m_schedule"], dtype=torch.float64)}
        return entry
