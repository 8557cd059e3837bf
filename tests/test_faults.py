"""Faults (issue 13): non-finite gradients, GradScaler overflow steps, half precision, and the
low-precision wrappers (kahan_summation, stochastic_rounding). See docs/faults.md."""

import copy

import pytest
import torch

import optax_torch as otx
from optax_torch import TorchOptimizer
from optax_torch.compat import torch_optim as drop

OPTS = {
    "adamw": lambda: otx.adamw(1e-2, weight_decay=0.1),
    "sgd_momentum": lambda: otx.sgd(1e-2, momentum=0.9),
    "lamb": lambda: otx.lamb(1e-2),
    "adafactor": lambda: otx.adafactor(1e-2),
    "lion": lambda: otx.lion(1e-3),
    "schedule_free_adamw": lambda: otx.contrib.schedule_free_adamw(1e-2),
}


def _params():
    g = torch.Generator().manual_seed(0)
    return {"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g)}


def _grads(t):
    g = torch.Generator().manual_seed(100 + t)
    return {"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g)}


def _bad(t, value):
    g = _grads(t)
    g["w"][1, 2] = value
    return g


def _same(a, b):
    la, lb = otx.tree.leaves(a), otx.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype, (x, y)
            assert torch.equal(x, y) or torch.allclose(x, y, equal_nan=True, rtol=0, atol=0), (x, y)
        else:
            assert x == y


def _run(tx, grads_seq):
    params = _params()
    state = tx.init(params)
    for g in grads_seq:
        updates, state = tx.update(g, state, params)
        params = otx.apply_updates(params, updates)
    return params, state


# ------------------------------------------------------------------------------------------------
# apply_if_finite / MultiSteps(skip_not_finite): a bad step is skipped and counted, nothing else
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("name", sorted(OPTS))
def test_apply_if_finite_skips_cleanly(name, value):
    tx = otx.apply_if_finite(OPTS[name](), max_consecutive_errors=3)
    good = [_grads(t) for t in range(4)]
    params, state = _run(tx, good[:2])
    updates, new_state = tx.update(_bad(9, value), state, params)
    assert all(torch.equal(u, torch.zeros_like(u)) for u in otx.tree.leaves(updates))
    _same(new_state.inner_state, state.inner_state)
    assert new_state.notfinite_count == 1 and new_state.total_notfinite == 1
    assert not bool(new_state.last_finite)
    # and the run continues exactly as if the bad step never happened (counter aside)
    for g in good[2:]:
        u, new_state = tx.update(g, new_state, params)
        params = otx.apply_updates(params, u)
    p_ref, s_ref = _run(tx, good)
    _same(params, p_ref)
    _same(new_state.inner_state, s_ref.inner_state)
    assert new_state.total_notfinite == 1 and new_state.notfinite_count == 0


@pytest.mark.parametrize("name", sorted(OPTS))
def test_multi_steps_skip_not_finite(name):
    tx = otx.MultiSteps(OPTS[name](), 2, should_skip_update_fn=otx.skip_not_finite)
    good = [_grads(t) for t in range(4)]
    params, state = _run(tx, good[:1])
    updates, new_state = tx.update(_bad(9, float("nan")), state, params)
    assert all(torch.equal(u, torch.zeros_like(u)) for u in otx.tree.leaves(updates))
    _same(new_state.inner_opt_state, state.inner_opt_state)
    _same(new_state.acc_grads, state.acc_grads)
    assert new_state.mini_step == state.mini_step
    assert new_state.skip_state["num_not_finite"] == 1 and bool(new_state.skip_state["should_skip"])
    for g in good[1:]:
        u, new_state = tx.update(g, new_state, params)
        params = otx.apply_updates(params, u)
    p_ref, s_ref = _run(tx, good)
    _same(params, p_ref)
    _same(new_state.inner_opt_state, s_ref.inner_opt_state)


# ------------------------------------------------------------------------------------------------
# Without a wrapper: NaN/Inf propagate exactly like torch.optim's (same pattern, bit for bit)
# ------------------------------------------------------------------------------------------------


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))


def _train(make_opt, value, k=2, steps=4, scaler=None):
    net = _net()
    opt = make_opt(net.parameters())
    x = torch.randn(8, 5, generator=torch.Generator().manual_seed(1))
    for t in range(steps):
        opt.zero_grad()
        loss = (net(x + t) ** 2).mean()
        (scaler.scale(loss) if scaler else loss).backward()
        if t == k:
            net[0].weight.grad[1, 2] = value
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
    return net, opt


