r"""``torch.optim.LBFGS``'s algorithm as pure functions over flat vectors.

torch's L-BFGS (a port of minFunc's) differs from optax's :func:`~optax_torch.scale_by_lbfgs` +
zoom line search in more than form: one *step* runs up to ``max_iter`` inner iterations driven
by a closure that re-evaluates the objective, the history is a FIFO of accepted curvature pairs
(pairs with :math:`y^\top s \le 10^{-10}` are skipped), the first iteration's step is scaled by
:math:`\min(1, 1/\|g\|_1)`, the optional line search is torch's strong-Wolfe search with cubic
interpolation (a port of ``lswolfe.lua``), and the iterations stop on torch's own tests. This
module writes that algorithm once, as pure functions of flat (1-D) vectors and Python lists of
them, with the same floating-point operations in the same order as ``torch/optim/lbfgs.py``
(torch 2.13), so that :class:`optax_torch.compat.torch_optim.LBFGS` reproduces
``torch.optim.LBFGS`` bit for bit:

* :func:`lbfgs_update_history` and :func:`lbfgs_direction`: the limited-memory inverse-Hessian
  approximation and its product with the gradient (the two-loop recursion);
* :func:`cubic_interpolate` and :func:`strong_wolfe`: the line search;
* :func:`flatten_grads` and :func:`add_direction`: between lists of tensors and flat vectors;
* :func:`torch_lbfgs_init` and :func:`torch_lbfgs_step`: one ``LBFGS.step``, with its
  termination tests, on a :class:`TorchLBFGSState` (the fields are torch's state names).

The objective is given as ``fun(params) -> (loss, flat_grad)``: the value (a float or 0-d
tensor, converted with ``float``) and the flat gradient (:func:`flatten_grads`) at a point given
as a list of tensors. It is the only thing that is not pure here: the drop-in's ``fun`` writes
the point into the model and runs the closure.

References:
  Nocedal & Wright, Numerical Optimization, 2nd ed., 2006: Algorithm 7.4 (two-loop recursion),
  Algorithm 7.5 (L-BFGS), Algorithms 3.5 / 3.6 (line search for the strong Wolfe conditions,
  zoom), Section 3.5 (cubic interpolation).
  M. Schmidt, minFunc (2005), https://www.cs.ubc.ca/~schmidtm/Software/minFunc.html, and torch7's
  ``optim/lbfgs.lua``, ``lswolfe.lua``, ``polyinterp.lua``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = [
    "TorchLBFGSState",
    "add_direction",
    "cubic_interpolate",
    "flatten_grads",
    "lbfgs_direction",
    "lbfgs_update_history",
    "strong_wolfe",
    "torch_lbfgs_init",
    "torch_lbfgs_step",
]

Num = float | Tensor
Objective = Callable[[list[Tensor]], tuple[Any, Tensor]]


class TorchLBFGSState(NamedTuple):
    """State of :func:`torch_lbfgs_step`; the fields are ``torch.optim.LBFGS``'s state names.

    ``torch.optim.LBFGS`` keeps this state under its first parameter (``opt.state[params[0]]``).
    Fields that are ``None`` have not been computed yet (torch: the key is absent).

    Attributes:
      func_evals: objective evaluations so far (all steps, an int).
      n_iter: inner iterations so far (all steps, an int).
      d: the last search direction (flat vector).
      t: the last step length (a float or a 0-d tensor).
      old_dirs: the history of gradient differences :math:`y_j = g_{j+1} - g_j`, oldest first.
      old_stps: the history of steps :math:`s_j = t_j d_j`, oldest first.
      ro: the history of :math:`\\rho_j = 1 / y_j^\\top s_j` (0-d tensors).
      H_diag: the scale :math:`\\gamma` of the initial inverse Hessian :math:`\\gamma I`
        (``1`` until the first curvature pair, then :math:`y^\\top s / y^\\top y`).
      prev_flat_grad: the gradient at the start of the last iteration (flat vector).
      prev_loss: the loss at the start of the last iteration (a float).
      al: the first loop's coefficients :math:`\\alpha_j` (a list of ``history_size`` entries,
        ``None`` where never computed; torch's scratch buffer, kept in the state as torch does).
    """

    func_evals: int = 0
    n_iter: int = 0
    d: Tensor | None = None
    t: Num | None = None
    old_dirs: list[Tensor] | None = None
    old_stps: list[Tensor] | None = None
    ro: list[Tensor] | None = None
    H_diag: Num | None = None
    prev_flat_grad: Tensor | None = None
    prev_loss: float | None = None
    al: list[Any] | None = None


# --------------------------------------------------------------------------------------------
# Flat vectors
# --------------------------------------------------------------------------------------------


def flatten_grads(grads: Sequence[Tensor | None], params: Sequence[Tensor]) -> Tensor:
    """The gradients as one flat real vector (torch's ``LBFGS._gather_flat_grad``).

    A ``None`` gradient counts as zeros, a sparse one is made dense, a complex one is viewed as
    pairs of reals (:func:`torch.view_as_real`).
    """
    views = []
    for p, g in zip(params, grads, strict=True):
        if g is None:
            view = p.new(p.numel()).zero_()
        elif g.is_sparse:
            view = g.to_dense().view(-1)
        else:
            view = g.view(-1)
        if torch.is_complex(view):
            view = torch.view_as_real(view).view(-1)
        views.append(view)
    return torch.cat(views, 0)


def add_direction(params: Sequence[Tensor], t: Num, d: Tensor) -> list[Tensor]:
    """``params + t * d`` as a new list of tensors, ``d`` being flat (torch's
    ``LBFGS._add_grad``, out of place: the same bits as torch's in-place ``add_``)."""
    out = []
    offset = 0
    for p in params:
        real = torch.view_as_real(p) if torch.is_complex(p) else p
        numel = real.numel()
        new = real.add(d[offset : offset + numel].view_as(real), alpha=t)  # type: ignore[arg-type]
        new = new.to(real.dtype)  # as torch's in-place add_: rounded to the parameter's dtype
        out.append(torch.view_as_complex(new) if torch.is_complex(p) else new)
        offset += numel
    if offset != d.numel():
        raise AssertionError(f"Expected offset {offset} to equal {d.numel()}")
    return out


# --------------------------------------------------------------------------------------------
# Inverse-Hessian approximation
# --------------------------------------------------------------------------------------------


def lbfgs_update_history(
    old_dirs: list[Tensor],
    old_stps: list[Tensor],
    ro: list[Tensor],
    H_diag: Num,
    y: Tensor,
    s: Tensor,
    history_size: int,
) -> tuple[list[Tensor], list[Tensor], list[Tensor], Num]:
    r"""Adds the curvature pair :math:`(s, y)` to the history, if it has positive curvature.

    If :math:`y^\top s > 10^{-10}`: the pair and :math:`\rho = 1/y^\top s` are appended (the
    oldest pair is dropped once ``history_size`` are kept) and the initial inverse-Hessian scale
    becomes :math:`\gamma = y^\top s / y^\top y` (Nocedal & Wright (7.20)); otherwise nothing
    changes. Returns new lists ``(old_dirs, old_stps, ro, H_diag)``; the inputs are not modified.
    """
    ys = y.dot(s)  # y*s
    if ys > 1e-10:
        if len(old_dirs) == history_size:
            # torch pops the oldest entry (an IndexError for history_size == 0, as in torch)
            old_dirs, old_stps, ro = list(old_dirs), list(old_stps), list(ro)
            old_dirs.pop(0)
            old_stps.pop(0)
            ro.pop(0)
        old_dirs = [*old_dirs, y]
        old_stps = [*old_stps, s]
        ro = [*ro, 1.0 / ys]
        H_diag = ys / y.dot(y)  # (y*y)
    return old_dirs, old_stps, ro, H_diag


def lbfgs_direction(
    flat_grad: Tensor,
    old_dirs: list[Tensor],
    old_stps: list[Tensor],
    ro: list[Tensor],
    H_diag: Num,
    al: list[Any],
) -> tuple[Tensor, list[Any]]:
    r"""The L-BFGS direction :math:`d = -H g` by the two-loop recursion.

    With the history :math:`(s_j, y_j, \rho_j)`, oldest first, and :math:`H_0 = \gamma I`
    (``H_diag``):

    .. math::
        q \leftarrow -g;\quad \alpha_j = \rho_j s_j^\top q,\ q \leftarrow q - \alpha_j y_j
        \ (j = m-1, \dots, 0);\quad r \leftarrow \gamma q;\quad
        \beta_j = \rho_j y_j^\top r,\ r \leftarrow r + (\alpha_j - \beta_j) s_j
        \ (j = 0, \dots, m-1).

    Nocedal & Wright, Algorithm 7.4. Returns ``(d, al)``: a new list ``al`` with
    :math:`\alpha_j` in its first ``m`` entries (the rest copied from the given ``al``, torch's
    buffer of ``history_size`` entries).
    """
    al = list(al)
    num_old = len(old_dirs)
    q = flat_grad.neg()
    for i in range(num_old - 1, -1, -1):
        al[i] = old_stps[i].dot(q) * ro[i]
        q.add_(old_dirs[i], alpha=-al[i])
    r = torch.mul(q, H_diag)
    for i in range(num_old):
        be_i = old_dirs[i].dot(r) * ro[i]
        r.add_(old_stps[i], alpha=al[i] - be_i)
    return r, al


# --------------------------------------------------------------------------------------------
# Line search
# --------------------------------------------------------------------------------------------


def cubic_interpolate(
    x1: Num, f1: Num, g1: Num, x2: Num, f2: Num, g2: Num, bounds: tuple[Num, Num] | None = None
) -> Num:
    r"""The minimizer of the cubic through :math:`(x_1, f_1)`, :math:`(x_2, f_2)` with slopes
    :math:`g_1, g_2`, clipped to ``bounds`` (default: between :math:`x_1` and :math:`x_2`).

    .. math::
        d_1 = g_1 + g_2 - 3\frac{f_1 - f_2}{x_1 - x_2},\quad d_2 = \sqrt{d_1^2 - g_1 g_2},\quad
        x^\star = x_2 - (x_2 - x_1)\frac{g_2 + d_2 - d_1}{g_2 - g_1 + 2 d_2}

    (for :math:`x_1 \le x_2`; symmetric otherwise). If :math:`d_1^2 < g_1 g_2` (no real
    minimizer) the midpoint of the bounds. Nocedal & Wright (3.59); torch's
    ``_cubic_interpolate`` (from torch7's ``polyinterp.lua``).
    """
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    if d2_square >= 0:
        d2 = d2_square.sqrt() if isinstance(d2_square, Tensor) else d2_square**0.5
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, xmin_bound), xmax_bound)  # type: ignore[type-var]
    return (xmin_bound + xmax_bound) / 2.0


