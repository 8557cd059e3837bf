"""torch.optim SparseAdam and Rprop drop-ins against torch 2.13, step by step; their transforms
(``scale_by_sparse_adam``, ``scale_by_rprop(always_clip=True, prev_gradients=True)``) in
functional use."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch_optim_ref import (
    check_resume,
    check_signature,
    check_state_like_torch,
    roundtrip,
    tol,
    train_pair,
)

import optax_torch as otx
from optax_torch import tree
from optax_torch.compat import torch_optim as C
from optax_torch.transforms.sign import scale_by_rprop
from optax_torch.transforms.sparse import ScaleBySparseAdamState, scale_by_sparse_adam

STEPS = 20

# ================================================================================================
# Rprop
# ================================================================================================

# (constructor kwargs, overrides of the second param group); foreach=True runs torch's
# multi-tensor path as the reference.
RPROP_OPTIONS = [
    (dict(), dict(lr=0.02)),
    (
        dict(lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-3, 0.2), foreach=True),
        dict(lr=0.1, etas=(0.6, 1.1), step_sizes=(1e-4, 1.0)),
    ),
    # initial step sizes outside the bounds (clipped at the first step, like torch)
    (dict(lr=100.0), dict(lr=1e-3, step_sizes=(0.01, 1.0))),
    (dict(lr=0.01, maximize=True), dict(maximize=False)),
    (dict(lr=torch.tensor(0.03, dtype=torch.float64)), dict(step_sizes=(0.0, float("inf")))),
]


def _id(opt):
    kw, over = opt
    return ",".join(
        f"{k}={v}" for k, v in {**kw, **{f"g1.{k}": v for k, v in over.items()}}.items()
    )


def test_rprop_signature():
    check_signature(C.Rprop, torch.optim.Rprop)


@pytest.mark.parametrize("opt", RPROP_OPTIONS, ids=[_id(o) for o in RPROP_OPTIONS])
def test_rprop_matches_torch_f64(opt):
    kwargs, over = opt
    _, _, ref, ours = train_pair(C.Rprop, torch.optim.Rprop, kwargs, over)
    check_state_like_torch(ref, ours)


@pytest.mark.parametrize("opt", RPROP_OPTIONS[1:3], ids=[_id(o) for o in RPROP_OPTIONS[1:3]])
def test_rprop_matches_torch_f32(opt):
    kwargs, over = opt
    _, _, ref, ours = train_pair(C.Rprop, torch.optim.Rprop, kwargs, over, dtype=torch.float32)
    check_state_like_torch(ref, ours, atol=tol(torch.float32))


def test_rprop_lr_at_first_step_and_closure():
    """The step sizes start at the group's lr of the parameter's first step: the side branch
    joins after the scheduler halved lr (every step here)."""
    _, _, ref, ours = train_pair(
        C.Rprop,
        torch.optim.Rprop,
        dict(lr=0.04),
        dict(lr=0.08),
        closure=True,
        scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, 1, 0.5),
        steps=8,
    )
    check_state_like_torch(ref, ours)


def test_rprop_one_group_no_scheduler():
    train_pair(
        C.Rprop, torch.optim.Rprop, dict(lr=0.02), param_groups=False, scheduler=None, steps=10
    )


@pytest.mark.parametrize(
    "opt",
    [(dict(lr=0.05), dict(lr=0.02)), (dict(etas=(0.4, 1.3), maximize=True), dict(lr=0.1))],
    ids=["default", "etas-maximize"],
)
def test_rprop_resume(opt):
    kwargs, over = opt
    check_resume(C.Rprop, torch.optim.Rprop, kwargs, over)


def test_rprop_complex_params_match_torch():
    """Complex parameters are pairs of reals (own step sizes for real and imaginary parts)."""
    gen = torch.Generator().manual_seed(0)
    init = torch.randn(4, 3, dtype=torch.complex128, generator=gen)
    target = torch.randn(4, 3, dtype=torch.complex128, generator=gen)
    a, b = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    ref, ours = torch.optim.Rprop([a], lr=0.05), C.Rprop([b], lr=0.05)
    for _ in range(STEPS):
        for p, opt in ((a, ref), (b, ours)):
            opt.zero_grad()
            ((p - target).abs() ** 3).sum().backward()
            opt.step()
        torch.testing.assert_close(b, a, rtol=0, atol=1e-12)
    check_state_like_torch(ref, ours)


ETAS = dict(etas=(0.5, 1.2))
RPROP_ERRORS = [
    dict(lr=-0.1),
    dict(lr=float("nan")),
    dict(lr=torch.tensor([0.1, 0.2])),
    dict(etas=(0.0, 1.2)),
    dict(etas=(1.0, 1.2)),
    dict(etas=(0.5, 1.0)),
    dict(etas=(0.5, 0.9)),
    dict(lr=-1.0, etas=(2.0, 0.5)),
]


@pytest.mark.parametrize("kwargs", RPROP_ERRORS, ids=lambda k: ",".join(map(str, k.values())))
def test_rprop_validation_errors_like_torch(kwargs):
    _errors_like_torch(C.Rprop, torch.optim.Rprop, kwargs)


def _errors_like_torch(ours_cls, ref_cls, kwargs, params=None):
    params = params if params is not None else [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(Exception) as ref_err:
        ref_cls(params, **kwargs)
    with pytest.raises(type(ref_err.value)) as our_err:
        ours_cls(params, **kwargs)
    assert type(our_err.value) is type(ref_err.value)
    assert str(our_err.value) == str(ref_err.value)


def _step_errors_like_torch(ours_cls, ref_cls, kwargs, make_grad):
    ref_p = torch.nn.Parameter(torch.zeros(5, 2))
    our_p = torch.nn.Parameter(torch.zeros(5, 2))
    ref, ours = ref_cls([ref_p], **kwargs), ours_cls([our_p], **kwargs)
    ref_p.grad, our_p.grad = make_grad(), make_grad()
    with pytest.raises(Exception) as ref_err:
        ref.step()
    with pytest.raises(type(ref_err.value)) as our_err:
        ours.step()
    assert str(our_err.value) == str(ref_err.value)
    assert torch.equal(our_p, torch.zeros(5, 2))


def _sparse_grad():
    return torch.sparse_coo_tensor(
        torch.tensor([[1, 3]]), torch.ones(2, 2), (5, 2), check_invariants=True
    )


def test_rprop_sparse_grad_error_like_torch():
    _step_errors_like_torch(C.Rprop, torch.optim.Rprop, {}, _sparse_grad)


def test_rprop_differentiable_unsupported_and_flags_accepted():
    p = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(NotImplementedError, match="differentiable=True"):
        C.Rprop([p], differentiable=True)
    # lr = 0 (torch accepts it): step sizes 0 (then clipped to the minimum)
    opt = C.Rprop([p], lr=0.0, step_sizes=(0.0, 1.0), foreach=True, capturable=True)
    p.grad = torch.ones(3)
    opt.step()
    assert torch.equal(p.detach(), torch.ones(3))
    assert list(opt.param_groups[0]) == list(torch.optim.Rprop([p]).param_groups[0])


def test_rprop_state_dict_types():
    net = torch.nn.Linear(3, 2).double()
    opt = C.Rprop(net.parameters())
    net(torch.ones(4, 3, dtype=torch.float64)).sum().backward()
    opt.step()
    entry = roundtrip(opt.state_dict())["state"][0]
    assert set(entry) == {"step", "prev", "step_size"}
    assert entry["step"] == 1
    assert entry["prev"].dtype == entry["step_size"].dtype == torch.float64


# ------------------------------------------------------------------------------------------------
# scale_by_rprop in functional use (torch's form)
# ------------------------------------------------------------------------------------------------


def _rprop_params():
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(3, 2, generator=gen, dtype=torch.float64), torch.zeros(4)]


def test_scale_by_rprop_torch_form_state_and_no_mutation():
    params = _rprop_params()
    tx = scale_by_rprop(0.1, always_clip=True, prev_gradients=True, max_step_size=0.15)
    state = tx.init(params)
    assert tree.structure(state) == tree.structure(scale_by_rprop(0.1).init(params))
    gen = torch.Generator().manual_seed(2)
    for k in range(4):
        grads = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
        grads[1][0] = 0.0
        old = copy.deepcopy((grads, state))
        updates, new_state = tx.update(grads, state, params)
        assert tree.allclose(old, (grads, state), rtol=0, atol=0)  # inputs untouched
        s = [g * p for g, p in zip(grads, state.prev_updates)]
        # prev: the gradient, zeroed where the sign flipped
        for g, sk, prev in zip(grads, s, new_state.prev_updates):
            assert torch.equal(prev, torch.where(sk < 0, 0.0, g).to(g.dtype))
        for u, sz, sk, g in zip(updates, new_state.step_sizes, s, grads):
            assert torch.equal(u, torch.where(sk < 0, 0.0, sz * torch.sign(g)).to(g.dtype))
            assert float(sz.max()) <= 0.15  # always clipped (the first step too)
        if k == 0:
            assert all(torch.all(sz == 0.1) for sz in new_state.step_sizes)
        state = new_state


def test_scale_by_rprop_always_clip_only_changes_out_of_bounds_steps():
    params = _rprop_params()
    grads = [torch.ones_like(p) for p in params]
    plain, clipped = (
        scale_by_rprop(1.0, max_step_size=0.5),
        scale_by_rprop(1.0, max_step_size=0.5, always_clip=True),
    )
    u_plain, _ = plain.update(grads, plain.init(params))
    u_clip, _ = clipped.update(grads, clipped.init(params))
    assert all(torch.all(u == 1.0) for u in u_plain)  # optax: unclipped initial step size
    assert all(torch.all(u == 0.5) for u in u_clip)  # torch


def test_scale_by_rprop_none_leaves_and_validation():
    params = _rprop_params()
    tx = scale_by_rprop(0.1, prev_gradients=True)
    state = tx.init(params)
    updates, new_state = tx.update([torch.ones(3, 2, dtype=torch.float64), None], state)
    assert updates[1] is None  # no gradient: no update, the state carried over
    assert new_state.prev_updates[1] is state.prev_updates[1]
    assert new_state.step_sizes[1] is state.step_sizes[1]
    scale_by_rprop(0.1, max_step_size=float("inf"))  # accepted (torch's bounds may be inf)
    bad: dict[str, Any]
    for bad in (dict(min_step_size=-1.0), dict(max_step_size=float("nan")), dict(eta_plus=0.0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            scale_by_rprop(0.1, **bad)


# ================================================================================================
# SparseAdam
# ================================================================================================


class EmbNet(torch.nn.Module):
    """Three sparse embeddings: ``a`` every step, ``b`` with an empty lookup every fourth step,
    ``c`` on some steps only (joins late); repeated indices, rows untouched on most steps."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Embedding(12, 4, sparse=True)
        self.b = torch.nn.Embedding(9, 3, sparse=True)
        self.c = torch.nn.Embedding(7, 2, sparse=True)

    def forward(self, step: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(100 + step)
        ia = torch.randint(0, 12, (6,), generator=gen)
        ib = torch.randint(0, 9, (5,), generator=gen)
        if step % 4 == 2:
            ib = ib[:0]
        out = self.a(ia).sum(0).square().sum() + self.b(ib).sum(0).sin().sum()
        if step % 3 == 1:
            out = out + self.c(torch.randint(0, 7, (3,), generator=gen)).pow(3).sum()
        return out


def make_emb(dtype=torch.float64) -> EmbNet:
    torch.manual_seed(0)
    return EmbNet().to(dtype)


def emb_groups(net: EmbNet, **overrides: Any) -> list[dict[str, Any]]:
    return [{"params": [net.a.weight]}, {"params": [net.b.weight, net.c.weight], **overrides}]


def emb_step(net: EmbNet, opt: Any, step: int) -> None:
    opt.zero_grad()
    net(step).backward()
    opt.step()


def assert_embs_close(a: EmbNet, b: EmbNet, atol: float, msg: str = "") -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(q, p, rtol=0, atol=atol, msg=lambda m: f"{msg} {name}: {m}")


def train_sparse_pair(kwargs, overrides, dtype=torch.float64, steps=STEPS):
    a, b = make_emb(dtype), make_emb(dtype)
    ref = torch.optim.SparseAdam(emb_groups(a, **overrides), **kwargs)
    ours = C.SparseAdam(emb_groups(b, **overrides), **kwargs)
    scheds = [torch.optim.lr_scheduler.StepLR(o, 7, 0.5) for o in (ref, ours)]
    for t in range(steps):
        emb_step(a, ref, t)
        emb_step(b, ours, t)
        for s in scheds:
            s.step()
        assert_embs_close(a, b, tol(dtype), f"step {t}")
    return a, b, ref, ours


SPARSE_OPTIONS = [
    (dict(), dict(lr=0.02)),
    (dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6), dict(lr=0.02, betas=(0.5, 0.9), eps=1e-3)),
    (dict(lr=0.01, maximize=True), dict(maximize=False)),
    (dict(lr=torch.tensor(0.03, dtype=torch.float64)), dict(betas=(0.0, 0.0))),
]


