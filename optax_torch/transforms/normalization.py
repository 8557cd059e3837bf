"""Normalisations: centralisation, update norm, block norm and RMS, trust ratio, unit-wise norms.

A *block* is one leaf of the parameter tree (a weight vector or matrix). The block-wise scalings
here need one reduction per leaf, so they compute leaf by leaf (``tree.map``) with plain per-tensor
ops, which ``torch.compile`` fuses.
"""

from __future__ import annotations

import torch

from optax_torch import _validate, numerics, tree
from optax_torch.base import (
    EmptyState,
    GradientTransformation,
    _reuses_updates,
    donation_safe,
    leafwise,
)

__all__ = [
    "ScaleByTrustRatioState",
    "centralize",
    "normalize_by_update_norm",
    "scale_by_param_block_norm",
    "scale_by_param_block_rms",
    "scale_by_trust_ratio",
    "unitwise_norm",
]

Num = float | torch.Tensor

ScaleByTrustRatioState = EmptyState

_NO_PARAMS = "{} needs params: call update(updates, state, params)"


# (``dtype.to_real()`` is not traceable by dynamo)
_REAL = {
    torch.complex32: torch.float16,
    torch.complex64: torch.float32,
    torch.complex128: torch.float64,
}


def _like(s: Num, x: torch.Tensor) -> Num:
    """A tensor hyperparameter (or per-leaf factor) cast to ``x``'s dtype, so that a 0-d float64
    value never promotes a float32 leaf (0-d tensors promote each other); numbers pass through."""
    if isinstance(s, torch.Tensor) and (x.is_floating_point() or x.is_complex()):
        target = _REAL.get(x.dtype, x.dtype)  # a real factor for a complex leaf
        if s.dtype != target and s.is_floating_point():
            return s.to(target)
    return s


def _clip_norm(norm: torch.Tensor, min_norm: Num) -> torch.Tensor:
    """``max(norm, min_norm)`` (elementwise); its gradient is zero, not NaN, below the bound."""
    m = _like(min_norm, norm)
    return torch.where(norm <= m, m, norm)


def _safe_norm(x: torch.Tensor, min_norm: Num) -> torch.Tensor:
    """``max(||x||_2, min_norm)`` (0-d, ``x``'s dtype); its gradient is zero, not NaN, at 0."""
    return _clip_norm(torch.linalg.vector_norm(x), min_norm)


def _root_sizes(tree_: object) -> object:
    """``sqrt(numel)`` of each leaf (Python numbers): a block's RMS is its norm over this."""
    return tree.map(lambda x: x.numel() ** 0.5, tree_)


def _factors_for(factors: object, updates: object) -> object:
    """Per-block factors in the real dtype of their update blocks (a float64 parameter's
    factor never promotes a float32 update)."""
    fs, us = tree.leaves(factors), tree.leaves(updates)
    if len(fs) == len(us) and tree._same_dtypes(fs, us):
        return factors  # (tree.mul gives None where an update is None)
    return tree.map(lambda u, f: _like(f, u), updates, factors)


def scale_by_param_block_norm(min_scale: Num = 1e-3) -> GradientTransformation:
    r"""Scales each update block by the L2 norm of its parameter block.

    .. math::
        u_b \leftarrow u_b \cdot \max(\lVert p_b \rVert_2, \text{min\_scale})

    for every leaf :math:`b` of the tree (a weight vector or matrix). Needs ``params``.

    Args:
      min_scale: lower bound of the scaling factor (default ``1e-3``).

    Example::

        >>> tx = otx.chain(otx.scale_by_param_block_norm(), otx.scale(-1e-2))
    """
    _validate.check_non_negative("min_scale", min_scale)

    def init_fn(params):
        del params
        return EmptyState()

    # scaled in place when a chain donates the updates (one factor per block, then one mul)
    @leafwise
    @donation_safe
    @_reuses_updates
    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(_NO_PARAMS.format("scale_by_param_block_norm"))
        factors = tree.map_scalars(lambda n: _clip_norm(n, min_scale), tree.leaf_norms(params))
        return tree.mul(updates, _factors_for(factors, updates)), state

    return GradientTransformation(init_fn, update_fn)


