"""Drop-in replacements for timm's optimizers (``timm.optim``, timm 1.0) and its factory.

Each class has timm's signature, defaults, param-group keys and per-parameter state names and
runs a chain of optax_torch transformations through :class:`optax_torch.TorchOptimizer`;
``create_optimizer_v2`` accepts the names of timm's registry and returns these optimizers::

    >>> from optax_torch.compat.timm import create_optimizer_v2
    >>> opt = create_optimizer_v2(model, "lamb", lr=1e-3, weight_decay=0.05, layer_decay=0.65)

timm itself is not needed to use this module (only to test it against).
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module of this package (imported on first access).
_LAZY = {
    "AdaBelief": "adabelief",
    "AdamP": "adamp",
    "SGDP": "adamp",
    "Adan": "adan",
    "Adopt": "adopt",
    "LaProp": "laprop",
    "Lamb": "lamb",
    "Lars": "lars",
    "Lion": "lion",
    "MADGRAD": "madgrad",
    "Mars": "mars",
    "Adafactor": "adafactor",
    "AdafactorBigVision": "adafactor_bv",
    "NvNovoGrad": "nvnovograd",
    "Adahessian": "adahessian",
    "AdamW": "adamw",
    "AdamWLegacy": "adamw",
    "NAdamLegacy": "nadamw",
    "NAdamW": "nadamw",
    "RAdamLegacy": "radam",
    "SGDW": "sgdw",
    "RMSpropTF": "rmsprop_tf",
    "Lookahead": "lookahead",
    "Muon": "muon",
    "AdaMuon": "muon",
    "create_optimizer_v2": "_factory",
    "list_optimizers": "_factory",
    "get_optimizer_class": "_factory",
    "get_optimizer_info": "_factory",
    "optimizer_kwargs": "_factory",
    "param_groups_weight_decay": "_param_groups",
    "param_groups_layer_decay": "_param_groups",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
