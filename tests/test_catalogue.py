"""Catalogue-wide checks: every optimizer and transformation of optax_torch (``catalogue.py``).

* **Laws** (design §1): ``init``/``update`` never modify their inputs; the same inputs give the
  same outputs; updates have the gradients' structure and dtypes; a ``None`` gradient gives a
  ``None`` update and leaves that parameter's state as it was (a bare transformation behaves as
  a chain); states load with ``torch.load(weights_only=True)``.
* **Traceable**: ``torch.compile(update, backend="aot_eager", fullgraph=True)`` gives the eager
  results, except for the entries whose ``no_compile`` says why not (listed by
  :func:`test_no_compile_list_is_exact`).
* **Adapter**: ``TorchOptimizer(model.parameters(), tx)`` follows the functional trajectory.
* **optax's battery**: each optimizer converges on a parabola and on Rosenbrock (float32 and,
  where optax supports it, complex64), gives the same step wrapped in ``inject_hyperparams``,
  keeps the parameters' dtype from float16 to complex128, accepts unexpected extra arguments,
  and runs under ``MultiSteps`` with exact zeros between emits.

The convergence battery uses optax's learning rates and step budgets (10,000 steps for the core
optimizers, 30,000 for contrib; ``catalogue.py``), stopping early once the parameters are within
1e-2 of the solution (checked every 100 steps), then asserting optax's tolerance (3e-2).
"""

from __future__ import annotations

import copy
import inspect
import io

import pytest
import torch
from catalogue import TARGETS, Entry, catalogue, extra_args, resolve, value_and_grad
from conftest import Pair, assert_trees_close, make_tree, tensor_versions
from hypothesis import HealthCheck, given, settings
from test_laws import problems

import optax_torch as otx
from optax_torch import tree as otree
from optax_torch.wrappers import TorchOptimizer

CATALOGUE = catalogue()
NAMES = sorted(CATALOGUE)
OPTIMIZERS = sorted(n for n, e in CATALOGUE.items() if e.optimizer)


def _build(name: str):
    return CATALOGUE[name].build()


# --------------------------------------------------------------------------------------------
# A mixed pytree problem: f(params) = sum_i 0.5 * ||p_i - t_i||^2 (+ per-leaf scale)
# --------------------------------------------------------------------------------------------


def _tree_problem(dtypes=(torch.float32, torch.float64), with_none=False):
    params = make_tree(0, dtypes=dtypes, with_none=with_none)
    target = make_tree(7, dtypes=dtypes, with_none=with_none)

    def objective(p):
        terms = [
            0.5 * ((x - t) ** 2).sum().to(torch.float64)
            for x, t in zip(otree.leaves(p), otree.leaves(target))
        ]
        return torch.stack(terms).sum()

    def grads_of(p):
        return otree.map(lambda x, t: x - t, p, target)

    return params, objective, grads_of


def _step(entry: Entry, t, state, params, objective, grads):
    kwargs = extra_args(entry.needs, objective, params, objective(params), grads)
    return t.update(grads, state, params, **kwargs)


def _clone(tree):
    return otree.map(lambda x: x.clone(), tree)


