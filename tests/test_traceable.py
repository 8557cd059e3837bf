"""The *traceable* law (``shared/design.md`` §1): one ``update`` runs eagerly (multi-tensor
kernels), under ``torch.compile(fullgraph=True)``, under ``torch.func.vmap`` and under
``torch.func.grad`` (per-tensor kernels), with the same results.

Compiled runs use the cheap ``eager`` / ``aot_eager`` backends (Dynamo tracing and AOT autograd
are what can break); one test runs the default inductor backend on a tiny Adam.
"""

from __future__ import annotations

import pytest
import torch
from conftest import Pair, assert_trees_close, like_tree, make_tree

import optax_torch as otx
from optax_torch import tree as otree

STEPS = 3

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")

TXS = {
    "adam": lambda: otx.adam(0.1),
    "adamw_mask": lambda: otx.adamw(
        0.1, weight_decay=0.1, mask=lambda p: otree.map(lambda x: x.ndim > 1, p)
    ),
    "sgd_momentum": lambda: otx.sgd(0.1, momentum=0.9, nesterov=True),
    "rmsprop": lambda: otx.rmsprop(0.01, centered=True, momentum=0.9, eps=1e-3),
    "clip_by_global_norm": lambda: otx.clip_by_global_norm(0.5),
    "chain": lambda: otx.chain(
        otx.clip(0.7),
        otx.scale_by_adam(nesterov=True),
        otx.add_decayed_weights(0.01),
        otx.scale_by_learning_rate(lambda c: 0.1 / (1 + c.to(torch.float64))),
    ),
}


def _params():
    """A small mixed tree (compile time grows with the number of leaves): 0-d (float64; the
    float32 0-d case has its own test below), empty, matrix, list, NamedTuple; float32 + float64."""
    gen = torch.Generator().manual_seed(0)

    def r(*shape, dtype=torch.float32):
        return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1).to(dtype)

    return {
        "s": r(dtype=torch.float64),
        "e": r(0),
        "w": r(2, 3),
        "seq": [r(4, dtype=torch.float64)],
        "pair": Pair(r(3), r(1, dtype=torch.float64)),
    }


def _run(tx, step_fn, params, steps=STEPS):
    state = tx.init(params)
    out = []
    for k in range(steps):
        g = like_tree(params, seed=10 + k)
        u, state = step_fn(g, state, params)
        params = otx.apply_updates(params, u)
        out.append((u, state, params))
    return out


def _compare_runs(a, b, rtol, atol):
    for k, ((ua, sa, pa), (ub, sb, pb)) in enumerate(zip(a, b)):
        try:
            assert_trees_close(ua, ub, rtol=rtol, atol=atol, check_dtype=True)
            assert_trees_close(sa, sb, rtol=rtol, atol=atol, check_dtype=True)
            assert_trees_close(pa, pb, rtol=rtol, atol=atol, check_dtype=True)
        except AssertionError as e:
            raise AssertionError(f"step {k}: {e}") from None


# --------------------------------------------------------------------------------------------
# torch.compile
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TXS))
def test_compiled_update_equals_eager(name):
    """``torch.compile(update, fullgraph=True)`` (no graph break) == eager, 3 steps."""
    torch._dynamo.reset()
    tx = TXS[name]()
    backend = "aot_eager" if name == "adam" else "eager"
    compiled = torch.compile(tx.update, backend=backend, fullgraph=True)
    eager = _run(tx, tx.update, _params())
    comp = _run(tx, compiled, _params())
    # float32 leaves: the eager multi-tensor and the per-tensor kernels round differently
    # (e.g. lerp's two formulas); float64 leaves agree to ~1e-15
    _compare_runs(comp, eager, rtol=2e-6, atol=1e-7)


def test_compiled_whole_step_with_apply_updates():
    """A compiled functional training step (update + apply_updates) == eager."""
    torch._dynamo.reset()
    tx = otx.adamw(0.05, weight_decay=0.1)

    def step(params, state, grads):
        u, state = tx.update(grads, state, params)
        return otx.apply_updates(params, u), state

    compiled = torch.compile(step, backend="eager", fullgraph=True)
    p_e = p_c = otree.map(lambda x: x.double(), _params())
    s_e = s_c = tx.init(p_e)
    for k in range(STEPS):
        g = like_tree(p_e, seed=k)
        p_e, s_e = step(p_e, s_e, g)
        p_c, s_c = compiled(p_c, s_c, g)
        assert_trees_close(p_c, p_e, rtol=1e-12, atol=1e-14)
        assert_trees_close(s_c, s_e, rtol=1e-12, atol=1e-14)


