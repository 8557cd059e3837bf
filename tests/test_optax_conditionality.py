"""Constraints, conditional transformations, freezing and monitoring against optax."""

from __future__ import annotations

import io
from typing import Any

import jax
import optax
import pytest
import torch
from conftest import Pair, assert_trees_close, assert_trees_equal
from optax_ref import grads_tree, inverse_time_schedule, params_tree, run_both

import optax_torch as otx
from optax_torch import tree as otree

DTYPES = [torch.float64, torch.float32]


def _mask(p):
    return {
        "scalar": False,
        "empty": False,
        "dense": {"w": True, "b": False},
        "seq": [True, (False, True)],
        "pair": Pair(first=False, second={"z": True}),
    }


def _prefix_mask(p):
    return {"scalar": True, "empty": True, "dense": False, "seq": True, "pair": False}


def _norm(L):
    return otree.norm if L.is_torch else optax.tree.norm


def _value(L, params, grads, k):
    del grads
    v = 0.5 * _norm(L)(params, squared=True) - 0.3 + 0.05 * (k % 4)
    return {"value": v}


def _jit(L, tx):
    """Runs optax's update under ``jax.jit`` (compiled once): eager JAX dispatch is slow, and
    ``lax.cond`` recompiles at every eager call (~1 s a step). optax_torch's runs eagerly."""
    if L.is_torch:
        return tx
    return optax.GradientTransformationExtraArgs(tx.init, jax.jit(tx.update))


def _nan_grads(params, k):
    """Gradients with NaNs in a few leaves on some steps (and never in others)."""
    g = grads_tree(params, k)
    if k % 3 == 0:
        w = g["dense"]["w"].clone()
        w[0, 1] = float("nan")
        g["dense"]["w"] = w
    if k % 4 == 1:
        g["scalar"] = torch.full_like(g["scalar"], float("nan"))
    return g


CASES: dict[str, Any] = {
    # conditionality
    "conditionally_transform_adam": lambda L: _jit(
        L, L.tx.conditionally_transform(L.tx.scale_by_adam(), lambda step: step % 3 == 0)
    ),
    "conditionally_transform_schedule": lambda L: _jit(
        L,
        L.tx.conditionally_transform(
            L.tx.sgd(inverse_time_schedule(L), momentum=0.9), lambda step: (step % 4) != 1
        ),
    ),
    "conditionally_mask_adam": lambda L: _jit(
        L,
        L.tx.conditionally_mask(
            L.tx.chain(L.tx.scale_by_adam(b1=0.8), L.tx.scale(-0.1)), lambda step: step >= 5
        ),
    ),
    "conditionally_mask_schedule": lambda L: _jit(
        L, L.tx.conditionally_mask(L.tx.sgd(inverse_time_schedule(L)), lambda step: step % 2 == 1)
    ),
    # freezing
    "freeze_mask": lambda L: L.tx.chain(L.tx.adam(0.1), L.tx.freeze(_mask(None))),
    "freeze_prefix": lambda L: L.tx.chain(L.tx.sgd(0.1), L.tx.freeze(_prefix_mask(None))),
    "freeze_all": lambda L: L.tx.freeze(True),
    "freeze_none": lambda L: L.tx.chain(L.tx.freeze(False), L.tx.sgd(0.1)),
    "selective_transform_mask": lambda L: L.tx.selective_transform(
        L.tx.adam(0.1), freeze_mask=_mask(None)
    ),
    "selective_transform_prefix": lambda L: L.tx.selective_transform(
        L.tx.chain(L.tx.clip_by_global_norm(0.5), L.tx.sgd(0.1, momentum=0.9)),
        freeze_mask=_prefix_mask(None),
    ),
    "selective_transform_all": lambda L: L.tx.selective_transform(L.tx.adam(0.1), freeze_mask=True),
    "selective_transform_none": lambda L: L.tx.selective_transform(
        L.tx.adam(0.1), freeze_mask=False
    ),
    # monitoring
    "snapshot_norm": lambda L: L.tx.chain(
        L.tx.sgd(0.1, momentum=0.9),
        L.tx.snapshot("norm_before_clip", _norm(L)),
        L.tx.clip_by_global_norm(0.05),
    ),
    "snapshot_tree": lambda L: L.tx.chain(
        L.tx.scale_by_adam(), L.tx.snapshot("adam", lambda u: u), L.tx.scale(-0.1)
    ),
    "monitor": lambda L: L.tx.chain(
        L.tx.sgd(0.1, momentum=0.9),
        L.tx.monitor(
            {
                "norm_before_clip": _norm(L),
                "is_clipped_ema": L.tx.measure_with_ema(
                    lambda x: _norm(L)(x) > 0.4, decay=0.9, accumulator_dtype=L.float64
                ),
                "norm_ema": L.tx.measure_with_ema(_norm(L), decay=0.7, debias=False),
                "ema_of_tree": L.tx.measure_with_ema(lambda x: x, decay=0.5),
            }
        ),
        L.tx.clip_by_global_norm(0.4),
    ),
}

