"""optax_torch.compat.torch_optim: SGD / Adam / AdamW drop-ins against torch.optim, step by step."""

from __future__ import annotations

import copy
import inspect
import io
import itertools

import pytest
import torch

from optax_torch.compat import torch_optim as C
from optax_torch.wrappers import TorchOptimizer

STEPS = 20
PAIRS = {"SGD": (C.SGD, torch.optim.SGD), "Adam": (C.Adam, torch.optim.Adam)}
PAIRS["AdamW"] = (C.AdamW, torch.optim.AdamW)


def make_net(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(5, 7),
        torch.nn.Tanh(),
        torch.nn.Unflatten(1, (1, 7)),
        torch.nn.Conv1d(1, 2, kernel_size=3),
        torch.nn.Tanh(),
        torch.nn.Flatten(),
        torch.nn.Linear(10, 3, bias=False),
    )
    return net.to(dtype)


def loss_fn(net, step, dtype=torch.float64):
    gen = torch.Generator().manual_seed(2000 + step)
    x = torch.randn(8, 5, generator=gen, dtype=torch.float64).to(dtype)
    y = torch.randn(8, 3, generator=gen, dtype=torch.float64).to(dtype)
    return (net(x) - y).square().mean()


def groups(net, **bias_overrides):
    weights = [p for n, p in net.named_parameters() if not n.endswith("bias")]
    biases = [p for n, p in net.named_parameters() if n.endswith("bias")]
    return [{"params": weights}, {"params": biases, **bias_overrides}]


def assert_nets_close(a, b, atol, msg=""):
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0.0, atol=atol, msg=lambda m: f"{msg} {name}: {m}")


def train_pair(ours_cls, ref_cls, kwargs, bias_overrides, steps=STEPS, dtype=torch.float64):
    """Both optimizers, two param groups, a StepLR on each, steps through closures."""
    a, b = make_net(dtype), make_net(dtype)
    ref = ref_cls(groups(a, **bias_overrides), **kwargs)
    ours = ours_cls(groups(b, **bias_overrides), **kwargs)
    scheds = [torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5) for o in (ref, ours)]
    for t in range(steps):
        for net, opt in ((a, ref), (b, ours)):

            def closure(net=net, opt=opt):
                opt.zero_grad()
                loss = loss_fn(net, t, dtype)
                loss.backward()
                return loss

            loss = opt.step(closure)
            assert loss is not None
        for s in scheds:
            s.step()
        assert_nets_close(a, b, 1e-12 if dtype == torch.float64 else 1e-6, f"step {t}")
    return a, b, ref, ours


def test_signatures_match_torch():
    for ours, ref in PAIRS.values():
        ps = inspect.signature(ours).parameters
        rs = inspect.signature(ref).parameters
        assert list(ps) == list(rs)
        for name in rs:
            assert ps[name].default == rs[name].default, name
            assert ps[name].kind == rs[name].kind, name


SGD_OPTIONS = [
    dict(lr=0.05, momentum=m, dampening=d, weight_decay=wd, nesterov=nest, maximize=mx)
    for m, d, wd, nest, mx in itertools.product(
        (0.0, 0.9), (0.0, 0.3), (0.0, 0.01), (False, True), (False, True)
    )
    if not (nest and (m == 0 or d != 0))
]
ADAM_OPTIONS = [
    dict(lr=0.01, amsgrad=ams, weight_decay=wd, maximize=mx, decoupled_weight_decay=dec)
    for ams, wd, mx, dec in itertools.product((False, True), (0.0, 0.05), (False, True), (0, 1))
    if not (dec and wd == 0)
]
ADAMW_OPTIONS = [
    dict(lr=0.01, amsgrad=ams, maximize=mx, betas=(0.8, 0.99), eps=1e-6)
    for ams, mx in itertools.product((False, True), (False, True))
]


def _id(kw):
    return ",".join(f"{k}={v}" for k, v in kw.items() if k != "lr")


