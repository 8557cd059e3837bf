"""The misuse catalogue (issue 13, "Bad input"): each misuse raises an error of the right type whose
message names the problem (the argument, the parameter or pytree path, and the value), and leaves
what the user holds exactly as it was (the functional state and params, or the optimizer's
``state_dict`` and params). ``docs/errors.md`` lists the same cases.

A case is data: a name, a ``setup()`` returning ``(action, watched)``, the exception type and a
regex for its message. ``watched`` is snapshotted before ``action()`` and compared after.
The construction cases (hyperparameters) have no state to watch.
"""

from __future__ import annotations

import copy
import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from catalogue import catalogue, resolve

import optax_torch as otx
import optax_torch.contrib as otc
from optax_torch import schedules as S
from optax_torch.base import GradientTransformation
from optax_torch.compat import torch_optim as C
from optax_torch.transforms.factorized import scale_by_factored_rms_torch
from optax_torch.wrappers.torch_optimizer import TorchOptimizer

NAN = math.nan
_ANY_NAN: Any = NAN  # where an int is typed


@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[], tuple[Callable[[], Any], Any]]
    exc: type[BaseException]
    match: str


# --------------------------------------------------------------------------------------------
# Snapshots: the state the user holds, before and after the error
# --------------------------------------------------------------------------------------------


def _snap(watched: Any) -> Any:
    if isinstance(watched, torch.optim.Optimizer):
        params = [p.detach().clone() for g in watched.param_groups for p in g["params"]]
        groups = [{k: v for k, v in g.items() if k != "params"} for g in watched.param_groups]
        return ("optimizer", copy.deepcopy(watched.state_dict()), params, copy.deepcopy(groups))
    return copy.deepcopy(watched)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return (
            isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and a.layout == b.layout
            and (a.device.type == "meta" or torch.equal(a.to_dense(), b.to_dense()))
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, tuple | list):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)


def _check(case: Case) -> None:
    action, watched = case.setup()
    before = _snap(watched)
    with pytest.raises(case.exc, match=case.match):
        action()
    assert _same(_snap(watched), before), f"{case.name}: state changed by the failed call"


# --------------------------------------------------------------------------------------------
# Construction: every float hyperparameter of the catalogue refuses NaN, naming itself
# --------------------------------------------------------------------------------------------


def _base_call(entry: Any) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The entry's factory and its arguments by name (positional ones bound)."""
    factory = resolve(entry.factory)
    free = inspect.getclosurevars(entry.build).nonlocals
    args = tuple(free.get("args", ()))
    kwargs = dict(free.get("kwargs", entry.kwargs))
    bound = inspect.signature(factory).bind_partial(*args, **kwargs)
    return factory, dict(bound.arguments)


def _float_hyperparameters() -> list[Any]:
    out, seen = [], set()
    for entry in catalogue().values():
        if entry.factory is None or entry.factory in seen:
            continue
        seen.add(entry.factory)
        factory, base = _base_call(entry)
        for name, p in inspect.signature(factory).parameters.items():
            if type(base.get(name, p.default)) is float:
                out.append(pytest.param(entry.factory, name, id=f"{entry.factory}-{name}"))
    return out


FLOAT_HYPERPARAMETERS = _float_hyperparameters()


@pytest.mark.parametrize(("factory", "arg"), FLOAT_HYPERPARAMETERS)
def test_nan_hyperparameter_raises_naming_it(factory, arg):
    entry = next(e for e in catalogue().values() if e.factory == factory)
    make, base = _base_call(entry)
    make(**base)  # the entry's own settings are valid
    with pytest.raises(ValueError, match=rf"\b{arg}\b.*\bnan\b"):
        make(**{**base, arg: NAN})


# Names whose range is known across the catalogue: decay rates in [0, 1) (1.5 refused), and
# epsilons, weight decays and momenta >= 0 (-1.0 refused). Exceptions, by (factory, name): the
# optimistic methods' ``beta`` is a coefficient, not a decay; torch.optim.SGD's momentum (the
# drop-in's ``dampened_trace`` decay) and RMSprop's ``alpha`` (``scale_by_rms_root_state``) only
# need to be >= 0, as in torch, timm and Classy Vision.
_DECAY_NAMES = re.compile(r"^(b\d|beta\d?|adam_b\d|decay|rho)$")
_NON_NEGATIVE_NAMES = re.compile(
    r"^(eps|eps_\w+|\w+_eps|\w*eps_root|weight_decay|adam_weight_decay|momentum)$"
)
_RANGE_EXCEPTIONS = {
    ("optimistic_gradient_descent", "beta"),
    ("optimistic_adam_v2", "beta"),
    ("scale_by_optimistic_gradient", "beta"),
    ("dampened_trace", "decay"),
    ("scale_by_rms_root_state", "decay"),
}


