"""timm's ``Adafactor`` on optax_torch (see :mod:`optax_torch.compat.timm`)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from optax_torch.base import GradientTransformation, identity
from optax_torch.combine import chain
from optax_torch.compat.timm._checks import IntStepDropIn
from optax_torch.compat.torch_optim._common import is_nonzero
from optax_torch.transforms import clip_by_block_rms, ema, scale
from optax_torch.transforms.caution import caution as cautious
from optax_torch.transforms.factorized import (
    add_adafactor_decayed_weights,
    scale_by_adafactor_step_size,
    scale_by_factored_rms,
)

__all__ = ["Adafactor"]


def _adafactor_tx(
    lr,
    eps,
    eps_scale,
    clip_threshold,
    decay_rate,
    beta1,
    weight_decay,
    scale_parameter,
    relative_step,
    warmup_init,
    min_dim_size_to_factor,
    caution,
) -> GradientTransformation:
    """The chain of one ``Adafactor`` param group: ``[caution?([factored rms, clip, step size,
    momentum]), decay scaled by the step size, -1]``."""
    step_size = None if relative_step else lr

    def step_kw() -> dict[str, Any]:
        return {
            "warmup_init": warmup_init,
            "scale_parameter": scale_parameter,
            "eps_scale": eps_scale,
        }

    members = [
        scale_by_factored_rms(
            decay_rate=-decay_rate,
            min_dim_size_to_factor=min_dim_size_to_factor,
            epsilon=eps,
            placeholders=False,
            factor_axes="leading_or_trailing",
        ),
        clip_by_block_rms(clip_threshold),
        scale_by_adafactor_step_size(step_size, **step_kw()),
    ]
    if beta1 is not None:
        members.append(ema(beta1, debias=False))
    direction = chain(*members)
    if beta1 is not None and caution:
        direction = cautious(direction)
    return chain(
        direction,
        add_adafactor_decayed_weights(weight_decay, step_size, **step_kw())
        if is_nonzero(weight_decay)
        else identity(),
        scale(-1.0),
    )


class Adafactor(IntStepDropIn):
    r"""timm's ``Adafactor`` (fairseq's, with timm's choice of factored axes) on optax_torch.

    Per param group, the chain
    :func:`~optax_torch.transforms.factorized.scale_by_factored_rms` ``(-decay_rate,
    min_dim_size_to_factor, eps, factor_axes="leading_or_trailing")`` →
    ``clip_by_block_rms(clip_threshold)`` →
    :func:`~optax_torch.transforms.factorized.scale_by_adafactor_step_size` (``lr``, or with
    ``lr=None`` the relative step :math:`\min(10^{-2}\ \text{or}\ 10^{-6}k, 1/\sqrt{k})
    \max(\epsilon_{scale}, \mathrm{RMS}(p))`) → ``ema(beta1, debias=False)`` (if ``betas``;
    with ``caution`` all of it inside :func:`~optax_torch.transforms.caution.caution`) →
    :func:`~optax_torch.transforms.factorized.add_adafactor_decayed_weights` ``(weight_decay)``
    (decay times the same step size) → ``scale(-1)``.

    Args:
      params: parameters or param groups (torch's format).
      lr: external learning rate; ``None`` (default): the relative step size.
      eps: added to the squared gradient, default ``1e-30``.
      eps_scale: smallest parameter scale of the relative step, default ``1e-3``.
      clip_threshold: RMS clipping threshold of the update, default ``1.0``.
      decay_rate: exponent of the second-moment decay :math:`1 - k^{\text{decay\_rate}}`,
        default ``-0.8``.
      betas: ``(beta1, _)`` for a momentum of the updates, default ``None`` (none).
      weight_decay: decoupled weight decay (times the step size), default ``0.0``.
      scale_parameter: scale the relative step by the parameter RMS, default ``True``.
      warmup_init: warm-up relative step (``lr=None`` only), default ``False``.
      min_dim_size_to_factor: factor axes larger than this, default ``16``.
      caution: cautious updates (with momentum), default ``False``.

    Example::

        >>> opt = Adafactor(model.parameters(), lr=None, weight_decay=1e-4)
        >>> loss.backward(); opt.step(); opt.zero_grad()

    State per parameter, as in timm: ``step``, ``exp_avg_sq_row`` / ``exp_avg_sq_col``
    (factored) or ``exp_avg_sq``, ``exp_avg`` (with momentum) and ``RMS`` (the parameter's RMS
    at the last step). Deviations: ``step`` is a 0-d int32 tensor (timm: a Python int); with
    ``relative_step`` timm writes each parameter's step size into ``group["lr"]`` (the last
    parameter's remains), here ``group["lr"]`` keeps its value (``None``); the second-moment
    decay needs ``decay_rate <= 0``; float16 / bfloat16 parameters keep their state in their
    own dtype (timm: float32).
    """

    _complex_as_real: ClassVar[bool] = False
    _state_key_map: ClassVar[dict[str, str]] = {
        "0.0.count": "step",
        "0.0.v_row": "exp_avg_sq_row",
        "0.0.v_col": "exp_avg_sq_col",
        "0.0.v": "exp_avg_sq",
        "0.2.count": "step",
        "0.2.param_rms": "RMS",
        "0.3.count": "step",
        "0.3.ema": "exp_avg",
        "1.count": "step",
    }

    def __init__(
        self,
        params,
        lr: float | None = None,
        eps: float = 1e-30,
        eps_scale: float = 1e-3,
        clip_threshold: float = 1.0,
        decay_rate: float = -0.8,
        betas: tuple[float, float] | None = None,
        weight_decay: float = 0.0,
        scale_parameter: bool = True,
        warmup_init: bool = False,
        min_dim_size_to_factor: int = 16,
        caution: bool = False,
    ) -> None:
        relative_step = lr is None
        if warmup_init and not relative_step:
            raise ValueError("warmup_init requires relative_step=True")
        super().__init__(
            params,
            _adafactor_tx,
            lr=lr,
            eps=eps,
            eps_scale=eps_scale,
            clip_threshold=clip_threshold,
            decay_rate=decay_rate,
            beta1=None if betas is None else betas[0],
            weight_decay=weight_decay,
            scale_parameter=scale_parameter,
            relative_step=relative_step,
            warmup_init=warmup_init,
            min_dim_size_to_factor=min_dim_size_to_factor,
            caution=caution,
        )

    def _adapt_entry(self, entry: dict[str, Any], expected: set[str]) -> dict[str, Any]:
        # timm's ``RMS`` is a Python number (0 before the first step): read in the default dtype.
        if isinstance(entry.get("RMS"), int | float):
            entry = {**entry, "RMS": torch.tensor(entry["RMS"], dtype=torch.get_default_dtype())}
        return entry
