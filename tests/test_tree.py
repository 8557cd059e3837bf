"""``optax_torch.tree`` against numpy / plain per-tensor torch math.

Every leafwise function runs on mixed float32 + float64 trees (dict / list / tuple / NamedTuple
nests with 0-d and empty leaves and ``None`` leaves), once on the multi-tensor
``torch._foreach_*`` path (eager) and once on the per-tensor path (the one used under
``torch.compile`` / ``torch.func``), via the ``tree_backend`` fixture of ``conftest.py``.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from typing import NamedTuple

import numpy as np
import pytest
import torch
from conftest import (
    Pair,
    assert_same_dtypes,
    assert_trees_close,
    assert_trees_equal,
    like_tree,
    make_tree,
    numpy_map,
)

import optax_torch as otx
from optax_torch import tree as otree

RTOL = 1e-6  # float32 leaves; float64 leaves agree far more tightly
ATOL = 1e-7


def _x():
    """Mixed-dtype tree with ``None`` at ``dense.b`` and ``pair.first``."""
    return make_tree(1, with_none=True)


def _y():
    """Same structure, other values, ``None`` at another place (``seq[0]``)."""
    y = like_tree(make_tree(1), seed=2, low=0.5, high=2.0)
    y["seq"][0] = None
    return y


def _z():
    return like_tree(make_tree(1), seed=3)


def _n_none(t) -> int:
    return sum(x is None for x in otree.flatten(t)[0])


# --------------------------------------------------------------------------------------------
# Flattening, structure, map
# --------------------------------------------------------------------------------------------


def test_flatten_keeps_none_as_leaf_and_roundtrips():
    """flatten/unflatten are inverse; ``None`` is a leaf (a param without gradient)."""
    t = _x()
    leaves, spec = otree.flatten(t)
    assert len(leaves) == 9 and sum(x is None for x in leaves) == 2
    back = otree.unflatten(spec, leaves)
    assert_trees_equal(back, t)
    assert isinstance(back["pair"], Pair)
    # a tensor and None occupy the same slot: same structure
    assert otree.structure(t) == otree.structure(make_tree(1))


class _Pair(NamedTuple):
    a: object
    b: object


def _nested_trees():
    t = [torch.randn(2) for _ in range(3)]
    return [
        (_Pair(torch.tensor(1), [t[0], None, t[1]]), otx.EmptyState()),
        (),
        [t, (t[2], None), [], _Pair([t[0]], ())],
        (_Pair(t[0], {"x": t[1], "y": [t[2]]}), [t[1]]),  # a dict inside: the registry's flatten
        [[None, None], (None,)],
        _Pair(t, _Pair(t[0], t[1])),
    ]


@pytest.mark.parametrize("k", range(6))
def test_nested_tuples_and_lists_flatten_as_the_registry(k):
    """Trees of tuples, NamedTuples and lists (optimizer states) flatten by a Python shortcut
    with a cached treespec: same leaves (the same objects) and treespec as torch's pytree, on the
    first call and on the cached ones, and the leaves, ids and unflatten agree."""
    import torch.utils._cxx_pytree as cx

    t = _nested_trees()[k]
    want_leaves, want_spec = cx.tree_flatten(t)
    for _ in range(2):
        got_leaves, got_spec = otree.flatten(t)
        assert got_spec == want_spec
        assert len(got_leaves) == len(want_leaves)
        assert all(a is b for a, b in zip(got_leaves, want_leaves))
        assert [id(x) for x in otree.leaves(t)] == [id(x) for x in want_leaves if x is not None]
        assert otree._ids(t) == {id(x) for x in want_leaves if x is not None}
        back = otree.unflatten(got_spec, got_leaves)
        assert cx.tree_structure(back) == want_spec


def test_leaves_drops_none():
    t = _x()
    assert len(otree.leaves(t)) == 7
    assert all(isinstance(x, torch.Tensor) for x in otree.leaves(t))


def test_map_passes_none_and_applies_per_leaf():
    """``map`` = a Python call per leaf; ``None`` leaves of the first tree stay ``None``."""
    x, z = _x(), _z()
    out = otree.map(lambda a, b: a * 2 - b, x, z)
    assert_trees_close(out, numpy_map(lambda a, b: a * 2 - b, x, z), rtol=RTOL)


def test_map_structure_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="tree structure mismatch in map"):
        otree.map(lambda a, b: a + b, {"a": torch.ones(1)}, [torch.ones(1)])


def test_map_is_leaf():
    t = {"a": (torch.ones(2), torch.zeros(2)), "b": (torch.ones(1), torch.ones(1))}
    out = otree.map(lambda p: p[0] + p[1], t, is_leaf=lambda n: isinstance(n, tuple))
    assert_trees_equal(out, {"a": torch.ones(2), "b": torch.full((1,), 2.0)})


# --------------------------------------------------------------------------------------------
# Element-wise arithmetic
# --------------------------------------------------------------------------------------------

BINARY = {
    "add": (otree.add, np.add),
    "sub": (otree.sub, np.subtract),
    "mul": (otree.mul, np.multiply),
    "div": (otree.div, np.divide),
    "maximum": (otree.maximum, np.maximum),
}


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_ops_match_numpy(name, tree_backend):
    """Leafwise binary op == numpy; ``None`` in either input gives ``None``; dtypes kept."""
    f, ref = BINARY[name]
    x, y = _x(), _y()
    out = f(x, y)
    expected = numpy_map(ref, x, y)
    assert_trees_close(out, expected, rtol=RTOL, atol=ATOL, check_dtype=True)
    assert _n_none(out) == 3  # union of the None places of x and y
    # inputs untouched
    assert_trees_equal(x, _x())
    assert_trees_equal(y, _y())


def test_add_of_three_trees(tree_backend):
    x, y, z = _x(), _y(), _z()
    out = otree.add(x, y, z)
    assert_trees_close(out, numpy_map(lambda a, b, c: a + b + c, x, y, z), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "f",
    [otree.add, otree.sub, otree.mul, otree.div, otree.maximum],
    ids=lambda f: f.__name__,
)
def test_binary_structure_mismatch_names_the_argument(f):
    x = {"a": torch.ones(2), "b": torch.ones(3)}
    y = {"a": torch.ones(2), "c": torch.ones(3)}
    with pytest.raises(ValueError, match=r"tree structure mismatch: tree_y has structure"):
        f(x, y)


def test_dict_key_order_is_part_of_the_structure():
    """torch pytrees keep dict insertion order (JAX sorts keys): a reordered dict is a mismatch,
    reported clearly rather than silently pairing the wrong leaves."""
    with pytest.raises(ValueError, match="tree structure mismatch"):
        otree.add(
            {"a": torch.ones(1), "b": torch.ones(2)}, {"b": torch.ones(2), "a": torch.ones(1)}
        )


def test_unary_ops_match_numpy(tree_backend):
    x = _x()
    pos = like_tree(make_tree(1), seed=4, low=0.1, high=3.0)
    assert_trees_close(otree.sqrt(pos), numpy_map(np.sqrt, pos), rtol=RTOL, check_dtype=True)
    assert_trees_close(otree.abs(x), numpy_map(np.abs, x), rtol=0, check_dtype=True)
    assert_trees_close(otree.sign(x), numpy_map(np.sign, x), rtol=0, check_dtype=True)


@pytest.mark.parametrize("s", [0.37, -2.0, 3])
def test_scalar_ops_match_numpy(s, tree_backend):
    """scale / add_scalar / add_scale / clip with a Python scalar == numpy, dtypes kept."""
    x, z = _x(), _z()
    assert_trees_close(
        otree.scale(s, x), numpy_map(lambda a: a * s, x), rtol=RTOL, check_dtype=True
    )
    assert_trees_close(
        otree.add_scalar(x, s),
        numpy_map(lambda a: a + s, x),
        rtol=RTOL,
        atol=ATOL,
        check_dtype=True,
    )
    assert_trees_close(
        otree.add_scale(x, s, z),
        numpy_map(lambda a, b: a + s * b, x, z),
        rtol=RTOL,
        atol=ATOL,
        check_dtype=True,
    )


@pytest.mark.parametrize("lo,hi", [(-0.3, 0.5), (None, 0.2), (-0.1, None)])
def test_clip_matches_numpy(lo, hi, tree_backend):
    x = _x()
    out = otree.clip(x, lo, hi)
    assert_trees_close(out, numpy_map(lambda a: np.clip(a, lo, hi), x), rtol=0, check_dtype=True)


def test_clip_without_bounds_is_identity_on_both_paths(tree_backend):
    x = _x()
    assert_trees_equal(otree.clip(x), x)


SCALAR_OPS = {
    "scale": lambda s, x, z: otree.scale(s, x),
    "add_scalar": lambda s, x, z: otree.add_scalar(x, s),
    "add_scale": lambda s, x, z: otree.add_scale(x, s, z),
    "clip": lambda s, x, z: otree.clip(x, -s, s),
    "update_moment": lambda s, x, z: otree.update_moment(x, z, s, 1),
    "update_moment_sq": lambda s, x, z: otree.update_moment_per_elem_norm(x, z, s, 2),
    "infinity_moment": lambda s, x, z: otree.update_infinity_moment(x, z, s, 1e-3),
    "infinity_moment_eps": lambda s, x, z: otree.update_infinity_moment(x, z, 0.9, s),
    "div_sqrt_eps": lambda s, x, z: otree.div_sqrt(x, otree.abs(z), eps=s),
    "div_sqrt_eps_root": lambda s, x, z: otree.div_sqrt(x, otree.abs(z), eps_root=s),
    "div_sqrt_x_scale": lambda s, x, z: otree.div_sqrt(x, otree.abs(z), 1e-3, x_scale=s),
    "div_sqrt_y_scale": lambda s, x, z: otree.div_sqrt(x, otree.abs(z), 1e-3, y_scale=s),
    "bias_correction": lambda s, x, z: otree.bias_correction(x, s, torch.tensor(3)),
    "full_like": lambda s, x, z: otree.full_like(x, s),
}


@pytest.mark.parametrize("op", sorted(SCALAR_OPS))
def test_tensor_scalar_gives_the_python_scalar_result(op, tree_backend):
    """A float64 0-d tensor hyperparameter gives exactly the Python-number result (values and
    dtypes, 0-d float32 leaves included), on both paths: hyperparameters held in state are
    tensors, and under compile / vmap / grad they stay tensors."""
    f = SCALAR_OPS[op]
    x, z = _x(), _z()
    s = 0.3
    by_number = f(s, x, z)
    by_tensor = f(torch.tensor(s, dtype=torch.float64), x, z)
    assert_trees_equal(by_tensor, by_number)


@pytest.mark.parametrize("op", sorted(SCALAR_OPS))
def test_requires_grad_tensor_scalar_keeps_values_and_dtypes(op):
    """Eager autograd through a hyperparameter (a tensor scalar that cannot become a number)
    gives the Python-number result, 0-d float32 leaves staying float32."""
    f = SCALAR_OPS[op]
    x, z = _x(), _z()
    by_number = f(0.3, x, z)
    by_tensor = f(torch.tensor(0.3, dtype=torch.float64, requires_grad=True), x, z)
    assert_trees_close(by_tensor, by_number, rtol=1e-6, atol=1e-7, check_dtype=True)


def test_where_tree_condition_and_tensor_condition(tree_backend):
    x, z = _x(), _z()
    cond = otree.map(lambda a: a > 0, z)
    out = otree.where(cond, x, z)
    assert_trees_close(out, numpy_map(lambda a, b: np.where(b > 0, a, b), x, z), rtol=0)
    assert_trees_equal(otree.where(torch.tensor(True), x, z), numpy_map(lambda a, b: a, x, z))
    assert_trees_equal(
        otree.where(torch.tensor(False), x, z), numpy_map(lambda a, b: b, x, z), check_dtype=False
    )


def test_where_python_bool_condition():
    x, z = {"a": torch.ones(2)}, {"a": torch.zeros(2)}
    assert_trees_equal(otree.where(True, x, z), x)
    assert_trees_equal(otree.where(False, x, z), z)


def test_where_gives_none_where_a_tree_has_none():
    """As every element-wise operation (a state the adapter has not made yet is ``None``)."""
    x = {"a": [torch.ones(1), torch.ones(2)]}
    y = {"a": [None, torch.zeros(2)]}
    out = otree.where(torch.tensor(True), x, y)
    assert out["a"][0] is None and torch.equal(out["a"][1], x["a"][1])
    out = otree.where({"a": [torch.tensor(True), None]}, x, {"a": [torch.zeros(1)] * 2})
    assert torch.equal(out["a"][0], x["a"][0]) and out["a"][1] is None


# --------------------------------------------------------------------------------------------
# Reductions
# --------------------------------------------------------------------------------------------


def _np_leaves(t):
    return [x.detach().numpy().astype(np.float64) for x in otree.leaves(t)]


def test_sum_max_min_vdot_match_numpy():
    x = _x()
    z = otree.map(lambda a, b: None if b is None else a, _z(), x)
    xs, zs = _np_leaves(x), _np_leaves(z)
    flat_x = np.concatenate([a.ravel() for a in xs])
    flat_z = np.concatenate([a.ravel() for a in zs])
    assert otree.sum(x).dtype == torch.float64  # promoted over float32 + float64 leaves
    np.testing.assert_allclose(otree.sum(x).item(), flat_x.sum(), rtol=RTOL)
    assert otree.max(x).item() == pytest.approx(flat_x.max(), rel=1e-7)
    assert otree.min(x).item() == pytest.approx(flat_x.min(), rel=1e-7)
    np.testing.assert_allclose(otree.vdot(x, z).item(), flat_x @ flat_z, rtol=RTOL)


def test_reductions_of_empty_trees():
    """No leaves (or only empty / None leaves): sum=0, max=-inf, min=inf, norm=0, all_finite."""
    empty = {"a": None, "b": torch.zeros(0)}
    assert otree.sum({}).item() == 0.0
    assert otree.max(empty).item() == -math.inf
    assert otree.min(empty).item() == math.inf
    assert otree.norm({}).item() == 0.0
    assert otree.norm(empty).item() == 0.0
    assert otree.vdot({}, {}).item() == 0.0
    assert bool(otree.all_finite({"a": None}))


def test_vdot_skips_pairs_with_none_and_checks_structure():
    x = {"a": None, "b": torch.ones(3), "c": torch.full((2,), 2.0)}
    y = {"a": torch.ones(3), "b": None, "c": torch.full((2,), 3.0)}
    assert otree.vdot(x, y).item() == 12.0  # only leaf "c" has both
    with pytest.raises(ValueError, match="structure"):
        otree.vdot({"a": torch.ones(2)}, [torch.ones(2)])


@pytest.mark.parametrize(
    "ord,ref",
    [
        (1, lambda v: np.abs(v).sum()),
        (2, lambda v: np.sqrt((v * v).sum())),
        (None, lambda v: np.sqrt((v * v).sum())),
        ("fro", lambda v: np.sqrt((v * v).sum())),
        (math.inf, lambda v: np.abs(v).max()),
        ("inf", lambda v: np.abs(v).max()),
    ],
)
def test_norm_matches_numpy(ord, ref, tree_backend):
    """Global norm over all leaves as one vector (float32 + float64 leaves, None skipped)."""
    x = _x()
    del x["empty"]  # see test_inf_norm_with_an_empty_leaf
    flat = np.concatenate([a.ravel() for a in _np_leaves(x)])
    out = otree.norm(x, ord)
    assert out.dtype == torch.float64 and out.shape == ()
    np.testing.assert_allclose(out.item(), ref(flat), rtol=RTOL)


def test_inf_norm_with_an_empty_leaf(tree_backend):
    x = {"e": torch.zeros(0), "v": torch.tensor([1.0, -3.0])}
    assert otree.norm(x, math.inf).item() == 3.0


def test_norm_squared(tree_backend):
    x = _x()
    flat = np.concatenate([a.ravel() for a in _np_leaves(x)])
    np.testing.assert_allclose(otree.norm(x, squared=True).item(), (flat * flat).sum(), rtol=RTOL)
    np.testing.assert_allclose(
        otree.norm(x, 2, squared=True).item(), (flat * flat).sum(), rtol=RTOL
    )


def test_norm_bad_arguments():
    with pytest.raises(ValueError, match="unsupported ord"):
        otree.norm({"a": torch.ones(2)}, ord=3)
    with pytest.raises(ValueError, match="squared=True requires ord=2"):
        otree.norm({"a": torch.ones(2)}, ord=1, squared=True)


def test_all_finite():
    x = _x()
    assert otree.all_finite(x).dtype == torch.bool and bool(otree.all_finite(x))
    for bad in (math.inf, -math.inf, math.nan):
        y = _x()
        y["dense"]["w"] = y["dense"]["w"].clone()
        y["dense"]["w"][1, 2] = bad
        assert not bool(otree.all_finite(y))


# --------------------------------------------------------------------------------------------
# Creation and casting
# --------------------------------------------------------------------------------------------


def test_zeros_ones_full_like():
    x = _x()
    assert_trees_equal(otree.zeros_like(x), numpy_map(np.zeros_like, x))
    assert_trees_equal(otree.ones_like(x), numpy_map(np.ones_like, x))
    assert_trees_equal(otree.full_like(x, 0.25), numpy_map(lambda a: np.full_like(a, 0.25), x))
    z = otree.zeros_like(x, dtype=torch.bfloat16)
    assert all(a.dtype == torch.bfloat16 for a in otree.leaves(z))
    assert _n_none(z) == 2


def test_cast_and_cast_like():
    x = _x()
    x["ints"] = torch.arange(3)
    c = otree.cast(x, torch.float64)
    assert all(
        a.dtype == (torch.int64 if a.dtype == torch.int64 else torch.float64)
        for a in otree.leaves(c)
    )
    assert c["ints"].dtype == torch.int64  # only floating leaves are cast
    assert otree.cast(x, None) is x
    assert_trees_close(c, x, rtol=0)
    target = otree.map(lambda a: a.to(torch.float32), x)
    assert_same_dtypes(otree.cast_like(x, target), target)


# --------------------------------------------------------------------------------------------
# Moments
# --------------------------------------------------------------------------------------------


def test_bias_correction_is_computed_in_float64(tree_backend):
    """``1 - decay**count`` in float64: with decay=0.999, count=1 a float32 correction would be off
    by ~5e-5 relative (1 - 0.999f = 0.00100005), far above float32 rounding (6e-8)."""
    x = {"v": torch.full((4,), 0.5, dtype=torch.float32), "m": torch.full((2, 2), 3.0)}
    out = otree.bias_correction(x, 0.999, torch.tensor(1, dtype=torch.int32))
    np.testing.assert_allclose(out["v"].numpy(), 0.5 / 0.001, rtol=1e-7)
    np.testing.assert_allclose(out["m"].numpy(), 3.0 / 0.001, rtol=1e-7)
    assert out["v"].dtype == torch.float32


@pytest.mark.parametrize("count", [1, 7, 1000])
def test_bias_correction_matches_numpy(count, tree_backend):
    x = _x()
    out = otree.bias_correction(x, 0.9, torch.tensor(count, dtype=torch.int32))
    expected = numpy_map(lambda a: (a / (1 - 0.9**count)).astype(a.dtype), x)
    assert_trees_close(out, expected, rtol=RTOL, check_dtype=True)


def test_debias_factor_is_float64():
    f = otree.debias_factor(0.999, torch.tensor(3, dtype=torch.int32))
    assert f.dtype == torch.float64 and f.shape == ()
    assert f.item() == pytest.approx(1 / (1 - 0.999**3), rel=1e-15)
    f = otree.debias_factor(torch.tensor(0.5, dtype=torch.float64), 2)
    assert f.item() == pytest.approx(1 / (1 - 0.25), rel=1e-15)


@pytest.mark.parametrize(
    "eps,eps_root,x_scale,y_scale",
    [
        (0.0, 0.0, 1.0, 1.0),
        (1e-3, 0.0, 1.0, 1.0),
        (1e-3, 1e-2, 1.0, 1.0),
        (1e-8, 0.0, 3.0, 7.0),
        (1e-2, 1e-3, 0.5, 20.0),
    ],
)
def test_div_sqrt_matches_numpy(eps, eps_root, x_scale, y_scale, tree_backend):
    """``x_scale * x / (sqrt(y_scale * y + eps_root) + eps)`` leafwise (Adam's ratio)."""
    x = _x()
    y = otree.map(lambda a, b: None if b is None else a, like_tree(make_tree(1), 7, 0.1, 2.0), x)
    out = otree.div_sqrt(x, y, eps, eps_root, x_scale=x_scale, y_scale=y_scale)
    expected = numpy_map(lambda a, b: x_scale * a / (np.sqrt(y_scale * b + eps_root) + eps), x, y)
    assert_trees_close(out, expected, rtol=2e-6, atol=1e-7)
    assert_same_dtypes(out, x)


def test_div_sqrt_zero_over_zero_eps():
    """With ``eps > 0`` a zero moment gives a zero ratio, not NaN."""
    z = {"a": torch.zeros(3)}
    assert_trees_equal(otree.div_sqrt(z, z, 1e-8), z)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_update_moment_matches_numpy(order, tree_backend):
    """``decay * m + (1 - decay) * g**order``, dtype of the updates."""
    g, m = _x(), _z()
    out = otree.update_moment(g, m, 0.8, order)
    expected = numpy_map(lambda a, b: 0.8 * b + 0.2 * a**order, g, m)
    assert_trees_close(out, expected, rtol=1e-5, atol=1e-7)
    assert_same_dtypes(out, g)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_update_moment_per_elem_norm_matches_numpy(order, tree_backend):
    """``decay * m + (1 - decay) * |g|**order``."""
    g, m = _x(), _z()
    out = otree.update_moment_per_elem_norm(g, m, 0.8, order)
    expected = numpy_map(lambda a, b: 0.8 * b + 0.2 * np.abs(a) ** order, g, m)
    assert_trees_close(out, expected, rtol=1e-5, atol=1e-7)
    assert_same_dtypes(out, g)


def test_update_moment_with_low_precision_moments(tree_backend):
    """Moments of another dtype (e.g. bfloat16 ``mu_dtype``) are upcast: result in g's dtype."""
    g = {
        "a": torch.linspace(-1, 1, 5, dtype=torch.float64),
        "b": torch.ones(2, dtype=torch.float32),
    }
    m = otree.map(lambda a: (a * 0.5).to(torch.bfloat16), g)
    out = otree.update_moment(g, m, 0.9, 1)
    assert_same_dtypes(out, g)
    expected = numpy_map(
        lambda a, b: 0.9 * b.astype(np.float64) + 0.1 * a, g, otree.cast(m, torch.float64)
    )
    assert_trees_close(out, expected, rtol=1e-6, atol=1e-7)


def test_update_infinity_moment_matches_numpy(tree_backend):
    g, m = _x(), otree.abs(_z())
    out = otree.update_infinity_moment(g, m, 0.9, 1e-3)
    expected = numpy_map(lambda a, b: np.maximum(np.abs(a) + 1e-3, 0.9 * b), g, m)
    assert_trees_close(out, expected, rtol=RTOL, atol=ATOL, check_dtype=True)


def test_moment_structure_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="tree structure mismatch: moments has structure"):
        otree.update_moment({"a": torch.ones(2)}, {"b": torch.ones(2)}, 0.9, 1)