NAN_PAIRS = {
    "adamw": (
        lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1, foreach=False),
        lambda p: TorchOptimizer(p, otx.adamw, lr=1e-2, weight_decay=0.1),
        0,
    ),
    "adamw_dropin": (
        lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1, foreach=False),
        lambda p: drop.AdamW(p, lr=1e-2, weight_decay=0.1),
        0,
    ),
    "sgd_dropin": (
        lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, foreach=False),
        lambda p: drop.SGD(p, lr=1e-2, momentum=0.9),
        1e-6,
    ),
}


def _nan_mask(t):
    return torch.isnan(t), torch.isposinf(t), torch.isneginf(t)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("case", sorted(NAN_PAIRS))
def test_non_finite_propagates_like_torch_optim(case, value):
    make_ref, make_ours, tol = NAN_PAIRS[case]
    a, oa = _train(make_ref, value)
    b, ob = _train(make_ours, value)
    for pa, pb in zip(a.parameters(), b.parameters()):
        for ma, mb in zip(_nan_mask(pa), _nan_mask(pb)):
            assert torch.equal(ma, mb)
        fin = torch.isfinite(pa)
        torch.testing.assert_close(pb[fin], pa[fin], rtol=tol, atol=tol)
    sa, sb = oa.state_dict()["state"], ob.state_dict()["state"]
    names = {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq", "momentum_buffer": "momentum_buffer"}
    for i in sa:
        for key in names:
            if key in sa[i] and key in sb[i]:
                for ma, mb in zip(_nan_mask(sa[i][key]), _nan_mask(sb[i][key])):
                    assert torch.equal(ma, mb), (i, key)
    # the bad element is non-finite after step k; later forward passes spread it (as in torch)
    assert not bool(torch.isfinite(b[0].weight).all())


# ------------------------------------------------------------------------------------------------
# GradScaler: an overflow step leaves params and optimizer state untouched
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda p: TorchOptimizer(p, otx.adamw, lr=1e-2, weight_decay=0.1),
        lambda p: drop.AdamW(p, lr=1e-2, weight_decay=0.1),
        lambda p: drop.SGD(p, lr=1e-2, momentum=0.9),
    ],
    ids=["adapter_adamw", "dropin_adamw", "dropin_sgd"],
)
def test_grad_scaler_overflow_step_is_a_no_op(make):
    net = _net()
    opt = make(net.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    x = torch.randn(8, 5, generator=torch.Generator().manual_seed(1))
    for t in range(5):
        opt.zero_grad()
        scaler.scale((net(x + t) ** 2).mean()).backward()
        if t in (2, 3):
            net[0].weight.grad[0, 0] = float("inf") if t == 2 else float("nan")
            before_p = [p.detach().clone() for p in net.parameters()]
            before_s = copy.deepcopy(opt.state_dict())
            scale = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        if t in (2, 3):
            assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before_p))
            _same(opt.state_dict()["state"], before_s["state"])
            assert scaler.get_scale() == scale / 2


