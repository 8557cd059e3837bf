"""``torch.optim.Rprop`` on optax_torch (see :mod:`optax_torch.compat.torch_optim`)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from optax_torch.base import GradientTransformation, identity
from optax_torch.combine import chain
from optax_torch.compat.torch_optim._common import (
    TorchOptimDropIn,
    check_differentiable,
    to_scalar,
)
from optax_torch.transforms import count_steps, scale, scale_by_rprop

__all__ = ["Rprop"]


def _rprop_tx(
    lr,
    etas,
    step_sizes,
    foreach=None,
    maximize=False,
    differentiable=False,
    capturable=False,
) -> GradientTransformation:
    """The chain of one ``Rprop`` param group: ``[maximize, step count, rprop, -1]``."""
    del foreach, capturable
    check_differentiable(differentiable)
    eta_minus, eta_plus = etas
    min_step_size, max_step_size = step_sizes
    return chain(
        scale(-1.0) if maximize else identity(),
        count_steps(),
        scale_by_rprop(
            to_scalar(lr),
            eta_minus=eta_minus,
            eta_plus=eta_plus,
            min_step_size=min_step_size,
            max_step_size=max_step_size,
            always_clip=True,
            prev_gradients=True,
        ),
        scale(-1.0),
    )


class Rprop(TorchOptimDropIn):
    r"""``torch.optim.Rprop`` on optax_torch: resilient backpropagation.

    Per param group, the chain ``scale(-1)`` (if ``maximize``) → ``count_steps()`` (torch's
    ``step``, used by nothing) → ``scale_by_rprop(lr, *etas, *step_sizes, always_clip=True,
    prev_gradients=True)`` (torch's form: step sizes clipped at every step, the last gradient
    kept as ``prev``) → ``scale(-1)``, i.e. torch's, element-wise,

    .. math::
        s = g\,g_{prev},\quad
        \eta \leftarrow \operatorname{clip}(\eta \cdot (\eta_+ \text{ if } s > 0,\ \eta_-
        \text{ if } s < 0,\ 1 \text{ else}), \Gamma_{min}, \Gamma_{max}),\quad
        g \leftarrow 0 \text{ where } s < 0,\quad
        p \leftarrow p - \eta \operatorname{sign}(g),\quad g_{prev} \leftarrow g

    with the step sizes :math:`\eta` starting at the group's ``lr`` at the parameter's first
    step (``lr`` is not used afterwards: an LR scheduler only changes the step sizes of
    parameters that join later). Complex parameters are pairs of real numbers.

    Args:
      params: parameters or param groups (torch's format).
      lr: the initial step size (float or 0-d tensor), default ``1e-2``.
      etas: ``(etaminus, etaplus)``, the step-size factors when the gradient's sign flips and
        when it persists, default ``(0.5, 1.2)``.
      step_sizes: ``(min, max)`` allowed step sizes, default ``(1e-6, 50)``.
      capturable, foreach: accepted and ignored (see the module docstring).
      maximize: maximize the objective, default ``False``.
      differentiable: must be ``False``.

    Example::

        >>> opt = Rprop(model.parameters(), lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50))
        >>> loss.backward(); opt.step(); opt.zero_grad()

    State per parameter: ``step`` (int32, used by nothing), ``prev`` (the last gradient, zeroed
    where its sign flipped, with ``maximize`` negated) and ``step_size``, as in torch.

    Deviation: ``torch.optim.Rprop`` does not check ``step_sizes``; here a negative or NaN bound
    raises ``ValueError`` (``max`` may be ``inf``).
    """

    _state_key_map: ClassVar[dict[str, str]] = {
        "1.count": "step",
        "2.prev_updates": "prev",
        "2.step_sizes": "step_size",
    }

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-2,
        etas: tuple[float, float] = (0.5, 1.2),
        step_sizes: tuple[float, float] = (1e-6, 50),
        *,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 < etas[0] < 1.0 < etas[1]:
            raise ValueError(f"Invalid eta values: {etas[0]}, {etas[1]}")
        check_differentiable(differentiable)
        super().__init__(
            params,
            _rprop_tx,
            lr=lr,
            etas=etas,
            step_sizes=step_sizes,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            capturable=capturable,
        )

    def _step_group(self, gi: int, group: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        for p in group["params"]:
            if p.grad is not None and p.grad.is_sparse:
                raise RuntimeError("Rprop does not support sparse gradients")
        super()._step_group(gi, group, *args, **kwargs)
