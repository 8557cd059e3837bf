"""AdEMAMix and its simplified form: a mix of a fast and a slow EMA of the gradients."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from optax_torch import _validate, numerics, tree
from optax_torch.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    ScalarOrSchedule,
    Updates,
    donation_safe,
)
from optax_torch.combine import chain
from optax_torch.transforms import add_decayed_weights, scale_by_learning_rate

__all__ = [
    "ScaleByAdemamixState",
    "ScaleBySimplifiedAdEMAMixState",
    "ademamix",
    "scale_by_ademamix",
    "scale_by_simplified_ademamix",
    "simplified_ademamix",
]

Num = float | torch.Tensor


class ScaleByAdemamixState(NamedTuple):
    """State of :func:`scale_by_ademamix`."""

    count: torch.Tensor  # 0-d int32: steps of the fast EMA and the second moment
    count_m2: torch.Tensor  # 0-d int32: steps of the slow EMA (the count the schedules see)
    m1: Updates  # fast EMA of the gradients
    m2: Updates  # slow EMA of the gradients
    nu: Updates  # EMA of the squared gradients


def _value(x: ScalarOrSchedule, count: torch.Tensor) -> Num:
    return x(count) if callable(x) else x


def scale_by_ademamix(
    b1: Num = 0.9,
    b2: Num = 0.999,
    b3: ScalarOrSchedule = 0.9999,
    alpha: ScalarOrSchedule = 6.0,
    eps: Num = 1e-8,
    eps_root: Num = 0.0,
    mu_dtype: torch.dtype | None = None,
) -> GradientTransformation:
    r"""Rescales updates by AdEMAMix: Adam whose numerator adds a slow EMA of the gradients.

    .. math::
        m^{(1)}_k = \beta_1 m^{(1)}_{k-1} + (1-\beta_1) g_k,\quad
        m^{(2)}_k = \beta_3 m^{(2)}_{k-1} + (1-\beta_3) g_k,\quad
        \nu_k = \beta_2 \nu_{k-1} + (1-\beta_2) g_k^2,\\
        u_k = \frac{m^{(1)}_k / (1-\beta_1^k) + \alpha\, m^{(2)}_k}
                   {\sqrt{\nu_k / (1-\beta_2^k) + \bar\epsilon} + \epsilon}

    The slow EMA is not bias-corrected (it fills slowly on purpose). ``b3`` and ``alpha`` may be
    schedules of ``count_m2`` (the paper warms both up over many steps).

    Args:
      b1: decay rate of the fast EMA (default 0.9).
      b2: decay rate of the second moment (default 0.999).
      b3: decay rate of the slow EMA, or a schedule (default 0.9999).
      alpha: mixing coefficient of the slow EMA, or a schedule (default 6.0).
      eps: added to the denominator outside the square root (default 1e-8).
      eps_root: added inside the square root (default 0).
      mu_dtype: optional dtype of the moments ``m1``, ``m2`` and ``nu`` (as in optax).

    Reference: Pagliardini et al., `The AdEMAMix Optimizer: Better, Faster, Older
    <https://arxiv.org/abs/2409.03137>`_, 2024.

    Example::

        >>> tx = otx.chain(otx.contrib.scale_by_ademamix(), otx.scale_by_learning_rate(1e-3))
    """
    _validate.check_decay("b1", b1)
    _validate.check_decay("b2", b2)
    if not callable(b3):
        _validate.check_decay("b3", b3)
    if not callable(alpha):
        _validate.check_finite("alpha", alpha)
    _validate.check_non_negative("eps", eps)
    _validate.check_non_negative("eps_root", eps_root)

    def init_fn(params):
        return ScaleByAdemamixState(
            count=numerics.zero_count(),
            count_m2=numerics.zero_count(),
            m1=tree.zeros_like(params, dtype=mu_dtype),
            m2=tree.zeros_like(params, dtype=mu_dtype),
            nu=tree.zeros_like(params, dtype=mu_dtype),
        )

    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        c_b3 = _value(b3, state.count_m2)
        c_alpha = _value(alpha, state.count_m2)
        m1 = tree.update_moment(updates, state.m1, b1, 1)
        m2 = tree.update_moment(updates, state.m2, c_b3, 1)
        nu = tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        count_inc = numerics.safe_increment(state.count)
        count_m2_inc = numerics.safe_increment(state.count_m2)
        numer = tree.add_scale(tree.bias_correction(m1, b1, count_inc), c_alpha, m2)
        out = tree.div_sqrt(numer, nu, eps, eps_root, y_scale=tree.debias_factor(b2, count_inc))
        return out, ScaleByAdemamixState(
            count=count_inc,
            count_m2=count_m2_inc,
            m1=tree.cast(m1, mu_dtype),
            m2=tree.cast(m2, mu_dtype),
            nu=tree.cast(nu, mu_dtype),
        )

    return GradientTransformation(init_fn, update_fn)


def ademamix(
    learning_rate: ScalarOrSchedule,
    b1: Num = 0.9,
    b2: Num = 0.999,
    b3: ScalarOrSchedule = 0.9999,
    alpha: ScalarOrSchedule = 5.0,
    eps: Num = 1e-8,
    eps_root: Num = 0.0,
    mu_dtype: torch.dtype | None = None,
    weight_decay: Num = 0.0,
    mask: Any | Callable[[Any], Any] | None = None,
) -> GradientTransformationExtraArgs:
    r"""AdEMAMix: AdamW with a mixture of a fast and a slow EMA of the gradients.

    ``chain(scale_by_ademamix(...), add_decayed_weights(weight_decay, mask),
    scale_by_learning_rate(learning_rate))``:

    .. math::
        \theta_k = \theta_{k-1} - \eta_k \left(\frac{\hat m^{(1)}_k + \alpha m^{(2)}_k}
        {\sqrt{\hat\nu_k + \bar\epsilon} + \epsilon} + \lambda \theta_{k-1}\right)

    (see :func:`scale_by_ademamix`). Best suited to long runs; smaller ``b3`` (e.g. 0.999) suits
    short ones. Note the default ``alpha=5.0`` here and ``6.0`` in :func:`scale_by_ademamix`
    (optax's defaults).

    Args:
      learning_rate: a number, a 0-d tensor or a schedule.
      b1, b2, b3, alpha, eps, eps_root, mu_dtype: see :func:`scale_by_ademamix`.
      weight_decay: decoupled weight decay, multiplied by the learning rate (default 0).
      mask: a tree (or a function of the params returning one) of booleans: where to decay.

    Reference: Pagliardini et al., `The AdEMAMix Optimizer: Better, Faster, Older
    <https://arxiv.org/abs/2409.03137>`_, 2024.

    Example::

        >>> opt = otx.contrib.ademamix(1e-3, b3=otx.linear_schedule(0.9, 0.9999, 1000))
    """
    _validate.check_finite("learning_rate", learning_rate)
    _validate.check_non_negative("weight_decay", weight_decay)
    return chain(
        scale_by_ademamix(
            b1=b1, b2=b2, b3=b3, alpha=alpha, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype
        ),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


class ScaleBySimplifiedAdEMAMixState(NamedTuple):
    """State of :func:`scale_by_simplified_ademamix`."""

    t: torch.Tensor  # 0-d int32 step count
    m: Updates  # accumulated (undamped) momentum
    n: Updates  # EMA of the squared gradients


def scale_by_simplified_ademamix(
    b1: Num = 0.99,
    b2: Num = 0.95,
    alpha: ScalarOrSchedule = 0.0,
    eps: Num = 1e-8,
    eps_root: Num = 0.0,
) -> GradientTransformation:
    r"""Rescales updates by the simplified AdEMAMix: one (undamped) momentum plus the gradient.

    .. math::
        m_k = \beta_1 m_{k-1} + g_k,\quad n_k = \beta_2 n_{k-1} + (1-\beta_2) g_k^2,\quad
        u_k = \frac{m_k + \alpha g_k}{\sqrt{n_k / (1-\beta_2^k) + \bar\epsilon} + \epsilon}

    ``alpha`` may be a schedule of the step count.

    Args:
      b1: decay rate of the momentum (default 0.99).
      b2: decay rate of the second moment (default 0.95).
      alpha: weight of the current gradient, or a schedule (default 0).
      eps: added to the denominator outside the square root (default 1e-8).
      eps_root: added inside the square root (default 0).

    Reference: Morwani et al., `Connections between Schedule-Free Optimizers, AdEMAMix, and
    Accelerated SGD Variants <https://arxiv.org/abs/2502.02431>`_, 2025.

    Example::

        >>> tx = otx.chain(
        ...     otx.contrib.scale_by_simplified_ademamix(alpha=2.0),
        ...     otx.scale_by_learning_rate(1e-4),
        ... )
    """
    _validate.check_decay("b1", b1)
    _validate.check_decay("b2", b2)
    if not callable(alpha):
        _validate.check_finite("alpha", alpha)
    _validate.check_non_negative("eps", eps)
    _validate.check_non_negative("eps_root", eps_root)

    def init_fn(params):
        return ScaleBySimplifiedAdEMAMixState(
            t=numerics.zero_count(), m=tree.zeros_like(params), n=tree.zeros_like(params)
        )

    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        c_alpha = _value(alpha, state.t)
        m = tree.add_scale(updates, b1, state.m)
        n = tree.update_moment_per_elem_norm(updates, state.n, b2, 2)
        t = numerics.safe_increment(state.t)
        numer = tree.add_scale(m, c_alpha, updates)
        out = tree.div_sqrt(numer, n, eps, eps_root, y_scale=tree.debias_factor(b2, t))
        return out, ScaleBySimplifiedAdEMAMixState(t=t, m=m, n=n)

    return GradientTransformation(init_fn, update_fn)


def simplified_ademamix(
    learning_rate: ScalarOrSchedule,
    b1: Num = 0.99,
    b2: Num = 0.95,
    alpha: ScalarOrSchedule = 0.0,
    eps: Num = 1e-8,
    eps_root: Num = 0.0,
    weight_decay: Num = 0.0,
    mask: Any | Callable[[Any], Any] | None = None,
) -> GradientTransformationExtraArgs:
    r"""Simplified AdEMAMix: one momentum buffer, no schedule needed for ``alpha``.

    ``chain(scale_by_simplified_ademamix(...), add_decayed_weights(weight_decay, mask),
    scale_by_learning_rate(learning_rate))``:

    .. math::
        \theta_k = \theta_{k-1} - \eta_k \left(\frac{m_k + \alpha g_k}
        {\sqrt{\hat n_k + \bar\epsilon} + \epsilon} + \lambda \theta_{k-1}\right)

    (see :func:`scale_by_simplified_ademamix`). ``alpha = 0`` recovers Adam with a rescaled
    learning rate and :math:`\beta_1`.

    Args:
      learning_rate: a number, a 0-d tensor or a schedule.
      b1, b2, alpha, eps, eps_root: see :func:`scale_by_simplified_ademamix`.
      weight_decay: decoupled weight decay, multiplied by the learning rate (default 0).
      mask: a tree (or a function of the params returning one) of booleans: where to decay.

    Reference: Morwani et al., `Connections between Schedule-Free Optimizers, AdEMAMix, and
    Accelerated SGD Variants <https://arxiv.org/abs/2502.02431>`_, 2025.

    Example::

        >>> opt = otx.contrib.simplified_ademamix(1e-4, alpha=5.0)
    """
    _validate.check_finite("learning_rate", learning_rate)
    _validate.check_non_negative("weight_decay", weight_decay)
    return chain(
        scale_by_simplified_ademamix(b1=b1, b2=b2, alpha=alpha, eps=eps, eps_root=eps_root),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
