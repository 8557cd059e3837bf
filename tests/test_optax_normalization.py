"""optax_torch against optax: clipping, normalisation, trust ratio and the optimizers on them.

Each case builds one transformation in both libraries (``build(L)``, see ``tests/optax_ref.py``)
and runs 20 steps on the mixed-shape tree, comparing updates, states and params every step, in
float64 (rtol 1e-10) and float32.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import Pair
from optax_ref import grads_tree, inverse_time_schedule, params_tree, run_both

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
}

NONE_CASES = [
    "scale_by_param_block_rms",
    "clip_by_block_rms_active",
    "scale_by_trust_ratio_all",
    "lamb_all",
    "lars_all",
    "fromage",
]


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_optax_f64(name):
    run_both(CASES[name])


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_optax_f32(name):
    run_both(CASES[name], dtype=torch.float32)


@pytest.mark.parametrize("name", NONE_CASES)
def test_matches_optax_with_none_leaves(name):
    run_both(CASES[name], steps=5, with_none=True)


COMPILE_CASES: dict[str, Any] = {
    "stateless": lambda: otx.chain(
        otx.clip_by_block_rms(0.3),
        otx.scale_by_param_block_rms(),
        otx.scale_by_trust_ratio(min_norm=1e-3, trust_coefficient=0.5, eps=1e-6),
    ),
    "lamb": lambda: otx.lamb(0.01, weight_decay=0.1),
    "lars": lambda: otx.lars(0.1, weight_decay=0.1, nesterov=True),
    "fromage": lambda: otx.fromage(0.1),
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
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_tensor_hyperparameters_keep_dtypes():
    """0-d float64 tensor hyperparameters never promote float32 (0-d) leaves."""
    params = params_tree(dtype=torch.float32)
    grads = grads_tree(params, 0)
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    for tx in [otx.scale_by_param_block_rms(t(1e-3)), otx.clip_by_block_rms(t(0.3))]:
        u, _ = tx.update(grads, tx.init(params), params)
        for a, g in zip(otree.leaves(u), otree.leaves(grads)):
            assert a.dtype == g.dtype


@pytest.mark.parametrize(
    ("make", "arg"),
    [
        (lambda v: otx.scale_by_param_block_rms(v), "min_scale"),
        (lambda v: otx.clip_by_block_rms(v), "threshold"),
    ],
)
def test_validation(make, arg):
    with pytest.raises(ValueError, match=arg):
        make(-1.0)
    with pytest.raises(ValueError, match=arg):
        make(float("nan"))


def test_block_rms_needs_params():
    tx = otx.scale_by_param_block_rms()
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


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", sorted(TRUST_RATIO_EDGE))
def test_trust_ratio_zero_param_and_update_norms_match_optax(name, dtype):
    """Zero parameter blocks (the ratio is 1: the raw update moves them) and zero update blocks
    (the ratio is 1: they stay exactly zero, no 0/0), as in optax."""
    params = _zero_leaves(params_tree(dtype=dtype), ("scalar", "pair"))
    run_both(
        TRUST_RATIO_EDGE[name], steps=6, params=params, grads_fn=_grads_with_zeros, dtype=dtype
    )


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