def _ranged_hyperparameters() -> list[Any]:
    out = []
    for p in FLOAT_HYPERPARAMETERS:
        factory, name = p.values
        if (factory, name) in _RANGE_EXCEPTIONS:
            continue
        if _DECAY_NAMES.match(name):
            out.append(pytest.param(factory, name, 1.5, id=f"{factory}-{name}=1.5"))
        elif _NON_NEGATIVE_NAMES.match(name):
            out.append(pytest.param(factory, name, -1.0, id=f"{factory}-{name}=-1"))
    return out


RANGED_HYPERPARAMETERS = _ranged_hyperparameters()


@pytest.mark.parametrize(("factory", "arg", "value"), RANGED_HYPERPARAMETERS)
def test_out_of_range_hyperparameter_raises_naming_it_catalogue_wide(factory, arg, value):
    entry = next(e for e in catalogue().values() if e.factory == factory)
    make, base = _base_call(entry)
    with pytest.raises(ValueError, match=rf"\b{arg}\b.*{value}"):
        make(**{**base, arg: value})


def test_float_hyperparameters_cover_the_catalogue():
    assert len(FLOAT_HYPERPARAMETERS) >= 300
    assert len({p.values[0] for p in FLOAT_HYPERPARAMETERS}) >= 80


# Out-of-range values (the range is known): ValueError "<arg> must be ..., got <arg>=<value>".
OUT_OF_RANGE: list[tuple[str, Callable[[], Any], str, str]] = [
    ("adam-b1", lambda: otx.adam(1e-3, b1=1.5), "b1", "1.5"),
    ("adam-b2-one", lambda: otx.adam(1e-3, b2=1.0), "b2", "1.0"),
    ("adam-eps", lambda: otx.adam(1e-3, eps=-1e-8), "eps", "-1e-08"),
    ("adamw-weight_decay", lambda: otx.adamw(1e-3, weight_decay=-0.1), "weight_decay", "-0.1"),
    ("nadamw-weight_decay", lambda: otx.nadamw(1e-3, weight_decay=-0.1), "weight_decay", "-0.1"),
    ("sgd-momentum", lambda: otx.sgd(0.1, momentum=-0.9), "momentum", "-0.9"),
    ("rmsprop-momentum", lambda: otx.rmsprop(0.1, momentum=-0.5), "momentum", "-0.5"),
    ("rmsprop-decay", lambda: otx.rmsprop(0.1, decay=1.5), "decay", "1.5"),
    ("lion-b2", lambda: otx.lion(1e-3, b2=-0.1), "b2", "-0.1"),
    ("lamb-weight_decay", lambda: otx.lamb(1e-3, weight_decay=-1.0), "weight_decay", "-1.0"),
    ("adagrad-init", lambda: otx.adagrad(0.1, initial_accumulator_value=-1.0), "initial_", "-1"),
    ("clip_by_global_norm", lambda: otx.clip_by_global_norm(-1.0), "max_norm", "-1.0"),
    ("ema-decay", lambda: otx.ema(1.5), "decay", "1.5"),
    ("apply_every-k", lambda: otx.apply_every(0), "k", "0"),
    ("multi_steps-every_k", lambda: otx.MultiSteps(otx.sgd(0.1), 0), "every_k_schedule", "0"),
    ("lookahead-sync_period", lambda: otx.lookahead(otx.sgd(0.1), 0, 0.5), "sync_period", "0"),
    ("lbfgs-memory_size", lambda: otx.lbfgs(memory_size=0), "memory_size", "0"),
    (
        "sophia-print_every",
        lambda: otc.sophia(1e-3, print_win_rate_every_n_steps=-1),
        "print",
        "-1",
    ),
    ("add_noise-key", lambda: otx.add_noise(0.1, 0.5, key=_ANY_NAN), "key", "nan"),
    ("larc-learning_rate", lambda: otx.scale_by_larc(NAN), "learning_rate", "nan"),
    ("trust_ratio-param_scale", lambda: otx.scale_by_trust_ratio(param_scale=NAN), "param_", "nan"),
    ("adan-diff_scale", lambda: otx.scale_by_adan(diff_scale=NAN), "diff_scale", "nan"),
    (
        "adafactor_decay-max_step_size",
        lambda: otx.add_adafactor_decayed_weights(0.1, max_step_size=-1.0),
        "max_step_size",
        "-1.0",
    ),
    # schedules
    ("constant_schedule", lambda: S.constant_schedule(NAN), "value", "nan"),
    ("linear_schedule", lambda: S.linear_schedule(1.0, NAN, 10), "end_value", "nan"),
    ("polynomial-power", lambda: S.polynomial_schedule(1.0, 0.0, NAN, 10), "power", "nan"),
    ("exponential-rate", lambda: S.exponential_decay(1.0, 10, -0.5), "decay_rate", "-0.5"),
    ("cosine-alpha", lambda: S.cosine_decay_schedule(1.0, 10, alpha=NAN), "alpha", "nan"),
    ("cosine-steps", lambda: S.cosine_decay_schedule(1.0, 0), "decay_steps", "0"),
    ("warmup_cosine-peak", lambda: S.warmup_cosine_decay_schedule(0.0, NAN, 5, 10), "peak", "nan"),
    ("warmup_cosine-warmup", lambda: S.warmup_cosine_decay_schedule(0, 1, -5, 10), "warmup", "-5"),
    ("onecycle-pct_start", lambda: S.linear_onecycle_schedule(10, 1.0, 1.5), "pct_start", "1.5"),
    (
        "onecycle-pct_final",
        lambda: S.linear_onecycle_schedule(10, 1.0, 0.5, 0.2),
        "pct_final",
        "0.2",
    ),
    ("cosine_onecycle-div", lambda: S.cosine_onecycle_schedule(10, 1.0, div_factor=0), "div", "0"),
    (
        "piecewise_constant-scale",
        lambda: S.piecewise_constant_schedule(1.0, {10: NAN}),
        "scale",
        "nan",
    ),
    (
        "piecewise_interpolate-scale",
        lambda: S.piecewise_interpolate_schedule("linear", 1.0, {10: -0.5}),
        "scale",
        "-0.5",
    ),
    (
        "join_schedules-order",
        lambda: S.join_schedules([S.constant_schedule(1.0)] * 3, [20, 10]),
        "boundaries",
        "20",
    ),
    (
        "join_schedules-count",
        lambda: S.join_schedules([S.constant_schedule(1.0)] * 2, [10, 20]),
        "boundaries",
        "10, 20",
    ),
]


