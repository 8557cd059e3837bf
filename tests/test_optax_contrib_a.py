"""optax_torch.contrib against optax.contrib (first half): adopt, ademamix, madgrad, acprop,
cocob, dog/dowg, prodigy, dadapt_adamw, momo, mechanize.

Every case runs :func:`optax_ref.run_both` (20 steps, updates, states and params compared every
step) in float64 (rtol 1e-10) and float32 (float32 tolerances).
"""

from __future__ import annotations

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
    "adopt_nesterov": lambda L: L.contrib.adopt(0.01, b1=0.8, b2=0.99, nesterov=True),
    "adopt_no_clipping": lambda L: L.contrib.adopt(0.01, use_clipping=False, eps=1e-3),
    "adopt_schedule": lambda L: L.contrib.adopt(inverse_time_schedule(L), b2=0.9),
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
    "simplified_ademamix": lambda L: L.contrib.simplified_ademamix(0.01),
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
}

NONE_CASES = ["adopt", "ademamix_weight_decay_mask", "simplified_ademamix"]


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