def test_sparse_adam_signature():
    check_signature(C.SparseAdam, torch.optim.SparseAdam)


@pytest.mark.parametrize("opt", SPARSE_OPTIONS, ids=[_id(o) for o in SPARSE_OPTIONS])
def test_sparse_adam_matches_torch_f64(opt):
    kwargs, over = opt
    _, _, ref, ours = train_sparse_pair(kwargs, over)
    check_state_like_torch(ref, ours)


@pytest.mark.parametrize("opt", SPARSE_OPTIONS[1:3], ids=[_id(o) for o in SPARSE_OPTIONS[1:3]])
def test_sparse_adam_matches_torch_f32(opt):
    kwargs, over = opt
    _, _, ref, ours = train_sparse_pair(kwargs, over, dtype=torch.float32)
    check_state_like_torch(ref, ours, atol=tol(torch.float32))


def test_sparse_adam_fully_sparse_uncoalesced_grads_match_torch():
    """Gradients sparse in every dimension, with duplicate indices (coalesced by the step)."""
    gen = torch.Generator().manual_seed(5)
    init = torch.randn(5, 4, dtype=torch.float64, generator=gen)
    a, b = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    ref, ours = torch.optim.SparseAdam([a], lr=0.1), C.SparseAdam([b], lr=0.1)
    for _ in range(STEPS):
        idx = torch.randint(0, 4, (2, 6), generator=gen)
        vals = torch.randn(6, dtype=torch.float64, generator=gen)
        g = torch.sparse_coo_tensor(idx, vals, (5, 4), check_invariants=True)
        a.grad, b.grad = g.clone(), g.clone()
        ref.step()
        ours.step()
        torch.testing.assert_close(b, a, rtol=0, atol=1e-12)
    check_state_like_torch(ref, ours)


