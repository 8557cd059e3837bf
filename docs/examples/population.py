"""Train a population of small models at once, one learning rate per member, and pick the best.

Every member is the same small network (its own initialisation) trained with Adam on the same
regression problem; ``optax_torch.inject_hyperparams`` keeps each member's learning rate in the
optimizer state, and ``torch.func.vmap`` runs the whole population's training step as one step.
At the end, the member with the lowest validation loss wins.

Run ``python docs/examples/population.py`` (``--quick`` for a few steps).
"""

from __future__ import annotations

import argparse

import torch
from torch.func import functional_call, grad_and_value, vmap

import optax_torch as otx


def make_data(seed: int, n: int = 256):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=gen) * 6 - 3
    y = torch.sin(x) + 0.1 * torch.randn(n, 1, generator=gen)
    return x, y


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few steps only")
    args = parser.parse_args(argv)
    steps = 20 if args.quick else 500

    model = torch.nn.Sequential(torch.nn.Linear(1, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    train, val = make_data(0), make_data(1)
    lrs = torch.logspace(-4, 0, 8)  # one learning rate per member: 1e-4 ... 1
    n = len(lrs)

    # The population's params: every member has its own initialisation (stacked on dim 0).
    inits = []
    for seed in range(n):
        torch.manual_seed(seed)
        member = torch.nn.Sequential(
            torch.nn.Linear(1, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1)
        )
        inits.append({k: v.detach() for k, v in member.named_parameters()})
    params = {k: torch.stack([p[k] for p in inits]) for k in inits[0]}

    # Adam with its learning rate in the state; the state is built for all members at once,
    # then each member's learning rate is put in.
    tx = otx.inject_hyperparams(otx.adam)(learning_rate=1e-3)
    state = vmap(tx.init)(params)
    state.hyperparams["learning_rate"] = lrs

    def loss_fn(p, data):
        x, y = data
        return torch.nn.functional.mse_loss(functional_call(model, p, (x,)), y)

    def step(p, s):
        grads, loss = grad_and_value(loss_fn)(p, train)
        updates, s = tx.update(grads, s, p)
        return otx.apply_updates(p, updates), s, loss

    population_step = vmap(step)  # one step for the whole population
    for _ in range(steps):
        params, state, train_loss = population_step(params, state)

    val_loss = vmap(loss_fn, in_dims=(0, None))(params, val)
    for i in range(n):
        print(
            f"member {i}: lr={lrs[i].item():.2e} train_loss={train_loss[i].item():.4f}"
            f" val_loss={val_loss[i].item():.4f}"
        )
    best = int(torch.argmin(val_loss))
    print(f"best: member {best} lr={lrs[best].item():.2e} val_loss={val_loss[best].item():.4f}")
    return {"best": best, "best_lr": lrs[best].item(), "best_val_loss": val_loss[best].item()}


if __name__ == "__main__":
    main()
