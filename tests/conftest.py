"""Shared test helpers: random mixed pytrees, torch <-> JAX conversion, tree comparison.

JAX runs in float64 (``jax_enable_x64``) for every test module, so that optax is a float64
reference for optax_torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch

try:  # JAX is a test dependency; the helpers below that need it import it lazily.
    import jax

    jax.config.update("jax_enable_x64", True)
except ImportError:  # pragma: no cover
    jax = None  # type: ignore[assignment]

import optax_torch.tree as otree


def _torchvision_ops_missing() -> bool:
    """Whether torchvision is installed but its compiled ops do not load (a registry wheel
    built for another torch: importing it then fails on ``torchvision::nms``). Probed in a
    subprocess, so that this process has not imported torchvision yet."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("torchvision") is None:
        return False
    probe = subprocess.run(
        [sys.executable, "-c", "import torchvision"], capture_output=True, text=True, timeout=300
    )
    return probe.returncode != 0 and "torchvision::nms" in probe.stderr


# timm imports torchvision (never its ops): with a torchvision whose ops do not load next to
# the CPU torch, define the two operator schemas it registers fake kernels for, so that
# ``import timm`` works (shared/notes/timm-and-classy-on-cpu-torch.md). Kept alive for the session.
_TORCHVISION_SHIM = None
if _torchvision_ops_missing():
    _TORCHVISION_SHIM = torch.library.Library("torchvision", "DEF")
    _TORCHVISION_SHIM.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TORCHVISION_SHIM.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


class Pair(NamedTuple):
    """A NamedTuple node for test pytrees (module level, so JAX and torch both know it)."""

    first: Any
    second: Any


# --------------------------------------------------------------------------------------------
# Random pytrees
# --------------------------------------------------------------------------------------------

# Leaf shapes used by the deterministic trees: 0-d, empty, vector, matrix, 3-d.
SHAPES = [(), (0,), (3,), (2, 3), (2, 1, 2), (4,), (1,)]


def rand_tensor(gen: torch.Generator, shape, dtype=torch.float64, low=-1.0, high=1.0):
    """Uniform values in ``[low, high)``, reproducible from ``gen``."""
    x = torch.rand(shape, generator=gen, dtype=torch.float64) * (high - low) + low
    return x.to(dtype)


def make_tree(
    seed: int = 0,
    dtypes=(torch.float32, torch.float64),
    with_none: bool = False,
    low: float = -1.0,
    high: float = 1.0,
):
    """A fixed mixed-shape nest of dict / list / tuple / NamedTuple with 0-d and empty leaves.

    Leaf dtypes cycle through ``dtypes``. With ``with_none`` two leaves are ``None``.
    """
    gen = torch.Generator().manual_seed(seed)
    k = iter(range(100))

    def leaf(shape):
        i = next(k)
        return rand_tensor(gen, shape, dtypes[i % len(dtypes)], low, high)

    tree = {
        "scalar": leaf(()),
        "empty": leaf((0,)),
        "dense": {"w": leaf((2, 3)), "b": leaf((3,))},
        "seq": [leaf((2, 1, 2)), (leaf((4,)), leaf((1,)))],
        "pair": Pair(first=leaf((3,)), second={"z": leaf((2, 2))}),
    }
    if with_none:
        tree["dense"]["b"] = None
        tree["pair"] = Pair(first=None, second=tree["pair"].second)
    return tree


