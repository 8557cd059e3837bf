"""timm's AdaBelief, AdamP, SGDP, Adan, Adopt and LaProp drop-ins against timm 1.0, step by step."""

from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip("timm")

import timm.optim as T  # noqa: E402
from torch_optim_ref import (  # noqa: E402
    assert_nets_close,
    check_resume,
    check_signature,
    check_state_like_torch,
    groups,
    make_net,
    one_step,
    roundtrip,
    train_pair,
)

from optax_torch.compat.timm.adabelief import AdaBelief  # noqa: E402
from optax_torch.compat.timm.adamp import SGDP, AdamP  # noqa: E402
from optax_torch.compat.timm.adan import Adan  # noqa: E402
from optax_torch.compat.timm.adopt import Adopt  # noqa: E402
from optax_torch.compat.timm.laprop import LaProp  # noqa: E402
from optax_torch.contrib.adopt import scale_by_adopt  # noqa: E402
from optax_torch.transforms import scale_by_adam, trace  # noqa: E402
from optax_torch.transforms.adaptive import (  # noqa: E402
    ScaleByAdanLeafStartState,
    ScaleByAdanState,
    ScaleByBeliefAmsgradState,
    ScaleByBeliefState,
    scale_by_adan,
    scale_by_belief,
)
from optax_torch.transforms.laprop import ScaleByLaPropState, scale_by_laprop  # noqa: E402
from optax_torch.transforms.projection import project_scale_invariant  # noqa: E402

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


# --------------------------------------------------------------------------------------------
# AdamP, SGDP (delta 0.1 / 0.3 / 1.0 project 8 / 19 / 48 of 69 weight updates of the run)
# --------------------------------------------------------------------------------------------

ADAMP_CASES = [
    (dict(lr=0.01), dict(lr=0.02, weight_decay=0.1)),
    (dict(lr=0.01, weight_decay=0.05, delta=0.3), dict(lr=0.02, weight_decay=0.1)),
    (dict(lr=0.01, weight_decay=0.05, nesterov=True, delta=1.0, wd_ratio=0.5), {}),
    (dict(lr=0.01, weight_decay=0.05, caution=True, delta=1.0), dict(weight_decay=0.0)),
    (dict(lr=0.01, weight_decay=-0.05, caution=True, nesterov=True, eps=1e-6), {}),
]
SGDP_CASES = [
    (dict(lr=0.05), dict(lr=0.02)),
    (dict(lr=0.05, momentum=0.9, weight_decay=0.01, delta=1.0), dict(lr=0.02)),
    (dict(lr=0.05, momentum=0.9, nesterov=True, caution=True, delta=1.0), dict(weight_decay=0.1)),
    (dict(lr=0.05, momentum=0.5, dampening=0.3, caution=True, delta=0.3), {}),
    (dict(lr=0.05, momentum=0.8, weight_decay=-0.01, wd_ratio=0.3, delta=1.0), {}),
    (dict(lr=0.05, momentum=0.5, dampening=0.3, nesterov=True), {}),
]


@pytest.mark.parametrize("kw,bo", ADAMP_CASES)
def test_adamp_matches_timm(kw, bo):
    _, _, ref, ours = train_pair(AdamP, T.AdamP, kw, bo)
    check_state_like_torch(ref, ours)


@pytest.mark.parametrize("kw,bo", SGDP_CASES)
def test_sgdp_matches_timm(kw, bo):
    _, _, ref, ours = train_pair(SGDP, T.SGDP, kw, bo)
    check_state_like_torch(ref, ours)


def test_adamp_sgdp_float32_resume_signature():
    check_signature(AdamP, T.AdamP)
    check_signature(SGDP, T.SGDP)
    train_pair(AdamP, T.AdamP, *ADAMP_CASES[3], dtype=F32)
    train_pair(SGDP, T.SGDP, *SGDP_CASES[2], dtype=F32)
    check_resume(AdamP, T.AdamP, *ADAMP_CASES[1])
    check_resume(SGDP, T.SGDP, *SGDP_CASES[1])


def test_sgdp_requires_lr_like_timm():
    with pytest.raises(ValueError) as theirs:
        T.SGDP(make_net().parameters())
    with pytest.raises(ValueError) as mine:
        SGDP(make_net().parameters())
    assert str(mine.value) == str(theirs.value)


