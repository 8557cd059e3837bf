"""scale_by_lbfgs, lbfgs and the linear-algebra helpers against optax (JAX, float64).

``scale_by_lbfgs`` runs through :func:`optax_ref.run_both` (20 steps, updates, states and params
compared every step). ``lbfgs`` (with its zoom line search) minimises a quadratic and a
Rosenbrock function written for both libraries over the mixed test tree; params, values and the
number of line-search steps are compared at every iteration.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from conftest import Pair, assert_trees_close, to_jax
from optax_ref import JAX, TORCH, Lib, params_tree, run_both
from test_optax_linesearch import OBJECTIVES, jit

import optax_torch as otx

F32 = torch.float32


# --------------------------------------------------------------------------------------------
# scale_by_lbfgs
# --------------------------------------------------------------------------------------------


def _convex_grads(params, k):
    """The gradient of a separable strictly convex function, (1 + |x|) x - c_k: L-BFGS's
    curvatures stay positive and well scaled (random gradients make them arbitrary, and the
    two-loop recursion then amplifies rounding)."""
    c = 0.3 + 0.05 * k
    return otx.tree.map(lambda x: (1.0 + x.abs()) * x - c, params)


def jit_plain(L: Lib, tx):
    """optax's update under ``jax.jit`` (eager JAX recompiles its ``scan``s at every call)."""
    if L.is_torch:
        return tx
    return optax.GradientTransformationExtraArgs(tx.init, jax.jit(tx.update))


LBFGS_CASES = {
    "default": lambda L: jit_plain(L, L.tx.chain(L.tx.scale_by_lbfgs(), L.tx.scale(-0.5))),
    "memory_3": lambda L: jit_plain(
        L, L.tx.chain(L.tx.scale_by_lbfgs(memory_size=3), L.tx.scale(-0.3))
    ),
    "memory_1": lambda L: jit_plain(
        L, L.tx.chain(L.tx.scale_by_lbfgs(memory_size=1), L.tx.scale(-0.3))
    ),
    "no_scale_init": lambda L: jit(
        L,
        L.tx.chain(L.tx.scale_by_lbfgs(memory_size=4, scale_init_precond=False), L.tx.scale(-0.2)),
    ),
}


@pytest.mark.parametrize("name", sorted(LBFGS_CASES))
def test_scale_by_lbfgs_f64(name):
    run_both(LBFGS_CASES[name], grads_fn=_convex_grads)


@pytest.mark.parametrize("name", ["default", "memory_3"])
def test_scale_by_lbfgs_f32(name):
    # 12 steps: closer to the minimum the differences of gradients cancel and float32 rounding
    # (optax keeps the weights in float64 under x64, we in the params' float32) dominates.
    run_both(LBFGS_CASES[name], grads_fn=_convex_grads, dtype=F32, steps=12)


def test_scale_by_lbfgs_random_grads():
    """Alone (no sign flip) on the harness's random gradients, for 8 steps (the curvatures of
    random gradients are arbitrary and rounding grows with the step count)."""
    run_both(lambda L: jit_plain(L, L.tx.scale_by_lbfgs(memory_size=3)), steps=8, rtol=1e-8)


def test_scale_by_lbfgs_with_none():
    run_both(LBFGS_CASES["memory_3"], grads_fn=_convex_grads, with_none=True)


def test_scale_by_lbfgs_validation():
    with pytest.raises(ValueError, match="memory_size"):
        otx.scale_by_lbfgs(memory_size=0)
    tx = otx.scale_by_lbfgs()
    p = {"w": torch.ones(3)}
    with pytest.raises(ValueError, match="params"):
        tx.update(p, tx.init(p))


def test_scale_by_lbfgs_first_step_unit_ball():
    """The first step is the gradient scaled into the unit ball: g / max(1, ||g||)."""
    tx = otx.scale_by_lbfgs()
    p = {"w": torch.zeros(4, dtype=torch.float64)}
    g = {"w": torch.tensor([3.0, 4.0, 0.0, 0.0], dtype=torch.float64)}
    u, _ = tx.update(g, tx.init(p), p)
    torch.testing.assert_close(u["w"], g["w"] / 5.0)


def test_scale_by_lbfgs_compiles():
    """torch.compile(fullgraph=True) gives the eager steps (the ring buffers are read through
    gathers, never indexed by a traced integer)."""
    tx = otx.scale_by_lbfgs(memory_size=2)
    p = {"a": torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64), "b": None}
    g = {"a": torch.tensor([0.1, 0.2, -0.3], dtype=torch.float64), "b": None}
    step = torch.compile(tx.update, backend="aot_eager", fullgraph=True)
    state_e = state_c = tx.init(p)
    for k in range(3):
        gk = {"a": g["a"] + k * p["a"], "b": None}
        u_e, state_e = tx.update(gk, state_e, p)
        u_c, state_c = step(gk, state_c, p)
        assert_trees_close((u_c, state_c), (u_e, state_e), rtol=1e-12, atol=1e-14)
        p = otx.apply_updates(p, otx.tree.scale(-0.1, u_e))


