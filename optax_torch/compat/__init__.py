"""Drop-in replacements built on :class:`optax_torch.TorchOptimizer` (torch's, timm's, ... APIs).

* :mod:`optax_torch.compat.torch_optim`: the fifteen ``torch.optim`` optimizers and
  ``swa_utils``, with ``torch.optim``'s signatures, state names and numbers.
"""

from optax_torch.compat import torch_optim

__all__ = ["torch_optim"]
