"""Adaptive scalings by moment estimates: Adam, AMSGrad, NAdam (torch form), RMS, stddev, RSS."""

from __future__ import annotations

from typing import NamedTuple

import torch

from optax_torch import _validate, numerics, tree
from optax_torch.base import (
    _ENDS_IN_DIV_SQRT,
    GradientTransformation,
    Updates,
    _mark,
    _reuses_updates,
    donation_safe,
    elementwise,
    leafwise,
)

__all__ = [
    "ScaleByAdamState",
    "ScaleByAmsgradState",
    "ScaleByNadamState",
    "ScaleByRStdDevState",
    "ScaleByRStdDevWithCountState",
    "ScaleByRmsState",
    "ScaleByRmsWithCountState",
    "ScaleByRssState",
    "scale_by_adam",
    "scale_by_amsgrad",
    "scale_by_nadam",
    "scale_by_rms",
    "scale_by_rss",
    "scale_by_stddev",
]

Num = float | torch.Tensor


def _rms_clip(updates, grads, denom_of, clipping_threshold):
    """Divides each leaf of ``updates`` by ``max(1, rms(g / d) / clipping_threshold)`` with ``d``
    the leaf's Adam denominator (``denom_of(grads)`` gives ``g / d``): timm's RMS update clip."""
    ratios = denom_of(grads)

    def clip(u, r):
        if u is None or r is None:
            return u
        rms = torch.linalg.vector_norm(r) / (r.numel() ** 0.5)
        return u / torch.clamp_min(rms / clipping_threshold, 1.0)

    return tree.map(clip, updates, ratios)


class ScaleByAdamState(NamedTuple):
    """State of :func:`scale_by_adam`."""

    count: torch.Tensor  # 0-d int32
    mu: Updates
    nu: Updates


