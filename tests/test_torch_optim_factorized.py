"""``compat.torch_optim.Adafactor`` and ``Muon`` against torch 2.13, step by step, and the
transforms they are made of (``scale_by_factored_rms_torch``, ``scale_by_relative_step_size``,
``scale_by_muon``'s torch form, ``scale_by_shape``, ``orthogonalize_via_newton_schulz``).

Adafactor runs on the shared harness (linear, conv (3-d weight: factored over its last two
axes), norm, a side branch that skips steps). Muon takes 2-d parameters only: it runs on a model
of its own, with the same protocol (two param groups, StepLR, a branch that joins late and skips).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
from torch_optim_ref import (
    check_resume,
    check_signature,
    check_state_like_torch,
    roundtrip,
    train_pair,
)

from optax_torch.compat.torch_optim.adafactor import Adafactor
from optax_torch.compat.torch_optim.muon import Muon
from optax_torch.contrib.muon import (
    MuonDimensionNumbers,
    MuonMomentumState,
    MuonState,
    orthogonalize_via_newton_schulz,
    scale_by_muon,
    scale_by_shape,
)
from optax_torch.transforms.factorized import (
    FactoredRmsTorchState,
    scale_by_factored_rms_torch,
    scale_by_relative_step_size,
)

# --------------------------------------------------------------------------------------------
# Adafactor
# --------------------------------------------------------------------------------------------

ADAFACTOR_OPTIONS: list[tuple[dict[str, Any], dict[str, Any]]] = [
    (dict(), dict(lr=0.02)),
    (dict(lr=0.05, weight_decay=0.1), dict(lr=0.02, weight_decay=0.3)),
    (dict(maximize=True, d=1.5, eps=(1e-5, 1e-2)), dict(beta2_decay=-0.5)),
    (dict(lr=0.03, beta2_decay=-0.6, eps=(1e-3, 0.0), foreach=True), dict(d=2.0)),
]


def test_adafactor_signature():
    check_signature(Adafactor, torch.optim.Adafactor)


@pytest.mark.parametrize(("kwargs", "overrides"), ADAFACTOR_OPTIONS)
def test_adafactor_matches_torch(kwargs, overrides):
    _, _, ref, ours = train_pair(Adafactor, torch.optim.Adafactor, kwargs, overrides)
    check_state_like_torch(ref, ours)


def test_adafactor_float32():
    _, _, ref, ours = train_pair(
        Adafactor,
        torch.optim.Adafactor,
        dict(lr=0.05, weight_decay=0.1),
        dict(lr=0.02),
        dtype=torch.float32,
    )
    check_state_like_torch(ref, ours, atol=1e-6)


def test_adafactor_tensor_lr():
    lr = torch.tensor(0.05, dtype=torch.float64)
    train_pair(
        Adafactor, torch.optim.Adafactor, dict(lr=lr, weight_decay=0.1), dict(lr=0.02), steps=10
    )


def test_adafactor_resume():
    check_resume(Adafactor, torch.optim.Adafactor, dict(lr=0.05, weight_decay=0.1), dict(lr=0.02))


ADAFACTOR_BAD: list[dict[str, Any]] = [
    dict(lr=-1.0),
    dict(lr=torch.tensor([0.1, 0.2])),
    dict(beta2_decay=0.5),
    dict(eps=(-1.0, 1e-3)),
    dict(eps=(None, -1e-3)),
    dict(d=0.5),
    dict(weight_decay=-0.1),
]


@pytest.mark.parametrize("kwargs", ADAFACTOR_BAD)
def test_adafactor_validation_like_torch(kwargs):
    p = [torch.nn.Parameter(torch.zeros(2, 3))]
    with pytest.raises(Exception) as theirs:
        torch.optim.Adafactor(p, **kwargs)
    with pytest.raises(type(theirs.value)) as ours:
        Adafactor(p, **kwargs)
    assert str(ours.value) == str(theirs.value)


# --------------------------------------------------------------------------------------------
# Adafactor's transforms
# --------------------------------------------------------------------------------------------


def _params() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    shapes = [(2, 3, 4), (5, 3), (6,), ()]
    return [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]


def test_factored_rms_torch_state_layout():
    params = _params()
    state = scale_by_factored_rms_torch().init(params)
    assert isinstance(state, FactoredRmsTorchState)
    assert state.count.dtype == torch.int32 and state.count.shape == ()
    assert [None if r is None else tuple(r.shape) for r in state.row_var] == [
        (2, 3, 1),
        (5, 1),
        None,
        None,
    ]
    assert [None if c is None else tuple(c.shape) for c in state.col_var] == [
        (2, 1, 4),
        (1, 3),
        None,
        None,
    ]
    assert [None if v is None else tuple(v.shape) for v in state.variance] == [
        None,
        None,
        (6,),
        (),
    ]


def test_factored_rms_torch_math_and_no_mutation():
    params = _params()
    grads = [p.flip(0) * 0.5 + 0.1 if p.dim() else p + 0.3 for p in params]
    g_copy = [g.clone() for g in grads]
    tx = scale_by_factored_rms_torch(beta2_decay=-0.8, eps=1e-30)
    state = tx.init(params)
    s_copy = copy.deepcopy(state)
    updates, new_state = tx.update(grads, state, params)
    for g, c in zip(grads, g_copy):
        assert torch.equal(g, c)
    for old, new in zip(s_copy.row_var, state.row_var):
        assert old is None or torch.equal(old, new)
    assert int(new_state.count) == 1
    # First step: 1 - beta2 = 1, the statistics are this step's.
    g = grads[1]
    row, col = (g * g).mean(-1, keepdim=True), (g * g).mean(-2, keepdim=True)
    torch.testing.assert_close(new_state.row_var[1], row)
    expected = g / torch.sqrt(row @ col / row.mean())
    torch.testing.assert_close(updates[1], expected)
    torch.testing.assert_close(updates[2], grads[2] / grads[2].abs())
    # Second step: lerp with weight 2 ** -0.8.
    updates2, state2 = tx.update(grads, new_state, params)
    torch.testing.assert_close(state2.variance[2], grads[2] ** 2)
    assert int(state2.count) == 2
    assert updates2[0].shape == params[0].shape


def test_factored_rms_torch_none_gradients():
    params = _params()
    tx = scale_by_factored_rms_torch()
    state = tx.init(params)
    grads = [None, params[1], None, params[3]]
    updates, new_state = tx.update(grads, state, params)
    assert updates[0] is None and updates[2] is None
    assert new_state.row_var[0] is state.row_var[0]


def test_factored_rms_torch_validation():
    with pytest.raises(ValueError, match="beta2_decay"):
        scale_by_factored_rms_torch(beta2_decay=0.5)
    with pytest.raises(ValueError, match="eps"):
        scale_by_factored_rms_torch(eps=-1.0)
    with pytest.raises(ValueError, match="complex"):
        scale_by_factored_rms_torch().init([torch.zeros(2, 2, dtype=torch.complex64)])


def test_relative_step_size():
    tx = scale_by_relative_step_size(max_step_size=0.3)
    params = [torch.ones(3, dtype=torch.float64)]
    state = tx.init(params)
    for k in range(1, 16):
        updates, state = tx.update(params, state)
        torch.testing.assert_close(
            updates[0], torch.full((3,), min(0.3, 1 / math.sqrt(k)), dtype=torch.float64)
        )
    assert int(state.count) == 15
    assert torch.equal(params[0], torch.ones(3, dtype=torch.float64))  # not mutated
    with pytest.raises(ValueError, match="max_step_size"):
        scale_by_relative_step_size(-0.1)


# --------------------------------------------------------------------------------------------
# Muon: a model with 2-d parameters only
# --------------------------------------------------------------------------------------------


class MatNet(torch.nn.Module):
    """Three bias-free linear layers (one square) and a side branch used on some steps."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(5, 8, bias=False)
        self.b = torch.nn.Linear(8, 8, bias=False)
        self.c = torch.nn.Linear(8, 3, bias=False)
        self.side = torch.nn.Linear(5, 3, bias=False)

    def forward(self, x: torch.Tensor, step: int) -> torch.Tensor:
        out = self.c(torch.tanh(self.b(torch.tanh(self.a(x)))))
        if step % 3 == 1 or step in (5, 6):  # joins late, skips steps
            out = out + self.side(x)
        return out


