"""torch.optim algorithms expressed as optax_torch chains (functional path), step by step.

A small Conv1d + Linear model, deterministic data, 20+ steps. ``torch.optim`` trains a copy of the
model; the same gradients (computed on that copy) are fed to ``tx.update`` and the parameters of
both runs are compared after every step: float64 at atol 1e-12, and once in float32 at ~1e-6.
"""

from __future__ import annotations

import copy

import pytest
import torch

import optax_torch as otx

STEPS = 25


def _model(dtype):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv1d(2, 3, kernel_size=3),
        torch.nn.Tanh(),
        torch.nn.Flatten(),
        torch.nn.Linear(12, 4),
        torch.nn.Tanh(),
        torch.nn.Linear(4, 1),
    ).to(dtype)


def _batch(k: int, dtype):
    gen = torch.Generator().manual_seed(k)
    x = torch.randn(8, 2, 6, generator=gen, dtype=torch.float64).to(dtype)
    y = torch.randn(8, 1, generator=gen, dtype=torch.float64).to(dtype)
    return x, y


def run_against_torch(make_opt, tx, dtype=torch.float64, steps=STEPS, rtol=0.0, atol=1e-12):
    ref = _model(dtype)
    params = {n: p.detach().clone() for n, p in ref.named_parameters()}
    opt = make_opt(ref.parameters())
    state = tx.init(params)
    for k in range(steps):
        x, y = _batch(k, dtype)
        opt.zero_grad()
        torch.nn.functional.mse_loss(ref(x), y).backward()
        grads = {n: p.grad.detach().clone() for n, p in ref.named_parameters()}
        opt.step()
        updates, state = tx.update(grads, state, params)
        params = otx.apply_updates(params, updates)
        for n, p in ref.named_parameters():
            assert params[n].dtype == p.dtype
            torch.testing.assert_close(
                params[n],
                p.detach(),
                rtol=rtol,
                atol=atol,
                msg=lambda m, n=n, k=k: f"step {k}, {n}: {m}",
            )
    # the run moved the parameters: the comparison is not vacuous
    start = dict(_model(dtype).named_parameters())
    assert max((params[n] - start[n]).abs().max().item() for n in params) > 1e-4


LR = 0.05
WD = 0.02


def _adagrad_schedule(lr, lr_decay):
    # the count as float64: an int32 tensor times a Python float would be float32 in torch
    return lambda count: lr / (1 + count.to(torch.float64) * lr_decay)


