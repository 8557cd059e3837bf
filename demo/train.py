"""Three training loops over the same model, data, initialisation and minibatch order.

1. ``functional``: a pure ``torch.func`` loop; the parameters are a dict of tensors, gradients come
   from ``torch.func.grad_and_value`` over ``torch.func.functional_call``, and the optimizer is the
   chain's ``update`` followed by ``optax_torch.apply_updates``.
2. ``adapter``: the same chain behind :class:`optax_torch.wrappers.TorchOptimizer` in an ordinary
   ``loss.backward(); opt.step()`` loop.
3. ``torch``: ``torch.optim.AdamW`` with ``torch.nn.utils.clip_grad_norm_`` and a ``LambdaLR``
   that reproduces the warmup-cosine schedule.

Only the optimizer part of a step is timed (clipping + AdamW update + learning-rate schedule);
the forward and backward passes are not.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

import optax_torch
from demo.data import Digits
from optax_torch.schedules import warmup_cosine_decay_schedule


@dataclass(frozen=True)
class Config:
    """Hyperparameters of the demo; all three runs share them."""

    steps: int = 1500
    batch_size: int = 64
    hidden: int = 128
    peak_lr: float = 3e-3
    warmup_fraction: float = 0.1
    end_lr: float = 1e-5
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    seed: int = 0
    eval_every: int = 50

    @property
    def warmup_steps(self) -> int:
        return max(1, int(self.steps * self.warmup_fraction))


@dataclass
class RunResult:
    """What one training run produced."""

    name: str
    losses: list[float] = field(default_factory=list)  # minibatch loss before each step
    lrs: list[float] = field(default_factory=list)  # learning rate used by each step
    step_seconds: list[float] = field(default_factory=list)  # optimizer part of each step
    eval_steps: list[int] = field(default_factory=list)
    eval_accuracy: list[float] = field(default_factory=list)
    params: dict[str, torch.Tensor] = field(default_factory=dict)  # final parameters
    test_accuracy: float = float("nan")
    train_loss: float = float("nan")
    state_bytes: int = 0

    @property
    def median_step_ms(self) -> float:
        return 1e3 * statistics.median(self.step_seconds) if self.step_seconds else float("nan")


# ------------------------------------------------------------------------------------------------
# Shared pieces


def make_model(cfg: Config, n_features: int = 64, n_classes: int = 10) -> nn.Module:
    """A small MLP: ``n_features -> hidden -> hidden -> n_classes`` with ReLUs."""
    return nn.Sequential(
        nn.Linear(n_features, cfg.hidden),
        nn.ReLU(),
        nn.Linear(cfg.hidden, cfg.hidden),
        nn.ReLU(),
        nn.Linear(cfg.hidden, n_classes),
    )


def initial_params(cfg: Config) -> dict[str, torch.Tensor]:
    """The initial parameters every run starts from (seeded)."""
    torch.manual_seed(cfg.seed)
    model = make_model(cfg)
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def minibatch_indices(cfg: Config, n_train: int) -> torch.Tensor:
    """``(steps, batch_size)`` training-set indices: seeded epochs of shuffles, one row per step."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    total = cfg.steps * cfg.batch_size
    epochs = -(-total // n_train)
    order = torch.cat([torch.randperm(n_train, generator=g) for _ in range(epochs)])
    return order[:total].view(cfg.steps, cfg.batch_size)


def lr_schedule(cfg: Config) -> optax_torch.Schedule:
    """Linear warmup from 0 to ``peak_lr``, then cosine decay to ``end_lr`` at the last step."""
    return warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.peak_lr,
        warmup_steps=cfg.warmup_steps,
        decay_steps=cfg.steps,
        end_value=cfg.end_lr,
    )


def make_tx(cfg: Config) -> optax_torch.GradientTransformation:
    """Global-norm clipping, then AdamW with the warmup-cosine learning rate."""
    return optax_torch.chain(
        optax_torch.clip_by_global_norm(cfg.max_grad_norm),
        optax_torch.adamw(
            learning_rate=lr_schedule(cfg),
            b1=cfg.b1,
            b2=cfg.b2,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
        ),
    )


def tensor_bytes(obj: object) -> int:
    """Sum of ``nbytes`` of the distinct tensors found in a nest of containers."""
    seen: set[tuple[int, int]] = set()
    total = 0

    def walk(o: object) -> None:
        nonlocal total
        if isinstance(o, torch.Tensor):
            key = (o.untyped_storage().data_ptr(), o.nbytes) if o.nbytes else (id(o), 0)
            if key not in seen:
                seen.add(key)
                total += o.nbytes
        elif isinstance(o, dict):
            for v in o.values():
                walk(v)
        elif isinstance(o, (list, tuple)):  # NamedTuple states included
            for v in o:
                walk(v)

    walk(obj)
    return total


