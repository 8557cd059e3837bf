"""The ``torch.optim.Optimizer`` contract of the 15 drop-ins, each against its torch 2.13 class.

Param groups, ``add_param_group``, ``zero_grad``, ``step(closure)``, ``optimizer.state``, the six
hook APIs, ``GradScaler``, ``clip_grad_norm_``, pickling and copying, loading another class's
state, torch's validation errors, and the ``foreach`` / ``fused`` / ``capturable`` /
``differentiable`` flags. Models, registry and skip rules come from ``test_torch_optim_matrix``
(LBFGS: one group, closures; SparseAdam: sparse embeddings; Muon: 2-d parameters).
"""

from __future__ import annotations

import copy
import inspect
import pickle
from typing import Any

import pytest
import torch
from test_torch_optim_matrix import (
    NAMES,
    RESUME_ATOL,
    SELFCHECK,
    assert_state_close,
    dropin,
    model_of,
    ref_class,
    run_step,
)
from torch_optim_ref import assert_nets_close, roundtrip

from optax_torch.compat import torch_optim as C

# A stateful option set per class (every class keeps state after a step with these).
KW: dict[str, dict[str, Any]] = {
    "SGD": dict(lr=0.05, momentum=0.9),
    "Adam": dict(lr=0.01, amsgrad=True),
    "AdamW": dict(lr=0.01),
    "Adadelta": dict(lr=0.5),
    "Adafactor": dict(lr=0.01),
    "Adagrad": dict(lr=0.05),
    "Adamax": dict(lr=0.01),
    "ASGD": dict(lr=0.01, t0=3),
    "LBFGS": dict(lr=0.5, max_iter=4, history_size=3),
    "Muon": dict(lr=0.02),
    "NAdam": dict(lr=0.01),
    "RAdam": dict(lr=0.01),
    "RMSprop": dict(lr=0.01, momentum=0.5, centered=True),
    "Rprop": dict(lr=0.01),
    "SparseAdam": dict(lr=0.01),
}
F64 = torch.float64


def xfail(reason: str, *values: Any) -> Any:
    """A strict xfail (a plain case in the self-check, where torch runs as the drop-in)."""
    if SELFCHECK:
        return pytest.param(*values)
    return pytest.param(*values, marks=pytest.mark.xfail(reason=reason, strict=True))


def overrides(name: str) -> dict[str, Any]:
    return {} if name == "LBFGS" else {"lr": KW[name]["lr"] / 2}


def build(name: str, dtype: torch.dtype = F64, ref_extra=None, extra=None):
    """``(model, ref_net, our_net, ref_opt, our_opt)``: the class's model, two param groups
    (one for LBFGS), the class's options of ``KW`` updated with ``extra``."""
    ours_cls, model = dropin(name), model_of(name)
    a, b = model.make(dtype), model.make(dtype)
    kw, ov = {**KW[name], **(extra or {})}, overrides(name)
    ref = ref_class(name)(model.groups(a, **ov), **{**kw, **(ref_extra or {})})
    ours = ours_cls(model.groups(b, **ov), **kw)
    return model, a, b, ref, ours


def advance(model, runs, steps, dtype: torch.dtype = F64, atol: float = 1e-12) -> None:
    """Steps every ``(net, opt)`` of ``runs``; compares every net with the first after each."""
    for t in steps:
        for net, opt in runs:
            run_step(model, net, opt, t, dtype)
        for i, (net, _) in enumerate(runs[1:]):
            assert_nets_close(runs[0][0], net, atol, f"step {t}, run {i + 1}")


def groups_without_params(opt: Any) -> list[dict[str, Any]]:
    return [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]


def assert_groups_like_torch(ref: Any, ours: Any) -> None:
    for g, h in zip(ours.param_groups, ref.param_groups):
        assert list(g) == list(h), (list(g), list(h))
    assert groups_without_params(ours) == groups_without_params(ref)


def sd_equal(x: Any, y: Any) -> bool:
    if isinstance(x, torch.Tensor):
        return isinstance(y, torch.Tensor) and x.shape == y.shape and bool(torch.equal(x, y))
    if isinstance(x, dict):
        return isinstance(y, dict) and list(x) == list(y) and all(sd_equal(x[k], y[k]) for k in x)
    if isinstance(x, list | tuple):
        return type(x) is type(y) and len(x) == len(y) and all(map(sd_equal, x, y))
    return x == y


