"""optax_torch.contrib against optax.contrib (first half): adopt, ademamix, madgrad, acprop,
cocob, dog/dowg, prodigy, dadapt_adamw, momo, mechanize.

Every case runs :func:`optax_ref.run_both` (20 steps, updates, states and params compared every
step) in float64 (rtol 1e-10); the float32 runs (float32 tolerances) cover every public name, and
a few cases run with ``None`` leaves. Then: validation errors, documented behaviours (first steps,
growth of the distance estimates, needing ``params`` / ``value``), 0-d tensor hyperparameters,
float32 dtypes, donated states and ``torch.load(weights_only=True)`` round trips.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
from conftest import Pair
from optax_ref import inverse_time_schedule, run_both

import optax_torch as otx
import optax_torch.contrib as otc

F32 = torch.float32


def _mask(p):
    """True for the leaves with at least 2 dims."""
    return {
        "scalar": False,
        "empty": False,
        "dense": {"w": True, "b": False},
        "seq": [True, (False, False)],
        "pair": Pair(first=False, second={"z": True}),
    }


CASES: dict[str, Any] = {
    # adopt
    "adopt": lambda L: L.contrib.adopt(0.01),
    "adopt_nesterov": lambda L: L.contrib.adopt(
        inverse_time_schedule(L), b1=0.8, b2=0.99, nesterov=True
    ),
    "adopt_no_clipping": lambda L: L.contrib.adopt(0.01, use_clipping=False, eps=1e-3),
    "scale_by_adopt": lambda L: L.contrib.scale_by_adopt(b1=0.5, b2=0.95),
    # ademamix
    "ademamix": lambda L: L.contrib.ademamix(0.01),
    "ademamix_schedules": lambda L: L.contrib.ademamix(
        inverse_time_schedule(L),
        b3=L.sched(L.tx.linear_schedule(0.9, 0.999, 10)),
        alpha=L.sched(L.tx.linear_schedule(0.0, 5.0, 15)),
        eps=1e-6,
        eps_root=1e-8,
    ),
    "ademamix_weight_decay_mask": lambda L: L.contrib.ademamix(
        0.01, b1=0.8, b2=0.95, b3=0.99, weight_decay=0.1, mask=_mask
    ),
    "scale_by_ademamix": lambda L: L.contrib.scale_by_ademamix(b3=0.95, alpha=2.0),
    "simplified_ademamix_alpha_schedule": lambda L: L.contrib.simplified_ademamix(
        0.01,
        b1=0.9,
        b2=0.99,
        alpha=L.sched(L.tx.linear_schedule(0.0, 3.0, 12)),
        eps_root=1e-8,
        weight_decay=0.05,
    ),
    # m sums gradients undamped (|u| ~ 1 / (1 - b1)): a small step keeps float32 params exact
    "scale_by_simplified_ademamix": lambda L: L.tx.chain(
        L.contrib.scale_by_simplified_ademamix(alpha=1.5), L.tx.scale(-0.01)
    ),
    # madgrad
    "madgrad": lambda L: L.contrib.madgrad(0.01),
    "madgrad_weight_decay_schedule": lambda L: L.contrib.madgrad(
        inverse_time_schedule(L), momentum=0.5, weight_decay=0.1, eps=1e-4
    ),
    "scale_by_madgrad_no_momentum": lambda L: L.contrib.scale_by_madgrad(0.05, momentum=0.0),
    # cocob
    "cocob_options": lambda L: L.contrib.cocob(
        inverse_time_schedule(L), alpha=10.0, eps=1e-3, weight_decay=0.1, mask=_mask
    ),
    "scale_by_cocob": lambda L: L.contrib.scale_by_cocob(alpha=5.0),
    # dog, dowg
    "dog_distance": lambda L: L.contrib.dog(init_step=("distance", 0.1), eps=1e-4),
    "dog_learning_rate": lambda L: L.contrib.dog(
        inverse_time_schedule(L), init_step=("learning_rate", 0.05), weight_decay=0.1
    ),
    "dog_heuristic_mask": lambda L: L.contrib.dog(
        0.5, init_step=("heuristic", 1e-2), weight_decay=0.05, mask=_mask
    ),
    "dowg": lambda L: L.contrib.dowg(),
    "dowg_options": lambda L: L.contrib.dowg(
        inverse_time_schedule(L), init_estim_sq_dist=0.01, eps=1e-3, weight_decay=0.1, mask=_mask
    ),
    # prodigy
    "prodigy_options": lambda L: L.contrib.prodigy(
        L.sched(L.tx.linear_schedule(1.0, 0.0, 25)),
        betas=(0.8, 0.99),
        beta3=0.9,
        eps=1e-6,
        estim_lr0=1e-3,
        estim_lr_coef=2.0,
        weight_decay=0.1,
    ),
    "prodigy_safeguard_warmup": lambda L: L.contrib.prodigy(
        L.sched(L.tx.linear_schedule(0.0, 1.0, 5)), safeguard_warmup=True, estim_lr0=1e-4
    ),
    # dadapt_adamw
    "dadapt_adamw": lambda L: L.contrib.dadapt_adamw(),
    "dadapt_adamw_options": lambda L: L.contrib.dadapt_adamw(
        L.sched(L.tx.linear_schedule(1.0, 0.1, 25)),
        betas=(0.8, 0.99),
        eps=1e-6,
        estim_lr0=1e-3,
        weight_decay=0.1,
    ),
    # momo, momo_adam (need the loss value: see _momo_value)
    "momo_options": lambda L: L.contrib.momo(
        inverse_time_schedule(L), beta=0.8, lower_bound=-1.0, weight_decay=0.1
    ),
    # (a Python-float lr: with a float64 schedule and float32 params optax's lax.cond fails on
    # float32 vs float64 branches)
    "momo_adapt_lower_bound": lambda L: L.contrib.momo(
        0.5, lower_bound=-5.0, weight_decay=0.05, adapt_lower_bound=True
    ),
    "momo_adam": lambda L: L.contrib.momo_adam(),
    "momo_adam_options": lambda L: L.contrib.momo_adam(
        0.1, b1=0.8, b2=0.99, eps=1e-6, lower_bound=-1.0, weight_decay=0.1
    ),
    "momo_adam_adapt_lower_bound": lambda L: L.contrib.momo_adam(
        inverse_time_schedule(L), lower_bound=-5.0, weight_decay=0.05, adapt_lower_bound=True
    ),
    # mechanize
    "mechanize_adam": lambda L: L.contrib.mechanize(L.tx.adam(1.0)),
    "mechanize_sgd_options": lambda L: L.contrib.mechanize(
        L.tx.sgd(0.1, momentum=0.9),
        weight_decay=0.1,
        eps=1e-6,
        s_init=1e-3,
        num_betas=3,
    ),
    "mechanize_no_weight_decay": lambda L: L.contrib.mechanize(
        L.tx.adamw(L.sched(L.tx.linear_schedule(1.0, 0.1, 20)), weight_decay=0.1),
        weight_decay=0.0,
    ),
    # acprop
    "acprop_options": lambda L: L.contrib.acprop(
        inverse_time_schedule(L),
        b1=0.8,
        b2=0.95,
        eps=1e-8,
        eps_root=1e-10,
        weight_decay=0.1,
        mask=_mask,
    ),
    "scale_by_acprop": lambda L: L.tx.chain(L.contrib.scale_by_acprop(b2=0.9), L.tx.scale(-0.1)),
}

NONE_CASES = [
    "adopt",
    "ademamix_weight_decay_mask",
    "simplified_ademamix_alpha_schedule",
    "madgrad",
    "cocob_options",
    "dog_learning_rate",
    "dowg_options",
    "prodigy_options",
    "dadapt_adamw_options",
    "momo_options",
    "momo_adam_adapt_lower_bound",
    "mechanize_adam",
    "acprop_options",
]


def _momo_value(L, params, grads, k):
    """A loss value for the update: 0.5 * ||params||^2 (>= the lower bounds used)."""
    if L.is_torch:
        v = 0.5 * sum(float((x.double() ** 2).sum()) for x in otx.tree.leaves(params))
    else:
        import jax

        v = 0.5 * sum(float((x.astype("float64") ** 2).sum()) for x in jax.tree.leaves(params))
    return {"value": v}


def _extra(name: str) -> dict:
    return {"extra_args_fn": _momo_value} if name.startswith("momo") else {}


# optax computes MADGRAD's lambda_k = (lr + eps) * sqrt(k + 1) in float32 even under x64
# (``jnp.sqrt`` of the int32 count is float32, and a Python-float lr stays weakly typed), so its
# float64 results carry float32 rounding of lambda: those cases are compared at rtol 1e-6 here
# and against an exact float64 reference in ``test_madgrad_matches_float64_reference``.
LOOSE64 = {
    "madgrad": 1e-6,
    "madgrad_weight_decay_schedule": 1e-6,
    "scale_by_madgrad_no_momentum": 1e-6,
}


def _tol64(name: str) -> dict:
    rtol = LOOSE64.get(name)
    return {} if rtol is None else {"rtol": rtol, "atol": 1e-7}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_optax_float64(name):
    run_both(CASES[name], **_tol64(name), **_extra(name))


# float32: one case per public name (the float64 cases cover the options)
F32_CASES = [
    "adopt_nesterov",
    "scale_by_adopt",
    "ademamix_schedules",
    "scale_by_ademamix",
    "simplified_ademamix_alpha_schedule",
    "scale_by_simplified_ademamix",
    "madgrad_weight_decay_schedule",
    "scale_by_madgrad_no_momentum",
    "cocob_options",
    "scale_by_cocob",
    "dog_learning_rate",
    "dog_heuristic_mask",
    "dowg_options",
    "prodigy_options",
    "prodigy_safeguard_warmup",
    "dadapt_adamw_options",
    "momo_options",
    "momo_adapt_lower_bound",
    "momo_adam_adapt_lower_bound",
    "mechanize_adam",
    "mechanize_sgd_options",
    "acprop_options",
    "scale_by_acprop",
]


@pytest.mark.parametrize("name", F32_CASES)
def test_matches_optax_float32(name):
    run_both(CASES[name], dtype=F32, **_extra(name))


@pytest.mark.parametrize("name", NONE_CASES)
def test_matches_optax_with_none_leaves(name):
    run_both(CASES[name], steps=5, with_none=True, **_tol64(name), **_extra(name))


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

INVALID = [
    (lambda: otc.adopt(float("nan")), "learning_rate"),
    (lambda: otc.adopt(0.1, b1=1.0), "b1"),
    (lambda: otc.adopt(0.1, b2=-0.1), "b2"),
    (lambda: otc.scale_by_adopt(eps=-1.0), "eps"),
    (lambda: otc.ademamix(float("inf")), "learning_rate"),
    (lambda: otc.ademamix(0.1, b1=1.5), "b1"),
    (lambda: otc.ademamix(0.1, b2=1.0), "b2"),
    (lambda: otc.ademamix(0.1, b3=-0.5), "b3"),
    (lambda: otc.ademamix(0.1, alpha=float("nan")), "alpha"),
    (lambda: otc.ademamix(0.1, eps=-1e-8), "eps"),
    (lambda: otc.ademamix(0.1, weight_decay=-1.0), "weight_decay"),
    (lambda: otc.scale_by_ademamix(eps_root=-1.0), "eps_root"),
    (lambda: otc.simplified_ademamix(float("nan")), "learning_rate"),
    (lambda: otc.simplified_ademamix(0.1, b1=1.0), "b1"),
    (lambda: otc.simplified_ademamix(0.1, b2=2.0), "b2"),
    (lambda: otc.scale_by_simplified_ademamix(eps=-1.0), "eps"),
    (lambda: otc.madgrad(float("nan")), "learning_rate"),
    (lambda: otc.madgrad(0.1, momentum=1.0), "momentum"),
    (lambda: otc.madgrad(0.1, weight_decay=-1.0), "weight_decay"),
    (lambda: otc.scale_by_madgrad(0.1, eps=-1.0), "eps"),
    (lambda: otc.cocob(float("nan")), "learning_rate"),
    (lambda: otc.cocob(alpha=-1.0), "alpha"),
    (lambda: otc.cocob(eps=-1.0), "eps"),
    (lambda: otc.cocob(weight_decay=-0.1), "weight_decay"),
    (lambda: otc.dog(float("nan")), "learning_rate"),
    (lambda: otc.dog(init_step=("bogus", 1.0)), "init_step"),  # type: ignore[arg-type]
    (lambda: otc.dog(init_step=("distance", -1.0)), "init_step"),
    (lambda: otc.dog(init_step=("learning_rate", float("inf"))), "init_step"),
    (lambda: otc.dog(eps=-1.0), "eps"),
    (lambda: otc.dog(weight_decay=-1.0), "weight_decay"),
    (lambda: otc.dowg(float("inf")), "learning_rate"),
    (lambda: otc.dowg(init_estim_sq_dist=-1.0), "init_estim_sq_dist"),
    (lambda: otc.dowg(eps=-1.0), "eps"),
    (lambda: otc.dowg(weight_decay=-1.0), "weight_decay"),
    (lambda: otc.prodigy(float("nan")), "learning_rate"),
    (lambda: otc.prodigy(betas=(1.0, 0.9)), "betas"),
    (lambda: otc.prodigy(betas=(0.9, -0.1)), "betas"),
    (lambda: otc.prodigy(beta3=1.5), "beta3"),
    (lambda: otc.prodigy(eps=-1.0), "eps"),
    (lambda: otc.prodigy(estim_lr0=0.0), "estim_lr0"),
    (lambda: otc.prodigy(estim_lr_coef=-1.0), "estim_lr_coef"),
    (lambda: otc.prodigy(weight_decay=-1.0), "weight_decay"),
    (lambda: otc.dadapt_adamw(float("nan")), "learning_rate"),
    (lambda: otc.dadapt_adamw(betas=(1.0, 0.9)), "betas"),
    (lambda: otc.dadapt_adamw(betas=(0.9, 1.0)), "betas"),
    (lambda: otc.dadapt_adamw(eps=-1.0), "eps"),
    (lambda: otc.dadapt_adamw(estim_lr0=-1.0), "estim_lr0"),
    (lambda: otc.dadapt_adamw(weight_decay=-1.0), "weight_decay"),
    (lambda: otc.momo(float("nan")), "learning_rate"),
    (lambda: otc.momo(beta=1.0), "beta"),
    (lambda: otc.momo(lower_bound=float("-inf")), "lower_bound"),
    (lambda: otc.momo(weight_decay=-1.0), "weight_decay"),
    (lambda: otc.momo_adam(float("inf")), "learning_rate"),
    (lambda: otc.momo_adam(b1=-0.1), "b1"),
    (lambda: otc.momo_adam(b2=1.0), "b2"),
    (lambda: otc.momo_adam(eps=-1.0), "eps"),
    (lambda: otc.momo_adam(lower_bound=float("nan")), "lower_bound"),
    (lambda: otc.momo_adam(weight_decay=-1.0), "weight_decay"),
    (lambda: otc.mechanize(otx.sgd(1.0), weight_decay=-1.0), "weight_decay"),
    (lambda: otc.mechanize(otx.sgd(1.0), eps=-1.0), "eps"),
    (lambda: otc.mechanize(otx.sgd(1.0), s_init=0.0), "s_init"),
    (lambda: otc.mechanize(otx.sgd(1.0), num_betas=0), "num_betas"),
    (lambda: otc.acprop(float("nan")), "learning_rate"),
    (lambda: otc.acprop(0.1, b1=1.0), "b1"),
    (lambda: otc.acprop(0.1, b2=-1.0), "b2"),
    (lambda: otc.acprop(0.1, eps=-1.0), "eps"),
    (lambda: otc.acprop(0.1, eps_root=-1.0), "eps_root"),
    (lambda: otc.acprop(0.1, weight_decay=-1.0), "weight_decay"),
]


@pytest.mark.parametrize("i", range(len(INVALID)))
def test_validation(i):
    make, name = INVALID[i]
    with pytest.raises(ValueError, match=name):
        make()


# --------------------------------------------------------------------------------------------
# Behaviours beyond numbers
# --------------------------------------------------------------------------------------------


def test_adopt_first_update_is_zero():
    p = {"w": torch.tensor([1.0, -2.0])}
    tx = otc.adopt(0.1)
    u, _ = tx.update({"w": torch.tensor([0.5, 3.0])}, tx.init(p), p)
    assert torch.equal(u["w"], torch.zeros(2))


def test_ademamix_mu_dtype_keeps_state_dtypes():
    p = {"w": torch.randn(3, dtype=torch.float64)}
    tx = otc.ademamix(0.1, mu_dtype=torch.float32)
    st = tx.init(p)
    u, st = tx.update({"w": torch.randn(3, dtype=torch.float64)}, st, p)
    inner = st[0]
    assert u["w"].dtype == torch.float64
    assert {inner.m1["w"].dtype, inner.m2["w"].dtype, inner.nu["w"].dtype} == {torch.float32}


def test_simplified_ademamix_alpha_zero_is_adam_rescaled():
    """alpha = 0: u = m / (sqrt(n_hat) + eps) with m = sum b1^i g_{k-i} = ema / (1 - b1): Adam
    without first-moment bias correction, scaled by 1 / (1 - b1)."""
    torch.manual_seed(0)
    p = {"w": torch.randn(5, dtype=torch.float64)}
    b1, b2 = 0.9, 0.99
    a = otc.scale_by_simplified_ademamix(b1=b1, b2=b2)
    ref = otx.scale_by_adam(b1=b1, b2=b2)
    sa, sr = a.init(p), ref.init(p)
    for k in range(5):
        g = {"w": torch.randn(5, dtype=torch.float64)}
        ua, sa = a.update(g, sa, p)
        ur, sr = ref.update(g, sr, p)
        expected = ur["w"] * (1 - b1 ** (k + 1)) / (1 - b1)
        torch.testing.assert_close(ua["w"], expected, rtol=1e-6, atol=0)


def test_madgrad_needs_params_and_keeps_x0():
    p = {"w": torch.tensor([1.0, -2.0])}
    tx = otc.scale_by_madgrad(0.1)
    st = tx.init(p)
    assert st.x0["w"] is not p["w"] and torch.equal(st.x0["w"], p["w"])
    with pytest.raises(ValueError, match="params"):
        tx.update({"w": torch.ones(2)}, st)


def test_madgrad_matches_float64_reference():
    """MADGRAD written out per tensor in float64 (the official PyTorch implementation's math)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, generator=gen, dtype=torch.float64)
    lr, mom, eps, wd = 0.02, 0.8, 1e-6, 0.1
    x0, G, S = x.clone(), torch.zeros(7, dtype=torch.float64), torch.zeros(7, dtype=torch.float64)
    tx = otc.madgrad(lr, momentum=mom, weight_decay=wd, eps=eps)
    p = {"x": x.clone()}
    st = tx.init(p)
    for k in range(20):
        g = torch.randn(7, generator=gen, dtype=torch.float64)
        u, st = tx.update({"x": g}, st, p)
        p = otx.apply_updates(p, u)
        gw = g + wd * x
        lamb = (lr + eps) * (k + 1) ** 0.5
        G, S = G + lamb * gw * gw, S + lamb * gw
        z = x0 - S / (G ** (1 / 3) + eps)
        x = (1 - mom) * z + mom * x
        torch.testing.assert_close(p["x"], x, rtol=1e-13, atol=1e-14)


def test_cocob_needs_params_and_keeps_init_particles():
    p = {"w": torch.tensor([1.0, -2.0])}
    tx = otc.scale_by_cocob()
    st = tx.init(p)
    assert st.init_particles["w"] is not p["w"] and torch.equal(st.init_particles["w"], p["w"])
    torch.testing.assert_close(st.scale["w"], torch.full((2,), 1e-8))
    with pytest.raises(ValueError, match="params"):
        tx.update({"w": torch.ones(2)}, st)


@pytest.mark.parametrize("make", [otc.scale_by_dog, otc.scale_by_dowg])
def test_dog_dowg_need_params(make):
    tx = make(("heuristic", 1e-6)) if make is otc.scale_by_dog else make()
    p = {"w": torch.ones(2)}
    with pytest.raises(ValueError, match="params"):
        tx.update({"w": torch.ones(2)}, tx.init(p))


def test_dog_first_step_learning_rate():
    """With ("learning_rate", eta) the first update is exactly -eta * g."""
    p = {"w": torch.tensor([1.0, -2.0], dtype=torch.float64)}
    g = {"w": torch.tensor([0.5, 3.0], dtype=torch.float64)}
    tx = otc.dog(init_step=("learning_rate", 0.25))
    u, _ = tx.update(g, tx.init(p), p)
    torch.testing.assert_close(u["w"], -0.25 * g["w"], rtol=0, atol=0)


def test_dog_state_scalars_take_the_lowest_param_dtype():
    p = {"a": torch.ones(2, dtype=torch.float64), "b": torch.ones(3, dtype=torch.float32)}
    st = otc.scale_by_dog(("heuristic", 1e-6)).init(p)
    assert st.max_dist.dtype == st.sum_sq_norm_grads.dtype == torch.float32
    g = {"a": torch.ones(2, dtype=torch.float64), "b": torch.ones(3, dtype=torch.float32)}
    u, st = otc.scale_by_dog(("heuristic", 1e-6)).update(g, st, p)
    assert u["a"].dtype == torch.float64 and u["b"].dtype == torch.float32
    assert st.max_dist.dtype == torch.float32


def test_prodigy_estimate_grows_on_a_quadratic():
    """d (estim_lr) starts at estim_lr0 and grows by orders of magnitude towards the scale of
    the distance to the solution; it never decreases."""
    target = torch.full((10,), 3.0, dtype=torch.float64)
    p = {"x": torch.zeros(10, dtype=torch.float64)}
    tx = otc.prodigy()
    st = tx.init(p)
    ds = [st.estim_lr.item()]
    for _ in range(100):
        u, st = tx.update({"x": p["x"] - target}, st, p)
        p = otx.apply_updates(p, u)
        ds.append(st.estim_lr.item())
    assert all(b >= a for a, b in itertools.pairwise(ds))
    assert ds[0] == 1e-6 and ds[-1] > 1e-1
    assert torch.linalg.vector_norm(p["x"] - target) < torch.linalg.vector_norm(target)


def test_prodigy_needs_params():
    tx = otc.prodigy()
    p = {"w": torch.ones(2)}
    with pytest.raises(ValueError, match="params"):
        tx.update({"w": torch.ones(2)}, tx.init(p))


def test_dadapt_adamw_estimate_grows_on_a_quadratic():
    """d (estim_lr) starts at estim_lr0, never decreases, and grows to the order of the initial
    distance to the solution in the infinity norm (3 here); the iterates converge."""
    target = torch.full((10,), 3.0, dtype=torch.float64)
    p = {"x": torch.zeros(10, dtype=torch.float64)}
    tx = otc.dadapt_adamw()
    st = tx.init(p)
    ds = [st.estim_lr.item()]
    for _ in range(200):
        u, st = tx.update({"x": p["x"] - target}, st, p)
        p = otx.apply_updates(p, u)
        ds.append(st.estim_lr.item())
    assert all(b >= a for a, b in itertools.pairwise(ds))
    assert ds[0] == 1e-6 and 1.0 < ds[-1] < 30.0
    assert torch.linalg.vector_norm(p["x"] - target, ord=float("inf")) < 0.1


def test_dadapt_adamw_needs_params():
    tx = otc.dadapt_adamw()
    p = {"w": torch.ones(2)}
    with pytest.raises(ValueError, match="params"):
        tx.update({"w": torch.ones(2)}, tx.init(p))


@pytest.mark.parametrize("make", [otc.momo, otc.momo_adam])
def test_momo_needs_params_and_value(make):
    tx = make()
    p = {"w": torch.ones(2)}
    st = tx.init(p)
    with pytest.raises(ValueError, match="value"):
        tx.update({"w": torch.ones(2)}, st, p)
    with pytest.raises(ValueError, match="params"):
        tx.update({"w": torch.ones(2)}, st, value=1.0)


def test_momo_polyak_step_solves_a_quadratic_in_one_step():
    """First step of MoMo on f(x) = ||x||^2 / 2 with f_* = 0: d = g = x, so
    tau = f / ||x||^2 = 1/2 (below lr = 1) and x_1 = x / 2; MoMo-Adam's first step is capped."""
    x = torch.tensor([3.0, -4.0], dtype=torch.float64)
    tx = otc.momo(learning_rate=1.0)
    u, _ = tx.update({"x": x}, tx.init({"x": x}), {"x": x}, value=0.5 * float(x @ x))
    torch.testing.assert_close(x + u["x"], x / 2, rtol=1e-15, atol=0)
    tx = otc.momo(learning_rate=0.1)
    u, _ = tx.update({"x": x}, tx.init({"x": x}), {"x": x}, value=0.5 * float(x @ x))
    torch.testing.assert_close(u["x"], -0.1 * x, rtol=1e-15, atol=0)


def test_momo_takes_no_step_on_zero_gradients():
    p = {"x": torch.tensor([1.0, 2.0], dtype=torch.float64)}
    for tx in (otc.momo(), otc.momo_adam()):
        u, _ = tx.update({"x": torch.zeros(2, dtype=torch.float64)}, tx.init(p), p, value=3.0)
        assert torch.equal(u["x"], torch.zeros(2, dtype=torch.float64))


def test_mechanize_needs_params_and_forwards_extra_args():
    p = {"w": torch.ones(2, dtype=torch.float64)}
    tx = otc.mechanize(otx.sgd(1.0))
    with pytest.raises(ValueError, match="params"):
        tx.update({"w": torch.ones(2, dtype=torch.float64)}, tx.init(p))
    inner = otc.mechanize(otc.momo(), weight_decay=0.0)
    st = inner.init(p)
    with pytest.raises(ValueError, match="value"):
        inner.update({"w": torch.ones(2, dtype=torch.float64)}, st, p)
    u, _ = inner.update({"w": torch.ones(2, dtype=torch.float64)}, st, p, value=1.0)
    assert torch.isfinite(u["w"]).all()


def test_mechanize_reference_point_is_the_first_updated_params():
    """x0 is taken at the first update (weights loaded after init count), then kept."""
    p0 = {"w": torch.zeros(3, dtype=torch.float64)}
    tx = otc.mechanize(otx.sgd(1.0))
    st = tx.init(p0)
    loaded = {"w": torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)}
    u, st = tx.update({"w": torch.ones(3, dtype=torch.float64)}, st, loaded)
    torch.testing.assert_close(st.x0["w"], loaded["w"], rtol=0, atol=0)
    p1 = otx.apply_updates(loaded, u)
    _, st = tx.update({"w": torch.ones(3, dtype=torch.float64)}, st, p1)
    torch.testing.assert_close(st.x0["w"], loaded["w"], rtol=0, atol=0)


