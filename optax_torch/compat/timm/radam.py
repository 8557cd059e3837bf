"""timm's ``RAdamLegacy`` on optax_torch (see :mod:`optax_torch.compat.timm`)."""

from __future__ import annotations

from typing import ClassVar

from optax_torch.base import GradientTransformation, identity
from optax_torch.combine import chain
from optax_torch.compat.timm._checks import IntStepDropIn
from optax_torch.compat.torch_optim._common import is_nonzero
from optax_torch.transforms import add_decayed_weights, scale_by_learning_rate, scale_by_radam

__all__ = ["RAdamLegacy"]


def _radam_legacy_tx(
    lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0
) -> GradientTransformation:
    """The chain of one ``RAdamLegacy`` param group: ``[radam, decoupled decay, -lr]``."""
    b1, b2 = betas
    return chain(
        scale_by_radam(b1=b1, b2=b2, eps=eps, eps_before_debias=True, strict_threshold=False),
        add_decayed_weights(weight_decay) if is_nonzero(weight_decay) else identity(),
        scale_by_learning_rate(lr),
    )


class RAdamLegacy(IntStepDropIn):
    r"""timm's ``RAdamLegacy`` (registry name ``radamlegacy``) on optax_torch: Rectified Adam
    (the reference implementation of Liu et al.) with decoupled weight decay.

    Per param group, the chain ``scale_by_radam(b1, b2, eps, eps_before_debias=True)``
    (rectified where :math:`\rho_k \ge 5`, as timm) → ``add_decayed_weights(weight_decay)``
    (decoupled: timm multiplies the parameters by :math:`1 - \gamma\lambda`) →
    ``scale_by_learning_rate(lr)``.

    Args:
      params: parameters or param groups (torch's format).
      lr: learning rate, default ``1e-3``.
      betas: ``(beta1, beta2)``, default ``(0.9, 0.999)``.
      eps: added to the root of the raw second moment, default ``1e-8``.
      weight_decay: decoupled weight decay, default ``0``.

    Deviation: timm computes in float32 (state and step) whatever the parameter's dtype and
    copies the result back; here the state and the step have the parameter's dtype (identical
    for float32 parameters; more precise for float64, less for bfloat16 / float16).

    Example::

        >>> opt = RAdamLegacy(model.parameters(), lr=1e-3)

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq``, as in timm (:meth:`state_dict`
    writes ``step`` as a Python ``int``, like timm).
    """

    _state_key_map: ClassVar[dict[str, str]] = {
        "0.count": "step",
        "0.mu": "exp_avg",
        "0.nu": "exp_avg_sq",
    }

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0) -> None:
        super().__init__(
            params, _radam_legacy_tx, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay
        )
