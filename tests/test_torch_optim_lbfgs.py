"""``compat.torch_optim.LBFGS`` against ``torch.optim.LBFGS``, and the pure functions of
``transforms.torch_lbfgs`` it runs.

Iterates, returned losses and the whole state (``opt.state[params[0]]``: counters, direction,
step, history lists, ``al``) are compared after every outer step, on a 5-D Rosenbrock function
split over two parameters (cheap: the option matrix) and on the shared harness model (single
param group, StepLR attached).
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch_optim_ref import check_signature, loss_fn, make_net, roundtrip, train_pair

from optax_torch.compat.torch_optim.lbfgs import LBFGS
from optax_torch.transforms.torch_lbfgs import (
    TorchLBFGSState,
    add_direction,
    cubic_interpolate,
    flatten_grads,
    lbfgs_direction,
    lbfgs_update_history,
    strong_wolfe,
    torch_lbfgs_init,
    torch_lbfgs_step,
)

F64, F32 = torch.float64, torch.float32
SW = "strong_wolfe"
START = [-1.2, 1.0, -0.5, 0.8, 1.5]


def atol_for(dtype: torch.dtype) -> float:
    return 1e-10 if dtype == F64 else 1e-6


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def rosen_params(dtype: torch.dtype = F64) -> list[torch.Tensor]:
    w = torch.tensor(START, dtype=dtype)
    return [w[:3].clone().requires_grad_(), w[3:].clone().reshape(1, 2).requires_grad_()]


def rosenbrock(params: list[torch.Tensor]) -> torch.Tensor:
    x = torch.cat([p.reshape(-1) for p in params])
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def make_closure(opt: Any, params: list[torch.Tensor], f=rosenbrock) -> Callable[[], Any]:
    def closure():
        opt.zero_grad()
        loss = f(params)
        loss.backward()
        return loss

    return closure


def assert_same(ours: Any, ref: Any, atol: float, what: str) -> None:
    """Same structure and types, tensors/floats within ``atol`` (NaNs equal)."""
    if isinstance(ref, torch.Tensor):
        assert isinstance(ours, torch.Tensor), (what, type(ours))
        assert ours.shape == ref.shape and ours.dtype == ref.dtype, what
        torch.testing.assert_close(ours, ref, rtol=0, atol=atol, equal_nan=True, msg=what)
    elif isinstance(ref, list):
        assert isinstance(ours, list) and len(ours) == len(ref), what
        for i, (a, b) in enumerate(zip(ours, ref)):
            assert_same(a, b, atol, f"{what}[{i}]")
    elif isinstance(ref, float):
        assert type(ours) is float, (what, type(ours))
        assert ours == pytest.approx(ref, abs=atol, nan_ok=True), what
    else:
        assert type(ours) is type(ref) and ours == ref, (what, ours, ref)


def assert_state_same(ours: Any, ref: Any, atol: float) -> None:
    """The optimizers' whole state: the same keys, in the same order, and values."""
    rs = ref.state[ref.param_groups[0]["params"][0]]
    os_ = ours.state[ours.param_groups[0]["params"][0]]
    assert list(os_) == list(rs), (list(os_), list(rs))
    for key in rs:
        assert_same(os_[key], rs[key], atol, key)
    assert len(ours.state) == len(ref.state)
    for g, h in zip(ours.param_groups, ref.param_groups):
        assert sorted(g) == sorted(h)  # (load_state_dict moves "params" last, in torch too)
        assert {k: v for k, v in g.items() if k != "params"} == {
            k: v for k, v in h.items() if k != "params"
        }


