"""Sophia: a clipped second-order optimizer with a Hutchinson estimate of the Hessian diagonal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from optax_torch import _validate, numerics, tree
from optax_torch import transforms as T
from optax_torch.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    Params,
    ScalarOrSchedule,
    Updates,
    with_extra_args_support,
)
from optax_torch.combine import chain
from optax_torch.contrib._dtypes import scalar_dtype

__all__ = ["HutchinsonState", "SophiaState", "hutchinson_estimator_diag_hessian", "sophia"]

Num = float | torch.Tensor


class HutchinsonState(NamedTuple):
    """State of :func:`hutchinson_estimator_diag_hessian`.

    ``key`` is the state of the ``torch.Generator`` the probes are drawn from (a uint8 tensor,
    ``Generator.get_state()``) where optax holds a JAX PRNG key.
    """

    key: torch.Tensor


def _rademacher(key: torch.Tensor, like: list[torch.Tensor]) -> tuple[list[torch.Tensor], Any]:
    """Random signs shaped like ``like`` (float32 on the CPU generator), and the new key."""
    g = torch.Generator()
    g.set_state(key)
    signs = [
        (torch.randint(0, 2, x.shape, generator=g, dtype=torch.int32) * 2 - 1).to(torch.float32)
        for x in like
    ]
    return signs, g.get_state()


def _hvp(f: Callable[[list[torch.Tensor]], torch.Tensor], xs: list[torch.Tensor], vs: list[Any]):
    """Hessian-vector product of ``f`` at ``xs`` by double backward (works inside ``no_grad``,
    e.g. in ``TorchOptimizer.step``, and for objectives that ignore some leaves)."""
    with torch.enable_grad():
        leaves = [x.detach().requires_grad_(True) for x in xs]
        grads = torch.autograd.grad(f(leaves), leaves, create_graph=True, allow_unused=True)
        dot = sum(
            ((g * v).sum() for g, v in zip(grads, vs) if g is not None and g.requires_grad),
            torch.zeros(()),
        )
        if not isinstance(dot, torch.Tensor) or not dot.requires_grad:
            return [torch.zeros_like(x) for x in xs]
        hvp = torch.autograd.grad(dot, leaves, allow_unused=True)
    return [torch.zeros_like(x) if h is None else h.detach() for h, x in zip(hvp, xs)]


def hutchinson_estimator_diag_hessian(random_seed: int | None = None) -> GradientTransformation:
    r"""Estimates the diagonal of the Hessian with Hutchinson's estimator.

    .. math::
        \widehat{\operatorname{diag}(H)} = z \odot (H z),\qquad z_i \in \{-1, +1\}
        \text{ uniformly},

    unbiased (:math:`E[z \odot Hz] = \operatorname{diag}(H)`) with high variance. The
    Hessian-vector product is computed by double backward (``torch.autograd.grad`` twice).
    ``update`` ignores the updates and needs ``params`` and the extra argument ``obj_fn``
    (``params -> scalar loss``).

    Args:
      random_seed: seed of the ``torch.Generator`` of the probes (``None``: 0). optax takes a
        JAX key here; the generator state is kept in the :class:`HutchinsonState`, so a run is
        reproducible and its state serialisable. Random draws do not compile.

    Example::

        >>> est = otx.contrib.hutchinson_estimator_diag_hessian(random_seed=0)
        >>> diag, state = est.update(grads, state, params, obj_fn=loss_fn)
    """
    seed = 0 if random_seed is None else random_seed
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"random_seed must be an int seed, got random_seed={random_seed!r}")

    def init_fn(params):
        del params
        return HutchinsonState(key=torch.Generator().manual_seed(seed).get_state())

    def update_fn(updates, state, params=None, obj_fn=None, **extra_args):
        del updates, extra_args
        if params is None:
            raise ValueError("params must be provided to hutchinson update function.")
        if obj_fn is None:
            raise ValueError("obj_fn must be provided to hutchinson update function.")
        leaves, spec = tree.flatten(params)
        idx = [i for i, x in enumerate(leaves) if x is not None]
        xs = [leaves[i] for i in idx]
        signs, key = _rademacher(state.key, xs)
        dtype = scalar_dtype(params, "lowest")
        signs = [s.to(device=x.device, dtype=dtype) for s, x in zip(signs, xs)]

        def loss(flat):
            full = list(leaves)
            for i, x in zip(idx, flat):
                full[i] = x
            return obj_fn(tree.unflatten(spec, full))

        hvp = _hvp(loss, xs, signs)
        out: list[Any] = [None] * len(leaves)
        for i, h, s in zip(idx, hvp, signs):
            out[i] = h * s
        return tree.unflatten(spec, out), HutchinsonState(key=key)

    return GradientTransformationExtraArgs(init_fn, update_fn)


_DEFAULT_HESSIAN_FN = hutchinson_estimator_diag_hessian()


class SophiaState(NamedTuple):
    """State of Sophia."""

    count: torch.Tensor  # 0-d int32
    mu: Updates  # momentum
    nu: Updates  # EMA of the Hessian diagonal
    hessian_fn_state: Any


def scale_by_sophia(
    b1: Num = 0.965,
    b2: Num = 0.99,
    eps: Num = 1e-8,
    gamma: Num = 0.01,
    clip_threshold: Num | None = 1.0,
    update_interval: int = 10,
    hessian_diagonal_fn: GradientTransformation = _DEFAULT_HESSIAN_FN,
    mu_dtype: torch.dtype | None = None,
    verbose: bool = False,
    print_win_rate_every_n_steps: int = 0,
) -> GradientTransformationExtraArgs:
    """Sophia's scaling (see :func:`sophia`), without weight decay and learning rate."""
    _validate.check_decay("b1", b1)
    _validate.check_decay("b2", b2)
    _validate.check_non_negative("eps", eps)
    _validate.check_non_negative("gamma", gamma)
    _validate.check_non_negative("clip_threshold", clip_threshold)
    if isinstance(update_interval, torch.Tensor):  # e.g. from inject_hyperparams
        update_interval = int(update_interval)
    _validate.check_positive_int("update_interval", update_interval)
    _validate.check_non_negative("print_win_rate_every_n_steps", print_win_rate_every_n_steps)
    hess_fn = with_extra_args_support(hessian_diagonal_fn)

    def init_fn(params):
        _validate.check_real_params(params, "scale_by_sophia")
        return SophiaState(
            count=numerics.zero_count(),
            mu=tree.zeros_like(params, dtype=mu_dtype),
            nu=tree.zeros_like(params),
            hessian_fn_state=hess_fn.init(params),
        )

    def update_fn(updates, state, params=None, **hess_fn_kwargs):
        if params is None:
            raise ValueError("params must be provided to sophia's update function.")
        count_inc = numerics.safe_increment(state.count)
        grads = updates
        mu = tree.update_moment(updates, state.mu, b1, 1)
        mu_hat = tree.bias_correction(mu, b1, count_inc)
        new_updates = tree.map(lambda m, h: m / torch.clamp(gamma * h, min=eps), mu_hat, state.nu)
        if clip_threshold is not None:
            every = print_win_rate_every_n_steps
            if verbose and every > 0 and int(count_inc) % every == 0:
                xs = tree.leaves(new_updates)
                kept = sum(int((x.abs() < clip_threshold).sum()) for x in xs)
                print(f"Sophia optimizer win rate: {kept / max(1, sum(x.numel() for x in xs))}")
            new_updates = tree.clip(new_updates, -clip_threshold, clip_threshold)
        refresh = state.count % update_interval == 0

        def estimate():
            hessian_diag, hess_state = hess_fn.update(
                grads, state.hessian_fn_state, params, **hess_fn_kwargs
            )
            return hess_state, tree.update_moment(hessian_diag, state.nu, b2, 1)

        keep = (state.hessian_fn_state, state.nu)
        if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
            # traced: estimate every step, keep it on update steps only
            hess_state, nu = tree.where(refresh, estimate(), keep)
        else:
            # eager: estimate on update steps only (reads the CPU step count)
            hess_state, nu = estimate() if bool(refresh) else keep
        return new_updates, SophiaState(
            count=count_inc, mu=tree.cast(mu, mu_dtype), nu=nu, hessian_fn_state=hess_state
        )

    return GradientTransformationExtraArgs(init_fn, update_fn)


