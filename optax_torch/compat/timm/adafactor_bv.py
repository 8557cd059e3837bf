"""timm's ``AdafactorBigVision`` on optax_torch (see :mod:`optax_torch.compat.timm`)."""

from __future__ import annotations

from typing import ClassVar

import torch

from optax_torch import tree
from optax_torch.base import GradientTransformation, identity, stateless
from optax_torch.combine import chain
from optax_torch.compat.timm._checks import check_scalar, max_lr_snapshot
from optax_torch.compat.torch_optim._common import TorchOptimDropIn, is_nonzero
from optax_torch.transforms import add_decayed_weights, clip_by_block_rms, ema, scale
from optax_torch.transforms.caution import caution as cautious
from optax_torch.transforms.factorized import scale_by_factored_rms

__all__ = ["AdafactorBigVision"]


def _cast(dtype: torch.dtype | None) -> GradientTransformation:
    """Casts the updates to ``dtype`` (``None``: to the parameters' dtypes)."""
    if dtype is None:
        return stateless(lambda u, p: tree.cast_like(u, p))
    return stateless(lambda u, p: tree.cast(u, dtype))


def _adafactor_bv_tx(
    lr,
    min_dim_size_to_factor,
    decay_rate,
    decay_offset,
    beta2_cap,
    momentum,
    momentum_dtype,
    eps,
    weight_decay,
    clipping_threshold,
    unscaled_wd,
    caution,
    corrected_weight_decay,
    max_lr_snapshot,
) -> GradientTransformation:
    """The chain of one ``AdafactorBigVision`` param group: ``[caution?([factored rms, clip,
    momentum (in momentum_dtype)]), lr, decoupled decay, -1]``."""
    members = [
        scale_by_factored_rms(
            decay_rate=decay_rate,
            step_offset=decay_offset,
            min_dim_size_to_factor=min_dim_size_to_factor,
            epsilon=1e-30 if eps is None else eps,
            beta2_cap=beta2_cap,
            clip_offset_step=True,
            keepdims=True,
        ),
        clip_by_block_rms(clipping_threshold) if clipping_threshold is not None else identity(),
    ]
    if momentum is not None:
        # timm's momentum runs in momentum_dtype (updates cast to it, the average read back).
        members += [
            _cast(momentum_dtype),
            ema(momentum, debias=False, accumulator_dtype=momentum_dtype),
            _cast(None),
        ]
    direction = chain(*members)
    if momentum is not None and caution:
        direction = cautious(direction)
    if unscaled_wd:
        wd_scale = 1.0 if not corrected_weight_decay else lr / max_lr_snapshot
    else:
        wd_scale = lr if not corrected_weight_decay else lr**2 / max_lr_snapshot
    return chain(
        direction,
        scale(lr),
        add_decayed_weights(wd_scale * weight_decay) if is_nonzero(weight_decay) else identity(),
        scale(-1.0),
    )