def strong_wolfe(
    obj_func: Callable[[Num, Tensor], tuple[float, Tensor]],
    t: Num,
    d: Tensor,
    f: float,
    g: Tensor,
    gtd: Tensor,
    c1: float = 1e-4,
    c2: float = 0.9,
    tolerance_change: float = 1e-9,
    max_ls: int = 25,
) -> tuple[float, Tensor, Num, int]:
    r"""torch's line search for the strong Wolfe conditions along ``d``, from step ``t``.

    Finds a step :math:`t` with :math:`f(x + t d) \le f(x) + c_1 t\, g^\top d` (sufficient
    decrease) and :math:`|g(x + t d)^\top d| \le -c_2\, g^\top d` (curvature). Bracketing phase:
    while neither holds nor the slope turns non-negative, the trial step is extrapolated by
    :func:`cubic_interpolate` within :math:`[t + 0.01 (t - t_{prev}), 10 t]`. Zoom phase: the
    bracket is shrunk by cubic interpolation (moved :math:`0.1` of the bracket away from its
    ends when progress is insufficient) until the conditions hold, the bracket is shorter than
    ``tolerance_change`` (times :math:`\|d\|_\infty`) or ``max_ls`` evaluations were made.

    Args:
      obj_func: ``(t, d) -> (f, flat_grad)`` at :math:`x + t d` (``f`` a float).
      t: initial step. d: direction (flat). f, g, gtd: value, gradient and slope
        :math:`g^\top d` at :math:`t = 0`.
      c1, c2: the Wolfe constants, defaults ``1e-4`` and ``0.9``.
      tolerance_change: minimal bracket length, default ``1e-9``.
      max_ls: maximal number of evaluations, default ``25``.

    Returns:
      ``(f_new, g_new, t, evaluations)`` at the step found (the best point of the bracket).

    Nocedal & Wright, Algorithms 3.5 and 3.6; torch's ``_strong_wolfe`` (from torch7's
    ``lswolfe.lua``), the same operations in the same order.
    """
    d_norm = d.abs().max()
    g = g.clone(memory_format=torch.contiguous_format)
    # evaluate objective and gradient using initial step
    f_new, g_new = obj_func(t, d)
    ls_func_evals = 1
    gtd_new = g_new.dot(d)

    # bracket an interval containing a point satisfying the Wolfe criteria
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    bracket: list[Num] = []
    bracket_f: list[Num] = []
    bracket_g: list[Tensor] = []
    bracket_gtd: list[Num] = []
    while ls_iter < max_ls:
        # check conditions
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket = [t_prev, t]
            bracket_f = [f_prev, f_new]
            bracket_g = [g_prev, g_new.clone(memory_format=torch.contiguous_format)]
            bracket_gtd = [gtd_prev, gtd_new]
            break

        if abs(gtd_new) <= -c2 * gtd:
            bracket = [t]
            bracket_f = [f_new]
            bracket_g = [g_new]
            done = True
            break

        if gtd_new >= 0:
            bracket = [t_prev, t]
            bracket_f = [f_prev, f_new]
            bracket_g = [g_prev, g_new.clone(memory_format=torch.contiguous_format)]
            bracket_gtd = [gtd_prev, gtd_new]
            break

        # interpolate
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = cubic_interpolate(
            t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step)
        )

        # next step
        t_prev = tmp
        f_prev = f_new
        g_prev = g_new.clone(memory_format=torch.contiguous_format)
        gtd_prev = gtd_new
        f_new, g_new = obj_func(t, d)
        ls_func_evals += 1
        gtd_new = g_new.dot(d)
        ls_iter += 1

    # reached max number of iterations?
    if ls_iter == max_ls:
        bracket = [0, t]
        bracket_f = [f, f_new]
        bracket_g = [g, g_new]

    # zoom phase: we now have a point satisfying the criteria, or a bracket around it; the
    # bracket is refined until a point satisfying the criteria is found
    insuf_progress = False
    # find high and low points in bracket
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        # line-search bracket is so small
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break

        # compute new trial value
        t = cubic_interpolate(
            bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1]
        )

        # test that we are making sufficient progress: if `t` is so close to a boundary that
        # we made insufficient progress in the last step too, or `t` is at a boundary, `t` is
        # moved `0.1 * len(bracket)` away from the nearest boundary point
        eps = 0.1 * (max(bracket) - min(bracket))  # type: ignore[type-var]
        if min(max(bracket) - t, t - min(bracket)) < eps:  # type: ignore[type-var]
            # interpolation close to boundary
            if insuf_progress or t >= max(bracket) or t <= min(bracket):  # type: ignore[type-var]
                # evaluate at 0.1 away from boundary
                if abs(t - max(bracket)) < abs(t - min(bracket)):  # type: ignore[type-var]
                    t = max(bracket) - eps  # type: ignore[type-var]
                else:
                    t = min(bracket) + eps  # type: ignore[type-var]
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False

        # Evaluate new point
        f_new, g_new = obj_func(t, d)
        ls_func_evals += 1
        gtd_new = g_new.dot(d)
        ls_iter += 1

        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            # Armijo condition not satisfied or not lower than lowest point
            bracket[high_pos] = t
            bracket_f[high_pos] = f_new
            bracket_g[high_pos] = g_new.clone(memory_format=torch.contiguous_format)
            bracket_gtd[high_pos] = gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                # Wolfe conditions satisfied
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                # old high becomes new low
                bracket[high_pos] = bracket[low_pos]
                bracket_f[high_pos] = bracket_f[low_pos]
                bracket_g[high_pos] = bracket_g[low_pos]
                bracket_gtd[high_pos] = bracket_gtd[low_pos]

            # new point becomes new low
            bracket[low_pos] = t
            bracket_f[low_pos] = f_new
            bracket_g[low_pos] = g_new.clone(memory_format=torch.contiguous_format)
            bracket_gtd[low_pos] = gtd_new

    # return stuff
    t = bracket[low_pos]
    f_new = bracket_f[low_pos]
    g_new = bracket_g[low_pos]
    return f_new, g_new, t, ls_func_evals  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# One step