def signature_has(name: str, arg: str) -> bool:
    return arg in inspect.signature(ref_class(name)).parameters


# ------------------------------------------------------------------------------------------------
# Param groups, add_param_group, zero_grad, step(closure), optimizer.state
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_param_groups_and_defaults_like_torch(name):
    _, _, _, ref, ours = build(name)
    assert_groups_like_torch(ref, ours)
    assert ours.defaults == ref.defaults
    assert [len(g["params"]) for g in ours.param_groups] == [
        len(g["params"]) for g in ref.param_groups
    ]


@pytest.mark.parametrize("name", NAMES)
def test_add_param_group_mid_run(name):
    if name == "LBFGS":
        pytest.skip("torch's LBFGS optimizes its first param group only")
    ours_cls, model = dropin(name), model_of(name)
    a, b = model.make(F64), model.make(F64)
    first_a, second_a = model.groups(a, **overrides(name))
    first_b, second_b = model.groups(b, **overrides(name))
    ref, ours = ref_class(name)([first_a], **KW[name]), ours_cls([first_b], **KW[name])
    advance(model, [(a, ref), (b, ours)], range(2))
    ref.add_param_group(second_a)
    ours.add_param_group(second_b)
    assert_groups_like_torch(ref, ours)
    advance(model, [(a, ref), (b, ours)], range(2, 6))
    assert_state_close(ref, ours)


@pytest.mark.parametrize("name", NAMES)
def test_zero_grad_like_torch(name):
    model, a, b, ref, ours = build(name)
    advance(model, [(a, ref), (b, ours)], range(2))
    for opt in (ref, ours):
        opt.zero_grad(set_to_none=False)
    for p, q in zip(a.parameters(), b.parameters()):
        assert (p.grad is None) == (q.grad is None)
        if q.grad is not None:
            assert q.grad.is_sparse == p.grad.is_sparse
            assert not q.grad.to_dense().any()
    if not model.closure:  # a step on the zeroed gradients
        ref.step()
        ours.step()
        assert_nets_close(a, b, 1e-12, "step on zeros")
        assert_state_close(ref, ours)
    for opt in (ref, ours):
        opt.zero_grad()  # set_to_none=True
    for g in ours.param_groups:
        assert all(p.grad is None for p in g["params"])
    advance(model, [(a, ref), (b, ours)], range(2, 5))


@pytest.mark.parametrize("name", NAMES)
def test_step_closure_returns_its_loss(name):
    model, a, b, ref, ours = build(name)
    for t in range(3):
        returned = {}
        for key, net, opt in (("ref", a, ref), ("ours", b, ours)):
            losses = []

            def closure(net=net, opt=opt, losses=losses):
                assert torch.is_grad_enabled()  # torch enables grad for the closure
                opt.zero_grad()
                loss = model.loss(net, t, F64)
                loss.backward()
                losses.append(loss)
                return loss

            with torch.no_grad():
                out = opt.step(closure)
            assert out is losses[0]  # LBFGS: the first evaluation, as in torch
            returned[key] = (float(out.detach()), len(losses))
        assert returned["ours"] == pytest.approx(returned["ref"], rel=0, abs=1e-12)
        assert_nets_close(a, b, 1e-12, f"step {t}")


@pytest.mark.parametrize("name", NAMES)
def test_state_and_state_dict_read_like_torch(name):
    model, a, b, ref, ours = build(name)
    advance(model, [(a, ref), (b, ours)], range(4))
    assert_state_close(ref, ours)  # ours.state[p][name], value by value
    sr, so = ref.state_dict(), ours.state_dict()
    assert list(so) == list(sr)
    assert set(so["state"]) == set(sr["state"])
    for k, entry in sr["state"].items():
        assert set(so["state"][k]) == set(entry), k
    assert [g["params"] for g in so["param_groups"]] == [g["params"] for g in sr["param_groups"]]
    assert [list(g) for g in so["param_groups"]] == [list(g) for g in sr["param_groups"]]


