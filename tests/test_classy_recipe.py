"""The recipe of ``docs/classy_recipe.md`` (Classy Vision's ClassificationTask optimizer side on
optax_torch), run from the file itself, against the same recipe over Classy Vision's own
optimizers: gradient accumulation, gradient clipping, a GradScaler, scheduled hyperparameters,
``on_epoch`` and checkpoints."""

from __future__ import annotations

import copy
import pathlib
import re

import pytest
import torch

classy_vision = pytest.importorskip("classy_vision")

import classy_vision.optim as CO  # noqa: E402
from torch_optim_ref import assert_nets_close, loss_fn, make_net, roundtrip  # noqa: E402

import optax_torch.compat.classy.optim as O  # noqa: E402

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "classy_recipe.md"
BATCHES_PER_EPOCH, EPOCHS, BATCH = 15, 4, 8


def recipe():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    namespace: dict = {}
    exec(compile(blocks[0], str(DOC), "exec"), namespace)
    return namespace["ClassyOptimizerSide"]


def task_config(optimizer):
    return {
        "num_epochs": EPOCHS,
        "simulated_global_batchsize": 3 * BATCH,
        "clip_grad_norm": 0.5,
        "optimizer": {
            **optimizer,
            "param_schedulers": {
                "lr": {"name": "cosine", "start_value": 0.05, "end_value": 0.001},
                "weight_decay": {
                    "name": "multistep",
                    "values": [1e-3, 1e-2],
                    "milestones": [2],
                    "update_interval": "epoch",
                },
            },
        },
    }


OPTIMIZERS = {
    "sgd-larc": {
        "name": "sgd",
        "momentum": 0.9,
        "nesterov": True,
        "use_larc": True,
        "larc_config": {"clip": True, "eps": 1e-8, "trust_coefficient": 0.02},
    },
    "adamw": {"name": "adamw"},
    "rmsprop_tf": {"name": "rmsprop_tf", "momentum": 0.9},
}


def make(side_cls, net, config, ours, amp):
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=4) if amp else None
    module = O if ours else CO
    return side_cls(
        net.parameters(),
        config,
        batch_size=BATCH,
        batches_per_epoch=BATCHES_PER_EPOCH,
        scaler=scaler,
        build=module.build_optimizer,
        build_schedulers=module.build_optimizer_schedulers,
    )


def run(sides_nets, start, stop):
    for t in range(start, stop):
        for side, net in sides_nets:
            side.train_step(loss_fn(net, t))
            if (t + 1) % BATCHES_PER_EPOCH == 0:
                side.on_phase_end()
        ref_net = sides_nets[0][1]
        for i, (_, net) in enumerate(sides_nets[1:]):
            assert_nets_close(ref_net, net, 1e-12, f"micro-batch {t}, run {i + 1}")


@pytest.fixture(autouse=True)
def _apex(monkeypatch):
    import sys
    import types

    from test_classy_optim import ApexLARC

    for name in ("apex", "apex.parallel", "apex.parallel.LARC"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules["apex.parallel.LARC"].LARC = ApexLARC  # type: ignore[attr-defined]


@pytest.mark.parametrize("amp", [False, True], ids=["fp", "amp"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_recipe_matches_classy(name, amp):
    side_cls = recipe()
    config = task_config(OPTIMIZERS[name])
    a, b = make_net(), make_net()
    ref, ours = (
        make(side_cls, a, copy.deepcopy(config), False, amp),
        make(side_cls, b, copy.deepcopy(config), True, amp),
    )
    assert ours.optimizer_period == 3
    total = EPOCHS * BATCHES_PER_EPOCH
    run([(ref, a), (ours, b)], 0, total)
    assert ours.optimizer.options_view.lr == ref.optimizer.options_view.lr
    assert ours.optimizer.options_view.weight_decay == 1e-2


def test_recipe_resume():
    """A checkpoint of the recipe mid-run (ours → ours, Classy's → ours, ours → Classy's)."""
    side_cls = recipe()
    config = task_config(OPTIMIZERS["sgd-larc"])
    nets = [make_net() for _ in range(4)]
    sides = [make(side_cls, n, copy.deepcopy(config), i > 0, True) for i, n in enumerate(nets)]
    at = 2 * BATCHES_PER_EPOCH  # a phase end, where ClassificationTask checkpoints
    run(list(zip(sides, nets)), 0, at)
    fresh = [copy.deepcopy(n) for n in nets[1:]]
    new = [
        make(side_cls, n, copy.deepcopy(config), ours, True)
        for n, ours in zip(fresh, (True, True, False))
    ]
    new[0].load_state_dict(roundtrip(sides[1].state_dict()))
    new[1].load_state_dict(roundtrip(sides[0].state_dict()))
    new[2].load_state_dict(roundtrip(sides[3].state_dict()))
    run([(sides[0], nets[0]), *zip(new, fresh)], at, EPOCHS * BATCHES_PER_EPOCH)


def test_recipe_rejects_bad_batchsize():
    side_cls = recipe()
    config = {**task_config(OPTIMIZERS["adamw"]), "simulated_global_batchsize": 20}
    with pytest.raises(ValueError, match="must be divisible by batch size"):
        make(side_cls, make_net(), config, True, False)
