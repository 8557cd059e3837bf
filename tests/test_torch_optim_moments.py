"""compat.torch_optim Adagrad, NAdam and RMSprop against torch.optim, step by step; and their
transforms (scale_by_rss's and scale_by_rms's torch form, scale_by_inverse_time_decay,
scale_by_nadam's mu_product_dtype) in functional use."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch_optim_ref import (
    assert_nets_close,
    check_resume,
    check_signature,
    check_state_like_torch,
    make_net,
    one_step,
    roundtrip,
    train_pair,
)

from optax_torch import tree
from optax_torch.compat import torch_optim as C
from optax_torch.transforms.moments import (
    scale_by_nadam,
    scale_by_rms,
    scale_by_rss,
    scale_by_stddev,
)
from optax_torch.transforms.scaling import ScaleByScheduleState, scale_by_inverse_time_decay

NAMES = ["Adagrad", "NAdam", "RMSprop"]


def pair(name):
    return getattr(C, name), getattr(torch.optim, name)


@pytest.fixture
def default_float64():
    """torch.optim.NAdam keeps ``mu_product`` in the default dtype (float32 unless float64)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


# --------------------------------------------------------------------------------------------
# Drop-ins against torch.optim
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_signature(name):
    check_signature(*pair(name))


# (kwargs, second group's overrides, atol of the state comparison): every option, on both sides
# of each switch (the two groups differ), 20 float64 steps with StepLR, at atol 1e-12; torch runs
# its foreach / fused implementations where asked (ours ignores the flags).
MATRIX = {
    "adagrad_lr_decay_init": (
        "Adagrad",
        dict(lr=0.05, lr_decay=0.01, initial_accumulator_value=0.1, foreach=True),
        # torch ignores a group's initial_accumulator_value (the constructor's is used).
        dict(lr=0.1, weight_decay=0.1, eps=1e-6, lr_decay=0.0, initial_accumulator_value=0.5),
        1e-12,
    ),
    "adagrad_maximize": (
        "Adagrad",
        dict(lr=0.02, maximize=True, fused=True),
        dict(weight_decay=0.05, lr_decay=0.05),
        1e-9,  # the sums grow to ~1e4 when maximizing
    ),
    "nadam_betas_momentum_decay_l2": (
        "NAdam",
        dict(lr=0.01, betas=(0.8, 0.99), momentum_decay=0.01),
        dict(lr=0.02, weight_decay=0.1, momentum_decay=0.0),
        1e-12,
    ),
    "nadam_decoupled_maximize": (
        "NAdam",
        dict(lr=0.01, weight_decay=0.05, decoupled_weight_decay=True, maximize=True, foreach=True),
        dict(lr=0.02, decoupled_weight_decay=False, eps=1e-4, foreach=False, capturable=False),
        1e-12,
    ),
    "rmsprop_plain_vs_centered": (
        "RMSprop",
        dict(lr=0.01),
        dict(lr=0.02, weight_decay=0.1, centered=True),
        1e-12,
    ),
    "rmsprop_momentum_centered_maximize": (
        "RMSprop",
        dict(lr=0.01, momentum=0.5, alpha=0.9, eps=1e-4, foreach=True),
        dict(centered=True, maximize=True, momentum=0.9, weight_decay=0.01, alpha=0.5),
        1e-12,
    ),
}


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_matches_torch_float64(case):
    name, kwargs, overrides, state_atol = MATRIX[case]
    _, _, ref, ours = train_pair(*pair(name), kwargs, overrides)
    check_state_like_torch(ref, ours, atol=state_atol)


@pytest.mark.parametrize("name", NAMES)
def test_matches_torch_float32(name):
    kwargs = {"Adagrad": dict(lr=0.05, lr_decay=0.01), "NAdam": dict(lr=0.01)}.get(
        name, dict(lr=0.01, momentum=0.5, centered=True)
    )
    _, _, ref, ours = train_pair(
        *pair(name), kwargs, dict(weight_decay=0.1), dtype=torch.float32, closure=True
    )
    check_state_like_torch(ref, ours, atol=1e-5)  # RMSprop's momentum buffer grows to ~10


@pytest.mark.parametrize("name", NAMES)
def test_tensor_lr(name):
    # A float64 tensor (torch computes lr / (1 + (step - 1) * lr_decay) and NAdam's coefficients
    # in the tensor's dtype; here in float64 whatever the dtype of lr).
    kwargs: dict[str, Any] = {"lr": torch.tensor(0.02, dtype=torch.float64)}
    if name == "NAdam":
        kwargs["decoupled_weight_decay"] = True
    overrides = {"Adagrad": dict(lr_decay=0.05), "NAdam": dict(weight_decay=0.1)}.get(name, {})
    train_pair(*pair(name), kwargs, overrides, scheduler=None, steps=8)


@pytest.mark.parametrize("name", NAMES)
def test_single_group_defaults(name):
    _, _, ref, ours = train_pair(*pair(name), {}, param_groups=False, scheduler=None, steps=10)
    check_state_like_torch(ref, ours)