# ------------------------------------------------------------------------------------------------
# Hooks
# ------------------------------------------------------------------------------------------------


def _hooked(opt: Any, events: list[Any], closure_model: bool) -> list[Any]:
    """Registers the six hooks (plus a prepended and a removed one) on ``opt``."""

    def step_pre(o, args, kwargs):
        events.append(("step_pre", o is opt, len(args), sorted(kwargs)))
        if args and callable(args[0]):  # replaces the closure: torch uses the returned args
            inner = args[0]

            def wrapped():
                events.append("wrapped closure")
                return inner()

            return (wrapped, *args[1:]), kwargs
        return None

    def step_pre_first(o, args, kwargs):
        events.append(("step_pre_first", o is opt))

    def step_post(o, args, kwargs):
        events.append(("step_post", o is opt, len(args), sorted(kwargs)))

    def sd_pre(o):
        events.append(("sd_pre", o is opt))

    def sd_post(o, sd):
        events.append(("sd_post", o is opt, sorted(sd)))
        return {**sd, "extra": 1}

    def load_pre(o, sd):
        events.append(("load_pre", o is opt, sd.get("extra")))
        sd = dict(sd)
        sd["param_groups"] = [{**g, "lr": 0.125} for g in sd["param_groups"]]
        return sd

    def load_post(o):
        events.append(("load_post", o is opt, [g["lr"] for g in o.param_groups]))

    handles = [
        opt.register_step_pre_hook(step_pre),
        opt.register_step_pre_hook(step_pre_first, prepend=True)
        if "prepend" in inspect.signature(opt.register_step_pre_hook).parameters
        else None,
        opt.register_step_post_hook(step_post),
        opt.register_state_dict_pre_hook(sd_pre),
        opt.register_state_dict_post_hook(sd_post),
        opt.register_load_state_dict_pre_hook(load_pre),
        opt.register_load_state_dict_post_hook(load_post),
    ]
    removed = opt.register_step_post_hook(lambda *args: events.append("removed hook fired"))
    removed.remove()
    return handles


@pytest.mark.parametrize("name", NAMES)
def test_hooks_fire_like_torch(name):
    model, a, b, ref, ours = build(name)
    events: dict[str, list[Any]] = {"ref": [], "ours": []}
    for key, net, opt in (("ref", a, ref), ("ours", b, ours)):
        handles = _hooked(opt, events[key], model.closure)
        for t in range(2):  # a plain step (LBFGS: closure) and a step with a closure
            if t == 0 and not model.closure:
                run_step(model, net, opt, t)
            else:

                def closure(net=net, opt=opt, t=t):
                    opt.zero_grad()
                    loss = model.loss(net, t, F64)
                    loss.backward()
                    return loss

                opt.step(closure)
        sd = opt.state_dict()
        assert sd["extra"] == 1
        opt.load_state_dict(sd)
        assert all(g["lr"] == 0.125 for g in opt.param_groups)
        for h in handles:
            if h is not None:
                h.remove()
        opt.state_dict()
        run_step(model, net, opt, 2)
    assert events["ours"] == events["ref"]
    assert_nets_close(a, b, RESUME_ATOL.get(name, 1e-12))  # after a load_state_dict


# ------------------------------------------------------------------------------------------------
# GradScaler, clip_grad_norm_
# ------------------------------------------------------------------------------------------------


def _poison(grad: torch.Tensor, value: float) -> None:
    (grad._values() if grad.is_sparse else grad).view(-1)[0] = value


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
@pytest.mark.parametrize("name", NAMES)
def test_grad_scaler_skips_inf_steps_like_torch(name, bad):
    if name == "LBFGS":
        pytest.skip("GradScaler does not take closures (LBFGS needs one), in torch as here")
    model, a, b, ref, ours = build(name, torch.float32)
    scales = {}
    for key, net, opt in (("ref", a, ref), ("ours", b, ours)):
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
        for t in range(5):
            opt.zero_grad()
            scaler.scale(model.loss(net, t, torch.float32)).backward()
            if t == 3:
                _poison(opt.param_groups[0]["params"][0].grad, bad)
            scaler.step(opt)
            scaler.update()
        scales[key] = scaler.get_scale()
    assert scales["ours"] == scales["ref"]
    assert_nets_close(a, b, 1e-6)
    assert_state_close(ref, ours, atol=1e-5)  # float32 rounding of buffers of size ~10


