"""Property-based fuzzing: the laws of ``shared/design.md`` §1 over random chains and pytrees.

Random transformations (``strategies.chains``: building blocks with random hyperparameters,
catalogue entries, ``masked`` / ``apply_if_finite`` / ``MultiSteps`` / ``inject_hyperparams``
around them) on random pytrees (``strategies.problems``: nested dict / list / tuple / NamedTuple,
0-d and empty leaves, float16 to float64 and complex where allowed, ``None`` params and
gradients). Laws:

* **purity**: ``init`` / ``update`` never modify their inputs (values and ``_version``
  counters); the same inputs give bitwise the same outputs.
* **structure**: updates have the gradients' structure, shapes and dtypes (``None`` where the
  gradient is ``None``); the state keeps its structure, shapes and dtypes from step to step.
* **finite**: finite gradients and params give finite updates and state (exceptions below).
* **compiled**: ``torch.compile(update, backend="aot_eager", fullgraph=True)`` = eager.
* **save/load**: the state saved with ``torch.save`` and loaded with
  ``torch.load(weights_only=True)`` gives bitwise the same next step.
* **adapter**: ``TorchOptimizer(params, tx).step()`` = the functional step, for random chains.

Profiles: ``fuzz-ci`` by default (derandomized, a few examples per law), ``fuzz-long`` with
``OPTAX_TORCH_FUZZ=long`` (``scripts/fuzz.sh``; docs/fuzzing.md).
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from catalogue import catalogue
from conftest import Pair, assert_trees_close, tensor_versions
from hypothesis import given, note
from hypothesis import strategies as st
from strategies import (
    ADAPTER_SKIP,
    Chain,
    Problem,
    chains,
    chains_and_problems,
    fuzz_settings,
    problems,
)

import optax_torch as otx
from optax_torch import tree as otree
from optax_torch.wrappers import TorchOptimizer


def _leaf_meta(tree):
    leaves, spec = otree.flatten(tree)
    meta = [
        None if x is None else (tuple(x.shape), x.dtype) if isinstance(x, torch.Tensor) else type(x)
        for x in leaves
    ]
    return spec, meta


def _check_structure(updates, grads, state, new_state):
    u_leaves, u_spec = otree.flatten(updates)
    g_leaves, g_spec = otree.flatten(grads)
    assert u_spec == g_spec, "updates do not have the gradients' structure"
    for i, (u, g) in enumerate(zip(u_leaves, g_leaves)):
        assert (u is None) == (g is None), f"leaf {i}: None mismatch"
        if g is not None:
            assert (u.shape, u.dtype) == (g.shape, g.dtype), f"leaf {i}: {u.shape} {u.dtype}"
    assert _leaf_meta(new_state) == _leaf_meta(state), "the state changed structure"


def _run(chain: Chain, problem: Problem):
    """Steps ``chain`` through the problem's gradients, yielding what each step saw and made."""
    t = chain.build()
    params = problem.params
    state = t.init(params)
    for grads in problem.grads:
        updates, new_state = t.update(grads, state, params)
        yield t, grads, state, params, updates, new_state
        params = otx.apply_updates(params, updates)
        state = new_state


# --------------------------------------------------------------------------------------------
# Purity and structure
# --------------------------------------------------------------------------------------------


@fuzz_settings(40)
@given(case=chains_and_problems())
def test_pure_and_structure(case):
    chain, problem = case
    t = chain.build()
    params = problem.params
    snapshot = copy.deepcopy(params)
    versions = tensor_versions(params)
    state = t.init(params)
    assert tensor_versions(params) == versions, "init modified params in place"
    assert_trees_close(params, snapshot, rtol=0, atol=0)
    for grads in problem.grads:
        inputs = (grads, state, params)
        snapshot = copy.deepcopy(inputs)
        versions = tensor_versions(inputs)
        updates, new_state = t.update(grads, state, params)
        assert tensor_versions(inputs) == versions, "update modified its inputs in place"
        assert_trees_close(inputs, snapshot, rtol=0, atol=0)
        updates2, new_state2 = t.update(grads, state, params)
        assert_trees_close(updates2, updates, rtol=0, atol=0)
        assert_trees_close(new_state2, new_state, rtol=0, atol=0)
        _check_structure(updates, grads, state, new_state)
        params = otx.apply_updates(params, updates)
        state = new_state


# --------------------------------------------------------------------------------------------
# Finite outputs for finite inputs
# --------------------------------------------------------------------------------------------


def _nonfinite(tree) -> list[int]:
    leaves = [x for x in otree.leaves(tree) if isinstance(x, torch.Tensor)]
    return [
        i
        for i, x in enumerate(leaves)
        if (x.is_floating_point() or x.is_complex()) and not bool(torch.isfinite(x).all())
    ]