# --------------------------------------------------------------------------------------------
# Backend selection
# --------------------------------------------------------------------------------------------


def test_backend_is_foreach_eagerly_and_per_leaf_under_functorch():
    seen = []

    def f(x):
        seen.append(otree._backend())
        return otree.scale(2.0, {"x": x})["x"]

    f(torch.ones(3))
    torch.func.vmap(f)(torch.ones(2, 3))
    torch.func.grad(lambda x: f(x).sum())(torch.ones(3))
    assert seen == [otree._Foreach, otree._PerLeaf, otree._PerLeaf]


def test_backend_is_per_leaf_under_compile():
    seen = []

    def f(x):
        seen.append(otree._use_foreach())
        return otree.scale(2.0, {"x": x})["x"]

    out = torch.compile(f, backend="eager", fullgraph=True)(torch.ones(3))
    assert seen == [False]
    assert torch.equal(out, torch.full((3,), 2.0))


# --------------------------------------------------------------------------------------------
# get / set / broadcast_prefix
# --------------------------------------------------------------------------------------------


class _Inner(NamedTuple):
    count: torch.Tensor
    mu: dict


class _Outer(NamedTuple):
    inner: _Inner
    learning_rate: torch.Tensor


def _state():
    return (
        _Outer(_Inner(torch.tensor(3), {"w": torch.ones(2)}), torch.tensor(0.1)),
        {"hyper": {"b1": torch.tensor(0.9)}},
    )


