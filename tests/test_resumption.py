"""Resumption is exact (issue 13): N steps straight == k steps, save, load in a FRESH PROCESS
with ``torch.load(weights_only=True)``, N - k more -- bit for bit on CPU (rtol = atol = 0).

* functional states (``torch.save(state)``) of every catalogue entry and of the wrappers whose
  state is easy to lose: ``MultiSteps`` mid-accumulation, ``lookahead`` mid-period, schedule-free,
  ``reduce_on_plateau``, L-BFGS history, the generators of ``add_noise`` / ``noisy_sgd``,
  ``apply_if_finite`` after a skipped step, ``inject_hyperparams`` with a schedule;
* ``TorchOptimizer(...).state_dict()`` of every catalogue entry that runs in the adapter, and of
  every drop-in class of ``optax_torch.compat.torch_optim``, ``.timm`` and ``.classy`` (a small
  model with two param groups).

The parent runs the straight runs and the first k steps, saves the checkpoints, then ONE
subprocess (this file run as a script) resumes every case and saves its results; the
assertions are parametrised per case. The float-dtype and versioned-format checks follow.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import conftest  # noqa: E402, F401  (timm / classy_vision import paths)
from catalogue import LBFGS, OBJ_FN, VALUE, catalogue, extra_args  # noqa: E402

import optax_torch as otx  # noqa: E402
import optax_torch.contrib as otc  # noqa: E402
from optax_torch import tree as otree  # noqa: E402
from optax_torch.wrappers import TorchOptimizer  # noqa: E402

N, K = 7, 3  # 7 steps straight == 3 steps, save, load, 4 more

CATALOGUE = catalogue()


# --------------------------------------------------------------------------------------------
# Functional cases
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Functional:
    build: Callable[[], Any]
    needs: tuple[str, ...] = ()
    lookahead: bool = False
    nan_at: int = -1  # a step whose gradient is NaN (apply_if_finite)


def _wrappers() -> dict[str, Functional]:
    sched = otx.linear_schedule(1e-2, 1e-3, 10)
    return {
        "w.multi_steps": Functional(
            lambda: otx.MultiSteps(otx.adam(1e-2), every_k_schedule=4).gradient_transformation()
        ),
        "w.lookahead": Functional(
            lambda: otx.lookahead(otx.adam(1e-2), sync_period=4, slow_step_size=0.5),
            lookahead=True,
        ),
        "w.schedule_free_adamw": Functional(lambda: otc.schedule_free_adamw(1e-2)),
        "w.reduce_on_plateau": Functional(
            lambda: otx.chain(
                otx.adam(1e-2), otc.reduce_on_plateau(factor=0.5, patience=1, rtol=0.5)
            ),
            needs=(VALUE,),
        ),
        "w.lbfgs": Functional(lambda: otx.lbfgs(memory_size=3), needs=(LBFGS,)),
        "w.add_noise": Functional(
            lambda: otx.chain(otx.add_noise(0.1, 0.55, key=3), otx.sgd(1e-2))
        ),
        "w.noisy_sgd": Functional(lambda: otx.noisy_sgd(1e-2, eta=0.1, key=4)),
        "w.apply_if_finite": Functional(
            lambda: otx.apply_if_finite(otx.adam(1e-2), max_consecutive_errors=3), nan_at=1
        ),
        "w.inject_schedule": Functional(
            lambda: otx.inject_hyperparams(otx.adam)(learning_rate=sched)
        ),
    }


def functional_cases() -> dict[str, Functional]:
    out = {f"c.{n}": Functional(e.build, needs=e.needs) for n, e in CATALOGUE.items()}
    out.update(_wrappers())
    return out


def _problem():
    g = torch.Generator().manual_seed(0)
    params = {
        "w": torch.randn(3, 2, generator=g),
        "b": torch.randn(4, generator=g, dtype=torch.float64),
    }
    target = {"w": torch.randn(3, 2, generator=g), "b": torch.randn(4, generator=g).double()}

    def objective(p):
        terms = [
            (0.5 * (p[k] - target[k]) ** 2 + 0.05 * (p[k] - target[k]) ** 4).sum().double()
            for k in ("b", "w")
        ]
        return torch.stack(terms).sum()

    return params, objective


def _grad(objective, p):
    p = otree.map(lambda x: x.detach().requires_grad_(True), p)
    with torch.enable_grad():
        value = objective(p)
        grads = torch.autograd.grad(value, list(p.values()))
    return value.detach(), dict(zip(p, grads))


def functional_start(case: Functional, dtype: torch.dtype | None = None):
    params, _ = _problem()
    if dtype is not None:
        params = otree.map(lambda x: x.to(dtype), params)
    t = case.build()
    if case.lookahead:
        params = otx.LookaheadParams.init_synced(params)
    return params, t.init(params)


def functional_steps(case: Functional, params, state, start: int, stop: int):
    _, objective = _problem()
    t = case.build()
    for i in range(start, stop):
        at = params.fast if case.lookahead else params
        value, grads = _grad(objective, at)
        if i == case.nan_at:
            grads = otree.map(lambda x: torch.full_like(x, float("nan")), grads)
        kw = extra_args(case.needs, objective, at, value, grads)
        updates, state = t.update(grads, state, at if not case.lookahead else params, **kw)
        params = otx.apply_updates(params, updates)
    return params, state


# --------------------------------------------------------------------------------------------
# Adapter cases: catalogue entries in TorchOptimizer, and the drop-in classes (two groups)
# --------------------------------------------------------------------------------------------


def _model(dtype=torch.float32):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).to(
        dtype
    )


def _groups(model, lr=True):
    second: dict[str, Any] = {"params": list(model[2].parameters())}
    if lr:
        second["lr"] = 5e-3
    return [{"params": list(model[0].parameters())}, second]


def _drop_ins() -> dict[str, Callable[[Any], Any]]:
    import optax_torch.compat.classy.optim as classy
    import optax_torch.compat.timm as timm
    import optax_torch.compat.torch_optim as tope

    out: dict[str, Callable[[Any], Any]] = {}
    skip_torch = {"swa_utils", "LBFGS", "SparseAdam", "Muon"}  # below; SparseAdam: sparse grads
    for name in tope.__all__:
        if name not in skip_torch:
            cls = getattr(tope, name)
            out[f"torch.{name}"] = lambda m, cls=cls: cls(_groups(m), lr=1e-2)
    out["torch.Muon"] = lambda m: tope.Muon(  # 2-D params only
        [{"params": [m[0].weight]}, {"params": [m[2].weight], "lr": 5e-3}], lr=1e-2
    )
    out["torch.LBFGS"] = lambda m: tope.LBFGS(m.parameters(), lr=0.5, history_size=3)
    for name in timm.__all__:
        obj = getattr(timm, name)
        if not isinstance(obj, type) or name == "Lookahead":
            continue
        out[f"timm.{name}"] = lambda m, cls=obj: cls(_groups(m), lr=1e-2)
    out["timm.Lookahead"] = lambda m: timm.Lookahead(timm.AdamW(_groups(m), lr=1e-2), k=4)
    for config in (
        {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4},
        {"name": "adam", "lr": 0.01},
        {"name": "adamw", "lr": 0.01, "amsgrad": True},
        {"name": "rmsprop", "lr": 0.01, "momentum": 0.5, "centered": True},
        {"name": "rmsprop_tf", "lr": 0.01, "momentum": 0.5},
        {"name": "sgd", "lr": 0.5, "momentum": 0.9, "weight_decay": 1e-2, "use_larc": True},
    ):

        def make(m, config=config):
            o = classy.build_optimizer(dict(config))
            o.set_param_groups(_groups(m))
            return o

        out[f"classy.{config['name']}{'_larc' if config.get('use_larc') else ''}"] = make
    return out


def adapter_cases() -> dict[str, Callable[[Any], Any]]:
    out: dict[str, Callable[[Any], Any]] = {}
    for n, e in CATALOGUE.items():
        if e.optimizer and LBFGS not in e.needs:
            # obj_fn (sophia) is evaluated over the group's params: one group holds them all.
            one = OBJ_FN in e.needs
            out[f"a.{n}"] = lambda m, e=e, one=one: TorchOptimizer(
                m.parameters() if one else _groups(m, lr=False), e.build()
            )
    out.update({f"d.{k}": v for k, v in _drop_ins().items()})
    return out


def _needs(name: str) -> tuple[str, ...]:
    return CATALOGUE[name[2:]].needs if name.startswith("a.") else ()


def _data(dtype):
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, generator=g).to(dtype), torch.randn(8, 2, generator=g).to(dtype)


def _sd(opt):
    return opt.get_classy_state() if hasattr(opt, "get_classy_state") else opt.state_dict()


def _load(opt, sd):
    if hasattr(opt, "set_classy_state"):
        opt.set_classy_state(sd)
    else:
        opt.load_state_dict(sd)


def adapter_steps(name: str, model, opt, start: int, stop: int, dtype=torch.float32):
    x, y = _data(dtype)
    needs = _needs(name)
    plist = list(model.parameters())
    names = [n for n, _ in model.named_parameters()]

    def loss_of(ps):
        out = torch.func.functional_call(model, dict(zip(names, ps)), (x,))
        return torch.nn.functional.mse_loss(out, y)

    for i in range(start, stop):

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            return loss

        if name == "d.torch.LBFGS":
            opt.step(closure)
            continue
        loss = closure()
        kw: dict[str, Any] = {}
        if VALUE in needs:
            kw["value"] = loss.detach()
        if OBJ_FN in needs:
            kw["obj_fn"] = loss_of
        if name.startswith("d.classy."):
            kw["where"] = i / 20
        if "Adahessian" in name:
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward(create_graph=True)
        opt.step(**kw)
    del plist
    return model, opt


# --------------------------------------------------------------------------------------------
# The child: resumes every case from the checkpoints in a directory
# --------------------------------------------------------------------------------------------


def _child(directory: str) -> None:
    results: dict[str, Any] = {}
    for name, case in functional_cases().items():
        path = os.path.join(directory, f"{name}.pt")
        if not os.path.exists(path):
            continue
        try:
            ck = torch.load(path, weights_only=True)
            params, state = functional_steps(case, ck["params"], ck["state"], K, N)
            results[name] = {"params": params, "state": state}
        except Exception as e:  # reported per case by the parent
            results[name] = f"{type(e).__name__}: {e}"
    for name, make in adapter_cases().items():
        path = os.path.join(directory, f"{name}.pt")
        if not os.path.exists(path):
            continue
        try:
            ck = torch.load(path, weights_only=True)
            model = _model()
            model.load_state_dict(ck["model"])
            opt = make(model)
            _load(opt, ck["opt"])
            torch.set_rng_state(ck["rng"])
            adapter_steps(name, model, opt, K, N)
            results[name] = {"params": list(model.parameters()), "opt": _sd(opt)}
        except Exception as e:
            results[name] = f"{type(e).__name__}: {e}"
    torch.save(results, os.path.join(directory, "results.pt"))


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--resume":
    _child(sys.argv[2])
    sys.exit(0)


# --------------------------------------------------------------------------------------------
# The parent
# --------------------------------------------------------------------------------------------

import pytest  # noqa: E402

FUNCTIONAL = functional_cases()
ADAPTER = adapter_cases()


def _flat(node, path="") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [kv for k in node for kv in _flat(node[k], f"{path}/{k}")]
    if isinstance(node, (list, tuple)):
        return [kv for i, v in enumerate(node) for kv in _flat(v, f"{path}/{i}")]
    if isinstance(node, torch.Generator):
        return [(path, node.get_state())]
    if isinstance(node, torch.Tensor):
        return [(path, node.detach())]
    return [(path, node)]


def assert_identical(a, b) -> None:
    fa, fb = _flat(a), _flat(b)
    assert [p for p, _ in fa] == [p for p, _ in fb]
    for (path, x), (_, y) in zip(fa, fb):
        if isinstance(x, torch.Tensor):
            torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True, msg=path)
        else:
            assert x == y or (x != x and y != y), path


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("resume"))
    straight: dict[str, Any] = {}
    failures: dict[str, str] = {}
    for name, case in FUNCTIONAL.items():
        try:
            params, state = functional_start(case)
            p_k, s_k = functional_steps(case, params, state, 0, K)
            torch.save({"params": p_k, "state": s_k}, os.path.join(directory, f"{name}.pt"))
            params, state = functional_start(case)
            p_n, s_n = functional_steps(case, params, state, 0, N)
            straight[name] = {"params": p_n, "state": s_n}
        except Exception as e:
            failures[name] = f"{type(e).__name__}: {e}"
    for name, make in ADAPTER.items():
        try:
            model = _model()
            opt = make(model)
            adapter_steps(name, model, opt, 0, K)
            torch.save(
                {"model": model.state_dict(), "opt": _sd(opt), "rng": torch.get_rng_state()},
                os.path.join(directory, f"{name}.pt"),
            )
            model = _model()
            opt = make(model)
            adapter_steps(name, model, opt, 0, N)
            straight[name] = {"params": list(model.parameters()), "opt": _sd(opt)}
        except Exception as e:
            failures[name] = f"{type(e).__name__}: {e}"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--resume", directory],
        check=True,
        env=env,
        cwd=os.path.dirname(HERE),
    )
    results = torch.load(os.path.join(directory, "results.pt"), weights_only=True)
    return straight, results, failures


def _check(resumed, name):
    straight, results, failures = resumed
    assert name not in failures, failures.get(name)
    got = results[name]
    assert not isinstance(got, str), got
    assert_identical(straight[name], got)


@pytest.mark.parametrize("name", sorted(FUNCTIONAL))
def test_functional_resumption_is_exact(resumed, name):
    _check(resumed, name)


@pytest.mark.parametrize("name", sorted(ADAPTER))
def test_adapter_resumption_is_exact(resumed, name):
    _check(resumed, name)


# --------------------------------------------------------------------------------------------
# Every adapter / drop-in state dict loads with weights_only, for each float dtype of the params
# --------------------------------------------------------------------------------------------


def _roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str
)
def test_state_dicts_load_weights_only_in_every_float_dtype(dtype):
    failures = {}
    for name, make in ADAPTER.items():
        try:
            model = _model(dtype)
            opt = make(model)
            adapter_steps(name, model, opt, 0, 2, dtype)
            saved = _roundtrip({"model": model.state_dict(), "opt": _sd(opt)})
            assert_identical(saved["opt"], _sd(opt))
            # a fresh optimizer on a fresh model takes it and makes the same next step
            model2 = _model(dtype)
            model2.load_state_dict(saved["model"])
            opt2 = make(model2)
            _load(opt2, saved["opt"])
            assert_identical(_sd(opt2), _sd(opt))
            rng = torch.get_rng_state()
            adapter_steps(name, model, opt, 2, 3, dtype)
            torch.set_rng_state(rng)
            adapter_steps(name, model2, opt2, 2, 3, dtype)
            assert_identical(list(model2.parameters()), list(model.parameters()))
        except Exception as e:
            failures[name] = f"{type(e).__name__}: {str(e)[:200]}"
    for name, case in FUNCTIONAL.items():
        try:
            params, state = functional_start(case, dtype)
            params, state = functional_steps(case, params, state, 0, 2)
            assert_identical(_roundtrip(state), state)
        except Exception as e:
            failures[name] = f"{type(e).__name__}: {str(e)[:200]}"
    assert not failures, failures


# --------------------------------------------------------------------------------------------
# The versioned state format (optax_torch/wrappers/_format.py)
# --------------------------------------------------------------------------------------------

from optax_torch.wrappers import _format  # noqa: E402


def test_stamp_adds_the_format_and_survives_weights_only():
    sd = {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"params": [0]}]}
    stamped = _format.stamp(sd)
    assert "optax_torch" not in sd  # the input is not modified
    assert stamped["optax_torch"] == {"format": _format.FORMAT_VERSION}
    loaded = _roundtrip(stamped)
    assert loaded["optax_torch"] == {"format": 1}
    assert _format.format_of(loaded) == 1
    up = _format.upgrade(loaded)
    assert "optax_torch" not in up and up.keys() == sd.keys()
    assert_identical(up, sd)


def test_upgrade_loads_an_unstamped_dict_as_is():
    sd = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1).state_dict()
    assert _format.format_of(sd) is None
    assert _format.upgrade(sd) == sd


def test_upgrade_refuses_a_newer_format_naming_both_versions():
    sd = {"state": {}, "param_groups": [], "optax_torch": {"format": 7}}
    with pytest.raises(ValueError, match=r"format 7.*format 1"):
        _format.upgrade(sd)


@pytest.mark.parametrize("bad", [{"format": "1"}, {"format": 0}, {"format": True}, 3, {}])
def test_upgrade_refuses_a_malformed_stamp(bad):
    with pytest.raises(ValueError, match="optax_torch"):
        _format.upgrade({"state": {}, "param_groups": [], "optax_torch": bad})


def test_a_torch_optimizer_ignores_the_stamp():
    p = torch.zeros(2, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = torch.ones(2)
    opt.step()
    sd = _format.stamp(opt.state_dict())
    other = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1, momentum=0.9)
    other.load_state_dict(_roundtrip(sd))
    assert_identical(other.state_dict()["state"], opt.state_dict()["state"])


def _stamped_adapter():
    model = _model()
    opt = TorchOptimizer(model.parameters(), otx.adamw, lr=1e-2)
    adapter_steps("a.adamw", model, opt, 0, 2)
    return model, opt


# These run once TorchOptimizer.state_dict stamps and load_state_dict upgrades (wiring of
# _format into torch_optimizer.py); until then they skip.
def _require_wired(opt):
    if "optax_torch" not in opt.state_dict():
        pytest.skip("TorchOptimizer.state_dict does not stamp the format yet")


def test_adapter_state_dict_is_stamped_and_round_trips():
    model, opt = _stamped_adapter()
    _require_wired(opt)
    sd = _roundtrip(opt.state_dict())
    assert sd["optax_torch"] == {"format": _format.FORMAT_VERSION}
    model2 = _model()
    model2.load_state_dict(model.state_dict())
    opt2 = TorchOptimizer(model2.parameters(), otx.adamw, lr=1e-2)
    opt2.load_state_dict(sd)
    assert_identical(opt2.state_dict(), opt.state_dict())


def test_adapter_loads_an_unstamped_dict():
    _, opt = _stamped_adapter()
    _require_wired(opt)
    sd = dict(opt.state_dict())
    del sd["optax_torch"]
    opt2 = TorchOptimizer(_model().parameters(), otx.adamw, lr=1e-2)
    opt2.load_state_dict(sd)
    assert_identical(opt2.state_dict()["state"], opt.state_dict()["state"])


def test_adapter_refuses_a_newer_format_and_keeps_its_state():
    _, opt = _stamped_adapter()
    _require_wired(opt)
    before = _roundtrip(opt.state_dict())
    sd = dict(opt.state_dict())
    sd["optax_torch"] = {"format": _format.FORMAT_VERSION + 1}
    with pytest.raises(ValueError, match="newer"):
        opt.load_state_dict(sd)
    assert_identical(opt.state_dict(), before)


# --------------------------------------------------------------------------------------------
# Fixture checkpoints of format 1 (tests/fixtures/state_v1, written by make_state_v1.py): every
# later version must load them and make the stored next step (see tests/fixtures/README.md)
# --------------------------------------------------------------------------------------------

sys.path.insert(0, os.path.join(HERE, "fixtures"))
import make_state_v1 as v1  # noqa: E402

FIXTURES = sorted(f[:-3] for f in os.listdir(v1.DIRECTORY) if f.endswith(".pt"))


def test_every_fixture_case_has_a_file():
    assert sorted([*v1.ADAPTER, *v1.FUNCTIONAL]) == FIXTURES


def _next_step_from(name: str, ck: dict[str, Any] | None) -> list[torch.Tensor]:
    """The 4th step from the checkpoint ``ck`` (``None``: from a fresh state, for the guard)."""
    if name in v1.ADAPTER:
        m = v1.model()
        opt = v1.ADAPTER[name](m)
        if ck is not None:
            m.load_state_dict(ck["model"])
            opt.load_state_dict(ck["opt"])
        else:
            m.load_state_dict(torch.load(os.path.join(v1.DIRECTORY, f"{name}.pt"))["model"])
        v1.adapter_step(m, opt)
        return [p.detach() for p in m.parameters()]
    t = v1.FUNCTIONAL[name]()
    full = torch.load(os.path.join(v1.DIRECTORY, f"{name}.pt"), weights_only=True)
    state = ck["state"] if ck is not None else t.init(full["params"])
    params, _ = v1.functional_step(t, full["params"], state)
    return otree.leaves(params)


@pytest.mark.parametrize("name", FIXTURES)
def test_format_1_fixture_loads_and_makes_the_stored_next_step(name):
    ck = torch.load(os.path.join(v1.DIRECTORY, f"{name}.pt"), weights_only=True)
    assert ck["format"] == 1
    expected = otree.leaves(ck["expected"])
    got = _next_step_from(name, ck)
    # float64 throughout; a tolerance of a few ulps only for a future torch's kernel rounding
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-14)
    # the guard: without the loaded state the step differs (the fixture can fail)
    fresh = _next_step_from(name, None)
    assert any(not torch.allclose(f, e, rtol=1e-9, atol=1e-9) for f, e in zip(fresh, expected))
