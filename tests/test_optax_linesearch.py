"""Line searches (backtracking, zoom) and value_and_grad_from_state against optax (JAX).

The objectives are written once for both libraries (``L``) over the mixed test tree. Each step
both libraries get the same value, gradient and objective, and the updates, states (step size,
value, gradient, line-search info: number of evaluations and errors) and params are compared.
optax's updates run under ``jax.jit`` (eager JAX would recompile its ``while_loop`` each call).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax
import pytest
import torch
from conftest import assert_trees_close, to_jax
from optax_ref import Lib, params_tree, run_both

import optax_torch as otx
from optax_torch.transforms.linesearch import _grad_and_value

F32 = torch.float32


def jit(L: Lib, tx):
    """optax's update under ``jax.jit`` (the objective is a static argument), its init state
    made strongly typed (else the second call recompiles for the first update's types)."""
    if L.is_torch:
        return tx

    def init(params):
        return jax.tree.map(lambda x: jnp.array(x, dtype=x.dtype), tx.init(params))

    return optax.GradientTransformationExtraArgs(
        init, jax.jit(tx.update, static_argnames=("value_fn",))
    )


def ordered_leaves(p):
    """The leaves of the mixed test tree in one fixed order for both libraries (JAX sorts dict
    keys, torch keeps insertion order), ``None`` leaves skipped."""
    xs = [
        p["scalar"],
        p["empty"],
        p["dense"]["w"],
        p["dense"]["b"],
        p["seq"][0],
        p["seq"][1][0],
        p["seq"][1][1],
        p["pair"].first,
        p["pair"].second["z"],
    ]
    return [x for x in xs if x is not None]


def _xp(L: Lib):
    return torch if L.is_torch else jnp


def make_quartic(L: Lib):
    """sum_i (i+1) (x_i - 0.3)^2 + 0.25 x_i^4 over the leaves: smooth, strongly convex."""

    def fn(p):
        total = 0.0
        for i, x in enumerate(ordered_leaves(p)):
            total = total + ((i + 1) * (x - 0.3) ** 2 + 0.25 * x**4).sum()
        return total

    return fn


def make_rosenbrock(L: Lib):
    """The n-dimensional Rosenbrock function of all the leaves concatenated."""
    xp = _xp(L)

    def fn(p):
        xs = [x.reshape(-1) for x in ordered_leaves(p)]
        x = torch.cat(xs) if L.is_torch else jnp.concatenate(xs)
        return xp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)

    return fn


def make_data_loss(L: Lib):
    """A least-squares loss with data given as extra keyword arguments of ``update``."""

    def fn(params, x, y):
        return ((x * params["w"]).sum() - y) ** 2 + (params["b"] ** 2).sum()

    return fn


# One objective object per library, so that jax.jit's cache (static value_fn) is reused.
OBJECTIVES = {
    name: {lib.name: make(lib) for lib in (otx_lib, jax_lib)}
    for name, make in {
        "quartic": make_quartic,
        "rosenbrock": make_rosenbrock,
        "data": make_data_loss,
    }.items()
    for otx_lib, jax_lib in [(__import__("optax_ref").TORCH, __import__("optax_ref").JAX)]
}


_JAX_JITTED = {}


def jax_jitted(fn):
    """``jax.jit(fn)`` and ``jax.jit(jax.value_and_grad(fn))``, built once per objective."""
    if fn not in _JAX_JITTED:
        _JAX_JITTED[fn] = (jax.jit(fn), jax.jit(jax.value_and_grad(fn)))
    return _JAX_JITTED[fn]


def value_and_grad(L: Lib, fn, params):
    if L.is_torch:
        g, v = _grad_and_value(fn, params)  # torch.func.grad_and_value, None leaves allowed
        return v, g
    return jax_jitted(fn)[1](params)


def value_of(L: Lib, fn, params):
    return fn(params) if L.is_torch else jax_jitted(fn)[0](params)


