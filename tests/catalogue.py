"""The catalogue: every optimizer and transformation of optax_torch, built with small settings.

Shared by the catalogue-wide tests (``test_catalogue.py``): laws, ``torch.compile``, the
``TorchOptimizer`` adapter, convergence, ``inject_hyperparams``, dtypes. Each :class:`Entry`
builds its transformation and says what its ``update`` needs (extra keyword arguments such as
``value``), and which dtypes / tracing modes it supports, with the reason where it does not.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

import optax_torch as otx
import optax_torch.contrib as otc
from optax_torch.transforms.kron import scale_by_kron

# Extra keyword arguments an update may need, computed from the objective at the current params.
VALUE = "value"  # the loss value (polyak_sgd, momo, reduce_on_plateau)
LBFGS = "lbfgs"  # value, grad, value_fn (line searches)
OBJ_FN = "obj_fn"  # the objective (sophia's Hessian estimate)


@dataclass(frozen=True)
class Entry:
    """One catalogue entry.

    Attributes:
      build: returns the transformation (called anew for each use).
      optimizer: a complete optimizer (converges on the test problems); ``False`` for building
        blocks such as ``scale_by_adam``.
      factory: the factory's name (see :func:`resolve`), for ``inject_hyperparams`` equality.
      kwargs: the keyword arguments given to the factory.
      needs: extra arguments of ``update`` (:data:`VALUE`, :data:`LBFGS`, :data:`OBJ_FN`).
      complex_ok: supports complex parameters (as in optax's own list).
      no_compile: why ``update`` cannot be traced with ``torch.compile(fullgraph=True)``, if so.
      random: draws random numbers (its state holds a generator).
      steps: step budget for the convergence checks.
      targets: the convergence problems it is expected to solve.
      eval_params: maps (state, params) to the params to evaluate (schedule-free).
    """

    build: Callable[[], Any]
    optimizer: bool = True
    factory: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    complex_ok: bool = True
    no_compile: str = ""
    random: bool = False
    steps: int = 10_000
    targets: tuple[str, ...] = ("parabola", "rosenbrock")
    eval_params: Callable[[Any, Any], Any] | None = None


def resolve(name: str) -> Callable[..., Any]:
    """``"adam"`` -> ``optax_torch.adam``; ``"contrib.muon"`` -> ``optax_torch.contrib.muon``."""
    module: Any = otc if name.startswith("contrib.") else otx
    return getattr(module, name.removeprefix("contrib."))


def static_args(entry: Entry) -> list[str]:
    """The factory's integer arguments (step counts, sizes): structure, not values (they are
    never injected as tensor hyperparameters)."""
    assert entry.factory is not None
    signature = inspect.signature(resolve(entry.factory))
    out = []
    for name, p in signature.parameters.items():
        value = entry.kwargs.get(name, p.default)
        if isinstance(value, int) and not isinstance(value, bool):
            out.append(name)
    return out


def opt(name: str, **kwargs: Any) -> Entry:
    """An optimizer entry ``factory(**kwargs)``; entry settings go in ``_meta``."""
    meta = kwargs.pop("_meta", {})
    if name.startswith("contrib."):  # optax: contrib on real params only, 30,000 steps
        meta = {"complex_ok": False, "steps": 30_000, **meta}
    return Entry(
        build=lambda: resolve(name)(**kwargs),
        factory=name,
        kwargs=kwargs,
        **meta,
    )


def tx(name: str, *args: Any, _meta: dict | None = None, **kwargs: Any) -> Entry:
    """A transformation entry ``resolve(name)(*args, **kwargs)``."""
    return Entry(
        build=lambda: resolve(name)(*args, **kwargs),
        optimizer=False,
        factory=name,
        **(_meta or {}),
    )


_NO_COMPLEX = {"complex_ok": False}
_GENERATOR = "draws from a torch.Generator, which dynamo cannot create inside a graph"
_LINESEARCH = (
    "its line search is a loop of objective evaluations: traceable (it then runs all its trials),"
    " but the default 20-step zoom search takes minutes to compile"
)


def _sched_free_eval(state: Any, params: Any) -> Any:
    return otc.schedule_free_eval_params(state, params)


def _optimizers() -> dict[str, Entry]:
    return {
        # alias/classic
        # Settings of optax's alias_test (_OPTIMIZERS_UNDER_TEST) and contrib/_common_test.
        "sgd": opt("sgd", learning_rate=1e-3, momentum=0.9),
        "adam": opt("adam", learning_rate=1e-1),
        "adamw": opt("adamw", learning_rate=1e-1),
        "nadam": opt("nadam", learning_rate=1e-2),
        "nadamw": opt("nadamw", learning_rate=1e-2),
        "amsgrad": opt("amsgrad", learning_rate=1e-1),
        "rmsprop": opt("rmsprop", learning_rate=5e-3),
        "rmsprop_momentum": opt("rmsprop", learning_rate=5e-3, momentum=0.9),
        "adagrad": opt("adagrad", learning_rate=1.0),
        # alias/adaptive
        "adabelief": opt("adabelief", learning_rate=1e-2),
        "adadelta": opt("adadelta", learning_rate=0.1, _meta=_NO_COMPLEX),
        "adafactor": opt("adafactor", learning_rate=5e-3),
        "adamax": opt("adamax", learning_rate=1e-1),
        "adamaxw": opt("adamaxw", learning_rate=1e-1),
        "adan": opt("adan", learning_rate=1e-1, _meta=_NO_COMPLEX),
        "lion": opt("lion", learning_rate=1e-2, weight_decay=1e-4, _meta=_NO_COMPLEX),
        "novograd": opt("novograd", learning_rate=1e-3),
        "radam": opt("radam", learning_rate=5e-3),
        "sm3": opt("sm3", learning_rate=1.0, _meta=_NO_COMPLEX),
        "yogi": opt("yogi", learning_rate=1e-1),
        # alias/layerwise
        "fromage": opt("fromage", learning_rate=5e-3, _meta=_NO_COMPLEX),
        "lamb": opt("lamb", learning_rate=1e-3),
        "lars": opt("lars", learning_rate=1.0),
        # alias/sgd_variants (sign methods need a schedule for Rosenbrock, as optax notes)
        "noisy_sgd": opt(
            "noisy_sgd",
            learning_rate=1e-3,
            eta=1e-4,
            key=0,
            _meta={**_NO_COMPLEX, "random": True, "no_compile": _GENERATOR},
        ),
        "rprop": opt("rprop", learning_rate=1e-1, _meta=_NO_COMPLEX),
        "sign_sgd": opt(
            "sign_sgd", learning_rate=1e-1, _meta={**_NO_COMPLEX, "targets": ("parabola",)}
        ),
        "signum": opt(
            "signum", learning_rate=1e-2, _meta={**_NO_COMPLEX, "targets": ("parabola",)}
        ),
        # alias/step_size
        "polyak_sgd": opt(
            "polyak_sgd", max_learning_rate=1.0, _meta={**_NO_COMPLEX, "needs": (VALUE,)}
        ),
        "optimistic_gradient_descent": opt(
            "optimistic_gradient_descent",
            learning_rate=2e-3,
            alpha=0.7,
            beta=0.1,
            _meta=_NO_COMPLEX,
        ),
        "optimistic_adam_v2": opt("optimistic_adam_v2", learning_rate=2e-3),
        # alias/second_order
        "lbfgs": opt("lbfgs", _meta={"needs": (LBFGS,), "no_compile": _LINESEARCH}),
        # contrib (optax runs these for 30,000 steps)
        "acprop": opt("contrib.acprop", learning_rate=1e-3),
        "ademamix": opt("contrib.ademamix", learning_rate=1e-3),
        "simplified_ademamix": opt("contrib.simplified_ademamix", learning_rate=1e-3),
        "adopt": opt("contrib.adopt", learning_rate=1e-2),
        "cocob": opt("contrib.cocob"),
        "dadapt_adamw": opt("contrib.dadapt_adamw", learning_rate=1e-1),
        "dog": opt("contrib.dog", learning_rate=1.0),
        "dowg": opt("contrib.dowg", learning_rate=1.0),
        "madgrad": opt("contrib.madgrad", learning_rate=1e-2),
        "mechanize_sgd": Entry(
            build=lambda: otc.mechanize(otx.sgd(1e-1), weight_decay=0.0),
            complex_ok=False,
            steps=30_000,
        ),
        "momo": opt("contrib.momo", learning_rate=1e-1, _meta={"needs": (VALUE,)}),
        "momo_adam": opt("contrib.momo_adam", learning_rate=1e-1, _meta={"needs": (VALUE,)}),
        "muon": opt("contrib.muon", learning_rate=1e-2),
        "prodigy": opt("contrib.prodigy", learning_rate=1e-1),
        "schedule_free_sgd": opt(
            "contrib.schedule_free_sgd",
            learning_rate=1e-2,
            warmup_steps=5000,
            _meta={"eval_params": _sched_free_eval},
        ),
        "schedule_free_adamw": opt(
            "contrib.schedule_free_adamw",
            learning_rate=1e-2,
            warmup_steps=5000,
            _meta={"eval_params": _sched_free_eval},
        ),
        "sophia": opt(
            "contrib.sophia",
            learning_rate=1e-2,
            _meta={"needs": (OBJ_FN,), "random": True, "no_compile": _GENERATOR},
        ),
        "galore": opt("contrib.galore", learning_rate=1e-2, rank=8),
        "reduce_on_plateau_sgd": Entry(
            build=lambda: otx.chain(otx.sgd(1e-3), otc.reduce_on_plateau()),
            needs=(VALUE,),
            complex_ok=False,
            steps=30_000,
        ),
        # dpsgd and the per-example clips take per-example gradients (a leading batch axis):
        # tests/test_optax_contrib_b.py and tests/test_optax_normalization.py cover them.
    }


def _transforms() -> dict[str, Entry]:
    no_complex = {"complex_ok": False}

    def built(make: Callable[[], Any], **meta: Any) -> Entry:
        return Entry(build=make, optimizer=False, **meta)

    return {
        "scale_by_adam": tx("scale_by_adam"),
        "scale_by_adamax": tx("scale_by_adamax"),
        "scale_by_adadelta": tx("scale_by_adadelta", _meta=no_complex),
        "scale_by_adan": tx("scale_by_adan", _meta=no_complex),
        "scale_by_belief": tx("scale_by_belief"),
        "scale_by_yogi": tx("scale_by_yogi"),
        "scale_by_radam": tx("scale_by_radam"),
        "scale_by_novograd": tx("scale_by_novograd"),
        "scale_by_lion": tx("scale_by_lion", _meta=no_complex),
        "scale_by_sm3": tx("scale_by_sm3", _meta=no_complex),
        "scale_by_factored_rms": tx("scale_by_factored_rms", min_dim_size_to_factor=2),
        "scale_by_trust_ratio": tx("scale_by_trust_ratio"),
        "scale_by_param_block_norm": tx("scale_by_param_block_norm"),
        "scale_by_param_block_rms": tx("scale_by_param_block_rms"),
        "scale_by_sign": tx("scale_by_sign", _meta=no_complex),
        "scale_by_rprop": tx("scale_by_rprop", 0.1, _meta=no_complex),
        "scale_by_distance_over_gradients": tx("scale_by_distance_over_gradients"),
        "scale_by_optimistic_gradient": tx("scale_by_optimistic_gradient"),
        "centralize": tx("centralize"),
        "normalize_by_update_norm": tx("normalize_by_update_norm"),
        "adaptive_grad_clip": tx("adaptive_grad_clip", 0.1),
        "clip_by_block_rms": tx("clip_by_block_rms", 0.5),
        "add_noise": tx(
            "add_noise",
            0.01,
            0.55,
            0,
            _meta={**no_complex, "random": True, "no_compile": _GENERATOR},
        ),
        "scale_by_kron": Entry(  # factory: resolvable once optax_torch exports scale_by_kron
            build=lambda: scale_by_kron(preconditioner_update_probability=0.5, weight_decay=1e-3),
            optimizer=False,
            factory="scale_by_kron",
            complex_ok=False,
            random=True,
            no_compile="draws from a Python random.Random whose state is in its state (eager)",
        ),
        "keep_params_nonnegative": tx("keep_params_nonnegative", _meta=no_complex),
        "zero_nans": tx("zero_nans"),
        "apply_every": tx("apply_every", 3),
        "apply_if_finite": built(lambda: otx.apply_if_finite(otx.adam(0.1), 3)),
        # lookahead is not here: its params are LookaheadParams(fast, slow) and its updates
        # have that structure, not the gradients'; tests/test_optax_wrappers.py covers it.
        "multi_steps_adam": built(
            lambda: otx.MultiSteps(otx.adam(0.1), 3).gradient_transformation()
        ),
        "flatten_adam": built(lambda: otx.flatten(otx.adam(0.1))),
        "scale_by_lbfgs": tx("scale_by_lbfgs"),
        "scale_by_ademamix": tx("contrib.scale_by_ademamix"),
        "scale_by_madgrad": tx("contrib.scale_by_madgrad", learning_rate=1e-2),
        "scale_by_adopt": tx("contrib.scale_by_adopt", _meta=no_complex),
        "scale_by_acprop": tx("contrib.scale_by_acprop"),
        "scale_by_cocob": tx("contrib.scale_by_cocob", _meta=no_complex),
        "normalize": tx("contrib.normalize"),
        "split_real_and_imaginary": built(
            lambda: otc.split_real_and_imaginary(otx.scale_by_adam())
        ),
        # Transformations added for the torch.optim drop-ins.
        "view_complex_as_real": built(lambda: otc.view_complex_as_real(otx.adam(0.1))),
        "caution_adam": built(
            lambda: otx.chain(otx.caution(otx.scale_by_adam()), otx.scale_by_learning_rate(0.1))
        ),
        "dampened_trace": tx("dampened_trace", 0.9, dampening=0.1),
        "count_steps": tx("count_steps"),
        "scale_by_inverse_time_decay": tx("scale_by_inverse_time_decay", 0.01),
        "scale_by_asgd": tx("scale_by_asgd", 0.05),
        "polyak_average": tx("polyak_average", 2.0),
        "scale_by_factored_rms_torch": tx("scale_by_factored_rms_torch", _meta=no_complex),
        "scale_by_relative_step_size": tx("scale_by_relative_step_size", 0.1),
        # Transformations added for the timm and Classy Vision drop-ins.
        "scale_by_laprop": tx("scale_by_laprop"),
        "scale_by_larc": tx("scale_by_larc", 0.1),
        "scale_by_mars": tx("scale_by_mars", optimize_1d=True),
        "scale_by_adafactor_step_size": tx("scale_by_adafactor_step_size"),
        "add_adafactor_decayed_weights": tx("add_adafactor_decayed_weights", 0.01),
        "scale_by_rms_root_state": tx("scale_by_rms_root_state"),
        "project_scale_invariant": built(
            lambda: otx.project_scale_invariant(otx.scale_by_adam(), delta=0.5), **no_complex
        ),
        "per_leaf_adam": built(lambda: otx.per_leaf(otx.scale_by_adam())),
        # The chains of the torch.optim drop-ins, built from their default param group
        # (LBFGS is closure-driven, SparseAdam takes sparse gradients, Muon 2-d parameters).
        # (torch.optim.Adafactor, like its chain, refuses complex parameters.)
        **{
            f"torch_optim.{name}": built(
                lambda name=name, kw=kw: torch_optim_chain(name, **kw),
                **(no_complex if name == "Adafactor" else {}),
            )
            for name, kw in TORCH_OPTIM_CHAINS.items()
        },
    }


TORCH_OPTIM_CHAINS: dict[str, dict[str, Any]] = {
    "SGD": dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
    "Adam": dict(lr=0.1, amsgrad=True, weight_decay=0.01),
    "AdamW": dict(lr=0.1),
    "Adadelta": dict(weight_decay=0.01),
    "Adafactor": dict(lr=0.1, weight_decay=0.01),
    "Adagrad": dict(lr=0.1, lr_decay=0.01),
    "Adamax": dict(lr=0.1),
    "ASGD": dict(lr=0.05, t0=2.0),
    "NAdam": dict(lr=0.1, decoupled_weight_decay=True, weight_decay=0.01),
    "RAdam": dict(lr=0.1),
    "RMSprop": dict(lr=0.01, momentum=0.5, centered=True),
    "Rprop": dict(lr=0.1),
}


def torch_optim_chain(name: str, **kwargs: Any) -> Any:
    """The chain that the drop-in ``compat.torch_optim.<name>`` runs for a param group."""
    from optax_torch.compat import torch_optim

    opt = getattr(torch_optim, name)([torch.zeros(1, requires_grad=True)], **kwargs)
    return opt._call_factory(opt._group_hyperparams(opt.param_groups[0]))


def catalogue() -> dict[str, Entry]:
    """Name -> entry. Names are resolved lazily, when an entry is built."""
    return {**_optimizers(), **_transforms()}


# --------------------------------------------------------------------------------------------
# Test problems (optax's alias_test: a parabola and Rosenbrock), for real and complex dtypes
# --------------------------------------------------------------------------------------------


def abs_sq(x: torch.Tensor) -> torch.Tensor:
    return (x.conj() * x).real if x.is_complex() else x * x


def parabola(dtype: torch.dtype):
    init = torch.tensor([-1.0, 10.0, 1.0]).to(dtype)
    final = torch.tensor([1.0, -1.0, 1.0]).to(dtype)
    if dtype.is_complex:
        final = final * (1 + 1j)

    def objective(params):
        return abs_sq(params - final).sum()

    return init, final, objective


def rosenbrock(dtype: torch.dtype):
    a, b = 1.0, 100.0
    if dtype.is_complex:
        a = a * (1 + 1j)
    init = torch.zeros(2, dtype=dtype)
    final = torch.tensor([a, a**2]).to(dtype)

    def objective(params):
        return abs_sq(a - params[0]) + b * abs_sq(params[1] - params[0] ** 2)

    return init, final, objective


TARGETS = {"parabola": parabola, "rosenbrock": rosenbrock}


def extra_args(needs: tuple[str, ...], objective, params, value, grads) -> dict[str, Any]:
    """The extra keyword arguments an entry's ``update`` needs."""
    out: dict[str, Any] = {}
    if VALUE in needs:
        out["value"] = value
    if LBFGS in needs:
        out.update(value=value, grad=grads, value_fn=objective)
    if OBJ_FN in needs:
        out["obj_fn"] = objective
    return out


def value_and_grad(objective, params):
    """The objective and its gradient. For complex params torch's gradient is already the
    descent direction (conj of JAX's; optax's tests conjugate JAX's gradient to get it)."""
    x = params.detach().requires_grad_(True)
    with torch.enable_grad():
        value = objective(x)
        (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad
