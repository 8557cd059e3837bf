"""optax_torch.compat.timm's optimizer factory and param grouping against timm 1.0.31's."""

from __future__ import annotations

import argparse
import copy
import inspect
import logging
from typing import Any

import pytest
import torch
from torch import nn

timm = pytest.importorskip("timm")

import timm.optim as topt  # noqa: E402
from timm.optim import _optim_factory as tfactory  # noqa: E402
from timm.optim import _param_groups as tgroups  # noqa: E402
from timm.scheduler import create_scheduler_v2  # noqa: E402

from optax_torch.compat.timm import _factory as ofactory  # noqa: E402
from optax_torch.compat.timm import _param_groups as ogroups  # noqa: E402

# timm's Kron compiles its kernels with torch.compile (minutes on CPU): run them eagerly, the
# math the drop-in runs (tests/test_timm_kron.py).
timm.optim.kron.has_dynamo = False  # type: ignore[attr-defined]

STEPS = 10
ATOL = {torch.float64: 1e-12, torch.float32: 1e-6}
# Classes whose timm original computes in float32 whatever the parameter dtype (RAdamLegacy:
# p.float(), float32 state, p.copy_ back), so that in float64 they differ from the drop-in by
# float32 rounding (relative ~1e-7, parameters of order 1); see tests/test_timm_adam_family.py.
# Looser float64 tolerances, where timm computes part of the step in float32: RAdamLegacy always,
# LaProp its second-moment debiasing (float32 unless the default dtype is float64; the drop-in
# keeps it in float64; tests/test_timm_adaptive.py compares under a float64 default at 1e-12).
F64_ATOL = {"RAdamLegacy": 2e-6, "LaProp": 2e-6}


def _timm_names() -> list[Any]:
    return [n for n in topt.list_optimizers() if not str(n).startswith(("bnb", "fused"))]


NAMES = _timm_names()


# --------------------------------------------------------------------------------------------
# Registry


def test_registry_names_and_entries_match_timm():
    assert ofactory.list_optimizers() == NAMES
    assert len(NAMES) == 86
    for name in NAMES:
        ref = topt.get_optimizer_info(name)
        ours = ofactory.default_registry._optimizers[name]
        for field in (
            "name",
            "description",
            "has_eps",
            "has_momentum",
            "has_betas",
            "num_betas",
            "second_order",
            "defaults",
        ):
            assert getattr(ours, field) == getattr(ref, field), (name, field)
        assert isinstance(ours.opt_class, str)
        ref_cls: Any = ref.opt_class
        package = "torch_optim" if ref_cls.__module__.startswith("torch") else "timm"
        assert ours.opt_class == f"optax_torch.compat.{package}.{ref_cls.__name__}"
    # aliases share the target's entry, as in timm
    reg = ofactory.default_registry._optimizers
    assert reg["nesterov"] is reg["sgd"] and reg["nesterovw"] is reg["sgdw"]
    assert ofactory.default_registry._foreach_defaults == {"lion"}


@pytest.mark.parametrize(
    "args",
    [
        dict(filter="adam*"),
        dict(filter=["la*", "nla*"]),
        dict(filter="*adam*", exclude_filters=["bnb*", "fused*", "*w"]),
        dict(filter="c*", with_description=True),
        dict(with_description=True),
    ],
)
def test_list_optimizers_like_timm(args):
    ref = topt.list_optimizers(**args)
    excl = ("bnb", "fused")
    ref = [r for r in ref if not (r[0] if isinstance(r, tuple) else r).startswith(excl)]
    assert ofactory.list_optimizers(**args) == ref


def test_errors_like_timm():
    for fn in (ofactory.get_optimizer_info, topt.get_optimizer_info):
        with pytest.raises(ValueError, match=r"^Optimizer nope not found in registry$"):
            fn("Nope")
    with pytest.raises(ValueError, match=r"^Optimizer nope not found in registry$"):
        ofactory.create_optimizer_v2([nn.Parameter(torch.zeros(2))], "lookahead_nope")
    reg = ofactory.OptimizerRegistry()
    with pytest.raises(KeyError, match="Cannot create alias for non-existent optimizer x"):
        reg.register_alias("y", "X")