class AdafactorBigVision(TorchOptimDropIn):
    r"""timm's ``AdafactorBigVision`` (big_vision's Adafactor variant) on optax_torch.

    Per param group, the chain
    :func:`~optax_torch.transforms.factorized.scale_by_factored_rms` ``(decay_rate,
    decay_offset, min_dim_size_to_factor, eps, beta2_cap=, clip_offset_step=True,
    keepdims=True)`` (second moment factored over the two largest axes, with
    :math:`\hat\beta_{2,k} = \min(\text{cap}, 1 - \max(k - \text{offset}, 1)^{-\text{decay}})`) →
    ``clip_by_block_rms(clipping_threshold)`` → ``ema(momentum, debias=False)`` in
    ``momentum_dtype`` (all of it inside :func:`~optax_torch.transforms.caution.caution` with
    ``caution``) → ``scale(lr)`` → ``add_decayed_weights(s * weight_decay)`` (``s``: ``lr``,
    ``1`` with ``unscaled_wd``, times ``lr / max_lr`` with ``corrected_weight_decay``) →
    ``scale(-1)``.

    Args:
      params: parameters or param groups (torch's format).
      lr: learning rate, default ``1.0``.
      min_dim_size_to_factor: factor only if the two largest axes have at least this size,
        default ``16``.
      decay_rate: exponent of the second-moment decay, default ``0.8``.
      decay_offset: steps subtracted in the decay schedule, default ``0``.
      beta2_cap: largest second-moment decay, default ``0.999``.
      momentum: momentum (``None``: none), default ``0.9``.
      momentum_dtype: dtype of the momentum (or ``"float16"``, ``"bfloat16"``, ``"float32"``),
        default ``torch.bfloat16``.
      eps: added to the squared gradient, default ``None`` (``1e-30``).
      weight_decay: decoupled weight decay, default ``0.0``.
      clipping_threshold: RMS clipping of the update (``None``: none), default ``None``.
      unscaled_wd: decay not scaled by ``lr``, default ``False``.
      caution: cautious updates (with momentum), default ``False``.
      corrected_weight_decay: scale the decay by ``lr / max_lr``, default ``False``.

    Example::

        >>> opt = AdafactorBigVision(model.parameters(), lr=1e-3, weight_decay=1e-4)
        >>> loss.backward(); opt.step(); opt.zero_grad()

    State per parameter, as in timm: ``step``, ``exp_avg_sq_r`` / ``exp_avg_sq_c`` (factored,
    the reduced axis kept as size 1) or ``exp_avg_sq``, ``exp_avg`` (with momentum, in
    ``momentum_dtype``). Deviations: ``step`` is a 0-d int32 tensor (timm: float32);
    ``eps=None`` is ``1e-30`` for every dtype (timm: ``1e-7`` for float16 gradients).
    """

    _complex_as_real: ClassVar[bool] = False
    _state_key_map: ClassVar[dict[str, str]] = {
        "0.0.count": "step",
        "0.0.v_row": "exp_avg_sq_r",
        "0.0.v_col": "exp_avg_sq_c",
        "0.0.v": "exp_avg_sq",
        "0.3.count": "step",
        "0.3.ema": "exp_avg",
    }

    def __init__(
        self,
        params,
        lr: float = 1.0,
        min_dim_size_to_factor: int = 16,
        decay_rate: float = 0.8,
        decay_offset: int = 0,
        beta2_cap: float = 0.999,
        momentum: float | None = 0.9,
        momentum_dtype: str | torch.dtype = torch.bfloat16,
        eps: float | None = None,
        weight_decay: float = 0.0,
        clipping_threshold: float | None = None,
        unscaled_wd: bool = False,
        caution: bool = False,
        corrected_weight_decay: bool = False,
    ) -> None:
        if isinstance(momentum_dtype, str):
            if momentum_dtype == "float16":
                momentum_dtype = torch.float16
            elif momentum_dtype == "bfloat16":
                momentum_dtype = torch.bfloat16
            else:
                assert momentum_dtype == "float32", f"{momentum_dtype} dtype not supported"
                momentum_dtype = torch.float32
        check_scalar("learning rate", lr)
        check_scalar("weight_decay", weight_decay)
        max_lr = max_lr_snapshot(lr, corrected_weight_decay)
        super().__init__(
            params,
            _adafactor_bv_tx,
            lr=lr,
            min_dim_size_to_factor=min_dim_size_to_factor,
            decay_rate=decay_rate,
            decay_offset=decay_offset,
            beta2_cap=beta2_cap,
            momentum=momentum,
            momentum_dtype=momentum_dtype,
            eps=eps,
            weight_decay=weight_decay,
            clipping_threshold=clipping_threshold,
            unscaled_wd=unscaled_wd,
            caution=caution,
            corrected_weight_decay=corrected_weight_decay,
            max_lr_snapshot=max_lr,
        )
