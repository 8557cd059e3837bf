"""inject_hyperparams: hyperparameters in state, schedules, overrides, purity, serialization."""

from __future__ import annotations

import importlib.util
import io
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch

from optax_torch import tree
from optax_torch.base import GradientTransformation, GradientTransformationExtraArgs
from optax_torch.schedules import (
    InjectStatefulHyperparamsState,
    WrappedScheduleState,
    inject_hyperparams,
    linear_schedule,
    piecewise_constant_schedule,
)

INT32_MAX = 2**31 - 1


class TraceState(NamedTuple):
    trace: Any


def tiny_sgd(learning_rate, momentum=0.0, nesterov=False):
    """SGD with (Nesterov) momentum, written against the base API only."""

    def init(params):
        return TraceState(tree.zeros_like(params))

    def update(updates, state, params=None):
        del params
        trace = tree.add_scale(updates, momentum, state.trace)
        direction = tree.add_scale(updates, momentum, trace) if nesterov else trace
        return tree.scale(-learning_rate, direction), TraceState(trace)

    return GradientTransformation(init, update)


def _params():
    return {"w": torch.tensor([1.0, -2.0, 3.0]), "b": torch.tensor(0.5)}


def _grads(k=0):
    return {"w": torch.tensor([0.1, 0.2, -0.3]) * (k + 1), "b": torch.tensor(-1.0)}


def _clone(t):
    return tree.map(lambda x: x.clone(), t)


def _assert_tree_equal(a, b):
    la, sa = tree.flatten(a)
    lb, sb = tree.flatten(b)
    assert sa == sb
    for x, y in zip(la, lb):
        if isinstance(x, torch.Tensor):
            assert isinstance(y, torch.Tensor) and x.dtype == y.dtype and x.shape == y.shape
            torch.testing.assert_close(x, y, rtol=0, atol=0)
        else:
            assert x == y


def test_hyperparams_in_state_as_float64_tensors():
    tx = inject_hyperparams(tiny_sgd)(learning_rate=0.1, momentum=0.9)
    assert isinstance(tx, GradientTransformationExtraArgs)
    state = tx.init(_params())
    assert isinstance(state, InjectStatefulHyperparamsState)
    assert set(state.hyperparams) == {"learning_rate", "momentum"}  # nesterov (bool) is static
    for name, value in [("learning_rate", 0.1), ("momentum", 0.9)]:
        h = state.hyperparams[name]
        assert h.dtype == torch.float64 and h.shape == () and h.device == torch.device("cpu")
        assert h.item() == value  # an exact copy of the Python float
    assert state.count.dtype == torch.int32 and state.count.item() == 0
    assert tree.get(state, "learning_rate").item() == 0.1


def test_matches_inner_transform():
    params = _params()
    ref = tiny_sgd(0.1, momentum=0.9, nesterov=True)
    tx = inject_hyperparams(tiny_sgd)(learning_rate=0.1, momentum=0.9, nesterov=True)
    ref_state, state = ref.init(params), tx.init(params)
    for k in range(4):
        ref_u, ref_state = ref.update(_grads(k), ref_state, params)
        u, state = tx.update(_grads(k), state, params)
        torch.testing.assert_close(u, ref_u, rtol=1e-7, atol=0)
        assert u["w"].dtype == torch.float32  # float64 hyperparameters don't promote leaves
    assert state.count.item() == 4


def test_schedules_evaluated_per_count():
    sched = linear_schedule(1.0, 0.0, transition_steps=4)
    tx = inject_hyperparams(tiny_sgd)(learning_rate=sched)
    params = _params()
    state = tx.init(params)
    assert state.hyperparams["learning_rate"].item() == sched(0).item()
    for k in range(6):
        u, state = tx.update(_grads(k), state, params)
        lr = sched(k).item()
        assert state.hyperparams["learning_rate"].item() == lr
        assert state.hyperparams["learning_rate"].dtype == torch.float64
        torch.testing.assert_close(u["w"], -lr * _grads(k)["w"])
        assert state.count.item() == k + 1


def test_changing_hyperparams_changes_next_update():
    tx = inject_hyperparams(tiny_sgd)(learning_rate=0.1)
    params, g = _params(), _grads()
    state = tx.init(params)
    state.hyperparams["learning_rate"] = torch.tensor(0.5, dtype=torch.float64)
    u, state = tx.update(g, state, params)
    torch.testing.assert_close(u["w"], -0.5 * g["w"])
    # A Python float set by hand is used and stored back as a float64 tensor.
    state.hyperparams["learning_rate"] = 0.25
    u, state = tx.update(g, state, params)
    torch.testing.assert_close(u["w"], -0.25 * g["w"])
    assert state.hyperparams["learning_rate"].dtype == torch.float64
    # tree.set gives a modified copy.
    state = tree.set(state, learning_rate=torch.tensor(2.0, dtype=torch.float64))
    u, state = tx.update(g, state, params)
    torch.testing.assert_close(u["w"], -2.0 * g["w"])