def like_tree(template, seed: int, low: float = -1.0, high: float = 1.0):
    """A tree with ``template``'s structure, shapes and dtypes, and fresh values from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return otree.map(lambda x: rand_tensor(gen, x.shape, x.dtype, low, high), template)


def with_none_like(tree, none_template):
    """``tree`` with ``None`` wherever ``none_template`` has ``None``."""
    return otree.map(lambda t, x: None if x is None else t, tree, none_template)


# --------------------------------------------------------------------------------------------
# Generic structure walking (works for torch, JAX and numpy trees alike)
# --------------------------------------------------------------------------------------------


def _is_namedtuple(x) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def _is_masked_node(x) -> bool:
    return type(x).__name__ == "MaskedNode"


def to_plain(x):
    """A comparable nest: NamedTuple -> ("nt", {field: value}), dict -> ("dict", {...}),
    list/tuple -> ("seq", [...]), arrays -> numpy, optax ``MaskedNode``/``None`` -> ``None``."""
    if x is None or _is_masked_node(x):
        return None
    if _is_namedtuple(x):
        return ("nt", {k: to_plain(getattr(x, k)) for k in x._fields})
    if isinstance(x, dict):
        return ("dict", {k: to_plain(v) for k, v in x.items()})
    if isinstance(x, list | tuple):
        return ("seq", [to_plain(v) for v in x])
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype == torch.bfloat16:
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def _all_none(x) -> bool:
    if x is None:
        return True
    if isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str):
        vals = x[1].values() if isinstance(x[1], dict) else x[1]
        return all(_all_none(v) for v in vals)
    return False


def _compare(a, e, path: str, rtol: float, atol: float, check_dtype: bool, errors: list[str]):
    if e is None or a is None:
        # optax replaces a masked-out *subtree* by one MaskedNode; optax_torch keeps the subtree
        # with None leaves. Both mean "no state here".
        if _all_none(a) and _all_none(e):
            return
        if not (a is None and e is None):
            errors.append(
                f"{path}: {'None' if a is None else 'value'} vs expected "
                f"{'None' if e is None else 'value'}"
            )
        return
    if isinstance(e, tuple) and len(e) == 2 and isinstance(e[0], str):
        if not (isinstance(a, tuple) and len(a) == 2 and a[0] == e[0]):
            errors.append(
                f"{path}: node kind {a[0] if isinstance(a, tuple) else type(a)} vs {e[0]}"
            )
            return
        if e[0] == "seq":
            if len(a[1]) != len(e[1]):
                errors.append(f"{path}: length {len(a[1])} vs {len(e[1])}")
                return
            for i, (x, y) in enumerate(zip(a[1], e[1])):
                _compare(x, y, f"{path}[{i}]", rtol, atol, check_dtype, errors)
        else:
            if set(a[1]) != set(e[1]):
                errors.append(f"{path}: keys {sorted(map(str, a[1]))} vs {sorted(map(str, e[1]))}")
                return
            for k in e[1]:
                _compare(a[1][k], e[1][k], f"{path}.{k}", rtol, atol, check_dtype, errors)
        return
    a = np.asarray(a)
    e = np.asarray(e)
    if a.shape != e.shape:
        errors.append(f"{path}: shape {a.shape} vs expected {e.shape}")
        return
    if check_dtype and a.dtype != e.dtype:
        errors.append(f"{path}: dtype {a.dtype} vs expected {e.dtype}")
        return
    if a.dtype == bool or e.dtype == bool or np.issubdtype(e.dtype, np.integer):
        if not np.array_equal(a, e):
            errors.append(f"{path}: {a} vs expected {e}")
        return
    # complex values compare as complex (np.allclose on complex compares |a - e|)
    wide = np.complex128 if np.iscomplexobj(a) or np.iscomplexobj(e) else np.float64
    af = a.astype(wide)
    ef = e.astype(wide)
    if not np.allclose(af, ef, rtol=rtol, atol=atol, equal_nan=True):
        diff = np.abs(af - ef)
        finite = diff[np.isfinite(diff)]
        worst = finite.max() if finite.size else float("nan")
        bad = int((~np.isclose(af, ef, rtol=rtol, atol=atol, equal_nan=True)).sum())
        errors.append(
            f"{path}: {bad}/{af.size} differ, max finite abs diff {worst:.3e} "
            f"(rtol={rtol}, atol={atol})\n"
            f"   actual={af.ravel()[:6]}\n   expected={ef.ravel()[:6]}"
        )


def assert_trees_close(
    actual, expected, rtol: float = 1e-7, atol: float = 0.0, check_dtype: bool = False
):
    """Asserts two nests (torch / JAX / numpy, any mix) have the same structure, node kinds
    (NamedTuple field names, dict keys), ``None`` positions and shapes, and close values."""
    errors: list[str] = []
    _compare(to_plain(actual), to_plain(expected), "tree", rtol, atol, check_dtype, errors)
    if errors:
        raise AssertionError("trees differ:\n" + "\n".join(errors[:20]))


def assert_trees_equal(actual, expected, check_dtype: bool = True):
    """Bitwise equality (NaNs at the same places count as equal)."""
    assert_trees_close(actual, expected, rtol=0.0, atol=0.0, check_dtype=check_dtype)


def assert_same_dtypes(actual, expected):
    """Every tensor leaf of ``actual`` has the dtype of the matching leaf of ``expected``."""
    a, sa = otree.flatten(actual)
    e, se = otree.flatten(expected)
    assert sa == se, f"structure {sa} vs {se}"
    for i, (x, y) in enumerate(zip(a, e)):
        assert (x is None) == (y is None), f"leaf {i}: None mismatch"
        if x is not None:
            assert x.dtype == y.dtype, f"leaf {i}: dtype {x.dtype} vs {y.dtype}"


# --------------------------------------------------------------------------------------------
# torch <-> JAX
# --------------------------------------------------------------------------------------------


def _map_containers(tree, leaf_fn):
    """Rebuilds ``tree``'s containers (NamedTuple, dict, list, tuple; ``None`` kept) around
    ``leaf_fn`` applied to every other leaf."""

    def conv(x):
        if x is None:
            return None
        if _is_namedtuple(x):
            return type(x)(*(conv(v) for v in x))
        if isinstance(x, dict):
            return {k: conv(v) for k, v in x.items()}
        if isinstance(x, list):
            return [conv(v) for v in x]
        if isinstance(x, tuple):
            return tuple(conv(v) for v in x)
        return leaf_fn(x)

    return conv(tree)


def to_jax(tree):
    """Converts a torch pytree (tensors, ``None``, containers) to the same JAX pytree."""
    import jax.numpy as jnp

    return _map_containers(
        tree,
        lambda x: jnp.asarray(x.detach().cpu().numpy()) if isinstance(x, torch.Tensor) else x,
    )


def to_torch(tree):
    """Converts a JAX / numpy pytree to torch tensors (containers kept)."""
    return _map_containers(tree, lambda x: torch.from_numpy(np.array(x)))


def clone_tree(tree):
    """A deep copy of every tensor in any nest (containers rebuilt)."""
    return otree.map(lambda x: x.clone(), tree)


def tensor_versions(obj) -> list[int]:
    """The ``_version`` counters of every tensor in ``obj`` (any nest), in walking order."""
    out: list[int] = []

    def walk(x):
        if isinstance(x, torch.Tensor):
            out.append(x._version)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list | tuple):
            for v in x:
                walk(v)

    walk(obj)
    return out


def all_tensors(obj) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []

    def walk(x):
        if isinstance(x, torch.Tensor):
            out.append(x)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list | tuple):
            for v in x:
                walk(v)

    walk(obj)
    return out


def numpy_map(f: Callable, *trees):
    """``f`` over the numpy versions of matching leaves of torch trees (``None`` propagates)."""
    flats = [otree.flatten(t) for t in trees]
    spec = flats[0][1]
    out = []
    for xs in zip(*(fl[0] for fl in flats)):
        if any(x is None for x in xs):
            out.append(None)
        else:
            out.append(f(*(x.detach().numpy() for x in xs)))
    return otree.unflatten(spec, out)


@pytest.fixture
def per_leaf(monkeypatch):
    """Forces ``optax_torch.tree`` onto its per-tensor path (the one used under compile/vmap)."""
    monkeypatch.setattr(otree, "_use_foreach", lambda: False)
    assert otree._backend() is otree._PerLeaf


@pytest.fixture(params=["foreach", "per_leaf"])
def tree_backend(request, monkeypatch):
    """Runs a test once with the multi-tensor (eager) path and once with the per-tensor path."""
    if request.param == "per_leaf":
        monkeypatch.setattr(otree, "_use_foreach", lambda: False)
        assert otree._backend() is otree._PerLeaf
    else:
        assert otree._backend() is otree._Foreach
    return request.param


__all__ = [
    "Pair",
    "all_tensors",
    "assert_same_dtypes",
    "assert_trees_close",
    "assert_trees_equal",
    "clone_tree",
    "like_tree",
    "make_tree",
    "numpy_map",
    "rand_tensor",
    "tensor_versions",
    "to_jax",
    "to_plain",
    "to_torch",
    "with_none_like",
]