RESUME = {
    "Adagrad": dict(lr=0.05, lr_decay=0.01, initial_accumulator_value=0.1),
    "NAdam": dict(lr=0.01, weight_decay=0.05, decoupled_weight_decay=True),
    "RMSprop": dict(lr=0.01, momentum=0.5, centered=True),
}


@pytest.mark.parametrize("name", NAMES)
def test_resume(name, default_float64):
    # (Default dtype float64: torch.optim.NAdam's own load_state_dict casts its float32
    # mu_product to the parameters' dtype, so even torch -> torch resumes differ at ~4e-12.)
    check_resume(*pair(name), RESUME[name], dict(lr=0.02, weight_decay=0.1), at=1)


def test_nadam_mu_product_in_torch_scalar_dtype():
    for default, expected in ((torch.float32, torch.float32), (torch.float64, torch.float64)):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(default)
        try:
            a, b = make_net(), make_net()
            ref, ours = torch.optim.NAdam(a.parameters()), C.NAdam(b.parameters())
            for t in range(3):
                one_step(a, ref, t)
                one_step(b, ours, t)
            check_state_like_torch(ref, ours)
            p = next(b.parameters())
            assert ours.state[p]["mu_product"].dtype == expected
        finally:
            torch.set_default_dtype(previous)


def test_adagrad_resumes_a_torch_checkpoint_taken_before_any_step():
    # torch.optim.Adagrad allocates its state (step 0) at construction.
    a, b = make_net(), make_net()
    ref = torch.optim.Adagrad(a.parameters(), lr=0.05, initial_accumulator_value=0.2)
    ours = C.Adagrad(b.parameters(), lr=0.05, initial_accumulator_value=0.2)
    ours.load_state_dict(roundtrip(ref.state_dict()))
    ref.load_state_dict(roundtrip(ref.state_dict()))  # param_groups keys in a loaded order
    for t in range(6):
        one_step(a, ref, t)
        one_step(b, ours, t)
    assert_nets_close(a, b, 1e-12)
    check_state_like_torch(ref, ours)


def test_state_structure_switch_raises():
    net = make_net()
    opt = C.RMSprop(net.parameters(), lr=0.01)
    one_step(net, opt, 0)
    opt.param_groups[0]["centered"] = True
    with pytest.raises(ValueError, match="centered"):
        one_step(net, opt, 1)


BAD = {
    "Adagrad": [
        dict(lr=-1.0),
        dict(lr=torch.tensor([0.1, 0.2])),
        dict(lr_decay=-0.1),
        dict(weight_decay=-0.1),
        dict(initial_accumulator_value=-0.1),
        dict(eps=-1.0),
        dict(fused=True, foreach=True),
        dict(fused=True, differentiable=True),
    ],
    "NAdam": [
        dict(lr=-1.0),
        dict(lr=torch.tensor([0.1, 0.2])),
        dict(eps=-1.0),
        dict(betas=(1.0, 0.9)),
        dict(betas=(0.9, -0.1)),
        dict(weight_decay=-0.1),
        dict(momentum_decay=-0.1),
    ],
    "RMSprop": [
        dict(lr=-1.0),
        dict(lr=torch.tensor([0.1, 0.2])),
        dict(eps=-1.0),
        dict(momentum=-0.1),
        dict(weight_decay=-0.1),
        dict(alpha=-0.1),
    ],
}


@pytest.mark.parametrize("name,i", [(n, i) for n in NAMES for i in range(len(BAD[n]))])
def test_validation_errors_like_torch(name, i):
    ours_cls, ref_cls = pair(name)
    kwargs = BAD[name][i]
    with pytest.raises(Exception) as expected:
        ref_cls(make_net().parameters(), **kwargs)
    with pytest.raises(type(expected.value)) as got:
        ours_cls(make_net().parameters(), **kwargs)
    assert type(got.value) is type(expected.value)
    assert str(got.value) == str(expected.value)


@pytest.mark.parametrize("name", NAMES)
def test_differentiable_is_not_implemented(name):
    with pytest.raises(NotImplementedError, match="differentiable"):
        getattr(C, name)(make_net().parameters(), differentiable=True)


# --------------------------------------------------------------------------------------------
# The transforms in functional use
# --------------------------------------------------------------------------------------------


def _tree(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 2, generator=gen, dtype=torch.float64), torch.randn(4, generator=gen)]


def _run(tx, steps=3):
    """``steps`` updates on fixed random gradients; checks that the inputs are not mutated."""
    params = _tree(0)
    state = tx.init(params)
    outs = []
    for k in range(steps):
        grads = _tree(k + 1)
        copies = [g.clone() for g in grads]
        updates, state = tx.update(grads, state, params)
        for g, c in zip(grads, copies):
            torch.testing.assert_close(g, c, rtol=0, atol=0)
        assert [u.shape for u in updates] == [g.shape for g in grads]
        assert [u.dtype for u in updates] == [g.dtype for g in grads]
        outs.append((grads, updates))
    return outs, state


