"""Gradient noise: add_noise (annealed Gaussian noise), generator state in the optimizer state."""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch

from optax_torch import _validate, numerics, tree
from optax_torch.base import GradientTransformation

__all__ = ["AddNoiseState", "add_noise"]

Num = float | torch.Tensor


class AddNoiseState(NamedTuple):
    """State of :func:`add_noise`.

    ``rng_key`` keeps optax's field name but holds the state of a CPU ``torch.Generator`` (a 1-d
    uint8 tensor, ``Generator.get_state()``) instead of a JAX key: it serialises with
    ``torch.load(weights_only=True)`` and a restored state continues the same noise sequence.
    """

    count: torch.Tensor  # 0-d int32
    rng_key: torch.Tensor  # uint8 generator state


def add_noise(
    eta: Num, gamma: Num, key: int | None = None, *, seed: int | None = None
) -> GradientTransformation:
    r"""Adds annealed Gaussian noise to the updates.

    .. math::
        u_k \leftarrow u_k + \sigma_k \xi_k,\qquad
        \sigma_k^2 = \frac{\eta}{k^{\gamma}},\qquad \xi_k \sim \mathcal N(0, I)

    at steps :math:`k = 1, 2, \dots` (i.e. :math:`\eta / (1 + t)^\gamma` for :math:`t` previous
    steps). The noise has each leaf's dtype; it is drawn on the CPU, leaf after leaf in the tree's
    order, and moved to the leaf's device.

    Randomness: optax takes a JAX PRNG key; here ``key`` is an integer seed and the state's
    ``rng_key`` field holds the state of a CPU ``torch.Generator`` seeded with it (see
    :class:`AddNoiseState`). The same seed gives the same noise, run after run; the values differ
    from optax's (another generator), the distribution is the same. Drawing from a generator is
    not traceable: this transformation runs eagerly only (not under
    ``torch.compile(fullgraph=True)``, ``vmap`` or ``grad``).

    Args:
      eta: the initial variance :math:`\eta` of the noise.
      gamma: the decay exponent :math:`\gamma` of the variance.
      key: the integer seed (``None``: 0, as optax).
      seed: deprecated alias of ``key`` (as in optax; a ``DeprecationWarning``); give one of the
        two.

    Reference: Neelakantan et al., 2015, https://arxiv.org/abs/1511.06807

    Example::

        >>> tx = otx.chain(otx.add_noise(0.01, 0.55, key=0), otx.scale(-1e-2))
    """
    _validate.check_non_negative("eta", eta)
    _validate.check_non_negative("gamma", gamma)
    if seed is not None:
        warnings.warn('"seed" is deprecated, use "key"', DeprecationWarning, stacklevel=2)
        if key is not None:
            raise ValueError("add_noise: give only one of seed and key")
        key = seed
    _validate.check_finite("key", key)
    initial_seed = 0 if key is None else int(key)

    def init_fn(params):
        del params
        rng_key = torch.Generator().manual_seed(initial_seed).get_state()
        return AddNoiseState(count=numerics.zero_count(), rng_key=rng_key)

    def update_fn(updates, state, params=None):
        del params
        count_inc = numerics.safe_increment(state.count)
        std = torch.sqrt(eta / count_inc.to(torch.float64) ** gamma)
        gen = torch.Generator()
        gen.set_state(state.rng_key)
        noise = tree.random_like(gen, updates)
        updates = tree.add_scale(updates, std, noise)
        return updates, AddNoiseState(count=count_inc, rng_key=gen.get_state())

    return GradientTransformation(init_fn, update_fn)
