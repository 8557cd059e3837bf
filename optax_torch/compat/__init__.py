"""Drop-in replacements built on :class:`optax_torch.TorchOptimizer` (torch's, timm's, ... APIs).

* :mod:`optax_torch.compat.torch_optim`: ``SGD``, ``Adam``, ``AdamW`` with ``torch.optim``'s
  signatures.
"""

from optax_torch.compat import torch_optim

__all__ = ["torch_optim"]