def test_scale_by_inverse_time_decay():
    tx = scale_by_inverse_time_decay(0.5)
    state = tx.init(_tree())
    assert isinstance(state, ScaleByScheduleState) and int(state.count) == 0
    outs, state = _run(tx, 3)
    assert int(state.count) == 3
    for k, (grads, updates) in enumerate(outs):
        for g, u in zip(grads, updates):
            torch.testing.assert_close(u, g / (1 + 0.5 * k))
    outs, _ = _run(scale_by_inverse_time_decay(torch.tensor(0.0)), 2)
    torch.testing.assert_close(outs[1][1], outs[1][0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="decay_rate"):
        scale_by_inverse_time_decay(-0.1)


@pytest.mark.parametrize("eps_in_sqrt", [True, False])
def test_scale_by_rss_eps_placement(eps_in_sqrt):
    outs, state = _run(scale_by_rss(0.1, 1e-3, eps_in_sqrt=eps_in_sqrt), 3)
    total = [torch.full_like(g, 0.1) for g in outs[0][0]]
    for grads, updates in outs:
        total = [s + g * g for s, g in zip(total, grads)]
        for g, u, s in zip(grads, updates, total):
            d = (s + 1e-3).sqrt() if eps_in_sqrt else s.sqrt() + 1e-3
            torch.testing.assert_close(u, g / d)
    torch.testing.assert_close(state.sum_of_squares, total)


@pytest.mark.parametrize("centered", [False, True])
def test_scale_by_rms_stddev_torch_form(centered):
    make = scale_by_stddev if centered else scale_by_rms
    outs, _ = _run(make(decay=0.9, eps=1e-3, eps_in_sqrt=False), 3)
    nu = [torch.zeros_like(g) for g in outs[0][0]]  # torch's square_avg starts at 0
    mu = [torch.zeros_like(g) for g in outs[0][0]]
    for grads, updates in outs:
        nu = [0.9 * v + 0.1 * g * g for v, g in zip(nu, grads)]
        mu = [0.9 * m + 0.1 * g for m, g in zip(mu, grads)]
        for g, u, v, m in zip(grads, updates, nu, mu):
            var = v - m * m if centered else v
            torch.testing.assert_close(u, g / (var.sqrt() + 1e-3))


def test_scale_by_nadam_math_and_mu_product_dtype():
    b1, b2, eps, psi = 0.9, 0.99, 1e-3, 0.05
    outs, state = _run(scale_by_nadam(b1, b2, eps, psi), 3)
    assert state.mu_product.dtype == torch.float64 and int(state.count) == 3
    m = [torch.zeros_like(g) for g in outs[0][0]]
    v = [torch.zeros_like(g) for g in outs[0][0]]
    prod = 1.0
    for k, (grads, updates) in enumerate(outs, 1):
        mu_k = b1 * (1 - 0.5 * 0.96 ** (k * psi))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((k + 1) * psi))
        prod *= mu_k
        m = [b1 * a + (1 - b1) * g for a, g in zip(m, grads)]
        v = [b2 * a + (1 - b2) * g * g for a, g in zip(v, grads)]
        for g, u, mk, vk in zip(grads, updates, m, v):
            d = (vk / (1 - b2**k)).sqrt() + eps
            want = (1 - mu_k) / (1 - prod) * g / d + mu_next / (1 - prod * mu_next) * mk / d
            torch.testing.assert_close(u, want)
    torch.testing.assert_close(state.mu_product, torch.tensor(prod, dtype=torch.float64))
    assert tree.get(state, "mu_product") is state.mu_product

    for mpd, default, expected in (
        (torch.float32, torch.float64, torch.float32),
        (None, torch.float32, torch.float32),
        (None, torch.float64, torch.float64),
    ):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(default)
        try:
            st = scale_by_nadam(mu_product_dtype=mpd).init(_tree())
        finally:
            torch.set_default_dtype(previous)
        assert st.mu_product.dtype == expected
    with pytest.raises(ValueError, match="momentum_decay"):
        scale_by_nadam(momentum_decay=-1.0)


def _embedding_run(cls, weight_decay=0.0):
    torch.manual_seed(0)
    emb = torch.nn.Embedding(10, 3, sparse=True).double()
    head = torch.nn.Linear(3, 1).double()
    params = list(emb.parameters()) + list(head.parameters())
    opt = cls(params, lr=0.1, lr_decay=0.01, weight_decay=weight_decay)
    for t in range(6):
        opt.zero_grad()
        idx = torch.tensor([t % 4, (t * 3) % 10, 1])
        head(emb(idx)).square().sum().backward()
        opt.step()
    return params, opt


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
def test_adagrad_sparse_gradients_like_torch():
    ours_cls, ref_cls = pair("Adagrad")
    (p, ref), (q, ours) = _embedding_run(ref_cls), _embedding_run(ours_cls)
    for a, b in zip(p, q):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-12)
    check_state_like_torch(ref, ours)
    for cls in pair("Adagrad"):
        with pytest.raises(RuntimeError, match="weight_decay option is not compatible"):
            _embedding_run(cls, weight_decay=0.1)
