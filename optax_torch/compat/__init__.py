"""Drop-ins built on :class:`optax_torch.TorchOptimizer` (torch's, timm's, Classy's APIs).

* :mod:`optax_torch.compat.torch_optim`: the fifteen ``torch.optim`` optimizers and
  ``swa_utils``, with ``torch.optim``'s signatures, state names and numbers.
* :mod:`optax_torch.compat.timm`: timm's optimizers and its factory (``create_optimizer_v2``,
  param groups with weight and layer decay).
* :mod:`optax_torch.compat.classy`: Classy Vision's optimizers (``ClassyOptimizer``, LARC, ZeRO,
  ``build_optimizer``) and param schedulers of the training progress.
"""

from optax_torch.compat import classy, timm, torch_optim
from optax_torch.compat.classy import optim as _classy_optim  # noqa: F401  (classy.optim)

__all__ = ["classy", "timm", "torch_optim"]
