"""``TorchOptimizer`` and the drop-ins under ``DistributedDataParallel`` and
``ZeroRedundancyOptimizer`` (ZeRO-1): 2 gloo ranks on CPU, float64 (issue 12).

One spawn runs every DDP scenario and one every ZeRO scenario (a spawn costs seconds); the
module-scoped fixtures return ``{scenario: flat parameters}`` per rank and the tests below check
them one by one. Every run trains the same two-layer MLP (two param groups: weights, and biases
without weight decay) for ``STEPS`` steps, each rank on its own half of the batch, with a
``StepLR`` schedule and, at step ``RESUME_AT``, a checkpoint round trip: the state dict (and the
scheduler's) is serialised on rank 0 (``torch.save`` / ``torch.load(weights_only=True)``),
broadcast, and loaded into a new optimizer on every rank, which continues.

Checked: the ranks agree bit for bit; an optax_torch optimizer equals the ``torch.optim`` (or
timm) algorithm run the same way, and a single-process run on the concatenated batch; the
compiled step (``backend="aot_eager"``) equals the eager one; under ZeRO the trajectory equals
the unsharded one, and the consolidated state loads into an unsharded optimizer and into a new
ZeRO optimizer and continues identically.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from typing import Any

import _dist
import pytest
import torch
import torch.distributed as dist
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel

import optax_torch
from optax_torch import TorchOptimizer
from optax_torch.compat import timm as ours_timm
from optax_torch.compat import torch_optim as ours
from optax_torch.compat.classy import optim as ours_classy

WORLD = 2
BATCH = 4  # per rank
STEPS = 5
RESUME_AT = 3
AOT = {"backend": "aot_eager"}  # dynamo + functionalisation, no code generation: compiles fast
TOL = 1e-12  # float64, 5 steps: the measured differences are ~1e-16
GRAD_CLIP = 1.0


# --------------------------------------------------------------------------------------------
# The model, the data, the loss
# --------------------------------------------------------------------------------------------


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)
    ).double()


def _groups(model: torch.nn.Module) -> list[dict[str, Any]]:
    named = list(model.named_parameters())
    return [
        {"params": [p for n, p in named if n.endswith("weight")]},
        {"params": [p for n, p in named if n.endswith("bias")], "weight_decay": 0.0},
    ]


def _batch(step: int, rank: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Step ``step``'s batch: rank ``rank``'s half, or the whole batch for ``None``."""
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(WORLD * BATCH, 4, generator=g, dtype=torch.float64)
    y = torch.randn(WORLD * BATCH, 3, generator=g, dtype=torch.float64)
    if rank is None:
        return x, y
    return x[rank * BATCH : (rank + 1) * BATCH], y[rank * BATCH : (rank + 1) * BATCH]


