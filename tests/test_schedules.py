"""Schedules: values against optax (float64), conventions, torch.compile, vmap, torch.optim."""

from __future__ import annotations

import logging
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from optax_torch import schedules as S

INT32_MAX = 2**31 - 1


@pytest.fixture(scope="module", autouse=True)
def _x64():
    """optax in float64 for the duration of this module (restored afterwards)."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


# (id, factory name, kwargs, number of counts to check); the same kwargs build both schedules.
CASES = [
    ("constant", "constant_schedule", dict(value=0.3), 5),
    ("constant_int", "constant_schedule", dict(value=5), 5),
    ("linear", "linear_schedule", dict(init_value=1.0, end_value=0.01, transition_steps=100), 110),
    (
        "linear_begin",
        "linear_schedule",
        dict(init_value=0.0, end_value=1.0, transition_steps=10, transition_begin=5),
        20,
    ),
    (
        "linear_negative_begin",
        "linear_schedule",
        dict(init_value=0.5, end_value=2.0, transition_steps=7, transition_begin=-3),
        10,
    ),
    (
        "linear_no_steps",
        "linear_schedule",
        dict(init_value=0.7, end_value=0.1, transition_steps=0),
        5,
    ),
    (
        "poly2",
        "polynomial_schedule",
        dict(init_value=1.0, end_value=0.01, power=2, transition_steps=100, transition_begin=5),
        110,
    ),
    (
        "poly_sqrt",
        "polynomial_schedule",
        dict(init_value=0.3, end_value=1e-3, power=0.5, transition_steps=33),
        40,
    ),
    (
        "poly_float_power",
        "polynomial_schedule",
        dict(init_value=2.0, end_value=0.5, power=1.7, transition_steps=13),
        20,
    ),
    ("cosine", "cosine_decay_schedule", dict(init_value=1.0, decay_steps=100), 110),
    ("cosine_alpha", "cosine_decay_schedule", dict(init_value=0.1, decay_steps=37, alpha=0.1), 45),
    (
        "cosine_exponent",
        "cosine_decay_schedule",
        dict(init_value=3e-4, decay_steps=50, alpha=0.05, exponent=2.0),
        55,
    ),
    ("exp", "exponential_decay", dict(init_value=1.0, transition_steps=10, decay_rate=0.5), 50),
    (
        "exp_staircase_begin",
        "exponential_decay",
        dict(
            init_value=0.1, transition_steps=7, decay_rate=0.9, transition_begin=5, staircase=True
        ),
        60,
    ),
    (
        "exp_end_lower",
        "exponential_decay",
        dict(init_value=1.0, transition_steps=3, decay_rate=0.5, end_value=0.2),
        20,
    ),
    (
        "exp_end_upper",
        "exponential_decay",
        dict(init_value=0.1, transition_steps=4, decay_rate=2.0, end_value=3.0, staircase=True),
        40,
    ),
    (
        "exp_no_steps",
        "exponential_decay",
        dict(init_value=0.1, transition_steps=0, decay_rate=0.5),
        5,
    ),
    (
        "exp_zero_rate",
        "exponential_decay",
        dict(init_value=0.1, transition_steps=5, decay_rate=0.0),
        5,
    ),
    (
        "exp_negative_begin",
        "exponential_decay",
        dict(init_value=0.1, transition_steps=5, decay_rate=0.3, transition_begin=-4),
        12,
    ),
    (
        "warmup_cosine",
        "warmup_cosine_decay_schedule",
        dict(init_value=0.0, peak_value=1.0, warmup_steps=10, decay_steps=100),
        110,
    ),
    (
        "warmup_cosine_end_exp",
        "warmup_cosine_decay_schedule",
        dict(
            init_value=1e-4,
            peak_value=3e-3,
            warmup_steps=7,
            decay_steps=40,
            end_value=1e-5,
            exponent=1.5,
        ),
        50,
    ),
    (
        "warmup_cosine_zero_peak",
        "warmup_cosine_decay_schedule",
        dict(init_value=0.1, peak_value=0.0, warmup_steps=4, decay_steps=10, end_value=0.01),
        15,
    ),
    (
        "warmup_cosine_no_warmup",
        "warmup_cosine_decay_schedule",
        dict(init_value=0.1, peak_value=0.5, warmup_steps=0, decay_steps=10, end_value=0.01),
        15,
    ),
    (
        "pw_const",
        "piecewise_constant_schedule",
        dict(init_value=1.0, boundaries_and_scales={10: 0.5, 20: 0.1}),
        30,
    ),
    ("pw_const_none", "piecewise_constant_schedule", dict(init_value=0.25), 5),
    (
        "pw_const_zero_scale",
        "piecewise_constant_schedule",
        dict(init_value=0.1, boundaries_and_scales={0: 2.0, 15: 0.0, 5: 3.0}),
        20,
    ),
    (
        "pw_interp_linear",
        "piecewise_interpolate_schedule",
        dict(interpolate_type="linear", init_value=1.0, boundaries_and_scales={4: 0.1, 8: 0.01}),
        12,
    ),
    (
        "pw_interp_cosine",
        "piecewise_interpolate_schedule",
        dict(
            interpolate_type="cosine",
            init_value=0.5,
            boundaries_and_scales={3: 2.0, 10: 0.1, 11: 4.0},
        ),
        15,
    ),
    (
        "pw_interp_empty",
        "piecewise_interpolate_schedule",
        dict(interpolate_type="linear", init_value=0.5),
        4,
    ),
    ("onecycle_cos", "cosine_onecycle_schedule", dict(transition_steps=50, peak_value=0.1), 60),
    (
        "onecycle_cos_args",
        "cosine_onecycle_schedule",
        dict(
            transition_steps=21,
            peak_value=1.0,
            pct_start=0.5,
            div_factor=10.0,
            final_div_factor=100.0,
        ),
        25,
    ),
    ("onecycle_lin", "linear_onecycle_schedule", dict(transition_steps=40, peak_value=0.1), 50),
    (
        "warmup_const",
        "warmup_constant_schedule",
        dict(init_value=0.0, peak_value=0.3, warmup_steps=6),
        10,
    ),
    (
        "warmup_exp",
        "warmup_exponential_decay_schedule",
        dict(
            init_value=0.0,
            peak_value=1.0,
            warmup_steps=5,
            transition_steps=3,
            decay_rate=0.7,
            transition_begin=2,
            staircase=True,
            end_value=0.3,
        ),
        30,
    ),
    (
        "sgdr",
        "sgdr_schedule",
        dict(
            cosine_kwargs=[
                dict(init_value=0.0, peak_value=1.0, warmup_steps=3, decay_steps=10),
                dict(init_value=0.1, peak_value=0.5, warmup_steps=2, decay_steps=8, end_value=0.01),
            ]
        ),
        25,
    ),
]


def _join_pair(lib):
    return lib.join_schedules(
        [
            lib.linear_schedule(0.0, 1.0, transition_steps=5),
            lib.cosine_decay_schedule(1.0, decay_steps=10, alpha=0.2),
            lib.exponential_decay(0.2, transition_steps=2, decay_rate=0.5),
        ],
        [5, 15],
    )


def _build(name, kwargs, lib):
    return getattr(lib, name)(**kwargs)


def _counts(n):
    # 0..n-1 plus a count near the int32 limit (schedules must not overflow).
    return [*range(n), 1000, INT32_MAX - 1, INT32_MAX]


def _optax_values(sched, counts):
    # int64 counts: jax divides int32 in float32 even with x64 enabled.
    return np.asarray(jax.vmap(sched)(jnp.asarray(counts, dtype=jnp.int64)), dtype=np.float64)


def _check(ours, reference, counts):
    expected = _optax_values(reference, counts)
    # int32 tensor counts, one at a time (the optimizer-state case).
    got = np.array([ours(torch.tensor(c, dtype=torch.int32)).item() for c in counts])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    # Python int counts.
    got = np.array([ours(c).item() for c in counts])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    # A batch of counts at once: count-shaped result.
    batch = ours(torch.tensor(counts, dtype=torch.int32))
    assert batch.shape == (len(counts),) and batch.dtype == torch.float64
    np.testing.assert_allclose(batch.numpy(), expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(("name", "kwargs", "n"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_matches_optax(name, kwargs, n):
    _check(_build(name, kwargs, S), _build(name, kwargs, optax.schedules), _counts(n))


def test_join_matches_optax():
    _check(_join_pair(S), _join_pair(optax.schedules), _counts(30))


def test_join_accepts_python_valued_schedules():
    sched = S.join_schedules([lambda c: 1.0, lambda c: 2], [3])
    assert [sched(c).item() for c in range(5)] == [1.0, 1.0, 1.0, 2.0, 2.0]
    assert sched(torch.tensor(4, dtype=torch.int32)).dtype == torch.float64


@pytest.mark.parametrize(
    "count",
    [3, torch.tensor(3, dtype=torch.int32), torch.tensor(3), torch.tensor([[0, 3], [5, 100]])],
    ids=["int", "int32", "int64", "batch"],
)
def test_value_convention(count):
    for sched in [
        S.constant_schedule(0.5),
        S.linear_schedule(1.0, 0.1, 10),
        S.cosine_decay_schedule(1.0, 10),
        S.exponential_decay(1.0, 10, 0.5, end_value=0.1),
        S.piecewise_constant_schedule(1.0, {2: 0.5}),
        S.piecewise_interpolate_schedule("cosine", 1.0, {4: 0.1}),
        S.warmup_cosine_decay_schedule(0.0, 1.0, 5, 20),
    ]:
        value = sched(count)
        assert isinstance(value, torch.Tensor)
        assert value.dtype == torch.float64
        assert value.shape == torch.as_tensor(count).shape
        assert value.device == torch.device("cpu")


def test_tensor_hyperparameters():
    """Tensor hyperparameters (any float dtype) give float64 values equal to Python floats."""
    ours = S.linear_schedule(torch.tensor(1.0), torch.tensor(0.25, dtype=torch.float64), 8)
    ref = S.linear_schedule(1.0, 0.25, 8)
    for c in range(10):
        assert ours(c).dtype == torch.float64
        assert ours(c).item() == ref(c).item()


def test_validation_errors():
    with pytest.raises(ValueError, match="positive decay_steps"):
        S.cosine_decay_schedule(1.0, decay_steps=0)
    with pytest.raises(ValueError, match="positive decay_steps"):
        S.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=10, decay_steps=10)
    with pytest.raises(ValueError, match="non-negative scale"):
        S.piecewise_constant_schedule(1.0, {10: -0.1})
    with pytest.raises(ValueError, match="non-negative scale"):
        S.piecewise_interpolate_schedule("linear", 1.0, {10: -0.1})
    with pytest.raises(ValueError, match="interpolate_type"):
        S.piecewise_interpolate_schedule("quadratic", 1.0, {10: 0.1})
    with pytest.raises(ValueError, match="non-positive"):
        S.cosine_onecycle_schedule(0, 1.0)
    with pytest.raises(ValueError, match="non-positive"):
        S.linear_onecycle_schedule(-1, 1.0)


def test_degenerate_configs_log(caplog):
    with caplog.at_level(logging.INFO, logger="optax_torch.schedules._schedule"):
        assert S.polynomial_schedule(0.5, 0.1, 2, transition_steps=0)(10).item() == 0.5
        assert S.exponential_decay(0.5, transition_steps=-1, decay_rate=0.5)(10).item() == 0.5
        assert S.exponential_decay(0.5, transition_steps=3, decay_rate=0)(10).item() == 0.5
        S.linear_schedule(0.5, 0.1, 10, transition_begin=-1)
    assert len(caplog.records) == 4


def _all_schedules():
    scheds = [_build(name, kwargs, S) for _, name, kwargs, _ in CASES]
    return [*scheds, _join_pair(S)]


def test_vmap_equals_eager():
    counts = torch.tensor(_counts(60), dtype=torch.int32)
    for sched in _all_schedules():
        expected = torch.stack([sched(c) for c in counts])
        torch.testing.assert_close(torch.func.vmap(sched)(counts), expected, rtol=1e-15, atol=1e-16)


def test_compile_fullgraph_equals_eager():
    scheds = _all_schedules()

    def evaluate(count):
        return torch.stack([s(count) for s in scheds])

    compiled = torch.compile(evaluate, fullgraph=True)
    for c in [0, 3, 10, 57, 101, INT32_MAX]:
        count = torch.tensor(c, dtype=torch.int32)
        torch.testing.assert_close(compiled(count), evaluate(count), rtol=1e-14, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# Against torch.optim.lr_scheduler
# ---------------------------------------------------------------------------------------------


def _torch_lrs(make_scheduler, base_lr, steps):
    """The lr torch.optim uses at steps 0..steps-1."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    scheduler = make_scheduler(opt)
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(steps):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            scheduler.step()
    return np.array(lrs)


