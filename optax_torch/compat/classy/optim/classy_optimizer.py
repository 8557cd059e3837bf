"""``ClassyOptimizer``: a torch optimizer whose param-group values follow param schedulers of the
training progress ``where`` (Classy Vision's ``classy_vision.optim.ClassyOptimizer``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

__all__ = ["ClassyOptimizer", "OptionsView"]

_STEP, _EPOCH = "step", "epoch"


def _interval(scheduler: Any) -> str:
    """``"step"`` or ``"epoch"``: a scheduler's ``update_interval`` (an enum or a string)."""
    value = getattr(scheduler, "update_interval", _STEP)
    return getattr(value, "value", value)


def _constant(value: float) -> Any:
    from optax_torch.compat.classy.optim.param_scheduler import ConstantParamScheduler

    return ConstantParamScheduler(value)


class OptionsView:
    """The current param-group values by name: ``optimizer.options_view.lr`` is the value of
    ``lr`` if all groups agree, else the list of their distinct values (``AttributeError`` if
    no group has it)."""

    def __init__(self, optimizer: ClassyOptimizer) -> None:
        self.optimizer = optimizer

    def __getattr__(self, name: str) -> Any:
        values: list[Any] = []
        for pg in self.optimizer.param_groups:
            if name in pg and pg[name] not in values:
                values.append(pg[name])
        if len(values) == 0:
            raise AttributeError
        if len(values) == 1:
            return values.pop()
        return values


class ClassyOptimizer(ABC):
    """An optimizer built on demand (:meth:`prepare`) with scheduled param-group values.

    ``set_param_groups(params, lr=scheduler, ...)`` gives each hyperparameter a param scheduler
    (numbers become ``ConstantParamScheduler``), builds the underlying torch optimizer (an
    optax_torch drop-in) with the values at ``where = 0``, and each ``step(where=...)`` first
    writes the step-interval schedulers' values at ``where`` into the param groups;
    ``on_epoch(where)`` does the same for the epoch-interval ones. As Classy Vision 0.7.

    Example::

        >>> opt = SGD(momentum=0.9)
        >>> opt.set_param_groups(model.parameters(), lr=CosineParamScheduler(0.1, 0.0))
        >>> loss.backward(); opt.step(where=0.25); opt.zero_grad()
    """

    def __init__(self) -> None:
        self.options_view = OptionsView(self)
        self.optimizer: Any = None
        self._param_group_schedulers: list[dict[str, Any]] | None = None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ClassyOptimizer:
        """Instantiates the optimizer from a configuration."""
        raise NotImplementedError

    @abstractmethod
    def prepare(self, param_groups: Any) -> None:
        """Builds the underlying torch optimizer over ``param_groups`` (torch's format)."""
        raise NotImplementedError

    def set_param_groups(self, param_groups: Any, **kwargs: Any) -> None:
        """Sets the parameters to optimize (tensors or param-group dicts) and the schedulers of
        their hyperparameters (``kwargs``: defaults for every group; numbers are constants)."""

        def cast_param_groups(params: Any) -> list[dict[str, Any]]:
            if params is None:
                return []
            if isinstance(params, dict):
                assert "params" in params
                return [params]
            pg = list(params)
            if len(pg) == 0:
                raise ValueError("optimizer got an empty parameter list")
            if not isinstance(pg[0], dict):
                pg = [{"params": pg}]
            return pg

        self._param_group_schedulers = cast_param_groups(param_groups)
        for pg in self._param_group_schedulers:
            for k, v in kwargs.items():
                pg[k] = _constant(v) if isinstance(v, (int, float)) else v
            for k, v in pg.items():
                if isinstance(v, (int, float)):
                    pg[k] = _constant(v)
        self.prepare(self._run_schedulers(0, None))

    def _run_schedulers(self, where: float, update_interval: str | None) -> list[dict[str, Any]]:
        param_groups = []
        for pg in self._param_group_schedulers or []:
            param_group = {}
            for k, v in pg.items():
                if k == "params":
                    param_group[k] = v
                elif update_interval is None or _interval(v) == update_interval:
                    if not callable(v):
                        raise AssertionError(
                            f"Elements in param_groups must inherit from ParamScheduler, found: {v}"
                        )
                    param_group[k] = v(where)
            param_groups.append(param_group)
        return param_groups

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def get_classy_state(self) -> dict[str, Any]:
        """The checkpoint state: ``{"optim": optimizer.state_dict()}``."""
        return {"optim": self.optimizer.state_dict()}

    def set_classy_state(self, state: dict[str, Any]) -> None:
        """Loads a state made by :meth:`get_classy_state` (ours or Classy Vision's)."""
        self.optimizer.load_state_dict(state["optim"])

    def on_epoch(self, where: float) -> None:
        """End of a phase: updates the epoch-interval schedulers' values (unless ``where >= 1``)."""
        if where < 1:
            self._update_schedule(self._run_schedulers(where, _EPOCH))

    def step(
        self, *args: Any, closure: Callable[[], Any] | None = None, where: float | None = None
    ):
        """One optimization step with the step-interval schedulers' values at ``where`` in
        ``[0, 1)`` (the training progress)."""
        del args
        if where is None:
            raise RuntimeError("ClassyOptimizer.step requires `where` argument to be provided")
        if not (where >= 0 and where < 1):
            raise AssertionError(f"Invalid where: {where}")
        if self._param_group_schedulers is None:
            raise RuntimeError("ClassyOptimizer.set_param_groups must be called before step()")
        self._update_schedule(self._run_schedulers(where, _STEP))
        if closure is None:
            self.optimizer.step()
        else:
            self.optimizer.step(closure)

    def _update_schedule(self, param_groups: list[dict[str, Any]]) -> None:
        assert len(self.optimizer.param_groups) == len(param_groups)
        for group, new_group in zip(self.optimizer.param_groups, param_groups):
            assert group["params"] == new_group["params"]
            group.update(new_group)

    def zero_grad(self) -> None:
        """Clears the gradients of all optimized parameters."""
        self.optimizer.zero_grad()
