"""TorchOptimizer: optax_torch transforms as torch.optim optimizers, step by step against torch."""

from __future__ import annotations

import copy
import io

import pytest
import torch

import optax_torch as otx
from optax_torch.schedules import inject_hyperparams
from optax_torch.wrappers import TorchOptimizer

STEPS = 24


class Net(torch.nn.Module):
    """Linear(5, 7) -> tanh -> Conv1d(1, 2, 3) -> bias-less Linear(10, 3)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(5, 7)
        self.conv = torch.nn.Conv1d(1, 2, kernel_size=3)
        self.head = torch.nn.Linear(10, 3, bias=False)

    def forward(self, x):
        h = torch.tanh(self.fc(x)).unsqueeze(1)
        h = torch.tanh(self.conv(h)).flatten(1)
        return self.head(h)


def make_net(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return Net().to(dtype)


def batch(step, dtype=torch.float64):
    gen = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(8, 5, generator=gen, dtype=torch.float64).to(dtype)
    y = torch.randn(8, 3, generator=gen, dtype=torch.float64).to(dtype)
    return x, y


def loss_fn(net, step, dtype=torch.float64):
    x, y = batch(step, dtype)
    return (net(x) - y).square().mean()


def assert_params_close(a, b, atol, msg=""):
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0.0, atol=atol, msg=lambda m: f"{msg} {name}: {m}")


def run_pair(make_ref, make_ours, steps=STEPS, dtype=torch.float64, atol=1e-12, sched=None):
    """Trains two copies of the net, one per optimizer, comparing parameters at every step."""
    ref_net, our_net = make_net(dtype), make_net(dtype)
    ref, ours = make_ref(ref_net), make_ours(our_net)
    scheds = [sched(ref), sched(ours)] if sched else []
    for t in range(steps):
        for net, opt in ((ref_net, ref), (our_net, ours)):
            opt.zero_grad()
            loss_fn(net, t, dtype).backward()
            opt.step()
        for s in scheds:
            s.step()
        assert_params_close(ref_net, our_net, atol, f"step {t}")
    return ref_net, our_net, ref, ours


def two_groups(net, **extra):
    """Weights in one group, biases in another with their own lr / weight decay."""
    weights = [p for n, p in net.named_parameters() if not n.endswith("bias")]
    biases = [p for n, p in net.named_parameters() if n.endswith("bias")]
    return [{"params": weights}, {"params": biases, **extra}]


# ------------------------------------------------------------------------------------------------
# Step by step against torch.optim
# ------------------------------------------------------------------------------------------------


def sgd_wd(learning_rate, momentum=0.9, nesterov=False, weight_decay=0.0):
    """A factory with weight decay before the momentum, as torch.optim.SGD."""
    return otx.chain(
        otx.add_decayed_weights(weight_decay),
        otx.trace(decay=momentum, nesterov=nesterov),
        otx.scale_by_learning_rate(learning_rate),
    )


CASES = {
    "sgd_nesterov_wd_ready": (
        lambda n: torch.optim.SGD(
            n.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01
        ),
        lambda n: TorchOptimizer(
            n.parameters(),
            otx.chain(
                otx.add_decayed_weights(0.01),
                otx.trace(0.9, nesterov=True),
                otx.scale_by_learning_rate(0.05),
            ),
        ),
    ),
    "sgd_momentum_factory_groups": (
        lambda n: torch.optim.SGD(
            two_groups(n, lr=0.02, weight_decay=0.1), lr=0.05, momentum=0.8, weight_decay=0.01
        ),
        lambda n: TorchOptimizer(
            two_groups(n, lr=0.02, weight_decay=0.1),
            sgd_wd,
            lr=0.05,
            momentum=0.8,
            weight_decay=0.01,
        ),
    ),
    "adam_factory": (
        lambda n: torch.optim.Adam(n.parameters(), lr=0.01, betas=(0.8, 0.99), eps=1e-6),
        lambda n: TorchOptimizer(n.parameters(), otx.adam, lr=0.01, b1=0.8, b2=0.99, eps=1e-6),
    ),
    "adam_amsgrad_wd_ready": (
        lambda n: torch.optim.Adam(n.parameters(), lr=0.01, amsgrad=True, weight_decay=0.05),
        lambda n: TorchOptimizer(
            n.parameters(),
            otx.chain(
                otx.add_decayed_weights(0.05),
                otx.scale_by_amsgrad(debias_after_max=True),
                otx.scale_by_learning_rate(0.01),
            ),
        ),
    ),
    "adamw_factory_groups": (
        lambda n: torch.optim.AdamW(two_groups(n, lr=0.003, weight_decay=0.0), lr=0.01),
        lambda n: TorchOptimizer(
            two_groups(n, learning_rate=0.003, weight_decay=0.0),
            otx.adamw,
            learning_rate=0.01,
            weight_decay=1e-2,
        ),
    ),
    "nadam_ready": (
        lambda n: torch.optim.NAdam(n.parameters(), lr=0.01, momentum_decay=4e-3),
        lambda n: TorchOptimizer(
            n.parameters(),
            otx.chain(otx.scale_by_nadam(momentum_decay=4e-3), otx.scale_by_learning_rate(0.01)),
        ),
    ),
    "rmsprop_centered_momentum_wd_ready": (
        lambda n: torch.optim.RMSprop(
            n.parameters(), lr=0.01, alpha=0.9, centered=True, momentum=0.5, weight_decay=0.01
        ),
        lambda n: TorchOptimizer(
            n.parameters(),
            otx.chain(
                otx.add_decayed_weights(0.01),
                otx.scale_by_stddev(decay=0.9, eps=1e-8, eps_in_sqrt=False),
                otx.trace(0.5),
                otx.scale_by_learning_rate(0.01),
            ),
        ),
    ),
    "rmsprop_plain_factory": (
        lambda n: torch.optim.RMSprop(n.parameters(), lr=0.01, alpha=0.95),
        lambda n: TorchOptimizer(
            n.parameters(), otx.rmsprop, lr=0.01, decay=0.95, eps=1e-8, eps_in_sqrt=False
        ),
    ),
    "adagrad_lr_decay_schedule": (
        lambda n: torch.optim.Adagrad(
            n.parameters(), lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1, eps=1e-10
        ),
        lambda n: TorchOptimizer(
            n.parameters(),
            otx.chain(
                otx.scale_by_rss(initial_accumulator_value=0.1, eps=1e-10, eps_in_sqrt=False),
                otx.scale_by_learning_rate(lambda c: 0.1 / (1 + c.to(torch.float64) * 0.01)),
            ),
        ),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_torch_optim_float64(case):
    make_ref, make_ours = CASES[case]
    # torch.optim.NAdam keeps its mu_product in the default dtype: make that float64 too.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        run_pair(make_ref, make_ours)
    finally:
        torch.set_default_dtype(previous)


def test_matches_torch_optim_float32():
    run_pair(
        lambda n: torch.optim.AdamW(n.parameters(), lr=0.01, weight_decay=0.1),
        lambda n: TorchOptimizer(n.parameters(), otx.adamw, lr=0.01, weight_decay=0.1),
        dtype=torch.float32,
        atol=1e-6,
    )


def test_lr_scheduler_is_live_for_factories():
    sched = lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=5, gamma=0.5)  # noqa: E731
    _, _, ref, ours = run_pair(
        lambda n: torch.optim.Adam(two_groups(n, lr=0.02), lr=0.01),
        lambda n: TorchOptimizer(two_groups(n, lr=0.02), otx.adam, lr=0.01),
        sched=sched,
    )
    assert [g["lr"] for g in ours.param_groups] == [g["lr"] for g in ref.param_groups]


def test_writing_group_hyperparameters_changes_the_next_step():
    def set_wd(opt):
        opt.param_groups[0]["weight_decay"] = 0.3
        return None

    ref_net, our_net = make_net(), make_net()
    ref = torch.optim.AdamW(ref_net.parameters(), lr=0.01, weight_decay=0.01)
    ours = TorchOptimizer(our_net.parameters(), otx.adamw, lr=0.01, weight_decay=0.01)
    for t in range(8):
        if t == 4:
            set_wd(ref)
            set_wd(ours)
        for net, opt in ((ref_net, ref), (our_net, ours)):
            opt.zero_grad()
            loss_fn(net, t).backward()
            opt.step()
        assert_params_close(ref_net, our_net, 1e-12, f"step {t}")


def test_inject_hyperparams_ready_transform_exposes_lr():
    sched = lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.3)  # noqa: E731
    _, _, _, ours = run_pair(
        lambda n: torch.optim.Adam(n.parameters(), lr=0.01, betas=(0.9, 0.99)),
        lambda n: TorchOptimizer(
            n.parameters(), inject_hyperparams(otx.adam)(learning_rate=0.01, b2=0.99)
        ),
        sched=sched,
        steps=10,
    )
    group = ours.param_groups[0]
    assert {"lr", "b1", "b2", "eps", "eps_root"} <= set(group)
    assert group["b2"] == 0.99
    hp = ours._otx_slots[0].state.hyperparams
    assert hp["learning_rate"].item() == pytest.approx(0.01 * 0.3**3)


def test_inject_hyperparams_schedule_is_read_back():
    tx = inject_hyperparams(otx.sgd)(learning_rate=lambda c: 0.1 / (1.0 + c.double()))
    net = make_net()
    opt = TorchOptimizer(net.parameters(), tx)
    for t in range(3):
        opt.zero_grad()
        loss_fn(net, t).backward()
        opt.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 / (1.0 + t))


def test_ready_transform_without_lr_explains():
    net = make_net()
    opt = TorchOptimizer(net.parameters(), otx.adam(1e-3))
    with pytest.raises(KeyError, match="inject_hyperparams"):
        opt.param_groups[0]["lr"]
    with pytest.raises(KeyError, match="factory"):
        torch.optim.lr_scheduler.StepLR(opt, step_size=2)
    with pytest.raises(TypeError, match="lr"):
        TorchOptimizer([{"params": net.parameters(), "lr": 0.1}], otx.adam(1e-3))
    with pytest.raises(TypeError, match="weight_decay"):
        TorchOptimizer(net.parameters(), otx.adam(1e-3), weight_decay=0.1)


def test_hyperparameter_validation():
    net = make_net()
    with pytest.raises(TypeError, match=r"'betas', 'weight_dcay'; accepted"):
        TorchOptimizer(net.parameters(), otx.adamw, lr=0.1, weight_dcay=0.1, betas=(0.9, 0.9))
    with pytest.raises(TypeError, match="not both"):
        TorchOptimizer(net.parameters(), otx.adam, lr=0.1, learning_rate=0.1)
    with pytest.raises(ValueError, match="required optimization parameter lr"):
        TorchOptimizer(net.parameters(), otx.adam)
    with pytest.raises(TypeError, match="GradientTransformation"):
        TorchOptimizer(net.parameters(), 3)
    opt = TorchOptimizer(net.parameters(), otx.adam, lr=0.1)
    assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[0]["b1"] == 0.9
    assert "learning_rate" not in opt.param_groups[0]


def test_bad_gradients_raise_clear_errors():
    p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = TorchOptimizer([p], otx.sgd, lr=0.1)
    p.grad = torch.zeros(3, dtype=torch.float64).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    p.grad = torch.zeros(3, dtype=torch.float64)
    p.grad.data = torch.zeros(4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        opt.step()
    p.grad = torch.zeros(3, dtype=torch.float64)
    p.grad.data = torch.zeros(3, dtype=torch.float32)
    with pytest.raises(ValueError, match="float32"):
        opt.step()


def test_structure_changing_hyperparameter_raises():
    net = make_net()
    opt = TorchOptimizer(net.parameters(), otx.sgd, lr=0.1)
    loss_fn(net, 0).backward()
    opt.step()
    opt.param_groups[0]["momentum"] = 0.9
    with pytest.raises(ValueError, match="momentum"):
        opt.step()


# ------------------------------------------------------------------------------------------------
# None gradients, lazy state, optimizer.state
# ------------------------------------------------------------------------------------------------


def test_params_without_grads_are_untouched_and_have_no_state():
    net = make_net()
    frozen = net.head.weight
    before = frozen.detach().clone()
    opt = TorchOptimizer(net.parameters(), otx.adamw, lr=0.1)
    for t in range(3):
        opt.zero_grad()
        loss_fn(net, t).backward()
        frozen.grad = None
        opt.step()
    assert torch.equal(frozen, before)
    assert frozen not in opt.state
    assert set(opt.state[net.fc.weight]) == {"0.count", "0.mu", "0.nu"}
    assert opt.state[net.fc.weight]["0.count"].item() == 3
    sd = opt.state_dict()
    assert sorted(sd["state"]) == [0, 1, 2, 3]  # head.weight (index 4) has none


def test_intermittent_grads_match_torch_per_param_state():
    """SGD momentum has per-parameter state only: skipping steps matches torch exactly. Adam's
    count is per group, so the intermittent parameter gets its own group to match torch."""

    def train(opt, net):
        for t in range(12):
            opt.zero_grad()
            loss_fn(net, t).backward()
            if t % 3 == 1:
                net.conv.weight.grad = None
            opt.step()

    def groups(n):
        rest = [p for p in n.parameters() if p is not n.conv.weight]
        return [{"params": rest}, {"params": [n.conv.weight]}]

    for make_ref, make_ours in [
        (
            lambda n: torch.optim.SGD(n.parameters(), lr=0.05, momentum=0.9),
            lambda n: TorchOptimizer(n.parameters(), otx.sgd, lr=0.05, momentum=0.9),
        ),
        (
            lambda n: torch.optim.Adam(groups(n), lr=0.01),
            lambda n: TorchOptimizer(groups(n), otx.adam, lr=0.01),
        ),
    ]:
        a, b = make_net(), make_net()
        train(make_ref(a), a)
        train(make_ours(b), b)
        assert_params_close(a, b, 1e-12)


def test_param_that_starts_late_gets_state_then():
    net = make_net()
    opt = TorchOptimizer(net.parameters(), otx.adam, lr=0.01)
    for t in range(4):
        opt.zero_grad()
        loss_fn(net, t).backward()
        if t < 2:
            net.head.weight.grad = None
        opt.step()
        assert (net.head.weight in opt.state) == (t >= 2)
    # The late parameter's moments are fresh (two steps of history), the count is the group's.
    assert opt.state[net.head.weight]["0.count"].item() == 4


def test_masked_state_round_trip():
    """A state with None leaves (masked-out parameters) maps to torch's layout and back."""
    mask = lambda ps: [p.ndim > 1 for p in ps]  # noqa: E731
    tx = otx.chain(otx.masked(otx.scale_by_adam(), mask), otx.scale(-0.01))
    net, net2 = make_net(), make_net()
    opt, opt2 = TorchOptimizer(net.parameters(), tx), TorchOptimizer(net2.parameters(), tx)
    for t in range(3):
        for n_, o in ((net, opt), (net2, opt2)):
            o.zero_grad()
            loss_fn(n_, t).backward()
            o.step()
    assert set(opt.state[net.fc.weight]) == {
        "0.inner_state.count",
        "0.inner_state.mu",
        "0.inner_state.nu",
    }
    assert set(opt.state[net.fc.bias]) == {"0.inner_state.count"}
    fresh = TorchOptimizer(net.parameters(), tx)
    fresh.load_state_dict(_roundtrip(opt.state_dict()))
    for n_, o in ((net, fresh), (net2, opt2)):
        o.zero_grad()
        loss_fn(n_, 5).backward()
        o.step()
    assert_params_close(net, net2, 0.0)


