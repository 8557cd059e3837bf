"""The laws of ``shared/design.md`` §1, checked with hypothesis over random pytrees.

Random trees: dict roots holding nested dicts / lists / tuples / NamedTuples, leaves of float32 or
float64 with shapes including 0-d and empty, ``None`` leaves in params and extra ``None`` in grads.

* **Pure**: ``init`` / ``update`` never modify their inputs (values and ``_version`` counters), and
  the same inputs give bitwise the same outputs.
* **Structure**: updates have the structure (and dtypes) of the gradients, ``None`` where the
  gradient is ``None``; state leaves mirroring params have the params' shapes; the state keeps its
  structure, dtypes and shapes from step to step.
* Algebra of ``chain``: ``chain()`` is the identity, ``chain`` is associative (in updates).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from conftest import (
    Pair,
    all_tensors,
    assert_trees_close,
    assert_trees_equal,
    clone_tree,
    tensor_versions,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import optax_torch as otx
from optax_torch import tree as otree

SETTINGS = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,
)

# --------------------------------------------------------------------------------------------
# Random pytrees
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeafSpec:
    shape: tuple[int, ...]
    dtype: torch.dtype
    none: bool


leaf_specs = st.builds(
    LeafSpec,
    shape=st.lists(st.integers(0, 3), min_size=0, max_size=3).map(tuple),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    none=st.integers(0, 7).map(lambda k: k == 0),
)
_keys = st.sampled_from(["a", "b", "c", "d"])


def _nodes(children):
    return st.one_of(
        st.lists(children, min_size=1, max_size=3),
        st.lists(children, min_size=1, max_size=3).map(tuple),
        st.dictionaries(_keys, children, min_size=1, max_size=3),
        st.tuples(children, children).map(lambda t: Pair(*t)),
    )


spec_trees = st.dictionaries(
    _keys, st.recursive(leaf_specs, _nodes, max_leaves=6), min_size=1, max_size=3
)


def _materialize(spec, gen: torch.Generator, keep_none: bool = True):
    if isinstance(spec, LeafSpec):
        if spec.none and keep_none:
            return None
        return (torch.rand(spec.shape, generator=gen, dtype=torch.float64) * 2 - 1).to(spec.dtype)
    if isinstance(spec, Pair):
        return Pair(*(_materialize(s, gen, keep_none) for s in spec))
    if isinstance(spec, dict):
        return {k: _materialize(v, gen, keep_none) for k, v in spec.items()}
    if isinstance(spec, list):
        return [_materialize(v, gen, keep_none) for v in spec]
    return tuple(_materialize(v, gen, keep_none) for v in spec)


@st.composite
def problems(draw):
    """``(params, [grads_1, grads_2])``: params with some ``None`` leaves; grads like params, with
    ``None`` where params are ``None`` and (in ``grads_2``) at one more random place."""
    spec = draw(spec_trees)
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    params = _materialize(spec, gen)
    g1 = otree.map(lambda p: torch.rand(p.shape, generator=gen, dtype=p.dtype) * 2 - 1, params)
    g2 = otree.map(lambda p: torch.rand(p.shape, generator=gen, dtype=p.dtype) * 2 - 1, params)
    leaves, treedef = otree.flatten(g2)
    present = [i for i, x in enumerate(leaves) if x is not None]
    if len(present) > 1:
        leaves[draw(st.sampled_from(present))] = None
    return params, [g1, otree.unflatten(treedef, leaves)]


# --------------------------------------------------------------------------------------------
# Transforms under test
# --------------------------------------------------------------------------------------------


def _matrix_mask(p):
    return otree.map(lambda x: x.ndim >= 2, p)


def _labels(p):
    return otree.map(lambda x: ("a", "b", "c")[x.ndim % 3], p)


# name -> (factory, number of params-shaped subtrees in the state)
TRANSFORMS = {
    "scale": (lambda: otx.scale(0.5), 0),
    "scale_by_learning_rate_schedule": (
        lambda: otx.scale_by_learning_rate(lambda c: 0.1 / (1 + c.to(torch.float64))),
        0,
    ),
    "scale_by_adam": (lambda: otx.scale_by_adam(), 2),
    "scale_by_adam_nesterov_eps_root": (lambda: otx.scale_by_adam(eps_root=1e-8, nesterov=True), 2),
    "scale_by_adam_mu_float64": (lambda: otx.scale_by_adam(mu_dtype=torch.float64), 2),
    "scale_by_adam_mu_bfloat16": (lambda: otx.scale_by_adam(mu_dtype=torch.bfloat16), 2),
    "scale_by_amsgrad": (lambda: otx.scale_by_amsgrad(), 3),
    "scale_by_amsgrad_torch": (lambda: otx.scale_by_amsgrad(debias_after_max=True), 3),
    "scale_by_nadam": (lambda: otx.scale_by_nadam(), 2),
    "scale_by_rms": (lambda: otx.scale_by_rms(), 1),
    "scale_by_rms_outside_bc": (
        lambda: otx.scale_by_rms(eps_in_sqrt=False, bias_correction=True),
        1,
    ),
    "scale_by_stddev": (lambda: otx.scale_by_stddev(), 2),
    "scale_by_stddev_bc": (lambda: otx.scale_by_stddev(eps=1e-3, bias_correction=True), 2),
    "scale_by_rss": (lambda: otx.scale_by_rss(), 1),
    "trace": (lambda: otx.trace(0.9), 1),
    "trace_nesterov": (lambda: otx.trace(0.9, nesterov=True), 1),
    "ema": (lambda: otx.ema(0.9), 1),
    "add_decayed_weights": (lambda: otx.add_decayed_weights(0.1), 0),
    "add_decayed_weights_mask": (lambda: otx.add_decayed_weights(0.1, mask=_matrix_mask), 0),
    "clip": (lambda: otx.clip(0.1), 0),
    "clip_by_global_norm": (lambda: otx.clip_by_global_norm(0.5), 0),
    "masked_adam": (lambda: otx.masked(otx.scale_by_adam(), _matrix_mask), 2),
    "identity": (lambda: otx.identity(), 0),
    "set_to_zero": (lambda: otx.set_to_zero(), 0),
    "sgd": (lambda: otx.sgd(0.1), 0),
    "sgd_nesterov": (lambda: otx.sgd(0.1, momentum=0.9, nesterov=True), 1),
    "adam": (lambda: otx.adam(1e-2), 2),
    "adamw_mask": (lambda: otx.adamw(1e-2, weight_decay=0.1, mask=_matrix_mask), 2),
    "nadam": (lambda: otx.nadam(1e-2), 2),
    "nadamw": (lambda: otx.nadamw(1e-2), 2),
    "amsgrad": (lambda: otx.amsgrad(1e-2), 3),
    "rmsprop_centered_momentum": (
        lambda: otx.rmsprop(1e-2, centered=True, momentum=0.9, eps=1e-3),
        3,
    ),
    "adagrad": (lambda: otx.adagrad(0.1), 1),
    "chain": (lambda: otx.chain(otx.clip_by_global_norm(1.0), otx.adam(0.1), otx.trace(0.5)), 3),
    "named_chain": (
        lambda: otx.named_chain(("clip", otx.clip(1.0)), ("opt", otx.sgd(0.1, momentum=0.9))),
        1,
    ),
    "partition": (
        lambda: otx.partition(
            {"a": otx.adam(0.1), "b": otx.sgd(0.1), "c": otx.set_to_zero()}, _labels
        ),
        2,
    ),
}


def _mirrors(state, params_spec) -> list:
    """Subtrees of ``state`` whose structure is the params' structure."""
    found = []

    def walk(node):
        if not isinstance(node, dict | list | tuple):
            return
        if otree.structure(node) == params_spec:
            found.append(node)
            return
        for v in node.values() if isinstance(node, dict) else node:
            walk(v)

    walk(state)
    return found


