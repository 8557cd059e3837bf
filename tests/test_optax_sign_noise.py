"""optax_torch against optax: sign-based scalings (signSGD, Signum, Rprop), gradient noise
(add_noise, noisy SGD) and per-example clipping (DP-SGD).

Deterministic names are compared with optax step by step (``tests/optax_ref.py``) in float64 and
float32. Rprop is compared with optax's *state* (optax 0.2.8 emits the previous step as its update,
a bug: https://github.com/google-deepmind/optax/pull/1725) and with ``torch.optim.Rprop``. The
noise is compared by its statistics (another generator than JAX's), its reproducibility from a
seed and its state's serialisation.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import optax
import pytest
import torch
from conftest import assert_trees_close, to_jax
from optax_ref import ATOL, RTOL, grads_tree, inverse_time_schedule, params_tree, run_jit

import optax_torch as otx
from optax_torch import tree as otree

_schedule = inverse_time_schedule


def _fixed_rprop(L, scale_by_rprop_tx):
    """optax's ``scale_by_rprop`` with the fix of optax PR 1725: emit this step's update (which
    optax computes and stores as ``prev_updates``) instead of the previous one."""
    if L.is_torch:
        return scale_by_rprop_tx

    def update(updates, state, params=None):
        _, new_state = scale_by_rprop_tx.update(updates, state, params)
        return new_state.prev_updates, new_state

    return optax.GradientTransformation(scale_by_rprop_tx.init, update)


CASES: dict[str, Any] = {
    "scale_by_sign": lambda L: L.tx.chain(L.tx.scale_by_sign(), L.tx.scale(-0.01)),
    "sign_sgd": lambda L: L.tx.sign_sgd(0.01),
    "sign_sgd_schedule": lambda L: L.tx.sign_sgd(_schedule(L)),
    "signum": lambda L: L.tx.signum(0.01),
    "signum_beta": lambda L: L.tx.signum(_schedule(L), beta=0.5),
    "scale_by_rprop": lambda L: L.tx.chain(
        _fixed_rprop(L, L.tx.scale_by_rprop(0.01)), L.tx.scale(-1.0)
    ),
    "scale_by_rprop_all": lambda L: L.tx.chain(
        _fixed_rprop(
            L,
            L.tx.scale_by_rprop(
                0.05, eta_minus=0.3, eta_plus=1.5, min_step_size=0.01, max_step_size=0.1
            ),
        ),
        L.tx.scale(-1.0),
    ),
}

NONE_CASES = ["sign_sgd", "signum", "scale_by_rprop"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_optax_f64(name):
    run_jit(CASES[name])


# float32: one case per name (the float64 cases cover the options)
F32_CASES = ["scale_by_sign", "sign_sgd_schedule", "signum_beta", "scale_by_rprop_all"]


@pytest.mark.parametrize("name", F32_CASES)
def test_matches_optax_f32(name):
    run_jit(CASES[name], steps=8, dtype=torch.float32)


@pytest.mark.parametrize("name", NONE_CASES)
def test_matches_optax_with_none_leaves(name):
    run_jit(CASES[name], steps=5, with_none=True)


def _grads_with_sign_flips(params, k):
    """Gradients whose signs flip on some leaves every other step and are exactly zero on others
    (to exercise every branch of Rprop)."""
    g = grads_tree(params, k)
    flip = -1.0 if k % 2 else 1.0
    return {
        "scalar": torch.zeros_like(g["scalar"]),
        "empty": g["empty"],
        "dense": otree.map(lambda x: flip * x.abs(), g["dense"]),
        "seq": otree.map(lambda x: x.abs() + 0.1, g["seq"]),
        "pair": g["pair"],
    }


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rprop_sign_flips_match_fixed_optax(dtype):
    def build(L):
        return L.tx.chain(
            _fixed_rprop(L, L.tx.scale_by_rprop(0.1, max_step_size=0.5)), L.tx.scale(-1.0)
        )

    run_jit(build, steps=12, grads_fn=_grads_with_sign_flips, dtype=dtype)


def test_rprop_alias_is_scale_by_rprop_then_descent():
    params = params_tree()
    tx_a = otx.rprop(0.02, eta_minus=0.4)
    tx_b = otx.chain(otx.scale_by_rprop(0.02, eta_minus=0.4), otx.scale(-1.0))
    st_a, st_b = tx_a.init(params), tx_b.init(params)
    for k in range(4):
        g = grads_tree(params, k)
        u_a, st_a = tx_a.update(g, st_a, params)
        u_b, st_b = tx_b.update(g, st_b, params)
        assert_trees_close(u_a, u_b, rtol=0, atol=0)
        assert_trees_close(st_a, st_b, rtol=0, atol=0)


def test_rprop_differs_from_optax_only_by_the_one_step_lag():
    """optax 0.2.8's update at step k is our update at step k-1 masked by step k's sign flips
    (zero at the first step). Documents the deviation, so that a fixed optax shows up here."""
    params = params_tree()
    ours, theirs = otx.rprop(0.01), optax.rprop(0.01)
    st_o, st_j = ours.init(params), theirs.init(to_jax(params))
    for k in range(6):
        g = _grads_with_sign_flips(params, k)
        prev = st_o[0].prev_updates  # our last step (before the descent sign), zero at first
        u_o, st_o = ours.update(g, st_o, params)
        u_j, st_j = theirs.update(to_jax(g), st_j, to_jax(params))
        # optax's update: our previous step, zeroed where the gradient's sign flipped now
        expected = otree.map(lambda p, x: torch.where(x * p < 0, 0.0, -p), prev, g)
        assert_trees_close(expected, u_j, rtol=RTOL, atol=ATOL)
        assert_trees_close(st_o, st_j, rtol=RTOL, atol=ATOL)  # the states agree
        assert_trees_close(u_o, otree.scale(-1.0, st_o[0].prev_updates), rtol=0, atol=0)


def test_rprop_matches_torch_optim():
    """Our rprop steps like ``torch.optim.Rprop`` (same defaults)."""
    target = torch.linspace(-2.0, 3.0, 7, dtype=torch.float64)
    x_ref = torch.zeros(7, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Rprop([x_ref], lr=0.05)
    x = torch.zeros(7, dtype=torch.float64)
    tx = otx.rprop(0.05)
    state = tx.init(x)
    for _ in range(25):
        opt.zero_grad()
        loss = ((x_ref - target) ** 4).sum()
        loss.backward()
        opt.step()
        g = 4 * (x - target) ** 3
        u, state = tx.update(g, state, x)
        x = otx.apply_updates(x, u)
        torch.testing.assert_close(x, x_ref.detach(), rtol=1e-12, atol=1e-14)


COMPILE_CASES: dict[str, Any] = {
    "sign_sgd": lambda: otx.sign_sgd(0.01),
    "signum": lambda: otx.signum(0.01),
    "rprop": lambda: otx.rprop(0.01),
}


@pytest.mark.parametrize("name", sorted(COMPILE_CASES))
def test_compiles(name):
    """Two steps under ``torch.compile(fullgraph=True)`` give the eager results."""
    tx = COMPILE_CASES[name]()
    g = torch.Generator().manual_seed(0)
    params = {
        "w": torch.rand((2, 3), generator=g, dtype=torch.float64),
        "b": torch.zeros(3, dtype=torch.float64),
    }
    compiled = torch.compile(tx.update, backend="aot_eager", fullgraph=True)
    st_e = st_c = tx.init(params)
    for _ in range(2):
        grads = otree.map(lambda x: torch.randn(x.shape, generator=g, dtype=x.dtype), params)
        u_e, st_e = tx.update(grads, st_e, params)
        u_c, st_c = compiled(grads, st_c, params)
        assert_trees_close(u_c, u_e, rtol=RTOL, atol=ATOL)
        assert_trees_close(st_c, st_e, rtol=RTOL, atol=ATOL)


def test_tensor_hyperparameters_keep_dtypes():
    params = params_tree(dtype=torch.float32)
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    txs = [
        otx.sign_sgd(t(0.01)),
        otx.signum(t(0.01), t(0.9)),
        otx.rprop(t(0.01), t(0.5), t(1.2), t(1e-6), t(50.0)),
    ]
    for tx in txs:
        state = tx.init(params)
        for k in range(2):
            grads = grads_tree(params, k)
            u, state = tx.update(grads, state, params)
            for a, g in zip(otree.leaves(u), otree.leaves(grads)):
                assert a.dtype == g.dtype


VALIDATION = [
    (lambda v: otx.scale_by_rprop(v), "learning_rate"),
    (lambda v: otx.scale_by_rprop(0.1, eta_minus=v), "eta_minus"),
    (lambda v: otx.scale_by_rprop(0.1, eta_plus=v), "eta_plus"),
    (lambda v: otx.scale_by_rprop(0.1, min_step_size=v), "min_step_size"),
    (lambda v: otx.scale_by_rprop(0.1, max_step_size=v), "max_step_size"),
    (lambda v: otx.rprop(0.1, eta_plus=v), "eta_plus"),
    (lambda v: otx.signum(0.1, beta=v), "beta"),
    (lambda v: otx.add_noise(v, 0.55), "eta"),
    (lambda v: otx.add_noise(0.01, v), "gamma"),
    (lambda v: otx.noisy_sgd(0.1, eta=v), "eta"),
]


@pytest.mark.parametrize(("make", "arg"), VALIDATION)
def test_validation(make, arg):
    with pytest.raises(ValueError, match=arg):
        make(-1.0)
    with pytest.raises(ValueError, match=arg):
        make(float("nan"))


@pytest.mark.parametrize("make", [otx.sign_sgd, otx.signum, otx.noisy_sgd])
def test_learning_rate_validation(make):
    make(-0.1)  # legal, as in optax
    with pytest.raises(ValueError, match="learning_rate"):
        make(float("nan"))


# --------------------------------------------------------------------------------------------
# add_noise, noisy_sgd
# --------------------------------------------------------------------------------------------


def test_add_noise_state_fields_are_optax():
    assert otx.AddNoiseState._fields == optax.AddNoiseState._fields


@pytest.mark.parametrize("name", ["add_noise", "noisy_sgd"])
def test_zero_variance_matches_optax(name):
    """With ``eta=0`` the noise vanishes: everything but the generator state equals optax.
    (States are not compared: ``rng_key`` is a torch generator state here, a JAX key there.)"""

    def build(L):
        if name == "add_noise":
            return L.tx.add_noise(0.0, 0.55, 3)
        return L.tx.noisy_sgd(_schedule(L), eta=0.0, key=3)

    run_jit(build, steps=3, compare_state=False, with_none=True)


def _noise_stats(updates):
    x = np.concatenate([np.asarray(v, dtype=np.float64).reshape(-1) for v in updates.values()])
    return x.mean(), x.std(), x.size


@pytest.mark.parametrize("lib", ["torch", "jax"])
def test_add_noise_statistics(lib):
    """At step k the noise is N(0, eta / k**gamma) in both libraries (k = 1, 2, ...)."""
    eta, gamma = 0.5, 0.55
    if lib == "torch":
        tx, zeros = otx.add_noise(eta, gamma, key=1), torch.zeros
    else:
        import jax.numpy as jnp

        tx, zeros = optax.add_noise(eta, gamma, key=1), jnp.zeros
    grads = {
        "a": zeros((200, 300), dtype=torch.float64 if lib == "torch" else "float64"),
        "b": zeros((20_000,), dtype=torch.float32 if lib == "torch" else "float32"),
    }
    state = tx.init(grads)
    for k in range(1, 5):
        u, state = tx.update(grads, state)
        mean, std, n = _noise_stats(u)
        expected_std = (eta / k**gamma) ** 0.5
        assert abs(mean) < 5 * expected_std / n**0.5
        assert abs(std / expected_std - 1) < 0.02
        assert int(state.count) == k


def test_add_noise_dtypes_and_none_leaves():
    params = params_tree(with_none=True, dtype=torch.float32)
    tx = otx.add_noise(0.1, 0.55, key=0)
    u, _ = tx.update(grads_tree(params, 0), tx.init(params))
    for a, p in zip(otree.flatten(u)[0], otree.flatten(params)[0]):
        assert (a is None) == (p is None)
        if a is not None:
            assert a.dtype == p.dtype and a.shape == p.shape


def _run(tx, params, state, steps, start=0):
    out = []
    for k in range(start, start + steps):
        u, state = tx.update(grads_tree(params, k), state, params)
        out.append(u)
    return out, state


@pytest.mark.parametrize(
    "make", [lambda key: otx.add_noise(0.1, 0.55, key), lambda key: otx.noisy_sgd(0.1, key=key)]
)
def test_noise_is_reproducible_from_the_key(make):
    params = params_tree()
    a, _ = _run(make(7), params, make(7).init(params), 3)
    b, _ = _run(make(7), params, make(7).init(params), 3)
    c, _ = _run(make(8), params, make(8).init(params), 3)
    for x, y in zip(a, b):
        assert_trees_close(x, y, rtol=0, atol=0)
    assert not torch.equal(a[0]["dense"]["w"], c[0]["dense"]["w"])
    assert not torch.equal(a[0]["dense"]["w"], a[1]["dense"]["w"])  # fresh noise every step


def test_deprecated_seed_argument():
    params = params_tree()
    with pytest.warns(DeprecationWarning, match="seed"):
        tx = otx.noisy_sgd(0.1, seed=4)
    a, _ = _run(tx, params, tx.init(params), 2)
    b, _ = _run(otx.noisy_sgd(0.1, key=4), params, tx.init(params), 2)
    for x, y in zip(a, b):
        assert_trees_close(x, y, rtol=0, atol=0)
    with pytest.raises(ValueError, match="seed"), pytest.warns(DeprecationWarning):
        otx.add_noise(0.1, 0.5, key=1, seed=2)


def test_noise_state_round_trips_through_torch_save():
    """The state (generator state included) loads with ``weights_only=True`` and continues the
    same noise sequence."""
    params = params_tree()
    tx = otx.noisy_sgd(0.1, key=5)
    _, state = _run(tx, params, tx.init(params), 2)
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    assert_trees_close(loaded, state, rtol=0, atol=0)
    cont_a, _ = _run(tx, params, state, 2, start=2)
    cont_b, _ = _run(tx, params, loaded, 2, start=2)
    for x, y in zip(cont_a, cont_b):
        assert_trees_close(x, y, rtol=0, atol=0)


def test_noisy_sgd_is_descent_on_noisy_gradients():
    """noisy_sgd(lr) == chain(add_noise, scale_by_learning_rate(lr)), same key: same updates."""
    params = params_tree()
    a = otx.noisy_sgd(0.3, eta=0.2, gamma=0.4, key=2)
    b = otx.chain(otx.add_noise(0.2, 0.4, 2), otx.scale(-0.3))
    ua, _ = _run(a, params, a.init(params), 3)
    ub, _ = _run(b, params, b.init(params), 3)
    for x, y in zip(ua, ub):
        assert_trees_close(x, y, rtol=1e-15, atol=0)


# --------------------------------------------------------------------------------------------
# per-example clipping
# --------------------------------------------------------------------------------------------

BATCH = 4


def _batch_grads(params, k):
    """Per-example gradients: every leaf gets a leading batch axis of size 4; example 0 is zero
    (no clipping, no 0/0), example 1 large (always clipped)."""
    g = torch.Generator().manual_seed(500 + k)

    def leaf(x):
        b = torch.rand((BATCH, *x.shape), generator=g, dtype=torch.float64).to(x.dtype) * 2 - 1
        b[0] = 0
        b[1] *= 10
        return b

    return otree.map(leaf, params)


def _per_example(L, fn):
    """A transformation whose update is the clipped sum of the per-example gradients."""
    return L.tx.stateless(lambda g, p: fn(L)(g)[0])


def _global(clip):
    return lambda L: lambda g: L.tx.per_example_global_norm_clip(g, clip)


def _layer(clip, uniform):
    return lambda L: lambda g: L.tx.per_example_layer_norm_clip(g, clip, uniform)


PER_EXAMPLE = {
    "global": _global(1.5),
    "global_inf": _global(float("inf")),
    "global_zero": _global(0.0),
    "layer_uniform": _layer(1.5, True),
    "layer_sizes": _layer(2.0, False),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", sorted(PER_EXAMPLE))
def test_per_example_clip_matches_optax(name, dtype):
    run_jit(
        lambda L: _per_example(L, PER_EXAMPLE[name]), steps=3, grads_fn=_batch_grads, dtype=dtype
    )


@pytest.mark.parametrize("name", ["global", "layer_sizes"])
def test_per_example_clip_with_none_leaves_matches_optax(name):
    run_jit(
        lambda L: _per_example(L, PER_EXAMPLE[name]), steps=2, grads_fn=_batch_grads, with_none=True
    )


@pytest.mark.parametrize("clip", [0.0, 3.0, float("inf")])
def test_per_example_clip_counts_match_optax(clip):
    g = _batch_grads(params_tree(), 0)
    s_t, n_t = otx.per_example_global_norm_clip(g, clip)
    s_j, n_j = optax.per_example_global_norm_clip(to_jax(g), clip)
    assert n_t.dtype == torch.int32 and int(n_t) == int(n_j)
    for uniform in (True, False):
        s_t, n_t = otx.per_example_layer_norm_clip(g, clip, uniform)
        s_j, n_j = optax.per_example_layer_norm_clip(to_jax(g), clip, uniform)
        assert_trees_close(s_t, s_j, rtol=RTOL, atol=ATOL)
        assert_trees_close(n_t, n_j, rtol=0, atol=0)


def test_per_example_clip_documented_example():
    g = [torch.tensor([[0.0, 0, 0], [0, 3, 4], [4, 0, 3], [3, 4, 0]])]
    for clip, total, count in [(float("inf"), 7.0, 0), (0.0, 0.0, 3), (1.25, 1.75, 3)]:
        s, n = otx.per_example_global_norm_clip(g, clip)
        torch.testing.assert_close(s[0], torch.full((3,), total))
        assert int(n) == count
        s, n = otx.per_example_layer_norm_clip(g, clip)
        torch.testing.assert_close(s[0], torch.full((3,), total))
        assert int(n[0]) == count


def test_per_example_clip_needs_a_batch_axis():
    for fn in (otx.per_example_global_norm_clip, otx.per_example_layer_norm_clip):
        with pytest.raises(ValueError, match="batch"):
            fn({"a": torch.ones(3, 2), "b": torch.ones(2, 2)}, 1.0)
        with pytest.raises(ValueError, match="batch"):
            fn({"a": torch.ones(3, 2), "b": torch.tensor(1.0)}, 1.0)
    with pytest.raises(ValueError, match="l2_norm_clip"):
        otx.per_example_global_norm_clip([torch.ones(2, 2)], -1.0)
    with pytest.raises(ValueError, match="global_l2_norm_clip"):
        otx.per_example_layer_norm_clip([torch.ones(2, 2)], float("nan"))