def sophia(
    learning_rate: ScalarOrSchedule,
    b1: Num = 0.965,
    b2: Num = 0.99,
    eps: Num = 1e-8,
    weight_decay: Num = 1e-4,
    weight_decay_mask: Any | Callable[[Params], Any] | None = None,
    gamma: Num = 0.01,
    clip_threshold: Num | None = 1.0,
    update_interval: int = 10,
    hessian_diagonal_fn: GradientTransformation = _DEFAULT_HESSIAN_FN,
    mu_dtype: torch.dtype | None = None,
    verbose: bool = False,
    print_win_rate_every_n_steps: int = 0,
) -> GradientTransformationExtraArgs:
    r"""Sophia: second-order clipped stochastic optimization.

    .. math::
        m_k = \beta_1 m_{k-1} + (1-\beta_1) g_k,\quad
        u_k = \operatorname{clip}\left(\frac{m_k / (1-\beta_1^k)}
            {\max(\gamma h_{k-1}, \epsilon)}, \pm\rho\right),\\
        h_k = \beta_2 h_{k-1} + (1-\beta_2)\, \widehat{\operatorname{diag}(H)}_k
        \;\text{ every } \texttt{update\_interval} \text{ steps (else } h_k = h_{k-1}),

    then decoupled weight decay and the learning rate. The Hessian diagonal comes from
    ``hessian_diagonal_fn`` (default: :func:`hutchinson_estimator_diag_hessian`, which needs
    ``update(..., obj_fn=loss_fn)``; extra keyword arguments of ``update`` are passed to it).

    Eagerly the Hessian diagonal is estimated only every ``update_interval`` steps (reading the
    CPU step count, as optax's ``lax.cond`` does); under ``torch.compile`` it is estimated every
    step and kept on those steps only. The default estimator draws random probes from a
    ``torch.Generator``, which does not compile: run it eagerly, or compile with a deterministic
    ``hessian_diagonal_fn``.

    Args:
      learning_rate: learning rate or schedule.
      b1: decay rate of the momentum, default 0.965.
      b2: decay rate of the Hessian-diagonal EMA, default 0.99 (effectively
        ``1 - (1 - b2) / update_interval`` per step).
      eps: lower bound of the denominator, default 1e-8.
      weight_decay: decoupled weight decay, default 1e-4.
      weight_decay_mask: mask (tree or function) of the parameters to decay.
      gamma: scale :math:`\gamma` of the Hessian diagonal, default 0.01.
      clip_threshold: :math:`\rho`, default 1.0 (``None``: no clipping).
      update_interval: steps between Hessian-diagonal estimates, default 10.
      hessian_diagonal_fn: the estimator (default Hutchinson's, seed 0).
      mu_dtype: dtype of the momentum.
      verbose: print the win rate (fraction of unclipped coordinates).
      print_win_rate_every_n_steps: how often to print it (0: never).

    Reference: Liu et al., 2023, https://arxiv.org/abs/2305.14342

    Example::

        >>> opt = otx.contrib.sophia(1e-3)
        >>> updates, state = opt.update(grads, state, params, obj_fn=lambda p: loss(p, batch))
    """
    _validate.check_finite("learning_rate", learning_rate)
    _validate.check_non_negative("weight_decay", weight_decay)
    return chain(
        scale_by_sophia(
            b1=b1,
            b2=b2,
            eps=eps,
            gamma=gamma,
            clip_threshold=clip_threshold,
            update_interval=update_interval,
            hessian_diagonal_fn=hessian_diagonal_fn,
            mu_dtype=mu_dtype,
            verbose=verbose,
            print_win_rate_every_n_steps=print_win_rate_every_n_steps,
        ),
        T.add_decayed_weights(weight_decay, weight_decay_mask),
        T.scale_by_learning_rate(learning_rate),
    )
