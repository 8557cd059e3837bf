"""Wrappers (transforms of transforms) against optax: MultiSteps (+ skip functions), lookahead,
apply_if_finite, apply_every, flatten, masked / MaskedNode.

Every case runs in float64 (tight) and float32 through the shared harness :func:`run_both`, plus
the behaviours optax documents beyond numbers (exact zeros between MultiSteps emits, skipped
mini-steps leaving the state untouched, ...) and the eager/traced equivalence of MultiSteps.
"""

from __future__ import annotations

import functools
import io

import jax
import jax.numpy as jnp
import optax
import pytest
import torch
from conftest import Pair, assert_trees_close, assert_trees_equal, make_tree, to_jax
from optax_ref import TORCH, grads_tree, params_tree, run_both

import optax_torch as otx
from optax_torch import tree as otree
from optax_torch.wrappers import multi_steps as ms_module

DTYPES = [torch.float64, torch.float32]
DTYPE_IDS = ["f64", "f32"]


def _nan_grads(bad_steps, value=float("nan")):
    """Gradients of the harness with ``value`` injected into one leaf at ``bad_steps``."""

    def grads(params, k):
        g = grads_tree(params, k)
        if k in bad_steps:
            w = g["dense"]["w"].clone()
            w[0, 1] = value
            g["dense"]["w"] = w
        return g

    return grads


def _jit(L, tx):
    """optax's side under ``jax.jit``: eager optax wrappers re-trace their ``lax.cond`` branches
    (fresh closures) on every call, which costs seconds per step."""
    if L.is_torch:
        return tx
    return optax.GradientTransformationExtraArgs(jax.jit(tx.init), jax.jit(tx.update))


def _roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# --------------------------------------------------------------------------------------------
# MultiSteps
# --------------------------------------------------------------------------------------------


def _multi(k, mean=True, skip=None, inner="adam", acc=None):
    def build(L):
        inner_tx = L.tx.adam(0.1) if inner == "adam" else L.tx.sgd(0.1, momentum=0.9)
        kw = {} if acc is None else {"accumulator_dtype": getattr(L, acc)}
        skip_fn = None if skip is None else getattr(L.tx, skip)
        opt = L.tx.MultiSteps(inner_tx, k, use_grad_mean=mean, should_skip_update_fn=skip_fn, **kw)
        return _jit(L, opt.gradient_transformation())

    return build


# (k, use_grad_mean, dtype): every k and mean/sum option in both dtypes, pairwise (optax's side
# is jitted per case, which dominates the run time).
MULTI_CASES = [
    (1, True, torch.float64),
    (3, True, torch.float64),
    (3, False, torch.float64),
    (1, False, torch.float32),
    (3, True, torch.float32),
    (3, False, torch.float32),
]


@pytest.mark.parametrize(
    ("k", "mean", "dtype"),
    MULTI_CASES,
    ids=[f"k{k}-{'mean' if m else 'sum'}-{str(d)[6:]}" for k, m, d in MULTI_CASES],
)
def test_multi_steps_matches_optax(k, mean, dtype):
    run_both(_multi(k, mean), dtype=dtype)


def test_multi_steps_accumulator_dtype_matches_optax():
    run_both(_multi(3, inner="sgd", acc="float64"), dtype=torch.float32, steps=8)


