"""timm's ``Mars`` on optax_torch (see :mod:`optax_torch.compat.timm`)."""

from __future__ import annotations

from typing import ClassVar

from optax_torch import tree
from optax_torch.base import GradientTransformation, identity
from optax_torch.combine import chain
from optax_torch.compat.timm._checks import IntStepDropIn, check_args
from optax_torch.compat.torch_optim._common import is_nonzero
from optax_torch.transforms import add_decayed_weights, scale, scale_by_learning_rate
from optax_torch.transforms.mars import scale_by_mars
from optax_torch.transforms.masking import masked

__all__ = ["Mars"]


def _is_1d(updates):
    return tree.map(lambda u: u.ndim < 2, updates)


def _mars_tx(
    lr,
    betas,
    eps,
    weight_decay,
    mars_type,
    gamma,
    optimize_1d,
    lr_1d_factor,
    betas_1d,
    caution,
) -> GradientTransformation:
    """The chain of one ``Mars`` param group:
    ``[mars, decoupled decay, lr_1d_factor on the 1-d leaves, -lr]``."""
    b1, b2 = betas
    factor_1d = not optimize_1d and lr_1d_factor != 1.0
    return chain(
        scale_by_mars(
            b1,
            b2,
            eps=eps,
            gamma=gamma,
            mars_type=mars_type,
            optimize_1d=optimize_1d,
            betas_1d=betas_1d,
            caution=caution,
        ),
        add_decayed_weights(weight_decay) if is_nonzero(weight_decay) else identity(),
        masked(scale(lr_1d_factor), _is_1d) if factor_1d else identity(),
        scale_by_learning_rate(lr),
    )


class Mars(IntStepDropIn):
    r"""timm's ``Mars`` (``timm.optim.Mars``) on optax_torch.

    Per param group, the chain ``scale_by_mars(b1, b2, eps, gamma, mars_type, optimize_1d,
    betas_1d, caution)`` (:mod:`optax_torch.transforms.mars`: MARS on the leaves of rank
    :math:`\ge 2`, AdamW on the others unless ``optimize_1d``) → ``add_decayed_weights
    (weight_decay)`` (timm adds ``weight_decay * p`` to the direction) → ``scale(lr_1d_factor)``
    on the 1-d leaves (without ``optimize_1d``) → ``scale_by_learning_rate(lr)``.

    Args:
      params: parameters or param groups (torch's format).
      lr: learning rate, default ``3e-3``.
      betas: ``(beta1, beta2)``, default ``(0.9, 0.99)``.
      eps: added to the denominator, default ``1e-8``.
      weight_decay: decoupled weight decay, default ``0``.
      gamma: strength of the gradient correction, default ``0.025``.
      mars_type: ``"adamw"`` or ``"lion"``, default ``"adamw"``.
      optimize_1d: MARS for the 1-d parameters too, default ``False``.
      lr_1d_factor: learning-rate factor of the 1-d parameters, default ``1.0``.
      betas_1d: the betas of the 1-d parameters, default ``None`` (``betas``).
      caution: cautious momentum, default ``False``.

    Example::

        >>> opt = Mars(model.parameters(), lr=3e-3, weight_decay=0.1)

    State per parameter: ``step``, ``exp_avg``, ``last_grad`` and ``exp_avg_sq``, as timm.
    Complex parameters are not viewed as real pairs (timm does not either: the rank decides
    which update a parameter gets).
    """

    _state_key_map: ClassVar[dict[str, str]] = {
        "0.count": "step",
        "0.mu": "exp_avg",
        "0.nu": "exp_avg_sq",
        "0.last_grad": "last_grad",
    }
    _complex_as_real: ClassVar[bool] = False

    def __init__(
        self,
        params,
        lr: float = 3e-3,
        betas: tuple[float, float] = (0.9, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        gamma: float = 0.025,
        mars_type: str = "adamw",
        optimize_1d: bool = False,
        lr_1d_factor: float = 1.0,
        betas_1d: tuple[float, float] | None = None,
        caution: bool = False,
    ) -> None:
        check_args(lr=lr, eps=eps, betas=betas)
        if mars_type not in ["adamw", "lion"]:
            raise AssertionError("MARS type not supported")
        super().__init__(
            params,
            _mars_tx,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            mars_type=mars_type,
            gamma=gamma,
            optimize_1d=optimize_1d,
            lr_1d_factor=lr_1d_factor,
            betas_1d=betas_1d or betas,
            caution=caution,
        )
