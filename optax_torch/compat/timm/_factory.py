"""timm's optimizer factory (``timm.optim._optim_factory``, timm 1.0.31), building optax_torch
drop-ins: :func:`create_optimizer_v2`, :func:`list_optimizers`, :func:`get_optimizer_class`,
:func:`get_optimizer_info`, :func:`optimizer_kwargs` and the registry behind them.

The registry holds timm's names (all but the ``bnb*`` bitsandbytes and ``fused*`` apex ones),
their aliases (``nesterov`` -> ``sgd``, ``nesterovw`` -> ``sgdw``), descriptions, flags and
default keyword arguments; each name maps to the drop-in of :mod:`optax_torch.compat.timm` or
:mod:`optax_torch.compat.torch_optim` for timm's class (imported on first use)::

    >>> opt = create_optimizer_v2(model, "lambc", lr=1e-3, weight_decay=0.05, layer_decay=0.7)
    >>> opt = create_optimizer_v2(model, "lookahead_adamw", lr=1e-3)  # wrapped in Lookahead

Param groups come from :mod:`optax_torch.compat.timm._param_groups` (timm's rules: no decay
for 1-d parameters, biases and ``model.no_weight_decay()``; with ``layer_decay`` a per-group
``lr_scale`` that timm's schedulers apply). Deviation: ``OptimInfo.opt_class`` is the dotted path
of the drop-in until :func:`get_optimizer_info` or :func:`get_optimizer_class` imports it.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from fnmatch import fnmatch
from functools import partial
from typing import Any

import torch
from torch import nn

from optax_torch.compat.timm._param_groups import (
    param_groups_layer_decay,
    param_groups_weight_decay,
)

__all__ = [
    "OptimInfo",
    "OptimizerRegistry",
    "create_optimizer",
    "create_optimizer_v2",
    "default_registry",
    "get_optimizer_class",
    "get_optimizer_info",
    "list_optimizers",
    "optimizer_kwargs",
]

_logger = logging.getLogger(__name__)

ParamsT = Iterable[torch.Tensor] | Iterable[dict[str, Any]]

_T = "optax_torch.compat.timm."
_O = "optax_torch.compat.torch_optim."


def _import_class(class_string: str) -> type:
    """Import ``module.Class`` from its dotted path (``ImportError`` if it is missing)."""
    try:
        module_name, class_name = class_string.rsplit(".", 1)
        module = importlib.import_module(module_name)
        return getattr(module, class_name)
    except (ImportError, AttributeError) as e:
        raise ImportError(f"Could not import {class_string}: {e}") from e


@dataclass(frozen=True)
class OptimInfo:
    """An optimizer's registry entry, as timm's: ``name``, ``opt_class`` (a class or the dotted
    path of one), ``description``, whether it takes ``eps`` / ``momentum`` / ``betas``
    (``num_betas`` of them), ``second_order`` (needs ``loss.backward(create_graph=True)``) and
    the ``defaults`` the factory passes unless overridden."""

    name: str
    opt_class: str | type
    description: str = ""
    has_eps: bool = True
    has_momentum: bool = False
    has_betas: bool = False
    num_betas: int = 2
    second_order: bool = False
    defaults: dict[str, Any] | None = None


class OptimizerRegistry:
    """Optimizer names -> :class:`OptimInfo`, and the factory that builds them (timm's)."""

    def __init__(self) -> None:
        self._optimizers: dict[str, OptimInfo] = {}
        self._foreach_defaults: set[str] = {"lion"}

    def register(self, info: OptimInfo) -> None:
        """Register ``info`` under ``info.name.lower()`` (overwriting, with a warning)."""
        name = info.name.lower()
        if name in self._optimizers:
            _logger.warning(f"Optimizer {name} already registered, overwriting")
        self._optimizers[name] = info

    def register_alias(self, alias: str, target: str) -> None:
        """Register ``alias`` for the existing ``target`` (``KeyError`` if there is none)."""
        target = target.lower()
        if target not in self._optimizers:
            raise KeyError(f"Cannot create alias for non-existent optimizer {target}")
        self._optimizers[alias.lower()] = self._optimizers[target]

    def register_foreach_default(self, name: str) -> None:
        """Register an optimizer as defaulting to ``foreach=True``."""
        self._foreach_defaults.add(name.lower())

    def list_optimizers(
        self,
        filter: str | list[str] = "",
        exclude_filters: list[str] | None = None,
        with_description: bool = False,
    ) -> list[str] | list[tuple[str, str]]:
        """Sorted names matching any wildcard of ``filter`` and none of ``exclude_filters``;
        ``(name, description)`` pairs with ``with_description``."""
        names = sorted(self._optimizers.keys())
        if filter:
            filters = [filter] if isinstance(filter, str) else filter
            filtered_names: set[str] = set()
            for f in filters:
                filtered_names.update(n for n in names if fnmatch(n, f))
            names = sorted(filtered_names)
        if exclude_filters:
            for exclude_filter in exclude_filters:
                names = [n for n in names if not fnmatch(n, exclude_filter)]
        if with_description:
            return [(name, self._optimizers[name].description) for name in names]
        return names

    def get_optimizer_info(self, name: str) -> OptimInfo:
        """The :class:`OptimInfo` of ``name`` (``ValueError`` if unknown), its ``opt_class``
        imported where the drop-in exists (left as its dotted path otherwise)."""
        name = name.lower()
        if name not in self._optimizers:
            raise ValueError(f"Optimizer {name} not found in registry")
        info = self._optimizers[name]
        if isinstance(info.opt_class, str):
            try:
                return dataclasses.replace(info, opt_class=_import_class(info.opt_class))
            except ImportError:
                return info
        return info

    def get_optimizer_class(
        self,
        name_or_info: str | OptimInfo,
        bind_defaults: bool = True,
    ) -> Any:
        """The optimizer class of a name or :class:`OptimInfo`; with ``bind_defaults``, a
        ``functools.partial`` binding its registry defaults."""
        if isinstance(name_or_info, str):
            opt_info = self.get_optimizer_info(name_or_info)
        else:
            assert isinstance(name_or_info, OptimInfo)
            opt_info = name_or_info
        if isinstance(opt_info.opt_class, str):
            opt_class: Any = _import_class(opt_info.opt_class)
        else:
            opt_class = opt_info.opt_class
        if bind_defaults and opt_info.defaults:
            opt_class = partial(opt_class, **opt_info.defaults)
        return opt_class

    def create_optimizer(
        self,
        model_or_params: nn.Module | ParamsT,
        opt: str,
        lr: float | None = None,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        foreach: bool | None = None,
        weight_decay_exclude_1d: bool = True,
        fallback_list: Collection[str] = (),
        fallback_no_weight_decay: bool = False,
        layer_decay: float | None = None,
        layer_decay_min_scale: float = 0.0,
        layer_decay_no_opt_scale: float | None = None,
        param_group_fn: Callable[[nn.Module], ParamsT] | None = None,
        **kwargs: Any,
    ) -> torch.optim.Optimizer:
        """Create optimizer ``opt`` (``lookahead_<name>`` wraps it in ``Lookahead``), with
        timm's param groups when given a model; see :func:`create_optimizer_v2`."""
        if isinstance(model_or_params, nn.Module):
            no_weight_decay = getattr(model_or_params, "no_weight_decay", lambda: set())()
            if param_group_fn:
                params: Any = param_group_fn(model_or_params)
            elif layer_decay is not None:
                params = param_groups_layer_decay(
                    model_or_params,
                    weight_decay=weight_decay,
                    layer_decay=layer_decay,
                    no_weight_decay_list=no_weight_decay,
                    fallback_list=fallback_list,
                    fallback_no_weight_decay=fallback_no_weight_decay,
                    weight_decay_exclude_1d=weight_decay_exclude_1d,
                    min_scale=layer_decay_min_scale,
                    no_opt_scale=layer_decay_no_opt_scale,
                )
                weight_decay = 0.0
            else:
                params = param_groups_weight_decay(
                    model_or_params,
                    weight_decay=weight_decay,
                    weight_decay_exclude_1d=weight_decay_exclude_1d,
                    no_weight_decay_list=no_weight_decay,
                    fallback_list=fallback_list,
                    fallback_no_weight_decay=fallback_no_weight_decay,
                )
                weight_decay = 0.0
        else:
            params = model_or_params

        opt_split = opt.lower().split("_")
        opt_name = opt_split[-1]
        use_lookahead = opt_split[0] == "lookahead" if len(opt_split) > 1 else False
        opt_info = self.get_optimizer_info(opt_name)

        opt_args: dict[str, Any] = {"weight_decay": weight_decay, **kwargs}
        if lr is not None:
            opt_args["lr"] = lr
        if opt_info.defaults:
            for k, v in opt_info.defaults.items():
                opt_args.setdefault(k, v)
        # timm has always defaulted momentum to 0.9 where the optimizer takes one.
        if opt_info.has_momentum:
            opt_args.setdefault("momentum", momentum)
        if not opt_info.has_eps:
            opt_args.pop("eps", None)
        if not opt_info.has_betas:
            opt_args.pop("betas", None)
        if foreach is not None:
            opt_args.setdefault("foreach", foreach)

        opt_class = self.get_optimizer_class(opt_info, bind_defaults=False)
        optimizer = opt_class(params, **opt_args)
        if use_lookahead:
            optimizer = _import_class(_T + "Lookahead")(optimizer)
        return optimizer


# timm's registry, in its registration order (bnb* and fused* left out).
_OPTIMIZERS = [
    OptimInfo(
        "sgd",
        _O + "SGD",
        "torch.Optim Stochastic Gradient Descent (SGD) with Nesterov momentum",
        has_eps=False,
        has_momentum=True,
        defaults={"nesterov": True},
    ),
    OptimInfo(
        "momentum",
        _O + "SGD",
        "torch.Optim Stochastic Gradient Descent (SGD) with classical momentum",
        has_eps=False,
        has_momentum=True,
        defaults={"nesterov": False},
    ),
    OptimInfo(
        "sgdp",
        _T + "SGDP",
        "SGD with built-in projection to unit norm sphere",
        has_momentum=True,
        defaults={"nesterov": True},
    ),
    OptimInfo(
        "sgdw",
        _T + "SGDW",
        "SGD with decoupled weight decay and Nesterov momentum",
        has_eps=False,
        has_momentum=True,
        defaults={"nesterov": True},
    ),
    OptimInfo("adam", _O + "Adam", "torch.optim.Adam, Adaptive Moment Estimation", has_betas=True),
    OptimInfo(
        "adamw", _O + "AdamW", "torch.optim.AdamW, Adam with decoupled weight decay", has_betas=True
    ),
    OptimInfo(
        "adamwlegacy",
        _T + "AdamWLegacy",
        "legacy impl of AdamW that pre-dates inclusion to torch.optim",
        has_betas=True,
    ),
    OptimInfo(
        "adamp",
        _T + "AdamP",
        "Adam with built-in projection to unit norm sphere",
        has_betas=True,
        defaults={"wd_ratio": 0.01, "nesterov": True},
    ),
    OptimInfo(
        "nadam", _O + "NAdam", "torch.optim.NAdam, Adam with Nesterov momentum", has_betas=True
    ),
    OptimInfo(
        "nadamlegacy",
        _T + "NAdamLegacy",
        "legacy impl of NAdam that pre-dates inclusion in torch.optim",
        has_betas=True,
    ),
    OptimInfo(
        "nadamw",
        _T + "NAdamW",
        "Adam with Nesterov momentum and decoupled weight decay, "
        "mlcommons/algorithmic-efficiency impl",
        has_betas=True,
    ),
    OptimInfo(
        "radam",
        _O + "RAdam",
        "torch.optim.RAdam, Rectified Adam with variance adaptation",
        has_betas=True,
    ),
    OptimInfo(
        "radamlegacy",
        _T + "RAdamLegacy",
        "legacy impl of RAdam that predates inclusion in torch.optim",
        has_betas=True,
    ),
    OptimInfo(
        "radamw",
        _O + "RAdam",
        "torch.optim.RAdamW, Rectified Adam with variance adaptation and decoupled weight decay",
        has_betas=True,
        defaults={"decoupled_weight_decay": True},
    ),
    OptimInfo(
        "adamax",
        _O + "Adamax",
        "torch.optim.Adamax, Adam with infinity norm for more stable updates",
        has_betas=True,
    ),
    OptimInfo(
        "adafactor",
        _T + "Adafactor",
        "Memory-efficient implementation of Adam with factored gradients",
        has_betas=True,
    ),
    OptimInfo(
        "adafactorbv",
        _T + "AdafactorBigVision",
        "Big Vision variant of Adafactor with factored gradients, half precision momentum",
        has_momentum=True,
    ),
    OptimInfo(
        "adopt",
        _T + "Adopt",
        "Modified Adam that can converge with any β2 with the optimal rate",
        has_betas=True,
    ),
    OptimInfo(
        "adoptw",
        _T + "Adopt",
        "Modified AdamW (decoupled decay) that can converge with any β2 with the optimal rate",
        has_betas=True,
        defaults={"decoupled": True},
    ),
    OptimInfo(
        "lamb", _T + "Lamb", "Layer-wise Adaptive Moments for batch optimization", has_betas=True
    ),
    OptimInfo(
        "lambc",
        _T + "Lamb",
        "LAMB with trust ratio clipping for stability",
        has_betas=True,
        defaults={"trust_clip": True},
    ),
    OptimInfo(
        "lambw",
        _T + "Lamb",
        "LAMB with decoupled weight decay",
        has_betas=True,
        defaults={"decoupled_decay": True},
    ),
    OptimInfo(
        "lambcw",
        _T + "Lamb",
        "LAMB with trust ratio clipping for stability and decoupled decay",
        has_betas=True,
        defaults={"trust_clip": True, "decoupled_decay": True},
    ),
    OptimInfo("lars", _T + "Lars", "Layer-wise Adaptive Rate Scaling", has_momentum=True),
    OptimInfo(
        "larc",
        _T + "Lars",
        "LARS with trust ratio clipping for stability",
        has_momentum=True,
        defaults={"trust_clip": True},
    ),
    OptimInfo(
        "nlars",
        _T + "Lars",
        "LARS with Nesterov momentum",
        has_momentum=True,
        defaults={"nesterov": True},
    ),
    OptimInfo(
        "nlarc",
        _T + "Lars",
        "LARS with Nesterov momentum & trust ratio clipping",
        has_momentum=True,
        defaults={"nesterov": True, "trust_clip": True},
    ),
    OptimInfo(
        "adabelief",
        _T + "AdaBelief",
        "Adapts learning rate based on gradient prediction error",
        has_betas=True,
        defaults={"rectify": False},
    ),
    OptimInfo(
        "radabelief",
        _T + "AdaBelief",
        "Rectified AdaBelief with variance adaptation",
        has_betas=True,
        defaults={"rectify": True},
    ),
    OptimInfo(
        "adadelta",
        _O + "Adadelta",
        "torch.optim.Adadelta, Adapts learning rates based on running windows of gradients",
    ),
    OptimInfo(
        "adagrad",
        _O + "Adagrad",
        "torch.optim.Adagrad, Adapts learning rates using cumulative squared gradients",
        defaults={"eps": 1e-08},
    ),
    OptimInfo(
        "adan",
        _T + "Adan",
        "Adaptive Nesterov Momentum Algorithm",
        has_betas=True,
        num_betas=3,
        defaults={"no_prox": False},
    ),
    OptimInfo(
        "adanw",
        _T + "Adan",
        "Adaptive Nesterov Momentum with decoupled weight decay",
        has_betas=True,
        num_betas=3,
        defaults={"no_prox": True},
    ),
    OptimInfo(
        "adahessian",
        _T + "Adahessian",
        "An Adaptive Second Order Optimizer",
        has_betas=True,
        second_order=True,
    ),
    OptimInfo(
        "kron",
        _T + "Kron",
        "PSGD optimizer with Kronecker-factored preconditioner",
        has_eps=False,
        has_momentum=True,
    ),
    OptimInfo(
        "kronw",
        _T + "Kron",
        "PSGD optimizer with Kronecker-factored preconditioner and decoupled weight decay",
        has_eps=False,
        has_momentum=True,
        defaults={"decoupled_decay": True},
    ),
    OptimInfo(
        "laprop", _T + "LaProp", "Separating Momentum and Adaptivity in Adam", has_betas=True
    ),
    OptimInfo(
        "lion",
        _T + "Lion",
        "Evolved Sign Momentum optimizer for improved convergence",
        has_eps=False,
        has_betas=True,
    ),
    OptimInfo(
        "madgrad", _T + "MADGRAD", "Momentum-based Adaptive gradient method", has_momentum=True
    ),
    OptimInfo(
        "madgradw",
        _T + "MADGRAD",
        "MADGRAD with decoupled weight decay",
        has_momentum=True,
        defaults={"decoupled_decay": True},
    ),
    OptimInfo(
        "mars",
        _T + "Mars",
        "Unleashing the Power of Variance Reduction for Training Large Models",
        has_betas=True,
    ),
    OptimInfo(
        "muon",
        _T + "Muon",
        "MomentUm Orthogonalized by Newton-schulz with AdamW fallback for 1D params",
        has_momentum=True,
        has_betas=True,
    ),
    OptimInfo(
        "nmuon",
        _T + "Muon",
        "MomentUm Orthogonalized by Newton-schulz with Nesterov and NAdamW fallback for 1D params",
        has_momentum=True,
        has_betas=True,
        defaults={"nesterov": True},
    ),
    OptimInfo(
        "adamuon",
        _T + "Muon",
        "AdaMuon: Muon with adaptive second moment estimation on orthogonalized directions",
        has_momentum=True,
        has_betas=True,
        defaults={"algo": "adamuon"},
    ),
    OptimInfo(
        "nadamuon",
        _T + "Muon",
        "AdaMuon with Nesterov momentum and NAdamW fallback for 1D params",
        has_momentum=True,
        has_betas=True,
        defaults={"algo": "adamuon", "nesterov": True},
    ),
    OptimInfo(
        "novograd",
        _T + "NvNovoGrad",
        "Normalized Adam with L2 norm gradient normalization",
        has_betas=True,
    ),
    OptimInfo(
        "novogradw",
        _T + "NvNovoGrad",
        "NovoGrad with decoupled weight decay",
        has_betas=True,
        defaults={"decoupled_decay": True},
    ),
    OptimInfo(
        "rmsprop",
        _O + "RMSprop",
        "torch.optim.RMSprop, Root Mean Square Propagation",
        has_momentum=True,
        defaults={"alpha": 0.9},
    ),
    OptimInfo(
        "rmsproptf",
        _T + "RMSpropTF",
        "TensorFlow-style RMSprop implementation, Root Mean Square Propagation",
        has_momentum=True,
        defaults={"alpha": 0.9},
    ),
    OptimInfo(
        "rmsproptfw",
        _T + "RMSpropTF",
        "TensorFlow-style RMSprop with decoupled weight decay",
        has_momentum=True,
        defaults={"alpha": 0.9, "decoupled_decay": True},
    ),
    OptimInfo(
        "cadafactor",
        _T + "Adafactor",
        "Cautious Adafactor",
        has_betas=True,
        defaults={"caution": True, "betas": (0.9, 0.999)},
    ),
    OptimInfo(
        "cadafactorbv",
        _T + "AdafactorBigVision",
        "Cautious Big Vision Adafactor",
        has_momentum=True,
        defaults={"caution": True},
    ),
    OptimInfo(
        "cadamw", _T + "AdamWLegacy", "Cautious AdamW", has_betas=True, defaults={"caution": True}
    ),
    OptimInfo("cadopt", _T + "Adopt", "Cautious Adopt", has_betas=True, defaults={"caution": True}),
    OptimInfo(
        "cadan",
        _T + "Adan",
        "Cautious Adaptive Nesterov Momentum Algorithm",
        has_betas=True,
        num_betas=3,
        defaults={"caution": True, "no_prox": False},
    ),
    OptimInfo(
        "cadanw",
        _T + "Adan",
        "Cautious Adaptive Nesterov Momentum with decoupled weight decay",
        has_betas=True,
        num_betas=3,
        defaults={"caution": True, "no_prox": True},
    ),
    OptimInfo(
        "cadoptw",
        _T + "Adopt",
        "Cautious AdoptW (decoupled decay)",
        has_betas=True,
        defaults={"decoupled": True, "caution": True},
    ),
    OptimInfo("clamb", _T + "Lamb", "Cautious LAMB", has_betas=True, defaults={"caution": True}),
    OptimInfo(
        "clambw",
        _T + "Lamb",
        "Cautious LAMB with decoupled weight decay",
        has_betas=True,
        defaults={"caution": True, "decoupled_decay": True},
    ),
    OptimInfo(
        "claprop", _T + "LaProp", "Cautious LaProp", has_betas=True, defaults={"caution": True}
    ),
    OptimInfo(
        "clion",
        _T + "Lion",
        "Cautious Lion",
        has_eps=False,
        has_betas=True,
        defaults={"caution": True},
    ),
    OptimInfo("cmars", _T + "Mars", "Cautious MARS", has_betas=True, defaults={"caution": True}),
    OptimInfo(
        "cnadamw", _T + "NAdamW", "Cautious NAdamW", has_betas=True, defaults={"caution": True}
    ),
    OptimInfo(
        "crmsproptf",
        _T + "RMSpropTF",
        "Cautious TensorFlow-style RMSprop",
        has_momentum=True,
        defaults={"alpha": 0.9, "caution": True},
    ),
    OptimInfo(
        "csgdw",
        _T + "SGDW",
        "Cautious SGD with decoupled weight decay and Nesterov momentum",
        has_eps=False,
        has_momentum=True,
        defaults={"nesterov": True, "caution": True},
    ),
    OptimInfo(
        "cadamp",
        _T + "AdamP",
        "Add the spherical cautious optimizer and the standard cautious optimizer to AdamP",
        has_betas=True,
        defaults={"wd_ratio": 0.01, "nesterov": True, "caution": True},
    ),
    OptimInfo(
        "csgdp",
        _T + "SGDP",
        "Add the spherical cautious optimizer and the standard cautious optimizer to SGDP",
        has_momentum=True,
        defaults={"nesterov": True, "caution": True},
    ),
    OptimInfo(
        "adamc",
        _T + "AdamWLegacy",
        "AdamW with corrected weight decay (lr²/max_lr scaling)",
        has_betas=True,
        defaults={"corrected_weight_decay": True},
    ),
    OptimInfo(
        "nadamc",
        _T + "NAdamW",
        "NAdamW with corrected weight decay (lr²/max_lr scaling)",
        has_betas=True,
        defaults={"corrected_weight_decay": True},
    ),
    OptimInfo(
        "sgdc",
        _T + "SGDW",
        "SGD with corrected decoupled weight decay (lr²/max_lr scaling)",
        has_eps=False,
        has_momentum=True,
        defaults={"nesterov": True, "corrected_weight_decay": True},
    ),
    OptimInfo(
        "adoptc",
        _T + "Adopt",
        "Adopt with corrected decoupled weight decay (lr²/max_lr scaling)",
        has_betas=True,
        defaults={"decoupled": True, "corrected_weight_decay": True},
    ),
    OptimInfo(
        "lambcd",
        _T + "Lamb",
        "LAMB with corrected decoupled weight decay (lr²/max_lr scaling)",
        has_betas=True,
        defaults={"decoupled_decay": True, "corrected_weight_decay": True},
    ),
    OptimInfo(
        "kronc",
        _T + "Kron",
        "PSGD Kron with corrected decoupled weight decay (lr²/max_lr scaling)",
        has_eps=False,
        has_momentum=True,
        defaults={"decoupled_decay": True, "corrected_weight_decay": True},
    ),
    OptimInfo(
        "lionc",
        _T + "Lion",
        "Lion with corrected weight decay (lr²/max_lr scaling)",
        has_eps=False,
        has_betas=True,
        defaults={"corrected_weight_decay": True},
    ),
    OptimInfo(
        "lapropc",
        _T + "LaProp",
        "LaProp with corrected weight decay (lr²/max_lr scaling)",
        has_betas=True,
        defaults={"corrected_weight_decay": True},
    ),
    OptimInfo(
        "rmsproptfc",
        _T + "RMSpropTF",
        "RMSprop TF-style with corrected decoupled weight decay (lr²/max_lr scaling)",
        has_momentum=True,
        defaults={"alpha": 0.9, "decoupled_decay": True, "corrected_weight_decay": True},
    ),
    OptimInfo(
        "novogradc",
        _T + "NvNovoGrad",
        "NovoGrad with corrected decoupled weight decay (lr²/max_lr scaling)",
        has_betas=True,
        defaults={"decoupled_decay": True, "corrected_weight_decay": True},
    ),
    OptimInfo(
        "adafactorbvc",
        _T + "AdafactorBigVision",
        "Adafactor Big Vision with corrected weight decay (lr²/max_lr or lr/max_lr scaling)",
        has_momentum=True,
        defaults={"corrected_weight_decay": True},
    ),
    OptimInfo(
        "cadamc",
        _T + "AdamWLegacy",
        "Cautious AdamW with corrected weight decay (lr²/max_lr scaling)",
        has_betas=True,
        defaults={"caution": True, "corrected_weight_decay": True},
    ),
    OptimInfo(
        "cadoptc",
        _T + "Adopt",
        "Cautious Adopt with corrected decoupled weight decay (lr²/max_lr scaling)",
        has_betas=True,
        defaults={"decoupled": True, "caution": True, "corrected_weight_decay": True},
    ),
    OptimInfo(
        "cnadamc",
        _T + "NAdamW",
        "Cautious NAdamW with corrected weight decay (lr²/max_lr scaling)",
        has_betas=True,
        defaults={"caution": True, "corrected_weight_decay": True},
    ),
    OptimInfo(
        "csgdc",
        _T + "SGDW",
        "Cautious SGD with corrected decoupled weight decay (lr²/max_lr scaling)",
        has_eps=False,
        has_momentum=True,
        defaults={"nesterov": True, "caution": True, "corrected_weight_decay": True},
    ),
    OptimInfo(
        "clionc",
        _T + "Lion",
        "Cautious Lion with corrected weight decay (lr²/max_lr scaling)",
        has_eps=False,
        has_betas=True,
        defaults={"caution": True, "corrected_weight_decay": True},
    ),
    OptimInfo(
        "cadafactorbvc",
        _T + "AdafactorBigVision",
        "Cautious Adafactor Big Vision with corrected weight decay",
        has_momentum=True,
        defaults={"caution": True, "corrected_weight_decay": True},
    ),
]

default_registry = OptimizerRegistry()
for _info in _OPTIMIZERS:
    default_registry.register(_info)
default_registry.register_alias("nesterov", "sgd")
default_registry.register_alias("nesterovw", "sgdw")


def list_optimizers(
    filter: str | list[str] = "",
    exclude_filters: list[str] | None = None,
    with_description: bool = False,
) -> list[str] | list[tuple[str, str]]:
    """Sorted registry names, as ``timm.optim.list_optimizers``.

    Args:
        filter: a wildcard (``"adam*"``) or a list of them; ``""`` keeps all.
        exclude_filters: wildcards to drop (default ``None``).
        with_description: return ``(name, description)`` pairs (default ``False``).

    Example::

        >>> list_optimizers(["la*", "nla*"])
        ['lamb', 'lambc', 'lambcd', 'lambcw', 'lambw', 'laprop', 'lapropc', 'larc', 'lars', 'nlarc',
         'nlars']
    """
    return default_registry.list_optimizers(filter, exclude_filters, with_description)


def get_optimizer_info(name: str) -> OptimInfo:
    """The :class:`OptimInfo` of ``name`` (``ValueError`` if it is not registered)."""
    return default_registry.get_optimizer_info(name)


def get_optimizer_class(name: str, bind_defaults: bool = True) -> Any:
    """The drop-in class of ``name``; with ``bind_defaults`` (default) a ``functools.partial``
    binding its registry defaults (``get_optimizer_class("sgd")`` has ``nesterov=True``)."""
    return default_registry.get_optimizer_class(name, bind_defaults=bind_defaults)


def create_optimizer_v2(
    model_or_params: nn.Module | ParamsT,
    opt: str = "sgd",
    lr: float | None = None,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    foreach: bool | None = None,
    filter_bias_and_bn: bool = True,
    fallback_list: Collection[str] = (),
    fallback_no_weight_decay: bool = False,
    layer_decay: float | None = None,
    layer_decay_min_scale: float = 0.0,
    layer_decay_no_opt_scale: float | None = None,
    param_group_fn: Callable[[nn.Module], ParamsT] | None = None,
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """Create a drop-in optimizer from timm's registry, as ``timm.optim.create_optimizer_v2``.

    Given a model, param groups come from ``param_group_fn(model)`` if given, else
    :func:`param_groups_layer_decay` if ``layer_decay`` is set, else
    :func:`param_groups_weight_decay` (``filter_bias_and_bn``: no decay for 1-d params and
    biases; names in ``model.no_weight_decay()`` never decayed), and ``weight_decay`` then lives
    in the groups. Given parameters or groups, they are passed through.

    Args:
        model_or_params: a model, or parameters / param groups.
        opt: a registry name, optionally ``lookahead_<name>`` (default ``"sgd"``: Nesterov SGD).
        lr: learning rate (``None``: the optimizer's default).
        weight_decay: weight decay (default 0).
        momentum: for optimizers that take one (default 0.9).
        foreach: passed on when not ``None``.
        filter_bias_and_bn: exclude 1-d params and biases from weight decay (default ``True``).
        fallback_list, fallback_no_weight_decay: names for the fallback optimizer of hybrid
            optimizers (groups with ``use_fallback=True``).
        layer_decay: layer-wise lr decay factor (default ``None``: off).
        layer_decay_min_scale: lower clamp of the layer scale (default 0).
        layer_decay_no_opt_scale: freeze parameters whose layer scale is below this.
        param_group_fn: custom ``model -> param groups``.
        **kwargs: the optimizer's other arguments (``eps`` / ``betas`` dropped where the
            optimizer has none).

    Example::

        >>> opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05)
    """
    return default_registry.create_optimizer(
        model_or_params,
        opt=opt,
        lr=lr,
        weight_decay=weight_decay,
        momentum=momentum,
        foreach=foreach,
        weight_decay_exclude_1d=filter_bias_and_bn,
        fallback_list=fallback_list,
        fallback_no_weight_decay=fallback_no_weight_decay,
        layer_decay=layer_decay,
        layer_decay_min_scale=layer_decay_min_scale,
        layer_decay_no_opt_scale=layer_decay_no_opt_scale,
        param_group_fn=param_group_fn,
        **kwargs,
    )


def optimizer_kwargs(cfg: Any) -> dict[str, Any]:
    """Keyword arguments of :func:`create_optimizer_v2` from an argparse-style ``cfg`` (timm's
    ``opt``, ``lr``, ``weight_decay``, ``momentum``, ``opt_eps``, ``opt_betas``, ``layer_decay*``,
    ``opt_args``, ``opt_foreach``)."""
    kwargs = {
        "opt": cfg.opt,
        "lr": cfg.lr,
        "weight_decay": cfg.weight_decay,
        "momentum": cfg.momentum,
    }
    if (eps := getattr(cfg, "opt_eps", None)) is not None:
        kwargs["eps"] = eps
    if (betas := getattr(cfg, "opt_betas", None)) is not None:
        kwargs["betas"] = betas
    if (layer_decay := getattr(cfg, "layer_decay", None)) is not None:
        kwargs["layer_decay"] = layer_decay
    if (ld_min := getattr(cfg, "layer_decay_min_scale", None)) is not None:
        kwargs["layer_decay_min_scale"] = ld_min
    if (ld_no_opt := getattr(cfg, "layer_decay_no_opt_scale", None)) is not None:
        kwargs["layer_decay_no_opt_scale"] = ld_no_opt
    if (opt_args := getattr(cfg, "opt_args", None)) is not None:
        kwargs.update(opt_args)
    if (foreach := getattr(cfg, "opt_foreach", None)) is not None:
        kwargs["foreach"] = foreach
    return kwargs


def create_optimizer(
    args: Any, model: nn.Module | ParamsT, filter_bias_and_bn: bool = True
) -> torch.optim.Optimizer:
    """timm's legacy factory: ``create_optimizer_v2(model, **optimizer_kwargs(args), ...)``."""
    return create_optimizer_v2(
        model, **optimizer_kwargs(cfg=args), filter_bias_and_bn=filter_bias_and_bn
    )
