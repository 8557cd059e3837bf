"""timm's Lamb, Lars, Lion, MADGRAD and Mars drop-ins against timm 1.0, step by step."""

from __future__ import annotations

from typing import Any

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
    for bad in (dict(lr=-1.0), dict(betas=(1.0, 0.9)), dict(betas=(0.9, -0.1))):
        _same_error(C.Lion, T.Lion, bad)


def _same_error(ours_cls: Any, ref_cls: Any, bad: dict[str, Any], exc: type = ValueError):
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(exc) as ours:
        ours_cls(p, **bad)
    with pytest.raises(exc) as ref:
        ref_cls(p, **bad)
    assert str(ours.value) == str(ref.value)


# ---------------------------------------------------------------------------------------------
# Lars
# ---------------------------------------------------------------------------------------------

LARS_CASES = [
    dict(lr=0.5),
    dict(lr=0.5, weight_decay=0.1),
    dict(lr=0.5, momentum=0.9, weight_decay=0.1, trust_coeff=0.01),
    dict(lr=0.5, momentum=0.9, dampening=0.3, weight_decay=0.1, eps=1e-3),
    dict(lr=0.5, momentum=0.9, nesterov=True, weight_decay=0.1, trust_clip=True),
    dict(lr=0.05, momentum=0.8, always_adapt=True, trust_clip=True, trust_coeff=0.02),
    dict(lr=0.5, momentum=0.9, weight_decay=0.1, foreach=True),
]


@pytest.mark.parametrize("kw", LARS_CASES)
def test_lars_matches_timm(kw):
    _, _, ref, ours = train_pair(C.Lars, T.Lars, kw, dict(lr=0.3, weight_decay=0.0))
    check_state_like_torch(ref, ours)


def test_lars_float32_resume_signature_errors():
    kw = dict(lr=0.5, momentum=0.9, weight_decay=0.1, trust_clip=True)
    train_pair(C.Lars, T.Lars, kw, dtype=torch.float32)
    check_resume(C.Lars, T.Lars, kw, dict(lr=0.3, weight_decay=0.0))
    check_resume(C.Lars, T.Lars, dict(kw, dampening=0.2, trust_clip=False))
    check_signature(C.Lars, T.Lars)
    for bad in (
        dict(lr=-1.0),
        dict(momentum=-0.1),
        dict(weight_decay=-1.0),
        dict(nesterov=True),
        dict(nesterov=True, momentum=0.9, dampening=0.1),
    ):
        _same_error(C.Lars, T.Lars, bad)


def test_trust_ratio_lars_keywords():
    from optax_torch.transforms.normalization import scale_by_trust_ratio

    p = [torch.tensor([3.0, 4.0]), torch.zeros(2)]
    g = [torch.tensor([1.0, 0.0]), torch.tensor([2.0, 0.0])]
    g0 = [x.clone() for x in g]
    tx = scale_by_trust_ratio(trust_coefficient=0.5, weight_decay=0.1, trust_clip=2.0)
    u, _ = tx.update(g, tx.init(p), p)
    r = 0.5 * 5.0 / (1.0 + 0.1 * 5.0)
    torch.testing.assert_close(u[0], min(r / 2.0, 1.0) * (g0[0] + 0.1 * p[0]))
    torch.testing.assert_close(u[1], min(1.0 / 2.0, 1.0) * g0[1])  # zero param norm: ratio 1
    assert all(torch.equal(a, b) for a, b in zip(g, g0))
    for bad in (dict(weight_decay=-1.0), dict(trust_clip=0.0)):
        with pytest.raises(ValueError):
            scale_by_trust_ratio(**bad)


# ---------------------------------------------------------------------------------------------
# MADGRAD
# ---------------------------------------------------------------------------------------------

MADGRAD_CASES = [
    dict(lr=1e-2),
    dict(lr=1e-2, momentum=0.0),
    dict(lr=1e-2, weight_decay=0.1),
    dict(lr=1e-2, weight_decay=0.1, decoupled_decay=True),
    dict(lr=1e-2, momentum=0.0, weight_decay=0.1, decoupled_decay=True, eps=1e-4),
    dict(lr=1e-2, momentum=0.0, weight_decay=0.1),
]


