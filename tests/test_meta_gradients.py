"""Meta-gradients: differentiating a loss through unrolled ``update`` steps, float64.

* **Every catalogue entry**: the gradient of a loss of the params after K steps with respect to
  the initial params (a directional derivative), with ``torch.func.grad`` and with plain
  ``backward()``, equals central finite differences. The entries that do not differentiate are
  :data:`NOT_DIFFERENTIABLE` (name -> reason; strict ``xfail``, so the list cannot rot).
* **Every hyperparameter** of every optimizer whose factory ``inject_hyperparams`` takes: each
  float hyperparameter given as a tensor (``inject_hyperparams`` keeps its autograd history) gets
  its finite-difference derivative, both ways.
* **MAML-style inner loops** for a representative set (sgd, momentum, nesterov, adam, adamw,
  rmsprop, adagrad, lion, signum, clip + adam, lamb, ...): the inner gradients are themselves
  computed by autodiff (nested ``torch.func.grad``, or ``torch.autograd.grad(create_graph=True)``),
  K=5 steps, then the validation loss is differentiated with respect to the learning rate, weight
  decay, ``b1``, ``b2`` (through ``inject_hyperparams`` and as plain tensor arguments) and to the
  initial params; and a few steps of hypergradient descent lower the validation loss.
* **Subgradients** where the math has kinks (docs/functional.md lists them): what we return is
  tested at the kink itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from catalogue import Entry, catalogue, extra_args, resolve, static_args

import optax_torch as otx
from optax_torch import tree as otree

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.(script|interface)` is deprecated")

CATALOGUE = catalogue()
NAMES = sorted(CATALOGUE)
K = 3  # unrolled steps of the catalogue-wide checks

NOT_DIFFERENTIABLE = {
    "lbfgs": (
        "its zoom line search chooses the step by comparisons and polynomial interpolation of"
        " trial values, and (as optax) its first step's scale min(1, 1/||g||) is a stop_gradient:"
        " the derivative we return is not the trajectory's"
    ),
    "scale_by_lbfgs": (
        "as optax, the first step's scale min(1, 1/||g||) is a constant for differentiation"
        " (stop_gradient on the updates), so the derivative differs from finite differences"
    ),
    "sophia": (
        "its Hessian estimate is a double backward (torch.autograd.grad on detached copies), which"
        " functorch transforms refuse and which plain autograd does not see through"
    ),
}
# Entries whose trajectories are accurate to less than float64 (GaLore's projection is a float32
# SVD, as the reference's) or strongly curved near the start (distances that start at 1e-6):
# finite differences need a wider step, and a float32 trajectory a wider tolerance.
FD_STEP = {"galore": (1e-3, 1e-3), "scale_by_distance_over_gradients": (1e-3, 1e-5)}


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def central_difference(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, h: float):
    """Fourth-order central difference ``f'(x)`` (error O(h^4))."""
    return (f(x - 2 * h) - 8 * f(x - h) + 8 * f(x + h) - f(x + 2 * h)) / (12 * h)


def autograd_derivative(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor):
    """``f'(x)`` with plain autograd (``backward()``); 0 where ``f`` does not depend on ``x``."""
    x = x.detach().clone().requires_grad_(True)
    out = f(x)
    if not out.requires_grad:  # e.g. a threshold only compared with: piecewise constant
        return torch.zeros_like(x)
    out.backward()
    assert x.grad is not None
    return x.grad


