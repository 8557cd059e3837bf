"""optax_torch on DTensors: FSDP2 (``fully_shard``), tensor parallel, the functional API on sharded
params, and ``torch.distributed.checkpoint`` (DCP) resumed on another world size.

Real ``torch.distributed`` (gloo, CPU, 2 processes; see ``_dist.py``). Every run is compared with a
single-process run of the same chain on the same data (float64): FSDP2 averages the gradients of
equal-sized per-rank batches, which is the gradient of the whole batch. Scenarios are batched into
few spawns (module-scoped fixtures) and checked one by one.
"""

from __future__ import annotations

import tempfile
import traceback
from collections.abc import Callable
from typing import Any

import pytest
import torch
from _dist import run

import optax_torch as otx
from optax_torch import contrib
from optax_torch.compat import timm as ctimm
from optax_torch.compat import torch_optim as ctorch

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

WORLD = 2
BATCH = 4  # per rank
STEPS = 4
TOL = 1e-14


def _clip_adamw(learning_rate):
    return otx.chain(otx.clip_by_global_norm(0.05), otx.adamw(learning_rate, weight_decay=0.1))


def _compiled(factory: Callable[..., Any], **hp: Any) -> Callable[[Any], Any]:
    return lambda ps: otx.TorchOptimizer(ps, factory, compile={"backend": "aot_eager"}, **hp)


# name -> (optimizer over an iterable of params, what one step communicates across ranks):
# "none" for element-wise chains (the state is sharded like the params and the step is local),
# "reduce" for chains with norms (all-reduces only), "gather" where the math needs whole
# matrices or reductions over sharded dimensions (DTensor redistributes).
SCENARIOS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "adamw": (lambda ps: otx.TorchOptimizer(ps, otx.adamw, lr=1e-2, weight_decay=0.1), "none"),
    "sgd_nesterov": (
        lambda ps: otx.TorchOptimizer(ps, otx.sgd, lr=0.1, momentum=0.9, nesterov=True),
        "none",
    ),
    "lion": (lambda ps: otx.TorchOptimizer(ps, otx.lion, lr=1e-3), "none"),
    "adagrad": (lambda ps: otx.TorchOptimizer(ps, otx.adagrad, lr=0.1), "none"),
    "torch_AdamW": (lambda ps: ctorch.AdamW(ps, lr=1e-2, amsgrad=True), "none"),
    "torch_RMSprop": (lambda ps: ctorch.RMSprop(ps, lr=1e-3, momentum=0.5, centered=True), "none"),
    "clip_adamw": (lambda ps: otx.TorchOptimizer(ps, _clip_adamw, lr=1e-2), "reduce"),
    "lamb": (lambda ps: otx.TorchOptimizer(ps, otx.lamb, lr=1e-2), "reduce"),
    "lars": (lambda ps: otx.TorchOptimizer(ps, otx.lars, lr=0.1), "reduce"),
    "novograd": (lambda ps: otx.TorchOptimizer(ps, otx.novograd, lr=1e-2), "reduce"),
    "timm_Lamb": (lambda ps: ctimm.Lamb(ps, lr=1e-2, max_grad_norm=0.5), "reduce"),
    "adafactor": (
        lambda ps: otx.TorchOptimizer(ps, otx.adafactor, lr=1e-2, min_dim_size_to_factor=4),
        "gather",
    ),
    "muon": (lambda ps: otx.TorchOptimizer(ps, contrib.muon, lr=1e-2), "gather"),
    # Compiling a step over DTensors takes ~10 s (dynamo traces DTensor dispatch): one chain
    # with a norm here, one element-wise chain in the tensor-parallel test. The drop-ins compile
    # through the same path (tests/test_dist_ddp_zero.py compiles them under DDP).
    "compiled_clip_adamw": (_compiled(_clip_adamw, lr=1e-2), "compiled"),
}
TP_ONLY = {
    "compiled_adamw": (_compiled(otx.adamw, lr=1e-2, weight_decay=0.1), "compiled"),
    "compiled_lamb": (_compiled(otx.lamb, lr=1e-2), "compiled"),
}
TP_SCENARIOS = ["adamw", "clip_adamw", "lamb", "adafactor", "torch_AdamW", "compiled_adamw"]
DCP_SCENARIOS = ["adamw", "clip_adamw", "adafactor", "torch_AdamW"]


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    lin = torch.nn.Linear
    return torch.nn.Sequential(
        lin(8, 16), torch.nn.Tanh(), lin(16, 5), torch.nn.Tanh(), lin(5, 3)
    ).double()  # 5 rows: shards of uneven size