def _mat_net(dtype: torch.dtype) -> MatNet:
    torch.manual_seed(0)
    return MatNet().to(dtype)


def _mat_groups(net: MatNet, **overrides: Any) -> list[dict[str, Any]]:
    ps = list(net.parameters())
    return [{"params": ps[:2]}, {"params": ps[2:], **overrides}]


def _mat_step(net: MatNet, opt: Any, t: int, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(100 + t)
    x = torch.randn(8, 5, generator=gen, dtype=torch.float64).to(dtype)
    y = torch.randn(8, 3, generator=gen, dtype=torch.float64).to(dtype)
    opt.zero_grad()
    (net(x, t) - y).square().mean().backward()
    opt.step()


def _max_diff(a: MatNet, b: MatNet) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


def _muon_pair(kwargs, overrides, dtype=torch.float64, steps=20):
    a, b = _mat_net(dtype), _mat_net(dtype)
    ref = torch.optim.Muon(_mat_groups(a, **overrides), **kwargs)
    ours = Muon(_mat_groups(b, **overrides), **kwargs)
    scheds = [torch.optim.lr_scheduler.StepLR(o, 7, 0.5) for o in (ref, ours)]
    worst = 0.0
    for t in range(steps):
        for net, opt in ((a, ref), (b, ours)):
            _mat_step(net, opt, t, dtype)
        for s in scheds:
            s.step()
        worst = max(worst, _max_diff(a, b))
    return worst, ref, ours


MUON_OPTIONS: list[tuple[dict[str, Any], dict[str, Any]]] = [
    (dict(lr=0.02), dict(lr=0.01, weight_decay=0.2)),
    (dict(lr=0.02, nesterov=False, momentum=0.9, weight_decay=0.0), dict(lr=0.01)),
    (dict(lr=0.02, adjust_lr_fn="original"), dict(momentum=0.5)),
    (dict(lr=0.02, adjust_lr_fn="match_rms_adamw", weight_decay=0.05), dict(lr=0.01)),
    (dict(lr=0.02, ns_coefficients=(3.0, -3.2, 1.2), ns_steps=3, eps=1e-5), dict(lr=0.01)),
]


def test_muon_signature():
    check_signature(Muon, torch.optim.Muon)


@pytest.mark.parametrize(("kwargs", "overrides"), MUON_OPTIONS)
def test_muon_matches_torch(kwargs, overrides):
    worst, ref, ours = _muon_pair(kwargs, overrides)
    assert worst <= 1e-12
    check_state_like_torch(ref, ours)


@pytest.mark.parametrize(
    ("kwargs", "overrides", "atol"),
    [
        (dict(lr=0.02, weight_decay=0.0), dict(momentum=0.9), 1e-6),
        (dict(lr=0.02, nesterov=False, weight_decay=0.0), dict(lr=0.01), 1e-6),
        (dict(lr=0.02), dict(lr=0.01), 1e-3),
    ],
)
def test_muon_float32(kwargs, overrides, atol):
    # The Newton-Schulz input is rounded to bfloat16 (as in torch). With weight decay, torch
    # multiplies the parameters then adds the update, the adapter adds one update: the float32
    # roundings differ, and once one of them flips a bfloat16 rounding of the Newton-Schulz
    # input the runs differ by ~lr * 1e-2 (5e-5 here). Without weight decay they stay within
    # float32 rounding over 20 steps.
    worst, _, _ = _muon_pair(kwargs, overrides, dtype=torch.float32)
    assert worst <= atol


def test_muon_tensor_lr():
    lr = torch.tensor(0.02, dtype=torch.float64)
    worst, _, _ = _muon_pair(dict(lr=lr), dict(lr=0.01))
    assert worst <= 1e-12


def test_muon_resume():
    """Checkpoints mid-run (ours -> ours, torch -> ours, ours -> torch), against an uninterrupted
    torch run."""
    kwargs: dict[str, Any] = dict(lr=0.02, weight_decay=0.05)
    overrides: dict[str, Any] = dict(lr=0.01, momentum=0.8)
    nets = [_mat_net(torch.float64) for _ in range(4)]
    opts: list[Any] = [torch.optim.Muon(_mat_groups(nets[0], **overrides), **kwargs)]
    opts += [Muon(_mat_groups(n, **overrides), **kwargs) for n in nets[1:]]
    for t in range(12):
        if t == 5:
            fresh = [copy.deepcopy(n) for n in nets[1:]]
            new = [
                Muon(_mat_groups(fresh[0], **overrides), **kwargs),
                Muon(_mat_groups(fresh[1], **overrides), **kwargs),
                torch.optim.Muon(_mat_groups(fresh[2], **overrides), **kwargs),
            ]
            new[0].load_state_dict(roundtrip(opts[1].state_dict()))
            new[1].load_state_dict(roundtrip(opts[0].state_dict()))
            new[2].load_state_dict(roundtrip(opts[3].state_dict()))
            nets[1:], opts[1:] = fresh, new
        for net, opt in zip(nets, opts):
            _mat_step(net, opt, t, torch.float64)
        for other in nets[1:]:
            assert _max_diff(nets[0], other) <= 1e-12, t


MUON_BAD: list[dict[str, Any]] = [
    dict(lr=-1.0),
    dict(lr=torch.tensor([0.1, 0.2])),
    dict(momentum=-0.5),
    dict(weight_decay=-0.1),
    dict(adjust_lr_fn="nope"),
]


@pytest.mark.parametrize("kwargs", MUON_BAD)
def test_muon_validation_like_torch(kwargs):
    p = [torch.nn.Parameter(torch.zeros(2, 3))]
    with pytest.raises(Exception) as theirs:
        torch.optim.Muon(p, **kwargs)
    with pytest.raises(type(theirs.value)) as ours:
        Muon(p, **kwargs)
    assert str(ours.value) == str(theirs.value)


def test_muon_rejects_non_matrices_like_torch():
    p = [torch.nn.Parameter(torch.zeros(2, 3)), torch.nn.Parameter(torch.zeros(3))]
    with pytest.raises(ValueError) as theirs:
        torch.optim.Muon(p)
    with pytest.raises(ValueError) as ours:
        Muon(p)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize(
    "kwargs", [dict(ns_steps=100), dict(ns_coefficients=(3.0, -3.2))], ids=["steps", "coeffs"]
)
def test_muon_step_time_errors_like_torch(kwargs):
    """torch raises these at the first step; the drop-in at construction, same type/message."""
    p = torch.nn.Parameter(torch.ones(2, 3))
    ref = torch.optim.Muon([p], **kwargs)
    p.grad = torch.ones(2, 3)
    with pytest.raises(ValueError) as theirs:
        ref.step()
    with pytest.raises(ValueError) as ours:
        Muon([torch.nn.Parameter(torch.ones(2, 3))], **kwargs)
    assert str(ours.value) == str(theirs.value)


# --------------------------------------------------------------------------------------------
# Muon's transforms
# --------------------------------------------------------------------------------------------


def _mats() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(s, generator=gen, dtype=torch.float64) for s in [(4, 6), (7, 3), (5, 5)]]


