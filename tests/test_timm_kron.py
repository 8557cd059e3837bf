"""timm's ``Kron`` (PSGD Kron) drop-in against timm 1.0.31, step by step on the shared harness
(float64, atol 1e-12; float32 and low-precision state with looser tolerances), its state layout,
checkpoints both ways, the global-generator mode, constructor errors, and the pure
``scale_by_kron`` on a mixed-shape pytree.

timm compiles four kernels with ``torch.compile``; the tests run timm eagerly (``has_dynamo``
patched off at import) so that both sides run the same eager math, and the CPU compile time
stays out of the suite.
"""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch_optim_ref import (
    check_resume,
    check_signature,
    groups,
    loss_fn,
    make_net,
    roundtrip,
    train_pair,
)

timm = pytest.importorskip("timm")
import timm.optim.kron as TK  # noqa: E402

from optax_torch import tree  # noqa: E402
from optax_torch.compat.timm.kron import Kron  # noqa: E402
from optax_torch.transforms.kron import (  # noqa: E402
    KRON_MAX_NDIM,
    precond_update_prob_schedule,
    scale_by_kron,
)

TK.has_dynamo = False  # timm's Kron instances made from here on run their kernels eagerly

DET = dict(deterministic=True)


def _case_id(kw: dict) -> str:
    """A test id stable across processes (pytest-xdist workers collect the same ids)."""
    return ",".join(f"{k}={getattr(v, '__name__', v)}" for k, v in kw.items())


def _halving(step: int) -> float:
    return 0.5 if step < 6 else 0.25


KRON_CASES = [
    dict(DET),
    dict(DET, momentum=0.5, weight_decay=0.05),
    dict(DET, preconditioner_update_probability=0.4),
    dict(DET, preconditioner_update_probability=_halving, weight_decay=0.01),
    dict(DET, momentum_into_precond_update=False),
    dict(DET, memory_save_mode="one_diag"),
    dict(DET, memory_save_mode="smart_one_diag"),
    dict(DET, memory_save_mode="all_diag", weight_decay=0.1),
    dict(DET, max_size_triangular=5, min_ndim_triangular=3),
    dict(DET, precond_lr=0.3, precond_init_scale=2.0),
    dict(DET, flatten=True, flatten_start_dim=1),
    dict(DET, flatten=True, memory_save_mode="smart_one_diag"),
    dict(DET, weight_decay=0.1, decoupled_decay=True),
    dict(DET, weight_decay=0.1, decoupled_decay=True, corrected_weight_decay=True),
    dict(DET, weight_decay=0.1, stochastic_weight_decay=True),
    dict(
        DET,
        weight_decay=0.1,
        stochastic_weight_decay=True,
        decoupled_decay=True,
        corrected_weight_decay=True,
        preconditioner_update_probability=0.5,
    ),
]


def _check_state_like_timm(ref: TK.Kron, ours: Kron, atol: float = 1e-12, order=True) -> None:
    """Same param_groups, the same state_dict entries (timm's layout) and generator."""
    for g, h in zip(ours.param_groups, ref.param_groups):
        assert (list(g) if order else set(g)) == (list(h) if order else set(h)), (list(g), list(h))
        assert all(g[k] == h[k] for k in h if k != "params")
    sd_ref, sd_ours = ref.state_dict(), ours.state_dict()
    assert sd_ours["rng_state"] == sd_ref["rng_state"]
    assert set(sd_ours["state"]) == set(sd_ref["state"])
    for k, e in sd_ref["state"].items():
        o = sd_ours["state"][k]
        assert list(o) == list(e), (list(o), list(e))
        assert o["step"] == e["step"] and o["update_counter"] == e["update_counter"]
        assert isinstance(o["step"], int) and isinstance(o["update_counter"], int)
        b, a = o["momentum_buffer"], e["momentum_buffer"]
        assert b.dtype == a.dtype and b.shape == a.shape
        torch.testing.assert_close(b, a, rtol=0, atol=atol)
        assert len(o["Q"]) == len(e["Q"])
        for q, r in zip(o["Q"], e["Q"]):
            assert q.dtype == r.dtype and q.shape == r.shape
            torch.testing.assert_close(q, r, rtol=0, atol=atol)


def test_kron_signature():
    check_signature(Kron, TK.Kron)


@pytest.mark.parametrize("kw", KRON_CASES, ids=_case_id)
def test_kron_matches_timm(kw):
    _, _, ref, ours = train_pair(Kron, TK.Kron, kw, dict(lr=0.02, weight_decay=0.0), steps=24)
    _check_state_like_timm(ref, ours)


def test_kron_default_schedule_skips_updates():
    # The annealed probability drops below 1 after step 500: every step counts toward it.
    p = [float(precond_update_prob_schedule(n)) for n in (0, 500, 600, 4000, 10_000)]
    ref = [float(TK.precond_update_prob_schedule(n)) for n in (0, 500, 600, 4000, 10_000)]
    assert p == ref and p[0] == 1.0 and p[-1] == pytest.approx(0.03)