@pytest.mark.parametrize(
    ("k", "dtype"), [(3, torch.float64), (1, torch.float32)], ids=["k3-f64", "k1-f32"]
)
def test_multi_steps_skip_not_finite_matches_optax(k, dtype):
    """NaN / inf gradients at chosen mini-steps are rejected as in optax; skip_state compared."""
    bad = {0, 2, 5, 6, 11}
    grads = _nan_grads(bad, float("nan") if k == 3 else float("inf"))
    run_both(_multi(k, skip="skip_not_finite"), grads_fn=grads, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_multi_steps_skip_large_updates_matches_optax(dtype):
    def build(L):
        skip = functools.partial(L.tx.skip_large_updates, max_squared_norm=7.0)
        return _jit(L, L.tx.MultiSteps(L.tx.adam(0.1), 2, should_skip_update_fn=skip))

    def grads(params, k):  # some steps large enough to be rejected
        g = grads_tree(params, k)
        return otree.scale(3.0, g) if k % 4 == 1 else g

    run_both(build, grads_fn=grads, dtype=dtype, steps=10)


def test_multi_steps_schedule_and_none_leaves_match_optax():
    def build(L):
        every_k = lambda step: 1 + step % 3  # noqa: E731 (the same in both libraries)
        return _jit(L, L.tx.MultiSteps(L.tx.adam(0.1), every_k))

    run_both(build, steps=12)
    run_both(_multi(2, skip="skip_not_finite"), with_none=True, grads_fn=_nan_grads({3}), steps=8)


def test_multi_steps_extra_args_reach_inner():
    class Seen:
        value = None

    def inner():
        def update_fn(updates, state, params=None, *, value=None):
            Seen.value = value
            return updates, state

        return otx.GradientTransformationExtraArgs(otx.init_empty_state, update_fn)

    opt = otx.MultiSteps(inner(), 1)
    p = {"w": torch.ones(2)}
    opt.update(p, opt.init(p), p, value=3.0)
    assert Seen.value == 3.0


def test_multi_steps_zeros_between_emits_and_has_updated():
    """Between emits the updates are exact zeros (even if the inner optimizer would give NaN);
    the inner state changes only on emits; ``has_updated`` is True exactly after an emit."""
    k = 3
    opt = otx.MultiSteps(otx.chain(otx.scale_by_adam(), otx.scale(-1.0)), k)
    params = params_tree()
    state = opt.init(params)
    assert not bool(opt.has_updated(state))
    for step in range(7):
        inner_before = state.inner_opt_state
        updates, state = opt.update(grads_tree(params, step), state, params)
        emitted = step % k == k - 1
        assert bool(opt.has_updated(state)) == emitted
        if emitted:
            assert any(bool((x != 0).any()) for x in otree.leaves(updates) if x.numel())
            assert int(state.gradient_step) == (step + 1) // k
            assert all(bool((a == 0).all()) for a in otree.leaves(state.acc_grads))
        else:
            for x in otree.leaves(updates):
                assert bool((x == 0).all()) and not bool(torch.signbit(x).any())
            assert state.inner_opt_state is inner_before  # eager: inner not even run
        assert int(state.mini_step) == (step + 1) % k


def test_multi_steps_inner_not_run_eagerly_on_silent_mini_steps():
    calls = []

    def counting():
        def update_fn(updates, state, params=None):
            calls.append(1)
            return updates, state

        return otx.GradientTransformation(otx.init_empty_state, update_fn)

    opt = otx.MultiSteps(counting(), 4)
    p = {"w": torch.ones(2)}
    state = opt.init(p)
    for _ in range(8):
        _, state = opt.update(p, state, p)
    assert len(calls) == 2


def _run_multi(opt, params, steps, grads_fn):
    state = opt.init(params)
    out = []
    for step in range(steps):
        updates, state = opt.update(grads_fn(params, step), state, params)
        params = otx.apply_updates(params, updates)
        out.append((updates, state))
    return out


@pytest.mark.parametrize("skip", [None, "skip_not_finite"], ids=["no_skip", "skip_not_finite"])
@pytest.mark.parametrize(
    ("mean", "every_k"),
    [(True, 3), (False, 3), (True, lambda step: 1 + step % 3)],
    ids=["mean", "sum", "mean-schedule"],
)
def test_multi_steps_eager_and_traced_paths_identical(monkeypatch, mean, every_k, skip):
    """The eager (Python-branching) path and the branch-free path give the same bits."""

    def make():
        skip_fn = None if skip is None else otx.skip_not_finite
        return otx.MultiSteps(
            otx.adam(0.1), every_k, use_grad_mean=mean, should_skip_update_fn=skip_fn
        )

    grads = _nan_grads({4, 5}) if skip else grads_tree
    params = params_tree(dtype=torch.float32)
    eager = _run_multi(make(), params, 10, grads)
    monkeypatch.setattr(ms_module, "_FORCE_TRACED", True)
    traced = _run_multi(make(), params, 10, grads)
    for (ue, se), (ut, st) in zip(eager, traced):
        assert_trees_equal(ue, ut)
        assert_trees_equal(se, st)


def test_multi_steps_compiles_and_matches_eager():
    opt = otx.MultiSteps(otx.adam(0.1), 3, should_skip_update_fn=otx.skip_not_finite)
    params = {"w": torch.linspace(-1, 1, 6).reshape(2, 3), "b": torch.ones(3)}
    step = torch.compile(opt.update, backend="aot_eager", fullgraph=True)
    s_e = s_c = opt.init(params)
    for k in range(5):
        g = otree.map(lambda x: x * (0.5 + k) - 0.1, params)
        if k == 1:
            g = {"w": g["w"], "b": torch.tensor([1.0, float("nan"), 0.0])}
        u_e, s_e = opt.update(g, s_e, params)
        u_c, s_c = step(g, s_c, params)
        assert_trees_close(u_c, u_e, rtol=1e-6, atol=1e-7)
        assert_trees_close(s_c, s_e, rtol=1e-6, atol=1e-7)
    assert int(s_e.gradient_step) == 1 and int(s_e.mini_step) == 1  # 5 mini-steps, 1 skipped


def test_multi_steps_skip_leaves_state_untouched():
    opt = otx.MultiSteps(otx.adam(0.1), 2, should_skip_update_fn=otx.skip_not_finite)
    p = {"w": torch.ones(3)}
    state = opt.init(p)
    _, state = opt.update({"w": torch.ones(3)}, state, p)
    u, new = opt.update({"w": torch.tensor([1.0, float("inf"), float("nan")])}, state, p)
    assert_trees_equal(u, {"w": torch.zeros(3)})
    assert_trees_equal(new._replace(skip_state=()), state._replace(skip_state=()))
    assert bool(new.skip_state["should_skip"]) and int(new.skip_state["num_not_finite"]) == 2


def test_multi_steps_state_serialises():
    opt = otx.MultiSteps(otx.adam(0.1), 3, should_skip_update_fn=otx.skip_not_finite)
    p = {"w": torch.ones(2, 3), "b": [torch.zeros(3), None]}
    state = opt.init(p)
    _, state = opt.update(grads_tree(p, 0), state, p)
    assert_trees_equal(_roundtrip(state), state)


def test_multi_steps_validation():
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="every_k_schedule"):
            otx.MultiSteps(otx.sgd(0.1), bad)  # type: ignore[arg-type]
    otx.MultiSteps(otx.sgd(0.1), lambda step: 2)  # a schedule is accepted

    def bad_skip(updates, gradient_step, params):
        return torch.tensor(1.0), ()

    opt = otx.MultiSteps(otx.sgd(0.1), 2, should_skip_update_fn=bad_skip)
    p = {"w": torch.ones(2)}
    with pytest.raises(ValueError, match="boolean scalar"):
        opt.update(p, opt.init(p), p)


