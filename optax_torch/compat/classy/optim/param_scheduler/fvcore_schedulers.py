r"""The schedulers of ``fvcore.common.param_scheduler`` with Classy Vision's additions
(``classy_vision.optim.param_scheduler.fvcore_schedulers``): ``from_config``, ``update_interval``
and their registry names.

* ``ConstantParamScheduler`` (``constant``, epoch): :math:`v`;
* ``CosineParamScheduler`` (``cosine``, step): :math:`e + \frac{s - e}{2}(1 + \cos \pi w)`;
* ``ExponentialParamScheduler`` (not registered, step): :math:`s \cdot d^{w}`;
* ``LinearParamScheduler`` (``linear``, step): :math:`e w + s (1 - w)`;
* ``MultiStepParamScheduler`` (``multistep``, epoch): ``values[bisect_right(milestones, k)]``
  with :math:`k = \lfloor (w + \epsilon) N \rfloor`;
* ``PolynomialDecayParamScheduler`` (``polynomial``, step): :math:`b (1 - w)^{p}`;
* ``StepParamScheduler`` (``step``, epoch): ``values[i]`` with
  :math:`i = \lfloor (w + \epsilon) n \rfloor` over :math:`n` values;
* ``StepWithFixedGammaParamScheduler`` (``step_with_fixed_gamma``, step): ``step`` over the
  values :math:`b \gamma^i`, :math:`i = 0, \dots,` ``num_decays``.

(:math:`\epsilon` is ``ParamScheduler.WHERE_EPSILON`` = 1e-6; the interval in brackets is the
default ``update_interval``.) Reference: fvcore ``param_scheduler.py`` and Classy Vision 0.7
``fvcore_schedulers.py``. Classy does not wrap fvcore's ``ExponentialParamScheduler``; it is here
with the same ``from_config`` (config name ``"exponential"``) but unregistered, as in Classy:
``register_param_scheduler("exponential")(ExponentialParamScheduler)`` makes it buildable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from optax_torch.compat.classy.optim.param_scheduler._base import (
    ClassyParamScheduler,
    UpdateInterval,
    _bisect_right,
    _classy_from_config,
    _cos,
    _is_tensor,
    _out,
    _pick,
    _trunc,
    _where,
    register_param_scheduler,
)

__all__ = [
    "ConstantParamScheduler",
    "CosineParamScheduler",
    "ExponentialParamScheduler",
    "LinearParamScheduler",
    "MultiStepParamScheduler",
    "PolynomialDecayParamScheduler",
    "StepParamScheduler",
    "StepWithFixedGammaParamScheduler",
]


class _FvcoreScheduler(ClassyParamScheduler):
    """A fvcore scheduler with Classy's ``from_config`` and default ``update_interval``."""

    _register_name: str = ""
    _default_update_interval: UpdateInterval = UpdateInterval.STEP

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.update_interval = cls._default_update_interval

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        """Builds the scheduler from a config dict (``name`` must be the registry name).

        The constructor's arguments are read from the config (``num_epochs`` stands for
        ``num_updates``), ``update_interval`` ("step" or "epoch") defaults to the class's.
        """
        return _classy_from_config(cls, config)


@register_param_scheduler("constant")
class ConstantParamScheduler(_FvcoreScheduler):
    """Returns a constant value for a param.

    Args:
      value: the value.

    Example:
      >>> ConstantParamScheduler(0.1)(0.5)
      0.1
    """

    _register_name = "constant"
    _default_update_interval = UpdateInterval.EPOCH

    def __init__(self, value: float) -> None:
        self._value = value

    def __call__(self, where: Any) -> Any:
        if _is_tensor(where):
            return _out(self._value, _where(where))
        if where >= 1.0:
            raise RuntimeError(f"where in ParamScheduler must be in [0, 1]: got {where}")
        return self._value


@register_param_scheduler("cosine")
class CosineParamScheduler(_FvcoreScheduler):
    r"""Cosine decay or cosine warmup schedules based on start and end values.

    :math:`v(w) = e + \tfrac12 (s - e)(1 + \cos(\pi w))`. The schedule is updated based on the
    fraction of training progress. The schedule was proposed in 'SGDR: Stochastic Gradient
    Descent with Warm Restarts' (https://arxiv.org/abs/1608.03983). Note that this class only
    implements the cosine annealing part of SGDR, and not the restarts.

    Args:
      start_value: :math:`s`, the value at ``where = 0``.
      end_value: :math:`e`, the value approached at ``where = 1``.

    Example:
      >>> CosineParamScheduler(start_value=0.1, end_value=0.0001)(0.0)
      0.1
    """

    _register_name = "cosine"
    _default_update_interval = UpdateInterval.STEP

    def __init__(self, start_value: float, end_value: float) -> None:
        self._start_value = start_value
        self._end_value = end_value

    def __call__(self, where: Any) -> Any:
        w = _where(where)
        value = self._end_value + 0.5 * (self._start_value - self._end_value) * (
            1 + _cos(math.pi * w)
        )
        return _out(value, w)