def test_sparse_adam_state_and_updates_in_place():
    """The moments are updated in place (the adapter donates them) and only at the indices."""
    net = make_emb()
    opt = C.SparseAdam([net.a.weight], lr=0.01)
    emb_step(net, opt, 0)
    mu = opt.state[net.a.weight]["exp_avg"]
    ptr = mu.data_ptr()
    before = mu.clone()
    emb_step(net, opt, 1)
    after = opt.state[net.a.weight]["exp_avg"]
    assert after.data_ptr() == ptr
    grad = net.a.weight.grad
    assert grad is not None
    rows = grad.coalesce().indices()[0]
    untouched = torch.ones(12, dtype=torch.bool)
    untouched[rows] = False
    assert torch.equal(after[untouched], before[untouched])
    assert not torch.equal(after[rows], before[rows])


@pytest.mark.parametrize(
    "opt",
    [(dict(lr=0.05), dict(lr=0.02)), (dict(betas=(0.8, 0.9), maximize=True), dict(eps=1e-4))],
    ids=["default", "betas-maximize"],
)
def test_sparse_adam_resume(opt):
    """Mid-run checkpoints (float64) against an uninterrupted torch run: ours → weights-only
    load → a fresh drop-in; torch's → a fresh drop-in; ours → a fresh torch.optim.SparseAdam."""
    kwargs, over = opt
    nets = [make_emb() for _ in range(4)]
    opts: list[Any] = [torch.optim.SparseAdam(emb_groups(nets[0], **over), **kwargs)]
    opts += [C.SparseAdam(emb_groups(n, **over), **kwargs) for n in nets[1:]]
    for t in range(12):
        if t == 5:
            fresh = [copy.deepcopy(n) for n in nets[1:]]
            new = [
                C.SparseAdam(emb_groups(fresh[0], **over), **kwargs),
                C.SparseAdam(emb_groups(fresh[1], **over), **kwargs),
                torch.optim.SparseAdam(emb_groups(fresh[2], **over), **kwargs),
            ]
            ours_sd = opts[1].state_dict()
            assert all(type(e["step"]) is int for e in ours_sd["state"].values())  # torch's type
            new[0].load_state_dict(roundtrip(ours_sd))
            new[1].load_state_dict(roundtrip(opts[0].state_dict()))
            new[2].load_state_dict(roundtrip(opts[3].state_dict()))
            nets[1:], opts[1:] = fresh, new
            for i in (1, 2):  # (param_groups keys in the order of a loaded torch optimizer)
                check_state_like_torch(opts[3], opts[i])
        for net, o in zip(nets, opts):
            emb_step(net, o, t)
        for i, other in enumerate(nets[1:]):
            assert_embs_close(nets[0], other, 1e-12, f"step {t}, run {i + 1}")
    check_state_like_torch(opts[3], opts[1])
    check_state_like_torch(opts[3], opts[2])


