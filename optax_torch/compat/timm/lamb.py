"""timm's ``Lamb`` on optax_torch (see :mod:`optax_torch.compat.timm`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch

from optax_torch import tree
from optax_torch.base import GradientTransformation, identity
from optax_torch.combine import chain
from optax_torch.compat.timm._checks import check_scalar, max_lr_snapshot, wd_factor
from optax_torch.compat.torch_optim._common import TorchOptimDropIn, is_nonzero
from optax_torch.transforms import add_decayed_weights, scale, scale_by_adam, scale_by_learning_rate
from optax_torch.transforms.caution import caution as cautious
from optax_torch.transforms.normalization import scale_by_trust_ratio

__all__ = ["Lamb"]


def _lamb_tx(
    lr,
    bias_correction,
    betas,
    eps,
    weight_decay,
    grad_averaging,
    max_grad_norm,
    trust_clip,
    always_adapt,
    caution,
    decoupled_decay,
    corrected_weight_decay,
    max_lr_snapshot,
    foreach=None,
) -> GradientTransformation:
    """The chain of one ``Lamb`` param group: ``[caution?(adam), 1/(1-b1) without
    grad_averaging, L2 decay, trust ratio, decoupled decay, -lr]`` (``max_grad_norm`` is applied
    by :meth:`Lamb.step`, over all groups)."""
    del max_grad_norm, foreach
    b1, b2 = betas
    adam = scale_by_adam(b1=b1, b2=b2, eps=eps, bias_correction=bool(bias_correction))
    decay = is_nonzero(weight_decay)
    coupled = decay and not decoupled_decay
    decoupled = decay and decoupled_decay
    max_lr = max_lr_snapshot if decoupled and corrected_weight_decay else None
    if decoupled:  # timm shrinks the params by 1 - s * weight_decay before their norm
        s = lr if max_lr is None else lr**2 / max_lr
        param_scale = 1.0 - s * weight_decay
    else:
        param_scale = 1.0
    ratio = scale_by_trust_ratio(trust_clip=1.0 if trust_clip else None, param_scale=param_scale)
    return chain(
        cautious(adam) if caution else adam,
        # without grad averaging m = b1 m + g: (1 - b1)^-1 times the averaged one
        identity() if grad_averaging else scale(1.0 / (1.0 - b1)),
        add_decayed_weights(weight_decay) if coupled else identity(),
        ratio if decay or always_adapt else identity(),
        add_decayed_weights(wd_factor(lr, weight_decay, max_lr)) if decoupled else identity(),
        scale_by_learning_rate(lr),
    )


class Lamb(TorchOptimDropIn):
    r"""timm's ``Lamb`` (``timm.optim.Lamb``, NVIDIA's NvLamb / FusedLAMB form) on optax_torch.

    ``step`` first divides every gradient by :math:`\max(1, \lVert g\rVert_2 /
    \text{max\_grad\_norm})`, the global norm over *all* parameters of all param groups (timm's
    pre-clipping, with the constructor's ``max_grad_norm``; ``p.grad`` is left unchanged), then
    runs per param group the chain ``scale_by_adam(b1, b2, eps)`` (in ``caution`` if
    ``caution``) → ``scale(1 / (1 - b1))`` (without ``grad_averaging``: timm's ``m = b1 m + g``)
    → ``add_decayed_weights(weight_decay)`` (L2, unless ``decoupled_decay``) →
    ``scale_by_trust_ratio(trust_clip=1 if trust_clip)`` (when ``weight_decay != 0`` or
    ``always_adapt``; with decoupled decay the parameter norm is that of the shrunk parameters,
    ``param_scale=1 - s * weight_decay``) → ``add_decayed_weights(s / lr * weight_decay)``
    (decoupled; ``s = lr``, or ``lr ** 2 / max_lr`` with ``corrected_weight_decay``) →
    ``scale_by_learning_rate(lr)``.

    Args:
      params: parameters or param groups (torch's format).
      lr: learning rate, default ``1e-3``.
      bias_correction: Adam's bias correction, default ``True``.
      betas: ``(beta1, beta2)``, default ``(0.9, 0.999)``.
      eps: added to the denominator, default ``1e-6``.
      weight_decay: weight decay, default ``0.01``.
      grad_averaging: average the gradient in the first moment, default ``True``.
      max_grad_norm: global gradient-norm pre-clipping, default ``1.0`` (``None``: off).
      trust_clip: LAMBC, the trust ratio clipped at 1, default ``False``.
      always_adapt: trust ratio also where ``weight_decay == 0``, default ``False``.
      caution: cautious updates, default ``False``.
      decoupled_decay: decoupled weight decay, default ``False``.
      corrected_weight_decay: decoupled decay by ``lr ** 2 / max_lr``, default ``False``.
      foreach: accepted and ignored, default ``None``.

    Example::

        >>> opt = Lamb(model.parameters(), lr=1e-3, weight_decay=0.01)

    State: per parameter ``exp_avg`` and ``exp_avg_sq``, and the group's step count as
    ``param_group["step"]`` (a float32 tensor, timm's), set by each step. Without
    ``grad_averaging``, ``opt.state[p]["exp_avg"]`` is the averaged moment, ``1 - b1`` times
    timm's; ``state_dict`` / ``load_state_dict`` convert, so checkpoints are timm's.

    Deviations: the step count of a group none of whose parameters has a gradient does not
    advance (timm's does).
    """

    _state_key_map: ClassVar[dict[str, str]] = {
        "0.count": "step",
        "0.mu": "exp_avg",
        "0.nu": "exp_avg_sq",
    }
    _hidden_state_keys: ClassVar[frozenset[str]] = frozenset({"step"})
    _per_param_steps: ClassVar[bool] = False  # timm's step count is the group's

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        bias_correction: bool = True,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
        grad_averaging: bool = True,
        max_grad_norm: float | None = 1.0,
        trust_clip: bool = False,
        always_adapt: bool = False,
        caution: bool = False,
        decoupled_decay: bool = False,
        corrected_weight_decay: bool = False,
        foreach: bool | None = None,
    ) -> None:
        check_scalar("learning rate", lr)
        check_scalar("epsilon", eps)
        check_scalar("weight_decay", weight_decay)
        super().__init__(
            params,
            _lamb_tx,
            lr=lr,
            bias_correction=bias_correction,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            grad_averaging=grad_averaging,
            max_grad_norm=max_grad_norm,
            trust_clip=trust_clip,
            always_adapt=always_adapt,
            caution=caution,
            decoupled_decay=decoupled_decay,
            corrected_weight_decay=corrected_weight_decay,
            max_lr_snapshot=max_lr_snapshot(lr, corrected_weight_decay),
            foreach=foreach,
        )

    def step(self, closure: Callable[[], Any] | None = None, **extra_args: Any) -> Any:
        """One step: timm's global gradient-norm pre-clipping, then the groups' chains."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        saved = [p.grad for p in params]
        max_grad_norm = self.defaults["max_grad_norm"]
        try:
            if max_grad_norm is not None and params:
                with torch.no_grad():
                    norm = tree.norm([p.grad for p in params])
                    clip = (norm / max_grad_norm).clamp_(min=1.0)
                    for p in params:
                        p.grad = p.grad / clip  # type: ignore[operator]
            super().step(None, **extra_args)
        finally:
            for p, g in zip(params, saved):
                p.grad = g
        for gi, group in enumerate(self.param_groups):
            count = self._group_count(gi)
            if count is not None:
                group["step"] = count.to(torch.float32)
        return loss

    def _group_count(self, gi: int) -> torch.Tensor | None:
        slots = self._otx_slots
        state = slots[gi].state if gi < len(slots) else None
        return None if state is None else state[0].count

    def state_dict(self) -> dict[str, Any]:
        return _scale_unaveraged(super().state_dict(), to_timm=True)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # timm keeps the step count in the param group: give it to the group's entries.
        state_dict = _scale_unaveraged(dict(state_dict), to_timm=False)
        entries = dict(state_dict["state"])
        for group in state_dict["param_groups"]:
            if "step" in group:
                for i in group["params"]:
                    if i in entries:
                        entries[i] = {**entries[i], "step": group["step"]}
        state_dict["state"] = entries
        super().load_state_dict(state_dict)


def _scale_unaveraged(state_dict: dict[str, Any], to_timm: bool) -> dict[str, Any]:
    """Without ``grad_averaging`` timm's ``exp_avg`` is ``(1 - b1)^-1`` times the averaged
    moment that the chain keeps (``opt.state``): checkpoints hold timm's, converted here."""
    entries = dict(state_dict["state"])
    for group in state_dict["param_groups"]:
        if group.get("grad_averaging", True):
            continue
        f = 1.0 - group["betas"][0]
        for i in group["params"]:
            if i in entries and "exp_avg" in entries[i]:
                m = entries[i]["exp_avg"]
                entries[i] = {**entries[i], "exp_avg": m / f if to_timm else m * f}
    state_dict["state"] = entries
    return state_dict