@pytest.mark.parametrize("kwargs", SGD_OPTIONS, ids=_id)
def test_sgd_matches_torch(kwargs):
    train_pair(C.SGD, torch.optim.SGD, kwargs, dict(lr=0.02, weight_decay=0.1))


@pytest.mark.parametrize("kwargs", ADAM_OPTIONS, ids=_id)
def test_adam_matches_torch(kwargs):
    kwargs = {**kwargs, "decoupled_weight_decay": bool(kwargs["decoupled_weight_decay"])}
    train_pair(C.Adam, torch.optim.Adam, kwargs, dict(lr=0.003, weight_decay=0.2))


@pytest.mark.parametrize("kwargs", ADAMW_OPTIONS, ids=_id)
def test_adamw_matches_torch(kwargs):
    train_pair(C.AdamW, torch.optim.AdamW, kwargs, dict(lr=0.003, weight_decay=0.0))


def test_adamw_float32_and_tensor_lr():
    train_pair(C.AdamW, torch.optim.AdamW, dict(lr=0.01), {}, dtype=torch.float32)
    # (torch computes in the tensor's dtype: float64 tensors for float64 agreement.)
    lr = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    train_pair(C.Adam, torch.optim.Adam, dict(lr=lr(0.01)), {})
    train_pair(C.SGD, torch.optim.SGD, dict(lr=lr(0.05), momentum=0.9), {})


def test_param_groups_and_state_use_torch_keys():
    for name, (ours_cls, ref_cls) in PAIRS.items():
        kw = dict(momentum=0.9) if name == "SGD" else dict(amsgrad=True)
        a, b, ref, ours = train_pair(ours_cls, ref_cls, dict(lr=0.01, **kw), {}, steps=2)
        assert isinstance(ours, TorchOptimizer)
        for g, h in zip(ours.param_groups, ref.param_groups):
            assert list(g) == list(h)
            assert {k: v for k, v in g.items() if k != "params"} == {
                k: v for k, v in h.items() if k != "params"
            }
        p, q = next(a.parameters()), next(b.parameters())
        assert set(ours.state[q]) == set(ref.state[p])
        for key, v in ref.state[p].items():
            torch.testing.assert_close(ours.state[q][key].to(v.dtype), v, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# None gradients
# ------------------------------------------------------------------------------------------------


def _train_with_holes(opt, net, steps=12):
    """The conv weight gets a gradient on some steps only; the head never gets one."""
    conv, head = net[3].weight, net[6].weight
    for t in range(steps):
        opt.zero_grad()
        loss_fn(net, t).backward()
        if t % 3 == 1:
            conv.grad = None
        head.grad = None
        opt.step()


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_none_grads_skip_like_torch(name):
    ours_cls, ref_cls = PAIRS[name]
    kw = dict(lr=0.05, momentum=0.9, dampening=0.2) if name == "SGD" else dict(lr=0.01)
    a, b = make_net(), make_net()
    head_before = b[6].weight.detach().clone()

    # Step counts are per parameter, as in torch: one group, the conv weight skipping steps.
    ref, ours = ref_cls(a.parameters(), **kw), ours_cls(b.parameters(), **kw)
    _train_with_holes(ref, a)
    _train_with_holes(ours, b)
    assert_nets_close(a, b, 1e-12)
    assert torch.equal(b[6].weight, head_before)
    assert b[6].weight not in ours.state
    assert set(ours.state_dict()["state"]) == set(ref.state_dict()["state"])


def test_sgd_momentum_intermittent_in_one_group_is_exact():
    """SGD's state is per parameter, so skipping matches torch even within one group."""
    a, b = make_net(), make_net()
    ref = torch.optim.SGD(a.parameters(), lr=0.05, momentum=0.9, dampening=0.5)
    ours = C.SGD(b.parameters(), lr=0.05, momentum=0.9, dampening=0.5)
    _train_with_holes(ref, a)
    _train_with_holes(ours, b)
    assert_nets_close(a, b, 1e-12)


# ------------------------------------------------------------------------------------------------
# state_dict
# ------------------------------------------------------------------------------------------------


def _roundtrip(sd):
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_resume_from_state_dict_is_identical(name):
    ours_cls, _ = PAIRS[name]
    kw = dict(lr=0.05, momentum=0.9) if name == "SGD" else dict(lr=0.01, amsgrad=True)

    def make(net):
        opt = ours_cls(groups(net, lr=0.02, weight_decay=0.1), **kw)
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)

    full_net, half_net = make_net(), make_net()
    (full, s_full), (half, s_half) = make(full_net), make(half_net)
    for t in range(10):
        if t == 5:
            sd, ssd = _roundtrip(half.state_dict()), s_half.state_dict()
            half_net = copy.deepcopy(half_net)
            half, s_half = make(half_net)
            s_half.load_state_dict(ssd)
            half.load_state_dict(sd)
        for net, opt, s in ((full_net, full, s_full), (half_net, half, s_half)):
            opt.zero_grad()
            loss_fn(net, t).backward()
            opt.step()
            s.step()
        assert_nets_close(full_net, half_net, 0.0, f"step {t}")


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_state_dicts_interchange_with_torch(name):
    """A torch.optim checkpoint loads into the drop-in and the other way round."""
    ours_cls, ref_cls = PAIRS[name]
    kw = dict(lr=0.05, momentum=0.9, dampening=0.1) if name == "SGD" else dict(lr=0.01)
    a, b = make_net(), make_net()
    ref, ours = ref_cls(a.parameters(), **kw), ours_cls(b.parameters(), **kw)
    for t in range(4):
        for net, opt in ((a, ref), (b, ours)):
            opt.zero_grad()
            loss_fn(net, t).backward()
            opt.step()
    # Swap the optimizer states across implementations, then continue.
    a2, b2 = copy.deepcopy(a), copy.deepcopy(b)
    ref2, ours2 = ref_cls(a2.parameters(), **kw), ours_cls(b2.parameters(), **kw)
    ref2.load_state_dict(_roundtrip(ours.state_dict()))
    ours2.load_state_dict(_roundtrip(ref.state_dict()))
    for t in range(4, 8):
        for net, opt in ((a, ref), (b, ours), (a2, ref2), (b2, ours2)):
            opt.zero_grad()
            loss_fn(net, t).backward()
            opt.step()
        for other in (b, a2, b2):
            assert_nets_close(a, other, 1e-12, f"step {t}")