@pytest.mark.parametrize(
    ("build", "arg", "value"), [c[1:] for c in OUT_OF_RANGE], ids=[c[0] for c in OUT_OF_RANGE]
)
def test_out_of_range_hyperparameter_raises_naming_it(build, arg, value):
    with pytest.raises(ValueError, match=rf"{arg}.*{value}"):
        build()


def test_negative_learning_rate_stays_allowed_in_functional_factories():
    """Gradient ascent, as optax (the adapter and drop-ins refuse it, as torch does)."""
    for make in (otx.sgd, otx.adam, otx.adamw, otx.lion, otc.muon):
        make(-1e-3)


# --------------------------------------------------------------------------------------------
# Functional misuse: tx.init / tx.update / apply_updates
# --------------------------------------------------------------------------------------------


def _params() -> dict[str, Any]:
    return {"enc": {"w": torch.ones(2, 3)}, "b": torch.zeros(3)}


def _grads() -> dict[str, Any]:
    return {"enc": {"w": torch.full((2, 3), 0.5)}, "b": torch.ones(3)}


def _update(tx: GradientTransformation, grads: Any, params: Any = None, state: Any = None):
    """(action, watched) for ``tx.update(grads, state, params)`` after one good step."""
    params = _params() if params is None else params
    if state is None:
        state = tx.init(_params())
        _, state = tx.update(_grads(), state, _params())
    return (lambda: tx.update(grads, state, params)), (state, params, grads)


def _init(tx: GradientTransformation, params: Any):
    return (lambda: tx.init(params)), params


def _with(leaf: Any, where: str = "b") -> dict[str, Any]:
    g: dict[str, Any] = _grads()
    if where == "b":
        g["b"] = leaf
    else:
        g["enc"]["w"] = leaf
    return g


def _meta_device() -> bool:
    try:
        _ = torch.ones(1, device="meta") + 1
        return True
    except Exception:
        return False


class _Growing:
    """A transformation whose update returns a state of another structure than its init's."""

    @staticmethod
    def make() -> GradientTransformation:
        def init(params):
            del params
            return (torch.zeros(()),)

        def update(updates, state, params=None):
            del params
            return updates, (*state, torch.zeros(()))

        return GradientTransformation(init, update)


