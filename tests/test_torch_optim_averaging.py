"""ASGD drop-in and torch.optim.swa_utils equivalents against torch, step by step; the averaging
transforms (optax_torch.transforms.averaging) in functional use."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch
from torch.optim import swa_utils as T
from torch_optim_ref import (
    assert_nets_close,
    check_resume,
    check_signature,
    check_state_like_torch,
    groups,
    make_net,
    one_step,
    roundtrip,
    tol,
)

from optax_torch.combine import chain
from optax_torch.compat.torch_optim import ASGD
from optax_torch.compat.torch_optim import swa_utils as S
from optax_torch.transforms.averaging import (
    PolyakAverageState,
    ScaleByAsgdState,
    ema_update,
    params_ema,
    params_swa,
    polyak_average,
    scale_by_asgd,
    swa_update,
)

# --------------------------------------------------------------------------------------------
# ASGD
# --------------------------------------------------------------------------------------------


def train_states(
    kwargs,
    bias_overrides=None,
    *,
    steps=20,
    dtype=torch.float64,
    skip=True,
    scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, 7, 0.5),
    closure=False,
):
    """torch.optim.ASGD and the drop-in side by side (two param groups, a scheduler, the
    intermittent side branch); parameters and per-parameter state (step, eta, mu, ax) compared
    after every step."""
    atol = tol(dtype)
    a, b = make_net(dtype), make_net(dtype)
    ref = torch.optim.ASGD(groups(a, **(bias_overrides or {})), **kwargs)
    ours = ASGD(groups(b, **(bias_overrides or {})), **kwargs)
    scheds = [scheduler(o) for o in (ref, ours)] if scheduler is not None else []
    for t in range(steps):
        for net, opt in ((a, ref), (b, ours)):
            one_step(net, opt, t, dtype, skip, closure)
        for s in scheds:
            s.step()
        assert_nets_close(a, b, atol, f"step {t}")
        check_state_like_torch(ref, ours, atol=atol)
    return ref, ours


ASGD_CASES = {
    "defaults": ({}, {"lr": 0.02}),
    "t0": ({"lr": 0.05, "t0": 5}, {"lr": 0.02, "t0": 2}),
    "lambd_alpha_wd": (
        {"lr": 0.05, "lambd": 0.1, "alpha": 0.5, "t0": 5, "weight_decay": 0.1},
        {"lr": 0.02, "weight_decay": 0.3, "lambd": 0.01, "alpha": 1.0},
    ),
    "maximize": (
        {"lr": 0.02, "t0": 5, "maximize": True, "weight_decay": 1.0},
        {"weight_decay": 1.5, "lambd": 0.2},
    ),
    "fractional_t0": ({"lr": 0.05, "t0": 4.5, "alpha": 1.0, "lambd": 0.05}, {"t0": -1.0}),
    "foreach": ({"lr": 0.05, "t0": 5, "lambd": 0.01, "foreach": True}, {"weight_decay": 0.2}),
    "tensor_lr": ({"lr": torch.tensor(0.05), "t0": 3, "lambd": 0.01}, {"weight_decay": 0.2}),
    "tensor_lr_foreach": (
        {"lr": torch.tensor(0.05), "t0": 3, "lambd": 0.01, "foreach": True},
        {},
    ),
}


def test_asgd_signature():
    check_signature(ASGD, torch.optim.ASGD)


@pytest.mark.parametrize("case", list(ASGD_CASES))
def test_asgd_matches_torch(case):
    kwargs, bias = ASGD_CASES[case]
    _, ours = train_states(kwargs, bias)
    p = ours.param_groups[0]["params"][0]
    assert set(ours.state[p]) == {"step", "eta", "mu", "ax"}


def test_asgd_foreach_none_is_torchs_choice(monkeypatch):
    # foreach=None: resolved by the drop-in with torch's rule (CPU: the single-tensor path); with
    # the CPU counted as a multi-tensor device, torch and the drop-in both take the foreach path.
    kw = {"lr": 0.05, "t0": 5, "lambd": 0.01}
    _, ours = train_states(kw, {"weight_decay": 0.2}, steps=5, dtype=torch.float32)
    assert ours._group_hyperparams(ours.param_groups[0])["foreach"] is False
    import torch.optim.optimizer as torch_optimizer

    monkeypatch.setattr(torch_optimizer, "_get_foreach_kernels_supported_devices", lambda: ["cpu"])
    _, ours = train_states(kw, {"weight_decay": 0.2}, steps=5, dtype=torch.float32)
    assert ours._group_hyperparams(ours.param_groups[0])["foreach"] is True
    assert ours.param_groups[0]["foreach"] is None
    with pytest.raises(ValueError, match="foreach"):
        scale_by_asgd(0.1, foreach=None)  # type: ignore[arg-type]


def test_asgd_float32():
    train_states(
        {"lr": 0.05, "t0": 5, "lambd": 0.01}, {"lr": 0.02, "weight_decay": 0.2}, dtype=torch.float32
    )


def test_asgd_default_dtype_float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        _, ours = train_states(
            {"lr": 0.05, "t0": 5, "lambd": 0.01}, {"weight_decay": 0.2}, steps=10
        )
        p = ours.param_groups[0]["params"][0]
        assert ours.state[p]["eta"].dtype == torch.float64
    finally:
        torch.set_default_dtype(old)


def test_asgd_complex():
    torch.manual_seed(0)
    p0 = torch.randn(4, dtype=torch.complex128)
    a, b = torch.nn.Parameter(p0.clone()), torch.nn.Parameter(p0.clone())
    kw = {"lr": 0.05, "t0": 2, "lambd": 0.1, "weight_decay": 0.1, "foreach": False}
    ref, ours = torch.optim.ASGD([a], **kw), ASGD([b], **kw)
    for t in range(8):
        for p, opt in ((a, ref), (b, ours)):
            opt.zero_grad()
            (p - t).abs().square().sum().backward()
            opt.step()
        torch.testing.assert_close(b, a, rtol=0, atol=1e-12)
        check_state_like_torch(ref, ours)


def test_asgd_scheduler_delay_closure_one_group():
    # eta follows the LR with one step of delay; steps through closures; one param group.
    a, b = make_net(), make_net()
    kw = {"lr": 0.05, "t0": 3, "lambd": 0.1}
    ref, ours = torch.optim.ASGD(a.parameters(), **kw), ASGD(b.parameters(), **kw)
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, lambda k: 1 / (1 + k)) for o in (ref, ours)]
    for t in range(12):
        for net, opt in ((a, ref), (b, ours)):
            assert one_step(net, opt, t, closure=True) is not None
        for s in scheds:
            s.step()
        assert_nets_close(a, b, 1e-12, f"step {t}")
        check_state_like_torch(ref, ours)


@pytest.mark.parametrize(
    "kwargs",
    [{"lr": 0.05, "t0": 3}, {"lr": 0.05, "t0": 2, "lambd": 0.1, "alpha": 0.5, "weight_decay": 0.1}],
)
def test_asgd_resume(kwargs):
    check_resume(ASGD, torch.optim.ASGD, kwargs, {"lr": 0.02, "t0": 1})


def test_asgd_state_dict_layout():
    _, ours = train_states({"lr": 0.05, "t0": 2}, steps=3)
    sd = roundtrip(ours.state_dict())
    entry = sd["state"][0]
    assert set(entry) == {"step", "eta", "mu", "ax"}
    assert entry["eta"].dtype == torch.float32 and entry["mu"].dtype == torch.float32
    assert entry["eta"].dim() == 0 and entry["step"].dim() == 0


def _raises_like(args, kwargs):
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(Exception) as ref:
        torch.optim.ASGD(params, *args, **kwargs)
    with pytest.raises(type(ref.value), match=None) as got:
        ASGD(params, *args, **kwargs)
    assert str(got.value) == str(ref.value)


@pytest.mark.parametrize(
    "args, kwargs",
    [
        ((-0.1,), {}),
        ((), {"lr": torch.tensor([0.1, 0.2])}),
        ((), {"weight_decay": -1.0}),
        ((0.1, 1e-4, 0.75, 1e6, -0.5), {}),
    ],
)
def test_asgd_validation_like_torch(args, kwargs):
    _raises_like(args, kwargs)


def test_asgd_differentiable_not_supported():
    with pytest.raises(NotImplementedError, match="differentiable"):
        ASGD([torch.nn.Parameter(torch.zeros(2))], differentiable=True)


# --------------------------------------------------------------------------------------------
# scale_by_asgd / polyak_average, functional
# --------------------------------------------------------------------------------------------


def _tree(dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    return [
        torch.randn(3, generator=gen, dtype=dtype),
        torch.randn(2, 2, generator=gen, dtype=dtype),
    ]


def test_scale_by_asgd_functional():
    params, grads = _tree(), _tree()
    grads = [g * 0.1 for g in grads]
    tx = scale_by_asgd(0.1, lambd=0.5, alpha=1.0)
    state = tx.init(params)
    assert isinstance(state, ScaleByAsgdState)
    assert state.count.dtype == torch.int32 and float(state.eta) == pytest.approx(0.1)
    before = [x.clone() for x in params + grads]
    updates, new = tx.update(grads, state, params)
    for x, y in zip(params + grads, before):
        assert torch.equal(x, y)  # inputs untouched
    eta = torch.tensor(0.1, dtype=torch.float32).item()
    for u, p, g in zip(updates, params, grads):
        torch.testing.assert_close(u, -eta * (g + 0.5 * p), rtol=0, atol=1e-15)
    assert int(new.count) == 1
    expected = torch.tensor(0.1 / (1 + 0.5 * 0.1 * 1), dtype=torch.float32)
    assert torch.equal(new.eta, expected)
    with pytest.raises(ValueError, match="needs params"):
        tx.update(grads, state)


def test_polyak_average_is_mean_of_iterates():
    params = _tree()
    tx = chain(scale_by_asgd(0.1, lambd=0.0), polyak_average(t0=-1, mu_dtype=torch.float64))
    state = tx.init(params)
    assert isinstance(state[1], PolyakAverageState)
    assert state[1].mu.dtype == torch.float64 and int(state[1].count) == 0
    iterates = []
    for k in range(6):
        grads = [torch.full_like(p, float(k + 1)) for p in params]
        before = [x.clone() for x in [*params, *state[1].ax]]
        updates, state_new = tx.update(grads, state, params)
        for x, y in zip([*params, *state[1].ax], before):
            assert torch.equal(x, y)  # inputs and old state untouched
        state = state_new
        params = [p + u for p, u in zip(params, updates)]
        iterates.append(params)
    for j, ax in enumerate(state[1].ax):
        mean = torch.stack([it[j] for it in iterates]).mean(0)
        torch.testing.assert_close(ax, mean, rtol=0, atol=1e-14)


def test_averaging_transforms_validate():
    with pytest.raises(ValueError, match="learning_rate"):
        scale_by_asgd(-1.0)
    with pytest.raises(ValueError, match="lambd"):
        scale_by_asgd(0.1, lambd=float("nan"))
    with pytest.raises(ValueError, match="alpha"):
        scale_by_asgd(0.1, alpha=float("inf"))
    with pytest.raises(ValueError, match="t0"):
        polyak_average(float("nan"))
    with pytest.raises(ValueError, match="decay"):
        params_ema(1.5)
    with pytest.raises(ValueError, match="decay"):
        ema_update([torch.zeros(1)], [torch.zeros(1)], -0.1)


# --------------------------------------------------------------------------------------------
# swa_utils: averaging functions and AveragedModel
# --------------------------------------------------------------------------------------------


class BNNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 6)
        self.bn = torch.nn.BatchNorm1d(6)
        self.out = torch.nn.Linear(6, 2)
        self.register_buffer("scale", torch.ones(6))

    def forward(self, x):
        return self.out(torch.tanh(self.bn(self.fc(x)) * self.scale))


def _bn_net(dtype, seed=0):
    torch.manual_seed(seed)
    return BNNet().to(dtype)


def _train_models(dtype, steps, use_buffers, make_ref, make_ours, int_buffers=True):
    """Trains a model with SGD and updates both averaged models after each step."""
    net = _bn_net(dtype)
    if not int_buffers:
        net.bn.num_batches_tracked = None  # type: ignore[assignment]
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    ref, ours = make_ref(net), make_ours(net)
    gen = torch.Generator().manual_seed(1)
    for t in range(steps):
        x = torch.randn(8, 4, generator=gen, dtype=torch.float64).to(dtype)
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()
        with torch.no_grad():
            net.get_buffer("scale").mul_(1.01)
        ref.update_parameters(net)
        ours.update_parameters(net)
        atol = tol(dtype)
        for (n, p), q in zip(ref.state_dict().items(), ours.state_dict().values()):
            torch.testing.assert_close(q, p, rtol=0, atol=atol, msg=lambda m: f"{t} {n}: {m}")
    return net, ref, ours


AVG_FNS = {
    "ema_multi": (
        lambda: {"multi_avg_fn": T.get_ema_multi_avg_fn(0.9)},
        lambda: {"multi_avg_fn": S.get_ema_multi_avg_fn(0.9)},
    ),
    "swa_multi": (
        lambda: {"multi_avg_fn": T.get_swa_multi_avg_fn()},
        lambda: {"multi_avg_fn": S.get_swa_multi_avg_fn()},
    ),
    "ema": (lambda: {"avg_fn": T.get_ema_avg_fn(0.8)}, lambda: {"avg_fn": S.get_ema_avg_fn(0.8)}),
    "swa": (lambda: {"avg_fn": T.get_swa_avg_fn()}, lambda: {"avg_fn": S.get_swa_avg_fn()}),
    "default": (dict, dict),
}


AVG_CASES = [(k, b, torch.float64) for k in AVG_FNS for b in (False, True)] + [
    ("ema_multi", True, torch.float32),
    ("swa_multi", False, torch.float32),
    ("ema", True, torch.float32),
    ("swa", True, torch.float32),
]


@pytest.mark.parametrize("kind, use_buffers, dtype", AVG_CASES)
def test_averaging_functions_match_torch(kind, use_buffers, dtype):
    ref_kw, our_kw = AVG_FNS[kind]
    # torch's get_swa_multi_avg_fn fails on integer buffers (num_batches_tracked)
    int_buffers = not (kind == "swa_multi" and use_buffers)
    _train_models(
        dtype,
        21,
        use_buffers,
        lambda net: T.AveragedModel(net, use_buffers=use_buffers, **ref_kw()),
        lambda net: S.AveragedModel(net, use_buffers=use_buffers, **our_kw()),
        int_buffers=int_buffers,
    )


def test_our_functions_in_torch_averaged_model():
    # bit-exact: torch's AveragedModel with our multi_avg_fn equals it with torch's
    _train_models(
        torch.float64,
        21,
        True,
        lambda net: T.AveragedModel(
            net, multi_avg_fn=T.get_ema_multi_avg_fn(0.95), use_buffers=True
        ),
        lambda net: T.AveragedModel(
            net, multi_avg_fn=S.get_ema_multi_avg_fn(0.95), use_buffers=True
        ),
    )


def test_swa_multi_integer_buffers():
    # torch raises on integer tensors; ours averages them (truncated, like get_swa_avg_fn)
    avg, cur = [torch.tensor([0, 10])], [torch.tensor([6, 4])]
    S.get_swa_multi_avg_fn()(avg, cur, torch.tensor(2))
    assert torch.equal(avg[0], torch.tensor([2, 8]))


def test_functional_averaging_matches_averaged_model():
    torch.manual_seed(0)
    cases: list[tuple[Any, dict[str, Any]]] = [
        (params_ema(0.9), {"multi_avg_fn": T.get_ema_multi_avg_fn(0.9)}),
        (params_swa(), {"avg_fn": T.get_swa_avg_fn()}),
        (params_swa(lerp=True), {"multi_avg_fn": T.get_swa_multi_avg_fn()}),
        (params_ema(0.7, lerp=False), {"avg_fn": T.get_ema_avg_fn(0.7)}),
    ]
    for avg, kw in cases:
        net = torch.nn.Linear(3, 2).double()
        ref = T.AveragedModel(net, **kw)
        state = avg.init(list(net.parameters()))
        assert int(state.count) == 0
        for _ in range(22):
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(torch.randn_like(p))
            before = [p.clone() for p in net.parameters()]
            ref.update_parameters(net)
            state = avg.update(list(net.parameters()), state)
            for p, q in zip(net.parameters(), before):
                assert torch.equal(p, q)
            for x, y in zip(state.average, ref.module.parameters()):
                assert torch.equal(x, y)
        assert int(state.count) == int(ref.n_averaged) == 22


def test_update_functions_directly():
    a = [torch.tensor([1.0, 2.0], dtype=torch.float64)]
    p = [torch.tensor([3.0, -2.0], dtype=torch.float64)]
    torch.testing.assert_close(ema_update(a, p, 0.75)[0], 0.75 * a[0] + 0.25 * p[0])
    torch.testing.assert_close(swa_update(a, p, 3)[0], (3 * a[0] + p[0]) / 4)
    assert torch.equal(a[0], torch.tensor([1.0, 2.0], dtype=torch.float64))


def test_averaged_model_interop():
    net = _bn_net(torch.float64)
    ours = S.AveragedModel(net, multi_avg_fn=S.get_ema_multi_avg_fn(0.9))
    assert isinstance(ours, T.AveragedModel)
    for _ in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.1)
        ours.update_parameters(net)
    theirs = T.AveragedModel(_bn_net(torch.float64), multi_avg_fn=T.get_ema_multi_avg_fn(0.9))
    theirs.load_state_dict(roundtrip(ours.state_dict()))
    back = S.AveragedModel(_bn_net(torch.float64))
    back.load_state_dict(roundtrip(theirs.state_dict()))
    for x, y in zip(back.state_dict().values(), ours.state_dict().values()):
        assert torch.equal(x, y)
    # a mapping of named tensors (functional parameters) instead of a module
    by_dict = S.AveragedModel(net, multi_avg_fn=S.get_ema_multi_avg_fn(0.9))
    by_module = S.AveragedModel(net, multi_avg_fn=S.get_ema_multi_avg_fn(0.9))
    for k in range(3):
        named = {n: p + k for n, p in net.named_parameters()}
        moved = copy.deepcopy(net)
        with torch.no_grad():
            for p in moved.parameters():
                p.add_(k)
        by_dict.update_parameters(named)
        by_module.update_parameters(moved)
    for x, y in zip(by_dict.state_dict().values(), by_module.state_dict().values()):
        assert torch.equal(x, y)
    with pytest.raises(KeyError, match="missing"):
        by_dict.update_parameters({})


def test_ema_validation_like_torch():
    for ours, ref in (
        (S.get_ema_multi_avg_fn, T.get_ema_multi_avg_fn),
        (S.get_ema_avg_fn, T.get_ema_avg_fn),
    ):
        for bad in (-0.1, 1.5):
            with pytest.raises(ValueError) as r:
                ref(bad)
            with pytest.raises(ValueError) as o:
                ours(bad)
            assert str(o.value) == str(r.value)


# --------------------------------------------------------------------------------------------
# update_bn
# --------------------------------------------------------------------------------------------


def _loader(dtype=torch.float64):
    gen = torch.Generator().manual_seed(3)
    data = [torch.randn(5, 4, generator=gen, dtype=torch.float64).to(dtype) for _ in range(4)]
    return [(x, torch.zeros(5)) for x in data[:2]] + data[2:]


def test_update_bn_matches_torch():
    a, b = _bn_net(torch.float64), _bn_net(torch.float64)
    for net in (a, b):
        net.bn.momentum = 0.3
        net.eval()
    T.update_bn(_loader(), a)
    S.update_bn(_loader(), b)
    for (n, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), n
    assert not b.training and b.bn.momentum == 0.3
    # a model without BatchNorm: nothing happens
    S.update_bn(_loader(), torch.nn.Linear(4, 2).double())


def test_update_bn_functional_params():
    a, b = _bn_net(torch.float64), _bn_net(torch.float64)
    params = {n: p.detach() * 1.5 for n, p in b.named_parameters()}
    with torch.no_grad():
        for p in a.parameters():
            p.mul_(1.5)
    T.update_bn(_loader(), a)
    S.update_bn(_loader(), b, params=params)
    for n in ("bn.running_mean", "bn.running_var", "bn.num_batches_tracked"):
        assert torch.equal(a.state_dict()[n], b.state_dict()[n]), n


# --------------------------------------------------------------------------------------------
# SWALR
# --------------------------------------------------------------------------------------------


def _lrs(make_opt, sched_cls, before=3, steps=16, **kw):
    net = make_net()
    opt = make_opt(groups(net, lr=0.3))
    pre = torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)
    out = []
    for _ in range(before):  # another scheduler first, then SWALR
        opt.step()
        pre.step()
    sched = sched_cls(opt, **kw)
    out.append([g["lr"] for g in opt.param_groups])
    for _ in range(steps):
        opt.step()
        sched.step()
        out.append([g["lr"] for g in opt.param_groups])
    return out, sched


@pytest.mark.parametrize("strategy", ["cos", "linear"])
@pytest.mark.parametrize("anneal_epochs", [0, 1, 5])
@pytest.mark.parametrize("swa_lr", [0.05, [0.05, 0.01]])
def test_swalr_matches_torch(strategy, anneal_epochs, swa_lr):
    kw: dict[str, Any] = {
        "swa_lr": swa_lr,
        "anneal_epochs": anneal_epochs,
        "anneal_strategy": strategy,
    }
    for make_opt in (lambda g: torch.optim.SGD(g, lr=1.0), lambda g: ASGD(g, lr=1.0)):
        ref, _ = _lrs(make_opt, T.SWALR, **kw)
        ours, sched = _lrs(make_opt, S.SWALR, **kw)
        assert ours == ref
    # state_dict interchangeable with torch's SWALR
    opt = torch.optim.SGD(groups(make_net()), lr=1.0)
    ref_sched = T.SWALR(opt, **kw)
    ref_sched.load_state_dict(sched.state_dict())
    sched.load_state_dict(T.SWALR(opt, **kw).state_dict())


def test_swalr_validation_like_torch():
    net = make_net()
    cases: list[dict[str, Any]] = [
        {"swa_lr": [0.1, 0.2, 0.3]},
        {"swa_lr": 0.1, "anneal_strategy": "exp"},
        {"swa_lr": 0.1, "anneal_epochs": -1},
        {"swa_lr": 0.1, "anneal_epochs": 2.5},
    ]
    for kw in cases:
        with pytest.raises(ValueError) as r:
            T.SWALR(torch.optim.SGD(groups(net), lr=1.0), **kw)
        with pytest.raises(ValueError) as o:
            S.SWALR(torch.optim.SGD(groups(net), lr=1.0), **kw)
        assert str(o.value) == str(r.value)
    sched = S.SWALR(torch.optim.SGD(net.parameters(), lr=1.0), swa_lr=0.1)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        sched.get_lr()
    assert any("get_last_lr" in str(x.message) for x in w)