def _shapes_dtypes(t):
    leaves, spec = otree.flatten(t)
    return spec, [None if x is None else (tuple(x.shape), x.dtype) for x in leaves]


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
@SETTINGS
@given(problem=problems())
def test_pure_and_structure_preserving(name, problem):
    """init/update never mutate inputs and are deterministic; updates mirror the gradients
    (structure, dtypes, ``None`` places); params-shaped state has the params' shapes/dtypes;
    the state's structure, shapes and dtypes are stable across steps."""
    factory, n_mirrors = TRANSFORMS[name]
    params, grads_seq = problem
    tx = factory()

    p_copy, p_versions = clone_tree(params), tensor_versions(params)
    state = tx.init(params)
    assert_trees_equal(params, p_copy)
    assert tensor_versions(params) == p_versions
    assert all(not t.requires_grad for t in all_tensors(state))

    init_sd = _shapes_dtypes(state)
    spec = otree.structure(params)
    mirrors = _mirrors(state, spec)
    assert len(mirrors) == n_mirrors, f"{len(mirrors)} params-shaped subtrees in the state"
    for m in mirrors:  # (masked transforms keep None for their masked-out leaves)
        for x, p in zip(otree.flatten(m)[0], otree.flatten(params)[0]):
            assert p is not None or x is None
            if x is not None:
                assert x.shape == p.shape
                assert x.dtype == p.dtype or "mu_" in name

    for grads in grads_seq:
        saved = [clone_tree(t) for t in (grads, state, params)]
        versions = [tensor_versions(t) for t in (grads, state, params)]
        updates, new_state = tx.update(grads, state, params)
        for t, c, v in zip((grads, state, params), saved, versions):
            assert_trees_equal(t, c)
            assert tensor_versions(t) == v, "an input tensor was modified in place"
        # deterministic
        updates_2, new_state_2 = tx.update(grads, state, params)
        assert_trees_equal(updates_2, updates)
        assert_trees_equal(new_state_2, new_state)
        # updates mirror the gradients
        assert otree.structure(updates) == otree.structure(grads)
        for u, g in zip(otree.flatten(updates)[0], otree.flatten(grads)[0]):
            assert (u is None) == (g is None)
            if u is not None:
                assert u.shape == g.shape and u.dtype == g.dtype
        # the state is stable (None only where a gradient was missing)
        new_spec, new_sd = _shapes_dtypes(new_state)
        assert new_spec == init_sd[0]
        for a, b in zip(new_sd, init_sd[1]):
            assert a is None or a == b
        state = new_state