def _other_transform_state():
    sgd, adam = otx.sgd(0.1, momentum=0.9), otx.adam(0.1)
    adam_state = adam.init(_params())
    return _update(sgd, _grads(), state=adam_state)


def _sgd_state_to_adam():
    sgd, adam = otx.sgd(0.1), otx.adam(0.1)
    return _update(adam, _grads(), state=sgd.init(_params()))


def _chain_of_other_length():
    return _update(otx.chain(otx.scale_by_adam(), otx.scale(-0.1)), _grads(), state=(1, 2, 3))


def _complex_to_real_only(make: Callable[[], GradientTransformation], who: str):
    params = {"z": torch.ones(3, dtype=torch.complex64), "r": torch.ones(2)}
    return _init(make(), params)


def _apply_updates(updates: Any):
    params = _params()
    return (lambda: otx.apply_updates(params, updates)), (params, updates)


FUNCTIONAL: list[Case] = [
    Case(
        "construct-scale_by_schedule-number",
        lambda: ((lambda: otx.scale_by_schedule(0.1)), None),  # type: ignore[arg-type]
        TypeError,
        r"step_size_fn must be a schedule .*got step_size_fn=0.1; use scale\(0.1\)",
    ),
    Case(
        "update-grads-missing-leaf",
        lambda: _update(otx.adam(0.1), {"enc": {"w": torch.ones(2, 3)}}),
        ValueError,
        r"tree structure mismatch(.|\n)*in moments but not in updates: \['b'\]",
    ),
    Case(
        "update-grads-extra-leaf",
        lambda: _update(otx.adam(0.1), {**_grads(), "c": torch.ones(1)}),
        ValueError,
        r"tree structure mismatch(.|\n)*in updates but not in moments: \['c'\]",
    ),
    Case(
        "update-grads-shape",
        lambda: _update(otx.adam(0.1), _with(torch.ones(4))),
        ValueError,
        r"shape mismatch: .*\['b'\] has shape \(3,\) but updates\['b'\] has shape \(4,\)",
    ),
    Case(
        "update-grads-shape-nested",
        lambda: _update(otx.sgd(0.1, momentum=0.9), _with(torch.ones(3, 2), "enc")),
        ValueError,
        r"shape mismatch: .*\['enc'\]\['w'\] has shape",
    ),
    Case(
        "update-grads-integer",
        lambda: _update(otx.adam(0.1), _with(torch.ones(3, dtype=torch.int64))),
        TypeError,
        r"updates\['b'\] has dtype torch.int64",
    ),
    Case(
        "update-grads-bool",
        lambda: _update(otx.adam(0.1), _with(torch.ones(3, dtype=torch.bool))),
        TypeError,
        r"\['b'\] has dtype torch.bool",
    ),
    Case(
        "update-grads-not-a-tensor",
        lambda: _update(otx.adam(0.1), _with(1.0)),
        TypeError,
        r"updates\['b'\] is not a tensor: float 1.0",
    ),
    Case(
        "update-grads-sparse",
        lambda: _update(otx.adam(0.1), _with(torch.ones(3).to_sparse())),
        TypeError,
        r"updates\['b'\] is a sparse tensor .*sparse_coo.*dense tensors only",
    ),
    Case(
        "update-params-missing-leaf",
        lambda: _update(otx.adamw(0.1), _grads(), params={"enc": {"w": torch.ones(2, 3)}}),
        ValueError,
        r"tree structure mismatch(.|\n)*but not in tree_y: \['b'\]",
    ),
    Case(
        "update-params-shape",
        lambda: _update(otx.adamw(0.1), _grads(), params={**_params(), "b": torch.zeros(4)}),
        ValueError,
        r"shape mismatch: tree_y\['b'\] has shape \(4,\) but tree_x\['b'\] has shape \(3,\)",
    ),
    Case(
        "update-state-of-another-optimizer",
        _other_transform_state,
        TypeError,
        r"trace: update got a state ScaleByAdamState\(count, mu, nu\) that has no 'trace'",
    ),
    Case(
        "update-empty-state-to-adam",
        _sgd_state_to_adam,
        TypeError,
        r"scale_by_adam: update got a state EmptyState\(\) that has no 'mu'",
    ),
    Case(
        "update-chain-state-of-other-length",
        _chain_of_other_length,
        ValueError,
        r"chain of 2 transformations got a state of tuple with 3 entries",
    ),
    Case(
        "update-returns-state-of-other-structure",
        lambda: _update(
            otx.chain(_Growing.make(), otx.scale(-0.1)),
            _grads(),
            state=otx.chain(_Growing.make(), otx.scale(-0.1)).init(_params()),
        ),
        TypeError,
        r"_Growing.make: update returned a state of another structure than the one it was "
        r"given: a tuple of 2 for a tuple of 1",
    ),
    Case(
        "init-integer-param",
        lambda: _init(
            otx.adam(0.1), {"w": torch.ones(3), "step": torch.zeros(3, dtype=torch.int64)}
        ),
        TypeError,
        r"scale_by_adam: params\['step'\] is of dtype torch.int64",
    ),
    Case(
        "init-bool-param",
        lambda: _init(
            otx.sgd(0.1, momentum=0.9), [torch.ones(2), torch.zeros(2, dtype=torch.bool)]
        ),
        TypeError,
        r"trace: params\[1\] is of dtype torch.bool",
    ),
    Case(
        "init-not-a-tensor",
        lambda: _init(otx.adamw(0.1), {"w": torch.ones(3), "scale": 2.0}),
        TypeError,
        r"params\['scale'\] is not a tensor \(float 2.0\)",
    ),
    Case(
        "apply_updates-structure",
        lambda: _apply_updates({"b": torch.ones(3)}),
        ValueError,
        r"tree structure mismatch(.|\n)*\['enc'\]\['w'\]",
    ),
    Case(
        "apply_updates-shape",
        lambda: _apply_updates({"enc": {"w": torch.ones(3, 2)}, "b": torch.ones(3)}),
        ValueError,
        r"shape mismatch: params\['enc'\]\['w'\] has shape \(2, 3\) but updates\['enc'\]\['w'\]",
    ),
    Case(
        "apply_updates-not-a-tensor",
        lambda: _apply_updates({"enc": {"w": torch.ones(2, 3)}, "b": "x"}),
        TypeError,
        r"updates\['b'\] is not a tensor: str 'x'",
    ),
    *[
        Case(
            f"init-complex-{who}",
            lambda make=make, who=who: _complex_to_real_only(make, who),
            ValueError,
            rf"{who} does not support complex parameters: params\['z'\] is a tensor .*complex64",
        )
        for make, who in [
            (lambda: otx.lion(0.1), "scale_by_lion"),
            (lambda: otx.sign_sgd(0.1), "scale_by_sign"),
            (lambda: otx.signum(0.1), "scale_by_sign"),
            (lambda: otx.sm3(0.1), "scale_by_sm3"),
            (lambda: otc.adopt(0.1), "scale_by_adopt"),
            (lambda: otc.cocob(), "scale_by_cocob"),
            (lambda: otc.dadapt_adamw(), "dadapt_adamw"),
            (lambda: otc.dog(), "scale_by_dog"),
            (lambda: otc.dowg(), "scale_by_dowg"),
            (lambda: otc.mechanize(otx.sgd(0.1)), "mechanize"),
            (lambda: otc.momo(), "momo"),
            (lambda: otc.momo_adam(), "momo_adam"),
            (lambda: otc.prodigy(), "prodigy"),
            (lambda: otc.sophia(0.1), "scale_by_sophia"),
            (lambda: otx.keep_params_nonnegative(), "keep_params_nonnegative"),
            (lambda: scale_by_factored_rms_torch(), "scale_by_factored_rms_torch"),
            (lambda: otx.project_scale_invariant(otx.scale_by_adam()), "project_scale_invariant"),
        ]
    ],
]
if _meta_device():
    FUNCTIONAL.append(
        Case(
            "update-grads-other-device",
            lambda: _update(otx.adam(0.1), _with(torch.ones(3, device="meta"))),
            ValueError,
            r"device mismatch: .*\['b'\] is on cpu but updates\['b'\] is on meta",
        )
    )