def scale_by_param_block_rms(min_scale: Num = 1e-3) -> GradientTransformation:
    r"""Scales each update block by the root mean square of its parameter block.

    .. math::
        u_b \leftarrow u_b \cdot \max\big(\sqrt{\operatorname{mean}(p_b^2)}, \text{min\_scale}\big)

    for every leaf :math:`b` of the tree (a weight vector or matrix); Adafactor's relative step
    size (``multiply_by_parameter_scale``). Needs ``params``.

    Args:
      min_scale: lower bound of the scaling factor (default ``1e-3``).

    Reference: Shazeer & Stern, 2018, https://arxiv.org/abs/1804.04235

    Example::

        >>> tx = otx.chain(otx.scale_by_param_block_rms(), otx.scale(-1e-2))
    """
    _validate.check_non_negative("min_scale", min_scale)

    def init_fn(params):
        del params
        return EmptyState()

    # scaled in place when a chain donates the updates (one factor per block, then one mul)
    @leafwise
    @donation_safe
    @_reuses_updates
    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(_NO_PARAMS.format("scale_by_param_block_rms"))
        rms = tree.map_scalars(
            lambda n, root_size: _clip_norm(n / root_size, min_scale),
            tree.leaf_norms(params),
            _root_sizes(params),
        )
        return tree.mul(updates, _factors_for(rms, updates)), state

    return GradientTransformation(init_fn, update_fn)


