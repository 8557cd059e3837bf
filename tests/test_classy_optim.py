"""Classy Vision's optimizers on optax_torch (``optax_torch.compat.classy.optim``) against
``classy_vision.optim`` 0.7 itself: configs, scheduled param groups per ``where``, trajectories
(float64 at 1e-12, float32 at 1e-6), state, checkpoints in both directions, validation.

LARC (``use_larc``) needs NVIDIA apex, which cannot be installed here: :class:`ApexLARC` below is
apex's published ``apex.parallel.LARC`` step (apex/parallel/LARC.py,
https://github.com/NVIDIA/apex/blob/master/apex/parallel/LARC.py), put in ``sys.modules`` as
``apex.parallel.LARC`` so that Classy's own ``SGD(use_larc=True)`` runs it over torch's SGD.
"""

from __future__ import annotations

import copy
import pickle
import sys
import types

import pytest
import torch

classy_vision = pytest.importorskip("classy_vision")

import classy_vision.optim as CO  # noqa: E402
from classy_vision.optim.param_scheduler import (  # noqa: E402
    ConstantParamScheduler as ClassyConstant,
)
from classy_vision.optim.rmsprop_tf import RMSpropTFOptimizer as ClassyRMSpropTFOptimizer  # noqa: E402
from torch_optim_ref import (  # noqa: E402
    assert_nets_close,
    check_signature,
    check_state_like_torch,
    groups,
    loss_fn,
    make_net,
    roundtrip,
    tol,
)

import optax_torch.compat.classy.optim as O  # noqa: E402
from optax_torch.compat.classy.optim import classy_optimizer as ours_base  # noqa: E402
from optax_torch.transforms.larc import scale_by_larc  # noqa: E402
from optax_torch.transforms.rms_root_state import scale_by_rms_root_state  # noqa: E402

STEPS = 20


class ApexLARC:
    """NVIDIA apex's ``LARC`` wrapper (apex/parallel/LARC.py), its published algorithm."""

    def __init__(self, optimizer, trust_coefficient=0.02, clip=True, eps=1e-8):
        self.optim = optimizer
        self.trust_coefficient = trust_coefficient
        self.eps = eps
        self.clip = clip

    @property
    def param_groups(self):
        return self.optim.param_groups

    @property
    def state(self):
        return self.optim.state

    def state_dict(self):
        return self.optim.state_dict()

    def load_state_dict(self, state_dict):
        self.optim.load_state_dict(state_dict)

    def zero_grad(self):
        self.optim.zero_grad()

    def step(self):
        with torch.no_grad():
            weight_decays = []
            for group in self.optim.param_groups:
                weight_decay = group.get("weight_decay", 0)
                weight_decays.append(weight_decay)
                group["weight_decay"] = 0
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    param_norm = torch.norm(p.data)
                    grad_norm = torch.norm(p.grad.data)
                    if param_norm != 0 and grad_norm != 0:
                        adaptive_lr = (
                            self.trust_coefficient
                            * (param_norm)
                            / (grad_norm + param_norm * weight_decay + self.eps)
                        )
                        if self.clip:
                            adaptive_lr = min(adaptive_lr / group["lr"], 1)
                        p.grad.data += weight_decay * p.data
                        p.grad.data *= adaptive_lr
        self.optim.step()
        for i, group in enumerate(self.optim.param_groups):
            group["weight_decay"] = weight_decays[i]


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    apex = types.ModuleType("apex")
    parallel = types.ModuleType("apex.parallel")
    larc = types.ModuleType("apex.parallel.LARC")
    larc.LARC = ApexLARC  # type: ignore[attr-defined]
    for name, mod in (("apex", apex), ("apex.parallel", parallel), ("apex.parallel.LARC", larc)):
        monkeypatch.setitem(sys.modules, name, mod)
    try:
        from optax_torch.compat.classy.optim.param_scheduler import (  # noqa: F401
            ConstantParamScheduler,
        )
    except ImportError:  # the param_scheduler package is not there yet: Classy's constants
        monkeypatch.setattr(ours_base, "_constant", ClassyConstant)


