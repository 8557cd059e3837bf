"""Classy Vision's ``SGD`` optimizer (``classy_vision.optim.sgd``), with LARC, on optax_torch."""

from __future__ import annotations

from typing import Any, ClassVar

from optax_torch.base import GradientTransformation
from optax_torch.combine import chain
from optax_torch.compat.classy.optim._registry import check, register_optimizer
from optax_torch.compat.classy.optim.classy_optimizer import ClassyOptimizer
from optax_torch.compat.torch_optim import SGD as _TorchSGD
from optax_torch.compat.torch_optim._common import TorchOptimDropIn
from optax_torch.compat.torch_optim.sgd import _sgd_tx
from optax_torch.transforms.larc import scale_by_larc

__all__ = ["LARCSGD", "SGD"]


class _LarcSGDTx:
    """The per-group factory of :class:`LARCSGD` (torch SGD's group keys; LARC's settings bound,
    as apex's wrapper keeps them outside the param groups). A class, so that it pickles."""

    def __init__(self, trust_coefficient: float, clip: bool, eps: float) -> None:
        self.larc = (trust_coefficient, clip, eps)

    def __call__(
        self,
        lr,
        momentum,
        dampening,
        weight_decay,
        nesterov,
        maximize,
        foreach=None,
        differentiable=False,
        fused=None,
    ) -> GradientTransformation:
        trust_coefficient, clip, eps = self.larc
        return chain(
            scale_by_larc(lr, trust_coefficient, clip, eps, weight_decay),
            _sgd_tx(lr, momentum, dampening, 0, nesterov, maximize, foreach, differentiable, fused),
        )


class LARCSGD(_TorchSGD):
    r"""``torch.optim.SGD`` wrapped in NVIDIA apex's ``LARC`` (``apex.parallel.LARC``), on
    optax_torch: the chain :func:`~optax_torch.transforms.larc.scale_by_larc` ``(lr,
    trust_coefficient, clip, eps, weight_decay)`` → torch SGD's chain without its weight decay
    (LARC folds it into the gradient, where the norms are non-zero).

    Same param groups, state and state dicts as ``LARC(torch.optim.SGD(...))``.

    Args:
      params, lr, momentum, dampening, weight_decay, nesterov, maximize: as
        :class:`optax_torch.compat.torch_optim.SGD`.
      trust_coefficient: LARC's :math:`c`, default ``0.02``.
      clip: clip mode (``True``) or scale mode, default ``True``.
      eps: LARC's denominator term, default ``1e-8``.

    Example::

        >>> opt = LARCSGD(model.parameters(), lr=0.1, momentum=0.9, trust_coefficient=0.02)
    """

    _state_key_map: ClassVar[dict[str, str]] = {
        "1.2.trace": "momentum_buffer",
        "1.2.started": "momentum_started",
    }

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        trust_coefficient: float = 0.02,
        clip: bool = True,
        eps: float = 1e-8,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        # torch SGD's group keys; the LARC settings are bound in the factory.
        TorchOptimDropIn.__init__(
            self,
            params,
            _LarcSGDTx(trust_coefficient, clip, eps),
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            foreach=None,
            differentiable=False,
            fused=None,
        )


@register_optimizer("sgd")
class SGD(ClassyOptimizer):
    """Classy Vision's ``SGD``: :class:`optax_torch.compat.torch_optim.SGD` with scheduled param
    groups (see :class:`ClassyOptimizer`), or :class:`LARCSGD` with ``use_larc``.

    Args:
      larc_config: LARC's ``trust_coefficient``, ``clip`` and ``eps`` (used with ``use_larc``;
        ``from_config`` defaults it to ``{"clip": True, "eps": 1e-8, "trust_coefficient":
        0.02}``).
      lr: learning rate, default ``0.1``.
      momentum: momentum factor, default ``0.0``.
      weight_decay: L2 penalty, default ``0.0``.
      nesterov: Nesterov momentum, default ``False``.
      use_larc: wrap the optimizer in LARC (no apex needed), default ``False``.

    Example::

        >>> opt = SGD(lr=0.1, momentum=0.9, use_larc=True, larc_config={"clip": False})
        >>> opt.set_param_groups(model.parameters())
    """

    def __init__(
        self,
        larc_config: dict[str, Any] | None = None,
        lr: float = 0.1,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        use_larc: bool = False,
    ) -> None:
        super().__init__()
        self._lr = lr
        self._momentum = momentum
        self._weight_decay = weight_decay
        self._nesterov = nesterov
        self._use_larc = use_larc
        self._larc_config = larc_config

    def prepare(self, param_groups: Any) -> None:
        kwargs: dict[str, Any] = dict(
            lr=self._lr,
            nesterov=self._nesterov,
            momentum=self._momentum,
            weight_decay=self._weight_decay,
        )
        if self._use_larc:
            self.optimizer = LARCSGD(param_groups, **kwargs, **(self._larc_config or {}))
        else:
            self.optimizer = _TorchSGD(param_groups, **kwargs)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SGD:
        """Instantiates an ``SGD`` from a configuration (defaults filled into ``config``)."""
        config.setdefault("lr", 0.1)
        config.setdefault("momentum", 0.0)
        config.setdefault("weight_decay", 0.0)
        config.setdefault("nesterov", False)
        config.setdefault("use_larc", False)
        config.setdefault("larc_config", {"clip": True, "eps": 1e-08, "trust_coefficient": 0.02})
        check(
            config["momentum"] >= 0.0
            and config["momentum"] < 1.0
            and type(config["momentum"]) is float,
            "Config must contain a 'momentum' in [0, 1) for SGD optimizer",
        )
        check(
            isinstance(config["nesterov"], bool),
            "Config must contain a boolean 'nesterov' param for SGD optimizer",
        )
        check(
            isinstance(config["use_larc"], bool),
            "Config must contain a boolean 'use_larc' param for SGD optimizer",
        )
        return cls(
            larc_config=config["larc_config"],
            lr=config["lr"],
            momentum=config["momentum"],
            weight_decay=config["weight_decay"],
            nesterov=config["nesterov"],
            use_larc=config["use_larc"],
        )