def test_mechanize_state_round_trips_through_torch_load(tmp_path):
    p = {"w": torch.ones(3, dtype=torch.float64)}
    tx = otc.mechanize(otx.adam(1.0))
    _, st = tx.update({"w": torch.ones(3, dtype=torch.float64)}, tx.init(p), p)
    torch.save(st, tmp_path / "st.pt")
    back = torch.load(tmp_path / "st.pt", weights_only=True)
    assert type(back) is otc.MechanicState
    torch.testing.assert_close(back.s, st.s, rtol=0, atol=0)


def test_acprop_first_step_is_the_gradient_and_state_is_belief_state():
    p = {"w": torch.tensor([1.0, -2.0], dtype=torch.float64)}
    g = {"w": torch.tensor([0.5, 3.0], dtype=torch.float64)}
    tx = otc.scale_by_acprop(eps=1e-3)
    u, st = tx.update(g, tx.init(p), p)
    torch.testing.assert_close(u["w"], g["w"] / (1 + 1e-3), rtol=1e-15, atol=0)
    assert type(st) is otx.ScaleByBeliefState


def _t(v):
    return torch.tensor(v, dtype=torch.float64)


# (name, build(hyperparameter converter)) with the hyperparameters as Python numbers or 0-d tensors
TENSOR_HP = {
    "adopt": lambda h: otc.adopt(h(0.01), b1=h(0.8), b2=h(0.99), eps=h(1e-6)),
    "ademamix": lambda h: otc.ademamix(
        h(0.01), h(0.8), h(0.9), h(0.99), h(3.0), weight_decay=h(0.1)
    ),
    "simplified_ademamix": lambda h: otc.simplified_ademamix(h(0.01), h(0.9), h(0.9), h(2.0)),
    "madgrad": lambda h: otc.madgrad(h(0.01), h(0.8), h(0.1), h(1e-6)),
    "cocob": lambda h: otc.cocob(h(0.5), h(10.0), h(1e-3), h(0.1)),
    "dog": lambda h: otc.dog(h(0.5), ("learning_rate", h(0.1)), h(1e-6), h(0.1)),
    "dowg": lambda h: otc.dowg(h(0.5), h(0.01), h(1e-3), h(0.1)),
    "prodigy": lambda h: otc.prodigy(h(0.5), (h(0.8), h(0.99)), h(0.9), weight_decay=h(0.1)),
    "dadapt_adamw": lambda h: otc.dadapt_adamw(h(0.5), (h(0.8), h(0.99)), weight_decay=h(0.1)),
    "momo": lambda h: otc.momo(h(0.5), h(0.8), h(-1.0), h(0.1), adapt_lower_bound=True),
    "momo_adam": lambda h: otc.momo_adam(h(0.1), h(0.8), h(0.99), h(1e-6), h(-1.0), h(0.1), True),
    "mechanize": lambda h: otc.mechanize(otx.adam(h(1.0)), h(0.1), h(1e-6), h(1e-3)),
    "acprop": lambda h: otc.acprop(h(0.01), h(0.8), h(0.9), h(1e-8), h(1e-10), h(0.1)),
}


