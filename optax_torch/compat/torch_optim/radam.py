"""``torch.optim.RAdam`` on optax_torch (see :mod:`optax_torch.compat.torch_optim`)."""

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
    scale_by_learning_rate,
    scale_by_radam,
)

__all__ = ["RAdam"]


def _radam_tx(
    lr,
    betas,
    eps,
    weight_decay,
    maximize=False,
    foreach=None,
    capturable=False,
    decoupled_weight_decay=False,
    differentiable=False,
) -> GradientTransformation:
    """The chain of one ``RAdam`` param group:
    ``[maximize, L2 decay, radam (torch form), decoupled decay, -lr]``."""
    del foreach, capturable
    check_differentiable(differentiable)
    b1, b2 = betas
    decay = add_decayed_weights(weight_decay) if is_nonzero(weight_decay) else identity()
    return chain(
        scale(-1.0) if maximize else identity(),
        identity() if decoupled_weight_decay else decay,
        scale_by_radam(b1=b1, b2=b2, eps=eps, eps_before_debias=True, strict_threshold=True),
        decay if decoupled_weight_decay else identity(),
        scale_by_learning_rate(lr),
    )


class RAdam(TorchOptimDropIn):
    r"""``torch.optim.RAdam`` on optax_torch: Rectified Adam.

    Per param group, the chain ``scale(-1)`` (if ``maximize``) → ``add_decayed_weights
    (weight_decay)`` (L2, before the moments) → ``scale_by_radam(b1, b2, eps,
    eps_before_debias=True, strict_threshold=True)`` (torch's form) → ``add_decayed_weights
    (weight_decay)`` (if ``decoupled_weight_decay``) → ``scale_by_learning_rate(lr)``, i.e.
    torch's

    .. math::
        \rho_\infty = \frac{2}{1-\beta_2} - 1,\quad
        \rho_t = \rho_\infty - \frac{2t\beta_2^t}{1-\beta_2^t},\quad
        \hat m_t = \frac{m_t}{1-\beta_1^t},\\
        p \leftarrow p - \gamma \begin{cases}
          \hat m_t\, r_t\, \frac{\sqrt{1-\beta_2^t}}{\sqrt{v_t} + \epsilon} & \rho_t > 5 \\
          \hat m_t & \text{otherwise}
        \end{cases},\quad
        r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}}

    with Adam's moments :math:`m_t, v_t` of :math:`\pm g + \lambda p` (L2) or of :math:`\pm g`
    (``decoupled_weight_decay``: torch multiplies :math:`p` by :math:`1 - \gamma\lambda` before
    the step; here :math:`\lambda p` is added to the direction before the learning rate, the same
    step).

    Args:
      params: parameters or param groups (torch's format).
      lr: learning rate (float or 0-d tensor), default ``1e-3``.
      betas: ``(beta1, beta2)``, default ``(0.9, 0.999)``.
      eps: added to the root of the raw second moment, default ``1e-8``.
      weight_decay: weight decay, default ``0``.
      decoupled_weight_decay: decoupled (AdamW-style) weight decay, default ``False``.
      foreach, capturable: accepted and ignored (see the module docstring).
      maximize: maximize the objective, default ``False``.
      differentiable: must be ``False`` (``True`` raises ``NotImplementedError``).

    Example::

        >>> opt = RAdam(model.parameters(), lr=1e-3, weight_decay=1e-2, decoupled_weight_decay=True)
        >>> loss.backward(); opt.step(); opt.zero_grad()

    State per parameter: ``step`` (int32 here, a float tensor in torch; converted on load),
    ``exp_avg`` and ``exp_avg_sq``, as in torch.
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
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        check_args(lr=lr, eps=eps, betas=betas, weight_decay=weight_decay)
        check_differentiable(differentiable)
        super().__init__(
            params,
            _radam_tx,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            maximize=maximize,
            foreach=foreach,
            capturable=capturable,
            decoupled_weight_decay=decoupled_weight_decay,
            differentiable=differentiable,
        )
