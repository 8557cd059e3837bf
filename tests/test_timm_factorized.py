"""timm's Adafactor, AdafactorBigVision, NvNovoGrad and Adahessian drop-ins against timm 1.0,
step by step (``tests/torch_optim_ref.py``), and the transforms they added."""

from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip("timm")

import timm.optim as T  # noqa: E402
from torch_optim_ref import (  # noqa: E402
    Net,
    assert_nets_close,
    check_resume,
    check_signature,
    check_state_like_torch,
    groups,
    loss_fn,
    make_net,
    roundtrip,
    tol,
    train_pair,
)

from optax_torch.compat.timm.adafactor import Adafactor  # noqa: E402
from optax_torch.compat.timm.adafactor_bv import AdafactorBigVision  # noqa: E402
from optax_torch.compat.timm.adahessian import Adahessian  # noqa: E402
from optax_torch.compat.timm.nvnovograd import NvNovoGrad  # noqa: E402
from optax_torch.transforms.factorized import (  # noqa: E402
    add_adafactor_decayed_weights,
    scale_by_adafactor_step_size,
    scale_by_factored_rms,
    scale_by_novograd,
)
from optax_torch.transforms.hessian import (  # noqa: E402
    average_conv_kernel,
    hutchinson_hessian_diag,
    hutchinson_hessian_diag_from_grads,
    rademacher_like,
    scale_by_adahessian,
)

NV = [
    dict(lr=0.01),
    dict(lr=0.01, weight_decay=0.1, grad_averaging=True),
    dict(lr=0.01, amsgrad=True, betas=(0.9, 0.5)),
    dict(lr=0.01, weight_decay=0.1, decoupled_decay=True),
    dict(lr=0.01, weight_decay=0.1, decoupled_decay=True, corrected_weight_decay=True),
]


def test_nvnovograd_signature():
    check_signature(NvNovoGrad, T.NvNovoGrad)


@pytest.mark.parametrize("kw", NV, ids=str)
def test_nvnovograd_matches_timm(kw):
    _, _, ref, ours = train_pair(NvNovoGrad, T.NvNovoGrad, kw, dict(lr=0.02, weight_decay=0.05))
    check_state_like_torch(ref, ours)


def test_nvnovograd_float32():
    train_pair(NvNovoGrad, T.NvNovoGrad, NV[2], dict(lr=0.02), dtype=torch.float32)


@pytest.mark.parametrize("kw", [NV[0], NV[2]], ids=str)
def test_nvnovograd_resume(kw):
    check_resume(NvNovoGrad, T.NvNovoGrad, kw, dict(lr=0.02))


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(lr=-1.0), "Invalid learning rate: -1.0"),
        (dict(eps=-1.0), "Invalid epsilon value: -1.0"),
        (dict(betas=(1.0, 0.9)), "Invalid beta parameter at index 0: 1.0"),
        (dict(betas=(0.9, -0.1)), "Invalid beta parameter at index 1: -0.1"),
        (dict(lr=0.0, corrected_weight_decay=True), "Corrected weight decay requires"),
    ],
)
def test_nvnovograd_errors(kw, msg):
    p = [torch.nn.Parameter(torch.ones(2))]
    with pytest.raises(ValueError, match=msg) as ours:
        NvNovoGrad(p, **kw)
    with pytest.raises(ValueError) as ref:
        T.NvNovoGrad(p, **kw)
    assert str(ours.value) == str(ref.value)


