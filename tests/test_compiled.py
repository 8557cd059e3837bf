"""The compiled step: ``compile_update`` and ``TorchOptimizer(compile=...)`` / ``compile_step``.

Most cases compile with ``backend="aot_eager"`` (dynamo's capture and functionalisation without
inductor's code generation: fast); one case per path runs inductor.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

import optax_torch as otx
from optax_torch.compat.torch_optim import SGD, AdamW
from optax_torch.wrappers import TorchOptimizer

AOT = {"backend": "aot_eager"}


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()


def _graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def _params(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return {
        "w": torch.randn(6, 4, generator=g, dtype=dtype),
        "b": torch.randn(4, generator=g, dtype=dtype),
        "s": torch.randn((), generator=g, dtype=dtype),
    }


def _grads(params, k):
    g = torch.Generator().manual_seed(10 + k)
    return {n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in params.items()}


# (The catalogue test compiles every optimizer's update; these check the in-place step.)
TXS = {
    "adamw": lambda: otx.adamw(1e-2, weight_decay=1e-2),
    "clip_adam": lambda: otx.chain(otx.clip_by_global_norm(0.5), otx.adam(1e-2)),
    "lamb": lambda: otx.lamb(1e-2, weight_decay=1e-2),
}


CASES = [(name, torch.float32) for name in sorted(TXS)] + [("adamw", torch.float64)]


@pytest.mark.parametrize(("name", "dtype"), CASES)
def test_compile_update_equals_the_eager_step(name, dtype):
    tx = TXS[name]()
    params_c, params_e = _params(dtype), _params(dtype)
    state_c, state_e = tx.init(params_c), tx.init(params_e)
    step = otx.compile_update(tx, **AOT)
    for k in range(4):
        grads = _grads(params_c, k)
        ids = {n: id(p) for n, p in params_c.items()}
        out_p, out_s = step(grads, state_c, params_c)
        assert out_p is params_c and out_s is state_c  # donated: written in place
        assert {n: id(p) for n, p in params_c.items()} == ids
        updates, state_e = tx.update(grads, state_e, params_e)
        params_e = otx.apply_updates(params_e, updates)
        tol = {} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}
        for n in params_e:
            torch.testing.assert_close(params_c[n], params_e[n], **tol)
        for a, b in zip(otx.tree.leaves(state_c), otx.tree.leaves(state_e)):
            torch.testing.assert_close(a, b, **tol)
    assert _graphs() == 1


def test_compile_update_with_inductor_and_injected_learning_rate_never_recompiles():
    tx = otx.inject_hyperparams(otx.adamw)(learning_rate=1e-2, weight_decay=1e-2)
    params_c, params_e = _params(), _params()
    state_c, state_e = tx.init(params_c), tx.init(params_e)
    step = otx.compile_update(tx)
    for k in range(4):
        grads = _grads(params_c, k)
        step(grads, state_c, params_c)
        updates, state_e = tx.update(grads, state_e, params_e)
        params_e = otx.apply_updates(params_e, updates)
        for s in (state_c, state_e):
            s.hyperparams["learning_rate"].fill_(1e-2 / (k + 2))
    for n in params_e:
        torch.testing.assert_close(params_c[n], params_e[n])
    assert _graphs() == 1


def test_compile_update_refuses_a_non_transformation():
    with pytest.raises(TypeError, match="GradientTransformation"):
        otx.compile_update(lambda g, s, p: (g, s))  # type: ignore[arg-type]


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))


def _train(model, opt, sched=None, steps=6, skip=()):
    x = torch.randn(11, 5, generator=torch.Generator().manual_seed(3))
    for i in range(steps):
        opt.zero_grad()
        model(x).square().mean().backward()
        if i in skip:  # a step where one parameter has no gradient: runs eagerly
            model[0].bias.grad = None
        opt.step()
        if sched is not None:
            sched.step()


def _assert_models_close(a, b, **tol):
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, **tol)


def _assert_state_dicts_close(opt_c, opt_e):
    sd_c, sd_e = opt_c.state_dict(), opt_e.state_dict()
    for i in sd_e["state"]:
        for key in sd_e["state"][i]:
            torch.testing.assert_close(sd_c["state"][i][key], sd_e["state"][i][key])


def _round_trip_and_repoint(m_c, m_e, opt_c, opt_e, train):
    """A checkpoint round trip mid-run and a parameter re-pointed by the user (``m_c.a``):
    the compiled optimizer picks both up and still follows the eager one."""
    opt_c.load_state_dict(copy.deepcopy(opt_c.state_dict()))
    m_c.a.weight.data = m_c.a.weight.data.clone()
    train(m_c, opt_c, 2)
    train(m_e, opt_e, 2)
    _assert_models_close(m_c, m_e)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_adapter_compiled_follows_the_eager_adapter_under_an_lr_scheduler(backend):
    m_c, m_e = _model(), _model()
    opt_c = TorchOptimizer(
        m_c.parameters(), otx.adamw, lr=1e-2, weight_decay=0.1, compile={"backend": backend}
    )
    opt_e = TorchOptimizer(m_e.parameters(), otx.adamw, lr=1e-2, weight_decay=0.1)
    s_c = torch.optim.lr_scheduler.StepLR(opt_c, 1, gamma=0.7)
    s_e = torch.optim.lr_scheduler.StepLR(opt_e, 1, gamma=0.7)
    _train(m_c, opt_c, s_c, skip=(3,))
    _train(m_e, opt_e, s_e, skip=(3,))
    _assert_models_close(m_c, m_e)
    assert _graphs() == 1  # six learning rates, one graph
    _assert_state_dicts_close(opt_c, opt_e)


def test_drop_in_compile_step_equals_torch_optim():
    m_c, m_t = _model(), _model()
    opt_c = AdamW(m_c.parameters(), lr=1e-2, weight_decay=1e-2).compile_step(**AOT)
    opt_t = torch.optim.AdamW(m_t.parameters(), lr=1e-2, weight_decay=1e-2)
    s_c = torch.optim.lr_scheduler.ExponentialLR(opt_c, gamma=0.8)
    s_t = torch.optim.lr_scheduler.ExponentialLR(opt_t, gamma=0.8)
    _train(m_c, opt_c, s_c, steps=8)
    _train(m_t, opt_t, s_t, steps=8)
    _assert_models_close(m_c, m_t)
    assert _graphs() == 1
    sd_c, sd_t = opt_c.state_dict(), opt_t.state_dict()
    assert sd_c["state"].keys() == sd_t["state"].keys()
    for i in sd_t["state"]:
        assert sd_c["state"][i].keys() == sd_t["state"][i].keys()


def test_compiled_checkpoint_round_trip_and_pickling():
    m_a, m_b = _model(), _model()
    opt_a = SGD(m_a.parameters(), lr=0.05, momentum=0.9, nesterov=True).compile_step(**AOT)
    opt_b = SGD(m_b.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    _train(m_a, opt_a, steps=3)
    _train(m_b, opt_b, steps=3)
    opt_a.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    clone = pickle.loads(pickle.dumps(opt_a))  # the compiled step is dropped and rebuilt
    assert clone._otx_compile == AOT
    _train(m_a, opt_a, steps=3)
    _train(m_b, opt_b, steps=3)
    _assert_models_close(m_a, m_b)


def test_a_new_float_hyperparameter_value_never_recompiles():
    m_c, m_e = _model(), _model()
    opt_c = TorchOptimizer(m_c.parameters(), otx.sgd, lr=0.05, momentum=0.9, compile=AOT)
    opt_e = TorchOptimizer(m_e.parameters(), otx.sgd, lr=0.05, momentum=0.9)
    for k in range(4):
        for opt in (opt_c, opt_e):
            opt.param_groups[0]["momentum"] = 0.9 - 0.1 * k
        _train(m_c, opt_c, steps=1)
        _train(m_e, opt_e, steps=1)
    _assert_models_close(m_c, m_e)
    assert _graphs() == 1


# --------------------------------------------------------------------------------------------
# Element-wise chains run on flat buffers
# --------------------------------------------------------------------------------------------


def test_elementwise_marks():
    for tx in (
        otx.adamw(1e-3),
        otx.adam(1e-3),
        otx.sgd(1e-2, momentum=0.9),
        otx.lion(1e-3),
        otx.rmsprop(1e-3, centered=True),
        otx.adagrad(1e-2),
        otx.chain(otx.clip_by_global_norm(1.0), otx.adamw(1e-3)),
    ):
        assert otx.is_elementwise(tx)
    for tx in (
        otx.lamb(1e-3),  # per-leaf trust ratio
        otx.adafactor(1e-3),  # factored moments
        otx.adamw(1e-3, mask=lambda p: [True] * len(p)),  # by position
    ):
        assert not otx.is_elementwise(tx)


class _Mixed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.a = torch.nn.Linear(5, 6)
        self.b = torch.nn.Linear(6, 3).double()

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)).double())


def _train_mixed(model, opt, steps, skip=()):
    x = torch.randn(9, 5, generator=torch.Generator().manual_seed(4))
    for i in range(steps):
        opt.zero_grad()
        model(x).square().mean().backward()
        if i in skip:
            model.a.bias.grad = None
        opt.step()


def test_flat_buffers_follow_the_eager_step_and_keep_torch_layout():
    m_c, m_e = _Mixed(), _Mixed()
    opt_c = TorchOptimizer(m_c.parameters(), otx.adamw, lr=1e-2, weight_decay=0.1, compile=AOT)
    opt_e = TorchOptimizer(m_e.parameters(), otx.adamw, lr=1e-2, weight_decay=0.1)
    _train_mixed(m_c, opt_c, 3)
    _train_mixed(m_e, opt_e, 3)
    slot = opt_c._otx_slots[0]
    assert slot.flat is not None and len(slot.flat.flat_params) == 2  # float32 and float64
    flat32 = slot.flat.flat_params[0]
    lo, hi = flat32.data_ptr(), flat32.data_ptr() + flat32.numel() * flat32.element_size()
    assert lo <= m_c.a.weight.data_ptr() < hi  # the parameters live in the flat buffer
    mu = opt_c.state[m_c.a.weight]["0.mu"]  # a view into the flat state
    flat_mu = slot.flat_state[0].mu[0]
    assert mu.untyped_storage().data_ptr() == flat_mu.untyped_storage().data_ptr()
    before = mu.clone()
    _train_mixed(m_c, opt_c, 3, skip=(1,))  # a step without one gradient runs eagerly
    _train_mixed(m_e, opt_e, 3, skip=(1,))
    assert not torch.equal(opt_c.state[m_c.a.weight]["0.mu"], before)
    _assert_models_close(m_c, m_e)
    _assert_state_dicts_close(opt_c, opt_e)
    _round_trip_and_repoint(m_c, m_e, opt_c, opt_e, _train_mixed)
    assert _graphs() == 1


def test_flat_choice_automatic_and_forced():
    """compile_step(flat=None) runs few large tensors one tensor per parameter (no gradient copy)
    and anything else on flat buffers; flat=True / False force the choice."""
    from optax_torch.wrappers import _flat

    big = [torch.zeros(2**20), torch.zeros(2**20)]
    assert not _flat.chosen(None, big)
    assert _flat.chosen(None, big + [torch.zeros(1)] * 20)  # many tensors: flat
    assert _flat.chosen(None, [torch.zeros(10), torch.zeros(2**20)])  # small on average: flat
    assert _flat.chosen(True, big) and not _flat.chosen(False, [torch.zeros(3)])
    with pytest.raises(TypeError, match="flat must be True, False or None"):
        TorchOptimizer(_model().parameters(), otx.adamw, lr=1e-2).compile_step(flat="yes")
    for flat in (True, False):
        m_c, m_e = _model(), _model()
        opt_c = TorchOptimizer(m_c.parameters(), otx.adamw, lr=1e-2, compile={**AOT, "flat": flat})
        opt_e = TorchOptimizer(m_e.parameters(), otx.adamw, lr=1e-2)
        _train(m_c, opt_c, steps=3)
        _train(m_e, opt_e, steps=3)
        assert (opt_c._otx_slots[0].flat is not None) is flat
        _assert_models_close(m_c, m_e)


def test_a_masked_chain_compiles_one_tensor_per_parameter():
    from optax_torch.wrappers import _flat

    tx = otx.lamb(1e-2, weight_decay=0.1, mask=lambda p: [True] * len(p))
    assert not otx.is_elementwise(tx) and not otx.is_leafwise(tx)
    assert _flat.stacked_plan(tx) is None
    m_c, m_e = _model(), _model()
    opt_c = TorchOptimizer(m_c.parameters(), tx, compile=AOT)
    opt_e = TorchOptimizer(m_e.parameters(), tx)
    _train(m_c, opt_c, steps=4)
    _train(m_e, opt_e, steps=4)
    assert opt_c._otx_slots[0].flat is None
    _assert_models_close(m_c, m_e)


# --------------------------------------------------------------------------------------------
# Leafwise chains (per-leaf statistics) run vmap-ed on stacked buffers, one per shape
# --------------------------------------------------------------------------------------------


class _Stacks(torch.nn.Module):
    """Three float32 layers of two shapes and a float64 one: five (dtype, shape) buckets of
    matrices and vectors, two of them with several parameters."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.a = torch.nn.Linear(5, 6)
        self.b = torch.nn.Linear(6, 6)
        self.c = torch.nn.Linear(6, 6)
        self.d = torch.nn.Linear(6, 3).double()

    def forward(self, x):
        h = torch.tanh(self.c(torch.tanh(self.b(torch.tanh(self.a(x))))))
        return self.d(h.double())


