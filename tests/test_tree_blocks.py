"""``tree.leaf_norms`` and ``tree.map_scalars``: per-leaf statistics without a kernel per leaf.

Checked against plain per-leaf torch math (``torch.linalg.vector_norm``, ``tree.map``) on mixed
trees, on both backends, and under ``torch.compile`` / ``vmap`` / ``grad``; the stacked path is
checked to be the one taken (``f`` called once) where it applies.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_trees_equal, make_tree

import optax_torch as otx
from optax_torch import tree as otree


def _per_leaf_norms(tree, ord):
    return otree.map(lambda x: torch.linalg.vector_norm(x, ord), tree)


@pytest.mark.parametrize("ord", [1, 2, math.inf])
def test_leaf_norms_equal_per_leaf_norms(ord, tree_backend):
    x = make_tree(3, with_none=True)
    if ord == math.inf:
        del x["empty"]  # vector_norm refuses the inf-norm of an empty tensor, as here
    out = otree.leaf_norms(x, ord)
    assert otree.structure(out) == otree.structure(x)
    assert_trees_equal(out, _per_leaf_norms(x, ord))


def test_leaf_norms_of_complex_and_half_leaves_are_real_of_their_precision(tree_backend):
    x = [
        torch.randn(5, dtype=torch.complex64),
        torch.randn(3, dtype=torch.bfloat16),
        torch.randn(2, 2, dtype=torch.float64),
    ]
    out = otree.leaf_norms(x)
    assert [o.dtype for o in out] == [torch.float32, torch.bfloat16, torch.float64]
    assert_trees_equal(out, _per_leaf_norms(x, 2))


def test_leaf_norms_bad_ord():
    with pytest.raises(ValueError, match="unsupported ord=3"):
        otree.leaf_norms([torch.ones(2)], ord=3)


def _ratio(u, p):
    return torch.where((u > 0) & (p > 0), 0.5 * p / (u + 1e-3), torch.ones_like(u))


def test_map_scalars_stacks_one_dtype_and_equals_map():
    gen = torch.Generator().manual_seed(0)
    us = [torch.rand((), generator=gen) for _ in range(7)] + [torch.zeros(())]
    ps = [torch.rand((), generator=gen) for _ in range(8)]
    calls = []

    def f(u, p):
        calls.append(u.shape)
        return _ratio(u, p)

    out = otree.map_scalars(f, us, ps)
    assert calls == [torch.Size([8])]  # one call on the stacked scalars
    assert all(o.shape == () and o.dtype == torch.float32 for o in out)
    assert_trees_equal(out, otree.map(_ratio, us, ps))
    assert out[-1].item() == 1.0


def test_map_scalars_falls_back_leaf_by_leaf_on_mixed_dtypes_and_keeps_none():
    us = {"a": torch.tensor(2.0), "b": torch.tensor(3.0, dtype=torch.float64), "c": None}
    ps = {"a": torch.tensor(1.0), "b": torch.tensor(4.0, dtype=torch.float64), "c": None}
    calls = []

    def f(u, p):
        calls.append(u.shape)
        return _ratio(u, p)

    out = otree.map_scalars(f, us, ps)
    assert calls == [torch.Size([]), torch.Size([])]
    assert out["c"] is None and out["b"].dtype == torch.float64
    assert_trees_equal(out, otree.map(_ratio, us, ps))


def test_map_scalars_none_in_a_later_tree_gives_none():
    out = otree.map_scalars(
        torch.mul, [torch.tensor(2.0), torch.tensor(3.0)], [torch.tensor(2.0), None]
    )
    assert out[1] is None and out[0].item() == 4.0


def test_map_scalars_numbers_stack_in_the_tensors_dtype():
    """A tree of Python numbers (e.g. sqrt of each leaf's size) next to 0-d tensors: stacked in
    their dtype, with the numbers' result of the per-leaf computation."""
    norms = [torch.tensor(3.0), torch.tensor(5.0), torch.tensor(7.0)]
    sizes = [3**0.5, 10**0.5, 1.0]
    out = otree.map_scalars(lambda n, s: n / s, norms, sizes)
    assert all(o.dtype == torch.float32 for o in out)
    assert_trees_equal(out, [n / s for n, s in zip(norms, sizes)])
    # only numbers: nothing to stack them like, leaf by leaf
    assert otree.map_scalars(lambda a, b: a * b, [2.0, 3], [4.0, 5]) == [8.0, 15]


def test_map_scalars_structure_mismatch_names_the_tree():
    with pytest.raises(ValueError, match="tree #2"):
        otree.map_scalars(torch.mul, [torch.tensor(1.0)], [torch.tensor(1.0), torch.tensor(2.0)])


def test_map_scalars_empty_tree():
    assert otree.map_scalars(torch.mul, [], []) == []
    assert otree.map_scalars(torch.mul, {"a": None}, {"a": None}) == {"a": None}


def _trust(xs, ys):
    return otree.map_scalars(_ratio, otree.leaf_norms(xs), otree.leaf_norms(ys))


def test_compiled_fullgraph_equals_eager():
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(n, generator=gen) for n in (3, 5, 2, 7)] + [torch.zeros(4)]
    ys = [torch.randn(n, generator=gen) for n in (3, 5, 2, 7, 4)]
    compiled = torch.compile(_trust, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(xs, ys), _trust(xs, ys), rtol=1e-6, atol=0)


