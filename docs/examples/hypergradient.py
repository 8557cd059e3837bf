"""Learn a learning rate by hypergradient descent.

The inner problem trains a small network for a few SGD-with-momentum steps; the outer problem
chooses the learning rate that minimises the validation loss after those steps. The
hypergradient d(validation loss) / d(log learning rate) flows through every unrolled ``update``
(``torch.func.grad`` of a function that runs the inner loop), and the log learning rate takes
Adam steps on it: an optimizer of optax_torch training a hyperparameter of another.

Run ``python docs/examples/hypergradient.py`` (``--quick`` for a few outer steps).
"""

from __future__ import annotations

import argparse
import math

import torch
from torch.func import functional_call, grad, grad_and_value

import optax_torch as otx

INNER_STEPS = 10


def make_data(seed: int, n: int = 128):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    w = torch.tensor([[1.0], [-2.0], [0.5], [0.0]], dtype=torch.float64)
    y = torch.tanh(x @ w) + 0.05 * torch.randn(n, 1, generator=gen, dtype=torch.float64)
    return x, y


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few outer steps only")
    parser.add_argument("--lr", type=float, default=1e-3, help="initial learning rate")
    args = parser.parse_args(argv)
    outer_steps = 15 if args.quick else 100

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)
    ).double()
    params0 = {k: v.detach() for k, v in model.named_parameters()}
    train, val = make_data(0), make_data(1)

    def loss_fn(params, data):
        x, y = data
        return torch.nn.functional.mse_loss(functional_call(model, params, (x,)), y)

    # The inner optimizer takes its learning rate from its state (a tensor with history).
    inner = otx.inject_hyperparams(otx.sgd)(learning_rate=args.lr, momentum=0.9)

    def val_loss_after_training(log_lr):
        params = params0
        state = inner.init(params)
        state.hyperparams["learning_rate"] = log_lr.exp()
        for _ in range(INNER_STEPS):
            grads = grad(loss_fn)(params, train)
            updates, state = inner.update(grads, state, params)
            params = otx.apply_updates(params, updates)
        return loss_fn(params, val)

    # The outer optimizer: Adam on the log learning rate.
    log_lr = torch.tensor(math.log(args.lr), dtype=torch.float64)
    outer = otx.adam(0.1)
    outer_state = outer.init(log_lr)
    first = val_loss_after_training(log_lr).item()
    print(f"initial: lr={args.lr:.3e} val_loss={first:.5f}")
    for k in range(outer_steps):
        hypergrad, val_loss = grad_and_value(val_loss_after_training)(log_lr)
        updates, outer_state = outer.update(hypergrad, outer_state)
        log_lr = otx.apply_updates(log_lr, updates)
        if k % 5 == 0:
            print(f"step {k}: lr={log_lr.exp().item():.3e} val_loss={val_loss.item():.5f}")
    last = val_loss_after_training(log_lr).item()
    print(f"learned: lr={log_lr.exp().item():.3e} val_loss={last:.5f}")
    return {"initial_lr": args.lr, "learned_lr": log_lr.exp().item(), "first": first, "last": last}


if __name__ == "__main__":
    main()