def _data(world: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(42)
    return [torch.randn(world * BATCH, 8, generator=gen, dtype=torch.float64) for _ in range(STEPS)]


def _train(model, opt, xs, rank=0, world=1) -> None:
    n = xs[0].shape[0] // world
    for x in xs:
        model(x[rank * n : (rank + 1) * n]).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()


_REFS: dict[tuple[str, int], list[torch.Tensor]] = {}


def _make(name: str) -> Callable[[Any], Any]:
    return {**SCENARIOS, **TP_ONLY}[name][0]


def _reference(name: str, xs) -> list[torch.Tensor]:
    """A single-process run; a compiled scenario's reference is its eager twin (eager ==
    compiled is tested in tests/test_compiled.py)."""
    name = name.removeprefix("compiled_")
    key = (name, len(xs[0]))
    if key not in _REFS:
        model = _model()
        _train(model, _make(name)(model.parameters()), xs)
        _REFS[key] = [p.detach() for p in model.parameters()]
    return _REFS[key]


def _full(p: torch.Tensor) -> torch.Tensor:
    return p.full_tensor() if hasattr(p, "full_tensor") else p


def _max_err(model, ref) -> float:
    return max((_full(p.detach()) - q).abs().max().item() for p, q in zip(model.parameters(), ref))


def _fsdp_model() -> torch.nn.Module:
    from torch.distributed.fsdp import fully_shard

    model = _model()
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    return model


def _placements(x: Any) -> str:
    return str(getattr(x, "placements", "plain"))


# --------------------------------------------------------------------------------------------
# Workers (module level: spawn pickles them by reference)
# --------------------------------------------------------------------------------------------


def _fsdp_worker(rank: int, world: int) -> dict[str, Any]:
    from torch.distributed.tensor.debug import CommDebugMode

    xs = _data(world)
    out: dict[str, Any] = {}
    for name, (make, _) in SCENARIOS.items():
        ref = _reference(name, xs)
        model = _fsdp_model()
        opt = make(model.parameters())
        _train(model, opt, xs[:-1], rank, world)
        x = xs[-1]
        model(x[rank * BATCH : (rank + 1) * BATCH]).pow(2).mean().backward()
        comms: dict[str, int] = {}
        if "compiled" in name:  # CommDebugMode is a dispatch mode: dynamo refuses to trace it
            opt.step()
        else:
            mode = CommDebugMode()
            with mode:
                opt.step()
            comms = {str(k).rsplit(".", 1)[-1]: v for k, v in mode.get_comm_counts().items()}
        opt.zero_grad()
        state_placements = {
            f"{i}.{key}": (_placements(v), _placements(p), tuple(v.shape) == tuple(p.shape))
            for i, p in enumerate(model.parameters())
            for key, v in opt.state[p].items()
            if isinstance(v, torch.Tensor) and v.dim() > 0
        }
        saved = opt.state_dict()["state"]
        out[name] = {
            "err": _max_err(model, ref),
            "comms": comms,
            "state": state_placements,
            "saved_partial": [
                f"{i}.{k}"
                for i, entry in saved.items()
                for k, v in entry.items()
                if "Partial" in _placements(v)
            ],
        }
    return out


def _tp_worker(rank: int, world: int) -> dict[str, Any]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    mesh = init_device_mesh("cpu", (world,))
    xs = _data(1)
    out: dict[str, Any] = {}
    for name in TP_SCENARIOS:
        ref = _reference(name, xs)
        # Column-parallel first layer, row-parallel second (weights Shard(0) / Shard(1), a
        # Replicate bias), the last layer left plain: one param group mixes DTensors and tensors.
        model = parallelize_module(_model(), mesh, {"0": ColwiseParallel(), "2": RowwiseParallel()})
        opt = _make(name)(model.parameters())
        _train(model, opt, xs)
        out[name] = {
            "err": _max_err(model, ref),
            "placements": [_placements(p) for p in model.parameters()],
        }

    # The functional API on a dict of DTensors (Shard(0), Shard(1), Replicate).
    gen = torch.Generator().manual_seed(3)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    full = {"a": rand(6, 4), "b": rand(5), "c": rand(3, 6)}
    grads = [{k: rand(*v.shape) for k, v in full.items()} for _ in range(3)]
    layout = {"a": [Shard(1)], "b": [Replicate()], "c": [Shard(0)]}

    def shard(t):
        return {k: distribute_tensor(v, mesh, layout[k]) for k, v in t.items()}

    txs = {
        "adamw": otx.adamw(1e-2, weight_decay=0.1),
        "clip_lamb": otx.chain(otx.clip_by_global_norm(0.5), otx.lamb(1e-2)),
        "adafactor": otx.adafactor(1e-2, min_dim_size_to_factor=2),
        "sgd_schedule": otx.sgd(otx.cosine_decay_schedule(0.1, 3), momentum=0.9),
    }
    for name, tx in txs.items():
        p1, p2 = dict(full), shard(full)
        s1, s2 = tx.init(p1), tx.init(p2)
        for g in grads:
            u1, s1 = tx.update(g, s1, p1)
            p1 = otx.apply_updates(p1, u1)
            u2, s2 = tx.update(shard(g), s2, p2)
            p2 = otx.apply_updates(p2, u2)
        out["functional_" + name] = {
            "err": max((p2[k].full_tensor() - p1[k]).abs().max().item() for k in full),
            "placements": [_placements(p2[k]) for k in full],
        }
    return out


# Catalogue entries that do not run on DTensors (strict xfail: the list cannot rot).
NOT_ON_DTENSORS = {
    "galore": "its projection matrices come from a plain SVD of the whole gradient and meet the"
    " DTensor moments in a multi-tensor kernel",
    "lbfgs": "its memory is a ring buffer stacked along a new leading dimension and written with"
    " index_copy at a plain index tensor, which DTensor refuses to mix",
    "scale_by_lbfgs": "the same ring-buffer memory as lbfgs",
    "scale_by_kron": "eager by design: its preconditioner factors are plain tensors sized from"
    " whole-matrix shapes",
    "sophia": "its Hutchinson probes and Hessian-vector products mix plain and DTensor operands",
}


def _catalogue_worker(rank: int, world: int) -> dict[str, Any]:
    """Every catalogue entry through the functional API on a dict of DTensors (uneven
    ``Shard(0)``, ``Shard(1)``, ``Replicate``) against the same entry on the full tensors."""
    from catalogue import catalogue, extra_args
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (world,))
    gen = torch.Generator().manual_seed(0)
    shapes = {"w": (6, 4), "v": (5,), "r": (3, 2), "c": (4, 6)}
    full = {k: torch.randn(*s, generator=gen, dtype=torch.float64) for k, s in shapes.items()}
    layout = {"w": [Shard(0)], "v": [Shard(0)], "r": [Replicate()], "c": [Shard(1)]}
    weight = {"w": 1.0, "v": 3.0, "r": 0.5, "c": 2.0}

    def objective(p):
        return sum(((p[k] - 0.5) ** 2 * weight[k]).sum() for k in p)

    def train(entry, params):
        torch.manual_seed(1)  # transforms that draw from the global generator
        tx = entry.build()
        state = tx.init(params)
        for _ in range(3):
            g = {k: 2 * weight[k] * (params[k] - 0.5) for k in params}
            value = objective(params)  # a loss is a plain tensor under FSDP2 (model outputs are)
            value = value.full_tensor() if isinstance(value, DTensor) else value
            kw = extra_args(entry.needs, objective, params, value, g)
            u, state = tx.update(g, state, params, **kw)
            params = otx.apply_updates(params, u)
        return params

    out: dict[str, Any] = {}
    for name, entry in catalogue().items():
        try:
            ref = train(entry, dict(full))
            got = train(entry, {k: distribute_tensor(v, mesh, layout[k]) for k, v in full.items()})
        except Exception:  # reported, and checked against NOT_ON_DTENSORS
            out[name] = traceback.format_exc()[-1500:]
            continue
        assert all(isinstance(got[k], DTensor) for k in full), name
        out[name] = max(
            ((got[k].full_tensor() - ref[k]).abs().max() / (1 + ref[k].abs().max())).item()
            for k in full
        )
    return out