def scale_by_adam(
    b1: Num = 0.9,
    b2: Num = 0.999,
    eps: Num = 1e-8,
    eps_root: Num = 0.0,
    mu_dtype: torch.dtype | None = None,
    *,
    nesterov: bool = False,
    nesterov_shared_debias: bool = False,
    clipping_threshold: float | None = None,
    bias_correction: bool = True,
    nu_dtype: torch.dtype | None = None,
) -> GradientTransformation:
    r"""Rescales updates by Adam's bias-corrected moment estimates.

    .. math::
        m_k = \beta_1 m_{k-1} + (1-\beta_1) g_k,\quad v_k = \beta_2 v_{k-1} + (1-\beta_2) g_k^2,\\
        \hat m_k = m_k / (1-\beta_1^k),\quad \hat v_k = v_k / (1-\beta_2^k),\quad
        u_k = \hat m_k / (\sqrt{\hat v_k + \epsilon_{root}} + \epsilon)

    With ``nesterov=True``, :math:`\hat m_k = \beta_1 m_k/(1-\beta_1^{k+1}) + (1-\beta_1) g_k /
    (1-\beta_1^k)` (NAdam as in optax, Dozat 2016 without the momentum schedule); with also
    ``nesterov_shared_debias=True``, :math:`\hat m_k = (\beta_1 m_k + (1-\beta_1) g_k) /
    (1-\beta_1^k)` (NAdamW of timm and of the MLCommons AlgoPerf baseline).

    With ``clipping_threshold`` :math:`c` (StableAdamW's RMS update clipping, timm's form), each
    leaf's update is divided by :math:`\max(1, \operatorname{rms}(g_k / d_k) / c)`, with
    :math:`d_k = \sqrt{\hat v_k + \epsilon_{root}} + \epsilon` its denominator.

    Args:
      b1, b2: decay rates of the first and second moments.
      eps: added to the denominator outside the square root.
      eps_root: added inside the square root (useful when differentiating through the step).
      mu_dtype: optional dtype of the first moment (e.g. ``torch.bfloat16`` to save memory).
      nu_dtype: *extension* (not in optax), keyword-only: optional dtype of the second moment
        (with ``mu_dtype``, ``torch.bfloat16`` halves the state of float32 parameters; the
        moments are updated in the gradients' precision and rounded once per step).
      nesterov: use Nesterov momentum.
      nesterov_shared_debias: *extension* (not in optax), default ``False``; with ``nesterov``,
        debias :math:`\beta_1 m_k + (1-\beta_1) g_k` by :math:`1-\beta_1^k` as a whole.
      clipping_threshold: *extension* (not in optax), default ``None`` (no clipping); ``> 0``.
      bias_correction: *extension* (not in optax), default ``True``; ``False`` uses the raw
        moments :math:`m_k, v_k` (timm's ``Lamb(bias_correction=False)``; not with ``nesterov``).

    References: Kingma & Ba, 2014, https://arxiv.org/abs/1412.6980; Wortsman et al., 2023,
    "Stable and low-precision training for large-scale vision-language models"
    (StableAdamW), https://arxiv.org/abs/2304.13013

    Example::

        >>> tx = otx.chain(otx.scale_by_adam(), otx.scale_by_learning_rate(1e-3))
    """

    _validate.check_decay("b1", b1)
    _validate.check_decay("b2", b2)
    _validate.check_non_negative("eps", eps)
    _validate.check_non_negative("eps_root", eps_root)
    if clipping_threshold is not None:
        _validate.check_positive("clipping_threshold", clipping_threshold)
    if nesterov and not bias_correction:
        raise ValueError("bias_correction=False is not supported with nesterov=True")

    def init_fn(params):
        return ScaleByAdamState(
            count=numerics.zero_count(),
            mu=tree.zeros_like(params, dtype=mu_dtype),
            nu=tree.zeros_like(params, dtype=nu_dtype),
        )

    @leafwise
    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        into = updates if clipping_threshold is None else None
        mu = tree.update_moment(updates, state.mu, b1, 1)
        nu = tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        count_inc = numerics.safe_increment(state.count)
        nu_scale: Num = tree.debias_factor(b2, count_inc) if bias_correction else 1.0
        if nesterov and nesterov_shared_debias:
            mu_hat = tree.update_moment(updates, mu, b1, 1)
            mu_scale = tree.debias_factor(b1, count_inc)
            out = tree.div_sqrt(
                mu_hat, nu, eps, eps_root, x_scale=mu_scale, y_scale=nu_scale, into=into
            )
        elif nesterov:
            mu_hat = tree.add_scale(
                tree.scale(b1, tree.bias_correction(mu, b1, numerics.safe_increment(count_inc))),
                1 - b1,
                tree.bias_correction(updates, b1, count_inc),
            )
            out = tree.div_sqrt(mu_hat, nu, eps, eps_root, y_scale=nu_scale, into=into)
        elif not bias_correction:
            out = tree.div_sqrt(mu, nu, eps, eps_root, into=into)
        else:
            mu_scale = tree.debias_factor(b1, count_inc)
            out = tree.div_sqrt(
                mu, nu, eps, eps_root, x_scale=mu_scale, y_scale=nu_scale, into=into
            )
        if clipping_threshold is not None:
            out = _rms_clip(
                out,
                updates,
                lambda g: tree.div_sqrt(g, nu, eps, eps_root, y_scale=nu_scale),
                clipping_threshold,
            )
        updates = out
        mu = tree.cast(mu, mu_dtype)
        nu = tree.cast_like(nu, state.nu)
        return updates, ScaleByAdamState(count=count_inc, mu=mu, nu=nu)

    if clipping_threshold is None:
        # (The RMS clip is per leaf: leafwise, not element-wise.)
        elementwise(update_fn)
        # The output may be written into the incoming updates when a chain donates them (Adam
        # after gradient clipping): they are read for the last time by the operation making it
        # (div_sqrt, or Nesterov's bias correction of the gradient). The RMS clip reads them
        # again afterwards.
        _reuses_updates(update_fn)
        # Its output is its div_sqrt's: the adapter may compute that quotient in its parameter
        # update (torch's addcdiv_; tree._deferred_scale).
        _mark(update_fn, _ENDS_IN_DIV_SQRT)
    return GradientTransformation(init_fn, update_fn)


