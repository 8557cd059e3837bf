"""Adaptive-moment transforms and optimizers against optax: Adamax(W), AdaBelief, Yogi, RAdam,
Adadelta, Lion, NovoGrad, Adan, SM3, Adafactor (factored RMS).

Every case runs in optax_torch and optax side by side (``optax_ref.run_both``): 10 steps in float64
(rtol 1e-10), and one case per optimizer 8 steps in float32, comparing updates, states and params
at every step.
"""

from __future__ import annotations

import copy
import inspect
import io
from typing import Any

import numpy as np
import optax
import optax._src.factorized as optax_factorized
import pytest
import torch
from conftest import Pair, assert_trees_close, like_tree, to_jax
from optax_ref import JAX, TORCH, inverse_time_schedule, params_tree, run_both

import optax_torch as otx
from optax_torch import tree as otree

_schedule = inverse_time_schedule


def _mask(p):
    """True for the leaves with at least 2 dims (a typical 'decay only matrices' mask)."""
    return {
        "scalar": False,
        "empty": False,
        "dense": {"w": True, "b": False},
        "seq": [True, (False, False)],
        "pair": Pair(first=False, second={"z": True}),
    }


def _f64_decay(L):
    """Adafactor's decay schedule in float64 for both libraries (optax's default is float32)."""
    return lambda step, rate: 1.0 - L.f64(step + 1) ** (-rate)


CASES: dict[str, Any] = {
    # adamax
    "scale_by_adamax": lambda L: L.tx.scale_by_adamax(0.8, 0.95, 1e-3),
    "adamax": lambda L: L.tx.adamax(_schedule(L), b1=0.5),
    "adamaxw": lambda L: L.tx.adamaxw(0.01, weight_decay=0.1, mask=_mask),
    # belief
    "scale_by_belief": lambda L: L.tx.scale_by_belief(),
    "adabelief": lambda L: L.tx.adabelief(
        _schedule(L), b1=0.8, b2=0.95, eps=1e-8, eps_root=0.0, nesterov=True
    ),
    # yogi
    "scale_by_yogi": lambda L: L.tx.scale_by_yogi(
        0.8, 0.9, 1e-4, eps_root=1e-6, initial_accumulator_value=0.3
    ),
    "yogi": lambda L: L.tx.yogi(0.01),
    # radam (rho_k crosses the threshold within the steps: both branches run)
    "scale_by_radam": lambda L: L.tx.scale_by_radam(),
    "scale_by_radam_threshold": lambda L: L.tx.scale_by_radam(
        b2=0.99, threshold=8.0, eps_root=1e-8
    ),
    "radam": lambda L: L.tx.radam(_schedule(L), nesterov=True, threshold=4.0),
    # adadelta
    "scale_by_adadelta": lambda L: L.tx.scale_by_adadelta(),
    "adadelta": lambda L: L.tx.adadelta(
        _schedule(L), rho=0.8, eps=1e-3, weight_decay=0.1, weight_decay_mask=_mask
    ),
    # lion
    "scale_by_lion_smooth": lambda L: L.tx.scale_by_lion(mode="smooth", smooth_beta=3.0),
    "scale_by_lion_refined": lambda L: L.tx.scale_by_lion(0.5, 0.9, mode="refined"),
    "lion": lambda L: L.tx.lion(_schedule(L), weight_decay=0.1, mask=_mask),
    # novograd
    "scale_by_novograd": lambda L: L.tx.scale_by_novograd(
        0.8, 0.5, 1e-4, eps_root=1e-6, weight_decay=0.1
    ),
    "novograd": lambda L: L.tx.novograd(0.01),
    # adan
    "scale_by_adan": lambda L: L.tx.scale_by_adan(0.9, 0.8, 0.95, 1e-6, 1e-6),
    "adan": lambda L: L.tx.adan(_schedule(L), weight_decay=0.02, mask=_mask),
    # factored rms (float64 decay in both libraries: see test_factored_rms_default_decay_*)
    "scale_by_factored_rms": lambda L: L.tx.scale_by_factored_rms(
        min_dim_size_to_factor=2, decay_rate_fn=_f64_decay(L)
    ),
    "scale_by_factored_rms_all": lambda L: L.tx.scale_by_factored_rms(
        min_dim_size_to_factor=1,
        decay_rate=0.6,
        step_offset=2,
        epsilon=1e-8,
        decay_rate_fn=_f64_decay(L),
    ),
    "scale_by_factored_rms_unfactored": lambda L: L.tx.scale_by_factored_rms(
        factored=False, min_dim_size_to_factor=1, decay_rate_fn=_f64_decay(L)
    ),
    "scale_by_factored_rms_schedule": lambda L: L.tx.scale_by_factored_rms(
        min_dim_size_to_factor=2, decay_rate_fn=lambda step, rate: 0.5 + 0.01 * L.f64(step)
    ),
    # adafactor: optax's default (float32) decay is switched to float64 for both libraries
    # (the ``f64_adafactor_decay`` fixture)
    "adafactor": lambda L: L.tx.adafactor(),
    "adafactor_everything": lambda L: L.tx.adafactor(
        _schedule(L),
        min_dim_size_to_factor=2,
        decay_rate=0.7,
        decay_offset=1,
        clipping_threshold=0.5,
        momentum=0.9,
        dtype_momentum=L.float64,
        weight_decay_rate=0.01,
        weight_decay_mask=_mask,
    ),
    "adafactor_plain": lambda L: L.tx.adafactor(
        0.05, multiply_by_parameter_scale=False, clipping_threshold=None, factored=False
    ),
    # sm3 (params without the 0-d leaf: optax's SM3 raises on 0-d params)
    "scale_by_sm3": lambda L: L.tx.scale_by_sm3(),
    "scale_by_sm3_decay": lambda L: L.tx.scale_by_sm3(0.5, 0.9, 1e-4),
    "sm3": lambda L: L.tx.sm3(0.05, momentum=0.5),
}

