"""Step-size rules against optax: DoG, Polyak, optimistic gradient, and their optimizers."""

from __future__ import annotations

import warnings
from typing import Any

import jax.numpy as jnp
import optax
import pytest
import torch
from conftest import assert_trees_close, to_jax
from optax_ref import inverse_time_schedule, params_tree, run_both

import optax_torch as otx
from optax_torch import tree as otree
from optax_torch.alias import step_size as A


def _value(L, params, grads, k):
    """The loss value for Polyak: 0.5 |p|^2 - 0.3 (negative near the optimum, for sps+)."""
    del grads, k
    if L.is_torch:
        return {"value": 0.5 * otree.norm(params, squared=True) - 0.3}
    return {"value": 0.5 * optax.tree.norm(params, squared=True) - 0.3}


def _optimistic_adam(L, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return L.tx.optimistic_adam(*args, **kwargs)


CASES: dict[str, Any] = {
    "scale_by_optimistic_gradient": lambda L: L.tx.scale_by_optimistic_gradient(),
    "scale_by_optimistic_gradient_ab": lambda L: L.tx.scale_by_optimistic_gradient(0.3, 0.7),
    "optimistic_gradient_descent": lambda L: L.tx.optimistic_gradient_descent(0.05),
    "optimistic_gradient_descent_ab": lambda L: L.tx.optimistic_gradient_descent(
        0.05, alpha=0.5, beta=2.0
    ),
    "optimistic_gradient_descent_schedule": lambda L: L.tx.optimistic_gradient_descent(
        inverse_time_schedule(L)
    ),
    "optimistic_adam": lambda L: _optimistic_adam(L, 1e-2, 1.0),
    "optimistic_adam_default_optimism": lambda L: _optimistic_adam(
        L, 3e-2, b1=0.8, b2=0.99, nesterov=False
    ),
    "optimistic_adam_v2": lambda L: L.tx.optimistic_adam_v2(0.1, alpha=1e-2, beta=1.0),
    "optimistic_adam_v2_schedule": lambda L: L.tx.optimistic_adam_v2(
        inverse_time_schedule(L), alpha=0.5, beta=0.2, eps_root=1e-8, nesterov=False
    ),
}

POLYAK_CASES: dict[str, Any] = {
    "scale_by_polyak": lambda L: L.tx.scale_by_polyak(),
    "scale_by_polyak_sps_plus": lambda L: L.tx.scale_by_polyak(
        f_min=0.1, max_learning_rate=0.5, eps=1e-3, variant="sps+"
    ),
    "polyak_sgd": lambda L: L.tx.polyak_sgd(),
    "polyak_sgd_scaled": lambda L: L.tx.polyak_sgd(max_learning_rate=0.4, scaling=0.5),
    "polyak_sgd_schedule_sps_plus": lambda L: L.tx.polyak_sgd(
        scaling=inverse_time_schedule(L), f_min=-0.1, eps=1e-4, variant="sps+"
    ),
}


def _dog_params(dtype=torch.float64, with_none=False):
    """The standard tree minus its 0-d leaf (optax gives 0-d leaves a shape-(1,) update)."""
    p = params_tree(with_none, dtype)
    del p["scalar"]
    return p


DOG_CASES: dict[str, Any] = {
    "scale_by_dog": lambda L: L.tx.scale_by_distance_over_gradients(),
    "scale_by_dog_f64_descent": lambda L: L.tx.scale_by_distance_over_gradients(
        reps_rel=1e-2, eps=1e-6, param_dtype=L.float64, global_scale=-1.0
    ),
}


def _cases(cases: dict[str, Any], f32: set[str]) -> list[Any]:
    """Every case in float64; those named in ``f32`` (one at least per public name) in float32 too,
    which keeps the file fast."""
    out = [pytest.param(n, torch.float64, id=f"{n}-f64") for n in sorted(cases)]
    return out + [pytest.param(n, torch.float32, id=f"{n}-f32") for n in sorted(f32)]


@pytest.mark.parametrize(
    ("name", "dtype"),
    _cases(
        CASES,
        {
            "scale_by_optimistic_gradient_ab",
            "optimistic_gradient_descent_schedule",
            "optimistic_adam",
            "optimistic_adam_v2_schedule",
        },
    ),
)
def test_matches_optax(name, dtype):
    run_both(CASES[name], dtype=dtype)


@pytest.mark.parametrize("name", ["scale_by_optimistic_gradient_ab", "optimistic_adam_v2"])
def test_matches_optax_with_none(name):
    run_both(CASES[name], with_none=True)


@pytest.mark.parametrize(
    ("name", "dtype"), _cases(POLYAK_CASES, {"scale_by_polyak_sps_plus", "polyak_sgd_scaled"})
)
def test_polyak_matches_optax(name, dtype):
    run_both(POLYAK_CASES[name], dtype=dtype, extra_args_fn=_value)


def test_polyak_matches_optax_with_none():
    run_both(POLYAK_CASES["polyak_sgd_scaled"], with_none=True, extra_args_fn=_value)


@pytest.mark.parametrize(("name", "dtype"), _cases(DOG_CASES, {"scale_by_dog"}))
def test_dog_matches_optax(name, dtype):
    run_both(DOG_CASES[name], params=_dog_params(dtype), dtype=dtype)


def test_dog_matches_optax_with_none():
    run_both(DOG_CASES["scale_by_dog"], params=_dog_params(with_none=True))


def test_dog_zero_dim_leaf_keeps_its_shape():
    """optax returns a shape-(1,) update for a 0-d parameter; ours keeps shape (), same value."""
    params = {"s": torch.tensor(0.7, dtype=torch.float64), "v": torch.ones(3, dtype=torch.float64)}
    grads = {"s": torch.tensor(-0.4, dtype=torch.float64), "v": torch.full((3,), 0.2).double()}
    tx_t = otx.scale_by_distance_over_gradients(reps_rel=0.1)
    tx_j = optax.scale_by_distance_over_gradients(reps_rel=0.1)
    st_t, st_j = tx_t.init(params), tx_j.init(to_jax(params))
    for _ in range(3):
        u_t, st_t = tx_t.update(grads, st_t, params)
        u_j, st_j = tx_j.update(to_jax(grads), st_j, to_jax(params))
        assert u_t["s"].shape == ()
        assert u_j["s"].shape == (1,)
        u_j = {"s": jnp.reshape(u_j["s"], ()), "v": u_j["v"]}
        assert_trees_close(u_t, u_j, rtol=1e-12)
        assert_trees_close(st_t, st_j, rtol=1e-12)
        params = otx.apply_updates(params, u_t)


def test_dog_needs_params():
    tx = otx.scale_by_distance_over_gradients()
    p = {"w": torch.ones(2)}
    with pytest.raises(ValueError, match="parameters"):
        tx.update(p, tx.init(p))


def test_polyak_zero_gradient_gives_zero_step():
    """Where ||g||^2 + eps is below machine epsilon the step is 0 (no division by zero)."""
    p = {"w": torch.ones(3, dtype=torch.float64)}
    tx = otx.polyak_sgd()
    u, _ = tx.update(otree.zeros_like(p), tx.init(p), p, value=torch.tensor(1.0))
    assert torch.equal(u["w"], torch.zeros(3, dtype=torch.float64))
    assert torch.isfinite(u["w"]).all()


def test_polyak_step_is_the_polyak_step():
    """Exact math: f(x) = 0.5 |x|^2 with f* = 0 reaches the minimum's value halving each step."""
    p = {"w": torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)}
    tx = otx.polyak_sgd()
    state = tx.init(p)
    for _ in range(3):
        loss = 0.5 * (p["w"] ** 2).sum()
        u, state = tx.update(p, state, p, value=loss)  # grad of 0.5|x|^2 is x
        # gap / |g|^2 = 0.5, capped at max_learning_rate=1: x <- x - 0.5 x
        assert torch.allclose(u["w"], -0.5 * p["w"], rtol=1e-15)
        p = otx.apply_updates(p, u)


