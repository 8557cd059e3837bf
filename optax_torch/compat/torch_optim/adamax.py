"""``torch.optim.Adamax`` on optax_torch (see :mod:`optax_torch.compat.torch_optim`)."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from optax_torch.base import GradientTransformation, identity
from optax_torch.combine import chain
from optax_torch.compat.torch_optim._common import (
    TorchOptimDropIn,
    check_args,
    check_differentiable,
    is_nonzero,
)
from optax_torch.transforms import (
    add_decayed_weights,
    scale,
    scale_by_adamax,
    scale_by_learning_rate,
)

__all__ = ["Adamax"]


def _adamax_tx(
    lr,
    betas,
    eps,
    weight_decay,
    foreach=None,
    maximize=False,
    differentiable=False,
    capturable=False,
) -> GradientTransformation:
    """The chain of one ``Adamax`` param group: ``[maximize, L2 decay, adamax, -lr]``."""
    del foreach, capturable
    check_differentiable(differentiable)
    b1, b2 = betas
    return chain(
        scale(-1.0) if maximize else identity(),
        add_decayed_weights(weight_decay) if is_nonzero(weight_decay) else identity(),
        scale_by_adamax(b1=b1, b2=b2, eps=eps),
        scale_by_learning_rate(lr),
    )


class Adamax(TorchOptimDropIn):
    r"""``torch.optim.Adamax`` on optax_torch: Adam with an infinity-norm second moment.

    Per param group, the chain ``scale(-1)`` (if ``maximize``) → ``add_decayed_weights
    (weight_decay)`` (L2, before the moments) → ``scale_by_adamax(b1, b2, eps)`` →
    ``scale_by_learning_rate(lr)``, i.e. torch's

    .. math::
        g \leftarrow \pm g + \lambda p,\quad m \leftarrow \beta_1 m + (1-\beta_1) g,\quad
        u \leftarrow \max(\beta_2 u, |g| + \epsilon),\quad
        p \leftarrow p - \frac{\gamma}{1-\beta_1^t}\,\frac{m}{u}

    (``eps`` inside the maximum is both torch's and optax's placement.)

    Args:
      params: parameters or param groups (torch's format).
      lr: learning rate (float or 0-d tensor), default ``2e-3``.
      betas: ``(beta1, beta2)``, default ``(0.9, 0.999)``.
      eps: added to :math:`|g|` inside the maximum, default ``1e-8``.
      weight_decay: L2 penalty (added to the gradient), default ``0``.
      foreach, capturable: accepted and ignored (see the module docstring).
      maximize: maximize the objective, default ``False``.
      differentiable: must be ``False`` (``True`` raises ``NotImplementedError``).

    Example::

        >>> opt = Adamax(model.parameters(), lr=2e-3, weight_decay=1e-4)
        >>> loss.backward(); opt.step(); opt.zero_grad()

    State per parameter: ``step`` (int32 here, a float tensor in torch; converted on load),
    ``exp_avg`` and ``exp_inf``, as in torch.
    """

    _state_key_map: ClassVar[dict[str, str]] = {
        "2.count": "step",
        "2.mu": "exp_avg",
        "2.nu": "exp_inf",
    }

    def __init__(
        self,
        params,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
    ) -> None:
        check_args(lr=lr, eps=eps, betas=betas, weight_decay=weight_decay)
        check_differentiable(differentiable)
        super().__init__(
            params,
            _adamax_tx,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            capturable=capturable,
        )
