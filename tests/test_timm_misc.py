"""timm's ``RMSpropTF``, ``Lookahead`` and ``Muon`` drop-ins against timm 1.0.31, step by step,
on the shared harness (float64, atol 1e-12; float32, 1e-6), plus their state layout,
checkpoints and constructor errors."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch_optim_ref import (
    check_resume,
    check_signature,
    check_state_like_torch,
    train_pair,
)

timm = pytest.importorskip("timm")
import timm.optim as T  # noqa: E402

from optax_torch.compat.timm.rmsprop_tf import RMSpropTF  # noqa: E402

# --------------------------------------------------------------------------------------------
# RMSpropTF
# --------------------------------------------------------------------------------------------

RMSPROP_CASES = [
    dict(),
    dict(momentum=0.9),
    dict(momentum=0.9, lr_in_momentum=False),
    dict(centered=True),
    dict(centered=True, momentum=0.8, weight_decay=0.05),
    dict(momentum=0.9, caution=True),
    dict(momentum=0.9, caution=True, lr_in_momentum=False, centered=True),
    dict(weight_decay=0.1, decoupled_decay=True),
    dict(weight_decay=0.1, decoupled_decay=True, momentum=0.9),
    dict(weight_decay=0.1, decoupled_decay=True, momentum=0.9, lr_in_momentum=False),
    dict(weight_decay=0.1, decoupled_decay=True, corrected_weight_decay=True, momentum=0.9),
    dict(weight_decay=0.1, decoupled_decay=True, corrected_weight_decay=True),
    dict(alpha=0.5, eps=1e-3, momentum=0.5),
]


def test_rmsprop_tf_signature():
    check_signature(RMSpropTF, T.RMSpropTF)


@pytest.mark.parametrize("kw", RMSPROP_CASES, ids=str)
def test_rmsprop_tf_matches_timm(kw):
    _, _, ref, ours = train_pair(RMSpropTF, T.RMSpropTF, kw, dict(lr=0.02, weight_decay=0.0))
    check_state_like_torch(ref, ours)


def test_rmsprop_tf_float32():
    train_pair(
        RMSpropTF,
        T.RMSpropTF,
        dict(momentum=0.9, centered=True, weight_decay=0.01),
        dict(lr=0.02),
        dtype=torch.float32,
    )


@pytest.mark.parametrize(
    "kw", [dict(momentum=0.9, centered=True), dict(weight_decay=0.1, decoupled_decay=True)], ids=str
)
def test_rmsprop_tf_resume(kw):
    check_resume(RMSpropTF, T.RMSpropTF, kw, dict(lr=0.02))


@pytest.mark.parametrize(
    "kw",
    [
        dict(lr=-1.0),
        dict(eps=-1.0),
        dict(momentum=-0.1),
        dict(weight_decay=-1.0),
        dict(alpha=-0.5),
        dict(lr=torch.tensor([0.1, 0.2])),
        dict(lr=0.0, weight_decay=0.1, decoupled_decay=True, corrected_weight_decay=True),
    ],
    ids=str,
)
def test_rmsprop_tf_errors(kw):
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError) as ref:
        T.RMSpropTF(p, **kw)
    with pytest.raises(ValueError) as ours:
        RMSpropTF(p, **kw)
    assert str(ours.value) == str(ref.value)


# --------------------------------------------------------------------------------------------
# Lookahead
# --------------------------------------------------------------------------------------------


def _lookahead(wrapper, base, **base_kw):
    def make(params, **kw):
        return wrapper(base(params, **base_kw), **kw)

    return make


# (our base, timm's base): optax_torch drop-ins under ours, the originals under timm's; and the
# same plain torch optimizer under both.
LOOKAHEAD_BASES = [
    ("torch_optim.AdamW", "AdamW", dict(lr=0.01, weight_decay=0.05)),
    ("timm.RMSpropTF", "RMSpropTF", dict(lr=0.01, momentum=0.9)),
    ("plain", "SGD", dict(lr=0.05, momentum=0.9)),
]


def _bases(which, name):
    from optax_torch.compat import torch_optim as C

    if which == "torch_optim.AdamW":
        return C.AdamW, torch.optim.AdamW
    if which == "timm.RMSpropTF":
        return RMSpropTF, T.RMSpropTF
    return getattr(torch.optim, name), getattr(torch.optim, name)


def test_lookahead_signature():
    check_signature(T.Lookahead, T.Lookahead)  # the harness compares names, kinds and defaults
    from optax_torch.compat.timm.lookahead import Lookahead

    check_signature(Lookahead, T.Lookahead)


@pytest.mark.parametrize("which,name,base_kw", LOOKAHEAD_BASES, ids=lambda x: str(x))
@pytest.mark.parametrize("kw", [dict(), dict(alpha=0.3, k=3), dict(alpha=1.0, k=1)], ids=str)
def test_lookahead_matches_timm(which, name, base_kw, kw):
    from optax_torch.compat.timm.lookahead import Lookahead

    ours_base, ref_base = _bases(which, name)
    _, _, ref, ours = train_pair(
        _lookahead(Lookahead, ours_base, **base_kw),
        _lookahead(T.Lookahead, ref_base, **base_kw),
        kw,
        dict(lr=0.02),
    )
    check_state_like_torch(ref._base_optimizer, ours._base_optimizer)
    check_state_like_torch(ref, ours)
    assert ours.state_dict()["param_groups"][0]["lookahead_step"] == 20


def test_lookahead_float32():
    from optax_torch.compat import torch_optim as C
    from optax_torch.compat.timm.lookahead import Lookahead

    train_pair(
        _lookahead(Lookahead, C.AdamW, lr=0.01),
        _lookahead(T.Lookahead, torch.optim.AdamW, lr=0.01),
        dict(alpha=0.5, k=3),
        dict(lr=0.02),
        dtype=torch.float32,
    )


@pytest.mark.parametrize("which,name,base_kw", LOOKAHEAD_BASES, ids=lambda x: str(x))
def test_lookahead_resume(which, name, base_kw):
    from optax_torch.compat.timm.lookahead import Lookahead

    ours_base, ref_base = _bases(which, name)
    check_resume(
        _lookahead(Lookahead, ours_base, **base_kw),
        _lookahead(T.Lookahead, ref_base, **base_kw),
        dict(alpha=0.6, k=4),
        dict(lr=0.02),
    )


def test_lookahead_loads_base_state_without_lookahead():
    from optax_torch.compat import torch_optim as C
    from optax_torch.compat.timm.lookahead import Lookahead

    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    base = C.AdamW([p], lr=0.1)
    p.grad = torch.ones_like(p)
    base.step()
    opt = Lookahead(C.AdamW([torch.nn.Parameter(p.detach().clone())], lr=0.1), k=2)
    opt.load_state_dict(base.state_dict())
    assert opt.param_groups[0]["lookahead_step"] == 0
    assert opt.param_groups[0]["lookahead_k"] == 2


@pytest.mark.parametrize("kw", [dict(alpha=-0.1), dict(alpha=1.5), dict(k=0)], ids=str)
def test_lookahead_errors(kw):
    from optax_torch.compat.timm.lookahead import Lookahead

    def base():
        return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)

    with pytest.raises(ValueError) as ref:
        T.Lookahead(base(), **kw)
    with pytest.raises(ValueError) as ours:
        Lookahead(base(), **kw)
    assert str(ours.value) == str(ref.value)


# --------------------------------------------------------------------------------------------
# Muon / AdaMuon
# --------------------------------------------------------------------------------------------


class ConvNet(torch.nn.Module):
    """Muon-routed weights of every kind: a 2-d conv (4-d weight), matrices, plus norm and
    biases (AdamW), and a side branch that joins late and skips steps."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 6, 3)
        self.fc = torch.nn.Linear(54, 8)
        self.norm = torch.nn.LayerNorm(8)
        self.head = torch.nn.Linear(8, 5)
        self.side = torch.nn.Linear(54, 5)

    def forward(self, x: torch.Tensor, step: int) -> torch.Tensor:
        h = torch.tanh(self.conv(x)).flatten(1)
        out = self.head(self.norm(torch.tanh(self.fc(h))))
        if step % 3 == 1 or step in (5, 6):
            out = out + 0.5 * self.side(h)
        return out


