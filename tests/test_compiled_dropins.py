"""Every drop-in optimizer class compiles its step as one ``torch.compile(fullgraph=True)`` graph,
except those of :data:`NOT_COMPILED`, each with the reason (``docs/performance.md``, "Which
drop-ins compile").

The drop-ins are enumerated from the ``__all__`` of :mod:`optax_torch.compat.torch_optim`,
:mod:`optax_torch.compat.timm` and :mod:`optax_torch.compat.classy.optim` (the classes that
subclass ``torch.optim.Optimizer``), so a new drop-in is tested without being listed here. Each
one runs ``compile_step(backend="eager")`` (dynamo's capture with ``fullgraph=True``, no
AOT/inductor: fast) for a few steps next to an eager copy, on two small float64 parameters (a
matrix and a scalar); the parameters and the state must agree and exactly one graph must have
been compiled (a step that silently ran eagerly would compile none). A listed drop-in must really
fail to compile (or have no ``compile_step``): the list is exact.

Runtime is dynamo's tracing of each chain (about 2-3 s per drop-in on a 2-core CPU, 7 s for
timm's Muon and AdaMuon).
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch

from optax_torch.compat import timm, torch_optim
from optax_torch.compat.classy import optim as classy
from optax_torch.wrappers import TorchOptimizer

PACKAGES = {"torch_optim": torch_optim, "timm": timm, "classy": classy}


def _dropins() -> dict[str, type]:
    """``"<package>.<name>"`` -> class, for every ``torch.optim.Optimizer`` in ``__all__``."""
    out = {}
    for short, module in PACKAGES.items():
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer):
                out[f"{short}.{name}"] = obj
    return out


DROPINS = _dropins()
NAMES = sorted(DROPINS)

# Drop-ins whose step is not compiled (fullgraph), and why. Exact: see test_dropin_compiles.
NOT_COMPILED = {
    "torch_optim.LBFGS": (
        "closure-driven: each step is a line search of many closure evaluations (forward and"
        " backward); subclasses torch.optim.Optimizer directly, no compile_step"
    ),
    "torch_optim.Muon": (
        "torch.optim.Muon's fused Newton-Schulz (baddbmm with Python-float coefficients) reads"
        " its coefficients with ns_coeffs.tolist(), which dynamo does not trace on a float tensor"
    ),
    "torch_optim.SparseAdam": (
        "takes sparse COO gradients, which dynamo does not trace ('Attempted to wrap sparse"
        " Tensor')"
    ),
    "timm.Kron": (
        "draws from a Python random.Random whose state is a tensor of the optimizer state"
        " (rebuilt with .tolist() at each step: data-dependent Python, not traceable)"
    ),
    "timm.Lookahead": (
        "a wrapper of an optimizer instance, no compile_step: compile the base optimizer"
        " (Lookahead(AdamW(...).compile_step())); the slow-weight sync every k steps is eager"
    ),
}

# Constructor arguments beyond the defaults.
KWARGS: dict[str, dict[str, Any]] = {
    "timm.SGDP": {"lr": 0.1},  # no default learning rate (timm's)
    # bfloat16 momentum by default: the compiled and eager steps round it differently (1 ulp).
    "timm.AdafactorBigVision": {"momentum_dtype": torch.float64},
    # Fewer Newton-Schulz iterations: each is traced (unrolled); 5 take twice as long.
    "timm.Muon": {"ns_steps": 2},
    "timm.AdaMuon": {"ns_steps": 2},
}
# Parameter shapes (default: a matrix and a scalar; tracing time grows with the number of
# tensors for chains that are not element-wise).
SHAPES: dict[str, tuple[tuple[int, ...], ...]] = {
    "torch_optim.Muon": ((3, 4),),  # 2-d parameters only (as torch.optim.Muon)
    "torch_optim.SparseAdam": ((3, 4), (4,)),
}
DEFAULT_SHAPES: tuple[tuple[int, ...], ...] = ((3, 4), ())
STEPS = 3
TOL = {"rtol": 1e-6, "atol": 1e-9}


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()


def _graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def _params(shapes) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64)) for s in shapes]


def _loss(params) -> torch.Tensor:
    # Curved (Adahessian's Hessian diagonal is not constant), gradients of mixed signs.
    return sum(((p - 0.3).square() + p.sin()).sum() for p in params)


def _build(name: str, params, compiled: bool) -> torch.optim.Optimizer:
    cls = DROPINS[name]
    if cls is timm.Lookahead:
        base = torch_optim.AdamW(params, lr=0.1)
        return cls(base.compile_step(backend="eager") if compiled else base, k=2)
    opt = cls(params, **KWARGS.get(name, {}))
    return opt.compile_step(backend="eager") if compiled else opt


def _step(opt, params, sparse=False) -> None:
    opt.zero_grad()
    # timm's convention: Hessian-based optimizers (Adahessian) need a differentiable gradient.
    _loss(params).backward(create_graph=getattr(opt, "is_second_order", False))
    if sparse:
        for p in params:
            p.grad = p.grad.to_sparse()
    opt.step()


def _tensors(sd) -> dict[tuple, torch.Tensor]:
    return {
        (i, k): v
        for i, s in sd["state"].items()
        for k, v in s.items()
        if isinstance(v, torch.Tensor)
    }


def test_enumeration_finds_every_dropin():
    counts = {pkg: sum(n.startswith(pkg + ".") for n in NAMES) for pkg in PACKAGES}
    # torch.optim's 15 (swa_utils is a module); timm's 26 classes; Classy's two
    # torch.optim.Optimizers (its ClassyOptimizers build drop-ins: see the test below).
    assert counts["torch_optim"] >= 15 and counts["timm"] >= 26 and counts["classy"] >= 2, counts
    assert {"torch_optim.AdamW", "timm.Lamb", "classy.LARCSGD"} <= set(NAMES)
    assert "timm.create_optimizer_v2" not in NAMES  # a factory, not a class
    assert set(NOT_COMPILED) <= set(NAMES)
    assert all(issubclass(DROPINS[n], TorchOptimizer) for n in NAMES if n not in NOT_COMPILED)


@pytest.mark.parametrize("name", NAMES)
def test_dropin_compiles(name):
    """Compiled (one graph) and equal to the eager step; or listed, and then not compilable."""
    shapes = SHAPES.get(name, DEFAULT_SHAPES)
    sparse = name == "torch_optim.SparseAdam"
    if name in NOT_COMPILED:
        cls = DROPINS[name]
        if not hasattr(cls, "compile_step"):
            return  # refused: nothing to compile
        # compile_step refuses up front, with the reason ...
        assert cls._not_compilable is not None
        with pytest.raises(NotImplementedError, match="cannot be compiled"):
            _build(name, _params(shapes), compiled=True)
        # ... which still holds: forced past the refusal, dynamo fails on the step.
        params = _params(shapes)
        opt = cls(params, **KWARGS.get(name, {}))
        opt._not_compilable = None
        opt.compile_step(backend="eager")
        with pytest.raises(torch._dynamo.exc.TorchDynamoException):
            _step(opt, params, sparse)
        return
    p_e, p_c = _params(shapes), _params(shapes)
    opt_e, opt_c = _build(name, p_e, compiled=False), _build(name, p_c, compiled=True)
    for _ in range(STEPS):
        _step(opt_e, p_e, sparse)
        _step(opt_c, p_c, sparse)
        for a, b in zip(p_c, p_e):
            torch.testing.assert_close(a.detach(), b.detach(), **TOL)
    assert not all(torch.equal(a, b) for a, b in zip(p_e, _params(shapes)))  # it moved
    assert _graphs() == 1  # compiled once (not run eagerly), never recompiled
    s_e, s_c = _tensors(opt_e.state_dict()), _tensors(opt_c.state_dict())
    assert s_c.keys() == s_e.keys()
    for key in s_e:
        torch.testing.assert_close(s_c[key], s_e[key], **TOL)


def test_lookahead_over_a_compiled_base():
    """Lookahead is listed (no compile_step of its own), but its base optimizer compiles."""
    p_e, p_c = _params(DEFAULT_SHAPES), _params(DEFAULT_SHAPES)
    opt_e = _build("timm.Lookahead", p_e, compiled=False)
    opt_c = _build("timm.Lookahead", p_c, compiled=True)
    for _ in range(STEPS):  # k=2: one synchronisation
        _step(opt_e, p_e)
        _step(opt_c, p_c)
    for a, b in zip(p_c, p_e):
        torch.testing.assert_close(a.detach(), b.detach(), **TOL)
    assert _graphs() == 1


def test_compile_step_is_fullgraph_by_default(monkeypatch):
    """A graph break raises instead of falling back to eager: compile_step passes
    fullgraph=True (and dynamic=False) unless told otherwise."""
    seen: list[dict[str, Any]] = []
    real = torch.compile

    def spy(fn, **options):
        seen.append(options)
        return real(fn, **options)

    monkeypatch.setattr(torch, "compile", spy)
    params = _params(((3,),))
    _step(torch_optim.SGD(params, lr=0.1).compile_step(backend="eager"), params)
    assert seen and all(o["fullgraph"] is True and o["dynamic"] is False for o in seen)


def test_classy_optimizers_build_enumerated_dropins():
    """Classy's ClassyOptimizers are not torch optimizers: each builds one of the drop-ins above
    (ZeRO shards another ClassyOptimizer's and needs torch.distributed)."""
    built = set()
    for name in classy.__all__:
        cls = getattr(classy, name)
        if (
            not inspect.isclass(cls)
            or not issubclass(cls, classy.ClassyOptimizer)
            or inspect.isabstract(cls)
            or cls is classy.ZeRO
        ):
            continue
        opt = cls()
        opt.set_param_groups(_params(((3,),)))
        built.add(name)
        assert type(opt.optimizer) in DROPINS.values(), (name, type(opt.optimizer))
        assert not any(DROPINS[n] is type(opt.optimizer) for n in NOT_COMPILED)
    assert len(built) >= 5, built