def _ours(sched, steps):
    return np.array([sched(torch.tensor(c, dtype=torch.int32)).item() for c in range(steps)])


def test_linear_warmup_vs_lambda_lr():
    lr, warmup, steps = 3e-3, 17, 30
    expected = _torch_lrs(
        lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, s / warmup)),
        lr,
        steps,
    )
    np.testing.assert_allclose(
        _ours(S.linear_schedule(0.0, lr, warmup), steps), expected, rtol=1e-13
    )


def test_linear_vs_linear_lr():
    lr, start, end, total, steps = 0.1, 0.25, 1.0, 9, 15
    expected = _torch_lrs(
        lambda opt: torch.optim.lr_scheduler.LinearLR(opt, start, end, total_iters=total), lr, steps
    )
    ours = _ours(S.linear_schedule(lr * start, lr * end, total), steps)
    np.testing.assert_allclose(ours, expected, rtol=1e-12)


def test_cosine_vs_cosine_annealing_lr():
    lr, eta_min, t_max = 0.1, 1e-3, 50
    expected = _torch_lrs(
        lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, t_max, eta_min=eta_min),
        lr,
        t_max + 1,
    )
    ours = _ours(S.cosine_decay_schedule(lr, t_max, alpha=eta_min / lr), t_max + 1)
    # CosineAnnealingLR updates the lr recursively: agreement up to accumulated rounding.
    np.testing.assert_allclose(ours, expected, rtol=1e-12)


