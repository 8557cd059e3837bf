"""timm's ``RMSpropTF`` on optax_torch (see :mod:`optax_torch.compat.timm`)."""

from __future__ import annotations

from typing import ClassVar

from optax_torch.base import GradientTransformation, identity
from optax_torch.combine import chain
from optax_torch.compat.timm._checks import check_args, check_scalar, max_lr_snapshot
from optax_torch.compat.torch_optim._common import TorchOptimDropIn, is_nonzero
from optax_torch.transforms import (
    add_decayed_weights,
    scale,
    scale_by_learning_rate,
    scale_by_rms,
    scale_by_stddev,
    trace,
)
from optax_torch.transforms.caution import caution as cautious
from optax_torch.transforms.monitoring import count_steps

__all__ = ["RMSpropTF"]


def _rmsprop_tf_tx(
    lr,
    momentum,
    alpha,
    eps,
    centered,
    weight_decay,
    decoupled_decay,
    corrected_weight_decay,
    max_lr_snapshot,
    lr_in_momentum,
    caution,
    foreach,
) -> GradientTransformation:
    """The chain of one ``RMSpropTF`` param group: ``[L2 decay, step count, rms | stddev (eps in
    the root, v from 1), (lr,) momentum (cautious), decoupled decay, -lr | -1]``."""
    del foreach
    decay = is_nonzero(weight_decay)
    if centered:
        scaling = scale_by_stddev(decay=alpha, eps=eps, initial_scale=1.0, eps_in_sqrt=True)
    else:
        scaling = scale_by_rms(decay=alpha, eps=eps, initial_scale=1.0, eps_in_sqrt=True)
    lr_first = momentum > 0 and lr_in_momentum  # TF: the lr is accumulated in the momentum
    if momentum > 0:
        mom = chain(
            scale_by_learning_rate(lr, flip_sign=False) if lr_first else identity(),
            trace(decay=momentum),
        )
        direction = cautious(chain(scaling, mom)) if caution else chain(scaling, mom)
    else:
        direction = scaling
    # Decoupled decay p <- p (1 - s * wd), s = lr (or lr^2 / max_lr): added before the last
    # scaling, which is lr unless the lr is already in the momentum.
    ratio = lr / max_lr_snapshot if corrected_weight_decay else 1.0
    wd = weight_decay * ratio * (lr if lr_first else 1.0)
    return chain(
        add_decayed_weights(weight_decay) if decay and not decoupled_decay else identity(),
        count_steps(),
        direction,
        add_decayed_weights(wd) if decay and decoupled_decay else identity(),
        scale(-1.0) if lr_first else scale_by_learning_rate(lr),
    )


class RMSpropTF(TorchOptimDropIn):
    r"""timm's ``RMSpropTF`` (RMSprop with TensorFlow's conventions) on optax_torch.

    Per param group, the chain ``add_decayed_weights(weight_decay)`` (L2, unless
    ``decoupled_decay``) → ``count_steps()`` (timm's ``step``) → ``scale_by_rms(alpha, eps,
    initial_scale=1, eps_in_sqrt=True)`` or, if ``centered``, ``scale_by_stddev(...)`` the same
    → (if ``momentum > 0``) ``scale_by_learning_rate(lr, flip_sign=False)`` (if
    ``lr_in_momentum``) → ``trace(momentum)``, wrapped in ``caution`` if ``caution`` → decoupled
    ``add_decayed_weights`` → ``scale(-1)`` (lr in the momentum) or ``scale_by_learning_rate(lr)``:

    .. math::
        g \leftarrow g + \lambda p,\quad v \leftarrow v + (1-\alpha)(g^2 - v),\quad
        \bar g \leftarrow \bar g + (1-\alpha)(g - \bar g) \;\text{(centered)},\\
        d = \sqrt{v - \bar g^2 + \epsilon} \;\text{(centered) or}\; \sqrt{v + \epsilon},\quad
        b \leftarrow \mu b + \gamma g/d,\quad p \leftarrow p - b

    (``lr_in_momentum=False``: :math:`b \leftarrow \mu b + g/d,\ p \leftarrow p - \gamma b`; no
    momentum: :math:`p \leftarrow p - \gamma g/d`), with :math:`v` starting at **1**,
    :math:`\bar g, b` at 0. With ``decoupled_decay`` the decay is :math:`p \leftarrow p(1 - s
    \lambda)` instead of the L2 term, :math:`s = \gamma` (or :math:`\gamma^2 / \gamma_{max}` with
    ``corrected_weight_decay``, :math:`\gamma_{max}` the constructor's lr).

    Args:
      params: parameters or param groups (torch's format).
      lr: learning rate, default ``1e-2``.
      alpha: smoothing constant, default ``0.9``.
      eps: added inside the square root, default ``1e-10``.
      weight_decay: weight decay, default ``0``.
      momentum: momentum factor, default ``0``.
      centered: divide by the centred RMS, default ``False``.
      decoupled_decay: decoupled weight decay (AdamW-style), default ``False``.
      corrected_weight_decay: decoupled decay scaled by ``lr**2 / max_lr``, default ``False``.
      lr_in_momentum: accumulate the lr in the momentum buffer (TensorFlow), default ``True``.
      caution: cautious momentum (masked where it disagrees with the gradient), default
        ``False`` (no effect without momentum, as in timm).
      foreach: accepted and ignored.

    Example::

        >>> opt = RMSpropTF(model.parameters(), lr=1e-2, momentum=0.9, alpha=0.9, eps=1e-3)
        >>> loss.backward(); opt.step(); opt.zero_grad()

    State per parameter, as timm: ``step``, ``square_avg``, ``momentum_buffer`` (if ``momentum
    > 0``) and ``grad_avg`` (if ``centered``). Deviations: ``alpha`` must be in ``[0, 1)`` (timm
    accepts any ``alpha >= 0``; ``ValueError`` naming ``decay`` otherwise); ``step`` is an int32
    count (timm: a float tensor).
    """

    _state_key_map: ClassVar[dict[str, str]] = {
        "1.count": "step",
        "2.nu": "square_avg",
        "2.mu": "grad_avg",
        "2.0.nu": "square_avg",
        "2.0.mu": "grad_avg",
        "2.1.1.trace": "momentum_buffer",
    }

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        alpha: float = 0.9,
        eps: float = 1e-10,
        weight_decay: float = 0,
        momentum: float = 0.0,
        centered: bool = False,
        decoupled_decay: bool = False,
        corrected_weight_decay: bool = False,
        lr_in_momentum: bool = True,
        caution: bool = False,
        foreach: bool | None = None,
    ) -> None:
        check_scalar("learning rate", lr)
        check_scalar("epsilon", eps)
        check_scalar("momentum", momentum)
        check_scalar("weight_decay", weight_decay)
        check_args(alpha=alpha)
        max_lr = max_lr_snapshot(lr, corrected_weight_decay)
        super().__init__(
            params,
            _rmsprop_tf_tx,
            lr=lr,
            momentum=momentum,
            alpha=alpha,
            eps=eps,
            centered=centered,
            weight_decay=weight_decay,
            decoupled_decay=decoupled_decay,
            corrected_weight_decay=corrected_weight_decay,
            max_lr_snapshot=max_lr,
            lr_in_momentum=lr_in_momentum,
            caution=caution,
            foreach=foreach,
        )
