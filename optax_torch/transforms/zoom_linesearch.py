"""The zoom line search (strong Wolfe conditions), optax's ``scale_by_zoom_linesearch``.

Written like the backtracking search of :mod:`optax_torch.transforms.linesearch` (whose module
docstring explains how the loop runs eagerly and under ``torch.compile``), with its helpers.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from optax_torch import _validate, numerics, tree
from optax_torch.base import GradientTransformationExtraArgs, Updates
from optax_torch.linear_algebra import _tracing, _while_loop
from optax_torch.transforms.linesearch import (
    _extract_fn_kwargs,
    _grad_and_value,
    _like,
    _moved,
    _nan_to_inf,
    _real,
    _value_dtype,
)

__all__ = ["ScaleByZoomLinesearchState", "ZoomLinesearchInfo", "scale_by_zoom_linesearch"]

Num = float | torch.Tensor


# --------------------------------------------------------------------------------------------
# Zoom line search
# --------------------------------------------------------------------------------------------

_FLAG_INTERVAL_NOT_FOUND = (
    "No interval satisfying curvature condition. "
    "Consider increasing maximal possible stepsize of the linesearch."
)
_FLAG_INTERVAL_TOO_SMALL = "Length of searched interval has been reduced below threshold."
_FLAG_CURVATURE_COND_NOT_SATISFIED = (
    "Returning stepsize with sufficient decrease but curvature condition not satisfied."
)
_FLAG_NO_STEPSIZE_FOUND = "Linesearch failed, no stepsize satisfying sufficient decrease found."
_FLAG_NOT_A_DESCENT_DIRECTION = (
    "The linesearch failed because the provided direction is not a descent direction. "
)


class ZoomLinesearchInfo(NamedTuple):
    """Information about the last zoom line search (for debugging).

    Attributes:
      num_linesearch_steps: number of objective evaluations.
      decrease_error: violation of the sufficient decrease criterion (0 on success).
      curvature_error: violation of the small curvature criterion (0 on success; a positive
        value may just mean that ``max_learning_rate`` is too small).
    """

    num_linesearch_steps: torch.Tensor
    decrease_error: torch.Tensor
    curvature_error: torch.Tensor


class ScaleByZoomLinesearchState(NamedTuple):
    """State of :func:`scale_by_zoom_linesearch`.

    Attributes:
      learning_rate: the step size found by the last search.
      value: the objective at the accepted point (reused by :func:`value_and_grad_from_state`).
      grad: the gradient at the accepted point (idem).
      info: :class:`ZoomLinesearchInfo`.
    """

    learning_rate: torch.Tensor
    value: torch.Tensor
    grad: Updates
    info: ZoomLinesearchInfo


class _ZoomState(NamedTuple):
    """The running state of one zoom line search (optax's ``ZoomLinesearchState``).

    ``low``/``high`` bound an interval holding a good step size, with value(high) >= value(low)
    (``low`` need not be smaller than ``high``).
    """

    count: torch.Tensor
    stepsize: torch.Tensor
    value: torch.Tensor
    grad: Updates
    slope: torch.Tensor
    decrease_error: torch.Tensor
    curvature_error: torch.Tensor
    error: torch.Tensor
    interval_found: torch.Tensor
    done: torch.Tensor
    failed: torch.Tensor
    low: torch.Tensor
    value_low: torch.Tensor
    slope_low: torch.Tensor
    high: torch.Tensor
    value_high: torch.Tensor
    slope_high: torch.Tensor
    cubic_ref: torch.Tensor
    value_cubic_ref: torch.Tensor
    safe_stepsize: torch.Tensor
    safe_value: torch.Tensor
    safe_grad: Updates


def _cubicmin(a, fa, fpa, b, fb, c, fc):
    """Critical point of the cubic through (a, fa), (b, fb), (c, fc) with slope fpa at a (NaN if
    none); from scipy.optimize's line search."""
    db = b - a
    dc = c - a
    denom = (db * dc) ** 2 * (db - dc)
    r1 = fb - fa - fpa * db
    r2 = fc - fa - fpa * dc
    big_a = (dc**2 * r1 + (-(db**2)) * r2) / denom
    big_b = (-(dc**3) * r1 + db**3 * r2) / denom
    radical = big_b * big_b - 3.0 * big_a * fpa
    return a + (-big_b + torch.sqrt(radical)) / (3.0 * big_a)


def _quadmin(a, fa, fpa, b, fb):
    """Critical point of the quadratic through (a, fa), (b, fb) with slope fpa at a."""
    db = b - a
    big_b = (fb - fa - fpa * db) / (db**2)
    return a - fpa / (2.0 * big_b)


def scale_by_zoom_linesearch(
    max_linesearch_steps: int,
    max_learning_rate: Num | None = None,
    tol: Num = 0.0,
    increase_factor: Num = 2.0,
    slope_rtol: Num = 1e-4,
    curv_rtol: Num = 0.9,
    approx_dec_rtol: Num | None = 1e-6,
    stepsize_precision: Num = 1e-5,
    initial_guess_strategy: str = "keep",
    verbose: bool = False,
) -> GradientTransformationExtraArgs:
    r"""Line search ensuring sufficient decrease and small curvature (strong Wolfe conditions).

    Finds a learning rate :math:`\eta` with

    .. math::
        f(w + \eta u) \le f(w) + c_1 \eta \langle u, \nabla f(w)\rangle + \epsilon,\qquad
        |\langle \nabla f(w + \eta u), u\rangle| \le c_2 |\langle \nabla f(w), u\rangle| + \epsilon

    (:math:`c_1` = ``slope_rtol``, :math:`c_2` = ``curv_rtol``, :math:`\epsilon` = ``tol``):
    first an interval holding such a step is searched by growing the step by
    ``increase_factor`` (Nocedal & Wright, Algorithm 3.5), then it is narrowed by cubic,
    quadratic or bisection steps (Algorithm 3.6). Close to a minimum (when
    :math:`f(w + \eta u) \le f(w) + c_3|f(w)|`, :math:`c_3` = ``approx_dec_rtol``) the decrease
    criterion may be replaced by Hager & Zhang's approximate one,
    :math:`\langle \nabla f(w+\eta u), u\rangle \le (2c_1 - 1)\langle \nabla f(w), u\rangle`
    (``approx_dec_rtol=None`` disables it). If both criteria cannot be met, the best step with
    sufficient decrease found is taken.

    Args:
      max_linesearch_steps: maximal number of objective evaluations (a Python int).
      max_learning_rate: largest step size (``None``: no bound).
      tol: tolerance on both criteria.
      increase_factor: growth of the step while searching the interval.
      slope_rtol: :math:`c_1`.
      curv_rtol: :math:`c_2` (``math.inf`` drops the curvature criterion).
      approx_dec_rtol: :math:`c_3`, or ``None``.
      stepsize_precision: once the interval is shorter than this and a step with sufficient
        decrease is known, that step is taken.
      initial_guess_strategy: ``"keep"`` (start from the previous step size; for SGD) or
        ``"one"`` (start from 1; for (quasi-)Newton methods such as L-BFGS).
      verbose: print diagnostics when the search fails (eagerly only).

    ``update(updates, state, params, *, value, grad, value_fn, **extra_args)`` as in
    :func:`scale_by_backtracking_linesearch`; the value and gradient at the accepted point are
    kept in the state for :func:`value_and_grad_from_state`. Every trial evaluates
    ``torch.func.grad_and_value(value_fn)``. Eager runs stop when the search ends; under
    ``torch.compile`` all ``max_linesearch_steps`` trials are evaluated (masked).

    References:
      Nocedal & Wright, Numerical Optimization, 1999, Algorithms 3.5 and 3.6.
      Hager & Zhang, Algorithm 851: CG_DESCENT, 2006, https://doi.org/10.1145/1132973.1132979

    Example::

        >>> solver = otx.chain(otx.sgd(1.0), otx.scale_by_zoom_linesearch(15))
        >>> value_and_grad = otx.value_and_grad_from_state(fn)
        >>> value, grad = value_and_grad(params, state=state)
        >>> updates, state = solver.update(grad, state, params, value=value, grad=grad,
        ...                                value_fn=fn)
    """
    _validate.check_non_negative("max_linesearch_steps", max_linesearch_steps)
    _validate.check_positive("max_learning_rate", max_learning_rate)
    _validate.check_non_negative("tol", tol)
    _validate.check_positive("increase_factor", increase_factor)
    _validate.check_non_negative("slope_rtol", slope_rtol)
    if isinstance(curv_rtol, int | float) and not curv_rtol >= 0:
        raise ValueError(f"curv_rtol must be >= 0, got curv_rtol={curv_rtol!r}")
    _validate.check_non_negative("approx_dec_rtol", approx_dec_rtol)
    _validate.check_non_negative("stepsize_precision", stepsize_precision)
    if initial_guess_strategy not in ("one", "keep"):
        raise ValueError(f"Unknown initial guess strategy: {initial_guess_strategy}")
    max_steps = max(int(max_linesearch_steps), 1)
    max_stepsize = max_learning_rate

    def decrease_error_of(stepsize, value_step, slope_step, value_init, slope_init):
        # Armijo's sufficient decrease (Nocedal & Wright, eq. 3.7a) ...
        err = value_step - value_init - slope_rtol * stepsize * slope_init
        if approx_dec_rtol is not None:
            # ... or, close enough to a minimizer, Hager & Zhang's approximate decrease (their
            # eq. 23, switched on as in their eqs. 26-27 simplified to one iterate).
            approx = slope_step - (2 * slope_rtol - 1.0) * slope_init
            delta_values = value_step - value_init - approx_dec_rtol * torch.abs(value_init)
            err = torch.minimum(torch.maximum(approx, delta_values), err)
        return _nan_to_inf(torch.clamp(err, min=0.0))

    def curvature_error_of(slope_step, slope_init):
        err = torch.abs(slope_step) - curv_rtol * torch.abs(slope_init)
        return _nan_to_inf(torch.clamp(err, min=0.0))

    def update_fn(updates, state, params=None, *, value, grad, value_fn, **extra_args):
        if params is None:
            raise ValueError("scale_by_zoom_linesearch needs params in update")
        fn_kwargs = _extract_fn_kwargs(value_fn, extra_args, "scale_by_zoom_linesearch")
        fn = functools.partial(value_fn, **fn_kwargs)
        compiling = _tracing()  # compiled or vmapped: no reading of values
        dtype = state.learning_rate.dtype
        device = state.learning_rate.device

        def scalar(x):
            return torch.as_tensor(x, dtype=dtype, device=device)

        value = scalar(value)
        slope_init = _real(tree.vdot(grad, updates)).to(dtype)
        stepsize_guess = scalar(1.0) if initial_guess_strategy == "one" else state.learning_rate
        false = torch.tensor(False, device=device)
        inf = scalar(float("inf"))
        zero = scalar(0.0)

        def evaluate(stepsize):
            """Value, gradient and slope of the objective at ``params + stepsize * updates``."""
            g, v = _grad_and_value(fn, _moved(params, stepsize, updates))
            g = _like(g, updates)
            slope = _real(tree.vdot(g, updates)).to(dtype)
            return v.to(dtype), tree.cast_like(g, grad), slope

        def search_interval(
            s: _ZoomState, new_stepsize, max_reached, value_step, grad_step, slope_step
        ):
            """Algorithm 3.5 of Nocedal & Wright, after evaluating the new trial step."""
            dec = decrease_error_of(new_stepsize, value_step, slope_step, value, slope_init)
            curv = curvature_error_of(slope_step, slope_init)
            err = torch.maximum(dec, curv)
            # A step with sufficient decrease is kept in case the curvature cannot be met.
            safe = dec <= tol
            safe_stepsize, safe_value, safe_grad = tree.where(
                safe,
                [new_stepsize, value_step, grad_step],
                [s.safe_stepsize, s.safe_value, s.safe_grad],
            )
            set_high_to_new = (dec > 0.0) | ((value_step >= s.value) & (s.count > 0))
            set_low_to_new = (slope_step >= 0.0) & ~set_high_to_new
            low, value_low, slope_low, high, value_high, slope_high = tree.where(
                set_low_to_new,
                [new_stepsize, value_step, slope_step, s.stepsize, s.value, s.slope],
                [s.stepsize, s.value, s.slope, new_stepsize, value_step, slope_step],
            )
            interval_found = set_high_to_new | set_low_to_new | (err <= tol)
            # At the largest step without an interval, no larger step can meet the curvature
            # criterion: take it.
            done = (err <= tol) | (max_reached & ~interval_found)
            failed = (s.count + 1 >= max_steps) & ~done
            return _ZoomState(
                count=numerics.safe_increment(s.count),
                stepsize=new_stepsize,
                value=value_step,
                grad=grad_step,
                slope=slope_step,
                decrease_error=dec,
                curvature_error=curv,
                error=err,
                interval_found=interval_found,
                done=done,
                failed=failed,
                low=low,
                value_low=value_low,
                slope_low=slope_low,
                high=high,
                value_high=value_high,
                slope_high=slope_high,
                cubic_ref=low,
                value_cubic_ref=value_low,
                safe_stepsize=safe_stepsize,
                safe_value=safe_value,
                safe_grad=safe_grad,
            )

        def zoom_point(s: _ZoomState):
            """The next trial inside [low, high]: cubic, else quadratic, else bisection."""
            delta = torch.abs(s.high - s.low)
            left = torch.minimum(s.high, s.low)
            right = torch.maximum(s.high, s.low)
            cubic = _cubicmin(
                s.low, s.value_low, s.slope_low, s.high, s.value_high, s.cubic_ref,
                s.value_cubic_ref,
            )  # fmt: skip
            use_cubic = (cubic > left + 0.2 * delta) & (cubic < right - 0.2 * delta)
            quad = _quadmin(s.low, s.value_low, s.slope_low, s.high, s.value_high)
            use_quad = ~use_cubic & (quad > left + 0.1 * delta) & (quad < right - 0.1 * delta)
            use_bisection = ~use_cubic & ~use_quad
            middle = torch.where(use_cubic, cubic, s.cubic_ref)
            middle = torch.where(use_quad, quad, middle)
            return torch.where(use_bisection, (s.low + s.high) / 2.0, middle)

        def zoom_into_interval(s: _ZoomState, middle, value_middle, grad_middle, slope_middle):
            """Algorithm 3.6 of Nocedal & Wright, after evaluating the middle point."""
            too_small_int = torch.abs(s.high - s.low) <= stepsize_precision
            dec = decrease_error_of(middle, value_middle, slope_middle, value, slope_init)
            curv = curvature_error_of(slope_middle, slope_init)
            err = torch.maximum(dec, curv)
            update_safe = (dec <= tol) & (value_middle < s.safe_value)
            safe_stepsize, safe_value, safe_grad = tree.where(
                update_safe,
                [middle, value_middle, grad_middle],
                [s.safe_stepsize, s.safe_value, s.safe_grad],
            )
            done = err <= tol
            set_high_to_middle = (dec > 0.0) | (value_middle >= s.value_low)
            set_high_to_low = (slope_middle * (s.high - s.low) >= 0.0) & ~set_high_to_middle
            set_low_to_middle = ~set_high_to_middle
            high_ = tree.where(
                set_high_to_middle,
                [middle, value_middle, slope_middle],
                [s.high, s.value_high, s.slope_high],
            )
            high, value_high, slope_high = tree.where(
                set_high_to_low, [s.low, s.value_low, s.slope_low], high_
            )
            low, value_low, slope_low = tree.where(
                set_low_to_middle,
                [middle, value_middle, slope_middle],
                [s.low, s.value_low, s.slope_low],
            )
            # The new cubic reference: the old high if high moved, else the old low.
            cubic_ref, value_cubic_ref = tree.where(
                set_high_to_middle | set_high_to_low, [s.high, s.value_high], [s.low, s.value_low]
            )
            # Stop once the interval is tiny and a step with sufficient decrease is known (very
            # steep functions may need tiny steps: without one, keep going).
            presumably_failed = (s.count + 1 >= max_steps) | (too_small_int & (safe_stepsize > 0.0))
            return _ZoomState(
                count=numerics.safe_increment(s.count),
                stepsize=middle,
                value=value_middle,
                grad=grad_middle,
                slope=slope_middle,
                decrease_error=dec,
                curvature_error=curv,
                error=err,
                interval_found=s.interval_found,
                done=done,
                failed=presumably_failed & ~done,
                low=low,
                value_low=value_low,
                slope_low=slope_low,
                high=high,
                value_high=value_high,
                slope_high=slope_high,
                cubic_ref=cubic_ref,
                value_cubic_ref=value_cubic_ref,
                safe_stepsize=safe_stepsize,
                safe_value=safe_value,
                safe_grad=safe_grad,
            )

        def try_safe_step(s: _ZoomState) -> _ZoomState:
            """On failure, fall back to the best step with sufficient decrease, if any."""
            outside_domain = torch.isinf(s.decrease_error)
            stepsize, value_, grad_ = tree.where(
                (s.safe_stepsize > 0.0) | outside_domain,
                [s.safe_stepsize, s.safe_value, s.safe_grad],
                [s.stepsize, s.value, s.grad],
            )
            return s._replace(stepsize=stepsize, value=value_, grad=grad_)

        def step_fn(s: _ZoomState) -> _ZoomState:
            # Both phases evaluate the objective once, at a point chosen from the state: choose
            # it, evaluate, then update the state by the phase's rules.
            grown = torch.where(s.count == 0, stepsize_guess, increase_factor * s.stepsize)
            if max_stepsize is not None:
                max_reached = grown >= max_stepsize
                grown = torch.clamp(grown, max=max_stepsize)
            else:
                max_reached = false
            if compiling:
                point = torch.where(s.interval_found, zoom_point(s), grown)
                evaluated = evaluate(point)
                new = tree.where(
                    s.interval_found,
                    zoom_into_interval(s, point, *evaluated),
                    search_interval(s, point, max_reached, *evaluated),
                )
            elif bool(s.interval_found):
                point = zoom_point(s)
                new = zoom_into_interval(s, point, *evaluate(point))
            else:
                new = search_interval(s, grown, max_reached, *evaluate(grown))
            return tree.where(new.failed, try_safe_step(new), new)

        def cond_fn(s: _ZoomState):
            return ~(s.done | s.failed)

        init = _ZoomState(
            count=numerics.zero_count(),
            stepsize=zero,
            value=value,
            grad=grad,
            slope=slope_init,
            decrease_error=inf,
            curvature_error=inf,
            error=inf,
            interval_found=false,
            done=false,
            failed=false,
            low=zero,
            value_low=value,
            slope_low=slope_init,
            high=zero,
            value_high=value,
            slope_high=slope_init,
            cubic_ref=zero,
            value_cubic_ref=value,
            safe_stepsize=zero,
            safe_value=value,
            safe_grad=grad,
        )
        final = _while_loop(cond_fn, step_fn, init, max_steps)
        if verbose and not compiling and bool(final.failed):
            _print_zoom_failure(final, value, slope_init, stepsize_precision)
        new_state = ScaleByZoomLinesearchState(
            learning_rate=final.stepsize,
            value=final.value,
            grad=tree.cast_like(final.grad, state.grad),
            info=ZoomLinesearchInfo(
                num_linesearch_steps=final.count,
                decrease_error=final.decrease_error,
                curvature_error=final.curvature_error,
            ),
        )
        return tree.scale(final.stepsize, updates), new_state

    def init_fn(params):
        dtype, device = _value_dtype(params)
        inf = torch.full((), float("inf"), dtype=dtype, device=device)
        return ScaleByZoomLinesearchState(
            learning_rate=torch.ones((), dtype=dtype, device=device),
            value=inf,
            grad=tree.zeros_like(params),
            info=ZoomLinesearchInfo(
                num_linesearch_steps=numerics.zero_count(),
                decrease_error=inf,
                curvature_error=inf,
            ),
        )

    return GradientTransformationExtraArgs(init_fn, update_fn)


def _print_zoom_failure(s: _ZoomState, value_init, slope_init, interval_threshold) -> None:
    """optax's failure diagnostics of the zoom line search (eager only)."""
    print(
        "INFO: optax_torch.scale_by_zoom_linesearch:\n"
        f"Value at current params: {float(value_init)}\n"
        f"Slope along update direction: {float(slope_init)}\n"
        f"Stepsize reached: {float(s.stepsize)}\n"
        f"Decrease Error: {float(s.decrease_error)}\n"
        f"Curvature Error: {float(s.curvature_error)}"
    )
    interval_length = float(torch.abs(s.low - s.high))
    if interval_length <= interval_threshold:
        print(_FLAG_INTERVAL_TOO_SMALL + f" Interval length: {interval_length}.")
    if bool(s.safe_stepsize > 0.0):
        print(
            _FLAG_CURVATURE_COND_NOT_SATISFIED
            + f" Stepsize ensuring sufficient decrease: {float(s.safe_stepsize)}."
        )
        return
    print(_FLAG_NO_STEPSIZE_FOUND)
    slope = float(slope_init)
    if slope >= 0.0:
        print(
            _FLAG_NOT_A_DESCENT_DIRECTION + f"The slope (={slope}) at stepsize=0 should be negative"
        )
    else:
        print("Consider augmenting the maximal number of linesearch iterations.")
        eps = torch.finfo(torch.float32).eps
        if float(s.stepsize) < eps:
            print(
                f"Computed stepsize (={float(s.stepsize)}) is below machine precision "
                f"(={eps}), consider computing in float64."
            )
        if abs(slope) > 1e16:
            print(
                f"Very large absolute slope at stepsize=0. (|slope|={abs(slope)}). The objective "
                "is badly conditioned. Consider reparameterizing objective (e.g., normalizing "
                "parameters) or finding a better guess for the initial parameters for the solver."
            )
    if bool(torch.isinf(s.decrease_error)):
        print(
            "Cannot even make a step without getting Inf or Nan. The linesearch won't make a "
            "step and the optimizer is stuck."
        )
    else:
        print(
            "Making an unsafe step, not decreasing enough the objective. Convergence of the "
            "solver is compromised as it does not reduce values."
        )