@pytest.mark.parametrize("name", sorted(TENSOR_HP))
def test_tensor_hyperparameters_equal_python_numbers(name):
    """0-d float64 tensor hyperparameters (as ``inject_hyperparams`` passes them) give the steps
    of the same Python numbers."""
    gen = torch.Generator().manual_seed(1)
    p = {
        "a": torch.randn(3, 2, generator=gen, dtype=torch.float64),
        "b": torch.randn(4, generator=gen, dtype=torch.float64),
    }
    tx_f, tx_t = TENSOR_HP[name](float), TENSOR_HP[name](_t)
    st_f, st_t = tx_f.init(p), tx_t.init(p)
    p_f = p_t = p
    for _ in range(5):
        g = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in p.items()}
        kw = {"value": 0.5 * sum(float((x * x).sum()) for x in p_f.values())}
        kw = kw if name.startswith("momo") else {}
        u_f, st_f = tx_f.update(g, st_f, p_f, **kw)
        u_t, st_t = tx_t.update(g, st_t, p_t, **kw)
        p_f, p_t = otx.apply_updates(p_f, u_f), otx.apply_updates(p_t, u_t)
        for a, b in zip(otx.tree.leaves((u_f, st_f)), otx.tree.leaves((u_t, st_t))):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(TENSOR_HP))
