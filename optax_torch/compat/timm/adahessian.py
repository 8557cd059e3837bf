"""timm's ``Adahessian`` on optax_torch (see :mod:`optax_torch.compat.timm`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import torch

from optax_torch.base import GradientTransformation, identity
from optax_torch.combine import chain
from optax_torch.compat.timm._checks import IntStepDropIn, check_args
from optax_torch.compat.torch_optim._common import is_nonzero
from optax_torch.transforms import add_decayed_weights, scale
from optax_torch.transforms.hessian import (
    average_conv_kernel,
    hutchinson_hessian_diag_from_grads,
    scale_by_adahessian,
)
from optax_torch.transforms.monitoring import count_steps

__all__ = ["Adahessian"]


def _adahessian_tx(lr, betas, eps, weight_decay, hessian_power) -> GradientTransformation:
    """The chain of one ``Adahessian`` param group: ``[hessian step count, adahessian,
    decoupled decay, -lr]``."""
    b1, b2 = betas
    return chain(
        count_steps(),
        scale_by_adahessian(b1, b2, eps, hessian_power),
        add_decayed_weights(weight_decay) if is_nonzero(weight_decay) else identity(),
        scale(-lr),
    )


class Adahessian(IntStepDropIn):
    r"""timm's ``Adahessian`` on optax_torch.

    ``step`` first estimates the Hessian diagonal of every parameter that has a gradient, as
    timm does: :func:`~optax_torch.transforms.hessian.hutchinson_hessian_diag_from_grads`
    (Rademacher vectors drawn from the optimizer's ``generator``, seeded with ``seed =
    2147483647``, Hessian-vector products of the gradients, which need
    ``loss.backward(create_graph=True)``), recomputed every ``update_each`` steps of each
    parameter and kept in ``p.hess`` in between (with ``avg_conv_kernel``,
    :func:`~optax_torch.transforms.hessian.average_conv_kernel` for 4-d parameters). Then per
    param group the chain ``count_steps()`` (the ``hessian step``) →
    :func:`~optax_torch.transforms.hessian.scale_by_adahessian` ``(b1, b2, eps,
    hessian_power)`` (given ``hessian=``) → ``add_decayed_weights(weight_decay)`` (decoupled:
    timm's ``p *= 1 - lr * weight_decay``) → ``scale(-lr)``.

    Args:
      params: parameters or param groups (torch's format).
      lr: learning rate, default ``0.1``.
      betas: ``(beta1, beta2)``, default ``(0.9, 0.999)``.
      eps: added to the denominator, default ``1e-8``.
      weight_decay: decoupled weight decay, default ``0.0``.
      hessian_power: exponent of the Hessian diagonal, in ``[0, 1]``, default ``1.0``.
      update_each: recompute the estimate every this many steps, default ``1``.
      n_samples: Rademacher samples per estimate, default ``1``.
      avg_conv_kernel: average the estimate over the kernels of 2-d convolutions, default
        ``False``.

    Example::

        >>> opt = Adahessian(model.parameters(), lr=0.1)
        >>> loss.backward(create_graph=True); opt.step(); opt.zero_grad()

    State per parameter, as in timm: ``hessian step``, ``step``, ``exp_avg``,
    ``exp_hessian_diag_sq``. Deviations: all of it exists from construction (timm: ``hessian
    step`` only, the others from the first step); the steps are 0-d int32 tensors (timm: Python
    ints). The generator's position is saved as ``generator_state`` at the top of ``state_dict``
    (timm drops it and draws from the seed again after a resume; a dict without it, timm's,
    loads so too), so that a resumed run draws the same Rademacher vectors as an uninterrupted
    one. As in timm, ``p.hess`` is not in the state dict: with ``update_each > 1`` a resumed run
    recomputes the estimate at its first step.
    """

    _python_numbers: ClassVar[dict[str, type]] = {"step": int, "hessian step": int}
    _complex_as_real: ClassVar[bool] = False
    _state_key_map: ClassVar[dict[str, str]] = {
        "0.count": "hessian step",
        "1.count": "step",
        "1.mu": "exp_avg",
        "1.nu": "exp_hessian_diag_sq",
    }

    def __init__(
        self,
        params,
        lr=0.1,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        hessian_power=1.0,
        update_each=1,
        n_samples=1,
        avg_conv_kernel=False,
    ) -> None:
        check_args(lr=lr, eps=eps, betas=betas)
        if not 0.0 <= hessian_power <= 1.0:
            raise ValueError(f"Invalid Hessian power value: {hessian_power}")
        self.n_samples = n_samples
        self.update_each = update_each
        self.avg_conv_kernel = avg_conv_kernel
        # A separate generator: the same z's on every device in distributed training (timm's).
        self.seed = 2147483647
        self.generator = torch.Generator().manual_seed(self.seed)
        super().__init__(
            params,
            _adahessian_tx,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            hessian_power=hessian_power,
        )
        for p in self.get_params():
            p.hess = 0.0  # type: ignore[attr-defined]
        self._allocate_state()

    @property
    def is_second_order(self) -> bool:
        return True

    def get_params(self) -> Iterator[torch.Tensor]:
        """The parameters of all param groups that require a gradient."""
        return (p for group in self.param_groups for p in group["params"] if p.requires_grad)

    def _hessian_step(self, p: torch.Tensor) -> int:
        return int(self.state[p].get("hessian step", 0))

    def zero_hessian(self) -> None:
        """Zeroes the estimates that are recomputed at this step."""
        for p in self.get_params():
            hess = getattr(p, "hess", 0.0)
            if isinstance(hess, torch.Tensor) and self._hessian_step(p) % self.update_each == 0:
                hess.zero_()

    @torch.no_grad()
    def set_hessian(self) -> None:
        """Computes the Hutchinson estimate of the Hessian diagonal of the parameters whose
        estimate is due (or missing), and adds it to ``p.hess``."""
        params = [
            p
            for p in self.get_params()
            if p.grad is not None
            and (
                self._hessian_step(p) % self.update_each == 0
                or isinstance(getattr(p, "hess", 0.0), float)
            )
        ]
        if not params:
            return
        if self.generator.device != params[0].device:
            self.generator = torch.Generator(params[0].device).manual_seed(self.seed)
        with torch.enable_grad():
            est = hutchinson_hessian_diag_from_grads(
                [p.grad for p in params if p.grad is not None],
                params,
                self.n_samples,
                self.generator,
            )
        for p, d in zip(params, est):
            p.hess = p.hess + d  # type: ignore[attr-defined]

    def step(self, closure=None, **extra_args: Any) -> Any:
        """Estimates the Hessian diagonal, then steps every param group (see the class
        docstring)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.zero_hessian()
        self.set_hessian()
        if self.avg_conv_kernel:
            for p in self.get_params():
                if p.grad is not None and p.dim() == 4:
                    p.hess = average_conv_kernel(p.hess)  # type: ignore[attr-defined]
        super().step(None, **extra_args)
        return loss

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["generator_state"] = self.generator.get_state()
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        generator_state = state_dict.pop("generator_state", None)
        super().load_state_dict(state_dict)
        if generator_state is not None:
            self.generator = torch.Generator().manual_seed(self.seed)
            self.generator.set_state(generator_state.to("cpu", torch.uint8))

    def _step_group(self, gi: int, group: dict[str, Any], extra_args: dict[str, Any]) -> None:
        hessian = [
            p.hess
            if p.grad is not None and not isinstance(getattr(p, "hess", 0.0), float)
            else None
            for p in group["params"]
        ]
        super()._step_group(gi, group, {**extra_args, "hessian": hessian})