def test_get_optimizer_class_and_info():
    info = ofactory.get_optimizer_info("Momentum")
    from optax_torch.compat.torch_optim import SGD

    assert info.opt_class is SGD and info.defaults == {"nesterov": False}
    cls = ofactory.get_optimizer_class("sgd")
    assert cls.func is SGD and cls.keywords == {"nesterov": True}
    assert ofactory.get_optimizer_class("sgd", bind_defaults=False) is SGD
    assert ofactory.get_optimizer_class("adam") is ofactory.get_optimizer_class("adam", False)
    p = nn.Parameter(torch.ones(3))
    opt = cls([p], lr=0.1, momentum=0.9)
    assert opt.param_groups[0]["nesterov"] is True


@pytest.mark.parametrize(
    "name",
    [
        "create_optimizer_v2",
        "list_optimizers",
        "get_optimizer_class",
        "get_optimizer_info",
        "optimizer_kwargs",
        "create_optimizer",
    ],
)
def test_factory_signatures(name):
    _same_signature(getattr(ofactory, name), getattr(tfactory, name))


@pytest.mark.parametrize(
    "name",
    ["param_groups_weight_decay", "param_groups_layer_decay", "auto_group_layers"],
)
def test_param_group_signatures(name):
    _same_signature(getattr(ogroups, name), getattr(tgroups, name))


def test_group_with_matcher_signature():
    from timm.models import _manipulate

    for name in ("group_with_matcher", "group_parameters"):
        _same_signature(getattr(ogroups, name), getattr(_manipulate, name))


def _same_signature(ours, ref):
    a, b = inspect.signature(ours).parameters, inspect.signature(ref).parameters
    assert list(a) == list(b)
    for k in a:
        assert a[k].kind == b[k].kind, k
        assert a[k].default == b[k].default, k


def test_optimizer_kwargs_like_timm():
    base = dict(opt="adamw", lr=1e-3, weight_decay=0.05, momentum=0.9)
    full = dict(
        base,
        opt_eps=1e-6,
        opt_betas=(0.9, 0.95),
        layer_decay=0.7,
        layer_decay_min_scale=0.1,
        layer_decay_no_opt_scale=0.01,
        opt_args={"caution": True},
        opt_foreach=False,
    )
    for cfg in (base, full, dict(base, opt_eps=None)):
        ns = argparse.Namespace(**cfg)
        assert ofactory.optimizer_kwargs(ns) == topt.optimizer_kwargs(ns)


# --------------------------------------------------------------------------------------------
# Param groups


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.fc(self.norm(x)))