def test_get_finds_unique_field_or_key():
    s = _state()
    assert otree.get(s, "count").item() == 3
    assert otree.get(s, "learning_rate").item() == pytest.approx(0.1)
    assert otree.get(s, "b1").item() == pytest.approx(0.9)
    assert torch.equal(otree.get(s, "w"), torch.ones(2))
    assert otree.get(s, "nope", default=None) is None
    with pytest.raises(KeyError, match="no field named 'nope'"):
        otree.get(s, "nope")
    with pytest.raises(KeyError, match="2 fields match 'count', at '0/0/inner/count', '1/0/inner"):
        otree.get((s, s), "count")
    assert otree.get((s, s), "1/0/inner/count").item() == 3  # a path picks one
    assert otree.get((s, s), (1, 0, "inner", "count")).item() == 3
    assert otree.get((s, s), "count", filtering=lambda path, v: path[0] == 0).item() == 3


def test_get_prefers_the_value_over_a_schedule_state():
    """An injected optimizer has ``hyperparams["learning_rate"]`` and the schedule's state under
    ``hyperparams_states["learning_rate"]``: ``get`` returns the value (optax raises)."""
    tx = otx.inject_hyperparams(otx.adam)(learning_rate=lambda c: 0.1 / (c + 1))
    state = tx.init({"w": torch.ones(2)})
    _, state = tx.update({"w": torch.ones(2)}, state, {"w": torch.ones(2)})
    assert otree.get(state, "learning_rate").item() == pytest.approx(0.1)
    paths = [p for p, _ in otree.get_all_with_path(state, "learning_rate")]
    assert paths == [("hyperparams", "learning_rate"), ("hyperparams_states", "learning_rate")]


