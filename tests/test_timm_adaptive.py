"""timm's AdaBelief, AdamP, SGDP, Adan, Adopt and LaProp drop-ins against timm 1.0, step by step."""

from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip("timm")

import timm.optim as T  # noqa: E402
from torch_optim_ref import (  # noqa: E402
    check_resume,
    check_signature,
    check_state_like_torch,
    make_net,
    train_pair,
)

from optax_torch.compat.timm.adopt import Adopt  # noqa: E402
from optax_torch.contrib.adopt import scale_by_adopt  # noqa: E402

F32 = torch.float32

# --------------------------------------------------------------------------------------------
# Adopt
# --------------------------------------------------------------------------------------------

ADOPT_CASES = [
    (dict(lr=0.01), dict(lr=0.02, weight_decay=0.1)),
    (dict(lr=0.01, weight_decay=0.05, decoupled=True), dict(lr=0.02, weight_decay=0.1)),
    (
        dict(lr=0.01, weight_decay=0.05, decoupled=True, corrected_weight_decay=True, caution=True),
        dict(lr=0.005),
    ),
    (dict(lr=0.01, clip_exp=None, maximize=True, caution=True, weight_decay=0.1), {}),
    (dict(lr=0.01, betas=(0.8, 0.99), eps=1e-3, clip_exp=0.5), {}),
]


@pytest.mark.parametrize("kw,bo", ADOPT_CASES)
def test_adopt_matches_timm(kw, bo):
    _, _, ref, ours = train_pair(Adopt, T.Adopt, kw, bo)
    check_state_like_torch(ref, ours)


def test_adopt_float32_resume_signature():
    check_signature(Adopt, T.Adopt)
    train_pair(Adopt, T.Adopt, *ADOPT_CASES[2], dtype=F32)
    check_resume(Adopt, T.Adopt, *ADOPT_CASES[1])
    check_resume(Adopt, T.Adopt, *ADOPT_CASES[3])


@pytest.mark.parametrize(
    "kw",
    [
        dict(lr=-1.0),
        dict(eps=-1.0),
        dict(betas=(1.0, 0.9)),
        dict(betas=(0.9, -0.1)),
        dict(weight_decay=-1.0),
        dict(lr=0.0, corrected_weight_decay=True),
        dict(lr=torch.tensor([0.1, 0.2])),
        dict(lr=torch.tensor(0.1), foreach=True),
    ],
)
def test_adopt_errors_like_timm(kw):
    ps = list(make_net().parameters())
    with pytest.raises(ValueError) as theirs:
        T.Adopt(ps, **kw)
    with pytest.raises(ValueError, match=None) as mine:
        Adopt(ps, **kw)
    assert str(mine.value) == str(theirs.value)


def test_scale_by_adopt_extensions():
    p = [torch.tensor([1.0, -2.0, 3.0])]
    g = [torch.tensor([0.5, 0.5, -0.5])]
    g0 = [x.clone() for x in g]
    tx = scale_by_adopt(caution=True, weight_decay=0.1)
    s = tx.init(p)
    u, s = tx.update(g, s, p)
    assert torch.equal(u[0], torch.zeros(3))  # first step: zero update, decay included
    u, s = tx.update(g, s, p)
    plain, s2 = scale_by_adopt().update(g, scale_by_adopt().init(p), p)
    plain, _ = scale_by_adopt().update(g, s2, p)
    assert torch.allclose(u[0], plain[0] + 0.1 * p[0])  # all signs agree: mask is one
    assert torch.equal(g[0], g0[0])
    with pytest.raises(ValueError):
        scale_by_adopt(weight_decay=-1.0)
    with pytest.raises(ValueError):
        tx.update(g, s, None)
