"""Transforms of transforms (MultiSteps, lookahead, apply_every, apply_if_finite, flatten, masked),
and the ``torch.optim`` adapter (:class:`TorchOptimizer`)."""

from optax_torch.transforms import masking
from optax_torch.transforms.masking import *  # noqa: F403
from optax_torch.wrappers import apply_every, apply_if_finite, flatten, lookahead, multi_steps
from optax_torch.wrappers.apply_every import *  # noqa: F403
from optax_torch.wrappers.apply_if_finite import *  # noqa: F403
from optax_torch.wrappers.flatten import *  # noqa: F403
from optax_torch.wrappers.lookahead import *  # noqa: F403
from optax_torch.wrappers.multi_steps import *  # noqa: F403
from optax_torch.wrappers.torch_optimizer import TorchOptimizer

__all__: list[str] = [
    "TorchOptimizer",
    *[
        name
        for module in (apply_every, apply_if_finite, flatten, lookahead, masking, multi_steps)
        for name in module.__all__
    ],
]
