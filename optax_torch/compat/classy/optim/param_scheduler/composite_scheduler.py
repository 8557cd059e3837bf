"""``CompositeParamScheduler``: schedulers run one after the other over fractions of training
(Classy Vision 0.7 ``composite_scheduler.py`` over fvcore's ``CompositeParamScheduler``)."""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum, auto
from typing import Any

import torch

from optax_torch.compat.classy.optim.param_scheduler._base import (
    ParamScheduler,
    UpdateInterval,
    _as_value,
    _is_tensor,
    _where,
    build_param_scheduler,
    register_param_scheduler,
)

__all__ = ["CompositeParamScheduler", "IntervalScaling"]


class IntervalScaling(Enum):
    """How a composite's sub-scheduler sees ``where``: rescaled to its interval, or unchanged."""

    RESCALED = auto()
    FIXED = auto()


@register_param_scheduler("composite")
class CompositeParamScheduler(ParamScheduler):
    r"""Composite parameter scheduler composed of intermediate schedulers.

    Takes a list of schedulers and a list of lengths corresponding to percentage of training each
    scheduler should run for. Schedulers are run in order. All values in lengths should sum to
    1.0 (within 1e-3; the last length is then adjusted so that they do).

    Each scheduler also has a corresponding interval scale. If interval scale is 'fixed', the
    intermediate scheduler will be run without any rescaling of the time. If interval scale is
    'rescaled', intermediate scheduler is run such that each scheduler will start and end at the
    same values as it would if it were the only scheduler: with cumulative lengths
    :math:`c_i = l_0 + \dots + l_i`, ``where`` :math:`w` selects the first :math:`i` with
    :math:`w + \epsilon \le c_i` (the last one past the end) and the value is
    :math:`s_i((w - (c_i - l_i)) / l_i)` (rescaled) or :math:`s_i(w)` (fixed).

    Args:
      schedulers: the schedulers (a tensor ``where`` needs schedulers that accept tensors; all
        of this package's do).
      lengths: the fraction of training of each scheduler.
      interval_scaling: ``IntervalScaling`` members or ``"rescaled"`` / ``"fixed"``, one per
        scheduler.
      update_interval: ``UpdateInterval.STEP`` (default) or ``UpdateInterval.EPOCH``.

    Example:
      >>> from optax_torch.compat.classy.optim.param_scheduler import (
      ...     ConstantParamScheduler, CosineParamScheduler)
      >>> s = CompositeParamScheduler(
      ...     schedulers=[ConstantParamScheduler(value=0.42),
      ...                 CosineParamScheduler(start_value=0.42, end_value=1e-4)],
      ...     interval_scaling=["rescaled", "rescaled"], lengths=[0.3, 0.7])
      >>> s(0.1)
      0.42

    The parameter value will be 0.42 for the first [0%, 30%) of steps, and then will cosine decay
    from 0.42 to 0.0001 for [30%, 100%) of training.
    """

    def __init__(
        self,
        schedulers: Sequence[ParamScheduler],
        lengths: Sequence[float],
        interval_scaling: Sequence[IntervalScaling | str],
        update_interval: UpdateInterval = UpdateInterval.STEP,
    ):
        scaling_name = {
            IntervalScaling.RESCALED: "rescaled",
            IntervalScaling.FIXED: "fixed",
        }
        interval_scaling = [
            scaling_name[s] if isinstance(s, IntervalScaling) else s for s in interval_scaling
        ]
        # fvcore's CompositeParamScheduler.__init__
        if len(schedulers) != len(lengths):
            raise ValueError("Schedulers and lengths must be same length")
        if len(schedulers) == 0:
            raise ValueError("There must be at least one scheduler in the composite scheduler")
        if abs(sum(lengths) - 1.0) >= 1e-3:
            raise ValueError("The sum of all values in lengths must be 1")
        if sum(lengths) != 1.0:
            lengths[-1] = 1.0 - sum(lengths[:-1])  # pyright: ignore[reportIndexIssue]
        for s in interval_scaling:
            if s not in ["rescaled", "fixed"]:
                raise ValueError(f"Unsupported interval_scaling: {s}")

        self._lengths = lengths
        self._schedulers = schedulers
        self._interval_scaling = interval_scaling
        self.update_interval = update_interval

    def __call__(self, where: Any) -> Any:
        if _is_tensor(where):
            return self._call_tensor(_where(where))
        # Find scheduler corresponding to where
        i = 0
        running_total = self._lengths[i]
        while (where + self.WHERE_EPSILON) > running_total and i < len(self._schedulers) - 1:
            i += 1
            running_total += self._lengths[i]
        scheduler = self._schedulers[i]
        scheduler_where = where
        interval_scale = self._interval_scaling[i]
        if interval_scale == "rescaled":
            # Calculate corresponding where % for scheduler
            scheduler_start = running_total - self._lengths[i]
            scheduler_where = (where - scheduler_start) / self._lengths[i]
        return scheduler(scheduler_where)

    def _call_tensor(self, where: torch.Tensor) -> torch.Tensor:
        """``__call__`` on a tensor: every scheduler evaluated, the selected value kept."""
        n = len(self._schedulers)
        totals = [self._lengths[0]]  # the running totals, summed in the same order
        for i in range(1, n):
            totals.append(totals[-1] + self._lengths[i])
        # index = how many of the first n - 1 intervals ``where`` is past, consecutively.
        index = torch.zeros_like(where)
        going = torch.ones_like(where, dtype=torch.bool)
        for i in range(n - 1):
            going = going & ((where + self.WHERE_EPSILON) > totals[i])
            index = index + going.to(where.dtype)
        out = None
        for i, scheduler in enumerate(self._schedulers):
            scheduler_where = where
            if self._interval_scaling[i] == "rescaled":
                scheduler_start = totals[i] - self._lengths[i]
                scheduler_where = (where - scheduler_start) / self._lengths[i]
            value = _as_value(scheduler(scheduler_where), where)
            out = value if out is None else torch.where(index == i, value, out)
        assert out is not None
        return out

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CompositeParamScheduler:
        """Instantiates a CompositeParamScheduler from a configuration.

        Args:
          config: A configuration for a CompositeParamScheduler: ``schedulers`` (configs),
            ``lengths``, optional ``interval_scaling`` ("fixed" / "rescaled", default all
            rescaled), ``update_interval`` (default "step") and ``num_epochs`` (propagated to
            the sub-schedulers' configs, in place, as Classy does).

        Returns:
          A CompositeParamScheduler instance.
        """
        assert "schedulers" in config and "lengths" in config, (
            "Composite scheduler needs both a list of schedulers and lengths"
        )
        interval_scaling = []
        if "interval_scaling" in config:
            assert len(config["schedulers"]) == len(config["interval_scaling"]), (
                "Schedulers and interval scaling must be the same length"
            )
            for interval_scale in config["interval_scaling"]:
                assert interval_scale in {
                    "fixed",
                    "rescaled",
                }, "Choices for interval scaling are 'fixed' or 'rescaled'"
                interval_scaling.append(IntervalScaling[interval_scale.upper()])
        else:
            interval_scaling = [IntervalScaling.RESCALED] * len(config["schedulers"])
        if "num_epochs" in config:  # Propagate value to intermediate schedulers
            config["schedulers"] = [
                dict(schedule, **{"num_epochs": config["num_epochs"]})
                for schedule in config["schedulers"]
            ]
        return cls(
            schedulers=[build_param_scheduler(scheduler) for scheduler in config["schedulers"]],
            lengths=config["lengths"],
            update_interval=UpdateInterval.from_config(config, UpdateInterval.STEP),
            interval_scaling=interval_scaling,
        )
