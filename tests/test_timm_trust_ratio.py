"""timm's Lamb, Lars, Lion, MADGRAD and Mars drop-ins against timm 1.0, step by step."""

from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip("timm")

import timm.optim as T  # noqa: E402
from torch_optim_ref import (  # noqa: E402
    check_resume,
    check_signature,
    check_state_like_torch,
    train_pair,
)

from optax_torch.compat import timm as C  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Lion
# ---------------------------------------------------------------------------------------------

LION_CASES = [
    dict(lr=1e-3),
    dict(lr=1e-3, weight_decay=0.5),
    dict(lr=1e-3, betas=(0.8, 0.95), weight_decay=0.3, caution=True),
    dict(lr=1e-3, weight_decay=0.5, corrected_weight_decay=True, maximize=True),
]


@pytest.mark.parametrize("kw", LION_CASES)
def test_lion_matches_timm(kw):
    _, _, ref, ours = train_pair(C.Lion, T.Lion, kw, dict(lr=2e-3, weight_decay=0.0))
    check_state_like_torch(ref, ours)


def test_lion_float32_resume_signature():
    train_pair(C.Lion, T.Lion, dict(lr=1e-3, weight_decay=0.1, caution=True), dtype=torch.float32)
    check_resume(C.Lion, T.Lion, dict(lr=1e-3, weight_decay=0.1), dict(lr=2e-3))
    check_signature(C.Lion, T.Lion)
    p = [torch.zeros(2, requires_grad=True)]
    for bad in (dict(lr=-1.0), dict(betas=(1.0, 0.9)), dict(betas=(0.9, -0.1))):
        with pytest.raises(ValueError) as ours:
            C.Lion(p, **bad)
        with pytest.raises(ValueError) as ref:
            T.Lion(p, **bad)
        assert str(ours.value) == str(ref.value)
