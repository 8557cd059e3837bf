"""The adapter's eager step folds a chain's final ``scale`` (the learning rate) into the
parameter update (``param.add_(u, alpha=-lr)``, as torch.optim does): ``tree._deferred_scale``.

What must hold: the parameters follow the functional step, the gradients and every tensor the
caller sees are left alone, only a scale that computes the chain's output is deferred (never a
``scale`` inside another member, never on a complex view), and no arming survives the step.
"""

from __future__ import annotations

import pytest
import torch

import optax_torch as otx
from optax_torch import TorchOptimizer, tree
from optax_torch.compat import torch_optim


def _params(dtype=torch.float64, complex_=False):
    gen = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (5,), ()]
    out = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    if complex_:
        out.append(torch.randn(4, generator=gen, dtype=torch.complex128))
    return out


def _grads(params, k):
    gen = torch.Generator().manual_seed(100 + k)
    return [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]


class _Spy:
    """Records the ``alpha`` of each parameter update of the adapter (an add, or an addcdiv
    where the quotient was deferred too: then also counted in ``quotients``)."""

    def __init__(self, monkeypatch):
        self.alphas: list[float] = []
        self.quotients = 0
        add_into, addcdiv_into = tree._add_into, tree._addcdiv_into

        def spy(xs, ys, alpha=1):
            self.alphas.append(alpha)
            return add_into(xs, ys, alpha)

        def spy_quotient(xs, ys, zs, alpha=1):
            self.alphas.append(alpha)
            self.quotients += 1
            return addcdiv_into(xs, ys, zs, alpha)

        monkeypatch.setattr(tree, "_add_into", spy)
        monkeypatch.setattr(tree, "_addcdiv_into", spy_quotient)


CHAINS = {
    "adamw": (lambda: otx.adamw(1e-2, weight_decay=0.1), -1e-2),
    "sgd_momentum": (lambda: otx.sgd(0.1, momentum=0.9), -0.1),
    "scale_alone": (lambda: otx.scale(-0.3), -0.3),
    "scales_twice": (lambda: otx.chain(otx.scale(2.0), otx.scale(-0.1)), -0.1),
    "nested_chain": (lambda: otx.chain(otx.clip_by_global_norm(1.0), otx.adam(1e-2)), -1e-2),
    "decay_last": (lambda: otx.chain(otx.scale_by_adam(), otx.add_decayed_weights(0.1)), 1),
    "tensor_lr": (lambda: otx.sgd(torch.tensor(0.1, dtype=torch.float64)), 1),
    "schedule": (lambda: otx.sgd(otx.linear_schedule(0.1, 0.01, 5)), 1),
    "wrapper_not_forwarding": (lambda: otx.apply_if_finite(otx.adam(1e-2), 3), 1),
    "multi_steps": (lambda: otx.MultiSteps(otx.sgd(0.1), 2).gradient_transformation(), 1),
    "masked": (lambda: otx.masked(otx.scale(-0.1), [True, False, True]), 1),
    # a trailing identity (rmsprop without momentum) hands the member before it the arming
    "rmsprop": (lambda: otx.rmsprop(1e-2), -1e-2),
    "identities_after": (lambda: otx.chain(otx.scale(-0.2), otx.identity(), otx.identity()), -0.2),
    "rmsprop_momentum": (lambda: otx.rmsprop(1e-2, momentum=0.9), 1),
    # reusing members (Adam, trust ratios) may write into given updates, never defer a scale
    "lamb": (lambda: otx.lamb(1e-2, weight_decay=0.1), -1e-2),
    "clip_then_adamw": (
        lambda: otx.chain(otx.clip_by_global_norm(0.5), otx.adamw(1e-2, weight_decay=0.1)),
        -1e-2,
    ),
    "adam_last": (lambda: otx.chain(otx.scale(0.5), otx.scale_by_adam()), 1),
}