# --------------------------------------------------------------------------------------------
# Parameters without gradient
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["adam", "sgd_nesterov", "adagrad", "rmsprop_centered_momentum"])
def test_state_of_a_param_without_gradient_is_kept(name):
    """A param that misses one step's gradient keeps its state and resumes on the next step."""
    params = {"a": torch.linspace(-1, 1, 4), "b": torch.ones(3)}
    tx = TRANSFORMS[name][0]()
    state = tx.init(params)
    g = {"a": torch.full((4,), 0.5), "b": torch.full((3,), -0.3)}
    _, state = tx.update(g, state, params)
    kept = clone_tree(state)
    u, state = tx.update({"a": None, "b": g["b"]}, state, params)
    assert u["a"] is None
    _, kept_b = tx.update({"a": None, "b": g["b"]}, kept, params)
    assert_trees_close(
        otree.map(lambda x: x, state),
        otree.map(lambda x: x, kept_b),
    )
    # the state of "a" is the one before the gradient-less step
    mirrors_before, mirrors_after = (
        _mirrors(kept, otree.structure(params)),
        _mirrors(state, otree.structure(params)),
    )
    for before, after in zip(mirrors_before, mirrors_after):
        assert after["a"] is not None and torch.equal(after["a"], before["a"])
    u, _ = tx.update(g, state, params)
    assert u["a"] is not None


# --------------------------------------------------------------------------------------------
# Algebra of chain
# --------------------------------------------------------------------------------------------

STATEFUL = [
    "scale_by_adam",
    "trace_nesterov",
    "clip_by_global_norm",
    "ema",
    "scale_by_rss",
    "add_decayed_weights",
    "scale_by_stddev",
    "masked_adam",
]


@SETTINGS
@given(problem=problems())
def test_empty_chain_is_identity(problem):
    params, grads_seq = problem
    tx = otx.chain()
    state = tx.init(params)
    assert state == ()
    for g in grads_seq:
        u, state = tx.update(g, state, params)
        assert_trees_equal(u, g)
        assert state == ()