# float16 is left out: its range is too small for second moments of small gradients (g**2
# underflows to 0 below ~2.4e-4, and eps=1e-8 is 0 in float16), so e.g.
# scale_by_adam(b1=0, b2=0, eps=1e-12) on a float16 gradient of -8.1e-5 gives -inf, as optax does;
# an algorithm's float32 state for half params is issue 13's "half precision" part.
@fuzz_settings(40)
@given(case=chains_and_problems(real=(torch.bfloat16, torch.float32, torch.float64)))
def test_finite_outputs_for_finite_inputs(case):
    chain, problem = case
    for _, _, _, params, updates, new_state in _run(chain, problem):
        if _nonfinite(params):  # a previous update overflowed the params' dtype (float16)
            return
        assert not _nonfinite(updates), "non-finite updates"
        assert not _nonfinite(new_state), "non-finite state"


# --------------------------------------------------------------------------------------------
# Eager == compiled (compile is slow: few examples, small trees)
# --------------------------------------------------------------------------------------------


@st.composite
def _compilable(draw):
    chain = draw(chains(depth=1, max_blocks=3).filter(lambda c: c.compile_ok))
    return chain, draw(problems(chain, steps=2, max_leaves=3))


@fuzz_settings(3, 60)
@given(case=_compilable())
def test_compiled_equals_eager(case):
    chain, problem = case
    t = chain.build()
    torch._dynamo.reset()
    compiled = torch.compile(t.update, backend="aot_eager", fullgraph=True)
    try:
        params_e = params_c = problem.params
        state_e = state_c = t.init(params_e)
        for grads in problem.grads:
            u_e, state_e = t.update(grads, state_e, params_e)
            u_c, state_c = compiled(grads, state_c, params_c)
            low = any(
                x.dtype in (torch.float16, torch.bfloat16)
                for x in otree.leaves(problem.params)
                if x is not None
            )
            tol = dict(rtol=1e-2, atol=1e-3) if low else dict(rtol=1e-5, atol=1e-6)
            assert_trees_close(u_c, u_e, **tol)
            assert_trees_close(state_c, state_e, **tol)
            params_e = otx.apply_updates(params_e, u_e)
            params_c = otx.apply_updates(params_c, u_c)
    finally:
        torch._dynamo.reset()


# --------------------------------------------------------------------------------------------
# save -> load -> the same next step
# --------------------------------------------------------------------------------------------


