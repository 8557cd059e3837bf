"""Every ``torch.optim.lr_scheduler`` class drives optax_torch's optimizers exactly as torch's.

Each scheduler is attached to a torch optimizer and to ours (the drop-ins ``SGD``, ``Adam``,
``AdamW`` and plain :class:`optax_torch.TorchOptimizer` on ``optax_torch.adamw`` /
``optax_torch.sgd``), both stepped 26 times on the shared float64 model (two param groups, every
parameter with a gradient at every step): the ``lr`` (and ``momentum`` / ``betas``) of every
param group must be identical at each step, the parameters equal to ``1e-12``.

Also: :func:`optax_torch.contrib.reduce_on_plateau` with torch's semantics (``mode``,
``threshold``, ``threshold_mode``, ``eps``) gives the learning rates of ``ReduceLROnPlateau`` fed
the same metric sequences.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.optim import lr_scheduler as L
from torch.optim.swa_utils import SWALR
from torch_optim_ref import assert_nets_close, groups, make_net, one_step

import optax_torch
from optax_torch.compat.torch_optim import SGD, Adam, AdamW
from optax_torch.contrib import reduce_on_plateau

STEPS = 26
# A metric with improvements, plateaus and small (below-threshold) changes.
METRIC = [5.0, 4.0, 4.0, 4.1, 3.99, 4.2, 3.0, 3.0, 3.0, 2.999, 3.0, 2.9, 2.95, 3.1, 3.0, 2.0, 2.0]


def _plain_adamw(params, **kw):
    return optax_torch.TorchOptimizer(params, optax_torch.adamw, learning_rate=kw.pop("lr"), **kw)


def _plain_sgd(params, **kw):
    return optax_torch.TorchOptimizer(params, optax_torch.sgd, **kw)


# name -> (ours, torch's, kwargs, second group's overrides)
OPTIMIZERS: dict[str, tuple[Callable[..., Any], Callable[..., Any], dict, dict]] = {
    "sgd": (SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}, {"lr": 0.02, "weight_decay": 0.1}),
    "adam": (Adam, torch.optim.Adam, {"lr": 0.01}, {"lr": 0.005, "weight_decay": 0.1}),
    "adamw": (AdamW, torch.optim.AdamW, {"lr": 0.01}, {"lr": 0.02, "weight_decay": 0.05}),
    "plain_adamw": (
        _plain_adamw,
        torch.optim.AdamW,
        {"lr": 0.01, "weight_decay": 0.01},
        {"lr": 0.02, "weight_decay": 0.05},
    ),
    "plain_sgd": (
        _plain_sgd,
        torch.optim.SGD,
        {"lr": 0.05, "momentum": 0.9},
        {"lr": 0.02, "momentum": 0.5},
    ),
}

# name -> (scheduler factory, whether it cycles the momentum / beta1)
SCHEDULERS: dict[str, tuple[Callable[[Any], Any], bool]] = {
    "LambdaLR": (lambda o: L.LambdaLR(o, [lambda t: 0.95**t, lambda t: 1 / (1 + t)]), False),
    "MultiplicativeLR": (lambda o: L.MultiplicativeLR(o, lambda t: 0.97), False),
    "StepLR": (lambda o: L.StepLR(o, 5, 0.5), False),
    "MultiStepLR": (lambda o: L.MultiStepLR(o, [3, 8, 8, 15], 0.5), False),
    "ConstantLR": (lambda o: L.ConstantLR(o, 0.5, 6), False),
    "LinearLR": (lambda o: L.LinearLR(o, 0.2, 1.0, 10), False),
    "ExponentialLR": (lambda o: L.ExponentialLR(o, 0.95), False),
    "PolynomialLR": (lambda o: L.PolynomialLR(o, 20, 2.0), False),
    "CosineAnnealingLR": (lambda o: L.CosineAnnealingLR(o, 10, eta_min=1e-3), False),
    "ChainedScheduler": (
        lambda o: L.ChainedScheduler([L.ConstantLR(o, 0.5, 4), L.ExponentialLR(o, 0.95)], o),
        False,
    ),
    "SequentialLR": (
        lambda o: L.SequentialLR(
            o, [L.LinearLR(o, 0.1, 1.0, 5), L.CosineAnnealingLR(o, 20)], milestones=[5]
        ),
        False,
    ),
    "ReduceLROnPlateau": (
        lambda o: L.ReduceLROnPlateau(o, factor=0.5, patience=1, threshold=0.01, cooldown=1),
        False,
    ),
    "CyclicLR": (
        lambda o: L.CyclicLR(o, [0.01, 0.005], [0.1, 0.05], step_size_up=4, cycle_momentum=False),
        False,
    ),
    "CyclicLR_momentum": (
        lambda o: L.CyclicLR(
            o, [0.01, 0.005], [0.1, 0.05], step_size_up=3, step_size_down=5, mode="triangular2",
            base_momentum=[0.8, 0.7], max_momentum=0.9,  # type: ignore[arg-type]
        ),
        True,
    ),
    "CyclicLR_exp_range_momentum": (
        lambda o: L.CyclicLR(
            o, 0.01, 0.1, step_size_up=4, mode="exp_range", gamma=0.9, base_momentum=0.85,
            max_momentum=0.95,
        ),
        True,
    ),
    "OneCycleLR": (
        lambda o: L.OneCycleLR(o, [0.1, 0.05], total_steps=STEPS, cycle_momentum=False),
        False,
    ),
    "OneCycleLR_momentum": (
        lambda o: L.OneCycleLR(o, [0.1, 0.05], total_steps=STEPS, pct_start=0.4), True
    ),
    "OneCycleLR_three_phase_momentum": (
        lambda o: L.OneCycleLR(
            o, 0.05, epochs=2, steps_per_epoch=13, anneal_strategy="linear", three_phase=True,
            base_momentum=0.8, max_momentum=0.9,
        ),
        True,
    ),
    "CosineAnnealingWarmRestarts": (
        lambda o: L.CosineAnnealingWarmRestarts(o, 4, T_mult=2, eta_min=1e-3),
        False,
    ),
    "SWALR": (lambda o: SWALR(o, [0.005, 0.001], anneal_epochs=8), False),  # type: ignore[arg-type]
}  # fmt: skip

_NO_MOMENTUM_KEY = (
    "TorchOptimizer(params, optax_torch.adamw, ...) has the param-group keys b1 and b2 (adamw's "
    "arguments), neither 'momentum' nor 'betas': torch's cycle_momentum raises ValueError "
    "('optimizer must support momentum or beta1'); use the drop-in AdamW, or schedule b1 with "
    "optax_torch.schedules.cyclic_momentum_schedule / one_cycle_momentum_schedule"
)


# The drop-in AdamW is Adam's chain: it runs the schedulers that cycle betas, and a few others.
_ADAMW_SUBSET = ("StepLR", "ReduceLROnPlateau", "CosineAnnealingWarmRestarts", "SequentialLR")


def _cases():
    for opt_name in OPTIMIZERS:
        for sched_name, (_, cycles_momentum) in SCHEDULERS.items():
            if opt_name == "plain_sgd" and not cycles_momentum:
                continue  # plain_adamw covers the plain adapter; plain_sgd is for the momentum
            if opt_name == "adamw" and not cycles_momentum and sched_name not in _ADAMW_SUBSET:
                continue
            marks = []
            if cycles_momentum and opt_name == "plain_adamw":
                marks = [pytest.mark.xfail(strict=True, raises=ValueError, reason=_NO_MOMENTUM_KEY)]
            yield pytest.param(opt_name, sched_name, id=f"{opt_name}-{sched_name}", marks=marks)


_KEYS = ("lr", "momentum", "betas", "initial_lr", "max_lr", "min_lr", "swa_lr")


def _hyperparams(opt: torch.optim.Optimizer, like: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """The scheduled keys of ``opt``'s groups that ``like``'s groups have too (the plain
    adapter on adamw has ``b1``, ``b2`` instead of ``betas``)."""
    return [
        {k: g[k] for k in _KEYS if k in g and k in h}
        for g, h in zip(opt.param_groups, like.param_groups, strict=True)
    ]


@pytest.mark.parametrize(("opt_name", "sched_name"), list(_cases()))
def test_scheduler_drives_ours_like_torch(opt_name, sched_name):
    ours_cls, ref_cls, kwargs, overrides = OPTIMIZERS[opt_name]
    make, _ = SCHEDULERS[sched_name]
    a, b = make_net(), make_net()
    ref = ref_cls(groups(a, **overrides), **kwargs)
    ours = ours_cls(groups(b, **overrides), **kwargs)
    scheds = [make(ref), make(ours)]
    assert _hyperparams(ours, ref) == _hyperparams(ref, ours)
    assert all("lr" in g for g in _hyperparams(ours, ref))
    lrs = set()
    for t in range(STEPS):
        for net, opt in ((a, ref), (b, ours)):
            one_step(net, opt, t, skip=False)
        for s in scheds:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # SWALR's get_lr warning
                if isinstance(s, L.ReduceLROnPlateau):
                    s.step(METRIC[t % len(METRIC)])
                else:
                    s.step()
        assert _hyperparams(ours, ref) == _hyperparams(ref, ours), f"step {t}"
        assert_nets_close(a, b, 1e-12, f"step {t}")
        lrs.add(ref.param_groups[0]["lr"])
    assert len(lrs) >= 2  # the schedule did change the learning rate


# ---------------------------------------------------------------------------------------------
# reduce_on_plateau with torch's ReduceLROnPlateau semantics
# ---------------------------------------------------------------------------------------------


def _torch_plateau_lrs(values: list[float], lr: float, **kw: Any) -> list[float]:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = L.ReduceLROnPlateau(opt, **kw)
    out = []
    for v in values:
        sched.step(v)
        out.append(float(opt.param_groups[0]["lr"]))
    return out


def _our_plateau_lrs(values: list[float], lr: float, **kw: Any) -> list[float]:
    """``reduce_on_plateau`` built from torch's arguments by the documented mapping."""
    tx = reduce_on_plateau(
        factor=kw.get("factor", 0.1),
        patience=kw.get("patience", 10) + 1,
        cooldown=kw.get("cooldown", 0),
        min_scale=kw.get("min_lr", 0.0) / lr,
        mode=kw.get("mode", "min"),
        threshold=kw.get("threshold", 1e-4),
        threshold_mode=kw.get("threshold_mode", "rel"),
        eps=kw.get("eps", 1e-8) / lr,
    )
    params = [torch.zeros(2, dtype=torch.float64)]
    state = tx.init(params)
    out = []
    for i, v in enumerate(values):
        value = torch.tensor(v, dtype=torch.float64) if i % 2 else v
        _, state = tx.update([torch.ones(2, dtype=torch.float64)], state, params, value=value)
        out.append(lr * float(state.scale))
    return out