@SETTINGS
@given(
    problem=problems(),
    names=st.lists(st.sampled_from(STATEFUL), min_size=3, max_size=3),
)
def test_chain_is_associative(problem, names):
    """``chain(a, chain(b, c))`` and ``chain(chain(a, b), c)`` give the same updates (bitwise)."""
    params, grads_seq = problem
    a, b, c = (TRANSFORMS[n][0] for n in names)
    left = otx.chain(a(), otx.chain(b(), c()))
    right = otx.chain(otx.chain(a(), b()), c())
    flat = otx.chain(a(), b(), c())
    sl, sr, sf = left.init(params), right.init(params), flat.init(params)
    for g in grads_seq * 2:
        ul, sl = left.update(g, sl, params)
        ur, sr = right.update(g, sr, params)
        uf, sf = flat.update(g, sf, params)
        assert_trees_equal(ul, ur)
        assert_trees_equal(ul, uf)


@SETTINGS
@given(problem=problems())
def test_named_chain_equals_chain(problem):
    params, grads_seq = problem
    named = otx.named_chain(("c", otx.clip(0.3)), ("m", otx.scale_by_adam()), ("t", otx.trace(0.5)))
    plain = otx.chain(otx.clip(0.3), otx.scale_by_adam(), otx.trace(0.5))
    sn, sp = named.init(params), plain.init(params)
    assert list(sn) == ["c", "m", "t"]
    for g in grads_seq:
        un, sn = named.update(g, sn, params)
        up, sp = plain.update(g, sp, params)
        assert_trees_equal(un, up)
        assert_trees_equal(sn["m"], sp[1])


def test_chain_rejects_a_foreign_state():
    tx = otx.chain(otx.scale(1.0), otx.scale(2.0))
    with pytest.raises(ValueError, match="chain of 2 transformations got a state"):
        tx.update({"a": torch.ones(1)}, (otx.EmptyState(),))


def test_named_chain_needs_unique_names():
    with pytest.raises(ValueError, match="unique names"):
        otx.named_chain(("a", otx.identity()), ("a", otx.identity()))


@SETTINGS
@given(problem=problems())
def test_partition_equals_masked_pieces(problem):
    """``partition`` applies each transform to its labelled leaves only, like ``masked``."""
    params, grads_seq = problem
    tx = otx.partition({"a": otx.scale(2.0), "b": otx.scale(-1.0), "c": otx.set_to_zero()}, _labels)
    state = tx.init(params)
    labels = _labels(params)
    for g in grads_seq:
        u, state = tx.update(g, state, params)
        factor = {"a": 2.0, "b": -1.0, "c": 0.0}
        expected = otree.map(lambda x, lab: factor[lab] * x, g, labels)
        assert_trees_close(u, expected, rtol=0)


def test_partition_unknown_label_is_a_clear_error():
    with pytest.raises(ValueError, match="labels \\['z'\\] have no transformation"):
        otx.partition({"a": otx.identity()}, {"w": "z"}).init({"w": torch.ones(1)})


@SETTINGS
@given(problem=problems())
def test_masked_leaves_pass_through(problem):
    """``masked(inner, mask)``: masked-out updates are the gradients themselves."""
    params, grads_seq = problem
    tx = otx.masked(otx.scale(3.0), _matrix_mask)
    state = tx.init(params)
    mask = _matrix_mask(params)
    for g in grads_seq:
        u, state = tx.update(g, state, params)
        for x, y, m in zip(otree.flatten(u)[0], otree.flatten(g)[0], otree.flatten(mask)[0]):
            if y is None:
                assert x is None
            elif m:
                torch.testing.assert_close(x, 3.0 * y, rtol=0, atol=0)
            else:
                assert x is y


# --------------------------------------------------------------------------------------------
# Simple transforms and constructors
# --------------------------------------------------------------------------------------------


