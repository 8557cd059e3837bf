"""timm's AdamW family and SGDW drop-ins (optax_torch.compat.timm: AdamW, AdamWLegacy, NAdamW,
NAdamLegacy, RAdamLegacy, SGDW) against timm 1.0, step by step, and the keyword extensions of
scale_by_adam / scale_by_amsgrad they use."""

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
    roundtrip,
    train_pair,
)

import optax_torch as otx  # noqa: E402
from optax_torch.compat import timm as C  # noqa: E402
from optax_torch.transforms.moments import scale_by_adam, scale_by_amsgrad  # noqa: E402

BIAS = dict(lr=0.02, weight_decay=0.3)
CLASSES = [
    (C.AdamWLegacy, T.AdamWLegacy),
    (C.NAdamW, T.NAdamW),
    (C.NAdamLegacy, T.NAdamLegacy),
    (C.RAdamLegacy, T.RAdamLegacy),
    (C.SGDW, T.SGDW),
]

# timm's RAdamLegacy computes in float32 whatever the parameter dtype (p.float(), state in
# float32, p.copy_ back); the drop-in computes in the parameter's dtype. Against float64
# parameters the two differ by float32 rounding (relative ~1e-7, parameters of order 1), hence
# this tolerance for RAdamLegacy in float64; in float32 both compute alike (atol 1e-6).
RADAM_F64_ATOL = 2e-6


def test_adamw_is_torch_adamw_dropin():
    from optax_torch.compat.torch_optim import AdamW

    assert T.AdamW is torch.optim.AdamW
    assert C.AdamW is AdamW


@pytest.mark.parametrize("ours,ref", CLASSES, ids=lambda c: getattr(c, "__module__", ""))
def test_signature(ours, ref):
    check_signature(ours, ref)


ADAMW_CASES = [
    dict(lr=0.01),
    dict(lr=0.01, amsgrad=True),
    dict(lr=0.01, caution=True),
    dict(lr=0.01, amsgrad=True, caution=True),
    dict(lr=0.01, corrected_weight_decay=True, weight_decay=0.1),
    dict(lr=0.01, clipping_threshold=0.5),
    dict(lr=0.01, amsgrad=True, clipping_threshold=0.5),
    dict(lr=0.01, maximize=True),
    dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.0, foreach=True),
    dict(
        lr=0.01,
        maximize=True,
        amsgrad=True,
        caution=True,
        clipping_threshold=0.5,
        corrected_weight_decay=True,
    ),
]


@pytest.mark.parametrize("kwargs", ADAMW_CASES, ids=str)
def test_adamw_legacy_matches_timm(kwargs):
    _, _, ref, ours = train_pair(C.AdamWLegacy, T.AdamWLegacy, kwargs, BIAS)
    check_state_like_torch(ref, ours)


NADAMW_CASES = [
    dict(lr=0.01),
    dict(lr=0.01, caution=True),
    dict(lr=0.01, corrected_weight_decay=True, weight_decay=0.1),
    dict(lr=0.01, clipping_threshold=0.5),
    dict(lr=0.01, maximize=True, foreach=True),
    dict(lr=0.01, maximize=True, caution=True, corrected_weight_decay=True, clipping_threshold=1),
]


@pytest.mark.parametrize("kwargs", NADAMW_CASES, ids=str)
def test_nadamw_matches_timm(kwargs):
    _, _, ref, ours = train_pair(C.NAdamW, T.NAdamW, kwargs, BIAS)
    check_state_like_torch(ref, ours)


NADAM_LEGACY_CASES = [
    dict(lr=0.01),
    dict(lr=0.01, weight_decay=0.05),
    dict(lr=0.01, schedule_decay=0.1, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=0.01, schedule_decay=0.0),
]