@pytest.mark.parametrize("nesterov", [False, True])
def test_trace_dampening(nesterov):
    torch.manual_seed(0)
    g = [[torch.randn(3, 4), torch.randn(5)] for _ in range(3)]
    for d in (0.3, torch.tensor(0.3)):
        tx = trace(0.8, nesterov, dampening=d)
        s = tx.init(g[0])
        buf = [torch.zeros_like(x) for x in g[0]]
        for gk in g:
            u, s = tx.update(gk, s)
            buf = [0.8 * b + 0.7 * x for b, x in zip(buf, gk)]
            want = [x + 0.8 * b for x, b in zip(gk, buf)] if nesterov else buf
            torch.testing.assert_close(u, want)
            torch.testing.assert_close(list(s.trace), buf)
    # dampening=0 (the default) is the plain trace, bit for bit
    a, b = trace(0.8, nesterov), trace(0.8, nesterov, dampening=0.0)
    sa, sb = a.init(g[0]), b.init(g[0])
    for gk in g:
        (ua, sa), (ub, sb) = a.update(gk, sa), b.update(gk, sb)
        assert all(torch.equal(x, y) for x, y in zip(ua, ub))
    with pytest.raises(ValueError, match="dampening"):
        trace(0.8, dampening=float("nan"))


def test_project_scale_invariant():
    torch.manual_seed(0)
    p = [torch.randn(4, 6), torch.randn(5)]
    # a gradient orthogonal to each row of p[0]: projected (and its update stays tangential)
    g0 = torch.randn(4, 6)
    g0 = g0 - p[0] * (g0 * p[0]).sum(1, keepdim=True) / (p[0] * p[0]).sum(1, keepdim=True)
    g = [g0, torch.randn(5)]
    before = [x.clone() for x in g + p]
    tx = project_scale_invariant(scale_by_adam(), wd_ratio=0.5, weight_decay=0.1)
    s = tx.init(p)
    u, s = tx.update(g, s, p)
    for x, y in zip(g + p, before):
        assert torch.equal(x, y)
    plain, _ = scale_by_adam().update(g, scale_by_adam().init(p), p)
    radial = (u[0] - 0.05 * p[0]) * p[0]
    assert radial.sum(1).abs().max() < 1e-5
    torch.testing.assert_close(u[1], plain[1] + 0.1 * p[1])
    assert isinstance(s, type(scale_by_adam().init(p)))
    # a gradient along p: not projected
    u, _ = tx.update([p[0].clone(), g[1]], tx.init(p), p)
    plain, _ = scale_by_adam().update([p[0].clone(), g[1]], scale_by_adam().init(p), p)
    torch.testing.assert_close(u[0], plain[0] + 0.1 * p[0])
    for kw in ("delta", "wd_ratio", "eps"):
        with pytest.raises(ValueError):
            project_scale_invariant(scale_by_adam(), **{kw: -1.0})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        tx.update(g, tx.init(p), None)


# --------------------------------------------------------------------------------------------
# AdaBelief (rectified by default: b2 = 0.999 switches to the adaptive step at step 6, 0.9 at 2)
# --------------------------------------------------------------------------------------------

ADABELIEF_CASES = [
    (dict(lr=0.01), dict(lr=0.02, weight_decay=0.1)),
    (dict(lr=0.01, rectify=False), dict(lr=0.02, weight_decay=0.1)),
    (dict(lr=0.01, amsgrad=True, rectify=False, weight_decay=0.05), {}),
    (dict(lr=0.01, amsgrad=True, weight_decay=0.05, fixed_decay=True), dict(weight_decay=0.0)),
    (
        dict(lr=0.01, betas=(0.9, 0.9), degenerated_to_sgd=False, weight_decay=0.05),
        dict(decoupled_decay=False),
    ),
    (dict(lr=0.01, betas=(0.8, 0.9), eps=1e-8, decoupled_decay=False, weight_decay=0.1), {}),
]


@pytest.mark.parametrize("kw,bo", ADABELIEF_CASES)
def test_adabelief_matches_timm(kw, bo):
    _, _, ref, ours = train_pair(AdaBelief, T.AdaBelief, kw, bo)
    check_state_like_torch(ref, ours)


def test_adabelief_float32_resume_signature_errors():
    check_signature(AdaBelief, T.AdaBelief)
    train_pair(AdaBelief, T.AdaBelief, *ADABELIEF_CASES[3], dtype=F32)
    check_resume(AdaBelief, T.AdaBelief, dict(lr=0.01, amsgrad=True, betas=(0.9, 0.9)))
    check_resume(AdaBelief, T.AdaBelief, *ADABELIEF_CASES[0])
    ps = list(make_net().parameters())
    bad: list[dict] = [dict(lr=-1.0), dict(eps=-1.0), dict(betas=(1.0, 0.9)), dict(betas=(0.9, 1))]
    for kw in bad:
        with pytest.raises(ValueError) as theirs:
            T.AdaBelief(ps, **kw)
        with pytest.raises(ValueError) as mine:
            AdaBelief(ps, **kw)
        assert str(mine.value) == str(theirs.value)


