"""L-BFGS's scaling by the inverse-Hessian approximation (two-loop recursion)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from optax_torch import _validate, numerics, tree
from optax_torch.base import GradientTransformation, Params, Updates

__all__ = ["ScaleByLBFGSState", "scale_by_lbfgs"]


class ScaleByLBFGSState(NamedTuple):
    """State of :func:`scale_by_lbfgs`.

    Attributes:
      count: iteration of the algorithm (0-d int32).
      params: the parameters of the previous step.
      updates: the updates (gradients) of the previous step.
      diff_params_memory: the last ``memory_size`` differences of parameters, stacked along a
        new leading dimension of each leaf (a ring buffer indexed by ``count % memory_size``).
      diff_updates_memory: the same for the differences of updates.
      weights_memory: the ``memory_size`` weights :math:`\\rho_j` of the rank-one terms.
    """

    count: torch.Tensor
    params: Params
    updates: Params
    diff_params_memory: Updates
    diff_updates_memory: Updates
    weights_memory: torch.Tensor


def _real(x: torch.Tensor) -> torch.Tensor:
    return x.real if x.is_complex() else x


def _precondition_by_lbfgs(
    updates: Updates,
    diff_params_memory: Updates,
    diff_updates_memory: Updates,
    weights_memory: torch.Tensor,
    identity_scale: torch.Tensor | float,
    memory_idx: torch.Tensor,
) -> Updates:
    """``P_k u``: the two-loop recursion over the memory, oldest entry first in the second loop.

    The ring buffers are first put in chronological order (one gather per leaf: a traced
    ``memory_idx`` cannot index statically), then walked with static indices.

    Algorithm 7.4 of Nocedal & Wright, Numerical Optimization, 1999.
    """
    memory_size = weights_memory.shape[0]
    order = (memory_idx.to(torch.int64) + torch.arange(memory_size)) % memory_size

    def chronological(memory: Updates) -> Updates:
        return tree.map(lambda m: m.index_select(0, order.to(m.device)), memory)

    dws = chronological(diff_params_memory)
    dus = chronological(diff_updates_memory)
    rhos = weights_memory.index_select(0, order.to(weights_memory.device))

    def entry(memory: Updates, i: int) -> Updates:
        return tree.map(lambda m: m[i], memory)

    vec = updates
    alphas: list[torch.Tensor] = [rhos[0]] * memory_size
    for i in reversed(range(memory_size)):
        alphas[i] = rhos[i] * _real(tree.vdot(entry(dws, i), vec))
        vec = tree.cast_like(tree.add_scale(vec, -alphas[i], entry(dus, i)), updates)
    vec = tree.scale(identity_scale, vec)
    for i in range(memory_size):
        beta = rhos[i] * _real(tree.vdot(entry(dus, i), vec))
        vec = tree.cast_like(tree.add_scale(vec, alphas[i] - beta, entry(dws, i)), updates)
    return vec


def scale_by_lbfgs(
    memory_size: int = 10, scale_init_precond: bool = True
) -> GradientTransformation:
    r"""Scales updates by L-BFGS's approximation of the inverse Hessian.

    With :math:`\delta w_j = w_{j+1} - w_j` and :math:`\delta u_j = u_{j+1} - u_j` the last
    :math:`m` (``memory_size``) differences of parameters and updates (gradients), the
    inverse-Hessian approximation :math:`P_k = P_{k,k}` is

    .. math::
        P_{k,j+1} = V_j^\top P_{k,j} V_j + \rho_j\,\delta w_j \delta w_j^\top,\quad
        P_{k,k-m} = \gamma_k I,\quad V_j = I - \rho_j\,\delta u_j \delta w_j^\top,\quad
        \rho_j = 1/\langle\delta u_j, \delta w_j\rangle,

    with :math:`\gamma_k = \langle\delta w_{k-1}, \delta u_{k-1}\rangle /
    \|\delta u_{k-1}\|^2` if ``scale_init_precond`` (1 otherwise). The output is
    :math:`P_k u_k`, computed by the two-loop recursion. At the first step :math:`\gamma_0 =
    \min(1, 1/\|u_0\|)` (a first step inside the unit ball, optax's heuristic). The memory is
    updated *before* preconditioning, so a line search chained after this transform sees the
    accepted step's parameters at the next call.

    Args:
      memory_size: number of past differences kept (an int >= 1).
      scale_init_precond: use :math:`\gamma_k` above as the initial preconditioner scale.

    Needs ``params`` in ``update``. The state holds ``2 * memory_size + 2`` copies of the
    parameters. ``weights_memory`` has the parameters' (real) dtype (optax: JAX's default float).

    References:
      Nocedal & Wright, Numerical Optimization, 1999, Algorithms 7.4, 7.5.
      Liu & Nocedal, On the limited memory BFGS method for large scale optimization, 1989,
      https://users.iems.northwestern.edu/~nocedal/PDFfiles/limited-memory.pdf

    Example::

        >>> tx = otx.chain(otx.scale_by_lbfgs(), otx.scale(-1.0))  # usually with a line search
    """
    if isinstance(memory_size, torch.Tensor):  # a 0-d tensor from inject_hyperparams
        memory_size = int(memory_size)
    _validate.check_positive_int("memory_size", memory_size)

    def init_fn(params):
        leaves = tree.leaves(params)
        dtype = _real(torch.empty((), dtype=leaves[0].dtype)).dtype if leaves else None
        device = leaves[0].device if leaves else None
        stacked = tree.map(
            lambda x: torch.zeros((memory_size, *x.shape), dtype=x.dtype, device=x.device), params
        )
        return ScaleByLBFGSState(
            count=numerics.zero_count(),
            params=tree.zeros_like(params),
            updates=tree.zeros_like(params),
            diff_params_memory=stacked,
            diff_updates_memory=tree.map(lambda x: x.clone(), stacked),
            weights_memory=torch.zeros(memory_size, dtype=dtype, device=device),
        )

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_lbfgs needs params in update")
        memory_idx = state.count % memory_size
        prev_memory_idx = (state.count - 1) % memory_size
        started = state.count > 0

        # A parameter without gradient (``None`` update) gets ``None`` everywhere in the new
        # state, which chain replaces by its old state: it is left out of this step.
        params = tree.map(lambda u, p: p, updates, params)

        # 1. The memory gets the newest differences (zeros at the first step).
        diff_params = tree.sub(params, state.params)
        diff_updates = tree.sub(updates, state.updates)
        curvature = _real(tree.vdot(diff_updates, diff_params))
        # (the double where keeps the backward pass finite where the curvature is 0)
        flat = curvature == 0.0
        weight = torch.where(
            flat, torch.zeros_like(curvature), 1.0 / torch.where(flat, 1.0, curvature)
        )
        diff_params = tree.where(started, diff_params, tree.zeros_like(diff_params))
        diff_updates = tree.where(started, diff_updates, tree.zeros_like(diff_updates))
        weight = torch.where(started, weight, torch.zeros_like(weight))
        slot = prev_memory_idx.reshape(1).to(torch.int64)

        def write(memory: Updates, entry: Updates) -> Updates:
            return tree.map(
                lambda e, m: m.index_copy(0, slot.to(m.device), e.unsqueeze(0)), entry, memory
            )

        diff_params_memory = write(state.diff_params_memory, diff_params)
        diff_updates_memory = write(state.diff_updates_memory, diff_updates)
        weights = state.weights_memory
        weights_memory = weights.index_copy(
            0, slot.to(weights.device), weight.to(weights).reshape(1)
        )

        # 2. The scale of the initial preconditioner.
        if scale_init_precond:
            numerator = curvature  # <du, dw> (masked below at the first step)
            denominator = tree.norm(diff_updates, squared=True)
            positive = denominator > 0.0
            identity_scale = torch.where(
                positive,
                numerator / torch.where(positive, denominator, 1.0),
                torch.ones_like(numerator),
            )
            update_norm = tree.norm(tree.map(torch.Tensor.detach, updates))
            capped_inv_norm = torch.clamp(1.0 / update_norm, max=1.0)
            identity_scale = torch.where(
                started, identity_scale, capped_inv_norm.to(identity_scale)
            )
        else:
            identity_scale = 1.0

        # 3. P_k u_k by the two-loop recursion.
        precond_updates = _precondition_by_lbfgs(
            updates,
            diff_params_memory,
            diff_updates_memory,
            weights_memory,
            identity_scale,
            memory_idx,
        )
        return precond_updates, ScaleByLBFGSState(
            count=numerics.safe_increment(state.count),
            params=params,
            updates=updates,
            diff_params_memory=diff_params_memory,
            diff_updates_memory=diff_updates_memory,
            weights_memory=weights_memory,
        )

    return GradientTransformation(init_fn, update_fn)