@pytest.mark.parametrize("kw", MADGRAD_CASES)
def test_madgrad_matches_timm(kw):
    _, _, ref, ours = train_pair(C.MADGRAD, T.MADGRAD, kw, dict(lr=2e-2, weight_decay=0.0))
    check_state_like_torch(ref, ours)


def test_madgrad_float32_resume_signature_errors():
    kw = dict(lr=1e-2, weight_decay=0.1, decoupled_decay=True)
    train_pair(C.MADGRAD, T.MADGRAD, kw, dtype=torch.float32)
    check_resume(C.MADGRAD, T.MADGRAD, kw, dict(lr=2e-2, weight_decay=0.0))
    check_resume(C.MADGRAD, T.MADGRAD, dict(kw, momentum=0.0))
    check_signature(C.MADGRAD, T.MADGRAD)
    for bad in (dict(lr=0.0), dict(momentum=1.0), dict(weight_decay=-1.0), dict(eps=-1.0)):
        _same_error(C.MADGRAD, T.MADGRAD, bad)


def test_scale_by_madgrad_keywords():
    from optax_torch.contrib.madgrad import scale_by_madgrad

    p = [torch.tensor([1.0, -2.0])]
    g = [torch.tensor([0.5, 0.25])]
    g0, p0 = [g[0].clone()], [p[0].clone()]
    tx = scale_by_madgrad(0.1, momentum=0.0, keep_x0=False, decoupled_weight_decay=0.5)
    state = tx.init(p)
    assert state.x0 == ()
    u, state = tx.update(g, state, p)
    lamb = 0.1 + 1e-6
    x = p0[0] * (1 - 0.1 * 0.5)
    expected = x - lamb * g0[0] / ((lamb * g0[0] ** 2) ** (1 / 3) + 1e-6)
    torch.testing.assert_close(p0[0] + u[0], expected)
    assert torch.equal(g[0], g0[0]) and torch.equal(p[0], p0[0])
    with pytest.raises(ValueError):
        scale_by_madgrad(0.1, momentum=0.9, keep_x0=False)
    with pytest.raises(ValueError):
        scale_by_madgrad(0.1, decoupled_weight_decay=-1.0)


# ---------------------------------------------------------------------------------------------
# Mars
# ---------------------------------------------------------------------------------------------

MARS_CASES = [
    dict(lr=3e-3),
    dict(lr=3e-3, weight_decay=0.1, gamma=0.05),
    dict(lr=3e-3, weight_decay=0.1, caution=True, betas_1d=(0.8, 0.9), lr_1d_factor=0.5),
    dict(lr=3e-3, weight_decay=0.1, optimize_1d=True, eps=1e-6),
    dict(lr=3e-3, weight_decay=0.1, mars_type="lion"),
    dict(lr=3e-3, mars_type="lion", caution=True, optimize_1d=True),
]


@pytest.mark.parametrize("kw", MARS_CASES)
def test_mars_matches_timm(kw):
    _, _, ref, ours = train_pair(C.Mars, T.Mars, kw, dict(lr=6e-3, weight_decay=0.0))
    check_state_like_torch(ref, ours)


def test_mars_float32_resume_signature_errors():
    kw = dict(lr=3e-3, weight_decay=0.1, caution=True, lr_1d_factor=0.5)
    train_pair(C.Mars, T.Mars, kw, dtype=torch.float32)
    check_resume(C.Mars, T.Mars, kw, dict(lr=6e-3, weight_decay=0.0))
    check_signature(C.Mars, T.Mars)
    for bad in (dict(lr=-1.0), dict(eps=-1.0), dict(betas=(1.0, 0.9)), dict(betas=(0.9, 1.0))):
        _same_error(C.Mars, T.Mars, bad)
    _same_error(C.Mars, T.Mars, dict(mars_type="sgd"), AssertionError)