@pytest.mark.parametrize(
    "ref,ours",
    [
        (
            lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1, foreach=False),
            lambda p: TorchOptimizer(p, otx.adamw, lr=1e-2, weight_decay=0.1),
        ),
        (
            lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1, foreach=False),
            lambda p: drop.AdamW(p, lr=1e-2, weight_decay=0.1),
        ),
        (
            lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, foreach=False),
            lambda p: drop.SGD(p, lr=1e-2, momentum=0.9),
        ),
    ],
    ids=["adapter_adamw", "dropin_adamw", "dropin_sgd"],
)
def test_grad_scaler_run_matches_torch_optim(ref, ours):
    def run(make):
        net = _net()
        opt = make(net.parameters())
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=3)
        x = torch.randn(8, 5, generator=torch.Generator().manual_seed(1))
        scales = []
        for t in range(10):
            opt.zero_grad()
            scaler.scale((net(x + t) ** 2).mean()).backward()
            if t in (1, 2, 6):
                net[2].weight.grad[0, 1] = float("inf")
            scaler.step(opt)
            scaler.update()
            scales.append(scaler.get_scale())
        return net, scales

    a, sa = run(ref)
    b, sb = run(ours)
    assert sa == sb
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pb, pa, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Half precision: state in the param dtype, like torch.optim; float16 nu overflows like torch's
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_adam_matches_torch_optim_including_nu_overflow(dtype):
    def run(make):
        w = torch.ones(3, dtype=dtype, requires_grad=True)
        opt = make([w])
        for _ in range(30):
            w.grad = torch.tensor([1.0, 100.0, 2000.0]).to(dtype)  # nu > 65504 at step 17
            opt.step()
        return w.detach(), opt.state_dict()["state"][0]

    wa, sa = run(lambda p: torch.optim.Adam(p, lr=1e-2, foreach=False))
    wb, sb = run(lambda p: TorchOptimizer(p, otx.adam, lr=1e-2))
    # same values to one unit in the last place (torch rounds nu once per step, we twice)
    torch.testing.assert_close(wb, wa, rtol=1e-2, atol=0)
    assert sb["0.mu"].dtype == sb["0.nu"].dtype == dtype
    torch.testing.assert_close(sb["0.nu"], sa["exp_avg_sq"], rtol=1e-2, atol=0)
    if dtype == torch.float16:
        # nu overflowed to inf: the element's update is mu / inf = 0, it stops moving (as torch)
        assert torch.isinf(sb["0.nu"][2]) and bool(torch.isfinite(sb["0.nu"][:2]).all())
    else:
        assert bool(torch.isfinite(sb["0.nu"]).all())
    # g**2 itself is never materialised in the half dtype: |g| = 300 (g**2 = 90000 > 65504) at the
    # first step gives nu = 0.001 * 90000 = 90, in both libraries
    for make in (
        lambda p: torch.optim.Adam(p, lr=1e-2, foreach=False),
        lambda p: TorchOptimizer(p, otx.adam, lr=1e-2),
    ):
        w = torch.ones(2, dtype=dtype, requires_grad=True)
        opt = make([w])
        w.grad = torch.full((2,), 300.0, dtype=dtype)
        opt.step()
        nu = [v for k, v in opt.state_dict()["state"][0].items() if k in ("exp_avg_sq", "0.nu")]
        assert torch.equal(nu[0], torch.full((2,), 90.0, dtype=dtype))
    # mu_dtype keeps the first moment in float32 (nu stays in the param dtype, as in optax)
    w = torch.ones(3, dtype=dtype, requires_grad=True)
    opt = TorchOptimizer([w], otx.adam(1e-2, mu_dtype=torch.float32))
    w.grad = torch.ones(3, dtype=dtype)
    opt.step()
    st = opt.state_dict()["state"][0]
    assert st["0.mu"].dtype == torch.float32 and st["0.nu"].dtype == dtype


# ------------------------------------------------------------------------------------------------
# kahan_summation / stochastic_rounding
# ------------------------------------------------------------------------------------------------


def _regression():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 32, generator=g)
    y = x @ torch.randn(32, generator=g)
    w0 = torch.randn(32, generator=g) * 0.1 + 3.0
    return x, y, w0


def _loss(x, y, w):
    return ((x @ w.float() - y) ** 2).mean()


def _fit(tx, dtype, steps, adapter=False):
    x, y, w0 = _regression()
    if adapter:
        w = w0.to(dtype).requires_grad_(True)
        opt = TorchOptimizer([w], tx)
        for _ in range(steps):
            opt.zero_grad()
            _loss(x, y, w).backward()
            opt.step()
        return w.detach(), opt
    p = w0.to(dtype)
    state = tx.init(p)
    for _ in range(steps):
        q = p.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(_loss(x, y, q), q)
        u, state = tx.update(g, state, p)
        assert u.dtype == p.dtype
        p = otx.apply_updates(p, u)
    return p, state


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_compensated_and_stochastic_bf16_track_float32(dtype):
    steps = 400
    ref, _ = _fit(otx.sgd(3e-3), torch.float32, steps)
    err = {}
    for name, tx in {
        "plain": otx.sgd(3e-3),
        "kahan": otx.kahan_summation(otx.sgd(3e-3)),
        "kahan_lowcomp": otx.kahan_summation(otx.sgd(3e-3), compensation_dtype=None),
        "stochastic": otx.stochastic_rounding(otx.sgd(3e-3), key=0),
    }.items():
        p, _ = _fit(tx, dtype, steps)
        assert p.dtype == dtype
        err[name] = ((p.float() - ref).norm() / ref.norm()).item()
    for name in ("kahan", "kahan_lowcomp", "stochastic"):
        assert err[name] < err["plain"] / 5, err


@pytest.mark.parametrize(
    "wrap",
    [otx.kahan_summation, lambda t: otx.stochastic_rounding(t, key=3)],
    ids=["kahan", "stochastic"],
)
def test_precision_wrappers_through_adapter_equal_functional(wrap):
    a, _ = _fit(wrap(otx.adam(1e-2)), torch.bfloat16, 50)
    b, _ = _fit(wrap(otx.adam(1e-2)), torch.bfloat16, 50, adapter=True)
    assert torch.equal(a, b)