def _sequences(seed: int) -> list[list[float]]:
    gen = torch.Generator().manual_seed(seed)
    n = 90
    noise = torch.randn(n, generator=gen, dtype=torch.float64)
    walk = (torch.cumsum(noise * 0.1 - 0.02, 0) + 5).tolist()
    random = (torch.rand(n, generator=gen, dtype=torch.float64) * 3).tolist()
    # plateaus: constant stretches with tiny (below-threshold) and real improvements
    levels = torch.randint(0, 4, (n,), generator=gen).tolist()
    plateau, v = [], 10.0
    for i, k in enumerate(levels):
        if i % 7 == 0:
            v *= [1.0, 0.99995, 0.98, 1.02][k]
        plateau.append(v + [0.0, 1e-6, -1e-3, 0.0][k])
    rounded = [round(x, 1) for x in walk]  # exact ties
    return [walk, random, plateau, rounded, [-x for x in walk]]


PLATEAU_CONFIGS = [
    {},
    {"patience": 0},
    {"patience": 2, "factor": 0.5},
    {"patience": 1, "cooldown": 3, "factor": 0.3},
    {"mode": "max", "patience": 2},
    {"mode": "max", "threshold_mode": "abs", "threshold": 0.05, "patience": 1, "cooldown": 1},
    {"threshold_mode": "abs", "threshold": 0.1, "patience": 3},
    {"threshold": 0.0, "patience": 1, "factor": 0.5},
    {"threshold": 0.02, "patience": 0, "min_lr": 0.01},
    {"patience": 0, "factor": 0.5, "eps": 1e-3},
    {"patience": 0, "eps": 1e-8},  # reductions stop when they fall below eps
]