class ExponentialParamScheduler(_FvcoreScheduler):
    r"""Exponential schedule parameterized by a start value and decay.

    :math:`v(w) = s \cdot d^{w}` (``param_t = start_value * (decay ** where)``).

    Args:
      start_value: :math:`s`, the value at ``where = 0``.
      decay: :math:`d`, the factor reached at ``where = 1``.

    Example:
      >>> ExponentialParamScheduler(start_value=2.0, decay=0.02)(0.0)
      2.0

    Corresponds to a decreasing schedule with values in [2.0, 0.04).
    """

    _register_name = "exponential"
    _default_update_interval = UpdateInterval.STEP

    def __init__(self, start_value: float, decay: float) -> None:
        self._start_value = start_value
        self._decay = decay

    def __call__(self, where: Any) -> Any:
        w = _where(where)
        return _out(self._start_value * (self._decay**w), w)


@register_param_scheduler("linear")
class LinearParamScheduler(_FvcoreScheduler):
    r"""Linearly interpolates parameter between ``start_value`` and ``end_value``.

    :math:`v(w) = e w + s (1 - w)`. Can be used for either warmup or decay based on start and end
    values. The schedule is updated after every train step by default.

    Args:
      start_value: :math:`s`, the value at ``where = 0``.
      end_value: :math:`e`, the value approached at ``where = 1``.

    Example:
      >>> LinearParamScheduler(start_value=0.0001, end_value=0.01)(0.0)
      0.0001

    Corresponds to a linear increasing schedule with values in [0.0001, 0.01)
    """

    _register_name = "linear"
    _default_update_interval = UpdateInterval.STEP

    def __init__(self, start_value: float, end_value: float) -> None:
        self._start_value = start_value
        self._end_value = end_value

    def __call__(self, where: Any) -> Any:
        w = _where(where)
        # interpolate between start and end values
        return _out(self._end_value * w + self._start_value * (1 - w), w)


@register_param_scheduler("multistep")
class MultiStepParamScheduler(_FvcoreScheduler):
    r"""A predefined schedule for a param value and the upper boundaries (excluded) of its ranges.

    At ``where`` :math:`w` the update index is :math:`k = \lfloor (w + \epsilon) N \rfloor`
    (:math:`N` = ``num_updates``) and the value ``values[bisect_right(milestones, k)]``.

    Example::

        MultiStepParamScheduler(values=[0.1, 0.01, 0.001, 0.0001], milestones=[30, 60, 80, 120])

    Then the param value will be 0.1 for epochs 0-29, 0.01 for epochs 30-59, 0.001 for epochs
    60-79, 0.0001 for epochs 80-120. Note that the length of values must be equal to the length
    of milestones plus one.

    Args:
      values: param value in each range
      num_updates: the end of the last range. If None, will use ``milestones[-1]``
      milestones: the boundary of each range. If None, will evenly split ``num_updates``

    For example, all the following combinations define the same scheduler:

    * num_updates=90, milestones=[30, 60], values=[1, 0.1, 0.01]
    * num_updates=90, values=[1, 0.1, 0.01]
    * milestones=[30, 60, 90], values=[1, 0.1, 0.01]
    * milestones=[3, 6, 9], values=[1, 0.1, 0.01]  (ParamScheduler is scale-invariant)
    """

    _register_name = "multistep"
    _default_update_interval = UpdateInterval.EPOCH

    def __init__(
        self,
        values: list[float],
        num_updates: int | None = None,
        milestones: list[int] | None = None,
    ) -> None:
        if num_updates is None and milestones is None:
            raise ValueError("num_updates and milestones cannot both be None")
        if milestones is None:
            # Default equispaced drop_epochs behavior
            milestones = []
            step_width = math.ceil(num_updates / float(len(values)))  # pyright: ignore
            for idx in range(len(values) - 1):
                milestones.append(step_width * (idx + 1))
        else:
            if not (
                isinstance(milestones, Sequence)
                and len(milestones) == len(values) - int(num_updates is not None)
            ):
                raise ValueError(
                    "MultiStep scheduler requires a list of %d miletones"  # noqa: UP031
                    % (len(values) - int(num_updates is not None))
                )

        if num_updates is None:
            num_updates, milestones = milestones[-1], milestones[:-1]
        if num_updates < len(values):
            raise ValueError("Total num_updates must be greater than length of param schedule")

        self._param_schedule = values
        self._num_updates = num_updates
        self._milestones: list[int] = milestones

        start_epoch = 0
        for milestone in self._milestones:
            # Do not exceed the total number of epochs
            if milestone >= self._num_updates:
                raise ValueError(
                    "Milestone must be smaller than total number of updates: "  # noqa: UP031
                    "num_updates=%d, milestone=%d" % (self._num_updates, milestone)
                )
            # Must be in ascending order
            if start_epoch >= milestone:
                raise ValueError(
                    "Milestone must be smaller than start epoch: start_epoch=%d, milestone=%d"  # noqa: UP031
                    % (start_epoch, milestone)
                )
            start_epoch = milestone

    def __call__(self, where: Any) -> Any:
        if not _is_tensor(where) and where > 1.0:
            raise RuntimeError(f"where in ParamScheduler must be in [0, 1]: got {where}")
        w = _where(where)
        epoch_num = _trunc((w + self.WHERE_EPSILON) * self._num_updates)
        return _out(_pick(self._param_schedule, _bisect_right(self._milestones, epoch_num), w), w)


