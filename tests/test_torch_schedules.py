"""The pure schedules of ``optax_torch.schedules._torch`` (and the optax schedules that cover
the other ``torch.optim.lr_scheduler`` classes) against the learning rates (and momenta) that
torch's schedulers set, step by step, in float64; their validation; torch.compile and vmap."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.optim import lr_scheduler as L
from torch.optim.swa_utils import SWALR
from torch_optim_ref import train_pair

import optax_torch as otx
from optax_torch import schedules as S

N = 60
BASE = 0.37  # torch's base_lr (the group's lr when the scheduler is created)


def _torch_sequence(
    make: Callable[[torch.optim.Optimizer], Any], n: int = N, key: str = "lr", betas=False
) -> list[float]:
    """``group[key]`` after 0, 1, ..., n - 1 calls of ``scheduler.step()``."""
    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    if betas:
        opt: torch.optim.Optimizer = torch.optim.Adam([p], lr=BASE)
    else:
        opt = torch.optim.SGD([p], lr=BASE, momentum=0.9)
    sched = make(opt)
    out = []
    for _ in range(n):
        v = opt.param_groups[0][key]
        out.append(v[0] if key == "betas" else v)
        opt.step()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sched.step()
    return [float(v) for v in out]


def _ours(schedule, n: int = N) -> torch.Tensor:
    return torch.stack([schedule(t) for t in range(n)])


def _assert_same(schedule, expected: list[float], rtol=1e-12, atol=1e-15, n: int = N):
    got = _ours(schedule, n)
    assert got.dtype == torch.float64
    torch.testing.assert_close(
        got, torch.tensor(expected, dtype=torch.float64), rtol=rtol, atol=atol
    )


def _scale_fn(x):
    return 1.0 / (1.0 + 0.1 * x)


# (name, torch scheduler factory, our schedule, key)
CASES: list[tuple[str, Callable[[Any], Any], Any]] = [
    ("step", lambda o: L.StepLR(o, 7, 0.5), S.step_schedule(BASE, 7, 0.5)),
    ("step_default", lambda o: L.StepLR(o, 3), S.step_schedule(BASE, 3)),
    (
        "step_as_exp",
        lambda o: L.StepLR(o, 7, 0.5),
        S.exponential_decay(BASE, 7, 0.5, staircase=True),
    ),
    (
        "multistep",
        lambda o: L.MultiStepLR(o, [30, 5, 12, 12], 0.3),
        S.multistep_schedule(BASE, [30, 5, 12, 12], 0.3),
    ),
    ("multistep_default", lambda o: L.MultiStepLR(o, [4]), S.multistep_schedule(BASE, (4,))),
    (
        "constant",
        lambda o: L.ConstantLR(o, 0.25, 9),
        S.piecewise_constant_schedule(BASE * 0.25, {9: 1 / 0.25}),
    ),
    (
        "constant_default",
        lambda o: L.ConstantLR(o),
        S.piecewise_constant_schedule(BASE / 3, {5: 3.0}),
    ),
    (
        "linear",
        lambda o: L.LinearLR(o, 0.2, 0.9, 17),
        S.linear_schedule(BASE * 0.2, BASE * 0.9, 17),
    ),
    ("linear_to_zero", lambda o: L.LinearLR(o, 1.0, 0.0, 23), S.linear_schedule(BASE, 0.0, 23)),
    ("exponential", lambda o: L.ExponentialLR(o, 0.93), S.exponential_decay(BASE, 1, 0.93)),
    ("polynomial", lambda o: L.PolynomialLR(o, 20, 2.0), S.polynomial_schedule(BASE, 0.0, 2.0, 20)),
    ("polynomial_default", lambda o: L.PolynomialLR(o), S.polynomial_schedule(BASE, 0.0, 1.0, 5)),
    ("cosine", lambda o: L.CosineAnnealingLR(o, 13), S.cosine_annealing_schedule(BASE, 13)),
    (
        "cosine_eta_min",
        lambda o: L.CosineAnnealingLR(o, 10, eta_min=0.01),
        S.cosine_annealing_schedule(BASE, 10, eta_min=0.01),
    ),
    (
        "warm_restarts",
        lambda o: L.CosineAnnealingWarmRestarts(o, 7),
        S.cosine_annealing_warm_restarts_schedule(BASE, 7),
    ),
    (
        "warm_restarts_mult2",
        lambda o: L.CosineAnnealingWarmRestarts(o, 3, T_mult=2, eta_min=0.02),
        S.cosine_annealing_warm_restarts_schedule(BASE, 3, T_mult=2, eta_min=0.02),
    ),
    (
        "warm_restarts_mult3",
        lambda o: L.CosineAnnealingWarmRestarts(o, 2, T_mult=3),
        S.cosine_annealing_warm_restarts_schedule(BASE, 2, T_mult=3),
    ),
    (
        "cyclic",
        lambda o: L.CyclicLR(o, 0.01, 0.2, step_size_up=6),
        S.cyclic_schedule(0.01, 0.2, step_size_up=6),
    ),
    (
        "cyclic_triangular2_asym",
        lambda o: L.CyclicLR(o, 0.01, 0.2, step_size_up=4, step_size_down=7, mode="triangular2"),
        S.cyclic_schedule(0.01, 0.2, step_size_up=4, step_size_down=7, mode="triangular2"),
    ),
    (
        "cyclic_exp_range",
        lambda o: L.CyclicLR(o, 0.01, 0.2, step_size_up=5, mode="exp_range", gamma=0.97),
        S.cyclic_schedule(0.01, 0.2, step_size_up=5, mode="exp_range", gamma=0.97),
    ),
    (
        "cyclic_scale_fn_cycle",
        lambda o: L.CyclicLR(o, 0.01, 0.2, step_size_up=3, scale_fn=_scale_fn),
        S.cyclic_schedule(0.01, 0.2, step_size_up=3, scale_fn=_scale_fn),
    ),
    (
        "cyclic_scale_fn_iterations",
        lambda o: L.CyclicLR(
            o, 0.01, 0.2, step_size_up=3, step_size_down=2, scale_fn=_scale_fn,
            scale_mode="iterations",
        ),
        S.cyclic_schedule(
            0.01, 0.2, step_size_up=3, step_size_down=2, scale_fn=_scale_fn, scale_mode="iterations"
        ),
    ),
    (
        "one_cycle",
        lambda o: L.OneCycleLR(o, 0.5, total_steps=N),
        S.one_cycle_schedule(0.5, total_steps=N),
    ),
    (
        "one_cycle_linear_three_phase",
        lambda o: L.OneCycleLR(
            o, 0.5, total_steps=N, pct_start=0.25, anneal_strategy="linear", three_phase=True
        ),
        S.one_cycle_schedule(
            0.5, total_steps=N, pct_start=0.25, anneal_strategy="linear", three_phase=True
        ),
    ),
    (
        "one_cycle_epochs",
        lambda o: L.OneCycleLR(
            o, 0.5, epochs=6, steps_per_epoch=10, div_factor=5.0, final_div_factor=50.0,
            three_phase=True,
        ),
        S.one_cycle_schedule(
            0.5, epochs=6, steps_per_epoch=10, div_factor=5.0, final_div_factor=50.0,
            three_phase=True,
        ),
    ),
    ("swa", lambda o: SWALR(o, 0.05, anneal_epochs=12), S.swa_schedule(BASE, 0.05, 12)),
    (
        "swa_linear",
        lambda o: SWALR(o, 0.05, anneal_epochs=5, anneal_strategy="linear"),
        S.swa_schedule(BASE, 0.05, 5, "linear"),
    ),
    ("swa_zero", lambda o: SWALR(o, 0.05, anneal_epochs=0), S.swa_schedule(BASE, 0.05, 0)),
    ("swa_one", lambda o: SWALR(o, 0.05, anneal_epochs=1), S.swa_schedule(BASE, 0.05, 1)),
]  # fmt: skip

MOMENTUM_CASES: list[tuple[str, Callable[[Any], Any], Any]] = [
    (
        "cyclic",
        lambda o: L.CyclicLR(o, 0.01, 0.2, step_size_up=6),
        S.cyclic_momentum_schedule(step_size_up=6),
    ),
    (
        "cyclic_exp_range",
        lambda o: L.CyclicLR(
            o, 0.01, 0.2, step_size_up=4, step_size_down=3, mode="exp_range", gamma=0.95,
            base_momentum=0.7, max_momentum=0.95,
        ),
        S.cyclic_momentum_schedule(
            0.7, 0.95, step_size_up=4, step_size_down=3, mode="exp_range", gamma=0.95
        ),
    ),
    (
        "cyclic_triangular2",
        lambda o: L.CyclicLR(o, 0.01, 0.2, step_size_up=5, mode="triangular2"),
        S.cyclic_momentum_schedule(step_size_up=5, mode="triangular2"),
    ),
    (
        "one_cycle",
        lambda o: L.OneCycleLR(o, 0.5, total_steps=N),
        S.one_cycle_momentum_schedule(total_steps=N),
    ),
    (
        "one_cycle_three_phase_linear",
        lambda o: L.OneCycleLR(
            o, 0.5, total_steps=N, three_phase=True, anneal_strategy="linear",
            base_momentum=0.8, max_momentum=0.9,
        ),
        S.one_cycle_momentum_schedule(
            total_steps=N, three_phase=True, anneal_strategy="linear", base_momentum=0.8,
            max_momentum=0.9,
        ),
    ),
]  # fmt: skip


@pytest.mark.parametrize(("make", "schedule"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_equals_torch_scheduler(make, schedule):
    _assert_same(schedule, _torch_sequence(make))


@pytest.mark.parametrize(
    ("make", "schedule"), [c[1:] for c in MOMENTUM_CASES], ids=[c[0] for c in MOMENTUM_CASES]
)
@pytest.mark.parametrize("betas", [False, True], ids=["momentum", "beta1"])
def test_momentum_equals_torch_scheduler(make, schedule, betas):
    expected = _torch_sequence(make, key="betas" if betas else "momentum", betas=betas)
    _assert_same(schedule, expected)


def test_cosine_annealing_long_run():
    """Recursive (torch) and closed forms stay within 1e-12 relative over several periods."""
    make = lambda o: L.CosineAnnealingLR(o, 40, eta_min=0.001)  # noqa: E731
    _assert_same(S.cosine_annealing_schedule(BASE, 40, 0.001), _torch_sequence(make, 300), n=300)


def test_warm_restarts_far_counts():
    """Large counts (int32 and int64) land in the right cycle: T_cur and T_i as torch counts."""
    sched = S.cosine_annealing_warm_restarts_schedule(1.0, 3, T_mult=2)
    for count in [0, 2, 3, 8, 9, 20, 21, 2**31 - 1, 3 * (2**40 - 1) + 5]:
        n = 0
        while 3 * (2 ** (n + 1) - 1) <= count:
            n += 1
        t_cur, t_i = count - 3 * (2**n - 1), 3 * 2**n
        expected = (1 + math.cos(math.pi * t_cur / t_i)) / 2
        assert abs(sched(torch.tensor(count)).item() - expected) < 1e-12, count
    sched1 = S.cosine_annealing_warm_restarts_schedule(1.0, 5)
    count = torch.tensor(2**31 - 1, dtype=torch.int32)
    expected = (1 + math.cos(math.pi * ((2**31 - 1) % 5) / 5)) / 2
    assert abs(sched1(count).item() - expected) < 1e-12


def test_one_cycle_held_after_total_steps():
    t = torch.tensor
    sched = S.one_cycle_schedule(1.0, total_steps=10)
    assert sched(t(10)).item() == sched(t(11)).item() == sched(t(10**6)).item()
    mom = S.one_cycle_momentum_schedule(total_steps=10)
    assert mom(t(10)).item() == mom(t(1000)).item()


def test_conventions():
    """float64, shaped like the count, tensors or ints, batched counts."""
    counts = torch.arange(12, dtype=torch.int32).reshape(3, 4)
    for _, _, sched in CASES + MOMENTUM_CASES:
        out = sched(counts)
        assert out.shape == (3, 4) and out.dtype == torch.float64
        assert torch.equal(out[1, 2], sched(6))
        assert torch.equal(sched(torch.tensor(6)), sched(6))


def test_vmap_equals_eager():
    counts = torch.arange(40, dtype=torch.int32)
    for _, _, sched in CASES + MOMENTUM_CASES:
        expected = torch.stack([sched(c) for c in counts])
        torch.testing.assert_close(torch.func.vmap(sched)(counts), expected, rtol=1e-15, atol=0)


def test_compile_fullgraph_equals_eager():
    scheds = [c[2] for c in CASES + MOMENTUM_CASES if "scale_fn" not in c[0]]
    scheds.append(S.cyclic_schedule(0.1, 1.0, 3, scale_fn=lambda x: torch.exp(-0.1 * x)))

    def evaluate(count):
        return torch.stack([s(count) for s in scheds])

    compiled = torch.compile(evaluate, backend="aot_eager", fullgraph=True)
    for c in [0, 5, 17, 59, 2**31 - 1]:
        count = torch.tensor(c, dtype=torch.int32)
        torch.testing.assert_close(compiled(count), evaluate(count), rtol=1e-14, atol=1e-15)


def _opt():
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)


@pytest.mark.parametrize(
    ("ours", "theirs", "match"),
    [
        (lambda: S.step_schedule(1.0, 0), None, "step_size"),
        (lambda: S.step_schedule(1.0, 2.5), None, "step_size"),  # type: ignore[arg-type]
        (lambda: S.multistep_schedule(1.0, [1.5]), None, "milestones"),  # type: ignore[list-item]
        (lambda: S.cosine_annealing_schedule(1.0, 0), None, "T_max"),
        (
            lambda: S.cosine_annealing_warm_restarts_schedule(1.0, 0),
            lambda: L.CosineAnnealingWarmRestarts(_opt(), 0),
            "T_0",
        ),
        (
            lambda: S.cosine_annealing_warm_restarts_schedule(1.0, 2.0),  # type: ignore[arg-type]
            lambda: L.CosineAnnealingWarmRestarts(_opt(), 2.0),  # type: ignore[arg-type]
            "T_0",
        ),
        (
            lambda: S.cosine_annealing_warm_restarts_schedule(1.0, 2, T_mult=0),
            lambda: L.CosineAnnealingWarmRestarts(_opt(), 2, T_mult=0),
            "T_mult",
        ),
        (
            lambda: S.cyclic_schedule(0.1, 1.0, mode="square"),  # type: ignore[arg-type]
            lambda: L.CyclicLR(_opt(), 0.1, 1.0, mode="square"),  # type: ignore[arg-type]
            "mode",
        ),
        (lambda: S.cyclic_momentum_schedule(mode="x"), None, "mode"),
        (lambda: S.cyclic_schedule(0.1, 1.0, step_size_up=0), None, "step_size_up"),
        (
            lambda: S.cyclic_schedule(0.1, 1.0, scale_fn=abs, scale_mode="epochs"),
            None,
            "scale_mode",
        ),
        (
            lambda: S.one_cycle_schedule(1.0),
            lambda: L.OneCycleLR(_opt(), 1.0),
            "total_steps",
        ),
        (
            lambda: S.one_cycle_schedule(1.0, total_steps=0),
            lambda: L.OneCycleLR(_opt(), 1.0, total_steps=0),
            "total_steps",
        ),
        (
            lambda: S.one_cycle_schedule(1.0, epochs=0, steps_per_epoch=3),
            lambda: L.OneCycleLR(_opt(), 1.0, epochs=0, steps_per_epoch=3),
            "epochs",
        ),
        (
            lambda: S.one_cycle_schedule(1.0, epochs=2, steps_per_epoch=-1),
            lambda: L.OneCycleLR(_opt(), 1.0, epochs=2, steps_per_epoch=-1),
            "steps_per_epoch",
        ),
        (
            lambda: S.one_cycle_schedule(1.0, 10, pct_start=1.5),
            lambda: L.OneCycleLR(_opt(), 1.0, 10, pct_start=1.5),
            "pct_start",
        ),
        (
            lambda: S.one_cycle_momentum_schedule(10, pct_start=1),  # type: ignore[arg-type]
            lambda: L.OneCycleLR(_opt(), 1.0, 10, pct_start=1),  # type: ignore[arg-type]
            "pct_start",
        ),
        (
            lambda: S.one_cycle_schedule(1.0, 10, anneal_strategy="exp"),
            lambda: L.OneCycleLR(_opt(), 1.0, 10, anneal_strategy="exp"),  # type: ignore[arg-type]
            "anneal_strategy",
        ),
        (
            lambda: S.swa_schedule(1.0, 0.1, anneal_strategy="exp"),
            lambda: SWALR(_opt(), 0.1, anneal_strategy="exp"),  # type: ignore[arg-type]
            "anneal_strategy",
        ),
        (
            lambda: S.swa_schedule(1.0, 0.1, anneal_epochs=-1),
            lambda: SWALR(_opt(), 0.1, anneal_epochs=-1),
            "anneal_epochs",
        ),
    ],
)
def test_validation(ours, theirs, match):
    """ValueError naming the argument, where torch's scheduler raises a ValueError too."""
    with pytest.raises(ValueError, match=match):
        ours()
    if theirs is not None:
        with pytest.raises(ValueError):
            theirs()