@pytest.mark.parametrize(
    "config", PLATEAU_CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default"
)
@pytest.mark.parametrize("seed", [0, 1])
def test_reduce_on_plateau_equals_torch(config, seed):
    for lr in (0.3, 2.0):
        for values in _sequences(seed):
            expected = _torch_plateau_lrs(values, lr, **config)
            got = _our_plateau_lrs(values, lr, **config)
            torch.testing.assert_close(
                torch.tensor(got), torch.tensor(expected), rtol=1e-12, atol=0
            )


def test_reduce_on_plateau_torch_metric_list():
    """The fixed plateau-shaped sequence, with reductions actually happening."""
    expected = _torch_plateau_lrs(METRIC * 3, 0.1, patience=1, factor=0.5, cooldown=1)
    assert len(set(expected)) > 3
    got = _our_plateau_lrs(METRIC * 3, 0.1, patience=1, factor=0.5, cooldown=1)
    torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), rtol=1e-12, atol=0)


def test_reduce_on_plateau_extensions_keep_optax_defaults():
    """Without the new keywords the behaviour is optax's (mode min, rtol/atol, no eps)."""
    values = _sequences(3)[0]
    a = reduce_on_plateau(patience=2, factor=0.5)
    b = reduce_on_plateau(patience=2, factor=0.5, mode="min", threshold_mode="rel", eps=0.0)
    params = [torch.zeros(1, dtype=torch.float64)]
    sa, sb = a.init(params), b.init(params)
    for v in values:
        _, sa = a.update([torch.ones(1)], sa, params, value=v)
        _, sb = b.update([torch.ones(1)], sb, params, value=v)
        assert all(torch.equal(x, y) for x, y in zip(sa, sb))