def run_rosen(kwargs: dict[str, Any], steps: int = 6, dtype: torch.dtype = F64) -> None:
    atol = atol_for(dtype)
    pa, pb = rosen_params(dtype), rosen_params(dtype)
    ref, ours = torch.optim.LBFGS(pa, **kwargs), LBFGS(pb, **kwargs)
    for s in range(steps):
        la = ref.step(make_closure(ref, pa))
        lb = ours.step(make_closure(ours, pb))
        assert_same(lb, la, atol, f"loss {s}")
        for a, b in zip(pa, pb):
            torch.testing.assert_close(b, a, rtol=0, atol=atol, equal_nan=True)
        assert_state_same(ours, ref, atol)


# --------------------------------------------------------------------------------------------
# The drop-in against torch.optim.LBFGS
# --------------------------------------------------------------------------------------------


def test_signature():
    check_signature(LBFGS, torch.optim.LBFGS)


ROSEN_CASES = [
    {},
    {"line_search_fn": SW},
    {"history_size": 3},
    {"history_size": 3, "line_search_fn": SW},
    {"max_iter": 1, "lr": 0.1},
    {"max_iter": 1, "line_search_fn": SW},
    {"max_iter": 7, "history_size": 2, "lr": 0.5},
    {"tolerance_grad": 1e-3, "line_search_fn": SW},  # optimality: stops, then returns at once
    {"tolerance_change": 1e-3, "line_search_fn": SW},  # small loss change / step
    {"tolerance_change": 1e-2, "lr": 0.05},  # small step without line search
    {"max_eval": 7, "line_search_fn": SW},  # evaluation budget (and max_ls)
    {"max_eval": 3, "max_iter": 10},
    {"lr": torch.tensor(0.5, dtype=F64), "line_search_fn": SW},
    {"lr": 0.0},  # no move: stops on the slope test (g.d = 0 > -tolerance_change)
]


@pytest.mark.parametrize("kwargs", ROSEN_CASES, ids=lambda k: ",".join(map(str, k.items())))
def test_rosenbrock_float64(kwargs):
    run_rosen(kwargs)


def test_max_iter_zero_leaves_no_none_entries():
    pa, pb = rosen_params(), rosen_params()
    ref, ours = torch.optim.LBFGS(pa, max_iter=0), LBFGS(pb, max_iter=0)
    ref.step(make_closure(ref, pa))
    ours.step(make_closure(ours, pb))
    rs, os_ = ref.state[pa[0]], ours.state[pb[0]]
    assert {k: v for k, v in rs.items() if v is not None} == os_  # the documented deviation


@pytest.mark.parametrize("kwargs", [{"line_search_fn": SW}, {"history_size": 3, "max_iter": 8}])
def test_rosenbrock_float32(kwargs):
    run_rosen(kwargs, steps=4, dtype=F32)


def test_converges_like_torch():
    pa, pb = rosen_params(), rosen_params()
    ref = torch.optim.LBFGS(pa, line_search_fn=SW, tolerance_grad=1e-9, max_iter=100)
    ours = LBFGS(pb, line_search_fn=SW, tolerance_grad=1e-9, max_iter=100)
    la = ref.step(make_closure(ref, pa))
    lb = ours.step(make_closure(ours, pb))
    assert lb.item() == la.item()
    for p in pb:
        torch.testing.assert_close(p, torch.ones_like(p), rtol=0, atol=1e-4)
    assert_state_same(ours, ref, 1e-10)


NET_CASES = [
    ({"max_iter": 5}, F64, False),
    ({"max_iter": 4, "history_size": 3, "line_search_fn": SW}, F64, False),
    ({"max_iter": 1, "lr": 0.2}, F64, False),
    ({"max_iter": 4, "line_search_fn": SW}, F64, True),  # None gradients count as zeros
    ({"max_iter": 4, "history_size": 3, "line_search_fn": SW}, F32, False),
]


@pytest.mark.parametrize(("kwargs", "dtype", "skip"), NET_CASES)
def test_harness_model(kwargs, dtype, skip):
    _, _, ref, ours = train_pair(
        LBFGS,
        torch.optim.LBFGS,
        kwargs,
        steps=3,
        dtype=dtype,
        skip=skip,
        closure=True,
        param_groups=False,
        atol=atol_for(dtype),
    )
    assert_state_same(ours, ref, atol_for(dtype))