# ------------------------------------------------------------------------------------------------
# step(), closure, hooks, zero_grad, add_param_group, GradScaler
# ------------------------------------------------------------------------------------------------


def test_closure_hooks_and_zero_grad():
    net = make_net()
    opt = TorchOptimizer(net.parameters(), otx.sgd, lr=0.1)
    calls = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))
    opt.register_state_dict_post_hook(lambda o, sd: calls.append("sd_post"))
    opt.register_load_state_dict_pre_hook(lambda o, sd: calls.append("load_pre"))
    opt.register_load_state_dict_post_hook(lambda o: calls.append("load_post"))

    def closure():
        assert torch.is_grad_enabled()
        opt.zero_grad()
        loss = loss_fn(net, 0)
        loss.backward()
        return loss

    with torch.no_grad():
        loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and loss.ndim == 0
    assert calls == ["pre", "post"]
    opt.load_state_dict(opt.state_dict())
    assert calls[2:] == ["sd_post", "load_pre", "load_post"]
    assert all(p.grad is not None for p in net.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_extra_args_reach_the_transform():
    seen = {}

    def update(updates, state, params=None, **extra):
        seen.update(extra)
        return otx.tree.scale(-0.1, updates), state

    tx = otx.GradientTransformationExtraArgs(otx.init_empty_state, update)
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.ones(2)
    TorchOptimizer([p], tx).step(value=torch.tensor(3.0))
    assert seen["value"].item() == 3.0
    assert torch.allclose(p.detach(), torch.full((2,), 0.9))


def test_add_param_group():
    net = make_net()
    opt = TorchOptimizer([net.fc.weight, net.fc.bias], otx.adamw, lr=0.01, weight_decay=0.1)
    ref_net = make_net()
    ref = torch.optim.AdamW([ref_net.fc.weight, ref_net.fc.bias], lr=0.01, weight_decay=0.1)
    for t in range(6):
        if t == 3:
            opt.add_param_group({"params": [net.head.weight], "lr": 0.05})
            ref.add_param_group({"params": [ref_net.head.weight], "lr": 0.05})
            assert opt.param_groups[1]["weight_decay"] == 0.1  # filled from the defaults
        for n_, o in ((net, opt), (ref_net, ref)):
            o.zero_grad()
            loss_fn(n_, t).backward()
            o.step()
        assert_params_close(net, ref_net, 1e-12)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [net.fc.weight]})
    with pytest.raises(ValueError, match="required optimization parameter lr"):
        TorchOptimizer([net.conv.bias], otx.adam)
    # A group whose hyperparameters cannot build the transform is rejected, and not added.

    def checked_sgd(learning_rate, momentum=None):
        if momentum is not None and momentum > 1:
            raise ValueError(f"Invalid momentum: {momentum}")
        return otx.sgd(learning_rate, momentum)

    opt2 = TorchOptimizer([net.conv.weight], checked_sgd, lr=0.1)
    with pytest.raises(ValueError, match="Invalid momentum: 2"):
        opt2.add_param_group({"params": [net.conv.bias], "momentum": 2})
    assert len(opt2.param_groups) == 1 and len(opt2._otx_slots) == 1


