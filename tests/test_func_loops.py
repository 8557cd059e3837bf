"""Functional training loops: ``torch.func.functional_call`` + ``grad`` / ``grad_and_value`` +
``tx.update`` + ``optax_torch.apply_updates``, with the params from ``model.named_parameters()``
and the buffers (BatchNorm in train mode: running statistics and batch counter) carried
alongside as an auxiliary output.

The functional loop equals training the module itself, float64, several steps: with
``torch.optim`` (the chain the ``compat.torch_optim`` drop-in runs for that optimizer) and with
``TorchOptimizer`` over the same transformation; parameters, buffers and losses agree.
"""

from __future__ import annotations

import copy

import pytest
import torch
from catalogue import torch_optim_chain
from torch.func import functional_call, grad, grad_and_value

import optax_torch as otx
from optax_torch.wrappers import TorchOptimizer

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.(script|interface)` is deprecated")

STEPS = 4
RTOL, ATOL = 1e-12, 1e-14


def _model() -> torch.nn.Module:
    # No bias before BatchNorm: its gradient is 0 up to rounding, which Adam-like steps turn
    # into O(lr) differences between two ways of rounding.
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(3, 6, bias=False),
        torch.nn.BatchNorm1d(6),
        torch.nn.Tanh(),
        torch.nn.Linear(6, 2),
    ).double()


def _batch(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + k)
    x = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(8, 2, generator=gen, dtype=torch.float64)
    return x, y


def functional_train(model: torch.nn.Module, tx, how: str = "grad_and_value"):
    """The functional loop: the module is only a function of ``(params, buffers)`` here."""
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}

    def loss_fn(params, buffers, x, y):
        # BatchNorm updates its running statistics in place: on copies made inside the
        # transformed function (mutating a tensor captured from outside grad is an error)
        buffers = {k: v.clone() for k, v in buffers.items()}
        out = functional_call(model, (params, buffers), (x,))
        loss = torch.nn.functional.mse_loss(out, y)
        return loss, (loss, buffers)

    state = tx.init(params)
    losses = []
    for k in range(STEPS):
        x, y = _batch(k)
        if how == "grad_and_value":
            grads, (loss, (_, buffers)) = grad_and_value(loss_fn, has_aux=True)(
                params, buffers, x, y
            )
        else:
            grads, (loss, buffers) = grad(loss_fn, has_aux=True)(params, buffers, x, y)
        updates, state = tx.update(grads, state, params)
        params = otx.apply_updates(params, updates)
        losses.append(loss.detach())
    return params, buffers, torch.stack(losses)


def module_train(model: torch.nn.Module, opt: torch.optim.Optimizer):
    losses = []
    for k in range(STEPS):
        x, y = _batch(k)
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return torch.stack(losses)


def _compare(model, params, buffers, losses, ref_model, ref_losses):
    torch.testing.assert_close(losses, ref_losses, rtol=RTOL, atol=ATOL)
    for name, p in ref_model.named_parameters():
        torch.testing.assert_close(params[name], p.detach(), rtol=RTOL, atol=ATOL)
    ref_buffers = dict(ref_model.named_buffers())
    assert (
        set(buffers)
        == set(ref_buffers)
        == {
            "1.running_mean",
            "1.running_var",
            "1.num_batches_tracked",
        }
    )
    for name, b in ref_buffers.items():
        torch.testing.assert_close(buffers[name], b, rtol=RTOL, atol=ATOL)
    assert int(buffers["1.num_batches_tracked"]) == STEPS
    # the trained function in eval mode (running statistics used) equals the trained module
    x, _ = _batch(99)
    model.eval()
    ref_model.eval()
    out = functional_call(model, (params, buffers), (x,))
    torch.testing.assert_close(out, ref_model(x).detach(), rtol=RTOL, atol=ATOL)


TORCH_OPTIM_CASES = {
    "SGD": dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "Adam": dict(lr=0.05, weight_decay=0.01),
    "AdamW": dict(lr=0.05, weight_decay=0.1),
    "RMSprop": dict(lr=0.01, momentum=0.5, centered=True),
    "Adagrad": dict(lr=0.1),
}


@pytest.mark.parametrize("how", ["grad", "grad_and_value"])
@pytest.mark.parametrize("name", sorted(TORCH_OPTIM_CASES))
def test_functional_loop_equals_torch_optim(name, how):
    """The functional loop with the chain of ``compat.torch_optim.<name>`` == ``torch.optim.<name>``
    stepping the module (parameters, BatchNorm buffers, losses)."""
    kwargs = TORCH_OPTIM_CASES[name]
    model = _model()
    ref_model = copy.deepcopy(model)
    model.train()
    params, buffers, losses = functional_train(model, torch_optim_chain(name, **kwargs), how)
    ref_losses = module_train(
        ref_model, getattr(torch.optim, name)(ref_model.parameters(), **kwargs)
    )
    _compare(model, params, buffers, losses, ref_model, ref_losses)


FUNCTIONAL_TXS = {
    "adamw": lambda: otx.adamw(0.05, weight_decay=0.1),
    "sgd_nesterov": lambda: otx.sgd(0.1, momentum=0.9, nesterov=True),
    "lamb": lambda: otx.lamb(0.05, weight_decay=0.01),
    "clip_adam": lambda: otx.chain(otx.clip_by_global_norm(0.5), otx.adam(0.05)),
    "lion": lambda: otx.lion(0.01, weight_decay=0.1),
}


@pytest.mark.parametrize("name", sorted(FUNCTIONAL_TXS))
def test_functional_loop_equals_torch_optimizer(name):
    """The functional loop == ``TorchOptimizer(model.parameters(), tx)`` on the module."""
    model = _model()
    ref_model = copy.deepcopy(model)
    params, buffers, losses = functional_train(model, FUNCTIONAL_TXS[name]())
    opt = TorchOptimizer(ref_model.parameters(), FUNCTIONAL_TXS[name]())
    ref_losses = module_train(ref_model, opt)
    _compare(model, params, buffers, losses, ref_model, ref_losses)


def test_functional_loop_leaves_the_module_untouched():
    """The module's own parameters and buffers are only read (for their initial values)."""
    model = _model()
    before = copy.deepcopy(model.state_dict())
    functional_train(model, otx.adam(0.1))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_vmapped_functional_loop_over_model_copies():
    """The same loop vmapped over 3 initialisations of the model (an ensemble), BatchNorm
    buffers batched too: member i == the loop on initialisation i alone."""
    model = _model()
    inits = []
    for seed in range(3):
        torch.manual_seed(seed)
        m = _model()
        for p in m.parameters():
            torch.nn.init.normal_(p, std=0.5)
        inits.append({k: v.detach().clone() for k, v in m.named_parameters()})
    buffers0 = {k: v.detach().clone() for k, v in model.named_buffers()}
    tx = otx.adam(0.05)

    def loss_fn(params, buffers, x, y):
        buffers = {k: v.clone() for k, v in buffers.items()}
        out = functional_call(model, (params, buffers), (x,))
        return torch.nn.functional.mse_loss(out, y), buffers

    def step(params, buffers, state, x, y):
        grads, buffers = grad(loss_fn, has_aux=True)(params, buffers, x, y)
        updates, state = tx.update(grads, state, params)
        return otx.apply_updates(params, updates), buffers, state

    stacked = {k: torch.stack([p[k] for p in inits]) for k in inits[0]}
    buffers = {k: torch.stack([v] * 3) for k, v in buffers0.items()}
    state = torch.func.vmap(tx.init)(stacked)
    params = stacked
    vstep = torch.func.vmap(step, in_dims=(0, 0, 0, None, None))
    for k in range(STEPS):
        params, buffers, state = vstep(params, buffers, state, *_batch(k))
    for i in range(3):
        p_i, b_i, s_i = inits[i], dict(buffers0), tx.init(inits[i])
        for k in range(STEPS):
            p_i, b_i, s_i = step(p_i, b_i, s_i, *_batch(k))
        for name in p_i:
            torch.testing.assert_close(params[name][i], p_i[name], rtol=RTOL, atol=ATOL)
        for name in b_i:
            torch.testing.assert_close(buffers[name][i], b_i[name], rtol=RTOL, atol=ATOL)
