"""Linear algebra helpers: power_iteration, matrix_inverse_pth_root, global_norm, nnls.

The iterative solvers here stop on a data-dependent criterion (``jax.lax.while_loop`` in optax).
Eagerly they run as Python loops that stop as soon as the criterion is met; under
``torch.compile`` and ``torch.func`` transforms they run their maximal number of iterations,
freezing the iterate once the criterion is met (as JAX's ``while_loop`` does under ``vmap``), so
the results are the same.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from optax_torch import tree

__all__ = ["global_norm", "matrix_inverse_pth_root", "nnls", "power_iteration"]


def _tracing() -> bool:
    """Whether tensor values cannot be read: under ``torch.compile`` or a ``torch.func``
    transform (``vmap`` batches values; ``grad`` is included for simplicity)."""
    if torch.compiler.is_compiling():
        return True
    return torch._C._functorch.peek_interpreter_stack() is not None  # pyright: ignore[reportAttributeAccessIssue]


def _while_loop(
    cond_fn: Callable[[Any], torch.Tensor],
    body_fn: Callable[[Any], Any],
    state: Any,
    max_iters: int,
) -> Any:
    """``while cond_fn(state): state = body_fn(state)``, at most ``max_iters`` times.

    Eagerly a Python loop (reads the condition, one device synchronisation per iteration). Under
    ``torch.compile`` it is unrolled ``max_iters`` times, each iteration kept only where the
    condition still holds, so a compiled run returns what the eager run returns (at the price of
    the extra masked iterations); the same under ``torch.func.vmap`` (the loop then runs until
    every batch member is done). ``state`` is a tree of tensors; ``max_iters`` must bound the
    number of iterations ``cond_fn`` allows.
    """
    if not _tracing():
        for _ in range(max_iters):
            if not bool(cond_fn(state)):
                break
            state = body_fn(state)
        return state
    for _ in range(max_iters):
        keep_going = cond_fn(state)
        state = tree.where(keep_going, body_fn(state), state)
    return state


def global_norm(updates: Any) -> torch.Tensor:
    """The global L2 norm of a tree of tensors.

    .. warning:: Deprecated (as in optax) in favour of :func:`optax_torch.tree.norm`.

    Example::

        >>> otx.global_norm({"a": torch.ones(4)})  # tensor(2.)
    """
    warnings.warn(
        "optax_torch.global_norm is deprecated in favor of optax_torch.tree.norm",
        DeprecationWarning,
        stacklevel=2,
    )
    return tree.norm(updates)


def _normalize_tree(x: Any) -> Any:
    return tree.scale(1.0 / tree.norm(x), x)


def power_iteration(
    matrix: torch.Tensor | Callable[[Any], Any],
    *,
    v0: Any = None,
    num_iters: int = 100,
    error_tolerance: float = 1e-6,
    precision: Any = None,
    key: int | None = None,
) -> tuple[torch.Tensor, Any]:
    r"""Dominant eigenvalue and eigenvector of a diagonalizable matrix by power iteration.

    .. math::
        v_{k+1} = \frac{A v_k}{\|A v_k\|},\qquad \lambda_k = \langle v_k, A v_k\rangle,

    stopping when :math:`\|A v_k - \lambda_k v_k\| / |\lambda_k|` falls below
    ``error_tolerance`` or after ``num_iters`` iterations.

    Args:
      matrix: a square matrix, or a callable computing a matrix-vector product on a tree.
      v0: initial vector (a tree shaped like the callable's input). Required when ``matrix`` is
        a callable; otherwise drawn uniformly in ``[-1, 1]`` by default.
      num_iters: maximal number of iterations (a Python int).
      error_tolerance: relative error on the eigenvalue at which to stop.
      precision: accepted for optax compatibility and ignored (torch's matmul precision is set
        globally, e.g. ``torch.backends.cuda.matmul.allow_tf32``).
      key: seed (an int) of the torch generator drawing ``v0`` when it is not given; ``None``
        means 0. optax takes a JAX key here, so the drawn ``v0`` differs from optax's.

    Returns:
      ``(eigenvalue, eigenvector)``, the eigenvector normalised.

    Reference: https://en.wikipedia.org/wiki/Power_iteration

    Example::

        >>> a = torch.diag(torch.tensor([3.0, 1.0]))
        >>> eig, vec = otx.power_iteration(a)  # eig ~ 3.0
    """
    del precision
    if callable(matrix):
        mvp = matrix
        if v0 is None:
            raise ValueError("v0 must be provided when `matrix` is a callable.")
    else:
        mat = matrix
        mvp = lambda v: mat @ v  # noqa: E731
        if v0 is None:
            gen = torch.Generator(device=mat.device).manual_seed(0 if key is None else key)
            v0 = torch.rand(mat.shape[-1:], generator=gen, dtype=mat.dtype, device=mat.device)
            v0 = 2.0 * v0 - 1.0
    v0 = _normalize_tree(v0)
    z0 = mvp(v0)
    ref = tree.leaves(z0)[0]

    def cond_fn(s):
        eigvec, z, eig, it = s
        residual_norm = tree.norm(tree.sub(z, tree.scale(eig, eigvec)))
        converged = torch.abs(residual_norm / eig) < error_tolerance
        return ~converged & (it < num_iters)

    def body_fn(s):
        _, z, _, it = s
        eigvec = _normalize_tree(z)
        z = mvp(eigvec)
        eig = tree.vdot(eigvec, z)
        return eigvec, z, eig, it + 1

    init = (
        v0,
        z0,
        torch.zeros((), dtype=ref.dtype, device=ref.device),
        torch.zeros((), dtype=torch.int32),
    )
    _, z, eig, _ = _while_loop(cond_fn, body_fn, init, int(num_iters))
    return eig, _normalize_tree(z)


def _mat_power(mat: torch.Tensor, p: int) -> torch.Tensor:
    """``mat ** p`` for a positive int ``p``, by repeated squaring."""
    result = None
    base = mat
    while p:
        if p & 1:
            result = base if result is None else result @ base
        p >>= 1
        if p:
            base = base @ base
    assert result is not None
    return result


def matrix_inverse_pth_root(
    matrix: torch.Tensor,
    p: int,
    num_iters: int = 100,
    ridge_epsilon: float = 1e-6,
    error_tolerance: float = 1e-6,
    precision: Any = None,
) -> tuple[torch.Tensor, torch.Tensor | float]:
    r"""``matrix ** (-1/p)`` for a symmetric PSD matrix, by coupled Newton iterations.

    With :math:`\alpha = -1/p` and the damped matrix :math:`A = M + \epsilon\lambda_{max} I`
    scaled by :math:`z = (1+p)/(2\|A\|_F)`:

    .. math::
        M_0 = zA,\quad H_0 = z^{1/p} I,\quad
        M_{i+1} = \big((1-\alpha)I + \alpha M_i\big)^p M_i,\quad
        H_{i+1} = H_i\big((1-\alpha)I + \alpha M_i\big),

    until :math:`\max|M_i - I|` is below ``error_tolerance`` (or stops decreasing), then
    :math:`H \approx A^{-1/p}`.

    Args:
      matrix: the symmetric PSD matrix.
      p: the exponent, a positive integer.
      num_iters: maximal number of iterations.
      ridge_epsilon: ridge (relative to the largest eigenvalue) added to make the matrix
        positive definite.
      error_tolerance: error at which to stop early.
      precision: accepted for optax compatibility and ignored.

    Returns:
      ``(matrix ** (-1/p), error)`` where ``error`` is :math:`\max|M - I|` at the end.

    optax computes ``alpha`` in float32; so do we (for parity), which matters only for a ``p``
    that is not a power of 2 with a float64 matrix. optax's inner power supports only ``p`` in
    {1, 2, 4, 8} (it computes the wrong power otherwise, e.g. the 4th for ``p=3``); ours computes
    the ``p``-th power for any positive integer ``p``.

    Reference: Higham, Functions of Matrices, 2008, p. 184, eq. 7.18,
    https://epubs.siam.org/doi/book/10.1137/1.9780898717778

    Example::

        >>> a = torch.diag(torch.tensor([4.0, 16.0]))
        >>> h, err = otx.matrix_inverse_pth_root(a, 2)  # ~ diag(1/2, 1/4)
    """
    del precision
    if isinstance(p, bool) or not isinstance(p, int) or p < 1:
        raise ValueError(f"p must be an integer >= 1, got p={p!r}")
    n = matrix.shape[0]
    alpha = float(torch.tensor(-1.0 / p, dtype=torch.float32))
    max_ev, _ = power_iteration(matrix, num_iters=100, error_tolerance=1e-6)
    ridge = ridge_epsilon * torch.clamp(max_ev, min=1e-16)
    if n == 1:
        return (matrix + ridge) ** alpha, 0
    identity = torch.eye(n, dtype=matrix.dtype, device=matrix.device)
    damped = matrix + ridge * identity
    z = (1 + p) / (2 * torch.linalg.matrix_norm(damped))
    mat_m0 = damped * z
    error0 = torch.max(torch.abs(mat_m0 - identity))
    mat_h0 = identity * torch.pow(z, 1.0 / p)

    def cond_fn(s):
        i, _, _, _, error, run_step = s
        return (i < num_iters) & (error > error_tolerance) & run_step

    def body_fn(s):
        i, mat_m, mat_h, _, error, _ = s
        mat_m_i = (1 - alpha) * identity + alpha * mat_m
        new_mat_m = _mat_power(mat_m_i, p) @ mat_m
        new_mat_h = mat_h @ mat_m_i
        new_error = torch.max(torch.abs(new_mat_m - identity))
        # The error may grow for an iteration before converging; 1.2 bounds that growth.
        return i + 1, new_mat_m, new_mat_h, mat_h, new_error, new_error < error * 1.2

    init = (torch.zeros((), dtype=torch.int32), mat_m0, mat_h0, mat_h0, error0, torch.tensor(True))
    _, mat_m, mat_h, old_mat_h, _, converged = _while_loop(cond_fn, body_fn, init, int(num_iters))
    error = torch.max(torch.abs(mat_m - identity))
    return torch.where(converged, mat_h, old_mat_h).to(matrix.dtype), error


def nnls(
    A: torch.Tensor,
    b: torch.Tensor,
    iters: int,
    unroll: int | bool = 1,
    L: torch.Tensor | float | None = None,
) -> torch.Tensor:
    r"""Non-negative least squares: :math:`\min_{x \ge 0} \|Ax - b\|_2`.

    Fast projected gradient (FPG) with :math:`Q = A^\top A`, :math:`q = A^\top b`:

    .. math::
        c_{k+1} = \tfrac{1 + \sqrt{1 + 4c_k^2}}{2},\quad
        x_{k+1} = \max\big(p_k - (Q p_k - q)/L,\ 0\big),\quad
        p_{k+1} = x_{k+1} + \tfrac{c_k - 1}{c_{k+1}}(x_{k+1} - x_k).

    Args:
      A: matrix of shape ``(M, N)``.
      b: vector ``(M,)`` or matrix ``(M, K)``.
      iters: number of iterations.
      unroll: accepted for optax compatibility and ignored (the loop is a Python loop).
      L: an upper bound on the spectral radius of :math:`A^\top A` (default:
        :math:`\min(\|Q\|_F, \|Q\|_1)`).

    Returns:
      The solution, of shape ``(N,)`` or ``(N, K)``.

    Reference: Polyak, Projected gradient method for non-negative least square, 2015,
    http://www.ams.org/books/conm/636/

    Example::

        >>> x = otx.nnls(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([5.0, 6.0]), 1000)
    """
    del unroll
    assert A.ndim == 2
    assert b.ndim in (1, 2)
    assert b.shape[0] == A.shape[0]
    q_mat = A.mT @ A
    q = A.mT @ b
    if L is None:
        fro = torch.linalg.matrix_norm(q_mat, ord="fro")
        one = torch.linalg.matrix_norm(q_mat, ord=1) if q_mat.numel() else torch.zeros_like(fro)
        L = torch.minimum(fro, one)
    lip = torch.as_tensor(L, dtype=q_mat.dtype, device=q_mat.device)
    lip = torch.where(lip == 0, torch.ones_like(lip), lip)
    x = torch.zeros(A.shape[-1:] + b.shape[1:], dtype=b.dtype, device=b.device)
    p = x
    c = 0.0
    for _ in range(iters):
        cn = (1 + (1 + 4 * c**2) ** 0.5) / 2
        s = (c - 1) / cn
        xn = (p - (q_mat @ p - q) / lip).clamp(min=0)
        p = xn + s * (xn - x)
        x, c = xn, cn
    return x
