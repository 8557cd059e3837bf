"""Scalings for sparse gradients: SparseAdam (``torch.optim.SparseAdam``'s masked Adam)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from optax_torch import _validate, numerics, tree
from optax_torch.base import GradientTransformation, Updates, donation_safe

__all__ = ["ScaleBySparseAdamState", "scale_by_sparse_adam"]

Num = float | torch.Tensor


class ScaleBySparseAdamState(NamedTuple):
    """State of :func:`scale_by_sparse_adam` (dense moments, like the parameters)."""

    count: torch.Tensor  # 0-d int32
    mu: Updates
    nu: Updates


def _sparse_leaf(
    g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, b1: Num, b2: Num, eps: Num, scale: Num
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(moment increment, second-moment increment, update)`` of one leaf; sparse for a sparse
    gradient (at its coalesced indices), dense for a dense one."""
    if g.is_sparse:
        g = g.coalesce()  # the update is non-linear: the indices must be unique
        indices, values = g._indices(), g._values()
        old_m = m.sparse_mask(g)._values()
        old_v = v.sparse_mask(g)._values()
        size = g.shape

        def make(x: torch.Tensor) -> torch.Tensor:
            return torch.sparse_coo_tensor(
                indices, x, size, is_coalesced=True, check_invariants=False
            )

    else:
        values, old_m, old_v = g, m, v

        def make(x: torch.Tensor) -> torch.Tensor:
            return x

    # torch.optim.SparseAdam's arithmetic: old + (1 - b) * (new - old)
    dm = (values - old_m).mul_(1 - b1)
    dv = (values * values).sub_(old_v).mul_(1 - b2)
    numer = dm + old_m
    denom = (dv + old_v).sqrt_().add_(eps)
    return make(dm), make(dv), make(numer.div_(denom).mul_(scale))


def scale_by_sparse_adam(
    b1: Num = 0.9,
    b2: Num = 0.999,
    eps: Num = 1e-8,
) -> GradientTransformation:
    r"""Rescales sparse gradients by Adam's moments, updated only where the gradient has values
    (``torch.optim.SparseAdam``'s masked Adam).

    For a sparse COO gradient :math:`g_k` (e.g. of ``torch.nn.Embedding(sparse=True)``), with
    :math:`I` its (coalesced) indices, the dense moments change only at :math:`I`:

    .. math::
        m_I \leftarrow m_I + (1-\beta_1)(g_I - m_I),\quad
        v_I \leftarrow v_I + (1-\beta_2)(g_I^2 - v_I),\\
        u_I = \frac{\sqrt{1-\beta_2^k}}{1-\beta_1^k}\,\frac{m_I}{\sqrt{v_I} + \epsilon},
        \qquad u = 0 \text{ elsewhere}

    and the update is a sparse tensor with :math:`g_k`'s indices (a step costs memory traffic
    proportional to the gradient's values, not to the parameter). Every value present in the
    sparse layout counts, zeros included; an empty gradient changes nothing (the step count
    still advances). Unlike :func:`optax_torch.scale_by_adam`, :math:`\epsilon` is added to the
    raw :math:`\sqrt{v}` (it is not bias-corrected). A dense gradient counts as present
    everywhere: the same step on every element (a dense update).

    Eager only (sparse tensors are not supported by ``torch.compile`` / ``torch.func``). Chain
    with a learning rate (``scale_by_learning_rate``, ``scale``): the updates stay sparse
    through ``scale``-like transformations, and ``optax_torch.apply_updates`` (or the
    ``TorchOptimizer`` adapter) adds them to the dense parameters.

    Args:
      b1: decay rate of the first moment (default ``0.9``).
      b2: decay rate of the second moment (default ``0.999``).
      eps: added to the square root of the second moment (default ``1e-8``).

    Reference: Kingma & Ba, 2014, https://arxiv.org/abs/1412.6980;
    ``torch.optim.SparseAdam``.

    Example::

        >>> emb = torch.nn.Embedding(1000, 16, sparse=True)
        >>> tx = otx.chain(otx.scale_by_sparse_adam(), otx.scale_by_learning_rate(1e-3))
        >>> params = [emb.weight]
        >>> state = tx.init(params)
        >>> emb(torch.tensor([3, 7])).sum().backward()
        >>> updates, state = tx.update([emb.weight.grad], state)  # sparse updates
        >>> with torch.no_grad():
        ...     emb.weight.add_(updates[0])
    """
    _validate.check_decay("b1", b1)
    _validate.check_decay("b2", b2)
    _validate.check_non_negative("eps", eps)

    def init_fn(params):
        return ScaleBySparseAdamState(
            count=numerics.zero_count(),
            mu=tree.zeros_like(params),
            nu=tree.zeros_like(params),
        )

    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        count_inc = numerics.safe_increment(state.count)
        # sqrt(1 - b2**k) / (1 - b1**k), in float64 like torch's Python floats
        scale = tree.debias_factor(b1, count_inc) / torch.sqrt(tree.debias_factor(b2, count_inc))
        gs, spec = tree.flatten(updates)
        ms, m_spec = tree.flatten(state.mu)
        vs, v_spec = tree.flatten(state.nu)
        if m_spec != spec or v_spec != spec:
            raise ValueError("scale_by_sparse_adam: the updates do not match the state's structure")
        out = [
            (None, None, None)
            if g is None or m is None or v is None
            else _sparse_leaf(g, m, v, b1, b2, eps, scale)
            for g, m, v in zip(gs, ms, vs)
        ]
        # The moments' increments are added in place when the state is donated (the adapter):
        # every read of the old moments happened above.
        mu = tree.add_scale(state.mu, 1.0, tree.unflatten(spec, [o[0] for o in out]))
        nu = tree.add_scale(state.nu, 1.0, tree.unflatten(spec, [o[1] for o in out]))
        new_updates = tree.unflatten(spec, [o[2] for o in out])
        return new_updates, ScaleBySparseAdamState(count=count_inc, mu=mu, nu=nu)

    return GradientTransformation(init_fn, update_fn)
