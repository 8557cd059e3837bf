"""Shared harness for the ``torch.optim`` drop-in tests: a drop-in and its torch.optim original
run side by side on the same float64 model, compared after every step.

The model has linear, conv and norm layers plus a ``side`` branch whose parameters get a gradient
only on some steps (``None`` on the others, and on the first step: it joins late), so per-parameter
state and step counts are exercised. Use::

    from torch_optim_ref import train_pair, check_resume, check_signature
    train_pair(C.Adamax, torch.optim.Adamax, dict(lr=0.01), dict(lr=0.02, weight_decay=0.1))
"""

from __future__ import annotations

import copy
import inspect
import io
from collections.abc import Callable
from typing import Any

import torch

STEPS = 20


class Net(torch.nn.Module):
    """Linear → conv → norm → linear, plus a side branch used on some steps only."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(5, 7)
        self.conv = torch.nn.Conv1d(1, 2, kernel_size=3)
        self.norm = torch.nn.LayerNorm(10)
        self.head = torch.nn.Linear(10, 3, bias=False)
        self.side = torch.nn.Linear(5, 3)

    def forward(self, x: torch.Tensor, step: int | None = None) -> torch.Tensor:
        h = torch.tanh(self.fc(x)).unsqueeze(1)
        h = torch.tanh(self.conv(h)).flatten(1)
        out = self.head(self.norm(h))
        if step is not None and uses_side(step):
            out = out + 0.5 * self.side(x)
        return out


def uses_side(step: int) -> bool:
    """Whether the side branch gets a gradient at ``step`` (not at 0: it joins late)."""
    return step % 3 == 1 or step in (5, 6)


def make_net(dtype: torch.dtype = torch.float64, seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net().to(dtype)


def batch(step: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(2000 + step)
    x = torch.randn(8, 5, generator=gen, dtype=torch.float64).to(dtype)
    y = torch.randn(8, 3, generator=gen, dtype=torch.float64).to(dtype)
    return x, y


def loss_fn(net: Net, step: int, dtype: torch.dtype = torch.float64, skip: bool = True):
    """The loss at ``step``; with ``skip`` the side branch is used on some steps only."""
    x, y = batch(step, dtype)
    out = net(x, step) if skip else net(x, 1)
    return (out - y).square().mean()


def groups(net: Net, **bias_overrides: Any) -> list[dict[str, Any]]:
    """Two param groups: weights (defaults) and biases + norm (``bias_overrides``)."""
    named = list(net.named_parameters())
    is_weight = [n.endswith("weight") and "norm" not in n for n, _ in named]
    weights = [p for (_, p), w in zip(named, is_weight) if w]
    others = [p for (_, p), w in zip(named, is_weight) if not w]
    return [{"params": weights}, {"params": others, **bias_overrides}]


def tol(dtype: torch.dtype) -> float:
    return 1e-12 if dtype == torch.float64 else 1e-6


def assert_nets_close(a: Net, b: Net, atol: float, msg: str = "") -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0.0, atol=atol, msg=lambda m: f"{msg} {name}: {m}")


def one_step(net: Net, opt: Any, step: int, dtype=torch.float64, skip=True, closure=False):
    """zero_grad(set_to_none) → backward → step (through a closure if asked)."""

    def run():
        opt.zero_grad()
        loss = loss_fn(net, step, dtype, skip)
        loss.backward()
        return loss

    if closure:
        return opt.step(run)
    run()
    return opt.step()


def train_pair(
    ours_cls: Callable[..., Any],
    ref_cls: Callable[..., Any],
    kwargs: dict[str, Any],
    bias_overrides: dict[str, Any] | None = None,
    *,
    steps: int = STEPS,
    dtype: torch.dtype = torch.float64,
    skip: bool = True,
    closure: bool = False,
    scheduler: Callable[[Any], Any] | None = lambda o: torch.optim.lr_scheduler.StepLR(o, 7, 0.5),
    atol: float | None = None,
    param_groups: bool = True,
):
    """Trains a torch.optim optimizer and its drop-in side by side; compares after every step.

    Two param groups (``bias_overrides`` for the second), a scheduler on each (StepLR by default;
    ``None`` for none) and the intermittent side branch (``skip``). Returns
    ``(ref_net, our_net, ref_opt, our_opt)``.
    """
    atol = tol(dtype) if atol is None else atol
    a, b = make_net(dtype), make_net(dtype)
    if param_groups:
        ref = ref_cls(groups(a, **(bias_overrides or {})), **kwargs)
        ours = ours_cls(groups(b, **(bias_overrides or {})), **kwargs)
    else:
        ref, ours = ref_cls(a.parameters(), **kwargs), ours_cls(b.parameters(), **kwargs)
    scheds = [scheduler(o) for o in (ref, ours)] if scheduler is not None else []
    for t in range(steps):
        for net, opt in ((a, ref), (b, ours)):
            one_step(net, opt, t, dtype, skip, closure)
        for s in scheds:
            s.step()
        assert_nets_close(a, b, atol, f"step {t}")
    return a, b, ref, ours


def roundtrip(sd: dict[str, Any]) -> dict[str, Any]:
    """torch.save → torch.load(weights_only=True)."""
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def check_resume(
    ours_cls: Callable[..., Any],
    ref_cls: Callable[..., Any],
    kwargs: dict[str, Any],
    bias_overrides: dict[str, Any] | None = None,
    *,
    steps: int = 12,
    at: int = 5,
    skip: bool = True,
    closure: bool = False,
    atol: float = 1e-12,
) -> None:
    """Mid-run checkpoints, in float64, against an uninterrupted torch run:

    * ours → ``state_dict`` → ``torch.load(weights_only=True)`` → a fresh drop-in;
    * torch's ``state_dict`` → a fresh drop-in;
    * ours → a fresh torch optimizer;

    each continued to ``steps`` and compared with the uninterrupted torch run after every step.
    """
    bo = bias_overrides or {}
    nets = [make_net() for _ in range(4)]
    opts = [ref_cls(groups(nets[0], **bo), **kwargs)] + [
        ours_cls(groups(n, **bo), **kwargs) for n in nets[1:]
    ]
    for t in range(steps):
        if t == at:
            fresh = [copy.deepcopy(n) for n in nets[1:]]
            new = [
                ours_cls(groups(fresh[0], **bo), **kwargs),
                ours_cls(groups(fresh[1], **bo), **kwargs),
                ref_cls(groups(fresh[2], **bo), **kwargs),
            ]
            new[0].load_state_dict(roundtrip(opts[1].state_dict()))
            new[1].load_state_dict(roundtrip(opts[0].state_dict()))
            new[2].load_state_dict(roundtrip(opts[3].state_dict()))
            nets[1:], opts[1:] = fresh, new
        for net, opt in zip(nets, opts):
            one_step(net, opt, t, skip=skip, closure=closure)
        for i, other in enumerate(nets[1:]):
            assert_nets_close(nets[0], other, atol, f"step {t}, run {i + 1}")


def check_signature(ours_cls: Callable[..., Any], ref_cls: Callable[..., Any]) -> None:
    """Same parameter names, order, kinds and defaults as the torch class."""
    ps = inspect.signature(ours_cls).parameters
    rs = inspect.signature(ref_cls).parameters
    assert list(ps) == list(rs), (list(ps), list(rs))
    for name in rs:
        assert ps[name].default == rs[name].default, name
        assert ps[name].kind == rs[name].kind, name


def check_state_like_torch(ref: Any, ours: Any, atol: float = 1e-12) -> None:
    """Same param_groups keys/values and the same per-parameter state names and values."""
    for g, h in zip(ours.param_groups, ref.param_groups):
        assert list(g) == list(h), (list(g), list(h))
    rps = [p for g in ref.param_groups for p in g["params"]]
    ops = [p for g in ours.param_groups for p in g["params"]]
    for p, q in zip(rps, ops):
        assert (p in ref.state) == (q in ours.state)
        if p not in ref.state:
            continue
        assert set(ours.state[q]) == set(ref.state[p]), (set(ours.state[q]), set(ref.state[p]))
        for key, v in ref.state[p].items():
            w = ours.state[q][key]
            if isinstance(v, torch.Tensor):
                torch.testing.assert_close(w.to(v.dtype), v, rtol=0, atol=atol, msg=key)
            else:
                assert w == v, key