@pytest.mark.parametrize("name", NAMES)
def test_clip_grad_norm_before_step(name):
    if name == "SparseAdam":
        pytest.skip("clip_grad_norm_ does not take sparse gradients (torch)")
    model, a, b, ref, ours = build(name)
    for t in range(5):
        for net, opt in ((a, ref), (b, ours)):

            def closure(net=net, opt=opt, t=t):
                opt.zero_grad()
                loss = model.loss(net, t, F64)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), max_norm=0.05)
                return loss

            opt.step(closure) if model.closure else (closure(), opt.step())
        assert_nets_close(a, b, 1e-12, f"step {t}")


# ------------------------------------------------------------------------------------------------
# pickle / deepcopy, loading another class's state
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_pickle_and_deepcopy_mid_run(name):
    if SELFCHECK and name == "LBFGS":
        pytest.skip("torch's LBFGS loses its _params attribute when unpickled or copied")
    model, a, b, ref, ours = build(name)
    advance(model, [(a, ref), (b, ours)], range(3))
    pickled = pickle.loads(pickle.dumps((b, ours)))
    copied = copy.deepcopy((b, ours))
    for _, opt in (pickled, copied):
        assert type(opt) is type(ours)
        assert_groups_like_torch(ref, opt)
    advance(model, [(a, ref), (b, ours), pickled, copied], range(3, 6))
    for _, opt in ((b, ours), pickled, copied):
        assert_state_close(ref, opt)


def _other_state_dict(name: str) -> dict[str, Any]:
    """A state dict of another drop-in class (different state names) on the same model."""
    kw: dict[str, Any] = {} if name in ("SGD", "Muon") else dict(momentum=0.9)
    other_cls: Any = C.Adam if name in ("SGD", "Muon") else C.SGD
    model = model_of(name)
    net = model.make(F64)
    opt = other_cls(model.groups(net, **overrides(name)), lr=0.01, **kw)
    for p in net.parameters():
        p.grad = torch.ones_like(p)  # dense, whatever the model
    opt.step()
    return opt.state_dict()


@pytest.mark.parametrize("name", NAMES)
def test_load_state_dict_of_another_class_raises_and_keeps_state(name):
    if SELFCHECK:
        pytest.skip("torch.optim loads another class's state silently")
    model, a, b, ref, ours = build(name)
    advance(model, [(a, ref), (b, ours)], range(2))
    before = copy.deepcopy(ours.state_dict())
    other = _other_state_dict(name)
    with pytest.raises(ValueError):
        ours.load_state_dict(other)
    assert sd_equal(ours.state_dict(), before)
    advance(model, [(a, ref), (b, ours)], range(2, 4))


# ------------------------------------------------------------------------------------------------
# Validation: torch's exception types and messages
# ------------------------------------------------------------------------------------------------