SPARSE_ERRORS = [
    dict(lr=0.0),
    dict(lr=-1.0),
    dict(lr=torch.tensor([0.1, 0.2])),
    dict(eps=0.0),
    dict(betas=(1.0, 0.9)),
    dict(betas=(-0.1, 0.9)),
    dict(betas=(0.9, 1.0)),
]


@pytest.mark.parametrize("kwargs", SPARSE_ERRORS, ids=lambda k: ",".join(map(str, k.values())))
def test_sparse_adam_validation_errors_like_torch(kwargs):
    _errors_like_torch(C.SparseAdam, torch.optim.SparseAdam, kwargs)


def test_sparse_adam_sparse_and_complex_params_errors_like_torch():
    dense = torch.nn.Parameter(torch.zeros(3))
    sparse = torch.sparse_coo_tensor(
        torch.tensor([[0]]), torch.ones(1), (3,), check_invariants=True
    ).requires_grad_()
    cplx = torch.nn.Parameter(torch.zeros(2, dtype=torch.complex128))
    _errors_like_torch(
        C.SparseAdam, torch.optim.SparseAdam, {}, [{"params": [dense]}, {"params": [sparse]}]
    )
    _errors_like_torch(C.SparseAdam, torch.optim.SparseAdam, {}, [dense, cplx])


