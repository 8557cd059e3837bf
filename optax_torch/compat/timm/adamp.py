"""timm's ``AdamP`` and ``SGDP`` on optax_torch (see :mod:`optax_torch.compat.timm`)."""

from __future__ import annotations

from typing import ClassVar

from torch.optim.optimizer import required  # type: ignore[attr-defined]

from optax_torch.base import GradientTransformation
from optax_torch.combine import chain
from optax_torch.compat.timm._checks import IntStepDropIn
from optax_torch.compat.torch_optim._common import TorchOptimDropIn
from optax_torch.transforms import scale_by_adam, scale_by_learning_rate, trace
from optax_torch.transforms.projection import project_scale_invariant

__all__ = ["SGDP", "AdamP"]


def _adamp_tx(
    lr, betas, eps, weight_decay, delta, wd_ratio, nesterov, caution
) -> GradientTransformation:
    """The chain of one ``AdamP`` param group: ``[projection(adam), -lr]``."""
    b1, b2 = betas
    adam = scale_by_adam(b1=b1, b2=b2, eps=eps, nesterov=nesterov, nesterov_shared_debias=True)
    return chain(
        project_scale_invariant(
            adam,
            delta=delta,
            wd_ratio=wd_ratio,
            eps=eps,
            weight_decay=weight_decay if weight_decay > 0 else 0.0,
            caution=caution,
        ),
        scale_by_learning_rate(lr),
    )


class AdamP(IntStepDropIn):
    r"""timm's ``AdamP`` on optax_torch: Adam whose updates to scale-invariant weights are
    projected off their radial direction.

    Per param group, ``project_scale_invariant(scale_by_adam(b1, b2, eps, nesterov,
    nesterov_shared_debias=True), delta, wd_ratio, eps, weight_decay, caution)`` →
    ``scale_by_learning_rate(lr)`` (see :func:`optax_torch.transforms.projection.
    project_scale_invariant`; the decay is decoupled, scaled by ``wd_ratio`` on projected
    weights, and applied only when ``weight_decay > 0``, as in timm).

    Args:
      params: parameters or param groups.
      lr: learning rate, default ``1e-3``.
      betas: ``(beta1, beta2)``, default ``(0.9, 0.999)``.
      eps: default ``1e-8``.
      weight_decay: decoupled weight decay, default ``0``.
      delta: cosine threshold of the projection, default ``0.1``.
      wd_ratio: decay factor of projected weights, default ``0.1``.
      nesterov: Nesterov momentum, default ``False``.
      caution: (spherical) cautious updates, default ``False``.

    Example::

        >>> opt = AdamP(model.parameters(), lr=1e-3, weight_decay=1e-2)

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq``, as in timm.
    """

    _state_key_map: ClassVar[dict[str, str]] = {
        "0.count": "step",
        "0.mu": "exp_avg",
        "0.nu": "exp_avg_sq",
    }
    _complex_as_real: ClassVar[bool] = False

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0,
        delta=0.1,
        wd_ratio=0.1,
        nesterov=False,
        caution=False,
    ) -> None:
        super().__init__(
            params,
            _adamp_tx,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            delta=delta,
            wd_ratio=wd_ratio,
            nesterov=nesterov,
            caution=caution,
        )


def _sgdp_tx(
    lr, momentum, dampening, weight_decay, nesterov, eps, delta, wd_ratio, caution
) -> GradientTransformation:
    """The chain of one ``SGDP`` param group: ``[projection(momentum), -lr]``."""
    return chain(
        project_scale_invariant(
            trace(momentum, nesterov, dampening=dampening),
            delta=delta,
            wd_ratio=wd_ratio,
            eps=eps,
            weight_decay=weight_decay / (1 - momentum) if weight_decay != 0 else 0.0,
            caution=caution,
        ),
        scale_by_learning_rate(lr),
    )


class SGDP(TorchOptimDropIn):
    r"""timm's ``SGDP`` on optax_torch: SGD with momentum whose updates to scale-invariant
    weights are projected off their radial direction.

    Per param group, ``project_scale_invariant(trace(momentum, nesterov, dampening=dampening),
    delta, wd_ratio, eps, weight_decay / (1 - momentum), caution)`` →
    ``scale_by_learning_rate(lr)``: timm's buffer ``momentum * buf + (1 - dampening) * g``
    (from zero), its Nesterov term ``g + momentum * buf`` and decoupled decay
    ``lr * weight_decay * wd_ratio / (1 - momentum)``.

    Args:
      params: parameters or param groups.
      lr: learning rate (required).
      momentum: default ``0``; dampening: default ``0``.
      weight_decay: decoupled weight decay, default ``0``.
      nesterov: Nesterov momentum, default ``False``.
      eps, delta, wd_ratio: of the projection (defaults ``1e-8``, ``0.1``, ``0.1``).
      caution: (spherical) cautious updates, default ``False``.

    Example::

        >>> opt = SGDP(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)

    State per parameter: ``momentum`` (the buffer), as in timm.
    """

    _state_key_map: ClassVar[dict[str, str]] = {"0.trace": "momentum"}
    _complex_as_real: ClassVar[bool] = False

    def __init__(
        self,
        params,
        lr=required,
        momentum=0,
        dampening=0,
        weight_decay=0,
        nesterov=False,
        eps=1e-8,
        delta=0.1,
        wd_ratio=0.1,
        caution=False,
    ) -> None:
        super().__init__(
            params,
            _sgdp_tx,
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            eps=eps,
            delta=delta,
            wd_ratio=wd_ratio,
            caution=caution,
        )