def _loss(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # x10: gradient norms above GRAD_CLIP, so that clipping is exercised.
    return 10.0 * (net(x) - y).square().mean()


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


# --------------------------------------------------------------------------------------------
# Optimizers: ours and the reference of each
# --------------------------------------------------------------------------------------------


def clip_adamw(
    learning_rate: float, weight_decay: float = 1e-4
) -> optax_torch.GradientTransformation:
    """A factory of a chain: its named arguments become param-group keys (``lr`` included)."""
    return optax_torch.chain(
        optax_torch.clip_by_global_norm(GRAD_CLIP),
        optax_torch.adamw(learning_rate, weight_decay=weight_decay),
    )


_CLIPPED: list[int] = []  # steps where the reference clipped (per process)


class ClippedAdamW(torch.optim.AdamW):
    """torch's AdamW after optax's ``clip_by_global_norm`` over each param group."""

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for group in self.param_groups:
            grads = [p.grad for p in group["params"] if p.grad is not None]
            norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
            if norm > GRAD_CLIP:
                _CLIPPED.append(1)
                torch._foreach_mul_(grads, GRAD_CLIP / norm)
        return super().step(closure)


def _timm_optim():
    import timm.optim  # the parent tells the worker whether it needs conftest's shim

    return timm.optim


ADAMW = {"lr": 1e-2, "weight_decay": 0.1}
SGD = {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}
RMSPROP = {"lr": 1e-2, "alpha": 0.9, "momentum": 0.5, "centered": True, "weight_decay": 1e-3}
LAMB = {"lr": 1e-2, "weight_decay": 0.1}
LION = {"lr": 1e-3, "weight_decay": 0.1}

# name -> (ours(groups, compile), reference(groups)); compile: None (eager) or options.
OPTIMIZERS: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "TorchOptimizer(adamw)": (
        lambda g, c: TorchOptimizer(g, optax_torch.adamw, compile=c or False, **ADAMW),
        lambda g: torch.optim.AdamW(g, **ADAMW),
    ),
    "TorchOptimizer(clip+adamw)": (
        lambda g, c: TorchOptimizer(g, clip_adamw, compile=c or False, **ADAMW),
        lambda g: ClippedAdamW(g, **ADAMW),
    ),
    "AdamW": (
        lambda g, c: _compiled(ours.AdamW(g, **ADAMW), c),
        lambda g: torch.optim.AdamW(g, **ADAMW),
    ),
    "SGD": (lambda g, c: _compiled(ours.SGD(g, **SGD), c), lambda g: torch.optim.SGD(g, **SGD)),
    "RMSprop": (
        lambda g, c: _compiled(ours.RMSprop(g, **RMSPROP), c),
        lambda g: torch.optim.RMSprop(g, **RMSPROP),
    ),
    "timm.Lamb": (
        lambda g, c: _compiled(ours_timm.Lamb(g, **LAMB), c),
        lambda g: _timm_optim().Lamb(g, **LAMB),
    ),
    "timm.Lion": (
        lambda g, c: _compiled(ours_timm.Lion(g, **LION), c),
        lambda g: _timm_optim().Lion(g, **LION),
    ),
}


def _compiled(opt, compile):
    return opt if compile is None else opt.compile_step(**compile)


class Run:
    """An optimizer and its ``StepLR`` (unless ``schedule=False``), stepped, saved and loaded
    as one."""

    def __init__(self, opt, schedule: bool = True):
        self.opt = opt
        self.sched = (
            torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5) if schedule else None
        )

    def step(self, t: int) -> None:
        del t
        self.opt.step()
        if self.sched is not None:
            self.sched.step()

    def save(self) -> Any:
        sched = self.sched.state_dict() if self.sched is not None else None
        return {"opt": self.opt.state_dict(), "sched": sched}

    def load(self, saved: Any) -> None:
        self.opt.load_state_dict(saved["opt"])
        if self.sched is not None:
            self.sched.load_state_dict(saved["sched"])


class ClassyRun(Run):
    """A Classy Vision optimizer: ``step(where=...)``, ``get/set_classy_state`` (its own
    schedules of ``where``: constant here)."""

    def __init__(self, opt):
        self.opt = opt

    def step(self, t: int) -> None:
        self.opt.step(where=t / STEPS)

    def save(self) -> Any:
        return self.opt.get_classy_state()

    def load(self, saved: Any) -> None:
        self.opt.set_classy_state(saved)


def _classy_sgd(groups):
    opt = ours_classy.SGD(**SGD)
    opt.set_param_groups(groups)
    return ClassyRun(opt)


# --------------------------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------------------------


SAME = "same"


