"""The shared harness that runs a transformation in optax_torch and in optax (JAX) side by side.

A case is one builder ``build(L)`` where ``L`` is :data:`TORCH` or :data:`JAX` (the library module
plus the few things that differ, e.g. dtypes, contrib modules). :func:`run_both` runs both for
20+ steps on a mixed-shape pytree (dict / list / tuple / NamedTuple, 0-d and empty leaves), with
the same gradients, and compares the init states, then updates, states and params after every step.
States are compared by NamedTuple field name and dict key, so optax_torch's state layout must be
optax's (optax's ``MaskedNode`` = our ``None``).

float64 (the default) is compared tightly (rtol 1e-10, atol 1e-12); ``dtype=torch.float32`` runs
both libraries in float32 and compares at float32 tolerance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
import optax.contrib
import torch
from conftest import assert_trees_close, like_tree, make_tree, to_jax, with_none_like

import optax_torch as otx
import optax_torch.contrib
from optax_torch import tree as otree

assert jax.config.jax_enable_x64, "conftest enables float64 in JAX"

RTOL = 1e-10
ATOL = 1e-12
RTOL32 = 2e-5
ATOL32 = 2e-6
STEPS = 20


@dataclass(frozen=True)
class Lib:
    """What a builder needs to write one transformation for either library."""

    name: str
    tx: Any  # the optax / optax_torch module
    contrib: Any  # optax.contrib / optax_torch.contrib
    float32: Any
    float64: Any
    bfloat16: Any

    @property
    def is_torch(self) -> bool:
        return self.name == "torch"

    def sched(self, schedule):
        """optax's schedules compute in float32 for an int32 count even with x64 (optax_torch's in
        float64): give optax the count as float64 so that both are float64 references."""
        if self.name == "torch":
            return schedule
        return lambda count: schedule(jnp.asarray(count, jnp.float64))

    def f64(self, count):
        """A step count as float64 (torch: int tensor * float would be float32)."""
        return count.to(torch.float64) if self.name == "torch" else jnp.asarray(count, jnp.float64)


TORCH = Lib("torch", otx, optax_torch.contrib, torch.float32, torch.float64, torch.bfloat16)
JAX = Lib("jax", optax, optax.contrib, jnp.float32, jnp.float64, jnp.bfloat16)


def params_tree(with_none: bool = False, dtype: torch.dtype = torch.float64):
    """The mixed-shape parameter tree every comparison starts from."""
    return make_tree(0, dtypes=(dtype,), with_none=with_none)


def grads_tree(params, k: int):
    """Step ``k``'s gradients: fresh uniform values in [-1, 1) with ``params``' structure."""
    g = like_tree(otree.map(lambda x: x, params), seed=1000 + k)
    return with_none_like(g, params)


def run_both(
    build: Callable[[Lib], Any],
    steps: int = STEPS,
    with_none: bool = False,
    rtol: float | None = None,
    atol: float | None = None,
    grads_fn: Callable | None = None,
    params: Any = None,
    dtype: torch.dtype = torch.float64,
    extra_args_fn: Callable[[Lib, Any, Any, int], dict] | None = None,
    compare_state: bool = True,
):
    """Runs ``build(TORCH)`` and ``build(JAX)`` side by side; compares init states, then updates,
    states and (separately tracked) params after every step. Returns the final torch params.

    Args:
      grads_fn: ``(params, k) -> grads`` (torch trees); default :func:`grads_tree`.
      params: the initial torch params (default :func:`params_tree`).
      dtype: float64 (tight tolerances) or float32 (float32 tolerances).
      extra_args_fn: ``(L, params, grads, k) -> dict`` of extra keyword arguments for ``update``
        (e.g. ``value``/``value_fn`` for line searches), built in either library.
      compare_state: compare states (set ``False`` only where a state holds something
        library-specific, such as a random key, and say why at the call site).
    """
    if rtol is None:
        rtol = RTOL if dtype == torch.float64 else RTOL32
    if atol is None:
        atol = ATOL if dtype == torch.float64 else ATOL32
    params_t = params if params is not None else params_tree(with_none, dtype)
    params_j = to_jax(params_t)
    tx_t, tx_j = build(TORCH), build(JAX)
    st_t, st_j = tx_t.init(params_t), tx_j.init(params_j)
    if compare_state:
        assert_trees_close(st_t, st_j, rtol=rtol, atol=atol)
    for k in range(steps):
        g = (grads_fn or grads_tree)(params_t, k)
        kw_t = extra_args_fn(TORCH, params_t, g, k) if extra_args_fn else {}
        kw_j = extra_args_fn(JAX, params_j, to_jax(g), k) if extra_args_fn else {}
        u_t, st_t = tx_t.update(g, st_t, params_t, **kw_t)
        u_j, st_j = tx_j.update(to_jax(g), st_j, params_j, **kw_j)
        try:
            assert_trees_close(u_t, u_j, rtol=rtol, atol=atol)
            if compare_state:
                assert_trees_close(st_t, st_j, rtol=rtol, atol=atol)
        except AssertionError as e:
            raise AssertionError(f"step {k}: {e}") from None
        params_t = otx.apply_updates(params_t, u_t)
        params_j = optax.apply_updates(params_j, u_j)
        assert_trees_close(params_t, params_j, rtol=rtol, atol=atol)
    return params_t


def run_jit(build, **kwargs):
    """:func:`run_both` with optax's ``update`` under ``jax.jit``: the same numbers, compiled
    once per case instead of op by op (about 3x faster here)."""

    def jitted(L):
        tx = build(L)
        if L.is_torch:
            return tx
        return optax.GradientTransformation(tx.init, jax.jit(tx.update))

    return run_both(jitted, **kwargs)


def inverse_time_schedule(L: Lib):
    """An inverse-time schedule written for both libraries (float64 in both)."""
    return lambda count: 0.1 / (1.0 + 0.3 * L.f64(count))
