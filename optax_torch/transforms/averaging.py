"""Averaging of parameters: ASGD's step size and Polyak average, EMA and SWA of the weights.

* :func:`scale_by_asgd` and :func:`polyak_average`: the two halves of averaged SGD
  (``torch.optim.ASGD``): the decaying step size with its weight decay towards zero, and the
  running average of the iterates kept in the optimizer state.
* :func:`ema_update`, :func:`swa_update` and the stateful :func:`params_ema` /
  :func:`params_swa`: exponential and equal-weight (stochastic weight averaging) averages of a
  pytree of parameters, the math of ``torch.optim.swa_utils`` (``AveragedModel`` and its
  ``get_*_avg_fn`` helpers, see :mod:`optax_torch.compat.torch_optim.swa_utils`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from optax_torch import _validate, numerics, tree
from optax_torch.base import (
    GradientTransformation,
    Params,
    donation_safe,
    elementwise,
    leafwise,
)

__all__ = [
    "ParamsAverageState",
    "ParamsAveraging",
    "PolyakAverageState",
    "ScaleByAsgdState",
    "ema_update",
    "params_ema",
    "params_swa",
    "polyak_average",
    "scale_by_asgd",
    "swa_update",
]

Num = float | torch.Tensor


def _scalar_dtype(dtype: torch.dtype | None) -> torch.dtype:
    """``dtype``, or torch.optim's dtype of scalar state: float64 if that is the default dtype,
    else float32."""
    if dtype is not None:
        return dtype
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _check_not_nan(name: str, value: Any) -> None:
    if isinstance(value, float) and math.isnan(value):
        raise ValueError(f"{name} must be a number (not NaN), got {name}={value!r}")


# --------------------------------------------------------------------------------------------
# ASGD
# --------------------------------------------------------------------------------------------


class ScaleByAsgdState(NamedTuple):
    """State of :func:`scale_by_asgd`."""

    count: torch.Tensor  # 0-d int32: steps taken
    eta: torch.Tensor  # 0-d: the step size of the next step


def scale_by_asgd(
    learning_rate: Num = 1e-2,
    lambd: float = 1e-4,
    alpha: float = 0.75,
    *,
    eta_dtype: torch.dtype | None = None,
    foreach: bool = False,
) -> GradientTransformation:
    r"""Averaged SGD's step: a decaying step size :math:`\eta_k` with a decay of the weights.

    .. math::
        p_k = p_{k-1}\,(1 - \lambda\,\eta_k) - \eta_k\, g_k,\qquad
        \eta_1 = \gamma,\quad \eta_{k+1} = \frac{\gamma}{(1 + \lambda\,\gamma\,k)^{\alpha}}

    The update is :math:`u_k = p_k - p_{k-1}` (it includes the learning rate: no
    ``scale_by_learning_rate`` follows). :math:`p_k` is computed as ``torch.optim.ASGD`` does (the
    decay, then the gradient step) and returned as a difference, so that ``params + updates``
    reproduces torch's parameters (bit for bit wherever the step is small against the
    parameter). :math:`\eta_{k+1}` is computed at the end of step :math:`k` from the learning
    rate of that step (with a learning rate that changes, e.g. through an LR scheduler, the change
    shows with one step of delay, as in torch), and stored rounded to ``eta_dtype`` (torch's
    float32 state).

    Args:
      learning_rate: :math:`\gamma`, a number or a 0-d tensor (not a schedule: the step size has
        its own decay), default ``1e-2``.
      lambd: the decay term :math:`\lambda`, default ``1e-4``.
      alpha: the power :math:`\alpha` of the step-size decay, default ``0.75``.
      eta_dtype: *extension*: dtype of the stored :math:`\eta`; ``None`` (default) is torch's:
        float64 if it is the default dtype, else float32.
      foreach: *extension*: the arithmetic of :math:`\eta_{k+1}`. ``False`` (default): in
        float64, like ``torch.optim.ASGD``'s single-tensor path (its default on the CPU).
        ``True``: in ``eta_dtype`` (float32), like torch's multi-tensor path (``foreach=True``,
        its default on accelerators). Which path torch would take is the caller's choice (the
        ``ASGD`` drop-in resolves torch's ``foreach=None`` from the devices of the parameters).

    Reference: Polyak & Juditsky, `Acceleration of stochastic approximation by averaging
    <https://epubs.siam.org/doi/10.1137/0330046>`_, 1992; ``torch.optim.ASGD``.

    Example::

        >>> tx = otx.chain(otx.scale_by_asgd(1e-2, lambd=1e-4), otx.polyak_average(t0=100))
        >>> state = tx.init(params)
        >>> updates, state = tx.update(grads, state, params)
    """
    _validate.check_non_negative("learning_rate", learning_rate)
    _validate.check_finite("lambd", lambd)
    _validate.check_finite("alpha", alpha)
    if callable(learning_rate):
        raise TypeError("scale_by_asgd: learning_rate must be a number or a 0-d tensor")
    if not isinstance(foreach, bool):
        raise ValueError(f"foreach must be True or False, got foreach={foreach!r}")

    def init_fn(params):
        del params
        lr = learning_rate
        if isinstance(lr, torch.Tensor):
            lr = lr.squeeze()  # (keeps its autograd history: meta-gradients)
        eta = torch.as_tensor(lr, dtype=_scalar_dtype(eta_dtype)).clone()
        return ScaleByAsgdState(count=numerics.zero_count(), eta=eta)

    @donation_safe
    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_asgd needs params: call update(updates, state, params)")
        count_inc = numerics.safe_increment(state.count)
        # torch reads eta with .item() and works in Python doubles: float64 here.
        eta = state.eta.to(torch.float64)
        decayed = tree.scale(1 - lambd * eta, params)
        new_params = tree.add_scale(decayed, -eta, updates)
        updates = tree.sub(new_params, params)
        if foreach:
            # torch's multi-tensor path: lr / ((1 + lambd * lr * step) ** alpha) with its float32
            # step tensor, i.e. in the arithmetic of the state (Python lr: reciprocal * lr).
            k = count_inc.to(state.eta.dtype)
            if isinstance(learning_rate, torch.Tensor):
                lr = learning_rate.squeeze()
                new_eta = lr / ((1 + lambd * lr * k) ** alpha)
            else:
                new_eta = torch.reciprocal((1 + (lambd * learning_rate) * k) ** alpha) * (
                    learning_rate
                )
        elif isinstance(learning_rate, torch.Tensor):
            lr = learning_rate.squeeze()
            new_eta = lr / ((1 + lambd * lr * count_inc.to(lr)) ** alpha)
        else:
            k = count_inc.to(torch.float64)
            lr = torch.as_tensor(learning_rate, dtype=torch.float64)
            new_eta = lr / ((1 + (lambd * learning_rate) * k) ** alpha)
        new_eta = new_eta.to(state.eta.dtype)
        return updates, ScaleByAsgdState(count=count_inc, eta=new_eta)

    return GradientTransformation(init_fn, update_fn)


class PolyakAverageState(NamedTuple):
    """State of :func:`polyak_average`."""

    count: torch.Tensor  # 0-d int32: steps taken
    mu: torch.Tensor  # 0-d: the averaging weight of the next step
    ax: Params  # the average of the parameters


def polyak_average(
    t0: float = 0.0, *, mu_dtype: torch.dtype | None = None
) -> GradientTransformation:
    r"""Keeps the running (Polyak) average of the parameters in the state; updates pass through.

    Placed last in a chain, it sees the new parameters :math:`p_k = p_{k-1} + u_k` and keeps

    .. math::
        \bar p_k = \bar p_{k-1} + \mu_k\,(p_k - \bar p_{k-1})\quad
        (\bar p_k = p_k \text{ while } \mu_k = 1),\qquad
        \mu_1 = 1,\quad \mu_{k+1} = \frac{1}{\max(1,\ k - t_0)}

    (``torch.optim.ASGD``'s ``ax`` and ``mu``): :math:`\bar p_k` follows the parameters up to step
    :math:`t_0 + 2`, then is the mean of the parameters of steps :math:`t_0 + 2, \dots, k`
    (:math:`t_0 = -1`: of all steps). Read it with ``state.ax`` (or
    ``optimizer.state[p]["ax"]`` with :class:`~optax_torch.compat.torch_optim.ASGD`) and evaluate
    the model with it.

    Args:
      t0: the step from which the average starts (a number; ``inf`` never averages), default
        ``0``.
      mu_dtype: *extension*: dtype of the stored :math:`\mu`; ``None`` (default) is torch's:
        float64 if it is the default dtype, else float32.

    Reference: Polyak & Juditsky, `Acceleration of stochastic approximation by averaging
    <https://epubs.siam.org/doi/10.1137/0330046>`_, 1992.

    Example::

        >>> tx = otx.chain(otx.sgd(0.1), otx.polyak_average(t0=1000))
        >>> updates, state = tx.update(grads, state, params)
        >>> averaged = state[1].ax
    """
    _check_not_nan("t0", t0)

    def init_fn(params):
        return PolyakAverageState(
            count=numerics.zero_count(),
            mu=torch.ones((), dtype=_scalar_dtype(mu_dtype)),
            ax=tree.zeros_like(params),
        )

    @elementwise
    @leafwise
    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("polyak_average needs params: call update(updates, state, params)")
        new_params = tree.add(params, updates)
        # torch copies the parameters while mu == 1 (exactly, not ax + 1 * (p - ax)).
        averaged = tree.add(state.ax, tree.scale(state.mu, tree.sub(new_params, state.ax)))
        ax = tree.where(state.mu == 1, new_params, averaged)
        count_inc = numerics.safe_increment(state.count)
        steps = count_inc.to(torch.float64) - t0
        mu = torch.reciprocal(torch.clamp_min(steps, 1.0)).to(state.mu.dtype)
        return updates, PolyakAverageState(count=count_inc, mu=mu, ax=ax)

    return GradientTransformation(init_fn, update_fn)


# --------------------------------------------------------------------------------------------
# EMA and SWA of the parameters
# --------------------------------------------------------------------------------------------


def _is_float(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and (x.is_floating_point() or x.is_complex())


def _split_apply(
    average: Params,
    params: Params,
    float_fn: Callable[[list, list], list],
    other_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Params:
    """``float_fn`` on the floating (and complex) leaves, as lists; ``other_fn`` leaf by leaf on
    the others (integer buffers), its result cast back to the leaf's dtype."""
    avg_leaves, spec = tree.flatten(average)
    par_leaves = tree.flatten(params)[0]
    if len(par_leaves) != len(avg_leaves):
        raise ValueError("average and params must have the same structure")
    out: list[Any] = [None] * len(avg_leaves)
    idx = [i for i, a in enumerate(avg_leaves) if _is_float(a) and par_leaves[i] is not None]
    if idx:
        for i, r in zip(idx, float_fn([avg_leaves[i] for i in idx], [par_leaves[i] for i in idx])):
            out[i] = r
    done = set(idx)
    for i, (a, p) in enumerate(zip(avg_leaves, par_leaves)):
        if i not in done and a is not None and p is not None:
            out[i] = other_fn(a, p).to(a.dtype)
    return tree.unflatten(spec, out)


def ema_update(average: Params, params: Params, decay: Num = 0.999, *, lerp: bool = True) -> Params:
    r"""One step of an exponential moving average of parameters.

    .. math::
        \bar p \leftarrow \delta\, \bar p + (1 - \delta)\, p

    Args:
      average: the current average :math:`\bar p` (a pytree of tensors).
      params: the parameters :math:`p` (same structure).
      decay: :math:`\delta` in ``[0, 1]``, default ``0.999``.
      lerp: ``True`` (default): computed as ``lerp(average, params, 1 - decay)`` (optax's
        moments, ``torch.optim.swa_utils.get_ema_multi_avg_fn``); ``False``: as
        ``decay * average + (1 - decay) * params`` (``get_ema_avg_fn``). Equal up to rounding.
        Integer leaves (buffers) always take the second form, truncated to their dtype.

    Returns:
      The new average (new tensors; the inputs are not modified unless donated with
      :func:`optax_torch.tree.donate`).

    Example::

        >>> ema = otx.ema_update(ema, params, decay=0.99)
    """
    _validate.check_in_range("decay", decay, 0.0, 1.0)

    def other(a, p):
        return a * decay + p * (1 - decay)

    def floats(avg, par):
        if lerp:
            return tree.update_moment(par, avg, decay, 1)
        return tree.add(tree.scale(decay, avg), tree.scale(1 - decay, par))

    return _split_apply(average, params, floats, other)


def swa_update(
    average: Params, params: Params, count: int | torch.Tensor, *, lerp: bool = False
) -> Params:
    r"""One step of an equal-weight running average of parameters (stochastic weight averaging).

    .. math::
        \bar p \leftarrow \bar p + \frac{p - \bar p}{n + 1}

    where :math:`n` (``count``) models are already in the average :math:`\bar p`.

    Args:
      average: the current average (a pytree of tensors).
      params: the parameters to add to it (same structure).
      count: :math:`n`, an int or a 0-d integer tensor (``AveragedModel.n_averaged``).
      lerp: ``False`` (default): computed as ``average + (params - average) / (count + 1)``
        (``torch.optim.swa_utils.get_swa_avg_fn``, exact division); ``True``: as ``lerp(average,
        params, 1 / (count + 1))`` with the weight computed as torch's ``get_swa_multi_avg_fn``
        does (a tensor ``count`` gives a weight in the default dtype, usually float32). Integer
        leaves (buffers) always take the first form, truncated to their dtype.

    Returns:
      The new average (new tensors).

    Example::

        >>> avg = otx.swa_update(avg, params, count=n); n += 1
    """

    def other(a, p):
        return a + (p - a) / (count + 1)

    def floats(avg, par):
        if lerp:
            w = 1 / (count + 1)
            if isinstance(w, torch.Tensor) and w.device.type == "cpu":
                w = w.item()
            return tree.map(
                lambda a, p: torch.lerp(a, p, w if not isinstance(w, torch.Tensor) else w.to(a)),
                avg,
                par,
            )
        return tree.add(avg, tree.map(lambda d: d / (count + 1), tree.sub(par, avg)))

    return _split_apply(average, params, floats, other)


class ParamsAverageState(NamedTuple):
    """State of :func:`params_ema` and :func:`params_swa`."""

    count: torch.Tensor  # 0-d int64: number of models averaged (torch's n_averaged)
    average: Params


class ParamsAveraging(NamedTuple):
    """A pure average of parameters: ``state = init(params)``, ``state = update(params, state)``.

    ``state.average`` holds the average; the first ``update`` copies the parameters (as
    ``torch.optim.swa_utils.AveragedModel.update_parameters`` does).
    """

    init: Callable[[Params], ParamsAverageState]
    update: Callable[[Params, ParamsAverageState], ParamsAverageState]


def _clone(params: Params) -> Params:
    return tree.map(lambda p: p.detach().clone(), params)


def _averaging(step: Callable[[Params, Params, torch.Tensor], Params]) -> ParamsAveraging:
    def init_fn(params):
        return ParamsAverageState(count=torch.zeros((), dtype=torch.long), average=_clone(params))

    def update_fn(params, state):
        params = tree.map(lambda p: p.detach(), params)
        if bool(state.count == 0):
            average = _clone(params)
        else:
            average = step(state.average, params, state.count)
        return ParamsAverageState(count=state.count + 1, average=average)

    return ParamsAveraging(init_fn, update_fn)


def params_ema(decay: Num = 0.999, *, lerp: bool = True) -> ParamsAveraging:
    r"""Exponential moving average of the parameters (EMA, Polyak averaging with exponential
    weights).

    .. math::
        \bar p_1 = p_1,\qquad \bar p_{t+1} = \delta\, \bar p_t + (1 - \delta)\, p_{t+1}

    ``AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))`` as a pure function of a
    pytree of parameters (see :func:`ema_update`).

    Args:
      decay: :math:`\delta` in ``[0, 1]``, default ``0.999``.
      lerp: the form of the computation (see :func:`ema_update`), default ``True``.

    Example::

        >>> avg = otx.params_ema(0.99)
        >>> state = avg.init(params)
        >>> for _ in range(steps):
        ...     params = train_step(params)
        ...     state = avg.update(params, state)
        >>> ema_params = state.average
    """
    _validate.check_in_range("decay", decay, 0.0, 1.0)
    return _averaging(lambda a, p, n: ema_update(a, p, decay, lerp=lerp))


def params_swa(*, lerp: bool = False) -> ParamsAveraging:
    r"""Equal-weight running average of the parameters (stochastic weight averaging, SWA).

    .. math::
        \bar p_t = \frac{1}{t} \sum_{s=1}^{t} p_s

    ``AveragedModel(model)`` as a pure function of a pytree of parameters (see
    :func:`swa_update`).

    Args:
      lerp: the form of the computation (see :func:`swa_update`), default ``False``.

    Reference: Izmailov et al., `Averaging Weights Leads to Wider Optima and Better
    Generalization <https://arxiv.org/abs/1803.05407>`_, 2018.

    Example::

        >>> avg = otx.params_swa()
        >>> state = avg.init(params)
        >>> state = avg.update(params, state)  # after each epoch of the SWA phase
    """
    return _averaging(lambda a, p, n: swa_update(a, p, n, lerp=lerp))
