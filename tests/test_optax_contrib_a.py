"""optax_torch.contrib against optax.contrib (first half): adopt, ademamix, madgrad, acprop,
cocob, dog/dowg, prodigy, dadapt_adamw, momo, mechanize.

Every case runs :func:`optax_ref.run_both` (20 steps, updates, states and params compared every
step) in float64 (rtol 1e-10) and float32 (float32 tolerances).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from optax_ref import inverse_time_schedule, run_both

import optax_torch as otx
import optax_torch.contrib as otc

F32 = torch.float32

CASES: dict[str, Any] = {
    # adopt
    "adopt": lambda L: L.contrib.adopt(0.01),
    "adopt_nesterov": lambda L: L.contrib.adopt(0.01, b1=0.8, b2=0.99, nesterov=True),
    "adopt_no_clipping": lambda L: L.contrib.adopt(0.01, use_clipping=False, eps=1e-3),
    "adopt_schedule": lambda L: L.contrib.adopt(inverse_time_schedule(L), b2=0.9),
    "scale_by_adopt": lambda L: L.contrib.scale_by_adopt(b1=0.5, b2=0.95),
}

NONE_CASES = ["adopt"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_optax_float64(name):
    run_both(CASES[name])


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_optax_float32(name):
    run_both(CASES[name], dtype=F32)


@pytest.mark.parametrize("name", NONE_CASES)
def test_matches_optax_with_none_leaves(name):
    run_both(CASES[name], steps=5, with_none=True)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

INVALID = [
    (lambda: otc.adopt(float("nan")), "learning_rate"),
    (lambda: otc.adopt(0.1, b1=1.0), "b1"),
    (lambda: otc.adopt(0.1, b2=-0.1), "b2"),
    (lambda: otc.scale_by_adopt(eps=-1.0), "eps"),
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


_ = otx