def test_overriding_scheduled_hyperparam_has_no_effect():
    sched = piecewise_constant_schedule(0.1, {2: 0.1})
    tx = inject_hyperparams(tiny_sgd)(learning_rate=sched)
    params, g = _params(), _grads()
    state = tx.init(params)
    state.hyperparams["learning_rate"] = torch.tensor(100.0, dtype=torch.float64)
    u, state = tx.update(g, state, params)
    torch.testing.assert_close(u["w"], -0.1 * g["w"])


def test_positional_and_keyword_arguments():
    params = _params()
    by_pos = inject_hyperparams(tiny_sgd)(0.1, 0.9)
    by_kw = inject_hyperparams(tiny_sgd)(momentum=0.9, learning_rate=0.1)
    s1, s2 = by_pos.init(params), by_kw.init(params)
    _assert_tree_equal(s1, s2)
    _assert_tree_equal(by_pos.update(_grads(), s1, params), by_kw.update(_grads(), s2, params))


def test_positional_only_and_var_keyword_factories():
    def pos_only(learning_rate, /, momentum=0.0):
        return tiny_sgd(learning_rate, momentum)

    def var_kw(learning_rate, **kwargs):
        return tiny_sgd(learning_rate, **kwargs)

    params, g = _params(), _grads()
    ref_u, _ = tiny_sgd(0.1, 0.5).update(g, tiny_sgd(0.1, 0.5).init(params), params)
    for factory in (pos_only, var_kw):
        tx = inject_hyperparams(factory)(0.1, momentum=0.5)
        state = tx.init(params)
        assert set(state.hyperparams) == {"learning_rate", "momentum"}
        u, _ = tx.update(g, state, params)
        torch.testing.assert_close(u, ref_u)

    def var_pos(*args):
        return tiny_sgd(*args)

    with pytest.raises(TypeError, match="not supported"):
        inject_hyperparams(var_pos)(0.1)


def test_unknown_and_missing_arguments_raise():
    with pytest.raises(TypeError, match=r"tiny_sgd.*unexpected keyword.*lr.*Accepted arguments"):
        inject_hyperparams(tiny_sgd)(0.1, lr=0.1)
    with pytest.raises(TypeError, match="too many positional"):
        inject_hyperparams(tiny_sgd)(0.1, 0.9, False, 3)
    with pytest.raises(TypeError, match="missing a required argument"):
        inject_hyperparams(tiny_sgd)()
    with pytest.raises(ValueError, match="static_args"):
        inject_hyperparams(tiny_sgd, static_args=("lr",))


def test_static_args():
    calls = []

    def factory(learning_rate, transform=None, repeats=1):
        calls.append((transform, repeats))

        def update(updates, state, params=None):
            for _ in range(repeats):  # needs a Python int
                updates = tree.map(transform, updates)
            return tree.scale(-learning_rate, updates), state

        return GradientTransformation(lambda p: (), update)

    def double(x):
        return 2 * x

    tx = inject_hyperparams(factory, static_args=("transform", "repeats"))(
        0.1, transform=double, repeats=2
    )
    params, g = _params(), _grads()
    state = tx.init(params)
    assert set(state.hyperparams) == {"learning_rate"}
    u, _ = tx.update(g, state, params)
    torch.testing.assert_close(u["w"], -0.1 * 4 * g["w"])
    assert all(t is double and r == 2 for t, r in calls)

    # A single name may be given as a string; without it a callable is taken for a schedule.
    tx = inject_hyperparams(factory, static_args="transform")(0.1, transform=double)
    assert set(tx.init(params).hyperparams) == {"learning_rate", "repeats"}