def test_vmap_equals_per_example():
    gen = torch.Generator().manual_seed(2)
    xs = [torch.randn(4, 3, generator=gen), torch.randn(4, 6, generator=gen)]
    ys = [torch.randn(4, 3, generator=gen), torch.randn(4, 6, generator=gen)]
    batched = torch.func.vmap(_trust)(xs, ys)
    for i in range(4):
        one = _trust([x[i] for x in xs], [y[i] for y in ys])
        torch.testing.assert_close([b[i] for b in batched], one, rtol=1e-6, atol=0)


def test_gradient_equals_per_leaf_math_and_is_finite_at_a_zero_leaf():
    """Differentiable (meta-learning through LARS/LAMB): the gradient through the norms and the
    stacked ratio equals that of the plain per-leaf formula, and is 0, not NaN, at a zero leaf."""
    gen = torch.Generator().manual_seed(3)
    xs = [torch.randn(3, generator=gen, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)]
    ys = [torch.randn(3, generator=gen, dtype=torch.float64) for _ in range(2)]

    def total(fn, xs):
        return sum(r * r for r in fn(xs, ys))

    def per_leaf(xs, ys):
        return [
            _ratio(torch.linalg.vector_norm(x), torch.linalg.vector_norm(y)) for x, y in zip(xs, ys)
        ]

    g = torch.func.grad(lambda xs: total(_trust, xs))(xs)
    g_ref = torch.func.grad(lambda xs: total(per_leaf, xs))(xs)
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=0)
    assert torch.isfinite(torch.cat(g)).all()

    # and eagerly, through autograd on tensors that require grad
    xs_ = [x.clone().requires_grad_() for x in xs]
    total(_trust, xs_).backward()
    torch.testing.assert_close([x.grad for x in xs_], g_ref, rtol=1e-12, atol=0)


def test_trust_ratio_runs_its_ratio_math_once_per_step():
    """scale_by_trust_ratio over 50 leaves: two multi-tensor norms and one stacked ratio
    computation, not a dozen kernels per leaf (counted by the kernels dispatched)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.n += 1
            return func(*args, **(kwargs or {}))

    params = [torch.randn(5) for _ in range(50)]
    grads = [torch.randn(5) for _ in range(50)]
    tx = otx.scale_by_trust_ratio()
    state = tx.init(params)
    with Count() as c:
        tx.update(grads, state, params)
    assert c.n < 50, c.n  # per-leaf math made ~600