def _dcp_save(rank: int, world: int, path: str, split: int, sharded: bool = True) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    for name in DCP_SCENARIOS:
        model = _fsdp_model() if sharded else _model()
        opt = SCENARIOS[name][0](model.parameters())
        _train(model, opt, _data(WORLD)[:split], rank, world)
        model_sd, optim_sd = get_state_dict(model, opt)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=f"{path}/{name}")


def _dcp_resume(
    rank: int, world: int, path: str, split: int, sharded: bool = True
) -> dict[str, list[torch.Tensor]]:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    out = {}
    for name in DCP_SCENARIOS:
        model = _fsdp_model() if sharded else _model()
        opt = SCENARIOS[name][0](model.parameters())
        model_sd, optim_sd = get_state_dict(model, opt)
        sd = {"model": model_sd, "optim": optim_sd}
        dcp.load(sd, checkpoint_id=f"{path}/{name}")
        set_state_dict(model, opt, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
        _train(model, opt, _data(WORLD)[split:], rank, world)
        out[name] = [_full(p.detach()) for p in model.parameters()]
    return out


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fsdp() -> list[dict[str, Any]]:
    return run(_fsdp_worker, WORLD)


@pytest.fixture(scope="module")
def tp() -> list[dict[str, Any]]:
    return run(_tp_worker, WORLD)


@pytest.fixture(scope="module")
def on_dtensors() -> list[dict[str, Any]]:
    return run(_catalogue_worker, WORLD)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_fsdp2_equals_single_process(fsdp, name):
    for rank_result in fsdp:
        assert rank_result[name]["err"] < TOL, rank_result[name]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_fsdp2_state_is_sharded_like_the_params(fsdp, name):
    """State is sharded like the params, never gathered: for element-wise and norm-based chains
    every non-scalar state tensor is a DTensor with its parameter's placements; elsewhere (factored
    moments, Muon's constants) those shaped like the parameter are. A saved state holds no
    pending (``Partial``) reductions."""
    result = fsdp[0][name]
    if SCENARIOS[name][1] == "gather":
        checked = {k: v for k, v in result["state"].items() if v[2] and v[0] != "plain"}
    else:
        checked = result["state"]
    assert checked, result["state"]
    for key, (state_placement, param_placement, _) in checked.items():
        assert state_placement == param_placement, (key, state_placement, param_placement)
    assert result["saved_partial"] == []


@pytest.mark.parametrize("name", [n for n, (_, kind) in SCENARIOS.items() if kind != "compiled"])
def test_fsdp2_step_communication(fsdp, name):
    """Element-wise chains communicate nothing in ``step()``; chains with norms only all-reduce
    scalars; only factored moments and orthogonalisation gather."""
    kind = SCENARIOS[name][1]
    comms = fsdp[0][name]["comms"]
    if kind == "none":
        assert comms == {}
    elif kind == "reduce":
        assert set(comms) == {"all_reduce"}, comms
    else:
        assert comms, comms


FUNCTIONAL = ["functional_adamw", "functional_clip_lamb", "functional_adafactor"]


def _tp_compiled_worker(rank: int, world: int) -> dict[str, float]:
    """The compiled scenarios alone, first in a fresh process (no eager step before them)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    mesh = init_device_mesh("cpu", (world,))
    xs = _data(1)
    errs = {}
    for name in ("compiled_adamw", "compiled_lamb"):
        ref = _reference(name, xs)
        model = parallelize_module(_model(), mesh, {"0": ColwiseParallel(), "2": RowwiseParallel()})
        _train(model, _make(name)(model.parameters()), xs)
        errs[name] = _max_err(model, ref)
    return errs


def test_compiled_step_on_dtensors_first_in_a_process():
    """A compiled step reads its tensor hyperparameters (betas, ...) as tensors, never with
    ``.item()``: dynamo turns that into an unbacked float, which DTensor's sharding propagation
    cannot hash (it failed with "could not guard on data-dependent expression")."""
    for errs in run(_tp_compiled_worker, 1):
        assert max(errs.values()) < 1e-13, errs


@pytest.mark.parametrize("name", [*TP_SCENARIOS, *FUNCTIONAL, "functional_sgd_schedule"])
def test_tensor_parallel_equals_single_process(tp, name):
    for rank_result in tp:
        assert rank_result[name]["err"] < 1e-13, rank_result[name]
    placements = tp[0][name]["placements"]
    if name.startswith("functional_"):
        assert placements == ["(Shard(dim=1),)", "(Replicate(),)", "(Shard(dim=0),)"]
    else:  # Colwise, Rowwise (Replicate bias), and a plain layer in the same param group
        assert placements[:4] == [
            "(Shard(dim=0),)",
            "(Shard(dim=0),)",
            "(Shard(dim=1),)",
            "(Replicate(),)",
        ]
        assert placements[4:] == ["plain", "plain"]


@pytest.mark.parametrize("direction", ["fsdp2_to_single", "single_to_fsdp2"])
def test_dcp_checkpoint_resumes_on_another_world_size(direction):
    """k steps on one world size, ``dcp.save`` of ``get_state_dict(model, optimizer)``, a fresh
    run on another world size loads it with ``set_state_dict`` and takes the remaining steps: the
    result equals the straight single-process run. One side is FSDP2 on 2 ranks, the other a
    plain model in this process (world size 1, no process group: DCP reshards either way)."""
    split = 2
    with tempfile.TemporaryDirectory() as path:
        if direction == "fsdp2_to_single":
            run(_dcp_save, WORLD, path, split)
            got = [_dcp_resume(0, 1, path, split, sharded=False)]
        else:
            _dcp_save(0, 1, path, split, sharded=False)
            got = run(_dcp_resume, WORLD, path, split)
    xs = _data(WORLD)
    for name in DCP_SCENARIOS:
        ref = _reference(name, xs)
        for rank_result in got:
            err = max((p - q).abs().max().item() for p, q in zip(rank_result[name], ref))
            assert err < TOL, (name, err)


def _catalogue_names() -> list[Any]:
    from catalogue import catalogue

    return [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=NOT_ON_DTENSORS[n]))
        if n in NOT_ON_DTENSORS
        else n
        for n in sorted(catalogue())
    ]


@pytest.mark.parametrize("name", _catalogue_names())
def test_catalogue_functional_on_dtensors(on_dtensors, name):
    """``tx.init`` / ``tx.update`` / ``apply_updates`` of every catalogue entry on DTensors equal
    the same on the full tensors (relative to the parameters' size, 3 steps, float64)."""
    for rank_result in on_dtensors:
        err = rank_result[name]
        assert not isinstance(err, str), err
        assert err < 1e-12, err