def test_load_state_dict_from_other_optimizer_raises_and_keeps_state():
    net = make_net()
    adam = C.Adam(net.parameters(), lr=0.01)
    sgd = C.SGD(net.parameters(), lr=0.01, momentum=0.9)
    for opt in (adam, sgd):
        opt.zero_grad()
        loss_fn(net, 0).backward()
        opt.step()
    before = copy.deepcopy(adam.state_dict())
    with pytest.raises(ValueError, match=r"missing keys \['exp_avg', 'exp_avg_sq', 'step'\]"):
        adam.load_state_dict(sgd.state_dict())
    after = adam.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for k, e in before["state"].items():
        for key, v in e.items():
            assert torch.equal(after["state"][k][key], v)
    # A torch SGD(momentum=0) state dict has None buffers: it loads into an SGD without momentum.
    plain_ref = torch.optim.SGD(net.parameters(), lr=0.1)
    loss_fn(net, 1).backward()
    plain_ref.step()
    C.SGD(net.parameters(), lr=0.1).load_state_dict(plain_ref.state_dict())


# ------------------------------------------------------------------------------------------------
# Torch machinery: hooks, zero_grad, GradScaler, add_param_group, validation
# ------------------------------------------------------------------------------------------------


def test_hooks_zero_grad_and_add_param_group():
    a, b = make_net(), make_net()
    first = lambda n: [n[0].weight, n[0].bias]  # noqa: E731
    ref = torch.optim.AdamW(first(a), lr=0.01)
    ours = C.AdamW(first(b), lr=0.01)
    fired = []
    ours.register_step_pre_hook(lambda *args: fired.append("pre"))
    ours.register_step_post_hook(lambda *args: fired.append("post"))
    for t in range(6):
        if t == 2:
            for n, opt in ((a, ref), (b, ours)):
                opt.add_param_group({"params": [n[3].weight, n[3].bias], "lr": 0.03})
        for n, opt in ((a, ref), (b, ours)):
            opt.zero_grad()
            loss_fn(n, t).backward()
            opt.step()
        assert_nets_close(a, b, 1e-12, f"step {t}")
    assert fired == ["pre", "post"] * 6
    assert ours.param_groups[1]["weight_decay"] == 1e-2
    assert ours.param_groups[1]["decoupled_weight_decay"] is True
    ours.zero_grad()
    assert all(p.grad is None for g in ours.param_groups for p in g["params"])
    assert b[6].weight.grad is not None  # not in the optimizer