class Tiny(nn.Module):
    """A tiny ViT-like model with timm's ``group_matcher`` and ``no_weight_decay``."""

    def __init__(self, d: int = 6) -> None:
        super().__init__()
        self.embed = nn.Linear(4, d)
        self.pos = nn.Parameter(torch.zeros(1, d))
        self.blocks = nn.ModuleList([Block(d) for _ in range(3)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 3)
        with torch.no_grad():
            self.pos.normal_(0, 0.1)
            for p in self.parameters():
                p.add_(0.05 * torch.randn_like(p))

    def no_weight_decay(self) -> set[str]:
        return {"pos"}

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(
            stem=r"^embed|^pos",
            blocks=r"^blocks\.(\d+)"
            if coarse
            else [(r"^blocks\.(\d+)", None), (r"^norm", (99999,))],
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) + self.pos
        for b in self.blocks:
            h = b(h)
        return self.head(self.norm(h))


class NoMatcher(nn.Module):
    """Automatic layer grouping: a trunk of several layers and a ``classifier`` head."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(*[nn.Linear(4, 4) for _ in range(8)])
        self.fc = nn.Linear(4, 2)
        self.pretrained_cfg = {"classifier": "fc"}


def _named_groups(model: nn.Module, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [
        {k: [names[id(p)] for p in v] if k == "params" else v for k, v in g.items()} for g in groups
    ]


def _models():
    torch.manual_seed(0)
    vit = timm.create_model("test_vit", pretrained=False)
    resnet = timm.create_model("test_resnet", pretrained=False)
    return {"tiny": Tiny(), "test_vit": vit, "test_resnet": resnet, "nomatcher": NoMatcher()}


MODELS = _models()

WD_CASES = [
    dict(),
    dict(weight_decay=0.05),
    dict(weight_decay=0.0),
    dict(weight_decay=0.05, weight_decay_exclude_1d=False),
    dict(weight_decay=0.05, no_weight_decay_list=["pos", "cls_token", "*.norm*"]),
    dict(weight_decay=0.05, fallback_list=["head.*", "fc.*"]),
    dict(
        weight_decay=0.05,
        no_weight_decay_list=["pos*"],
        fallback_list=["blocks.0.*"],
        fallback_no_weight_decay=True,
    ),
]


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("case", WD_CASES)
def test_param_groups_weight_decay_like_timm(model_name, case):
    model = MODELS[model_name]
    ours = ogroups.param_groups_weight_decay(model, **case)
    ref = tgroups.param_groups_weight_decay(model, **case)
    assert _named_groups(model, ours) == _named_groups(model, ref)


LD_CASES = [
    dict(),
    dict(weight_decay=0.1, layer_decay=0.6),
    dict(layer_decay=0.5, min_scale=0.2),
    dict(layer_decay=0.5, no_opt_scale=0.2),
    dict(layer_decay=0.9, weight_decay_exclude_1d=False, no_weight_decay_list=["pos*", "cls_*"]),
    dict(layer_decay=0.8, fallback_list=["head.*"], no_weight_decay_list=["pos"]),
    dict(layer_decay=0.8, no_weight_decay_list=["pos"], fallback_no_weight_decay=True),
]


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("case", LD_CASES)
def test_param_groups_layer_decay_like_timm(model_name, case, caplog):
    m_ours, m_ref = copy.deepcopy(MODELS[model_name]), copy.deepcopy(MODELS[model_name])
    with caplog.at_level(logging.WARNING):
        ours = ogroups.param_groups_layer_decay(m_ours, **case)
        ref = tgroups.param_groups_layer_decay(m_ref, **case)
    assert _named_groups(m_ours, ours) == _named_groups(m_ref, ref)
    frozen = [n for n, p in m_ours.named_parameters() if not p.requires_grad]
    assert frozen == [n for n, p in m_ref.named_parameters() if not p.requires_grad]


def test_layer_maps_like_timm():
    from timm.models import group_parameters

    for model in MODELS.values():
        if hasattr(model, "group_matcher"):
            for coarse in (False, True):
                gm = model.group_matcher(coarse=coarse)
                for reverse in (False, True):
                    ours = ogroups.group_parameters(model, gm, reverse=reverse)
                    assert ours == group_parameters(model, gm, reverse=reverse)
        for kw in (dict(), dict(layers_per_group=3), dict(num_groups=4)):
            assert ogroups.auto_group_layers(model, **kw) == tgroups.auto_group_layers(model, **kw)
    # a callable matcher
    fn = lambda n: (len(n) % 3, 0)  # noqa: E731
    model = MODELS["nomatcher"]
    assert ogroups.group_parameters(model, fn) == group_parameters(model, fn)


def test_layer_decay_warns_with_one_layer(caplog):
    model = nn.Sequential(nn.Linear(2, 2))
    with caplog.at_level(logging.WARNING, logger="optax_torch.compat.timm._param_groups"):
        groups = ogroups.param_groups_layer_decay(model, layer_decay=0.5)
    assert "Layer-wise lr decay has no effect" in caplog.text
    assert [g["lr_scale"] for g in groups] == [1.0, 1.0]


# --------------------------------------------------------------------------------------------
# create_optimizer_v2: groups and trajectories with timm's scheduler, vs timm's factory


def _ours_class_or_skip(name: str) -> None:
    path = ofactory.default_registry._optimizers[name.split("_")[-1]].opt_class
    assert isinstance(path, str)
    try:
        ofactory._import_class(path)
    except ImportError:
        pytest.skip(f"{path} is not available yet")
    if name.startswith("lookahead_"):
        try:
            ofactory._import_class("optax_torch.compat.timm.Lookahead")
        except ImportError:
            pytest.skip("optax_torch.compat.timm.Lookahead is not available yet")


def _batch(step: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + step)
    x = torch.randn(5, 4, generator=gen, dtype=torch.float64).to(dtype)
    y = torch.randn(5, 3, generator=gen, dtype=torch.float64).to(dtype)
    return x, y


# timm's Adan and LaProp count steps in the param group ("step", added at the first step); the
# drop-ins keep the count in their functional state (and write it to the group in state_dict).
GROUP_STEP_CLASSES = ("Adan", "LaProp")


def _compare_groups(m_ours, opt_ours, m_ref, opt_ref) -> None:
    ga = _named_groups(m_ours, opt_ours.param_groups)
    gb = _named_groups(m_ref, opt_ref.param_groups)
    assert len(ga) == len(gb)
    if type(opt_ref).__name__ in GROUP_STEP_CLASSES:
        gb = [{k: v for k, v in b.items() if k != "step"} for b in gb]
    for a, b in zip(ga, gb):
        assert set(a) == set(b)
        for k in b:
            if k != "params" and isinstance(b[k], torch.Tensor):
                assert torch.equal(torch.as_tensor(a[k]), b[k]), k
            else:
                assert a[k] == b[k], k


def _run_pair(name: str, kwargs: dict[str, Any], dtype=torch.float64, steps: int = STEPS):
    torch.manual_seed(0)
    model = Tiny().to(dtype)
    m_ours, m_ref = copy.deepcopy(model), copy.deepcopy(model)
    opt_ours = ofactory.create_optimizer_v2(m_ours, name, **kwargs)
    opt_ref = topt.create_optimizer_v2(m_ref, name, **kwargs)
    _compare_groups(m_ours, opt_ours, m_ref, opt_ref)
    sched_kw: dict[str, Any] = dict(
        sched="cosine", num_epochs=steps, warmup_epochs=3, warmup_lr=1e-3, min_lr=1e-4
    )
    sched_kw.update(step_on_epochs=False, updates_per_epoch=1)
    sched_ours, _ = create_scheduler_v2(opt_ours, **sched_kw)
    sched_ref, _ = create_scheduler_v2(opt_ref, **sched_kw)
    assert sched_ours is not None and sched_ref is not None
    info = ofactory.get_optimizer_info(name.split("_")[-1])
    second_order = info.second_order
    atol = ATOL[dtype]
    if dtype == torch.float64:
        atol = F64_ATOL.get(getattr(info.opt_class, "__name__", ""), atol)
    # Kron (deterministic=False) draws its probe vectors from torch's global generator.
    reseed = getattr(info.opt_class, "__name__", "") == "Kron"
    for step in range(steps):
        x, y = _batch(step, dtype)
        for m, opt in ((m_ours, opt_ours), (m_ref, opt_ref)):
            opt.zero_grad()
            loss = (m(x) - y).square().mean()
            loss.backward(create_graph=second_order)
            if reseed:
                torch.manual_seed(1000 + step)
            opt.step()
        sched_ours.step_update(num_updates=step + 1)
        sched_ref.step_update(num_updates=step + 1)
        for (n, a), (_, b) in zip(m_ours.named_parameters(), m_ref.named_parameters()):
            torch.testing.assert_close(
                a, b, atol=atol, rtol=0, msg=lambda s, n=n: f"{name} step {step} {n}: {s}"
            )
        assert [g["lr"] for g in opt_ours.param_groups] == [g["lr"] for g in opt_ref.param_groups]
    _compare_groups(m_ours, opt_ours, m_ref, opt_ref)


@pytest.mark.parametrize("layer_decay", [None, 0.7], ids=["wd_groups", "layer_decay"])
@pytest.mark.parametrize("name", NAMES)
def test_create_optimizer_v2_trajectory(name, layer_decay):
    _ours_class_or_skip(name)
    _run_pair(name, dict(lr=1e-2, weight_decay=0.05, layer_decay=layer_decay))


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("lookahead_adamw", dict(lr=1e-2, weight_decay=0.05)),
        ("lookahead_sgd", dict(lr=1e-2, layer_decay=0.8)),
        ("sgd", dict(lr=1e-2, momentum=0.5, weight_decay=1e-3, filter_bias_and_bn=False)),
        ("adamw", dict(lr=1e-2, eps=1e-6, betas=(0.8, 0.9), foreach=False)),
        ("momentum", dict(lr=1e-2, eps=1e-3, betas=(0.8, 0.9))),  # eps/betas dropped
        ("adam", dict(lr=1e-2, layer_decay=0.5, layer_decay_min_scale=0.3)),
        ("adam", dict(lr=1e-2, layer_decay=0.5, layer_decay_no_opt_scale=0.3)),
        ("rmsprop", dict(lr=1e-3, weight_decay=0.01, alpha=0.95)),
        ("adamw", dict(lr=1e-2, weight_decay=0.05, fallback_list=["head.*"])),  # use_fallback
        ("muon", dict(lr=1e-2, weight_decay=0.05, fallback_list=["embed.*"])),
        ("nmuon", dict(lr=1e-2, weight_decay=0.05, fallback_no_weight_decay=True)),
        ("muon", dict(lr=1e-2, weight_decay=0.05, layer_decay=0.8, fallback_list=["blocks.2*"])),
    ],
)
def test_create_optimizer_v2_options(name, kwargs):
    _ours_class_or_skip(name)
    _run_pair(name, kwargs)


@pytest.mark.parametrize("model_name", ["test_vit", "test_resnet"])
@pytest.mark.parametrize("layer_decay", [None, 0.65])
def test_create_optimizer_v2_groups_timm_models(model_name, layer_decay):
    m_ours, m_ref = copy.deepcopy(MODELS[model_name]), copy.deepcopy(MODELS[model_name])
    kw: dict[str, Any] = dict(lr=1e-3, weight_decay=0.05, layer_decay=layer_decay)
    opt_ours = ofactory.create_optimizer_v2(m_ours, "adamw", **kw)
    opt_ref = topt.create_optimizer_v2(m_ref, "adamw", **kw)
    _compare_groups(m_ours, opt_ours, m_ref, opt_ref)
    if layer_decay is not None:
        assert len(opt_ref.param_groups) > 4  # several layers, decay and no-decay


def test_create_optimizer_v2_float32():
    _run_pair("adamw", dict(lr=1e-2, weight_decay=0.05, layer_decay=0.7), dtype=torch.float32)


def _param_group_fn(model: Any) -> list[dict[str, Any]]:
    return [
        {"params": list(model.blocks.parameters()), "lr": 1e-3},
        {"params": [p for n, p in model.named_parameters() if not n.startswith("blocks")]},
    ]


def test_create_optimizer_v2_param_group_fn_and_params():
    _run_pair("adamw", dict(lr=1e-2, weight_decay=0.05, param_group_fn=_param_group_fn))
    torch.manual_seed(0)
    model = Tiny().double()
    m_ours, m_ref = copy.deepcopy(model), copy.deepcopy(model)
    opt_ours = ofactory.create_optimizer_v2(m_ours.parameters(), "nesterov", lr=0.1)
    opt_ref = topt.create_optimizer_v2(m_ref.parameters(), "nesterov", lr=0.1)
    _compare_groups(m_ours, opt_ours, m_ref, opt_ref)
    opt_ours = ofactory.create_optimizer_v2(_param_group_fn(m_ours), "adam", weight_decay=0.1)
    opt_ref = topt.create_optimizer_v2(_param_group_fn(m_ref), "adam", weight_decay=0.1)
    _compare_groups(m_ours, opt_ours, m_ref, opt_ref)


def test_legacy_create_optimizer():
    torch.manual_seed(0)
    model = Tiny().double()
    m_ours, m_ref = copy.deepcopy(model), copy.deepcopy(model)
    ns = argparse.Namespace(opt="momentum", lr=0.1, weight_decay=1e-4, momentum=0.8, opt_eps=1e-3)
    opt_ours = ofactory.create_optimizer(ns, m_ours, filter_bias_and_bn=False)
    opt_ref = tfactory.create_optimizer(ns, m_ref, filter_bias_and_bn=False)
    _compare_groups(m_ours, opt_ours, m_ref, opt_ref)


def test_lazy_exports():
    import optax_torch.compat.timm as T

    for name in (
        "create_optimizer_v2",
        "list_optimizers",
        "get_optimizer_class",
        "get_optimizer_info",
        "optimizer_kwargs",
        "param_groups_weight_decay",
        "param_groups_layer_decay",
    ):
        assert callable(getattr(T, name))