# --------------------------------------------------------------------------------------------


def torch_lbfgs_init() -> TorchLBFGSState:
    """The state before the first step: no evaluation, no iteration, no history."""
    return TorchLBFGSState()


def _check_lr(lr: Num) -> None:
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    if not lr >= 0.0:
        raise ValueError(f"Invalid learning rate: {lr}")


def _along(fun: Objective, base: list[Tensor]) -> Callable[[Num, Tensor], tuple[float, Tensor]]:
    """``(t, d) -> (f, flat_grad)`` at ``base + t d`` (torch's ``_directional_evaluate``)."""

    def obj_func(t: Num, d: Tensor) -> tuple[float, Tensor]:
        value, grad = fun(add_direction(base, t, d))
        return float(value), grad

    return obj_func


@torch.no_grad()
def torch_lbfgs_step(
    fun: Objective,
    params: Sequence[Tensor],
    state: TorchLBFGSState,
    *,
    lr: Num = 1,
    max_iter: int = 20,
    max_eval: int | None = None,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
    history_size: int = 100,
    line_search_fn: str | None = None,
) -> tuple[Any, list[Tensor], TorchLBFGSState]:
    r"""One step of ``torch.optim.LBFGS``: up to ``max_iter`` L-BFGS iterations from ``params``.

    Each iteration: the direction :math:`d = -H_k g_k` (:func:`lbfgs_direction`; steepest
    descent at the very first iteration, after adding the last step's curvature pair with
    :func:`lbfgs_update_history`), the step length :math:`t` (``lr``; at the very first
    iteration :math:`\min(1, 1/\|g\|_1)\,\mathrm{lr}`; refined by :func:`strong_wolfe` if
    ``line_search_fn="strong_wolfe"``), then :math:`x \leftarrow x + t d`. Stops (torch's
    tests) when :math:`\|g\|_\infty \le` ``tolerance_grad`` (also before the first iteration),
    when :math:`g^\top d > -` ``tolerance_change``, after ``max_iter`` iterations or ``max_eval``
    evaluations, or when :math:`\|t d\|_\infty` or the change of the loss is below
    ``tolerance_change``. Without line search the objective is not evaluated after the last
    iteration. Nocedal & Wright, Algorithm 7.5.

    Args:
      fun: ``fun(params) -> (loss, flat_grad)`` at a point given as a list of tensors shaped
        like ``params`` (``loss`` a number or 0-d tensor, ``flat_grad`` as made by
        :func:`flatten_grads`). Called under ``torch.enable_grad()``, never with ``params``
        itself (the step works on a copy), so it may write the point into a model.
      params: the starting point (a list of tensors; not modified).
      state: from :func:`torch_lbfgs_init` or the previous step (not modified).
      lr: learning rate, default ``1`` (``>= 0``; a float or a 1-element tensor).
      max_iter: maximal number of iterations per step, default ``20``.
      max_eval: maximal number of evaluations per step, default ``max_iter * 5 // 4``.
      tolerance_grad: tolerance on :math:`\|g\|_\infty`, default ``1e-7``.
      tolerance_change: tolerance on changes of the loss and the parameters, default ``1e-9``.
      history_size: number of curvature pairs kept, default ``100``.
      line_search_fn: ``None`` or ``"strong_wolfe"`` (another value raises torch's
        ``RuntimeError`` when the first line search is due).

    Returns:
      ``(loss, params, state)``: the loss at the *starting* point as ``fun`` returned it
      (torch's ``step`` returns it), the new point (``params`` itself if it did not move) and
      the new state.

    Raises:
      ValueError: ``lr`` negative or a tensor of more than one element (torch's messages).

    Example::

        >>> w = torch.tensor([-1.5, 2.0], dtype=torch.float64)
        >>> def fun(x):
        ...     v = x[0].detach().requires_grad_()
        ...     loss = (1 - v[0]) ** 2 + 100 * (v[1] - v[0] ** 2) ** 2
        ...     loss.backward()
        ...     return loss.detach(), flatten_grads([v.grad], [v])
        >>> state = torch_lbfgs_init()
        >>> for _ in range(5):
        ...     loss, (w,), state = torch_lbfgs_step(fun, [w], state, line_search_fn="strong_wolfe")
    """
    _check_lr(lr)
    if max_eval is None:
        max_eval = max_iter * 5 // 4
    fun = torch.enable_grad()(fun)
    start = list(params)
    x = [p.clone(memory_format=torch.contiguous_format) for p in start]
    moved = False
    func_evals, total_iter = state.func_evals, state.n_iter

    # evaluate initial f(x) and df/dx
    orig_loss, flat_grad = fun(x)
    loss = float(orig_loss)
    current_evals = 1
    func_evals += 1
    opt_cond = flat_grad.abs().max() <= tolerance_grad
    # optimal condition
    if opt_cond:
        return orig_loss, start, state._replace(func_evals=func_evals)

    d, t = state.d, state.t
    old_dirs, old_stps, ro, H_diag = state.old_dirs, state.old_stps, state.ro, state.H_diag
    prev_flat_grad, prev_loss, al = state.prev_flat_grad, state.prev_loss, state.al

    n_iter = 0
    while n_iter < max_iter:
        n_iter += 1
        total_iter += 1

        # direction
        if total_iter == 1:
            d = flat_grad.neg()
            old_dirs, old_stps, ro, H_diag = [], [], [], 1
        else:
            assert d is not None and t is not None and prev_flat_grad is not None
            assert old_dirs is not None and old_stps is not None and ro is not None
            assert H_diag is not None
            y = flat_grad.sub(prev_flat_grad)
            s = d.mul(t)
            old_dirs, old_stps, ro, H_diag = lbfgs_update_history(
                old_dirs, old_stps, ro, H_diag, y, s, history_size
            )
            if al is None:
                al = [None] * history_size
            d, al = lbfgs_direction(flat_grad, old_dirs, old_stps, ro, H_diag, al)
        prev_flat_grad = flat_grad.clone(memory_format=torch.contiguous_format)
        prev_loss = loss

        # step length: initial guess
        if total_iter == 1:
            t = min(1.0, 1.0 / flat_grad.abs().sum()) * lr  # type: ignore[operator]
        else:
            t = lr

        # directional derivative below tolerance
        gtd = flat_grad.dot(d)
        if gtd > -tolerance_change:
            break

        ls_func_evals = 0
        if line_search_fn is not None:
            if line_search_fn != "strong_wolfe":
                raise RuntimeError("only 'strong_wolfe' is supported")
            loss, flat_grad, t, ls_func_evals = strong_wolfe(
                _along(fun, x), t, d, loss, flat_grad, gtd, max_ls=max_eval - current_evals
            )
            x, moved = add_direction(x, t, d), True
            opt_cond = flat_grad.abs().max() <= tolerance_grad
        else:
            # fixed step; the objective is not re-evaluated after the last iteration
            x, moved = add_direction(x, t, d), True
            if n_iter != max_iter:
                value, flat_grad = fun(x)
                loss = float(value)
                opt_cond = flat_grad.abs().max() <= tolerance_grad
                ls_func_evals = 1

        current_evals += ls_func_evals
        func_evals += ls_func_evals

        # termination tests
        if n_iter == max_iter:
            break
        if current_evals >= max_eval:
            break
        if opt_cond:  # optimality
            break
        if d.mul(t).abs().max() <= tolerance_change:  # lack of progress
            break
        if abs(loss - prev_loss) < tolerance_change:
            break

    new_state = TorchLBFGSState(
        func_evals=func_evals,
        n_iter=total_iter,
        d=d,
        t=t,
        old_dirs=old_dirs,
        old_stps=old_stps,
        ro=ro,
        H_diag=H_diag,
        prev_flat_grad=prev_flat_grad,
        prev_loss=prev_loss,
        al=al,
    )
    return orig_loss, (x if moved else start), new_state
