"""timm's ``Kron`` (PSGD with a Kronecker-factored preconditioner) on optax_torch (see
:mod:`optax_torch.compat.timm`)."""

from __future__ import annotations

import random
from typing import Any, ClassVar

import torch

from optax_torch.base import GradientTransformation
from optax_torch.combine import chain
from optax_torch.compat.timm._checks import check_scalar, max_lr_snapshot, wd_factor
from optax_torch.compat.torch_optim._common import TorchOptimDropIn
from optax_torch.transforms.kron import KRON_MAX_NDIM, kron_rng_state, scale_by_kron
from optax_torch.transforms.scaling import scale_by_learning_rate
from optax_torch.wrappers import _state_layout as layout

__all__ = ["Kron"]

_DETERMINISTIC = "_deterministic"  # internal hyperparameter: the optimizer's deterministic flag
_Q = [f"Q.{i}" for i in range(KRON_MAX_NDIM)]


def _kron_tx(
    lr,
    momentum,
    weight_decay,
    preconditioner_update_probability,
    max_size_triangular,
    min_ndim_triangular,
    memory_save_mode,
    momentum_into_precond_update,
    precond_lr,
    precond_init_scale,
    mu_dtype,
    precond_dtype,
    decoupled_decay,
    corrected_weight_decay,
    max_lr_snapshot,
    flatten,
    flatten_start_dim,
    flatten_end_dim,
    stochastic_weight_decay,
    **internal: Any,
) -> GradientTransformation:
    """The chain of one ``Kron`` param group: ``[scale_by_kron (its weight decay), -lr]``."""
    corrected = decoupled_decay and corrected_weight_decay
    wd = wd_factor(lr, weight_decay, max_lr_snapshot if corrected else None)
    return chain(
        scale_by_kron(
            b1=momentum,
            preconditioner_update_probability=preconditioner_update_probability,
            max_size_triangular=max_size_triangular,
            min_ndim_triangular=min_ndim_triangular,
            memory_save_mode=memory_save_mode,
            momentum_into_precond_update=momentum_into_precond_update,
            precond_lr=precond_lr,
            precond_init_scale=precond_init_scale,
            mu_dtype=mu_dtype,
            precond_dtype=precond_dtype,
            flatten=flatten,
            flatten_start_dim=flatten_start_dim,
            flatten_end_dim=flatten_end_dim,
            weight_decay=wd,
            stochastic_weight_decay=stochastic_weight_decay,
            deterministic=internal.get(_DETERMINISTIC, False),
        ),
        scale_by_learning_rate(lr),
    )