def _train_stacks(model, opt, steps, skip=()):
    x = torch.randn(9, 5, generator=torch.Generator().manual_seed(4))
    for i in range(steps):
        opt.zero_grad()
        model(x).square().mean().backward()
        if i in skip:  # a step without one gradient runs eagerly on the views
            model.b.bias.grad = None
        opt.step()


LEAFWISE = {
    "lamb": (otx.lamb, {"lr": 1e-2, "weight_decay": 0.1}),
    "adafactor": (otx.adafactor, {"lr": 1e-2, "min_dim_size_to_factor": 4}),
}


@pytest.mark.parametrize("name", sorted(LEAFWISE))
def test_stacked_buffers_follow_the_eager_step_and_keep_torch_layout(name):
    factory, hp = LEAFWISE[name]
    m_c, m_e = _Stacks(), _Stacks()
    opt_c = TorchOptimizer(m_c.parameters(), factory, compile=AOT, **hp)
    opt_e = TorchOptimizer(m_e.parameters(), factory, **hp)
    _train_stacks(m_c, opt_c, 3)
    _train_stacks(m_e, opt_e, 3)
    slot = opt_c._otx_slots[0]
    assert slot.flat is not None and slot.flat.stacked and slot.stack_ok
    # float32 (6, 5), (6, 6) x2, (6,) x3; float64 (3, 6), (3,)
    assert sorted(tuple(b.shape) for b in slot.flat.flat_params) == [
        (1, 3),
        (1, 3, 6),
        (1, 6, 5),
        (2, 6, 6),
        (3, 6),
    ]
    stack = next(b for b in slot.flat.flat_params if b.shape == (2, 6, 6))
    assert m_c.c.weight.data_ptr() == stack[1].data_ptr()  # the parameters live in the stack
    key = "0.mu" if name == "lamb" else "0.v_row"
    view = opt_c.state[m_c.c.weight][key]  # a view into the stacked state
    assert view.untyped_storage().data_ptr() != m_c.c.weight.untyped_storage().data_ptr()
    before = view.clone()
    _train_stacks(m_c, opt_c, 3, skip=(1,))
    _train_stacks(m_e, opt_e, 3, skip=(1,))
    assert not torch.equal(opt_c.state[m_c.c.weight][key], before)
    _assert_models_close(m_c, m_e)
    _assert_state_dicts_close(opt_c, opt_e)
    _round_trip_and_repoint(m_c, m_e, opt_c, opt_e, _train_stacks)
    assert _graphs() == 1


