"""Hessian-diagonal estimates (Hutchinson's) and AdaHessian's scaling by them.

:func:`hutchinson_hessian_diag` estimates :math:`\\operatorname{diag}(H)` of a function with
``torch.func`` (forward-over-reverse Hessian-vector products);
:func:`hutchinson_hessian_diag_from_grads` does the same from gradients built with
``loss.backward(create_graph=True)`` (timm's ``Adahessian``), drawing the Rademacher vectors
with :func:`rademacher_like` (timm's draws, from a seeded ``torch.Generator``).
:func:`scale_by_adahessian` is Adam with the squared Hessian diagonal as second moment; the
estimate is given to its ``update`` as ``hessian=``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from optax_torch import _validate as V
from optax_torch import numerics, tree
from optax_torch.base import GradientTransformationExtraArgs, Updates, donation_safe

__all__ = [
    "ScaleByAdahessianState",
    "average_conv_kernel",
    "hutchinson_hessian_diag",
    "hutchinson_hessian_diag_from_grads",
    "rademacher_like",
    "scale_by_adahessian",
]


def rademacher_like(
    params: Sequence[torch.Tensor], generator: torch.Generator | None = None
) -> list[torch.Tensor]:
    """One Rademacher (:math:`\\pm 1`) tensor per parameter, drawn in order from ``generator``
    as ``torch.randint(0, 2, p.size()) * 2.0 - 1.0`` (timm's draws: float32 on the parameter's
    device)."""
    return [
        torch.randint(0, 2, p.size(), generator=generator, device=p.device) * 2.0 - 1.0
        for p in params
    ]


def hutchinson_hessian_diag_from_grads(
    grads: Sequence[torch.Tensor],
    params: Sequence[torch.Tensor],
    n_samples: int = 1,
    generator: torch.Generator | None = None,
) -> list[torch.Tensor]:
    r"""Hutchinson's estimate of :math:`\operatorname{diag}(H)` from differentiable gradients.

    .. math::
        D = \frac{1}{S}\sum_{s=1}^{S} z_s \odot (H z_s),\qquad z_s \sim \text{Rademacher}

    with :math:`H z` computed by ``torch.autograd.grad(grads, params, grad_outputs=z)`` (the
    gradients must come from ``backward(create_graph=True)`` or ``autograd.grad(...,
    create_graph=True)``), :math:`z` over all ``params`` jointly (cross terms included).

    Args:
      grads: the gradients of the loss w.r.t. ``params``, with their graph.
      params: the parameters.
      n_samples: :math:`S`, default 1.
      generator: the ``torch.Generator`` of the draws (:func:`rademacher_like`).

    Reference: Yao et al., 2021, https://arxiv.org/abs/2006.00719; Hutchinson, 1989.

    Example::

        >>> loss.backward(create_graph=True)
        >>> ps = list(model.parameters())
        >>> d = hutchinson_hessian_diag_from_grads([p.grad for p in ps], ps, generator=gen)
    """
    V.check_positive_int("n_samples", n_samples)
    out = [torch.zeros_like(p) for p in params]
    for i in range(n_samples):
        zs = rademacher_like(params, generator)
        h_zs = torch.autograd.grad(
            list(grads), list(params), grad_outputs=zs, retain_graph=i < n_samples - 1
        )
        with torch.no_grad():
            for d, h_z, z in zip(out, h_zs, zs):
                d += h_z * z / n_samples
    return out


def hutchinson_hessian_diag(
    fn: Callable[[list[torch.Tensor]], torch.Tensor],
    params: Sequence[torch.Tensor],
    n_samples: int = 1,
    generator: torch.Generator | None = None,
) -> list[torch.Tensor]:
    r"""Hutchinson's estimate of :math:`\operatorname{diag}(H)` of ``fn`` at ``params``, with
    ``torch.func`` (forward-over-reverse :math:`Hz = \partial_t \nabla f(p + t z)`).

    Same estimate and draws as :func:`hutchinson_hessian_diag_from_grads`, without touching
    ``.grad``.

    Args:
      fn: ``list of tensors -> scalar loss``.
      params: where to evaluate it.
      n_samples: :math:`S`, default 1.
      generator: the ``torch.Generator`` of the draws.

    Example::

        >>> d = hutchinson_hessian_diag(lambda ps: (ps[0] ** 4).sum(), [torch.ones(3)])
    """
    V.check_positive_int("n_samples", n_samples)
    ps = [p.detach() for p in params]
    grad_fn = torch.func.grad(fn)
    out = [torch.zeros_like(p) for p in ps]
    for _ in range(n_samples):
        zs = [z.to(p.dtype) for z, p in zip(rademacher_like(ps, generator), ps)]
        h_zs = torch.func.jvp(grad_fn, (ps,), (zs,))[1]
        out = [d + h_z * z / n_samples for d, h_z, z in zip(out, h_zs, zs)]
    return out


def average_conv_kernel(hessian: torch.Tensor) -> torch.Tensor:
    """AdaHessian's spatial averaging of a 2-d convolution kernel's Hessian diagonal:
    :math:`|D|` averaged over the kernel's two spatial axes (other tensors unchanged)."""
    if hessian.dim() != 4:
        return hessian
    return torch.abs(hessian).mean(dim=[2, 3], keepdim=True).expand_as(hessian).clone()