# --------------------------------------------------------------------------------------------
# Adapter (TorchOptimizer) and drop-ins
# --------------------------------------------------------------------------------------------


def _net_params() -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    return [
        torch.nn.Parameter(torch.randn(3, 2, generator=gen, dtype=torch.float64)),
        torch.nn.Parameter(torch.randn(2, generator=gen, dtype=torch.float64)),
    ]


def _stepped(make: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]):
    params = _net_params()
    opt = make(params)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    return opt, params


def _adam(params: Any) -> TorchOptimizer:
    return TorchOptimizer(params, otx.adam, lr=0.01)


def _adapter_action(fn: Callable[[Any, list[torch.nn.Parameter]], Any], make: Any = _adam):
    def setup():
        opt, params = _stepped(make)
        return (lambda: fn(opt, params)), opt

    return setup


def _set_grad(p: torch.Tensor, g: torch.Tensor) -> None:
    if g.is_sparse:
        p.grad = g
        return
    p.grad = torch.zeros_like(p)
    p.grad.data = g  # bypasses autograd's own shape check, as a buggy hook could


def _bad_grad(opt: TorchOptimizer, params: list, g: torch.Tensor) -> None:
    _set_grad(params[1], g)
    opt.step()


def _step_after(mutate: Callable[[Any], Any], make: Any = _adam):
    """(action, watched): ``opt.step()`` after ``mutate(opt)`` (e.g. a hyperparameter written into
    a param group by hand, as an LR scheduler does); the optimizer is watched after ``mutate``."""

    def setup():
        opt, _ = _stepped(make)
        mutate(opt)
        return opt.step, opt

    return setup


