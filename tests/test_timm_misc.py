"""timm's ``RMSpropTF``, ``Lookahead`` and ``Muon`` drop-ins against timm 1.0.31, step by step,
on the shared harness (float64, atol 1e-12; float32, 1e-6), plus their state layout,
checkpoints and constructor errors."""

from __future__ import annotations

import pytest
import torch
from torch_optim_ref import (
    check_resume,
    check_signature,
    check_state_like_torch,
    train_pair,
)

timm = pytest.importorskip("timm")
import timm.optim as T  # noqa: E402

from optax_torch.compat.timm.rmsprop_tf import RMSpropTF  # noqa: E402

# --------------------------------------------------------------------------------------------
# RMSpropTF
# --------------------------------------------------------------------------------------------

RMSPROP_CASES = [
    dict(),
    dict(momentum=0.9),
    dict(momentum=0.9, lr_in_momentum=False),
    dict(centered=True),
    dict(centered=True, momentum=0.8, weight_decay=0.05),
    dict(momentum=0.9, caution=True),
    dict(momentum=0.9, caution=True, lr_in_momentum=False, centered=True),
    dict(weight_decay=0.1, decoupled_decay=True),
    dict(weight_decay=0.1, decoupled_decay=True, momentum=0.9),
    dict(weight_decay=0.1, decoupled_decay=True, momentum=0.9, lr_in_momentum=False),
    dict(weight_decay=0.1, decoupled_decay=True, corrected_weight_decay=True, momentum=0.9),
    dict(weight_decay=0.1, decoupled_decay=True, corrected_weight_decay=True),
    dict(alpha=0.5, eps=1e-3, momentum=0.5),
]


def test_rmsprop_tf_signature():
    check_signature(RMSpropTF, T.RMSpropTF)


@pytest.mark.parametrize("kw", RMSPROP_CASES, ids=str)
def test_rmsprop_tf_matches_timm(kw):
    _, _, ref, ours = train_pair(RMSpropTF, T.RMSpropTF, kw, dict(lr=0.02, weight_decay=0.0))
    check_state_like_torch(ref, ours)


def test_rmsprop_tf_float32():
    train_pair(
        RMSpropTF,
        T.RMSpropTF,
        dict(momentum=0.9, centered=True, weight_decay=0.01),
        dict(lr=0.02),
        dtype=torch.float32,
    )


@pytest.mark.parametrize(
    "kw", [dict(momentum=0.9, centered=True), dict(weight_decay=0.1, decoupled_decay=True)], ids=str
)
def test_rmsprop_tf_resume(kw):
    check_resume(RMSpropTF, T.RMSpropTF, kw, dict(lr=0.02))


@pytest.mark.parametrize(
    "kw",
    [
        dict(lr=-1.0),
        dict(eps=-1.0),
        dict(momentum=-0.1),
        dict(weight_decay=-1.0),
        dict(alpha=-0.5),
        dict(lr=torch.tensor([0.1, 0.2])),
        dict(lr=0.0, weight_decay=0.1, decoupled_decay=True, corrected_weight_decay=True),
    ],
    ids=str,
)
def test_rmsprop_tf_errors(kw):
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError) as ref:
        T.RMSpropTF(p, **kw)
    with pytest.raises(ValueError) as ours:
        RMSpropTF(p, **kw)
    assert str(ours.value) == str(ref.value)
