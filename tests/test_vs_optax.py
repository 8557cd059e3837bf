"""optax_torch against optax (JAX, float64): same inputs, updates and states compared every step.

Each case builds the same transformation in both libraries from one builder ``build(L)`` where
``L`` is :data:`TORCH` or :data:`JAX` (the library module plus the few things that differ, e.g.
dtypes). 20+ steps on a mixed-shape float64 pytree (dict / list / tuple / NamedTuple, 0-d and
empty leaves); tolerance rtol=1e-10, atol=1e-12. States are compared by NamedTuple field name and
dict key, so optax_torch's state layout must be optax's (optax's ``MaskedNode`` = our ``None``).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import optax
import pytest
import torch
from conftest import Pair, assert_trees_close, like_tree, make_tree, to_jax, with_none_like
from optax_ref import ATOL, RTOL, STEPS, grads_tree, inverse_time_schedule, params_tree, run_both

import optax_torch as otx
from optax_torch import tree as otree

_params = params_tree
_grads = grads_tree
_schedule = inverse_time_schedule


def _mask(p):
    """True for the leaves with at least 2 dims (a typical 'decay only matrices' mask)."""
    return {
        "scalar": False,
        "empty": False,
        "dense": {"w": True, "b": False},
        "seq": [True, (False, False)],
        "pair": Pair(first=False, second={"z": True}),
    }


def _prefix_mask(p):
    return {"scalar": True, "empty": True, "dense": False, "seq": True, "pair": False}


def _labels(p):
    return {
        "scalar": "b",
        "empty": "a",
        "dense": {"w": "a", "b": "b"},
        "seq": ["a", ("b", "c")],
        "pair": Pair(first="c", second={"z": "a"}),
    }


CASES: dict[str, Any] = {
    # scaling
    "scale": lambda L: L.tx.scale(-0.37),
    "scale_by_learning_rate": lambda L: L.tx.scale_by_learning_rate(0.05),
    "scale_by_learning_rate_no_flip": lambda L: L.tx.scale_by_learning_rate(0.05, flip_sign=False),
    "scale_by_learning_rate_schedule": lambda L: L.tx.scale_by_learning_rate(_schedule(L)),
    "scale_by_schedule": lambda L: L.tx.scale_by_schedule(_schedule(L)),
    # momentum
    "trace": lambda L: L.tx.trace(0.9),
    "trace_nesterov": lambda L: L.tx.trace(0.8, nesterov=True),
    "ema_debias": lambda L: L.tx.ema(0.9),
    "ema_no_debias": lambda L: L.tx.ema(0.7, debias=False),
    # moments
    "scale_by_adam": lambda L: L.tx.scale_by_adam(),
    "scale_by_adam_nesterov": lambda L: L.tx.scale_by_adam(b1=0.8, b2=0.99, nesterov=True),
    "scale_by_adam_eps_root": lambda L: L.tx.scale_by_adam(eps=1e-6, eps_root=1e-5),
    "scale_by_amsgrad": lambda L: L.tx.scale_by_amsgrad(b1=0.8, b2=0.95),
    "scale_by_rms": lambda L: L.tx.scale_by_rms(),
    "scale_by_rms_eps_outside": lambda L: L.tx.scale_by_rms(0.8, 1e-3, eps_in_sqrt=False),
    "scale_by_rms_bias_correction": lambda L: L.tx.scale_by_rms(0.95, bias_correction=True),
    "scale_by_rms_initial_scale": lambda L: L.tx.scale_by_rms(initial_scale=0.5),
    "scale_by_rms_all": lambda L: L.tx.scale_by_rms(
        0.9, 1e-4, initial_scale=0.2, eps_in_sqrt=False, bias_correction=True
    ),
    "scale_by_stddev": lambda L: L.tx.scale_by_stddev(),
    "scale_by_stddev_eps_outside": lambda L: L.tx.scale_by_stddev(0.8, 1e-3, eps_in_sqrt=False),
    "scale_by_stddev_initial_scale": lambda L: L.tx.scale_by_stddev(initial_scale=0.3),
    # With bias correction the first step has mu_hat = g and nu_hat = g**2 exactly in exact
    # math, so var = nu_hat - mu_hat**2 is pure rounding noise (~1e-17) and 1/sqrt(var + eps)
    # amplifies it by eps**-1.5 for tiny eps; eps=1e-2 keeps the step well conditioned
    # (relative noise ~1e-14).
    "scale_by_stddev_bias_correction": lambda L: L.tx.scale_by_stddev(
        0.9, 1e-2, bias_correction=True
    ),
    # eps outside the root cannot rescue a var that rounds to -1e-17 (sqrt -> NaN in both
    # libraries); an initial_scale s makes var_hat = 9 s + O(rounding) at step 1, well conditioned.
    "scale_by_stddev_bias_correction_eps_outside": lambda L: L.tx.scale_by_stddev(
        0.9, 1e-3, initial_scale=0.5, eps_in_sqrt=False, bias_correction=True
    ),
    "scale_by_rss": lambda L: L.tx.scale_by_rss(),
    "scale_by_rss_init": lambda L: L.tx.scale_by_rss(initial_accumulator_value=0.5, eps=1e-4),
    # weight decay, clipping, masking, combinators
    "add_decayed_weights": lambda L: L.tx.add_decayed_weights(0.1),
    "add_decayed_weights_mask": lambda L: L.tx.add_decayed_weights(0.1, mask=_mask),
    "add_decayed_weights_mask_tree": lambda L: L.tx.add_decayed_weights(0.1, mask=_mask(None)),
    "clip": lambda L: L.tx.clip(0.3),
    "clip_by_global_norm_active": lambda L: L.tx.clip_by_global_norm(0.5),
    "clip_by_global_norm_inactive": lambda L: L.tx.clip_by_global_norm(100.0),
    "masked_adam": lambda L: L.tx.masked(L.tx.scale_by_adam(), _mask),
    "masked_prefix_trace": lambda L: L.tx.masked(L.tx.trace(0.9), _prefix_mask(None)),
    "masked_clip_by_global_norm": lambda L: L.tx.masked(L.tx.clip_by_global_norm(0.3), _mask),
    "partition": lambda L: L.tx.partition(
        {"a": L.tx.adam(0.1), "b": L.tx.sgd(0.05, momentum=0.9), "c": L.tx.set_to_zero()}, _labels
    ),
    "partition_tree_labels": lambda L: L.tx.partition(
        {"a": L.tx.rmsprop(0.01), "b": L.tx.scale(2.0), "c": L.tx.identity()}, _labels(None)
    ),
    "named_chain": lambda L: L.tx.named_chain(
        ("clip", L.tx.clip_by_global_norm(1.0)),
        ("adam", L.tx.scale_by_adam()),
        ("lr", L.tx.scale(-0.1)),
    ),
    "chain": lambda L: L.tx.chain(
        L.tx.clip(0.8), L.tx.scale_by_rms(), L.tx.trace(0.5), L.tx.scale_by_learning_rate(0.1)
    ),
    "identity": lambda L: L.tx.identity(),
    "set_to_zero": lambda L: L.tx.set_to_zero(),
    # aliases
    "sgd": lambda L: L.tx.sgd(0.1),
    "sgd_momentum": lambda L: L.tx.sgd(0.1, momentum=0.9),
    "sgd_nesterov": lambda L: L.tx.sgd(0.1, momentum=0.9, nesterov=True),
    "sgd_schedule": lambda L: L.tx.sgd(_schedule(L), momentum=0.5),
    "adam": lambda L: L.tx.adam(0.01),
    "adam_schedule": lambda L: L.tx.adam(_schedule(L), b1=0.5, b2=0.9),
    "adam_nesterov": lambda L: L.tx.adam(0.01, nesterov=True),
    "adamw": lambda L: L.tx.adamw(0.01, weight_decay=0.1),
    "adamw_mask": lambda L: L.tx.adamw(0.01, weight_decay=0.1, mask=_mask),
    "nadam": lambda L: L.tx.nadam(0.01, b1=0.8),
    "nadamw": lambda L: L.tx.nadamw(0.01, weight_decay=0.05),
    "amsgrad": lambda L: L.tx.amsgrad(0.02, b2=0.9),
    "rmsprop": lambda L: L.tx.rmsprop(0.01),
    "rmsprop_centered": lambda L: L.tx.rmsprop(0.01, centered=True, eps=1e-4),
    "rmsprop_momentum": lambda L: L.tx.rmsprop(0.01, momentum=0.9),
    "rmsprop_nesterov": lambda L: L.tx.rmsprop(0.01, momentum=0.9, nesterov=True),
    "rmsprop_bias_correction": lambda L: L.tx.rmsprop(0.01, bias_correction=True),
    "rmsprop_everything": lambda L: L.tx.rmsprop(
        _schedule(L),
        decay=0.8,
        eps=1e-3,
        initial_scale=0.1,
        eps_in_sqrt=False,
        centered=True,
        momentum=0.7,
        nesterov=True,
        bias_correction=True,
    ),
    # aliases with the library's own schedules (optax_torch.schedules vs optax.schedules)
    "adamw_warmup_cosine": lambda L: L.tx.adamw(
        L.sched(L.tx.warmup_cosine_decay_schedule(0.0, 0.1, 5, 18, end_value=0.01)),
        weight_decay=0.05,
    ),
    "sgd_piecewise_constant": lambda L: L.tx.sgd(
        L.sched(L.tx.piecewise_constant_schedule(0.1, {4: 0.5, 10: 0.1})), momentum=0.9
    ),
    "rmsprop_exponential_decay": lambda L: L.tx.rmsprop(
        L.sched(L.tx.exponential_decay(0.02, 3, 0.7, transition_begin=2, staircase=True)),
        momentum=0.5,
    ),
    "adagrad": lambda L: L.tx.adagrad(0.1),
    "adagrad_init": lambda L: L.tx.adagrad(0.1, initial_accumulator_value=0.0, eps=1e-3),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_optax(name):
    """Updates, states and params equal optax's (float64) at every step."""
    run_both(CASES[name])