def test_scale_by_lbfgs_secant_equation():
    """The preconditioner satisfies the secant equation for the newest pair: P du = dw."""
    from optax_torch.transforms.lbfgs import _precondition_by_lbfgs

    gen = torch.Generator().manual_seed(0)
    n = 6
    m = torch.randn(n, n, generator=gen, dtype=torch.float64)
    a = m @ m.T + n * torch.eye(n, dtype=torch.float64)
    tx = otx.scale_by_lbfgs(memory_size=3)
    x = {"x": torch.randn(n, generator=gen, dtype=torch.float64)}
    state = tx.init(x)
    for _ in range(5):
        g = {"x": a @ x["x"]}
        u, state = tx.update(g, state, x)
        x = {"x": x["x"] - 0.1 * u["x"]}
        new_state = tx.update({"x": a @ x["x"]}, state, x)[1]
        idx = (new_state.count - 2) % 3
        dw = {"x": new_state.diff_params_memory["x"][idx]}
        du = {"x": new_state.diff_updates_memory["x"][idx]}
        p_du = _precondition_by_lbfgs(
            du,
            new_state.diff_params_memory,
            new_state.diff_updates_memory,
            new_state.weights_memory,
            0.37,
            (new_state.count - 1) % 3,
        )
        torch.testing.assert_close(p_du, dw, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------------
# lbfgs (with its zoom line search) on objectives
# --------------------------------------------------------------------------------------------


def lbfgs_trajectory(L: Lib, objective: str, steps: int, build, params):
    """Iterates ``value, grad = value_and_grad_from_state(fn)(params, state=state)`` then
    ``update(grad, state, params, value=value, grad=grad, value_fn=fn)``; returns per step the
    params, the value at the accepted point, the line-search steps and (torch) the number of
    objective evaluations."""
    fn = OBJECTIVES[objective][L.name]
    calls = [0]
    if L.is_torch:

        def value_fn(p):
            calls[0] += 1
            return fn(p)

        vg = otx.value_and_grad_from_state(value_fn)
    else:
        value_fn = fn
        vg = jax_jitted_vg(fn)
        params = to_jax(params)
    tx = jit(L, build(L))
    state = tx.init(params)
    out = []
    for _ in range(steps):
        before = calls[0]
        value, grad = vg(params, state=state)
        updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=value_fn)
        params = L.tx.apply_updates(params, updates)
        ls = state[-1]
        out.append((params, ls.value, ls.info.num_linesearch_steps, calls[0] - before))
    return out


_VG = {}


def jax_jitted_vg(fn):
    if fn not in _VG:
        _VG[fn] = jax.jit(optax.value_and_grad_from_state(fn))
    return _VG[fn]


def compare_lbfgs(objective, steps, build=lambda L: L.tx.lbfgs(), params=None):
    if params is None:
        params = otx.tree.map(lambda x: 0.5 * x, params_tree())
    ours = lbfgs_trajectory(TORCH, objective, steps, build, params)
    theirs = lbfgs_trajectory(JAX, objective, steps, build, params)
    for k, ((p, v, n, calls), (pj, vj, nj, _)) in enumerate(zip(ours, theirs)):
        assert int(n) == int(nj), f"step {k}: {int(n)} line-search steps vs optax's {int(nj)}"
        # One evaluation per line-search step, plus value_and_grad_from_state's first one.
        assert calls == int(n) + (k == 0), f"step {k}: {calls} evaluations, {int(n)} steps"
        try:
            assert_trees_close((p, v), (pj, vj), rtol=1e-10, atol=1e-12)
        except AssertionError as e:
            raise AssertionError(f"step {k}: {e}") from None
    return ours


def test_lbfgs_quartic():
    traj = compare_lbfgs("quartic", 12)
    assert float(traj[-1][1]) < float(traj[0][1])


def test_lbfgs_rosenbrock():
    compare_lbfgs("rosenbrock", 25)


def test_lbfgs_options():
    """A learning rate, a small memory, no initial scaling, a backtracking line search."""

    def build(L):
        return L.tx.lbfgs(
            learning_rate=0.8,
            memory_size=3,
            scale_init_precond=False,
            linesearch=L.tx.scale_by_backtracking_linesearch(
                max_backtracking_steps=15, store_grad=True
            ),
        )

    compare_lbfgs("quartic", 10, build)