def test_scale_by_belief_extensions():
    p = [torch.tensor([1.0, -2.0, 3.0])]
    g = [torch.tensor([0.5, 0.5, -0.5])]
    assert isinstance(scale_by_belief().init(p), ScaleByBeliefState)
    tx = scale_by_belief(amsgrad=True, rectify=True, skip_intractable=True)
    s = tx.init(p)
    assert isinstance(s, ScaleByBeliefAmsgradState)
    u, s = tx.update(g, s, p)
    assert torch.equal(u[0], torch.zeros(3))  # rho_1 < 5 and no SGD fallback
    assert torch.equal(g[0], torch.tensor([0.5, 0.5, -0.5]))
    u, _ = scale_by_belief(rectify=True).update(g, scale_by_belief().init(p), p)
    torch.testing.assert_close(u[0], g[0])  # the SGD fallback: the debiased momentum


# --------------------------------------------------------------------------------------------
# LaProp
# --------------------------------------------------------------------------------------------


@pytest.fixture
def f64_default():
    """timm's LaProp keeps its second-moment debiasing in the default dtype's scalar dtype
    (float32 unless the default is float64); ours is float64: compare under a float64 default."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


LAPROP_CASES = [
    (dict(lr=0.01), dict(lr=0.02, weight_decay=0.1)),
    (dict(lr=0.01, caution=True, weight_decay=0.05), {}),
    (
        dict(lr=0.01, corrected_weight_decay=True, weight_decay=0.05, betas=(0.8, 0.9)),
        dict(lr=0.005),
    ),
    (dict(lr=0.01, eps=1e-8), dict(lr=0.0)),
]


@pytest.mark.parametrize("kw,bo", LAPROP_CASES)
def test_laprop_matches_timm(kw, bo, f64_default):
    _, _, ref, ours = train_pair(LaProp, T.LaProp, kw, bo)
    check_state_like_torch(ref, ours)


def test_laprop_resume_signature(f64_default):
    check_signature(LaProp, T.LaProp)
    check_resume(LaProp, T.LaProp, *LAPROP_CASES[0])
    check_resume(LaProp, T.LaProp, *LAPROP_CASES[2])


def test_laprop_float32_errors():
    train_pair(LaProp, T.LaProp, *LAPROP_CASES[1], dtype=F32)
    ps = list(make_net().parameters())
    bad: list[dict] = [dict(lr=-1.0), dict(eps=-1.0), dict(betas=(1.0, 0.9)), dict(betas=(0.9, 1))]
    bad += [dict(lr=0.0, corrected_weight_decay=True), dict(lr=torch.tensor([0.1, 0.2]))]
    for kw in bad:
        with pytest.raises(ValueError) as theirs:
            T.LaProp(ps, **kw)
        with pytest.raises(ValueError) as mine:
            LaProp(ps, **kw)
        assert str(mine.value) == str(theirs.value)


def test_scale_by_laprop():
    p = [torch.tensor([1.0, -2.0, 3.0])]
    g = [torch.tensor([0.5, 0.5, -0.5])]
    tx = scale_by_laprop(b1=0.9, b2=0.99, eps=0.0)
    s = tx.init(p)
    assert isinstance(s, ScaleByLaPropState)
    u, s = tx.update(g, s, p)
    torch.testing.assert_close(u[0], torch.sign(g[0]))  # first step: g / |g|
    assert torch.equal(g[0], torch.tensor([0.5, 0.5, -0.5]))
    u, _ = scale_by_laprop(learning_rate=0.0).update(g, tx.init(p), p)
    assert torch.equal(u[0], torch.zeros(3))
    for kw in ("b1", "b2", "eps", "learning_rate"):
        with pytest.raises(ValueError):
            scale_by_laprop(**{kw: -1.0})


# --------------------------------------------------------------------------------------------
# Adan (timm: one step count per param group; a parameter's difference starts at its own first
# gradient; the side branch joins late, at group step 2)
# --------------------------------------------------------------------------------------------

ADAN_CASES = [
    (dict(lr=0.01), dict(lr=0.02, weight_decay=0.1)),
    (dict(lr=0.01, no_prox=True, weight_decay=0.05), dict(weight_decay=0.0)),
    (dict(lr=0.01, caution=True, weight_decay=0.05, betas=(0.9, 0.8, 0.95)), dict(lr=0.005)),
    (dict(lr=0.01, caution=True, no_prox=True, eps=1e-3), {}),
]


def _check_adan_state(ref, ours):
    for g, h in zip(ref.param_groups, ours.param_groups):
        for p, q in zip(g["params"], h["params"]):
            assert (p in ref.state) == (q in ours.state)
            if p not in ref.state:
                continue
            a, b = ref.state[p], ours.state[q]
            for key in ("exp_avg", "exp_avg_sq", "exp_avg_diff"):
                torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-12)
            torch.testing.assert_close(b["pre_grad"], -a["neg_pre_grad"], rtol=0, atol=1e-12)
            assert int(b["step"]) == g["step"]


@pytest.mark.parametrize("kw,bo", ADAN_CASES)
def test_adan_matches_timm(kw, bo):
    _, _, ref, ours = train_pair(Adan, T.Adan, kw, bo)
    _check_adan_state(ref, ours)


def test_adan_float32_signature_errors():
    check_signature(Adan, T.Adan)
    train_pair(Adan, T.Adan, *ADAN_CASES[2], dtype=F32)
    ps = list(make_net().parameters())
    bad: list[dict] = [dict(lr=-1.0), dict(eps=-1.0)]
    bad += [dict(betas=b) for b in ((1.0, 0.9, 0.9), (0.9, -1.0, 0.9), (0.9, 0.9, 1.0))]
    for kw in bad:
        with pytest.raises(ValueError) as theirs:
            T.Adan(ps, **kw)
        with pytest.raises(ValueError) as mine:
            Adan(ps, **kw)
        assert str(mine.value) == str(theirs.value)


def test_adan_resume_own_checkpoint():
    kw, bo = ADAN_CASES[2]
    nets = [make_net() for _ in range(2)]
    ref = T.Adan(groups(nets[0], **bo), **kw)
    ours = Adan(groups(nets[1], **bo), **kw)
    for t in range(12):
        if t == 5:
            net = make_net()
            net.load_state_dict(nets[1].state_dict())
            fresh = Adan(groups(net, **bo), **kw)
            fresh.load_state_dict(roundtrip(ours.state_dict()))
            nets[1], ours = net, fresh
        one_step(nets[0], ref, t)
        one_step(nets[1], ours, t)
        assert_nets_close(nets[0], nets[1], 1e-12, f"step {t}")


def test_adan_resume_across_timm():
    check_resume(Adan, T.Adan, *ADAN_CASES[0])
    check_resume(Adan, T.Adan, *ADAN_CASES[2])


def test_scale_by_adan_extensions():
    p = [torch.tensor([1.0, -2.0, 3.0]), torch.tensor([1.0])]
    g1 = [torch.tensor([0.5, 0.5, -0.5]), None]
    g2 = [torch.tensor([0.25, -0.5, -0.5]), torch.tensor([2.0])]
    assert isinstance(scale_by_adan().init(p), ScaleByAdanState)
    tx = scale_by_adan(diff_scale=0.92, caution=True, per_leaf_start=True)
    s = tx.init(p)
    assert isinstance(s, ScaleByAdanLeafStartState)
    _, s = tx.update(g1, s, p)
    assert bool(s.started[0]) and not bool(s.started[1])
    _, s = tx.update(g2, s, p)
    assert bool(s.started[1])
    # the late leaf starts its difference at its own first gradient: v stays zero
    assert torch.equal(s.v[1], torch.zeros(1))
    assert not torch.equal(s.v[0], torch.zeros(3))
    assert torch.equal(g2[0], torch.tensor([0.25, -0.5, -0.5]))


# --------------------------------------------------------------------------------------------
# timm's single-tensor and foreach paths (different op orders), and a closure
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("foreach", [False, True])
def test_single_tensor_and_foreach_paths(foreach, f64_default):
    train_pair(
        AdaBelief, T.AdaBelief, dict(lr=0.01, amsgrad=True, weight_decay=0.05, foreach=foreach)
    )
    train_pair(Adan, T.Adan, dict(lr=0.01, caution=True, weight_decay=0.05, foreach=foreach))
    kw = dict(lr=0.01, caution=True, weight_decay=0.05, decoupled=True, foreach=foreach)
    train_pair(Adopt, T.Adopt, kw)
    train_pair(LaProp, T.LaProp, dict(lr=0.01, caution=True, weight_decay=0.05, foreach=foreach))
    train_pair(AdamP, T.AdamP, dict(lr=0.01, caution=True, delta=1.0), closure=foreach)
