"""compat.classy.optim.param_scheduler against Classy Vision 0.7's own param schedulers.

Every scheduler and registry config, value by value over a dense grid of ``where`` (Python
floats: identical values, types and exceptions; tensors: 1e-12), composites with both interval
scalings, Classy's validation errors, the bridge to optax_torch schedules, compile and vmap.
"""

from __future__ import annotations

import copy
import inspect
import math
from typing import Any

import pytest
import torch

classy_vision = pytest.importorskip("classy_vision")

import fvcore.common.param_scheduler as fv  # noqa: E402
from classy_vision.optim import param_scheduler as R  # noqa: E402
from torch_optim_ref import check_signature  # noqa: E402

from optax_torch.compat.classy.optim import param_scheduler as P  # noqa: E402
from optax_torch.schedules import (  # noqa: E402
    cosine_decay_schedule,
    linear_schedule,
    piecewise_constant_schedule,
)

F64 = torch.float64

# Dense grid of ``where``: regular points, the step grids of a few run lengths, and points just
# around every boundary used below (milestones, composite lengths, WHERE_EPSILON shifts).
_GRID = sorted(
    {i / 2000 for i in range(2000)}
    | {k / n for n in (7, 90, 120, 1000) for k in range(n)}
    | {
        b + d
        for b in (0.1, 0.25, 0.3, 0.4, 0.5, 0.6, 1 / 3, 2 / 3, 0.75, 0.7, 0.9, 1.0)
        for d in (-2e-6, -1e-6, -5e-7, -1e-12, 0.0, 1e-12, 5e-7, 1e-6, 2e-6)
        if 0 <= b + d < 1
    }
    | {0.9999995, 0.99999999}
)

CONFIGS = [
    {"name": "constant", "value": 0.1},
    {"name": "constant", "value": 3, "update_interval": "step"},
    {"name": "cosine", "start_value": 0.1, "end_value": 1e-4},
    {"name": "cosine", "start_value": 0.0, "end_value": 1.0, "update_interval": "epoch"},
    {"name": "linear", "start_value": 1e-4, "end_value": 0.01},
    {"name": "linear", "start_value": 0.5, "end_value": 0.0, "unused_key": 1},
    {"name": "multistep", "values": [0.1, 0.01, 0.001], "num_epochs": 90, "milestones": [30, 60]},
    {"name": "multistep", "values": [0.1, 0.01, 0.001], "milestones": [30, 60, 90]},
    {"name": "multistep", "values": [1.0, 0.5, 0.25, 0.125], "num_updates": 90},
    {"name": "multistep", "values": [1, 2], "milestones": [3, 7], "update_interval": "STEP"},
    {"name": "polynomial", "base_value": 0.1, "power": 0.9},
    {"name": "polynomial", "base_value": 2.0, "power": 2},
    {"name": "step", "num_epochs": 120, "values": [0.1, 0.01, 0.001, 0.0001]},
    {"name": "step", "num_updates": 3, "values": [0.5, 0.7, 0.2], "update_interval": "step"},
    {
        "name": "step_with_fixed_gamma",
        "base_value": 0.1,
        "gamma": 0.1,
        "num_decays": 3,
        "num_epochs": 120,
    },
    {
        "name": "step_with_fixed_gamma",
        "base_value": 2,
        "gamma": 0.5,
        "num_decays": 6,
        "num_updates": 7,
    },
    {
        "name": "composite",
        "schedulers": [
            {"name": "linear", "start_value": 0.0, "end_value": 0.42},
            {"name": "cosine", "start_value": 0.42, "end_value": 1e-4},
        ],
        "lengths": [0.1, 0.9],
    },
    {
        "name": "composite",
        "schedulers": [
            {"name": "constant", "value": 0.42},
            {"name": "cosine", "start_value": 0.42, "end_value": 1e-4},
        ],
        "lengths": [0.3, 0.7],
        "interval_scaling": ["rescaled", "fixed"],
        "update_interval": "epoch",
    },
    {
        "name": "composite",
        "schedulers": [
            {"name": "linear", "start_value": 0.1, "end_value": 1.0},
            {"name": "step", "values": [1.0, 0.1, 0.01]},
            {"name": "polynomial", "base_value": 0.01, "power": 0.5},
        ],
        "lengths": [0.25, 0.5, 0.25],
        "interval_scaling": ["fixed", "rescaled", "fixed"],
        "num_epochs": 90,
    },
    {
        "name": "composite",
        "schedulers": [
            {"name": "constant", "value": 1.0},
            {"name": "multistep", "values": [1.0, 0.1], "milestones": [1, 2]},
            {
                "name": "composite",
                "schedulers": [
                    {"name": "cosine", "start_value": 0.1, "end_value": 0.0},
                    {"name": "constant", "value": 0.0},
                ],
                "lengths": [0.5, 0.5],
                "interval_scaling": ["fixed", "rescaled"],
            },
        ],
        "lengths": [1 / 3, 1 / 3, 0.3334],  # sums to 1 within 1e-3: the last one is adjusted
    },
]