LR = [dict(lr=-1.0), dict(lr=torch.ones(2))]
BETAS = [dict(betas=(1.0, 0.999)), dict(betas=(-0.1, 0.999)), dict(betas=(0.9, 1.0))]
EPS, WDECAY = [dict(eps=-1e-8)], [dict(weight_decay=-0.1)]
FUSED_FOREACH = [dict(fused=True, foreach=True)]
ADAM_BAD = [
    *LR,
    *EPS,
    *BETAS,
    *WDECAY,
    *FUSED_FOREACH,
    dict(betas=(0.9, torch.tensor(0.999))),
    dict(lr=torch.tensor(0.01), foreach=True),
    dict(betas=(torch.tensor(0.9), torch.tensor(0.999)), foreach=True),
    dict(betas=(torch.tensor([0.9, 0.9]), torch.tensor(0.999))),
    dict(betas=(torch.tensor(0.9), torch.tensor([0.9, 0.9]))),
]
BAD: dict[str, list[dict[str, Any]]] = {
    "SGD": [
        *LR,
        dict(momentum=-0.5),
        *WDECAY,
        dict(nesterov=True),
        dict(nesterov=True, momentum=0.9, dampening=0.1),
        *FUSED_FOREACH,
    ],
    "Adam": ADAM_BAD,
    "AdamW": ADAM_BAD,
    "Adadelta": [*LR, dict(rho=1.5), dict(rho=-0.1), *EPS, *WDECAY],
    "Adafactor": [
        *LR,
        dict(beta2_decay=0.5),
        dict(eps=(-1.0, 1e-3)),
        dict(eps=(None, -1.0)),
        dict(d=0.5),
        *WDECAY,
    ],
    "Adagrad": [
        *LR,
        dict(lr_decay=-0.1),
        *WDECAY,
        dict(initial_accumulator_value=-0.1),
        *EPS,
        *FUSED_FOREACH,
    ],
    "Adamax": [*LR, *EPS, *BETAS, *WDECAY],
    "ASGD": [*LR, *WDECAY],
    "LBFGS": [*LR, dict(groups=2)],
    "Muon": [
        *LR,
        dict(momentum=-0.1),
        dict(weight_decay=-0.1),
        dict(adjust_lr_fn="sqrt"),
        dict(non_2d=True),
    ],
    "NAdam": [*LR, *EPS, *BETAS, *WDECAY, dict(momentum_decay=-0.1)],
    "RAdam": [*LR, *EPS, *BETAS, *WDECAY],
    "RMSprop": [*LR, *EPS, dict(momentum=-0.1), *WDECAY, dict(alpha=-0.1)],
    "Rprop": [*LR, dict(etas=(1.5, 2.0)), dict(etas=(0.5, 0.9)), dict(etas=(0.0, 1.2))],
    "SparseAdam": [
        *LR,
        dict(lr=0.0),
        dict(eps=0.0),
        *BETAS,
        dict(complex_param=True),
    ],
}