# --------------------------------------------------------------------------------------------
# Laws
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_laws(name):
    entry = CATALOGUE[name]
    t = entry.build()
    params, objective, grads_of = _tree_problem()
    params_copy = _clone(params)
    state = t.init(params)
    assert otree.allclose(params, params_copy, rtol=0, atol=0), "init modified params"
    for _ in range(3):
        grads = grads_of(params)
        inputs = (grads, state, params)
        snapshot = copy.deepcopy(inputs)
        versions = tensor_versions(inputs)
        updates, new_state = _step(entry, t, state, params, objective, grads)
        assert tensor_versions(inputs) == versions, "update modified its inputs in place"
        assert_trees_close(inputs, snapshot, rtol=0, atol=0)
        # deterministic: the same inputs give the same outputs (random ones: same generator state)
        updates2, new_state2 = _step(entry, t, state, params, objective, grads)
        assert_trees_close(updates2, updates, rtol=0, atol=0)
        assert_trees_close(new_state2, new_state, rtol=0, atol=0)
        # structure and dtypes of the gradients
        assert otree.structure(updates) == otree.structure(grads)
        for u, g in zip(otree.leaves(updates), otree.leaves(grads)):
            assert u.shape == g.shape and u.dtype == g.dtype
        # the state keeps its structure
        assert otree.structure(new_state) == otree.structure(state)
        params = otx.apply_updates(params, updates)
        state = new_state
    # the state loads with weights_only=True
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    with torch.serialization.safe_globals([Pair]):  # the test tree's own NamedTuple
        loaded = torch.load(buffer, weights_only=True)
    assert_trees_close(loaded, state, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_none_gradient_keeps_state(name):
    """A leaf whose gradient is ``None`` gets a ``None`` update and keeps its state, for a bare
    transformation as for a chain (optax has no such case: ``None`` is an empty subtree there)."""
    entry = CATALOGUE[name]
    t = entry.build()
    params, objective, grads_of = _tree_problem()
    state = t.init(params)
    updates, state = _step(entry, t, state, params, objective, grads_of(params))
    params = otx.apply_updates(params, updates)
    grads = grads_of(params)
    grads["dense"]["w"] = None
    updates, new_state = _step(entry, t, state, params, objective, grads)
    assert updates["dense"]["w"] is None
    old, new = _param_copies(t, state), _param_copies(t, new_state)
    assert len(old) == len(new)
    for a, b in zip(old, new):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(b, a, rtol=0, atol=0)


def _param_copies(t, state):
    """The ``dense.w`` leaf of every params-shaped copy inside ``state``."""
    found = []

    def grab(x):
        return x

    mapped = otx.tree.map_params(t, grab, state)
    for path, value in _walk(mapped):
        if path[-2:] == ("dense", "w"):
            found.append(value)
    return found


def _walk(node, path=()):
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        for k in node._fields:
            yield from _walk(getattr(node, k), (*path, k))
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, (*path, k))
    elif isinstance(node, list | tuple):
        for i, v in enumerate(node):
            yield from _walk(v, (*path, i))
    else:
        yield path, node


# --------------------------------------------------------------------------------------------
# torch.compile
# --------------------------------------------------------------------------------------------

COMPILABLE = sorted(n for n in NAMES if not CATALOGUE[n].no_compile)


@pytest.mark.parametrize("name", COMPILABLE)
def test_compiled_update_equals_eager(name):
    entry = CATALOGUE[name]
    t = entry.build()
    params, objective, grads_of = _tree_problem()
    compiled = torch.compile(t.update, backend="aot_eager", fullgraph=True)
    state_e = state_c = t.init(params)
    params_e = params_c = params
    for _ in range(3):
        g_e, g_c = grads_of(params_e), grads_of(params_c)
        kw_e = extra_args(entry.needs, objective, params_e, objective(params_e), g_e)
        kw_c = extra_args(entry.needs, objective, params_c, objective(params_c), g_c)
        u_e, state_e = t.update(g_e, state_e, params_e, **kw_e)
        u_c, state_c = compiled(g_c, state_c, params_c, **kw_c)
        assert_trees_close(u_c, u_e, rtol=1e-5, atol=1e-6)
        params_e = otx.apply_updates(params_e, u_e)
        params_c = otx.apply_updates(params_c, u_c)
    torch._dynamo.reset()


def test_no_compile_list_is_exact():
    """The entries that cannot be compiled; each says so in its docstring."""
    listed = sorted(n for n in NAMES if CATALOGUE[n].no_compile)
    assert listed == ["add_noise", "lbfgs", "noisy_sgd", "scale_by_kron", "sophia"]
    for name in listed:
        factory = CATALOGUE[name].factory
        assert factory is not None
        doc = " ".join((resolve(factory).__doc__ or "").split())
        assert "torch.compile" in doc, f"{name}'s docstring must say it cannot be compiled"


# --------------------------------------------------------------------------------------------
# TorchOptimizer follows the functional trajectory
# --------------------------------------------------------------------------------------------

ADAPTER = sorted(n for n in OPTIMIZERS if "lbfgs" not in CATALOGUE[n].needs)
# (L-BFGS's line search evaluates the objective as a function of the params; the torch.optim.LBFGS
# drop-in of issue 9 brings the closure-based form.)


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))