def test_grad_scaler():
    def train(cls, inf_at):
        net = make_net(torch.float32)
        opt = cls(net.parameters(), lr=0.01, weight_decay=0.01)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
        for t in range(6):
            opt.zero_grad()
            scaler.scale(loss_fn(net, t, torch.float32)).backward()
            if t == inf_at:
                net[0].weight.grad[0, 0] = float("nan")
            scaler.step(opt)
            scaler.update()
        return net, scaler.get_scale()

    for inf_at in (None, 3):
        a, sa = train(torch.optim.AdamW, inf_at)
        b, sb = train(C.AdamW, inf_at)
        assert_nets_close(a, b, 1e-6)
        assert sa == sb


def test_validation_like_torch():
    ps = list(make_net().parameters())
    cases = [
        (lambda: C.SGD(ps, lr=-1.0), ValueError, "Invalid learning rate: -1.0"),
        (lambda: C.SGD(ps, momentum=-0.1), ValueError, "Invalid momentum value"),
        (lambda: C.SGD(ps, weight_decay=-1), ValueError, "Invalid weight_decay value"),
        (lambda: C.SGD(ps, nesterov=True), ValueError, "Nesterov momentum requires"),
        (lambda: C.SGD(ps, momentum=0.9, dampening=0.1, nesterov=True), ValueError, "Nesterov"),
        (lambda: C.SGD(ps, lr=torch.ones(2)), ValueError, "Tensor lr must be 1-element"),
        (lambda: C.Adam(ps, lr=-1e-3), ValueError, "Invalid learning rate"),
        (lambda: C.Adam(ps, eps=-1.0), ValueError, "Invalid epsilon value"),
        (lambda: C.Adam(ps, betas=(1.0, 0.9)), ValueError, "Invalid beta parameter at index 0"),
        (lambda: C.AdamW(ps, betas=(0.9, 1.0)), ValueError, "Invalid beta parameter at index 1"),
        (lambda: C.Adam(ps, weight_decay=-1), ValueError, "Invalid weight_decay value"),
        (lambda: C.Adam(ps, betas=(0.9, torch.tensor(0.9))), ValueError, "both floats"),
        (lambda: C.Adam(ps, fused=True, foreach=True), RuntimeError, "cannot be `True` together"),
        (
            lambda: C.Adam(ps, lr=torch.tensor(0.1), foreach=True),
            ValueError,
            "lr as a Tensor is not supported",
        ),
        (lambda: C.AdamW(ps, differentiable=True), NotImplementedError, "torch.func"),
        (lambda: C.SGD(ps, differentiable=True), NotImplementedError, "differentiable"),
    ]
    for make, exc, match in cases:
        with pytest.raises(exc, match=match):
            make()
    # Accepted and ignored: foreach, fused, capturable.
    C.Adam(ps, foreach=True, capturable=True)
    C.AdamW(ps, fused=True)
    C.SGD(ps, fused=True)