def test_warmup_cosine_vs_lambda_lr():
    """The usual "cosine with warmup" (as in HF transformers) written with LambdaLR."""
    lr, warmup, total = 5e-4, 10, 60

    def factor(step):
        if step < warmup:
            return step / warmup
        progress = (step - warmup) / (total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    expected = _torch_lrs(
        lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, factor), lr, total + 10
    )
    ours = _ours(S.warmup_cosine_decay_schedule(0.0, lr, warmup, total), total + 10)
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-18)


def test_warmup_cosine_vs_sequential_lr():
    lr, start, warmup, total, end = 0.1, 0.1, 5, 25, 1e-3

    def make(opt):
        lin = torch.optim.lr_scheduler.LinearLR(opt, start, 1.0, total_iters=warmup)
        cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total - warmup, eta_min=end)
        return torch.optim.lr_scheduler.SequentialLR(opt, [lin, cos], milestones=[warmup])

    expected = _torch_lrs(make, lr, total + 1)
    ours = _ours(S.warmup_cosine_decay_schedule(lr * start, lr, warmup, total, end), total + 1)
    np.testing.assert_allclose(ours, expected, rtol=1e-12)


def test_step_lr_vs_piecewise_and_exponential():
    lr, gamma = 0.1, 0.3
    expected = _torch_lrs(
        lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, [4, 9], gamma=gamma), lr, 15
    )
    ours = _ours(S.piecewise_constant_schedule(lr, {4: gamma, 9: gamma}), 15)
    np.testing.assert_allclose(ours, expected, rtol=1e-14)

    expected = _torch_lrs(lambda opt: torch.optim.lr_scheduler.StepLR(opt, 3, gamma=gamma), lr, 15)
    ours = _ours(S.exponential_decay(lr, 3, gamma, staircase=True), 15)
    np.testing.assert_allclose(ours, expected, rtol=1e-13)

    expected = _torch_lrs(lambda opt: torch.optim.lr_scheduler.ExponentialLR(opt, gamma), lr, 15)
    ours = _ours(S.exponential_decay(lr, 1, gamma), 15)
    np.testing.assert_allclose(ours, expected, rtol=1e-13)