# One case per optimizer (its main options) is also run in float32.
FLOAT32 = [
    "adamaxw",
    "adabelief",
    "yogi",
    "radam",
    "adadelta",
    "lion",
    "novograd",
    "adan",
    "scale_by_factored_rms_all",
    "adafactor_everything",
    "sm3",
]

NONE_CASES = [
    "adamaxw",
    "adabelief",
    "scale_by_yogi",
    "radam",
    "adadelta",
    "lion",
    "novograd",
    "adan",
    "scale_by_factored_rms",
    "adafactor_everything",
    "sm3",
]


@pytest.fixture
def f64_adafactor_decay(monkeypatch):
    """optax's scale_by_factored_rms with the float64 decay schedule as its default."""
    fn = optax_factorized.scale_by_factored_rms
    defaults = list(fn.__defaults__)
    defaults[-1] = _f64_decay(JAX)
    monkeypatch.setattr(fn, "__defaults__", tuple(defaults))


def _no_scalar(with_none: bool = False, dtype: torch.dtype = torch.float64):
    """The standard tree without its 0-d leaf (optax's SM3 raises on 0-d params)."""
    tree = params_tree(with_none, dtype)
    del tree["scalar"]
    return tree


def _run(name: str, dtype: torch.dtype = torch.float64, with_none: bool = False, **kw):
    params = _no_scalar(with_none, dtype) if "sm3" in name else None
    run_both(CASES[name], params=params, dtype=dtype, with_none=with_none, **kw)


@pytest.mark.usefixtures("f64_adafactor_decay")
@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_optax(name):
    """float64, rtol 1e-10: updates, states and params at each of 10 steps."""
    _run(name, steps=10)


@pytest.mark.usefixtures("f64_adafactor_decay")
@pytest.mark.parametrize("name", FLOAT32)
def test_matches_optax_float32(name):
    _run(name, dtype=torch.float32, steps=8)


@pytest.mark.usefixtures("f64_adafactor_decay")
@pytest.mark.parametrize("name", NONE_CASES)
def test_none_leaves_match_optax(name):
    """``None`` leaves (params without gradient): no update and no state there, as in optax."""
    _run(name, with_none=True, steps=4)


COMPLEX_CASES = {
    "adabelief": lambda L: L.tx.adabelief(0.1),
    "adamaxw": lambda L: L.tx.adamaxw(0.1, weight_decay=0.1),
    "yogi": lambda L: L.tx.yogi(0.1),
    "radam": lambda L: L.tx.radam(0.1),
    "novograd": lambda L: L.tx.novograd(0.1, weight_decay=0.1),
    # (no momentum: its float32 ``dtype_momentum`` drops the imaginary part, in optax too)
    "adafactor": lambda L: L.tx.adafactor(0.1, min_dim_size_to_factor=2, weight_decay_rate=0.1),
}


