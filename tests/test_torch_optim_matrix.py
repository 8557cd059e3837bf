"""The option matrix of the 15 ``torch.optim`` drop-ins, step by step against torch 2.13.

For every class and every option set (each boolean flag on and off, weight decay zero and
positive, non-default numeric options, per-group overrides): float64 runs of the shared harness
(two param groups, a StepLR, a side branch that skips steps) compared after every step at 1e-12,
the per-parameter state and param-group keys like torch's, mid-run checkpoints across
implementations, one float32 run and a tensor ``lr``. LBFGS (closure-driven, one group),
SparseAdam (sparse gradients) and Muon (2-d parameters only) run on models of their own.

A drop-in that is not importable yet is skipped. ``OPTAX_TORCH_DROPIN_SELFCHECK=1`` runs the
torch classes in place of the drop-ins (a check of the tests themselves).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch_optim_ref import (
    assert_nets_close,
    check_resume,
    check_signature,
    check_state_like_torch,
    groups,
    loss_fn,
    make_net,
    roundtrip,
    tol,
    train_pair,
    uses_side,
)

from optax_torch.compat import torch_optim as C

SELFCHECK = os.environ.get("OPTAX_TORCH_DROPIN_SELFCHECK") == "1"

NAMES = [
    "SGD",
    "Adam",
    "AdamW",
    "Adadelta",
    "Adafactor",
    "Adagrad",
    "Adamax",
    "ASGD",
    "LBFGS",
    "Muon",
    "NAdam",
    "RAdam",
    "RMSprop",
    "Rprop",
    "SparseAdam",
]
SPECIAL = ("LBFGS", "Muon", "SparseAdam")
GENERIC = [n for n in NAMES if n not in SPECIAL]


def ref_class(name: str) -> Any:
    return getattr(torch.optim, name)


def dropin(name: str) -> Any:
    """The drop-in ``name``, or ``pytest.skip`` while it is not importable."""
    if SELFCHECK:
        return ref_class(name)
    try:
        return getattr(C, name)
    except (ImportError, AttributeError) as e:
        pytest.skip(f"drop-in {name} not available yet ({type(e).__name__}: {e})")


# ------------------------------------------------------------------------------------------------
# Option sets: name -> [(constructor kwargs, overrides of the second param group)]
# ------------------------------------------------------------------------------------------------

WD = dict(weight_decay=0.1)
OPTIONS: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {
    "SGD": [
        (dict(lr=0.05), dict(lr=0.02, **WD)),
        (dict(lr=0.05, momentum=0.9), dict(lr=0.02, **WD)),
        (dict(lr=0.05, momentum=0.9, dampening=0.3), dict(lr=0.02, **WD)),
        (dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01), dict(lr=0.02)),
        (dict(lr=0.01, momentum=0.5, weight_decay=0.01, maximize=True), dict(momentum=0.8)),
        (dict(lr=0.01, maximize=True), dict(lr=0.005, **WD)),
        (dict(lr=0.05, momentum=0.9), dict(nesterov=True, maximize=True, lr=0.01)),
        (dict(lr=0.05, dampening=0.3), dict(momentum=0.9)),
    ],
    "Adam": [
        (dict(lr=0.01), dict(lr=0.003, weight_decay=0.2)),
        (dict(lr=0.01, amsgrad=True), dict(lr=0.003, weight_decay=0.2)),
        (dict(lr=0.01, weight_decay=0.05, maximize=True), dict(lr=0.003)),
        (dict(lr=0.01, weight_decay=0.05, decoupled_weight_decay=True, amsgrad=True), dict(**WD)),
        (dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6), dict(betas=(0.5, 0.9), eps=1e-3)),
        (dict(lr=0.01), dict(amsgrad=True, maximize=True, decoupled_weight_decay=True, **WD)),
    ],
    "AdamW": [
        (dict(lr=0.01), dict(lr=0.003, weight_decay=0.0)),
        (dict(lr=0.01, amsgrad=True, maximize=True), dict(lr=0.003, weight_decay=0.2)),
        (dict(lr=0.01, weight_decay=0.1, betas=(0.8, 0.99), eps=1e-6), dict(weight_decay=0.0)),
    ],
    "Adadelta": [
        (dict(), dict(lr=0.3, **WD)),
        (dict(lr=0.5, rho=0.5, eps=1e-4), dict(lr=0.3, **WD)),
        (dict(lr=0.5, weight_decay=0.05, maximize=True), dict(rho=0.95)),
    ],
    "Adafactor": [
        (dict(), dict(lr=0.02, **WD)),
        (dict(lr=0.01, beta2_decay=-0.5, d=2.0), dict(lr=0.02, **WD)),
        (dict(lr=0.01, eps=(1e-30, 1e-2)), dict(lr=0.02, beta2_decay=-0.6)),
        (dict(lr=0.01, weight_decay=0.05, maximize=True), dict(lr=0.02, d=1.5)),
    ],
    "Adagrad": [
        (dict(lr=0.05), dict(lr=0.02, **WD)),
        (dict(lr=0.05, lr_decay=0.05), dict(lr=0.02, lr_decay=0.0)),
        (dict(lr=0.05, initial_accumulator_value=0.1, eps=1e-6), dict(lr=0.02, **WD)),
        (dict(lr=0.05, weight_decay=0.05, maximize=True), dict(lr=0.02, lr_decay=0.01)),
        # torch fills every sum with the constructor's value, whatever a group says
        (dict(lr=0.05, initial_accumulator_value=0.1), dict(initial_accumulator_value=0.5)),
    ],
    "Adamax": [
        (dict(lr=0.01), dict(lr=0.003, **WD)),
        (dict(lr=0.01, betas=(0.8, 0.99), eps=1e-4), dict(lr=0.003, **WD)),
        (dict(lr=0.01, weight_decay=0.05, maximize=True), dict(betas=(0.5, 0.9))),
    ],
    "ASGD": [
        (dict(lr=0.01), dict(lr=0.02, **WD)),
        (dict(lr=0.01, lambd=1e-3, alpha=0.5, t0=5), dict(lr=0.02, **WD)),
        (dict(lr=0.01, t0=3, weight_decay=0.05, maximize=True), dict(lambd=0.01, alpha=0.9)),
    ],
    "NAdam": [
        (dict(lr=0.01), dict(lr=0.003, **WD)),
        (dict(lr=0.01, momentum_decay=0.01, betas=(0.8, 0.99)), dict(lr=0.003, **WD)),
        (dict(lr=0.01, weight_decay=0.05, maximize=True, eps=1e-4), dict(lr=0.003)),
        (dict(lr=0.01, weight_decay=0.05, decoupled_weight_decay=True), dict(lr=0.003, **WD)),
        (dict(lr=0.01, weight_decay=0.05), dict(decoupled_weight_decay=True, maximize=True)),
    ],
    "RAdam": [
        (dict(lr=0.01), dict(lr=0.003, **WD)),
        (dict(lr=0.01, betas=(0.8, 0.9)), dict(lr=0.003, **WD)),
        (dict(lr=0.01, weight_decay=0.05, maximize=True, eps=1e-4), dict(lr=0.003)),
        (dict(lr=0.01, weight_decay=0.05, decoupled_weight_decay=True), dict(betas=(0.5, 0.8))),
    ],
    "RMSprop": [
        (dict(lr=0.01), dict(lr=0.003, **WD)),
        (dict(lr=0.01, alpha=0.9, eps=1e-4), dict(lr=0.003, **WD)),
        (dict(lr=0.01, centered=True), dict(lr=0.003, **WD)),
        (dict(lr=0.01, momentum=0.9), dict(lr=0.003, momentum=0.5)),
        (dict(lr=0.01), dict(centered=True, momentum=0.9, maximize=True)),
        (
            dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.05, maximize=True),
            dict(lr=0.003, alpha=0.8),
        ),
    ],
    "Rprop": [
        (dict(lr=0.01), dict(lr=0.02)),
        (dict(lr=0.01, etas=(0.3, 1.5), step_sizes=(1e-3, 0.05)), dict(lr=0.02)),
        (dict(lr=0.01, maximize=True), dict(etas=(0.4, 1.1), step_sizes=(1e-4, 0.02))),
    ],
}
# Options of the three classes with models of their own.
SPECIAL_OPTIONS: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {
    "LBFGS": [  # one param group: no overrides
        (dict(), {}),
        (dict(lr=0.5, max_iter=5, history_size=3), {}),
        (dict(max_iter=4, max_eval=6, tolerance_grad=1e-5, tolerance_change=1e-4), {}),
        (dict(lr=1.0, max_iter=6, line_search_fn="strong_wolfe"), {}),
    ],
    "Muon": [
        (dict(lr=0.02), dict(lr=0.01, weight_decay=0.2)),
        (dict(lr=0.02, nesterov=False, momentum=0.9, weight_decay=0.0), dict(lr=0.01)),
        (dict(lr=0.02, adjust_lr_fn="original"), dict(momentum=0.5)),
        (dict(lr=0.02, adjust_lr_fn="match_rms_adamw", weight_decay=0.05), dict(lr=0.01)),
        (dict(lr=0.02, ns_coefficients=(3.0, -3.2, 1.2), ns_steps=3, eps=1e-5), dict(lr=0.01)),
    ],
    "SparseAdam": [
        (dict(lr=0.01), dict(lr=0.003)),
        (dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6), dict(betas=(0.5, 0.9))),
        (dict(lr=0.01, maximize=True), dict(lr=0.003, eps=1e-4)),
    ],
}

# Known deviations (strict xfails): (name, option index) -> precise cause.
KNOWN_STATE_DEVIATIONS: dict[tuple[str, int], str] = {}


def _short(v: Any) -> str:
    if isinstance(v, tuple):
        return "(" + ",".join(_short(x) for x in v) + ")"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _id(name: str, i: int, kwargs: dict[str, Any]) -> str:
    return f"{name}-{i}-" + (",".join(f"{k}={_short(v)}" for k, v in kwargs.items()) or "default")


def _cases(options, known: dict[tuple[str, int], str] | None = None) -> list[Any]:
    out = []
    for name, sets in options.items():
        for i, (kwargs, overrides) in enumerate(sets):
            reason = (known or {}).get((name, i))
            marks = (
                [pytest.mark.xfail(reason=reason, strict=True)] if reason and not SELFCHECK else []
            )
            out.append(pytest.param(name, kwargs, overrides, marks=marks, id=_id(name, i, kwargs)))
    return out


# ------------------------------------------------------------------------------------------------
# The generic model (shared harness): 12 classes
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_signature_like_torch(name):
    check_signature(dropin(name), ref_class(name))


@pytest.mark.parametrize(("name", "kwargs", "overrides"), _cases(OPTIONS))
def test_steps_match_torch(name, kwargs, overrides):
    train_pair(dropin(name), ref_class(name), kwargs, overrides)


@pytest.mark.parametrize(("name", "kwargs", "overrides"), _cases(OPTIONS, KNOWN_STATE_DEVIATIONS))
def test_state_like_torch(name, kwargs, overrides):
    _, _, ref, ours = train_pair(dropin(name), ref_class(name), kwargs, overrides, steps=4)
    check_state_like_torch(ref, ours)
    for g, h in zip(ours.param_groups, ref.param_groups):
        assert {k: v for k, v in g.items() if k != "params"} == {
            k: v for k, v in h.items() if k != "params"
        }


@pytest.mark.parametrize("name", GENERIC)
def test_float32_matches_torch(name):
    # The richest option set without ``maximize``: gradient ascent diverges and amplifies float32
    # rounding (RMSprop centered + momentum + maximize: 2.8e-6 after 20 steps).
    kwargs, overrides = max(
        (o for o in OPTIONS[name] if not o[0].get("maximize")), key=lambda o: len(o[0])
    )
    train_pair(dropin(name), ref_class(name), kwargs, overrides, dtype=torch.float32)


@pytest.mark.parametrize("name", GENERIC)
def test_tensor_lr_matches_torch(name):
    kwargs, _ = OPTIONS[name][0]
    lr = torch.tensor(kwargs.get("lr", 1.0), dtype=torch.float64)
    # (torch computes in the tensor's dtype: float64 tensors for float64 agreement.)
    train_pair(dropin(name), ref_class(name), {**kwargs, "lr": lr}, {}, steps=10)


@pytest.mark.parametrize("name", GENERIC)
def test_one_group_no_scheduler_no_skips(name):
    kwargs, _ = OPTIONS[name][1]
    train_pair(
        dropin(name), ref_class(name), kwargs, skip=False, scheduler=None, param_groups=False
    )


# torch itself resumes NAdam inexactly: its load_state_dict casts the float32 ``mu_product`` to
# the parameters' dtype (torch → torch differs by ~2e-12 after a few steps).
RESUME_ATOL = {"NAdam": 1e-9}


@pytest.mark.parametrize("name", GENERIC)
def test_resume_across_implementations(name):
    """Mid-run checkpoints of the richest option set (the state of every option)."""
    kwargs, overrides = max(OPTIONS[name], key=lambda o: len(o[0]))
    atol = RESUME_ATOL.get(name, 1e-12)
    check_resume(dropin(name), ref_class(name), kwargs, overrides, steps=10, at=4, atol=atol)


# ------------------------------------------------------------------------------------------------
# LBFGS, Muon, SparseAdam: models of their own
# ------------------------------------------------------------------------------------------------


class MatNet(torch.nn.Module):
    """2-d parameters only (Muon): three bias-free linear layers plus an intermittent side."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(5, 7, bias=False)
        self.mid = torch.nn.Linear(7, 6, bias=False)
        self.head = torch.nn.Linear(6, 3, bias=False)
        self.side = torch.nn.Linear(5, 3, bias=False)

    def forward(self, x: torch.Tensor, step: int) -> torch.Tensor:
        out = self.head(torch.tanh(self.mid(torch.tanh(self.fc(x)))))
        return out + 0.5 * self.side(x) if uses_side(step) else out