def test_grad_scaler():
    def train(make_opt, inf_at=None):
        net = make_net(torch.float32)
        opt = make_opt(net)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        for t in range(6):
            opt.zero_grad()
            scaler.scale(loss_fn(net, t, torch.float32)).backward()
            if t == inf_at:
                net.fc.weight.grad[0, 0] = float("inf")
            scaler.step(opt)
            scaler.update()
        return net, scaler

    for inf_at in (None, 2):
        a, sa = train(lambda n: torch.optim.Adam(n.parameters(), lr=0.01), inf_at)
        b, sb = train(lambda n: TorchOptimizer(n.parameters(), otx.adam, lr=0.01), inf_at)
        assert_params_close(a, b, 1e-6)
        assert sa.get_scale() == sb.get_scale()


# ------------------------------------------------------------------------------------------------
# state_dict / load_state_dict
# ------------------------------------------------------------------------------------------------


def _roundtrip(sd):
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


RESUME_CASES = {
    "adamw_factory_groups": lambda n: TorchOptimizer(
        two_groups(n, lr=0.003), otx.adamw, lr=0.01, weight_decay=0.1
    ),
    "rmsprop_ready": lambda n: TorchOptimizer(
        n.parameters(), otx.chain(otx.scale_by_stddev(), otx.trace(0.5), otx.scale(-0.01))
    ),
    "inject_adam": lambda n: TorchOptimizer(n.parameters(), inject_hyperparams(otx.adam)(0.01)),
    "schedule_lr_factory": lambda n: TorchOptimizer(
        n.parameters(), otx.sgd, lr=lambda c: 0.1 * 0.9 ** c.double(), momentum=0.9
    ),
}


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_state_dict_resume_is_identical(case):
    make = RESUME_CASES[case]
    full_net, half_net = make_net(), make_net()
    full = make(full_net)
    half = make(half_net)
    sched = torch.optim.lr_scheduler.StepLR if "lr" in full.param_groups[0] else None
    if sched and not callable(full.param_groups[0]["lr"]):
        s_full, s_half = sched(full, 4, 0.5), sched(half, 4, 0.5)
    else:
        s_full = s_half = None
    for t in range(10):
        if t == 5:
            sd = _roundtrip(half.state_dict())
            sched_sd = s_half.state_dict() if s_half else None
            half_net2 = make_net()
            half_net2.load_state_dict(half_net.state_dict())
            half_net = half_net2
            half = make(half_net)
            if s_half:
                s_half = sched(half, 4, 0.5)
                s_half.load_state_dict(sched_sd)
            half.load_state_dict(sd)
        for n_, o, s in ((full_net, full, s_full), (half_net, half, s_half)):
            o.zero_grad()
            loss_fn(n_, t).backward()
            o.step()
            if s:
                s.step()
        assert_params_close(full_net, half_net, 0.0, f"step {t}")
    sd = full.state_dict()
    assert all(isinstance(k, int) for k in sd["state"])
    # Shared counts are separate tensors per parameter in the state dict.
    entries = list(sd["state"].values())
    counts = [e[k] for e in entries for k in e if k.endswith("count")]
    assert len({id(c) for c in counts}) == len(counts)


