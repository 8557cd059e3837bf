"""Drop-in replacements for the ``torch.optim`` optimizers and ``torch.optim.swa_utils``.

All fifteen of torch 2.13: ``Adadelta``, ``Adafactor``, ``Adagrad``, ``Adam``, ``AdamW``,
``Adamax``, ``ASGD``, ``LBFGS``, ``Muon``, ``NAdam``, ``RAdam``, ``RMSprop``, ``Rprop``, ``SGD``,
``SparseAdam``, and :mod:`~optax_torch.compat.torch_optim.swa_utils` (``AveragedModel``,
``SWALR``, ``update_bn``, the ``get_*_avg_fn`` helpers, backed by functional averaging).

Same signatures, defaults, param-group keys, validation messages and per-parameter state names
(``step``, ``exp_avg``, ``exp_avg_sq``, ``momentum_buffer``, ...) as ``torch.optim`` in torch 2.13;
each step runs a short optax_torch chain through :class:`optax_torch.TorchOptimizer`::

    >>> from optax_torch.compat.torch_optim import AdamW
    >>> opt = AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)

State dicts are interchangeable with ``torch.optim``'s for the same optimizer, in both directions,
mid-training. Step counts are per parameter, as in torch (a parameter that skips steps with a
``None`` gradient is bias-corrected by its own count). ``LBFGS`` subclasses
``torch.optim.Optimizer`` directly (its closure-driven step, with many evaluations, does not fit
the per-group transform model) and runs the pure functions of
:mod:`optax_torch.transforms.torch_lbfgs`.

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

from optax_torch.compat.torch_optim import swa_utils
from optax_torch.compat.torch_optim.adadelta import Adadelta
from optax_torch.compat.torch_optim.adafactor import Adafactor
from optax_torch.compat.torch_optim.adagrad import Adagrad
from optax_torch.compat.torch_optim.adam import Adam, AdamW
from optax_torch.compat.torch_optim.adamax import Adamax
from optax_torch.compat.torch_optim.asgd import ASGD
from optax_torch.compat.torch_optim.lbfgs import LBFGS
from optax_torch.compat.torch_optim.muon import Muon
from optax_torch.compat.torch_optim.nadam import NAdam
from optax_torch.compat.torch_optim.radam import RAdam
from optax_torch.compat.torch_optim.rmsprop import RMSprop
from optax_torch.compat.torch_optim.rprop import Rprop
from optax_torch.compat.torch_optim.sgd import SGD
from optax_torch.compat.torch_optim.sparse_adam import SparseAdam

__all__ = [
    "ASGD",
    "LBFGS",
    "SGD",
    "Adadelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Muon",
    "NAdam",
    "RAdam",
    "RMSprop",
    "Rprop",
    "SparseAdam",
    "swa_utils",
]