WITH_NONE = [
    "conditionally_transform_adam",
    "conditionally_mask_adam",
    "freeze_mask",
    "selective_transform_mask",
    "snapshot_tree",
    "monitor",
]


def _cases(cases: dict[str, Any], f32: set[str]) -> list[Any]:
    """Every case in float64; those named in ``f32`` (one at least per public name) in float32 too,
    which keeps the file fast."""
    out = [pytest.param(n, torch.float64, id=f"{n}-f64") for n in sorted(cases)]
    return out + [pytest.param(n, torch.float32, id=f"{n}-f32") for n in sorted(f32)]


F32_CASES = {
    "conditionally_transform_adam",
    "conditionally_mask_schedule",
    "freeze_mask",
    "selective_transform_prefix",
    "snapshot_norm",
    "monitor",
}


@pytest.mark.parametrize(("name", "dtype"), _cases(CASES, F32_CASES))
def test_matches_optax(name, dtype):
    run_both(CASES[name], dtype=dtype)


@pytest.mark.parametrize("name", WITH_NONE)
def test_matches_optax_with_none(name):
    run_both(CASES[name], with_none=True)


# ----------------------------------------------------------------------------------------------
# Constraints
# ----------------------------------------------------------------------------------------------


def _nonneg_params(dtype=torch.float64, with_none=False):
    return otree.map(torch.abs, params_tree(with_none, dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_keep_params_nonnegative_matches_optax(dtype):
    def build(L):
        return L.tx.chain(L.tx.sgd(0.5), L.tx.keep_params_nonnegative())

    final = run_both(build, params=_nonneg_params(dtype), dtype=dtype)
    assert all(bool((x >= 0).all()) for x in otree.leaves(final))
    assert any(bool((x == 0).any()) for x in otree.leaves(final))  # the constraint was active


def test_keep_params_nonnegative_with_none_matches_optax():
    def build(L):
        return L.tx.chain(L.tx.sgd(0.5), L.tx.keep_params_nonnegative())

    run_both(build, params=_nonneg_params(with_none=True))


def test_keep_params_nonnegative_moves_negative_params_to_zero():
    p = {"w": torch.tensor([-1.0, 2.0, 0.5])}
    tx = otx.keep_params_nonnegative()
    u, _ = tx.update({"w": torch.tensor([0.1, -3.0, 0.2])}, tx.init(p), p)
    assert torch.equal(otx.apply_updates(p, u)["w"], torch.tensor([0.0, 0.0, 0.7]))


def test_keep_params_nonnegative_needs_params():
    tx = otx.keep_params_nonnegative()
    p = {"w": torch.ones(2)}
    with pytest.raises(ValueError, match="parameters"):
        tx.update(p, tx.init(p))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_zero_nans_matches_optax(dtype):
    def build(L):
        return L.tx.chain(L.tx.zero_nans(), L.tx.scale_by_adam(), L.tx.scale(-0.1))

    run_both(build, dtype=dtype, grads_fn=_nan_grads)


def test_zero_nans_with_none_matches_optax():
    run_both(lambda L: L.tx.zero_nans(), with_none=True, grads_fn=_nan_grads)


def test_zero_nans_flags_and_keeps_infinities():
    g = {"a": torch.tensor([1.0, float("nan"), float("inf")]), "b": torch.tensor(2.0)}
    tx = otx.zero_nans()
    state = tx.init(g)
    assert_trees_equal(state.found_nan, {"a": torch.tensor(False), "b": torch.tensor(False)})
    u, state = tx.update(g, state)
    assert_trees_equal(u, {"a": torch.tensor([1.0, 0.0, float("inf")]), "b": torch.tensor(2.0)})
    assert_trees_equal(state.found_nan, {"a": torch.tensor(True), "b": torch.tensor(False)})
    assert otx.NonNegativeParamsState is otx.EmptyState


# ----------------------------------------------------------------------------------------------
# Conditionality
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wrapper", "dtype"),
    [("conditionally_transform", torch.float64), ("conditionally_mask", torch.float32)],
)
def test_forward_extra_args_matches_optax(wrapper, dtype):
    def build(L):
        return _jit(
            L,
            getattr(L.tx, wrapper)(
                L.tx.chain(L.tx.scale_by_polyak(max_learning_rate=2.0), L.tx.scale(-1.0)),
                lambda step, value: value > 0.1,
                forward_extra_args=True,
            ),
        )

    run_both(build, dtype=dtype, extra_args_fn=_value)


def test_conditionally_mask_gives_exact_zeros_and_keeps_inner_state():
    p = {"w": torch.ones(3, dtype=torch.float64)}
    g = {"w": torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)}
    tx = otx.conditionally_mask(otx.adam(0.1), lambda step: step % 2 == 1)
    state = tx.init(p)
    u, new = tx.update(g, state, p)  # step 0: masked
    assert torch.equal(u["w"], torch.zeros(3, dtype=torch.float64))
    assert_trees_equal(new.inner_state, state.inner_state)
    assert int(new.step) == 1
    u, new2 = tx.update(g, new, p)  # step 1: applied, as adam's first step
    ref_u, ref_state = otx.adam(0.1).update(g, otx.adam(0.1).init(p), p)
    assert_trees_equal(u, ref_u)
    assert_trees_equal(new2.inner_state, ref_state)