def objective_run(build, objective: str, steps: int = 15, dtype=torch.float64, **kw):
    """run_both where the gradients and extra arguments come from an objective."""

    def grads_fn(params, k):
        return value_and_grad(TORCH_LIB, OBJECTIVES[objective]["torch"], params)[1]

    def extra_args_fn(L, params, grads, k):
        fn = OBJECTIVES[objective][L.name]
        return {"value": value_of(L, fn, params), "grad": grads, "value_fn": fn}

    params = params_tree(dtype=dtype, with_none=kw.pop("with_none", False))
    # Start away from the minimum, inside the basin where steps are well conditioned.
    params = otx.tree.map(lambda x: 0.5 * x, params)
    return run_both(
        lambda L: jit(L, build(L)),
        steps=steps,
        grads_fn=grads_fn,
        extra_args_fn=extra_args_fn,
        params=params,
        dtype=dtype,
        **kw,
    )


TORCH_LIB = __import__("optax_ref").TORCH
JAX_LIB = __import__("optax_ref").JAX


# --------------------------------------------------------------------------------------------
# Backtracking
# --------------------------------------------------------------------------------------------

BACKTRACKING = {
    "default": lambda L: L.tx.chain(
        L.tx.sgd(1.0), L.tx.scale_by_backtracking_linesearch(max_backtracking_steps=15)
    ),
    "store_grad": lambda L: L.tx.chain(
        L.tx.sgd(1.0),
        L.tx.scale_by_backtracking_linesearch(max_backtracking_steps=15, store_grad=True),
    ),
    "options": lambda L: L.tx.chain(
        L.tx.sgd(1.0),
        L.tx.scale_by_backtracking_linesearch(
            max_backtracking_steps=6,
            slope_rtol=0.3,
            decrease_factor=0.5,
            increase_factor=math.inf,
            max_learning_rate=0.7,
            atol=1e-3,
            rtol=1e-4,
        ),
    ),
    "few_steps": lambda L: L.tx.chain(
        L.tx.sgd(3.0), L.tx.scale_by_backtracking_linesearch(max_backtracking_steps=2)
    ),
}


@pytest.mark.parametrize("name", sorted(BACKTRACKING))
def test_backtracking_f64(name):
    objective_run(BACKTRACKING[name], "quartic")


def test_backtracking_rosenbrock():
    objective_run(BACKTRACKING["store_grad"], "rosenbrock")


def test_backtracking_f32():
    objective_run(BACKTRACKING["default"], "quartic", dtype=F32, steps=10)


def test_backtracking_with_none():
    objective_run(BACKTRACKING["store_grad"], "quartic", with_none=True, steps=8)


# --------------------------------------------------------------------------------------------
# Zoom
# --------------------------------------------------------------------------------------------