@pytest.mark.parametrize(
    "kw, atol",
    [
        (dict(DET, precond_dtype=torch.float32), 1e-6),
        (dict(DET, mu_dtype=torch.float32, weight_decay=0.05), 1e-6),
        (dict(DET, mu_dtype=torch.bfloat16, precond_dtype=torch.float32), 1e-6),
    ],
    ids=["precond_f32", "mu_f32", "mu_bf16"],
)
def test_kron_low_precision_state(kw, atol):
    # float64 params, lower-precision state: the same roundings on both sides.
    _, _, ref, ours = train_pair(Kron, TK.Kron, kw, steps=20, atol=atol)
    _check_state_like_timm(ref, ours, atol=atol)
    entry = ours.state_dict()["state"][0]
    assert entry["momentum_buffer"].dtype == (kw.get("mu_dtype") or torch.float64)
    assert entry["Q"][0].dtype == (kw.get("precond_dtype") or torch.float64)


def test_kron_float32():
    train_pair(
        Kron,
        TK.Kron,
        dict(DET, weight_decay=0.05, preconditioner_update_probability=0.5),
        dict(lr=0.02),
        dtype=torch.float32,
        steps=20,
    )


def test_kron_global_generator_matches_timm():
    """deterministic=False: the probe vectors come from torch's global generator, in timm's
    order; from the same generator state both give the same run."""
    a, b = make_net(), make_net()
    kw = dict(lr=0.01, weight_decay=0.02, stochastic_weight_decay=True)
    ref, ours = TK.Kron(groups(a), **kw), Kron(groups(b), **kw)
    for t in range(20):
        for net, opt in ((a, ref), (b, ours)):
            opt.zero_grad()
            loss_fn(net, t).backward()
            torch.manual_seed(500 + t)
            opt.step()
        for p, q in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(q, p, rtol=0, atol=1e-12)
    assert ours.rng.getstate() == ref.rng.getstate()


@pytest.mark.parametrize(
    "kw",
    [
        dict(DET, weight_decay=0.05, stochastic_weight_decay=True),
        dict(DET, preconditioner_update_probability=0.4, flatten=True, memory_save_mode="one_diag"),
    ],
    ids=["stochastic_wd", "prob_flatten"],
)
def test_kron_resume(kw):
    # ours -> torch.load(weights_only) -> ours, timm -> ours, ours -> timm; mid-run, step 5.
    check_resume(Kron, TK.Kron, kw, dict(lr=0.02), steps=14, at=5)


def test_kron_state_dict_layout_and_early_timm_checkpoint():
    """timm's checkpoint taken before a parameter has state (the side branch joins late) loads;
    our checkpoint has timm's layout and loads with torch.load(weights_only=True)."""
    a, b = make_net(), make_net()
    ref, ours = TK.Kron(groups(a), **DET), Kron(groups(b), **DET)
    for net, opt in ((a, ref), (b, ours)):
        opt.zero_grad()
        loss_fn(net, 0).backward()  # the side branch has no gradient at step 0
        opt.step()
    sd = roundtrip(ours.state_dict())
    assert set(sd) == {"state", "param_groups", "rng_state"}
    assert set(sd["state"]) == set(ref.state_dict()["state"])
    c = copy.deepcopy(b)
    opts = [ref, Kron(groups(c), **DET)]
    opts[1].load_state_dict(roundtrip(ref.state_dict()))
    for t in range(1, 8):
        for net, opt in ((a, opts[0]), (c, opts[1])):
            opt.zero_grad()
            loss_fn(net, t).backward()
            opt.step()
        for p, q in zip(a.parameters(), c.parameters()):
            torch.testing.assert_close(q, p, rtol=0, atol=1e-12)
    _check_state_like_timm(opts[0], opts[1], order=False)  # a loaded group lists params last


def test_kron_pickle_and_deepcopy_continue():
    a = make_net()
    opt = Kron(groups(a), weight_decay=0.05, stochastic_weight_decay=True, **DET)
    for t in range(3):
        opt.zero_grad()
        loss_fn(a, t).backward()
        opt.step()
    buf = io.BytesIO()
    pickle.dump((a, opt), buf)
    buf.seek(0)
    runs = [(a, opt), copy.deepcopy((a, opt)), pickle.load(buf)]
    for t in range(3, 7):
        for net, o in runs:
            o.zero_grad()
            loss_fn(net, t).backward()
            o.step()
    for _, o in runs[1:]:
        assert o.rng.getstate() == opt.rng.getstate()
    for net, _ in runs[1:]:
        for p, q in zip(a.parameters(), net.parameters()):
            assert torch.equal(p, q)