def _through_bytes(saved: Any) -> Any:
    buf = io.BytesIO()
    torch.save(saved, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _train(
    make: Callable[[list[dict[str, Any]]], Run],
    rank: int | None,
    *,
    ddp: bool = True,
    resume: Callable[[list[dict[str, Any]]], Run] | str | None = None,
    save: Callable[[Run], Any] | None = None,
) -> torch.Tensor:
    """Trains ``STEPS`` steps and returns the final parameters, flat.

    ``rank`` ``None``: one process on the whole batch. Otherwise rank ``rank``'s half, with
    gradients averaged by DDP (``ddp``) or by hand. At ``RESUME_AT`` the state saved by ``save``
    (default: ``run.save()``) on rank 0 is loaded into ``resume(groups)`` (default: ``make``),
    which continues; ``resume=SAME`` loads it back into the same optimizer (a compiled one keeps
    its compiled step: the round trip costs no second compile).
    """
    model = _model()
    net = DistributedDataParallel(model) if ddp and rank is not None else model
    run = make(_groups(model))
    for t in range(STEPS):
        if t == RESUME_AT:
            saved = save(run) if save is not None else run.save()
            if rank is None:
                saved = _through_bytes(saved)
            else:
                box = [_through_bytes(saved) if rank == 0 else None]
                dist.broadcast_object_list(box, src=0)
                saved = box[0]
            if resume != SAME:
                run = (resume or make)(_groups(model))  # type: ignore[operator]
            run.load(saved)
        x, y = _batch(t, rank)
        model.zero_grad(set_to_none=True)
        _loss(net, x, y).backward()
        if rank is not None and not ddp:
            for p in model.parameters():
                assert p.grad is not None
                dist.all_reduce(p.grad)
                p.grad /= WORLD
        run.step(t)
    return _flat(model)


def _use_timm(needs_shim: bool) -> None:
    """Makes ``import timm`` work in a worker as conftest does in the parent."""
    global _SHIM
    if needs_shim and _SHIM is None:
        _SHIM = torch.library.Library("torchvision", "DEF")
        _SHIM.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _SHIM.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


_SHIM = None


def _needs_shim() -> bool:
    import conftest

    return getattr(conftest, "_TORCHVISION_SHIM", None) is not None


# --------------------------------------------------------------------------------------------
# DDP
# --------------------------------------------------------------------------------------------

# Compiled: the flat-buffer path that re-points p.data (a chain from a factory with compile=, a
# drop-in's compile_step). Dynamo traces a step in ~1-3 s per param group here: the others run
# eagerly only (TorchOptimizer(adamw) compiled: under ZeRO; the per-tensor path, e.g. Lamb's,
# does not touch p.data: tests/test_compiled.py).
DDP_COMPILED = ["TorchOptimizer(clip+adamw)", "AdamW"]


def ddp_worker(rank: int, world: int, needs_shim: bool) -> dict[Any, Any]:
    assert world == WORLD
    _use_timm(needs_shim)
    out: dict[Any, Any] = {}
    for name, (mine, ref) in OPTIMIZERS.items():
        out[name, "reference"] = _train(lambda g, ref=ref: Run(ref(g)), rank)
        out[name, "eager"] = _train(lambda g, mine=mine: Run(mine(g, None)), rank)
        if name in DDP_COMPILED:
            out[name, "compiled"] = _train(
                lambda g, mine=mine: Run(mine(g, AOT)), rank, resume=SAME
            )
        if rank == 0:
            out[name, "single"] = _train(lambda g, mine=mine: Run(mine(g, None)), None)
    out["classy.SGD", "reference"] = _train(
        lambda g: Run(torch.optim.SGD(g, **SGD), schedule=False), rank
    )
    out["classy.SGD", "eager"] = _train(_classy_sgd, rank)
    if rank == 0:
        out["classy.SGD", "single"] = _train(_classy_sgd, None)
    out["clipped"] = len(_CLIPPED)
    out["initial"] = _flat(_model())
    return out


def worker(rank: int, world: int, needs_shim: bool) -> dict[str, Any]:
    """All the scenarios, in one spawn (dynamo's first compile and the spawn are paid once)."""
    from torch._dynamo.utils import counters

    out = {
        "ddp": ddp_worker(rank, world, needs_shim),
        "zero": zero_worker(rank, world, needs_shim),
    }
    out["graphs"] = counters["stats"]["unique_graphs"]
    return out


@pytest.fixture(scope="module")
def results():
    return _dist.run(worker, WORLD, _needs_shim())


@pytest.fixture(scope="module")
def ddp(results):
    return [r["ddp"] for r in results]


DDP_NAMES = [*OPTIMIZERS, "classy.SGD"]
DDP_CASES = [(n, "eager") for n in DDP_NAMES] + [(n, "compiled") for n in DDP_COMPILED]


@pytest.mark.parametrize(("name", "mode"), DDP_CASES)
def test_ddp_ranks_agree_exactly(ddp, name, mode):
    assert torch.equal(ddp[0][name, mode], ddp[1][name, mode])


@pytest.mark.parametrize(("name", "mode"), DDP_CASES)
def test_ddp_equals_torch_under_ddp(ddp, name, mode):
    ref = ddp[0][name, "reference"]
    assert (ref - ddp[0]["initial"]).abs().max() > 1e-3  # it trained
    torch.testing.assert_close(ddp[0][name, mode], ref, rtol=0, atol=TOL)


@pytest.mark.parametrize("name", DDP_NAMES)
def test_ddp_equals_single_process_on_the_whole_batch(ddp, name):
    torch.testing.assert_close(ddp[0][name, "eager"], ddp[0][name, "single"], rtol=0, atol=TOL)


def test_the_compiled_runs_compiled(results):
    # One graph per param group (2) and compiled optimizer: 3 under DDP, 3 under ZeRO (a
    # compiled step that fell back to eager would leave fewer).
    assert all(r["graphs"] >= 2 * (len(DDP_COMPILED) + 3) for r in results)


def test_ddp_reference_clipped(ddp):
    # clip_by_global_norm was active (at every step of both groups here).
    assert ddp[0]["clipped"] >= STEPS


# --------------------------------------------------------------------------------------------
# ZeRO-1
# --------------------------------------------------------------------------------------------

# name -> (ZeRO's optimizer_class for ours, its kwargs, the torch.optim class or None)
ZERO_OPTIMIZERS: dict[str, tuple[Callable[..., Any], dict[str, Any], Any]] = {
    # The transform comes in as a keyword (partial: ZeRO's param groups stay free of "tx").
    "TorchOptimizer(adamw)": (
        functools.partial(TorchOptimizer, tx=optax_torch.adamw),
        ADAMW,
        torch.optim.AdamW,
    ),
    "AdamW": (ours.AdamW, ADAMW, torch.optim.AdamW),
    "SGD": (ours.SGD, SGD, torch.optim.SGD),
    "timm.Lion": (ours_timm.Lion, LION, None),
}
ZERO_COMPILED = "TorchOptimizer(adamw)"  # compiled: TorchOptimizer(..., compile=AOT)
# "ddp" / "no ddp": gradients averaged by DDP / by hand, checkpoint into a new ZeRO optimizer;
# "to unsharded" / "unsharded to ZeRO": ZeRO's consolidated state into a plain optimizer and
# back; "bucket view": parameters_as_bucket_view=True.
ZERO_EAGER_CASES = ["ddp", "no ddp", "to unsharded", "unsharded to ZeRO", "bucket view"]
# Compiled, with DDP: "ddp" (reloaded into the same ZeRO optimizer: no second compile) and
# "to unsharded" (the consolidated state of the compiled ZeRO steps, continued eagerly).
ZERO_COMPILED_CASES = ["ddp", "to unsharded"]


class ZeroRun(Run):
    """A ``ZeroRedundancyOptimizer`` run: saved consolidated on rank 0 (a collective: every
    rank calls ``save``); ``workaround``: after ``zero.load_state_dict``, the local optimizer
    loads what ZeRO wrote into ``zero.optim.state`` (see ``test_zero_load_state_dict_...``)."""

    def __init__(self, opt, workaround: bool):
        super().__init__(opt)
        self.workaround = workaround

    def save(self) -> Any:
        self.opt.consolidate_state_dict(to=0)
        return super().save() if dist.get_rank() == 0 else None

    def load(self, saved: Any) -> None:
        super().load(saved)
        if self.workaround:
            self.opt.optim.load_state_dict(self.opt.optim.state_dict())


def _zero(cls, kwargs, *, bucket: bool = False, workaround: bool = True):
    def make(groups):
        opt = ZeroRedundancyOptimizer(
            groups, optimizer_class=cls, parameters_as_bucket_view=bucket, **kwargs
        )
        return ZeroRun(opt, workaround)

    return make


def _plain(cls, kwargs):
    return lambda groups: Run(cls(groups, **kwargs))


def zero_worker(rank: int, world: int, needs_shim: bool) -> dict[Any, Any]:
    assert world == WORLD
    _use_timm(needs_shim)
    out: dict[Any, Any] = {}
    for name, (cls, kwargs, ref_cls) in ZERO_OPTIMIZERS.items():
        if rank == 0:
            out[name, "unsharded"] = _train(_plain(cls, kwargs), None)
        if ref_cls is not None:
            out[name, "torch ZeRO"] = _train(_zero(ref_cls, kwargs, workaround=False), rank)
        zero, plain = _zero(cls, kwargs), _plain(cls, kwargs)
        out[name, "eager", "ddp"] = _train(zero, rank)
        out[name, "eager", "no ddp"] = _train(zero, rank, ddp=False)
        out[name, "eager", "to unsharded"] = _train(zero, rank, resume=plain)
        out[name, "eager", "unsharded to ZeRO"] = _train(plain, rank, resume=zero)
        out[name, "eager", "bucket view"] = _train(_zero(cls, kwargs, bucket=True), rank)
        out[name, "eager", "plain load"] = _train(_zero(cls, kwargs, workaround=False), rank)
    # A transform that couples the parameters sees only the rank's shard under ZeRO.
    clip = functools.partial(TorchOptimizer, tx=clip_adamw)
    out["clip", "unsharded"] = _train(_plain(clip, ADAMW), rank)
    out["clip", "ZeRO"] = _train(_zero(clip, ADAMW), rank)
    eager_cls, kwargs, _ = ZERO_OPTIMIZERS[ZERO_COMPILED]
    cls = functools.partial(eager_cls, compile=AOT)
    zero = _zero(cls, kwargs)
    out[ZERO_COMPILED, "compiled", "ddp"] = _train(zero, rank, resume=SAME)
    out[ZERO_COMPILED, "compiled", "to unsharded"] = _train(
        zero, rank, resume=_plain(eager_cls, kwargs)
    )
    out[ZERO_COMPILED, "compiled", "bucket view"] = _train(
        _zero(cls, kwargs, bucket=True), rank, resume=SAME
    )
    return out


@pytest.fixture(scope="module")
def zero(results):
    return [r["zero"] for r in results]


ZERO_CASES = [(n, "eager", how) for n in ZERO_OPTIMIZERS for how in ZERO_EAGER_CASES] + [
    (ZERO_COMPILED, "compiled", how) for how in ZERO_COMPILED_CASES
]


@pytest.mark.parametrize(("name", "mode", "how"), ZERO_CASES)
def test_zero_equals_unsharded(zero, name, mode, how):
    assert torch.equal(zero[0][name, mode, how], zero[1][name, mode, how])
    torch.testing.assert_close(
        zero[0][name, mode, how], zero[0][name, "unsharded"], rtol=0, atol=TOL
    )


def test_zero_shards_a_global_norm(zero):
    # clip_by_global_norm inside the optimizer: each rank's norm is its shard's (documented in
    # docs/distributed.md: clip with torch.nn.utils.clip_grad_norm_ before the step instead).
    diff = (zero[0]["clip", "ZeRO"] - zero[0]["clip", "unsharded"]).abs().max()
    assert diff > 1e-6


@pytest.mark.parametrize("name", [n for n, v in ZERO_OPTIMIZERS.items() if v[2] is not None])
def test_zero_equals_torch_zero(zero, name):
    torch.testing.assert_close(
        zero[0][name, "eager", "ddp"], zero[0][name, "torch ZeRO"], rtol=0, atol=TOL
    )


@pytest.mark.parametrize("name", list(ZERO_OPTIMIZERS))
def test_zero_load_state_dict_reaches_the_local_optimizer(zero, name):
    """ZeroRedundancyOptimizer.load_state_dict assigns ``zero.optim.state[p] = {...}``; the
    adapter notes the write and reloads its functional state before the next step."""
    torch.testing.assert_close(
        zero[0][name, "eager", "plain load"], zero[0][name, "unsharded"], rtol=0, atol=TOL
    )


def test_zero_bucket_view_with_compiled_step(zero):
    """Parameters that are views into ZeRO's buckets (``parameters_as_bucket_view=True``) are
    not moved into the compiled step's flat buffers (it compiles per tensor)."""
    torch.testing.assert_close(
        zero[1][ZERO_COMPILED, "compiled", "bucket view"],
        zero[0][ZERO_COMPILED, "unsharded"],
        rtol=0,
        atol=TOL,
    )