def test_harness_model_defaults():
    """Default max_iter (20) and history_size (100), with the line search."""
    _, _, ref, ours = train_pair(
        LBFGS,
        torch.optim.LBFGS,
        {"line_search_fn": SW},
        steps=1,
        closure=True,
        param_groups=False,
        atol=1e-10,
    )
    assert_state_same(ours, ref, 1e-10)


def test_complex_parameter():
    target = torch.tensor([1 + 2j, -0.5j, 3.0], dtype=torch.complex128)

    def f(params):
        z, w = params
        return (z - target).abs().pow(2).sum() + (z[0] * w).abs().pow(2).sum() + w.square().sum()

    def make():
        return [
            torch.tensor([0.5, 1j, -1 + 1j], dtype=torch.complex128, requires_grad=True),
            torch.tensor([0.3, -0.2], dtype=F64, requires_grad=True),
        ]

    for kwargs in ({"line_search_fn": SW, "max_iter": 5}, {"max_iter": 5, "lr": 0.3}):
        pa, pb = make(), make()
        ref, ours = torch.optim.LBFGS(pa, **kwargs), LBFGS(pb, **kwargs)
        for _ in range(3):
            ref.step(make_closure(ref, pa, f))
            ours.step(make_closure(ours, pb, f))
            for a, b in zip(pa, pb):
                torch.testing.assert_close(b, a, rtol=0, atol=1e-10)
            assert_state_same(ours, ref, 1e-10)


# --------------------------------------------------------------------------------------------
# State dicts, hooks, pickling
# --------------------------------------------------------------------------------------------


def net_closure(net, opt, step: int):
    def closure():
        opt.zero_grad()
        loss = loss_fn(net, step, skip=False)
        loss.backward()
        return loss

    return closure


@pytest.mark.parametrize(
    "kwargs", [{"max_iter": 3, "history_size": 2, "line_search_fn": SW}, {"max_iter": 1}]
)
def test_resume_state_dict_interchange(kwargs):
    """Mid-run: ours → torch.load(weights_only) → fresh ours; torch's → ours; ours → torch;
    each continued and compared with the uninterrupted torch run."""
    steps, at = 5, 2
    nets = [make_net() for _ in range(4)]
    opts = [torch.optim.LBFGS(nets[0].parameters(), **kwargs)] + [
        LBFGS(n.parameters(), **kwargs) for n in nets[1:]
    ]
    for t in range(steps):
        if t == at:
            sd_ours, sd_ref = opts[1].state_dict(), opts[0].state_dict()
            assert list(sd_ours["state"]) == list(sd_ref["state"]) == [0]
            assert sd_ours["param_groups"] == sd_ref["param_groups"]
            fresh = [copy.deepcopy(n) for n in nets[1:]]
            new = [
                LBFGS(fresh[0].parameters(), **kwargs),
                LBFGS(fresh[1].parameters(), **kwargs),
                torch.optim.LBFGS(fresh[2].parameters(), **kwargs),
            ]
            new[0].load_state_dict(roundtrip(opts[1].state_dict()))
            new[1].load_state_dict(roundtrip(opts[0].state_dict()))
            new[2].load_state_dict(roundtrip(opts[3].state_dict()))
            assert_state_same(new[0], opts[0], 1e-12)
            assert_state_same(new[1], opts[0], 1e-12)
            nets[1:], opts[1:] = fresh, new
        for net, opt in zip(nets, opts):
            opt.step(net_closure(net, opt, t))
        for i, (net, opt) in enumerate(zip(nets[1:], opts[1:])):
            for p, q in zip(nets[0].parameters(), net.parameters()):
                torch.testing.assert_close(q, p, rtol=0, atol=1e-10, msg=f"step {t} run {i}")
            if isinstance(opt, LBFGS):
                assert_state_same(opt, opts[0], 1e-10)


