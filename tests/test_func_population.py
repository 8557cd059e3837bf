"""Populations with ``torch.func.vmap``: N models trained at once; member i == member i alone.

* **Every catalogue entry** (``catalogue.py``): ``vmap(tx.init)`` over a stack of N=3 param sets
  and ``vmap(tx.update)`` over their gradients, for a few float64 steps, give each member the
  params and state it gets when trained alone. The entries that cannot be vmapped are listed in
  :data:`NOT_VMAPPABLE` with the reason; each is a strict ``xfail``, so the list cannot rot.
* **Per-member hyperparameters** (every optimizer whose factory ``inject_hyperparams`` takes):
  each member gets its own learning rate, weight decay, betas, eps... (every float
  hyperparameter, drawn per member), with the state built three ways: ``vmap(tx.init)`` then the
  hyperparameters replaced by per-member tensors; ``vmap`` over building the transformation
  *and* its init with batched hyperparameters; N per-member states stacked. Member ``i`` then
  equals the plain optimizer built with member ``i``'s Python floats.

Two things need more than ``vmap(f)`` (docs/functional.md shows both):

* states with ``None`` leaves (a leaf a transformation keeps no state for: Muon's non-matrix
  momentum, unfactored Adafactor rows) need ``in_dims``/``out_dims`` with ``None`` there
  (:func:`batch_dims`; the entries are :data:`NONE_LEAVES`);
* transformations that draw random numbers keep a ``torch.Generator`` state (a uint8 tensor) in
  their state; a generator cannot be set from a batched tensor, so the population shares one
  generator: its state is unbatched (``None`` in the dims) and ``vmap(randomness="same")`` gives
  every member the draws it gets alone with that seed (:data:`SHARED_GENERATOR`; per-member
  generators fail, checked by a strict ``xfail``).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from catalogue import Entry, catalogue, extra_args, resolve, static_args
from conftest import assert_trees_close
from torch.utils import _pytree as pytree

import optax_torch as otx
from optax_torch import tree as otree

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.(script|interface)` is deprecated")

N = 3  # members
STEPS = 3
RTOL, ATOL = 1e-12, 1e-14

CATALOGUE = catalogue()
NAMES = sorted(CATALOGUE)

NOT_VMAPPABLE = {
    "scale_by_kron": (
        "eager by design: reads its step counters with int() and draws from a Python"
        " random.Random whose Mersenne-Twister state is an int64 tensor in its state; a batched"
        " state has no single value to read"
    ),
    "sophia": (
        "its Hessian estimate is a double backward (torch.autograd.grad), which cannot see"
        " through functorch's wrapped tensors, and its generator state goes through torch.where"
        " on the step count (a refresh every update_interval steps), which batches it"
    ),
}
NONE_LEAVES = {"muon", "scale_by_factored_rms_torch", "torch_optim.Adafactor"}
SHARED_GENERATOR = {"add_noise", "noisy_sgd"}

# Hyperparameters that ``init`` reads (initial accumulators, initial step sizes, ...): replacing
# them in a state already built does not change that state, so with "vmap(init) then replace"
# they stay the initial value; building per member (the other two ways) covers them.
INIT_HYPERPARAMS = {
    "adagrad": {"initial_accumulator_value"},
    "cocob": {"eps"},
    "dadapt_adamw": {"estim_lr0"},
    "dowg": {"eps"},
    "momo": {"lower_bound"},
    "momo_adam": {"lower_bound"},
    "prodigy": {"estim_lr0"},
    "rmsprop": {"initial_scale"},
    "rmsprop_momentum": {"initial_scale"},
    "rprop": {"learning_rate"},
    "schedule_free_adamw": {"b1"},
    "schedule_free_sgd": {"b1"},
}


# --------------------------------------------------------------------------------------------
# The problem: member i has its own params and a non-quadratic objective
# --------------------------------------------------------------------------------------------


def member_params(i: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(i)

    def r(*shape):
        return torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1

    return {"w": r(3, 4), "b": r(4), "s": r()}


def objective(p) -> torch.Tensor:
    terms = [0.5 * (x - 0.3).square().sum() + 0.1 * torch.sin(3 * x).sum() for x in otree.leaves(p)]
    return torch.stack(terms).sum()


def grad_of(p):
    return otree.map(lambda x: (x - 0.3) + 0.3 * torch.cos(3 * x), p)


def stack(trees):
    """Stacks N trees leaf by leaf (``None`` leaves stay ``None``)."""
    return pytree.tree_map(
        lambda *xs: None if xs[0] is None else torch.stack(xs), *trees, is_leaf=_is_none
    )


def member(tree, i: int):
    """Member ``i`` of a batched tree (unbatched generator states are shared)."""
    return pytree.tree_map(
        lambda x: x if x is None or _is_generator_state(x) else x[i], tree, is_leaf=_is_none
    )


def _is_none(x: Any) -> bool:
    return x is None


def _is_generator_state(x: torch.Tensor) -> bool:
    return x.dtype == torch.uint8  # torch.Generator.get_state()


def batch_dims(state) -> Any:
    """``in_dims``/``out_dims`` for a state: 0, ``None`` for ``None`` leaves and for a generator
    state (shared by the population)."""
    return pytree.tree_map(
        lambda x: None if x is None or _is_generator_state(x) else 0, state, is_leaf=_is_none
    )


def _has(state, pred) -> bool:
    return any(pred(x) for x in pytree.tree_leaves(state, is_leaf=_is_none))


# --------------------------------------------------------------------------------------------
# Training loops: alone, and the population in one vmapped step
# --------------------------------------------------------------------------------------------


def _step_fn(tx, entry: Entry):
    def step(params, state):
        grads = grad_of(params)
        kw = extra_args(entry.needs, objective, params, objective(params), grads)
        updates, state = tx.update(grads, state, params, **kw)
        return otx.apply_updates(params, updates), state

    return step


def train_alone(tx, entry: Entry, params, state=None):
    state = tx.init(params) if state is None else state
    step = _step_fn(tx, entry)
    for _ in range(STEPS):
        params, state = step(params, state)
    return params, state


def train_population(tx, entry: Entry, params, state, dims):
    step = torch.func.vmap(
        _step_fn(tx, entry), in_dims=(0, dims), out_dims=(0, dims), randomness="same"
    )
    for _ in range(STEPS):
        params, state = step(params, state)
    return params, state


def _vmap_law(name: str) -> None:
    entry = CATALOGUE[name]
    tx = entry.build()
    members = [member_params(i) for i in range(N)]
    batched = stack(members)
    dims = batch_dims(tx.init(members[0]))
    if dims == 0 or not _has(dims, lambda d: d is None):
        # the plain form: vmap(tx.init), vmap(step)
        state = torch.func.vmap(tx.init)(batched)
    else:
        state = torch.func.vmap(tx.init, out_dims=dims, randomness="same")(batched)
    params, state = train_population(tx, entry, batched, state, dims)
    for i in range(N):
        p_i, s_i = train_alone(entry.build(), entry, members[i])
        assert_trees_close(member(params, i), p_i, rtol=RTOL, atol=ATOL)
        assert_trees_close(member(state, i), s_i, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            n,
            marks=pytest.mark.xfail(strict=True, raises=RuntimeError, reason=NOT_VMAPPABLE[n]),
        )
        if n in NOT_VMAPPABLE
        else n
        for n in NAMES
    ],
)
def test_vmapped_population_equals_members_alone(name):
    _vmap_law(name)


def test_lists_name_catalogue_entries():
    assert set(NOT_VMAPPABLE) | NONE_LEAVES | SHARED_GENERATOR | set(INIT_HYPERPARAMS) <= set(NAMES)
    assert not set(NOT_VMAPPABLE) & (NONE_LEAVES | SHARED_GENERATOR)


def test_none_leaf_and_generator_lists_are_exact():
    """The entries whose state has ``None`` leaves / a generator state, among the vmappable."""
    params = member_params(0)
    none_leaves, generators = set(), set()
    for name in NAMES:
        if name in NOT_VMAPPABLE:
            continue
        state = CATALOGUE[name].build().init(params)
        if _has(state, _is_none):
            none_leaves.add(name)
        if _has(state, lambda x: x is not None and _is_generator_state(x)):
            generators.add(name)
    assert none_leaves == NONE_LEAVES
    assert generators == SHARED_GENERATOR


@pytest.mark.parametrize("name", sorted(SHARED_GENERATOR))
@pytest.mark.xfail(
    strict=True, raises=RuntimeError, reason="a torch.Generator cannot be set from a batched state"
)
def test_per_member_generators_cannot_be_vmapped(name):
    """One generator per member (stacked generator states) fails: only a shared one works."""
    entry = CATALOGUE[name]
    tx = entry.build()
    members = [member_params(i) for i in range(N)]
    state = stack([tx.init(p) for p in members])
    dims = pytree.tree_map(lambda x: None if x is None else 0, state, is_leaf=_is_none)
    train_population(tx, entry, stack(members), state, dims)


# --------------------------------------------------------------------------------------------
# Per-member hyperparameters through inject_hyperparams
# --------------------------------------------------------------------------------------------

INJECTABLE = sorted(
    n
    for n, e in CATALOGUE.items()
    if e.optimizer and e.factory is not None and n not in NOT_VMAPPABLE
)


def _member_hyperparams(name: str, state, skip: set[str]) -> dict[str, torch.Tensor]:
    """Every float hyperparameter (but ``skip``), one value per member: its catalogue value times
    a factor drawn in [0.7, 1) (keeps betas in [0, 1) and positive values positive)."""
    gen = torch.Generator().manual_seed(sum(map(ord, name)))
    out = {}
    for k, v in sorted(state.hyperparams.items()):
        if k in skip or not v.is_floating_point():
            continue
        out[k] = v * (0.7 + 0.3 * torch.rand(N, generator=gen, dtype=torch.float64))
    return out


def _check_members(entry: Entry, params, hps: dict[str, torch.Tensor]) -> None:
    """Member i == the plain factory built with member i's hyperparameters as Python floats."""
    assert entry.factory is not None
    factory = resolve(entry.factory)
    for i in range(N):
        kwargs = {**entry.kwargs, **{k: v[i].item() for k, v in hps.items()}}
        p_i, _ = train_alone(factory(**kwargs), entry, member_params(i))
        assert_trees_close(member(params, i), p_i, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("how", ["vmap_init_replace", "vmap_build_and_init", "stack"])
@pytest.mark.parametrize("name", INJECTABLE)
def test_per_member_hyperparameters(name, how):
    entry = CATALOGUE[name]
    assert entry.factory is not None
    make = otx.inject_hyperparams(resolve(entry.factory), static_args=static_args(entry))
    tx = make(**entry.kwargs)
    members = [member_params(i) for i in range(N)]
    batched = stack(members)
    template = tx.init(members[0])
    dims = batch_dims(template)
    skip = INIT_HYPERPARAMS.get(name, set()) if how == "vmap_init_replace" else set()
    hps = _member_hyperparams(name, template, skip)
    assert hps or name == "lbfgs"  # (lbfgs: only integer / structural arguments)
    if how == "vmap_init_replace":
        state = torch.func.vmap(tx.init, out_dims=dims, randomness="same")(batched)
        state = state._replace(hyperparams={**state.hyperparams, **hps})
    elif how == "vmap_build_and_init":

        def build_and_init(hp, params):
            return make(**{**entry.kwargs, **hp}).init(params)

        state = torch.func.vmap(build_and_init, out_dims=dims, randomness="same")(hps, batched)
    else:
        state = stack(
            [
                make(**{**entry.kwargs, **{k: v[i] for k, v in hps.items()}}).init(members[i])
                for i in range(N)
            ]
        )
        generator = pytree.tree_map(lambda d: d is None, dims, is_leaf=_is_none)
        state = pytree.tree_map(  # one shared generator (see SHARED_GENERATOR)
            lambda x, shared: x[0] if shared and x is not None else x,
            state,
            generator,
            is_leaf=_is_none,
        )
    params, state = train_population(tx, entry, batched, state, dims)
    _check_members(entry, params, hps)


def test_init_hyperparams_list_is_exact():
    """The hyperparameters ``init`` reads, for each injectable optimizer: changing one changes
    the initial state."""
    params = member_params(0)
    found: dict[str, set[str]] = {}
    for name in INJECTABLE:
        entry = CATALOGUE[name]
        assert entry.factory is not None
        make = otx.inject_hyperparams(resolve(entry.factory), static_args=static_args(entry))
        base = make(**entry.kwargs).init(params)
        for k, v in base.hyperparams.items():
            if not v.is_floating_point():
                continue
            changed = make(**{**entry.kwargs, k: 0.5 * v.item() if v.item() else 0.1})
            a = pytree.tree_leaves(base.inner_state)
            b = pytree.tree_leaves(changed.init(params).inner_state)
            if any(isinstance(x, torch.Tensor) and not torch.equal(x, y) for x, y in zip(a, b)):
                found.setdefault(name, set()).add(k)
    assert found == INIT_HYPERPARAMS


def test_members_with_different_learning_rates_differ():
    """A sanity check of the harness: per-member learning rates give different members."""
    make = otx.inject_hyperparams(otx.adam)
    tx = make(learning_rate=0.1)
    params = stack([member_params(0)] * N)
    state = torch.func.vmap(tx.init)(params)
    lrs = torch.tensor([0.01, 0.1, 0.3], dtype=torch.float64)
    state = state._replace(hyperparams={**state.hyperparams, "learning_rate": lrs})
    params, _ = train_population(tx, CATALOGUE["adam"], params, state, 0)
    w = params["w"]
    assert not torch.allclose(w[0], w[1]) and not torch.allclose(w[1], w[2])
