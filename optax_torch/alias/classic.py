"""Optimizers: each a short named chain of transformations (optax's names and defaults)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from optax_torch import transforms as T
from optax_torch._validate import check_non_negative
from optax_torch.base import GradientTransformationExtraArgs, ScalarOrSchedule, identity
from optax_torch.combine import chain

__all__ = ["adagrad", "adam", "adamw", "amsgrad", "nadam", "nadamw", "rmsprop", "sgd"]

Num = float | torch.Tensor


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: Num | None = None,
    nesterov: bool = False,
    accumulator_dtype: torch.dtype | None = None,
) -> GradientTransformationExtraArgs:
    r"""Stochastic gradient descent, optionally with (Nesterov) momentum.

    ``chain(trace(momentum, nesterov), scale_by_learning_rate(learning_rate))``:
    :math:`t_k = g_k + \mu t_{k-1},\; u_k = -\alpha_k t_k` (Nesterov: :math:`u_k = -\alpha_k(g_k +
    \mu t_k)`) — ``torch.optim.SGD`` with ``dampening=0``.

    Example::

        >>> opt = otx.sgd(0.1, momentum=0.9)
    """
    check_non_negative("momentum", momentum)
    first = (
        T.trace(decay=momentum, nesterov=nesterov, accumulator_dtype=accumulator_dtype)
        if momentum is not None
        else identity()
    )
    return chain(first, T.scale_by_learning_rate(learning_rate))


def adam(
    learning_rate: ScalarOrSchedule,
    b1: Num = 0.9,
    b2: Num = 0.999,
    eps: Num = 1e-8,
    eps_root: Num = 0.0,
    mu_dtype: torch.dtype | None = None,
    *,
    nesterov: bool = False,
    nu_dtype: torch.dtype | None = None,
) -> GradientTransformationExtraArgs:
    r"""Adam: ``chain(scale_by_adam(...), scale_by_learning_rate(learning_rate))``.

    See :func:`optax_torch.scale_by_adam` for the math. Reference: Kingma & Ba, 2014.
    ``nu_dtype`` (keyword-only extension) is the second moment's dtype: with
    ``mu_dtype=nu_dtype=torch.bfloat16`` the state of float32 parameters takes half the memory.

    Example::

        >>> opt = otx.adam(1e-3)
    """
    return chain(
        T.scale_by_adam(
            b1=b1,
            b2=b2,
            eps=eps,
            eps_root=eps_root,
            mu_dtype=mu_dtype,
            nu_dtype=nu_dtype,
            nesterov=nesterov,
        ),
        T.scale_by_learning_rate(learning_rate),
    )


def adamw(
    learning_rate: ScalarOrSchedule,
    b1: Num = 0.9,
    b2: Num = 0.999,
    eps: Num = 1e-8,
    eps_root: Num = 0.0,
    mu_dtype: torch.dtype | None = None,
    weight_decay: Num = 1e-4,
    mask: Any | Callable[[Any], Any] | None = None,
    *,
    nesterov: bool = False,
    nu_dtype: torch.dtype | None = None,
) -> GradientTransformationExtraArgs:
    r"""AdamW: Adam with decoupled weight decay.

    ``chain(scale_by_adam(...), add_decayed_weights(weight_decay, mask),
    scale_by_learning_rate(learning_rate))``, i.e. :math:`u_k = -\alpha_k(\hat m_k / (\sqrt{\hat
    v_k} + \epsilon) + \lambda p_k)` — the same step as ``torch.optim.AdamW`` (which applies the
    decay to the parameters just before the Adam step).

    Note the default ``weight_decay=1e-4`` (optax's); ``torch.optim.AdamW`` defaults to ``1e-2``.
    ``nu_dtype`` (keyword-only extension) is the second moment's dtype: with
    ``mu_dtype=nu_dtype=torch.bfloat16`` the state of float32 parameters takes half the memory
    (``TorchOptimizer(params, adamw, lr=1e-3, mu_dtype=..., nu_dtype=...)``).
    Reference: Loshchilov & Hutter, 2019, https://arxiv.org/abs/1711.05101

    Example::

        >>> opt = otx.adamw(1e-3, weight_decay=1e-2)
    """
    check_non_negative("weight_decay", weight_decay)
    return chain(
        T.scale_by_adam(
            b1=b1,
            b2=b2,
            eps=eps,
            eps_root=eps_root,
            mu_dtype=mu_dtype,
            nu_dtype=nu_dtype,
            nesterov=nesterov,
        ),
        T.add_decayed_weights(weight_decay, mask),
        T.scale_by_learning_rate(learning_rate),
    )


def nadam(
    learning_rate: ScalarOrSchedule,
    b1: Num = 0.9,
    b2: Num = 0.999,
    eps: Num = 1e-8,
    eps_root: Num = 0.0,
    mu_dtype: torch.dtype | None = None,
) -> GradientTransformationExtraArgs:
    """NAdam as optax defines it: :func:`adam` with ``nesterov=True``.

    For ``torch.optim.NAdam`` (with its momentum schedule) use :func:`optax_torch.scale_by_nadam`.

    Example::

        >>> opt = otx.nadam(1e-3)
    """
    return adam(learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov=True)


def nadamw(
    learning_rate: ScalarOrSchedule,
    b1: Num = 0.9,
    b2: Num = 0.999,
    eps: Num = 1e-8,
    eps_root: Num = 0.0,
    mu_dtype: torch.dtype | None = None,
    weight_decay: Num = 1e-4,
    mask: Any | Callable[[Any], Any] | None = None,
) -> GradientTransformationExtraArgs:
    """NAdamW: :func:`adamw` with ``nesterov=True``.

    Example::

        >>> opt = otx.nadamw(1e-3, weight_decay=1e-2)
    """
    return adamw(learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask, nesterov=True)


def amsgrad(
    learning_rate: ScalarOrSchedule,
    b1: Num = 0.9,
    b2: Num = 0.999,
    eps: Num = 1e-8,
    eps_root: Num = 0.0,
    mu_dtype: torch.dtype | None = None,
) -> GradientTransformationExtraArgs:
    """AMSGrad: ``chain(scale_by_amsgrad(...), scale_by_learning_rate(learning_rate))``.

    Reference: Reddi et al., 2018.

    Example::

        >>> opt = otx.amsgrad(1e-3)
    """
    return chain(
        T.scale_by_amsgrad(b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype),
        T.scale_by_learning_rate(learning_rate),
    )


def rmsprop(
    learning_rate: ScalarOrSchedule,
    decay: Num = 0.9,
    eps: Num = 1e-8,
    initial_scale: Num = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: Num | None = None,
    nesterov: bool = False,
    bias_correction: bool = False,
) -> GradientTransformationExtraArgs:
    r"""RMSProp (optionally centred, with momentum).

    ``chain(scale_by_rms | scale_by_stddev, scale_by_learning_rate, trace(momentum))`` — as in
    optax, momentum accumulates the *learning-rate-scaled* step (``torch.optim.RMSprop`` scales
    after the momentum; the two agree for a constant learning rate).

    Example::

        >>> opt = otx.rmsprop(1e-3, momentum=0.9, centered=True)
    """
    check_non_negative("momentum", momentum)
    make = T.scale_by_stddev if centered else T.scale_by_rms
    scaling = make(decay, eps, initial_scale, eps_in_sqrt, bias_correction)
    return chain(
        scaling,
        T.scale_by_learning_rate(learning_rate),
        T.trace(decay=momentum, nesterov=nesterov) if momentum is not None else identity(),
    )


def adagrad(
    learning_rate: ScalarOrSchedule,
    initial_accumulator_value: Num = 0.1,
    eps: Num = 1e-7,
) -> GradientTransformationExtraArgs:
    """Adagrad: ``chain(scale_by_rss(initial_accumulator_value, eps), scale_by_learning_rate)``.

    Reference: Duchi et al., 2011.

    Example::

        >>> opt = otx.adagrad(1e-2)
    """
    return chain(
        T.scale_by_rss(initial_accumulator_value=initial_accumulator_value, eps=eps),
        T.scale_by_learning_rate(learning_rate),
    )