class ScaleByAmsgradState(NamedTuple):
    """State of :func:`scale_by_amsgrad`."""

    count: torch.Tensor
    mu: Updates
    nu: Updates
    nu_max: Updates


def scale_by_amsgrad(
    b1: Num = 0.9,
    b2: Num = 0.999,
    eps: Num = 1e-8,
    eps_root: Num = 0.0,
    mu_dtype: torch.dtype | None = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
    *,
    debias_after_max: bool = False,
    clipping_threshold: float | None = None,
) -> GradientTransformation:
    r"""Rescales updates by AMSGrad: Adam with a running maximum of the second moment.

    .. math::
        \hat v^{max}_k = \max(\hat v^{max}_{k-1}, \hat v_k),\qquad
        u_k = \hat m_k / (\sqrt{\hat v^{max}_k + \epsilon_{root}} + \epsilon)

    Args:
      b1, b2, eps, eps_root, mu_dtype: as in :func:`scale_by_adam`.
      bias_correction_mu: debias the first moment (``False``: the original AMSGrad paper).
      bias_correction_nu: debias the second moment (``False``: the original AMSGrad paper).
      debias_after_max: *extension* (not in optax). ``False`` (optax): the maximum is over the
        bias-corrected :math:`\hat v_k`. ``True`` (``torch.optim.Adam(amsgrad=True)``): the maximum
        is over the raw :math:`v_k`, and the bias correction is applied to the maximum.
      clipping_threshold: *extension* (not in optax), default ``None``: RMS update clipping as
        in :func:`scale_by_adam` (the denominator is the AMSGrad one).

    Reference: Reddi et al., 2018, https://openreview.net/forum?id=ryQu7f-RZ
    """

    _validate.check_decay("b1", b1)
    _validate.check_decay("b2", b2)
    _validate.check_non_negative("eps", eps)
    _validate.check_non_negative("eps_root", eps_root)
    if clipping_threshold is not None:
        _validate.check_positive("clipping_threshold", clipping_threshold)

    def init_fn(params):
        return ScaleByAmsgradState(
            count=numerics.zero_count(),
            mu=tree.zeros_like(params, dtype=mu_dtype),
            nu=tree.zeros_like(params),
            nu_max=tree.zeros_like(params),
        )

    @leafwise
    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        mu = tree.update_moment(updates, state.mu, b1, 1)
        nu = tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        count_inc = numerics.safe_increment(state.count)
        mu_scale = tree.debias_factor(b1, count_inc) if bias_correction_mu else 1.0
        nu_scale: Num = 1.0
        if debias_after_max or not bias_correction_nu:
            nu_max = tree.maximum(state.nu_max, nu)
            if bias_correction_nu:
                nu_scale = tree.debias_factor(b2, count_inc)
        else:
            nu_max = tree.maximum(state.nu_max, tree.bias_correction(nu, b2, count_inc))
        out = tree.div_sqrt(mu, nu_max, eps, eps_root, x_scale=mu_scale, y_scale=nu_scale)
        if clipping_threshold is not None:
            out = _rms_clip(
                out,
                updates,
                lambda g: tree.div_sqrt(g, nu_max, eps, eps_root, y_scale=nu_scale),
                clipping_threshold,
            )
        updates = out
        mu = tree.cast(mu, mu_dtype)
        return updates, ScaleByAmsgradState(count=count_inc, mu=mu, nu=nu, nu_max=nu_max)

    if clipping_threshold is None:  # its output is its div_sqrt's (as scale_by_adam)
        elementwise(update_fn)
        _mark(update_fn, _ENDS_IN_DIV_SQRT)
    return GradientTransformation(init_fn, update_fn)


