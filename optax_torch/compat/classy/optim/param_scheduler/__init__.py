"""Classy Vision's param schedulers (``classy_vision.optim.param_scheduler``, Classy Vision 0.7,
and the fvcore schedulers it re-exports) as pure functions of the training progress ``where``.

Same classes, constructor signatures, defaults, ``update_interval`` defaults, ``from_config``,
registry names (``constant``, ``cosine``, ``linear``, ``multistep``, ``polynomial``, ``step``,
``step_with_fixed_gamma``, ``composite``) and validation errors (types and messages) as Classy;
the values at a Python ``where`` are Classy's, operation for operation. Each scheduler also
accepts a tensor ``where`` (a float64 tensor comes back; traceable by
``torch.compile(fullgraph=True)`` and ``torch.func.vmap``), and :func:`as_schedule` /
:func:`from_schedule` convert to and from optax_torch schedules of the step count::

    >>> from optax_torch.compat.classy.optim.param_scheduler import (
    ...     as_schedule, build_param_scheduler)
    >>> sched = build_param_scheduler({"name": "cosine", "start_value": 0.1, "end_value": 0.0})
    >>> lr = as_schedule(sched, total_steps=1000)   # count -> lr, for optax_torch optimizers

Deviations: with a tensor ``where``, Classy's ``RuntimeError`` for ``where >= 1`` (constant,
multistep) is not raised and list look-ups (step, multistep) clamp their index instead of raising
``IndexError``; ``ExponentialParamScheduler`` (fvcore) is provided but, as in Classy, not
registered. Classy Vision itself is not needed.
"""

from optax_torch.compat.classy.optim.param_scheduler._base import (
    PARAM_SCHEDULER_REGISTRY,
    PARAM_SCHEDULER_REGISTRY_TB,
    ClassyParamScheduler,
    ParamScheduler,
    UpdateInterval,
    build_param_scheduler,
    register_param_scheduler,
)
from optax_torch.compat.classy.optim.param_scheduler.bridge import (
    ScheduleParamScheduler,
    as_schedule,
    from_schedule,
)
from optax_torch.compat.classy.optim.param_scheduler.composite_scheduler import (
    CompositeParamScheduler,
    IntervalScaling,
)
from optax_torch.compat.classy.optim.param_scheduler.fvcore_schedulers import (
    ConstantParamScheduler,
    CosineParamScheduler,
    ExponentialParamScheduler,
    LinearParamScheduler,
    MultiStepParamScheduler,
    PolynomialDecayParamScheduler,
    StepParamScheduler,
    StepWithFixedGammaParamScheduler,
)

__all__ = [
    "PARAM_SCHEDULER_REGISTRY",
    "PARAM_SCHEDULER_REGISTRY_TB",
    "ClassyParamScheduler",
    "CompositeParamScheduler",
    "ConstantParamScheduler",
    "CosineParamScheduler",
    "ExponentialParamScheduler",
    "IntervalScaling",
    "LinearParamScheduler",
    "MultiStepParamScheduler",
    "ParamScheduler",
    "PolynomialDecayParamScheduler",
    "ScheduleParamScheduler",
    "StepParamScheduler",
    "StepWithFixedGammaParamScheduler",
    "UpdateInterval",
    "as_schedule",
    "build_param_scheduler",
    "from_schedule",
    "register_param_scheduler",
]
