"""Optimizers: each a short named chain of transformations (optax's names and defaults).

One family per module: :mod:`~optax_torch.alias.classic` (SGD, Adam and its variants, RMSProp,
Adagrad), :mod:`~optax_torch.alias.adaptive` (AdaBelief, Adafactor, Lion, RAdam, ...),
:mod:`~optax_torch.alias.layerwise` (LAMB, LARS, Fromage), :mod:`~optax_torch.alias.sgd_variants`
(sign-based, noisy SGD), :mod:`~optax_torch.alias.step_size` (Polyak,
optimistic) and :mod:`~optax_torch.alias.second_order` (L-BFGS).
"""

from optax_torch.alias import adaptive as _adaptive
from optax_torch.alias import classic as _classic
from optax_torch.alias import layerwise as _layerwise
from optax_torch.alias import second_order as _second_order
from optax_torch.alias import sgd_variants as _sgd_variants
from optax_torch.alias import step_size as _step_size
from optax_torch.alias.adaptive import *  # noqa: F403
from optax_torch.alias.classic import *  # noqa: F403
from optax_torch.alias.layerwise import *  # noqa: F403
from optax_torch.alias.second_order import *  # noqa: F403
from optax_torch.alias.sgd_variants import *  # noqa: F403
from optax_torch.alias.step_size import *  # noqa: F403

# Modules are bound under private names: a module and its main function may share a name
# (``contrib.muon``), and the function wins in this namespace, as in optax.
__all__: list[str] = [
    *[
        name
        for module in (
            _adaptive,
            _classic,
            _layerwise,
            _second_order,
            _sgd_variants,
            _step_size,
        )
        for name in module.__all__
    ],
]