def _params_for(name: str, bad: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Fresh parameters for a construction with ``bad`` (pseudo-keys select the parameters)."""
    bad = dict(bad)
    model = model_of(name)
    net = model.make(F64)
    if bad.pop("groups", None):
        return _two(net), bad
    if bad.pop("non_2d", None):
        return [torch.nn.Parameter(torch.zeros(3, 4)), torch.nn.Parameter(torch.zeros(4))], bad
    if bad.pop("complex_param", None):
        return [torch.nn.Parameter(torch.zeros(3, dtype=torch.complex128))], bad
    return model.groups(net, **({} if name == "LBFGS" else overrides(name))), bad


def _two(net: Any) -> list[dict[str, Any]]:
    ps = list(net.parameters())
    return [{"params": ps[:1]}, {"params": ps[1:]}]


def _raised(make) -> BaseException:
    with pytest.raises(Exception) as info:
        make()
    return info.value


def _bad_id(bad: dict[str, Any]) -> str:
    return ",".join(
        f"{k}={'tensor' if isinstance(v, torch.Tensor) else v}" for k, v in bad.items()
    ).replace(" ", "")


BAD_CASES = [
    pytest.param(name, bad, id=f"{name}-{i}-{_bad_id(bad)}")
    for name, cases in BAD.items()
    for i, bad in enumerate(cases)
]


@pytest.mark.parametrize(("name", "bad"), BAD_CASES)
def test_bad_arguments_raise_like_torch(name, bad):
    ours_cls = dropin(name)
    params, kwargs = _params_for(name, bad)
    expected = _raised(lambda: ref_class(name)(params, **kwargs))
    got = _raised(lambda: ours_cls(params, **kwargs))
    assert type(got) is type(expected)
    assert str(got) == str(expected)


MUON_EARLY = (
    "Muon(ns_steps=100) raises its ValueError at construction (muon.py), torch at the first step"
)
STEP_ERRORS = {
    "SparseAdam": dict(),  # dense gradients
    "LBFGS": dict(line_search_fn="backtracking"),
    "Muon": dict(ns_steps=100),
}


@pytest.mark.parametrize(
    "name", [xfail(MUON_EARLY, n) if n == "Muon" else n for n in sorted(STEP_ERRORS)]
)
def test_bad_step_raises_like_torch(name):
    ours_cls, model = dropin(name), model_of(name)
    errors = []
    for cls in (ref_class(name), ours_cls):
        net = model.make(F64)
        opt = cls(model.groups(net, **overrides(name)), **{**KW[name], **STEP_ERRORS[name]})

        def closure(net=net, opt=opt):
            opt.zero_grad()
            loss = model.loss(net, 0, F64)
            loss.backward()
            if name == "SparseAdam":
                for p in net.parameters():
                    p.grad = p.grad.to_dense()
            return loss

        errors.append(_raised(lambda opt=opt, closure=closure: opt.step(closure)))
    assert type(errors[1]) is type(errors[0])
    assert str(errors[1]) == str(errors[0])


# ------------------------------------------------------------------------------------------------
# foreach / fused / capturable / differentiable
# ------------------------------------------------------------------------------------------------

FLAGS = [
    pytest.param(name, flag, id=f"{name}-{flag}")
    for name in NAMES
    for flag in ("foreach", "fused", "capturable")
    if signature_has(name, flag)
]


@pytest.mark.parametrize(("name", "flag"), FLAGS)
def test_foreach_fused_capturable_accepted(name, flag):
    """Accepted, shown in the param groups like torch's, and the same steps as without."""
    # Compared with torch's foreach path (the drop-ins may follow it: ASGD's differs from torch's
    # single-tensor path by 4e-10), with torch's default for fused (torch's fused SGD fails on
    # None grads) and capturable (CUDA only in torch).
    default = inspect.signature(ref_class(name)).parameters[flag].default
    ref_extra = {flag: True if flag == "foreach" else default}
    model, a, b, ref, ours = build(name, ref_extra=ref_extra, extra={flag: True})
    flagged = ref_class(name)(
        model.groups(model.make(F64), **overrides(name)), **{**KW[name], flag: True}
    )
    assert_groups_like_torch(flagged, ours)
    if SELFCHECK:  # torch's capturable needs CUDA, its fused SGD no None grads, ASGD's foreach
        return  # differs from its single-tensor path by 4e-10
    advance(model, [(a, ref), (b, ours)], range(3))


@pytest.mark.parametrize("name", [n for n in NAMES if signature_has(n, "differentiable")])
def test_differentiable_raises_not_implemented(name):
    if SELFCHECK:
        pytest.skip("torch.optim supports differentiable=True")
    ours_cls, model = dropin(name), model_of(name)
    with pytest.raises(NotImplementedError, match="differentiable"):
        ours_cls(model.groups(model.make(F64), **overrides(name)), differentiable=True)


# ------------------------------------------------------------------------------------------------
# Before the first step, named parameters, hyperparameters changed mid-run, complex parameters
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_state_before_the_first_step_like_torch(name):
    """Adagrad creates its state at construction, the others at their first step."""
    _, _, _, ref, ours = build(name)
    assert_state_close(ref, ours)
    sr, so = ref.state_dict(), ours.state_dict()
    assert set(so["state"]) == set(sr["state"])
    for k, entry in sr["state"].items():
        assert set(so["state"][k]) == set(entry), k


@pytest.mark.parametrize("name", NAMES)
def test_named_parameters_like_torch(name):
    """torch 2.13 takes ``(name, tensor)`` pairs: param groups get ``param_names``."""
    ours_cls, model = dropin(name), model_of(name)
    a, b = model.make(F64), model.make(F64)
    ref = ref_class(name)(a.named_parameters(), **KW[name])
    ours = ours_cls(b.named_parameters(), **KW[name])
    assert_groups_like_torch(ref, ours)
    advance(model, [(a, ref), (b, ours)], range(3))
    sr, so = ref.state_dict(), ours.state_dict()
    assert so["param_groups"] == sr["param_groups"]
    fresh_net = copy.deepcopy(b)
    fresh = ours_cls(fresh_net.named_parameters(), **KW[name])
    fresh.load_state_dict(roundtrip(sr))
    advance(model, [(a, ref), (fresh_net, fresh)], range(3, 5), atol=RESUME_ATOL.get(name, 1e-12))


# A numeric hyperparameter written into the first group by hand after two steps.
CHANGES: dict[str, dict[str, Any]] = {
    "SGD": dict(momentum=0.5, weight_decay=0.1),
    "Adam": dict(betas=(0.5, 0.9), eps=1e-4, weight_decay=0.1),
    "AdamW": dict(weight_decay=0.3, betas=(0.8, 0.99)),
    "Adadelta": dict(rho=0.5, weight_decay=0.1),
    "Adafactor": dict(beta2_decay=-0.5, d=2.0, weight_decay=0.1),
    "Adagrad": dict(lr_decay=0.1, eps=1e-4, weight_decay=0.1),
    "Adamax": dict(betas=(0.5, 0.9), weight_decay=0.1),
    "ASGD": dict(lambd=0.01, alpha=0.5, t0=1, weight_decay=0.1),
    "LBFGS": dict(lr=0.25, tolerance_change=1e-3),
    "Muon": dict(momentum=0.5, weight_decay=0.3, ns_steps=3),
    "NAdam": dict(momentum_decay=0.01, betas=(0.8, 0.9), weight_decay=0.1),
    "RAdam": dict(betas=(0.8, 0.9), weight_decay=0.1),
    "RMSprop": dict(alpha=0.8, momentum=0.9, weight_decay=0.1),
    "Rprop": dict(etas=(0.3, 1.5), step_sizes=(1e-3, 0.01)),
    "SparseAdam": dict(betas=(0.5, 0.9), eps=1e-4),
}


@pytest.mark.parametrize("name", NAMES)
def test_hyperparameters_changed_mid_run(name):
    model, a, b, ref, ours = build(name)
    advance(model, [(a, ref), (b, ours)], range(2))
    for opt in (ref, ours):
        opt.param_groups[0].update(CHANGES[name])
    advance(model, [(a, ref), (b, ours)], range(2, 6))
    assert_state_close(ref, ours)


COMPLEX = [n for n in NAMES if n not in ("Muon", "SparseAdam", "LBFGS")]


@pytest.mark.parametrize("name", COMPLEX)
def test_complex_parameters_like_torch(name):
    """A complex parameter next to a real one, or torch's error for the class."""
    ours_cls = dropin(name)
    gen = torch.Generator().manual_seed(0)
    init = [
        torch.randn(4, 3, dtype=torch.complex128, generator=gen),
        torch.randn(3, dtype=torch.float64, generator=gen),
    ]
    target = torch.randn(4, dtype=torch.complex128, generator=gen)
    runs = []
    for cls in (ref_class(name), ours_cls):
        ps = [torch.nn.Parameter(x.clone()) for x in init]
        runs.append((ps, cls(ps, **KW[name])))
    errors: list[BaseException | None] = []
    for t in range(6):
        for ps, opt in runs:
            opt.zero_grad()
            x = torch.rand(3, generator=torch.Generator().manual_seed(t), dtype=F64) + 0.5
            out = ps[0] @ (ps[1] * x).to(torch.complex128)
            (out - target).abs().square().mean().backward()
            try:
                opt.step()
                errors.append(None)
            except Exception as e:  # torch's Adafactor takes no complex parameters
                errors.append(e)
        if errors[-2] is not None or errors[-1] is not None:
            assert type(errors[-1]) is type(errors[-2]), errors[-2:]
            assert str(errors[-1]) == str(errors[-2])
            return
        for p, q in zip(*(ps for ps, _ in runs)):
            torch.testing.assert_close(q, p, rtol=0, atol=1e-12)
    # The state has torch's layout: complex tensors where the parameter is complex.
    (rps, ref), (ops, ours) = runs
    for p, q in zip(rps, ops):
        for key, v in ref.state[p].items():
            w = ours.state[q][key]
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                assert w.dtype == v.dtype, (key, w.dtype, v.dtype)
                torch.testing.assert_close(w, v, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Schedulers that write other keys than lr, mixed dtypes, tensor betas
# ------------------------------------------------------------------------------------------------

CYCLED = [n for n in NAMES if signature_has(n, "betas") or signature_has(n, "momentum")]


@pytest.mark.parametrize("name", CYCLED)
def test_one_cycle_lr_cycles_momentum_like_torch(name):
    """OneCycleLR writes ``lr`` and ``betas[0]`` (or ``momentum``) into every group each step;
    ReduceLROnPlateau follows the losses."""
    extra = {"momentum": 0.9} if name in ("SGD", "RMSprop", "Muon") else {}
    model, a, b, ref, ours = build(name, extra=extra)
    scheds = []
    for opt in (ref, ours):
        one_cycle = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=12)
        scheds.append((one_cycle, torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0)))
    for t in range(10):
        losses = [run_step(model, net, opt, t) for net, opt in ((a, ref), (b, ours))]
        for (one_cycle, plateau), loss in zip(scheds, losses):
            one_cycle.step()
            plateau.step(float(model.loss(a, t, F64).detach()) if loss is None else loss.item())
        assert_nets_close(a, b, 1e-12, f"step {t}")
        assert groups_without_params(ours) == groups_without_params(ref)


