"""timm's ``AdaBelief`` on optax_torch (see :mod:`optax_torch.compat.timm`)."""

from __future__ import annotations

from typing import ClassVar

from optax_torch.base import GradientTransformation, identity
from optax_torch.combine import chain
from optax_torch.compat.timm._checks import IntStepDropIn
from optax_torch.compat.torch_optim._common import check_args, is_nonzero
from optax_torch.transforms import add_decayed_weights, scale_by_learning_rate
from optax_torch.transforms.adaptive import scale_by_belief

__all__ = ["AdaBelief"]


def _adabelief_tx(
    lr,
    betas,
    eps,
    weight_decay,
    amsgrad,
    degenerated_to_sgd,
    decoupled_decay,
    rectify,
    fixed_decay,
    foreach=None,
) -> GradientTransformation:
    """The chain of one ``AdaBelief`` param group:
    ``[L2 decay, belief, decoupled decay, -lr, fixed decay]``."""
    del foreach
    b1, b2 = betas
    wd = is_nonzero(weight_decay)
    return chain(
        add_decayed_weights(weight_decay) if wd and not decoupled_decay else identity(),
        scale_by_belief(
            b1=b1,
            b2=b2,
            eps=eps,
            eps_root=eps,
            amsgrad=amsgrad,
            rectify=rectify,
            skip_intractable=not degenerated_to_sgd,
        ),
        add_decayed_weights(weight_decay)
        if wd and decoupled_decay and not fixed_decay
        else identity(),
        scale_by_learning_rate(lr),
        # p * (1 - weight_decay), not scaled by lr: subtract weight_decay * p after the lr.
        add_decayed_weights(-weight_decay)
        if wd and decoupled_decay and fixed_decay
        else identity(),
    )


class AdaBelief(IntStepDropIn):
    r"""timm's ``AdaBelief`` on optax_torch.

    Per param group, the chain ``add_decayed_weights(weight_decay)`` (L2, unless
    ``decoupled_decay``) → ``scale_by_belief(b1, b2, eps, eps_root=eps, amsgrad, rectify,
    skip_intractable=not degenerated_to_sgd)`` (AdaBelief with its official options, see
    :func:`optax_torch.transforms.scale_by_belief`) → ``add_decayed_weights(weight_decay)``
    (decoupled, scaled by the lr) → ``scale_by_learning_rate(lr)`` → ``add_decayed_weights
    (-weight_decay)`` (decoupled with ``fixed_decay``: ``p * (1 - weight_decay)``, not scaled
    by the lr).

    Args:
      params: parameters or param groups.
      lr: learning rate, default ``1e-3``.
      betas: ``(beta1, beta2)``, default ``(0.9, 0.999)``.
      eps: default ``1e-16`` (added to the second moment and to its root).
      weight_decay: default ``0``.
      amsgrad: AMSGrad variant, default ``False``.
      decoupled_decay: decoupled (AdamW) weight decay, default ``True``.
      fixed_decay: decoupled decay not scaled by the lr, default ``False``.
      rectify: RAdam's rectified update, default ``True``.
      degenerated_to_sgd: with ``rectify``, SGD-with-momentum steps while the variance is
        intractable, default ``True``.
      foreach: accepted and ignored.

    Example::

        >>> opt = AdaBelief(model.parameters(), lr=1e-3, weight_decay=1e-2)

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_var``, ``max_exp_avg_var`` (with
    ``amsgrad``), as in timm.
    """

    _state_key_map: ClassVar[dict[str, str]] = {
        "1.count": "step",
        "1.mu": "exp_avg",
        "1.nu": "exp_avg_var",
        "1.nu_max": "max_exp_avg_var",
    }
    _complex_as_real: ClassVar[bool] = False

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-16,
        weight_decay=0,
        amsgrad=False,
        decoupled_decay=True,
        fixed_decay=False,
        rectify=True,
        degenerated_to_sgd=True,
        foreach: bool | None = None,
    ) -> None:
        check_args(lr=lr, eps=eps, betas=betas)
        super().__init__(
            params,
            _adabelief_tx,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            degenerated_to_sgd=degenerated_to_sgd,
            decoupled_decay=decoupled_decay,
            rectify=rectify,
            fixed_decay=fixed_decay,
            foreach=foreach,
        )
