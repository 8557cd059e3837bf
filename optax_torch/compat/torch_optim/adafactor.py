"""``torch.optim.Adafactor`` on optax_torch (see :mod:`optax_torch.compat.torch_optim`)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from optax_torch.base import GradientTransformation, identity
from optax_torch.combine import chain
from optax_torch.compat.torch_optim._common import TorchOptimDropIn, is_nonzero, to_scalar
from optax_torch.transforms import (
    add_decayed_weights,
    clip_by_block_rms,
    scale,
    scale_by_param_block_rms,
)
from optax_torch.transforms.factorized import (
    scale_by_factored_rms_torch,
    scale_by_relative_step_size,
)

__all__ = ["Adafactor"]


def _adafactor_tx(
    lr,
    beta2_decay,
    eps,
    d,
    weight_decay,
    foreach=None,
    maximize=False,
) -> GradientTransformation:
    """The chain of one ``Adafactor`` param group: ``[maximize, factored rms, clip d,
    param rms, relative step, decoupled decay, -1]``."""
    del foreach
    eps1, eps2 = eps
    lr = to_scalar(lr)
    return chain(
        scale(-1.0) if maximize else identity(),
        scale_by_factored_rms_torch(beta2_decay=beta2_decay, eps=eps1),
        clip_by_block_rms(d),
        scale_by_param_block_rms(min_scale=eps2),
        scale_by_relative_step_size(max_step_size=lr),
        add_decayed_weights(lr * weight_decay) if is_nonzero(weight_decay) else identity(),
        scale(-1.0),
    )


class Adafactor(TorchOptimDropIn):
    r"""``torch.optim.Adafactor`` on optax_torch.

    Per param group, the chain ``scale(-1)`` (if ``maximize``) →
    :func:`~optax_torch.transforms.factorized.scale_by_factored_rms_torch` ``(beta2_decay,
    eps1)`` (torch's factored second moment, over the last two axes) →
    ``clip_by_block_rms(d)`` → ``scale_by_param_block_rms(eps2)`` →
    :func:`~optax_torch.transforms.factorized.scale_by_relative_step_size` ``(lr)`` →
    ``add_decayed_weights(lr * weight_decay)`` → ``scale(-1)``, i.e. torch's

    .. math::
        \hat\beta_{2,t} = 1 - t^{\tau},\quad \rho_t = \min(\gamma, 1/\sqrt t),\quad
        \alpha_t = \max(\epsilon_2, \mathrm{RMS}(\theta_{t-1}))\,\rho_t,\\
        U_t = G_t / \max(\sqrt{\hat V_t}, \epsilon_1),\quad
        \theta_t = \theta_{t-1} - \gamma\lambda\theta_{t-1}
        - \alpha_t\, U_t / \max(1, \mathrm{RMS}(U_t)/d)

    (:math:`\hat V_t` the factored estimate :math:`R_t C_t / \max(\mathrm{mean}(R_t),
    \epsilon_1)` for tensors of rank >= 2, the full EMA of :math:`G_t^2` otherwise).

    Args:
      params: parameters or param groups (torch's format).
      lr: learning rate (float or 0-d tensor): the largest relative step size and the weight
        decay's factor, default ``1e-2``.
      beta2_decay: :math:`\tau`, default ``-0.8``.
      eps: ``(eps1, eps2)``, default ``(None, 1e-3)``; ``eps1=None`` is the parameter dtype's
        ``torch.finfo(dtype).eps``.
      d: update clipping threshold, default ``1.0``.
      weight_decay: decoupled weight decay (times ``lr``), default ``0.0``.
      foreach: accepted and ignored (see the module docstring), default ``None``.
      maximize: maximize the objective, default ``False``.

    Example::

        >>> opt = Adafactor(model.parameters(), lr=1e-2, weight_decay=1e-4)
        >>> loss.backward(); opt.step(); opt.zero_grad()

    State per parameter, as in torch: ``step``; ``row_var`` (shape with the last axis 1) and
    ``col_var`` (shape with the second-to-last axis 1) for parameters of rank >= 2,
    ``variance`` for the others. torch.optim.Adafactor has no ``fused``, ``capturable`` or
    ``differentiable`` arguments. Deviation: with ``eps1=None`` each parameter gets its own
    dtype's epsilon (torch uses the first parameter's for the whole group: they differ only in
    groups that mix dtypes).
    """

    _complex_as_real: ClassVar[bool] = False  # torch's Adafactor rejects complex parameters
    _state_key_map: ClassVar[dict[str, str]] = {
        "1.count": "step",
        "1.row_var": "row_var",
        "1.col_var": "col_var",
        "1.variance": "variance",
        "4.count": "step",
    }

    def _step_group(self, gi: int, group: dict[str, Any], extra_args: dict[str, Any]) -> None:
        # torch's error (type and message) for complex parameters, before any state changes.
        if any(p.grad is not None and torch.is_complex(p) for p in group["params"]):
            raise RuntimeError("Adafactor does not support complex parameters")
        super()._step_group(gi, group, extra_args)

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-2,
        beta2_decay: float = -0.8,
        eps: tuple[float | None, float] = (None, 1e-3),
        d: float = 1.0,
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not lr >= 0.0:
            raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
        if not beta2_decay <= 0.0:
            raise ValueError(f"beta2_decay should be <= 0 but is: {beta2_decay}")
        if eps[0] is not None and not eps[0] >= 0.0:
            raise ValueError(f"epsilon1 should be >= 0 but is: {eps[0]}")
        if not eps[1] >= 0.0:
            raise ValueError(f"epsilon2 should be >= 0 but is: {eps[1]}")
        if not d >= 1.0:
            raise ValueError(f"Clipping threshold d should be >= 1 but is: {d}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay should be >= 0 but is: {weight_decay}")
        super().__init__(
            params,
            _adafactor_tx,
            lr=lr,
            beta2_decay=beta2_decay,
            eps=eps,
            d=d,
            weight_decay=weight_decay,
            foreach=foreach,
            maximize=maximize,
        )
