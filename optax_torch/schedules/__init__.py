"""Schedules (pure functions of the step count) and hyperparameter injection.

Schedules may be used to anneal the value of a hyperparameter over time, for instance the learning
rate. A schedule maps an integer step count (tensor or Python ``int``) to a float64 tensor shaped
like the count, on its device; it is traceable (``torch.compile``, ``torch.func.vmap``). Names,
signatures and values follow ``optax.schedules``; the schedules of ``torch.optim.lr_scheduler``
that optax lacks are added (:mod:`optax_torch.schedules._torch` maps each torch scheduler to its
schedule).
"""

from optax_torch.base import Schedule
from optax_torch.schedules._inject import (
    InjectHyperparamsState,
    InjectStatefulHyperparamsState,
    StatefulSchedule,
    WrappedSchedule,
    WrappedScheduleState,
    inject_hyperparams,
    inject_stateful_hyperparams,
)
from optax_torch.schedules._join import join_schedules
from optax_torch.schedules._schedule import (
    constant_schedule,
    cosine_decay_schedule,
    cosine_onecycle_schedule,
    exponential_decay,
    linear_onecycle_schedule,
    linear_schedule,
    piecewise_constant_schedule,
    piecewise_interpolate_schedule,
    polynomial_schedule,
    sgdr_schedule,
    warmup_constant_schedule,
    warmup_cosine_decay_schedule,
    warmup_exponential_decay_schedule,
)
from optax_torch.schedules._torch import (
    cosine_annealing_schedule,
    cosine_annealing_warm_restarts_schedule,
    cyclic_momentum_schedule,
    cyclic_schedule,
    multistep_schedule,
    one_cycle_momentum_schedule,
    one_cycle_schedule,
    step_schedule,
    swa_schedule,
)

__all__ = [
    "InjectHyperparamsState",
    "InjectStatefulHyperparamsState",
    "Schedule",
    "StatefulSchedule",
    "WrappedSchedule",
    "WrappedScheduleState",
    "constant_schedule",
    "cosine_annealing_schedule",
    "cosine_annealing_warm_restarts_schedule",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "cyclic_momentum_schedule",
    "cyclic_schedule",
    "exponential_decay",
    "inject_hyperparams",
    "inject_stateful_hyperparams",
    "join_schedules",
    "linear_onecycle_schedule",
    "linear_schedule",
    "multistep_schedule",
    "one_cycle_momentum_schedule",
    "one_cycle_schedule",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "polynomial_schedule",
    "sgdr_schedule",
    "step_schedule",
    "swa_schedule",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
]