NONE_CASES = [
    "adam",
    "sgd_momentum",
    "clip_by_global_norm_active",
    "masked_adam",
    "partition",
    "rmsprop_everything",
    "adamw_mask",
    "ema_debias",
]


@pytest.mark.parametrize("name", NONE_CASES)
def test_matches_optax_with_none_leaves(name):
    """``None`` leaves in params and grads (params without gradient) behave as in optax, where
    ``None`` is an empty subtree: no update and no state there."""
    run_both(CASES[name], steps=5, with_none=True)


@pytest.mark.parametrize("name", ["trace", "ema_debias"])
def test_accumulator_dtype_matches_optax(name):
    def build(L):
        f = L.tx.trace if name == "trace" else L.tx.ema
        return f(0.9, accumulator_dtype=L.float32)

    # optax computes ``decay * acc`` in float32 (weakly typed float times a float32 array) before
    # adding the float64 update; optax_torch upcasts the accumulator first: float32-level agreement
    run_both(build, rtol=1e-5, atol=1e-5)


def test_rss_with_zero_accumulator_and_zero_gradient_matches_optax():
    """Adagrad from a zero accumulator with gradient entries that stay exactly 0: optax gives a
    zero update there (not 0/0)."""

    def grads(params, k):
        g = _grads(params, k)
        return otree.map(lambda x: torch.where(x > 0.3, x, torch.zeros_like(x)), g)

    run_both(lambda L: L.tx.scale_by_rss(initial_accumulator_value=0.0), grads_fn=grads)


