"""``torch.optim.Muon`` on optax_torch (see :mod:`optax_torch.compat.torch_optim`)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from optax_torch.base import GradientTransformation, identity
from optax_torch.combine import chain
from optax_torch.compat.torch_optim._common import TorchOptimDropIn, is_nonzero, to_scalar
from optax_torch.contrib.muon import MuonDimensionNumbers, scale_by_muon, scale_by_shape
from optax_torch.transforms import add_decayed_weights, scale_by_learning_rate

__all__ = ["Muon"]

# torch.optim._muon's defaults (Keller Jordan's constants).
_EPS = 1e-7
_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
_NS_STEPS = 5
# torch's (out, in) weight layout: "original" scales by sqrt(max(1, rows / cols)).
_TORCH_LAYOUT = MuonDimensionNumbers(reduction_axis=1, output_axis=0)


def _check_ns_args(ns_coefficients, ns_steps) -> None:
    """The checks torch.optim.Muon makes at its first step (made here at construction)."""
    if ns_steps >= 100:
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    if len(ns_coefficients) != 3:
        raise ValueError("Coefficients must be a tuple of exactly 3 values")


def _muon_tx(
    lr,
    weight_decay,
    momentum,
    nesterov,
    ns_coefficients,
    eps,
    ns_steps,
    adjust_lr_fn,
) -> GradientTransformation:
    """The chain of one ``Muon`` param group: ``[muon (torch's form), adjust_lr, decoupled
    decay, -lr]``."""
    _check_ns_args(ns_coefficients, ns_steps)
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        adjust = scale_by_shape(_TORCH_LAYOUT)
    elif adjust_lr_fn == "match_rms_adamw":
        adjust = scale_by_shape(consistent_rms=0.2)
    else:  # torch: no adjustment for other values (rejected by the constructor)
        adjust = identity()
    return chain(
        scale_by_muon(
            ns_coeffs=tuple(ns_coefficients),
            ns_steps=ns_steps,
            beta=momentum,
            eps=eps,
            nesterov=nesterov,
            bias_correction=False,
            ns_dtype=torch.bfloat16,
            fused=True,
            eps_floor=True,
        ),
        adjust,
        add_decayed_weights(weight_decay) if is_nonzero(weight_decay) else identity(),
        scale_by_learning_rate(to_scalar(lr)),
    )


class Muon(TorchOptimDropIn):
    r"""``torch.optim.Muon`` on optax_torch: momentum orthogonalized by Newton-Schulz, for 2-d
    parameters.

    Per param group, the chain :func:`~optax_torch.contrib.scale_by_muon` ``(beta=momentum,
    nesterov, ns_coeffs=ns_coefficients, ns_steps, eps, bias_correction=False,
    ns_dtype=torch.bfloat16, fused=True, eps_floor=True)`` (torch's momentum and Newton-Schulz
    iteration, in bfloat16) → :func:`~optax_torch.contrib.scale_by_shape` (``adjust_lr_fn``) →
    ``add_decayed_weights(weight_decay)`` → ``scale_by_learning_rate(lr)``, i.e. torch's

    .. math::
        B_t = \mathrm{lerp}(B_{t-1}, g_t, 1-\mu),\quad
        \tilde B_t = \mathrm{lerp}(g_t, B_t, \mu) \text{ (nesterov) else } B_t,\quad
        O_t = \mathrm{NS}^{(a,b,c)}_k(\tilde B_t / \max(\|\tilde B_t\|_F, \varepsilon)),\\
        \theta_t = \theta_{t-1} - \gamma\lambda\theta_{t-1} - \gamma\, s(A, B)\, O_t

    with :math:`s(A, B) = \sqrt{\max(1, A/B)}` (``adjust_lr_fn`` ``None`` or ``"original"``) or
    :math:`0.2\sqrt{\max(A, B)}` (``"match_rms_adamw"``) for an :math:`A \times B` parameter.

    Args:
      params: 2-d parameters or param groups (torch's format); other ranks raise ``ValueError``.
      lr: learning rate (float or 0-d tensor), default ``1e-3``.
      weight_decay: decoupled weight decay (times ``lr``), default ``0.1``.
      momentum: momentum factor, default ``0.95``.
      nesterov: Nesterov momentum, default ``True``.
      ns_coefficients: Newton-Schulz coefficients :math:`(a, b, c)`, default ``(3.4445, -4.775,
        2.0315)``.
      eps: floor of the norm in the normalization, default ``1e-7``.
      ns_steps: number of Newton-Schulz iterations (< 100), default ``5``.
      adjust_lr_fn: ``None``, ``"original"`` or ``"match_rms_adamw"``, default ``None``.

    Example::

        >>> opt = Muon([p for p in model.parameters() if p.ndim == 2], lr=0.02)
        >>> loss.backward(); opt.step(); opt.zero_grad()

    State per parameter, as in torch: ``momentum_buffer`` (no step count). torch.optim.Muon has
    no ``foreach``, ``fused``, ``capturable``, ``differentiable`` or ``maximize`` arguments.
    Deviations: the errors torch raises at the first step for ``ns_steps >= 100`` or coefficients
    that are not a triple are raised at construction (same type and message); ``eps < 0`` raises
    ``ValueError`` (torch does not check it). In float32 the parameter update rounds differently
    (torch multiplies by ``1 - lr * weight_decay`` then adds, the adapter adds one update), which
    can flip a bfloat16 rounding of the Newton-Schulz input: runs then differ by about
    ``lr * 1e-2`` (float64 runs match torch to 1e-15).
    """

    _not_compilable = (
        "torch.optim.Muon's Newton-Schulz coefficients are read with ns_coeffs.tolist(), which "
        "dynamo does not trace on a float tensor"
    )

    _complex_as_real: ClassVar[bool] = False  # Muon takes real 2-d parameters only
    _state_key_map: ClassVar[dict[str, str]] = {"0.mu": "momentum_buffer"}

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = _NS_COEFFICIENTS,
        eps: float = _EPS,
        ns_steps: int = _NS_STEPS,
        adjust_lr_fn: str | None = None,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not lr >= 0.0:
            raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
        if not momentum >= 0.0:
            raise ValueError(f"momentum should be >= 0 but is: {momentum}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight decay should be >= 0 but is: {weight_decay}")
        if adjust_lr_fn is not None and adjust_lr_fn not in ["original", "match_rms_adamw"]:
            raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")
        super().__init__(
            params,
            _muon_tx,
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            ns_coefficients=ns_coefficients,
            eps=eps,
            ns_steps=ns_steps,
            adjust_lr_fn=adjust_lr_fn,
        )
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(
                        "Muon only supports 2D parameters whereas we found a parameter with "
                        f"size: {p.size()}"
                    )