def _conv_groups(net, **bias_overrides):
    named = list(net.named_parameters())
    weights = [p for n, p in named if n.endswith("weight") and "norm" not in n]
    others = [p for n, p in named if not (n.endswith("weight") and "norm" not in n)]
    return [{"params": weights}, {"params": others, **bias_overrides}]


def _conv_train(
    ours_cls, ref_cls, kw, bias_overrides=None, steps=20, dtype=torch.float64, atol=None
):
    if atol is None:
        atol = 1e-12 if dtype == torch.float64 else 1e-6
    nets = []
    for _ in range(2):
        torch.manual_seed(0)
        nets.append(ConvNet().to(dtype))
    opts = [
        cls(_conv_groups(n, **(bias_overrides or {})), **kw)
        for cls, n in zip((ref_cls, ours_cls), nets)
    ]
    scheds = [torch.optim.lr_scheduler.StepLR(o, 7, 0.5) for o in opts]
    for t in range(steps):
        gen = torch.Generator().manual_seed(100 + t)
        x = torch.randn(4, 4, 5, 5, generator=gen, dtype=torch.float64).to(dtype)
        y = torch.randn(4, 5, generator=gen, dtype=torch.float64).to(dtype)
        for net, opt in zip(nets, opts):
            opt.zero_grad()
            (net(x, t) - y).square().mean().backward()
            opt.step()
        for s in scheds:
            s.step()
        for (name, p), q in zip(nets[0].named_parameters(), nets[1].parameters()):
            torch.testing.assert_close(
                q, p, rtol=0, atol=atol, msg=lambda m, t=t, name=name: f"step {t} {name}: {m}"
            )
    return opts