class ScaleByNadamState(NamedTuple):
    """State of :func:`scale_by_nadam`."""

    count: torch.Tensor
    mu_product: torch.Tensor  # 0-d (float64 by default): prod_{i<=k} mu_i
    mu: Updates
    nu: Updates


def _torch_scalar_dtype() -> torch.dtype:
    """The dtype ``torch.optim`` keeps its scalar state in (``step``, NAdam's ``mu_product``)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def scale_by_nadam(
    b1: Num = 0.9,
    b2: Num = 0.999,
    eps: Num = 1e-8,
    momentum_decay: Num = 4e-3,
    *,
    mu_product_dtype: torch.dtype | None = torch.float64,
) -> GradientTransformation:
    r"""NAdam with Dozat's momentum schedule, the form of ``torch.optim.NAdam``.

    .. math::
        \mu_k = \beta_1 (1 - \tfrac12 \cdot 0.96^{k\psi}),\quad
        m_k = \beta_1 m_{k-1} + (1-\beta_1) g_k,\quad
        v_k = \beta_2 v_{k-1} + (1-\beta_2) g_k^2,\\
        u_k = \frac{1-\mu_k}{1 - \prod_{i\le k}\mu_i}\,\frac{g_k}{d_k}
            + \frac{\mu_{k+1}}{1 - \prod_{i\le k+1}\mu_i}\,\frac{m_k}{d_k},\quad
        d_k = \sqrt{v_k / (1-\beta_2^k)} + \epsilon

    with :math:`k` the 1-based step and :math:`\psi` = ``momentum_decay``. The running product
    :math:`\prod_{i\le k}\mu_i` is kept in the state (``mu_product``, torch's name).
    :func:`scale_by_adam` with ``nesterov=True`` is the simpler variant optax calls NAdam (no
    momentum schedule); with ``momentum_decay=0`` this one has a constant
    :math:`\mu_k = \beta_1/2`.

    Args:
      b1, b2: decay rates of the first and second moments.
      eps: added to the denominator outside the square root.
      momentum_decay: :math:`\psi \ge 0`, the speed of the momentum schedule (``4e-3``).
      mu_product_dtype: dtype of the 0-d ``mu_product`` state, ``torch.float64`` by default.
        ``None``: the dtype ``torch.optim.NAdam`` uses, chosen at ``init`` (``float64`` if the
        default dtype is ``float64``, else ``float32``); the coefficients are computed in
        float64 from its value either way, as torch does.

    Reference: Dozat, 2016, "Incorporating Nesterov Momentum into Adam",
    https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ

    Example::

        >>> tx = otx.chain(otx.scale_by_nadam(), otx.scale_by_learning_rate(2e-3))
        >>> state = tx.init(params)   # state[0].mu_product == 1
    """

    _validate.check_decay("b1", b1)
    _validate.check_decay("b2", b2)
    _validate.check_non_negative("eps", eps)
    _validate.check_non_negative("momentum_decay", momentum_decay)

    def init_fn(params):
        dtype = mu_product_dtype or _torch_scalar_dtype()
        return ScaleByNadamState(
            count=numerics.zero_count(),
            mu_product=torch.ones((), dtype=dtype),
            mu=tree.zeros_like(params),
            nu=tree.zeros_like(params),
        )

    @elementwise
    @leafwise
    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        count_inc = numerics.safe_increment(state.count)
        k = count_inc.to(torch.float64)
        mu_k = b1 * (1.0 - 0.5 * 0.96 ** (k * momentum_decay))
        mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((k + 1) * momentum_decay))
        # In the state's dtype, like torch's in-place ``mu_product *= mu``.
        mu_product = state.mu_product * mu_k.to(state.mu_product.dtype)
        prod = mu_product.to(torch.float64)
        mu = tree.update_moment(updates, state.mu, b1, 1)
        nu = tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        grad_coef = (1.0 - mu_k) / (1.0 - prod)
        mom_coef = mu_next / (1.0 - prod * mu_next)
        numer = tree.add_scale(tree.scale(grad_coef, updates), mom_coef, mu)
        out = tree.div_sqrt(numer, nu, eps, y_scale=tree.debias_factor(b2, count_inc))
        return out, ScaleByNadamState(count=count_inc, mu_product=mu_product, mu=mu, nu=nu)

    return GradientTransformation(init_fn, update_fn)


class ScaleByRmsState(NamedTuple):
    """State of :func:`scale_by_rms` (without bias correction)."""

    nu: Updates


class ScaleByRmsWithCountState(NamedTuple):
    """State of :func:`scale_by_rms` with ``bias_correction=True``."""

    count: torch.Tensor
    nu: Updates


def scale_by_rms(
    decay: Num = 0.9,
    eps: Num = 1e-8,
    initial_scale: Num = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
) -> GradientTransformation:
    r"""Rescales updates by the root of an EMA of squared gradients (RMSProp).

    .. math::
        v_k = \text{decay}\, v_{k-1} + (1-\text{decay}) g_k^2,\qquad
        u_k = g_k / \sqrt{v_k + \epsilon}\;\; \text{or}\;\; g_k / (\sqrt{v_k} + \epsilon)

    Args:
      decay: EMA decay of the squared gradients.
      eps: stability term; inside the root if ``eps_in_sqrt`` (optax default), outside otherwise
        (``torch.optim.RMSprop``).
      initial_scale: initial value of :math:`v`.
      bias_correction: divide :math:`v_k` by :math:`1-\text{decay}^k`.

    Reference: Hinton, Lecture 6.5 of "Neural Networks for Machine Learning", 2012.
    """

    _validate.check_decay("decay", decay)
    _validate.check_non_negative("eps", eps)
    _validate.check_non_negative("initial_scale", initial_scale)

    def init_fn(params):
        nu = tree.full_like(params, initial_scale)
        if bias_correction:
            return ScaleByRmsWithCountState(count=numerics.zero_count(), nu=nu)
        return ScaleByRmsState(nu=nu)

    @elementwise
    @leafwise
    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        nu = tree.update_moment_per_elem_norm(updates, state.nu, decay, 2)
        nu_scale: Num = 1.0
        if bias_correction:
            count_inc = numerics.safe_increment(state.count)
            nu_scale = tree.debias_factor(decay, count_inc)
        outer, inner = (0.0, eps) if eps_in_sqrt else (eps, 0.0)
        updates = tree.div_sqrt(updates, nu, outer, inner, y_scale=nu_scale)
        if bias_correction:
            return updates, ScaleByRmsWithCountState(count=count_inc, nu=nu)
        return updates, ScaleByRmsState(nu=nu)

    _mark(update_fn, _ENDS_IN_DIV_SQRT)  # (torch's RMSprop: addcdiv_(grad, avg); see Adam)
    return GradientTransformation(init_fn, update_fn)


class ScaleByRStdDevState(NamedTuple):
    """State of :func:`scale_by_stddev` (without bias correction)."""

    mu: Updates
    nu: Updates


class ScaleByRStdDevWithCountState(NamedTuple):
    """State of :func:`scale_by_stddev` with ``bias_correction=True``."""

    count: torch.Tensor
    mu: Updates
    nu: Updates


def scale_by_stddev(
    decay: Num = 0.9,
    eps: Num = 1e-8,
    initial_scale: Num = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
) -> GradientTransformation:
    r"""Rescales updates by a centred RMS: the root of an EMA estimate of the variance.

    .. math::
        m_k = \text{lerp}(m_{k-1}, g_k, 1-\text{decay}),\;
        v_k = \text{decay}\, v_{k-1} + (1-\text{decay}) g_k^2,\;
        u_k = g_k / \sqrt{v_k - m_k^2 + \epsilon}

    (``eps`` outside the root with ``eps_in_sqrt=False``: ``torch.optim.RMSprop(centered=True)``.)

    Reference: Graves, 2013, https://arxiv.org/abs/1308.0850
    """

    _validate.check_decay("decay", decay)
    _validate.check_non_negative("eps", eps)
    _validate.check_non_negative("initial_scale", initial_scale)

    def init_fn(params):
        mu = tree.zeros_like(params)
        nu = tree.full_like(params, initial_scale)
        if bias_correction:
            return ScaleByRStdDevWithCountState(count=numerics.zero_count(), mu=mu, nu=nu)
        return ScaleByRStdDevState(mu=mu, nu=nu)

    @elementwise
    @leafwise
    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        mu = tree.update_moment(updates, state.mu, decay, 1)
        nu = tree.update_moment_per_elem_norm(updates, state.nu, decay, 2)
        if bias_correction:
            count_inc = numerics.safe_increment(state.count)
            mu_hat = tree.bias_correction(mu, decay, count_inc)
            nu_hat = tree.bias_correction(nu, decay, count_inc)
        else:
            mu_hat, nu_hat = mu, nu
        var = tree.sub(nu_hat, tree.mul(mu_hat, mu_hat))
        outer, inner = (0.0, eps) if eps_in_sqrt else (eps, 0.0)
        updates = tree.div_sqrt(updates, var, outer, inner)
        if bias_correction:
            return updates, ScaleByRStdDevWithCountState(count=count_inc, mu=mu, nu=nu)
        return updates, ScaleByRStdDevState(mu=mu, nu=nu)

    return GradientTransformation(init_fn, update_fn)


class ScaleByRssState(NamedTuple):
    """State of :func:`scale_by_rss`: the running sum of squared gradients."""

    sum_of_squares: Updates


def scale_by_rss(
    initial_accumulator_value: Num = 0.1,
    eps: Num = 1e-7,
    *,
    eps_in_sqrt: bool = True,
) -> GradientTransformation:
    r"""Rescales updates by the root of the sum of all squared gradients so far (Adagrad).

    .. math::
        s_k = s_{k-1} + g_k^2,\qquad u_k = g_k / \sqrt{s_k + \epsilon}

    Args:
      initial_accumulator_value: initial value of :math:`s` (must be >= 0).
      eps: stability term (with ``eps=0``, entries whose accumulator is still 0 give 0).
      eps_in_sqrt: *extension* (not in optax). ``True`` (optax): :math:`\sqrt{s+\epsilon}`;
        ``False`` (``torch.optim.Adagrad``): :math:`\sqrt{s}+\epsilon`.

    Reference: Duchi et al., 2011, https://jmlr.org/papers/v12/duchi11a.html
    """

    _validate.check_non_negative("initial_accumulator_value", initial_accumulator_value)
    _validate.check_non_negative("eps", eps)

    def init_fn(params):
        return ScaleByRssState(sum_of_squares=tree.full_like(params, initial_accumulator_value))

    @elementwise
    @leafwise
    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        sum_of_squares = tree.add(state.sum_of_squares, tree.abs_sq(updates))
        outer, inner = (0.0, eps) if eps_in_sqrt else (eps, 0.0)
        scaled = tree.div_sqrt(updates, sum_of_squares, outer, inner)
        if not isinstance(eps, torch.Tensor) and eps == 0:
            # 0 / sqrt(0) where nothing has accumulated yet: 0, as in optax.
            scaled = tree.map(
                lambda u, s: torch.where(s > 0, u, torch.zeros_like(u)), scaled, sum_of_squares
            )
        return scaled, ScaleByRssState(sum_of_squares=sum_of_squares)

    return GradientTransformation(init_fn, update_fn)