def assert_derivatives(f, x, h, rtol=1e-6, atol=1e-9):
    """torch.func.grad == backward() (to rounding) == finite differences."""
    got = torch.func.grad(f)(x)
    torch.testing.assert_close(autograd_derivative(f, x), got, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(got, central_difference(f, x, h), rtol=rtol, atol=atol)
    return got


P0 = {
    "w": torch.linspace(-0.9, 0.8, 12, dtype=torch.float64).reshape(3, 4),
    "b": torch.tensor([0.3, -0.6, 0.45, 0.1], dtype=torch.float64),
    "s": torch.tensor(0.7, dtype=torch.float64),
}
DIRECTION = otree.map(
    lambda x: torch.sin(7 * torch.arange(x.numel(), dtype=x.dtype).reshape(x.shape) + 1), P0
)
T0 = 0.0123  # a generic point on the line P0 + t * DIRECTION


def objective(p) -> torch.Tensor:
    terms = [0.5 * (x - 0.3).square().sum() + 0.1 * torch.sin(3 * x).sum() for x in otree.leaves(p)]
    return torch.stack(terms).sum()


def grad_of(p):
    """The objective's gradient, written out (so it is differentiable to any order)."""
    return otree.map(lambda x: (x - 0.3) + 0.3 * torch.cos(3 * x), p)


def validation(p) -> torch.Tensor:
    return torch.stack([(torch.cos(x) * x).sum() for x in otree.leaves(p)]).sum()


def unroll(entry: Entry, tx, params, steps: int = K) -> torch.Tensor:
    state = tx.init(params)
    for _ in range(steps):
        grads = grad_of(params)
        kw = extra_args(entry.needs, objective, params, objective(params), grads)
        updates, state = tx.update(grads, state, params, **kw)
        params = otx.apply_updates(params, updates)
    return validation(params)


# --------------------------------------------------------------------------------------------
# Catalogue-wide: initial params
# --------------------------------------------------------------------------------------------


def _xfail(names: dict[str, str]):
    return [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=names[n])) if n in names else n
        for n in NAMES
    ]


@pytest.mark.parametrize("name", _xfail(NOT_DIFFERENTIABLE))
def test_gradient_wrt_initial_params(name):
    entry = CATALOGUE[name]

    def loss(t):
        params = otree.map(lambda x, d: x + t * d, P0, DIRECTION)
        return unroll(entry, entry.build(), params)

    h, rtol = FD_STEP.get(name, (1e-6, 1e-6))
    assert_derivatives(loss, torch.tensor(T0, dtype=torch.float64), h, rtol=rtol, atol=1e-8)


# --------------------------------------------------------------------------------------------
# Catalogue-wide: every float hyperparameter, through inject_hyperparams
# --------------------------------------------------------------------------------------------

INJECTABLE = sorted(
    n
    for n, e in CATALOGUE.items()
    if e.optimizer and e.factory is not None and n not in NOT_DIFFERENTIABLE
)
# (entry, hyperparameter) at a kink of the trajectory, where we return a one-sided derivative:
KINKS = {
    ("adafactor", "clipping_threshold"): (
        "an unfactored leaf's first update g / sqrt(g^2 + eps) has RMS 1 - O(eps), on the kink of"
        " max(1, rms / clipping_threshold) at the default threshold 1"
    ),
    ("adafactor", "eps"): "the same kink (eps moves the RMS across it)",
    ("dog", "learning_rate"): (
        "at the multiplier 1 the first step moves r_eps ||g|| / sqrt(||g||^2 + eps), 1e-8 short"
        " of r_eps: the running maximum max(r_eps, ||x_1 - x_0||) is at its tie"
    ),
}


def _hyperparam_cases():
    cases = []
    for name in INJECTABLE:
        entry = CATALOGUE[name]
        assert entry.factory is not None
        make = otx.inject_hyperparams(resolve(entry.factory), static_args=static_args(entry))
        for hp, value in sorted(make(**entry.kwargs).init(P0).hyperparams.items()):
            if value.is_floating_point() and value.item() != 0:  # (0: often a domain boundary)
                cases.append((name, hp))
    return cases


HYPERPARAM_CASES = _hyperparam_cases()


@pytest.mark.parametrize(("name", "hp"), HYPERPARAM_CASES, ids=str)
def test_gradient_wrt_hyperparameter(name, hp):
    entry = CATALOGUE[name]
    assert entry.factory is not None
    make = otx.inject_hyperparams(resolve(entry.factory), static_args=static_args(entry))
    x0 = make(**entry.kwargs).init(P0).hyperparams[hp]
    params = otree.map(lambda x, d: x + T0 * d, P0, DIRECTION)

    def loss(x):
        return unroll(entry, make(**{**entry.kwargs, hp: x}), params)

    h = fd_step(x0.item())
    if (name, hp) in KINKS:  # one of the one-sided derivatives
        got = torch.func.grad(loss)(x0)
        torch.testing.assert_close(autograd_derivative(loss, x0), got, rtol=1e-10, atol=1e-13)
        right = (loss(x0 + h) - loss(x0)) / h
        left = (loss(x0) - loss(x0 - h)) / h
        assert min(abs(got - right), abs(got - left)) <= 1e-4 * abs(got) + 1e-8
        assert abs(right - left) > 1e-3 * abs(got)  # really a kink
        return
    assert_derivatives(loss, x0, h, rtol=1e-6, atol=max(1e-9, 1e-15 / h))