def test_load_state_dict_errors_leave_state_untouched():
    net = make_net()
    opt = TorchOptimizer(net.parameters(), otx.adam, lr=0.01)
    other = TorchOptimizer(net.parameters(), otx.sgd, lr=0.01, momentum=0.9)
    for o in (opt, other):
        o.zero_grad()
        loss_fn(net, 0).backward()
        o.step()
    before = copy.deepcopy(opt.state_dict())

    def same_as_before():
        now = opt.state_dict()
        assert now["param_groups"] == before["param_groups"]
        for k, e in before["state"].items():
            for name, v in e.items():
                assert torch.equal(now["state"][k][name], v)

    with pytest.raises(ValueError, match=r"missing keys \['0.count', '0.mu', '0.nu'\]"):
        opt.load_state_dict(_roundtrip(other.state_dict()))
    same_as_before()

    bad = copy.deepcopy(before)
    bad["state"][0]["0.mu"] = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        opt.load_state_dict(bad)
    same_as_before()

    bad = copy.deepcopy(before)
    bad["param_groups"][0]["params"] = bad["param_groups"][0]["params"][:-1]
    with pytest.raises(ValueError, match="doesn't match the size"):
        opt.load_state_dict(bad)
    same_as_before()

    bad = copy.deepcopy(before)
    bad["param_groups"].append(bad["param_groups"][0])
    with pytest.raises(ValueError, match="number of parameter groups"):
        opt.load_state_dict(bad)
    same_as_before()

    bad = copy.deepcopy(before)
    bad["state"][0]["extra"] = torch.zeros(())
    with pytest.raises(ValueError, match=r"unexpected keys \['extra'\]"):
        opt.load_state_dict(bad)
    same_as_before()


