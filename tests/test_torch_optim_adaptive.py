"""torch.optim Adamax, RAdam and Adadelta drop-ins against torch 2.13, step by step; the torch
forms of their transforms (``scale_by_adamax``, ``scale_by_radam(eps_before_debias=True,
strict_threshold=True)``, ``scale_by_adadelta``) in functional use."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch_optim_ref import (
    check_resume,
    check_signature,
    check_state_like_torch,
    make_net,
    train_pair,
)

import optax_torch as otx
from optax_torch.compat import torch_optim as C
from optax_torch.transforms.adaptive import scale_by_adadelta, scale_by_adamax, scale_by_radam

PAIRS: dict[str, tuple[Any, Any]] = {
    "Adamax": (C.Adamax, torch.optim.Adamax),
    "RAdam": (C.RAdam, torch.optim.RAdam),
    "Adadelta": (C.Adadelta, torch.optim.Adadelta),
}
WD = dict(weight_decay=0.1)

# (name, constructor kwargs, overrides of the second param group): every option on and off
# across the two groups; foreach=True runs torch's multi-tensor path as the reference.
OPTIONS = [
    ("Adamax", dict(lr=0.01), dict(lr=0.02, **WD)),
    (
        "Adamax",
        dict(lr=0.01, betas=(0.8, 0.99), eps=1e-3, weight_decay=0.05, maximize=True, foreach=True),
        dict(lr=0.003, betas=(0.5, 0.9), weight_decay=0.0, maximize=False),
    ),
    ("RAdam", dict(lr=0.01), dict(lr=0.02, **WD)),
    (
        "RAdam",
        dict(lr=0.01, weight_decay=0.05, decoupled_weight_decay=True, maximize=True, foreach=True),
        dict(lr=0.003, weight_decay=0.2, decoupled_weight_decay=False, maximize=False),
    ),
    (  # rho_t > 5 from step 3 (b2 = 0.9), eps large enough for its placement to matter
        "RAdam",
        dict(lr=0.01, betas=(0.8, 0.9), eps=1e-3),
        dict(lr=0.02, betas=(0.5, 0.999), decoupled_weight_decay=True, **WD),
    ),
    ("Adadelta", dict(lr=0.5), dict(lr=0.2, **WD)),
    (
        "Adadelta",
        dict(rho=0.95, eps=1e-4, weight_decay=0.05, maximize=True, foreach=True),
        dict(lr=0.3, rho=1.0, weight_decay=0.0, maximize=False),
    ),
]


def _id(opt):
    name, kw, over = opt
    show = lambda d: ",".join(f"{k}={v}" for k, v in d.items() if k != "lr")  # noqa: E731
    return f"{name}-{show(kw)}|{show(over)}"


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_signature_like_torch(name):
    check_signature(*PAIRS[name])


@pytest.mark.parametrize("opt", OPTIONS, ids=_id)
def test_steps_and_state_match_torch(opt):
    name, kwargs, overrides = opt
    _, _, ref, ours = train_pair(*PAIRS[name], kwargs, overrides)
    check_state_like_torch(ref, ours)
    sd = ours.state_dict()["state"]
    assert set(sd) == set(ref.state_dict()["state"])


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_float32_matches_torch(name):
    kwargs = dict(lr=0.5) if name == "Adadelta" else dict(lr=0.01, weight_decay=0.01)
    train_pair(*PAIRS[name], kwargs, dict(lr=0.02, **WD), dtype=torch.float32)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_tensor_lr_and_resume_across_implementations(name):
    # (torch computes in the tensor's dtype: a float64 tensor for float64 agreement.)
    lr = torch.tensor(0.3 if name == "Adadelta" else 0.01, dtype=torch.float64)
    kwargs: dict[str, Any] = dict(lr=lr, weight_decay=0.01)
    if name == "RAdam":
        kwargs["decoupled_weight_decay"] = True
    check_resume(*PAIRS[name], kwargs, dict(lr=0.02, **WD), steps=10, at=7)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_one_group_without_scheduler_or_skips(name):
    train_pair(*PAIRS[name], dict(lr=0.1), param_groups=False, scheduler=None, skip=False, steps=8)


# ------------------------------------------------------------------------------------------------
# Validation: torch's error types and messages
# ------------------------------------------------------------------------------------------------

COMMON_BAD: list[dict[str, Any]] = [
    dict(lr=-0.1),
    dict(lr=float("nan")),
    dict(lr=torch.tensor([0.1, 0.2])),
    dict(eps=-1e-8),
    dict(weight_decay=-0.1),
]
ADAM_BAD = [
    dict(betas=(1.0, 0.9)),
    dict(betas=(-0.1, 0.9)),
    dict(betas=(0.9, 1.0)),
    dict(betas=(0.9, -1e-3)),
]
BAD = [(n, kw) for n in ("Adamax", "RAdam") for kw in COMMON_BAD + ADAM_BAD]
BAD += [("Adadelta", kw) for kw in [*COMMON_BAD, dict(rho=1.1), dict(rho=-0.1)]]


@pytest.mark.parametrize(
    "name,kwargs", BAD, ids=[f"{n}-{'-'.join(map(str, kw.items()))}" for n, kw in BAD]
)
def test_validation_errors_like_torch(name, kwargs):
    ours_cls, ref_cls = PAIRS[name]
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(Exception) as ref_err:
        ref_cls(params, **kwargs)
    with pytest.raises(type(ref_err.value)) as our_err:
        ours_cls(params, **kwargs)
    assert type(our_err.value) is type(ref_err.value)
    assert str(our_err.value) == str(ref_err.value)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_differentiable_unsupported_and_flags_accepted(name):
    ours_cls, _ = PAIRS[name]
    p = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(NotImplementedError, match="differentiable=True"):
        ours_cls([p], differentiable=True)
    # Edge values torch accepts (rho = 1 for Adadelta, beta = 0 and lr = 0 for the others).
    extra = dict(rho=1.0) if name == "Adadelta" else dict(betas=(0.0, 0.0))
    opt = ours_cls([p], lr=0.0, foreach=True, capturable=False, **extra)
    p.grad = torch.ones(3)
    opt.step()
    assert torch.equal(p.detach(), torch.ones(3))


# ------------------------------------------------------------------------------------------------
# The transforms in functional use
# ------------------------------------------------------------------------------------------------


def _grads(k: int, dtype=torch.float64) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + k)
    return [
        torch.randn(3, 2, generator=gen, dtype=dtype),
        torch.randn(4, generator=gen, dtype=dtype),
    ]


def _params(dtype=torch.float64) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    return [
        torch.randn(3, 2, generator=gen, dtype=dtype),
        torch.randn(4, generator=gen, dtype=dtype),
    ]


def _functional_vs_torch(tx, ref_cls, kwargs, steps=12):
    """``tx`` applied with apply_updates against ``ref_cls`` on plain tensors, step by step."""
    params = _params()
    ref = [torch.nn.Parameter(p.clone()) for p in params]
    opt = ref_cls(ref, **kwargs)
    state = tx.init(params)
    for k in range(steps):
        grads = _grads(k)
        updates, state = tx.update(grads, state, params)
        params = otx.apply_updates(params, updates)
        for p, g in zip(ref, grads):
            p.grad = g.clone()
        opt.step()
        for p, q in zip(params, ref):
            torch.testing.assert_close(p, q.detach(), rtol=0, atol=1e-13, msg=f"step {k}")
    return state


def test_scale_by_adamax_is_torch_adamax():
    tx = otx.chain(scale_by_adamax(0.8, 0.95, 1e-2), otx.scale_by_learning_rate(0.05))
    state = _functional_vs_torch(tx, torch.optim.Adamax, dict(lr=0.05, betas=(0.8, 0.95), eps=1e-2))
    assert isinstance(state[0], otx.ScaleByAdamState)
    assert state[0].count.dtype == torch.int32 and int(state[0].count) == 12


def test_scale_by_radam_torch_form_is_torch_radam():
    tx = otx.chain(
        scale_by_radam(0.8, 0.9, 1e-2, eps_before_debias=True, strict_threshold=True),
        otx.scale_by_learning_rate(0.05),
    )
    state = _functional_vs_torch(tx, torch.optim.RAdam, dict(lr=0.05, betas=(0.8, 0.9), eps=1e-2))
    assert isinstance(state[0], otx.ScaleByAdamState)
    assert int(state[0].count) == 12


def test_scale_by_adadelta_is_torch_adadelta():
    tx = otx.chain(scale_by_adadelta(0.8, 1e-3), otx.scale_by_learning_rate(0.7))
    _functional_vs_torch(tx, torch.optim.Adadelta, dict(lr=0.7, rho=0.8, eps=1e-3))


def test_radam_eps_before_debias_formula():
    """``eps`` added to the root of the raw second moment; ``eps_root`` scaled by 1 - b2^k."""
    b1, b2, eps, eps_root = 0.8, 0.9, 0.1, 0.05
    tx = scale_by_radam(b1, b2, eps, eps_root, eps_before_debias=True)
    optax_form = scale_by_radam(b1, b2, eps, eps_root)
    params = _params()
    state, state_o = tx.init(params), optax_form.init(params)
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    ro_inf = 2 / (1 - b2) - 1
    differ = False
    for k in range(1, 9):
        grads = _grads(k)
        out, state = tx.update(grads, state)
        out_o, state_o = optax_form.update(grads, state_o)
        ro = ro_inf - 2 * k * b2**k / (1 - b2**k)
        bc1, bc2 = 1 - b1**k, 1 - b2**k
        r = ((ro - 4) * (ro - 2) * ro_inf / ((ro_inf - 4) * (ro_inf - 2) * ro)) ** 0.5
        for i, g in enumerate(grads):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            if ro >= 5:
                want = r * m[i] / bc1 * bc2**0.5 / ((v[i] + bc2 * eps_root).sqrt() + eps)
            else:
                want = m[i] / bc1
            torch.testing.assert_close(out[i], want, rtol=1e-13, atol=1e-15)
        differ |= any(not torch.allclose(a, b) for a, b in zip(out, out_o))
    assert differ  # the two forms really differ once rectified


def test_radam_strict_threshold():
    """``rho_1 = 1`` exactly for ``b2 = 0.75`` (``rho_inf = 7``): rectified at step 1 only with
    ``rho >= threshold`` (optax), not with ``rho > threshold`` (torch)."""
    g = [torch.tensor([0.5, -2.0], dtype=torch.float64)]
    tx_ge = scale_by_radam(b1=0.9, b2=0.75, eps=0.0, threshold=1.0)
    tx_gt = scale_by_radam(b1=0.9, b2=0.75, eps=0.0, threshold=1.0, strict_threshold=True)
    out_ge, _ = tx_ge.update(g, tx_ge.init(g))
    out_gt, _ = tx_gt.update(g, tx_gt.init(g))
    torch.testing.assert_close(out_gt[0], g[0], rtol=0, atol=0)  # the debiased first moment
    want = 1.4**0.5 * torch.sign(g[0])  # r_1^2 = (-3)(-1)7 / (3 * 5 * 1)
    torch.testing.assert_close(out_ge[0], want, rtol=1e-14, atol=0)


@pytest.mark.parametrize("torch_form", [False, True])
def test_radam_structure_and_inputs_untouched(torch_form):
    tx = scale_by_radam(eps_before_debias=torch_form, strict_threshold=torch_form)
    params = _params()
    state = tx.init(params)
    assert [t.shape for t in state.mu] == [p.shape for p in params]
    assert state.count.dtype == torch.int32 and state.count.dim() == 0
    for k in range(7):
        grads = _grads(k)
        grads_before = [g.clone() for g in grads]
        state_before = [t.clone() for t in (*state.mu, *state.nu)]
        updates, new_state = tx.update(grads, state)
        for a, b in zip(grads, grads_before):
            assert torch.equal(a, b)
        for a, b in zip((*state.mu, *state.nu), state_before):
            assert torch.equal(a, b)
        assert [u.shape for u in updates] == [g.shape for g in grads]
        assert all(torch.isfinite(u).all() for u in updates)
        state = new_state
    assert int(state.count) == 7


@pytest.mark.parametrize(
    "make,arg",
    [
        (lambda: scale_by_radam(b1=1.5, eps_before_debias=True), "b1"),
        (lambda: scale_by_radam(b2=-0.1, strict_threshold=True), "b2"),
        (lambda: scale_by_radam(eps=-1.0, eps_before_debias=True), "eps"),
        (lambda: scale_by_radam(eps_root=-1.0, eps_before_debias=True), "eps_root"),
        (lambda: scale_by_radam(threshold=float("inf")), "threshold"),
        (lambda: scale_by_adamax(b2=1.0), "b2"),
        (lambda: scale_by_adamax(eps=-1.0), "eps"),
        (lambda: scale_by_adadelta(rho=1.5), "rho"),
        (lambda: scale_by_adadelta(eps=-1e-6), "eps"),
    ],
)
def test_transform_hyperparameter_errors(make, arg):
    with pytest.raises(ValueError, match=arg):
        make()


def test_dropin_chain_states_are_torch_named():
    net = make_net()
    for ours_cls, _ in PAIRS.values():
        opt = ours_cls(net.parameters(), lr=0.0)
        net.zero_grad()
        net(torch.randn(2, 5, dtype=torch.float64)).sum().backward()
        opt.step()
        p = net.fc.weight
        assert opt.state[p]["step"] == 1
        assert set(opt.state[p]) == set(opt.state_dict()["state"][0])
