"""timm's ``LaProp`` on optax_torch (see :mod:`optax_torch.compat.timm`)."""

from __future__ import annotations

from typing import ClassVar

from optax_torch.base import GradientTransformation, identity
from optax_torch.combine import chain
from optax_torch.compat.timm._checks import check_args, check_scalar, max_lr_snapshot
from optax_torch.compat.torch_optim._common import TorchOptimDropIn
from optax_torch.transforms import add_decayed_weights, scale, scale_by_learning_rate
from optax_torch.transforms.caution import caution as cautious
from optax_torch.transforms.laprop import scale_by_laprop

__all__ = ["LaProp"]


def _laprop_tx(
    lr, betas, eps, weight_decay, caution, corrected_weight_decay, max_lr_snapshot, foreach=None
) -> GradientTransformation:
    """The chain of one ``LaProp`` param group: ``[laprop (+ caution), -lr, decay of the
    updated parameter]``."""
    del foreach
    b1, b2 = betas
    lr = float(lr)
    laprop = scale_by_laprop(b1=b1, b2=b2, eps=eps, learning_rate=lr)
    # timm decays the *updated* parameter: p' = (p + u)(1 - c) = p + u (1 - c) - c p.
    c = (lr**2 / max_lr_snapshot if corrected_weight_decay else lr) * weight_decay
    return chain(
        cautious(laprop) if caution else laprop,
        scale_by_learning_rate(lr),
        scale(1.0 - c) if weight_decay != 0 else identity(),
        add_decayed_weights(-c) if weight_decay != 0 else identity(),
    )


class LaProp(TorchOptimDropIn):
    r"""timm's ``LaProp`` on optax_torch.

    Per param group, ``scale_by_laprop(b1, b2, eps, learning_rate=lr)`` (wrapped in
    :func:`optax_torch.caution` with ``caution``; see :mod:`optax_torch.transforms.laprop`) →
    ``scale_by_learning_rate(lr)`` → ``scale(1 - c)`` → ``add_decayed_weights(-c)`` with
    :math:`c` = ``lr * weight_decay`` (``lr ** 2 / max_lr * weight_decay`` with
    ``corrected_weight_decay``): timm decays the parameter after its update.

    Args:
      params: parameters or param groups.
      lr: learning rate, default ``4e-4``.
      betas: ``(beta1, beta2)``, default ``(0.9, 0.999)``.
      eps: default ``1e-15``.
      weight_decay: decoupled weight decay, default ``0``.
      caution: cautious updates, default ``False``.
      corrected_weight_decay: decay ``lr ** 2 / max_lr`` (``max_lr`` the constructor's lr),
        default ``False``.
      foreach: accepted and ignored.

    Example::

        >>> opt = LaProp(model.parameters(), lr=4e-4, weight_decay=0.01)

    State per parameter: ``step``, ``exp_avg`` (in lr units), ``exp_avg_lr_1`` (the average of
    the lrs), ``exp_avg_lr_2`` (``1 - beta2 ** step``), ``exp_avg_sq``, as in timm (here the
    lr average is a 0-d float64 tensor, a Python float in timm).
    """

    _state_key_map: ClassVar[dict[str, str]] = {
        "0.count": "step",
        "0.mu": "exp_avg",
        "0.nu": "exp_avg_sq",
        "0.lr_avg": "exp_avg_lr_1",
        "0.nu_norm": "exp_avg_lr_2",
    }
    _complex_as_real: ClassVar[bool] = True

    def __init__(
        self,
        params,
        lr: float = 4e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-15,
        weight_decay: float = 0.0,
        caution: bool = False,
        corrected_weight_decay: bool = False,
        foreach: bool | None = None,
    ) -> None:
        check_scalar("learning rate", lr)
        check_scalar("epsilon", eps)
        check_args(betas=betas)
        super().__init__(
            params,
            _laprop_tx,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            caution=caution,
            corrected_weight_decay=corrected_weight_decay,
            max_lr_snapshot=max_lr_snapshot(lr, corrected_weight_decay),
            foreach=foreach,
        )