# ---------------------------------------------------------------------------------------------
# The pure schedules drive functional optimizers like torch's schedulers drive torch's
# ---------------------------------------------------------------------------------------------


class _NoScheduler:
    def step(self) -> None:
        pass


def _sgd_tx(lr_sched, momentum_sched):
    return otx.inject_hyperparams(otx.sgd)(learning_rate=lr_sched, momentum=momentum_sched)


def _adam_tx(lr_sched, b1_sched):
    return otx.inject_hyperparams(otx.adam)(learning_rate=lr_sched, b1=b1_sched)


STEPS = 25
# name -> (torch optimizer, its kwargs, torch scheduler, our transform)
DRIVE_CASES: dict[str, tuple[Any, dict, Callable[[Any], Any], Any]] = {
    "one_cycle_sgd_momentum": (
        torch.optim.SGD,
        {"lr": 0.1, "momentum": 0.9},
        lambda o: L.OneCycleLR(o, 0.2, total_steps=STEPS, three_phase=True),
        _sgd_tx(
            S.one_cycle_schedule(0.2, total_steps=STEPS, three_phase=True),
            S.one_cycle_momentum_schedule(total_steps=STEPS, three_phase=True),
        ),
    ),
    "cyclic_adam_beta1": (
        torch.optim.Adam,
        {"lr": 0.1},
        lambda o: L.CyclicLR(o, 0.001, 0.02, step_size_up=4, mode="triangular2"),
        _adam_tx(
            S.cyclic_schedule(0.001, 0.02, step_size_up=4, mode="triangular2"),
            S.cyclic_momentum_schedule(step_size_up=4, mode="triangular2"),
        ),
    ),
    "warm_restarts_adamw": (
        torch.optim.AdamW,
        {"lr": 0.01, "weight_decay": 0.1},
        lambda o: L.CosineAnnealingWarmRestarts(o, 3, T_mult=2, eta_min=0.001),
        otx.adamw(S.cosine_annealing_warm_restarts_schedule(0.01, 3, 2, 0.001), weight_decay=0.1),
    ),
    "multistep_sgd": (
        torch.optim.SGD,
        {"lr": 0.1},
        lambda o: L.MultiStepLR(o, [4, 9, 9], 0.5),
        otx.sgd(S.multistep_schedule(0.1, [4, 9, 9], 0.5)),
    ),
    "cosine_sgd_nesterov": (
        torch.optim.SGD,
        {"lr": 0.1, "momentum": 0.8, "nesterov": True},
        lambda o: L.CosineAnnealingLR(o, 7),
        otx.sgd(S.cosine_annealing_schedule(0.1, 7), momentum=0.8, nesterov=True),
    ),
}


@pytest.mark.parametrize("name", list(DRIVE_CASES))
def test_schedules_drive_functional_optimizers_like_torch(name):
    ref_cls, kwargs, make, tx = DRIVE_CASES[name]
    train_pair(
        lambda params, **kw: otx.TorchOptimizer(params, tx),
        ref_cls,
        kwargs,
        steps=STEPS,
        skip=False,
        param_groups=False,
        scheduler=lambda o: _NoScheduler() if isinstance(o, otx.TorchOptimizer) else make(o),
    )