@pytest.mark.parametrize("kwargs", NADAM_LEGACY_CASES, ids=str)
def test_nadam_legacy_matches_timm(kwargs):
    _, _, ref, ours = train_pair(C.NAdamLegacy, T.NAdamLegacy, kwargs, BIAS)
    check_state_like_torch(ref, ours)


RADAM_CASES = [
    dict(lr=0.01),
    dict(lr=0.01, weight_decay=0.05),
    # beta2 = 0.9: rho_inf = 19, the rectified branch from step 5 on (rho_k >= 5 before that).
    dict(lr=0.01, betas=(0.8, 0.9), eps=1e-6),
]


@pytest.mark.parametrize("kwargs", RADAM_CASES, ids=str)
def test_radam_legacy_matches_timm(kwargs):
    _, _, ref, ours = train_pair(
        C.RAdamLegacy, T.RAdamLegacy, kwargs, BIAS, atol=RADAM_F64_ATOL, steps=25
    )
    check_state_like_torch(ref, ours, atol=RADAM_F64_ATOL)


SGDW_CASES = [
    dict(lr=0.05),
    dict(lr=0.05, weight_decay=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.05, momentum=0.9, caution=True),
    dict(lr=0.05, momentum=0.9, nesterov=True, caution=True),
    # maximize diverges (the loss is a square): a small lr keeps the parameters O(1).
    dict(lr=0.005, momentum=0.9, dampening=0.3, caution=True, maximize=True),
    dict(lr=0.05, momentum=0.9, corrected_weight_decay=True, weight_decay=0.1),
    dict(lr=0.05, caution=True, maximize=True, foreach=True),
]


@pytest.mark.parametrize("kwargs", SGDW_CASES, ids=str)
def test_sgdw_matches_timm(kwargs):
    _, _, ref, ours = train_pair(C.SGDW, T.SGDW, kwargs, BIAS)
    if kwargs.get("momentum", 0) != 0:  # timm keeps momentum_buffer=None without momentum
        check_state_like_torch(ref, ours)


FLOAT32 = [
    (C.AdamWLegacy, T.AdamWLegacy, dict(lr=0.01, amsgrad=True, caution=True)),
    (C.NAdamW, T.NAdamW, dict(lr=0.01, clipping_threshold=0.5)),
    (C.NAdamLegacy, T.NAdamLegacy, dict(lr=0.01, weight_decay=0.05)),
    (C.RAdamLegacy, T.RAdamLegacy, dict(lr=0.01, weight_decay=0.05)),
    (C.SGDW, T.SGDW, dict(lr=0.05, momentum=0.9, nesterov=True, caution=True)),
]


@pytest.mark.parametrize("ours,ref,kwargs", FLOAT32, ids=lambda x: getattr(x, "__name__", ""))
def test_float32(ours, ref, kwargs):
    _, _, r, o = train_pair(ours, ref, kwargs, BIAS, dtype=torch.float32)
    check_state_like_torch(r, o, atol=1e-6)


RESUME = [
    (C.AdamWLegacy, T.AdamWLegacy, dict(lr=0.01, amsgrad=True, corrected_weight_decay=True)),
    (C.NAdamW, T.NAdamW, dict(lr=0.01, caution=True)),
    (C.NAdamLegacy, T.NAdamLegacy, dict(lr=0.01, weight_decay=0.05)),
    (C.SGDW, T.SGDW, dict(lr=0.05, momentum=0.9, dampening=0.3)),
    (C.SGDW, T.SGDW, dict(lr=0.05, momentum=0.9, nesterov=True)),
]


@pytest.mark.parametrize("ours,ref,kwargs", RESUME, ids=lambda x: getattr(x, "__name__", ""))
def test_resume(ours, ref, kwargs):
    check_resume(ours, ref, kwargs, BIAS)


def test_resume_radam_legacy():
    check_resume(C.RAdamLegacy, T.RAdamLegacy, dict(lr=0.01), BIAS, atol=RADAM_F64_ATOL)