def test_rss_eps_zero_zero_gradient_matches_optax():
    def grads(params, k):
        return otree.map(lambda x: torch.where(x > 0.3, x, torch.zeros_like(x)), _grads(params, k))

    run_both(
        lambda L: L.tx.scale_by_rss(initial_accumulator_value=0.0, eps=0.0), steps=2, grads_fn=grads
    )


def test_adamw_weight_decay_schedule_matches_optax():
    run_both(lambda L: L.tx.adamw(0.01, weight_decay=_schedule(L)), steps=3)


def test_amsgrad_bias_correction_flags_match_optax():
    run_both(lambda L: L.tx.scale_by_amsgrad(bias_correction_mu=False), steps=3)


def test_tensor_hyperparameters_match_optax():
    """0-d float64 tensor hyperparameters (as inject_hyperparams would give) == optax's floats."""

    def build(L):
        if L.name == "torch":
            t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
            return otx.chain(
                otx.scale_by_adam(t(0.8), t(0.95), t(1e-6)),
                otx.add_decayed_weights(t(0.1)),
                otx.trace(t(0.5)),
                otx.scale(t(-0.01)),
            )
        return optax.chain(
            optax.scale_by_adam(0.8, 0.95, 1e-6),
            optax.add_decayed_weights(0.1),
            optax.trace(0.5),
            optax.scale(-0.01),
        )

    run_both(build)