ZOOM = {
    "default": lambda L: L.tx.chain(
        L.tx.sgd(1.0), L.tx.scale_by_zoom_linesearch(max_linesearch_steps=15)
    ),
    "one": lambda L: L.tx.chain(
        L.tx.sgd(1.0),
        L.tx.scale_by_zoom_linesearch(max_linesearch_steps=15, initial_guess_strategy="one"),
    ),
    "max_lr": lambda L: L.tx.chain(
        L.tx.sgd(1.0),
        L.tx.scale_by_zoom_linesearch(max_linesearch_steps=10, max_learning_rate=0.05),
    ),
    "no_approx": lambda L: L.tx.chain(
        L.tx.sgd(1.0),
        L.tx.scale_by_zoom_linesearch(
            max_linesearch_steps=12,
            approx_dec_rtol=None,
            curv_rtol=0.5,
            slope_rtol=1e-3,
            increase_factor=3.0,
        ),
    ),
    "few_steps": lambda L: L.tx.chain(
        L.tx.sgd(1.0),
        L.tx.scale_by_zoom_linesearch(
            max_linesearch_steps=3, curv_rtol=0.01, initial_guess_strategy="one"
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(ZOOM))
def test_zoom_f64(name):
    objective_run(ZOOM[name], "quartic")


def test_zoom_rosenbrock():
    objective_run(ZOOM["default"], "rosenbrock")


def test_zoom_f32():
    # optax computes some of the search's scalars in float64 (x64 is on) even for float32
    # params, we in float32: the gradients near the minimum differ by a few float32 ulps of
    # the params, hence atol 1e-5.
    objective_run(ZOOM["default"], "quartic", dtype=F32, steps=8, atol=1e-5)


def test_zoom_with_none():
    objective_run(ZOOM["default"], "quartic", with_none=True, steps=8)


# --------------------------------------------------------------------------------------------
# Extra arguments, failures, validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["backtracking", "zoom"])
def test_extra_args_reach_value_fn(kind):
    """Data for the objective travel as extra keyword arguments of update (optax's example)."""
    steps = 5
    gen = torch.Generator().manual_seed(0)
    xs = torch.rand(steps, 3, generator=gen, dtype=torch.float64)
    ys = torch.rand(steps, generator=gen, dtype=torch.float64)

    def build(L):
        ls = (
            L.tx.scale_by_backtracking_linesearch(max_backtracking_steps=15)
            if kind == "backtracking"
            else L.tx.scale_by_zoom_linesearch(max_linesearch_steps=15)
        )
        return jit(L, L.tx.chain(L.tx.sgd(1.0), ls))

    results = {}
    for L in (TORCH_LIB, JAX_LIB):
        fn = OBJECTIVES["data"][L.name]
        tx = build(L)
        p = {"w": torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), "b": torch.ones(2).double()}
        p = p if L.is_torch else to_jax(p)
        state = tx.init(p)
        for k in range(steps):
            x, y = (xs[k], ys[k]) if L.is_torch else (jnp.asarray(xs[k]), jnp.asarray(ys[k]))
            if L.is_torch:
                g, v = torch.func.grad_and_value(fn)(p, x, y)
            else:
                v, g = jax.value_and_grad(fn)(p, x, y)
            u, state = tx.update(g, state, p, value=v, grad=g, value_fn=fn, x=x, y=y)
            p = L.tx.apply_updates(p, u)
        results[L.name] = (p, state)
    assert_trees_close(results["torch"][0], results["jax"][0], rtol=1e-10, atol=1e-12)
    assert_trees_close(results["torch"][1], results["jax"][1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["backtracking", "zoom"])
def test_unknown_extra_args_raise(kind):
    ls = (
        otx.scale_by_backtracking_linesearch(5)
        if kind == "backtracking"
        else otx.scale_by_zoom_linesearch(5)
    )
    p = torch.ones(3, dtype=torch.float64)
    fn = lambda p: (p**2).sum()  # noqa: E731
    with pytest.raises(TypeError, match="not consumed"):
        ls.update(p, ls.init(p), p, value=fn(p), grad=2 * p, value_fn=fn, oops=1)


def test_backtracking_nan_objective_gives_zero_step(capsys):
    """No finite value found: the learning rate is 0 (no step), as in optax; verbose says so."""
    results = {}
    for L in (TORCH_LIB, JAX_LIB):
        xp = _xp(L)
        fn = lambda p, xp=xp: xp.where(p[0] > 0.9, xp.sum(p**2), xp.nan)  # noqa: E731
        p = torch.ones(2, dtype=torch.float64) if L.is_torch else jnp.ones(2, jnp.float64)
        tx = L.tx.scale_by_backtracking_linesearch(max_backtracking_steps=4, verbose=L.is_torch)
        g = -2.0 * p
        u, st = tx.update(g, tx.init(p), p, value=fn(p), grad=2.0 * p, value_fn=fn)
        results[L.name] = (u, st)
    assert_trees_close(results["torch"], results["jax"], rtol=1e-12)
    assert float(results["torch"][1].learning_rate) == 0.0
    assert int(results["torch"][1].info.num_linesearch_steps) == 5
    assert "Using a stepsize of 0" in capsys.readouterr().out


def test_zoom_not_descent_direction(capsys):
    """An ascent direction: the search fails and falls back as optax does (same state), and
    verbose prints optax's diagnostic."""
    results = {}
    for L in (TORCH_LIB, JAX_LIB):
        fn = lambda p: (p**2).sum()  # noqa: E731
        p = torch.ones(2, dtype=torch.float64) if L.is_torch else jnp.ones(2, jnp.float64)
        verbose = L.is_torch
        tx = L.tx.scale_by_zoom_linesearch(max_linesearch_steps=6, verbose=verbose)
        u, st = tx.update(2.0 * p, tx.init(p), p, value=fn(p), grad=2.0 * p, value_fn=fn)
        results[L.name] = (u, st)
    assert_trees_close(results["torch"], results["jax"], rtol=1e-12)
    assert "not a descent direction" in capsys.readouterr().out


def test_validation():
    with pytest.raises(ValueError, match="max_backtracking_steps"):
        otx.scale_by_backtracking_linesearch(-1)
    with pytest.raises(ValueError, match="decrease_factor"):
        otx.scale_by_backtracking_linesearch(5, decrease_factor=1.5)
    with pytest.raises(ValueError, match="increase_factor"):
        otx.scale_by_backtracking_linesearch(5, increase_factor=0.0)
    with pytest.raises(ValueError, match="max_learning_rate"):
        otx.scale_by_backtracking_linesearch(5, max_learning_rate=-1.0)
    with pytest.raises(ValueError, match="slope_rtol"):
        otx.scale_by_backtracking_linesearch(5, slope_rtol=-1.0)
    with pytest.raises(ValueError, match="atol"):
        otx.scale_by_backtracking_linesearch(5, atol=-1.0)
    with pytest.raises(ValueError, match="max_linesearch_steps"):
        otx.scale_by_zoom_linesearch(-2)
    with pytest.raises(ValueError, match="max_learning_rate"):
        otx.scale_by_zoom_linesearch(5, max_learning_rate=0.0)
    with pytest.raises(ValueError, match="curv_rtol"):
        otx.scale_by_zoom_linesearch(5, curv_rtol=-0.1)
    with pytest.raises(ValueError, match="increase_factor"):
        otx.scale_by_zoom_linesearch(5, increase_factor=-2.0)
    with pytest.raises(ValueError, match="strategy"):
        otx.scale_by_zoom_linesearch(5, initial_guess_strategy="two")
    ls = otx.scale_by_zoom_linesearch(5)
    p = torch.ones(2)
    with pytest.raises(ValueError, match="params"):
        ls.update(p, ls.init(p), value=p.sum(), grad=p, value_fn=lambda p: p.sum())


# --------------------------------------------------------------------------------------------
# value_and_grad_from_state
# --------------------------------------------------------------------------------------------


def test_value_and_grad_from_state():
    fn = OBJECTIVES["quartic"]["torch"]
    params = otx.tree.map(lambda x: 0.5 * x, params_tree())
    tx = otx.chain(otx.sgd(1.0), otx.scale_by_zoom_linesearch(15))
    state = tx.init(params)
    calls = []
    vg = otx.value_and_grad_from_state(lambda p: calls.append(1) or fn(p))
    v, g = vg(params, state=state)  # infinite stored value: computed
    assert len(calls) == 1
    g_ref, v_ref = torch.func.grad_and_value(fn)(params)
    assert_trees_close((v, g), (v_ref, g_ref), rtol=1e-14)
    u, state = tx.update(g, state, params, value=v, grad=g, value_fn=fn)
    params = otx.apply_updates(params, u)
    v2, g2 = vg(params, state=state)  # reused from the line search
    assert len(calls) == 1
    assert v2 is state[1].value and g2 is state[1].grad
    g_ref, v_ref = torch.func.grad_and_value(fn)(params)
    assert_trees_close((v2, g2), (v_ref, g_ref), rtol=1e-12, atol=1e-14)


def test_value_and_grad_from_state_needs_grad():
    tx = otx.chain(otx.sgd(1.0), otx.scale_by_backtracking_linesearch(5))  # no store_grad
    p = torch.ones(2)
    with pytest.raises(ValueError, match="not found"):
        otx.value_and_grad_from_state(lambda p: p.sum())(p, state=tx.init(p))


# --------------------------------------------------------------------------------------------
# torch.compile
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["backtracking", "backtracking_store_grad", "zoom"])
def test_linesearch_compiles(kind):
    """Under torch.compile(fullgraph=True) the loop is unrolled and masked: same result."""
    ls = {
        "backtracking": otx.scale_by_backtracking_linesearch(4),
        "backtracking_store_grad": otx.scale_by_backtracking_linesearch(4, store_grad=True),
        "zoom": otx.scale_by_zoom_linesearch(2),  # each masked step traces both phases
    }[kind]
    tx = otx.chain(otx.sgd(1.0), ls)
    fn = lambda p: ((p["a"] - 0.3) ** 2).sum() + 0.25 * (p["a"] ** 4).sum()  # noqa: E731
    p = {"a": torch.tensor([1.5, -0.7, 2.0], dtype=torch.float64)}
    state = tx.init(p)
    g, v = torch.func.grad_and_value(fn)(p)

    def step(g, state, p, v):
        return tx.update(g, state, p, value=v, grad=g, value_fn=fn)

    eager = step(g, state, p, v)
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)(g, state, p, v)
    assert_trees_close(compiled, eager, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------------------------
# Complex parameters
# --------------------------------------------------------------------------------------------


def _complex_fn(L: Lib):
    xp = _xp(L)
    return lambda p: xp.sum(xp.abs(p - 0.3) ** 2) + xp.sum(xp.abs(p) ** 4)


def test_backtracking_complex():
    """Complex params: torch's gradients are the conjugates of JAX's; same steps as optax."""
    pc = torch.tensor([1.5 + 1j, -0.7 + 0.5j], dtype=torch.complex128)
    res = {}
    for L in (TORCH_LIB, JAX_LIB):
        fn = _complex_fn(L)
        q = pc if L.is_torch else jnp.asarray(pc.numpy())
        tx = L.tx.chain(L.tx.sgd(0.3), L.tx.scale_by_backtracking_linesearch(10))
        state = tx.init(q)
        for _ in range(4):
            if L.is_torch:
                g, v = torch.func.grad_and_value(fn)(q)
                direction = g
            else:
                v, g = jax.value_and_grad(fn)(q)
                direction = g.conj()  # the steepest-ascent direction, as torch's gradient
            u, state = tx.update(direction, state, q, value=v, grad=g, value_fn=fn)
            q = L.tx.apply_updates(q, u)
        # (the tree comparison is real-valued: compare real and imaginary parts)
        res[L.name] = (q.real, q.imag, state[-1].learning_rate, state[-1].info)
    assert_trees_close(res["torch"], res["jax"], rtol=1e-12, atol=1e-14)


def test_zoom_complex_equals_real_pairs():
    """optax's zoom search starts from the slope Re(sum u * g) with JAX's gradient g, not the
    directional derivative Re(sum u * conj(g)) it uses at every other point, so its complex
    results are not optax's to compare with. Ours must equal the same search on the real and
    imaginary parts as separate real parameters."""
    pc = torch.tensor([1.5 + 1j, -0.7 + 0.5j], dtype=torch.complex128)
    fn_c = _complex_fn(TORCH_LIB)

    def fn_r(p):
        return fn_c(torch.complex(p[0], p[1]))

    tx = otx.chain(otx.sgd(0.3), otx.scale_by_zoom_linesearch(10))
    qc, qr = pc, torch.stack([pc.real, pc.imag])
    sc, sr = tx.init(qc), tx.init(qr)
    for _ in range(4):
        gc, vc = torch.func.grad_and_value(fn_c)(qc)
        gr, vr = torch.func.grad_and_value(fn_r)(qr)
        uc, sc = tx.update(gc, sc, qc, value=vc, grad=gc, value_fn=fn_c)
        ur, sr = tx.update(gr, sr, qr, value=vr, grad=gr, value_fn=fn_r)
        qc, qr = otx.apply_updates(qc, uc), otx.apply_updates(qr, ur)
        torch.testing.assert_close(torch.stack([qc.real, qc.imag]), qr, rtol=1e-12, atol=1e-14)
        assert_trees_close(sc[-1].info, sr[-1].info, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("kind", ["backtracking", "zoom"])
def test_linesearch_vmap(kind):
    """Under torch.func.vmap the loop is masked (values cannot be read): each batch member gets
    its own eager result, though the searches stop after different numbers of steps."""
    ls = (
        otx.scale_by_backtracking_linesearch(8, store_grad=True)
        if kind == "backtracking"
        else otx.scale_by_zoom_linesearch(8)
    )
    tx = otx.chain(otx.sgd(1.0), ls)
    fn = lambda p: ((p - 0.3) ** 2).sum() + 0.25 * (p**4).sum()  # noqa: E731
    ps = torch.tensor([[1.5, -0.7, 2.0], [0.1, 0.2, 0.3], [3.0, 1.0, -2.0]], dtype=torch.float64)

    def step(p):
        g, v = torch.func.grad_and_value(fn)(p)
        return tx.update(g, tx.init(p), p, value=v, grad=g, value_fn=fn)

    batched = torch.func.vmap(step)(ps)
    eager = [step(p) for p in ps]
    assert len({int(e[1][1].info.num_linesearch_steps) for e in eager}) > 1
    for i, e in enumerate(eager):
        assert_trees_close(otx.tree.map(lambda x: x[i], batched), e, rtol=1e-12, atol=1e-14)
