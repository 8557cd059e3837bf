"""``torch.optim.swa_utils`` on optax_torch: weight averaging (SWA, EMA), ``update_bn``, ``SWALR``.

The averaging math is :mod:`optax_torch.transforms.averaging` (:func:`ema_update`,
:func:`swa_update`, and the pure :func:`params_ema` / :func:`params_swa` for a pytree of
parameters); this module gives it torch's interface:

* ``get_ema_multi_avg_fn``, ``get_swa_multi_avg_fn``, ``get_ema_avg_fn``, ``get_swa_avg_fn``:
  the averaging functions, numerically equal to torch's, to pass to ``AveragedModel`` (this
  module's or torch's) or to call directly;
* ``AveragedModel``: torch's class (a subclass: same constructor, ``state_dict`` and behaviour,
  ``isinstance`` of torch's), whose ``update_parameters`` also takes a mapping of named tensors
  (functional parameters);
* ``update_bn``: recomputes the BatchNorm running statistics over a loader, optionally with
  functional parameters;
* ``SWALR``: the LR scheduler, with torch's sequence of learning rates on any optimizer (its
  pure form is :func:`optax_torch.schedules.swa_schedule`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor
from torch.nn import Module
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.optimizer import Optimizer
from torch.optim.swa_utils import AveragedModel as _TorchAveragedModel

from optax_torch import tree
from optax_torch.transforms.averaging import ema_update, swa_update

__all__ = [
    "SWALR",
    "AveragedModel",
    "get_ema_avg_fn",
    "get_ema_multi_avg_fn",
    "get_swa_avg_fn",
    "get_swa_multi_avg_fn",
    "update_bn",
]

TensorList = tuple[Tensor, ...] | list[Tensor]


def _check_decay(decay: float) -> None:
    if decay < 0.0 or decay > 1.0:
        raise ValueError(
            f"Invalid decay value {decay} provided. Please provide a value in [0,1] range."
        )


def _write(targets: TensorList, values: list[Any]) -> None:
    """Copies ``values`` into ``targets`` where they are not already the same tensors."""
    for t, v in zip(targets, values):
        if v is not t:
            t.copy_(v)


def get_ema_multi_avg_fn(decay: float = 0.999) -> Callable[[TensorList, TensorList, Any], None]:
    r"""``torch.optim.swa_utils.get_ema_multi_avg_fn``: an in-place EMA of lists of tensors.

    Returns ``fn(ema_params, current_params, num_averaged)`` that sets each ``ema``
    to :math:`\delta\, \bar p + (1 - \delta)\, p` (:func:`~optax_torch.transforms.averaging.
    ema_update`, as ``lerp(ema, p, 1 - decay)`` like torch; integer tensors as ``ema * decay +
    p * (1 - decay)``, truncated). ``num_averaged`` is ignored.

    Args:
      decay: :math:`\delta` in ``[0, 1]``, default ``0.999`` (``ValueError`` otherwise).

    Example::

        >>> ema_model = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.999))
        >>> ema_model.update_parameters(model)
    """
    _check_decay(decay)

    @torch.no_grad()
    def ema_multi_update(
        ema_param_list: TensorList, current_param_list: TensorList, _: Any = None
    ) -> None:
        avg, cur = list(ema_param_list), list(current_param_list)
        with tree.donate(avg, exclude=(cur,)):
            new = ema_update(avg, cur, decay)
        _write(avg, new)

    return ema_multi_update


def get_swa_multi_avg_fn() -> Callable[[TensorList, TensorList, Tensor | int], None]:
    r"""``torch.optim.swa_utils.get_swa_multi_avg_fn``: an in-place equal-weight average of
    lists of tensors.

    Returns ``fn(averaged_params, current_params, num_averaged)`` that sets each average to
    :math:`\bar p + (p - \bar p) / (n + 1)`, computed as torch's ``lerp(avg, p, 1 / (n + 1))``
    (:func:`~optax_torch.transforms.averaging.swa_update` with ``lerp=True``; for a tensor
    ``num_averaged`` the weight is in the default dtype, as in torch). Integer tensors take
    ``avg + (p - avg) / (n + 1)``, truncated (torch raises for them).

    Example::

        >>> swa_model = AveragedModel(model, multi_avg_fn=get_swa_multi_avg_fn())
    """

    @torch.no_grad()
    def swa_multi_update(
        averaged_param_list: TensorList,
        current_param_list: TensorList,
        num_averaged: Tensor | int,
    ) -> None:
        avg, cur = list(averaged_param_list), list(current_param_list)
        _write(avg, swa_update(avg, cur, num_averaged, lerp=True))

    return swa_multi_update


def get_ema_avg_fn(decay: float = 0.999) -> Callable[[Tensor, Tensor, Any], Tensor]:
    r"""``torch.optim.swa_utils.get_ema_avg_fn``: the EMA of one tensor.

    Returns ``fn(ema_param, current_param, num_averaged) -> decay * ema + (1 - decay) * p``
    (:func:`~optax_torch.transforms.averaging.ema_update` with ``lerp=False``, torch's form).

    Args:
      decay: :math:`\delta` in ``[0, 1]``, default ``0.999`` (``ValueError`` otherwise).

    Example::

        >>> ema_model = AveragedModel(model, avg_fn=get_ema_avg_fn(0.99))
    """
    _check_decay(decay)

    @torch.no_grad()
    def ema_fn(ema_param: Tensor, current_param: Tensor, num_averaged: Any = None) -> Tensor:
        del num_averaged
        return ema_update([ema_param], [current_param], decay, lerp=False)[0]

    return ema_fn


def get_swa_avg_fn() -> Callable[[Tensor, Tensor, Tensor | int], Tensor]:
    r"""``torch.optim.swa_utils.get_swa_avg_fn``: the equal-weight average of one tensor.

    Returns ``fn(averaged_param, current_param, num_averaged) -> avg + (p - avg) / (n + 1)``
    (:func:`~optax_torch.transforms.averaging.swa_update`).

    Example::

        >>> swa_model = AveragedModel(model, avg_fn=get_swa_avg_fn())
    """

    @torch.no_grad()
    def swa_fn(averaged_param: Tensor, current_param: Tensor, num_averaged: Tensor | int) -> Tensor:
        return swa_update([averaged_param], [current_param], num_averaged)[0]

    return swa_fn


class _NamedTensors:
    """Duck-typed ``Module`` stand-in over a mapping of named tensors, in ``like``'s order."""

    def __init__(self, tensors: Mapping[str, Tensor], like: Module) -> None:
        names = [n for n, _ in like.named_parameters()]
        missing = [n for n in names if n not in tensors]
        if missing:
            raise KeyError(f"AveragedModel.update_parameters: parameters missing: {missing}")
        self._params = [tensors[n] for n in names]
        # Buffers not given keep the averaged model's own values.
        self._buffers = [tensors.get(n, b) for n, b in like.named_buffers()]

    def parameters(self) -> list[Tensor]:
        return self._params

    def buffers(self) -> list[Tensor]:
        return self._buffers


class AveragedModel(_TorchAveragedModel):
    r"""``torch.optim.swa_utils.AveragedModel``: a copy of a model whose parameters are a
    running average (SWA by default, or EMA with ``multi_avg_fn=get_ema_multi_avg_fn(decay)``).

    A subclass of torch's class: same constructor ``(model, device=None, avg_fn=None,
    multi_avg_fn=None, use_buffers=False)``, same averaging (torch's default, equal weights,
    or the given function: this module's functions, torch's, or any other), same ``state_dict``
    (``module.*`` and ``n_averaged``), and ``isinstance`` of torch's. The averaging functions of
    this module are :mod:`optax_torch.transforms.averaging`'s math; for a pytree of parameters
    without a module, use :func:`~optax_torch.transforms.averaging.params_swa` /
    :func:`~optax_torch.transforms.averaging.params_ema` directly.

    Args:
      model: the model to average (deep-copied).
      device: where to keep the averaged copy, default ``None`` (the model's device).
      avg_fn: ``fn(avg, p, n) -> new avg`` for one tensor, default ``None``.
      multi_avg_fn: ``fn(avgs, ps, n)`` updating lists in place, default ``None`` (SWA).
      use_buffers: average the buffers too (else they are copied), default ``False``.

    Example::

        >>> ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.999), use_buffers=True)
        >>> for batch in loader:
        ...     train_step(model, batch)
        ...     ema.update_parameters(model)

    *Extension*: :meth:`update_parameters` also takes a mapping ``name -> tensor`` of the
    model's parameters (and, optionally, buffers), e.g. functional parameters used with
    ``torch.func.functional_call``.
    """

    def update_parameters(self, model: Module | Mapping[str, Tensor]) -> None:  # type: ignore[override]
        """Adds ``model`` (a module, or a mapping of named parameters and buffers in the
        averaged module's naming) to the average (the first call copies it)."""
        if isinstance(model, Mapping):
            model = _NamedTensors(model, self.module)  # type: ignore[assignment]
        super().update_parameters(model)  # type: ignore[arg-type]


@torch.no_grad()
def update_bn(
    loader: Iterable[Any],
    model: Module,
    device: int | torch.device | None = None,
    *,
    params: Mapping[str, Tensor] | None = None,
) -> None:
    r"""``torch.optim.swa_utils.update_bn``: recomputes the BatchNorm running statistics.

    Resets ``running_mean`` / ``running_var`` of every BatchNorm layer of ``model`` and makes one
    pass over ``loader`` in training mode with ``momentum=None`` (a cumulative average over the
    batches), then restores the layers' momenta and the model's mode, as torch does.

    Args:
      loader: batches: tensors, or lists/tuples whose first element is the input.
      model: the model (e.g. an :class:`AveragedModel`).
      device: where to move each batch, default ``None``.
      params: *extension*: a mapping ``name -> tensor`` of parameters to run the model with
        (``torch.func.functional_call``), e.g. the average of :func:`~optax_torch.transforms.
        averaging.params_swa`; the statistics are written into ``model``'s buffers. Default
        ``None``: the model's own parameters.

    Example::

        >>> update_bn(loader, swa_model)
        >>> update_bn(loader, model, params=dict(zip(names, swa_state.average)))
    """
    momenta: dict[torch.nn.modules.batchnorm._BatchNorm, float | None] = {}
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            momenta[module] = module.momentum
    if not momenta:
        return
    was_training = model.training
    model.train()
    for module in momenta:
        module.momentum = None
    try:
        for batch in loader:
            inputs = batch[0] if isinstance(batch, list | tuple) else batch
            if device is not None:
                inputs = inputs.to(device)
            if params is None:
                model(inputs)
            else:
                torch.func.functional_call(model, dict(params), (inputs,), strict=False)
    finally:
        for module, momentum in momenta.items():
            module.momentum = momentum
        model.train(was_training)


def _cosine_anneal(t: float) -> float:
    return (1 - math.cos(math.pi * t)) / 2


def _linear_anneal(t: float) -> float:
    return t


class SWALR(LRScheduler):
    r"""``torch.optim.swa_utils.SWALR``: anneals each group's learning rate to ``swa_lr`` over
    ``anneal_epochs`` steps, then holds it.

    At step :math:`t` with :math:`\alpha_t = a(\min(1, t / \max(1, E)))` (:math:`a(s) = s` for
    ``"linear"``, :math:`(1 - \cos \pi s) / 2` for ``"cos"``), the learning rate is
    :math:`\alpha_t\, \eta_{swa} + (1 - \alpha_t)\, \eta_0`, where :math:`\eta_0` is recovered
    from the current ``group["lr"]`` at each step (as torch does, so that it follows another
    scheduler that ran before): the same sequence as torch's SWALR on any optimizer (this
    library's :class:`~optax_torch.TorchOptimizer` and drop-ins included). Its pure form, as a
    function of the step, is :func:`optax_torch.schedules.swa_schedule`.

    Args:
      optimizer: the optimizer.
      swa_lr: the learning rate to anneal to, one for all groups or a list (one per group).
      anneal_epochs: number of annealing steps :math:`E` (an ``int >= 0``), default ``10``.
      anneal_strategy: ``"cos"`` (default) or ``"linear"``.
      last_epoch: index of the last epoch, default ``-1``.

    Example::

        >>> swa_scheduler = SWALR(optimizer, swa_lr=0.05, anneal_epochs=5)
        >>> for epoch in range(swa_start, epochs):
        ...     train_one_epoch(); swa_model.update_parameters(model); swa_scheduler.step()

    ``state_dict`` / ``load_state_dict`` are torch's (interchangeable with torch's SWALR).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        swa_lr: float | list[float] | tuple[float, ...],
        anneal_epochs: int = 10,
        anneal_strategy: Literal["cos", "linear"] = "cos",
        last_epoch: int = -1,
    ) -> None:
        if isinstance(swa_lr, list | tuple):
            if len(swa_lr) != len(optimizer.param_groups):
                raise ValueError(
                    "swa_lr must have the same length as optimizer.param_groups. "
                    f"swa_lr has {len(swa_lr)} values, param_groups has "
                    f"{len(optimizer.param_groups)}."
                )
            swa_lrs = list(swa_lr)
        else:
            swa_lrs = [swa_lr] * len(optimizer.param_groups)
        for lr, group in zip(swa_lrs, optimizer.param_groups):
            group["swa_lr"] = lr.clone() if isinstance(lr, Tensor) else lr
        if anneal_strategy not in ["cos", "linear"]:
            raise ValueError(
                f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}"
            )
        self._set_anneal_func(anneal_strategy)
        if not isinstance(anneal_epochs, int) or anneal_epochs < 0:
            raise ValueError(f"anneal_epochs must be equal or greater than 0, got {anneal_epochs}")
        self.anneal_epochs = anneal_epochs
        super().__init__(optimizer, last_epoch)

    @staticmethod
    def _get_initial_lr(lr: Any, swa_lr: Any, alpha: float) -> Any:
        if alpha == 1:
            return swa_lr
        return (lr - alpha * swa_lr) / (1 - alpha)

    def get_lr(self) -> list[Any]:  # type: ignore[override]
        """The learning rates of the step being taken (call through :meth:`step`)."""
        if not self._get_lr_called_within_step:
            warnings.warn(
                "To get the last learning rate computed by the scheduler, "
                "please use `get_last_lr()`.",
                UserWarning,
                stacklevel=2,
            )
        step = self._step_count - 1
        if self.anneal_epochs == 0:
            step = max(1, step)
        prev_t = max(0, min(1, (step - 1) / max(1, self.anneal_epochs)))
        prev_alpha = self.anneal_func(prev_t)
        prev_lrs = [
            self._get_initial_lr(group["lr"], group["swa_lr"], prev_alpha)
            for group in self.optimizer.param_groups
        ]
        t = max(0, min(1, step / max(1, self.anneal_epochs)))
        alpha = self.anneal_func(t)
        return [
            group["swa_lr"] * alpha + lr * (1 - alpha)
            for group, lr in zip(self.optimizer.param_groups, prev_lrs)
        ]

    def _set_anneal_func(self, anneal_strategy: str) -> None:
        self._anneal_strategy = anneal_strategy
        self.anneal_func = _cosine_anneal if anneal_strategy == "cos" else _linear_anneal

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state: its attributes but the optimizer and the anneal function."""
        return {
            key: value
            for key, value in self.__dict__.items()
            if key not in ("optimizer", "anneal_func")
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Loads a state made by :meth:`state_dict` (or by torch's SWALR)."""
        self.__dict__.update(state_dict)
        self._set_anneal_func(self._anneal_strategy)