def fd_step(value: float) -> float:
    """A finite-difference step for a hyperparameter: 1e-5 of its distance to the boundaries
    of its domain (0, and 1 for a decay rate in (0, 1)), but not below 1e-9 (rounding: an eps
    of 1e-30 moves nothing in float64)."""
    scale = min(abs(value), 1 - value) if 0 < value < 1 else abs(value)
    return max(1e-5 * scale, 1e-9)


def test_lists_name_catalogue_entries():
    assert set(NOT_DIFFERENTIABLE) | set(FD_STEP) <= set(NAMES)
    assert {k for k in KINKS} <= set(HYPERPARAM_CASES)


# --------------------------------------------------------------------------------------------
# MAML-style inner loops on a small regression problem (inner gradients by autodiff)
# --------------------------------------------------------------------------------------------

INNER_STEPS = 5


def _data(seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 3, generator=gen, dtype=torch.float64)
    y = torch.tanh(x @ torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64)) + 0.1
    return x, y


TRAIN, VAL = _data(0), _data(1)
THETA0 = {
    "w1": 0.5 * torch.randn(3, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64),
    "b1": torch.full((4,), 0.1, dtype=torch.float64),
    "w2": 0.5 * torch.randn(4, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64),
}


def net_loss(theta, data) -> torch.Tensor:
    x, y = data
    out = torch.tanh(x @ theta["w1"] + theta["b1"]) @ theta["w2"]
    return ((out - y) ** 2).mean()


def inner_grads_func(theta):
    return torch.func.grad(net_loss)(theta, TRAIN)


def inner_grads_autograd(theta):
    """Inner gradients that stay differentiable (second order): ``create_graph=True``."""
    names = list(theta)
    with torch.enable_grad():
        leaves = [
            # (a constant leaf, e.g. the initial params, gets a fresh leaf of its own)
            theta[n] if theta[n].requires_grad else theta[n].detach().requires_grad_(True)
            for n in names
        ]
        grads = torch.autograd.grad(
            net_loss(dict(zip(names, leaves)), TRAIN), leaves, create_graph=True
        )
    return dict(zip(names, grads))


def inner_loop(tx, theta, grads_fn) -> torch.Tensor:
    state = tx.init(theta)
    for _ in range(INNER_STEPS):
        updates, state = tx.update(grads_fn(theta), state, theta)
        theta = otx.apply_updates(theta, updates)
    return net_loss(theta, VAL)


def clip_adam(learning_rate, max_norm=0.5, b1=0.9, b2=0.999):
    """``chain(clip_by_global_norm, adam)`` as a factory (so that inject_hyperparams takes it)."""
    return otx.chain(otx.clip_by_global_norm(max_norm), otx.adam(learning_rate, b1=b1, b2=b2))


def asgd(learning_rate, lambd=1e-2):
    """Averaged SGD's step (its updates include the learning rate), float64 step sizes."""
    return otx.scale_by_asgd(learning_rate, lambd, eta_dtype=torch.float64)


# name -> (factory, fixed kwargs, hyperparameters to differentiate: name -> value)
META: dict[str, tuple[Callable[..., Any], dict[str, Any], dict[str, float]]] = {
    "sgd": (otx.sgd, {}, {"learning_rate": 0.3}),
    "sgd_momentum": (otx.sgd, {}, {"learning_rate": 0.1, "momentum": 0.8}),
    "sgd_nesterov": (otx.sgd, {"nesterov": True}, {"learning_rate": 0.1, "momentum": 0.8}),
    "adam": (otx.adam, {}, {"learning_rate": 0.05, "b1": 0.8, "b2": 0.95}),
    "adamw": (otx.adamw, {}, {"learning_rate": 0.05, "weight_decay": 0.1, "b1": 0.8, "b2": 0.95}),
    "rmsprop": (otx.rmsprop, {"momentum": 0.5}, {"learning_rate": 0.01, "decay": 0.9}),
    "adagrad": (otx.adagrad, {}, {"learning_rate": 0.1}),
    "lion": (otx.lion, {}, {"learning_rate": 0.01, "weight_decay": 0.1, "b1": 0.9, "b2": 0.99}),
    "signum": (otx.signum, {}, {"learning_rate": 0.01}),
    "clip_adam": (clip_adam, {}, {"learning_rate": 0.05, "max_norm": 0.3, "b1": 0.8}),
    "lamb": (otx.lamb, {}, {"learning_rate": 0.05, "weight_decay": 0.1, "b2": 0.95}),
    "lars": (otx.lars, {}, {"learning_rate": 0.1, "weight_decay": 0.01}),
    "adabelief": (otx.adabelief, {}, {"learning_rate": 0.05, "b1": 0.8}),
    "nadamw": (otx.nadamw, {}, {"learning_rate": 0.05, "weight_decay": 0.1}),
    "adafactor": (otx.adafactor, {"min_dim_size_to_factor": 2}, {"learning_rate": 0.05}),
    "asgd": (asgd, {}, {"learning_rate": 0.1, "lambd": 0.5}),
}
META_CASES = [(n, hp) for n in sorted(META) for hp in META[n][2]]