def test_lbfgs_no_linesearch():
    def build(L):
        return L.tx.lbfgs(learning_rate=0.5, linesearch=None)

    params = otx.tree.map(lambda x: 0.5 * x, params_tree())
    fns = OBJECTIVES["quartic"]

    def grads_fn(p, k):
        return torch.func.grad(fns["torch"])(p)

    run_both(lambda L: jit_plain(L, build(L)), grads_fn=grads_fn, params=params, steps=10)


def test_lbfgs_converges_on_rosenbrock():
    """From the classic start (-1.2, 1): the minimum (1, 1) to 1e-6 in < 100 iterations."""
    fn = OBJECTIVES["rosenbrock"]["torch"]
    names = ["scalar", "empty", "dense", "seq", "pair"]
    params = {k: None for k in names}
    params.update(
        scalar=torch.tensor(-1.2, dtype=torch.float64),
        empty=torch.zeros(0, dtype=torch.float64),
        dense={"w": torch.zeros(0, dtype=torch.float64), "b": torch.ones(1, dtype=torch.float64)},
        seq=[torch.zeros(0, dtype=torch.float64), (None, None)],
        pair=Pair(first=None, second={"z": torch.zeros(0, dtype=torch.float64)}),
    )
    solver = otx.lbfgs()
    state = solver.init(params)
    vg = otx.value_and_grad_from_state(fn)
    it = 0
    for it in range(100):  # noqa: B007 (reported on failure)
        value, grad = vg(params, state=state)
        updates, state = solver.update(grad, state, params, value=value, grad=grad, value_fn=fn)
        params = otx.apply_updates(params, updates)
        x = torch.stack([params["scalar"], params["dense"]["b"][0]])
        if (x - 1.0).abs().max() < 1e-6:
            break
    assert (x - 1.0).abs().max() < 1e-6, (it, x)
    assert it < 99


def test_lbfgs_validation():
    with pytest.raises(ValueError, match="memory_size"):
        otx.lbfgs(memory_size=0)


# --------------------------------------------------------------------------------------------
# Linear algebra
# --------------------------------------------------------------------------------------------


