"""Hypothesis strategies for the fuzz tests (``tests/test_fuzz.py``).

* :func:`chains`: random transformations — a ``chain`` of 1 to 4 blocks, each a building block
  with random hyperparameters in its valid range (``clip``, ``clip_by_global_norm``,
  ``scale_by_adam``, ``add_decayed_weights``, ``scale_by_learning_rate``, ``trace``, ``ema``,
  ``scale_by_rms``, ``scale``, ``centralize``), an ``inject_hyperparams`` optimizer, an entry of
  the catalogue (``tests/catalogue.py``) or a wrapper around a smaller random chain (``masked``,
  ``apply_if_finite``, ``MultiSteps``). A :class:`Chain` prints as the Python code that builds it,
  so that a failing example is its own reproducer.
* :func:`problems`: random pytrees for a chain — dict roots holding nested dicts / lists / tuples /
  NamedTuples, leaves of 0 to 3 dims (0-d and empty included) in float16 / bfloat16 / float32 /
  float64 (and complex64 / complex128 where every block of the chain supports complex params),
  ``None`` params, and gradient sequences with one more ``None`` gradient at one step.

The profiles (``fuzz-ci``, ``fuzz-long``) are registered here; ``OPTAX_TORCH_FUZZ=long`` selects
the long one (see ``docs/fuzzing.md``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from catalogue import catalogue
from conftest import Pair
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import optax_torch as otx
from optax_torch import tree as otree

# --------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------

_COMMON = dict(
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
# CI: deterministic and short (the whole of test_fuzz.py in well under a minute on 2 cores).
settings.register_profile("fuzz-ci", max_examples=1, derandomize=True, database=None, **_COMMON)
# Long: random, failures saved in .hypothesis/ (replayed first by the next run).
settings.register_profile("fuzz-long", max_examples=1, derandomize=False, **_COMMON)

PROFILE = "fuzz-long" if os.environ.get("OPTAX_TORCH_FUZZ", "") == "long" else "fuzz-ci"
LONG = PROFILE == "fuzz-long"
# Examples per law in the long profile, relative to CI (OPTAX_TORCH_FUZZ_SCALE overrides).
LONG_SCALE = int(os.environ.get("OPTAX_TORCH_FUZZ_SCALE", "100"))


def fuzz_settings(ci_examples: int, long_examples: int | None = None) -> settings:
    """The active profile with a per-law example count."""
    n = ci_examples if not LONG else (long_examples or ci_examples * LONG_SCALE)
    return settings(settings.get_profile(PROFILE), max_examples=n)


# --------------------------------------------------------------------------------------------
# Random chains
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chain:
    """A random transformation: ``code`` is the expression that builds it (its repr), ``make``
    builds it. Flags: which params it supports and which laws hold for it."""

    code: str
    make: Callable[[], Any]
    complex_ok: bool = True
    compile_ok: bool = True
    random: bool = False
    mixed_half_ok: bool = True  # float16 and bfloat16 params in one tree

    def __repr__(self) -> str:
        return self.code

    def build(self) -> Any:
        return self.make()


def _fmt(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else repr(x)


def _call(name: str, factory: Callable[..., Any], *args: Any, **kwargs: Any) -> Chain:
    text = ", ".join([_fmt(a) for a in args] + [f"{k}={_fmt(v)}" for k, v in kwargs.items()])
    return Chain(f"{name}({text})", lambda: factory(*args, **kwargs))


def _no_complex(c: Chain) -> Chain:
    return Chain(c.code, c.make, complex_ok=False)


_unit = st.floats(0.0, 0.999, allow_nan=False).map(lambda x: round(x, 3))  # a decay in [0, 1)
_positive = st.sampled_from([1e-3, 1e-2, 0.1, 0.5, 1.0, 2.0, 10.0])
_eps = st.sampled_from([1e-12, 1e-8, 1e-6, 1e-3])
_lr = st.sampled_from([1e-4, 1e-3, 1e-2, 0.1, 1.0])


@st.composite
def _adam(draw) -> Chain:
    return _call(
        "otx.scale_by_adam",
        otx.scale_by_adam,
        b1=draw(_unit),
        b2=draw(_unit),
        eps=draw(_eps),
        eps_root=draw(st.sampled_from([0.0, 1e-8])),
        nesterov=draw(st.booleans()),
    )


@st.composite
def _learning_rate(draw) -> Chain:
    lr = draw(_lr)
    if draw(st.booleans()):
        return _call("otx.scale_by_learning_rate", otx.scale_by_learning_rate, lr)
    steps = draw(st.integers(1, 10))
    sched = otx.cosine_decay_schedule(lr, steps)
    return Chain(
        f"otx.scale_by_learning_rate(otx.cosine_decay_schedule({lr}, {steps}))",
        lambda: otx.scale_by_learning_rate(sched),
    )


@st.composite
def _injected(draw) -> Chain:
    lr = draw(_lr)
    if draw(st.booleans()):
        b1, b2 = draw(_unit), draw(_unit)
        return Chain(
            f"otx.inject_hyperparams(otx.adamw)(learning_rate={lr}, b1={b1}, b2={b2})",
            lambda: otx.inject_hyperparams(otx.adamw)(learning_rate=lr, b1=b1, b2=b2),
        )
    momentum = draw(_unit)
    return Chain(
        f"otx.inject_hyperparams(otx.sgd)(learning_rate={lr}, momentum={momentum})",
        lambda: otx.inject_hyperparams(otx.sgd)(learning_rate=lr, momentum=momentum),
    )


_building_blocks: list[st.SearchStrategy[Chain]] = [
    # clip: no complex (torch.clamp has no complex kernel; optax's jnp.clip neither)
    st.builds(lambda m: _no_complex(_call("otx.clip", otx.clip, m)), _positive),
    st.builds(lambda m: _call("otx.clip_by_global_norm", otx.clip_by_global_norm, m), _positive),
    _adam(),
    st.builds(
        lambda w: _call("otx.add_decayed_weights", otx.add_decayed_weights, w),
        st.sampled_from([0.0, 1e-4, 1e-2, 0.5]),
    ),
    _learning_rate(),
    st.builds(lambda d, n: _call("otx.trace", otx.trace, d, nesterov=n), _unit, st.booleans()),
    st.builds(lambda d, b: _call("otx.ema", otx.ema, d, debias=b), _unit, st.booleans()),
    st.builds(lambda d, e: _call("otx.scale_by_rms", otx.scale_by_rms, d, e), _unit, _eps),
    st.builds(lambda s: _call("otx.scale", otx.scale, s), st.sampled_from([-2.0, -0.5, 0.5, 1.0])),
    st.just(_call("otx.centralize", otx.centralize)),
    _injected(),
]

# Catalogue entries whose update needs nothing but (updates, state, params).
_CATALOGUE = catalogue()
CATALOGUE_NAMES = sorted(n for n, e in _CATALOGUE.items() if not e.needs)


# Entries that fail on complex params although catalogue.py says complex_ok: known bugs,
# skipped here with their reason (reproducers in docs/fuzzing.md).
# scale_by_adafactor_step_size on {'a': tensor(0.94+0.42j)}: "the state changed structure", a 0-d
# state leaf float32 at init becomes complex64 after the first update.
_NO_COMPLEX_TOO: set[str] = {"scale_by_adafactor_step_size"}
# Chains (by a name in their code) that the adapter law skips: none at present.
ADAPTER_SKIP: tuple[str, ...] = ()
_NO_MIXED_HALF: set[str] = set()  # entries that take no float16 and bfloat16 params together


def _catalogue_chain(name: str) -> Chain:
    entry = _CATALOGUE[name]
    return Chain(
        f"catalogue()[{name!r}].build()",
        entry.build,
        complex_ok=entry.complex_ok and name not in _NO_COMPLEX_TOO,
        mixed_half_ok=name not in _NO_MIXED_HALF,
        compile_ok=not entry.no_compile,
        random=entry.random,
    )


def _combine(parts: list[Chain]) -> Chain:
    if len(parts) == 1:
        return parts[0]
    return Chain(
        "otx.chain(" + ", ".join(p.code for p in parts) + ")",
        lambda: otx.chain(*(p.build() for p in parts)),
        complex_ok=all(p.complex_ok for p in parts),
        compile_ok=all(p.compile_ok for p in parts),
        random=any(p.random for p in parts),
        mixed_half_ok=all(p.mixed_half_ok for p in parts),
    )


def matrix_mask(params: Any) -> Any:
    """``True`` on leaves of 2 dims or more (a typical weight-decay mask)."""
    return otree.map(lambda x: x.ndim >= 2, params)


def vector_mask(params: Any) -> Any:
    """``True`` on leaves of fewer than 2 dims."""
    return otree.map(lambda x: x.ndim < 2, params)


_MASKS = {"matrix_mask": matrix_mask, "vector_mask": vector_mask}


def _wrap(inner: Chain, kind: str, arg: Any) -> Chain:
    if kind == "masked":
        mask = _MASKS[arg]
        code, make = f"otx.masked({inner.code}, {arg})", lambda: otx.masked(inner.build(), mask)
    elif kind == "apply_if_finite":
        code = f"otx.apply_if_finite({inner.code}, {arg})"
        make = lambda: otx.apply_if_finite(inner.build(), arg)  # noqa: E731
    else:
        code = f"otx.MultiSteps({inner.code}, {arg}).gradient_transformation()"
        make = lambda: otx.MultiSteps(inner.build(), arg).gradient_transformation()  # noqa: E731
    return Chain(code, make, inner.complex_ok, inner.compile_ok, inner.random, inner.mixed_half_ok)


def _blocks(depth: int) -> st.SearchStrategy[Chain]:
    leaf = st.one_of(
        st.one_of(*_building_blocks),
        st.sampled_from(CATALOGUE_NAMES).map(_catalogue_chain),
    )
    if depth == 0:
        return leaf
    inner = chains(depth=depth - 1, max_blocks=2)
    wrapped = st.one_of(
        st.tuples(inner, st.just("masked"), st.sampled_from(sorted(_MASKS))),
        st.tuples(inner, st.just("apply_if_finite"), st.integers(1, 3)),
        st.tuples(inner, st.just("multi_steps"), st.integers(1, 3)),
    ).map(lambda t: _wrap(*t))
    return st.one_of(leaf, leaf, wrapped)


def chains(depth: int = 1, max_blocks: int = 4) -> st.SearchStrategy[Chain]:
    """A chain of 1 to ``max_blocks`` random blocks; wrappers nest ``depth`` deep at most."""
    return st.lists(_blocks(depth), min_size=1, max_size=max_blocks).map(_combine)


# --------------------------------------------------------------------------------------------
# Random pytrees
# --------------------------------------------------------------------------------------------

REAL = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
COMPLEX = (torch.complex64, torch.complex128)


@dataclass(frozen=True)
class LeafSpec:
    shape: tuple[int, ...]
    dtype: torch.dtype
    none: bool


def leaf_specs(dtypes: tuple[torch.dtype, ...]) -> st.SearchStrategy[LeafSpec]:
    return st.builds(
        LeafSpec,
        shape=st.lists(st.integers(0, 3), min_size=0, max_size=3).map(tuple),
        dtype=st.sampled_from(dtypes),
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


def spec_trees(dtypes: tuple[torch.dtype, ...], max_leaves: int = 6):
    return st.dictionaries(
        _keys,
        st.recursive(leaf_specs(dtypes), _nodes, max_leaves=max_leaves),
        min_size=1,
        max_size=3,
    )


def _rand(gen: torch.Generator, shape, dtype: torch.dtype, scale: float) -> torch.Tensor:
    x = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * scale
    if dtype.is_complex:
        y = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * scale
        return torch.complex(x, y).to(dtype)
    return x.to(dtype)


def _materialize(spec: Any, gen: torch.Generator, scale: float) -> Any:
    if isinstance(spec, LeafSpec):
        return None if spec.none else _rand(gen, spec.shape, spec.dtype, scale)
    if isinstance(spec, Pair):
        return Pair(*(_materialize(s, gen, scale) for s in spec))
    if isinstance(spec, dict):
        return {k: _materialize(v, gen, scale) for k, v in spec.items()}
    if isinstance(spec, list):
        return [_materialize(v, gen, scale) for v in spec]
    return tuple(_materialize(v, gen, scale) for v in spec)


@dataclass
class Problem:
    """Params and a sequence of gradients (``None`` where params are ``None``, and at one more
    place in one of the steps)."""

    params: Any
    grads: list[Any]
    seed: int
    scale: float

    def __repr__(self) -> str:
        leaves, _ = otree.flatten(self.params)
        desc = [None if x is None else (tuple(x.shape), str(x.dtype)) for x in leaves]
        return f"Problem(seed={self.seed}, scale={self.scale}, leaves={desc})"


@st.composite
def problems(
    draw,
    chain: Chain | None = None,
    steps: int = 3,
    max_leaves: int = 6,
    real: tuple[torch.dtype, ...] = REAL,
) -> Problem:
    """Random params and ``steps`` gradients for ``chain`` (complex leaves only where it allows)."""
    if chain is not None and not chain.mixed_half_ok:
        real = tuple(d for d in real if d != torch.float16)
    dtypes = real + (COMPLEX if chain is None or chain.complex_ok else ())
    spec = draw(spec_trees(dtypes, max_leaves))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([1e-3, 1.0, 30.0]))
    gen = torch.Generator().manual_seed(seed)
    params = _materialize(spec, gen, 1.0)
    grads = [otree.map(lambda p: _rand(gen, p.shape, p.dtype, scale), params) for _ in range(steps)]
    leaves, treedef = otree.flatten(grads[-1])
    present = [i for i, x in enumerate(leaves) if x is not None]
    if len(present) > 1:
        k = draw(st.integers(0, steps - 1))
        leaves, treedef = otree.flatten(grads[k])
        leaves[draw(st.sampled_from(present))] = None
        grads[k] = otree.unflatten(treedef, leaves)
    return Problem(params, grads, seed, scale)


@st.composite
def chains_and_problems(
    draw, steps: int = 3, real: tuple[torch.dtype, ...] = REAL, **chain_kwargs: Any
) -> tuple[Chain, Problem]:
    chain = draw(chains(**chain_kwargs))
    return chain, draw(problems(chain, steps, real=real))