def test_kahan_bookkeeping_is_exact():
    # p + c is the float32 sum of all updates (to float32 rounding), whatever bf16 drops
    p = torch.full((5,), 3.0, dtype=torch.bfloat16)
    tx = otx.kahan_summation(otx.scale(1.0))
    state = tx.init(p)
    total = p.float().clone()
    for t in range(200):
        u = torch.full((5,), 1e-4 * (1 + t % 3))
        total += u
        v, state = tx.update(u.to(torch.bfloat16), state, p)
        p = otx.apply_updates(p, v)
    master = p.float() + state.compensation
    torch.testing.assert_close(master, total, rtol=0, atol=1e-5)
    assert state.compensation.dtype == torch.float32


def test_stochastic_rounding_is_unbiased_and_resumes():
    p = torch.full((20000,), 1.0, dtype=torch.bfloat16)  # ulp above 1.0: 2**-7
    tx = otx.stochastic_rounding(otx.scale(1.0), key=0)
    state = tx.init(p)
    u, _ = tx.update(torch.full_like(p, 2.0**-9), state, p)  # a quarter of the gap
    new = otx.apply_updates(p, u)
    assert set(new.float().unique().tolist()) == {1.0, 1.0 + 2.0**-7}
    assert abs((new.float() - 1).mean().item() - 2.0**-9) < 2.0**-9 * 0.05
    u2, _ = tx.update(torch.full_like(p, 2.0**-9), state, p)  # same generator state, same draw
    assert torch.equal(u, u2)
    # float32 leaves pass through
    q = torch.ones(3)
    v, _ = tx.update(torch.full((3,), 1e-9), tx.init(q), q)
    assert torch.equal(v, torch.full((3,), 1e-9))


def test_precision_wrappers_validate_and_handle_missing_grads():
    with pytest.raises(ValueError, match="compensation_dtype"):
        otx.kahan_summation(otx.sgd(0.1), compensation_dtype=torch.int32)
    with pytest.raises(ValueError, match="key"):
        otx.stochastic_rounding(otx.sgd(0.1), key=1.5)
    tx = otx.kahan_summation(otx.sgd(0.1))
    with pytest.raises(ValueError, match="params"):
        tx.update(torch.ones(2), tx.init(torch.ones(2)))
    # a parameter without a gradient in TorchOptimizer: untouched, compensation kept
    a = torch.ones(3, dtype=torch.bfloat16, requires_grad=True)
    b = torch.ones(3, dtype=torch.bfloat16, requires_grad=True)
    for wrap in (otx.kahan_summation, otx.stochastic_rounding):
        opt = TorchOptimizer([a, b], wrap(otx.sgd(1e-3)))
        a.grad, b.grad = torch.ones(3, dtype=torch.bfloat16), None
        opt.step()
        assert torch.equal(b, torch.ones(3, dtype=torch.bfloat16))


def test_half_precision_square_moments_do_not_overflow_early():
    # adadelta: torch.optim's fused m * rho + (1 - rho) * g * g; |g| = 300 gives 9000, not inf
    def run(make):
        w = torch.ones(2, dtype=torch.float16, requires_grad=True)
        opt = make([w])
        w.grad = torch.full((2,), 300.0, dtype=torch.float16)
        opt.step()
        return w.detach(), [v for k, v in opt.state_dict()["state"][0].items() if k != "step"]

    wa, sa = run(lambda p: torch.optim.Adadelta(p, foreach=False))
    wb, sb = run(lambda p: TorchOptimizer(p, otx.adadelta, learning_rate=1.0))
    assert torch.equal(wa, wb)
    assert all(torch.equal(x, y) for x, y in zip(sa, sb))
    # yogi: nu = 1e-6 - 1e-3 * sign(.) * 90000 = 90 in float16 (g**2 formed in float32)
    p = torch.ones(2, dtype=torch.float16)
    tx = otx.yogi(1e-2)
    u, state = tx.update(torch.full((2,), 300.0, dtype=torch.float16), tx.init(p), p)
    nu = otx.tree.leaves(state)[-1]
    assert nu.dtype == torch.float16 and bool(torch.isfinite(nu).all()) and u.dtype == p.dtype
    torch.testing.assert_close(nu.float(), torch.full((2,), 90.0), rtol=1e-3, atol=0)
    # nu_dtype=float32 keeps yogi's nu in float32: no overflow even where g**2 > 65504 steadily
    tx = otx.yogi(1e-2, nu_dtype=torch.float32)
    state = tx.init(p)
    for _ in range(50):
        u, state = tx.update(torch.full((2,), 2000.0, dtype=torch.float16), state, p)
    nu = otx.tree.leaves(state)[-1]
    assert nu.dtype == torch.float32 and bool(torch.isfinite(nu).all()) and float(nu[0]) > 65504
    assert bool(torch.isfinite(u).all())