def test_scale_by_muon_default_state_unchanged():
    state = scale_by_muon().init(_mats())
    assert isinstance(state, MuonState) and state.ns_coeffs.shape == (3,)


def test_scale_by_muon_torch_form_state_and_math():
    params = _mats()
    grads = [p.cos() for p in params]
    g_copy = [g.clone() for g in grads]
    tx = scale_by_muon(beta=0.9, eps=1e-7, bias_correction=False, nesterov=True)
    state = tx.init(params)
    assert isinstance(state, MuonMomentumState)
    assert all(torch.equal(m, torch.zeros_like(p)) for m, p in zip(state.mu, params))
    updates, state = tx.update(grads, state)
    for g, c in zip(grads, g_copy):
        assert torch.equal(g, c)
    for g, m, u in zip(grads, state.mu, updates):
        torch.testing.assert_close(m, 0.1 * g)
        expected = orthogonalize_via_newton_schulz(torch.lerp(g, m, 0.9), eps=1e-7)
        torch.testing.assert_close(u, expected)


def test_scale_by_muon_torch_form_validation():
    with pytest.raises(ValueError, match="ns_steps"):
        scale_by_muon(ns_steps=-1, bias_correction=False)
    with pytest.raises(ValueError, match="beta"):
        scale_by_muon(beta=-0.1, bias_correction=False)
    scale_by_muon(beta=1.5, ns_steps=0, bias_correction=False)  # torch's ranges