def test_sparse_adam_dense_grad_error_like_torch():
    _step_errors_like_torch(
        C.SparseAdam, torch.optim.SparseAdam, {}, lambda: torch.ones(5, 2, requires_grad=False)
    )


def test_sparse_adam_param_groups_like_torch():
    net = make_emb()
    ref = torch.optim.SparseAdam(emb_groups(net, lr=0.1))
    ours = C.SparseAdam(emb_groups(net, lr=0.1))
    for g, h in zip(ours.param_groups, ref.param_groups):
        assert list(g) == list(h)
        assert {k: v for k, v in g.items() if k != "params"} == {
            k: v for k, v in h.items() if k != "params"
        }


# ------------------------------------------------------------------------------------------------
# scale_by_sparse_adam in functional use
# ------------------------------------------------------------------------------------------------


def _sparse(indices, values, size):
    return torch.sparse_coo_tensor(torch.tensor(indices), values, size, check_invariants=True)


def test_scale_by_sparse_adam_structure_and_no_mutation():
    params = [torch.zeros(6, 2, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)]
    tx = scale_by_sparse_adam(b1=0.8, b2=0.9, eps=1e-3)
    state = tx.init(params)
    assert isinstance(state, ScaleBySparseAdamState)
    assert int(state.count) == 0 and state.count.dtype == torch.int32
    grads = [
        _sparse([[4, 1, 4]], torch.arange(6, dtype=torch.float64).reshape(3, 2), (6, 2)),
        _sparse([[2]], torch.tensor([-1.0], dtype=torch.float64), (3,)),
    ]
    for _ in range(3):
        old = copy.deepcopy((grads, state))
        updates, new_state = tx.update(grads, state)
        assert all(
            torch.equal(x.to_dense(), y.to_dense())
            for x, y in zip(tree.leaves(old), tree.leaves((grads, state)))
        )
        assert all(u.is_sparse for u in updates)
        assert not any(m.is_sparse for m in new_state.mu + new_state.nu)
        # rows without gradient values: no update, moments untouched
        assert torch.all(updates[0].to_dense()[[0, 2, 3, 5]] == 0)
        assert torch.equal(new_state.mu[0][[0, 2, 3, 5]], state.mu[0][[0, 2, 3, 5]])
        assert torch.all(updates[0].to_dense()[[1, 4]] != 0)
        state = new_state
    assert int(state.count) == 3


