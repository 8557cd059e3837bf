"""Drop-in replacements for ``torch.optim.SGD``, ``Adam`` and ``AdamW``.

Same signatures, defaults, param-group keys, validation messages and per-parameter state names
(``step``, ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``, ``momentum_buffer``) as ``torch.optim``
in torch 2.13; each step runs an optax_torch chain through :class:`optax_torch.TorchOptimizer`::

    >>> from optax_torch.compat.torch_optim import AdamW
    >>> opt = AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)

State dicts are interchangeable with ``torch.optim``'s for the same optimizer (``step`` is kept as
one int32 count per param group, see the deviations of :class:`~optax_torch.TorchOptimizer`).

Deviations common to the three classes:

* ``foreach`` and ``fused`` are accepted, validated like torch and ignored: updates always run
  as multi-tensor (``_foreach``) operations. ``capturable`` is accepted and ignored (the step
  count lives on the CPU, so a step cannot be captured in a CUDA graph).
* ``differentiable=True`` raises ``NotImplementedError``: differentiate through the functional
  ``tx.update`` with ``torch.func`` instead.
* Step counts are per param group, not per parameter (only visible when some parameters of a
  group skip steps with a ``None`` gradient).
* Turning ``momentum`` (SGD) or ``amsgrad`` (Adam) on or off in a group after its first step
  raises ``ValueError`` (torch would silently start a new buffer).
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor

from optax_torch import tree
from optax_torch.base import GradientTransformation, identity
from optax_torch.combine import chain
from optax_torch.transforms import (
    add_decayed_weights,
    scale,
    scale_by_adam,
    scale_by_amsgrad,
    scale_by_learning_rate,
    trace,
)
from optax_torch.wrappers.torch_optimizer import TorchOptimizer

__all__ = ["SGD", "Adam", "AdamW"]


def _is_nonzero(x: Any) -> bool:
    return bool(x != 0)


def _check_differentiable(differentiable: bool) -> None:
    if differentiable:
        raise NotImplementedError(
            "differentiable=True is not supported by the optax_torch drop-ins: differentiate "
            "through the functional step instead (tx.update with torch.func.grad)"
        )


def _check_fused_foreach(fused: bool | None, foreach: bool | None) -> None:
    if fused and foreach:
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")


# ------------------------------------------------------------------------------------------------
# SGD
# ------------------------------------------------------------------------------------------------


class _DampenedTraceState(NamedTuple):
    """State of :func:`_dampened_trace`."""

    trace: list
    started: list  # per parameter, a 0-d bool tensor: whether the buffer has been initialised


def _dampened_trace(momentum: Any, dampening: Any) -> GradientTransformation:
    """``torch.optim.SGD``'s momentum buffer with dampening, exactly.

    The first step of each parameter sets the buffer to the gradient (no dampening);
    later steps compute ``momentum * buf + (1 - dampening) * g``.
    """

    def init_fn(params):
        return _DampenedTraceState(
            trace=tree.zeros_like(params),
            started=tree.map(lambda p: torch.zeros((), dtype=torch.bool, device=p.device), params),
        )

    def update_fn(updates, state, params=None):
        del params
        damped = tree.add_scale(tree.scale(momentum, state.trace), 1 - dampening, updates)
        new_trace = tree.where(state.started, damped, updates)
        started = tree.map(lambda u, s: torch.ones_like(s), updates, state.started)
        return new_trace, _DampenedTraceState(trace=new_trace, started=started)

    return GradientTransformation(init_fn, update_fn)


def _sgd_tx(
    lr,
    momentum,
    dampening,
    weight_decay,
    nesterov,
    maximize,
    foreach=None,
    differentiable=False,
    fused=None,
) -> GradientTransformation:
    """The chain of one ``SGD`` param group: ``[maximize, weight decay, momentum, -lr]``."""
    del foreach, fused
    _check_differentiable(differentiable)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")
    if not _is_nonzero(momentum):
        mom = identity()
    elif _is_nonzero(dampening):
        mom = _dampened_trace(momentum, dampening)
    else:
        mom = trace(decay=momentum, nesterov=nesterov)
    return chain(
        scale(-1.0) if maximize else identity(),
        add_decayed_weights(weight_decay) if _is_nonzero(weight_decay) else identity(),
        mom,
        scale_by_learning_rate(lr),
    )


class SGD(TorchOptimizer):
    r"""``torch.optim.SGD`` on optax_torch: stochastic gradient descent with optional momentum.

    Per param group, the chain ``scale(-1)`` (if ``maximize``) → ``add_decayed_weights
    (weight_decay)`` → ``trace(momentum, nesterov)`` (with ``dampening``, an exact
    re-implementation of torch's buffer, initialised with the first gradient) →
    ``scale_by_learning_rate(lr)``, i.e. torch's

    .. math::
        g \leftarrow \pm g + \lambda p,\quad b \leftarrow \mu b + (1-\tau) g,\quad
        p \leftarrow p - \gamma\,(g + \mu b \text{ if nesterov else } b)

    Args:
      params: parameters or param groups (torch's format).
      lr: learning rate (float or 0-d tensor), default ``1e-3``.
      momentum: momentum factor, default ``0``.
      dampening: dampening for momentum, default ``0``.
      weight_decay: L2 penalty, default ``0``.
      nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``), default
        ``False``.
      maximize: maximize the objective, default ``False``.
      foreach, fused: accepted and ignored (see the module docstring), default ``None``.
      differentiable: must be ``False``.

    Example::

        >>> opt = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
        >>> loss.backward(); opt.step(); opt.zero_grad()

    The momentum buffer is exposed as ``opt.state[p]["momentum_buffer"]`` (created at the
    parameter's first step; with ``momentum=0`` there is no state at all).
    """

    _state_key_map: ClassVar[dict[str, str]] = {
        "2.trace": "momentum_buffer",
        "2.started": "momentum_started",
    }

    def _adapt_entry(self, entry: dict[str, Any], expected: set[str]) -> dict[str, Any]:
        # A torch.optim.SGD checkpoint has no "momentum_started": its buffer exists once started.
        if (
            "momentum_started" in expected
            and "momentum_started" not in entry
            and entry.get("momentum_buffer") is not None
        ):
            entry = {**entry, "momentum_started": torch.ones((), dtype=torch.bool)}
        return entry

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float | Tensor = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        _check_differentiable(differentiable)
        _check_fused_foreach(fused, foreach)
        super().__init__(
            params,
            _sgd_tx,
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            foreach=foreach,
            differentiable=differentiable,
            fused=fused,
        )


# ------------------------------------------------------------------------------------------------
# Adam / AdamW
# ------------------------------------------------------------------------------------------------


def _adam_tx(
    lr,
    betas,
    eps,
    weight_decay,
    amsgrad,
    maximize,
    foreach=None,
    capturable=False,
    differentiable=False,
    fused=None,
    decoupled_weight_decay=False,
) -> GradientTransformation:
    """The chain of one ``Adam`` param group:
    ``[maximize, L2 decay, adam | amsgrad, decoupled decay, -lr]``."""
    del foreach, capturable, fused
    _check_differentiable(differentiable)
    b1, b2 = betas
    decay = add_decayed_weights(weight_decay) if _is_nonzero(weight_decay) else identity()
    if amsgrad:
        scaling = scale_by_amsgrad(b1=b1, b2=b2, eps=eps, debias_after_max=True)
    else:
        scaling = scale_by_adam(b1=b1, b2=b2, eps=eps)
    return chain(
        scale(-1.0) if maximize else identity(),
        identity() if decoupled_weight_decay else decay,
        scaling,
        decay if decoupled_weight_decay else identity(),
        scale_by_learning_rate(lr),
    )


def _to_scalar(x: Any) -> Any:
    if isinstance(x, Tensor) and x.dim() != 0:
        return x.squeeze()
    return x


def _check_adam_args(lr, betas, eps, weight_decay, foreach, capturable) -> tuple:
    if isinstance(lr, Tensor):
        if foreach and not capturable:
            raise ValueError(
                "lr as a Tensor is not supported for capturable=False and foreach=True"
            )
        if lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
    if not lr >= 0.0:
        raise ValueError(f"Invalid learning rate: {lr}")
    if not eps >= 0.0:
        raise ValueError(f"Invalid epsilon value: {eps}")
    if not 0.0 <= betas[0] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
    if not 0.0 <= betas[1] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
    if not weight_decay >= 0.0:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")
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
    return tuple(map(_to_scalar, betas))


class Adam(TorchOptimizer):
    r"""``torch.optim.Adam`` on optax_torch.

    Per param group, the chain ``scale(-1)`` (if ``maximize``) → ``add_decayed_weights
    (weight_decay)`` (L2, before the moments) → ``scale_by_adam(b1, b2, eps)`` or, with
    ``amsgrad``, ``scale_by_amsgrad(..., debias_after_max=True)`` (torch's AMSGrad: maximum of
    the raw second moments) → ``add_decayed_weights(weight_decay)`` (if
    ``decoupled_weight_decay``, i.e. AdamW) → ``scale_by_learning_rate(lr)``.

    Args:
      params: parameters or param groups (torch's format).
      lr: learning rate (float or 0-d tensor), default ``1e-3``.
      betas: ``(beta1, beta2)``, default ``(0.9, 0.999)``.
      eps: added to the denominator, default ``1e-8``.
      weight_decay: weight decay, default ``0``.
      amsgrad: use AMSGrad, default ``False``.
      foreach, fused, capturable: accepted and ignored (see the module docstring).
      maximize: maximize the objective, default ``False``.
      differentiable: must be ``False``.
      decoupled_weight_decay: decoupled (AdamW) weight decay, default ``False``.

    Example::

        >>> opt = Adam(model.parameters(), lr=1e-3, amsgrad=True)
        >>> loss.backward(); opt.step(); opt.zero_grad()

    State per parameter: ``step`` (int32, shared by the group), ``exp_avg``, ``exp_avg_sq`` and
    ``max_exp_avg_sq`` (with ``amsgrad``), as in torch.
    """

    _state_key_map: ClassVar[dict[str, str]] = {
        "2.count": "step",
        "2.mu": "exp_avg",
        "2.nu": "exp_avg_sq",
        "2.nu_max": "max_exp_avg_sq",
    }

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        betas = _check_adam_args(lr, betas, eps, weight_decay, foreach, capturable)
        _check_differentiable(differentiable)
        _check_fused_foreach(fused, foreach)
        super().__init__(
            params,
            _adam_tx,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            foreach=foreach,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=decoupled_weight_decay,
        )


class AdamW(Adam):
    r"""``torch.optim.AdamW`` on optax_torch: :class:`Adam` with decoupled weight decay.

    torch multiplies the parameters by ``1 - lr * weight_decay`` before the Adam step; here the
    decay ``weight_decay * p`` is added to the Adam direction before the learning rate, the same
    step (``p - lr * (adam + weight_decay * p)``).

    Args:
      params: parameters or param groups (torch's format).
      lr: learning rate (float or 0-d tensor), default ``1e-3``.
      betas: ``(beta1, beta2)``, default ``(0.9, 0.999)``.
      eps: added to the denominator, default ``1e-8``.
      weight_decay: decoupled weight decay, default ``1e-2``.
      amsgrad: use AMSGrad, default ``False``.
      maximize, foreach, capturable, differentiable, fused: as in :class:`Adam`.

    Example::

        >>> opt = AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    """

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
        )

    def _normalize_group(self, group: dict[str, Any]) -> dict[str, Any]:
        # Like torch.optim.AdamW: decoupled weight decay always, whatever a loaded state says.
        if "decoupled_weight_decay" in group:  # else filled from the defaults (True)
            group["decoupled_weight_decay"] = True
        return group
