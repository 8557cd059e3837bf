"""Line searches: backtracking (Armijo), value_and_grad_from_state, and the helpers they share
with the zoom line search (:mod:`optax_torch.transforms.zoom_linesearch`).

optax runs its line searches as ``jax.lax.while_loop``s. Here the loop body is written once as a
pure function of a tree of tensors and driven by :func:`optax_torch.linear_algebra._while_loop`:
eagerly a Python loop that stops as soon as the search ends (so the objective is evaluated
exactly as often as in optax); under ``torch.compile`` (or ``torch.func.vmap``) the body is
unrolled to the maximal number of steps, each step kept only while the search goes on (the same
result, with every step's objective evaluated). The objective must then be traceable too.

Complex parameters: gradients follow torch's convention (autograd's conjugate Wirtinger gradient,
the steepest-ascent direction, i.e. the conjugate of what ``jax.grad`` returns), and slopes along
a direction ``u`` are ``Re <grad, u>``.

The objective ``value_fn`` is differentiated with :func:`torch.func.grad_and_value` /
:func:`torch.func.vjp` (the analogues of ``jax.value_and_grad`` / ``jax.linearize``): it must be
a function of tensors that ``torch.func`` can differentiate.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from optax_torch import _validate, numerics, tree
from optax_torch.base import GradientTransformationExtraArgs, OptState, Params, Updates
from optax_torch.linear_algebra import _tracing, _while_loop

__all__ = [
    "BacktrackingLinesearchInfo",
    "ScaleByBacktrackingLinesearchState",
    "scale_by_backtracking_linesearch",
    "value_and_grad_from_state",
]

Num = float | torch.Tensor


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _real(x: torch.Tensor) -> torch.Tensor:
    return x.real if x.is_complex() else x


def _value_dtype(params: Params) -> tuple[torch.dtype, torch.device]:
    """The real dtype (and device) of the first leaf: the dtype of values and step sizes (the
    default dtype for a tree without leaves, e.g. ``tree.map_params``'s placeholder)."""
    leaves = tree.leaves(params)
    if not leaves:
        return torch.get_default_dtype(), torch.device("cpu")
    return _real(torch.empty((), dtype=leaves[0].dtype)).dtype, leaves[0].device


def _extract_fn_kwargs(value_fn: Callable, extra_args: dict[str, Any], who: str) -> dict:
    """The extra keyword arguments ``value_fn`` accepts; any other one is an error."""
    names = list(inspect.signature(value_fn).parameters)
    remaining = sorted(k for k in extra_args if k not in names)
    if remaining:
        raise TypeError(
            f"Unexpected keyword arguments passed to `{who}.update`. These arguments were not "
            f"consumed by `value_fn`: {remaining}. Ensure that all extra keyword arguments are "
            "accepted by `value_fn`."
        )
    return {k: v for k, v in extra_args.items() if k in names}


def _on_tensor_leaves(
    fn: Callable, params: Params
) -> tuple[Callable, list[torch.Tensor], Callable]:
    """``fn`` as a function of the list of ``params``' tensor leaves (``torch.func`` rejects
    ``None`` leaves), those leaves, and the map from a list like them back to a tree."""
    flat, spec = tree.flatten(params)
    where = [i for i, x in enumerate(flat) if x is not None]

    def rebuild(xs: list[Any]) -> Params:
        full = list(flat)
        for i, x in zip(where, xs):
            full[i] = x
        return tree.unflatten(spec, full)

    def rebuild_like(xs: list[Any]) -> Params:
        full: list[Any] = [None] * len(flat)
        for i, x in zip(where, xs):
            full[i] = x
        return tree.unflatten(spec, full)

    return (lambda xs: fn(rebuild(xs))), [flat[i] for i in where], rebuild_like


def _grad_and_value(fn: Callable, params: Params) -> tuple[Updates, torch.Tensor]:
    """``torch.func.grad_and_value(fn)(params)`` for trees with ``None`` leaves."""
    f, xs, back = _on_tensor_leaves(fn, params)
    g, v = torch.func.grad_and_value(f)(xs)
    return back(g), v


def _vjp(fn: Callable, params: Params) -> tuple[torch.Tensor, Callable[[torch.Tensor], Updates]]:
    """``fn(params)`` and the map from a cotangent of it to a gradient tree (``None`` leaves
    allowed): ``jax.linearize`` + transpose."""
    f, xs, back = _on_tensor_leaves(fn, params)
    value, vjp_fn = torch.func.vjp(f, xs)[:2]
    return value, lambda ct: back(vjp_fn(ct)[0])


def _moved(params: Params, stepsize: torch.Tensor, updates: Updates) -> Params:
    """``params + stepsize * updates``, leaving the parameters without update (``None``) as they
    are, so that the objective always sees every parameter."""
    return tree.map(
        lambda p, m: p if m is None else m, params, tree.add_scale(params, stepsize, updates)
    )


def _like(tree_x: Any, pattern: Any) -> Any:
    """``tree_x`` with ``None`` wherever ``pattern`` has ``None``."""
    return tree.map(lambda _, x: x, pattern, tree_x)


def _nan_to_inf(x: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isnan(x), torch.full_like(x, float("inf")), x)


# --------------------------------------------------------------------------------------------
# Backtracking line search
# --------------------------------------------------------------------------------------------


class BacktrackingLinesearchInfo(NamedTuple):
    """Information about the last backtracking line search (for debugging).

    Attributes:
      num_linesearch_steps: number of objective evaluations.
      decrease_error: violation of the sufficient decrease criterion at the end (0 on success).
    """

    num_linesearch_steps: torch.Tensor
    decrease_error: torch.Tensor


class ScaleByBacktrackingLinesearchState(NamedTuple):
    """State of :func:`scale_by_backtracking_linesearch`.

    Attributes:
      learning_rate: the step size found by the last search.
      value: the objective at the accepted point (reused by :func:`value_and_grad_from_state`).
      grad: the gradient at the accepted point if ``store_grad``, else ``None``.
      info: :class:`BacktrackingLinesearchInfo`.
    """

    learning_rate: torch.Tensor
    value: torch.Tensor
    grad: Updates | None
    info: BacktrackingLinesearchInfo


class _BacktrackingSearchState(NamedTuple):
    learning_rate: torch.Tensor
    new_value: torch.Tensor
    new_grad: Updates
    decrease_error: torch.Tensor
    iter_num: torch.Tensor


def scale_by_backtracking_linesearch(
    max_backtracking_steps: int,
    slope_rtol: Num = 1e-4,
    decrease_factor: Num = 0.8,
    increase_factor: Num = 1.5,
    max_learning_rate: Num = 1.0,
    atol: Num = 0.0,
    rtol: Num = 0.0,
    store_grad: bool = False,
    verbose: bool = False,
) -> GradientTransformationExtraArgs:
    r"""Backtracking line search ensuring sufficient decrease (Armijo criterion).

    Finds a learning rate :math:`\eta` with

    .. math::
        f(w + \eta u) \le (1 + \delta) f(w) + \eta\, c\, \langle u, \nabla f(w)\rangle + \epsilon,

    starting from :math:`\min(\text{increase\_factor}\cdot\eta_{prev}, \eta_{max})` and
    multiplying by ``decrease_factor`` until the criterion holds (:math:`c` = ``slope_rtol``,
    :math:`\delta` = ``rtol``, :math:`\epsilon` = ``atol``). If no finite value is found the step
    size is 0. ``updates`` must be a descent direction (e.g. after ``sgd``).

    Args:
      max_backtracking_steps: maximal number of decreases of the learning rate (a Python int).
      slope_rtol: :math:`c` above.
      decrease_factor: factor reducing the learning rate at each trial.
      increase_factor: factor increasing the previous learning rate for the first trial
        (``math.inf``: always start at ``max_learning_rate``).
      max_learning_rate: largest learning rate tried.
      atol, rtol: absolute and relative tolerances of the criterion.
      store_grad: also compute the gradient at the accepted point (kept in the state for
        :func:`value_and_grad_from_state`), through :func:`torch.func.vjp` of the last evaluation.
      verbose: print a diagnostic when the search fails (eagerly only).

    ``update(updates, state, params, *, value, grad, value_fn, **extra_args)``: ``value`` and
    ``grad`` are the objective and its gradient at ``params``; ``value_fn(params, **kwargs)`` is
    the objective, called with the ``extra_args`` it accepts (any other is a ``TypeError``).

    Eager runs stop as soon as the criterion holds; under ``torch.compile`` all
    ``max_backtracking_steps + 1`` trials are evaluated (masked), see the module docstring.

    References:
      Vaswani et al., Painless Stochastic Gradient, 2019, https://arxiv.org/abs/1905.09997
      Nocedal & Wright, Numerical Optimization, 1999.

    Example::

        >>> solver = otx.chain(otx.sgd(1.0), otx.scale_by_backtracking_linesearch(15))
        >>> fn = lambda p: (p**2).sum()
        >>> value, grad = torch.func.grad_and_value(fn)(params)[::-1]
        >>> updates, state = solver.update(grad, state, params, value=value, grad=grad,
        ...                                value_fn=fn)
    """
    _validate.check_non_negative("max_backtracking_steps", max_backtracking_steps)
    _validate.check_non_negative("slope_rtol", slope_rtol)
    _validate.check_decay("decrease_factor", decrease_factor)
    _validate.check_positive("decrease_factor", decrease_factor)
    if isinstance(increase_factor, int | float) and not increase_factor > 0:
        raise ValueError(f"increase_factor must be > 0, got increase_factor={increase_factor!r}")
    _validate.check_positive("max_learning_rate", max_learning_rate)
    _validate.check_non_negative("atol", atol)
    _validate.check_non_negative("rtol", rtol)
    max_steps = int(max_backtracking_steps)  # a 0-d tensor from inject_hyperparams too

    def init_fn(params):
        dtype, device = _value_dtype(params)
        return ScaleByBacktrackingLinesearchState(
            learning_rate=torch.ones((), dtype=dtype, device=device),
            value=torch.full((), float("inf"), dtype=dtype, device=device),
            grad=tree.zeros_like(params) if store_grad else None,
            info=BacktrackingLinesearchInfo(
                num_linesearch_steps=numerics.zero_count(),
                decrease_error=torch.full((), float("inf"), dtype=dtype, device=device),
            ),
        )

    def update_fn(updates, state, params=None, *, value, grad, value_fn, **extra_args):
        if params is None:
            raise ValueError("scale_by_backtracking_linesearch needs params in update")
        fn_kwargs = _extract_fn_kwargs(value_fn, extra_args, "scale_by_backtracking_linesearch")
        fn = functools.partial(value_fn, **fn_kwargs)
        compiling = _tracing()  # compiled or vmapped: no reading of values
        lr0 = state.learning_rate
        value = torch.as_tensor(value, dtype=lr0.dtype, device=lr0.device)
        # Slope of eta -> f(params + eta * updates) at 0; negative for a descent direction.
        slope = _real(tree.vdot(grad, updates)).to(lr0.dtype)

        def decrease_error_of(stepsize, new_value):
            err = new_value - (1.0 + rtol) * value - stepsize * slope_rtol * slope
            return torch.clamp(_nan_to_inf(err), min=0.0)

        def cond_fn(s):
            return ~(s.decrease_error <= atol) & (s.iter_num <= max_steps)

        def body_fn(s):
            # The learning rate decreases from the second trial on.
            lr = torch.where(s.iter_num > 0, decrease_factor * s.learning_rate, s.learning_rate)
            new_params = _moved(params, lr, updates)
            new_grad = s.new_grad
            if store_grad:
                new_value, vjp_params = _vjp(fn, new_params)

                def vjp_fn(ct):
                    return _like(vjp_params(ct), updates)

                new_value = new_value.to(lr.dtype)
                err = decrease_error_of(lr, new_value)
                # The search ends here: the gradient at the accepted point is needed.
                ends = (err <= atol) | (s.iter_num == max_steps)
                if compiling:
                    new_grad = tree.where(ends, vjp_fn(torch.ones_like(new_value)), new_grad)
                elif bool(ends):
                    new_grad = vjp_fn(torch.ones_like(new_value))
                new_grad = tree.cast_like(new_grad, s.new_grad)
            else:
                new_value = torch.as_tensor(fn(new_params)).to(lr.dtype)
                err = decrease_error_of(lr, new_value)
            return _BacktrackingSearchState(lr, new_value, new_grad, err, s.iter_num + 1)

        lr_guess = torch.clamp(increase_factor * lr0, max=max_learning_rate)
        search = _BacktrackingSearchState(
            learning_rate=lr_guess,
            new_value=value,
            new_grad=tree.zeros_like(updates),
            decrease_error=torch.full_like(value, float("inf")),
            iter_num=numerics.zero_count(),
        )
        search = _while_loop(cond_fn, body_fn, search, max_steps + 1)
        # With no finite value found, no step (it would give inf or nan parameters).
        failed = torch.isinf(search.decrease_error)
        new_lr = torch.where(failed, torch.zeros_like(search.learning_rate), search.learning_rate)
        if verbose and not compiling and bool(search.decrease_error > atol):
            print(
                "INFO: optax_torch.scale_by_backtracking_linesearch:\n"
                "Backtracking linesearch failed to find a stepsize ensuring sufficent decrease.\n"
                f"Value at current params: {float(value)},\nSlope along update direction: "
                f"{float(slope)}\nStepsize: {float(search.learning_rate)}\n"
                f"Decrease Error: {float(search.decrease_error)}"
            )
            if bool(failed):
                print("Using a stepsize of 0 to avoid infinite or nan values.")
        new_state = ScaleByBacktrackingLinesearchState(
            learning_rate=new_lr,
            value=search.new_value,
            grad=search.new_grad if store_grad else None,
            info=BacktrackingLinesearchInfo(
                num_linesearch_steps=search.iter_num,
                decrease_error=search.decrease_error,
            ),
        )
        return tree.scale(new_lr, updates), new_state

    return GradientTransformationExtraArgs(init_fn, update_fn)


# --------------------------------------------------------------------------------------------
# value_and_grad_from_state
# --------------------------------------------------------------------------------------------


def value_and_grad_from_state(
    value_fn: Callable[..., torch.Tensor],
) -> Callable[..., tuple[torch.Tensor, Updates]]:
    r"""Like ``torch.func.grad_and_value`` (value first), reusing the value and gradient that a
    line search stored in the optimizer state.

    Returns ``value_and_grad(params, *fn_args, state, **fn_kwargs) -> (value, grad)``: the
    ``value`` and ``grad`` fields of ``state`` (found anywhere in it by name) when the value is
    finite, else ``value_fn``'s value and gradient at ``params`` (the first call, or after a
    failed search). Raises ``ValueError`` if the state holds no (or a ``None``) value or
    gradient, e.g. :func:`scale_by_backtracking_linesearch` without ``store_grad``.

    Reads the stored value to decide (a Python branch): eager only, not
    ``torch.compile(fullgraph=True)``-traceable.

    Example::

        >>> solver = otx.lbfgs()
        >>> value_and_grad = otx.value_and_grad_from_state(fn)
        >>> value, grad = value_and_grad(params, state=state)
        >>> updates, state = solver.update(grad, state, params, value=value, grad=grad,
        ...                                value_fn=fn)
    """

    def _value_and_grad(params: Params, *fn_args: Any, state: OptState, **fn_kwargs: Any):
        value = tree.get(state, "value", None)
        grad = tree.get(state, "grad", None)
        if value is None or grad is None:
            raise ValueError(
                "Value or gradient not found in the state. Make sure that these values are "
                "stored in the state by the optimizer."
            )
        if bool(torch.isfinite(torch.as_tensor(value))):
            return value, grad
        g, v = _grad_and_value(lambda p: value_fn(p, *fn_args, **fn_kwargs), params)
        return v, g

    return _value_and_grad