def _add_group(opt: TorchOptimizer, params: list, **group: Any) -> None:
    opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], **group})


def _sd_of(make: Callable[[list], torch.optim.Optimizer]) -> dict[str, Any]:
    opt, _ = _stepped(make)
    return opt.state_dict()


def _load(mutate: Callable[[dict[str, Any]], Any], make=_adam, source=None):
    def fn(opt: TorchOptimizer, params: list) -> None:
        del params
        sd = copy.deepcopy(opt.state_dict() if source is None else _sd_of(source))
        mutate(sd)
        opt.load_state_dict(sd)

    return _adapter_action(fn, make)


ADAPTER: list[Case] = [
    Case(
        "construct-negative-lr",
        lambda: ((lambda: TorchOptimizer(_net_params(), otx.adamw, lr=-1e-3)), None),
        ValueError,
        r"Invalid learning rate: -0.001 \(lr in param group 0 must be a finite number >= 0\)",
    ),
    Case(
        "construct-nan-lr",
        lambda: ((lambda: TorchOptimizer(_net_params(), otx.adamw, lr=NAN)), None),
        ValueError,
        r"Invalid learning rate: nan",
    ),
    Case(
        "construct-negative-weight_decay",
        lambda: (
            (lambda: TorchOptimizer(_net_params(), otx.adamw, lr=1e-3, weight_decay=-1)),
            None,
        ),
        ValueError,
        r"Invalid weight_decay value: -1 \(weight_decay in param group 0",
    ),
    Case(
        "construct-bad-b1",
        lambda: ((lambda: TorchOptimizer(_net_params(), otx.adamw, lr=1e-3, b1=1.5)), None),
        ValueError,
        r"b1 must be in \[0, 1\), got b1=1.5",
    ),
    Case(
        "construct-integer-param",
        lambda: (
            (lambda: TorchOptimizer([torch.zeros(2, dtype=torch.int64)], otx.adam, lr=0.1)),
            None,
        ),
        TypeError,
        r"parameter 0 of param group 0 has dtype torch.int64",
    ),
    Case(
        "construct-duplicate-params",
        lambda: (
            (
                lambda: TorchOptimizer(
                    [{"params": [p := torch.zeros(2, requires_grad=True)]}, {"params": [p]}],
                    otx.adam,
                    lr=0.1,
                )
            ),
            None,
        ),
        ValueError,
        r"some parameters appear in more than one parameter group",
    ),
    Case(
        "construct-unknown-hyperparameter",
        lambda: ((lambda: TorchOptimizer(_net_params(), otx.adamw, lr=0.1, weight_dcay=0.1)), None),
        TypeError,
        r"weight_dcay",
    ),
    Case(
        "add_param_group-duplicate",
        _adapter_action(lambda opt, ps: opt.add_param_group({"params": [ps[0]]})),
        ValueError,
        r"some parameters appear in more than one parameter group",
    ),
    Case(
        "add_param_group-negative-lr",
        _adapter_action(lambda opt, ps: _add_group(opt, ps, lr=-0.1)),
        ValueError,
        r"Invalid learning rate: -0.1 \(lr in param group 1",
    ),
    Case(
        "add_param_group-bad-b2",
        _adapter_action(lambda opt, ps: _add_group(opt, ps, b2=NAN)),
        ValueError,
        r"b2 must be in \[0, 1\), got b2=nan",
    ),
    Case(
        "step-gradient-shape",
        _adapter_action(lambda opt, ps: _bad_grad(opt, ps, torch.ones(5, dtype=torch.float64))),
        ValueError,
        r"param group 0, parameter 1: gradient of shape \(5,\) and dtype torch.float64 for a "
        r"parameter of shape \(2,\)",
    ),
    Case(
        "step-gradient-dtype",
        _adapter_action(lambda opt, ps: _bad_grad(opt, ps, torch.ones(2, dtype=torch.float32))),
        ValueError,
        r"param group 0, parameter 1: gradient of shape \(2,\) and dtype torch.float32",
    ),
    Case(
        "step-sparse-gradient",
        _adapter_action(
            lambda opt, ps: _bad_grad(opt, ps, torch.ones(2, dtype=torch.float64).to_sparse())
        ),
        RuntimeError,
        r"param group 0, parameter 1 has a sparse gradient",
    ),
    Case(
        "step-structure-changing-hyperparameter",
        _step_after(
            lambda opt: opt.param_groups[0].__setitem__("momentum", 0.9),
            make=lambda ps: TorchOptimizer(ps, otx.sgd, lr=0.1),
        ),
        ValueError,
        r"param group 0: the new value\(s\) of momentum change the structure",
    ),
    Case(
        "step-bad-b1-written-by-hand",
        _step_after(lambda opt: opt.param_groups[0].__setitem__("b1", 2.0)),
        ValueError,
        r"b1 must be in \[0, 1\), got b1=2.0",
    ),
]