def test_hooks_zero_grad_and_pickle():
    pa, pb = rosen_params(), rosen_params()
    ref, ours = torch.optim.LBFGS(pa, line_search_fn=SW), LBFGS(pb, line_search_fn=SW)
    calls = []
    ours.register_step_pre_hook(lambda opt, args, kwargs: calls.append("pre"))
    ours.register_step_post_hook(lambda opt, args, kwargs: calls.append("post"))
    ours.register_state_dict_post_hook(lambda opt, sd: calls.append("sd"))
    ours.register_load_state_dict_post_hook(lambda opt: calls.append("load"))
    ref.step(make_closure(ref, pa))
    ours.step(make_closure(ours, pb))
    assert calls == ["pre", "post"]
    ours.load_state_dict(ours.state_dict())
    assert calls == ["pre", "post", "sd", "load"]
    ours.zero_grad()
    assert all(p.grad is None for p in pb)

    # a pickled (or deep-copied) optimizer goes on exactly like the original
    ref.step(make_closure(ref, pa))
    for clone in (pickle.loads(pickle.dumps(ours)), copy.deepcopy(ours)):
        params = clone.param_groups[0]["params"]
        clone.step(make_closure(clone, params))
        for a, b in zip(pa, params):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-12)
        assert_state_same(clone, ref, 1e-12)


# --------------------------------------------------------------------------------------------
# Validation: torch's error types and messages
# --------------------------------------------------------------------------------------------


def raises_like_torch(make: Callable[[Any], Any]) -> None:
    with pytest.raises(Exception) as ref:
        make(torch.optim.LBFGS)
    with pytest.raises(type(ref.value)) as ours:
        make(LBFGS)
    assert str(ours.value) == str(ref.value)


@pytest.mark.parametrize(
    "make",
    [
        lambda cls: cls(rosen_params(), lr=-1.0),
        lambda cls: cls(rosen_params(), lr=torch.tensor([1.0, 2.0])),
        lambda cls: cls([{"params": [p]} for p in rosen_params()]),
        lambda cls: cls([]),
    ],
    ids=["negative_lr", "tensor_lr", "param_groups", "no_params"],
)
def test_construction_errors(make):
    raises_like_torch(make)


def test_step_errors():
    def bad_line_search(cls):
        ps = rosen_params()
        opt = cls(ps, line_search_fn="armijo")
        opt.step(make_closure(opt, ps))

    raises_like_torch(bad_line_search)
    raises_like_torch(lambda cls: cls(rosen_params()).step())

    def two_groups(cls):
        ps = rosen_params()
        opt = cls(ps[:1])
        opt.add_param_group({"params": ps[1:]})
        opt.step(make_closure(opt, ps))

    raises_like_torch(two_groups)


# --------------------------------------------------------------------------------------------
# The pure functions
# --------------------------------------------------------------------------------------------


