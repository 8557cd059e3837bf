"""timm's ``Adan`` on optax_torch (see :mod:`optax_torch.compat.timm`)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from optax_torch.base import GradientTransformation
from optax_torch.combine import chain
from optax_torch.compat.timm._checks import check_args
from optax_torch.compat.torch_optim._common import TorchOptimDropIn
from optax_torch.transforms import add_decayed_weights, scale, scale_by_learning_rate
from optax_torch.transforms.adaptive import scale_by_adan

__all__ = ["Adan"]


def _adan_tx(
    lr, betas, eps, weight_decay, no_prox, caution, foreach=None
) -> GradientTransformation:
    """The chain of one ``Adan`` param group: ``[adan, decay, proximal scale, -lr]``."""
    del foreach
    b1, b2, b3 = betas
    adan = scale_by_adan(
        b1=b1, b2=b2, b3=b3, eps=eps, diff_scale=b2, caution=caution, per_leaf_start=True
    )
    # no_prox: p (1 - lr wd) - lr u; else the proximal step (p - lr u) / (1 + lr wd), i.e.
    # -lr (u + wd p) / (1 + lr wd).
    return chain(
        adan,
        add_decayed_weights(weight_decay),
        scale(1.0 if no_prox else 1.0 / (1.0 + lr * weight_decay)),
        scale_by_learning_rate(lr),
    )


class Adan(TorchOptimDropIn):
    r"""timm's ``Adan`` on optax_torch.

    Per param group, ``scale_by_adan(b1, b2, b3, eps, diff_scale=b2, caution,
    per_leaf_start=True)`` (the official code's form: :math:`\beta_2` weighs the gradient
    difference) → ``add_decayed_weights(weight_decay)`` → ``scale(1 / (1 + lr *
    weight_decay))`` (the proximal decay, unless ``no_prox``) → ``scale_by_learning_rate(lr)``.
    As in timm the step count is per param group (bias corrections use the group's step even
    for a parameter that joins late), and a parameter's gradient difference starts at its own
    first gradient.

    Args:
      params: parameters or param groups.
      lr: learning rate, default ``1e-3``.
      betas: ``(beta1, beta2, beta3)``, default ``(0.98, 0.92, 0.99)``.
      eps: default ``1e-8``.
      weight_decay: decoupled weight decay, default ``0``.
      no_prox: decay ``p * (1 - lr * wd)`` instead of the proximal ``p / (1 + lr * wd)``,
        default ``False``.
      caution: cautious updates (of the first-moment term), default ``False``.
      foreach: accepted and ignored.

    Example::

        >>> opt = Adan(model.parameters(), lr=1e-3, weight_decay=0.02)

    State per parameter (``optimizer.state``): ``exp_avg``, ``exp_avg_sq``, ``exp_avg_diff``,
    ``pre_grad``, ``step`` and ``started``. ``state_dict()`` writes timm's layout (the group's
    ``step`` in its param group, ``neg_pre_grad = -pre_grad``), and ``load_state_dict`` reads it,
    so checkpoints cross between timm and the drop-in.
    """

    _state_key_map: ClassVar[dict[str, str]] = {
        "0.m": "exp_avg",
        "0.v": "exp_avg_diff",
        "0.n": "exp_avg_sq",
        "0.g": "pre_grad",
        "0.t": "step",
        "0.started": "started",
    }
    _per_param_steps: ClassVar[bool] = False
    _complex_as_real: ClassVar[bool] = False

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float, float] = (0.98, 0.92, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        no_prox: bool = False,
        caution: bool = False,
        foreach: bool | None = None,
    ) -> None:
        check_args(lr=lr, eps=eps, betas=betas, n_betas=3)
        super().__init__(
            params,
            _adan_tx,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            no_prox=no_prox,
            caution=caution,
            foreach=foreach,
        )

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        for group in sd["param_groups"]:
            for i in group["params"]:
                entry = sd["state"].get(i)
                if entry is None:
                    continue
                group["step"] = int(entry.pop("step"))
                entry.pop("started")
                entry["neg_pre_grad"] = -entry.pop("pre_grad")
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = {k: dict(v) for k, v in state_dict["state"].items()}
        groups = [dict(g) for g in state_dict["param_groups"]]
        for group in groups:
            step = group.pop("step", None)
            for i in group["params"]:
                entry = state.get(i)
                if entry is None or "neg_pre_grad" not in entry:
                    continue
                entry["pre_grad"] = -entry.pop("neg_pre_grad")
                entry["step"] = torch.tensor(int(step or 0), dtype=torch.int32)
                entry["started"] = torch.tensor(True)
        super().load_state_dict({**state_dict, "state": state, "param_groups": groups})
