"""Quasi-Newton optimizers: L-BFGS."""

from __future__ import annotations

import torch

from optax_torch import _validate
from optax_torch import transforms as T
from optax_torch.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    ScalarOrSchedule,
    identity,
)
from optax_torch.combine import chain

__all__ = ["lbfgs"]

# optax's default line search (a GradientTransformation is an immutable value: one instance).
_DEFAULT_LINESEARCH = T.scale_by_zoom_linesearch(
    max_linesearch_steps=20, initial_guess_strategy="one"
)


def lbfgs(
    learning_rate: ScalarOrSchedule | None = None,
    memory_size: int = 10,
    scale_init_precond: bool = True,
    linesearch: GradientTransformation | None = _DEFAULT_LINESEARCH,
) -> GradientTransformationExtraArgs:
    r"""L-BFGS: ``chain(scale_by_lbfgs(...), scale(-1) or scale_by_learning_rate(lr), linesearch)``.

    The direction :math:`-P_k g_k` of :func:`optax_torch.scale_by_lbfgs` (the limited-memory
    BFGS approximation :math:`P_k` of the inverse Hessian, see there for the math) is scaled by
    a step size :math:`\eta_k` found by a line search (by default the zoom line search ensuring
    the strong Wolfe conditions, starting from 1), optionally times a ``learning_rate``:
    :math:`w_{k+1} = w_k - \eta_k P_k g_k`.

    Args:
      learning_rate: optional global scale (a number or schedule); ``None``: just a sign flip,
        the step size being left to the line search.
      memory_size: number of past differences kept to approximate the inverse Hessian.
      scale_init_precond: scale the initial preconditioner (see ``scale_by_lbfgs``).
      linesearch: a line search such as :func:`optax_torch.scale_by_zoom_linesearch` (the
        default, ``max_linesearch_steps=20, initial_guess_strategy="one"``) or
        :func:`optax_torch.scale_by_backtracking_linesearch`; ``None``: no line search.

    ``update(grad, state, params, value=value, grad=grad, value_fn=fn)`` (the line search needs
    the objective); in a deterministic setting reuse the line search's last evaluation with
    :func:`optax_torch.value_and_grad_from_state`. Memory intensive (``2 * memory_size + 2``
    copies of the parameters): best for small and medium problems. The line search runs as an
    eager loop (see :mod:`optax_torch.transforms.linesearch` for ``torch.compile``).

    References:
      Nocedal & Wright, Numerical Optimization, 1999, Algorithms 7.4, 7.5.
      Liu & Nocedal, On the limited memory BFGS method for large scale optimization, 1989.

    Example::

        >>> fn = lambda x: (x**2).sum()
        >>> solver = otx.lbfgs()
        >>> params = torch.tensor([1.0, 2.0, 3.0])
        >>> state = solver.init(params)
        >>> value_and_grad = otx.value_and_grad_from_state(fn)
        >>> for _ in range(2):
        ...     value, grad = value_and_grad(params, state=state)
        ...     updates, state = solver.update(grad, state, params, value=value, grad=grad,
        ...                                    value_fn=fn)
        ...     params = otx.apply_updates(params, updates)
    """
    if not isinstance(memory_size, torch.Tensor):  # (0-d tensors: from inject_hyperparams)
        _validate.check_positive_int("memory_size", memory_size)
    base_scaling = (
        T.scale(-1.0) if learning_rate is None else T.scale_by_learning_rate(learning_rate)
    )
    return chain(
        T.scale_by_lbfgs(memory_size=memory_size, scale_init_precond=scale_init_precond),
        base_scaling,
        identity() if linesearch is None else linesearch,
    )