def test_extra_args_reach_members_like_optax():
    """chain forwards extra keyword arguments; members that do not take them ignore them."""
    params, g = _params(), _grads(_params(), 0)
    tx_t = otx.chain(otx.scale_by_adam(), otx.scale(-0.1))
    tx_j = optax.chain(optax.scale_by_adam(), optax.scale(-0.1))
    u_t, _ = tx_t.update(g, tx_t.init(params), params, value=1.0, unused=2)
    u_j, _ = tx_j.update(to_jax(g), tx_j.init(to_jax(params)), to_jax(params), value=1.0, unused=2)
    assert_trees_close(u_t, u_j, rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------------------------
# update.py
# --------------------------------------------------------------------------------------------


def test_apply_updates_matches_optax():
    """Mixed-precision params keep their dtype. optax adds in the promoted dtype then casts (one
    rounding); optax_torch casts the update then adds (float32 params: within one float32 ulp)."""
    p = make_tree(0)  # float32 + float64 leaves
    u = like_tree(make_tree(0, dtypes=(torch.float64,)), seed=5)  # float64 updates for all
    out = otx.apply_updates(p, u)
    expected = optax.apply_updates(to_jax(p), to_jax(u))
    # casting u (|u| < 1) first costs up to half a float32 ulp of u: atol 6e-8
    assert_trees_close(out, expected, rtol=1.2e-7, atol=6e-8, check_dtype=True)
    same = like_tree(p, seed=5)  # updates of the params' dtypes: exact
    assert_trees_close(
        otx.apply_updates(p, same), optax.apply_updates(to_jax(p), to_jax(same)), rtol=0
    )


def test_apply_updates_mixed_precision_is_correctly_rounded():
    p = make_tree(0, dtypes=(torch.float32,))
    u = like_tree(make_tree(0, dtypes=(torch.float64,)), seed=5)
    expected = optax.apply_updates(to_jax(p), to_jax(u))
    assert_trees_close(otx.apply_updates(p, u), expected, rtol=0, atol=0, check_dtype=True)


def test_apply_updates_keeps_params_without_update():
    """A ``None`` update leaves its parameter as it is (the very same tensor); others are added.
    (optax has no such case: there ``None`` is an empty subtree in both trees.)"""
    p = make_tree(0, dtypes=(torch.float64,))
    u = with_none_like(like_tree(p, seed=5), make_tree(0, with_none=True))
    out = otx.apply_updates(p, u)
    for o, q, v in zip(otree.flatten(out)[0], otree.flatten(p)[0], otree.flatten(u)[0]):
        if v is None:
            assert o is q
        else:
            torch.testing.assert_close(o, q + v, rtol=0, atol=0)


@pytest.mark.parametrize("step_size", [0.0, 0.25, 0.9, 1.0])
def test_incremental_update_matches_optax(step_size):
    new, old = make_tree(1, dtypes=(torch.float64,)), make_tree(2, dtypes=(torch.float64,))
    out = otx.incremental_update(new, old, step_size)
    expected = optax.incremental_update(to_jax(new), to_jax(old), step_size)
    assert_trees_close(out, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("steps", [0, 1, 3, 6, 7])
def test_periodic_update_matches_optax(steps):
    new, old = make_tree(1, dtypes=(torch.float64,)), make_tree(2, dtypes=(torch.float64,))
    out = otx.periodic_update(new, old, torch.tensor(steps), 3)
    expected = optax.periodic_update(to_jax(new), to_jax(old), jnp.asarray(steps), 3)
    assert_trees_close(out, expected, rtol=0, atol=0)


def test_polyak_target_network_loop_matches_optax():
    """20 steps of a target network: incremental + periodic updates interleaved."""
    online = make_tree(1, dtypes=(torch.float64,))
    target_t = make_tree(2, dtypes=(torch.float64,))
    target_j = to_jax(target_t)
    for k in range(STEPS):
        online = otx.apply_updates(online, like_tree(online, seed=50 + k))
        target_t = otx.incremental_update(online, target_t, 0.1)
        target_j = optax.incremental_update(to_jax(online), target_j, 0.1)
        target_t = otx.periodic_update(online, target_t, torch.tensor(k), 5)
        target_j = optax.periodic_update(to_jax(online), target_j, jnp.asarray(k), 5)
        assert_trees_close(target_t, target_j, rtol=RTOL, atol=ATOL)


def _complex_params():
    gen = torch.Generator().manual_seed(3)
    z = torch.complex(
        torch.randn(4, generator=gen, dtype=torch.float64),
        torch.randn(4, generator=gen, dtype=torch.float64),
    )
    return {"z": z, "w": torch.randn(2, 3, generator=gen, dtype=torch.float64)}


def _complex_grads(params, k):
    gen = torch.Generator().manual_seed(100 + k)

    def draw(x):
        if x.is_complex():
            return torch.complex(
                torch.randn(x.shape, generator=gen, dtype=torch.float64),
                torch.randn(x.shape, generator=gen, dtype=torch.float64),
            )
        return torch.randn(x.shape, generator=gen, dtype=torch.float64)

    return otree.map(draw, params)


@pytest.mark.parametrize(
    "name",
    ["scale_by_adam", "scale_by_amsgrad", "scale_by_rss", "scale_by_adamax", "rmsprop", "adagrad"],
)
def test_complex_params_match_optax(name):
    """Complex parameters: second moments take |g|**2 (real), as optax does; maxima compare real
    parts of the (real-valued) moments."""
    run_both(
        lambda L: (
            getattr(L.tx, name)(0.1) if name in ("rmsprop", "adagrad") else getattr(L.tx, name)()
        ),
        params=_complex_params(),
        grads_fn=_complex_grads,
    )