def test_conditionally_transform_passes_updates_through():
    p = {"w": torch.ones(3)}
    g = {"w": torch.tensor([0.5, -1.0, 2.0])}
    tx = otx.conditionally_transform(otx.scale(-3.0), lambda step: step == 1)
    state = tx.init(p)
    u, state = tx.update(g, state, p)
    assert torch.equal(u["w"], g["w"])
    u, state = tx.update(g, state, p)
    assert torch.equal(u["w"], -3.0 * g["w"])
    assert isinstance(state, otx.ConditionallyTransformState)
    assert otx.ConditionallyTransformState._fields == optax.ConditionallyTransformState._fields
    assert otx.ConditionallyMaskState._fields == optax.ConditionallyMaskState._fields


def test_conditional_state_round_trips_through_torch_load():
    p = {"w": torch.ones(3)}
    for wrapper in (otx.conditionally_mask, otx.conditionally_transform):
        tx = wrapper(otx.adam(0.1), lambda step: step > 0)
        _, state = tx.update({"w": torch.ones(3)}, tx.init(p), p)
        buf = io.BytesIO()
        torch.save(state, buf)
        buf.seek(0)
        assert_trees_equal(torch.load(buf, weights_only=True), state)


# ----------------------------------------------------------------------------------------------
# Monitoring
# ----------------------------------------------------------------------------------------------


def test_snapshot_reads_with_tree_get():
    p = torch.tensor([1.0, 2.0, 3.0])
    tx = otx.chain(
        otx.sgd(0.1, momentum=0.9),
        otx.snapshot("norm_before_clip", otree.norm),
        otx.clip_by_global_norm(0.05),
    )
    state = tx.init(p)
    norms = []
    for _ in range(2):
        g = 2 * p  # grad of |x|^2
        u, state = tx.update(g, state)
        p = otx.apply_updates(p, u)
        norms.append(f"{float(otree.get(state, 'norm_before_clip')):.2e}")
    assert norms == ["7.48e-01", "1.41e+00"]  # optax's docstring example


def test_monitor_docstring_example():
    p = torch.tensor([1.0, 2.0, 3.0])
    tx = otx.chain(
        otx.sgd(0.1, momentum=0.9),
        otx.monitor(
            {
                "norm_before_clip": otree.norm,
                "is_clipped_ema": otx.measure_with_ema(lambda x: otree.norm(x) > 1.0, decay=0.9),
            }
        ),
        otx.clip_by_global_norm(1.0),
    )
    state = tx.init(p)
    out = []
    for _ in range(2):
        u, state = tx.update(2 * p, state)
        p = otx.apply_updates(p, u)
        norm, ema = otree.get(state, "norm_before_clip"), otree.get(state, "is_clipped_ema")
        out.append(f"{float(norm):.2e}, {float(ema):.2e}")
    assert out == ["7.48e-01, 0.00e+00", "1.27e+00, 5.26e-01"]  # optax's docstring example


