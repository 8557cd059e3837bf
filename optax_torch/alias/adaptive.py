"""Adaptive-moment optimizers beyond Adam: AdaBelief, Adadelta, Adafactor, Adamax(W), Adan, Lion,
NovoGrad, RAdam, SM3, Yogi — each a short chain of transformations (optax's names and defaults)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from optax_torch import _validate as V
from optax_torch import transforms as T
from optax_torch.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    ScalarOrSchedule,
)
from optax_torch.combine import chain

__all__ = [
    "adabelief",
    "adadelta",
    "adafactor",
    "adamax",
    "adamaxw",
    "adan",
    "lion",
    "novograd",
    "radam",
    "sm3",
    "yogi",
]

Num = float | torch.Tensor
MaskOrFn = Any | Callable[[Any], Any] | None


def adabelief(
    learning_rate: ScalarOrSchedule,
    b1: Num = 0.9,
    b2: Num = 0.999,
    eps: Num = 1e-16,
    eps_root: Num = 1e-16,
    *,
    nesterov: bool = False,
    mu_dtype: torch.dtype | None = None,
    nu_dtype: torch.dtype | None = None,
) -> GradientTransformationExtraArgs:
    r"""AdaBelief: ``chain(scale_by_belief(...), scale_by_learning_rate(learning_rate))``.

    .. math::
        s_k = \beta_2 s_{k-1} + (1-\beta_2)(g_k - m_k)^2 + \bar\epsilon,\quad
        u_k = -\alpha_k\, \hat m_k / (\sqrt{\hat s_k} + \epsilon)

    See :func:`optax_torch.scale_by_belief` (``mu_dtype``/``nu_dtype``: *extension*, not in
    optax). The paper's defaults are ``eps=1e-8, eps_root=0``.

    Reference: Zhuang et al., 2020, https://arxiv.org/abs/2010.07468

    Example::

        >>> opt = otx.adabelief(1e-3)
    """
    V.check_finite("learning_rate", learning_rate)
    return chain(
        T.scale_by_belief(
            b1=b1,
            b2=b2,
            eps=eps,
            eps_root=eps_root,
            nesterov=nesterov,
            mu_dtype=mu_dtype,
            nu_dtype=nu_dtype,
        ),
        T.scale_by_learning_rate(learning_rate),
    )


def adadelta(
    learning_rate: ScalarOrSchedule | None = None,
    rho: Num = 0.9,
    eps: Num = 1e-6,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_decay_mask: MaskOrFn = None,
) -> GradientTransformationExtraArgs:
    r"""Adadelta, with optional (L2-style, before the scaling) weight decay.

    ``chain(add_decayed_weights(weight_decay, weight_decay_mask), scale_by_adadelta(rho, eps),
    scale_by_learning_rate(learning_rate))``:

    .. math::
        u_k = -\alpha_k \frac{\sqrt{E[\Delta x^2]_{k-1} + \epsilon}}{\sqrt{E[g^2]_k + \epsilon}}
        g_k

    Args:
      learning_rate: scale of the step, a number or a schedule. ``None`` (the default) means
        1, the paper's Adadelta (``torch.optim.Adadelta``'s default ``lr=1.0``). *Deviation*:
        optax's ``None`` drops the learning-rate link and with it the sign flip, so its default
        ``adadelta()`` ascends the gradient.
      rho: decay rate of the running averages (default 0.9).
      eps: added inside the square roots (default 1e-6).
      weight_decay: coefficient of the weight decay added to the gradient (default 0).
      weight_decay_mask: tree of booleans or function ``params -> tree`` selecting decayed params.

    Reference: Zeiler, 2012, https://arxiv.org/abs/1212.5701

    Example::

        >>> opt = otx.adadelta(1.0)
    """
    V.check_finite("learning_rate", learning_rate)
    V.check_non_negative("weight_decay", weight_decay)
    return chain(
        T.add_decayed_weights(weight_decay, mask=weight_decay_mask),
        T.scale_by_adadelta(rho=rho, eps=eps),
        T.scale_by_learning_rate(1.0 if learning_rate is None else learning_rate),
    )


def adafactor(
    learning_rate: ScalarOrSchedule | None = None,
    min_dim_size_to_factor: int = 128,
    decay_rate: Num = 0.8,
    decay_offset: int | torch.Tensor = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: Num | None = 1.0,
    momentum: Num | None = None,
    dtype_momentum: torch.dtype = torch.float32,
    weight_decay_rate: ScalarOrSchedule | None = None,
    eps: Num = 1e-30,
    factored: bool = True,
    weight_decay_mask: MaskOrFn = None,
) -> GradientTransformationExtraArgs:
    r"""Adafactor: adaptive steps from a factored (row and column) second-moment estimate.

    The chain, each link optional as in optax: :func:`~optax_torch.scale_by_factored_rms` →
    :func:`~optax_torch.clip_by_block_rms` (``clipping_threshold``) →
    :func:`~optax_torch.scale_by_learning_rate` (``learning_rate``, without the sign flip) →
    :func:`~optax_torch.scale_by_param_block_rms` (``multiply_by_parameter_scale``: the step is
    relative to the parameter's RMS, at least 1e-3) → :func:`~optax_torch.ema` (``momentum``,
    not debiased, kept in ``dtype_momentum``) → :func:`~optax_torch.add_decayed_weights`
    (``weight_decay_rate``, ``weight_decay_mask``) → ``scale(-1)``.

    Args:
      learning_rate: step size or schedule; ``None`` (default) leaves the step relative
        (Adafactor's natural scale differs from Adam's).
      min_dim_size_to_factor: factor only parameters whose two largest axes have at least this
        size (default 128).
      decay_rate: exponent of the second-moment decay schedule (default 0.8).
      decay_offset: step at which the decay schedule starts (e.g. for fine-tuning).
      multiply_by_parameter_scale: scale the step by the parameter's RMS (default True).
      clipping_threshold: clip each update's RMS to this (default 1; ``None``: no clipping).
      momentum: EMA decay of the updates (default ``None``: no momentum, no extra memory).
      dtype_momentum: dtype of the momentum buffer (default float32).
      weight_decay_rate: decoupled weight decay (default ``None``: none).
      eps: added to the squared gradients (default 1e-30).
      factored: use factored second moments (default True).
      weight_decay_mask: tree of booleans or function ``params -> tree`` selecting decayed params.

    Reference: Shazeer & Stern, 2018, https://arxiv.org/abs/1804.04235

    Example::

        >>> opt = otx.adafactor(1e-2)
    """
    V.check_finite("learning_rate", learning_rate)
    V.check_non_negative("min_dim_size_to_factor", min_dim_size_to_factor)
    V.check_non_negative("decay_rate", decay_rate)
    V.check_non_negative("decay_offset", decay_offset)
    V.check_positive("clipping_threshold", clipping_threshold)
    V.check_decay("momentum", momentum)
    V.check_non_negative("weight_decay_rate", weight_decay_rate)
    V.check_non_negative("eps", eps)
    tx: list[GradientTransformation] = [
        T.scale_by_factored_rms(factored, decay_rate, decay_offset, min_dim_size_to_factor, eps)
    ]
    if clipping_threshold is not None:
        tx.append(T.clip_by_block_rms(clipping_threshold))
    if learning_rate is not None:
        tx.append(T.scale_by_learning_rate(learning_rate, flip_sign=False))
    if multiply_by_parameter_scale:
        tx.append(T.scale_by_param_block_rms())
    if momentum is not None:
        tx.append(T.ema(momentum, debias=False, accumulator_dtype=dtype_momentum))
    if weight_decay_rate is not None:
        tx.append(T.add_decayed_weights(weight_decay_rate, mask=weight_decay_mask))
    tx.append(T.scale(-1))
    return chain(*tx)


def adamax(
    learning_rate: ScalarOrSchedule,
    b1: Num = 0.9,
    b2: Num = 0.999,
    eps: Num = 1e-8,
    *,
    mu_dtype: torch.dtype | None = None,
    nu_dtype: torch.dtype | None = None,
) -> GradientTransformationExtraArgs:
    r"""Adamax: ``chain(scale_by_adamax(b1, b2, eps), scale_by_learning_rate(learning_rate))``.

    .. math::
        u_k = -\alpha_k \frac{m_k}{(1-\beta_1^k)\, v_k},\quad
        v_k = \max(\beta_2 v_{k-1}, |g_k| + \epsilon)

    (``mu_dtype``/``nu_dtype``: *extension*, not in optax.)

    Reference: Kingma & Ba, 2014, https://arxiv.org/abs/1412.6980 (section 7.1)

    Example::

        >>> opt = otx.adamax(2e-3)
    """
    V.check_finite("learning_rate", learning_rate)
    return chain(
        T.scale_by_adamax(b1=b1, b2=b2, eps=eps, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
        T.scale_by_learning_rate(learning_rate),
    )


def adamaxw(
    learning_rate: ScalarOrSchedule,
    b1: Num = 0.9,
    b2: Num = 0.999,
    eps: Num = 1e-8,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: MaskOrFn = None,
    *,
    mu_dtype: torch.dtype | None = None,
    nu_dtype: torch.dtype | None = None,
) -> GradientTransformationExtraArgs:
    r"""AdamaxW: Adamax with decoupled weight decay.

    ``chain(scale_by_adamax(b1, b2, eps), add_decayed_weights(weight_decay, mask),
    scale_by_learning_rate(learning_rate))``, i.e. :math:`u_k = -\alpha_k(\hat m_k / v_k + \lambda
    p_k)` (the decay is multiplied by the learning rate, as in ``torch.optim.AdamW``).
    (``mu_dtype``/``nu_dtype``: *extension*, not in optax.)

    Reference: Loshchilov & Hutter, 2019, https://arxiv.org/abs/1711.05101

    Example::

        >>> opt = otx.adamaxw(2e-3, weight_decay=1e-2)
    """
    V.check_finite("learning_rate", learning_rate)
    V.check_non_negative("weight_decay", weight_decay)
    return chain(
        T.scale_by_adamax(b1=b1, b2=b2, eps=eps, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
        T.add_decayed_weights(weight_decay, mask),
        T.scale_by_learning_rate(learning_rate),
    )


def adan(
    learning_rate: ScalarOrSchedule,
    b1: Num = 0.98,
    b2: Num = 0.92,
    b3: Num = 0.99,
    eps: Num = 1e-8,
    eps_root: Num = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: MaskOrFn = None,
    *,
    mu_dtype: torch.dtype | None = None,
    nu_dtype: torch.dtype | None = None,
) -> GradientTransformationExtraArgs:
    r"""Adan (adaptive Nesterov momentum) with decoupled weight decay.

    ``chain(scale_by_adan(b1, b2, b3, eps, eps_root), add_decayed_weights(weight_decay, mask),
    scale_by_learning_rate(learning_rate))``; see :func:`optax_torch.scale_by_adan` for the math.
    Note ``eps_root=1e-8`` here (the transformation's default is 0), as in optax.
    (``mu_dtype``/``nu_dtype``: *extension*, not in optax.)

    Reference: Xie et al., 2022, https://arxiv.org/abs/2208.06677

    Example::

        >>> opt = otx.adan(1e-3, weight_decay=0.02)
    """
    V.check_finite("learning_rate", learning_rate)
    V.check_non_negative("weight_decay", weight_decay)
    return chain(
        T.scale_by_adan(
            b1=b1, b2=b2, b3=b3, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype, nu_dtype=nu_dtype
        ),
        T.add_decayed_weights(weight_decay, mask),
        T.scale_by_learning_rate(learning_rate),
    )


def lion(
    learning_rate: ScalarOrSchedule,
    b1: Num = 0.9,
    b2: Num = 0.99,
    mu_dtype: torch.dtype | None = None,
    weight_decay: ScalarOrSchedule = 1e-3,
    mask: MaskOrFn = None,
) -> GradientTransformationExtraArgs:
    r"""Lion: the sign of an interpolation of momentum and gradient, with decoupled weight decay.

    ``chain(scale_by_lion(b1, b2, mu_dtype), add_decayed_weights(weight_decay, mask),
    scale_by_learning_rate(learning_rate))``:

    .. math::
        u_k = -\alpha_k\left(\mathrm{sign}(\beta_1 m_{k-1} + (1-\beta_1) g_k) + \lambda p_k\right),
        \quad m_k = \beta_2 m_{k-1} + (1-\beta_2) g_k

    A good learning rate is typically 3-10x smaller than AdamW's, and the weight decay 3-10x
    larger.

    Reference: Chen et al., 2023, https://arxiv.org/abs/2302.06675

    Example::

        >>> opt = otx.lion(1e-4, weight_decay=1e-2)
    """
    V.check_finite("learning_rate", learning_rate)
    V.check_non_negative("weight_decay", weight_decay)
    return chain(
        T.scale_by_lion(b1=b1, b2=b2, mu_dtype=mu_dtype),
        T.add_decayed_weights(weight_decay, mask),
        T.scale_by_learning_rate(learning_rate),
    )


def novograd(
    learning_rate: ScalarOrSchedule,
    b1: Num = 0.9,
    b2: Num = 0.25,
    eps: Num = 1e-6,
    eps_root: Num = 0.0,
    weight_decay: Num = 0.0,
) -> GradientTransformationExtraArgs:
    r"""NovoGrad: ``chain(scale_by_novograd(b1, b2, eps, eps_root, weight_decay),
    scale_by_learning_rate(learning_rate))``.

    Per-tensor second moments of the gradient norm; the weight decay is added to the normalised
    gradient inside the momentum. See :func:`optax_torch.scale_by_novograd`. Note ``eps=1e-6``
    here (the transformation's default is 1e-8), as in optax.

    Reference: Ginsburg et al., 2019, https://arxiv.org/abs/1905.11286

    Example::

        >>> opt = otx.novograd(1e-2, weight_decay=1e-3)
    """
    V.check_finite("learning_rate", learning_rate)
    return chain(
        T.scale_by_novograd(b1=b1, b2=b2, eps=eps, eps_root=eps_root, weight_decay=weight_decay),
        T.scale_by_learning_rate(learning_rate),
    )


def radam(
    learning_rate: ScalarOrSchedule,
    b1: Num = 0.9,
    b2: Num = 0.999,
    eps: Num = 1e-8,
    eps_root: Num = 0.0,
    threshold: Num = 5.0,
    *,
    nesterov: bool = False,
    mu_dtype: torch.dtype | None = None,
    nu_dtype: torch.dtype | None = None,
) -> GradientTransformationExtraArgs:
    r"""Rectified Adam: ``chain(scale_by_radam(...), scale_by_learning_rate(learning_rate))``.

    Takes plain momentum steps while the variance of the adaptive learning rate is intractable
    (:math:`\rho_k <` ``threshold``), then rectified Adam steps; see
    :func:`optax_torch.scale_by_radam`. (``mu_dtype``/``nu_dtype``: *extension*, not in optax.)

    Reference: Liu et al., 2020, https://arxiv.org/abs/1908.03265

    Example::

        >>> opt = otx.radam(1e-3)
    """
    V.check_finite("learning_rate", learning_rate)
    return chain(
        T.scale_by_radam(
            b1=b1,
            b2=b2,
            eps=eps,
            eps_root=eps_root,
            threshold=threshold,
            nesterov=nesterov,
            mu_dtype=mu_dtype,
            nu_dtype=nu_dtype,
        ),
        T.scale_by_learning_rate(learning_rate),
    )


def sm3(learning_rate: Num, momentum: Num = 0.9) -> GradientTransformationExtraArgs:
    r"""SM3: ``chain(scale_by_sm3(momentum), scale(-learning_rate))``.

    Memory-efficient adaptive steps from per-axis maxima of the accumulated squared gradients;
    see :func:`optax_torch.scale_by_sm3`. ``learning_rate`` is a number (not a schedule), as in
    optax.

    Reference: Anil et al., 2019, https://arxiv.org/abs/1901.11150

    Example::

        >>> opt = otx.sm3(0.1)
    """
    V.check_finite("learning_rate", learning_rate)
    V.check_decay("momentum", momentum)
    return chain(T.scale_by_sm3(momentum), T.scale(-learning_rate))


def yogi(
    learning_rate: ScalarOrSchedule,
    b1: Num = 0.9,
    b2: Num = 0.999,
    eps: Num = 1e-3,
    *,
    mu_dtype: torch.dtype | None = None,
    nu_dtype: torch.dtype | None = None,
) -> GradientTransformationExtraArgs:
    r"""Yogi: ``chain(scale_by_yogi(b1, b2, eps), scale_by_learning_rate(learning_rate))``.

    Adam with an additive second-moment update that cannot grow the effective learning rate too
    fast; see :func:`optax_torch.scale_by_yogi`. (``mu_dtype``/``nu_dtype``: *extension*, not
    in optax.)

    Reference: Zaheer et al., 2018,
    https://papers.nips.cc/paper/8186-adaptive-methods-for-nonconvex-optimization

    Example::

        >>> opt = otx.yogi(1e-2)
    """
    V.check_finite("learning_rate", learning_rate)
    return chain(
        T.scale_by_yogi(b1=b1, b2=b2, eps=eps, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
        T.scale_by_learning_rate(learning_rate),
    )