CASES = {
    # SGD: t = g + wd p ; b = m b + t ; (nesterov: t + m b) ; p -= lr * that
    "sgd": (lambda p: torch.optim.SGD(p, lr=LR), lambda: otx.sgd(LR)),
    "sgd_momentum": (
        lambda p: torch.optim.SGD(p, lr=LR, momentum=0.9),
        lambda: otx.sgd(LR, momentum=0.9),
    ),
    "sgd_nesterov_wd": (
        lambda p: torch.optim.SGD(p, lr=LR, momentum=0.9, nesterov=True, weight_decay=WD),
        lambda: otx.chain(
            otx.add_decayed_weights(WD),
            otx.trace(0.9, nesterov=True),
            otx.scale_by_learning_rate(LR),
        ),
    ),
    "sgd_momentum_wd": (
        lambda p: torch.optim.SGD(p, lr=LR, momentum=0.5, weight_decay=WD),
        lambda: otx.chain(
            otx.add_decayed_weights(WD), otx.trace(0.5), otx.scale_by_learning_rate(LR)
        ),
    ),
    # Adam (weight decay = L2 added to the gradient before the moments)
    "adam": (
        lambda p: torch.optim.Adam(p, lr=LR, betas=(0.8, 0.95), eps=1e-6),
        lambda: otx.adam(LR, b1=0.8, b2=0.95, eps=1e-6),
    ),
    "adam_l2": (
        lambda p: torch.optim.Adam(p, lr=LR, weight_decay=WD),
        lambda: otx.chain(
            otx.add_decayed_weights(WD), otx.scale_by_adam(), otx.scale_by_learning_rate(LR)
        ),
    ),
    "adam_amsgrad": (
        lambda p: torch.optim.Adam(p, lr=LR, betas=(0.9, 0.9), amsgrad=True, weight_decay=WD),
        lambda: otx.chain(
            otx.add_decayed_weights(WD),
            otx.scale_by_amsgrad(0.9, 0.9, debias_after_max=True),
            otx.scale_by_learning_rate(LR),
        ),
    ),
    # AdamW: decoupled decay p *= 1 - lr wd, the same step as adamw's -lr (adam + wd p)
    "adamw": (
        lambda p: torch.optim.AdamW(p, lr=LR, weight_decay=0.1),
        lambda: otx.adamw(LR, weight_decay=0.1),
    ),
    "adamw_amsgrad": (
        lambda p: torch.optim.AdamW(p, lr=LR, weight_decay=0.1, amsgrad=True),
        lambda: otx.chain(
            otx.scale_by_amsgrad(debias_after_max=True),
            otx.add_decayed_weights(0.1),
            otx.scale_by_learning_rate(LR),
        ),
    ),
    # NAdam with the momentum schedule (torch's form)
    "nadam": (
        lambda p: torch.optim.NAdam(p, lr=LR, momentum_decay=4e-3),
        lambda: otx.chain(otx.scale_by_nadam(momentum_decay=4e-3), otx.scale_by_learning_rate(LR)),
    ),
    "nadam_l2": (
        lambda p: torch.optim.NAdam(
            p, lr=LR, betas=(0.8, 0.99), weight_decay=WD, momentum_decay=0.01
        ),
        lambda: otx.chain(
            otx.add_decayed_weights(WD),
            otx.scale_by_nadam(0.8, 0.99, momentum_decay=0.01),
            otx.scale_by_learning_rate(LR),
        ),
    ),
    "nadam_decoupled": (
        lambda p: torch.optim.NAdam(p, lr=LR, weight_decay=0.1, decoupled_weight_decay=True),
        lambda: otx.chain(
            otx.scale_by_nadam(), otx.add_decayed_weights(0.1), otx.scale_by_learning_rate(LR)
        ),
    ),
    # RMSprop: eps outside the root; centred = stddev; momentum after the scaling, before lr
    "rmsprop": (
        lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-6),
        lambda: otx.chain(
            otx.scale_by_rms(0.9, 1e-6, eps_in_sqrt=False), otx.scale_by_learning_rate(0.01)
        ),
    ),
    "rmsprop_centered": (
        lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-3, centered=True),
        lambda: otx.chain(
            otx.scale_by_stddev(0.9, 1e-3, eps_in_sqrt=False), otx.scale_by_learning_rate(0.01)
        ),
    ),
    "rmsprop_momentum_wd": (
        lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.8, weight_decay=WD, centered=True),
        lambda: otx.chain(
            otx.add_decayed_weights(WD),
            otx.scale_by_stddev(0.99, 1e-8, eps_in_sqrt=False),
            otx.trace(0.8),
            otx.scale_by_learning_rate(0.01),
        ),
    ),
    # the alias: optax's rmsprop applies lr before the momentum, equal for a constant lr
    "rmsprop_alias_momentum": (
        lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-6, momentum=0.7),
        lambda: otx.rmsprop(0.01, decay=0.9, eps=1e-6, eps_in_sqrt=False, momentum=0.7),
    ),
    # Adagrad: eps outside the root; lr_decay as a schedule of the step count
    "adagrad": (
        lambda p: torch.optim.Adagrad(p, lr=0.1, initial_accumulator_value=0.1, eps=1e-10),
        lambda: otx.chain(
            otx.scale_by_rss(0.1, 1e-10, eps_in_sqrt=False), otx.scale_by_learning_rate(0.1)
        ),
    ),
    "adagrad_lr_decay_wd": (
        lambda p: torch.optim.Adagrad(
            p, lr=0.1, lr_decay=0.05, weight_decay=WD, initial_accumulator_value=0.0, eps=1e-10
        ),
        lambda: otx.chain(
            otx.add_decayed_weights(WD),
            otx.scale_by_rss(0.0, 1e-10, eps_in_sqrt=False),
            otx.scale_by_learning_rate(_adagrad_schedule(0.1, 0.05)),
        ),
    ),
}


