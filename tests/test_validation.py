"""Constructors of the core transformations and optimizers validate their hyperparameters at
construction: ``ValueError`` naming the argument and the value (the families added for optax parity
test theirs in their own files). Tensors and schedules are not checked (they may be traced)."""

from __future__ import annotations

import math

import pytest
import torch

import optax_torch as otx

NAN = math.nan

BAD = [
    (lambda: otx.scale_by_adam(b1=1.0), "b1"),
    (lambda: otx.scale_by_adam(b2=-0.1), "b2"),
    (lambda: otx.scale_by_adam(eps=-1e-8), "eps"),
    (lambda: otx.scale_by_adam(eps=NAN), "eps"),
    (lambda: otx.scale_by_adam(eps_root=-1.0), "eps_root"),
    (lambda: otx.adam(NAN), "learning_rate"),
    (lambda: otx.adamw(1e-3, b1=1.5), "b1"),
    (lambda: otx.adamw(1e-3, weight_decay=NAN), "weight_decay"),
    (lambda: otx.scale_by_amsgrad(b2=1.0), "b2"),
    (lambda: otx.scale_by_nadam(momentum_decay=-1.0), "momentum_decay"),
    (lambda: otx.scale_by_rms(decay=1.0), "decay"),
    (lambda: otx.scale_by_rms(initial_scale=-1.0), "initial_scale"),
    (lambda: otx.scale_by_stddev(eps=-1.0), "eps"),
    (lambda: otx.scale_by_rss(initial_accumulator_value=-0.1), "initial_accumulator_value"),
    (lambda: otx.adagrad(0.1, eps=NAN), "eps"),
    (lambda: otx.sgd(0.1, momentum=-0.9), "momentum"),
    (lambda: otx.ema(1.5), "decay"),
    (lambda: otx.clip(-1.0), "max_delta"),
    (lambda: otx.clip_by_global_norm(NAN), "max_norm"),
    (lambda: otx.scale(math.inf), "step_size"),
    (lambda: otx.scale_by_learning_rate(NAN), "learning_rate"),
    (lambda: otx.rmsprop(0.1, decay=2.0), "decay"),
]


@pytest.mark.parametrize(("build", "name"), BAD, ids=[f"{i}-{n}" for i, (_, n) in enumerate(BAD)])
def test_bad_hyperparameters_raise_at_construction(build, name):
    with pytest.raises(ValueError, match=f"{name} must be .*got {name}="):
        build()


def test_good_edge_values_and_unchecked_kinds_are_accepted():
    otx.scale_by_adam(b1=0.0, b2=0.0, eps=0.0)
    otx.sgd(-0.1)  # a negative learning rate is gradient ascent, legal as in optax
    otx.ema(1.0)
    otx.add_decayed_weights(-1e-3)  # fromage decays with a negative coefficient
    otx.scale_by_adam(b1=torch.tensor(1.5))  # tensors (possibly traced) are not checked
    otx.adam(lambda count: 0.1)  # schedules are not called at construction