def test_multi_steps_inner_opt_and_gradient_transformation():
    inner = otx.sgd(0.1)
    opt = otx.MultiSteps(inner, 2)
    assert opt.inner_opt.init is inner.init
    tx = opt.gradient_transformation()
    assert isinstance(tx, otx.GradientTransformation)
    p = {"w": torch.ones(2)}
    chained = otx.chain(tx, otx.scale(2.0))
    u, _ = chained.update(p, chained.init(p), p)
    assert_trees_equal(u, {"w": torch.zeros(2)})


def test_skip_functions_match_optax():
    g = make_tree(0, dtypes=(torch.float64,))
    g["dense"]["w"] = torch.tensor([[1.0, float("nan"), 2.0], [float("inf"), 0.0, 1.0]])
    gs = torch.tensor(3, dtype=torch.int32)
    for ours, theirs in [
        (otx.skip_not_finite, optax.skip_not_finite),
        (
            functools.partial(otx.skip_large_updates, max_squared_norm=5.0),
            functools.partial(optax.skip_large_updates, max_squared_norm=5.0),
        ),
    ]:
        for tree_ in (g, make_tree(1, dtypes=(torch.float64,))):
            out_t = ours(tree_, gs, None)
            out_j = theirs(to_jax(tree_), jnp.asarray(3, jnp.int32), None)
            assert_trees_close(out_t, out_j, rtol=1e-12)