def scale_by_trust_ratio(
    min_norm: Num = 0.0,
    trust_coefficient: Num = 1.0,
    eps: Num = 0.0,
    *,
    weight_decay: Num = 0.0,
    trust_clip: Num | None = None,
    param_scale: Num = 1.0,
) -> GradientTransformation:
    r"""Scales each update block by its layer-wise *trust ratio* (LARS, LAMB, Fromage).

    For every leaf :math:`b` (a layer's weight vector or matrix), with
    :math:`\lVert\cdot\rVert_m = \max(\lVert\cdot\rVert_2, \text{min\_norm})`:

    .. math::
        r_b = \frac{c\, \lVert p_b \rVert_m}{\lVert u_b \rVert_m + \epsilon},\qquad
        u_b \leftarrow \begin{cases}
            u_b & \text{if } \lVert p_b \rVert_m = 0 \text{ or } \lVert u_b \rVert_m = 0,\\
            r_b\, u_b & \text{otherwise,}
        \end{cases}

    with :math:`c` = ``trust_coefficient``. So (for ``eps=0``) each block's update gets the norm
    :math:`c\,\lVert p_b\rVert`: the step is relative to the size of the layer. The ratio is 1
    where a norm is zero (before clipping to ``min_norm``): a zero-initialised layer (e.g. biases)
    still moves with the raw update, and a zero update stays zero (no ``0/0``). With
    ``min_norm > 0`` the clipped norms are never zero and the ratio always applies.

    The choice is a ``torch.where`` (traceable, no host synchronisation). The norms of all
    blocks are one multi-tensor norm per tree and the ratios one computation on the stacked norms
    (:func:`optax_torch.tree.leaf_norms`, :func:`~optax_torch.tree.map_scalars`), not a dozen
    kernels per block. Needs ``params``.

    Two keyword extensions give LARS / LARC as in NVIDIA apex and timm (``timm.optim.Lars``,
    ``Lamb``): with ``weight_decay`` :math:`\lambda`, the ratio of the *incoming* update is
    applied to the decayed update,

    .. math::
        r_b = \frac{c\, \lVert p_b \rVert}{\lVert u_b \rVert + \lambda \lVert p_b \rVert
            + \epsilon},
        \qquad u_b \leftarrow r_b\,(u_b + \lambda p_b),

    and with ``trust_clip`` :math:`\tau` the ratio (after the zero-norm rule) becomes
    :math:`\min(r_b / \tau, 1)`: LARC's clipping with :math:`\tau` the learning rate, LAMBC's
    with :math:`\tau = 1`.

    Args:
      min_norm: lower bound of both norms (default ``0.0``: no clipping).
      trust_coefficient: the multiplier :math:`c` of the ratio (default ``1.0``; LARS uses
        ``1e-3``).
      eps: added to the update norm in the denominator (default ``0.0``).
      weight_decay: keyword-only; L2 decay :math:`\lambda` added to the update after the ratio
        is computed, its norm term in the denominator (default ``0.0``: none; LARS).
      trust_clip: keyword-only; :math:`\tau`, clip the ratio to :math:`\min(r/\tau, 1)`
        (default ``None``: no clipping; LARC, LAMBC).
      param_scale: keyword-only; the parameter norm is that of ``param_scale * p`` (default
        ``1.0``): timm's LAMB with decoupled decay shrinks the parameters by
        :math:`1 - \eta\lambda` before it takes their norm.

    References:
      You et al., 2017, *Large Batch Training of Convolutional Networks* (LARS),
      https://arxiv.org/abs/1708.03888;
      You et al., 2020, *Large Batch Optimization for Deep Learning* (LAMB),
      https://arxiv.org/abs/1904.00962

    Example::

        >>> tx = otx.chain(otx.scale_by_adam(), otx.scale_by_trust_ratio(), otx.scale(-1e-3))
    """
    _validate.check_non_negative("min_norm", min_norm)
    _validate.check_non_negative("trust_coefficient", trust_coefficient)
    _validate.check_non_negative("eps", eps)
    _validate.check_non_negative("weight_decay", weight_decay)
    _validate.check_finite("param_scale", param_scale)
    if trust_clip is not None:
        _validate.check_positive("trust_clip", trust_clip)
    decays = not (isinstance(weight_decay, int | float) and weight_decay == 0)
    unscaled = isinstance(param_scale, int | float) and param_scale == 1.0

    def ratio_of(update_norm: torch.Tensor, param_norm: torch.Tensor) -> torch.Tensor:
        """The trust ratios from the blocks' norms (elementwise: for one block or stacked)."""
        if not unscaled:  # the norm of param_scale * p
            param_norm = param_norm * abs(_like(param_scale, param_norm))
        param_norm = _clip_norm(param_norm, min_norm)
        update_norm = _clip_norm(update_norm, min_norm)
        c, e = _like(trust_coefficient, param_norm), _like(eps, param_norm)
        if decays:
            denom = update_norm + param_norm * _like(weight_decay, param_norm) + e
            ratio = c * param_norm / denom
        else:
            ratio = c * param_norm / (update_norm + e)
        zero_norm = (param_norm == 0.0) | (update_norm == 0.0)
        ratio = torch.where(zero_norm, torch.ones_like(ratio), ratio)
        if trust_clip is not None:
            ratio = torch.clamp(ratio / _like(trust_clip, ratio), max=1.0)
        return ratio.to(update_norm.dtype)

    def init_fn(params):
        del params
        return ScaleByTrustRatioState()

    # The ratios are read from the incoming updates first; the scaled updates may then be
    # written into them (when a chain donates them: Lamb after its weight decay).
    @leafwise
    @donation_safe
    @_reuses_updates
    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(_NO_PARAMS.format("scale_by_trust_ratio"))
        # one multi-tensor norm per tree, then the ratio math once on the stacked norms
        ratios = tree.map_scalars(ratio_of, tree.leaf_norms(updates), tree.leaf_norms(params))
        if decays:  # u + wd * p (torch.add with alpha, as timm and apex compute it)
            updates = tree.add_scale(updates, weight_decay, params)
        return tree.mul(updates, ratios), state

    return GradientTransformation(init_fn, update_fn)


