"""optax_torch against optax: clipping, normalisation, trust ratio and the optimizers on them.

Each case builds one transformation in both libraries (``build(L)``, see ``tests/optax_ref.py``)
and runs 20 steps on the mixed-shape tree, comparing updates, states and params every step, in
float64 (rtol 1e-10) and float32.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from optax_ref import TORCH, grads_tree, params_tree, run_both

import optax_torch as otx
from optax_torch import tree as otree


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
}

NONE_CASES = ["scale_by_param_block_rms", "clip_by_block_rms_active"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_optax_f64(name):
    run_both(CASES[name])


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_optax_f32(name):
    run_both(CASES[name], dtype=torch.float32)


@pytest.mark.parametrize("name", NONE_CASES)
def test_matches_optax_with_none_leaves(name):
    run_both(CASES[name], steps=5, with_none=True)


@pytest.mark.parametrize("name", sorted(CASES))
def test_compiles(name):
    """The same update under ``torch.compile(fullgraph=True)`` gives the eager result."""
    tx = CASES[name](TORCH)
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