@pytest.mark.parametrize(
    "kw, msg, timm_too",
    [
        (dict(lr=-1.0), "Invalid learning rate: -1.0", True),
        (dict(momentum=1.0), "Invalid beta parameter: 1.0", True),
        (dict(momentum=-0.1), "Invalid beta parameter: -0.1", True),
        (dict(weight_decay=-0.5), "Invalid weight_decay value: -0.5", True),
        (dict(lr=0.0, corrected_weight_decay=True), "Corrected weight decay requires", True),
        # timm raises this one at the first step, does not check the others
        (dict(memory_save_mode="half_diag"), "memory_save_mode", False),
        (dict(precond_lr=-0.1), "precond_lr", False),
        (dict(preconditioner_update_probability=0.0), "preconditioner_update_probability", False),
    ],
)
def test_kron_errors(kw, msg, timm_too):
    with pytest.raises(ValueError, match=msg):
        Kron(make_net().parameters(), **kw)
    if timm_too:
        with pytest.raises(ValueError, match=msg):
            TK.Kron(make_net().parameters(), **kw)


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(b1=1.0), "b1"),
        (dict(memory_save_mode="x"), "memory_save_mode"),
        (dict(precond_lr=-1.0), "precond_lr"),
        (dict(precond_init_scale=0.0), "precond_init_scale"),
        (dict(preconditioner_update_probability=-0.5), "preconditioner_update_probability"),
        (dict(max_size_triangular=0), "max_size_triangular"),
        (dict(min_ndim_triangular=1.5), "min_ndim_triangular"),
        (dict(weight_decay=-1.0), "weight_decay"),
    ],
)
def test_scale_by_kron_errors(kw, msg):
    with pytest.raises(ValueError, match=msg):
        scale_by_kron(**kw)


def _mixed_tree(dtype=torch.float64):
    g = torch.Generator().manual_seed(3)
    shapes = {"s": (), "b": (6,), "w": (5, 4), "c": (3, 2, 1, 3), "e": (1, 7)}
    return {k: torch.randn(s, generator=g, dtype=dtype) for k, s in shapes.items()}


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(memory_save_mode="one_diag", weight_decay=0.1, stochastic_weight_decay=True),
        dict(flatten=True, preconditioner_update_probability=0.5, mu_dtype=torch.float32),
    ],
    ids=["default", "one_diag_swd", "flatten"],
)
def test_scale_by_kron_pytree_vs_timm_and_pure(kw):
    """The pure transform on a dict of 0-d to 4-d leaves (one None): timm's step (lr=1) on the
    same tensors, inputs never mutated, the same inputs give the same outputs."""
    params = _mixed_tree()
    params["none"] = None
    tx = scale_by_kron(**kw)
    state = tx.init(params)
    assert state.Q[list(params).index("none")] == (None,) * KRON_MAX_NDIM
    timm_kw = {k: v for k, v in kw.items() if k != "weight_decay"}
    ref_params = [p.clone() for p in params.values() if p is not None]
    ref = TK.Kron(
        ref_params, lr=1.0, deterministic=True, weight_decay=kw.get("weight_decay", 0.0), **timm_kw
    )
    for t in range(8):
        grads = {k: None if p is None else torch.sin(p * (t + 1)) for k, p in params.items()}
        snapshot = copy.deepcopy((grads, state, params))
        updates, new_state = tx.update(grads, state, params)
        again, again_state = tx.update(grads, state, params)
        for x, y in zip(tree.flatten(snapshot)[0], tree.flatten((grads, state, params))[0]):
            assert (x is None and y is None) or torch.equal(x, y)  # nothing mutated
        for x, y in zip(
            tree.flatten((updates, new_state))[0], tree.flatten((again, again_state))[0]
        ):
            assert (x is None and y is None) or torch.equal(x, y)  # a function of its inputs
        assert updates["none"] is None
        for r, g in zip(ref_params, [v for v in grads.values() if v is not None]):
            r.grad = g.clone()
        before = [r.clone() for r in ref_params]
        ref.step()
        ours_u = [u for u in updates.values() if u is not None]
        for u, r, r0 in zip(ours_u, ref_params, before):
            assert u.shape == r.shape and u.dtype == r.dtype
            torch.testing.assert_close(r0 - u, r, rtol=0, atol=1e-12)
        # params move as timm's did, so that weight decay sees the same tensors
        params = {k: None if p is None else p - updates[k] for k, p in params.items()}
        for p, r in zip([v for v in params.values() if v is not None], ref_params):
            torch.testing.assert_close(p, r, rtol=0, atol=1e-12)
        state = new_state
    assert tuple(state.rng.tolist()) == ref.rng.getstate()[1]
    assert int(state.count[0]) == 8


def test_scale_by_kron_skips_none_updates():
    params = _mixed_tree()
    tx = scale_by_kron(preconditioner_update_probability=0.5)
    state = tx.init(params)
    grads = {k: (None if k == "w" else torch.ones_like(p)) for k, p in params.items()}
    updates, new_state = tx.update(grads, state, params)
    j = list(params).index("w")
    assert updates["w"] is None
    assert new_state.mu[j] is state.mu[j] and int(new_state.count[j]) == 0
    assert all(int(c) == 1 for i, c in enumerate(new_state.count) if i != j)
    # the state loads with torch.load(weights_only=True)
    buf = io.BytesIO()
    torch.save(new_state._asdict(), buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=True)["rng"].dtype == torch.int64