@register_param_scheduler("polynomial")
class PolynomialDecayParamScheduler(_FvcoreScheduler):
    r"""Decays the param value according to a polynomial function with a fixed power.

    :math:`v(w) = b (1 - w)^{p}`. The schedule is updated after every train step by default.

    Args:
      base_value: :math:`b`, the value at ``where = 0``.
      power: :math:`p`.

    Example:
      >>> PolynomialDecayParamScheduler(base_value=0.1, power=0.9)(0.0)
      0.1
    """

    _register_name = "polynomial"
    _default_update_interval = UpdateInterval.STEP

    def __init__(self, base_value: float, power: float) -> None:
        self._base_value = base_value
        self._power = power

    def __call__(self, where: Any) -> Any:
        w = _where(where)
        return _out(self._base_value * (1 - w) ** self._power, w)


@register_param_scheduler("step")
class StepParamScheduler(_FvcoreScheduler):
    r"""A fixed schedule of values, dividing the training evenly among them.

    :math:`v(w) =` ``values[``:math:`\lfloor (w + \epsilon) n \rfloor`\ ``]`` with :math:`n`
    values. The schedule is updated after every train epoch by default.

    Example::

        StepParamScheduler(values=[0.1, 0.01, 0.001, 0.0001], num_updates=120)

    Then the param value will be 0.1 for epochs 0-29, 0.01 for epochs 30-59, 0.001 for epoch
    60-89, 0.0001 for epochs 90-119.

    Args:
      num_updates: the number of updates (> 0; only validated: the schedule is scale-invariant).
      values: the values.
    """

    _register_name = "step"
    _default_update_interval = UpdateInterval.EPOCH

    def __init__(self, num_updates: int | float, values: list[float]) -> None:
        if num_updates <= 0:
            raise ValueError("Number of updates must be larger than 0")
        if not (isinstance(values, Sequence) and len(values) > 0):
            raise ValueError("Step scheduler requires a list of at least one param value")
        self._param_schedule = values

    def __call__(self, where: Any) -> Any:
        w = _where(where)
        ind = _trunc((w + self.WHERE_EPSILON) * len(self._param_schedule))
        return _out(_pick(self._param_schedule, ind, w), w)


@register_param_scheduler("step_with_fixed_gamma")
class StepWithFixedGammaParamScheduler(_FvcoreScheduler):
    r"""Decays the param value by gamma at equal number of steps so as to have the specified total
    number of decays.

    A :class:`StepParamScheduler` over the values :math:`b, b\gamma, b\gamma^2, \dots` (each the
    previous one times :math:`\gamma`, ``num_decays + 1`` values).

    Example::

        StepWithFixedGammaParamScheduler(base_value=0.1, gamma=0.1, num_decays=3, num_updates=120)

    Then the param value will be 0.1 for epochs 0-29, 0.01 for epochs 30-59, 0.001 for epoch
    60-89, 0.0001 for epochs 90-119.

    Args:
      base_value: :math:`b` (> 0).
      num_decays: the number of decays (int > 0).
      gamma: the decay factor (> 0).
      num_updates: the number of updates (int > 0).
    """

    _register_name = "step_with_fixed_gamma"
    _default_update_interval = UpdateInterval.STEP

    def __init__(self, base_value: float, num_decays: int, gamma: float, num_updates: int) -> None:
        for k in [base_value, gamma]:
            if not (isinstance(k, (int, float)) and k > 0):
                raise ValueError("base_value and gamma must be positive numbers")
        for k in [num_decays, num_updates]:
            if not (isinstance(k, int) and k > 0):
                raise ValueError("num_decays and num_updates must be positive integers")

        self.base_value = base_value
        self.num_decays = num_decays
        self.gamma = gamma
        self.num_updates = num_updates
        values = [base_value]
        for _ in range(num_decays):
            values.append(values[-1] * gamma)

        self._step_param_scheduler = StepParamScheduler(num_updates=num_updates, values=values)

    def __call__(self, where: Any) -> Any:
        return self._step_param_scheduler(where)