def test_scale_by_sparse_adam_dense_gradient_is_a_full_mask():
    """A dense gradient steps like the sparse gradient holding every element."""
    gen = torch.Generator().manual_seed(3)
    params = [torch.zeros(4, 3, dtype=torch.float64)]
    tx = scale_by_sparse_adam()
    s_dense = s_sparse = tx.init(params)
    for _ in range(3):
        g = torch.randn(4, 3, generator=gen, dtype=torch.float64)
        full = _sparse([[0, 1, 2, 3]], g, (4, 3))
        u_d, s_dense = tx.update([g], s_dense)
        u_s, s_sparse = tx.update([full], s_sparse)
        assert not u_d[0].is_sparse
        torch.testing.assert_close(u_d[0], u_s[0].to_dense(), rtol=0, atol=1e-15)
        assert tree.allclose(s_dense, s_sparse, rtol=0, atol=1e-15)


def test_scale_by_sparse_adam_matches_torch_functional():
    """With a learning rate, against torch.optim.SparseAdam on one embedding (coalescing,
    an empty gradient, a None gradient)."""
    torch.manual_seed(0)
    ref_emb = torch.nn.Embedding(8, 3, sparse=True).double()
    w = ref_emb.weight.detach().clone()
    ref = torch.optim.SparseAdam(ref_emb.parameters(), lr=0.05, maximize=True)
    tx = otx.chain(otx.scale(-1.0), scale_by_sparse_adam(), otx.scale_by_learning_rate(0.05))
    state = tx.init([w])
    for k, idx in enumerate([[1, 1, 3], [], [0, 3, 7, 7], [5], [1, 3]]):
        ref.zero_grad()
        ref_emb(torch.tensor(idx, dtype=torch.long)).sum().backward()
        ref.step()
        g = ref_emb.weight.grad
        assert g is not None
        updates, state = tx.update([g], state, [w])
        w = otx.apply_updates([w], updates)[0] if k % 2 else w + updates[0]
        torch.testing.assert_close(w, ref_emb.weight.detach(), rtol=0, atol=1e-14)
    u, s = tx.update([None], state, [w])
    assert u == [None] and s[1].mu[0] is state[1].mu[0]


def test_scale_by_sparse_adam_donated_moments_in_place():
    params = [torch.zeros(5, 2, dtype=torch.float64)]
    tx = scale_by_sparse_adam()
    state = tx.init(params)
    ptrs = [state.mu[0].data_ptr(), state.nu[0].data_ptr()]
    grads = [_sparse([[0, 3]], torch.ones(2, 2, dtype=torch.float64), (5, 2))]
    expected, _ = tx.update(grads, tx.init(params))
    with tree.donate(state):
        updates, new_state = tx.update(grads, state)
    assert [new_state.mu[0].data_ptr(), new_state.nu[0].data_ptr()] == ptrs
    torch.testing.assert_close(updates[0].to_dense(), expected[0].to_dense(), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [
        (dict(b1=1.0), "b1"),
        (dict(b2=-0.1), "b2"),
        (dict(eps=-1.0), "eps"),
        (dict(eps=float("nan")), "eps"),
    ],
)
def test_scale_by_sparse_adam_hyperparameter_errors(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        scale_by_sparse_adam(**kwargs)