def test_hyperparam_dtype_and_tensor_values():
    lr = torch.tensor(0.1, dtype=torch.float16)
    sched = linear_schedule(0.9, 0.5, 10)
    tx = inject_hyperparams(tiny_sgd, hyperparam_dtype=torch.float32)(
        learning_rate=lr, momentum=sched
    )
    state = tx.init(_params())
    assert state.hyperparams["learning_rate"] is lr  # caller's tensors are kept as given
    assert state.hyperparams["momentum"].dtype == torch.float32
    _, state = tx.update(_grads(), state, _params())
    assert state.hyperparams["learning_rate"].dtype == torch.float16
    assert state.hyperparams["momentum"].dtype == torch.float32

    tx = inject_hyperparams(tiny_sgd, hyperparam_dtype=torch.float32)(learning_rate=0.1)
    assert tx.init(_params()).hyperparams["learning_rate"].dtype == torch.float32
    # Integers become integer tensors (as in optax, where ints stay ints).
    tx = inject_hyperparams(tiny_sgd)(learning_rate=1)
    assert tx.init(_params()).hyperparams["learning_rate"].dtype == torch.int64
    # numpy values are numeric hyperparameters too.
    tx = inject_hyperparams(tiny_sgd)(learning_rate=np.float32(0.5), momentum=np.array(0.25))
    h = tx.init(_params()).hyperparams
    assert h["learning_rate"].dtype == torch.float64 and h["learning_rate"].item() == 0.5
    assert h["momentum"].item() == 0.25


def test_extra_args_are_forwarded():
    def scale_by_value(factor):
        def update(updates, state, params=None, *, value=1.0):
            return tree.scale(factor * value, updates), state

        return GradientTransformationExtraArgs(lambda p: (), update)

    g = _grads()
    tx = inject_hyperparams(scale_by_value)(factor=2.0)
    u, _ = tx.update(g, tx.init(_params()), value=torch.tensor(3.0))
    torch.testing.assert_close(u["w"], 6.0 * g["w"])
    # Transforms without extra-args support ignore them.
    tx = inject_hyperparams(tiny_sgd)(learning_rate=1.0)
    u, _ = tx.update(g, tx.init(_params()), value=torch.tensor(3.0))
    torch.testing.assert_close(u["w"], -g["w"])


def test_purity():
    tx = inject_hyperparams(tiny_sgd)(learning_rate=linear_schedule(0.1, 0.01, 5), momentum=0.9)
    params, g = _params(), _grads()
    params_copy, g_copy = _clone(params), _clone(g)
    state = tx.init(params)
    _, state = tx.update(g, state, params)
    state_copy = _clone(state)
    hyperparams_dict = state.hyperparams
    u1, new_state = tx.update(g, state, params)
    u2, _ = tx.update(g, state, params)
    _assert_tree_equal(params, params_copy)
    _assert_tree_equal(g, g_copy)
    _assert_tree_equal(state, state_copy)
    assert state.hyperparams is hyperparams_dict and new_state.hyperparams is not hyperparams_dict
    _assert_tree_equal(u1, u2)  # same inputs, same outputs


def test_count_saturates():
    sched = linear_schedule(1.0, 0.5, 10)
    tx = inject_hyperparams(tiny_sgd)(learning_rate=sched)
    state = tx.init(_params())
    big = torch.tensor(INT32_MAX, dtype=torch.int32)
    state = state._replace(
        count=big, hyperparams_states={"learning_rate": WrappedScheduleState(count=big)}
    )
    _, state = tx.update(_grads(), state, _params())
    assert state.count.item() == INT32_MAX and state.count.dtype == torch.int32
    lr_count = state.hyperparams_states["learning_rate"].count
    assert lr_count.item() == INT32_MAX and lr_count.dtype == torch.int32
    assert state.hyperparams["learning_rate"].item() == 0.5


def test_state_round_trips_through_weights_only_load():
    tx = inject_hyperparams(tiny_sgd)(learning_rate=linear_schedule(0.1, 0.01, 5), momentum=0.9)
    params = _params()
    state = tx.init(params)
    for k in range(2):
        _, state = tx.update(_grads(k), state, params)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    with torch.serialization.safe_globals([TraceState]):  # the test's own inner state type
        loaded = torch.load(buffer, weights_only=True)
    assert isinstance(loaded, InjectStatefulHyperparamsState)
    _assert_tree_equal(loaded, state)
    assert loaded.hyperparams["momentum"].dtype == torch.float64
    _assert_tree_equal(tx.update(_grads(), loaded, params), tx.update(_grads(), state, params))


def test_vmap_over_hyperparameter():
    tx = inject_hyperparams(tiny_sgd)(learning_rate=0.1, momentum=0.9)
    params, g = _params(), _grads()
    state = tx.init(params)

    def step(lr):
        u, _ = tx.update(g, state._replace(hyperparams={**state.hyperparams, "learning_rate": lr}))
        return u

    lrs = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    out = torch.func.vmap(step)(lrs)
    for i, lr in enumerate(lrs.tolist()):
        torch.testing.assert_close(out["w"][i], -lr * g["w"])
        assert out["w"].dtype == torch.float32