def _ids(configs):
    return [f"{i}-{c['name']}" for i, c in enumerate(configs)]


def _build_pair(config) -> tuple[Any, Any]:
    return (
        P.build_param_scheduler(copy.deepcopy(config)),
        R.build_param_scheduler(copy.deepcopy(config)),
    )


def _outcome(scheduler, where):
    try:
        return scheduler(where)
    except Exception as e:  # the exception is the outcome
        return (type(e), str(e))


def _same_python(ours, ref, grid=_GRID):
    for w in grid:
        a, b = _outcome(ours, w), _outcome(ref, w)
        assert type(a) is type(b) and a == b, (w, a, b)


def _same_tensor(ours, ref, grid=_GRID):
    """Tensor ``where``: a float64 tensor, equal to 1e-12 wherever Classy returns a value."""
    ok = [w for w in grid if not isinstance(_outcome(ref, w), tuple)]
    where = torch.tensor(ok, dtype=F64)
    out = ours(where)
    assert out.dtype == F64 and out.shape == where.shape
    expected = torch.tensor([float(ref(w)) for w in ok], dtype=F64)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    # float32 ``where`` is promoted to float64; 0-d stays 0-d.
    one = ours(torch.tensor(ok[len(ok) // 2], dtype=torch.float32))
    assert one.dtype == F64 and one.shape == ()
    return where, out


# ---------------------------------------------------------------------------------------------
# Values.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=_ids(CONFIGS))
def test_build_param_scheduler_matches_classy_on_a_dense_grid(config):
    ours, ref = _build_pair(config)
    assert type(ours).__name__ == type(ref).__name__
    assert ours.update_interval == P.UpdateInterval(ref.update_interval.value)
    _same_python(ours, ref)
    _same_tensor(ours, ref)


def test_exceptions_out_of_range_like_classy():
    for config in CONFIGS[:16]:
        ours, ref = _build_pair(config)
        _same_python(ours, ref, [1.0, 1.5, -0.5, -1e-9, 0.9999999])


def test_tensor_where_out_of_range_clamps_instead_of_raising():
    one = torch.tensor([1.0, 1.5], dtype=F64)
    assert P.ConstantParamScheduler(0.5)(one).tolist() == [0.5, 0.5]
    assert P.StepParamScheduler(3, [3.0, 2.0, 1.0])(one).tolist() == [1.0, 1.0]
    assert P.StepParamScheduler(3, [3.0, 2.0, 1.0])(torch.tensor(-0.5)).item() == 3.0
    assert P.MultiStepParamScheduler([3.0, 2.0], milestones=[1, 2])(one).tolist() == [2.0, 2.0]
    with pytest.raises(AttributeError):
        _ = P.ClassyParamScheduler.update_interval  # unset, as in Classy


def test_exponential_matches_fvcore():
    for kw in ({"start_value": 2.0, "decay": 0.02}, {"start_value": 0.1, "decay": 3}):
        ours, ref = P.ExponentialParamScheduler(**kw), fv.ExponentialParamScheduler(**kw)
        for w in _GRID:
            assert abs(ours(w) - ref(w)) == 0.0
        _same_tensor(ours, ref)
    check_signature(P.ExponentialParamScheduler, fv.ExponentialParamScheduler)
    assert "exponential" not in P.PARAM_SCHEDULER_REGISTRY  # Classy does not register it
    s = P.ExponentialParamScheduler.from_config(
        {"name": "exponential", "start_value": 1.0, "decay": 0.5, "update_interval": "epoch"}
    )
    assert s(1 / 3) == 0.5 ** (1 / 3) and s.update_interval == P.UpdateInterval.EPOCH


def test_constructors_signatures_defaults_and_registry():
    names = [
        "ConstantParamScheduler",
        "CosineParamScheduler",
        "LinearParamScheduler",
        "MultiStepParamScheduler",
        "PolynomialDecayParamScheduler",
        "StepParamScheduler",
        "StepWithFixedGammaParamScheduler",
        "CompositeParamScheduler",
    ]
    for name in names[:-1]:
        check_signature(getattr(P, name), getattr(R, name))
    ps = inspect.signature(P.CompositeParamScheduler).parameters
    rs = inspect.signature(R.CompositeParamScheduler).parameters
    assert list(ps) == list(rs)
    assert [p.kind for p in ps.values()] == [p.kind for p in rs.values()]
    assert ps["update_interval"].default.value == rs["update_interval"].default.value == "step"
    for name in names:
        ref_default = getattr(getattr(R, name), "update_interval", None)
        ours_default = getattr(getattr(P, name), "update_interval", None)
        if ref_default is None:
            assert name == "CompositeParamScheduler"
        else:
            assert ours_default == P.UpdateInterval(ref_default.value), name
    assert sorted(P.PARAM_SCHEDULER_REGISTRY) == sorted(R.PARAM_SCHEDULER_REGISTRY)
    for name, cls in R.PARAM_SCHEDULER_REGISTRY.items():
        assert P.PARAM_SCHEDULER_REGISTRY[name].__name__ == cls.__name__
    assert P.ParamScheduler.WHERE_EPSILON == R.ParamScheduler.WHERE_EPSILON == 1e-6
    assert [m.value for m in P.UpdateInterval] == [m.value for m in R.UpdateInterval]
    assert [m.name for m in P.IntervalScaling] == [m.name for m in R.IntervalScaling]
    assert isinstance(P.CosineParamScheduler(1, 0), P.ClassyParamScheduler)
    assert not isinstance(
        P.CompositeParamScheduler([P.ConstantParamScheduler(1)], [1.0], ["fixed"]),
        P.ClassyParamScheduler,
    )
    with pytest.raises(NotImplementedError, match="must override __call__"):
        P.ParamScheduler()(0.5)
    with pytest.raises(NotImplementedError):
        P.ClassyParamScheduler.from_config({})
    assert P.ClassyParamScheduler(P.UpdateInterval.EPOCH).update_interval == P.UpdateInterval.EPOCH


def test_direct_construction_matches_classy():
    cases = [
        ("ConstantParamScheduler", (0.3,), {}),
        ("CosineParamScheduler", (), {"start_value": 1.0, "end_value": 0.1}),
        ("LinearParamScheduler", (2.0, -1.0), {}),
        ("MultiStepParamScheduler", ([1.0, 0.1, 0.01],), {"num_updates": 10}),
        ("MultiStepParamScheduler", ([1.0, 0.1],), {"milestones": [4, 9]}),
        ("PolynomialDecayParamScheduler", (1.0, 3.0), {}),
        ("StepParamScheduler", (7.5, [3.0, 2.0, 1.0]), {}),
        ("StepWithFixedGammaParamScheduler", (1.0, 2, 0.3, 10), {}),
    ]
    for name, args, kwargs in cases:
        ours = getattr(P, name)(*copy.deepcopy(args), **copy.deepcopy(kwargs))
        ref = getattr(R, name)(*copy.deepcopy(args), **copy.deepcopy(kwargs))
        _same_python(ours, ref)
        _same_tensor(ours, ref)
        assert ours.update_interval.value == ref.update_interval.value
    s, r = (
        P.StepWithFixedGammaParamScheduler(1.0, 2, 0.3, 10),
        R.StepWithFixedGammaParamScheduler(1.0, 2, 0.3, 10),
    )
    assert (s.base_value, s.num_decays, s.gamma, s.num_updates) == (
        r.base_value,
        r.num_decays,
        r.gamma,
        r.num_updates,
    )
    m, q = P.MultiStepParamScheduler([1, 2, 3], 9), R.MultiStepParamScheduler([1, 2, 3], 9)
    assert (m._milestones, m._num_updates) == (q._milestones, q._num_updates)


# ---------------------------------------------------------------------------------------------
# Composite.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scaling", ["rescaled", "fixed"])
def test_composite_interval_scalings_enums_and_strings(scaling):
    def subs(mod):
        return [
            mod.LinearParamScheduler(0.0, 1.0),
            mod.CosineParamScheduler(1.0, 0.1),
            mod.StepParamScheduler(4, [0.5, 0.25, 0.125, 0.0625]),
        ]

    for as_enum in (False, True):
        ours_scaling = [P.IntervalScaling[scaling.upper()] if as_enum else scaling] * 3
        ref_scaling = [R.IntervalScaling[scaling.upper()] if as_enum else scaling] * 3
        ours = P.CompositeParamScheduler(subs(P), [0.2, 0.3, 0.5], ours_scaling)
        ref = R.CompositeParamScheduler(subs(R), [0.2, 0.3, 0.5], ref_scaling)
        assert ours._interval_scaling == ref._interval_scaling == [scaling] * 3
        _same_python(ours, ref)
        _same_tensor(ours, ref)
    ours = P.CompositeParamScheduler(
        subs(P), [0.2, 0.3, 0.5], [scaling] * 3, P.UpdateInterval.EPOCH
    )
    assert ours.update_interval == P.UpdateInterval.EPOCH


def test_composite_lengths_adjusted_in_place_and_num_epochs_propagated():
    lengths_ours, lengths_ref = [0.3, 0.3, 0.3995], [0.3, 0.3, 0.3995]
    subs = [{"name": "constant", "value": v} for v in (1.0, 2.0, 3.0)]
    P.CompositeParamScheduler(
        [P.build_param_scheduler(dict(c)) for c in subs], lengths_ours, ["fixed"] * 3
    )
    R.CompositeParamScheduler(
        [R.build_param_scheduler(dict(c)) for c in subs], lengths_ref, ["fixed"] * 3
    )
    assert lengths_ours == lengths_ref and lengths_ours[-1] != 0.3995
    config = {
        "name": "composite",
        "schedulers": [{"name": "step", "values": [1.0, 0.5]}],
        "lengths": [1.0],
        "num_epochs": 10,
    }
    c_ours, c_ref = copy.deepcopy(config), copy.deepcopy(config)
    P.build_param_scheduler(c_ours)
    R.build_param_scheduler(c_ref)
    assert c_ours == c_ref and c_ours["schedulers"][0]["num_epochs"] == 10


# ---------------------------------------------------------------------------------------------
# Errors: Classy's types and messages.
# ---------------------------------------------------------------------------------------------

BAD_CONFIGS = [
    {"name": "nope"},
    {"name": "multistep", "values": [1.0, 0.1]},
    {"name": "multistep", "values": [1.0, 0.1], "milestones": [1, 2, 3]},
    {"name": "multistep", "values": [1.0, 0.1], "milestones": 5, "num_epochs": 10},
    {"name": "multistep", "values": [1.0, 0.1, 0.01], "num_epochs": 2},
    {"name": "multistep", "values": [1.0, 0.1], "milestones": [10], "num_epochs": 10},
    {"name": "multistep", "values": [1.0, 0.1, 0.0], "milestones": [5, 3], "num_epochs": 10},
    {"name": "multistep", "values": [1.0, 0.1], "milestones": [0], "num_epochs": 10},
    {"name": "step", "num_epochs": 0, "values": [1.0]},
    {"name": "step", "num_epochs": 10, "values": []},
    {"name": "step", "num_epochs": 10, "values": 0.1},
    {"name": "step", "values": [1.0]},
    {
        "name": "step_with_fixed_gamma",
        "base_value": -1,
        "gamma": 0.1,
        "num_decays": 1,
        "num_epochs": 3,
    },
    {
        "name": "step_with_fixed_gamma",
        "base_value": 1,
        "gamma": "0.1",
        "num_decays": 1,
        "num_epochs": 3,
    },
    {
        "name": "step_with_fixed_gamma",
        "base_value": 1,
        "gamma": 0.1,
        "num_decays": 1.0,
        "num_epochs": 3,
    },
    {
        "name": "step_with_fixed_gamma",
        "base_value": 1,
        "gamma": 0.1,
        "num_decays": 1,
        "num_epochs": 0,
    },
    {"name": "constant", "value": 1.0, "update_interval": "batch"},
    {"name": "cosine", "start_value": 1.0},
    {"name": "composite", "schedulers": []},
    {
        "name": "composite",
        "schedulers": [{"name": "constant", "value": 1}],
        "lengths": [1.0],
        "interval_scaling": ["fixed", "fixed"],
    },
    {
        "name": "composite",
        "schedulers": [{"name": "constant", "value": 1}],
        "lengths": [1.0],
        "interval_scaling": ["linear"],
    },
    {"name": "composite", "schedulers": [{"name": "constant", "value": 1}], "lengths": [0.5]},
    {"name": "composite", "schedulers": [{"name": "constant", "value": 1}], "lengths": [0.5, 0.5]},
    {"name": "composite", "schedulers": [], "lengths": []},
]


@pytest.mark.parametrize("config", BAD_CONFIGS, ids=_ids(BAD_CONFIGS))
def test_invalid_configs_raise_like_classy(config):
    def outcome(mod):
        try:
            mod.build_param_scheduler(copy.deepcopy(config))
        except Exception as e:
            return type(e), str(e)
        raise AssertionError("no exception")

    assert outcome(P) == outcome(R)


def test_wrong_config_name_for_class_and_direct_composite_errors():
    with pytest.raises(AssertionError):
        P.CosineParamScheduler.from_config({"name": "linear", "start_value": 1, "end_value": 0})
    with pytest.raises(ValueError, match="Unsupported interval_scaling: linear"):
        P.CompositeParamScheduler([P.ConstantParamScheduler(1)], [1.0], ["linear"])


def test_register_param_scheduler_like_classy():
    class Half(P.ParamScheduler):
        def __call__(self, where):
            return where / 2

        @classmethod
        def from_config(cls, config):
            return cls()

    try:
        assert P.register_param_scheduler("half_for_test")(Half) is Half
        assert P.build_param_scheduler({"name": "half_for_test"})(0.5) == 0.25
        with pytest.raises(
            ValueError,
            match=r"^Cannot register duplicate param scheduler "
            r"\(half_for_test\)\. Already registered at \n",
        ):
            P.register_param_scheduler("half_for_test")(Half)
        P.register_param_scheduler("half_for_test", bypass_checks=True)(Half)
        with pytest.raises(ValueError) as ours:
            P.register_param_scheduler("int_for_test")(int)
        with pytest.raises(ValueError) as ref:
            R.register_param_scheduler("int_for_test")(int)
        assert str(ours.value) == str(ref.value)
    finally:
        P.PARAM_SCHEDULER_REGISTRY.pop("half_for_test", None)
        P.PARAM_SCHEDULER_REGISTRY_TB.pop("half_for_test", None)


def test_update_interval_from_config_like_classy():
    for config, default in [({}, None), ({}, "EPOCH"), ({"update_interval": "Epoch"}, "STEP")]:
        ours = P.UpdateInterval.from_config(config, default and P.UpdateInterval[default])
        ref = R.UpdateInterval.from_config(config, default and R.UpdateInterval[default])
        assert ours.value == ref.value
    with pytest.raises(ValueError, match=r"^Choices for update interval are 'step' or 'epoch'$"):
        P.UpdateInterval.from_config({"update_interval": "x"})


# ---------------------------------------------------------------------------------------------
# Bridge to optax_torch schedules.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=_ids(CONFIGS))
def test_as_schedule_is_classy_per_step_and_per_epoch(config):
    ours, ref = _build_pair(config)
    total, per_epoch = 60, 12
    counts = torch.arange(-2, total + 3)
    for steps_per_epoch in (None, per_epoch):
        schedule: Any = P.as_schedule(ours, total, steps_per_epoch=steps_per_epoch)
        values = schedule(counts)
        assert values.dtype == F64 and values.shape == counts.shape
        epoch = steps_per_epoch is not None and ref.update_interval == R.UpdateInterval.EPOCH
        for c, v in zip(counts.tolist(), values.tolist()):
            t = min(max(c, 0), total - 1)
            if epoch:
                t = t // per_epoch * per_epoch
            assert abs(v - float(ref(t / total))) <= 1e-12, (c, v)
        assert schedule(7).shape == () and schedule(torch.tensor(7, dtype=torch.int32)) == values[9]


def test_from_schedule_and_round_trip():
    total = 50
    for schedule in (
        linear_schedule(1.0, 0.0, total),
        cosine_decay_schedule(0.1, total, alpha=0.01),
        piecewise_constant_schedule(1.0, {10: 0.1, 30: 0.5}),
    ):
        scheduler = P.from_schedule(schedule, total)
        assert isinstance(scheduler, P.ClassyParamScheduler)
        assert scheduler.update_interval == P.UpdateInterval.STEP
        for t in range(total):
            expected = float(schedule(torch.tensor(t)))
            value = scheduler(t / total)
            assert type(value) is float and value == expected
            assert float(P.as_schedule(scheduler, total)(torch.tensor(t))) == expected
            # between two steps: the step in progress
            assert scheduler((t + 0.7) / total) == expected
        where = torch.arange(total, dtype=F64) / total
        assert torch.equal(scheduler(where), schedule(torch.arange(total)).to(F64))
    for config in CONFIGS:
        ours, ref = _build_pair(config)
        back = P.from_schedule(P.as_schedule(ours, 90), 90)
        for t in range(90):
            assert abs(back(t / 90) - float(ref(t / 90))) <= 1e-12
    with pytest.raises(ValueError, match="total_steps"):
        P.as_schedule(ours, 0)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        P.as_schedule(ours, 10, steps_per_epoch=0)
    with pytest.raises(ValueError, match="total_steps"):
        P.from_schedule(linear_schedule(1.0, 0.0, 5), 2.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Traceable: torch.compile(fullgraph=True), vmap.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=_ids(CONFIGS))
def test_compile_fullgraph_and_vmap(config):
    ours, ref = _build_pair(config)
    ok = [w for w in _GRID[::37] if not isinstance(_outcome(ref, w), tuple)]
    where = torch.tensor(ok, dtype=F64)
    expected = ours(where)
    torch._dynamo.reset()
    compiled = torch.compile(ours, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(where), expected, rtol=0, atol=1e-12)
    vmapped = torch.func.vmap(ours)(where)
    torch.testing.assert_close(vmapped, expected, rtol=0, atol=1e-12)
    schedule = P.as_schedule(ours, 40, steps_per_epoch=8)
    counts = torch.arange(45)
    torch.testing.assert_close(torch.func.vmap(schedule)(counts), schedule(counts), rtol=0, atol=0)


def test_compile_aot_eager_composite_and_bridge():
    ours, _ = _build_pair(CONFIGS[-2])
    schedule = P.as_schedule(ours, 90, steps_per_epoch=10)
    torch._dynamo.reset()
    compiled = torch.compile(schedule, backend="aot_eager", fullgraph=True)
    for t in (0, 17, 44, 89, 120):
        c = torch.tensor(t)
        torch.testing.assert_close(compiled(c), schedule(c), rtol=0, atol=1e-15)
    back = P.from_schedule(cosine_decay_schedule(1.0, 100), 100)
    compiled_back = torch.compile(back, backend="aot_eager", fullgraph=True)
    w = torch.tensor(0.3, dtype=F64)
    assert math.isclose(float(compiled_back(w)), back(0.3), rel_tol=0, abs_tol=1e-15)