# --------------------------------------------------------------------------------------------
# lookahead
# --------------------------------------------------------------------------------------------


def _lookahead(inner="adam", reset=False, sync_period=3, alpha=0.5, lr=0.05):
    def build(L):
        fast = L.tx.adam(lr) if inner == "adam" else L.tx.sgd(lr, momentum=0.9)
        tx = L.tx.lookahead(fast, sync_period, alpha, reset_state=reset)
        if L.is_torch:
            return tx

        def update(updates, state, params):
            # The harness hands optax our LookaheadParams class (a NamedTuple of JAX arrays);
            # give its updates the same class so that optax.apply_updates sees one structure.
            new, state = tx.update(updates, state, optax.LookaheadParams(*params))
            return type(params)(*new), state

        return _jit(L, optax.GradientTransformation(tx.init, update))

    return build


def _synced(dtype=torch.float64, with_none=False):
    return otx.LookaheadParams.init_synced(params_tree(with_none, dtype))


def _fast_grads(params, k):
    return grads_tree(params.fast, k)


LOOKAHEAD_CASES = [
    ("adam", False, torch.float64),
    ("adam", True, torch.float64),
    ("sgd", True, torch.float64),
    ("sgd", False, torch.float32),
    ("adam", True, torch.float32),
]


@pytest.mark.parametrize(
    ("inner", "reset", "dtype"),
    LOOKAHEAD_CASES,
    ids=[f"{i}-{'reset' if r else 'keep'}-{str(d)[6:]}" for i, r, d in LOOKAHEAD_CASES],
)
def test_lookahead_matches_optax(inner, reset, dtype):
    run_both(_lookahead(inner, reset), params=_synced(dtype), grads_fn=_fast_grads, dtype=dtype)


def test_lookahead_sync_every_step_and_none_leaves_match_optax():
    run_both(
        _lookahead("sgd", True, sync_period=1, alpha=0.3, lr=0.1),
        params=_synced(),
        grads_fn=_fast_grads,
        steps=6,
    )
    run_both(_lookahead("adam", True), params=_synced(with_none=True), grads_fn=_fast_grads)


def _regression_problem(dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, generator=gen, dtype=dtype)
    w_true = torch.tensor([[1.0, -2.0], [0.5, 0.0], [-1.0, 3.0]], dtype=dtype)
    y = x @ w_true + 0.1 * torch.randn(32, 2, generator=gen, dtype=dtype)

    def loss(p):
        return ((x @ p["w"] + p["b"] - y) ** 2).mean()

    def grads(params, k):  # autograd at the fast weights, on minibatch k
        fast = otree.map(lambda t: t.detach().requires_grad_(True), params.fast)
        rows = slice(8 * (k % 4), 8 * (k % 4) + 8)
        value = ((x[rows] @ fast["w"] + fast["b"] - y[rows]) ** 2).mean()
        gw, gb = torch.autograd.grad(value, [fast["w"], fast["b"]])
        return {"w": gw, "b": gb}

    init = {"w": torch.zeros(3, 2, dtype=dtype), "b": torch.zeros(2, dtype=dtype)}
    return loss, grads, init


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("reset", [False, True], ids=["keep", "reset"])
def test_lookahead_training_trajectory_matches_optax(reset, dtype):
    """Linear regression trained for 30 steps with autograd gradients at the fast weights: the
    fast and slow parameter trajectories equal optax's, and the slow weights learn."""
    loss, grads, init = _regression_problem(dtype)
    params = otx.LookaheadParams.init_synced(init)
    final = run_both(
        _lookahead("adam", reset, sync_period=5, alpha=0.5, lr=0.3),
        params=params,
        grads_fn=grads,
        dtype=dtype,
        steps=30,
    )
    assert float(loss(final.slow)) < 0.5 * float(loss(init))
    # After a synchronisation (30 = 6 * 5 steps) fast and slow weights coincide.
    assert_trees_close(final.fast, final.slow, rtol=1e-6, atol=1e-7)


