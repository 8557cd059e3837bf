"""Differentially private aggregation of per-example gradients (DP-SGD)."""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

from optax_torch import _validate, tree
from optax_torch import transforms as T
from optax_torch.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    ScalarOrSchedule,
    identity,
)
from optax_torch.combine import chain

__all__ = ["DifferentiallyPrivateAggregateState", "differentially_private_aggregate", "dpsgd"]

Num = float | torch.Tensor


class DifferentiallyPrivateAggregateState(NamedTuple):
    """State of :func:`differentially_private_aggregate`.

    ``rng_key`` is the state of the ``torch.Generator`` the noise is drawn from (a uint8
    tensor, ``Generator.get_state()``) where optax holds a JAX PRNG key.
    """

    rng_key: torch.Tensor


def _check_seed(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an int seed, got {name}={value!r}")
    return value


def differentially_private_aggregate(
    l2_norm_clip: Num,
    noise_multiplier: Num,
    key: int | None = None,
    *,
    seed: int | None = None,
) -> GradientTransformation:
    r"""Aggregates per-example gradients as DP-SGD does: clip, sum, add noise, average.

    Every leaf of the updates carries a batch axis first (per-example gradients, e.g. from
    ``torch.func.vmap(torch.func.grad(loss))``); with :math:`B` examples and :math:`C` =
    ``l2_norm_clip``:

    .. math::
        u = \frac{1}{B}\Big(\sum_{n} \min\!\Big(1, \frac{C}{\|g^{(n)}\|_2}\Big) g^{(n)}
            + \sigma C\, \xi\Big),\qquad \xi \sim \mathcal N(0, I)

    with :math:`\sigma` = ``noise_multiplier`` and the norm over all leaves of example
    :math:`n`. Use it first in a chain; aggregation wrappers such as ``MultiSteps`` do not
    compose with it.

    Args:
      l2_norm_clip: largest L2 norm of one example's gradient.
      noise_multiplier: ratio of the noise's standard deviation to the clipping norm.
      key: seed of the ``torch.Generator`` of the noise (optax takes a JAX key or an int);
        ``None`` warns and uses 0, as optax does. The generator state is kept in the
        :class:`DifferentiallyPrivateAggregateState`, so runs are reproducible and states
        serialisable. Random draws do not compile.
      seed: deprecated alias of ``key`` (optax's).

    Reference: Abadi et al., 2016, https://arxiv.org/abs/1607.00133

    Example::

        >>> tx = otx.contrib.differentially_private_aggregate(1.0, 1.1, key=0)
    """
    _validate.check_in_range("l2_norm_clip", l2_norm_clip, 0.0, math.inf)
    _validate.check_non_negative("noise_multiplier", noise_multiplier)
    if seed is not None:
        warnings.warn('"seed" is deprecated, use "key".', DeprecationWarning, stacklevel=2)
        if key is not None:
            raise ValueError("Only one of seed or key can be specified.")
        key = _check_seed("seed", seed)
    if key is None:
        warnings.warn("Specifying a key will be required (as in optax).", stacklevel=2)
        key = 0
    key = _check_seed("key", key)
    noise_std = l2_norm_clip * noise_multiplier

    def init_fn(params):
        del params
        return DifferentiallyPrivateAggregateState(
            rng_key=torch.Generator().manual_seed(key).get_state()
        )

    def update_fn(updates, state, params=None):
        del params
        xs = tree.leaves(updates)
        if not xs:
            return updates, state
        clipped, _ = T.per_example_global_norm_clip(updates, l2_norm_clip)  # checks batch axes
        bsize = xs[0].shape[0]
        g = torch.Generator()
        g.set_state(state.rng_key)

        def noised(c: torch.Tensor) -> torch.Tensor:
            noise = torch.randn(c.shape, generator=g, dtype=c.dtype).to(c.device)
            return (c + noise_std * noise) / bsize

        out = tree.map(noised, clipped)
        return out, DifferentiallyPrivateAggregateState(rng_key=g.get_state())

    return GradientTransformation(init_fn, update_fn)


def dpsgd(
    learning_rate: ScalarOrSchedule,
    l2_norm_clip: Num,
    noise_multiplier: Num,
    seed: int,
    momentum: Num | None = None,
    nesterov: bool = False,
) -> GradientTransformationExtraArgs:
    r"""DP-SGD: :func:`differentially_private_aggregate`, then SGD (optionally with momentum).

    ``chain(differentially_private_aggregate(l2_norm_clip, noise_multiplier, key=seed),
    trace(momentum, nesterov) or identity(), scale_by_learning_rate(learning_rate))``. The
    updates must be per-example gradients (a batch axis first on every leaf).

    Args:
      learning_rate: learning rate or schedule.
      l2_norm_clip: largest L2 norm of one example's gradient.
      noise_multiplier: ratio of the noise's standard deviation to the clipping norm.
      seed: seed of the noise generator.
      momentum: momentum decay (``None``: no momentum).
      nesterov: Nesterov momentum.

    Reference: Abadi et al., 2016, https://arxiv.org/abs/1607.00133

    Example::

        >>> opt = otx.contrib.dpsgd(0.1, l2_norm_clip=1.0, noise_multiplier=1.1, seed=0)
        >>> per_example = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, batch)
        >>> updates, state = opt.update(per_example, state, params)
    """
    _validate.check_finite("learning_rate", learning_rate)
    _validate.check_decay("momentum", momentum)
    return chain(
        differentially_private_aggregate(
            l2_norm_clip=l2_norm_clip, noise_multiplier=noise_multiplier, key=seed
        ),
        T.trace(decay=momentum, nesterov=nesterov) if momentum is not None else identity(),
        T.scale_by_learning_rate(learning_rate),
    )
