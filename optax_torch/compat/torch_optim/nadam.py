"""``torch.optim.NAdam`` on optax_torch (see :mod:`optax_torch.compat.torch_optim`)."""

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
from optax_torch.transforms import add_decayed_weights, scale, scale_by_learning_rate
from optax_torch.transforms.moments import scale_by_nadam

__all__ = ["NAdam"]


def _nadam_tx(
    lr,
    betas,
    eps,
    weight_decay,
    momentum_decay,
    decoupled_weight_decay,
    maximize=False,
    foreach=None,
    capturable=False,
    differentiable=False,
) -> GradientTransformation:
    """The chain of one ``NAdam`` param group:
    ``[maximize, L2 decay, nadam, decoupled decay, -lr]``."""
    del foreach, capturable
    check_differentiable(differentiable)
    b1, b2 = betas
    decay = add_decayed_weights(weight_decay) if is_nonzero(weight_decay) else identity()
    return chain(
        scale(-1.0) if maximize else identity(),
        identity() if decoupled_weight_decay else decay,
        scale_by_nadam(b1, b2, eps, momentum_decay, mu_product_dtype=None),
        decay if decoupled_weight_decay else identity(),
        scale_by_learning_rate(lr),
    )


class NAdam(TorchOptimDropIn):
    r"""``torch.optim.NAdam`` on optax_torch: Adam with Dozat's Nesterov momentum schedule.

    Per param group, the chain ``scale(-1)`` (if ``maximize``) → ``add_decayed_weights
    (weight_decay)`` (L2, before the moments) → ``scale_by_nadam(b1, b2, eps, momentum_decay,
    mu_product_dtype=None)`` → ``add_decayed_weights(weight_decay)`` (if
    ``decoupled_weight_decay``) → ``scale_by_learning_rate(lr)``, i.e. torch's

    .. math::
        \mu_t = \beta_1 (1 - \tfrac12\, 0.96^{t\psi}),\quad
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2,
        \\
        p \leftarrow p - \gamma \Big(\frac{1-\mu_t}{1-\prod_{i\le t}\mu_i}\,\frac{g_t}{d_t}
          + \frac{\mu_{t+1}}{1-\prod_{i\le t+1}\mu_i}\,\frac{m_t}{d_t}\Big),\quad
        d_t = \sqrt{v_t/(1-\beta_2^t)} + \epsilon

    (:math:`\psi` = ``momentum_decay``). torch's decoupled decay ``p *= 1 - lr * weight_decay``
    before the step is here ``weight_decay * p`` added to the direction before the learning
    rate: the same step.

    Args:
      params: parameters or param groups (torch's format).
      lr: learning rate (float or 0-d tensor), default ``2e-3``.
      betas: ``(beta1, beta2)``, default ``(0.9, 0.999)``.
      eps: added to the denominator, default ``1e-8``.
      weight_decay: weight decay, default ``0``.
      momentum_decay: :math:`\psi`, default ``4e-3``.
      decoupled_weight_decay: decoupled (AdamW-style) weight decay, default ``False``.
      foreach, capturable: accepted and ignored (see the module docstring).
      maximize: maximize the objective, default ``False``.
      differentiable: must be ``False`` (``NotImplementedError`` otherwise).

    Example::

        >>> opt = NAdam(model.parameters(), lr=2e-3, weight_decay=0.01, decoupled_weight_decay=True)
        >>> loss.backward(); opt.step(); opt.zero_grad()

    State per parameter: ``step``, ``mu_product`` (0-d, in torch's scalar dtype: ``float32``
    unless the default dtype is ``float64``), ``exp_avg`` and ``exp_avg_sq``, as in torch.
    Deviation: with a tensor ``lr``, torch computes the step's coefficients (and ``1 - lr *
    weight_decay``) in the tensor's dtype; here always in float64 (a float32 ``lr`` with float64
    parameters differs from torch at float32 rounding, ~1e-8 relative).
    """

    _state_key_map: ClassVar[dict[str, str]] = {
        "2.count": "step",
        "2.mu_product": "mu_product",
        "2.mu": "exp_avg",
        "2.nu": "exp_avg_sq",
    }

    def __init__(
        self,
        params,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        check_args(
            lr=lr, eps=eps, betas=betas, weight_decay=weight_decay, momentum_decay=momentum_decay
        )
        check_differentiable(differentiable)
        super().__init__(
            params,
            _nadam_tx,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            momentum_decay=momentum_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
            foreach=foreach,
            capturable=capturable,
            differentiable=differentiable,
        )