def test_reduce_on_plateau_max_mode_compiles():
    tx = reduce_on_plateau(patience=1, mode="max", threshold=0.01, threshold_mode="abs", eps=1e-3)
    params = [torch.zeros(2, dtype=torch.float64)]
    st = tx.init(params)
    assert st.best_value.item() == float("-inf")
    f = torch.compile(tx.update, backend="aot_eager", fullgraph=True)
    st_c = st_e = st
    for v in [1.0, 1.005, 0.9, 0.95, 2.0, 1.0, 1.0]:
        value = torch.tensor(v, dtype=torch.float64)
        u_c, st_c = f([torch.ones(2, dtype=torch.float64)], st_c, params, value=value)
        u_e, st_e = tx.update([torch.ones(2, dtype=torch.float64)], st_e, params, value=value)
        assert all(torch.equal(x, y) for x, y in zip(st_c, st_e))
        torch.testing.assert_close(u_c, u_e, rtol=0, atol=0)
    # reduced at 1.005 (not 0.01 better), 0.9 and 0.95; the next two reductions (by 0.0009)
    # are skipped by eps
    assert abs(st_e.scale.item() - 1e-3) < 1e-15


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "maximum"}, "mode"),
        ({"threshold_mode": "relative"}, "threshold_mode"),
        ({"threshold": -0.1}, "threshold"),
        ({"threshold": 0.1, "rtol": 0.01}, "threshold"),
        ({"threshold": 0.1, "atol": 0.01}, "threshold"),
        ({"eps": -1.0}, "eps"),
    ],
)
def test_reduce_on_plateau_extension_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        reduce_on_plateau(**kwargs)
    torch_kwargs = {k: v for k, v in kwargs.items() if k in ("mode", "threshold_mode")}
    if torch_kwargs:  # torch raises a ValueError too
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        with pytest.raises(ValueError):
            L.ReduceLROnPlateau(opt, **torch_kwargs)