def rosen_fun(x: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    v = [p.detach().requires_grad_() for p in x]
    loss = rosenbrock(v)
    loss.backward()
    return loss.detach(), flatten_grads([p.grad for p in v], v)


def test_init_state():
    s = torch_lbfgs_init()
    assert isinstance(s, TorchLBFGSState)
    assert s.func_evals == 0 and s.n_iter == 0
    assert all(getattr(s, f) is None for f in s._fields[2:])


@pytest.mark.parametrize("kwargs", [{"line_search_fn": SW, "history_size": 3}, {"max_iter": 4}])
def test_functional_step_matches_torch_and_is_pure(kwargs):
    x = [p.detach() for p in rosen_params()]
    ref_params = rosen_params()
    ref = torch.optim.LBFGS(ref_params, **kwargs)
    state = torch_lbfgs_init()
    for _ in range(4):
        x_before = [p.clone() for p in x]
        snapshot = copy.deepcopy(state)
        loss, new_x, new_state = torch_lbfgs_step(rosen_fun, x, state, **kwargs)
        # inputs untouched
        for a, b in zip(x, x_before):
            assert torch.equal(a, b)
        for f in state._fields:
            assert_same(getattr(state, f), getattr(snapshot, f), 0.0, f)
        ref_loss = ref.step(make_closure(ref, ref_params))
        assert float(loss) == float(ref_loss)
        for a, b in zip(ref_params, new_x):
            torch.testing.assert_close(b, a.detach(), rtol=0, atol=1e-10)
        assert isinstance(new_state, TorchLBFGSState)
        assert new_state.n_iter > state.n_iter and new_state.func_evals > state.func_evals
        for f, v in ref.state[ref_params[0]].items():
            assert_same(getattr(new_state, f), v, 1e-10, f)
        x, state = new_x, new_state


def test_functional_step_returns_params_when_optimal():
    x = [torch.ones(3, dtype=F64), torch.ones(1, 2, dtype=F64)]  # the minimum: g = 0
    loss, new_x, state = torch_lbfgs_step(rosen_fun, x, torch_lbfgs_init())
    assert new_x[0] is x[0] and new_x[1] is x[1]
    assert float(loss) == 0.0 and state == TorchLBFGSState(func_evals=1)


@pytest.mark.parametrize(
    ("lr", "msg"),
    [(-0.5, "Invalid learning rate: -0.5"), (torch.ones(2), "Tensor lr must be 1-element")],
)
def test_functional_step_validates_lr(lr, msg):
    with pytest.raises(ValueError, match=msg):
        torch_lbfgs_step(rosen_fun, [torch.zeros(2)], torch_lbfgs_init(), lr=lr)


def test_cubic_interpolate_matches_torch():
    from torch.optim.lbfgs import _cubic_interpolate

    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        x1, f1, g1, x2, f2, g2 = torch.randn(6, generator=gen, dtype=F64)
        for bounds in (None, (x1 - 0.5, x2 + 0.5)):
            args = (float(x1), float(f1), g1, float(x2), float(f2), g2)
            ref = _cubic_interpolate(*args, bounds=bounds)
            ours = cubic_interpolate(*args, bounds=bounds)
            assert type(ours) is type(ref) and float(ours) == float(ref)
    # no real minimizer: the midpoint
    g = torch.tensor(1.0, dtype=F64)
    assert cubic_interpolate(0.0, 0.0, g, 1.0, 0.5, g) == 0.5


def test_cubic_interpolate_minimizes_a_cubic():
    def c(x):
        return x**3 - 3 * x  # minimum at 1

    def dc(x):
        return torch.tensor(3 * x**2 - 3.0, dtype=F64)

    x = cubic_interpolate(0.0, c(0.0), dc(0.0), 2.0, c(2.0), dc(2.0))
    assert float(x) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("t", [1.0, 1e-3, 30.0])
@pytest.mark.parametrize("max_ls", [25, 2])
def test_strong_wolfe_matches_torch(t, max_ls):
    from torch.optim.lbfgs import _strong_wolfe

    x0 = torch.tensor(START, dtype=F64)
    f0, g0 = rosen_fun([x0])
    d = -g0
    gtd = g0.dot(d)

    def ref_obj(x, t, d):
        return rosen_fun([x[0].add(d, alpha=t)])[0].item(), rosen_fun([x[0].add(d, alpha=t)])[1]

    def our_obj(t, d):
        f, g = rosen_fun(add_direction([x0], t, d))
        return float(f), g

    ref = _strong_wolfe(ref_obj, [x0], t, d, float(f0), g0, gtd, max_ls=max_ls)
    ours = strong_wolfe(our_obj, t, d, float(f0), g0, gtd, max_ls=max_ls)
    assert ours[0] == ref[0] and ours[3] == ref[3]
    assert torch.equal(ours[1], ref[1]) and float(ours[2]) == float(ref[2])
    if max_ls == 25:  # the point found satisfies the strong Wolfe conditions
        f, g, t_new, _ = ours
        assert f <= float(f0) + 1e-4 * float(t_new) * float(gtd)
        assert abs(float(g.dot(d))) <= -0.9 * float(gtd)


def test_two_loop_is_the_bfgs_recursion():
    """d = -H g with H_{j+1} = V_j^T H_j V_j + rho_j s_j s_j^T, H_0 = gamma I (N&W (7.19))."""
    gen = torch.Generator().manual_seed(1)
    n, m = 6, 4
    a = torch.randn(n, n, generator=gen, dtype=F64)
    hess = a @ a.T + n * torch.eye(n, dtype=F64)
    ss = [torch.randn(n, generator=gen, dtype=F64) for _ in range(m)]
    ys = [hess @ s for s in ss]
    old_dirs, old_stps, ro, h_diag = [], [], [], 1
    for s, y in zip(ss, ys):
        before = (list(old_dirs), list(old_stps), list(ro))
        new = lbfgs_update_history(old_dirs, old_stps, ro, h_diag, y, s, history_size=3)
        assert (old_dirs, old_stps, ro) == before  # inputs not modified
        old_dirs, old_stps, ro, h_diag = new
    assert len(old_dirs) == 3 and old_stps[0] is ss[1] and old_dirs[-1] is ys[-1]
    assert float(h_diag) == pytest.approx(float(ys[-1].dot(ss[-1]) / ys[-1].dot(ys[-1])))

    g = torch.randn(n, generator=gen, dtype=F64)
    al = [None] * 3
    d, new_al = lbfgs_direction(g, old_dirs, old_stps, ro, h_diag, al)
    assert al == [None] * 3 and all(isinstance(v, torch.Tensor) for v in new_al)
    h = float(h_diag) * torch.eye(n, dtype=F64)
    eye = torch.eye(n, dtype=F64)
    for s, y, r in zip(old_stps, old_dirs, ro):
        v = eye - r * torch.outer(y, s)
        h = v.T @ h @ v + r * torch.outer(s, s)
    torch.testing.assert_close(d, -h @ g, rtol=1e-10, atol=1e-12)


def test_update_history_skips_non_positive_curvature():
    y = torch.tensor([1.0, 0.0], dtype=F64)
    s = torch.tensor([-1.0, 0.0], dtype=F64)
    out = lbfgs_update_history([], [], [], 1, y, s, history_size=5)
    assert out == ([], [], [], 1)


def test_flatten_grads_and_add_direction():
    p = [
        torch.zeros(2, 2, dtype=F64),
        torch.zeros(2, dtype=torch.complex128),
        torch.zeros(3, dtype=F64),
    ]
    sparse = torch.sparse_coo_tensor(
        torch.tensor([[1]]), torch.tensor([5.0]), (3,), dtype=F64, check_invariants=True
    )
    grads = [torch.ones(2, 2, dtype=F64), torch.tensor([1 + 2j, 3 - 4j]), sparse]
    flat = flatten_grads(grads, p)
    expected = [1.0, 1, 1, 1, 1, 2, 3, -4, 0, 5, 0]
    assert flat.tolist() == expected
    assert flatten_grads([None, None, None], p).tolist() == [0.0] * 11
    moved = add_direction(p, 2.0, flat)
    assert moved[0].tolist() == [[2.0, 2.0], [2.0, 2.0]]
    assert moved[1].tolist() == [2 + 4j, 6 - 8j]
    assert moved[2].tolist() == [0.0, 10.0, 0.0]
    assert all(bool((q == 0).all()) for q in p)  # out of place
    with pytest.raises(AssertionError, match="offset"):
        add_direction(p, 1.0, torch.zeros(12, dtype=F64))