def test_stacked_lamb_with_inductor_and_an_lr_scheduler():
    m_c, m_e = _Stacks(), _Stacks()
    opt_c = TorchOptimizer(m_c.parameters(), otx.lamb, lr=1e-2, weight_decay=0.1, compile=True)
    opt_e = TorchOptimizer(m_e.parameters(), otx.lamb, lr=1e-2, weight_decay=0.1)
    s_c = torch.optim.lr_scheduler.StepLR(opt_c, 1, gamma=0.7)
    s_e = torch.optim.lr_scheduler.StepLR(opt_e, 1, gamma=0.7)
    for _ in range(4):
        _train_stacks(m_c, opt_c, 1)
        _train_stacks(m_e, opt_e, 1)
        s_c.step()
        s_e.step()
    assert opt_c._otx_slots[0].flat.stacked
    _assert_models_close(m_c, m_e)
    assert _graphs() == 1  # four learning rates, one graph


def test_an_rms_clipped_adamw_compiles_per_leaf():
    """timm's AdamW with ``clipping_threshold`` clips each leaf's RMS: on stacked buffers, as
    eagerly (it was once marked element-wise, and its flat step clipped the whole group)."""
    from optax_torch.compat.timm import AdamWLegacy

    m_c, m_e = _Stacks(), _Stacks()
    opt_c = AdamWLegacy(m_c.parameters(), lr=1e-1, clipping_threshold=0.5).compile_step(**AOT)
    opt_e = AdamWLegacy(m_e.parameters(), lr=1e-1, clipping_threshold=0.5)
    _train_stacks(m_c, opt_c, 4)
    _train_stacks(m_e, opt_e, 4)
    assert opt_c._otx_slots[0].flat.stacked
    _assert_models_close(m_c, m_e)


