"""Classy Vision's optimizers on optax_torch (``classy_vision.optim``, Classy Vision 0.7).

:class:`ClassyOptimizer` (param schedulers of the training progress ``where``, ``options_view``,
``get_classy_state``/``set_classy_state``), the registered optimizers ``SGD`` (with LARC),
``Adam``, ``AdamW``, ``RMSProp``, ``RMSPropTF`` and ``ZeRO``, with Classy's defaults and config
checks, and ``build_optimizer`` / ``build_optimizer_schedulers`` / ``register_optimizer``. Each
optimizer's ``prepare`` builds an optax_torch drop-in (:mod:`optax_torch.compat.torch_optim`)
instead of a ``torch.optim`` optimizer; their checkpoints are interchangeable with Classy's::

    >>> from optax_torch.compat.classy.optim import build_optimizer
    >>> opt = build_optimizer({"name": "sgd", "lr": 0.1, "momentum": 0.9})
    >>> opt.set_param_groups(model.parameters())
    >>> loss.backward(); opt.step(where=0.0); opt.zero_grad()
"""

from __future__ import annotations

from optax_torch.compat.classy.optim._registry import (
    OPTIMIZER_REGISTRY,
    build_optimizer,
    build_optimizer_schedulers,
    register_optimizer,
)
from optax_torch.compat.classy.optim.adam import Adam
from optax_torch.compat.classy.optim.adamw import AdamW
from optax_torch.compat.classy.optim.classy_optimizer import ClassyOptimizer, OptionsView
from optax_torch.compat.classy.optim.rmsprop import RMSProp
from optax_torch.compat.classy.optim.rmsprop_tf import RMSPropTF, RMSpropTFOptimizer
from optax_torch.compat.classy.optim.sgd import LARCSGD, SGD
from optax_torch.compat.classy.optim.zero import ZeRO

__all__ = [
    "LARCSGD",
    "OPTIMIZER_REGISTRY",
    "Adam",
    "AdamW",
    "ClassyOptimizer",
    "OptionsView",
    "RMSProp",
    "RMSPropTF",
    "RMSpropTFOptimizer",
    "SGD",
    "ZeRO",
    "build_optimizer",
    "build_optimizer_schedulers",
    "register_optimizer",
]
