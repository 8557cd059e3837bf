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


# --------------------------------------------------------------------------------------------
# Lookahead
# --------------------------------------------------------------------------------------------


def _lookahead(wrapper, base, **base_kw):
    def make(params, **kw):
        return wrapper(base(params, **base_kw), **kw)

    return make


# (our base, timm's base): optax_torch drop-ins under ours, the originals under timm's; and the
# same plain torch optimizer under both.
LOOKAHEAD_BASES = [
    ("torch_optim.AdamW", "AdamW", dict(lr=0.01, weight_decay=0.05)),
    ("timm.RMSpropTF", "RMSpropTF", dict(lr=0.01, momentum=0.9)),
    ("plain", "SGD", dict(lr=0.05, momentum=0.9)),
]


def _bases(which, name):
    from optax_torch.compat import torch_optim as C

    if which == "torch_optim.AdamW":
        return C.AdamW, torch.optim.AdamW
    if which == "timm.RMSpropTF":
        return RMSpropTF, T.RMSpropTF
    return getattr(torch.optim, name), getattr(torch.optim, name)


def test_lookahead_signature():
    check_signature(T.Lookahead, T.Lookahead)  # the harness compares names, kinds and defaults
    from optax_torch.compat.timm.lookahead import Lookahead

    check_signature(Lookahead, T.Lookahead)


@pytest.mark.parametrize("which,name,base_kw", LOOKAHEAD_BASES, ids=lambda x: str(x))
@pytest.mark.parametrize("kw", [dict(), dict(alpha=0.3, k=3), dict(alpha=1.0, k=1)], ids=str)
def test_lookahead_matches_timm(which, name, base_kw, kw):
    from optax_torch.compat.timm.lookahead import Lookahead

    ours_base, ref_base = _bases(which, name)
    _, _, ref, ours = train_pair(
        _lookahead(Lookahead, ours_base, **base_kw),
        _lookahead(T.Lookahead, ref_base, **base_kw),
        kw,
        dict(lr=0.02),
    )
    check_state_like_torch(ref._base_optimizer, ours._base_optimizer)
    check_state_like_torch(ref, ours)
    assert ours.state_dict()["param_groups"][0]["lookahead_step"] == 20


def test_lookahead_float32():
    from optax_torch.compat import torch_optim as C
    from optax_torch.compat.timm.lookahead import Lookahead

    train_pair(
        _lookahead(Lookahead, C.AdamW, lr=0.01),
        _lookahead(T.Lookahead, torch.optim.AdamW, lr=0.01),
        dict(alpha=0.5, k=3),
        dict(lr=0.02),
        dtype=torch.float32,
    )


@pytest.mark.parametrize("which,name,base_kw", LOOKAHEAD_BASES, ids=lambda x: str(x))
def test_lookahead_resume(which, name, base_kw):
    from optax_torch.compat.timm.lookahead import Lookahead

    ours_base, ref_base = _bases(which, name)
    check_resume(
        _lookahead(Lookahead, ours_base, **base_kw),
        _lookahead(T.Lookahead, ref_base, **base_kw),
        dict(alpha=0.6, k=4),
        dict(lr=0.02),
    )


def test_lookahead_loads_base_state_without_lookahead():
    from optax_torch.compat import torch_optim as C
    from optax_torch.compat.timm.lookahead import Lookahead

    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    base = C.AdamW([p], lr=0.1)
    p.grad = torch.ones_like(p)
    base.step()
    opt = Lookahead(C.AdamW([torch.nn.Parameter(p.detach().clone())], lr=0.1), k=2)
    opt.load_state_dict(base.state_dict())
    assert opt.param_groups[0]["lookahead_step"] == 0
    assert opt.param_groups[0]["lookahead_k"] == 2


@pytest.mark.parametrize("kw", [dict(alpha=-0.1), dict(alpha=1.5), dict(k=0)], ids=str)
def test_lookahead_errors(kw):
    from optax_torch.compat.timm.lookahead import Lookahead

    def base():
        return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)

    with pytest.raises(ValueError) as ref:
        T.Lookahead(base(), **kw)
    with pytest.raises(ValueError) as ours:
        Lookahead(base(), **kw)
    assert str(ours.value) == str(ref.value)
