"""Second moments reduced over axes: Adafactor's factored RMS (rows and columns), SM3 (one
accumulator per axis) and NovoGrad (one per tensor).

Adafactor and SM3 reduce over the axes of each parameter, so their math runs leaf by leaf (one
Python call per parameter tensor); the step count and hyperparameters stay tensors, so the step
still traces with ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from optax_torch import _validate as V
from optax_torch import numerics, tree
from optax_torch.base import GradientTransformation, Updates, donation_safe, leafwise

__all__ = [
    "ScaleByAdafactorStepSizeState",
    "add_adafactor_decayed_weights",
    "scale_by_adafactor_step_size",
    "FactoredRmsTorchState",
    "FactoredState",
    "ScaleByNovogradAmsgradState",
    "ScaleByNovogradState",
    "ScaleByRelativeStepSizeState",
    "ScaleBySM3State",
    "scale_by_factored_rms",
    "scale_by_factored_rms_torch",
    "scale_by_novograd",
    "scale_by_relative_step_size",
    "scale_by_sm3",
]

Num = float | torch.Tensor


def _where(cond: torch.Tensor, x: float, y: Num) -> torch.Tensor:
    """``x if cond else y`` as a 0-d tensor (float64 unless ``y`` is a tensor), traceable."""
    y_t = y if isinstance(y, torch.Tensor) else torch.tensor(y, dtype=torch.float64)
    return torch.where(cond, x, y_t)


def _decay_rate_pow(i: torch.Tensor, exponent: Num = 0.8) -> torch.Tensor:
    r"""Adafactor's second-moment decay :math:`1 - (i+1)^{-\text{exponent}}`, in float64.

    *Deviation*: optax computes it in float32, whose ``pow`` rounds differently on different
    machines (and in torch, differently for 0-d and vectorised tensors); float64 is exact to well
    below float32 resolution, so the two agree to within one float32 rounding of the decay.
    """
    t = torch.as_tensor(i + 1).to(torch.float64)
    e = exponent.to(t) if isinstance(exponent, torch.Tensor) else exponent
    return 1.0 - t ** (-e)


def _factored_dims(
    shape: tuple[int, ...], factored: bool, min_dim_size_to_factor: int, axes: str = "largest"
) -> tuple[int, int] | None:
    """The (column, row) axes to factor over (``largest``: the second largest and the largest),
    or ``None`` not to factor."""
    if not factored or len(shape) < 2:
        return None
    if axes == "leading_or_trailing":  # timm's Adafactor: strictly larger than the minimum
        n = len(shape)
        if n > 2 and shape[0] > min_dim_size_to_factor and shape[1] > min_dim_size_to_factor:
            return 0, 1
        if shape[-2] > min_dim_size_to_factor and shape[-1] > min_dim_size_to_factor:
            return n - 2, n - 1
        return None
    sorted_dims = sorted(range(len(shape)), key=lambda i: shape[i])  # stable, like np.argsort
    if shape[sorted_dims[-2]] < min_dim_size_to_factor:
        return None
    return sorted_dims[-2], sorted_dims[-1]


class FactoredState(NamedTuple):
    """State of :func:`scale_by_factored_rms`.

    For a factored parameter ``v_row`` / ``v_col`` hold the row / column statistics and ``v`` a
    placeholder of shape ``(1,)``; for the others ``v`` holds the full statistics and ``v_row`` /
    ``v_col`` are placeholders.
    """

    count: torch.Tensor  # 0-d int32: number of update steps
    v_row: Updates
    v_col: Updates
    v: Updates


def scale_by_factored_rms(
    factored: bool = True,
    decay_rate: Num = 0.8,
    step_offset: int | torch.Tensor = 0,
    min_dim_size_to_factor: int = 128,
    epsilon: Num = 1e-30,
    decay_rate_fn: Callable[[torch.Tensor, Num], torch.Tensor] = _decay_rate_pow,
    *,
    beta2_cap: Num | None = None,
    clip_offset_step: bool = False,
    keepdims: bool = False,
    placeholders: bool | None = None,
    factor_axes: str | None = None,
) -> GradientTransformation:
    r"""Scales updates by a factored estimate of the root mean squared gradient (Adafactor).

    With :math:`\hat\beta_k` = ``decay_rate_fn(k - step_offset, decay_rate)`` (default
    :math:`1 - (k+1)^{-0.8}`, computed in float64; optax uses float32), capped at ``beta2_cap``
    if given, and :math:`G = g^2 + \epsilon`: for a parameter whose two largest axes (rows
    :math:`r`, columns :math:`c`) both have at least ``min_dim_size_to_factor`` entries,

    .. math::
        R_k = \hat\beta_k R_{k-1} + (1-\hat\beta_k)\,\mathrm{mean}_c G,\quad
        C_k = \hat\beta_k C_{k-1} + (1-\hat\beta_k)\,\mathrm{mean}_r G,\quad
        u_k = g \Big/ \sqrt{\frac{R_k}{\mathrm{mean}_r R_k}\, C_k}

    (memory: one row and one column instead of the full matrix); otherwise
    :math:`v_k = \hat\beta_k v_{k-1} + (1-\hat\beta_k) G,\; u_k = g / \sqrt{v_k}`. Needs
    ``params`` (for their shapes and dtypes). Runs leaf by leaf.

    Args:
      factored: factor the statistics of parameters with at least 2 dims (default True).
      decay_rate: the exponent of the default decay schedule (default 0.8).
      step_offset: subtracted from the step count (e.g. the first step of a fine-tuning phase).
      min_dim_size_to_factor: factor only if the two largest axes have at least this size
        (default 128).
      epsilon: added to the squared gradient (default 1e-30).
      decay_rate_fn: ``(step, decay_rate) -> decay`` (default: Adafactor's power schedule).
      beta2_cap: keyword-only, the largest decay :math:`\hat\beta_k` (default ``None``: no cap;
        big_vision's and timm's ``AdafactorBigVision`` use ``0.999``).
      clip_offset_step: keyword-only, steps before ``step_offset`` use the first step's decay
        (big_vision's / timm's :math:`\max(k - \text{offset}, 1)`); default ``False`` (optax's
        schedule, undefined there).
      keepdims: keyword-only, keep the row and column statistics with the reduced axis as size 1
        (timm's ``AdafactorBigVision`` layout), default ``False`` (optax's).
      placeholders: keyword-only, ``(1,)`` placeholders for the statistics a parameter does not
        use (optax's layout); ``False``: ``None`` (timm's). Default: ``not keepdims``.
      factor_axes: keyword-only, the axes to factor: ``"largest"`` (or ``None``, the default:
        optax's, the two largest, both at least ``min_dim_size_to_factor``) or
        ``"leading_or_trailing"`` (timm's ``Adafactor``: the first two axes of a tensor of
        rank > 2, a convolution's output and input channels, else the last two, both *larger
        than* ``min_dim_size_to_factor``).

    References:
      Shazeer & Stern, 2018, https://arxiv.org/abs/1804.04235;
      Zhai et al., 2021, https://arxiv.org/abs/2106.04560

    Example::

        >>> tx = otx.chain(otx.scale_by_factored_rms(), otx.scale_by_learning_rate(1e-2))
    """
    V.check_non_negative("decay_rate", decay_rate)
    V.check_non_negative("step_offset", step_offset)
    V.check_non_negative("min_dim_size_to_factor", min_dim_size_to_factor)
    V.check_non_negative("epsilon", epsilon)
    if beta2_cap is not None:
        V.check_non_negative("beta2_cap", beta2_cap)
    factor_axes = factor_axes or "largest"
    if factor_axes not in ("largest", "leading_or_trailing"):
        raise ValueError(
            f"factor_axes must be 'largest' or 'leading_or_trailing', got {factor_axes!r}"
        )
    no_placeholders = keepdims if placeholders is None else not placeholders

    def dims_of(p: torch.Tensor) -> tuple[int, int] | None:
        return _factored_dims(tuple(p.shape), factored, min_dim_size_to_factor, factor_axes)

    def init_one(p: torch.Tensor):
        dims = dims_of(p)
        one = None if no_placeholders else p.new_zeros((1,))
        if dims is not None:
            d1, d0 = dims
            if keepdims:
                row_shape = [1 if i == d0 else n for i, n in enumerate(p.shape)]
                col_shape = [1 if i == d1 else n for i, n in enumerate(p.shape)]
            else:
                row_shape = [n for i, n in enumerate(p.shape) if i != d0]
                col_shape = [n for i, n in enumerate(p.shape) if i != d1]
            return p.new_zeros(row_shape), p.new_zeros(col_shape), one
        return one, None if no_placeholders else p.new_zeros((1,)), torch.zeros_like(p)

    def init_fn(params):
        flat, spec = tree.flatten(params)
        outs = [(None, None, None) if p is None else init_one(p) for p in flat]
        return FactoredState(
            count=numerics.zero_count(),
            v_row=tree.unflatten(spec, [o[0] for o in outs]),
            v_col=tree.unflatten(spec, [o[1] for o in outs]),
            v=tree.unflatten(spec, [o[2] for o in outs]),
        )

    def update_factored(g, v_row, v_col, p, dims, decay, one_minus):
        dtype = p.dtype
        grad_sqr = numerics.abs_sq(g) + epsilon
        d1, d0 = dims
        row_mean = grad_sqr.mean(dim=d0, keepdim=keepdims)
        col_mean = grad_sqr.mean(dim=d1, keepdim=keepdims)
        new_v_row = (decay * v_row + one_minus * row_mean).to(dtype)
        new_v_col = (decay * v_col + one_minus * col_mean).to(dtype)
        reduced_d1 = d1 if keepdims else (d1 - 1 if d1 > d0 else d1)
        row_col_mean = new_v_row.mean(dim=reduced_d1, keepdim=True)
        row_factor = (new_v_row / row_col_mean) ** -0.5
        col_factor = new_v_col**-0.5
        if not keepdims:
            row_factor, col_factor = row_factor.unsqueeze(d0), col_factor.unsqueeze(d1)
        return g * row_factor * col_factor, new_v_row, new_v_col

    def update_plain(gs, vs, ps, decay, one_minus):
        """The unfactored leaves, as trees: one multi-tensor kernel per operation."""
        grad_sqr = tree.add_scalar(tree.abs_sq(gs), epsilon)
        new_v = tree.add(tree.scale(decay, vs), tree.scale(one_minus, grad_sqr))
        new_v = tree.cast_like(new_v, ps)
        return tree.mul(gs, tree.pow(new_v, -0.5)), new_v

    def placeholder(old: torch.Tensor | None, p: torch.Tensor) -> torch.Tensor | None:
        """A ``(1,)`` placeholder: the state's own one passed on (it is never written)."""
        if no_placeholders:
            return None
        return old if old is not None and old.shape == (1,) else p.new_zeros((1,))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(
                "scale_by_factored_rms needs params: call update(updates, state, params)"
            )
        step = state.count - step_offset
        if clip_offset_step:
            step = torch.clamp(step, min=0)
        decay = decay_rate_fn(step, decay_rate)
        if beta2_cap is not None:
            cap = torch.as_tensor(beta2_cap, dtype=decay.dtype, device=decay.device)
            decay = torch.minimum(cap, decay)
        one_minus = 1.0 - decay
        flat_g, spec = tree.flatten(updates)
        flat_r = tree.flatten(state.v_row)[0]
        flat_c = tree.flatten(state.v_col)[0]
        flat_v = tree.flatten(state.v)[0]
        flat_p = tree.flatten(params)[0]
        outs: list[tuple[Any, Any, Any, Any]] = [(None, None, None, None)] * len(flat_g)
        plain = []  # the leaves with a full second moment
        for i, (g, r, c, v, p) in enumerate(zip(flat_g, flat_r, flat_c, flat_v, flat_p)):
            if g is None or p is None:
                continue
            dims = dims_of(p)
            if dims is None:
                plain.append(i)
            else:
                u, new_r, new_c = update_factored(g, r, c, p, dims, decay, one_minus)
                outs[i] = (u, new_r, new_c, placeholder(v, p))
        if plain:
            ups, new_vs = update_plain(
                [flat_g[i] for i in plain],
                [flat_v[i] for i in plain],
                [flat_p[i] for i in plain],
                decay,
                one_minus,
            )
            for i, u, new_v in zip(plain, ups, new_vs):
                p = flat_p[i]
                outs[i] = (u, placeholder(flat_r[i], p), placeholder(flat_c[i], p), new_v)
        new_state = FactoredState(
            count=numerics.safe_increment(state.count),
            v_row=tree.unflatten(spec, [o[1] for o in outs]),
            v_col=tree.unflatten(spec, [o[2] for o in outs]),
            v=tree.unflatten(spec, [o[3] for o in outs]),
        )
        return tree.unflatten(spec, [o[0] for o in outs]), new_state

    return GradientTransformation(init_fn, leafwise(donation_safe(update_fn)))


# --------------------------------------------------------------------------------------------
# torch.optim.Adafactor's factored RMS, relative step size
# --------------------------------------------------------------------------------------------


class FactoredRmsTorchState(NamedTuple):
    """State of :func:`scale_by_factored_rms_torch` (``torch.optim.Adafactor``'s layout).

    A parameter with at least 2 dims has ``row_var`` (its shape with the last axis 1) and
    ``col_var`` (its shape with the second-to-last axis 1) and ``variance`` ``None``; the others
    have ``variance`` (their shape) and ``row_var`` / ``col_var`` ``None``.
    """

    count: torch.Tensor  # 0-d int32: number of update steps
    row_var: Updates
    col_var: Updates
    variance: Updates


def scale_by_factored_rms_torch(
    beta2_decay: Num = -0.8,
    eps: Num | None = None,
) -> GradientTransformation:
    r"""Scales updates by ``torch.optim.Adafactor``'s factored estimate of the RMS gradient.

    With :math:`k` the 1-based step and :math:`w_k = k^{\tau}` (:math:`\tau` = ``beta2_decay``,
    i.e. :math:`\hat\beta_{2,k} = 1 - k^{\tau}`), for a parameter with at least 2 dims, factored
    over its **last two** axes (rows :math:`m`, columns :math:`n`, any leading axes batched):

    .. math::
        R_k = \mathrm{lerp}(R_{k-1}, \mathrm{mean}_n g^2, w_k),\quad
        C_k = \mathrm{lerp}(C_{k-1}, \mathrm{mean}_m g^2, w_k),\quad
        \hat V_k = \frac{R_k C_k}{\max(\mathrm{mean}_m R_k,\ \epsilon_1)}

    otherwise :math:`\hat V_k = V_k = \mathrm{lerp}(V_{k-1}, g^2, w_k)`; then
    :math:`u_k = g / \sqrt{\max(\hat V_k, \epsilon_1^2)}`.

    A sibling of :func:`scale_by_factored_rms` rather than options of it, because every part
    differs from optax's: torch factors every tensor of rank >= 2 over its last two axes (optax:
    over its two largest axes, when both have ``min_dim_size_to_factor`` entries), keeps the row
    and column statistics with ``keepdim`` shapes and no placeholders (optax: reduced shapes and
    ``(1,)`` placeholders), and uses ``eps`` as a floor of the row mean and of the variance
    estimate instead of adding it to :math:`g^2`. Runs leaf by leaf.

    Args:
      beta2_decay: the exponent :math:`\tau \le 0` of the decay schedule, default ``-0.8``
        (optax's ``decay_rate=0.8``).
      eps: :math:`\epsilon_1`, default ``None``: ``torch.finfo(dtype).eps`` of each parameter.

    Reference: Shazeer & Stern, 2018, https://arxiv.org/abs/1804.04235; ``torch.optim.Adafactor``.

    Example::

        >>> from optax_torch.transforms.factorized import scale_by_factored_rms_torch
        >>> tx = otx.chain(scale_by_factored_rms_torch(), otx.clip_by_block_rms(1.0),
        ...                otx.scale_by_param_block_rms(1e-3), otx.scale(-1e-2))
    """
    V.check_in_range("beta2_decay", beta2_decay, -math.inf, 0.0)
    if eps is not None:
        V.check_non_negative("eps", eps)

    def init_fn(params):
        V.check_real_params(params, "scale_by_factored_rms_torch")

        def one(p):
            if p is None:
                return None, None, None
            if p.dim() > 1:
                return (
                    p.new_zeros((*p.shape[:-1], 1)),
                    p.new_zeros((*p.shape[:-2], 1, p.shape[-1])),
                    None,
                )
            return None, None, torch.zeros_like(p)

        flat, spec = tree.flatten(params)
        outs = [one(p) for p in flat]
        return FactoredRmsTorchState(
            count=numerics.zero_count(),
            row_var=tree.unflatten(spec, [o[0] for o in outs]),
            col_var=tree.unflatten(spec, [o[1] for o in outs]),
            variance=tree.unflatten(spec, [o[2] for o in outs]),
        )

    def update_one(g, row, col, var, w):
        eps1 = torch.finfo(g.dtype).eps if eps is None else eps
        w = w.to(g.dtype)
        if g.dim() > 1:
            # (g * g).mean(-1) as torch computes it: the squared norm over the axis, divided.
            # (max(., 1): an empty axis gives a zero mean, not 0/0 = NaN in the other factor)
            row_mean = torch.linalg.vector_norm(g, dim=-1, keepdim=True).square() / max(
                g.size(-1), 1
            )
            col_mean = torch.linalg.vector_norm(g, dim=-2, keepdim=True).square() / max(
                g.size(-2), 1
            )
            row = torch.lerp(row, row_mean, w)
            col = torch.lerp(col, col_mean, w)
            est = (row @ col) / row.mean(dim=-2, keepdim=True).clamp(min=eps1)
        else:
            var = torch.lerp(var, g * g, w)
            est = var
        return est.clamp(min=eps1 * eps1).rsqrt() * g, row, col, var

    @leafwise
    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        count_inc = numerics.safe_increment(state.count)
        tau = (
            beta2_decay.to(torch.float64) if isinstance(beta2_decay, torch.Tensor) else beta2_decay
        )
        w = count_inc.to(torch.float64) ** tau  # 1 - beta2_k
        flat_g, spec = tree.flatten(updates)
        rows = tree.flatten(state.row_var)[0]
        cols = tree.flatten(state.col_var)[0]
        vs = tree.flatten(state.variance)[0]
        outs = [
            (None, r, c, v) if g is None else update_one(g, r, c, v, w)
            for g, r, c, v in zip(flat_g, rows, cols, vs)
        ]
        new_state = FactoredRmsTorchState(
            count=count_inc,
            row_var=tree.unflatten(spec, [o[1] for o in outs]),
            col_var=tree.unflatten(spec, [o[2] for o in outs]),
            variance=tree.unflatten(spec, [o[3] for o in outs]),
        )
        return tree.unflatten(spec, [o[0] for o in outs]), new_state

    return GradientTransformation(init_fn, update_fn)


class ScaleByRelativeStepSizeState(NamedTuple):
    """State of :func:`scale_by_relative_step_size`."""

    count: torch.Tensor  # 0-d int32: number of update steps


def scale_by_relative_step_size(max_step_size: Num = 1e-2) -> GradientTransformation:
    r"""Scales updates by Adafactor's relative step size :math:`\rho_k = \min(\rho_{max},
    1/\sqrt{k})` (:math:`k` the 1-based step).

    Adafactor's decaying step size (Shazeer & Stern use :math:`\rho_{max} = 10^{-2}`;
    ``torch.optim.Adafactor`` uses its ``lr``). Combined with :func:`scale_by_param_block_rms`
    it gives the relative step :math:`\alpha_k = \max(\epsilon_2, \mathrm{RMS}(p))\,\rho_k`.
    The factor is computed in float64 and applied in each update's dtype.

    Args:
      max_step_size: :math:`\rho_{max}` (a number or 0-d tensor), default ``1e-2``.

    Reference: Shazeer & Stern, 2018, https://arxiv.org/abs/1804.04235

    Example::

        >>> from optax_torch.transforms.factorized import scale_by_relative_step_size
        >>> tx = otx.chain(otx.scale_by_factored_rms(), scale_by_relative_step_size(1e-2),
        ...                otx.scale(-1.0))
    """
    V.check_non_negative("max_step_size", max_step_size)

    def init_fn(params):
        del params
        return ScaleByRelativeStepSizeState(count=numerics.zero_count())

    @leafwise
    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        count_inc = numerics.safe_increment(state.count)
        rho_max = torch.as_tensor(max_step_size, dtype=torch.float64)
        rho = torch.minimum(rho_max, 1.0 / count_inc.to(torch.float64).sqrt())
        return tree.scale(rho, updates), ScaleByRelativeStepSizeState(count=count_inc)

    return GradientTransformation(init_fn, update_fn)


class ScaleByAdafactorStepSizeState(NamedTuple):
    """State of :func:`scale_by_adafactor_step_size`."""

    count: torch.Tensor  # 0-d int32: number of update steps
    param_rms: Updates  # per parameter, 0-d: the RMS of the parameter at the last step


def _param_rms(p: torch.Tensor) -> torch.Tensor:
    return p.norm(2) / (p.numel() ** 0.5)


def _adafactor_step_size(
    count_inc: torch.Tensor,
    rms: torch.Tensor,
    step_size: Num | None,
    warmup_init: bool,
    scale_parameter: bool,
    eps_scale: Num,
    max_step_size: Num,
) -> Num | torch.Tensor:
    """``step_size``, or the relative step size of a parameter whose RMS is ``rms``."""
    if step_size is not None:
        return step_size
    k = count_inc.to(torch.float64)
    rho_max = 1e-6 * k if warmup_init else torch.as_tensor(max_step_size, dtype=torch.float64)
    rho = torch.minimum(rho_max, 1.0 / k.sqrt())
    if scale_parameter:
        return rho * torch.clamp(rms.to(torch.float64), min=eps_scale)
    return rho


def scale_by_adafactor_step_size(
    step_size: Num | None = None,
    *,
    warmup_init: bool = False,
    scale_parameter: bool = True,
    eps_scale: Num = 1e-3,
    max_step_size: Num = 1e-2,
) -> GradientTransformation:
    r"""Scales each update by Adafactor's step size (fairseq's / timm's form), keeping each
    parameter's RMS in the state.

    With :math:`k` the 1-based step, :math:`\mathrm{RMS}(p) = \|p\|_2/\sqrt{n}`:

    .. math::
        \alpha_k(p) = \text{step\_size}\ \text{if given, else}\
        \min(\rho_{max,k}, 1/\sqrt{k})\cdot\max(\epsilon_{scale}, \mathrm{RMS}(p))

    with :math:`\rho_{max,k}` = ``max_step_size`` (:math:`10^{-2}`) or :math:`10^{-6} k`
    (``warmup_init``), and the factor :math:`\max(\epsilon_{scale}, \mathrm{RMS}(p))` only with
    ``scale_parameter``. The relative step size is computed in float64. Needs ``params``.
    :func:`add_adafactor_decayed_weights` adds the weight decay scaled by the same
    :math:`\alpha_k(p)`.

    Args:
      step_size: a fixed step size (the RMS is still kept); default ``None``: relative.
      warmup_init: keyword-only, the warm-up schedule :math:`\min(10^{-6} k, 1/\sqrt k)`.
      scale_parameter: keyword-only, multiply by the parameter scale (default True).
      eps_scale: keyword-only, the smallest parameter scale (default ``1e-3``).
      max_step_size: keyword-only, :math:`\rho_{max}` (default ``1e-2``).

    Reference: Shazeer & Stern, 2018, https://arxiv.org/abs/1804.04235; fairseq's and timm's
    ``Adafactor``.

    Example::

        >>> from optax_torch.transforms.factorized import scale_by_adafactor_step_size
        >>> tx = otx.chain(otx.scale_by_factored_rms(), otx.clip_by_block_rms(1.0),
        ...                scale_by_adafactor_step_size(), otx.scale(-1.0))
    """
    if step_size is not None:
        V.check_non_negative("step_size", step_size)
    V.check_non_negative("eps_scale", eps_scale)
    V.check_non_negative("max_step_size", max_step_size)

    def init_fn(params):
        return ScaleByAdafactorStepSizeState(
            count=numerics.zero_count(),
            param_rms=tree.map(lambda p: torch.zeros((), dtype=p.dtype, device=p.device), params),
        )

    @donation_safe
    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(
                "scale_by_adafactor_step_size needs params: call update(updates, state, params)"
            )
        count_inc = numerics.safe_increment(state.count)
        rms = tree.map(lambda u, p: _param_rms(p), updates, params)

        def one(u, r):
            a = _adafactor_step_size(
                count_inc, r, step_size, warmup_init, scale_parameter, eps_scale, max_step_size
            )
            return u * a

        new_updates = tree.map(one, updates, rms)
        new_updates = tree.cast_like(new_updates, updates)  # 0-d leaves: no float64 promotion
        return new_updates, ScaleByAdafactorStepSizeState(count=count_inc, param_rms=rms)

    return GradientTransformation(init_fn, update_fn)


def add_adafactor_decayed_weights(
    weight_decay: Num,
    step_size: Num | None = None,
    *,
    warmup_init: bool = False,
    scale_parameter: bool = True,
    eps_scale: Num = 1e-3,
    max_step_size: Num = 1e-2,
) -> GradientTransformation:
    r"""Adds the weight decay scaled by Adafactor's step size: :math:`u \leftarrow u + \lambda\,
    \alpha_k(p)\, p`, with :math:`\alpha_k(p)` the step size of
    :func:`scale_by_adafactor_step_size` (same arguments).

    Place it after the momentum (fairseq's / timm's decoupled decay,
    :math:`p \leftarrow p - \lambda \alpha_k p - m_k`). Needs ``params``.

    Args:
      weight_decay: :math:`\lambda`.
      step_size, warmup_init, scale_parameter, eps_scale, max_step_size: as in
        :func:`scale_by_adafactor_step_size`.

    Example::

        >>> from optax_torch.transforms.factorized import add_adafactor_decayed_weights
        >>> tx = otx.chain(otx.scale_by_factored_rms(), scale_by_adafactor_step_size(),
        ...                otx.ema(0.9, debias=False), add_adafactor_decayed_weights(0.01),
        ...                otx.scale(-1.0))
    """
    V.check_non_negative("weight_decay", weight_decay)
    if step_size is not None:
        V.check_non_negative("step_size", step_size)
    V.check_non_negative("eps_scale", eps_scale)
    V.check_non_negative("max_step_size", max_step_size)

    def init_fn(params):
        del params
        return ScaleByRelativeStepSizeState(count=numerics.zero_count())

    @donation_safe
    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(
                "add_adafactor_decayed_weights needs params: call update(updates, state, params)"
            )
        count_inc = numerics.safe_increment(state.count)

        def one(u, p):
            a = _adafactor_step_size(
                count_inc,
                _param_rms(p),
                step_size,
                warmup_init,
                scale_parameter,
                eps_scale,
                max_step_size,
            )
            return u + (weight_decay * a) * p

        out = tree.cast_like(tree.map(one, updates, params), updates)  # 0-d leaves: no promotion
        return out, ScaleByRelativeStepSizeState(count=count_inc)

    return GradientTransformation(init_fn, update_fn)


# --------------------------------------------------------------------------------------------
# SM3
# --------------------------------------------------------------------------------------------


class ScaleBySM3State(NamedTuple):
    """State of :func:`scale_by_sm3`."""

    mu: Updates  # per parameter, a list of 1-d accumulators: one per axis
    nu: Updates  # momentum of the scaled updates


def scale_by_sm3(b1: Num = 0.9, b2: Num = 1.0, eps: Num = 1e-8) -> GradientTransformation:
    r"""Scales updates by SM3: an Adagrad-like accumulator covered by per-axis maxima.

    For a parameter with axes :math:`1..d` and per-axis accumulators :math:`\mu^{(i)}`:

    .. math::
        a_k = c\, g_k^2 + \beta_2 \min_i \mu^{(i)}_{k-1}\ \text{(broadcast)},\quad
        \mu^{(i)}_k = \max_{\text{axes} \ne i} a_k,\\
        \nu_k = \beta_1 \nu_{k-1} + (1-\beta_1)\, g_k / \sqrt{a_k + \epsilon}\ \
        (0 \text{ where } a_k = 0),\quad u_k = \nu_k

    with :math:`c = 1-\beta_2` (:math:`c = 1` for :math:`\beta_2 = 1`, the paper's sum). For a
    vector the accumulator is :math:`a_k` itself. Runs leaf by leaf.

    A 0-d parameter has one 0-d accumulator (a list of one tensor): *deviation* (optax's state
    holds no accumulator for it and its update raises ``IndexError``).

    Args:
      b1: decay rate of the momentum (default 0.9).
      b2: decay rate of the accumulators (default 1: a sum).
      eps: added inside the square root (default 1e-8).

    Reference: Anil et al., 2019, https://arxiv.org/abs/1901.11150

    Example::

        >>> tx = otx.chain(otx.scale_by_sm3(), otx.scale(-0.1))
    """
    V.check_decay("b1", b1)
    V.check_decay("b2", b2, allow_one=True)
    V.check_non_negative("eps", eps)

    def zeros_for_dim(p: torch.Tensor) -> list[torch.Tensor]:
        if p.ndim == 0:
            return [torch.zeros_like(p)]
        return [p.new_zeros((n,)) for n in p.shape]

    def init_fn(params):
        V.check_real_params(params, "scale_by_sm3")
        return ScaleBySM3State(mu=tree.map(zeros_for_dim, params), nu=tree.zeros_like(params))

    def accumulate(g: torch.Tensor, vs: list[torch.Tensor]) -> torch.Tensor:
        if isinstance(b2, torch.Tensor):
            c = torch.where(b2 != 1, 1 - b2, torch.ones_like(b2))
        else:
            c = (1.0 - b2) if b2 != 1.0 else 1.0
        if g.ndim < 2:
            prev = vs[0]
        else:
            rank = g.ndim
            prev = functools.reduce(
                torch.minimum,
                [
                    v.reshape([1] * i + [g.shape[i]] + [1] * (rank - i - 1))
                    for i, v in enumerate(vs)
                ],
            )
        return c * g**2 + b2 * prev

    def new_mu(accum: torch.Tensor) -> list[torch.Tensor]:
        if accum.ndim < 2:
            return [accum]
        dims = range(accum.ndim)
        if accum.numel() == 0:  # nothing to reduce: the accumulators stay at 0
            return [accum.new_zeros(accum.shape[i]) for i in dims]
        return [torch.amax(accum, dim=[j for j in dims if j != i]) for i in dims]

    def update_fn(updates, state, params=None):
        del params
        flat_g, spec = tree.flatten(updates)
        flat_mu, mu_spec = tree.flatten(state.mu)
        flat_nu = tree.flatten(state.nu)[0]
        ups: list[torch.Tensor | None] = []
        mus: list[torch.Tensor | None] = []
        pos = 0
        for g, nu in zip(flat_g, flat_nu):
            n = 1 if nu is None else max(nu.ndim, 1)  # accumulators of this parameter
            vs = flat_mu[pos : pos + n]
            pos += n
            if g is None or nu is None:
                ups.append(None)
                mus.extend([None] * n)
                continue
            accum = accumulate(g, vs)
            inv = torch.where(accum > 0, torch.rsqrt(accum + eps), 0.0)
            ups.append(g * inv)
            mus.extend(new_mu(accum))
        nu = tree.update_moment(tree.unflatten(spec, ups), state.nu, b1, 1)
        nu = tree.cast_like(nu, state.nu)
        return nu, ScaleBySM3State(mu=tree.unflatten(mu_spec, mus), nu=nu)

    return GradientTransformation(init_fn, donation_safe(update_fn))


# --------------------------------------------------------------------------------------------
# NovoGrad
# --------------------------------------------------------------------------------------------


class ScaleByNovogradState(NamedTuple):
    """State of :func:`scale_by_novograd`."""

    count: torch.Tensor  # 0-d int32
    mu: Updates
    nu: Updates  # one 0-d tensor per parameter: the EMA of its squared gradient norm


class ScaleByNovogradAmsgradState(NamedTuple):
    """State of :func:`scale_by_novograd` with ``amsgrad=True``."""

    count: torch.Tensor  # 0-d int32
    mu: Updates
    nu: Updates  # one 0-d tensor per parameter: the EMA of its squared gradient norm
    nu_max: Updates  # one 0-d tensor per parameter: the running maximum of nu


def scale_by_novograd(
    b1: Num = 0.9,
    b2: Num = 0.25,
    eps: Num = 1e-8,
    eps_root: Num = 0.0,
    weight_decay: Num = 0.0,
    mu_dtype: torch.dtype | None = None,
    *,
    grad_averaging: bool = False,
    amsgrad: bool = False,
    nu_dtype: torch.dtype | None = None,
) -> GradientTransformation:
    r"""NovoGrad: layer-wise (per-tensor) second moments, momentum on the normalised gradient.

    For each parameter tensor :math:`p` with gradient :math:`g`:

    .. math::
        v_k = \beta_2 v_{k-1} + (1-\beta_2)\|g_k\|^2 \;(v_1 = \|g_1\|^2),\quad
        \hat v_k = v_k \;\text{or, with amsgrad,}\; \max(\hat v_{k-1}, v_k),\\
        a_k = \frac{g_k}{\sqrt{\hat v_k + \epsilon_{root}} + \epsilon} + \lambda p_k,\quad
        m_k = \beta_1 m_{k-1} + c\, a_k \;(m_0 = 0),\quad u_k = m_k

    with :math:`c = 1 - \beta_1` (``grad_averaging``) or :math:`1`. The first step is chosen
    with ``torch.where`` on the count (traceable). Needs ``params``.

    Args:
      b1: momentum coefficient (default 0.9).
      b2: decay rate of the squared-norm average (default 0.25).
      eps: added to the denominator outside the square root (default 1e-8).
      eps_root: added inside the square root (default 0).
      weight_decay: :math:`\lambda` (default 0).
      mu_dtype: optional dtype of the momentum (updates keep the gradients' dtype).
      grad_averaging: keyword-only, scale the momentum's input by :math:`1-\beta_1` (default
        False; timm's ``NvNovoGrad(grad_averaging=True)``).
      amsgrad: keyword-only, normalise by the running maximum of :math:`v` (default False;
        timm's ``NvNovoGrad(amsgrad=True)``); the state is then a
        :class:`ScaleByNovogradAmsgradState`.
      nu_dtype: keyword-only, optional dtype of :math:`v` (default: the params' dtype; timm's
        ``NvNovoGrad`` keeps it in the default dtype, float32). :math:`v` is updated in its own
        dtype, as ``v * b2 + (1 - b2) * |g|^2``.

    Reference: Ginsburg et al., 2019, https://arxiv.org/abs/1905.11286

    Example::

        >>> tx = otx.chain(otx.scale_by_novograd(), otx.scale_by_learning_rate(1e-2))
    """
    V.check_decay("b1", b1, allow_one=True)
    V.check_decay("b2", b2)
    V.check_non_negative("eps", eps)
    V.check_non_negative("eps_root", eps_root)
    V.check_non_negative("weight_decay", weight_decay)

    def init_fn(params):
        def zero(p):
            return torch.zeros((), dtype=nu_dtype or p.dtype, device=p.device)

        mu = tree.zeros_like(params, dtype=mu_dtype)
        if amsgrad:
            nu = tree.map(zero, params)
            return ScaleByNovogradAmsgradState(
                numerics.zero_count(), mu, nu, tree.map(zero, params)
            )
        return ScaleByNovogradState(count=numerics.zero_count(), mu=mu, nu=tree.map(zero, params))

    @donation_safe
    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_novograd needs params: call update(updates, state, params)")
        count_inc = numerics.safe_increment(state.count)
        sq_norms = tree.map(lambda g: torch.sum(numerics.abs_sq(g)), updates)
        # In nu's dtype (the params', maybe complex, or nu_dtype), as v * b2 + (1 - b2) * |g|^2;
        # first step: v_1 = |g_1|^2 exactly (an EMA with decay 0).
        decay = _where(count_inc == 1, 0.0, b2)
        nu = tree.map(
            lambda n, v: (v * decay.to(v.real.dtype)).add(n * (1 - decay)).to(v.dtype),
            sq_norms,
            state.nu,
        )
        nu_hat = nu
        if amsgrad:
            nu_hat = tree.map(
                lambda v, m: torch.maximum(v.real, m.real).to(v.dtype), nu, state.nu_max
            )
        denom = tree.add_scalar(tree.sqrt(tree.add_scalar(nu_hat, eps_root)), eps)
        addition = tree.div(updates, tree.cast_like(denom, updates))
        if isinstance(weight_decay, torch.Tensor) or weight_decay != 0:
            addition = tree.add_scale(addition, weight_decay, params)
        if grad_averaging:
            addition = tree.scale(1 - b1, addition)
        # m_0 = 0, so the first step's b1 * m_0 + a is a exactly.
        mu = tree.add_scale(addition, b1, tree.cast_like(state.mu, addition))
        mu = tree.cast(mu, mu_dtype)
        out = tree.cast_like(mu, updates)
        if amsgrad:
            return out, ScaleByNovogradAmsgradState(count_inc, mu, nu, nu_hat)
        return out, ScaleByNovogradState(count=count_inc, mu=mu, nu=nu)

    return GradientTransformation(init_fn, update_fn)
