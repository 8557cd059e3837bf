"""The laws behind the marks that let the compiled step pack parameters into buffers.

* ``elementwise``: the update of a tree, concatenated, equals the update of the concatenated
  tree (one flat leaf) — ``TorchOptimizer(compile=True)`` then runs the chain on one flat
  buffer per (device, dtype).
* ``leafwise``: the update of a tree, leaf by leaf, equals the update of each one-leaf tree —
  the compiled step then runs it ``vmap``-ed over stacked buffers of equal shapes.

Checked for every marked entry of the catalogue, over several float64 steps, on a tree of
matrices large enough to be factored (Adafactor) and vectors; a wrong mark would make the
compiled step silently compute something else.
"""

from __future__ import annotations

import pytest
import torch

import optax_torch as otx
from optax_torch.compat import timm as otimm
from tests.catalogue import LBFGS, OBJ_FN, VALUE, catalogue

CATALOGUE = catalogue()
SHAPES = [(130, 129), (7,), (129, 130), (5, 3), ()]
STEPS = 3


def _trees(seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64) for s in SHAPES]


def _extra(entry):
    if set(entry.needs) & {LBFGS, OBJ_FN}:
        return None
    return {"value": torch.tensor(1.5, dtype=torch.float64)} if VALUE in entry.needs else {}


def _run(tx, params, grads_per_step, extra):
    """The updates of ``STEPS`` steps (the params move by them)."""
    state = tx.init(params)
    out = []
    for grads in grads_per_step:
        updates, state = tx.update(grads, state, params, **extra)
        params = otx.apply_updates(params, updates)
        out.append(updates)
    return out


def _marked(mark):
    names = []
    for name, entry in sorted(CATALOGUE.items()):
        if entry.random or _extra(entry) is None:
            continue
        if mark(entry.build()):
            names.append(name)
    return names


LEAFWISE = _marked(otx.is_leafwise)
ELEMENTWISE = _marked(otx.is_elementwise)


def _dropin_chains():
    """``"<package>.<name>"`` -> a builder of the chain a drop-in runs for its param group."""
    from tests.test_compiled_dropins import DROPINS, KWARGS, NOT_COMPILED

    out = {}
    for name, cls in sorted(DROPINS.items()):
        if name in NOT_COMPILED:
            continue

        def build(cls=cls, name=name):
            opt = cls([torch.zeros(1, requires_grad=True)], **KWARGS.get(name, {}))
            return opt._call_factory(opt._group_hyperparams(opt.param_groups[0]))

        out[name] = build
    return out


DROPIN_CHAINS = _dropin_chains()
DROPIN_LEAFWISE = sorted(n for n, b in DROPIN_CHAINS.items() if otx.is_leafwise(b()))
DROPIN_ELEMENTWISE = sorted(n for n, b in DROPIN_CHAINS.items() if otx.is_elementwise(b()))


def test_the_marks_cover_the_optimizers_they_should():
    for name in ("adamw", "lamb", "adafactor", "sgd", "lion", "rmsprop"):
        assert name in LEAFWISE
    for name in ("adamw", "sgd", "lion", "rmsprop", "adagrad"):
        assert name in ELEMENTWISE
    assert "lamb" not in ELEMENTWISE and "adafactor" not in ELEMENTWISE
    # a global norm couples the leaves; a mask depends on their position
    assert not otx.is_leafwise(otx.chain(otx.clip_by_global_norm(1.0), otx.adamw(1e-3)))
    assert otx.is_elementwise(otx.chain(otx.clip_by_global_norm(1.0), otx.adamw(1e-3)))
    assert not otx.is_leafwise(otx.adamw(1e-3, mask=lambda p: [True] * len(p)))


def _leafwise_law(build, extra):
    params = _trees(0)
    grads = [_trees(1 + k) for k in range(STEPS)]
    whole = _run(build(), params, grads, extra)
    for i in range(len(SHAPES)):
        alone = _run(build(), [params[i]], [[g[i]] for g in grads], extra)
        for k in range(STEPS):
            torch.testing.assert_close(whole[k][i], alone[k][0], rtol=1e-10, atol=1e-12)


def _elementwise_law(build, extra):
    params = _trees(0)
    grads = [_trees(1 + k) for k in range(STEPS)]
    whole = _run(build(), params, grads, extra)

    def cat(xs):
        return [torch.cat([x.reshape(-1) for x in xs])]

    flat = _run(build(), cat(params), [cat(g) for g in grads], extra)
    for k in range(STEPS):
        torch.testing.assert_close(cat(whole[k])[0], flat[k][0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", LEAFWISE)
def test_leafwise_law(name):
    _leafwise_law(CATALOGUE[name].build, _extra(CATALOGUE[name]))


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_law(name):
    _elementwise_law(CATALOGUE[name].build, _extra(CATALOGUE[name]))


@pytest.mark.parametrize("name", DROPIN_LEAFWISE)
def test_leafwise_law_of_dropin_chains(name):
    _leafwise_law(DROPIN_CHAINS[name], {})


@pytest.mark.parametrize("name", DROPIN_ELEMENTWISE)
def test_elementwise_law_of_dropin_chains(name):
    _elementwise_law(DROPIN_CHAINS[name], {})


def test_an_rms_clipped_adam_is_leafwise_not_elementwise():
    """timm's AdamW with ``clipping_threshold`` clips each leaf's update RMS: per leaf."""
    opt = otimm.AdamWLegacy([torch.zeros(1, requires_grad=True)], clipping_threshold=1.0)
    for tx in (
        otx.scale_by_adam(clipping_threshold=1.0),
        otx.scale_by_amsgrad(clipping_threshold=1.0),
        opt._call_factory(opt._group_hyperparams(opt.param_groups[0])),
    ):
        assert otx.is_leafwise(tx) and not otx.is_elementwise(tx)
    assert otx.is_elementwise(otx.scale_by_adam()) and otx.is_elementwise(otx.scale_by_amsgrad())