def _real_view(tree: dict) -> dict:
    """Complex leaves of a flat dict as (..., 2) real arrays: imaginary parts are compared too."""

    def conv(x):
        x = np.asarray(x.detach() if isinstance(x, torch.Tensor) else x)
        return np.stack([x.real, x.imag], -1) if np.iscomplexobj(x) else x

    return {k: conv(v) for k, v in tree.items()}


@pytest.mark.usefixtures("f64_adafactor_decay")
@pytest.mark.parametrize("name", sorted(COMPLEX_CASES))
def test_complex_params_match_optax(name):
    """The optimizers optax runs on complex parameters (its alias tests), complex128: updates
    and params, real and imaginary parts."""
    g = torch.Generator().manual_seed(5)

    def cplx(shape):
        return torch.complex(
            torch.randn(shape, generator=g, dtype=torch.float64),
            torch.randn(shape, generator=g, dtype=torch.float64),
        )

    p_t = {"w": cplx((3, 4)), "b": cplx((4,)), "s": cplx(())}
    p_j = to_jax(p_t)
    tx_t, tx_j = COMPLEX_CASES[name](TORCH), COMPLEX_CASES[name](JAX)
    s_t, s_j = tx_t.init(p_t), tx_j.init(p_j)
    for _ in range(5):
        grads = {n: cplx(x.shape) for n, x in p_t.items()}
        u_t, s_t = tx_t.update(grads, s_t, p_t)
        u_j, s_j = tx_j.update(to_jax(grads), s_j, p_j)
        assert_trees_close(_real_view(u_t), _real_view(u_j), rtol=1e-10, atol=1e-12)
        p_t, p_j = otx.apply_updates(p_t, u_t), optax.apply_updates(p_j, u_j)
    assert_trees_close(_real_view(p_t), _real_view(p_j), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Adafactor on large (factored by default) matrices, and optax's float32 decay
# --------------------------------------------------------------------------------------------


def _big(dtype: torch.dtype = torch.float64):
    """A tree with matrices large enough to be factored with the default (128) threshold."""
    g = torch.Generator().manual_seed(3)
    return {
        "w": torch.rand(128, 130, generator=g, dtype=dtype) - 0.5,
        "t": torch.rand(2, 129, 128, generator=g, dtype=dtype) - 0.5,
        "b": torch.rand(130, generator=g, dtype=dtype) - 0.5,
        "s": torch.rand((), generator=g, dtype=dtype),
    }


def test_adafactor_default_factors_large_matrices(f64_adafactor_decay):
    run_both(lambda L: L.tx.adafactor(0.1, momentum=0.5), params=_big(), steps=4)
    state = otx.scale_by_factored_rms().init(_big())
    # (128, 130): v_row drops the largest axis (130), v_col the second largest (128);
    # (2, 129, 128): factored over 129 x 128, the leading axis kept in both
    assert state.v_row["w"].shape == (128,) and state.v_col["w"].shape == (130,)
    assert state.v_row["t"].shape == (2, 128) and state.v_col["t"].shape == (2, 129)
    assert state.v["w"].shape == (1,) and state.v["b"].shape == (130,)
    assert state.v_row["b"].shape == (1,) and state.v["s"].shape == ()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_factored_rms_default_decay_matches_optax_float32_decay(dtype):
    """Deviation: our default decay is computed in float64, optax's in float32 (whose rounding
    of ``pow`` depends on the machine): the results agree to float32 resolution."""
    tol = {"rtol": 1e-6, "atol": 1e-7} if dtype == torch.float64 else {}
    run_both(lambda L: L.tx.adafactor(min_dim_size_to_factor=2), dtype=dtype, steps=8, **tol)


def test_factored_rms_decay_is_the_float64_power_schedule():
    from optax_torch.transforms.factorized import _decay_rate_pow

    for k in (0, 1, 3, 10, 1000):
        d = _decay_rate_pow(torch.tensor(k, dtype=torch.int32), 0.8)
        assert d.dtype == torch.float64
        assert d.item() == pytest.approx(1 - (k + 1) ** -0.8, rel=1e-15, abs=1e-16)


# --------------------------------------------------------------------------------------------
# Hyperparameters as tensors (inject_hyperparams), schedules
# --------------------------------------------------------------------------------------------


def _t(v):
    return torch.tensor(v, dtype=torch.float64)


TENSOR_CASES: dict[str, tuple[Any, Any]] = {
    "adamax": (lambda: otx.scale_by_adamax(_t(0.8), _t(0.95), _t(1e-3)),
               lambda: optax.scale_by_adamax(0.8, 0.95, 1e-3)),
    "belief": (lambda: otx.scale_by_belief(_t(0.8), _t(0.95), _t(1e-8), _t(1e-10)),
               lambda: optax.scale_by_belief(0.8, 0.95, 1e-8, 1e-10)),
    "yogi": (lambda: otx.scale_by_yogi(_t(0.8), _t(0.95), _t(1e-3), _t(0.0), _t(0.1)),
             lambda: optax.scale_by_yogi(0.8, 0.95, 1e-3, 0.0, 0.1)),
    "radam": (lambda: otx.scale_by_radam(_t(0.8), _t(0.99), _t(1e-8), _t(0.0), _t(6.0)),
              lambda: optax.scale_by_radam(0.8, 0.99, 1e-8, 0.0, 6.0)),
    "adadelta": (lambda: otx.scale_by_adadelta(_t(0.7), _t(1e-4)),
                 lambda: optax.scale_by_adadelta(0.7, 1e-4)),
    "lion": (lambda: otx.scale_by_lion(_t(0.8), _t(0.95)),
             lambda: optax.scale_by_lion(0.8, 0.95)),
    "novograd": (lambda: otx.scale_by_novograd(_t(0.8), _t(0.5), _t(1e-6), _t(0.0), _t(0.1)),
                 lambda: optax.scale_by_novograd(0.8, 0.5, 1e-6, 0.0, 0.1)),
    "adan": (lambda: otx.scale_by_adan(_t(0.9), _t(0.8), _t(0.95), _t(1e-6), _t(1e-7)),
             lambda: optax.scale_by_adan(0.9, 0.8, 0.95, 1e-6, 1e-7)),
    "sm3": (lambda: otx.scale_by_sm3(_t(0.5), _t(0.9), _t(1e-6)),
            lambda: optax.scale_by_sm3(0.5, 0.9, 1e-6)),
    "sm3_b2_one": (lambda: otx.scale_by_sm3(_t(0.5), _t(1.0)),
                   lambda: optax.scale_by_sm3(0.5, 1.0)),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(TENSOR_CASES))
def test_tensor_hyperparameters_match_optax(name):
    """0-d float64 tensor hyperparameters (as inject_hyperparams gives them) == optax's floats."""
    ours, theirs = TENSOR_CASES[name]
    params = _no_scalar() if name.startswith("sm3") else None
    steps = 8 if name == "radam" else 4  # radam: rho_k crosses the threshold at step 7
    run_both(lambda L: ours() if L.is_torch else theirs(), params=params, steps=steps)


def test_inject_hyperparams_radam():
    """Through inject_hyperparams (hyperparameters in state, threshold compared as a tensor)."""
    run_both(
        lambda L: L.tx.inject_hyperparams(L.tx.radam)(learning_rate=0.01, b2=0.99, threshold=6.0),
        steps=8,
    )


def test_inject_hyperparams_adafactor_with_momentum_equals_plain_adafactor():
    """optax's ``inject_hyperparams(adafactor)(momentum=...)`` raises (it turns the
    ``dtype_momentum`` class into an array); ours equals the plain optimizer."""
    params = params_tree()
    kw = {"learning_rate": 0.01, "min_dim_size_to_factor": 2, "momentum": 0.9}
    injected = otx.inject_hyperparams(otx.adafactor)(**kw)
    plain = otx.adafactor(**kw)
    s_i, s_p = injected.init(params), plain.init(params)
    for k in range(4):
        g = like_tree(params, seed=20 + k)
        u_i, s_i = injected.update(g, s_i, params)
        u_p, s_p = plain.update(g, s_p, params)
        assert_trees_close(u_i, u_p, rtol=1e-12, atol=1e-14)
    with pytest.raises(TypeError):
        tx = optax.inject_hyperparams(optax.adafactor)(**kw)
        p_j = to_jax(params)
        tx.update(p_j, tx.init(p_j), p_j)


# --------------------------------------------------------------------------------------------
# Moment dtypes (mu_dtype optax's; nu_dtype and most mu_dtype are extensions)
# --------------------------------------------------------------------------------------------

DTYPE_CASES: dict[str, Any] = {
    "adamax": lambda **kw: otx.adamax(0.01, **kw),
    "adabelief": lambda **kw: otx.adabelief(0.01, **kw),
    "yogi": lambda **kw: otx.yogi(0.01, **kw),
    "radam": lambda **kw: otx.radam(0.01, **kw),
    "adan": lambda **kw: otx.adan(0.01, **kw),
    "adam": lambda **kw: otx.adam(0.01, **kw),
    "adamw": lambda **kw: otx.adamw(0.01, weight_decay=0.1, **kw),
}


def test_low_precision_moments_halve_the_adapter_state():
    """``TorchOptimizer(params, adamw, mu_dtype=bfloat16, nu_dtype=bfloat16)``: half the state
    bytes of float32 moments (torch's AdamW's), kept across steps and a state_dict round trip."""
    from optax_torch import TorchOptimizer

    def state_bytes(opt):
        return sum(
            v.numel() * v.element_size()
            for entry in opt.state.values()
            for v in entry.values()
            if isinstance(v, torch.Tensor) and v.dim() > 0
        )

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
    low_model = copy.deepcopy(model)
    x, y = torch.randn(64, 16), torch.randn(64, 4)
    kw = dict(lr=1e-2, weight_decay=0.1)
    full = TorchOptimizer(model.parameters(), otx.adamw, **kw)
    low = TorchOptimizer(
        low_model.parameters(), otx.adamw, mu_dtype=torch.bfloat16, nu_dtype=torch.bfloat16, **kw
    )
    for _ in range(20):
        for m, opt in ((model, full), (low_model, low)):
            opt.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            opt.step()
    assert state_bytes(low) * 2 == state_bytes(full)
    reference = torch.optim.AdamW(copy.deepcopy(model).parameters(), **kw)
    reference.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    for p, q in zip(model.parameters(), reference.param_groups[0]["params"]):
        q.grad = p.grad.clone()
    reference.step()
    assert state_bytes(full) == sum(
        v.numel() * v.element_size()
        for entry in reference.state.values()
        for v in entry.values()
        if v.dim() > 0
    )
    for p, q in zip(model.parameters(), low_model.parameters()):
        torch.testing.assert_close(p, q, rtol=0.05, atol=5e-3)
    sd = low.state_dict()
    again = TorchOptimizer(
        copy.deepcopy(low_model).parameters(),
        otx.adamw,
        mu_dtype=torch.bfloat16,
        nu_dtype=torch.bfloat16,
        **kw,
    )
    again.load_state_dict(sd)
    assert state_bytes(again) == state_bytes(low)


@pytest.mark.parametrize("name", sorted(DTYPE_CASES))
def test_moment_dtypes(name):
    """Moments kept in bfloat16 stay bfloat16; updates keep the gradients' dtype; the steps stay
    close to the full-precision ones."""
    make = DTYPE_CASES[name]
    params = params_tree(dtype=torch.float32)
    low = make(mu_dtype=torch.bfloat16, nu_dtype=torch.bfloat16)
    full = make()
    s_low, s_full = low.init(params), full.init(params)
    inner = s_low[0]
    moments = [f for f in inner._fields if f not in ("count", "t", "g")]
    for f in moments:
        for x in otree.leaves(getattr(inner, f)):
            assert x.dtype == torch.bfloat16, f
    for k in range(5):
        g = like_tree(params, seed=1000 + k)
        u_low, s_low = low.update(g, s_low, params)
        u_full, s_full = full.update(g, s_full, params)
        for f in moments:
            for x in otree.leaves(getattr(s_low[0], f)):
                assert x.dtype == torch.bfloat16, f
        for x in otree.leaves(u_low):
            assert x.dtype == torch.float32
        assert_trees_close(u_low, u_full, rtol=0.1, atol=2e-3)


@pytest.mark.parametrize("name", ["lion", "novograd"], ids=["lion_mu_dtype", "novograd_mu_dtype"])
def test_optax_mu_dtype_matches_optax(name):
    """optax's own ``mu_dtype`` (float32 moments under float64 params)."""

    def build(L):
        if name == "lion":
            return L.tx.scale_by_lion(mu_dtype=L.float32)
        return L.tx.scale_by_novograd(mu_dtype=L.float32)

    # the momentum is rounded to float32 in both libraries: float32-level agreement
    run_both(build, rtol=1e-5, atol=1e-6)


def test_novograd_updates_keep_gradient_dtype():
    """Deviation: optax returns the momentum itself (in ``mu_dtype``) as the update; ours casts
    it back to the gradients' dtype (same values)."""
    params = params_tree()
    tx = otx.scale_by_novograd(mu_dtype=torch.float32)
    u, s = tx.update(like_tree(params, seed=1), tx.init(params), params)
    for x, m in zip(otree.leaves(u), otree.leaves(s.mu)):
        assert x.dtype == torch.float64 and m.dtype == torch.float32
        torch.testing.assert_close(x, m.double(), rtol=0, atol=0)


# --------------------------------------------------------------------------------------------
# Documented behaviours and deviations
# --------------------------------------------------------------------------------------------


def test_adadelta_without_learning_rate_descends():
    """Deviation / optax bug: optax's ``adadelta()`` (learning_rate=None) drops the sign flip and
    *ascends*; ours uses learning rate 1 (the paper's Adadelta, ``torch.optim.Adadelta``'s
    default), i.e. exactly ``adadelta(1.0)``."""
    params = params_tree()
    g = like_tree(params, seed=7)
    ours, one = otx.adadelta(), otx.adadelta(1.0)
    u, _ = ours.update(g, ours.init(params), params)
    u1, _ = one.update(g, one.init(params), params)
    assert_trees_close(u, u1, rtol=0, atol=0)
    tx_j = optax.adadelta()
    u_j, _ = tx_j.update(to_jax(g), tx_j.init(to_jax(params)), to_jax(params))
    assert_trees_close(otree.map(torch.neg, u), u_j, rtol=1e-10, atol=1e-12)
    assert float(otree.vdot(u, g)) < 0  # a descent direction


def test_sm3_scalar_parameters():
    """Deviation: a 0-d parameter gets one 0-d accumulator (Adagrad for that scalar); optax's
    state holds none for it and its update raises IndexError."""
    params = {"s": torch.tensor(0.5, dtype=torch.float64), "v": torch.ones(3, dtype=torch.float64)}
    tx_j = optax.scale_by_sm3()
    with pytest.raises(IndexError):
        tx_j.update(to_jax(params), tx_j.init(to_jax(params)))
    b1, eps = 0.9, 1e-8
    tx = otx.scale_by_sm3(b1, 1.0, eps)
    state = tx.init(params)
    assert len(state.mu["s"]) == 1 and state.mu["s"][0].shape == ()
    acc = torch.zeros((), dtype=torch.float64)
    mom = torch.zeros((), dtype=torch.float64)
    for k in range(6):
        g = torch.tensor([0.3, -1.2, 0.0, 2.0, -0.1, 0.7][k], dtype=torch.float64)
        u, state = tx.update({"s": g, "v": torch.ones(3, dtype=torch.float64)}, state)
        acc = acc + g * g
        step = g / torch.sqrt(acc + eps) if acc > 0 else torch.zeros(())
        mom = b1 * mom + (1 - b1) * step
        torch.testing.assert_close(u["s"], mom, rtol=1e-14, atol=0)
        torch.testing.assert_close(state.mu["s"][0], acc, rtol=0, atol=0)


def test_sm3_rejects_complex_params():
    with pytest.raises(ValueError, match="complex"):
        otx.scale_by_sm3().init({"a": torch.ones(2, dtype=torch.complex64)})


def test_adan_state_keeps_its_own_copy_of_the_gradient():
    """The previous gradient lives in the state: reusing the gradient buffers in place (e.g.
    ``zero_grad(set_to_none=False)``) must not change it."""
    params = params_tree()
    g = like_tree(params, seed=1)
    tx = otx.scale_by_adan()
    _, state = tx.update(g, tx.init(params), params)
    expected = otree.map(torch.clone, g)
    for x in otree.leaves(g):
        x.zero_()
    assert_trees_close(state.g, expected, rtol=0, atol=0)


@pytest.mark.parametrize("make", [otx.scale_by_novograd, otx.scale_by_factored_rms])
def test_needs_params(make):
    params = params_tree()
    tx = make()
    with pytest.raises(ValueError, match="params"):
        tx.update(like_tree(params, seed=1), tx.init(params), None)


def test_radam_takes_momentum_steps_until_the_threshold():
    """While rho_k < threshold the update is the debiased momentum itself."""
    params = {"w": torch.ones(4, dtype=torch.float64)}
    tx = otx.scale_by_radam(b1=0.9, b2=0.999, threshold=5.0)
    state = tx.init(params)
    m = torch.zeros(4, dtype=torch.float64)
    modes = []
    for k in range(1, 9):
        g = {"w": torch.linspace(-1, 1, 4, dtype=torch.float64) * k}
        u, state = tx.update(g, state)
        m = 0.9 * m + 0.1 * g["w"]
        rho_inf = 2 / (1 - 0.999) - 1
        rho = rho_inf - 2 * k * 0.999**k / (1 - 0.999**k)
        is_momentum = torch.allclose(u["w"], m / (1 - 0.9**k), rtol=1e-13, atol=0)
        assert is_momentum == (rho < 5.0)
        modes.append(is_momentum)
    assert any(modes) and not all(modes)


DONATION_CASES: dict[str, Any] = {
    "adamaxw": lambda: otx.adamaxw(0.01),
    "adabelief": lambda: otx.adabelief(0.01),
    "yogi": lambda: otx.yogi(0.01),
    "radam": lambda: otx.radam(0.01),
    "adadelta": lambda: otx.adadelta(0.5),
    "lion": lambda: otx.lion(0.01),
    "novograd": lambda: otx.novograd(0.01),
    "adan": lambda: otx.adan(0.01),
    "sm3": lambda: otx.sm3(0.1),
    "adafactor": lambda: otx.adafactor(0.01, min_dim_size_to_factor=2, momentum=0.9),
}


@pytest.mark.parametrize("name", sorted(DONATION_CASES))
def test_donated_steps_equal_pure_steps_and_state_round_trips(name):
    """Donating the old state (as the TorchOptimizer adapter does) gives the same numbers, and
    states load with ``torch.load(weights_only=True)``."""
    build = DONATION_CASES[name]
    tx = build()
    assert otx.is_donation_safe(tx)
    params = _no_scalar() if name == "sm3" else params_tree()
    pure, donated = tx.init(params), tx.init(params)
    for k in range(6):
        g = like_tree(params, seed=50 + k)
        u_p, pure = tx.update(g, pure, params)
        with otree.donate(donated, exclude=(g, params)):
            u_d, donated = tx.update(g, donated, params)
        assert_trees_close(u_d, u_p, rtol=1e-12, atol=1e-14)
        assert_trees_close(donated, pure, rtol=1e-12, atol=1e-14)
    buf = io.BytesIO()
    torch.save(pure, buf)
    buf.seek(0)
    with torch.serialization.safe_globals([Pair]):  # the test tree's own NamedTuple
        loaded = torch.load(buf, weights_only=True)
    assert_trees_close(loaded, pure, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------
# Signatures
# --------------------------------------------------------------------------------------------

NAMES = [
    "scale_by_adamax", "scale_by_belief", "scale_by_yogi", "scale_by_radam", "scale_by_adadelta",
    "scale_by_lion", "scale_by_novograd", "scale_by_adan", "scale_by_sm3", "scale_by_factored_rms",
    "adabelief", "adadelta", "adafactor", "adamax", "adamaxw", "adan", "lion", "novograd", "radam",
    "sm3", "yogi",
]  # fmt: skip
STATES = [
    "ScaleByAdaDeltaState", "ScaleByAdanState", "ScaleByBeliefState", "ScaleByLionState",
    "ScaleByNovogradState", "ScaleBySM3State", "FactoredState",
]  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_signature_is_optaxs(name):
    """Same parameter names, order, kinds and defaults as optax (our keyword-only extensions
    come after optax's parameters)."""
    ours = inspect.signature(getattr(otx, name)).parameters
    theirs = inspect.signature(getattr(optax, name)).parameters
    assert list(ours)[: len(theirs)] == list(theirs)
    for k, p in theirs.items():
        q = ours[k]
        assert q.kind == p.kind, k
        if k == "decay_rate_fn":
            continue  # a function (optax's computes in float32, ours in float64)
        if k == "dtype_momentum":
            assert q.default is torch.float32
            continue
        assert q.default == p.default, k
    for k in list(ours)[len(theirs) :]:
        assert ours[k].kind == inspect.Parameter.KEYWORD_ONLY
        assert ours[k].default is None or ours[k].default is False


@pytest.mark.parametrize("name", STATES)
def test_state_fields_are_optaxs(name):
    assert getattr(otx, name)._fields == getattr(optax, name)._fields


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

INVALID = [
    (lambda: otx.scale_by_adamax(b1=1.0), "b1"),
    (lambda: otx.scale_by_adamax(b2=-0.1), "b2"),
    (lambda: otx.scale_by_adamax(eps=-1e-8), "eps"),
    (lambda: otx.adamax(float("nan")), "learning_rate"),
    (lambda: otx.adamaxw(0.1, weight_decay=-1.0), "weight_decay"),
    (lambda: otx.adamaxw(0.1, b2=1.5), "b2"),
    (lambda: otx.scale_by_belief(b1=-0.5), "b1"),
    (lambda: otx.scale_by_belief(eps_root=-1.0), "eps_root"),
    (lambda: otx.adabelief(float("inf")), "learning_rate"),
    (lambda: otx.adabelief(0.1, b2=1.0), "b2"),
    (lambda: otx.scale_by_yogi(initial_accumulator_value=-1.0), "initial_accumulator_value"),
    (lambda: otx.scale_by_yogi(eps=-1.0), "eps"),
    (lambda: otx.yogi(0.1, b1=2.0), "b1"),
    (lambda: otx.scale_by_radam(threshold=float("nan")), "threshold"),
    (lambda: otx.scale_by_radam(b2=1.0), "b2"),
    (lambda: otx.radam(0.1, eps=-1.0), "eps"),
    (lambda: otx.scale_by_adadelta(rho=1.5), "rho"),
    (lambda: otx.scale_by_adadelta(eps=-1.0), "eps"),
    (lambda: otx.adadelta(0.1, weight_decay=-0.1), "weight_decay"),
    (lambda: otx.scale_by_lion(b1=1.5), "b1"),
    (lambda: otx.scale_by_lion(b2=1.0), "b2"),
    (lambda: otx.scale_by_lion(mode="soft"), "mode"),  # type: ignore[arg-type]
    (lambda: otx.lion(0.1, weight_decay=-1.0), "weight_decay"),
    (lambda: otx.scale_by_novograd(b2=1.0), "b2"),
    (lambda: otx.scale_by_novograd(weight_decay=-1.0), "weight_decay"),
    (lambda: otx.novograd(0.1, eps=-1.0), "eps"),
    (lambda: otx.scale_by_adan(b3=1.0), "b3"),
    (lambda: otx.scale_by_adan(eps_root=-1.0), "eps_root"),
    (lambda: otx.adan(0.1, weight_decay=-1.0), "weight_decay"),
    (lambda: otx.scale_by_sm3(b1=1.0), "b1"),
    (lambda: otx.scale_by_sm3(b2=1.1), "b2"),
    (lambda: otx.scale_by_sm3(eps=-1.0), "eps"),
    (lambda: otx.sm3(0.1, momentum=1.0), "momentum"),
    (lambda: otx.sm3(float("nan")), "learning_rate"),
    (lambda: otx.scale_by_factored_rms(epsilon=-1.0), "epsilon"),
    (lambda: otx.scale_by_factored_rms(min_dim_size_to_factor=-1), "min_dim_size_to_factor"),
    (lambda: otx.scale_by_factored_rms(step_offset=-1), "step_offset"),
    (lambda: otx.adafactor(clipping_threshold=0.0), "clipping_threshold"),
    (lambda: otx.adafactor(momentum=1.0), "momentum"),
    (lambda: otx.adafactor(weight_decay_rate=-1.0), "weight_decay_rate"),
    (lambda: otx.adafactor(decay_rate=-0.8), "decay_rate"),
    (lambda: otx.adafactor(float("inf")), "learning_rate"),
]


@pytest.mark.parametrize("make,arg", INVALID, ids=[f"{i}-{a}" for i, (_, a) in enumerate(INVALID)])
def test_invalid_hyperparameters_raise(make, arg):
    with pytest.raises(ValueError, match=arg):
        make()


def test_tensor_and_schedule_hyperparameters_are_not_checked():
    otx.adamaxw(_t(0.1), b1=_t(0.9), weight_decay=lambda c: 0.1)
    otx.adafactor(lambda c: 0.1, momentum=_t(0.9))
    otx.lion(-0.1)  # a negative learning rate is legal (ascent), as in optax