@pytest.mark.parametrize("via", ["inject_hyperparams", "tensor_argument"])
@pytest.mark.parametrize("autodiff", ["torch.func", "autograd"])
@pytest.mark.parametrize(("name", "hp"), META_CASES, ids=str)
def test_maml_gradient_wrt_hyperparameter(name, hp, autodiff, via):
    factory, fixed, values = META[name]

    def val_loss(x, grads_fn):
        hps = {**values, hp: x}
        if via == "inject_hyperparams":
            tx = otx.inject_hyperparams(factory)(**fixed, **hps)
        else:
            tx = factory(**fixed, **hps)
        return inner_loop(tx, THETA0, grads_fn)

    x0 = torch.tensor(values[hp], dtype=torch.float64)
    if autodiff == "torch.func":
        got = torch.func.grad(lambda x: val_loss(x, inner_grads_func))(x0)
    else:
        got = autograd_derivative(lambda x: val_loss(x, inner_grads_autograd), x0)
    expected = central_difference(lambda x: val_loss(x, inner_grads_func), x0, 1e-3 * values[hp])
    if name == "lion" and hp in ("b1", "b2"):
        # the betas only enter through sign(), whose derivative is 0 (so is the difference
        # quotient, no sign flipping within the step)
        assert got == 0
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("autodiff", ["torch.func", "autograd"])
@pytest.mark.parametrize("name", sorted(META))
def test_maml_gradient_wrt_initial_params(name, autodiff):
    """d val_loss(theta_K) / d theta_0 (MAML), checked along a direction."""
    factory, fixed, values = META[name]
    direction = otree.map(lambda x: torch.cos(3 * torch.arange(x.numel()).reshape(x.shape)), THETA0)

    def val_loss(t, grads_fn):
        theta = otree.map(lambda x, d: x + t * d.to(x.dtype), THETA0, direction)
        return inner_loop(factory(**fixed, **values), theta, grads_fn)

    t0 = torch.tensor(0.0, dtype=torch.float64)
    if autodiff == "torch.func":
        got = torch.func.grad(lambda t: val_loss(t, inner_grads_func))(t0)
    else:
        got = autograd_derivative(lambda t: val_loss(t, inner_grads_autograd), t0)
    expected = central_difference(lambda t: val_loss(t, inner_grads_func), t0, 1e-4)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-10)


def test_maml_full_gradient_wrt_initial_params_equals_autograd():
    """The whole MAML gradient tree (not a direction): torch.func == autograd."""
    tx = otx.adam(0.05)
    got = torch.func.grad(lambda th: inner_loop(tx, th, inner_grads_func))(THETA0)
    leaves = {k: v.clone().requires_grad_(True) for k, v in THETA0.items()}
    inner_loop(tx, leaves, inner_grads_autograd).backward()
    for k, v in leaves.items():
        assert v.grad is not None
        torch.testing.assert_close(got[k], v.grad, rtol=1e-10, atol=1e-13)


def test_hypergradient_descent_lowers_the_validation_loss():
    """A few steps of gradient descent on log(lr) (hypergradients through 5 inner Adam steps)."""
    make = otx.inject_hyperparams(otx.adam)
    log_lr = torch.tensor(-5.0, dtype=torch.float64)  # lr = 0.0067: too small for 5 steps

    def val_loss(log_lr):
        return inner_loop(make(learning_rate=log_lr.exp()), THETA0, inner_grads_func)

    first = val_loss(log_lr)
    for _ in range(10):
        g = torch.func.grad(val_loss)(log_lr)
        log_lr = log_lr - 2.0 * g
    assert log_lr > -5.0  # the learning rate grew
    assert val_loss(log_lr) < 0.9 * first