class Kron(TorchOptimDropIn):
    r"""timm's ``Kron`` (``timm.optim.Kron``, PSGD Kron) on optax_torch.

    Per param group, the chain :func:`~optax_torch.transforms.kron.scale_by_kron` (``b1 =
    momentum`` and timm's preconditioner options; its weight decay: ``weight_decay``, or with
    ``decoupled_decay`` and ``corrected_weight_decay`` ``lr / max_lr * weight_decay``, max_lr
    the constructor's lr) → ``scale_by_learning_rate(lr)``. Decoupled decay (timm: ``p *= 1 -
    lr * wd`` before the step) is the same step as the coupled one (``wd * p`` added to the
    capped update before ``-lr``), up to rounding.

    Randomness, as timm: one Python ``random.Random(1337)`` for the whole optimizer (the
    ``rng`` attribute, saved as ``rng_state`` in ``state_dict``), drawn from parameter after
    parameter (rebalancing, the seeds of the probe vectors with ``deterministic=True``,
    ``stochastic_weight_decay``): before each group's update its state is written into the
    transform's state, and read back after, so the draws are timm's, in timm's order. With
    ``deterministic=False`` (timm's default) the probe vectors come from torch's global
    generator, in timm's order too: a run equals timm's when both start from the same global
    generator state.

    Args (timm's): ``params``; ``lr`` (1e-3); ``momentum`` (0.9, in ``[0, 1)``);
    ``weight_decay`` (0); ``preconditioner_update_probability`` (``None``: the annealing
    schedule; a float, or a callable of the step); ``max_size_triangular`` (2048);
    ``min_ndim_triangular`` (2); ``memory_save_mode`` (``None``, ``"one_diag"``,
    ``"smart_one_diag"``, ``"all_diag"``); ``momentum_into_precond_update`` (True);
    ``precond_lr`` (0.1); ``precond_init_scale`` (1); ``mu_dtype``, ``precond_dtype`` (``None``:
    the parameter's); ``decoupled_decay``, ``corrected_weight_decay``, ``flatten`` (False);
    ``flatten_start_dim`` (2), ``flatten_end_dim`` (-1); ``stochastic_weight_decay`` (False);
    ``deterministic`` (False).

    Example::

        >>> opt = Kron(model.parameters(), lr=1e-3, weight_decay=1e-4, deterministic=True)
        >>> loss.backward(); opt.step(); opt.zero_grad()

    State per parameter, as timm's: ``step``, ``update_counter`` (Python ints in
    ``state_dict``), ``momentum_buffer`` (flattened with ``flatten``) and ``Q`` (the list of
    factors), plus ``rng_state`` at the top of ``state_dict``; timm's checkpoints load.
    Deviations: ``optimizer.state[p]`` shows the factors as ``Q.0``, ``Q.1``, ... (``state_dict``
    has timm's ``Q`` list) and 0-d tensor counts; an invalid ``memory_save_mode`` raises at
    construction (timm: at the first step); timm's ``torch.compile`` of its kernels is not
    used (eager, same math); with ``corrected_weight_decay`` and a learning rate of exactly 0,
    no ``stochastic_weight_decay`` number is drawn (timm draws one); ``caution`` does not exist
    in timm's ``Kron``.
    """

    _not_compilable = (
        "draws from a Python random.Random whose state is a tensor of the optimizer state, rebuilt "
        "with .tolist() at each step: data-dependent Python, not traceable"
    )

    _complex_as_real: ClassVar[bool] = False
    # Per-parameter counts live in the transform's state (one per leaf); the Python generator is
    # group-wide and must not be split by the adapter's per-parameter steps.
    _per_param_steps: ClassVar[bool] = False
    _state_key_map: ClassVar[dict[str, str]] = {
        "0.count": "step",
        "0.update_counter": "update_counter",
        "0.mu": "momentum_buffer",
        "0.rng": "rng",
        **{f"0.{q}": q for q in _Q},
    }
    _hidden_state_keys: ClassVar[frozenset[str]] = frozenset({"rng"})

    def __init__(
        self,
        params,
        lr: float = 0.001,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        preconditioner_update_probability: Any = None,
        max_size_triangular: int = 2048,
        min_ndim_triangular: int = 2,
        memory_save_mode: str | None = None,
        momentum_into_precond_update: bool = True,
        precond_lr: float = 0.1,
        precond_init_scale: float = 1.0,
        mu_dtype: torch.dtype | None = None,
        precond_dtype: torch.dtype | None = None,
        decoupled_decay: bool = False,
        corrected_weight_decay: bool = False,
        flatten: bool = False,
        flatten_start_dim: int = 2,
        flatten_end_dim: int = -1,
        stochastic_weight_decay: bool = False,
        deterministic: bool = False,
    ) -> None:
        check_scalar("learning rate", lr)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"Invalid beta parameter: {momentum}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        self.rng = random.Random(1337)
        self.deterministic = deterministic
        super().__init__(
            params,
            _kron_tx,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            preconditioner_update_probability=preconditioner_update_probability,
            max_size_triangular=max_size_triangular,
            min_ndim_triangular=min_ndim_triangular,
            memory_save_mode=memory_save_mode,
            momentum_into_precond_update=momentum_into_precond_update,
            precond_lr=precond_lr,
            precond_init_scale=precond_init_scale,
            mu_dtype=mu_dtype,
            precond_dtype=precond_dtype,
            decoupled_decay=decoupled_decay,
            corrected_weight_decay=corrected_weight_decay,
            max_lr_snapshot=max_lr_snapshot(lr, corrected_weight_decay),
            flatten=flatten,
            flatten_start_dim=flatten_start_dim,
            flatten_end_dim=flatten_end_dim,
            stochastic_weight_decay=stochastic_weight_decay,
        )

    def _group_hyperparams(self, group: dict[str, Any]) -> dict[str, Any]:
        hp = super()._group_hyperparams(group)
        hp[_DETERMINISTIC] = self.deterministic
        return hp

    def _step_group(self, gi: int, group: dict[str, Any], extra_args: dict[str, Any]) -> None:
        params = group["params"]
        grads = [p.grad for p in params]
        if all(g is None for g in grads) or gi >= len(self._otx_slots):
            return super()._step_group(gi, group, extra_args)
        slot = self._otx_slots[gi]
        if len(slot.active) == len(params):
            # Allocate the state of new parameters now, to hand it the optimizer's generator.
            state, active, _ = layout.ensure_state(
                slot, self._transform_for(gi, group), params, grads
            )
            kron = state[0]
            rng = kron_rng_state(self.rng.getstate()).to(kron.rng.device)
            slot.state, slot.active = (kron._replace(rng=rng), *state[1:]), active
        super()._step_group(gi, group, extra_args)
        if slot.state is not None:
            words = tuple(int(x) for x in slot.state[0].rng.tolist())
            self.rng.setstate((3, words, None))

    # ----------------------------------------------------------------------------------------
    # timm's state_dict layout: per-parameter "Q" lists, Python int counts, "rng_state"
    # ----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        for idx, entry in list(sd["state"].items()):
            if not isinstance(entry, dict):
                continue
            out: dict[str, Any] = {}
            for key in ("step", "update_counter"):
                if key in entry:
                    out[key] = int(entry[key])
            if "momentum_buffer" in entry:
                out["momentum_buffer"] = entry["momentum_buffer"]
            factors = [entry[q] for q in _Q if q in entry]
            if factors:
                out["Q"] = factors
            out.update({k: v for k, v in entry.items() if k not in out and k not in _Q})
            sd["state"][idx] = out
        sd["rng_state"] = self.rng.getstate()
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        rng_state = state_dict.pop("rng_state", None)
        super().load_state_dict(state_dict)
        if rng_state is not None:
            version, words, gauss = rng_state
            self.rng.setstate((int(version), tuple(int(w) for w in words), gauss))

    def _adapt_entry(self, entry: dict[str, Any], expected: set[str]) -> dict[str, Any]:
        entry = dict(entry)
        factors = entry.pop("Q", None)
        if isinstance(factors, list | tuple):
            entry.update({q: f for q, f in zip(_Q, factors)})
        if "rng" in expected:  # the group's generator: the optimizer's, written at each step
            entry["rng"] = kron_rng_state(self.rng.getstate())
        return entry

    def __getstate__(self) -> dict[str, Any]:
        out = super().__getstate__()
        out["rng"] = self.rng
        out["deterministic"] = self.deterministic
        return out
