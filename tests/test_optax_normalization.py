"""optax_torch against optax: clipping, normalisation, trust ratio and the optimizers on them.

Each case builds one transformation in both libraries (``build(L)``, see ``tests/optax_ref.py``)
and runs 20 steps on the mixed-shape tree, comparing updates, states and params every step, in
float64 (rtol 1e-10) and float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optax
import pytest
import torch
from conftest import Pair, assert_trees_close, to_jax
from optax_ref import (
    ATOL,
    JAX,
    RTOL,
    TORCH,
    grads_tree,
    inverse_time_schedule,
    params_tree,
    run_jit,
)

import optax_torch as otx
from optax_torch import tree as otree

_schedule = inverse_time_schedule


def _mask(p):
    """True for some leaves (a typical 'only matrices' mask) of the shared test tree."""
    return {
        "scalar": False,
        "empty": True,
        "dense": {"w": True, "b": False},
        "seq": [True, (False, True)],
        "pair": Pair(first=False, second={"z": True}),
    }


def _small_tree(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "w": torch.rand((2, 3), generator=g, dtype=torch.float64) - 0.5,
        "b": torch.rand((3,), generator=g, dtype=torch.float64) - 0.5,
    }


CASES: dict[str, Any] = {
    "scale_by_param_block_rms": lambda L: L.tx.scale_by_param_block_rms(),
    "scale_by_param_block_rms_big_min": lambda L: L.tx.scale_by_param_block_rms(0.5),
    "clip_by_block_rms_active": lambda L: L.tx.clip_by_block_rms(0.3),
    "clip_by_block_rms_inactive": lambda L: L.tx.clip_by_block_rms(10.0),
    # trust ratio
    # (followed by a descent step: alone, the trust ratio doubles the params every step)
    "scale_by_trust_ratio": lambda L: L.tx.chain(L.tx.scale_by_trust_ratio(), L.tx.scale(-0.1)),
    "scale_by_trust_ratio_all": lambda L: L.tx.chain(
        L.tx.scale_by_trust_ratio(min_norm=0.3, trust_coefficient=0.01, eps=1e-3), L.tx.scale(-1)
    ),
    "scale_by_trust_ratio_eps": lambda L: L.tx.chain(
        L.tx.scale_by_trust_ratio(trust_coefficient=0.2, eps=0.5), L.tx.scale(-0.5)
    ),
    # layer-wise optimizers
    "lamb": lambda L: L.tx.lamb(0.01),
    "lamb_all": lambda L: L.tx.lamb(
        _schedule(L), b1=0.8, b2=0.95, eps=1e-4, eps_root=1e-6, weight_decay=0.1, mask=_mask
    ),
    "lamb_wd_schedule": lambda L: L.tx.lamb(0.02, weight_decay=_schedule(L)),
    "lars": lambda L: L.tx.lars(0.1),
    "lars_all": lambda L: L.tx.lars(
        _schedule(L),
        weight_decay=0.01,
        weight_decay_mask=_mask,
        trust_coefficient=0.1,
        eps=1e-3,
        trust_ratio_mask=_mask(None),
        momentum=0.8,
        nesterov=True,
    ),
    "lars_no_momentum_decay": lambda L: L.tx.lars(0.05, weight_decay=0.1, momentum=0.0),
    "fromage": lambda L: L.tx.fromage(0.1),
    "fromage_schedule": lambda L: L.tx.fromage(_schedule(L), min_norm=1e-3),
    # block norm, centralisation, update-norm normalisation
    "scale_by_param_block_norm": lambda L: L.tx.chain(
        L.tx.scale_by_param_block_norm(), L.tx.scale(-0.1)
    ),
    "scale_by_param_block_norm_big_min": lambda L: L.tx.chain(
        L.tx.scale_by_param_block_norm(0.8), L.tx.scale(-0.1)
    ),
    "centralize": lambda L: L.tx.centralize(),
    "centralize_sgd": lambda L: L.tx.chain(L.tx.centralize(), L.tx.sgd(0.1, momentum=0.9)),
    "normalize_by_update_norm": lambda L: L.tx.normalize_by_update_norm(),
    "normalize_by_update_norm_descent": lambda L: L.tx.normalize_by_update_norm(
        scale_factor=-0.5, eps=0.1
    ),
    # adaptive gradient clipping
    "adaptive_grad_clip": lambda L: L.tx.adaptive_grad_clip(0.1),
    "adaptive_grad_clip_eps": lambda L: L.tx.adaptive_grad_clip(0.5, eps=0.1),
    "adaptive_grad_clip_inactive": lambda L: L.tx.adaptive_grad_clip(100.0),
}

NONE_CASES = [
    "scale_by_param_block_rms",
    "clip_by_block_rms_active",
    "scale_by_trust_ratio_all",
    "lamb_all",
    "lars_all",
    "fromage",
    "scale_by_param_block_norm",
    "centralize_sgd",
    "normalize_by_update_norm_descent",
    "adaptive_grad_clip",
]


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_optax_f64(name):
    run_jit(CASES[name])


# float32: one case per name (the float64 cases cover the options)
F32_CASES = [
    "scale_by_param_block_rms",
    "clip_by_block_rms_active",
    "scale_by_trust_ratio_all",
    "lamb_all",
    "lars_all",
    "fromage_schedule",
    "scale_by_param_block_norm",
    "centralize",
    "normalize_by_update_norm_descent",
    "adaptive_grad_clip",
]


@pytest.mark.parametrize("name", F32_CASES)
def test_matches_optax_f32(name):
    run_jit(CASES[name], steps=8, dtype=torch.float32)


@pytest.mark.parametrize("name", NONE_CASES)
def test_matches_optax_with_none_leaves(name):
    run_jit(CASES[name], steps=5, with_none=True)


COMPILE_CASES: dict[str, Any] = {
    "stateless": lambda: otx.chain(
        otx.clip_by_block_rms(0.3),
        otx.scale_by_param_block_rms(),
        otx.scale_by_trust_ratio(min_norm=1e-3, trust_coefficient=0.5, eps=1e-6),
        otx.scale_by_param_block_norm(),
        otx.centralize(),
        otx.adaptive_grad_clip(0.1),
        otx.normalize_by_update_norm(),
    ),
    # one graph for the three optimizers (the chain is only a way to compile them together)
    "layerwise": lambda: otx.chain(
        otx.lamb(0.01, weight_decay=0.1),
        otx.lars(0.1, weight_decay=0.1, nesterov=True),
        otx.fromage(0.1),
    ),
}


@pytest.mark.parametrize("name", sorted(COMPILE_CASES))
def test_compiles(name):
    """The same update under ``torch.compile(fullgraph=True)`` gives the eager result."""
    tx = COMPILE_CASES[name]()
    params = _small_tree(0)
    grads = _small_tree(1)
    state = tx.init(params)
    expected = tx.update(grads, state, params)
    compiled = torch.compile(tx.update, backend="aot_eager", fullgraph=True)
    got = compiled(grads, state, params)
    for a, b in zip(otree.leaves(got), otree.leaves(expected)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_tensor_hyperparameters_keep_dtypes():
    """0-d float64 tensor hyperparameters never promote float32 (0-d) leaves."""
    params = params_tree(dtype=torch.float32)
    grads = grads_tree(params, 0)
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    txs = [
        otx.scale_by_param_block_rms(t(1e-3)),
        otx.clip_by_block_rms(t(0.3)),
        otx.scale_by_param_block_norm(t(1e-3)),
        otx.scale_by_trust_ratio(t(1e-3), t(0.5), t(1e-6)),
        otx.normalize_by_update_norm(t(-1.0), t(1e-6)),
        otx.adaptive_grad_clip(t(0.1), t(1e-3)),
        otx.lamb(t(0.01), t(0.9), t(0.99), t(1e-6), t(0.0), t(0.1)),
        otx.lars(t(0.1), t(0.01), trust_coefficient=t(1e-3), momentum=t(0.9)),
        otx.fromage(t(0.1), t(1e-6)),
    ]
    for tx in txs:
        u, _ = tx.update(grads, tx.init(params), params)
        for a, g in zip(otree.leaves(u), otree.leaves(grads)):
            assert a.dtype == g.dtype


VALIDATION = [
    (lambda v: otx.scale_by_param_block_rms(v), "min_scale"),
    (lambda v: otx.scale_by_param_block_norm(v), "min_scale"),
    (lambda v: otx.clip_by_block_rms(v), "threshold"),
    (lambda v: otx.scale_by_trust_ratio(min_norm=v), "min_norm"),
    (lambda v: otx.scale_by_trust_ratio(trust_coefficient=v), "trust_coefficient"),
    (lambda v: otx.scale_by_trust_ratio(eps=v), "eps"),
    (lambda v: otx.normalize_by_update_norm(eps=v), "eps"),
    (lambda v: otx.adaptive_grad_clip(v), "clipping"),
    (lambda v: otx.adaptive_grad_clip(0.1, eps=v), "eps"),
    (lambda v: otx.lamb(0.1, b1=v), "b1"),
    (lambda v: otx.lamb(0.1, b2=v), "b2"),
    (lambda v: otx.lamb(0.1, eps=v), "eps"),
    (lambda v: otx.lamb(0.1, eps_root=v), "eps_root"),
    (lambda v: otx.lamb(0.1, weight_decay=v), "weight_decay"),
    (lambda v: otx.lars(0.1, weight_decay=v), "weight_decay"),
    (lambda v: otx.lars(0.1, trust_coefficient=v), "trust_coefficient"),
    (lambda v: otx.lars(0.1, eps=v), "eps"),
    (lambda v: otx.lars(0.1, momentum=v), "momentum"),
    (lambda v: otx.fromage(0.1, min_norm=v), "min_norm"),
]


@pytest.mark.parametrize(("make", "arg"), VALIDATION)
def test_validation(make, arg):
    with pytest.raises(ValueError, match=arg):
        make(-1.0)
    with pytest.raises(ValueError, match=arg):
        make(float("nan"))


@pytest.mark.parametrize("make", [otx.lamb, otx.lars, otx.fromage])
def test_learning_rate_validation(make):
    """A negative learning rate is legal (as in optax); a non-finite one is not."""
    make(-0.1)
    make(torch.tensor(float("nan")))  # tensors are not checked
    with pytest.raises(ValueError, match="learning_rate"):
        make(float("inf"))


def test_normalize_by_update_norm_scale_factor_validation():
    otx.normalize_by_update_norm(scale_factor=-1.0)
    with pytest.raises(ValueError, match="scale_factor"):
        otx.normalize_by_update_norm(scale_factor=float("nan"))


@pytest.mark.parametrize(
    "make",
    [
        otx.scale_by_param_block_rms,
        otx.scale_by_param_block_norm,
        otx.scale_by_trust_ratio,
        lambda: otx.adaptive_grad_clip(0.1),
    ],
)
def test_needs_params(make):
    tx = make()
    p = params_tree()
    with pytest.raises(ValueError, match="params"):
        tx.update(p, tx.init(p))


# --------------------------------------------------------------------------------------------
# scale_by_trust_ratio edge cases
# --------------------------------------------------------------------------------------------


def _zero_leaves(tree, names=("scalar", "dense")):
    return {k: otree.map(torch.zeros_like, v) if k in names else v for k, v in tree.items()}


def _grads_with_zeros(params, k):
    """Some leaves get exactly zero gradients: always ("dense"), on even steps ("seq")."""
    g = grads_tree(params, k)
    names = ("dense", "seq") if k % 2 == 0 else ("dense",)
    return _zero_leaves(g, names)


TRUST_RATIO_EDGE = {
    "plain": lambda L: L.tx.chain(L.tx.scale_by_trust_ratio(), L.tx.scale(-0.1)),
    "eps": lambda L: L.tx.chain(
        L.tx.scale_by_trust_ratio(trust_coefficient=0.5, eps=1e-2), L.tx.scale(-0.1)
    ),
    "min_norm": lambda L: L.tx.chain(L.tx.scale_by_trust_ratio(min_norm=0.2), L.tx.scale(-0.1)),
    "lamb": lambda L: L.tx.lamb(0.05),
    "lars": lambda L: L.tx.lars(0.1, weight_decay=0.1),
}


@pytest.mark.parametrize(
    ("name", "dtype"),
    [(name, torch.float64) for name in sorted(TRUST_RATIO_EDGE)]
    + [("plain", torch.float32), ("lars", torch.float32)],
)
def test_trust_ratio_zero_param_and_update_norms_match_optax(name, dtype):
    """Zero parameter blocks (the ratio is 1: the raw update moves them) and zero update blocks
    (the ratio is 1: they stay exactly zero, no 0/0), as in optax."""
    params = _zero_leaves(params_tree(dtype=dtype), ("scalar", "pair"))
    run_jit(TRUST_RATIO_EDGE[name], steps=6, params=params, grads_fn=_grads_with_zeros, dtype=dtype)


def test_trust_ratio_edge_values():
    """The documented cases, checked directly: zero param -> unscaled, zero update -> zero,
    otherwise the update gets the norm c * ||p|| / (1 + eps / ||u||)."""
    tx = otx.scale_by_trust_ratio(trust_coefficient=0.5)
    p = {"zero": torch.zeros(3), "w": torch.tensor([3.0, 4.0]), "v": torch.tensor([1.0, 0.0])}
    u = {"zero": torch.tensor([1.0, 2.0, 2.0]), "w": torch.tensor([0.6, 0.8]), "v": torch.zeros(2)}
    out, _ = tx.update(u, tx.init(p), p)
    torch.testing.assert_close(out["zero"], u["zero"])
    torch.testing.assert_close(out["w"], torch.tensor([1.5, 2.0]))
    assert torch.equal(out["v"], torch.zeros(2))


# --------------------------------------------------------------------------------------------
# unitwise_norm, unitwise_clip, adaptive_grad_clip on all ranks
# --------------------------------------------------------------------------------------------

RANK_SHAPES = [(), (3,), (1, 3, 1), (2, 3), (2, 1, 2), (2, 2, 2, 3), (2, 1, 2, 2, 3), (0,)]


def _rand(shape, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)


@pytest.mark.parametrize("shape", RANK_SHAPES)
def test_unitwise_norm_matches_optax(shape):
    x = _rand(shape, 3)
    out = otx.unitwise_norm(x)
    assert out.shape == x.shape
    assert_trees_close(out, optax.transforms.unitwise_norm(to_jax(x)), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(("shape", "axis"), [((2, 3), 1), ((2, 2, 2, 3), (1, 2)), ((4, 3), 0)])
def test_unitwise_norm_axis_matches_optax(shape, axis):
    x = _rand(shape, 4)
    expected = optax.transforms.unitwise_norm(to_jax(x), axis=axis)
    assert_trees_close(otx.unitwise_norm(x, axis=axis), expected, rtol=RTOL, atol=ATOL)


def test_unitwise_norm_rank_6_needs_axis():
    with pytest.raises(ValueError, match="axis"):
        otx.unitwise_norm(torch.ones((1, 2, 1, 2, 1, 2)))
    assert otx.unitwise_norm(torch.ones((1, 2, 1, 2, 1, 2)), axis=0).shape == (1, 2, 1, 2, 1, 2)


def test_unitwise_clip_matches_optax():
    g_norm, max_norm, grad = _rand((3, 4), 5).abs(), _rand((3, 4), 6).abs(), _rand((3, 4), 7)
    g_norm[0, 0] = 0.0  # below div_eps
    max_norm[1, 1] = g_norm[1, 1]  # equal: clipped (not strictly below)
    for div_eps in (1e-6, 0.3):
        expected = optax.transforms.unitwise_clip(
            to_jax(g_norm), to_jax(max_norm), to_jax(grad), div_eps
        )
        got = otx.unitwise_clip(g_norm, max_norm, grad, div_eps)
        assert_trees_close(got, expected, rtol=RTOL, atol=ATOL)
    with pytest.raises(ValueError, match="shape"):
        otx.unitwise_clip(g_norm, max_norm[:2], grad)


def _conv_params(dtype=torch.float64):
    return {
        "c4": _rand((2, 2, 2, 3), 10, dtype),
        "c5": _rand((2, 1, 2, 2, 3), 11, dtype),
        "m": _rand((3, 4), 12, dtype),
        "mh": _rand((2, 3, 2), 13, dtype),
        "v": _rand((5,), 14, dtype),
        "zero": torch.zeros((2, 2), dtype=dtype),
    }


def _conv_grads(params, k):
    return {
        name: _rand(x.shape, 100 + 10 * k + i, x.dtype)
        for i, (name, x) in enumerate(params.items())
    }


AGC_CASES = {
    "default": lambda L: L.tx.adaptive_grad_clip(0.05),
    "axis_0": lambda L: L.tx.adaptive_grad_clip(0.2, eps=0.5, axis=0),
    "axis_01": lambda L: L.tx.adaptive_grad_clip(0.1, axis=(0, 1)),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", sorted(AGC_CASES))
def test_adaptive_grad_clip_all_ranks_matches_optax(name, dtype):
    """AGC on conv-shaped (rank 4 and 5), multi-head and zero-initialised params."""
    params = _conv_params(dtype)
    if name == "axis_01":
        del params["v"]  # a vector has no axis 1
    run_jit(AGC_CASES[name], steps=5, params=params, grads_fn=_conv_grads, dtype=dtype)


# --------------------------------------------------------------------------------------------
# complex parameters (optax supports them for these names)
# --------------------------------------------------------------------------------------------

COMPLEX_CASES = [
    "lamb",
    "lars",
    "fromage",
    "scale_by_trust_ratio_all",
    "scale_by_param_block_rms",
    "scale_by_param_block_norm",
    "clip_by_block_rms_active",
    "adaptive_grad_clip",
    "centralize",
    "normalize_by_update_norm",
]


def _complex_tree(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "w": torch.randn((3, 2), generator=g, dtype=torch.complex128),
        "v": torch.randn((4,), generator=g, dtype=torch.complex128),
        "s": torch.randn((), generator=g, dtype=torch.complex128),
    }


@pytest.mark.parametrize("name", COMPLEX_CASES)
def test_complex_params_match_optax(name):
    """Complex128 params and gradients, 4 steps; real and imaginary parts compared (the shared
    comparison helpers look at real values only)."""
    tx_t, tx_j = CASES[name](TORCH), CASES[name](JAX)
    p_t = _complex_tree(0)
    p_j = to_jax(p_t)
    s_t, s_j = tx_t.init(p_t), tx_j.init(p_j)
    for k in range(4):
        g = _complex_tree(10 + k)
        u_t, s_t = tx_t.update(g, s_t, p_t)
        u_j, s_j = tx_j.update(to_jax(g), s_j, p_j)
        for key in p_t:
            assert u_t[key].dtype == torch.complex128
            np.testing.assert_allclose(
                u_t[key].numpy(), np.asarray(u_j[key]), rtol=1e-10, atol=1e-12
            )
        p_t = otx.apply_updates(p_t, u_t)
        p_j = optax.apply_updates(p_j, u_j)