def test_scale_by_mars_functional():
    from optax_torch.transforms.mars import scale_by_mars

    p = [torch.ones(2, 3), torch.ones(3)]
    g = [torch.full((2, 3), 0.5), torch.full((3,), -0.5)]
    g0 = [x.clone() for x in g]
    tx = scale_by_mars()
    state = tx.init(p)
    u, state = tx.update(g, state, p)
    assert [x.shape for x in u] == [(2, 3), (3,)]
    assert all(torch.equal(a, b) for a, b in zip(g, g0))
    assert torch.equal(state.last_grad[0], g0[0]) and int(state.count) == 1
    bads: list[dict[str, Any]] = [
        dict(b1=1.0),
        dict(eps=-1.0),
        dict(mars_type="sgd"),
        dict(betas_1d=(0.9, 1.5)),
    ]
    for bad in bads:
        with pytest.raises(ValueError):
            scale_by_mars(**bad)


# ---------------------------------------------------------------------------------------------
# Lamb
# ---------------------------------------------------------------------------------------------

LAMB_CASES = [
    dict(lr=1e-2, foreach=False),
    dict(lr=1e-2),
    dict(lr=1e-2, max_grad_norm=None, weight_decay=0.1, foreach=False),
    dict(lr=1e-2, max_grad_norm=0.05, grad_averaging=False, trust_clip=True, foreach=False),
    dict(lr=1e-2, always_adapt=True, caution=True, foreach=False),
    dict(lr=1e-2, weight_decay=0.1, decoupled_decay=True, foreach=False),
    dict(lr=1e-2, weight_decay=0.1, decoupled_decay=True, corrected_weight_decay=True),
]


@pytest.mark.parametrize("kw", LAMB_CASES)
def test_lamb_matches_timm(kw):
    _, _, ref, ours = train_pair(C.Lamb, T.Lamb, kw, dict(lr=2e-2, weight_decay=0.0))
    if kw.get("grad_averaging", True):
        check_state_like_torch(ref, ours)
    else:  # deviation: our exp_avg is the averaged moment, timm's (1 - b1)^-1 times it
        for p, q in zip(ref.param_groups[0]["params"], ours.param_groups[0]["params"]):
            torch.testing.assert_close(
                ours.state[q]["exp_avg"] / (1 - 0.9), ref.state[p]["exp_avg"], rtol=1e-12, atol=0
            )


def test_lamb_float32_resume_signature_errors():
    kw = dict(lr=1e-2, weight_decay=0.1, caution=True, trust_clip=True, max_grad_norm=0.5)
    train_pair(C.Lamb, T.Lamb, kw, dict(weight_decay=0.0), dtype=torch.float32)
    check_resume(C.Lamb, T.Lamb, kw, dict(lr=2e-2, weight_decay=0.0))
    check_resume(C.Lamb, T.Lamb, dict(lr=1e-2, decoupled_decay=True, corrected_weight_decay=True))
    check_resume(C.Lamb, T.Lamb, dict(lr=1e-2, grad_averaging=False, foreach=False))
    check_signature(C.Lamb, T.Lamb)
    for bad in (dict(lr=-1.0), dict(eps=-1.0), dict(weight_decay=-0.1)):
        _same_error(C.Lamb, T.Lamb, bad)
    _same_error(C.Lamb, T.Lamb, dict(lr=0.0, decoupled_decay=True, corrected_weight_decay=True))
    p = torch.nn.Parameter(torch.ones(3))
    opt = C.Lamb([p])
    p.grad = torch.full((3,), 4.0)
    g = p.grad
    opt.step()
    assert p.grad is g and torch.equal(g, torch.full((3,), 4.0))  # pre-clipping out of place


@pytest.mark.parametrize("foreach", [False, True])
def test_lamb_without_bias_correction(foreach):
    train_pair(C.Lamb, T.Lamb, dict(lr=1e-2, bias_correction=False, foreach=foreach))
    train_pair(
        C.Lamb,
        T.Lamb,
        dict(lr=1e-2, bias_correction=False, grad_averaging=False, foreach=foreach),
        dict(weight_decay=0.0),
    )


def test_lion_complex_params_like_timm():
    torch.manual_seed(0)
    z0 = torch.randn(4, 3, dtype=torch.complex128)
    runs = []
    for cls in (C.Lion, T.Lion):
        z = torch.nn.Parameter(z0.clone())
        opt = cls([z], lr=1e-2, weight_decay=0.1, caution=True)
        for t in range(20):
            gen = torch.Generator().manual_seed(t)
            z.grad = torch.randn(4, 3, dtype=torch.complex128, generator=gen)
            opt.step()
        runs.append(z.detach())
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=1e-12)