def _subtract_mean(g: torch.Tensor) -> torch.Tensor:
    if g.ndim > 1:
        return g - g.mean(dim=tuple(range(1, g.ndim)), keepdim=True)
    return g


def centralize() -> GradientTransformation:
    r"""Gradient centralisation: subtracts from each update its mean over all but the first axis.

    .. math::
        u_{i,\dots} \leftarrow u_{i,\dots} - \operatorname{mean}_{\dots}(u_{i,\dots})

    for leaves of rank :math:`\ge 2`; vectors and scalars pass through unchanged.

    Reference: Yong et al., 2020, https://arxiv.org/abs/2004.01461

    Example::

        >>> tx = otx.chain(otx.centralize(), otx.sgd(0.1))
    """

    def init_fn(params):
        del params
        return EmptyState()

    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        return tree.map(_subtract_mean, updates), state

    return GradientTransformation(init_fn, update_fn)


def normalize_by_update_norm(scale_factor: Num = 1.0, eps: Num = 1e-6) -> GradientTransformation:
    r"""Divides the updates by their global L2 norm.

    .. math::
        u \leftarrow \frac{\text{scale\_factor}}{\lVert u \rVert_2 + \epsilon}\, u

    (the norm over all leaves as one vector).

    Args:
      scale_factor: multiplier of the normalised update (default ``1.0``; ``-1.0`` gives a
        normalised descent step).
      eps: added to the norm to avoid dividing by zero (default ``1e-6``).

    Example::

        >>> tx = otx.chain(otx.normalize_by_update_norm(), otx.scale(-0.1))
    """
    _validate.check_finite("scale_factor", scale_factor)
    _validate.check_non_negative("eps", eps)

    def init_fn(params):
        del params
        return EmptyState()

    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        g_norm = (tree.norm(updates) + eps) / scale_factor
        return tree.scale(1.0 / g_norm, updates), state

    return GradientTransformation(init_fn, update_fn)


def unitwise_norm(x: torch.Tensor, axis: int | tuple[int, ...] | None = None) -> torch.Tensor:
    r"""The L2 norm of each *unit* of ``x``, broadcast back to ``x``'s shape.

    A unit is a slice of ``x`` along the reduced ``axis``. With ``axis=None`` the axes follow the
    usual layer layouts (optax's, inputs first): scalars and vectors (after squeezing size-1 axes):
    the whole tensor; rank 2 and 3 (``IO`` linear, multi-head linear): axis 0; rank 4 (``HWIO``
    conv): axes ``(0, 1, 2)``; rank 5 (``DHWIO`` conv): axes ``(0, 1, 2, 3)``. Other ranks need
    ``axis``.

    .. math::
        \lVert x \rVert_{unit} = \sqrt{\textstyle\sum_{axis} |x|^2}

    Args:
      x: the tensor.
      axis: the axis or axes to reduce over (``None``: from the rank as above).

    Raises:
      ValueError: for a rank above 5 without ``axis``.

    Example::

        >>> otx.unitwise_norm(torch.tensor([[3.0, 0.0], [4.0, 1.0]]))
        tensor([[5., 1.],
                [5., 1.]])
    """
    sq = numerics.abs_sq(x)
    if axis is not None:
        squared_norm = sq.sum(dim=axis, keepdim=True)
    elif x.squeeze().ndim <= 1:
        squared_norm = sq.sum().reshape((1,) * x.ndim)
    elif x.ndim in (2, 3):
        squared_norm = sq.sum(dim=0, keepdim=True)
    elif x.ndim == 4:
        squared_norm = sq.sum(dim=(0, 1, 2), keepdim=True)
    elif x.ndim == 5:
        squared_norm = sq.sum(dim=(0, 1, 2, 3), keepdim=True)
    else:
        raise ValueError(
            f"unitwise_norm: expected a tensor of rank 0 to 5, got shape {tuple(x.shape)}; "
            "pass axis to choose the reduction axes"
        )
    return torch.broadcast_to(torch.sqrt(squared_norm), x.shape)