def _spd(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    return a @ a.T + 0.1 * torch.eye(n, dtype=torch.float64)


@pytest.mark.parametrize("n", [1, 2, 7])
def test_power_iteration(n):
    m = _spd(n, n)
    v0 = torch.linspace(-1.0, 1.0, n, dtype=torch.float64) + 0.3
    eig, vec = otx.power_iteration(m, v0=v0)
    eig_j, vec_j = optax.power_iteration(jnp.asarray(m.numpy()), v0=jnp.asarray(v0.numpy()))
    np.testing.assert_allclose(eig.numpy(), np.asarray(eig_j), rtol=1e-12)
    np.testing.assert_allclose(vec.numpy(), np.asarray(vec_j), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(eig.numpy(), torch.linalg.eigvalsh(m)[-1].numpy(), rtol=1e-5)
    # Random start (our generator, not JAX's): the same dominant eigenvalue.
    eig_r, _ = otx.power_iteration(m, key=3)
    np.testing.assert_allclose(eig_r.numpy(), np.asarray(eig_j), rtol=1e-5)


def test_power_iteration_callable_tree():
    m = _spd(5, 7)
    d = torch.tensor([2.0, 0.5], dtype=torch.float64)

    def mvp(v):
        return {"a": m @ v["a"], "b": d * v["b"]}

    def mvp_j(v):
        return {"a": jnp.asarray(m.numpy()) @ v["a"], "b": jnp.asarray(d.numpy()) * v["b"]}

    v0 = {"a": torch.ones(5, dtype=torch.float64), "b": torch.ones(2, dtype=torch.float64)}
    eig, vec = otx.power_iteration(mvp, v0=v0, num_iters=500, error_tolerance=1e-10)
    eig_j, vec_j = optax.power_iteration(mvp_j, v0=to_jax(v0), num_iters=500, error_tolerance=1e-10)
    np.testing.assert_allclose(eig.numpy(), np.asarray(eig_j), rtol=1e-12)
    assert_trees_close(vec, vec_j, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="v0"):
        otx.power_iteration(mvp)


@pytest.mark.parametrize("n", [1, 6])
@pytest.mark.parametrize("p", [1, 2, 4, 8])
def test_matrix_inverse_pth_root(n, p):
    m = _spd(n, 10 + n)
    h, err = otx.matrix_inverse_pth_root(m, p)
    h_j, err_j = optax.matrix_inverse_pth_root(jnp.asarray(m.numpy()), p)
    # optax draws its power-iteration start with a JAX key, we with a torch generator: the
    # largest eigenvalue (which only scales the 1e-6 ridge) agrees to ~1e-6, hence rtol 1e-9.
    np.testing.assert_allclose(h.numpy(), np.asarray(h_j), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(float(err), float(err_j), rtol=1e-3, atol=1e-12)
    ev, u = torch.linalg.eigh(m)
    ref = u @ torch.diag(ev ** (-1.0 / p)) @ u.T
    torch.testing.assert_close(h, ref, rtol=1e-3, atol=1e-3)


def test_matrix_inverse_pth_root_p3():
    """optax computes the 4th power instead of the 3rd for p=3 (its power only supports 1, 2, 4,
    8), so its result is wrong; ours is checked against the eigendecomposition."""
    m = _spd(5, 3)
    h, _ = otx.matrix_inverse_pth_root(m, 3, ridge_epsilon=0.0, error_tolerance=1e-12)
    ev, u = torch.linalg.eigh(m)
    ref = u @ torch.diag(ev ** (-1.0 / 3.0)) @ u.T
    torch.testing.assert_close(h, ref, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="p"):
        otx.matrix_inverse_pth_root(m, 0)


def test_global_norm():
    t = params_tree()
    with pytest.warns(DeprecationWarning):
        got = otx.global_norm(t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        want = optax.global_norm(to_jax(t))
    np.testing.assert_allclose(got.numpy(), np.asarray(want), rtol=1e-12)


@pytest.mark.parametrize("k", [None, 3])
def test_nnls(k):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    b = torch.randn((6,) if k is None else (6, k), generator=gen, dtype=torch.float64)
    x = otx.nnls(a, b, 200)
    x_j = optax.nnls(jnp.asarray(a.numpy()), jnp.asarray(b.numpy()), 200)
    np.testing.assert_allclose(x.numpy(), np.asarray(x_j), rtol=1e-10, atol=1e-12)
    assert (x >= 0).all()
    x_l = otx.nnls(a, b, 50, L=100.0)
    x_lj = optax.nnls(jnp.asarray(a.numpy()), jnp.asarray(b.numpy()), 50, L=100.0)
    np.testing.assert_allclose(x_l.numpy(), np.asarray(x_lj), rtol=1e-10, atol=1e-12)


def test_power_iteration_compiles():
    """Under torch.compile the loop runs num_iters masked iterations: same result as eager.
    (Without ``v0`` the random start needs a torch.Generator, which fullgraph cannot create, so
    ``matrix_inverse_pth_root`` runs eagerly only.)"""
    m = _spd(4, 1)
    v0 = torch.ones(4, dtype=torch.float64)
    eager = otx.power_iteration(m, v0=v0, num_iters=6, error_tolerance=1e-3)
    compiled = torch.compile(
        lambda m, v: otx.power_iteration(m, v0=v, num_iters=6, error_tolerance=1e-3),
        backend="aot_eager",
        fullgraph=True,
    )(m, v0)
    torch.testing.assert_close(compiled, eager)


_ = (JAX, TORCH, Lib, jax)


@pytest.mark.parametrize("store_grad_search", ["zoom", "backtracking"])
def test_lbfgs_none_gradient_keeps_state(store_grad_search):
    """A parameter whose gradient is None this step is not moved, the objective still sees it,
    and its state is carried over unchanged by the chain."""
    fn = OBJECTIVES["quartic"]["torch"]
    ls = (
        otx.scale_by_zoom_linesearch(10)
        if store_grad_search == "zoom"
        else otx.scale_by_backtracking_linesearch(10, store_grad=True)
    )
    tx = otx.lbfgs(memory_size=3, linesearch=ls)
    params = otx.tree.map(lambda x: 0.5 * x, params_tree())
    state = tx.init(params)
    for k in range(3):
        g, v = torch.func.grad_and_value(fn)(params)
        if k == 2:
            g["dense"]["w"] = None
        updates, new_state = tx.update(g, state, params, value=v, grad=g, value_fn=fn)
        params = otx.apply_updates(params, updates)
        if k < 2:
            state = new_state
    assert updates["dense"]["w"] is None
    assert_trees_close(
        new_state[0].diff_params_memory["dense"]["w"], state[0].diff_params_memory["dense"]["w"]
    )
    assert new_state[0].params["dense"]["w"] is state[0].params["dense"]["w"]
    assert float(new_state[-1].value) < float(state[-1].value)
    # tree.map_params finds the params-shaped parts of the state (no leaves at init).
    otx.tree.map_params(tx, lambda x: x, new_state)