def test_set_raises_on_unknown_names_and_filters():
    s = _state()
    with pytest.raises(KeyError, match="nope"):
        otree.set(s, nope=1)
    both = otree.set((s, s), lambda path, v: path[0] == 1, count=torch.tensor(9))
    assert otree.get(both, "0/0/inner/count").item() == 3
    assert otree.get(both, "1/0/inner/count").item() == 9


def test_map_params_maps_the_copies_of_the_params():
    params = {"w": torch.ones(2, 3), "b": [torch.zeros(3)]}
    tx = otx.chain(otx.clip_by_global_norm(1.0), otx.adam(0.1))
    state = tx.init(params)
    shapes = otree.map_params(tx, lambda x: tuple(x.shape), state, transform_non_params=lambda v: 0)
    adam_state = shapes[1][0]
    assert adam_state.count == 0
    assert adam_state.mu == {"w": (2, 3), "b": [(3,)]} and adam_state.nu == adam_state.mu
    # extra trees shaped like the params are passed along
    pairs = otree.map_params(tx.init, lambda x, y: y, state, params)
    assert pairs[1][0].mu["w"] is params["w"]


def test_dtype_size_real_conj_allclose_batch_shape_random_like():
    t = {"a": torch.ones(2, dtype=torch.float32), "b": torch.ones(3, dtype=torch.float64)}
    assert otree.size(t) == 5
    with pytest.raises(ValueError, match="several dtypes"):
        otree.dtype(t)
    assert otree.dtype(t, "promote") == torch.float64
    assert otree.dtype(t, "highest") == torch.float64
    assert otree.dtype(t, "lowest") == torch.float32
    with pytest.raises(ValueError, match="no highest"):
        otree.dtype(
            {"x": torch.ones(1, dtype=torch.bfloat16), "y": torch.ones(1, dtype=torch.half)},
            "highest",
        )
    c = {"z": torch.tensor([1 + 2j, 3 - 1j])}
    assert torch.equal(otree.real(c)["z"], torch.tensor([1.0, 3.0]))
    assert torch.equal(otree.conj(c)["z"], torch.tensor([1 - 2j, 3 + 1j]))
    assert otree.allclose(t, otree.map(lambda x: x + 1e-9, t))
    assert not otree.allclose(t, otree.map(lambda x: x + 1e-3, t))
    assert not otree.allclose(t, {"a": t["a"]})
    assert otree.batch_shape(t, (4,))["b"].shape == (4, 3)
    r1 = otree.random_like(0, t)
    r2 = otree.random_like(torch.Generator().manual_seed(0), t)
    assert otree.allclose(r1, r2, rtol=0, atol=0) and r1["b"].dtype == torch.float64
    u = otree.random_like(1, t, sampler=torch.rand, dtype=torch.float64)
    assert all(x.min() >= 0 and x.max() < 1 for x in otree.leaves(u))