@SETTINGS
@given(problem=problems())
def test_identity_set_to_zero_stateless(problem):
    params, (g, _) = problem
    u, s = otx.identity().update(g, otx.identity().init(params), params)
    assert_trees_equal(u, g)
    assert s == otx.EmptyState()
    u, s = otx.set_to_zero().update(g, otx.EmptyState(), params)
    assert_trees_equal(u, otree.map(torch.zeros_like, g))
    assert s == otx.EmptyState()

    tx = otx.stateless(lambda upd, p: otree.add_scale(upd, 0.5, p))
    u, s = tx.update(g, tx.init(params), params)
    assert_trees_equal(u, otree.add_scale(g, 0.5, params))
    assert s == otx.EmptyState()

    tx = otx.stateless_with_tree_map(lambda x, p: x - 0.5 * p)
    u, _ = tx.update(g, tx.init(params), params)
    expected = otree.map(lambda x, p: None if p is None else x - 0.5 * p, g, params)
    assert_trees_close(u, expected, rtol=0)
    tx = otx.stateless_with_tree_map(lambda x, p: x * 2 if p is None else None)
    u, _ = tx.update(g, tx.init(params))  # no params: f sees p=None
    assert_trees_equal(u, otree.map(lambda x: x * 2, g))


def test_with_extra_args_support():
    base_tx = otx.scale(2.0)
    wrapped = otx.with_extra_args_support(base_tx)
    assert isinstance(wrapped, otx.GradientTransformationExtraArgs)
    assert otx.with_extra_args_support(wrapped) is wrapped
    g = {"w": torch.ones(2)}
    u, _ = wrapped.update(g, wrapped.init(g), None, value=torch.tensor(1.0), key=3)
    assert_trees_equal(u, {"w": torch.full((2,), 2.0)})
    with pytest.raises(TypeError):
        base_tx.update(g, base_tx.init(g), None, value=1.0)


def test_extra_args_reach_chain_members():
    seen = {}

    def update(updates, state, params=None, **extra):
        seen.update(extra)
        return updates, state

    member = otx.GradientTransformationExtraArgs(otx.init_empty_state, update)
    tx = otx.chain(otx.scale(1.0), member, otx.named_chain(("m", member)))
    g = {"w": torch.ones(1)}
    tx.update(g, tx.init(g), None, value=5.0)
    assert seen == {"value": 5.0}


def test_add_decayed_weights_needs_params():
    with pytest.raises(ValueError, match="needs params"):
        otx.add_decayed_weights(0.1).update({"w": torch.ones(1)}, otx.EmptyState())


# --------------------------------------------------------------------------------------------
# update.py
# --------------------------------------------------------------------------------------------


@SETTINGS
@given(problem=problems())
def test_apply_updates_law(problem):
    """``apply_updates(p, u) = p + u`` leafwise, params untouched, params' dtypes kept, and a
    ``None`` update leaves its parameter as it is."""
    params, (_, g) = problem
    saved, versions = clone_tree(params), tensor_versions(params)
    out = otx.apply_updates(params, g)
    assert_trees_equal(params, saved)
    assert tensor_versions(params) == versions
    assert otree.structure(out) == otree.structure(params)
    for o, p, u in zip(otree.flatten(out)[0], otree.flatten(params)[0], otree.flatten(g)[0]):
        if u is None:
            assert o is p
        else:
            assert o.dtype == p.dtype
            torch.testing.assert_close(o, p + u, rtol=0, atol=0)


def test_apply_updates_structure_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="tree structure mismatch: params has structure"):
        otx.apply_updates({"a": torch.ones(1)}, {"b": torch.ones(1)})


@SETTINGS
@given(problem=problems(), step=st.sampled_from([0.0, 0.3, 1.0]))
def test_incremental_update_law(problem, step):
    """Polyak averaging ``step * new + (1 - step) * old``; 0 keeps old, 1 copies new."""
    params, (g, _) = problem
    new = otree.map(lambda x, y: None if y is None else x, g, params)
    saved = clone_tree(params), clone_tree(new)
    out = otx.incremental_update(new, params, step)
    assert_trees_equal(params, saved[0])
    assert_trees_equal(new, saved[1])
    expected = otree.map(lambda o, n: step * n + (1 - step) * o, params, new)
    assert_trees_close(out, expected, rtol=1e-6, atol=1e-7)
    if step in (0.0, 1.0):
        assert_trees_equal(out, params if step == 0.0 else new)


@SETTINGS
@given(problem=problems(), steps=st.integers(0, 10))
def test_periodic_update_law(problem, steps):
    params, (g, _) = problem
    new = otree.map(lambda x, y: None if y is None else x, g, params)
    out = otx.periodic_update(new, params, torch.tensor(steps), 3)
    assert_trees_equal(out, new if steps % 3 == 0 else params)