@pytest.fixture
def float64_default_dtype():
    """torch.optim keeps scalar state (``step``, NAdam's ``mu_product``) in the *default* dtype:
    float32 unless the default is float64, and NAdam's float32 ``mu_product`` alone is a 4e-8
    relative error. optax_torch keeps it in float64, so compare with torch's float64 form."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_torch_optim_float64(name, float64_default_dtype):
    """Parameters equal torch.optim's after every step (float64, atol 1e-12)."""
    make_opt, make_tx = CASES[name]
    run_against_torch(make_opt, make_tx())


@pytest.mark.parametrize(
    "name",
    [
        "sgd_nesterov_wd",
        "adam_amsgrad",
        "adamw",
        "nadam",
        "rmsprop_momentum_wd",
        "adagrad_lr_decay_wd",
    ],
)
def test_matches_torch_optim_float32(name):
    """The same in float32 (both compute in float32; rounding differs slightly: ~1e-6)."""
    make_opt, make_tx = CASES[name]
    run_against_torch(make_opt, make_tx(), dtype=torch.float32, rtol=1e-5, atol=1e-6)


def test_adam_with_foreach_torch_implementation():
    """torch.optim.Adam(foreach=True) (the default on accelerators) is matched as well."""
    run_against_torch(
        lambda p: torch.optim.Adam(p, lr=LR, weight_decay=WD, foreach=True),
        otx.chain(otx.add_decayed_weights(WD), otx.scale_by_adam(), otx.scale_by_learning_rate(LR)),
    )


def test_lr_scheduler_equals_schedule():
    """torch's ExponentialLR on SGD = a schedule ``lr * gamma**count`` in scale_by_learning_rate."""
    gamma = 0.9
    ref = _model(torch.float64)
    params = {n: p.detach().clone() for n, p in ref.named_parameters()}
    opt = torch.optim.SGD(ref.parameters(), lr=LR, momentum=0.9)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma)
    tx = otx.chain(
        otx.trace(0.9),
        otx.scale_by_learning_rate(lambda c: LR * gamma ** c.to(torch.float64)),
    )
    state = tx.init(params)
    for k in range(STEPS):
        x, y = _batch(k, torch.float64)
        opt.zero_grad()
        torch.nn.functional.mse_loss(ref(x), y).backward()
        grads = {n: p.grad.detach().clone() for n, p in ref.named_parameters()}
        opt.step()
        sched.step()
        updates, state = tx.update(grads, state, params)
        params = otx.apply_updates(params, updates)
        for n, p in ref.named_parameters():
            torch.testing.assert_close(params[n], p.detach(), rtol=0, atol=1e-12)


def test_does_not_touch_the_module():
    """The functional path never writes into the tensors it is given (params are copies here,
    but apply_updates returns new tensors even for module parameters)."""
    model = _model(torch.float64)
    params = dict(model.named_parameters())
    before = copy.deepcopy({n: p.detach().clone() for n, p in params.items()})
    tx = otx.adam(0.1)
    state = tx.init(params)
    grads = {n: torch.ones_like(p) for n, p in params.items()}
    updates, state = tx.update(grads, state, params)
    new = otx.apply_updates({n: p.detach() for n, p in params.items()}, updates)
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n])
        assert not torch.equal(new[n], before[n])