SCHEDULES = {
    "lr": {"name": "cosine", "start_value": 0.05, "end_value": 0.001},
    "weight_decay": {
        "name": "multistep",
        "values": [1e-3, 1e-2, 0.0],
        "milestones": [1, 3],
        "update_interval": "epoch",
    },
}

# Centred RMSProp (torch's, eps outside the root) is sensitive: at lr 0.05 its float32 run
# drifts from torch's by ~1e-6 per step (as the torch.optim drop-in alone does): lr 0.01 here.
SMALL_LR = {**SCHEDULES, "lr": {"name": "cosine", "start_value": 0.01, "end_value": 0.001}}


def schedules_for(name):
    return SMALL_LR if name.startswith("rmsprop-all") else SCHEDULES


CONFIGS = {
    "sgd": {"name": "sgd", "lr": 0.05},
    "sgd-momentum": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3},
    "sgd-nesterov": {"name": "sgd", "lr": 0.05, "momentum": 0.8, "nesterov": True},
    "sgd-larc-clip": {
        "name": "sgd",
        "lr": 0.5,
        "momentum": 0.9,
        "weight_decay": 1e-2,
        "use_larc": True,
    },
    "sgd-larc-scale": {
        "name": "sgd",
        "lr": 0.5,
        "momentum": 0.9,
        "weight_decay": 1e-2,
        "use_larc": True,
        "larc_config": {"clip": False, "eps": 1e-8, "trust_coefficient": 0.05},
    },
    "adam": {"name": "adam", "lr": 0.01},
    "adam-amsgrad": {
        "name": "adam",
        "lr": 0.01,
        "weight_decay": 1e-2,
        "amsgrad": True,
        "betas": [0.8, 0.99],
    },
    "adamw": {"name": "adamw"},
    "adamw-amsgrad": {"name": "adamw", "lr": 0.01, "amsgrad": True},
    "rmsprop": {"name": "rmsprop", "lr": 0.01},
    "rmsprop-all": {
        "name": "rmsprop",
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 1e-2,
        "eps": 1e-4,
        "centered": True,
    },
    "rmsprop_tf": {"name": "rmsprop_tf", "lr": 0.01},
    "rmsprop_tf-momentum": {
        "name": "rmsprop_tf",
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 1e-2,
        "alpha": 0.9,
    },
    "rmsprop_tf-centered": {
        "name": "rmsprop_tf",
        "lr": 0.01,
        "momentum": 0.5,
        "centered": True,
        "eps": 1e-3,
    },
}


# torch.optim.RMSprop's centred denominator sqrt(v - m^2) + eps nearly cancels on some
# coordinates, which amplifies the last-bit rounding differences between torch's kernel and the
# drop-in's multi-tensor ops (the drop-in itself: optax_torch.compat.torch_optim.RMSprop) to
# ~1e-12 after a dozen steps with a scheduled lr.
ATOL = {"rmsprop-all": 1e-11}
# The same in float32 for both centred RMSProps (a few float32 ulps after 20 steps).
ATOL32 = {"rmsprop-all": 5e-6, "rmsprop_tf-centered": 5e-6}


def build_pair(config, schedules, bias, dtype=torch.float64):
    nets = make_net(dtype), make_net(dtype)
    opts = CO.build_optimizer(copy.deepcopy(config)), O.build_optimizer(copy.deepcopy(config))
    for net, opt in zip(nets, opts):
        scheds = {}
        if schedules:
            scheds = CO.build_optimizer_schedulers({"param_schedulers": schedules, "num_epochs": 4})
        opt.set_param_groups(groups(net, **bias), **scheds)
    return nets, opts


def step(net, opt, t, dtype=torch.float64, steps=STEPS):
    opt.zero_grad()
    loss_fn(net, t, dtype).backward()
    opt.step(where=t / steps)
    if (t + 1) % 5 == 0:
        opt.on_epoch((t + 1) / steps)


def same_groups(ref, ours):
    for g, h in zip(ref.param_groups, ours.param_groups):
        assert {k: v for k, v in g.items() if k != "params"} == {
            k: v for k, v in h.items() if k != "params"
        }