def test_get_reads_real_optimizer_state():
    params = {"w": torch.ones(2)}
    tx = otx.adam(0.1)
    state = tx.init(params)
    _, state = tx.update({"w": torch.ones(2)}, state, params)
    assert otree.get(state, "count").item() == 1


def test_set_replaces_everywhere_and_keeps_types():
    s = _state()
    new = otree.set(s, count=torch.tensor(7), b1=torch.tensor(0.5))
    assert (
        isinstance(new, tuple) and isinstance(new[0], _Outer) and isinstance(new[0].inner, _Inner)
    )
    assert new[0].inner.count.item() == 7 and new[1]["hyper"]["b1"].item() == 0.5
    assert s[0].inner.count.item() == 3 and s[1]["hyper"]["b1"].item() == pytest.approx(0.9)
    od = otree.set(OrderedDict(a=1, b=2), a=5)
    assert type(od) is OrderedDict and od == OrderedDict(a=5, b=2)
    assert otree.set([{"x": 1}, ({"x": 2},)], x=0) == [{"x": 0}, ({"x": 0},)]


def test_broadcast_prefix():
    t = {"enc": {"w": torch.ones(2), "b": None}, "dec": [torch.ones(1), torch.ones(3)]}
    assert otree.broadcast_prefix({"enc": False, "dec": True}, t) == [False, False, True, True]
    assert otree.broadcast_prefix(True, t) == [True] * 4
    full = {"enc": {"w": 1, "b": 2}, "dec": [3, 4]}
    assert otree.broadcast_prefix(full, t) == [1, 2, 3, 4]
    assert len(otree.broadcast_prefix(True, t)) == len(otree.flatten(t)[0])
    with pytest.raises(ValueError, match="is not a prefix of"):
        otree.broadcast_prefix({"enc": True}, t)
    with pytest.raises(ValueError, match="is not a prefix of"):
        otree.broadcast_prefix([True, False], t)


