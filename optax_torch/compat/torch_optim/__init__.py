"""Drop-in replacements for the ``torch.optim`` optimizers.

Same signatures, defaults, param-group keys, validation messages and per-parameter state names
(``step``, ``exp_avg``, ``exp_avg_sq``, ``momentum_buffer``, ...) as ``torch.optim`` in torch 2.13;
each step runs a short optax_torch chain through :class:`optax_torch.TorchOptimizer`::

    >>> from optax_torch.compat.torch_optim import AdamW
    >>> opt = AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)

State dicts are interchangeable with ``torch.optim``'s for the same optimizer, in both directions,
mid-training. Step counts are per parameter, as in torch (a parameter that skips steps with a
``None`` gradient is bias-corrected by its own count).

Deviations common to the drop-ins:

* ``foreach`` and ``fused`` are accepted, validated like torch and ignored: updates always run
  as multi-tensor (``_foreach``) operations. ``capturable`` is accepted and ignored (the step
  count lives on the CPU, so a step cannot be captured in a CUDA graph).
* ``differentiable=True`` raises ``NotImplementedError``: differentiate through the functional
  ``tx.update`` with ``torch.func`` instead.
* Turning an option that creates state (``momentum``, ``amsgrad``, ``centered``, ...) on or off in
  a group after its first step raises ``ValueError`` (torch would silently start a new buffer).
"""

from __future__ import annotations

import importlib
from typing import Any

from optax_torch.compat.torch_optim.adam import Adam, AdamW
from optax_torch.compat.torch_optim.sgd import SGD

# Drop-ins being added: name -> module (imported on first access).
_LAZY = {
    "Adadelta": "adadelta",
    "Adafactor": "adafactor",
    "Adagrad": "adagrad",
    "Adamax": "adamax",
    "ASGD": "asgd",
    "LBFGS": "lbfgs",
    "Muon": "muon",
    "NAdam": "nadam",
    "RAdam": "radam",
    "RMSprop": "rmsprop",
    "Rprop": "rprop",
    "SparseAdam": "sparse_adam",
    "swa_utils": "swa_utils",
}

__all__ = ["SGD", "Adam", "AdamW"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return module if name == "swa_utils" else getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