def test_grad_through_hyperparameter():
    """Meta-gradients: differentiate a step with respect to a hyperparameter tensor."""
    params, g = _params(), _grads()

    def loss(lr):
        tx = inject_hyperparams(tiny_sgd)(learning_rate=lr, momentum=0.9)
        u, _ = tx.update(g, tx.init(params), params)
        return sum((p + du).sum() for p, du in zip(params.values(), u.values()))

    grad = torch.func.grad(loss)(torch.tensor(0.1, dtype=torch.float64))
    expected = -sum(x.sum() for x in g.values()).double()
    torch.testing.assert_close(grad, expected)


def test_update_under_compile():
    tx = inject_hyperparams(tiny_sgd)(learning_rate=linear_schedule(0.1, 0.01, 3), momentum=0.9)
    params = {"w": torch.tensor([1.0, -2.0, 3.0]), "m": torch.ones(2, 2)}

    def grads(k):
        return {"w": torch.tensor([0.1, 0.2, -0.3]) * (k + 1), "m": torch.full((2, 2), -1.0)}

    state_e = state_c = tx.init(params)
    step = torch.compile(tx.update, fullgraph=True)
    for k in range(4):
        u_e, state_e = tx.update(grads(k), state_e, params)
        u_c, state_c = step(grads(k), state_c, params)
        torch.testing.assert_close(u_c, u_e, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(state_c.hyperparams, state_e.hyperparams, rtol=0, atol=0)
        assert state_c.count.item() == k + 1


def test_zero_dim_leaves_keep_dtype_under_vmap():
    tx = inject_hyperparams(tiny_sgd)(learning_rate=0.1)
    params, g = _params(), _grads()  # "b" is a 0-d float32 leaf
    state = tx.init(params)

    def step(lr):
        u, _ = tx.update(g, state._replace(hyperparams={"learning_rate": lr}))
        return u

    out = torch.func.vmap(step)(torch.tensor([0.1, 0.2], dtype=torch.float64))
    assert out["b"].dtype == torch.float32


# ---------------------------------------------------------------------------------------------
# Against optax
# ---------------------------------------------------------------------------------------------

_HAS_ALIAS = importlib.util.find_spec("optax_torch.alias") is not None


@pytest.fixture
def _x64():
    import jax

    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


@pytest.mark.skipif(not _HAS_ALIAS, reason="optax_torch.alias is not available yet")
@pytest.mark.parametrize("scheduled", [False, True], ids=["constant", "scheduled"])
def test_inject_adam_matches_optax(_x64, scheduled):
    import jax.numpy as jnp
    import optax

    from optax_torch import alias

    if scheduled:
        lr_ours = linear_schedule(0.1, 0.01, 6, transition_begin=2)
        # optax evaluates schedules at its int32 count, which jax divides in float32 even with
        # x64 enabled; evaluate the reference at an int64 count to get float64 values.
        sched_ref = optax.linear_schedule(0.1, 0.01, 6, transition_begin=2)

        def lr_ref(count):
            return sched_ref(count.astype(jnp.int64))

    else:
        lr_ours = lr_ref = 0.1
    ours = inject_hyperparams(alias.adam)(learning_rate=lr_ours, b1=0.8)
    ref = optax.inject_hyperparams(optax.adam)(learning_rate=lr_ref, b1=0.8)

    rng = np.random.default_rng(0)
    p0 = {"w": rng.standard_normal((4, 3)), "b": rng.standard_normal(3)}
    p_t = {k: torch.tensor(v) for k, v in p0.items()}
    p_j = {k: jnp.asarray(v) for k, v in p0.items()}
    s_t, s_j = ours.init(p_t), ref.init(p_j)
    assert set(s_t.hyperparams) == set(s_j.hyperparams)
    for _ in range(10):
        g = {k: rng.standard_normal(v.shape) for k, v in p0.items()}
        u_t, s_t = ours.update({k: torch.tensor(v) for k, v in g.items()}, s_t, p_t)
        u_j, s_j = ref.update({k: jnp.asarray(v) for k, v in g.items()}, s_j, p_j)
        p_t = {k: p_t[k] + u_t[k] for k in p_t}
        p_j = {k: p_j[k] + u_j[k] for k in p_j}
        for k in p0:
            np.testing.assert_allclose(p_t[k].numpy(), np.asarray(p_j[k]), rtol=1e-12, atol=1e-14)
        for name, value in s_j.hyperparams.items():
            assert s_t.hyperparams[name].dtype == torch.float64
            np.testing.assert_allclose(s_t.hyperparams[name].item(), float(value), rtol=1e-15)
    assert int(s_t.count) == int(s_j.count) == 10


# --------------------------------------------------------------------------------------------
# optax 0.2.8's stateful form, and which callables are schedules
# --------------------------------------------------------------------------------------------


class PlateauState(NamedTuple):
    best: torch.Tensor
    scale: torch.Tensor


class HalveOnPlateau:
    """A stateful schedule: halves the value whenever the loss ``value`` does not improve."""

    def init(self):
        return PlateauState(torch.tensor(float("inf"), dtype=torch.float64), torch.tensor(1.0))

    def update(self, state, value=None, **extra_args):
        value = torch.as_tensor(value, dtype=torch.float64)
        improved = value < state.best
        return PlateauState(
            torch.minimum(value, state.best),
            torch.where(improved, state.scale, state.scale * 0.5),
        )

    def __call__(self, state, **extra_args):
        return 0.1 * state.scale


def test_state_has_optax_fields_and_schedule_states():
    tx = inject_hyperparams(tiny_sgd)(learning_rate=linear_schedule(1.0, 0.5, 10), momentum=0.9)
    state = tx.init(_params())
    assert InjectStatefulHyperparamsState._fields == (
        "count",
        "hyperparams",
        "hyperparams_states",
        "inner_state",
    )
    assert set(state.hyperparams_states) == {"learning_rate"}
    assert state.hyperparams_states["learning_rate"].count.item() == 0
    _, state = tx.update(_grads(), state, _params())
    assert state.hyperparams_states["learning_rate"].count.item() == 1


def test_stateful_schedule_receives_extra_args():
    tx = inject_hyperparams(tiny_sgd)(learning_rate=HalveOnPlateau())
    params, state = _params(), None
    state = tx.init(params)
    lrs = []
    for loss in [3.0, 2.0, 2.5, 2.6, 1.0]:
        _, state = tx.update(_grads(), state, params, value=loss)
        lrs.append(state.hyperparams["learning_rate"].item())
    # the value used at step k is computed from the schedule state before step k's update
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.025])


