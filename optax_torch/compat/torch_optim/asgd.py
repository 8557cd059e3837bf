"""``torch.optim.ASGD`` on optax_torch (see :mod:`optax_torch.compat.torch_optim`)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor
from torch.optim.optimizer import _default_to_fused_or_foreach

from optax_torch.base import GradientTransformation, identity
from optax_torch.combine import chain
from optax_torch.compat.torch_optim._common import (
    TorchOptimDropIn,
    check_args,
    check_differentiable,
    is_nonzero,
    to_scalar,
)
from optax_torch.transforms import add_decayed_weights, scale
from optax_torch.transforms.averaging import polyak_average, scale_by_asgd

__all__ = ["ASGD"]


def _asgd_tx(
    lr,
    lambd,
    alpha,
    t0,
    weight_decay,
    foreach=False,
    maximize=False,
    differentiable=False,
    capturable=False,
) -> GradientTransformation:
    """The chain of one ``ASGD`` param group:
    ``[maximize, L2 decay, asgd step (lr, lambd, alpha), Polyak average (t0)]``."""
    del capturable
    check_differentiable(differentiable)
    return chain(
        scale(-1.0) if maximize else identity(),
        add_decayed_weights(weight_decay) if is_nonzero(weight_decay) else identity(),
        scale_by_asgd(to_scalar(lr), lambd=lambd, alpha=alpha, foreach=foreach),
        polyak_average(t0),
    )


class ASGD(TorchOptimDropIn):
    r"""``torch.optim.ASGD`` on optax_torch: averaged stochastic gradient descent.

    Per param group, the chain ``scale(-1)`` (if ``maximize``) → ``add_decayed_weights
    (weight_decay)`` (L2) → :func:`~optax_torch.transforms.averaging.scale_by_asgd` ``(lr,
    lambd, alpha)`` (the decaying step size :math:`\eta` and the decay of the weights) →
    :func:`~optax_torch.transforms.averaging.polyak_average` ``(t0)`` (the running average
    ``ax`` of the parameters, in the state; the updates pass through), i.e. torch's

    .. math::
        g \leftarrow \pm g + \lambda_{wd}\, p,\quad p \leftarrow p\,(1 - \lambda\eta) - \eta\, g,
        \quad a_x \leftarrow a_x + \mu\,(p - a_x)\ (a_x \leftarrow p \text{ if } \mu = 1),\\
        \eta \leftarrow \frac{\gamma}{(1 + \lambda\gamma k)^{\alpha}},\quad
        \mu \leftarrow \frac{1}{\max(1, k - t_0)}

    at step :math:`k`, with :math:`\eta = \gamma` and :math:`\mu = 1` at the first step.
    :math:`\eta` is computed at the end of a step from that step's learning rate: an LR
    scheduler changes the step size one step later, as in torch.

    Args:
      params: parameters or param groups (torch's format).
      lr: learning rate :math:`\gamma` (float or 0-d tensor), default ``1e-2``.
      lambd: decay term :math:`\lambda`, default ``1e-4``.
      alpha: power of the step-size decay, default ``0.75``.
      t0: step at which averaging starts, default ``1e6``.
      weight_decay: L2 penalty :math:`\lambda_{wd}`, default ``0``.
      foreach: torch's multi-tensor path or not (``None``: torch's choice, made at each step
        from the parameters of the group that have a gradient, all of them before the first
        gradient): one implementation, but :math:`\eta` is computed in the arithmetic of the
        chosen torch path (float32 for the multi-tensor one), so that both match torch;
        default ``None``.
      capturable: accepted and ignored (the scalar state stays on the CPU), default ``False``.
      maximize: maximize the objective, default ``False``.
      differentiable: must be ``False`` (``True`` raises ``NotImplementedError``).

    Example::

        >>> opt = ASGD(model.parameters(), lr=0.01, t0=1000)
        >>> loss.backward(); opt.step(); opt.zero_grad()
        >>> averaged = [opt.state[p]["ax"] for p in model.parameters()]

    State per parameter, as in torch: ``step`` (int32 here, float32 in torch), ``eta`` and
    ``mu`` (0-d, float32 unless the default dtype is float64, as in torch) and ``ax`` (the
    average).
    """

    _state_key_map: ClassVar[dict[str, str]] = {
        "2.count": "step",
        "2.eta": "eta",
        "3.count": "step",
        "3.mu": "mu",
        "3.ax": "ax",
    }

    def _group_hyperparams(self, group: dict[str, Any]) -> dict[str, Any]:
        # torch's foreach=None, resolved here (the transform takes a plain bool): torch's own rule
        # over the parameters that have a gradient (all of them before the first gradient).
        hp = super()._group_hyperparams(group)
        if hp["foreach"] is None:
            params = group["params"]
            with_grad = [p for p in params if p.grad is not None] or params
            hp["foreach"] = _default_to_fused_or_foreach(with_grad, False, use_fused=False)[1]
        return hp

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-2,
        lambd: float = 1e-4,
        alpha: float = 0.75,
        t0: float = 1e6,
        weight_decay: float = 0,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
    ) -> None:
        check_args(lr=lr, weight_decay=weight_decay)
        check_differentiable(differentiable)
        super().__init__(
            params,
            _asgd_tx,
            lr=lr,
            lambd=lambd,
            alpha=alpha,
            t0=t0,
            weight_decay=weight_decay,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            capturable=capturable,
        )