def test_muon_signature():
    from optax_torch.compat.timm.muon import AdaMuon, Muon

    check_signature(Muon, T.Muon)
    sig = dict(__import__("inspect").signature(AdaMuon).parameters)
    assert list(sig) == list(__import__("inspect").signature(T.Muon).parameters)
    assert sig["algo"].default == "adamuon"


MUON_CASES = [
    dict(),
    dict(nesterov=True, weight_decay=0.1),
    dict(adjust_lr_fn="original", ns_coefficients="original"),
    dict(adjust_lr_fn="rms_to_rms", ns_coefficients="polar_express", safety_factor=1.02),
    dict(adjust_lr_fn=None, ns_steps=7, ns_coefficients="quintic", scale_eps=True),
    dict(conv_mode="batched", ns_coefficients="polar_express_safer"),
    dict(conv_mode="batched", normalize_spatial=False, adjust_lr_fn=None),
    dict(fallback_lr_scale=0.1, betas=(0.8, 0.9), momentum=0.9, eps=1e-6),
    dict(ns_coefficients=(3.0, -3.2, 1.2), ns_steps=3),
    dict(ns_coefficients=[(3.0, -3.2, 1.2), (2.0, -1.5, 0.5), (1.9, -1.2, 0.3)], ns_steps=2),
    dict(ns_steps=0, verbose=True),
    dict(algo="adamuon"),
    dict(algo="adamuon", nesterov=True, weight_decay=0.05),
    dict(algo="adamuon", adjust_lr_fn="rms_to_rms"),
    dict(algo="adamuon", adjust_lr_fn="rsqrt_in", conv_mode="batched"),
    dict(algo="adamuon", adjust_lr_fn=None, conv_mode="batched", normalize_spatial=False),
]


@pytest.mark.parametrize("kw", MUON_CASES, ids=str)
def test_muon_matches_timm(kw):
    from optax_torch.compat.timm.muon import Muon

    ref, ours = _conv_train(Muon, T.Muon, kw, dict(lr=0.01, weight_decay=0.0))
    check_state_like_torch(ref, ours)


def test_muon_harness_model():
    """The shared harness (conv weight with a unit axis and narrow matrices: AdamW) and the
    group flags ``use_fallback`` / ``use_muon``."""
    from optax_torch.compat.timm.muon import Muon

    for bias in (dict(lr=0.01), dict(use_fallback=True)):
        _, _, ref, ours = train_pair(Muon, T.Muon, dict(weight_decay=0.01), bias)
        check_state_like_torch(ref, ours)
    _, _, ref, ours = train_pair(Muon, T.Muon, dict(algo="adamuon"), dict(use_muon=False))
    check_state_like_torch(ref, ours)