@pytest.mark.parametrize("preconditioning", ["frobenius", "spectral", "aol", "schatten"])
def test_orthogonalize_fused_equals_unfused_in_float64(preconditioning):
    for x in _mats():
        plain = orthogonalize_via_newton_schulz(x, preconditioning=preconditioning)
        fused = orthogonalize_via_newton_schulz(x, preconditioning=preconditioning, fused=True)
        torch.testing.assert_close(fused, plain, rtol=0, atol=1e-12)
        sv = torch.linalg.svdvals(plain)
        assert sv.min() > 0.5 and sv.max() < 1.5


def test_orthogonalize_torch_form_is_torchs():
    from torch.optim._muon import _zeropower_via_newtonschulz

    for x in _mats():
        ref = _zeropower_via_newtonschulz(x, (3.4445, -4.775, 2.0315), 5, 1e-7)
        ours = orthogonalize_via_newton_schulz(
            x, eps=1e-7, ns_dtype=torch.bfloat16, fused=True, eps_floor=True
        )
        assert ours.dtype == x.dtype
        assert torch.equal(ours, ref.to(x.dtype))
    tiny = torch.zeros(3, 4)
    assert torch.equal(orthogonalize_via_newton_schulz(tiny, eps_floor=True), tiny)


def test_scale_by_shape():
    ups = [torch.ones(4, 6, dtype=torch.float64), torch.ones(6, 4, dtype=torch.float64)]
    out, _ = scale_by_shape().update(ups, scale_by_shape().init(ups))
    assert [u[0, 0].item() for u in out] == [math.sqrt(6 / 4), 1.0]
    torch_layout = scale_by_shape(MuonDimensionNumbers(reduction_axis=1, output_axis=0))
    out, _ = torch_layout.update(ups, torch_layout.init(ups))
    assert [u[0, 0].item() for u in out] == [1.0, math.sqrt(6 / 4)]
    rms = scale_by_shape(consistent_rms=0.2)
    out, _ = rms.update(ups, rms.init(ups))
    assert [u[0, 0].item() for u in out] == [0.2 * math.sqrt(6)] * 2
    assert [u.shape for u in ups] == [(4, 6), (6, 4)] and ups[0].eq(1).all()
    with pytest.raises(ValueError, match="consistent_rms"):
        scale_by_shape(consistent_rms=0.0)