def test_mask_functions_are_not_schedules():
    """optax would call a mask function with the step count; here it reaches the factory."""
    seen = []

    def factory(learning_rate, mask=None, weight_fn=None):
        seen.append((mask, weight_fn))
        return tiny_sgd(learning_rate)

    mask = lambda p: {"w": True, "b": False}  # noqa: E731
    weight_fn = lambda p: p  # noqa: E731
    tx = inject_hyperparams(factory)(learning_rate=lambda c: 0.1, mask=mask, weight_fn=weight_fn)
    state = tx.init(_params())
    assert set(state.hyperparams) == {"learning_rate"}
    assert seen[-1] == (mask, weight_fn)


def test_schedule_args_marks_schedules_explicitly():
    def factory(learning_rate, transform=None):
        del transform
        return tiny_sgd(learning_rate)

    double = lambda x: 2 * x  # noqa: E731
    tx = inject_hyperparams(factory, schedule_args="learning_rate")(
        learning_rate=lambda c: 0.25, transform=double
    )
    state = tx.init(_params())
    assert set(state.hyperparams) == {"learning_rate"}
    assert state.hyperparams["learning_rate"].item() == 0.25
    with pytest.raises(ValueError, match="schedule_args"):
        inject_hyperparams(factory, schedule_args="nope")
    with pytest.raises(ValueError, match="both"):
        inject_hyperparams(factory, static_args="transform", schedule_args="transform")
    with pytest.raises(TypeError, match="not a schedule"):
        inject_hyperparams(factory, schedule_args=("learning_rate", "transform"))(
            learning_rate=0.1, transform="x"
        )


def test_bfloat16_params_keep_exact_hyperparameters():
    """optax stores b2=0.999 in the params' dtype (1.0 in bfloat16); here it stays float64."""
    from optax_torch import scale_by_adam

    tx = inject_hyperparams(scale_by_adam)(b2=0.999)
    state = tx.init({"w": torch.ones(3, dtype=torch.bfloat16)})
    assert state.hyperparams["b2"].dtype == torch.float64
    assert state.hyperparams["b2"].item() == 0.999


def test_inject_stateful_hyperparams_is_a_deprecated_alias():
    from optax_torch.schedules import inject_stateful_hyperparams

    with pytest.warns(DeprecationWarning):
        tx = inject_stateful_hyperparams(tiny_sgd)(learning_rate=0.1)
    assert isinstance(tx.init(_params()), InjectStatefulHyperparamsState)
