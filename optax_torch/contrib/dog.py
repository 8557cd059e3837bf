"""DoG and DoWG: parameter-free step sizes from the distance travelled over the gradients."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import torch

from optax_torch import _validate, tree
from optax_torch.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    Params,
    ScalarOrSchedule,
    donation_safe,
    identity,
)
from optax_torch.combine import chain
from optax_torch.contrib._dtypes import scalar_dtype
from optax_torch.transforms import add_decayed_weights, scale_by_learning_rate

__all__ = ["DoGState", "DoWGState", "dog", "dowg", "scale_by_dog", "scale_by_dowg"]

Num = float | torch.Tensor
InitStep = tuple[Literal["distance", "learning_rate", "heuristic"], Num]

_INIT_STEP_TYPES = ("distance", "learning_rate", "heuristic")


def _require_params(name: str, params: Params | None) -> Params:
    if params is None:
        raise ValueError(f"{name} needs params: call update(updates, state, params)")
    return params


class DoGState(NamedTuple):
    """State of :func:`scale_by_dog` (:func:`dog`)."""

    is_init_step: torch.Tensor  # 0-d bool
    init_params: Params  # x_0
    max_dist: torch.Tensor  # 0-d: max_k ||x_k - x_0|| (r_eps at first)
    sum_sq_norm_grads: torch.Tensor  # 0-d: sum_k ||g_k||^2


def scale_by_dog(init_step: InitStep, eps: Num = 1e-8) -> GradientTransformation:
    r"""Scales updates by the Distance over Gradients (DoG) step size.

    .. math::
        \bar r_k = \max(\bar r_{k-1}, \|x_k - x_0\|),\quad G_k = G_{k-1} + \|g_k\|^2,\quad
        u_k = \frac{\bar r_k}{\sqrt{G_k + \epsilon}}\, g_k

    with norms over the whole tree. See :func:`dog` for ``init_step``. ``params`` are required;
    the state keeps a copy of the initial params. (Not exported by ``optax.contrib``; public
    here for chains of one's own.)

    Args:
      init_step: ``(tag, value)``: ``("distance", r)``, ``("learning_rate", eta_0)`` or
        ``("heuristic", alpha)``.
      eps: added to the sum of squared gradient norms (default 1e-8).

    Reference: Ivgi et al., `DoG is SGD's Best Friend: A Parameter-Free Dynamic Step Size
    Schedule <https://arxiv.org/abs/2302.12022>`_, 2023.

    Example::

        >>> tx = otx.contrib.scale_by_dog(("heuristic", 1e-6))
    """
    init_step_type, init_step_value = init_step
    if init_step_type not in _INIT_STEP_TYPES:
        raise ValueError(
            f"init_step must be one of {_INIT_STEP_TYPES} with a value, got {init_step=!r}"
        )
    if init_step_type == "learning_rate":
        _validate.check_finite("init_step", init_step_value)
    else:
        _validate.check_non_negative("init_step", init_step_value)
    _validate.check_non_negative("eps", eps)

    def init_fn(params):
        _validate.check_real_params(params, "scale_by_dog")
        dtype = scalar_dtype(params)
        if init_step_type == "distance":
            r_epsilon = torch.as_tensor(init_step_value, dtype=torch.float64)
        elif init_step_type == "heuristic":
            r_epsilon = init_step_value * (1 + tree.norm(params))
        else:
            r_epsilon = torch.zeros(())
        return DoGState(
            is_init_step=torch.ones((), dtype=torch.bool),
            init_params=tree.map(torch.clone, params),
            max_dist=r_epsilon.to(dtype),
            sum_sq_norm_grads=torch.zeros((), dtype=dtype),
        )

    @donation_safe  # the 0-d states are computed afresh, init_params is carried over
    def update_fn(updates, state, params=None):
        params = _require_params("dog", params)
        dist = tree.norm(tree.sub(state.init_params, params))
        max_dist = torch.maximum(state.max_dist, dist.to(state.max_dist.dtype))
        sum_sq = state.sum_sq_norm_grads + tree.norm(updates, squared=True).to(
            state.sum_sq_norm_grads.dtype
        )
        learning_rate = max_dist / torch.sqrt(sum_sq + eps)
        if init_step_type == "learning_rate":
            learning_rate = torch.where(
                state.is_init_step,
                torch.as_tensor(init_step_value, dtype=learning_rate.dtype),
                learning_rate,
            )
        return tree.scale(learning_rate, updates), DoGState(
            is_init_step=torch.zeros_like(state.is_init_step),
            init_params=state.init_params,
            max_dist=max_dist,
            sum_sq_norm_grads=sum_sq,
        )

    return GradientTransformation(init_fn, update_fn)


def dog(
    learning_rate: ScalarOrSchedule = 1.0,
    init_step: InitStep = ("heuristic", 1e-6),
    eps: Num = 1e-8,
    weight_decay: Num | None = None,
    mask: Any | Callable[[Any], Any] | None = None,
) -> GradientTransformationExtraArgs:
    r"""Distance over Gradients (DoG): SGD with a parameter-free dynamic step size.

    .. math::
        r_k = \|x_k - x_0\|,\quad \bar r_k = \max_{i \le k} r_i,\quad
        G_k = \sum_{i \le k} \|g_i\|^2,\quad \eta_k = \frac{\bar r_k}{\sqrt{G_k + \epsilon}},\quad
        x_{k+1} = x_k - \eta_k g_k

    ``chain(add_decayed_weights(weight_decay, mask) (if given), scale_by_dog(init_step, eps),
    scale_by_learning_rate(learning_rate))``; norms are over the whole tree.

    Args:
      learning_rate: an optional multiplier (default 1), or a schedule.
      init_step: ``(tag, value)``: ``("distance", r)`` sets the initial distance
        :math:`\bar r_0 = r` (:math:`r_\epsilon` in the paper); ``("learning_rate", eta)`` makes
        the first step size ``eta``; ``("heuristic", alpha)`` (default, with ``alpha=1e-6``;
        1e-4 is suggested with batch norm) sets :math:`\bar r_0 = \alpha (1 + \|x_0\|)`, so
        ``init`` must see the actual parameters.
      eps: added to the sum of squared gradient norms (default 1e-8).
      weight_decay: optional weight decay added to the gradients (default ``None``: none).
      mask: a tree (or a function of the params returning one) of booleans: where to decay.

    The authors recommend averaging the iterates (e.g. an EMA of the parameters).

    Reference: Ivgi et al., `DoG is SGD's Best Friend: A Parameter-Free Dynamic Step Size
    Schedule <https://arxiv.org/abs/2302.12022>`_, 2023.

    Example::

        >>> opt = otx.contrib.dog(init_step=("heuristic", 1e-4))
    """
    _validate.check_finite("learning_rate", learning_rate)
    _validate.check_non_negative("weight_decay", weight_decay)
    return chain(
        add_decayed_weights(weight_decay, mask) if weight_decay is not None else identity(),
        scale_by_dog(init_step, eps),
        scale_by_learning_rate(learning_rate),
    )


class DoWGState(NamedTuple):
    """State of :func:`scale_by_dowg` (:func:`dowg`)."""

    init_params: Params  # x_0
    weighted_sq_norm_grads: torch.Tensor  # 0-d: sum_k r_k^2 ||g_k||^2
    estim_sq_dist: torch.Tensor  # 0-d: max_k ||x_k - x_0||^2


def scale_by_dowg(init_estim_sq_dist: Num | None = None, eps: Num = 1e-4) -> GradientTransformation:
    r"""Scales updates by the Distance over Weighted Gradients (DoWG) step size.

    .. math::
        \bar r_k^2 = \max(\bar r_{k-1}^2, \|x_k - x_0\|^2),\quad
        v_k = v_{k-1} + \bar r_k^2 \|g_k\|^2,\quad
        u_k = \frac{\bar r_k^2}{\sqrt{v_k} + \epsilon}\, g_k

    with norms over the whole tree. ``params`` are required; the state keeps a copy of the
    initial params. (Not exported by ``optax.contrib``; public here for chains of one's own.)

    Args:
      init_estim_sq_dist: initial guess of the squared distance to the solution (default
        ``None``: ``eps``).
      eps: added to the denominator (default 1e-4).

    Reference: Khaled et al., `DoWG Unleashed: An Efficient Universal Parameter-Free Gradient
    Descent Method <https://arxiv.org/abs/2305.16284>`_, 2023.

    Example::

        >>> tx = otx.contrib.scale_by_dowg()
    """
    _validate.check_non_negative("init_estim_sq_dist", init_estim_sq_dist)
    _validate.check_non_negative("eps", eps)

    def init_fn(params):
        _validate.check_real_params(params, "scale_by_dowg")
        dtype = scalar_dtype(params)
        init = eps if init_estim_sq_dist is None else init_estim_sq_dist
        return DoWGState(
            init_params=tree.map(torch.clone, params),
            weighted_sq_norm_grads=torch.zeros((), dtype=dtype),
            estim_sq_dist=torch.as_tensor(init, dtype=torch.float64).to(dtype),
        )

    @donation_safe  # the 0-d states are computed afresh, init_params is carried over
    def update_fn(updates, state, params=None):
        params = _require_params("dowg", params)
        dtype = state.estim_sq_dist.dtype
        curr_sq_dist = tree.norm(tree.sub(state.init_params, params), squared=True).to(dtype)
        estim_sq_dist = torch.maximum(state.estim_sq_dist, curr_sq_dist)
        step_sq_norm_grads = tree.norm(updates, squared=True).to(dtype)
        weighted = estim_sq_dist * step_sq_norm_grads + state.weighted_sq_norm_grads
        learning_rate = estim_sq_dist / (torch.sqrt(weighted) + eps)
        return tree.scale(learning_rate, updates), DoWGState(
            init_params=state.init_params,
            weighted_sq_norm_grads=weighted,
            estim_sq_dist=estim_sq_dist,
        )

    return GradientTransformation(init_fn, update_fn)


def dowg(
    learning_rate: ScalarOrSchedule = 1.0,
    init_estim_sq_dist: Num | None = None,
    eps: Num = 1e-4,
    weight_decay: Num | None = None,
    mask: Any | Callable[[Any], Any] | None = None,
) -> GradientTransformationExtraArgs:
    r"""Distance over Weighted Gradients (DoWG): a parameter-free normalised gradient method.

    .. math::
        \bar r_k^2 = \max_{i \le k} \|x_i - x_0\|^2,\quad
        v_k = \sum_{i \le k} \bar r_i^2 \|g_i\|^2,\quad
        x_{k+1} = x_k - \frac{\bar r_k^2}{\sqrt{v_k} + \epsilon}\, g_k

    ``chain(add_decayed_weights(weight_decay, mask) (if given), scale_by_dowg(...),
    scale_by_learning_rate(learning_rate))``; norms are over the whole tree.

    Args:
      learning_rate: an optional multiplier (default 1), or a schedule.
      init_estim_sq_dist: initial guess of the squared distance to the solution (default
        ``None``: ``eps``).
      eps: added to the denominator (default 1e-4).
      weight_decay: optional weight decay added to the gradients (default ``None``: none).
      mask: a tree (or a function of the params returning one) of booleans: where to decay.

    Reference: Khaled et al., `DoWG Unleashed: An Efficient Universal Parameter-Free Gradient
    Descent Method <https://arxiv.org/abs/2305.16284>`_, 2023.

    Example::

        >>> opt = otx.contrib.dowg()
    """
    _validate.check_finite("learning_rate", learning_rate)
    _validate.check_non_negative("weight_decay", weight_decay)
    return chain(
        add_decayed_weights(weight_decay, mask) if weight_decay is not None else identity(),
        scale_by_dowg(init_estim_sq_dist, eps),
        scale_by_learning_rate(learning_rate),
    )
