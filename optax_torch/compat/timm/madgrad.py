"""timm's ``MADGRAD`` on optax_torch (see :mod:`optax_torch.compat.timm`)."""

from __future__ import annotations

from typing import ClassVar

from optax_torch.base import GradientTransformation, identity
from optax_torch.combine import chain
from optax_torch.compat.timm._checks import IntStepDropIn
from optax_torch.compat.torch_optim._common import is_nonzero
from optax_torch.contrib.madgrad import scale_by_madgrad
from optax_torch.transforms import add_decayed_weights

__all__ = ["MADGRAD"]


def _madgrad_tx(lr, eps, momentum, weight_decay, decoupled_decay) -> GradientTransformation:
    """The chain of one ``MADGRAD`` param group: ``[L2 decay, madgrad (decoupled decay)]``."""
    decay = is_nonzero(weight_decay)
    return chain(
        add_decayed_weights(weight_decay) if decay and not decoupled_decay else identity(),
        scale_by_madgrad(
            lr,
            momentum=momentum,
            eps=eps,
            decoupled_weight_decay=weight_decay if decay and decoupled_decay else 0.0,
            keep_x0=is_nonzero(momentum),
        ),
    )


class MADGRAD(IntStepDropIn):
    r"""timm's ``MADGRAD`` (``timm.optim.MADGRAD``) on optax_torch.

    Per param group, the chain ``add_decayed_weights(weight_decay)`` (L2, unless
    ``decoupled_decay``) → ``contrib.scale_by_madgrad(lr, momentum, eps,
    decoupled_weight_decay=weight_decay if decoupled_decay, keep_x0=momentum != 0)``: the
    learning rate is inside the transformation; with ``momentum == 0`` :math:`x_0` is recomputed
    from the parameters each step, as timm (and no ``x0`` state is kept).

    Args:
      params: parameters or param groups (torch's format).
      lr: learning rate, default ``1e-2``.
      momentum: momentum in ``[0, 1)``, default ``0.9``.
      weight_decay: weight decay, default ``0``.
      eps: added to the learning rate and the cube root, default ``1e-6``.
      decoupled_decay: decoupled weight decay (``p *= 1 - lr * weight_decay``), default ``False``.

    Example::

        >>> opt = MADGRAD(model.parameters(), lr=1e-2, momentum=0.9)

    State per parameter: ``step``, ``grad_sum_sq``, ``s`` and ``x0`` (with ``momentum != 0``), as
    timm (``step`` an int32 tensor, a Python int in timm). Sparse gradients are not supported.
    """

    _state_key_map: ClassVar[dict[str, str]] = {
        "1.count": "step",
        "1.grad_sum_sq": "grad_sum_sq",
        "1.s": "s",
        "1.x0": "x0",
    }

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        momentum: float = 0.9,
        weight_decay: float = 0,
        eps: float = 1e-6,
        decoupled_decay: bool = False,
    ) -> None:
        if momentum < 0 or momentum >= 1:
            raise ValueError(f"Momentum {momentum} must be in the range [0,1]")
        if lr <= 0:
            raise ValueError(f"Learning rate {lr} must be positive")
        if weight_decay < 0:
            raise ValueError(f"Weight decay {weight_decay} must be non-negative")
        if eps < 0:
            raise ValueError("Eps must be non-negative")
        super().__init__(
            params,
            _madgrad_tx,
            lr=lr,
            eps=eps,
            momentum=momentum,
            weight_decay=weight_decay,
            decoupled_decay=decoupled_decay,
        )