# --------------------------------------------------------------------------------------------
# Subgradients at the kinks
# --------------------------------------------------------------------------------------------


def _jacobian(tx, g: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
    """d update / d gradient at ``g`` (one step from a fresh state)."""
    p = torch.zeros_like(g) if params is None else params
    return torch.func.jacrev(lambda g: tx.update(g, tx.init(p), p)[0])(g)


def test_sign_has_zero_derivative():
    """sign (sign_sgd, signum, lion, rprop's step adaptation): derivative 0, also at 0."""
    g = torch.tensor([-0.5, 0.0, 2.0], dtype=torch.float64)
    assert torch.equal(_jacobian(otx.scale_by_sign(), g), torch.zeros(3, 3, dtype=torch.float64))


def test_clip_passes_the_gradient_at_its_threshold():
    """clip (clamp): derivative 1 inside *and on* the threshold, 0 beyond it."""
    g = torch.tensor([-2.0, -1.0, 0.3, 1.0, 1.5], dtype=torch.float64)
    j = _jacobian(otx.clip(1.0), g)
    torch.testing.assert_close(j, torch.diag(torch.tensor([0.0, 1, 1, 1, 0], dtype=g.dtype)))


def test_clip_by_global_norm_subgradients():
    """At the threshold: the clipped side's derivative (I - u u^T) * max/||g||; at a zero
    gradient tree: the identity (finite, no NaN through the norm's derivative at 0)."""
    tx = otx.clip_by_global_norm(1.0)
    g = torch.tensor([0.6, 0.8, 0.0], dtype=torch.float64)  # norm exactly 1
    u = g / g.norm()
    expected = torch.eye(3, dtype=g.dtype) - torch.outer(u, u)
    torch.testing.assert_close(_jacobian(tx, g), expected)
    zero = torch.zeros(3, dtype=torch.float64)
    torch.testing.assert_close(_jacobian(tx, zero), torch.eye(3, dtype=zero.dtype))


def test_global_norm_has_zero_gradient_at_zero():
    """``tree.norm`` at a zero tree: gradient 0 (like ``torch.linalg.vector_norm``)."""
    zero = {"a": torch.zeros(3, dtype=torch.float64), "b": torch.zeros((), dtype=torch.float64)}
    g = torch.func.grad(lambda t: otree.norm(t))(zero)
    for v in g.values():
        assert torch.equal(v, torch.zeros_like(v))


def test_adam_derivative_at_a_zero_gradient():
    """Adam at a zero gradient: with eps_root = 0 the derivative of sqrt(nu) at nu = 0 is
    infinite (NaN through the chain rule); eps_root > 0 makes it finite (optax's advice for
    meta-learning)."""
    zero = torch.zeros(2, dtype=torch.float64)
    assert torch.isnan(_jacobian(otx.scale_by_adam(), zero)).any()
    j = _jacobian(otx.scale_by_adam(eps_root=1e-8), zero)
    assert torch.isfinite(j).all()


def test_trust_ratio_at_zero_params_is_finite():
    """LAMB/LARS-style trust ratios at a zero parameter block: ratio 1, derivative finite."""
    g = torch.tensor([0.3, -0.4], dtype=torch.float64)
    j = _jacobian(otx.scale_by_trust_ratio(), g, params=torch.zeros(2, dtype=torch.float64))
    assert torch.isfinite(j).all()


def test_maximum_at_a_tie_splits_the_gradient():
    """``tree.maximum`` (amsgrad's running maximum, DoG's max(r_eps, ||x - x0||)) at a tie:
    ``torch.maximum`` sends half of the gradient to each side."""
    a = {"x": torch.tensor([1.0, 2.0], dtype=torch.float64)}
    b = {"x": torch.tensor([1.0, 3.0], dtype=torch.float64)}
    ga, gb = torch.func.grad(lambda a, b: otree.maximum(a, b)["x"].sum(), argnums=(0, 1))(a, b)
    torch.testing.assert_close(ga["x"], torch.tensor([0.5, 0.0], dtype=torch.float64))
    torch.testing.assert_close(gb["x"], torch.tensor([0.5, 1.0], dtype=torch.float64))


def test_safe_sqrt_has_zero_gradient_at_zero():
    x = torch.tensor([0.0, 4.0], dtype=torch.float64)
    g = torch.func.grad(lambda x: otx.numerics.safe_sqrt(x).sum())(x)
    torch.testing.assert_close(g, torch.tensor([0.0, 0.25], dtype=torch.float64))