def test_adamuon_class():
    from optax_torch.compat.timm.muon import AdaMuon

    def ref(params, **kw):
        return T.Muon(params, algo="adamuon", **kw)

    _conv_train(AdaMuon, ref, dict(nesterov=True), steps=8)


def test_muon_float32():
    """float32: 1e-6 for the first steps, 1e-3 over 20 steps. The Muon parameters'
    Newton-Schulz input is rounded to bfloat16 and the update's last float32 bit differs (timm
    decays the parameter in place then adds ``-lr * scale * O``; the adapter adds one update),
    which flips some bfloat16 roundings a few steps later: each flip moves an update by about a
    bfloat16 ulp (4e-3 relative) of ``lr * scale * O`` (measured: <= 2e-4 over 20 steps)."""
    from optax_torch.compat.timm.muon import Muon

    _conv_train(
        Muon, T.Muon, dict(weight_decay=0.01), dict(lr=0.01), dtype=torch.float32, atol=1e-3
    )
    _conv_train(Muon, T.Muon, dict(algo="adamuon"), dtype=torch.float32, steps=10)
    train_pair(Muon, T.Muon, dict(weight_decay=0.01), dict(lr=0.01), dtype=torch.float32, atol=1e-3)


@pytest.mark.parametrize("kw", [dict(nesterov=True), dict(algo="adamuon")], ids=str)
def test_muon_resume(kw):
    from optax_torch.compat.timm.muon import Muon

    check_resume(Muon, T.Muon, dict(weight_decay=0.01, **kw), dict(lr=0.01))


@pytest.mark.parametrize(
    "kw",
    [
        dict(lr=-1.0),
        dict(weight_decay=-1.0),
        dict(momentum=1.0),
        dict(eps=-1.0),
        dict(conv_mode="spatial"),
        dict(algo="adam"),
        dict(adamw_lr=0.1, lr=0.0),
    ],
    ids=str,
)
def test_muon_errors(kw):
    from optax_torch.compat.timm.muon import Muon

    p = [torch.nn.Parameter(torch.zeros(4, 4))]
    with pytest.raises(ValueError) as ref, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        T.Muon(p, **kw)
    with pytest.raises(ValueError) as ours, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Muon(p, **kw)
    assert str(ours.value) == str(ref.value)


def test_muon_adamw_lr_deprecated():
    from optax_torch.compat.timm.muon import Muon

    p = [torch.nn.Parameter(torch.zeros(4, 4))]
    with pytest.warns(FutureWarning):
        opt = Muon(p, lr=0.02, adamw_lr=0.002)
    assert opt.param_groups[0]["fallback_lr_scale"] == pytest.approx(0.1)
    assert "adamw_lr" not in opt.param_groups[0]


@pytest.mark.parametrize(
    "coeffs,err", [("cubic", ValueError), (5, TypeError), ([(1.0, 2.0)], ValueError)]
)
def test_muon_coefficient_errors(coeffs, err):
    from optax_torch.compat.timm.muon import Muon

    with pytest.raises(err):
        Muon([torch.nn.Parameter(torch.zeros(4, 4))], ns_coefficients=coeffs)


# --------------------------------------------------------------------------------------------
# The transforms: per_leaf, tag_leaves, scale_by_shape rules, Newton-Schulz extensions
# --------------------------------------------------------------------------------------------


def test_per_leaf_counts_per_leaf_and_skips_none():
    from optax_torch.transforms import scale_by_adam
    from optax_torch.transforms.per_leaf import PerLeafState, per_leaf

    tx = per_leaf(scale_by_adam())
    params = [torch.ones(3), torch.ones(2)]
    state = tx.init(params)
    assert isinstance(state, PerLeafState) and len(state.states) == 2
    g = [torch.full((3,), 2.0), None]
    g_copy = [g[0].clone()]
    updates, state = tx.update(g, state, params)
    assert updates[1] is None
    torch.testing.assert_close(g[0], g_copy[0])  # inputs not mutated
    assert int(state.states[0].count) == 1 and int(state.states[1].count) == 0
    # a None parameter at init: the same structure, no state
    s2 = tx.init([torch.ones(3), None])
    assert s2.states[1].count is None and s2.states[1].mu == [None]
    with pytest.raises(ValueError):
        tx.update([torch.ones(3)], state, [torch.ones(3)])