def test_lookahead_update_is_the_two_loop_algorithm():
    """k fast SGD steps then theta += alpha (phi - theta), phi = theta: the paper's loops."""
    k, alpha, lr = 3, 0.4, 0.1
    opt = otx.lookahead(otx.sgd(lr), k, alpha)
    target = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    params = otx.LookaheadParams.init_synced({"w": torch.zeros(3, dtype=torch.float64)})
    state = opt.init(params)
    slow = fast = torch.zeros(3, dtype=torch.float64)
    for step in range(9):
        grad = 2 * (fast - target)
        updates, state = opt.update({"w": grad}, state, params)
        params = otx.apply_updates(params, updates)
        fast = fast - lr * grad
        if step % k == k - 1:
            slow = slow + alpha * (fast - slow)
            fast = slow
        torch.testing.assert_close(params.fast["w"], fast, rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(params.slow["w"], slow, rtol=1e-14, atol=1e-14)


def test_lookahead_reset_state_resets_fast_state_on_sync():
    opt = otx.lookahead(otx.adam(0.1), 2, 0.5, reset_state=True)
    params = otx.LookaheadParams.init_synced({"w": torch.ones(3)})
    state = opt.init(params)
    _, state = opt.update({"w": torch.ones(3)}, state, params)
    assert int(otree.get(state.fast_state, "count")) == 1
    _, state = opt.update({"w": torch.ones(3)}, state, params)
    assert_trees_equal(state.fast_state, opt.init(params).fast_state)
    assert int(state.steps_since_sync) == 0


def test_lookahead_init_with_plain_params_and_serialises(caplog):
    opt = otx.lookahead(otx.adam(0.1), 2, 0.5)
    p = {"w": torch.ones(3)}
    with caplog.at_level("WARNING"):
        state = opt.init(p)
    assert "fast" in caplog.text
    assert_trees_equal(state, opt.init(otx.LookaheadParams.init_synced(p)))
    assert_trees_equal(_roundtrip(state), state)


def test_lookahead_compiles():
    opt = otx.lookahead(otx.adam(0.1), 2, 0.5, reset_state=True)
    params = otx.LookaheadParams.init_synced({"w": torch.linspace(-1, 1, 4), "b": torch.ones(2)})
    step = torch.compile(opt.update, backend="aot_eager", fullgraph=True)
    s_e = s_c = opt.init(params)
    p_e = p_c = params
    for k in range(4):
        g = otree.map(lambda x: x * (0.5 + k), p_e.fast)
        u_e, s_e = opt.update(g, s_e, p_e)
        u_c, s_c = step(g, s_c, p_c)
        p_e, p_c = otx.apply_updates(p_e, u_e), otx.apply_updates(p_c, u_c)
        assert_trees_close(p_c, p_e, rtol=1e-6, atol=1e-7)
        assert_trees_close(s_c, s_e, rtol=1e-6, atol=1e-7)


def test_lookahead_validation():
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="sync_period"):
            otx.lookahead(otx.sgd(0.1), bad, 0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="slow_step_size"):
        otx.lookahead(otx.sgd(0.1), 2, float("nan"))


# --------------------------------------------------------------------------------------------
# apply_if_finite
# --------------------------------------------------------------------------------------------


def _if_finite(max_errors, inner="adam"):
    def build(L):
        tx = L.tx.adam(0.1) if inner == "adam" else L.tx.sgd(0.1, momentum=0.9)
        return _jit(L, L.tx.apply_if_finite(tx, max_errors))

    return build


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_apply_if_finite_matches_optax(dtype):
    """NaN at steps 2, 5, 6 (skipped: fewer than 3 in a row), inf at 9 (skipped)."""

    def grads(params, k):
        if k == 9:
            return _nan_grads({9}, float("inf"))(params, k)
        return _nan_grads({2, 5, 6})(params, k)

    run_both(_if_finite(2), grads_fn=grads, dtype=dtype, steps=12)