@pytest.mark.parametrize("name", ADAPTER)
def test_torch_optimizer_follows_functional_trajectory(name):
    entry = CATALOGUE[name]
    x, y = torch.randn(8, 3, generator=torch.Generator().manual_seed(1)), torch.randn(8, 2)
    model = _model()
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach().clone() for p in model.parameters()]

    def loss_of(plist):
        out = torch.func.functional_call(model, dict(zip(names, plist)), (x,))
        return torch.nn.functional.mse_loss(out, y)

    t = entry.build()
    state = t.init(params)
    opt = TorchOptimizer(model.parameters(), entry.build())
    for _ in range(5):
        grads, value = torch.func.grad_and_value(loss_of)(params)
        kw = extra_args(entry.needs, loss_of, params, value.detach(), grads)
        updates, state = t.update(grads, state, params, **kw)
        params = otx.apply_updates(params, updates)

        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        kw_opt = {"value": loss.detach()} if kw.get("value") is not None else {}
        if "obj_fn" in kw:
            kw_opt["obj_fn"] = lambda plist: loss_of(plist)
        opt.step(**kw_opt)
    for p, q in zip(model.parameters(), params):
        torch.testing.assert_close(p.detach(), q, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------
# optax's battery
# --------------------------------------------------------------------------------------------


def _converge_cases():
    cases = []
    for name in OPTIMIZERS:
        entry = CATALOGUE[name]
        for target in entry.targets:
            cases.append((name, target, torch.float32))
            if entry.complex_ok:
                cases.append((name, target, torch.complex64))
    return cases


@pytest.mark.parametrize(("name", "target", "dtype"), _converge_cases(), ids=str)
def test_converges(name, target, dtype):
    entry = CATALOGUE[name]
    t = entry.build()
    init, final, objective = TARGETS[target](dtype)
    params = init
    state = t.init(params)
    state = otx.tree.map_params(t, lambda v: v, state)  # a no-op map_params works
    steps = entry.steps

    def evaluated(state, params):
        return entry.eval_params(state, params) if entry.eval_params else params

    for k in range(steps):
        value, grads = value_and_grad(objective, params)
        kw = extra_args(entry.needs, objective, params, value, grads)
        updates, state = t.update(grads, state, params, **kw)
        params = otx.apply_updates(params, updates)
        if k % 100 == 99 and torch.allclose(evaluated(state, params), final, rtol=1e-2, atol=1e-2):
            break
    assert params.dtype == dtype
    torch.testing.assert_close(evaluated(state, params), final, rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS if "lbfgs" not in CATALOGUE[n].needs])
def test_accepts_unexpected_extra_args(name):
    """(Not lbfgs: as in optax, its line search forwards extra arguments to ``value_fn``.)"""
    entry = CATALOGUE[name]
    t = entry.build()  # not wrapped in with_extra_args_support: the optimizer must take them
    init, _, objective = TARGETS["rosenbrock"](torch.float32)
    params, state = init, t.init(init)
    for _ in range(2):
        value, grads = value_and_grad(objective, params)
        kw = extra_args(entry.needs, objective, params, value, grads)
        updates, state = t.update(grads, state, params, unexpected_extra_arg_xyz=1, **kw)
        params = otx.apply_updates(params, updates)


INJECTABLE = sorted(n for n in OPTIMIZERS if CATALOGUE[n].factory is not None)


@pytest.mark.parametrize("name", INJECTABLE)
def test_inject_hyperparams_gives_the_same_step(name):
    entry = CATALOGUE[name]
    assert entry.factory is not None
    plain = entry.build()
    factory = resolve(entry.factory)
    # Integer arguments (step counts, sizes, iteration counts) are structure, not values: they
    # are static, as optax's tests make them (inject_hyperparams would store them as tensors).
    signature = inspect.signature(factory)
    static = [
        name
        for name, p in signature.parameters.items()
        if isinstance(entry.kwargs.get(name, p.default), int)
        and not isinstance(entry.kwargs.get(name, p.default), bool)
    ]
    injected = otx.inject_hyperparams(factory, static_args=static)(**entry.kwargs)
    params = [-torch.ones(2, 3), torch.ones(2, 5, 2)]
    grads = [torch.ones(2, 3), -torch.ones(2, 5, 2)]

    def objective(p):
        return torch.stack([(x**2).sum() for x in p]).sum()

    kw = extra_args(entry.needs, objective, params, objective(params), grads)
    u1, s1 = plain.update(grads, plain.init(params), params, **kw)
    u2, s2 = injected.update(grads, injected.init(params), params, **kw)
    assert_trees_close(u2, u1, rtol=1e-6, atol=1e-7)
    assert_trees_close(s2.inner_state, s1, rtol=1e-6, atol=1e-7)


DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
COMPLEX = [torch.complex64, torch.complex128]


def _dtype_cases():
    out = []
    for name in OPTIMIZERS:
        for dtype in DTYPES + (COMPLEX if CATALOGUE[name].complex_ok else []):
            out.append((name, dtype))
    return out


@pytest.mark.parametrize(("name", "dtype"), _dtype_cases(), ids=str)
def test_keeps_param_dtype(name, dtype):
    entry = CATALOGUE[name]
    t = entry.build()
    init, _, objective = TARGETS["parabola"](dtype)
    params, state = init, t.init(init)
    for _ in range(2):
        value, grads = value_and_grad(objective, params)
        kw = extra_args(entry.needs, objective, params, value, grads)
        updates, new_state = t.update(grads, state, params, **kw)
        assert updates.dtype == grads.dtype
        params = otx.apply_updates(params, updates)
        assert params.dtype == dtype
        # the state keeps its dtypes from step to step
        old = [x.dtype for x in otree.leaves(state) if isinstance(x, torch.Tensor)]
        new = [x.dtype for x in otree.leaves(new_state) if isinstance(x, torch.Tensor)]
        assert old == new
        state = new_state


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_multi_steps_gives_exact_zeros_between_emits(name, dtype):
    entry = CATALOGUE[name]
    t = otx.MultiSteps(entry.build(), every_k_schedule=4)
    params = torch.tensor([1.0, 2.0], dtype=dtype)

    def objective(p):
        return (p**2).sum()

    state = t.init(params)
    for k in range(4):
        value, grads = value_and_grad(objective, params)
        kw = extra_args(entry.needs, objective, params, value, grads)
        updates, state = t.update(grads, state, params, **kw)
        if k < 3:
            assert torch.equal(updates, torch.zeros_like(grads))
        assert updates.dtype == dtype


# --------------------------------------------------------------------------------------------
# Hypothesis: the laws on random pytrees, for every entry
# --------------------------------------------------------------------------------------------

HYPOTHESIS_SETTINGS = settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
PLAIN = sorted(n for n in NAMES if not CATALOGUE[n].needs)


@pytest.mark.parametrize("name", PLAIN)
@HYPOTHESIS_SETTINGS
@given(problem=problems())
def test_laws_on_random_trees(name, problem):
    """Random nests (dict/list/tuple/NamedTuple; float32/float64 leaves of 0 to 3 dims, empty
    ones included; ``None`` params, and one more ``None`` gradient at the second step): inputs
    are never modified, updates follow the gradients' structure and dtypes, ``None`` gradients
    give ``None`` updates, the state keeps its structure (that state is *kept* where a gradient
    is ``None`` is :func:`test_none_gradient_keeps_state`)."""
    params, grads_list = problem
    t = CATALOGUE[name].build()
    state = t.init(params)
    for grads in grads_list:
        inputs = (grads, state, params)
        snapshot = copy.deepcopy(inputs)
        versions = tensor_versions(inputs)
        updates, new_state = t.update(grads, state, params)
        assert tensor_versions(inputs) == versions
        assert_trees_close(inputs, snapshot, rtol=0, atol=0)
        u_leaves, u_spec = otree.flatten(updates)
        g_leaves, g_spec = otree.flatten(grads)
        assert u_spec == g_spec
        for u, g in zip(u_leaves, g_leaves):
            assert (u is None) == (g is None)
            if u is not None:
                assert u.shape == g.shape and u.dtype == g.dtype
        assert otree.structure(new_state) == otree.structure(state)
        state = new_state


def test_many_compiled_updates_in_one_process():
    """``torch.compile`` caches per code object, with a recompile limit (8); every transformation's
    ``update`` (and every combinator's) has a code object of its own, so compiling the updates of
    many optimizers, or of many instances of one, in one process never hits that limit."""
    torch._dynamo.reset()
    params, _, grads_of = _tree_problem()
    grads = grads_of(params)
    built = [otx.sgd(0.1 * (k + 1)) for k in range(9)]  # chains
    built += [otx.scale(0.5) for _ in range(9)]  # bare transformations
    for t in built:
        step = torch.compile(t.update, backend="eager", fullgraph=True)
        state = t.init(params)
        for _ in range(2):
            _, state = step(grads, state, params)
    torch._dynamo.reset()
