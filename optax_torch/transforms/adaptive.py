"""Adaptive scalings beyond Adam: Adamax, AdaBelief, Yogi, RAdam, Adadelta, Lion, Adan.

(Adafactor's factored RMS, SM3 and NovoGrad, whose second moments are reduced over axes, are in
:mod:`optax_torch.transforms.factorized`.)
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import torch

from optax_torch import _validate as V
from optax_torch import numerics, tree
from optax_torch.base import (
    GradientTransformation,
    Updates,
    donation_safe,
    elementwise,
    leafwise,
)
from optax_torch.transforms.caution import _cautious
from optax_torch.transforms.moments import ScaleByAdamState

__all__ = [
    "ScaleByAdaDeltaState",
    "ScaleByAdanLeafStartState",
    "ScaleByAdanState",
    "ScaleByBeliefAmsgradState",
    "ScaleByBeliefState",
    "ScaleByLionState",
    "scale_by_adadelta",
    "scale_by_adamax",
    "scale_by_adan",
    "scale_by_belief",
    "scale_by_lion",
    "scale_by_radam",
    "scale_by_yogi",
]

Num = float | torch.Tensor


def _mu_hat(mu: Updates, updates: Updates, b1: Num, count_inc: torch.Tensor, nesterov: bool):
    r"""Debiased first moment; with ``nesterov``, :math:`\beta_1 m_k/(1-\beta_1^{k+1}) +
    (1-\beta_1) g_k/(1-\beta_1^k)` (optax's Nesterov form)."""
    if not nesterov:
        return tree.bias_correction(mu, b1, count_inc)
    return tree.add_scale(
        tree.scale(b1, tree.bias_correction(mu, b1, numerics.safe_increment(count_inc))),
        1 - b1,
        tree.bias_correction(updates, b1, count_inc),
    )


def _check_moments(b1: Num, b2: Num, eps: Num, eps_root: Num = 0.0) -> None:
    V.check_decay("b1", b1)
    V.check_decay("b2", b2)
    V.check_non_negative("eps", eps)
    V.check_non_negative("eps_root", eps_root)


# --------------------------------------------------------------------------------------------
# Adamax
# --------------------------------------------------------------------------------------------


def scale_by_adamax(
    b1: Num = 0.9,
    b2: Num = 0.999,
    eps: Num = 1e-8,
    *,
    mu_dtype: torch.dtype | None = None,
    nu_dtype: torch.dtype | None = None,
) -> GradientTransformation:
    r"""Rescales updates by Adamax: Adam with an infinity-norm second moment.

    .. math::
        m_k = \beta_1 m_{k-1} + (1-\beta_1) g_k,\quad
        v_k = \max(\beta_2 v_{k-1}, |g_k| + \epsilon),\quad
        u_k = \frac{m_k}{(1-\beta_1^k)\, v_k}

    The state is a :class:`~optax_torch.ScaleByAdamState` (``nu`` holds :math:`v`), as in optax.
    ``eps`` inside the maximum is both optax's and ``torch.optim.Adamax``'s placement, so
    ``chain(scale_by_adamax(b1, b2, eps), scale_by_learning_rate(lr))`` is torch's Adamax step
    (torch's ``lr / (1 - b1^k)`` is the bias correction of :math:`m_k` here).

    Args:
      b1: decay rate of the first moment (default 0.9).
      b2: decay rate of the running maximum of :math:`|g|` (default 0.999).
      eps: added to :math:`|g|` before the maximum (default 1e-8).
      mu_dtype: *extension* (not in optax): dtype of the first moment (default: the params').
      nu_dtype: *extension* (not in optax): dtype of the infinity moment.

    Reference: Kingma & Ba, 2014, https://arxiv.org/abs/1412.6980 (section 7.1)

    Example::

        >>> tx = otx.chain(otx.scale_by_adamax(), otx.scale_by_learning_rate(2e-3))
    """
    _check_moments(b1, b2, eps)

    def init_fn(params):
        return ScaleByAdamState(
            count=numerics.zero_count(),
            mu=tree.zeros_like(params, dtype=mu_dtype),
            nu=tree.zeros_like(params, dtype=nu_dtype),
        )

    @elementwise
    @leafwise
    def update_fn(updates, state, params=None):
        del params
        count_inc = numerics.safe_increment(state.count)
        mu = tree.update_moment(updates, state.mu, b1, 1)
        nu = tree.update_infinity_moment(updates, state.nu, b2, eps)
        updates = tree.div(tree.bias_correction(mu, b1, count_inc), nu)
        mu = tree.cast_like(mu, state.mu)
        nu = tree.cast_like(nu, state.nu)
        return updates, ScaleByAdamState(count=count_inc, mu=mu, nu=nu)

    return GradientTransformation(init_fn, donation_safe(update_fn))


# --------------------------------------------------------------------------------------------
# AdaBelief
# --------------------------------------------------------------------------------------------


class ScaleByBeliefState(NamedTuple):
    """State of :func:`scale_by_belief`."""

    count: torch.Tensor  # 0-d int32
    mu: Updates
    nu: Updates


class ScaleByBeliefAmsgradState(NamedTuple):
    """State of :func:`scale_by_belief` with ``amsgrad=True``."""

    count: torch.Tensor  # 0-d int32
    mu: Updates
    nu: Updates
    nu_max: Updates  # running maximum of nu


def _rectification(b2: Num, count_inc: torch.Tensor, threshold: Num, strict: bool):
    """RAdam's ``(rectify, r_k, 1 - b2 ** k)`` at step ``count_inc`` (0-d float64 tensors)."""
    ro_inf = 2.0 / (1.0 - b2) - 1.0
    k = count_inc.to(torch.float64)
    b2t = (b2.to(k) if isinstance(b2, torch.Tensor) else b2) ** k
    ro = ro_inf - 2 * k * b2t / (1 - b2t)
    rectify = ro > threshold if strict else ro >= threshold
    # sqrt of a negative number where the branch is not taken: keep it out of the graph
    # (a NaN there would poison gradients through torch.where).
    r2 = (ro - 4.0) * (ro - 2.0) * ro_inf / ((ro_inf - 4.0) * (ro_inf - 2.0) * ro)
    return rectify, torch.sqrt(torch.where(rectify, r2, torch.ones_like(r2))), 1 - b2t


def scale_by_belief(
    b1: Num = 0.9,
    b2: Num = 0.999,
    eps: Num = 1e-16,
    eps_root: Num = 1e-16,
    *,
    nesterov: bool = False,
    mu_dtype: torch.dtype | None = None,
    nu_dtype: torch.dtype | None = None,
    amsgrad: bool = False,
    rectify: bool = False,
    skip_intractable: bool = False,
) -> GradientTransformation:
    r"""Rescales updates by AdaBelief: Adam whose second moment tracks the prediction error.

    .. math::
        m_k = \beta_1 m_{k-1} + (1-\beta_1) g_k,\quad
        s_k = \beta_2 s_{k-1} + (1-\beta_2)(g_k - m_k)^2 + \bar\epsilon,\\
        u_k = \frac{m_k/(1-\beta_1^k)}{\sqrt{s_k/(1-\beta_2^k)} + \epsilon}

    With ``nesterov=True`` the debiased first moment is :math:`\beta_1 m_k/(1-\beta_1^{k+1}) +
    (1-\beta_1) g_k/(1-\beta_1^k)`.

    *Extensions* (not in optax; the AdaBelief paper's official options, timm's ``AdaBelief``):
    with ``amsgrad`` the denominator uses the running maximum :math:`\max_{j \le k} s_j`
    (state :class:`ScaleByBeliefAmsgradState`); with ``rectify`` (RAdam's rectification, with
    :math:`\rho_k, r_k` as in :func:`scale_by_radam`) the update is
    :math:`r_k \hat m_k \sqrt{1-\beta_2^k} / (\sqrt{s_k} + \epsilon)` where :math:`\rho_k \ge
    5`, else :math:`\hat m_k` (or zero with ``skip_intractable``) (the rectified step uses
    :math:`s_k`, not its maximum, as the original).

    Args:
      b1: decay rate of the first moment (default 0.9).
      b2: decay rate of the second moment of the prediction error (default 0.999).
      eps: added to the denominator outside the square root (default 1e-16).
      eps_root: :math:`\bar\epsilon`, added to :math:`s_k` (and kept in the state) (default 1e-16).
      nesterov: use Nesterov momentum (default False).
      mu_dtype, nu_dtype: *extension* (not in optax): dtypes of the two moments.
      amsgrad: *extension*: AMSGrad's maximum of the second moment (default False).
      rectify: *extension*: RAdam's rectified update (default False).
      skip_intractable: *extension*: with ``rectify``, no update while the variance is
        intractable (default False: the momentum step :math:`\hat m_k`; timm's
        ``degenerated_to_sgd`` is its negation).

    Reference: Zhuang et al., 2020, https://arxiv.org/abs/2010.07468

    Example::

        >>> tx = otx.chain(otx.scale_by_belief(), otx.scale_by_learning_rate(1e-3))
        >>> # AdaBelief's official defaults (rectified, as timm's AdaBelief):
        >>> tx = otx.scale_by_belief(eps_root=1e-16, rectify=True)
    """
    _check_moments(b1, b2, eps, eps_root)

    def init_fn(params):
        count = numerics.zero_count()
        mu = tree.zeros_like(params, dtype=mu_dtype)
        nu = tree.zeros_like(params, dtype=nu_dtype)
        if amsgrad:
            nu_max = tree.zeros_like(params, dtype=nu_dtype)
            return ScaleByBeliefAmsgradState(count=count, mu=mu, nu=nu, nu_max=nu_max)
        return ScaleByBeliefState(count=count, mu=mu, nu=nu)

    @elementwise
    @leafwise
    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        mu = tree.update_moment(updates, state.mu, b1, 1)
        prediction_error = tree.sub(updates, mu)
        nu = tree.update_moment_per_elem_norm(prediction_error, state.nu, b2, 2)
        nu = tree.add_scalar(nu, eps_root)
        count_inc = numerics.safe_increment(state.count)
        mu_hat = _mu_hat(mu, updates, b1, count_inc, nesterov)
        nu_max = tree.maximum(state.nu_max, nu) if amsgrad else None
        denom = nu_max if amsgrad else nu
        new_updates = tree.div_sqrt(mu_hat, denom, eps, y_scale=tree.debias_factor(b2, count_inc))
        if rectify:
            ok, r, bc2 = _rectification(b2, count_inc, 5.0, strict=False)
            rectified = tree.div_sqrt(mu_hat, nu, eps, x_scale=r * torch.sqrt(bc2))
            fallback = tree.zeros_like(mu_hat) if skip_intractable else mu_hat
            new_updates = tree.where(ok, rectified, tree.cast_like(fallback, rectified))
        mu = tree.cast_like(mu, state.mu)
        nu = tree.cast_like(nu, state.nu)
        if amsgrad:
            nu_max = tree.cast_like(nu_max, state.nu_max)
            return new_updates, ScaleByBeliefAmsgradState(count_inc, mu, nu, nu_max)
        return new_updates, ScaleByBeliefState(count=count_inc, mu=mu, nu=nu)

    return GradientTransformation(init_fn, update_fn)


# --------------------------------------------------------------------------------------------
# Yogi
# --------------------------------------------------------------------------------------------


def scale_by_yogi(
    b1: Num = 0.9,
    b2: Num = 0.999,
    eps: Num = 1e-3,
    eps_root: Num = 0.0,
    initial_accumulator_value: Num = 1e-6,
    *,
    mu_dtype: torch.dtype | None = None,
    nu_dtype: torch.dtype | None = None,
) -> GradientTransformation:
    r"""Rescales updates by Yogi: Adam with an additive (sign-controlled) second moment.

    .. math::
        m_k = \beta_1 m_{k-1} + (1-\beta_1) g_k,\quad
        v_k = v_{k-1} - (1-\beta_2)\,\mathrm{sign}(v_{k-1} - g_k^2)\, g_k^2,\\
        u_k = \frac{m_k/(1-\beta_1^k)}{\sqrt{v_k/(1-\beta_2^k) + \epsilon_{root}} + \epsilon}

    Both moments start at ``initial_accumulator_value``. The state is a
    :class:`~optax_torch.ScaleByAdamState`, as in optax.

    Args:
      b1: decay rate of the first moment (default 0.9).
      b2: rate of the second moment (default 0.999).
      eps: added to the denominator outside the square root (default 1e-3).
      eps_root: added inside the square root (default 0).
      initial_accumulator_value: initial value of both moments (default 1e-6).
      mu_dtype, nu_dtype: *extension* (not in optax): dtypes of the two moments.

    Reference: Zaheer et al., 2018, "Adaptive Methods for Nonconvex Optimization", NeurIPS,
    https://papers.nips.cc/paper/8186-adaptive-methods-for-nonconvex-optimization

    Example::

        >>> tx = otx.chain(otx.scale_by_yogi(), otx.scale_by_learning_rate(1e-2))
    """
    _check_moments(b1, b2, eps, eps_root)
    V.check_non_negative("initial_accumulator_value", initial_accumulator_value)

    def init_fn(params):
        return ScaleByAdamState(
            count=numerics.zero_count(),
            mu=tree.full_like(params, initial_accumulator_value, dtype=mu_dtype),
            nu=tree.full_like(params, initial_accumulator_value, dtype=nu_dtype),
        )

    def yogi_nu(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        half = g.dtype in (torch.float16, torch.bfloat16)
        # float16/bfloat16: g**2 in float32 (in float16 it overflows at |g| > 256), one rounding
        # to the wider of the grads' and nu's dtypes (nu_dtype=float32 keeps nu in float32)
        g2 = numerics.abs_sq(g.float() if half else g)
        # nu is real-valued (kept in the params' dtype, complex for complex params)
        v = v.real if v.is_complex() else v
        out_dtype = torch.promote_types(g.dtype, v.dtype) if half else g2.dtype
        v = v.to(g2.dtype)
        return (v - (1 - b2) * torch.sign(v - g2) * g2).to(out_dtype)

    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        mu = tree.update_moment(updates, state.mu, b1, 1)
        nu = tree.map(yogi_nu, updates, state.nu)
        count_inc = numerics.safe_increment(state.count)
        updates = tree.div_sqrt(
            mu,
            nu,
            eps,
            eps_root,
            x_scale=tree.debias_factor(b1, count_inc),
            y_scale=tree.debias_factor(b2, count_inc),
        )
        mu = tree.cast_like(mu, state.mu)
        nu = tree.cast_like(nu, state.nu)
        return updates, ScaleByAdamState(count=count_inc, mu=mu, nu=nu)

    return GradientTransformation(init_fn, update_fn)


# --------------------------------------------------------------------------------------------
# RAdam
# --------------------------------------------------------------------------------------------


def scale_by_radam(
    b1: Num = 0.9,
    b2: Num = 0.999,
    eps: Num = 1e-8,
    eps_root: Num = 0.0,
    threshold: Num = 5.0,
    *,
    nesterov: bool = False,
    mu_dtype: torch.dtype | None = None,
    nu_dtype: torch.dtype | None = None,
    eps_before_debias: bool = False,
    strict_threshold: bool = False,
) -> GradientTransformation:
    r"""Rescales updates by Rectified Adam.

    With :math:`\rho_\infty = 2/(1-\beta_2) - 1` and
    :math:`\rho_k = \rho_\infty - 2k\beta_2^k/(1-\beta_2^k)` (the length of the approximated
    simple moving average),

    .. math::
        r_k = \sqrt{\frac{(\rho_k-4)(\rho_k-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_k}},
        \qquad
        u_k = \begin{cases}
          r_k\, \hat m_k / (\sqrt{\hat v_k + \epsilon_{root}} + \epsilon) & \rho_k \ge
          \text{threshold} \\
          \hat m_k & \text{otherwise}
        \end{cases}

    with Adam's debiased moments :math:`\hat m_k, \hat v_k` (Nesterov form of :math:`\hat m_k` with
    ``nesterov=True``). The choice is made with ``torch.where`` (traceable). The state is a
    :class:`~optax_torch.ScaleByAdamState`, as in optax.

    ``torch.optim.RAdam``'s form differs in two places, both available as keyword extensions:
    torch adds :math:`\epsilon` to the root of the *raw* second moment, :math:`r_k \hat m_k
    \sqrt{1-\beta_2^k} / (\sqrt{v_k} + \epsilon)` (``eps_before_debias=True``; the same as
    optax's form with :math:`\epsilon / \sqrt{1-\beta_2^k}`), and rectifies only where
    :math:`\rho_k > 5` (``strict_threshold=True``). ``scale_by_radam(b1, b2, eps,
    eps_before_debias=True, strict_threshold=True)`` is torch's step before the learning rate.

    Args:
      b1: decay rate of the first moment (default 0.9).
      b2: decay rate of the second moment (default 0.999).
      eps: added to the denominator outside the square root (default 1e-8).
      eps_root: added inside the square root (default 0).
      threshold: the smallest :math:`\rho_k` for which the adaptive step is used (default 5).
      nesterov: use Nesterov momentum (default False).
      mu_dtype, nu_dtype: *extension* (not in optax): dtypes of the two moments.
      eps_before_debias: *extension* (not in optax). ``False`` (optax, default):
        :math:`\sqrt{\hat v_k + \epsilon_{root}} + \epsilon`; ``True`` (torch):
        :math:`\sqrt{1-\beta_2^k}^{-1} (\sqrt{v_k + (1-\beta_2^k)\epsilon_{root}} + \epsilon)`,
        i.e. ``eps`` is added before the second moment's bias correction.
      strict_threshold: *extension* (not in optax). ``False`` (optax, default): rectify where
        :math:`\rho_k \ge` ``threshold``; ``True`` (torch): where :math:`\rho_k >`
        ``threshold``.

    Reference: Liu et al., 2020, https://arxiv.org/abs/1908.03265

    Example::

        >>> tx = otx.chain(otx.scale_by_radam(), otx.scale_by_learning_rate(1e-3))
        >>> # torch.optim.RAdam(params, lr=1e-3)'s step:
        >>> tx = otx.chain(
        ...     otx.scale_by_radam(eps_before_debias=True, strict_threshold=True),
        ...     otx.scale_by_learning_rate(1e-3),
        ... )
    """
    _check_moments(b1, b2, eps, eps_root)
    V.check_finite("threshold", threshold)

    def init_fn(params):
        return ScaleByAdamState(
            count=numerics.zero_count(),
            mu=tree.zeros_like(params, dtype=mu_dtype),
            nu=tree.zeros_like(params, dtype=nu_dtype),
        )

    @elementwise
    @leafwise
    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        mu = tree.update_moment(updates, state.mu, b1, 1)
        nu = tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        count_inc = numerics.safe_increment(state.count)
        rectify, r, bc2 = _rectification(b2, count_inc, threshold, strict_threshold)
        mu_hat = _mu_hat(mu, updates, b1, count_inc, nesterov)
        if eps_before_debias:
            zero_root = not isinstance(eps_root, torch.Tensor) and eps_root == 0
            root = 0.0 if zero_root else eps_root * bc2
            adaptive = tree.div_sqrt(mu_hat, nu, eps, root, x_scale=r * torch.sqrt(bc2))
        else:
            adaptive = tree.div_sqrt(
                mu_hat, nu, eps, eps_root, x_scale=r, y_scale=tree.debias_factor(b2, count_inc)
            )
        updates = tree.where(rectify, adaptive, tree.cast_like(mu_hat, adaptive))
        mu = tree.cast_like(mu, state.mu)
        nu = tree.cast_like(nu, state.nu)
        return updates, ScaleByAdamState(count=count_inc, mu=mu, nu=nu)

    return GradientTransformation(init_fn, update_fn)


# --------------------------------------------------------------------------------------------
# Adadelta
# --------------------------------------------------------------------------------------------


class ScaleByAdaDeltaState(NamedTuple):
    """State of :func:`scale_by_adadelta`."""

    e_g: Updates  # EMA of squared gradients
    e_x: Updates  # EMA of squared updates


def scale_by_adadelta(rho: Num = 0.9, eps: Num = 1e-6) -> GradientTransformation:
    r"""Rescales updates by Adadelta.

    .. math::
        E[g^2]_k = \rho E[g^2]_{k-1} + (1-\rho) g_k^2,\quad
        u_k = \frac{\sqrt{E[\Delta x^2]_{k-1} + \epsilon}}{\sqrt{E[g^2]_k + \epsilon}}\, g_k,\quad
        E[\Delta x^2]_k = \rho E[\Delta x^2]_{k-1} + (1-\rho) u_k^2

    This is ``torch.optim.Adadelta``'s step before the learning rate (torch's ``square_avg`` and
    ``acc_delta`` are ``e_g`` and ``e_x``; torch's per-parameter ``step``, which the step does not
    use, is :func:`~optax_torch.count_steps` in a chain).

    Args:
      rho: decay rate of both running averages (default 0.9).
      eps: added inside both square roots (default 1e-6).

    Reference: Zeiler, 2012, https://arxiv.org/abs/1212.5701

    Example::

        >>> tx = otx.chain(otx.scale_by_adadelta(), otx.scale_by_learning_rate(1.0))
    """
    V.check_decay("rho", rho, allow_one=True)
    V.check_non_negative("eps", eps)

    def init_fn(params):
        return ScaleByAdaDeltaState(e_g=tree.zeros_like(params), e_x=tree.zeros_like(params))

    # Donation-safe: the old e_x is read (into a new tensor) before the update_moment that
    # replaces it, and never afterwards.
    def square_moment(g, m):
        # Real leaves: torch.optim's ``m * rho + (1 - rho) * g * g`` (fused: g**2 is never
        # rounded to a float16 leaf's dtype, where it would overflow at |g| > 256). Complex
        # leaves keep optax's ``g ** 2``.
        if any(torch.is_complex(x) for x in tree.leaves(g) if isinstance(x, torch.Tensor)):
            return tree.update_moment(g, m, rho, 2)
        return tree.update_moment_per_elem_norm(g, m, rho, 2)

    @elementwise
    @leafwise
    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        e_g = square_moment(updates, state.e_g)
        numer = tree.mul(tree.sqrt(tree.add_scalar(state.e_x, eps)), updates)
        updates = tree.div_sqrt(numer, e_g, 0.0, eps)
        e_x = square_moment(updates, state.e_x)
        e_g = tree.cast_like(e_g, state.e_g)
        e_x = tree.cast_like(e_x, state.e_x)
        return updates, ScaleByAdaDeltaState(e_g=e_g, e_x=e_x)

    return GradientTransformation(init_fn, update_fn)


# --------------------------------------------------------------------------------------------
# Lion
# --------------------------------------------------------------------------------------------


class ScaleByLionState(NamedTuple):
    """State of :func:`scale_by_lion`."""

    count: torch.Tensor  # 0-d int32
    mu: Updates


def scale_by_lion(
    b1: Num = 0.9,
    b2: Num = 0.99,
    mu_dtype: torch.dtype | None = None,
    *,
    mode: Literal["hard", "smooth", "refined"] = "hard",
    smooth_beta: float = 1.0,
) -> GradientTransformation:
    r"""Rescales updates by Lion: the sign of an interpolation of momentum and gradient.

    .. math::
        c_k = \beta_1 m_{k-1} + (1-\beta_1) g_k,\quad u_k = \mathrm{sign}(c_k),\quad
        m_k = \beta_2 m_{k-1} + (1-\beta_2) g_k

    ``mode="smooth"`` uses :math:`\tanh(\text{smooth\_beta}\cdot c_k)` instead of the sign,
    ``mode="refined"`` keeps :math:`c_k` where :math:`|c_k| < 1` and its sign elsewhere.

    Args:
      b1: rate combining the momentum and the current gradient (default 0.9).
      b2: decay rate of the momentum (default 0.99).
      mu_dtype: optional dtype of the momentum.
      mode: ``"hard"`` (default), ``"smooth"`` or ``"refined"``.
      smooth_beta: the slope of ``tanh`` for ``mode="smooth"`` (default 1).

    Reference: Chen et al., 2023, https://arxiv.org/abs/2302.06675

    Example::

        >>> tx = otx.chain(otx.scale_by_lion(), otx.scale_by_learning_rate(1e-4))
    """
    V.check_decay("b1", b1, allow_one=True)
    V.check_decay("b2", b2)
    if mode not in ("hard", "smooth", "refined"):
        raise ValueError(f"mode must be 'hard', 'smooth' or 'refined', got mode={mode!r}")
    V.check_finite("smooth_beta", smooth_beta)

    def sign_of(x: torch.Tensor) -> torch.Tensor:
        if mode == "hard":
            return torch.sign(x)
        if mode == "smooth":
            return torch.tanh(smooth_beta * x)
        return torch.where(torch.abs(x) < 1.0, x, torch.sign(x))

    def init_fn(params):
        V.check_real_params(params, "scale_by_lion")
        return ScaleByLionState(
            count=numerics.zero_count(), mu=tree.zeros_like(params, dtype=mu_dtype)
        )

    # Donation-safe: the old mu is read (into a fresh b1 * mu) before the update_moment that
    # replaces it (and never by an operation that could write into it).
    @elementwise
    @leafwise
    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        # b1 m + (1 - b1) g, then its sign: when the adapter donates, both operations write into
        # the buffer that b1 m made (one update buffer per step, as torch.optim-style Lions).
        inputs = (updates, state)
        b1_mu = tree.scale(b1, tree.cast_like(state.mu, updates))
        with tree._owned(b1_mu, inputs):
            c = tree.add_scale(b1_mu, 1 - b1, updates)
        if mode == "hard":
            with tree._owned(c, inputs):
                new_updates = tree.sign(c)
        else:
            new_updates = tree.map(sign_of, c)
        mu = tree.cast_like(tree.update_moment(updates, state.mu, b2, 1), state.mu)
        count_inc = numerics.safe_increment(state.count)
        return new_updates, ScaleByLionState(count=count_inc, mu=mu)

    return GradientTransformation(init_fn, update_fn)


# --------------------------------------------------------------------------------------------
# Adan
# --------------------------------------------------------------------------------------------


class ScaleByAdanState(NamedTuple):
    """State of :func:`scale_by_adan`."""

    m: Updates
    v: Updates
    n: Updates
    g: Updates  # the previous gradient
    t: torch.Tensor  # 0-d int32 step count


class ScaleByAdanLeafStartState(NamedTuple):
    """State of :func:`scale_by_adan` with ``per_leaf_start=True``."""

    m: Updates
    v: Updates
    n: Updates
    g: Updates  # the previous gradient
    t: torch.Tensor  # 0-d int32 step count
    started: Any  # per leaf, a 0-d bool tensor: whether the leaf has had a gradient


def scale_by_adan(
    b1: Num = 0.98,
    b2: Num = 0.92,
    b3: Num = 0.99,
    eps: Num = 1e-8,
    eps_root: Num = 0.0,
    *,
    mu_dtype: torch.dtype | None = None,
    nu_dtype: torch.dtype | None = None,
    diff_scale: Num | None = None,
    caution: bool = False,
    per_leaf_start: bool = False,
) -> GradientTransformation:
    r"""Rescales updates by Adan (adaptive Nesterov momentum), Algorithm 1 of the paper.

    With :math:`\Delta_k = g_k - g_{k-1}` (:math:`\Delta_1 = 0`):

    .. math::
        m_k = \beta_1 m_{k-1} + (1-\beta_1) g_k,\quad
        v_k = \beta_2 v_{k-1} + (1-\beta_2)\Delta_k,\\
        n_k = \beta_3 n_{k-1} + (1-\beta_3)\left(g_k + (1-\beta_2)\Delta_k\right)^2,\quad
        u_k = \frac{\hat m_k + (1-\beta_2)\hat v_k}{\sqrt{\hat n_k + \epsilon_{root}} + \epsilon}

    with the hats the bias corrections :math:`x_k / (1-\beta^k)`.

    *Extensions* (not in optax; the official code's and timm's ``Adan`` forms): ``diff_scale``
    :math:`\gamma` replaces :math:`1-\beta_2` in front of :math:`\Delta_k` and :math:`\hat v_k`
    (the official implementation uses :math:`\gamma = \beta_2` with :math:`\beta_2 = 0.92`);
    ``caution`` masks the :math:`\hat m_k` term where its sign disagrees with :math:`g_k`
    (:func:`optax_torch.caution`'s rescaled mask; the :math:`\hat v_k` term is kept);
    ``per_leaf_start`` takes :math:`\Delta = 0` at each leaf's own first gradient (a leaf that
    joins late, or gets ``None`` gradients, in :class:`~optax_torch.TorchOptimizer`), with a
    per-leaf flag in the state (:class:`ScaleByAdanLeafStartState`); the count stays shared.

    Args:
      b1: decay rate of the gradient average (default 0.98).
      b2: decay rate of the gradient-difference average (default 0.92).
      b3: decay rate of the squared term (default 0.99).
      eps: added to the denominator outside the square root (default 1e-8).
      eps_root: added inside the square root (default 0).
      mu_dtype: *extension* (not in optax): dtype of ``m`` and ``v``.
      nu_dtype: *extension* (not in optax): dtype of ``n``.
      diff_scale: *extension*: :math:`\gamma` (default ``None``: :math:`1-\beta_2`).
      caution: *extension*: cautious masking of the first-moment term (default ``False``).
      per_leaf_start: *extension*: per-leaf start of the gradient difference (default
        ``False``).

    Reference: Xie et al., 2022, https://arxiv.org/abs/2208.06677

    Example::

        >>> tx = otx.chain(otx.scale_by_adan(), otx.scale_by_learning_rate(1e-3))
    """
    V.check_decay("b1", b1)
    V.check_decay("b2", b2)
    V.check_decay("b3", b3)
    V.check_non_negative("eps", eps)
    V.check_non_negative("eps_root", eps_root)
    V.check_finite("diff_scale", diff_scale)

    gamma = 1 - b2 if diff_scale is None else diff_scale

    def init_fn(params):
        state = ScaleByAdanState(
            m=tree.zeros_like(params, dtype=mu_dtype),
            v=tree.zeros_like(params, dtype=mu_dtype),
            n=tree.zeros_like(params, dtype=nu_dtype),
            g=tree.zeros_like(params),
            t=numerics.zero_count(),
        )
        if not per_leaf_start:
            return state
        started = tree.map(lambda p: torch.zeros((), dtype=torch.bool, device=p.device), params)
        return ScaleByAdanLeafStartState(*state, started=started)

    @leafwise
    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        first: Any = state.t == 0
        if per_leaf_start:
            first = tree.map(lambda s: (state.t == 0) | ~s, state.started)
        diff = tree.where(
            first,
            tree.zeros_like(updates),
            tree.sub(updates, tree.cast_like(state.g, updates)),
        )
        m = tree.update_moment(updates, state.m, b1, 1)
        v = tree.update_moment(diff, state.v, b2, 1)
        n = tree.update_moment_per_elem_norm(tree.add_scale(updates, gamma, diff), state.n, b3, 2)
        t = numerics.safe_increment(state.t)
        m_hat = tree.bias_correction(m, b1, t)
        if caution:
            m_hat = tree.map(lambda u, g: _cautious(u, g, 1e-3), m_hat, updates)
        numer = tree.add_scale(m_hat, gamma, tree.bias_correction(v, b2, t))
        out = tree.div_sqrt(numer, n, eps, eps_root, y_scale=tree.debias_factor(b3, t))
        # The state keeps its own copy of g (the caller may reuse the gradient buffers in place,
        # e.g. zero_grad(set_to_none=False) or accumulation into .grad).
        g = tree.cast_like(tree.scale(1.0, updates), state.g)
        new_state = ScaleByAdanState(
            m=tree.cast_like(m, state.m),
            v=tree.cast_like(v, state.v),
            n=tree.cast_like(n, state.n),
            g=g,
            t=t,
        )
        if per_leaf_start:
            started = tree.map(lambda u, s: torch.ones_like(s), updates, state.started)
            return out, ScaleByAdanLeafStartState(*new_state, started=started)
        return out, new_state

    if not caution and not per_leaf_start:  # (a rescaled mask, flags: per leaf)
        elementwise(update_fn)
    return GradientTransformation(init_fn, update_fn)