def test_float32_params_keep_dtypes_with_float64_tensor_hyperparameters(name):
    tx = TENSOR_HP[name](_t)
    gen = torch.Generator().manual_seed(2)
    p = {"a": torch.randn(3, 2, generator=gen), "b": torch.randn(4, generator=gen)}
    st0 = st = tx.init(p)
    for _ in range(3):
        g = {k: torch.randn(v.shape, generator=gen) for k, v in p.items()}
        kw = {"value": torch.tensor(1.5)} if name.startswith("momo") else {}
        u, st = tx.update(g, st, p, **kw)
        p = otx.apply_updates(p, u)
        assert {x.dtype for x in otx.tree.leaves(u)} == {torch.float32}
        assert [x.dtype for x in otx.tree.leaves(st)] == [x.dtype for x in otx.tree.leaves(st0)]


@pytest.mark.parametrize("name", sorted(TENSOR_HP))
def test_donated_state_gives_the_same_steps(name):
    """The transformations marked donation-safe give the same numbers when their state is
    donated (moments written in place), and the state round-trips through
    ``torch.load(weights_only=True)``."""
    import io

    tx = TENSOR_HP[name](float)
    assert otx.is_donation_safe(tx)
    gen = torch.Generator().manual_seed(3)
    p = {
        "a": torch.randn(3, 2, generator=gen, dtype=torch.float64),
        "b": torch.randn(4, generator=gen, dtype=torch.float64),
    }
    st_ref, st_don = tx.init(p), tx.init(p)
    p_ref = p_don = p
    for _ in range(4):
        g = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in p.items()}
        kw = {"value": 1.5} if name.startswith("momo") else {}
        u_ref, st_ref = tx.update(g, st_ref, p_ref, **kw)
        with otx.tree.donate(st_don, exclude=(g, p_don)):
            u_don, st_don = tx.update(g, st_don, p_don, **kw)
        # (in place, ``tree.add_scale`` computes ``y * s + x``: within an ulp of ``x + s * y``)
        for a, b in zip(otx.tree.leaves((u_ref, st_ref)), otx.tree.leaves((u_don, st_don))):
            torch.testing.assert_close(b, a, rtol=1e-13, atol=1e-15)
        p_ref, p_don = otx.apply_updates(p_ref, u_ref), otx.apply_updates(p_don, u_don)
    buf = io.BytesIO()
    torch.save(st_don, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=True)
    assert type(back) is type(st_don)
    for a, b in zip(otx.tree.leaves(st_don), otx.tree.leaves(back)):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