@pytest.mark.parametrize("name", NAMES)
def test_mixed_dtypes_in_one_group(name):
    """float32 and float64 parameters in the same group (torch groups them by dtype)."""
    ours_cls, model = dropin(name), model_of(name)
    nets = []
    for _ in range(2):
        net = model.make(F64)
        first = next(iter(net.children()))
        first.to(torch.float32)  # the first layer in float32, the rest in float64
        nets.append(net)
    a, b = nets

    def loss(net, t, dtype):
        with torch.autocast("cpu", enabled=False):
            return model.loss(_Cast(net), t, dtype)

    ref = ref_class(name)(model.groups(a, **overrides(name)), **KW[name])
    ours = ours_cls(model.groups(b, **overrides(name)), **KW[name])
    mixed = type(model)(model.make, loss, model.groups, model.closure, model.steps)
    advance(mixed, [(a, ref), (b, ours)], range(5), atol=1e-6)


class _Cast:
    """Calls a module whose first layer is float32 with float64 inputs (casts in and out)."""

    def __init__(self, net: Any) -> None:
        self.net = net

    def __call__(self, *args: Any) -> Any:
        first = next(iter(self.net.children()))

        def pre(mod, inputs):
            return tuple(
                x.float() if torch.is_tensor(x) and x.is_floating_point() else x for x in inputs
            )

        def post(mod, inputs, out):
            return out.double()

        handles = [first.register_forward_pre_hook(pre), first.register_forward_hook(post)]
        try:
            return self.net(*args)
        finally:
            for h in handles:
                h.remove()

    def __getattr__(self, item: str) -> Any:
        return getattr(self.net, item)


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_tensor_betas_like_torch(name):
    betas = (torch.tensor(0.8, dtype=F64), torch.tensor(0.99, dtype=F64))
    model, a, b, ref, ours = build(name, extra=dict(betas=betas))
    advance(model, [(a, ref), (b, ours)], range(6))