def _reload(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    with torch.serialization.safe_globals([Pair]):  # the test trees' own NamedTuple
        return torch.load(buffer, weights_only=True)


@fuzz_settings(30)
@given(case=chains_and_problems())
def test_save_load_same_next_step(case):
    chain, problem = case
    t = chain.build()
    params = problem.params
    state = t.init(params)
    for grads in problem.grads:
        loaded = _reload(state)
        assert_trees_close(loaded, state, rtol=0, atol=0, check_dtype=True)
        updates, new_state = t.update(grads, state, params)
        updates_l, new_state_l = t.update(grads, loaded, params)
        assert_trees_close(updates_l, updates, rtol=0, atol=0, check_dtype=True)
        assert_trees_close(new_state_l, new_state, rtol=0, atol=0, check_dtype=True)
        params = otx.apply_updates(params, updates)
        state = new_state


# --------------------------------------------------------------------------------------------
# TorchOptimizer == functional
# --------------------------------------------------------------------------------------------


@fuzz_settings(20)
@given(case=chains_and_problems())
def test_torch_optimizer_equals_functional(case):
    chain, problem = case
    if any(name in chain.code for name in ADAPTER_SKIP):  # known bug, see strategies.py
        return
    p_leaves, _ = otree.flatten(problem.params)
    keep = [i for i, x in enumerate(p_leaves) if x is not None]
    leaves = [p_leaves[i] for i in keep]
    if not leaves:
        return
    flat_grads = [[otree.flatten(g)[0][i] for i in keep] for g in problem.grads]
    # the functional side on the list of params (the adapter's view of one param group)
    params = [x.clone() for x in leaves]
    t = chain.build()
    state = t.init(params)
    model_params = [torch.nn.Parameter(x.clone()) for x in leaves]
    opt = TorchOptimizer(model_params, chain.build())
    for step, g_leaves in enumerate(flat_grads):
        note(f"step {step}")
        grads = list(g_leaves)
        updates, state = t.update(grads, state, params)
        params = otx.apply_updates(params, updates)
        for p, g in zip(model_params, grads):
            p.grad = None if g is None else g.clone()
        opt.step()
        for i, (p, q) in enumerate(zip(model_params, params)):
            low = q.dtype in (torch.float16, torch.bfloat16)
            # half precision: a few ulps apart (rounding order of the adapter's grouped ops)
            tol = dict(rtol=3e-2, atol=3e-2) if low else dict(rtol=1e-6, atol=1e-7)
            assert p.dtype == q.dtype, f"param {i}: dtype {p.dtype} vs {q.dtype}"
            torch.testing.assert_close(p.detach(), q, equal_nan=True, **tol, msg=f"param {i}")


# --------------------------------------------------------------------------------------------
# Regressions: fuzz-found failures, as fixed reproducers (docs/fuzzing.md, "Fixed")
# --------------------------------------------------------------------------------------------


def _steps_lawfully(t, params, grads_seq):
    """Purity and structure (``test_pure_and_structure``'s checks) on fixed inputs."""
    state = t.init(params)
    for grads in grads_seq:
        snapshot = copy.deepcopy((grads, state, params))
        updates, new_state = t.update(grads, state, params)
        assert_trees_close((grads, state, params), snapshot, rtol=0, atol=0)
        _check_structure(updates, grads, state, new_state)
        params = otx.apply_updates(params, updates)
        state = new_state
    return params, state


@pytest.mark.parametrize("name", ["torch_optim.ASGD", "torch_optim.Adam", "torch_optim.RMSprop"])
def test_complex_as_real_with_a_none_param(name):
    """view_complex_as_real paired the state's leaves (None kept) with the params' leaves (None
    dropped): "Too few leaves for PyTreeSpec; expected: 2, got: 1" at init."""
    params = {"a": [None, torch.tensor(0.94 + 0.42j)]}
    grads = {"a": [None, torch.tensor(0.5 - 0.25j)]}
    t = catalogue()[name].build()
    new_params, state = _steps_lawfully(t, params, [grads, grads])
    assert new_params["a"][0] is None and new_params["a"][1].is_complex()
    assert any(isinstance(x, torch.Tensor) and x.is_complex() for x in otree.leaves(state))
    # the same numbers as the complex leaf alone (torch.optim's real view of it)
    alone, _ = _steps_lawfully(t, [params["a"][1]], [[grads["a"][1]]] * 2)
    torch.testing.assert_close(new_params["a"][1], alone[0], rtol=0, atol=0)


@pytest.mark.parametrize(
    "name", ["prodigy", "dadapt_adamw", "dog", "mechanize_sgd", "schedule_free_adamw"]
)
def test_float16_with_bfloat16_params(name):
    """The scalar state of prodigy & co. took tree.dtype(params, "lowest"), which float16 with
    bfloat16 lacks: "tree.dtype: the dtypes [torch.float16, torch.bfloat16] have no lowest
    element". It is their promoted dtype (float32) now, whatever the leaves' order."""
    from optax_torch.contrib._dtypes import scalar_dtype

    half = {
        "a": torch.tensor(0.5, dtype=torch.float16),
        "b": torch.tensor(-0.25, dtype=torch.bfloat16),
    }
    grads = {
        "a": torch.tensor(0.1, dtype=torch.float16),
        "b": torch.tensor(0.2, dtype=torch.bfloat16),
    }
    _steps_lawfully(catalogue()[name].build(), half, [grads, grads])
    swapped = {"a": half["b"], "b": half["a"]}
    assert scalar_dtype(half) == scalar_dtype(swapped) == torch.float32
    assert scalar_dtype(half, "highest") == torch.float32
    assert scalar_dtype({"a": torch.ones(2, dtype=torch.float64), "b": half["a"]}) == torch.float16
    assert scalar_dtype({"z": torch.ones(2, dtype=torch.complex64)}) == torch.float32
    assert scalar_dtype({}) == torch.get_default_dtype()


def test_torch_optimizer_mechanize_with_a_none_grad():
    """The adapter makes no state for a parameter before its first gradient, so mechanize's
    ``tree.where(count == 0, params, x0)`` met a ``None`` in x0: "where() received an invalid
    combination of arguments - got (Tensor, Parameter, NoneType)". ``tree.where`` gives
    ``None`` there now, as every element-wise tree operation; the adapter follows the
    functional steps."""
    leaves = [torch.tensor([1.0, -2.0]), torch.tensor([3.0])]
    grads = [
        [torch.tensor([0.5, -0.5]), None],
        [torch.tensor([0.25, 1.0]), torch.tensor([-0.75])],
        [None, torch.tensor([0.5])],
    ]
    make = lambda: otx.contrib.mechanize(otx.sgd(0.1))  # noqa: E731
    params = [x.clone() for x in leaves]
    t = make()
    state = t.init(params)
    model_params = [torch.nn.Parameter(x.clone()) for x in leaves]
    opt = TorchOptimizer(model_params, make())
    for g in grads:
        updates, state = t.update(g, state, params)
        params = otx.apply_updates(params, updates)
        for p, x in zip(model_params, g):
            p.grad = x
        opt.step()
        for p, q in zip(model_params, params):
            torch.testing.assert_close(p.detach(), q, rtol=1e-6, atol=1e-7)
    assert not torch.equal(params[0], leaves[0])


def test_profiles_registered():
    """Both profiles exist; CI's is derandomized (deterministic in CI)."""
    from hypothesis import settings

    assert settings.get_profile("fuzz-ci").derandomize
    assert not settings.get_profile("fuzz-long").derandomize
    assert math.isfinite(settings.get_profile("fuzz-ci").max_examples)