def test_state_mirror_and_deepcopy():
    net = make_net()
    opt = TorchOptimizer(net.parameters(), otx.adamw, lr=0.01)
    loss_fn(net, 0).backward()
    opt.step()
    st = opt.state[net.fc.weight]
    assert st["0.mu"].shape == net.fc.weight.shape
    assert st["0.count"] is opt.state[net.head.weight]["0.count"]
    clone_net = copy.deepcopy(net)
    opt_copy = copy.deepcopy(opt)  # copies params too: use its own params
    assert isinstance(opt_copy, TorchOptimizer)
    new_params = opt_copy.param_groups[0]["params"]
    for p, q in zip(new_params, clone_net.parameters()):
        p.grad = torch.ones_like(p)
        q.grad = torch.ones_like(q)
    opt_copy.step()
    assert opt_copy.state[new_params[0]]["0.count"].item() == 2
    assert opt.state[net.fc.weight]["0.count"].item() == 1


@pytest.mark.parametrize(
    ("hp", "message"),
    [
        ({"lr": -1e-3}, r"Invalid learning rate: -0.001 \(lr in param group 0 must be"),
        ({"lr": float("nan")}, r"Invalid learning rate: nan \(lr in param group 0"),
        ({"lr": torch.tensor(-1.0)}, r"Invalid learning rate: -1.0 \(lr in param group 0"),
        ({"lr": 1e-3, "weight_decay": -1.0}, r"Invalid weight_decay value: -1.0 \(weight_decay"),
        ({"lr": 1e-3, "weight_decay": float("inf")}, r"Invalid weight_decay value: inf"),
    ],
)
def test_negative_or_non_finite_lr_and_weight_decay_are_refused(hp, message):
    """As torch.optim: a negative learning rate or weight decay is a sign error (the functional
    ``optax_torch.sgd(-0.1)`` stays allowed: gradient ascent)."""
    w = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match=message):
        TorchOptimizer([w], otx.adamw, **hp)
    opt = TorchOptimizer([w], otx.adamw, lr=1e-3)
    bad = {**hp, "params": [torch.zeros(3, requires_grad=True)]}
    with pytest.raises(ValueError, match=message.replace("group 0", "group 1")):
        opt.add_param_group(bad)
    assert len(opt.param_groups) == 1 and len(opt._otx_slots) == 1  # nothing added


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.uint8])
def test_integer_and_bool_params_are_refused(dtype):
    good = torch.zeros(2, requires_grad=True)
    with pytest.raises(TypeError, match=f"parameter 1 of param group 0 has dtype {dtype}"):
        TorchOptimizer([good, torch.zeros(2, dtype=dtype)], otx.adamw, lr=1e-3)