@pytest.mark.parametrize("schedules", [False, True], ids=["constant", "scheduled"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_trajectory_float64(name, schedules):
    config = CONFIGS[name]
    bias = {"lr": 0.02} if not schedules else {"eps": 1e-6} if "adam" in name else {}
    (a, b), (ref, ours) = build_pair(config, schedules_for(name) if schedules else None, bias)
    same_groups(ref, ours)
    for t in range(STEPS):
        step(a, ref, t)
        step(b, ours, t)
        assert_nets_close(a, b, ATOL.get(name, 1e-12), f"{name} step {t}")
        same_groups(ref, ours)
        for key in ("lr", "weight_decay"):
            assert getattr(ref.options_view, key) == getattr(ours.options_view, key)
    check_state_like_torch(ref.optimizer, ours.optimizer)


@pytest.mark.parametrize(
    "name",
    [
        "sgd-momentum",
        "sgd-larc-clip",
        "adam-amsgrad",
        "adamw",
        "rmsprop-all",
        "rmsprop_tf-momentum",
        "rmsprop_tf-centered",
    ],
)
def test_trajectory_float32(name):
    (a, b), (ref, ours) = build_pair(CONFIGS[name], schedules_for(name), {}, torch.float32)
    for t in range(STEPS):
        step(a, ref, t, torch.float32)
        step(b, ours, t, torch.float32)
        assert_nets_close(a, b, ATOL32.get(name, tol(torch.float32)), f"{name} step {t}")


@pytest.mark.parametrize(
    "name",
    [
        "sgd-momentum",
        "sgd-larc-scale",
        "adam-amsgrad",
        "rmsprop-all",
        "rmsprop_tf-momentum",
        "rmsprop_tf-centered",
    ],
)
def test_resume(name):
    """Mid-run checkpoints (get_classy_state → torch.load(weights_only) → set_classy_state): ours →
    ours, Classy's → ours, ours → Classy's, continued and compared with an uninterrupted run."""
    config, at = CONFIGS[name], 7
    nets = [make_net() for _ in range(4)]
    makers = [CO, O, O, O]
    opts = [m.build_optimizer(copy.deepcopy(config)) for m in makers]
    scheds = CO.build_optimizer_schedulers(
        {"param_schedulers": schedules_for(name), "num_epochs": 4}
    )
    for net, opt in zip(nets, opts):
        opt.set_param_groups(groups(net, lr=0.02), **scheds)
    for t in range(STEPS):
        if t == at:
            fresh = [copy.deepcopy(n) for n in nets[1:]]
            new = [M.build_optimizer(copy.deepcopy(config)) for M in (O, O, CO)]
            for net, opt in zip(fresh, new):
                opt.set_param_groups(groups(net, lr=0.02), **scheds)
            new[0].set_classy_state(roundtrip(opts[1].get_classy_state()))
            new[1].set_classy_state(roundtrip(opts[0].get_classy_state()))
            new[2].set_classy_state(roundtrip(opts[3].get_classy_state()))
            nets[1:], opts[1:] = fresh, new
        for net, opt in zip(nets, opts):
            step(net, opt, t)
        for i, other in enumerate(nets[1:]):
            assert_nets_close(nets[0], other, ATOL.get(name, 1e-12), f"step {t}, run {i + 1}")


def test_signatures_and_registry():
    for name in ("SGD", "Adam", "AdamW", "RMSProp", "RMSPropTF", "ZeRO"):
        check_signature(getattr(O, name), getattr(CO, name))
    check_signature(O.RMSpropTFOptimizer, ClassyRMSpropTFOptimizer)
    assert set(O.OPTIMIZER_REGISTRY) == set(CO.OPTIMIZER_REGISTRY) - {"adamw_mt"}
    for name, cls in O.OPTIMIZER_REGISTRY.items():
        assert cls.__name__ == CO.OPTIMIZER_REGISTRY[name].__name__
    with pytest.raises(ValueError, match="Cannot register duplicate optimizer"):
        O.register_optimizer("sgd")(O.SGD)
    with pytest.raises(ValueError, match="must extend ClassyVisionOptimizer"):
        O.register_optimizer("not_an_optimizer")(object)

    @O.register_optimizer("my_sgd")
    class MySGD(O.SGD):
        pass

    try:
        assert isinstance(O.build_optimizer({"name": "my_sgd"}), MySGD)
    finally:
        O.OPTIMIZER_REGISTRY.pop("my_sgd")


@pytest.mark.parametrize(
    "config",
    [
        {"name": "sgd", "momentum": 1.0},
        {"name": "sgd", "momentum": 0},
        {"name": "sgd", "nesterov": 1},
        {"name": "sgd", "use_larc": "yes"},
        {"name": "adam", "betas": [0.9, 1.0]},
        {"name": "adam", "betas": [0.9]},
        {"name": "adamw", "betas": (1, 0.9)},
        {"name": "rmsprop", "alpha": 1.0},
        {"name": "rmsprop", "momentum": 0},
        {"name": "rmsprop", "eps": 0},
        {"name": "rmsprop_tf", "centered": 0},
        {"name": "rmsprop_tf", "eps": -1.0},
    ],
)
def test_config_errors(config):
    with pytest.raises(Exception) as ref:
        CO.build_optimizer(copy.deepcopy(config))
    with pytest.raises(type(ref.value)) as ours:
        O.build_optimizer(copy.deepcopy(config))
    assert str(ours.value) == str(ref.value)


def test_from_config_fills_defaults():
    for name in O.OPTIMIZER_REGISTRY:
        if name == "zero":
            continue
        a, b = {"name": name}, {"name": name}
        CO.build_optimizer(a)
        O.build_optimizer(b)
        assert a == b


@pytest.mark.parametrize(
    "kwargs",
    [dict(lr=-1.0), dict(eps=-1.0), dict(momentum=-1.0), dict(weight_decay=-1.0), dict(alpha=-1.0)],
)
def test_rmsprop_tf_optimizer_errors(kwargs):
    p = [torch.nn.Parameter(torch.ones(2))]
    with pytest.raises(ValueError) as ref:
        ClassyRMSpropTFOptimizer(p, **kwargs)
    with pytest.raises(ValueError, match=str(ref.value)):
        O.RMSpropTFOptimizer(p, **kwargs)


def test_step_checks_and_options_view():
    net, ref_net = make_net(), make_net()
    ours, ref = O.SGD(lr=0.1), CO.SGD(lr=0.1)
    for opt in (ours, ref):
        with pytest.raises(RuntimeError, match="set_param_groups must be called before"):
            opt.step(where=0.0)
    ours.set_param_groups(groups(net, lr=0.3))
    ref.set_param_groups(groups(ref_net, lr=0.3))
    for opt in (ours, ref):
        with pytest.raises(RuntimeError, match="requires `where` argument"):
            opt.step()
        for where in (1.0, -0.1):
            with pytest.raises(AssertionError, match=f"Invalid where: {where}"):
                opt.step(where=where)
    assert ours.options_view.lr == ref.options_view.lr == [0.1, 0.3]
    assert ours.options_view.momentum == ref.options_view.momentum == 0.0
    with pytest.raises(AttributeError):
        ours.options_view.nonexistent
    with pytest.raises(ValueError, match="empty parameter list"):
        O.SGD().set_param_groups([])


def test_larc_sgd_state_like_apex():
    (a, b), (ref, ours) = build_pair(CONFIGS["sgd-larc-clip"], None, {})
    for t in range(5):
        step(a, ref, t)
        step(b, ours, t)
    assert isinstance(ours.optimizer, O.LARCSGD)
    check_state_like_torch(ref.optimizer, ours.optimizer)
    assert list(ours.optimizer.state_dict()["param_groups"][0]) == list(
        ref.optimizer.state_dict()["param_groups"][0]
    )
    clone = pickle.loads(pickle.dumps(ours.optimizer))
    check_state_like_torch(ours.optimizer, clone)


def test_larc_transform():
    p = [
        torch.tensor([3.0, 4.0], dtype=torch.float64),
        torch.zeros(2, dtype=torch.float64),
        torch.ones(2, dtype=torch.float64),
    ]
    g = [
        torch.tensor([0.0, 1.0], dtype=torch.float64),
        torch.ones(2, dtype=torch.float64),
        torch.zeros(2, dtype=torch.float64),
    ]
    p0, g0 = [x.clone() for x in p], [x.clone() for x in g]
    tx = scale_by_larc(0.1, trust_coefficient=0.02, clip=False, eps=0.0, weight_decay=0.1)
    state = tx.init(p)
    u, _ = tx.update(g, state, p)
    rate = 0.02 * 5.0 / (1.0 + 0.5)
    torch.testing.assert_close(u[0], rate * (g[0] + 0.1 * p[0]))
    torch.testing.assert_close(u[1], g[1])  # zero parameter norm: unchanged, no decay
    torch.testing.assert_close(u[2], g[2])  # zero gradient norm: unchanged
    for x, y in zip(p + g, p0 + g0):
        assert torch.equal(x, y)
    clipped, _ = scale_by_larc(0.1, 0.02, True, 0.0, 0.1).update(g, state, p)
    torch.testing.assert_close(clipped[0], min(rate / 0.1, 1.0) * (g[0] + 0.1 * p[0]))
    big, _ = scale_by_larc(1e-3, 0.02, True, 0.0, 0.0).update(g, state, p)
    torch.testing.assert_close(big[0], g[0])  # local rate above the global one: clipped to 1
    with pytest.raises(ValueError):
        scale_by_larc(trust_coefficient=-1.0)
    with pytest.raises(ValueError):
        scale_by_larc(eps=-1.0)
    with pytest.raises(ValueError):
        tx.update(g, state)


def test_rms_root_state_transform():
    g = [torch.tensor([1.0, -2.0], dtype=torch.float64)]
    g0 = [x.clone() for x in g]
    tx = scale_by_rms_root_state(decay=0.5, eps=0.1)
    state = tx.init(g)
    assert torch.equal(state.nu[0], torch.zeros(2, dtype=torch.float64))
    u, state = tx.update(g, state)
    d = (0.5 * g0[0] ** 2 + 0.1).sqrt()
    torch.testing.assert_close(state.nu[0], d)
    torch.testing.assert_close(u[0], g0[0] / d)
    u, state = tx.update(g, state)
    d = (0.5 * d + 0.5 * g0[0] ** 2 + 0.1).sqrt()
    torch.testing.assert_close(state.nu[0], d)
    torch.testing.assert_close(u[0], g0[0] / d)
    assert torch.equal(g[0], g0[0])
    with pytest.raises(ValueError):
        scale_by_rms_root_state(eps=-1.0)


def test_zero_single_process(tmp_path):
    """ZeRO over ZeroRedundancyOptimizer in a one-rank gloo group equals the base optimizer
    (Classy's own ZeRO needs fairscale, not installed: compared with Classy's SGD)."""
    import torch.distributed as dist

    with pytest.raises(AssertionError, match=r"torch\.distributed needs to be initialized"):
        O.build_optimizer({"name": "zero", "base_optimizer": {"name": "sgd"}}).set_param_groups(
            make_net().parameters()
        )
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        config = {"name": "zero", "base_optimizer": copy.deepcopy(CONFIGS["sgd-momentum"])}
        ours = O.build_optimizer(config)
        assert isinstance(ours, O.ZeRO)
        ref = CO.build_optimizer(copy.deepcopy(CONFIGS["sgd-momentum"]))
        a, b = make_net(), make_net()
        scheds = CO.build_optimizer_schedulers({"param_schedulers": SCHEDULES, "num_epochs": 4})
        ref.set_param_groups(groups(a, lr=0.02), **scheds)
        ours.set_param_groups(groups(b, lr=0.02), **scheds)
        for t in range(STEPS):
            step(a, ref, t)
            step(b, ours, t)
            assert_nets_close(a, b, 1e-12, f"step {t}")
            assert ours.options_view.lr == ref.options_view.lr
        ours.consolidate_state_dict()
        state = roundtrip(ours.get_classy_state())
        assert len(state["optim"]["state"]) == len(ref.get_classy_state()["optim"]["state"])
    finally:
        dist.destroy_process_group()