class EmbNet(torch.nn.Module):
    """Sparse gradients only (SparseAdam): two ``Embedding(sparse=True)``, the second one used
    on some steps only."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(12, 4, sparse=True)
        self.side = torch.nn.Embedding(9, 4, sparse=True)

    def forward(self, step: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(3000 + step)
        out = self.emb(torch.randint(0, 12, (6,), generator=gen))
        if uses_side(step):
            out = out + self.side(torch.randint(0, 9, (6,), generator=gen))
        return out


@dataclass(frozen=True)
class Model:
    """A model, its loss at a step, its param groups and how ``step`` is called."""

    make: Callable[[torch.dtype], Any]
    loss: Callable[[Any, int, torch.dtype], torch.Tensor]
    groups: Callable[..., Any]
    closure: bool = False
    steps: int = 20


def _mat_make(dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    return MatNet().to(dtype)


def _mat_loss(net: Any, step: int, dtype: torch.dtype) -> torch.Tensor:
    gen = torch.Generator().manual_seed(2000 + step)
    x = torch.randn(8, 5, generator=gen, dtype=torch.float64).to(dtype)
    y = torch.randn(8, 3, generator=gen, dtype=torch.float64).to(dtype)
    return (net(x, step) - y).square().mean()


def _emb_make(dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    return EmbNet().to(dtype)


def _emb_loss(net: Any, step: int, dtype: torch.dtype) -> torch.Tensor:
    gen = torch.Generator().manual_seed(4000 + step)
    y = torch.randn(6, 4, generator=gen, dtype=torch.float64).to(dtype)
    return (net(step) - y).square().mean()


def _two_groups(first: list[str]) -> Callable[..., Any]:
    def make_groups(net: Any, **overrides: Any) -> list[dict[str, Any]]:
        named = list(net.named_parameters())
        return [
            {"params": [p for n, p in named if n.split(".")[0] in first]},
            {"params": [p for n, p in named if n.split(".")[0] not in first], **overrides},
        ]

    return make_groups


def _one_group(net: Any, **overrides: Any) -> list[torch.Tensor]:
    assert not overrides
    return list(net.parameters())


MODELS: dict[str, Model] = {
    "LBFGS": Model(
        make_net, lambda n, t, d: loss_fn(n, t, d, skip=False), _one_group, closure=True, steps=3
    ),
    "Muon": Model(_mat_make, _mat_loss, _two_groups(["fc", "mid"]), steps=12),
    "SparseAdam": Model(_emb_make, _emb_loss, _two_groups(["emb"])),
}
GENERIC_MODEL = Model(lambda d: make_net(d), lambda n, t, d: loss_fn(n, t, d), groups)


def model_of(name: str) -> Model:
    return MODELS.get(name, GENERIC_MODEL)


def run_step(model: Model, net: Any, opt: Any, t: int, dtype: torch.dtype = torch.float64):
    """zero_grad → backward → step, through a closure for closure-driven optimizers."""

    def closure():
        opt.zero_grad()
        loss = model.loss(net, t, dtype)
        loss.backward()
        return loss

    if model.closure:
        return opt.step(closure)
    closure()
    return opt.step()


def run_pair(
    name: str,
    kwargs: dict[str, Any],
    overrides: dict[str, Any],
    *,
    dtype: torch.dtype = torch.float64,
    steps: int | None = None,
    scheduler: bool = True,
):
    """``train_pair`` for any model: both optimizers, compared after every step."""
    model = model_of(name)
    a, b = model.make(dtype), model.make(dtype)
    ref = ref_class(name)(model.groups(a, **overrides), **kwargs)
    ours = dropin(name)(model.groups(b, **overrides), **kwargs)
    scheds = [torch.optim.lr_scheduler.StepLR(o, 7, 0.5) for o in (ref, ours)] if scheduler else []
    for t in range(model.steps if steps is None else steps):
        losses = [run_step(model, net, opt, t, dtype) for net, opt in ((a, ref), (b, ours))]
        if model.closure:
            torch.testing.assert_close(losses[1], losses[0], rtol=0, atol=tol(dtype))
        for s in scheds:
            s.step()
        assert_nets_close(a, b, tol(dtype), f"step {t}")
    return a, b, ref, ours


def assert_state_close(ref: Any, ours: Any, atol: float = 1e-12) -> None:
    """Per-parameter state like torch's, nested values (LBFGS's lists) included."""

    def close(v: Any, w: Any, key: str) -> None:
        if isinstance(v, torch.Tensor):
            assert isinstance(w, torch.Tensor), key
            torch.testing.assert_close(w.to(v.dtype), v, rtol=0, atol=atol, msg=key)
        elif isinstance(v, list | tuple):
            assert isinstance(w, list | tuple) and len(w) == len(v), key
            for x, y in zip(v, w):
                close(x, y, key)
        elif isinstance(v, float):
            assert abs(float(w) - v) <= atol * max(1.0, abs(v)), (key, w, v)
        else:
            assert w == v, (key, w, v)

    for g, h in zip(ours.param_groups, ref.param_groups):
        assert list(g) == list(h), (list(g), list(h))
    rps = [p for g in ref.param_groups for p in g["params"]]
    ops = [p for g in ours.param_groups for p in g["params"]]
    for p, q in zip(rps, ops):
        assert (p in ref.state) == (q in ours.state)
        if p in ref.state:
            assert set(ours.state[q]) == set(ref.state[p]), (set(ours.state[q]), set(ref.state[p]))
            for key, v in ref.state[p].items():
                close(v, ours.state[q][key], key)


@pytest.mark.parametrize(("name", "kwargs", "overrides"), _cases(SPECIAL_OPTIONS))
def test_special_steps_and_state_match_torch(name, kwargs, overrides):
    _, _, ref, ours = run_pair(name, kwargs, overrides)
    assert_state_close(ref, ours)


@pytest.mark.parametrize("name", SPECIAL)
def test_special_float32_matches_torch(name):
    kwargs, overrides = SPECIAL_OPTIONS[name][-1]
    run_pair(name, kwargs, overrides, dtype=torch.float32, steps=6)


@pytest.mark.parametrize(("name", "kwargs", "overrides"), _cases(SPECIAL_OPTIONS))
def test_special_resume_across_implementations(name, kwargs, overrides):
    """``check_resume`` on the class's own model."""
    model = model_of(name)
    steps, at = (3, 2) if model.closure else (10, 4)
    ours_cls, ref_cls = dropin(name), ref_class(name)
    nets = [model.make(torch.float64) for _ in range(4)]
    opts = [ref_cls(model.groups(nets[0], **overrides), **kwargs)] + [
        ours_cls(model.groups(n, **overrides), **kwargs) for n in nets[1:]
    ]
    for t in range(steps):
        if t == at:
            fresh = [copy.deepcopy(n) for n in nets[1:]]
            new = [
                ours_cls(model.groups(fresh[0], **overrides), **kwargs),
                ours_cls(model.groups(fresh[1], **overrides), **kwargs),
                ref_cls(model.groups(fresh[2], **overrides), **kwargs),
            ]
            new[0].load_state_dict(roundtrip(opts[1].state_dict()))
            new[1].load_state_dict(roundtrip(opts[0].state_dict()))
            new[2].load_state_dict(roundtrip(opts[3].state_dict()))
            nets[1:], opts[1:] = fresh, new
        for net, opt in zip(nets, opts):
            run_step(model, net, opt, t)
        for i, other in enumerate(nets[1:]):
            assert_nets_close(nets[0], other, 1e-12, f"step {t}, run {i + 1}")