def test_wrappers_keep_the_exact_marks():
    from optax_torch import base

    wrapped = base.with_extra_args_support(otx.scale_by_adam())
    inner = base._unwrap(wrapped.update)
    assert otx.is_consuming_updates(wrapped)  # a chain may give it its updates ...
    assert getattr(inner, base._REUSES_UPDATES, False)
    assert not getattr(inner, base._CONSUMES_UPDATES, False)  # ... it is no final scale
    scale = base._unwrap(base.with_extra_args_support(otx.scale(2.0)).update)
    assert getattr(scale, base._CONSUMES_UPDATES, False)
    with_extra_args_support, _is_identity = base.with_extra_args_support, base._is_identity
    assert _is_identity(with_extra_args_support(otx.identity()))
    assert not _is_identity(with_extra_args_support(otx.scale(1.0)))
    _scales_by_number = base._scales_by_number
    assert _scales_by_number(with_extra_args_support(otx.scale(-0.1)))
    assert not _scales_by_number(otx.scale(torch.tensor(0.1)))
    assert not _scales_by_number(otx.chain(otx.scale(-0.1), otx.scale_by_adam()))


def _adapter_follows_functional_step(make, steps=4):
    """Runs ``TorchOptimizer(ps, make())`` and the functional ``make()`` side by side: the
    parameters agree, the gradients are never written into, and nothing stays armed."""
    params = _params()
    tx = make()
    state = tx.init(params)
    ps = [torch.nn.Parameter(p.clone()) for p in params]
    opt = TorchOptimizer(ps, make())
    for k in range(steps):
        grads = _grads(params, k)
        updates, state = tx.update(grads, state, params)
        params = otx.apply_updates(params, updates)
        for p, g in zip(ps, grads):
            p.grad = g.clone()
        opt.step()
        for p, g in zip(ps, grads):
            assert torch.equal(p.grad, g)  # the gradients are not written into
        final = tree._final
        assert final.armed is None and final.factor is None and final.params is None
        assert final.decay_armed is None and final.decay is None
        assert not final.quotient_armed and final.quotient is None
    for p, q in zip(ps, params):
        torch.testing.assert_close(p.detach(), q, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_adapter_follows_functional_step_and_defers_only_a_final_scale(name, monkeypatch):
    make, alpha = CHAINS[name]
    spy = _Spy(monkeypatch)
    _adapter_follows_functional_step(make)
    assert spy.alphas and all(a == alpha for a in spy.alphas), spy.alphas


def test_drop_ins_defer_their_learning_rate_and_match_torch(monkeypatch):
    spy = _Spy(monkeypatch)
    for ours_cls, theirs_cls, kw in (
        (torch_optim.SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
        (torch_optim.AdamW, torch.optim.AdamW, {"lr": 1e-2}),
    ):
        spy.alphas.clear()
        ps = [torch.nn.Parameter(p) for p in _params()]
        qs = [torch.nn.Parameter(p) for p in _params()]
        ours, theirs = ours_cls(ps, **kw), theirs_cls(qs, **kw, foreach=True)
        for k in range(5):
            for p, q, g in zip(ps, qs, _grads(ps, k)):
                p.grad, q.grad = g.clone(), g.clone()
            ours.step()
            theirs.step()
        assert spy.alphas == [-kw["lr"]] * 5
        for p, q in zip(ps, qs):
            torch.testing.assert_close(p, q, rtol=1e-13, atol=1e-15)


def test_complex_params_are_never_scaled_lazily(monkeypatch):
    """On complex params the drop-ins view them as real pairs: the chain gets new views, so
    nothing is deferred, and the numbers stay torch's."""
    spy = _Spy(monkeypatch)
    ps = [torch.nn.Parameter(p) for p in _params(complex_=True)]
    qs = [torch.nn.Parameter(p) for p in _params(complex_=True)]
    ours = torch_optim.SGD(ps, lr=0.1, momentum=0.9)
    theirs = torch.optim.SGD(qs, lr=0.1, momentum=0.9, foreach=True)
    for k in range(3):
        for p, q, g in zip(ps, qs, _grads(ps, k)):
            p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
    assert spy.alphas == [1] * 3
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q, rtol=1e-13, atol=1e-15)


def test_a_failing_step_leaves_nothing_armed():
    def boom(updates, state, params=None):
        raise RuntimeError("boom")

    bad = otx.chain(otx.scale(1.0), otx.GradientTransformation(lambda p: (), boom))
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    opt = TorchOptimizer([p], bad)
    with pytest.raises(RuntimeError, match="boom"):
        opt.step()
    assert tree._final.armed is None and tree._final.factor is None


DECAY_CHAINS = {
    # (factory, the decay the adapter applies itself, or None)
    "adamw": (lambda: otx.adamw(1e-2, weight_decay=0.1), 0.1),
    "spelled_out": (
        lambda: otx.chain(otx.scale_by_adam(), otx.add_decayed_weights(0.1), otx.scale(-1e-2)),
        0.1,
    ),
    "nested_in_a_chain": (
        lambda: otx.chain(otx.clip_by_global_norm(1.0), otx.adamw(1e-2, weight_decay=0.1)),
        0.1,
    ),
    "no_final_scale": (lambda: otx.chain(otx.scale_by_adam(), otx.add_decayed_weights(0.1)), None),
    "tensor_lr": (
        lambda: otx.chain(
            otx.scale_by_adam(),
            otx.add_decayed_weights(0.1),
            otx.scale(torch.tensor(-1e-2, dtype=torch.float64)),
        ),
        None,
    ),
    "scheduled_lr": (
        lambda: otx.adamw(otx.linear_schedule(1e-2, 1e-3, 5), weight_decay=0.1),
        None,
    ),
    "tensor_decay": (
        lambda: otx.adamw(1e-2, weight_decay=torch.tensor(0.1, dtype=torch.float64)),
        None,
    ),
    "scheduled_decay": (
        lambda: otx.chain(
            otx.scale_by_adam(),
            otx.add_decayed_weights(otx.linear_schedule(0.1, 0.0, 5)),
            otx.scale(-1e-2),
        ),
        None,
    ),
    "masked_decay": (
        lambda: otx.adamw(1e-2, weight_decay=0.1, mask=[True, False, True]),
        None,
    ),
    "decay_not_before_the_scale": (
        lambda: otx.chain(otx.add_decayed_weights(0.1), otx.scale_by_adam(), otx.scale(-1e-2)),
        None,
    ),
}


@pytest.mark.parametrize("name", sorted(DECAY_CHAINS))
def test_a_weight_decay_before_the_final_scale_is_left_to_the_parameter_update(name, monkeypatch):
    """``adamw``'s tail (decay ``d``, then ``-lr``) is applied as ``p *= 1 - lr d`` and
    ``p += -lr u`` (torch's AdamW, one pass less than adding ``d p`` to the updates) only when
    the decay is a Python number on the parameters themselves and a ``scale`` by a Python number
    follows it; the parameters follow the functional step either way."""
    make, want = DECAY_CHAINS[name]
    decays: list = []
    apply = TorchOptimizer._apply_updates

    def spy(params, updates, all_grad=False, alpha=1, decay=None, quotient=None):
        decays.append(decay)
        return apply(params, updates, all_grad, alpha, decay, quotient)

    monkeypatch.setattr(TorchOptimizer, "_apply_updates", staticmethod(spy))
    _adapter_follows_functional_step(make)
    assert decays == [want] * 4, decays


QUOTIENT_CHAINS = {
    # (factory, whether the adapter computes the quotient m / den in its addcdiv_)
    "adamw": (lambda: otx.adamw(1e-2, weight_decay=0.1), True),
    "adam": (lambda: otx.adam(1e-2), True),
    "nesterov": (lambda: otx.adamw(1e-2, weight_decay=0.1, nesterov=True), True),
    "amsgrad": (lambda: otx.amsgrad(1e-2), True),
    "rmsprop": (lambda: otx.rmsprop(1e-2), True),  # through the identity in place of momentum
    "centered_rmsprop": (lambda: otx.rmsprop(1e-2, centered=True), False),
    "spelled_out": (
        lambda: otx.chain(otx.scale_by_adam(), otx.add_decayed_weights(0.1), otx.scale(-1e-2)),
        True,
    ),
    "nested_in_a_chain": (
        lambda: otx.chain(otx.clip_by_global_norm(1.0), otx.adamw(1e-2, weight_decay=0.1)),
        True,
    ),
    "zero_decay": (lambda: otx.adamw(1e-2, weight_decay=0.0), True),
    "rmsprop_momentum": (lambda: otx.rmsprop(1e-2, momentum=0.9), False),
    "tensor_decay": (
        lambda: otx.adamw(1e-2, weight_decay=torch.tensor(0.1, dtype=torch.float64)),
        False,
    ),
    "masked_decay": (lambda: otx.adamw(1e-2, weight_decay=0.1, mask=[True, False, True]), False),
    "scheduled_lr": (lambda: otx.adamw(otx.linear_schedule(1e-2, 1e-3, 5)), False),
    "tensor_lr": (
        lambda: otx.chain(otx.scale_by_adam(), otx.scale(torch.tensor(-1e-2, dtype=torch.float64))),
        False,
    ),
    "no_final_scale": (lambda: otx.chain(otx.scale_by_adam(), otx.add_decayed_weights(0.1)), False),
    "clipped_adam": (
        lambda: otx.chain(otx.scale_by_adam(clipping_threshold=1.0), otx.scale(-1e-2)),
        False,
    ),
    "a_member_between": (
        lambda: otx.chain(otx.scale_by_adam(), otx.clip(0.5), otx.scale(-1e-2)),
        False,
    ),
    "decay_before_adam": (
        lambda: otx.chain(otx.add_decayed_weights(0.1), otx.scale_by_adam(), otx.scale(-1e-2)),
        True,
    ),
    # (the quotient's numerator is the moment before its cast to the stored bfloat16)
    "bf16_first_moment": (lambda: otx.adamw(1e-2, mu_dtype=torch.bfloat16), True),
    "injected": (lambda: otx.inject_hyperparams(otx.adamw)(learning_rate=1e-2), False),
}


@pytest.mark.parametrize("name", sorted(QUOTIENT_CHAINS))
def test_an_adaptive_quotient_before_the_final_scale_is_left_to_the_parameter_update(
    name, monkeypatch
):
    """Adam's ``m / den`` (RMSprop's ``g / den``) is computed by the parameter update itself,
    ``p.addcdiv_(m, den, value=-lr)`` (torch's Adam; two passes less than materialising it),
    only where nothing but deferred operations (the final scale by a number, a decay by a
    number, identities) follow the member whose output it is; the parameters follow the
    functional step either way."""
    make, folds = QUOTIENT_CHAINS[name]
    spy = _Spy(monkeypatch)
    _adapter_follows_functional_step(make)
    assert spy.quotients == (4 if folds else 0), (spy.quotients, spy.alphas)


def test_a_deferred_quotient_in_float32_stays_close_to_torch_and_functional():
    """float32: the fold changes the rounding of one product (``(a m) / den`` for ``a (m /
    den)``), as torch's own addcdiv_ does; over 50 steps the drop-in stays within float32
    noise of torch.optim.AdamW."""
    gen = torch.Generator().manual_seed(5)
    shapes = [(16, 8), (8,), (3, 3, 3)]
    init = [torch.randn(s, generator=gen) for s in shapes]
    ps = [torch.nn.Parameter(p.clone()) for p in init]
    qs = [torch.nn.Parameter(p.clone()) for p in init]
    ours = torch_optim.AdamW(ps, lr=1e-2, weight_decay=0.1)
    theirs = torch.optim.AdamW(qs, lr=1e-2, weight_decay=0.1, foreach=True)
    for _ in range(50):
        for p, q in zip(ps, qs):
            g = torch.randn(p.shape, generator=gen)
            p.grad, q.grad = g.clone(), g
        ours.step()
        theirs.step()
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
