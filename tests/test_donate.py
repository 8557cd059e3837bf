"""Buffer donation (``optax_torch.tree.donate``): same numbers, old buffers reused, never unsafe."""

from __future__ import annotations

import pytest
import torch

import optax_torch as otx
from optax_torch import tree as otree


def _params(dtype):
    g = torch.Generator().manual_seed(0)
    return {
        "w": torch.randn(7, 5, generator=g, dtype=dtype),
        "b": torch.randn(5, generator=g, dtype=dtype),
        "s": torch.randn((), generator=g, dtype=dtype),
    }


def _grads(params, k):
    g = torch.Generator().manual_seed(100 + k)
    return {n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in params.items()}


TRANSFORMS = {
    "adam": lambda: otx.adam(1e-2),
    "adamw": lambda: otx.adamw(1e-2, weight_decay=0.1),
    "nadam": lambda: otx.nadam(1e-2),
    "amsgrad": lambda: otx.amsgrad(1e-2),
    "amsgrad_torch": lambda: otx.chain(
        otx.scale_by_amsgrad(debias_after_max=True), otx.scale_by_learning_rate(1e-2)
    ),
    "sgd_momentum": lambda: otx.sgd(1e-2, momentum=0.9, nesterov=True),
    "rmsprop_centered": lambda: otx.rmsprop(1e-2, centered=True, momentum=0.5),
    "adagrad": lambda: otx.adagrad(1e-2),
    "ema": lambda: otx.ema(0.9),
    "nadam_torch": lambda: otx.chain(otx.scale_by_nadam(), otx.scale_by_learning_rate(1e-2)),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_donated_steps_equal_pure_steps(name, dtype):
    """Donating the old state changes where results are written, not what they are."""
    tx = TRANSFORMS[name]()
    params = _params(dtype)
    pure_state = tx.init(params)
    donated_state = tx.init(params)
    for k in range(12):
        grads = _grads(params, k)
        u_pure, pure_state = tx.update(grads, pure_state, params)
        with otree.donate(donated_state, exclude=(grads, params)):
            u_don, donated_state = tx.update(grads, donated_state, params)
        # add_scale into a donated momentum buffer computes y * s + x instead of x + s * y:
        # equal up to one rounding.
        tol = (
            {"rtol": 1e-5, "atol": 1e-6}
            if dtype == torch.float32
            else {"rtol": 1e-12, "atol": 1e-14}
        )
        for a, b in zip(otree.leaves(u_don), otree.leaves(u_pure)):
            torch.testing.assert_close(a, b, **tol)
        for a, b in zip(otree.leaves(donated_state), otree.leaves(pure_state)):
            torch.testing.assert_close(a, b, **tol)


def test_donated_moments_are_written_into_the_old_buffers():
    tx = otx.scale_by_adam()
    params = _params(torch.float32)
    state = tx.init(params)
    old_mu, old_nu = dict(state.mu), dict(state.nu)
    with otree.donate(state):
        _, new = tx.update(_grads(params, 0), state, params)
    for n in params:
        assert new.mu[n] is old_mu[n] and new.nu[n] is old_nu[n]


def test_without_donation_the_old_state_is_untouched():
    tx = otx.scale_by_adam()
    params = _params(torch.float32)
    state = tx.init(params)
    _, state = tx.update(_grads(params, 0), state, params)
    snapshot = [x.clone() for x in otree.leaves(state)]
    _, new = tx.update(_grads(params, 1), state, params)
    for a, b in zip(otree.leaves(state), snapshot):
        assert torch.equal(a, b)
    assert all(n is not o for n, o in zip(otree.leaves(new.mu), otree.leaves(state.mu)))


def test_a_buffer_is_consumed_once():
    """Two moment updates of the same donated tree: only the first writes in place."""
    m = {"a": torch.zeros(3)}
    g = {"a": torch.ones(3)}
    with otree.donate(m):
        first = otree.update_moment(g, m, 0.5, 1)
        second = otree.update_moment(g, m, 0.5, 1)
    assert first["a"] is m["a"]
    assert second["a"] is not m["a"]
    torch.testing.assert_close(first["a"], torch.full((3,), 0.5))
    # the second read the (already updated) buffer: lerp(0.5, 1, 0.5) = 0.75
    torch.testing.assert_close(second["a"], torch.full((3,), 0.75))


def test_tensors_seen_twice_or_excluded_are_never_donated():
    t = torch.zeros(3)
    shared = {"a": t, "b": t}
    g = {"a": torch.ones(3), "b": torch.ones(3)}
    with otree.donate(shared):
        out = otree.update_moment(g, shared, 0.5, 1)
    assert out["a"] is not t and torch.equal(t, torch.zeros(3))
    m = {"a": torch.zeros(3), "b": torch.zeros(3)}
    with otree.donate(m, exclude=({"x": m["a"]},)):
        out = otree.update_moment(g, m, 0.5, 1)
    assert out["a"] is not m["a"] and torch.equal(m["a"], torch.zeros(3))


def test_donation_ends_with_the_block_and_skips_traced_paths():
    m = {"a": torch.zeros(3)}
    g = {"a": torch.ones(3)}
    with otree.donate(m):
        pass
    assert otree.update_moment(g, m, 0.5, 1)["a"] is not m["a"]

    def step(g, m):
        with otree.donate(m):
            return otree.update_moment(g, m, 0.5, 1)

    batched = torch.func.vmap(step)({"a": torch.ones(2, 3)}, {"a": torch.zeros(2, 3)})
    torch.testing.assert_close(batched["a"], torch.full((2, 3), 0.5))


def test_none_leaves_keep_their_old_buffers_untouched():
    tx = otx.adam(0.1)
    params = {"a": torch.ones(2), "b": torch.ones(3)}
    state = tx.init(params)
    _, state = tx.update({"a": torch.ones(2), "b": torch.ones(3)}, state, params)
    a_mu = otree.get(state, "mu")["a"].clone()
    with otree.donate(state):
        u, state = tx.update({"a": None, "b": torch.ones(3)}, state, params)
    assert u["a"] is None
    assert torch.equal(otree.get(state, "mu")["a"], a_mu)


# --------------------------------------------------------------------------------------------
# Which transformations may be given a donated state
# --------------------------------------------------------------------------------------------


def _reads_old_state_twice():
    """A custom transform (not marked) whose update reads its old moment after replacing it."""

    def init_fn(params):
        return otree.zeros_like(params)

    def update_fn(updates, state, params=None):
        new = otree.update_moment(updates, state, 0.5, 1)
        change = otree.sub(new, state)  # needs the *old* moment
        return change, new

    return otx.GradientTransformation(init_fn, update_fn)


def test_marks_propagate_through_combinators():
    safe, custom = otx.adam(0.1), _reads_old_state_twice()
    assert otx.is_donation_safe(safe)
    assert not otx.is_donation_safe(custom)
    assert otx.is_donation_safe(otx.chain(otx.clip_by_global_norm(1.0), safe))
    assert not otx.is_donation_safe(otx.chain(safe, custom))
    assert not otx.is_donation_safe(otx.named_chain(("a", safe), ("b", custom)))
    assert not otx.is_donation_safe(otx.partition({"a": safe, "b": custom}, "a"))
    assert not otx.is_donation_safe(otx.masked(custom, True))
    assert otx.is_donation_safe(otx.masked(safe, True))
    assert otx.is_donation_safe(otx.inject_hyperparams(otx.adamw)(learning_rate=0.1))
    marked = otx.GradientTransformation(custom.init, otx.donation_safe(lambda u, s, p=None: (u, s)))
    assert otx.is_donation_safe(marked)


def test_adapter_never_donates_to_an_unmarked_transformation():
    """Through TorchOptimizer, the custom transform gets an intact old state every step."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4))
    opt = otx.TorchOptimizer([w], _reads_old_state_twice())
    params = [w.detach().clone()]
    tx = _reads_old_state_twice()
    state = tx.init(params)
    for k in range(4):
        g = torch.full((4,), float(k + 1))
        w.grad = g.clone()
        opt.step()
        u, state = tx.update([g], state, params)
        params = otx.apply_updates(params, u)
    torch.testing.assert_close(w.detach(), params[0], rtol=0, atol=0)


# --------------------------------------------------------------------------------------------
# Intermediate updates passed on by chain to members marked ``consumes_updates``
# --------------------------------------------------------------------------------------------


def _emitter(store):
    """A stateless member returning fresh tensors it also records (for identity checks)."""

    def f(updates, params):
        del params
        out = otree.scale(3.0, updates)
        store.append(out)
        return out

    return otx.stateless(f)


def test_chain_passes_its_intermediate_updates_to_a_consuming_member():
    params = _params(torch.float32)
    grads = _grads(params, 0)
    store = []
    tx = otx.chain(_emitter(store), otx.add_decayed_weights(0.5), otx.scale(-2.0))
    assert otx.is_consuming_updates(otx.scale(1.0))
    assert not otx.is_consuming_updates(tx)
    state = tx.init(params)
    expected, _ = tx.update(grads, state, params)  # not donated: fresh buffers
    assert all(e is not s for e, s in zip(expected.values(), store[-1].values()))
    with otree.donate(state, exclude=(grads, params)):
        got, _ = tx.update(grads, state, params)
    # both the decay and the scaling wrote into the emitter's buffers
    assert all(g is s for g, s in zip(got.values(), store[-1].values()))
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=0)


def test_intermediate_updates_reach_only_the_next_consuming_member():
    params = _params(torch.float64)
    grads = _grads(params, 1)
    store = []
    zeros = {k: torch.zeros_like(v) for k, v in params.items()}

    @otx.consumes_updates
    @otx.donation_safe
    def reads_only(updates, state, params=None):  # marked, but consumes nothing
        return otree.add(updates, zeros), state

    marked = otx.GradientTransformation(lambda p: otx.EmptyState(), reads_only)

    @otx.donation_safe
    def would_overwrite(updates, state, params=None):  # unmarked; add_scale could write in place
        return otree.add_scale(updates, 1.0, zeros), state

    unmarked = otx.GradientTransformation(lambda p: otx.EmptyState(), would_overwrite)
    for tx in (
        otx.chain(_emitter(store), otx.chain(marked, unmarked)),
        otx.chain(_emitter(store), otx.ema(0.5), otx.scale(2.0)),
        otx.chain(_emitter(store), otx.chain(otx.trace(0.9), otx.scale(2.0))),
    ):
        state = tx.init(params)
        expected, _ = tx.update(grads, state, params)
        with otree.donate(state, exclude=(grads, params)):
            got, _ = tx.update(grads, state, params)
        emitted = store[-1]
        for k in expected:
            torch.testing.assert_close(got[k], expected[k], rtol=0, atol=0)
            # the emitter's output was read by a non-consuming member: it must be intact
            torch.testing.assert_close(emitted[k], 3.0 * grads[k], rtol=0, atol=0)


@pytest.mark.parametrize("passthrough", [False, True])
def test_a_member_that_keeps_its_output_in_its_state_is_never_overwritten(passthrough):
    params = _params(torch.float32)
    # trace's output *is* its new state; identity hands it on unchanged
    middle = (otx.identity(),) if passthrough else ()
    tx = otx.chain(otx.chain(otx.scale(2.0), otx.trace(0.9)), *middle, otx.scale(-1.0))
    state = tx.init(params)
    for k in range(3):
        grads = _grads(params, k)
        expected, expected_state = tx.update(grads, state, params)
        with otree.donate(state, exclude=(grads, params)):
            got, state = tx.update(grads, state, params)
        for name in expected:  # (donated, trace adds in torch's order: rounding differs)
            torch.testing.assert_close(got[name], expected[name])
            trace = state[0][1].trace[name]
            torch.testing.assert_close(trace, expected_state[0][1].trace[name])
            torch.testing.assert_close(trace, -got[name])


# Members that read their input updates in several operations, the last of which may write its
# output into them (base._reuses_updates): Adam after clipping, trust ratios, block scalings.
REUSING = {
    "adam": lambda: otx.scale_by_adam(),
    "adam_nesterov": lambda: otx.scale_by_adam(nesterov=True),
    "adamw": lambda: otx.adamw(1e-2, weight_decay=0.1),
    "lamb": lambda: otx.lamb(1e-2, weight_decay=0.1),
    "trust_ratio": lambda: otx.scale_by_trust_ratio(),
    "param_block_rms": lambda: otx.scale_by_param_block_rms(),
    "param_block_norm": lambda: otx.scale_by_param_block_norm(),
    "clip_by_block_rms": lambda: otx.clip_by_block_rms(0.1),
}


def _large_params():  # div_sqrt writes into given buffers from 2**16 elements per tensor on
    g = torch.Generator().manual_seed(3)
    return {"w": torch.randn(300, 300, generator=g), "b": torch.randn(70000, generator=g)}


@pytest.mark.parametrize("name", sorted(REUSING))
def test_a_reusing_member_writes_its_output_into_the_donated_updates(name):
    params = _large_params()
    store = []
    inner = REUSING[name]()
    assert otx.is_consuming_updates(inner)
    tx = otx.chain(_emitter(store), inner, otx.scale(-1.0))
    pure_state, state = tx.init(params), tx.init(params)
    for k in range(3):
        grads = {
            n: torch.randn(p.shape, generator=torch.Generator().manual_seed(k))
            for n, p in params.items()
        }
        seen = {n: g.clone() for n, g in grads.items()}
        expected, pure_state = tx.update(grads, pure_state, params)
        with otree.donate(state, exclude=(grads, params)):
            got, state = tx.update(grads, state, params)
        for n in expected:
            if name != "adam_nesterov":  # (its bias correction of g takes the buffer)
                assert got[n] is store[-1][n]  # no new buffer: the emitter's, rescaled in place
            torch.testing.assert_close(got[n], expected[n], rtol=0, atol=0)
            torch.testing.assert_close(grads[n], seen[n], rtol=0, atol=0)  # never the caller's


def test_reusing_members_never_defer_a_scale_and_keep_what_they_read_again():
    from optax_torch.base import _may_defer_scale

    assert not _may_defer_scale(otx.scale_by_adam())
    assert not _may_defer_scale(otx.scale_by_trust_ratio())
    assert _may_defer_scale(otx.scale(2.0))
    # Adam with clipping_threshold reads the updates again after its ratio: no reuse.
    params = _large_params()
    store = []
    tx = otx.chain(_emitter(store), otx.scale_by_adam(clipping_threshold=1.0))
    state = tx.init(params)
    grads = _grads(params, 0)
    expected, _ = tx.update(grads, tx.init(params), params)
    with otree.donate(state, exclude=(grads, params)):
        got, _ = tx.update(grads, state, params)
    for n in expected:
        assert got[n] is not store[-1][n]
        torch.testing.assert_close(got[n], expected[n], rtol=0, atol=0)
        torch.testing.assert_close(store[-1][n], 3.0 * grads[n], rtol=0, atol=0)


def _allocated_numel(fn) -> int:
    """Elements of the tensors that the out-of-place aten operations called by ``fn`` return."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    total = 0

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            nonlocal total
            out = func(*args, **(kwargs or {}))
            schema = func._schema
            if not schema.is_mutable and not any(a.alias_info for a in schema.returns):
                total += sum(t.numel() for t in tree_leaves(out) if isinstance(t, torch.Tensor))
            return out

    with Count():
        fn()
    return total


@pytest.mark.parametrize("mode", ["hard", "smooth"])
def test_lion_writes_its_own_temporaries_in_place_when_donated(mode):
    """Lion's ``sign(b1 m + (1 - b1) g)``: under donation both operations write into the buffer
    that ``b1 m`` made (one parameter-sized allocation; the smooth variant's ``tanh(beta c)``
    is a map of its own and makes two more), with the pure step's numbers; the gradients and
    the new state are left alone."""
    params = _large_params()
    tx = otx.scale_by_lion(mode=mode)
    n = sum(p.numel() for p in params.values())
    pure_state, state = tx.init(params), tx.init(params)
    for k in range(3):
        grads = _grads(params, k)
        seen = {name: g.clone() for name, g in grads.items()}
        expected, pure_state = tx.update(grads, pure_state, params)

        def donated():
            nonlocal state, got
            with otree.donate(state, exclude=(grads, params)):
                got, state = tx.update(grads, state, params)

        got = None
        allocated = _allocated_numel(donated)
        buffers = 1 if mode == "hard" else 3  # (+ the 0-d step count)
        assert buffers * n <= allocated <= buffers * n + 16, (allocated, n)
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0)
            torch.testing.assert_close(grads[name], seen[name], rtol=0, atol=0)
            torch.testing.assert_close(state.mu[name], pure_state.mu[name], rtol=0, atol=0)
            assert got[name] is not state.mu[name]