def test_compiled_adam_keeps_0d_float32_leaves_float32():
    torch._dynamo.reset()
    tx = otx.adam(0.1)
    params = {"s": torch.tensor(0.5), "v": torch.ones(3)}
    state = tx.init(params)
    u, _ = torch.compile(tx.update, backend="eager", fullgraph=True)(params, state)
    assert u["s"].dtype == torch.float32


def test_inductor_compiled_adam_equals_eager():
    """The default (inductor) backend on a tiny Adam, 3 steps."""
    torch._dynamo.reset()
    tx = otx.adam(0.1)
    params = {
        "w": torch.linspace(-1, 1, 6, dtype=torch.float64).reshape(2, 3),
        "b": torch.tensor([0.5, -0.25], dtype=torch.float64),
    }
    compiled = torch.compile(tx.update, fullgraph=True)
    _compare_runs(_run(tx, compiled, params), _run(tx, tx.update, params), rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------------------------
# torch.func.vmap
# --------------------------------------------------------------------------------------------


def _train(make_tx, lr, params, steps=STEPS):
    tx = make_tx(lr)
    state = tx.init(params)
    for k in range(steps):
        g = otree.map(lambda p, k=k: torch.sin(p * (k + 1)) + 0.1 * p, params)  # depends on params
        u, state = tx.update(g, state, params)
        params = otx.apply_updates(params, u)
    return params


LR_TXS = {
    "sgd_momentum": lambda lr: otx.sgd(lr, momentum=0.9),
    "adam": lambda lr: otx.adam(lr),
    "adamw": lambda lr: otx.adamw(lr, weight_decay=0.1),
    "rmsprop": lambda lr: otx.rmsprop(lr, momentum=0.5),
    "chain": lambda lr: otx.chain(otx.clip_by_global_norm(1.0), otx.adam(lr)),
}


@pytest.mark.parametrize("name", sorted(LR_TXS))
def test_vmap_over_learning_rates_equals_loop(name):
    """``vmap`` over a batch of learning rates (0-d tensors) == one eager run per rate."""
    params = make_tree(5, dtypes=(torch.float64,))
    lrs = torch.tensor([0.01, 0.1, 0.3], dtype=torch.float64)
    batched = torch.func.vmap(lambda lr: _train(LR_TXS[name], lr, params))(lrs)
    for i, lr in enumerate(lrs.tolist()):
        expected = _train(LR_TXS[name], lr, params)
        got = otree.map(lambda x, i=i: x[i], batched)
        assert_trees_close(got, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(TXS))
def test_vmap_over_independent_param_sets_equals_loop(name):
    """``vmap(init)`` / ``vmap(update)`` over a stack of 3 independent param sets == 3 eager
    runs."""
    tx = TXS[name]()
    sets = [make_tree(s, dtypes=(torch.float64,)) for s in range(3)]
    grads = [[like_tree(p, seed=100 * s + k) for k in range(STEPS)] for s, p in enumerate(sets)]

    def stack(trees):
        return otree.map(lambda *xs: torch.stack(xs), *trees)

    p_b = stack(sets)
    s_b = torch.func.vmap(tx.init)(p_b)
    for k in range(STEPS):
        u_b, s_b = torch.func.vmap(tx.update)(stack([g[k] for g in grads]), s_b, p_b)
        p_b = otx.apply_updates(p_b, u_b)
    for i, p in enumerate(sets):
        s = tx.init(p)
        for k in range(STEPS):
            u, s = tx.update(grads[i][k], s, p)
            p = otx.apply_updates(p, u)
        assert_trees_close(otree.map(lambda x, i=i: x[i], p_b), p, rtol=1e-12, atol=1e-14)
        assert_trees_close(
            otree.map(lambda x, i=i: x[i] if x.dim() else x, s_b), s, rtol=1e-12, atol=1e-14
        )


def test_compiled_vmap_over_learning_rates():
    """vmap inside torch.compile (fullgraph) == the eager loop."""
    torch._dynamo.reset()
    params = {"w": torch.linspace(-1, 1, 5, dtype=torch.float64)}
    lrs = torch.tensor([0.05, 0.2], dtype=torch.float64)
    f = torch.compile(
        torch.func.vmap(lambda lr: _train(LR_TXS["adam"], lr, params)),
        backend="eager",
        fullgraph=True,
    )
    out = f(lrs)
    for i, lr in enumerate(lrs.tolist()):
        assert_trees_close(
            otree.map(lambda x, i=i: x[i], out),
            _train(LR_TXS["adam"], lr, params),
            rtol=1e-12,
            atol=1e-14,
        )


# --------------------------------------------------------------------------------------------
# torch.func.grad: differentiating through a step
# --------------------------------------------------------------------------------------------

_A = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
_P0 = {
    "w": torch.tensor([1.0, -0.5, 2.0, 0.3], dtype=torch.float64),
    "b": torch.tensor(0.7, dtype=torch.float64),
}


def _loss(p):
    """A quadratic: L = 0.5 sum(A w^2) + 0.5 (b - 1)^2, so grad = (A w, b - 1)."""
    return 0.5 * (_A * p["w"] ** 2).sum() + 0.5 * (p["b"] - 1.0) ** 2


def _grad(p):
    return {"w": _A * p["w"], "b": p["b"] - 1.0}


def _loss_after(make_tx, lr, steps):
    tx = make_tx(lr)
    params = _P0
    state = tx.init(params)
    for _ in range(steps):
        u, state = tx.update(_grad(params), state, params)
        params = otx.apply_updates(params, u)
    return _loss(params)


def _central_difference(f, x, h=1e-6):
    return (f(x + h) - f(x - h)) / (2 * h)


def test_meta_gradient_of_sgd_step_is_analytic():
    """d/d(lr) L(p - lr g) = -<grad L(p - lr g), g>, through one sgd step with torch.func.grad."""
    lr = torch.tensor(0.1, dtype=torch.float64)
    got = torch.func.grad(lambda lr: _loss_after(lambda lr: otx.sgd(lr), lr, 1))(lr)
    g0 = _grad(_P0)
    p1 = {k: _P0[k] - 0.1 * g0[k] for k in _P0}
    g1 = _grad(p1)
    expected = -sum((g1[k] * g0[k]).sum() for k in _P0)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "name,make_tx",
    [
        ("sgd_momentum", lambda lr: otx.sgd(lr, momentum=0.9, nesterov=True)),
        ("adam", lambda lr: otx.adam(lr)),
        ("adamw", lambda lr: otx.adamw(lr, weight_decay=0.1)),
        ("rmsprop", lambda lr: otx.rmsprop(lr, momentum=0.5)),
        ("adam_schedule", lambda lr: otx.adam(lambda c: lr / (1.0 + c))),
    ],
)
def test_meta_gradient_over_three_steps_matches_finite_difference(name, make_tx):
    """torch.func.grad of the loss after 3 steps w.r.t. the learning rate == central difference."""
    lr = torch.tensor(0.05, dtype=torch.float64)
    got = torch.func.grad(lambda lr: _loss_after(make_tx, lr, 3))(lr)
    expected = _central_difference(lambda x: _loss_after(make_tx, x, 3), lr)
    assert got.abs() > 1e-3
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)


