"""Optimizers: each a short named chain of transformations (optax's names and defaults).

One family per module: :mod:`~optax_torch.alias.classic` (SGD, Adam and its variants, RMSProp,
Adagrad), :mod:`~optax_torch.alias.adaptive` (AdaBelief, Adafactor, Lion, RAdam, ...),
:mod:`~optax_torch.alias.layerwise` (LAMB, LARS, Fromage), :mod:`~optax_torch.alias.sgd_variants`
(sign-based, noisy SGD), :mod:`~optax_torch.alias.step_size` (Polyak,
optimistic) and :mod:`~optax_torch.alias.second_order` (L-BFGS).
"""

from optax_torch.alias import adaptive, classic, layerwise, second_order, sgd_variants, step_size
from optax_torch.alias.adaptive import *  # noqa: F403
from optax_torch.alias.classic import *  # noqa: F403
from optax_torch.alias.layerwise import *  # noqa: F403
from optax_torch.alias.second_order import *  # noqa: F403
from optax_torch.alias.sgd_variants import *  # noqa: F403
from optax_torch.alias.step_size import *  # noqa: F403

__all__: list[str] = [
    *classic.__all__,
    *adaptive.__all__,
    *layerwise.__all__,
    *sgd_variants.__all__,
    *second_order.__all__,
    *step_size.__all__,
]