def test_polyak_takes_python_float_value():
    p = {"w": torch.tensor([1.0, -2.0])}
    tx = otx.scale_by_polyak(max_learning_rate=10.0)
    u, _ = tx.update(p, tx.init(p), p, value=2.5)
    assert u["w"].dtype == torch.float32
    assert torch.allclose(u["w"], 0.5 * p["w"])


def test_optimistic_gradient_first_step_is_alpha_times_gradient():
    p = {"w": torch.tensor([1.0, -2.0], dtype=torch.float64)}
    g1 = {"w": torch.tensor([0.5, 0.25], dtype=torch.float64)}
    g2 = {"w": torch.tensor([-1.0, 2.0], dtype=torch.float64)}
    tx = otx.scale_by_optimistic_gradient(alpha=0.3, beta=0.7)
    u, s = tx.update(g1, tx.init(p), p)
    assert torch.allclose(u["w"], 0.3 * g1["w"])
    u, s = tx.update(g2, s, p)
    assert torch.allclose(u["w"], 1.0 * g2["w"] - 0.7 * g1["w"])
    assert not bool(s.is_initial_step)


def test_optimistic_adam_warns_and_rejects_schedules():
    with pytest.warns(DeprecationWarning, match="optimistic_adam_v2"):
        A.optimistic_adam(1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(ValueError, match="schedules"):
            A.optimistic_adam(lambda c: 0.1)


def test_state_classes_exported():
    """optax keeps these two state classes private (optax._src.transform); we export them."""
    from optax._src import transform as optax_transform

    for name in ("ScaleByOptimisticGradientState", "ScaleByDistanceOverGradientsState"):
        assert getattr(otx, name)._fields == getattr(optax_transform, name)._fields


@pytest.mark.parametrize(
    ("build", "arg"),
    [
        (lambda: otx.scale_by_optimistic_gradient(alpha=float("nan")), "alpha"),
        (lambda: otx.scale_by_optimistic_gradient(beta=float("inf")), "beta"),
        (lambda: otx.scale_by_distance_over_gradients(reps_rel=0.0), "reps_rel"),
        (lambda: otx.scale_by_distance_over_gradients(eps=-1.0), "eps"),
        (lambda: otx.scale_by_distance_over_gradients(global_scale=float("nan")), "global_scale"),
        (lambda: otx.scale_by_polyak(f_min=float("nan")), "f_min"),
        (lambda: otx.scale_by_polyak(max_learning_rate=-1.0), "max_learning_rate"),
        (lambda: otx.scale_by_polyak(eps=-1e-3), "eps"),
        (lambda: otx.scale_by_polyak(variant="sgd"), "variant"),
        (lambda: A.polyak_sgd(scaling=float("inf")), "scaling"),
        (lambda: A.polyak_sgd(variant="sps-"), "variant"),
        (lambda: A.optimistic_gradient_descent(float("nan")), "learning_rate"),
        (lambda: A.optimistic_adam_v2(0.1, b1=1.0), "b1"),
        (lambda: A.optimistic_adam_v2(0.1, eps=-1.0), "eps"),
        (lambda: A.optimistic_adam_v2(float("inf")), "learning_rate"),
    ],
)
def test_validation(build, arg):
    with pytest.raises(ValueError, match=arg):
        build()


def test_optimistic_adam_validation():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(ValueError, match="b2"):
            A.optimistic_adam(0.1, b2=-0.5)
        with pytest.raises(ValueError, match="optimism"):
            A.optimistic_adam(0.1, optimism=float("nan"))


@pytest.mark.parametrize(
    "build",
    [
        lambda: A.optimistic_gradient_descent(0.1),
        lambda: A.optimistic_adam_v2(0.1),
        lambda: otx.scale_by_distance_over_gradients(),
        lambda: A.polyak_sgd(),
    ],
    ids=["ogd", "optimistic_adam_v2", "dog", "polyak_sgd"],
)
def test_compiles(build):
    tx = otx.with_extra_args_support(build())
    p = {"w": torch.ones(2, 3), "b": torch.tensor(0.5)}
    g = {"w": torch.full((2, 3), 0.1), "b": torch.tensor(-0.2)}
    state = tx.init(p)
    step = torch.compile(tx.update, backend="aot_eager", fullgraph=True)
    kw = {"value": torch.tensor(1.5)}
    u_e, s_e = tx.update(g, state, p, **kw)
    u_c, s_c = step(g, state, p, **kw)
    u_c, s_c = step(g, s_c, p, **kw)
    u_e, s_e = tx.update(g, s_e, p, **kw)
    assert_trees_close(u_c, u_e, rtol=1e-6)
    assert_trees_close(s_c, s_e, rtol=1e-6)


@pytest.mark.parametrize(
    "build",
    [
        otx.scale_by_distance_over_gradients,
        A.polyak_sgd,
        lambda: A.optimistic_gradient_descent(0.1),
        lambda: A.optimistic_adam_v2(0.1),
    ],
    ids=["dog", "polyak_sgd", "ogd", "optimistic_adam_v2"],
)
def test_param_without_gradient_passes_through(build):
    """A ``None`` gradient (a parameter without gradient this step) gets a ``None`` update, and
    its state is carried over by the chain."""
    tx = otx.chain(build())
    p = {"a": torch.ones(2), "b": torch.ones(3)}
    state = tx.init(p)
    kw = {"value": torch.tensor(1.0)}
    _, state = tx.update({"a": torch.full((2,), 0.3), "b": torch.full((3,), -0.2)}, state, p, **kw)
    b_state = [x for x in otree.flatten(state)[0] if x is not None and x.shape == (3,)]
    u, new = tx.update({"a": torch.full((2,), 0.3), "b": None}, state, p, **kw)
    assert u["b"] is None and u["a"] is not None
    new_b = [x for x in otree.flatten(new)[0] if x is not None and x.shape == (3,)]
    assert_trees_close(new_b, b_state, rtol=0.0)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("polyak_sgd", {"max_learning_rate": 0.7, "scaling": 0.5, "f_min": 0.1, "eps": 1e-3}),
        ("optimistic_gradient_descent", {"learning_rate": 0.1, "alpha": 0.5, "beta": 0.3}),
        ("optimistic_adam_v2", {"learning_rate": 0.1, "alpha": 0.5, "beta": 0.3}),
    ],
)
def test_tensor_hyperparameters_match_optax(name, kwargs):
    """Hyperparameters as 0-d tensors (through ``inject_hyperparams``)."""
    run_both(
        lambda L: L.tx.inject_hyperparams(getattr(L.tx, name))(**kwargs),
        steps=8,
        extra_args_fn=_value,
    )