def test_sgdw_no_momentum_loads_timm_state():
    # timm stores momentum_buffer=None without momentum; the drop-in has no state then.
    a, b = make_net(), make_net()
    ref, ours = T.SGDW(a.parameters(), lr=0.1), C.SGDW(b.parameters(), lr=0.1)
    for opt, net in ((ref, a), (ours, b)):
        net(torch.randn(2, 5, dtype=torch.float64)).sum().backward()
        opt.step()
    ours.load_state_dict(roundtrip(ref.state_dict()))
    ref.load_state_dict(roundtrip(ours.state_dict()))


def test_legacy_state_dict_has_python_scalars():
    net = make_net()
    for cls, keys in ((C.NAdamLegacy, {"step": int, "m_schedule": float}), (C.RAdamLegacy, {})):
        opt = cls(net.parameters(), lr=0.01)
        net(torch.randn(2, 5, dtype=torch.float64)).sum().backward()
        opt.step()
        entry = opt.state_dict()["state"][0]
        assert type(entry["step"]) is int and entry["step"] == 1
        for k, kind in keys.items():
            assert type(entry[k]) is kind


def test_max_lr_snapshot_group_key():
    net = make_net()
    for cls in (C.AdamWLegacy, C.NAdamW, C.SGDW):
        groups = [{"params": [net.fc.weight]}, {"params": [net.fc.bias], "lr": 0.5}]
        opt = cls(groups, lr=0.1, corrected_weight_decay=True)
        ref = getattr(T, cls.__name__)(
            [{"params": [net.fc.weight]}, {"params": [net.fc.bias], "lr": 0.5}],
            lr=0.1,
            corrected_weight_decay=True,
        )
        assert [g["max_lr_snapshot"] for g in opt.param_groups] == [0.1, 0.1]
        assert [list(g) for g in opt.param_groups] == [list(g) for g in ref.param_groups]


def _raises_like(ours, ref, *args, **kwargs):
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(Exception) as expected:
        ref(params, *args, **kwargs)
    with pytest.raises(type(expected.value)) as got:
        ours(params, *args, **kwargs)
    assert str(got.value) == str(expected.value)


@pytest.mark.parametrize(
    "ours,ref,kwargs",
    [
        (C.AdamWLegacy, T.AdamWLegacy, dict(lr=-1.0)),
        (C.AdamWLegacy, T.AdamWLegacy, dict(eps=-1.0)),
        (C.AdamWLegacy, T.AdamWLegacy, dict(betas=(1.0, 0.9))),
        (C.AdamWLegacy, T.AdamWLegacy, dict(betas=(0.9, -0.1))),
        (C.AdamWLegacy, T.AdamWLegacy, dict(lr=0.0, corrected_weight_decay=True)),
        (C.NAdamW, T.NAdamW, dict(lr=-1.0)),
        (C.NAdamW, T.NAdamW, dict(eps=-1.0)),
        (C.NAdamW, T.NAdamW, dict(betas=(0.9, 1.0))),
        (C.NAdamW, T.NAdamW, dict(weight_decay=-1.0)),
        (C.NAdamW, T.NAdamW, dict(lr=0.0, corrected_weight_decay=True)),
        (C.NAdamLegacy, T.NAdamLegacy, dict(lr=-1.0)),
        (C.SGDW, T.SGDW, dict(lr=-1.0)),
        (C.SGDW, T.SGDW, dict(momentum=-1.0)),
        (C.SGDW, T.SGDW, dict(weight_decay=-1.0)),
        (C.SGDW, T.SGDW, dict(nesterov=True)),
        (C.SGDW, T.SGDW, dict(nesterov=True, momentum=0.9, dampening=0.1)),
        (C.SGDW, T.SGDW, dict(lr=0.0, corrected_weight_decay=True)),
    ],
    ids=str,
)
def test_validation(ours, ref, kwargs):
    _raises_like(ours, ref, **kwargs)


