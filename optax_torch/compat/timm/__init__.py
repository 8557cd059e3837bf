"""Drop-in replacements for timm's optimizers (``timm.optim``, timm 1.0) and its factory.

Each class has timm's signature, defaults, param-group keys and per-parameter state names and
runs a chain of optax_torch transformations through :class:`optax_torch.TorchOptimizer`;
``create_optimizer_v2`` accepts the names of timm's registry and returns these optimizers::

    >>> from optax_torch.compat.timm import create_optimizer_v2
    >>> opt = create_optimizer_v2(model, "lamb", lr=1e-3, weight_decay=0.05, layer_decay=0.65)

Classes: ``AdaBelief``, ``Adafactor``, ``AdafactorBigVision``, ``Adahessian``, ``AdamP``,
``AdamW`` (torch's, as in timm), ``AdamWLegacy``, ``Adan``, ``Adopt``, ``Kron`` (PSGD),
``LaProp``, ``Lamb``, ``Lars``, ``Lion``, ``Lookahead`` (a wrapper of any optimizer),
``MADGRAD``, ``Mars``, ``Muon``, ``AdaMuon``, ``NAdamLegacy``, ``NAdamW``, ``NvNovoGrad``,
``RAdamLegacy``, ``RMSpropTF``, ``SGDP``, ``SGDW``. timm itself is not needed to use this
module (only to test it against).
"""

from __future__ import annotations

from optax_torch.compat.timm._factory import (
    create_optimizer,
    create_optimizer_v2,
    get_optimizer_class,
    get_optimizer_info,
    list_optimizers,
    optimizer_kwargs,
)
from optax_torch.compat.timm._param_groups import (
    param_groups_layer_decay,
    param_groups_weight_decay,
)
from optax_torch.compat.timm.adabelief import AdaBelief
from optax_torch.compat.timm.adafactor import Adafactor
from optax_torch.compat.timm.adafactor_bv import AdafactorBigVision
from optax_torch.compat.timm.adahessian import Adahessian
from optax_torch.compat.timm.adamp import SGDP, AdamP
from optax_torch.compat.timm.adamw import AdamW, AdamWLegacy
from optax_torch.compat.timm.adan import Adan
from optax_torch.compat.timm.adopt import Adopt
from optax_torch.compat.timm.kron import Kron
from optax_torch.compat.timm.lamb import Lamb
from optax_torch.compat.timm.laprop import LaProp
from optax_torch.compat.timm.lars import Lars
from optax_torch.compat.timm.lion import Lion
from optax_torch.compat.timm.lookahead import Lookahead
from optax_torch.compat.timm.madgrad import MADGRAD
from optax_torch.compat.timm.mars import Mars
from optax_torch.compat.timm.muon import AdaMuon, Muon
from optax_torch.compat.timm.nadamw import NAdamLegacy, NAdamW
from optax_torch.compat.timm.nvnovograd import NvNovoGrad
from optax_torch.compat.timm.radam import RAdamLegacy
from optax_torch.compat.timm.rmsprop_tf import RMSpropTF
from optax_torch.compat.timm.sgdw import SGDW

__all__ = [
    "AdaBelief",
    "AdaMuon",
    "Adafactor",
    "AdafactorBigVision",
    "Adahessian",
    "AdamP",
    "AdamW",
    "AdamWLegacy",
    "Adan",
    "Adopt",
    "Kron",
    "LaProp",
    "Lamb",
    "Lars",
    "Lion",
    "Lookahead",
    "MADGRAD",
    "Mars",
    "Muon",
    "NAdamLegacy",
    "NAdamW",
    "NvNovoGrad",
    "RAdamLegacy",
    "RMSpropTF",
    "SGDP",
    "SGDW",
    "create_optimizer",
    "create_optimizer_v2",
    "get_optimizer_class",
    "get_optimizer_info",
    "list_optimizers",
    "optimizer_kwargs",
    "param_groups_layer_decay",
    "param_groups_weight_decay",
]