def test_scale_by_novograd_options():
    params = [torch.randn(3, 2, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
    grads = [torch.randn_like(p) for p in params]
    saved = [g.clone() for g in grads]
    tx = scale_by_novograd(0.9, 0.5, amsgrad=True, grad_averaging=True, nu_dtype=torch.float32)
    state = tx.init(params)
    assert state.nu[0].dtype == torch.float32 and state.nu_max[0].shape == ()
    u, state = tx.update(grads, state, params)
    assert all(torch.equal(g, s) for g, s in zip(grads, saved))
    n0 = grads[0].square().sum().to(torch.float32)
    torch.testing.assert_close(state.nu_max[0], n0)
    torch.testing.assert_close(u[0], 0.1 * grads[0] / (n0.double().sqrt() + 1e-8))
    _, state2 = tx.update([g * 0.01 for g in grads], state, params)
    torch.testing.assert_close(state2.nu_max[0], n0)  # the maximum is kept
    with pytest.raises(ValueError):
        scale_by_novograd(b2=1.0, amsgrad=True)


# ----------------------------------------------------------------------------------------------
# AdafactorBigVision (the test net's weights: (7, 5), (2, 1, 3), (3, 10))
# ----------------------------------------------------------------------------------------------

BV = [
    dict(lr=0.01, momentum_dtype=torch.float64, min_dim_size_to_factor=2),
    dict(lr=0.01, min_dim_size_to_factor=3),  # bfloat16 momentum (the default)
    dict(
        lr=0.01,
        momentum=None,
        decay_offset=3,
        clipping_threshold=0.5,
        weight_decay=0.1,
        min_dim_size_to_factor=2,
    ),
    dict(lr=0.01, caution=True, momentum_dtype="float32", weight_decay=0.1, unscaled_wd=True),
    dict(
        lr=0.01,
        caution=True,
        weight_decay=0.1,
        corrected_weight_decay=True,
        beta2_cap=0.5,
        decay_rate=0.6,
        eps=1e-10,
        min_dim_size_to_factor=1,
    ),
    dict(lr=0.01, weight_decay=0.1, unscaled_wd=True, corrected_weight_decay=True),
]


def test_adafactor_bv_signature():
    check_signature(AdafactorBigVision, T.AdafactorBigVision)


@pytest.mark.parametrize("kw", BV, ids=str)
def test_adafactor_bv_matches_timm(kw):
    _, _, ref, ours = train_pair(
        AdafactorBigVision, T.AdafactorBigVision, kw, dict(lr=0.02, weight_decay=0.05)
    )
    check_state_like_torch(ref, ours)


def test_adafactor_bv_float32():
    train_pair(AdafactorBigVision, T.AdafactorBigVision, BV[2], dict(lr=0.02), dtype=torch.float32)


@pytest.mark.parametrize("kw", [BV[0], BV[1], BV[3]], ids=str)
def test_adafactor_bv_resume(kw):
    check_resume(AdafactorBigVision, T.AdafactorBigVision, kw, dict(lr=0.02))


@pytest.mark.parametrize(
    "kw",
    [
        dict(lr=-1.0),
        dict(weight_decay=-0.1),
        dict(lr=torch.ones(2)),
        dict(lr=0.0, corrected_weight_decay=True),
    ],
    ids=str,
)
def test_adafactor_bv_errors(kw):
    p = [torch.nn.Parameter(torch.ones(2))]
    with pytest.raises(ValueError) as ours:
        AdafactorBigVision(p, **kw)
    with pytest.raises(ValueError) as ref:
        T.AdafactorBigVision(p, **kw)
    assert str(ours.value) == str(ref.value)
    with pytest.raises(AssertionError, match="float8 dtype not supported"):
        AdafactorBigVision(p, momentum_dtype="float8")


def test_scale_by_factored_rms_keepdims():
    params = [torch.randn(3, 4, 5, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
    grads = [torch.randn_like(p) for p in params]
    saved = [g.clone() for g in grads]
    tx = scale_by_factored_rms(
        min_dim_size_to_factor=4,
        step_offset=2,
        keepdims=True,
        clip_offset_step=True,
        beta2_cap=0.9,
    )
    ref = scale_by_factored_rms(
        min_dim_size_to_factor=4, step_offset=2, decay_rate_fn=lambda i, r: 1 - (i + 3.0) ** -r
    )
    state, sref = tx.init(params), ref.init(params)
    assert state.v_row[0].shape == (3, 4, 1) and state.v_col[0].shape == (3, 1, 5)
    assert state.v[0] is None and state.v_row[1] is None and state.v_col[1] is None
    u, state = tx.update(grads, state, params)  # step 1: the decay is 0, as the reference's
    assert all(torch.equal(g, s) for g, s in zip(grads, saved))
    with torch.no_grad():
        uref, sref = ref.update(grads, sref, params)
    for a, b in zip(u, uref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
    torch.testing.assert_close(state.v_row[0].squeeze(-1), sref.v_row[0], rtol=1e-12, atol=0)
    u, state = tx.update(grads, state, params)  # step 2: decay 1 - 1 ** -0.8 = 0, capped
    assert state.count == 2
    with pytest.raises(ValueError):
        scale_by_factored_rms(beta2_cap=-1.0)


# ----------------------------------------------------------------------------------------------
# Adafactor (timm's axes rule: the test net's fc (7, 5) and head (3, 10) factor with
# min_dim_size_to_factor 2, the conv (2, 1, 3) over its first two axes with 0)
# ----------------------------------------------------------------------------------------------

STEP_LR = lambda o: torch.optim.lr_scheduler.StepLR(o, 7, 0.5)  # noqa: E731

AF = [  # (kwargs, scheduler): no scheduler with the relative step (lr=None)
    (dict(lr=0.01, min_dim_size_to_factor=2), STEP_LR),
    (dict(min_dim_size_to_factor=1), None),
    (
        dict(
            lr=0.01,
            betas=(0.9, 0.99),
            weight_decay=0.1,
            caution=True,
            min_dim_size_to_factor=2,
            clip_threshold=0.5,
        ),
        STEP_LR,
    ),
    (
        dict(
            warmup_init=True,
            betas=(0.8, 0.0),
            weight_decay=0.1,
            min_dim_size_to_factor=0,
            decay_rate=-0.6,
            eps=1e-8,
        ),
        None,
    ),
    (dict(scale_parameter=False, weight_decay=0.1, betas=(0.9, 0.9), eps_scale=0.5), None),
    (dict(weight_decay=0.1, betas=(0.9, 0.9), caution=True, eps_scale=0.5), None),
]


def test_adafactor_signature():
    check_signature(Adafactor, T.Adafactor)


@pytest.mark.parametrize("kw, sched", AF, ids=[str(k) for k, _ in AF])
def test_adafactor_matches_timm(kw, sched):
    _, _, ref, ours = train_pair(
        Adafactor, T.Adafactor, kw, dict(weight_decay=0.05), scheduler=sched
    )
    check_state_like_torch(ref, ours)


@pytest.mark.parametrize("i", [0, 3])
def test_adafactor_float32(i):
    kw, sched = AF[i]
    train_pair(Adafactor, T.Adafactor, kw, dict(), scheduler=sched, dtype=torch.float32)


@pytest.mark.parametrize("i", [0, 2, 3])
def test_adafactor_resume(i):
    check_resume(Adafactor, T.Adafactor, AF[i][0], dict(weight_decay=0.02))


def test_adafactor_errors():
    p = [torch.nn.Parameter(torch.ones(2))]
    with pytest.raises(ValueError, match=r"^warmup_init requires relative_step=True$"):
        Adafactor(p, lr=0.1, warmup_init=True)
    with pytest.raises(ValueError, match=r"^warmup_init requires relative_step=True$"):
        T.Adafactor(p, lr=0.1, warmup_init=True)


def test_adafactor_step_size_transforms():
    params = [torch.randn(3, 2, dtype=torch.float64), torch.full((4,), 1e-5, dtype=torch.float64)]
    ups = [torch.randn_like(p) for p in params]
    saved = [u.clone() for u in ups]
    tx = scale_by_adafactor_step_size(warmup_init=True)
    state = tx.init(params)
    for k in (1, 2):
        out, state = tx.update(ups, state, params)
        rms = params[0].square().mean().sqrt()
        torch.testing.assert_close(state.param_rms[0], rms)
        torch.testing.assert_close(out[0], ups[0] * 1e-6 * k * rms)
        torch.testing.assert_close(out[1], ups[1] * 1e-6 * k * 1e-3)  # eps_scale
    assert all(torch.equal(u, s) for u, s in zip(ups, saved))
    fixed = scale_by_adafactor_step_size(0.5)
    out, state = fixed.update(ups, fixed.init(params), params)
    torch.testing.assert_close(out[1], 0.5 * ups[1])
    decay = add_adafactor_decayed_weights(0.1, scale_parameter=False)
    out, _ = decay.update(ups, decay.init(params), params)
    torch.testing.assert_close(out[0], ups[0] + 0.1 * 1e-2 * params[0])
    with pytest.raises(ValueError):
        scale_by_adafactor_step_size(eps_scale=-1.0)
    with pytest.raises(ValueError):
        scale_by_factored_rms(factor_axes="smallest")


# ----------------------------------------------------------------------------------------------
# Adahessian (second order: backward(create_graph=True), so its own training loop)
# ----------------------------------------------------------------------------------------------

AH = [
    dict(lr=0.01),
    dict(lr=0.01, weight_decay=0.1, hessian_power=0.5, n_samples=2),
    dict(lr=0.01, update_each=3, betas=(0.8, 0.9), eps=1e-6),
]


class ConvNet(torch.nn.Module):
    """A 2-d convolution (4-d kernel, for avg_conv_kernel) and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, kernel_size=2)
        self.head = torch.nn.Linear(18, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.conv(x)).flatten(1))


def _train_second_order(make, ours_cls, kw, bo, steps=20, dtype=torch.float64, at=None):
    """timm's Adahessian and ours side by side; with ``at``, both are rebuilt from each
    other's state dicts at that step (timm's generator and p.hess restart, in both)."""
    nets = [make(dtype), make(dtype)]
    opts = [T.Adahessian(groups(nets[0], **bo), **kw), ours_cls(groups(nets[1], **bo), **kw)]
    for t in range(steps):
        if t == at:
            sds = [roundtrip(o.state_dict()) for o in opts]
            opts = [
                T.Adahessian(groups(nets[0], **bo), **kw),
                ours_cls(groups(nets[1], **bo), **kw),
            ]
            opts[0].load_state_dict(sds[1])  # ours -> timm
            opts[1].load_state_dict(sds[0])  # timm -> ours
        for net, opt in zip(nets, opts):
            opt.zero_grad()
            loss = loss_fn(net, t, dtype) if isinstance(net, Net) else _conv_loss(net, t, dtype)
            loss.backward(create_graph=True)
            opt.step()
        assert_nets_close(nets[0], nets[1], tol(dtype), f"step {t}")
    return opts


def _conv_loss(net, t, dtype):
    gen = torch.Generator().manual_seed(t)
    x = torch.randn(4, 2, 3, 4, generator=gen, dtype=torch.float64).to(dtype)
    return net(x).square().mean()


def _make_conv(dtype):
    torch.manual_seed(0)
    return ConvNet().to(dtype)


pytestmark = pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")


def test_adahessian_signature():
    check_signature(Adahessian, T.Adahessian)
    assert Adahessian([torch.nn.Parameter(torch.ones(1))]).is_second_order


@pytest.mark.parametrize("kw", AH, ids=str)
def test_adahessian_matches_timm(kw):
    ref, ours = _train_second_order(make_net, Adahessian, kw, dict(lr=0.02, weight_decay=0.05))
    check_state_like_torch(ref, ours)


def test_adahessian_avg_conv_kernel():
    kw = dict(lr=0.01, avg_conv_kernel=True, update_each=2)
    ref, ours = _train_second_order(_make_conv, Adahessian, kw, dict(lr=0.02), steps=10)
    check_state_like_torch(ref, ours)


def test_adahessian_float32():
    _train_second_order(make_net, Adahessian, AH[1], dict(lr=0.02), dtype=torch.float32)


@pytest.mark.parametrize("kw", [AH[0], AH[2]], ids=str)
def test_adahessian_resume(kw):
    _train_second_order(make_net, Adahessian, kw, dict(lr=0.02), steps=12, at=5)


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(lr=-1.0), "Invalid learning rate: -1.0"),
        (dict(eps=-1.0), "Invalid epsilon value: -1.0"),
        (dict(betas=(1.0, 0.9)), "Invalid beta parameter at index 0: 1.0"),
        (dict(betas=(0.9, 1.0)), "Invalid beta parameter at index 1: 1.0"),
        (dict(hessian_power=2.0), "Invalid Hessian power value: 2.0"),
    ],
)
def test_adahessian_errors(kw, msg):
    p = [torch.nn.Parameter(torch.ones(2))]
    with pytest.raises(ValueError, match=msg) as ours:
        Adahessian(p, **kw)
    with pytest.raises(ValueError) as ref:
        T.Adahessian(p, **kw)
    assert str(ours.value) == str(ref.value)


def test_hutchinson_estimates():
    def f(ps):
        return (ps[0] ** 4).sum() + (ps[0][:2] * ps[1]).sum() ** 2

    params = [torch.randn(3, dtype=torch.float64), torch.randn(2, dtype=torch.float64)]
    saved = [p.clone() for p in params]
    d1 = hutchinson_hessian_diag(f, params, 3, torch.Generator().manual_seed(1))
    leaves = [p.clone().requires_grad_() for p in params]
    grads = torch.autograd.grad(f(leaves), leaves, create_graph=True)
    d2 = hutchinson_hessian_diag_from_grads(grads, leaves, 3, torch.Generator().manual_seed(1))
    for a, b in zip(d1, d2):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert all(torch.equal(p, s) for p, s in zip(params, saved))
    # A separable function: the estimate is the exact diagonal.
    exact = hutchinson_hessian_diag(lambda ps: (ps[0] ** 4).sum(), params[:1])
    torch.testing.assert_close(exact[0], 12 * params[0] ** 2)
    z = rademacher_like([torch.empty(5)], torch.Generator().manual_seed(0))[0]
    assert set(z.tolist()) <= {-1.0, 1.0}
    kernel = torch.randn(2, 3, 2, 2)
    avg = average_conv_kernel(kernel)
    torch.testing.assert_close(avg[:, :, 1, 0], kernel.abs().mean(dim=(2, 3)))
    with pytest.raises(ValueError):
        hutchinson_hessian_diag(f, params, 0)


def test_scale_by_adahessian():
    params = [torch.randn(3, dtype=torch.float64)]
    grads, hess = [torch.randn(3, dtype=torch.float64)], [torch.randn(3, dtype=torch.float64)]
    tx = scale_by_adahessian(0.9, 0.99, 1e-8, 1.0)
    state = tx.init(params)
    u, state = tx.update(grads, state, params, hessian=hess)
    torch.testing.assert_close(u[0], grads[0] / (hess[0].abs() + 1e-8))
    assert state.count == 1 and state.nu[0].shape == (3,)
    with pytest.raises(ValueError, match="hessian"):
        tx.update(grads, state, params)
    with pytest.raises(ValueError):
        scale_by_adahessian(hessian_power=1.5)