def _leafwise_noise():
    """A leafwise transformation that ``vmap`` refuses (random numbers in its default
    ``randomness="error"`` mode) but that compiles one tensor per parameter."""

    def init(params):
        return otx.EmptyState()

    @otx.leafwise
    def update(updates, state, params=None):
        return [u + 0.0 * torch.randn_like(u) for u in updates], state

    return otx.GradientTransformation(init, update)


def test_a_stacked_step_that_fails_to_compile_falls_back_to_one_tensor_per_parameter():
    tx = otx.chain(_leafwise_noise(), otx.sgd(0.1, momentum=0.9))
    m_c, m_e = _Stacks(), _Stacks()
    opt_c = TorchOptimizer(m_c.parameters(), tx, compile=AOT)
    opt_e = TorchOptimizer(m_e.parameters(), otx.sgd, lr=0.1, momentum=0.9)
    with pytest.warns(RuntimeWarning, match="failed to compile.*one tensor per parameter"):
        _train_stacks(m_c, opt_c, 1)
    _train_stacks(m_c, opt_c, 2)
    _train_stacks(m_e, opt_e, 3)
    assert opt_c._otx_slots[0].no_stack
    _assert_models_close(m_c, m_e)


def test_a_global_norm_before_leafwise_members_runs_on_the_stacked_buffers():
    """``chain(clip_by_global_norm, lamb)`` is neither element-wise nor leafwise, but each member
    is one or the other: the clip runs on the stacked buffers as they are (its global norm is
    that of all parameters however they are packed), Lamb vmap-ed over each buffer."""
    from optax_torch.wrappers import _flat

    def tx():
        return otx.chain(otx.clip_by_global_norm(0.05), otx.lamb(1e-2, weight_decay=0.1))

    assert not otx.is_elementwise(tx()) and not otx.is_leafwise(tx())
    plan = _flat.stacked_plan(tx())
    assert plan is not None and [(kind, path) for kind, _, path, _ in plan] == [
        ("elem", (0,)),
        ("leaf", (1,)),
    ]
    m_c, m_e = _Stacks(), _Stacks()
    opt_c = TorchOptimizer(m_c.parameters(), tx(), compile=AOT)
    opt_e = TorchOptimizer(m_e.parameters(), tx())
    _train_stacks(m_c, opt_c, 4, skip=(2,))
    _train_stacks(m_e, opt_e, 4, skip=(2,))
    assert opt_c._otx_slots[0].flat.stacked and opt_c._otx_slots[0].stack_ok
    _assert_models_close(m_c, m_e)
    assert _graphs() == 1