# ------------------------------------------------------------------------------------------------
# Steps without gradients, global hooks
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_step_without_gradients_changes_nothing(name):
    model, a, b, ref, ours = build(name)
    advance(model, [(a, ref), (b, ours)], range(2))
    before = copy.deepcopy(ours.state_dict())
    for net, opt in ((a, ref), (b, ours)):
        opt.zero_grad()
        if model.closure:  # a closure that computes the loss but no gradient
            opt.step(lambda net=net: model.loss(net, 2, F64).detach())
        else:
            opt.step()
    assert_nets_close(a, b, 1e-12)
    if not model.closure:  # torch's LBFGS counts the closure's evaluation (func_evals)
        assert sd_equal(ours.state_dict(), before)
    assert_state_close(ref, ours)
    advance(model, [(a, ref), (b, ours)], range(2, 4))


@pytest.mark.parametrize("name", NAMES)
def test_global_step_hooks_fire(name):
    from torch.optim.optimizer import (
        register_optimizer_step_post_hook,
        register_optimizer_step_pre_hook,
    )

    model, a, b, ref, ours = build(name)
    seen: list[Any] = []
    handles = [
        register_optimizer_step_pre_hook(lambda o, args, kw: seen.append(("pre", type(o)))),
        register_optimizer_step_post_hook(lambda o, args, kw: seen.append(("post", type(o)))),
    ]
    try:
        advance(model, [(a, ref), (b, ours)], range(2))
    finally:
        for h in handles:
            h.remove()
    assert (
        seen
        == [("pre", type(ref)), ("post", type(ref)), ("pre", type(ours)), ("post", type(ours))] * 2
    )