def test_full_like_with_a_batched_tensor_value_under_vmap():
    params = {"a": torch.ones(2, 3), "b": torch.ones(())}
    out = torch.func.vmap(lambda v: otree.full_like(params, v))(torch.tensor([1.0, 2.0]))
    assert out["a"].shape == (2, 2, 3) and out["b"].shape == (2,)
    torch.testing.assert_close(out["a"][1], torch.full((2, 3), 2.0))


def test_real_state_dtype_on_complex_leaves_keeps_the_imaginary_part():
    """A real dtype given for a complex leaf (``mu_dtype``, ``MultiSteps``' float32 accumulator)
    means its complex counterpart: the imaginary part is never dropped."""
    z = torch.full((2,), 0.5 - 0.3j, dtype=torch.complex128)
    x = torch.ones(2, dtype=torch.float64)
    assert otree.zeros_like([z, x], dtype=torch.float32)[0].dtype == torch.complex64
    assert otree.zeros_like([z, x], dtype=torch.float32)[1].dtype == torch.float32
    assert otree.ones_like([z], dtype=torch.float16)[0].dtype == torch.complex32
    cast = otree.cast([z, x], torch.float32)
    assert cast[0].dtype == torch.complex64 and cast[1].dtype == torch.float32
    torch.testing.assert_close(cast[0], z.to(torch.complex64))
    params = {"z": torch.full((2,), 0.5 - 0.3j)}
    grad = {"z": torch.full((2,), 0.1 + 0.2j)}
    for tx in (
        otx.MultiSteps(otx.adam(0.1), 3).gradient_transformation(),
        otx.adam(0.1, mu_dtype=torch.float32),
        otx.sgd(0.1, momentum=0.9, accumulator_dtype=torch.float32),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "discards the imaginary part"
            state = tx.init(params)
            for _ in range(3):
                updates, state = tx.update(grad, state, params)
        assert updates["z"].imag.abs().min() > 0
