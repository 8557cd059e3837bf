"""Transforms of transforms (MultiSteps, lookahead, apply_every, apply_if_finite, flatten, masked),
and the ``torch.optim`` adapter (:class:`TorchOptimizer`)."""

from optax_torch.transforms import masking as _masking
from optax_torch.transforms.masking import *  # noqa: F403
from optax_torch.wrappers import apply_every as _apply_every
from optax_torch.wrappers import apply_if_finite as _apply_if_finite
from optax_torch.wrappers import flatten as _flatten
from optax_torch.wrappers import lookahead as _lookahead
from optax_torch.wrappers import multi_steps as _multi_steps
from optax_torch.wrappers import precision as _precision
from optax_torch.wrappers.apply_every import *  # noqa: F403
from optax_torch.wrappers.apply_if_finite import *  # noqa: F403
from optax_torch.wrappers.flatten import *  # noqa: F403
from optax_torch.wrappers.lookahead import *  # noqa: F403
from optax_torch.wrappers.multi_steps import *  # noqa: F403
from optax_torch.wrappers.precision import *  # noqa: F403
from optax_torch.wrappers.torch_optimizer import TorchOptimizer

# Modules are bound under private names: a module and its main function may share a name
# (``contrib.muon``), and the function wins in this namespace, as in optax.
__all__: list[str] = [
    "TorchOptimizer",
    *_masking.__all__,
    *[
        name
        for module in (
            _apply_every,
            _apply_if_finite,
            _flatten,
            _lookahead,
            _multi_steps,
            _precision,
        )
        for name in module.__all__
    ],
]