def test_tag_leaves():
    from optax_torch.transforms.per_leaf import TagLeavesState, tag_leaves

    tx = tag_leaves([True, False, True])
    state = tx.init([torch.zeros(2), torch.zeros(3), None])
    assert isinstance(state, TagLeavesState)
    assert bool(state.tags[0]) and not bool(state.tags[1]) and state.tags[2] is None
    u = [torch.ones(2), torch.ones(3), None]
    out, new = tx.update(u, state)
    assert all(a is b for a, b in zip(out, u)) and all(a is b for a, b in zip(new.tags, state.tags))
    with pytest.raises(ValueError):
        tx.init([torch.zeros(2)])


def test_scale_by_shape_rules():
    from optax_torch.contrib.muon import MuonDimensionNumbers, scale_by_shape

    x = torch.ones(3, 4, 5)  # batch axis 0, reduction 1 (4), output 2 (5)
    dims = MuonDimensionNumbers(reduction_axis=1, output_axis=2)
    cases = {
        None: (5 / 4) ** 0.5,
        "rms_to_rms": (5 / 4) ** 0.5,
        "rsqrt_in": 4**-0.5,
        "numel": 0.2 * 60**0.5,
        "unit": 1.0,
    }
    for rule, f in cases.items():
        r = 0.2 if rule == "numel" else None
        tx = scale_by_shape(dims, r, rule=rule)
        out, _ = tx.update([x], tx.init([x]))
        torch.testing.assert_close(out[0], x * f)
        tx = scale_by_shape(dims, r, rule=rule, normalize_batch=True)
        out, _ = tx.update([x], tx.init([x]))
        torch.testing.assert_close(out[0], x * f * 3**-0.5)
    with pytest.raises(ValueError):
        scale_by_shape(rule="cubic")


def test_newton_schulz_timm_options_match_timm():
    """safety_factor, scale_eps and stacks (batched products) against timm's iteration."""
    from timm.optim.muon import _COEFFICIENTS, zeropower_via_newtonschulz

    from optax_torch.contrib.muon import MuonDimensionNumbers, orthogonalize_via_newton_schulz

    gen = torch.Generator().manual_seed(0)
    for shape in [(7, 5), (5, 7), (9, 6, 4), (3, 4, 6)]:
        g = torch.randn(*shape, generator=gen, dtype=torch.float64)
        for kw in [dict(), dict(safety_factor=1.05), dict(scale_eps=True, eps=1e-2)]:
            coeffs = _COEFFICIENTS["polar_express"][:5]
            ref = zeropower_via_newtonschulz(g, 5, coeffs, **kw).to(torch.float64)
            dims = MuonDimensionNumbers(len(shape) - 2, len(shape) - 1)
            ours = orthogonalize_via_newton_schulz(
                g,
                torch.tensor(coeffs, dtype=torch.float64),
                5,
                dimension_numbers=dims,
                ns_dtype=torch.bfloat16,
                fused=True,
                eps_floor=True,
                **{"eps": 1e-7, **kw},
            )
            torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    with pytest.raises(ValueError):
        from optax_torch.contrib.muon import scale_by_muon

        scale_by_muon(safety_factor=0.0)


def test_lookahead_over_muon():
    from optax_torch.compat.timm.lookahead import Lookahead
    from optax_torch.compat.timm.muon import Muon

    ours = _lookahead(Lookahead, Muon, lr=0.01, algo="adamuon")
    ref = _lookahead(T.Lookahead, T.Muon, lr=0.01, algo="adamuon")
    _, _, r, o = train_pair(ours, ref, dict(alpha=0.6, k=3), dict(lr=0.02))
    check_state_like_torch(r._base_optimizer, o._base_optimizer)
    check_resume(ours, ref, dict(alpha=0.6, k=3), dict(lr=0.02))