def test_kwargs_factory_takes_lr_as_learning_rate_and_follows_schedulers():
    """``lambda **hp: chain(..., adamw(**hp))``: ``lr`` (or ``learning_rate``) is the group key
    ``lr`` and reaches the factory as ``learning_rate``, so torch LR schedulers drive it."""

    def clipped_adamw(**hp):
        return otx.chain(otx.clip_by_global_norm(1.0), otx.adamw(**hp))

    for spelling in ("lr", "learning_rate"):
        w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        opt = TorchOptimizer([w], clipped_adamw, **{spelling: 0.1, "weight_decay": 0.0})
        assert set(opt.param_groups[0]) == {"params", "lr", "weight_decay"}
        sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
        for _ in range(3):
            w.grad = torch.ones(3, dtype=torch.float64)
            opt.step()
            sched.step()
        # Adam's first steps on a constant gradient move by ~lr: 0.1 + 0.05 + 0.025
        torch.testing.assert_close(w.detach(), torch.full((3,), -0.175, dtype=torch.float64))


class _Bucketed(torch.nn.Module):
    """Two parameters that are views into one bucket (as ZeroRedundancyOptimizer's
    ``parameters_as_bucket_view=True`` makes them)."""

    def __init__(self):
        super().__init__()
        self.bucket = torch.arange(10, dtype=torch.float64) / 10
        self.a = torch.nn.Parameter(torch.empty(2, 3, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.empty(4, dtype=torch.float64))
        self.a.data = self.bucket[:6].view(2, 3)
        self.b.data = self.bucket[6:]


def test_compiled_step_leaves_params_in_a_foreign_bucket():
    """The compiled step's flat buffers are only for parameters that own their storage (or live
    in a flat buffer it made): views into someone else's bucket stay there and receive the
    updates (per-tensor compile)."""
    results = []
    for compile_ in (False, {"backend": "aot_eager"}):
        m = _Bucketed()
        opt = TorchOptimizer([m.a, m.b], otx.adamw, lr=0.1, compile=compile_)
        for k in range(3):
            m.a.grad = torch.full_like(m.a, 1.0 + k)
            m.b.grad = torch.full_like(m.b, -2.0)
            opt.step()
        assert m.a.data_ptr() == m.bucket.data_ptr()  # still a view into the bucket
        assert opt._otx_slots[0].flat is None
        results.append(m.bucket.clone())
    torch.testing.assert_close(results[1], results[0], rtol=0, atol=1e-15)
    assert not torch.equal(results[0], torch.arange(10, dtype=torch.float64) / 10)


def test_assigned_state_entries_are_loaded_before_the_next_step():
    """``optimizer.state[p] = {...}`` from outside (as ``ZeroRedundancyOptimizer.load_state_dict``
    does on its local optimizer) replaces the functional state at the next step; reading the
    state, stepping, pickling and deep-copying are not such writes."""
    import copy
    import pickle

    def run(steps, load_at=None):
        w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
        opt = TorchOptimizer([w], otx.adamw, lr=0.1)
        saved = None
        for k in range(steps):
            if k == load_at:
                saved = {key: v.clone() for key, v in opt.state[w].items()}
                opt.state[w] = {key: torch.zeros_like(v) for key, v in saved.items()}
            w.grad = torch.tensor([0.3, -0.1, 0.2], dtype=torch.float64) * (k + 1)
            opt.step()
        return w.detach().clone(), opt, saved

    straight, opt, _ = run(4)
    assert not opt._otx_state.written
    _ = opt.state[opt.param_groups[0]["params"][0]]  # reading is not a write
    assert not opt._otx_state.written
    assert not copy.deepcopy(opt)._otx_state.written
    assert not pickle.loads(pickle.dumps(opt))._otx_state.written
    zeroed, opt2, _ = run(4, load_at=2)
    assert not opt2._otx_state.written  # consumed by the step
    assert not torch.equal(zeroed, straight)  # the zeroed moments and count were used
    # Writing back what was read reproduces the straight run.
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    opt = TorchOptimizer([w], otx.adamw, lr=0.1)
    for k in range(4):
        if k == 2:
            opt.state[w] = {key: v.clone() for key, v in opt.state[w].items()}
            assert opt._otx_state.written
        w.grad = torch.tensor([0.3, -0.1, 0.2], dtype=torch.float64) * (k + 1)
        opt.step()
    torch.testing.assert_close(w.detach(), straight, rtol=0, atol=0)