def test_monitor_state_round_trips_through_torch_load():
    p = {"w": torch.ones(3)}
    tx = otx.monitor({"n": otree.norm, "e": otx.measure_with_ema(otree.norm, decay=0.9)})
    _, state = tx.update({"w": torch.ones(3)}, tx.init(p), p)
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    assert_trees_equal(torch.load(buf, weights_only=True), state)


@pytest.mark.parametrize("decay", [-0.1, 1.5, float("nan")])
def test_measure_with_ema_validates_decay(decay):
    with pytest.raises(ValueError, match="decay"):
        otx.measure_with_ema(otree.norm, decay=decay)


# ----------------------------------------------------------------------------------------------
# Compile
# ----------------------------------------------------------------------------------------------


COMPILE_CASES: dict[str, Any] = {
    "keep_params_nonnegative": lambda: otx.chain(otx.sgd(0.5), otx.keep_params_nonnegative()),
    "zero_nans": lambda: otx.chain(otx.zero_nans(), otx.scale(-0.1)),
    "conditionally_transform": lambda: otx.conditionally_transform(
        otx.sgd(0.1, momentum=0.9), lambda step: step % 2 == 0
    ),
    "conditionally_mask": lambda: otx.conditionally_mask(
        otx.sgd(0.1, momentum=0.9), lambda step: step > 0
    ),
    "freeze": lambda: otx.chain(otx.sgd(0.1), otx.freeze({"w": True, "b": False})),
    "selective_transform": lambda: otx.selective_transform(
        otx.sgd(0.1, momentum=0.9), freeze_mask={"w": False, "b": True}
    ),
    "monitor": lambda: otx.chain(
        otx.sgd(0.1),
        otx.monitor({"n": otree.norm, "e": otx.measure_with_ema(otree.norm, decay=0.9)}),
        otx.snapshot("s", otree.norm),
    ),
}


@pytest.mark.parametrize("name", sorted(COMPILE_CASES))
def test_compiles(name):
    tx = COMPILE_CASES[name]()
    p = {"w": torch.ones(2, 3), "b": torch.tensor(0.5)}
    g = {"w": torch.full((2, 3), 0.1), "b": torch.tensor(-0.7)}
    step = torch.compile(tx.update, backend="aot_eager", fullgraph=True)
    s_e = s_c = tx.init(p)
    for _ in range(3):
        u_e, s_e = tx.update(g, s_e, p)
        u_c, s_c = step(g, s_c, p)
        assert_trees_close(u_c, u_e, rtol=1e-6)
        assert_trees_close(s_c, s_e, rtol=1e-6)


@pytest.mark.parametrize(
    "build",
    [
        lambda: otx.chain(otx.sgd(0.1), otx.keep_params_nonnegative()),
        otx.zero_nans,
        lambda: otx.conditionally_transform(otx.adam(0.1), lambda s: s % 2 == 1),
        lambda: otx.conditionally_mask(otx.adam(0.1), lambda s: s % 2 == 1),
        lambda: otx.freeze({"a": False, "b": True}),
        lambda: otx.selective_transform(otx.adam(0.1), freeze_mask={"a": True, "b": False}),
        lambda: otx.monitor({"n": otree.norm, "e": otx.measure_with_ema(otree.norm, 0.9)}),
        lambda: otx.snapshot("x", lambda u: u),
    ],
    ids=[
        "keep_params_nonnegative",
        "zero_nans",
        "conditionally_transform",
        "conditionally_mask",
        "freeze",
        "selective_transform",
        "monitor",
        "snapshot",
    ],
)
def test_param_without_gradient_passes_through(build):
    """A ``None`` gradient (a parameter without gradient this step) gets a ``None`` update."""
    tx = otx.chain(build())
    p = {"a": torch.ones(2), "b": torch.ones(3)}
    state = tx.init(p)
    for _ in range(2):
        u, state = tx.update({"a": torch.full((2,), 0.3), "b": None}, state, p)
        assert u["b"] is None and u["a"] is not None