# --------------------------------------------------------------------------------------------
# The keyword extensions of scale_by_adam / scale_by_amsgrad
# --------------------------------------------------------------------------------------------


def _tree(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 4, generator=gen, dtype=torch.float64) for _ in range(2)]


def test_nesterov_shared_debias_math():
    b1, b2, eps = 0.9, 0.99, 1e-8
    tx = scale_by_adam(b1, b2, eps, nesterov=True, nesterov_shared_debias=True)
    g1, g2 = _tree(1), _tree(2)
    before = [x.clone() for x in g2]
    state = tx.init(g1)
    _, state = tx.update(g1, state)
    u, state = tx.update(g2, state)
    assert all(torch.equal(x, y) for x, y in zip(g2, before))  # inputs not mutated
    for a, b, out in zip(g1, g2, u):
        m = (1 - b1) * (b1 * a + b)
        v = (1 - b2) * (b2 * a * a + b * b)
        expect = (b1 * m + (1 - b1) * b) / (1 - b1**2) / ((v / (1 - b2**2)).sqrt() + eps)
        torch.testing.assert_close(out, expect, rtol=1e-12, atol=1e-12)
    # Without nesterov the keyword changes nothing; default unchanged.
    ref = scale_by_adam(b1, b2, eps)
    plain = scale_by_adam(b1, b2, eps, nesterov_shared_debias=True)
    for x, y in zip(ref.update(g1, ref.init(g1))[0], plain.update(g1, plain.init(g1))[0]):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_clipping_threshold_math(amsgrad):
    thr = 0.3
    make = (lambda **k: scale_by_amsgrad(debias_after_max=True, **k)) if amsgrad else scale_by_adam
    tx, plain = make(clipping_threshold=thr), make()
    g = _tree(3)
    g[1] = g[1] * 1e-3  # the same direction whatever the scale: both leaves clipped
    u, state = tx.update(g, tx.init(g))
    p, _ = plain.update(g, plain.init(g))
    assert otx.tree.structure(state) == otx.tree.structure(plain.init(g))
    for ui, pi, gi in zip(u, p, g):
        # First step: the denominator is |g| + eps (bias-corrected).
        rms = (gi / (gi.abs() + 1e-8)).norm() / gi.numel() ** 0.5
        assert rms / thr > 1
        torch.testing.assert_close(ui, pi / (rms / thr), rtol=1e-12, atol=0)
    # A large threshold never clips.
    big = make(clipping_threshold=1e6)
    for x, y in zip(big.update(g, big.init(g))[0], p):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_clipping_threshold_validation(bad):
    with pytest.raises(ValueError):
        scale_by_adam(clipping_threshold=bad)
    with pytest.raises(ValueError):
        scale_by_amsgrad(clipping_threshold=bad)


@pytest.mark.parametrize(
    "ours,ref,kwargs",
    [
        (C.AdamWLegacy, T.AdamWLegacy, dict(lr=0.01, caution=True, clipping_threshold=0.5)),
        (C.AdamWLegacy, T.AdamWLegacy, dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
        (C.NAdamW, T.NAdamW, dict(lr=0.01, caution=True, clipping_threshold=0.5)),
    ],
    ids=str,
)
def test_complex_params_viewed_as_real(ours, ref, kwargs):
    # timm views complex parameters as real pairs: the cautious mask's mean and the RMS of the
    # clip run over the real view.
    gen = torch.Generator().manual_seed(0)
    init = torch.randn(4, 3, dtype=torch.complex128, generator=gen)
    a, b = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    opt_r, opt_o = ref([a], **kwargs), ours([b], **kwargs)
    for t in range(20):
        g = torch.randn(4, 3, dtype=torch.complex128, generator=gen) + 0.1 * t
        for p, opt in ((a, opt_r), (b, opt_o)):
            p.grad = g + p.detach()
            opt.step()
        torch.testing.assert_close(b, a, rtol=0, atol=1e-12)