def test_distance_over_gradients_on_complex_params():
    """Fuzz-found: the stored initial params were cast to float32 (imaginary part dropped) and
    the sum of squares took g**2, not |g|**2. A complex leaf now steps as the pair of real
    leaves with the same norms would."""
    z = torch.tensor([0.5 - 0.3j, 1.0 + 2.0j])
    g = torch.tensor([0.1 + 0.2j, -0.3 + 0.0j])
    tx = otx.scale_by_distance_over_gradients()
    state = tx.init({"z": z})
    assert state.init_params["z"].dtype == torch.complex64
    assert torch.equal(state.init_params["z"], z)
    assert state.grad_sum_of_squares["z"].dtype == torch.float32
    u, state = tx.update({"z": g}, state, {"z": z})
    # the real view: one leaf holding (re, im) pairs has the same norms
    r = otx.scale_by_distance_over_gradients()
    ru, rstate = r.update(
        {"z": torch.view_as_real(g)},
        r.init({"z": torch.view_as_real(z)}),
        {"z": torch.view_as_real(z)},
    )
    torch.testing.assert_close(torch.view_as_real(u["z"]), ru["z"])
    torch.testing.assert_close(state.grad_sum_of_squares["z"], rstate.grad_sum_of_squares["z"])


def test_distance_over_gradients_keeps_its_state_dtypes_on_float16_params():
    """A float16 parameter's distance to its stored float32 copy is float32: the running maximum
    keeps the dtype it was made with (found by fuzzing: the state changed dtype)."""
    tx = otx.scale_by_distance_over_gradients()
    params = {"a": torch.tensor(0.94, dtype=torch.float16)}
    state = tx.init(params)
    dtypes = [x.dtype for x in otx.tree.leaves(state)]
    for g in (4e-4, -8.1e-5, 8e-4):
        _, state = tx.update({"a": torch.tensor(g, dtype=torch.float16)}, state, params)
        params = {"a": params["a"] + torch.tensor(0.01, dtype=torch.float16)}
        assert [x.dtype for x in otx.tree.leaves(state)] == dtypes