LOAD_STATE_DICT: list[Case] = [
    Case(
        "missing-keys",
        _load(lambda sd: sd["state"][0].pop("0.nu")),
        ValueError,
        r"param group 0, parameter 0 \(state id 0\): .*missing keys \['0.nu'\]",
    ),
    Case(
        "extra-keys",
        _load(lambda sd: sd["state"][1].__setitem__("bogus", torch.zeros(()))),
        ValueError,
        r"param group 0, parameter 1 \(state id 1\): .*unexpected keys \['bogus'\]",
    ),
    Case(
        "wrong-shape",
        _load(lambda sd: sd["state"][0].__setitem__("0.mu", torch.zeros(4, 4))),
        ValueError,
        r"param group 0, parameter 0 \(state id 0\), key '0.mu': saved shape \(4, 4\) does not "
        r"match the expected shape \(3, 2\)",
    ),
    Case(
        "another-optimizers-layout",
        _load(lambda sd: None, source=lambda ps: TorchOptimizer(ps, otx.sgd, lr=0.1, momentum=0.9)),
        ValueError,
        r"missing keys \['0.count', '0.mu', '0.nu'\]; unexpected keys \['0.trace'\]",
    ),
    Case(
        "fewer-groups",
        _load(lambda sd: sd["param_groups"].append(copy.deepcopy(sd["param_groups"][0]))),
        ValueError,
        r"different number of parameter groups \(2\) than the optimizer \(1\)",
    ),
    Case(
        "group-size",
        _load(lambda sd: sd["param_groups"][0]["params"].pop()),
        ValueError,
        r"parameter group \(0\) that doesn't match the size of optimizer's group: 1 parameters "
        r"saved, 2 in the optimizer",
    ),
    Case(
        "stray-state-entry",
        _load(lambda sd: sd["state"].__setitem__(7, {"0.mu": torch.zeros(2)})),
        ValueError,
        r"state entries \[7\] belong to no parameter",
    ),
    Case(
        "not-a-state-dict",
        _load(lambda sd: sd.pop("state")),
        ValueError,
        r"expected a dict with 'state' and 'param_groups' entries",
    ),
]