class ScaleByAdahessianState(NamedTuple):
    """State of :func:`scale_by_adahessian`."""

    count: torch.Tensor  # 0-d int32
    mu: Updates  # EMA of the gradients
    nu: Updates  # EMA of the squared Hessian-diagonal estimates


def scale_by_adahessian(
    b1: float | torch.Tensor = 0.9,
    b2: float | torch.Tensor = 0.999,
    eps: float | torch.Tensor = 1e-8,
    hessian_power: float | torch.Tensor = 1.0,
) -> GradientTransformationExtraArgs:
    r"""AdaHessian's scaling: Adam with the squared Hessian diagonal as second moment.

    With :math:`D_k` the Hessian-diagonal estimate given as ``update(..., hessian=D_k)`` (e.g.
    :func:`hutchinson_hessian_diag`):

    .. math::
        m_k = \beta_1 m_{k-1} + (1-\beta_1) g_k,\quad
        v_k = \beta_2 v_{k-1} + (1-\beta_2) D_k^2,\quad
        u_k = \frac{m_k / (1-\beta_1^k)}{(v_k / (1-\beta_2^k))^{\kappa/2} + \epsilon}

    Args:
      b1: decay of the gradient average, default 0.9.
      b2: decay of the squared Hessian average, default 0.999.
      eps: added to the denominator, default 1e-8.
      hessian_power: :math:`\kappa \in [0, 1]`, default 1.

    Reference: Yao et al., 2021, https://arxiv.org/abs/2006.00719

    Example::

        >>> tx = otx.chain(scale_by_adahessian(), otx.scale_by_learning_rate(0.1))
        >>> d = hutchinson_hessian_diag(loss_of_params, params)
        >>> updates, state = tx.update(grads, state, params, hessian=d)
    """
    V.check_decay("b1", b1)
    V.check_decay("b2", b2)
    V.check_non_negative("eps", eps)
    V.check_in_range("hessian_power", hessian_power, 0.0, 1.0)

    def init_fn(params):
        return ScaleByAdahessianState(
            numerics.zero_count(), tree.zeros_like(params), tree.zeros_like(params)
        )

    @donation_safe
    def update_fn(updates, state, params=None, *, hessian=None, **extra_args):
        del params, extra_args
        if hessian is None:
            raise ValueError(
                "scale_by_adahessian needs the Hessian diagonal: update(..., hessian=)"
            )
        count_inc = numerics.safe_increment(state.count)
        hessian = tree.map(lambda u, h: h, updates, hessian)  # None where the update is None
        mu = tree.update_moment(updates, state.mu, b1, 1)
        nu = tree.update_moment_per_elem_norm(hessian, state.nu, b2, 2)
        k = count_inc.to(torch.float64)
        bc1, bc2 = 1 - b1**k, 1 - b2**k
        half_power = hessian_power / 2

        def one(m, v):
            denom = (v / bc2.to(v.dtype)).pow(half_power) + eps
            return m / denom / bc1.to(m.dtype)

        out = tree.map(one, mu, nu)
        return out, ScaleByAdahessianState(count_inc, mu, nu)

    return GradientTransformationExtraArgs(init_fn, update_fn)