@torch.no_grad()
def evaluate(forward: Callable[[torch.Tensor], torch.Tensor], data: Digits) -> tuple[float, float]:
    """Returns (test accuracy, full training-set loss)."""
    acc = (forward(data.x_test).argmax(-1) == data.y_test).float().mean().item()
    loss = F.cross_entropy(forward(data.x_train), data.y_train).item()
    return acc, loss


def _progress(steps: int, desc: str, enabled: bool) -> Iterable[int]:
    if not enabled:
        return range(steps)
    import sys

    from tqdm.auto import tqdm

    return tqdm(range(steps), desc=desc, file=sys.stderr, mininterval=0.25, dynamic_ncols=True)


def _record_eval(res: RunResult, step: int, cfg: Config, forward, data: Digits) -> None:
    if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
        res.eval_steps.append(step + 1)
        res.eval_accuracy.append(evaluate(forward, data)[0])


# ------------------------------------------------------------------------------------------------
# 1. Pure torch.func loop


def run_functional(
    cfg: Config, data: Digits, init: dict[str, torch.Tensor], batches: torch.Tensor, progress=True
) -> RunResult:
    res = RunResult("optax_torch chain, torch.func loop")
    model = make_model(cfg)  # a stateless template: functional_call substitutes the params
    schedule = lr_schedule(cfg)

    def loss_fn(params, x, y):
        return F.cross_entropy(torch.func.functional_call(model, params, (x,)), y)

    grad_and_loss = torch.func.grad_and_value(loss_fn)
    tx = make_tx(cfg)
    params = {k: v.clone() for k, v in init.items()}
    state = tx.init(params)

    def forward(x):
        return torch.func.functional_call(model, params, (x,))

    for step in _progress(cfg.steps, "1 functional", progress):
        idx = batches[step]
        grads, loss = grad_and_loss(params, data.x_train[idx], data.y_train[idx])
        t0 = time.perf_counter()
        updates, state = tx.update(grads, state, params)
        params = optax_torch.apply_updates(params, updates)
        res.step_seconds.append(time.perf_counter() - t0)
        res.losses.append(loss.item())
        res.lrs.append(float(schedule(step)))
        _record_eval(res, step, cfg, forward, data)

    res.params = params
    res.test_accuracy, res.train_loss = evaluate(forward, data)
    res.state_bytes = tensor_bytes(state)
    return res


# ------------------------------------------------------------------------------------------------
# 2. The same chain behind TorchOptimizer


def _model_from(cfg: Config, init: dict[str, torch.Tensor]) -> nn.Module:
    model = make_model(cfg)
    with torch.no_grad():
        for k, p in model.named_parameters():
            p.copy_(init[k])
    return model


def run_adapter(
    cfg: Config, data: Digits, init: dict[str, torch.Tensor], batches: torch.Tensor, progress=True
) -> RunResult:
    from optax_torch.wrappers import TorchOptimizer

    res = RunResult("optax_torch chain, TorchOptimizer")
    model = _model_from(cfg, init)
    schedule = lr_schedule(cfg)
    opt = TorchOptimizer(model.parameters(), make_tx(cfg))

    for step in _progress(cfg.steps, "2 TorchOptimizer", progress):
        idx = batches[step]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        loss.backward()
        t0 = time.perf_counter()
        opt.step()
        res.step_seconds.append(time.perf_counter() - t0)
        res.losses.append(loss.item())
        res.lrs.append(float(schedule(step)))
        _record_eval(res, step, cfg, model, data)

    res.params = {k: v.detach().clone() for k, v in model.named_parameters()}
    res.test_accuracy, res.train_loss = evaluate(model, data)
    res.state_bytes = tensor_bytes(dict(opt.state))
    return res


# ------------------------------------------------------------------------------------------------
# 3. torch.optim.AdamW + LambdaLR + clip_grad_norm_


def run_torch(
    cfg: Config, data: Digits, init: dict[str, torch.Tensor], batches: torch.Tensor, progress=True
) -> RunResult:
    res = RunResult("torch.optim.AdamW + LambdaLR")
    model = _model_from(cfg, init)
    schedule = lr_schedule(cfg)
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=cfg.peak_lr,
        betas=(cfg.b1, cfg.b2),
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
    )
    # LambdaLR multiplies the base lr (peak_lr) by the factor; step k uses factor(k).
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: float(schedule(k)) / cfg.peak_lr)

    for step in _progress(cfg.steps, "3 torch.optim", progress):
        idx = batches[step]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        loss.backward()
        lr = opt.param_groups[0]["lr"]
        t0 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        sched.step()
        res.step_seconds.append(time.perf_counter() - t0)
        res.losses.append(loss.item())
        res.lrs.append(lr)
        _record_eval(res, step, cfg, model, data)

    res.params = {k: v.detach().clone() for k, v in model.named_parameters()}
    res.test_accuracy, res.train_loss = evaluate(model, data)
    res.state_bytes = tensor_bytes(dict(opt.state))
    return res


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest absolute element-wise difference between two parameter dicts."""
    return max((a[k] - b[k]).abs().max().item() for k in a)
