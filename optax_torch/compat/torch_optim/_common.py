"""Shared pieces of the ``torch.optim`` drop-ins: argument checks with torch's messages and the
drop-in base class."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from optax_torch.base import GradientTransformation
from optax_torch.contrib.complex_valued import view_complex_as_real
from optax_torch.wrappers.torch_optimizer import TorchOptimizer

__all__ = [
    "TorchOptimDropIn",
    "check_adam_args",
    "check_args",
    "check_differentiable",
    "check_fused_foreach",
    "is_nonzero",
    "to_scalar",
]


class TorchOptimDropIn(TorchOptimizer):
    """Base of the ``torch.optim`` drop-ins: a :class:`~optax_torch.TorchOptimizer` whose state
    follows torch's per-parameter conventions (``_state_key_map`` names the state entries)."""

    _state_key_map: ClassVar[dict[str, str]] = {}
    # Step counts per parameter (torch's): see TorchOptimizer._per_param_steps.
    _per_param_steps: ClassVar[bool] = True
    # Complex parameters viewed as real pairs, as torch.optim does (view_complex_as_real).
    _complex_as_real: ClassVar[bool] = True
    # The original's constructor checks run in each drop-in's __init__ (with its messages).
    _check_group_values: ClassVar[bool] = False
    # The state dict is the original's, key for key: no optax_torch format stamp.
    _format_stamp: ClassVar[bool] = False

    def _call_factory(self, hp: dict[str, Any]) -> GradientTransformation:
        tx = super()._call_factory(hp)
        return view_complex_as_real(tx) if self._complex_as_real else tx


def is_nonzero(x: Any) -> bool:
    return bool(x != 0)


def check_differentiable(differentiable: bool) -> None:
    if differentiable:
        raise NotImplementedError(
            "differentiable=True is not supported by the optax_torch drop-ins: differentiate "
            "through the functional step instead (tx.update with torch.func.grad)"
        )


def check_fused_foreach(fused: bool | None, foreach: bool | None) -> None:
    if fused and foreach:
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")


def check_args(**named: Any) -> None:
    """torch.optim's constructor checks, in the order given, with torch's messages.

    ``lr``: a 1-element tensor or a number ``>= 0``; ``betas``: each in ``[0, 1)``; ``rho``: in
    ``[0, 1]``; any other name: ``>= 0`` (``Invalid <name> value: <value>``, ``eps`` spelled
    ``epsilon``).
    """
    for name, value in named.items():
        if name == "lr":
            if isinstance(value, Tensor) and value.numel() != 1:
                raise ValueError("Tensor lr must be 1-element")
            if not value >= 0.0:
                raise ValueError(f"Invalid learning rate: {value}")
        elif name == "betas":
            for i in (0, 1):
                if not 0.0 <= value[i] < 1.0:
                    raise ValueError(f"Invalid beta parameter at index {i}: {value[i]}")
        elif name == "rho":
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Invalid rho value: {value}")
        elif not value >= 0.0:
            raise ValueError(f"Invalid {'epsilon' if name == 'eps' else name} value: {value}")


def to_scalar(x: Any) -> Any:
    if isinstance(x, Tensor) and x.dim() != 0:
        return x.squeeze()
    return x


def check_adam_args(lr, betas, eps, weight_decay, foreach, capturable) -> tuple:
    if isinstance(lr, Tensor):
        if foreach and not capturable:
            raise ValueError(
                "lr as a Tensor is not supported for capturable=False and foreach=True"
            )
        if lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
    check_args(lr=lr, eps=eps, betas=betas, weight_decay=weight_decay)
    if not (
        (isinstance(betas[0], float) and isinstance(betas[1], float))
        or (isinstance(betas[0], Tensor) and isinstance(betas[1], Tensor))
    ):
        raise ValueError("betas must be either both floats or both Tensors")
    for i in (0, 1):
        if isinstance(betas[i], Tensor):
            if not capturable and foreach:
                raise ValueError(
                    f"betas[{i}] as a Tensor is not supported for capturable=False and foreach=True"
                )
            if betas[i].numel() != 1:
                raise ValueError(f"Tensor betas[{i}] must be 1-element")
    return tuple(map(to_scalar, betas))
