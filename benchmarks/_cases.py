"""The benchmark's cases (algorithms) and, for each, the implementations that run it.

Each implementation is a *builder*: ``builder(ctx) -> Impl``, given a :class:`Ctx` (the
parameters, the fixed gradients, the device), returning an :class:`Impl` (a ``step()`` callable
and a way to find its state), or raising :class:`Skip` with the reason it cannot run here (a
package not installed, a feature this torch / device / version of optax_torch lacks).

Hyperparameters are the same for every implementation of a case where the implementations
expose them; where a peer's algorithm differs (Adafactor's variants, RMSprop's ``eps``
placement), the row label says which variant runs. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

# ------------------------------------------------------------------------------------------------
# Plumbing


class Skip(Exception):
    """This implementation cannot run here (missing package, unsupported feature)."""


class NotApplicable(Skip):
    """This implementation does not apply to the case (left out of the report's skip lists)."""


@dataclass
class Ctx:
    """What a builder gets: its own parameters are cloned from ``params`` on request."""

    params: list[torch.Tensor]
    grads: list[torch.Tensor]
    device: torch.device

    def torch_params(self, own_grads: bool = False) -> list[torch.Tensor]:
        """Fresh leaf parameters whose ``.grad`` are the fixed gradients (shared unless
        ``own_grads``: implementations that modify gradients in place get their own copy)."""
        ps = [p.clone().requires_grad_() for p in self.params]
        for p, g in zip(ps, self.grads):
            p.grad = g.clone() if own_grads else g
        return ps

    def dicts(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(params, grads)`` as dicts ``{"p0": ..., ...}``: fresh parameters, shared grads."""
        return (
            {f"p{i}": p.clone() for i, p in enumerate(self.params)},
            {f"p{i}": g for i, g in enumerate(self.grads)},
        )


@dataclass
class Impl:
    key: str
    label: str
    step: Callable[[], Any]
    state: Callable[[], Any]
    compiled: bool = False
    # the current parameters (the suite checks that a step changes them)
    params: Callable[[], Any] | None = None
    # filled in by the timing loop
    rounds: list[list[float]] = field(default_factory=list)
    first_step_s: float = float("nan")


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except Exception as e:  # ImportError, or a broken install raising anything at import
        raise Skip(f"{module} not importable: {type(e).__name__}: {str(e)[:120]}") from e


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return "?"


def _kw(kw: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in kw.items())


# ------------------------------------------------------------------------------------------------
# Cases: hyperparameters, our transformation, and the peers' spellings


LR = 1e-3
WD = 1e-2


def _clip_adamw(
    learning_rate: Any,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = WD,
    max_norm: float = 1.0,
):
    """The ``clip+adamw`` case as an optimizer factory (for the adapter)."""
    import optax_torch

    return optax_torch.chain(
        optax_torch.clip_by_global_norm(max_norm),
        optax_torch.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay),
    )


@dataclass(frozen=True)
class Case:
    """One algorithm: ours as ``factory(**hp)``, torch's name (if torch has it) and kwargs."""

    name: str
    title: str
    factory: Callable[[], Callable[..., Any]]
    hp: dict[str, Any]
    torch_name: str | None = None
    torch_kw: dict[str, Any] = field(default_factory=dict)
    clip: bool = False  # clip_by_global_norm(1.0) before the optimizer


def _otx(name: str) -> Callable[[], Callable[..., Any]]:
    return lambda: getattr(importlib.import_module("optax_torch"), name)


CASES: dict[str, Case] = {
    "adamw": Case(
        "adamw",
        f"AdamW (lr={LR}, weight_decay={WD})",
        _otx("adamw"),
        {"lr": LR, "weight_decay": WD},
        "AdamW",
        {"lr": LR, "weight_decay": WD},
    ),
    "sgdm": Case(
        "sgdm",
        "SGD with momentum 0.9 (lr=1e-2)",
        _otx("sgd"),
        {"lr": 1e-2, "momentum": 0.9},
        "SGD",
        {"lr": 1e-2, "momentum": 0.9},
    ),
    "lamb": Case(
        "lamb",
        f"Lamb (lr={LR}, weight_decay={WD}, eps=1e-6, no gradient clipping)",
        _otx("lamb"),
        {"lr": LR, "weight_decay": WD, "eps": 1e-6},
    ),
    "lion": Case(
        "lion",
        f"Lion (lr=1e-4, betas=(0.9, 0.99), weight_decay={WD})",
        _otx("lion"),
        {"lr": 1e-4, "weight_decay": WD},
    ),
    "adafactor": Case(
        "adafactor",
        "Adafactor (lr=1e-2; each library's own variant and defaults, no momentum)",
        _otx("adafactor"),
        {"lr": 1e-2},
        "Adafactor",
        {"lr": 1e-2},
    ),
    "rmsprop": Case(
        "rmsprop",
        "RMSprop (lr=1e-3, alpha=0.99, eps=1e-8 added after the square root, as torch)",
        _otx("rmsprop"),
        {"lr": LR, "decay": 0.99, "eps": 1e-8, "eps_in_sqrt": False},
        "RMSprop",
        {"lr": LR, "alpha": 0.99, "eps": 1e-8},
    ),
    "clip+adamw": Case(
        "clip+adamw",
        f"chain(clip_by_global_norm(1.0), adamw(lr={LR}, weight_decay={WD}))",
        lambda: _clip_adamw,
        {"lr": LR, "weight_decay": WD},
        "AdamW",
        {"lr": LR, "weight_decay": WD},
        clip=True,
    ),
}


def _ours_kwargs(case: Case) -> dict[str, Any]:
    """The case's hyperparameters spelled for the factory (``lr`` -> ``learning_rate``)."""
    hp = dict(case.hp)
    hp["learning_rate"] = hp.pop("lr")
    return hp


# ------------------------------------------------------------------------------------------------
# Ours


def functional(case: Case, ctx: Ctx) -> Impl:
    """``tx.update`` + ``apply_updates``, the old state donated (``tree.donate``) if available."""
    import optax_torch

    tx = case.factory()(**_ours_kwargs(case))
    params, grads = ctx.dicts()
    box = {"params": params, "state": tx.init(params)}
    donate = getattr(optax_torch.tree, "donate", None)

    def step():
        ctxm = (
            donate(box["state"], exclude=(box["params"], grads))
            if donate is not None
            else contextlib.nullcontext()
        )
        with ctxm:
            updates, box["state"] = tx.update(grads, box["state"], box["params"])
        box["params"] = optax_torch.apply_updates(box["params"], updates)

    how = "tree.donate(state)" if donate is not None else "no donation"
    return Impl(
        "functional",
        f"optax_torch functional ({how})",
        step,
        lambda: box["state"],
        params=lambda: list(box["params"].values()),
    )


# optax_torch.compile_update(tx) -> step(grads, state, params) -> (params, state), in place
COMPILED_UPDATE_NAMES = ("compile_update", "compiled_update")


def functional_compiled(case: Case, ctx: Ctx) -> Impl:
    """optax_torch's compiled functional helper, if the library has one (found by name)."""
    import optax_torch

    for name in COMPILED_UPDATE_NAMES:
        helper = getattr(optax_torch, name, None)
        if helper is not None:
            break
    else:
        raise Skip(
            f"optax_torch has no compiled update helper ({', '.join(COMPILED_UPDATE_NAMES)})"
        )
    tx = case.factory()(**_ours_kwargs(case))
    params, grads = ctx.dicts()
    box = {"params": params, "state": tx.init(params)}
    try:
        fn = helper(tx)
    except TypeError as e:
        raise Skip(f"optax_torch.{name}(tx) failed: {e}") from e

    def step():
        box["params"], box["state"] = fn(grads, box["state"], box["params"])

    return Impl(
        "functional-compiled",
        f"optax_torch.{name}",
        step,
        lambda: box["state"],
        compiled=True,
        params=lambda: list(box["params"].values()),
    )


def _adapter_kwargs(case: Case) -> dict[str, Any]:
    return dict(case.hp)


def adapter(case: Case, ctx: Ctx) -> Impl:
    from optax_torch.wrappers import TorchOptimizer

    ps = ctx.torch_params()
    opt = TorchOptimizer(ps, case.factory(), **_adapter_kwargs(case))
    return Impl(
        "adapter", "optax_torch TorchOptimizer", opt.step, lambda: opt.state, params=lambda: ps
    )


def compiled(case: Case, ctx: Ctx) -> Impl:
    from optax_torch.wrappers import TorchOptimizer

    if "compile" not in inspect.signature(TorchOptimizer.__init__).parameters:
        raise Skip("TorchOptimizer has no compile= argument in this version")
    ps = ctx.torch_params()
    opt = TorchOptimizer(ps, case.factory(), compile=True, **_adapter_kwargs(case))
    return Impl(
        "compiled",
        "optax_torch TorchOptimizer(compile=True)",
        opt.step,
        lambda: opt.state,
        compiled=True,
        params=lambda: ps,
    )


# Our drop-ins: (module, class, kwargs) per case.
_DROPINS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "adamw": ("optax_torch.compat.torch_optim", "AdamW", CASES["adamw"].torch_kw),
    "sgdm": ("optax_torch.compat.torch_optim", "SGD", CASES["sgdm"].torch_kw),
    "rmsprop": ("optax_torch.compat.torch_optim", "RMSprop", CASES["rmsprop"].torch_kw),
    "adafactor": ("optax_torch.compat.torch_optim", "Adafactor", CASES["adafactor"].torch_kw),
    "lamb": (
        "optax_torch.compat.timm",
        "Lamb",
        {"lr": LR, "weight_decay": WD, "eps": 1e-6, "max_grad_norm": None},
    ),
    "lion": ("optax_torch.compat.timm", "Lion", {"lr": 1e-4, "weight_decay": WD}),
}
_TIMM_KW: dict[str, tuple[str, dict[str, Any]]] = {
    "lamb": _DROPINS["lamb"][1:],  # type: ignore[dict-item]
    "lion": _DROPINS["lion"][1:],  # type: ignore[dict-item]
    "adafactor": ("Adafactor", {"lr": 1e-2}),
}


def dropin(case: Case, ctx: Ctx) -> Impl:
    if case.name not in _DROPINS:
        raise NotApplicable("no drop-in class for this chain")
    module, cls, kw = _DROPINS[case.name]
    ps = ctx.torch_params()
    opt = getattr(_require(module), cls)(ps, **kw)
    short = module.rsplit(".", 1)[-1]
    label = f"optax_torch.compat.{short}.{cls}"
    return Impl("dropin", label, opt.step, lambda: opt.state, params=lambda: ps)


def dropin_timm(case: Case, ctx: Ctx) -> Impl:
    """Our timm drop-in where the torch.optim one is the ``dropin`` row (Adafactor)."""
    if case.name != "adafactor":
        raise NotApplicable("only for Adafactor (timm's variant)")
    cls, kw = _TIMM_KW["adafactor"]
    ps = ctx.torch_params()
    opt = getattr(_require("optax_torch.compat.timm"), cls)(ps, **kw)
    label = f"optax_torch.compat.timm.{cls}"
    return Impl("dropin-timm", label, opt.step, lambda: opt.state, params=lambda: ps)


# ------------------------------------------------------------------------------------------------
# torch.optim


def _torch_step(opt: Any, ps: list[torch.Tensor], clip: bool, foreach: bool | None):
    if not clip:
        return opt.step

    def step():
        torch.nn.utils.clip_grad_norm_(ps, 1.0, foreach=foreach)
        opt.step()

    return step


def _torch_impl(case: Case, ctx: Ctx, key: str, **flags: Any) -> Impl:
    if case.torch_name is None:
        raise NotApplicable(f"torch.optim has no {case.name}")
    kw = {**case.torch_kw, **flags}
    cls = getattr(torch.optim, case.torch_name, None)
    if cls is None:
        raise Skip(f"torch {torch.__version__} has no torch.optim.{case.torch_name}")
    if "fused" in flags and "fused" not in inspect.signature(cls.__init__).parameters:
        raise NotApplicable(f"torch.optim.{case.torch_name} has no fused implementation")
    ps = ctx.torch_params(own_grads=case.clip)
    try:
        opt = cls(ps, **kw)
    except (RuntimeError, ValueError, TypeError) as e:
        raise Skip(f"torch.optim.{case.torch_name}({_kw(flags)}): {str(e)[:120]}") from e
    foreach = flags.get("foreach") if "fused" not in flags else True
    clip = "clip_grad_norm_ + " if case.clip else ""
    label = f"{clip}torch.optim.{case.torch_name}({_kw(flags)})"
    step = _torch_step(opt, ps, case.clip, foreach)
    return Impl(key, label, step, lambda: opt.state, params=lambda: ps)


def torch_forloop(case: Case, ctx: Ctx) -> Impl:
    return _torch_impl(case, ctx, "for-loop", foreach=False)


def torch_foreach(case: Case, ctx: Ctx) -> Impl:
    return _torch_impl(case, ctx, "foreach", foreach=True)


def torch_fused(case: Case, ctx: Ctx) -> Impl:
    impl = _torch_impl(case, ctx, "fused", fused=True)
    try:
        impl.step()  # support is checked lazily by some optimizers / devices
    except (RuntimeError, ValueError, NotImplementedError) as e:
        raise Skip(f"fused {case.torch_name} unsupported here: {str(e)[:120]}") from e
    return impl


def foreach_adamw_yardstick(case: Case, ctx: Ctx) -> Impl:
    """torch's foreach AdamW, the ratio baseline of cases torch does not implement."""
    if case.torch_name is not None:
        raise NotApplicable("torch has this algorithm: its own foreach is the baseline")
    impl = _torch_impl(CASES["adamw"], ctx, "foreach-adamw", foreach=True)
    impl.label = "torch.optim.AdamW(foreach=True) (yardstick)"
    return impl


def torch_compiled(case: Case, ctx: Ctx) -> Impl:
    """``torch.compile`` of torch's foreach step (clip included for clip+adamw)."""
    if case.torch_name is None:
        raise NotApplicable(f"torch.optim has no {case.name}")
    impl = _torch_impl(case, ctx, "torch-compile", foreach=True)
    impl.step = torch.compile(impl.step)
    impl.label = f"torch.compile({impl.label}.step)"
    impl.compiled = True
    return impl


# ------------------------------------------------------------------------------------------------
# Peers: timm, pytorch_optimizer, torchopt, heavyball


def timm_peer(case: Case, ctx: Ctx) -> Impl:
    if case.name not in _TIMM_KW:
        raise NotApplicable("timm benchmarked only where torch lacks the algorithm")
    timm_optim = _require("timm.optim")
    cls, kw = _TIMM_KW[case.name]
    kw = dict(kw)
    if case.name == "lion":
        kw["foreach"] = True
    ps = ctx.torch_params()
    opt = getattr(timm_optim, cls)(ps, **kw)
    label = f"timm.optim.{cls}({_kw(kw)}) {_version('timm')}"
    return Impl("timm", label, opt.step, lambda: opt.state, params=lambda: ps)


_PYOPT: dict[str, tuple[str, dict[str, Any]]] = {
    "lamb": ("Lamb", {"lr": LR, "weight_decay": WD, "eps": 1e-6, "max_grad_norm": 0.0}),
    "lion": ("Lion", {"lr": 1e-4, "weight_decay": WD}),
    "adafactor": (
        "AdaFactor",
        {"lr": 1e-2, "betas": (None, 0.999), "relative_step": False},
    ),
}


def pytorch_optimizer_peer(case: Case, ctx: Ctx) -> Impl:
    if case.name not in _PYOPT:
        raise NotApplicable("pytorch_optimizer benchmarked only where torch lacks the algorithm")
    po = _require("pytorch_optimizer")
    cls, kw = _PYOPT[case.name]
    kw = {**kw, "foreach": True}
    ps = ctx.torch_params()
    try:
        opt = getattr(po, cls)(ps, **kw)
    except TypeError:
        kw.pop("foreach")
        opt = getattr(po, cls)(ps, **kw)
    label = f"pytorch_optimizer.{cls}({_kw(kw)}) {_version('pytorch_optimizer')}"
    return Impl("pytorch_optimizer", label, opt.step, lambda: opt.state, params=lambda: ps)


def torchopt_peer(case: Case, ctx: Ctx) -> Impl:
    """torchopt's functional API (``tx.update`` + ``torchopt.apply_updates``, in place)."""
    torchopt = _require("torchopt")
    makers = {
        "adamw": lambda: torchopt.adamw(LR, weight_decay=WD),
        "sgdm": lambda: torchopt.sgd(1e-2, momentum=0.9),
        "rmsprop": lambda: torchopt.rmsprop(LR, alpha=0.99, eps=1e-8),
        "clip+adamw": lambda: torchopt.chain(
            torchopt.clip_grad_norm(1.0), torchopt.adamw(LR, weight_decay=WD)
        ),
    }
    if case.name not in makers:
        raise NotApplicable(f"torchopt {_version('torchopt')} has no {case.name}")
    tx = makers[case.name]()
    params = tuple(p.clone() for p in ctx.params)
    grads = tuple(ctx.grads)
    box = {"state": tx.init(params)}

    def step():
        updates, box["state"] = tx.update(grads, box["state"], params=params, inplace=True)
        torchopt.apply_updates(params, updates, inplace=True)

    label = (
        f"torchopt.{case.name.replace('sgdm', 'sgd')} functional, inplace {_version('torchopt')}"
    )
    return Impl("torchopt", label, step, lambda: box["state"], params=lambda: params)


_HEAVYBALL = {
    "adamw": ("AdamW", {"lr": LR, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": WD}),
    "sgdm": ("SGD", {"lr": 1e-2, "beta": 0.9}),
    "rmsprop": ("RMSprop", {"lr": LR, "betas": (0.9, 0.99), "eps": 1e-8}),
}


def _heavyball(case: Case, ctx: Ctx, mode: str | None) -> Impl:
    if case.name not in _HEAVYBALL:
        raise NotApplicable(f"heavyball has no plain {case.name}")
    hb = _require("heavyball")
    utils = importlib.import_module("heavyball.utils")
    cls, kw = _HEAVYBALL[case.name]
    ps = ctx.torch_params()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = getattr(hb, cls)(ps, **kw)
    grads = list(ctx.grads)

    def step():
        # heavyball sets every .grad to None after its step (to free memory): give them back
        for p, g in zip(ps, grads):
            p.grad = g
        saved = utils.compile_mode
        utils.compile_mode = mode  # read at call time by heavyball's compiled blocks
        try:
            opt.step()
        finally:
            utils.compile_mode = saved

    if mode is None:
        key, how = "heavyball", "eager (compile_mode=None)"
    else:
        key, how = "heavyball-compiled", f"compile_mode={mode!r}"
    label = f"heavyball.{cls} {how} {_version('heavyball')}"
    return Impl(key, label, step, lambda: opt.state, compiled=mode is not None, params=lambda: ps)


def heavyball_eager(case: Case, ctx: Ctx) -> Impl:
    return _heavyball(case, ctx, None)


def heavyball_compiled(case: Case, ctx: Ctx) -> Impl:
    return _heavyball(case, ctx, os.environ.get("BENCH_HEAVYBALL_MODE", "default"))


# ------------------------------------------------------------------------------------------------
# optax under jax.jit (always in a process of its own)


def jax_optax(case: Case, ctx: Ctx) -> Impl:
    jax = _require("jax")
    optax = _require("optax")
    makers = {
        "adamw": lambda: optax.adamw(LR, weight_decay=WD),
        "sgdm": lambda: optax.sgd(1e-2, momentum=0.9),
        "lamb": lambda: optax.lamb(LR, eps=1e-6, weight_decay=WD),
        "lion": lambda: optax.lion(1e-4, weight_decay=WD),
        "adafactor": lambda: optax.adafactor(1e-2),
        "rmsprop": lambda: optax.rmsprop(LR, decay=0.99, eps=1e-8, eps_in_sqrt=False),
        "clip+adamw": lambda: optax.chain(
            optax.clip_by_global_norm(1.0), optax.adamw(LR, weight_decay=WD)
        ),
    }
    try:
        tx = makers[case.name]()
    except TypeError as e:
        raise Skip(f"optax {_version('optax')}: {e}") from e
    ps = {f"p{i}": jax.numpy.asarray(p.cpu().numpy()) for i, p in enumerate(ctx.params)}
    gs = {f"p{i}": jax.numpy.asarray(g.cpu().numpy()) for i, g in enumerate(ctx.grads)}

    def update(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    jitted = jax.jit(update, donate_argnums=(0, 1))
    box = {"params": ps, "state": tx.init(ps)}

    def step():
        with warnings.catch_warnings():  # "donated buffers were not usable" on some backends
            warnings.simplefilter("ignore")
            box["params"], box["state"] = jitted(box["params"], box["state"], gs)
        jax.block_until_ready((box["params"], box["state"]))

    platform = jax.devices()[0].platform
    label = f"optax under jax.jit, donated ({platform}, optax {_version('optax')})"
    params = lambda: [box["params"]["p0"]]  # noqa: E731
    return Impl("jax", label, step, lambda: box["state"], compiled=True, params=params)


# ------------------------------------------------------------------------------------------------
# The implementations, in table order

IMPLS: dict[str, Callable[[Case, Ctx], Impl]] = {
    "foreach": torch_foreach,
    "foreach-adamw": foreach_adamw_yardstick,
    "for-loop": torch_forloop,
    "fused": torch_fused,
    "functional": functional,
    "adapter": adapter,
    "dropin": dropin,
    "dropin-timm": dropin_timm,
    "compiled": compiled,
    "functional-compiled": functional_compiled,
    "torch-compile": torch_compiled,
    "timm": timm_peer,
    "pytorch_optimizer": pytorch_optimizer_peer,
    "torchopt": torchopt_peer,
    "heavyball": heavyball_eager,
    "heavyball-compiled": heavyball_compiled,
    "jax": jax_optax,
}
OURS = ("functional", "adapter", "dropin", "dropin-timm", "compiled", "functional-compiled")
# Peers that compile with torch.compile (skipped by --no-torch-compile and --quick).
TORCH_COMPILE_PEERS = ("torch-compile", "heavyball-compiled")
# Our compiled entries (skipped by --no-compile and --quick).
OUR_COMPILED = ("compiled", "functional-compiled")
# Timed in a process of their own: XLA's CPU thread pool, once started, slows torch's kernels in
# the same process (foreach AdamW 27 -> 48 ms on "tf" with JAX stepping alongside).
ISOLATED = ("jax",)


def baseline_key(case: Case) -> str:
    """The ratio column's denominator: torch's foreach of the algorithm, else foreach AdamW."""
    return "foreach" if case.torch_name is not None else "foreach-adamw"