def test_apply_if_finite_gives_up_like_optax():
    """Three NaN steps in a row with max_consecutive_errors=2: the third is applied (NaN params
    from then on, in both libraries); with_none leaves too."""
    run_both(_if_finite(2, "sgd"), grads_fn=_nan_grads({3, 4, 5}), steps=7, with_none=True)
    run_both(_if_finite(0, "sgd"), grads_fn=_nan_grads({1}), steps=3, dtype=torch.float32)


def test_apply_if_finite_skips_exactly():
    opt = otx.apply_if_finite(otx.adam(0.1), 1)
    p = {"w": torch.ones(3), "b": None}
    state = opt.init(p)
    _, state = opt.update({"w": torch.ones(3), "b": None}, state, p)
    u, new = opt.update({"w": torch.tensor([1.0, float("nan"), 0.0]), "b": None}, state, p)
    assert_trees_equal(u, {"w": torch.zeros(3), "b": None})
    assert_trees_equal(new.inner_state, state.inner_state)
    assert (int(new.notfinite_count), bool(new.last_finite), int(new.total_notfinite)) == (
        1,
        False,
        1,
    )
    _, new = opt.update({"w": torch.ones(3), "b": None}, new, p)
    assert (int(new.notfinite_count), bool(new.last_finite), int(new.total_notfinite)) == (
        0,
        True,
        1,
    )
    assert_trees_equal(_roundtrip(new), new)


# Compilation of apply_if_finite, apply_every and flatten is checked catalogue-wide
# (tests/test_catalogue.py::test_compiled_update_equals_eager).


def test_apply_if_finite_validation():
    with pytest.raises(ValueError, match="max_consecutive_errors"):
        otx.apply_if_finite(otx.sgd(0.1), -1)


# --------------------------------------------------------------------------------------------
# apply_every
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("k", [1, 3])
def test_apply_every_matches_optax(k, dtype):
    run_both(lambda L: L.tx.chain(L.tx.apply_every(k), L.tx.sgd(0.1)), dtype=dtype)


def test_apply_every_none_leaves_and_tensor_k_match_optax():
    run_both(lambda L: L.tx.apply_every(3), with_none=True, steps=7)

    def build(L):
        k = torch.tensor(2, dtype=torch.int32) if L.is_torch else jnp.asarray(2, jnp.int32)
        return L.tx.apply_every(k)

    run_both(build, steps=5)


def test_apply_every_emits_sums_and_zeros():
    tx = otx.apply_every(3)
    p = {"w": torch.zeros(2)}
    state = tx.init(p)
    seen = []
    for step in range(6):
        u, state = tx.update({"w": torch.full((2,), float(step + 1))}, state, p)
        seen.append(u["w"][0].item())
    assert seen == [0.0, 0.0, 6.0, 0.0, 0.0, 15.0]
    assert int(state.count) == 0
    for bad in (0, -3):
        with pytest.raises(ValueError, match="k"):
            otx.apply_every(bad)


# --------------------------------------------------------------------------------------------
# flatten
# --------------------------------------------------------------------------------------------


# The flat vector follows optax_torch.tree's leaf order (dicts in insertion order), JAX's sorts
# dict keys: the inner states hold the same numbers in another order, so states are compared
# leaf by leaf in test_flatten_equals_unflattened_elementwise_inner instead.


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_flatten_adam_matches_optax(dtype):
    run_both(lambda L: L.tx.flatten(L.tx.adam(0.1)), dtype=dtype, compare_state=False)


def test_flatten_none_leaves_and_weight_decay_match_optax():
    run_both(
        lambda L: L.tx.flatten(L.tx.adamw(0.1, weight_decay=0.1)),
        with_none=True,
        steps=5,
        compare_state=False,
    )


