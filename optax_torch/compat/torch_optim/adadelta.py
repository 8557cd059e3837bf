"""``torch.optim.Adadelta`` on optax_torch (see :mod:`optax_torch.compat.torch_optim`)."""

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
    count_steps,
    scale,
    scale_by_adadelta,
    scale_by_learning_rate,
)

__all__ = ["Adadelta"]


def _adadelta_tx(
    lr,
    rho,
    eps,
    weight_decay,
    maximize=False,
    capturable=False,
    foreach=None,
    differentiable=False,
) -> GradientTransformation:
    """The chain of one ``Adadelta`` param group:
    ``[maximize, L2 decay, count_steps, adadelta, -lr]``."""
    del foreach, capturable
    check_differentiable(differentiable)
    return chain(
        scale(-1.0) if maximize else identity(),
        add_decayed_weights(weight_decay) if is_nonzero(weight_decay) else identity(),
        count_steps(),
        scale_by_adadelta(rho=rho, eps=eps),
        scale_by_learning_rate(lr),
    )


class Adadelta(TorchOptimDropIn):
    r"""``torch.optim.Adadelta`` on optax_torch.

    Per param group, the chain ``scale(-1)`` (if ``maximize``) → ``add_decayed_weights
    (weight_decay)`` (L2) → ``count_steps()`` (torch's ``step``, unused by the update) →
    ``scale_by_adadelta(rho, eps)`` → ``scale_by_learning_rate(lr)``, i.e. torch's

    .. math::
        g \leftarrow \pm g + \lambda p,\quad s \leftarrow \rho s + (1-\rho) g^2,\quad
        \Delta = \frac{\sqrt{a + \epsilon}}{\sqrt{s + \epsilon}}\, g,\quad
        a \leftarrow \rho a + (1-\rho) \Delta^2,\quad p \leftarrow p - \gamma \Delta

    Args:
      params: parameters or param groups (torch's format).
      lr: coefficient of the delta before it is applied (float or 0-d tensor), default ``1.0``.
      rho: decay rate of both running averages, default ``0.9``.
      eps: added inside both square roots, default ``1e-6``.
      weight_decay: L2 penalty (added to the gradient), default ``0``.
      foreach, capturable: accepted and ignored (see the module docstring).
      maximize: maximize the objective, default ``False``.
      differentiable: must be ``False`` (``True`` raises ``NotImplementedError``).

    Example::

        >>> opt = Adadelta(model.parameters(), lr=1.0, rho=0.95)
        >>> loss.backward(); opt.step(); opt.zero_grad()

    State per parameter: ``step`` (int32 here, a float tensor in torch; converted on load),
    ``square_avg`` (:math:`s`) and ``acc_delta`` (:math:`a`), as in torch.
    """

    _state_key_map: ClassVar[dict[str, str]] = {
        "2.count": "step",
        "3.e_g": "square_avg",
        "3.e_x": "acc_delta",
    }

    def __init__(
        self,
        params,
        lr: float | Tensor = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        capturable: bool = False,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        check_args(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay)
        check_differentiable(differentiable)
        super().__init__(
            params,
            _adadelta_tx,
            lr=lr,
            rho=rho,
            eps=eps,
            weight_decay=weight_decay,
            maximize=maximize,
            capturable=capturable,
            foreach=foreach,
            differentiable=differentiable,
        )
