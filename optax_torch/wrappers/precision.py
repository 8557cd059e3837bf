"""Low-precision parameters: Kahan-compensated and stochastically rounded updates.

A bfloat16 parameter has 8 significant bits: an update smaller than half a unit in the last place
of the parameter (``|u| < 2**-9 |p|``) is rounded away entirely when added, so a long run with a
small learning rate stalls. Both wrappers below return the update that, added to the parameters
*in their own dtype* (``optax_torch.apply_updates``, or ``TorchOptimizer``'s ``_foreach_add_``),
gives a better-rounded result:

* :func:`kahan_summation` keeps, per parameter, the part of the update that rounding lost, and adds
  it back at the next step (deterministic; one extra buffer per parameter).
* :func:`stochastic_rounding` rounds ``p + u`` up or down at random, with the probabilities that
  make the rounded result unbiased (no buffer; a generator state).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from optax_torch import tree
from optax_torch._validate import check_finite
from optax_torch.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    with_extra_args_support,
)

__all__ = [
    "KahanSummationState",
    "StochasticRoundingState",
    "kahan_summation",
    "stochastic_rounding",
]

_LOW = (torch.bfloat16, torch.float16)


def _is_none(x: Any) -> bool:
    return x is None


def _wide(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _LOW else dtype


class _Pair(NamedTuple):
    update: Any
    compensation: Any


def _need_params(params: Any, who: str) -> None:
    if params is None:
        raise ValueError(f"{who}: params are required (the update depends on their values)")


class KahanSummationState(NamedTuple):
    """State of :func:`kahan_summation`.

    Attributes:
      compensation: per parameter, what rounding removed from the parameter so far (the exact
        sum of the updates minus the change of the parameter), in ``compensation_dtype``.
      inner_state: the state of the wrapped transformation.
    """

    compensation: Any
    inner_state: Any


def kahan_summation(
    inner: GradientTransformation, compensation_dtype: torch.dtype | None = torch.float32
) -> GradientTransformationExtraArgs:
    r"""Kahan-compensated updates: what rounding the parameter loses is added back later.

    With :math:`u_t` the update of ``inner``, :math:`c` the compensation, and
    :math:`\mathrm{rd}` rounding to the parameter's dtype (all arithmetic in float32 for
    bfloat16/float16 parameters),

    .. math::
        y_t = u_t + c_{t-1}, \qquad \tilde u_t = \mathrm{rd}(\mathrm{rd}(p_{t-1} + y_t) - p_{t-1}),
        \qquad p_t = \mathrm{rd}(p_{t-1} + \tilde u_t), \qquad c_t = y_t - (p_t - p_{t-1}).

    The returned update is :math:`\tilde u_t`, in the parameter's dtype; :math:`c_t` is computed
    from the parameter that adding it actually gives (one rounding of the float32 sum, what
    ``torch`` does for a bfloat16 ``add_``), so the bookkeeping stays exact under
    ``optax_torch.apply_updates`` and under ``TorchOptimizer``. In effect, ``p + c`` is a float32
    master copy of the parameter kept in two halves. ``c_0 = 0``.

    Args:
      inner: the transformation whose updates are compensated.
      compensation_dtype: dtype of the compensation buffers (default float32, 4 bytes per
        parameter: ``p + c`` is then as accurate as float32 weights); ``None`` keeps each
        parameter's dtype (2 bytes for bfloat16, like torchao's ``bf16_stochastic_round=False``
        Kahan variants; less accurate: the compensation itself is rounded).

    Reference: Kahan, *Further remarks on reducing truncation errors*, CACM 1965; Zamirai et
    al., *Revisiting BFloat16 Training*, 2020.

    Example::

        >>> opt = otx.kahan_summation(otx.adamw(1e-4))
        >>> model = model.bfloat16()
        >>> opt = TorchOptimizer(model.parameters(), otx.kahan_summation(otx.adamw(1e-4)))
    """
    if compensation_dtype is not None and not (
        isinstance(compensation_dtype, torch.dtype) and compensation_dtype.is_floating_point
    ):
        raise ValueError(
            f"kahan_summation: compensation_dtype must be a floating torch.dtype or None, "
            f"got {compensation_dtype!r}"
        )
    inner = with_extra_args_support(inner)

    def init_fn(params):
        return KahanSummationState(
            compensation=tree.zeros_like(params, dtype=compensation_dtype),
            inner_state=inner.init(params),
        )

    def leaf(u, p, c):
        if u is None:
            return _Pair(None, c)
        w = torch.promote_types(_wide(p.dtype), c.dtype)
        pw = p.to(w)
        y = u.to(w) + c.to(w)
        out = ((pw + y).to(p.dtype).to(w) - pw).to(p.dtype)
        actual = (pw + out.to(w)).to(p.dtype)
        return _Pair(out, (y - (actual.to(w) - pw)).to(c.dtype))

    def update_fn(updates, state, params=None, **extra_args):
        _need_params(params, "kahan_summation")
        updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
        pairs = tree.map(leaf, updates, params, state.compensation, is_leaf=_is_none)
        is_pair = lambda x: isinstance(x, _Pair)  # noqa: E731
        new_updates = tree.map(lambda t: t.update, pairs, is_leaf=is_pair)
        compensation = tree.map(lambda t: t.compensation, pairs, is_leaf=is_pair)
        return new_updates, KahanSummationState(compensation=compensation, inner_state=inner_state)

    return GradientTransformationExtraArgs(init_fn, update_fn)


class StochasticRoundingState(NamedTuple):
    """State of :func:`stochastic_rounding`.

    Attributes:
      rng_key: the state of a CPU ``torch.Generator`` (``Generator.get_state()``, a 1-d uint8
        tensor), as in :func:`optax_torch.add_noise`.
      inner_state: the state of the wrapped transformation.
    """

    rng_key: Any
    inner_state: Any


def _round_stochastic(x: torch.Tensor, dtype: torch.dtype, r: torch.Tensor) -> torch.Tensor:
    """``x`` (wide) rounded to ``dtype``: up with probability the distance to the lower neighbour
    over the gap, with ``r`` uniform in ``[0, 1)``."""
    near = x.to(dtype)
    nw = near.to(x.dtype)
    other = torch.nextafter(near, torch.where(nw <= x, torch.inf, -torch.inf).to(dtype))
    lo = torch.minimum(nw, other.to(x.dtype))
    hi = torch.maximum(nw, other.to(x.dtype))
    gap = hi - lo
    p_up = torch.where(gap > 0, (x - lo) / torch.where(gap > 0, gap, 1), 0)
    out = torch.where(r < p_up, hi, lo).to(dtype)
    # inf, nan and values already representable pass through
    return torch.where(torch.isfinite(x) & torch.isfinite(gap), out, near)


def stochastic_rounding(
    inner: GradientTransformation, key: int = 0
) -> GradientTransformationExtraArgs:
    r"""Stochastically rounded updates for bfloat16 and float16 parameters.

    .. math::
        x = p_{t-1} + u_t \ \text{(float32)}, \qquad
        p_t = \begin{cases} \lceil x \rceil & \text{with probability } (x - \lfloor x \rfloor) /
            (\lceil x \rceil - \lfloor x \rfloor) \\ \lfloor x \rfloor & \text{otherwise}
        \end{cases}

    where :math:`\lfloor x \rfloor, \lceil x \rceil` are the neighbouring values of the
    parameter's dtype, so :math:`\mathbb E[p_t] = x`: updates far below the dtype's resolution
    still move the parameter on average. The returned update is :math:`p_t - p_{t-1}` in the
    parameter's dtype (exact whenever :math:`p_t` is within a factor 2 of :math:`p_{t-1}`;
    otherwise adding it may land one unit away from :math:`p_t`). Leaves of other dtypes (float32,
    float64) pass through unchanged. The uniform draws come from a CPU generator held in the
    state (one float32 per element of each low-precision leaf, drawn in flattening order), so a
    run is reproducible and resumes exactly from a saved state.

    Args:
      inner: the transformation whose updates are rounded.
      key: seed of the generator.

    Reference: Gupta et al., *Deep Learning with Limited Numerical Precision*, ICML 2015;
    Zamirai et al., *Revisiting BFloat16 Training*, 2020.

    Example::

        >>> opt = otx.stochastic_rounding(otx.adamw(1e-4), key=0)
    """
    check_finite("key", key)
    if isinstance(key, bool) or int(key) != key:
        raise ValueError(f"stochastic_rounding: key must be an integer, got {key!r}")
    seed = int(key)
    inner = with_extra_args_support(inner)

    def init_fn(params):
        rng_key = torch.Generator().manual_seed(seed).get_state()
        return StochasticRoundingState(rng_key=rng_key, inner_state=inner.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        _need_params(params, "stochastic_rounding")
        updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
        gen = torch.Generator()
        gen.set_state(state.rng_key)

        def leaf(u, p):
            if u is None or p.dtype not in _LOW:
                return u
            (r,) = tree.leaves(tree.random_like(gen, [p], sampler=torch.rand, dtype=torch.float32))
            pw = p.to(torch.float32)
            new_p = _round_stochastic(pw + u.to(torch.float32), p.dtype, r)
            return (new_p.to(torch.float32) - pw).to(p.dtype)

        new_updates = tree.map(leaf, updates, params, is_leaf=_is_none)
        return new_updates, StochasticRoundingState(
            rng_key=gen.get_state(), inner_state=inner_state
        )

    return GradientTransformationExtraArgs(init_fn, update_fn)