def test_flatten_mixed_dtypes():
    """float32 and float64 leaves: the inner transformation runs on one float64 vector (as
    optax's concatenation promotes); each update comes back in its gradient's dtype (optax
    returns float64 ones), so the comparison is at float32 precision."""
    params = make_tree(0, dtypes=(torch.float32, torch.float64))
    build = lambda L: L.tx.flatten(L.tx.adam(0.1))  # noqa: E731
    run_both(build, params=params, rtol=1e-6, atol=1e-7, steps=8, compare_state=False)
    tx = otx.flatten(otx.adam(0.1))
    state = tx.init(params)
    mu = otree.get(state, "mu")
    assert mu.dtype == torch.float64 and mu.ndim == 1
    u, _ = tx.update(params, state, params)
    for x, y in zip(otree.leaves(u), otree.leaves(params)):
        assert x.dtype == y.dtype and x.shape == y.shape


def _unflatten_like(like, flat):
    sizes = [x.numel() for x in otree.leaves(like)]
    pieces = iter(torch.split(flat, sizes))
    return otree.map(lambda x: next(pieces).reshape(x.shape), like)


def test_flatten_equals_unflattened_elementwise_inner():
    """For an element-wise inner transformation, flattening changes nothing."""
    params = params_tree()
    flat, plain = otx.flatten(otx.adam(0.1)), otx.adam(0.1)
    sf, sp = flat.init(params), plain.init(params)
    for k in range(3):
        g = grads_tree(params, k)
        uf, sf = flat.update(g, sf, params)
        up, sp = plain.update(g, sp, params)
        assert_trees_close(uf, up, rtol=1e-14, atol=1e-15)
    # The flat state, split back into the parameters' shapes, is the per-leaf state.
    assert int(otree.get(sf, "count")) == int(otree.get(sp, "count")) == 3
    assert_trees_close(
        _unflatten_like(params, otree.get(sf, "mu")), otree.get(sp, "mu"), rtol=1e-14, atol=1e-15
    )
    assert_trees_close(
        _unflatten_like(params, otree.get(sf, "nu")), otree.get(sp, "nu"), rtol=1e-14, atol=1e-15
    )


# --------------------------------------------------------------------------------------------
# masked / MaskedNode
# --------------------------------------------------------------------------------------------


def _matrix_mask(p):
    return otree.map(lambda x: x.ndim > 1, p)


def _prefix_mask(p):
    return {"scalar": True, "empty": True, "dense": False, "seq": True, "pair": False}


def _masked(kind):
    def build(L):
        if kind == "adam_fn":
            mask = _matrix_mask if L.is_torch else (lambda p: jax.tree.map(lambda x: x.ndim > 1, p))
            return L.tx.masked(L.tx.adam(0.1), mask)
        if kind == "prefix_chain":
            return L.tx.masked(L.tx.chain(L.tx.trace(0.9), L.tx.scale(-0.5)), _prefix_mask(None))
        return L.tx.masked(L.tx.masked(L.tx.scale_by_adam(), _prefix_mask(None)), _masked_all)

    return build


def _masked_all(p):
    return {"scalar": True, "empty": False, "dense": True, "seq": True, "pair": True}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("kind", ["adam_fn", "prefix_chain", "nested"])
def test_masked_matches_optax(kind, dtype):
    """States hold None where optax's hold MaskedNode (the harness treats them as equal)."""
    run_both(_masked(kind), dtype=dtype, steps=8)


def test_masked_with_none_leaves_matches_optax():
    run_both(_masked("nested"), with_none=True, steps=5)


def test_masked_node_is_an_empty_pytree_node():
    assert otx.MaskedNode() == otx.MaskedNode() and len(otx.MaskedNode()) == 0
    u = {"a": torch.ones(2), "b": otx.MaskedNode(), "c": [torch.ones(3), otx.MaskedNode()]}
    assert len(otree.leaves(u)) == 2
    # Trees holding MaskedNode (as optax code builds them) pass through transformations.
    tx = otx.masked(otx.scale_by_adam(), {"a": True, "b": True, "c": [False, True]})
    state = tx.init(u)
    new, state = tx.update(u, state, u)
    assert new["b"] == otx.MaskedNode() and new["c"][1] == otx.MaskedNode()
    assert_trees_equal(new["c"][0], u["c"][0])
    assert state.inner_state.mu["c"][0] is None
    assert_trees_equal(_roundtrip(state), state)
    # ... and give what optax gives for the same tree.
    tx_j = optax.masked(optax.scale_by_adam(), {"a": True, "b": True, "c": [False, True]})
    new_j, _ = tx_j.update(to_jax(u), tx_j.init(to_jax(u)), to_jax(u))
    assert_trees_close(new, new_j, rtol=1e-6)