def test_gradient_wrt_adam_b1_matches_finite_difference():
    """Hyperparameters other than the learning rate are differentiable too (b1 in Adam)."""

    def loss_of_b1(b1):
        return _loss_after(lambda lr: otx.adam(0.05, b1=b1), None, 3)

    b1 = torch.tensor(0.8, dtype=torch.float64)
    got = torch.func.grad(loss_of_b1)(b1)
    expected = _central_difference(loss_of_b1, b1)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)


def test_gradient_wrt_initial_params_through_adam():
    """Second-order: d L(p_3) / d p_0 through three Adam steps (eps_root keeps sqrt smooth)."""

    def loss_of_p0(w):
        tx = otx.adam(0.05, eps_root=1e-8)
        params = {"w": w, "b": _P0["b"]}
        state = tx.init(params)
        for _ in range(3):
            u, state = tx.update(_grad(params), state, params)
            params = otx.apply_updates(params, u)
        return _loss(params)

    w = _P0["w"]
    got = torch.func.grad(loss_of_p0)(w)
    for i in range(w.numel()):
        e = torch.zeros_like(w)
        e[i] = 1.0
        fd = _central_difference(
            lambda h: loss_of_p0(w + h * e), torch.tensor(0.0, dtype=torch.float64)
        )
        torch.testing.assert_close(got[i], fd, rtol=1e-5, atol=1e-8)


def test_eager_autograd_through_a_step_equals_functorch():
    """Plain ``backward()`` through a step with a ``requires_grad`` learning rate (the multi-tensor
    path's tensor-scalar fallback) == torch.func.grad."""
    make_tx = LR_TXS["adam"]
    lr = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
    loss = _loss_after(make_tx, lr, 3)
    loss.backward()
    expected = torch.func.grad(lambda x: _loss_after(make_tx, x, 3))(lr.detach())
    torch.testing.assert_close(lr.grad, expected, rtol=1e-12, atol=1e-14)