DROP_INS: list[Case] = [
    Case(
        "torch_optim.Adam-negative-lr",
        lambda: ((lambda: C.Adam(_net_params(), lr=-1.0)), None),
        ValueError,
        r"Invalid learning rate: -1.0",
    ),
    Case(
        "torch_optim.AdamW-betas",
        lambda: ((lambda: C.AdamW(_net_params(), betas=(1.0, 0.999))), None),
        ValueError,
        r"Invalid beta parameter at index 0: 1.0",
    ),
    Case(
        "torch_optim.SGD-negative-momentum",
        lambda: ((lambda: C.SGD(_net_params(), lr=0.1, momentum=-0.5)), None),
        ValueError,
        r"Invalid momentum value: -0.5",
    ),
    Case(
        "torch_optim.SGD-negative-weight_decay",
        lambda: ((lambda: C.SGD(_net_params(), lr=0.1, weight_decay=-0.1)), None),
        ValueError,
        r"Invalid weight_decay value: -0.1",
    ),
    Case(
        "torch_optim.RMSprop-eps",
        lambda: ((lambda: C.RMSprop(_net_params(), eps=-1.0)), None),
        ValueError,
        r"Invalid epsilon value: -1.0",
    ),
    Case(
        "torch_optim.Adam-loads-SGD-state",
        _load(
            lambda sd: None,
            make=lambda ps: C.Adam(ps, lr=0.01),
            source=lambda ps: C.SGD(ps, lr=0.1, momentum=0.9),
        ),
        ValueError,
        r"param group 0, parameter 0 .*momentum_buffer",
    ),
    Case(
        "torch_optim.SGD-loads-Adam-state",
        _load(
            lambda sd: None,
            make=lambda ps: C.SGD(ps, lr=0.1, momentum=0.9),
            source=lambda ps: C.Adam(ps, lr=0.01),
        ),
        ValueError,
        r"param group 0, parameter 0 .*missing keys \[.momentum_buffer.\]; "
        r"unexpected keys \[.exp_avg.",
    ),
    Case(
        "torch_optim.Adam-load-wrong-shape",
        _load(
            lambda sd: sd["state"][1].__setitem__("exp_avg", torch.zeros(7)),
            make=lambda ps: C.Adam(ps, lr=0.01),
        ),
        ValueError,
        r"param group 0, parameter 1 \(state id 1\), key 'exp_avg': saved shape \(7,\)",
    ),
]


def _classy_where(where: float):
    from optax_torch.compat.classy.optim import build_optimizer

    params = _net_params()
    opt = build_optimizer({"name": "sgd", "lr": 0.1, "momentum": 0.9})
    opt.set_param_groups(params)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step(where=0.5)
    return (lambda: opt.step(where=where)), opt.optimizer


DROP_INS += [
    Case(f"classy-where-{w}", lambda w=w: _classy_where(w), AssertionError, rf"Invalid where: {w}")
    for w in (1.0, -0.1, 1.5, NAN)
]

GROUPS = {
    "functional": FUNCTIONAL,
    "adapter": ADAPTER,
    "load_state_dict": LOAD_STATE_DICT,
    "drop-ins": DROP_INS,
}
CASES = [pytest.param(c, id=f"{g}/{c.name}") for g, cs in GROUPS.items() for c in cs]


@pytest.mark.parametrize("case", CASES)
def test_misuse_raises_and_leaves_state_untouched(case):
    _check(case)


def test_step_on_a_group_without_grads_is_a_no_op_like_torch():
    """torch.optim skips parameters without gradients: no update, no state (a whole group, or
    the whole optimizer)."""
    a, b = _net_params(), _net_params()
    opt = TorchOptimizer([{"params": a}, {"params": b}], otx.adam, lr=0.1)
    ref = torch.optim.Adam([{"params": [p.detach().clone().requires_grad_() for p in a]}], lr=0.1)
    before = [p.detach().clone() for p in a + b]
    opt.step()  # no gradients at all
    assert opt.state_dict()["state"] == {} and not ref.state_dict()["state"]
    for p in b:
        p.grad = torch.ones_like(p)
    opt.step()  # group 0 has none
    assert all(torch.equal(p, q) for p, q in zip(a, before[:2]))
    assert not any(torch.equal(p, q) for p, q in zip(b, before[2:]))
    assert set(opt.state_dict()["state"]) == {2, 3}
    assert all(p not in opt.state for p in a)


def test_docs_quote_the_counts():
    """docs/errors.md quotes the numbers of this catalogue."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).parent.parent / "docs" / "errors.md").read_text()

    def quoted(what: str) -> int:
        found = re.search(rf"\*\*(\d+) {what}\*\*", text)
        assert found, what
        return int(found.group(1))

    assert quoted("functional cases") == len(FUNCTIONAL)
    assert quoted("adapter cases") == len(ADAPTER)
    assert quoted("`load_state_dict` cases") == len(LOAD_STATE_DICT)
    assert quoted("drop-in cases") == len(DROP_INS)
    n_construction = len(FLOAT_HYPERPARAMETERS) + len(RANGED_HYPERPARAMETERS) + len(OUT_OF_RANGE)
    assert quoted("construction checks") == n_construction
    assert f"{len(RANGED_HYPERPARAMETERS)} catalogue-wide out-of-range checks" in text
    assert f"({len(CASES)} cases with the state checked)" in text.replace("\n", " ")
    assert f"{len(FLOAT_HYPERPARAMETERS)} NaN checks" in text
    assert f"{len(OUT_OF_RANGE)} out-of-range values" in text
