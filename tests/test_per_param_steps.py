"""Per-parameter step counts of the torch.optim drop-ins (``TorchOptimizer._per_param_steps``).

Parameters of one group that skip steps (``None`` gradient) or join late keep their own ``step``
(and every other group-wide value, e.g. NAdam's ``mu_product``), exactly like torch.optim.
"""

from __future__ import annotations

import copy
import pickle

import torch
from torch_optim_ref import (
    assert_nets_close,
    check_resume,
    loss_fn,
    make_net,
    one_step,
    roundtrip,
)

import optax_torch
from optax_torch.compat import torch_optim as C


def _run(opt, net, schedule, start=0):
    """Steps where the parameters named in ``schedule[t]`` get no gradient."""
    named = dict(net.named_parameters())
    for t, skipped in enumerate(schedule, start):
        opt.zero_grad()
        loss_fn(net, t, skip=False).backward()
        for name in skipped:
            named[name].grad = None
        opt.step()


def test_holes_and_late_joins_in_one_group_match_torch():
    schedule = [("fc.weight", "head.weight"), ("head.weight",), ("conv.weight",), (), ("fc.bias",)]
    schedule += [(), ("conv.weight", "fc.bias")] * 4
    a, b = make_net(), make_net()
    ref = torch.optim.Adam(a.parameters(), lr=0.01, amsgrad=True)
    ours = C.Adam(b.parameters(), lr=0.01, amsgrad=True)
    _run(ref, a, schedule)
    _run(ours, b, schedule)
    assert_nets_close(a, b, 1e-12)
    steps = {k: int(v["step"]) for k, v in ours.state_dict()["state"].items()}
    assert steps == {k: int(v["step"]) for k, v in ref.state_dict()["state"].items()}
    assert len(set(steps.values())) > 1


def test_counts_converge_back_to_one_state():
    names = [n for n, _ in make_net().named_parameters()]
    others = tuple(n for n in names if n != "fc.weight")
    # fc.weight skips step 1, all the others skip step 2: every count is 2 after step 2.
    schedule = [(), ("fc.weight",), others, (), ("conv.weight",)]
    a, b = make_net(), make_net()
    ref, ours = torch.optim.Adam(a.parameters(), lr=0.01), C.Adam(b.parameters(), lr=0.01)
    seen = []
    for t, skipped in enumerate(schedule):
        _run(ref, a, [skipped], start=t)
        _run(ours, b, [skipped], start=t)
        seen.append(ours._otx_slots[0].pp is not None)
        assert_nets_close(a, b, 1e-12, f"step {t}")
    assert seen == [False, True, False, False, True]


def test_diverged_state_roundtrips_through_torch_and_pickle():
    for at in (1, 5, 7):  # the side branch joins at step 1 and skips steps 2, 3, 8, ...
        check_resume(C.Adam, torch.optim.Adam, dict(lr=0.01, amsgrad=True), dict(lr=0.02), at=at)
    a, b = make_net(), make_net()
    ref, ours = torch.optim.AdamW(a.parameters(), lr=0.01), C.AdamW(b.parameters(), lr=0.01)
    for t in range(6):
        one_step(a, ref, t)
        one_step(b, ours, t)
    assert ours._otx_slots[0].pp is not None
    clone = pickle.loads(pickle.dumps((b, ours)))
    deep = copy.deepcopy((b, ours))
    for t in range(6, 12):
        one_step(a, ref, t)
        for net, opt in (clone, deep):
            one_step(net, opt, t)
        for net, _ in (clone, deep):
            assert_nets_close(a, net, 1e-12, f"step {t}")
    roundtrip(deep[1].state_dict())


def test_plain_torch_optimizer_keeps_group_counts():
    """A TorchOptimizer of a general chain keeps optax's single count per group."""
    net = make_net()
    opt = optax_torch.TorchOptimizer(net.parameters(), optax_torch.adam, learning_rate=0.01)
    for t in range(5):
        one_step(net, opt, t)
    counts = {
        int(x) for e in opt.state_dict()["state"].values() for k, x in e.items() if "count" in k
    }
    assert counts == {5}  # the side branch skipped steps 0, 2, 3 but sees the group's count


# ------------------------------------------------------------------------------------------------
# Complex parameters as real pairs (contrib.view_complex_as_real, applied by the drop-ins)
# ------------------------------------------------------------------------------------------------


def test_view_complex_as_real_is_torch_adam_functionally():
    gen = torch.Generator().manual_seed(1)
    params = [
        torch.randn(3, 2, dtype=torch.complex128, generator=gen),
        torch.randn(4, dtype=torch.float64, generator=gen),
    ]
    ref_params = [torch.nn.Parameter(p.clone()) for p in params]
    ref = torch.optim.Adam(ref_params, lr=0.1)
    tx = optax_torch.contrib.view_complex_as_real(optax_torch.adam(0.1))
    state = tx.init(params)
    assert state[0].mu[0].dtype == torch.complex128 and state[0].mu[1].dtype == torch.float64
    for _ in range(8):
        grads = [torch.randn(p.shape, dtype=p.dtype, generator=gen) for p in params]
        before = [g.clone() if g is not None else None for g in grads]
        updates, state = tx.update(grads, state, params)
        params = optax_torch.apply_updates(params, updates)
        for p, g in zip(ref_params, grads):
            p.grad = g
        ref.step()
        for g, b in zip(grads, before):
            assert g is None or torch.equal(g, b)
        for p, q in zip(ref_params, params):
            torch.testing.assert_close(q, p.detach(), rtol=0, atol=1e-12)
    for key in ("exp_avg", "exp_avg_sq"):
        v = ref.state[ref_params[0]][key]
        field = "mu" if key == "exp_avg" else "nu"
        torch.testing.assert_close(getattr(state[0], field)[0], v, rtol=0, atol=1e-12)
    # A None gradient keeps the complex state as it is.
    mu = state[0].mu[0].clone()
    updates, state = tx.update([None, torch.ones(4, dtype=torch.float64)], state, params)
    assert updates[0] is None and torch.equal(state[0].mu[0], mu)


def test_view_complex_as_real_passes_real_trees_through():
    inner = optax_torch.adam(0.1)
    tx = optax_torch.contrib.view_complex_as_real(inner)
    params = [torch.ones(3, dtype=torch.float64)]
    s1, s2 = inner.init(params), tx.init(params)
    g = [torch.full((3,), 0.5, dtype=torch.float64)]
    u1, _ = inner.update(g, s1, params)
    u2, _ = tx.update(g, s2, params)
    assert torch.equal(u1[0], u2[0])