def test_masked_prefix_and_pair_mask():
    """A prefix mask over a NamedTuple node masks its whole subtree."""
    p = {"x": Pair(first=torch.ones(2), second=torch.ones(1)), "y": torch.ones(3)}
    tx = otx.masked(otx.scale(3.0), {"x": True, "y": False})
    u, _ = tx.update(p, tx.init(p), p)
    assert_trees_equal(u["x"], Pair(first=torch.full((2,), 3.0), second=torch.full((1,), 3.0)))
    assert_trees_equal(u["y"], p["y"])


def test_flatten_none_gradient_keeps_its_state_entries():
    """A parameter whose gradient is None gets a None update; its slice of Adam's moments is
    kept, the other slices move as without flatten."""
    params = {"a": torch.ones(2), "b": torch.ones(3)}
    tx = otx.flatten(otx.adam(0.1))
    state = tx.init(params)
    _, state = tx.update({"a": torch.ones(2) * 0.5, "b": torch.ones(3)}, state, params)
    u, new = tx.update({"a": None, "b": -torch.ones(3)}, state, params)
    assert u["a"] is None and u["b"].shape == (3,)
    mu_old, mu_new = otree.get(state, "mu"), otree.get(new, "mu")
    assert_trees_equal(mu_new[:2], mu_old[:2])
    assert not torch.equal(mu_new[2:], mu_old[2:])
    with pytest.raises(ValueError, match="structure"):
        tx.update({"a": torch.ones(2)}, state, params)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("flag", [False, True])
def test_masked_single_tensor_matches_optax(flag, dtype):
    """Params that are one tensor, masked out: the inner chain (which needs params) sees an
    empty MaskedNode as in optax, not None, and its state holds MaskedNode."""
    params = torch.linspace(-1, 1, 5, dtype=dtype)

    def build(L):
        inner = L.tx.chain(L.tx.scale_by_adam(), L.tx.add_decayed_weights(0.1))
        return L.tx.masked(inner, flag)

    run_both(build, params=params, dtype=dtype, steps=4)
    tx = build(TORCH)
    state = tx.init(params)
    if not flag:
        assert state.inner_state[0].mu == otx.MaskedNode()
        assert_trees_equal(_roundtrip(state), state)


def test_donated_state_gives_the_same_step():
    """apply_every and lookahead (of a donation-safe optimizer) are marked donation-safe: a
    donated state gives the same updates and state as an intact one."""
    assert otx.is_donation_safe(otx.apply_every(2))
    assert otx.is_donation_safe(otx.lookahead(otx.adam(0.1), 2, 0.5, reset_state=True))
    assert not otx.is_donation_safe(otx.apply_if_finite(otx.adam(0.1), 2))
    params = params_tree()
    cases = [
        (otx.apply_every(2), params, lambda p, k: grads_tree(p, k)),
        (
            otx.lookahead(otx.adam(0.1), 2, 0.5, reset_state=True),
            otx.LookaheadParams.init_synced(params),
            lambda p, k: grads_tree(p.fast, k),
        ),
    ]
    for tx, p, grads in cases:
        s_ref = s_don = tx.init(p)
        for k in range(4):
            g = grads(p, k)
            u_ref, s_ref = tx.update(g, s_ref, p)
            s_copy = otree.map(lambda x: x.clone(), s_don)
            with otree.donate(s_copy, exclude=(g, p)):
                u_don, s_don = tx.update(g, s_copy, p)
            assert_trees_equal(u_don, u_ref)
            assert_trees_equal(s_don, s_ref)
            p = otx.apply_updates(p, u_ref)
