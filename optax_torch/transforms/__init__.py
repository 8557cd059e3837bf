"""Gradient transformations, one family per module."""

from optax_torch.transforms import (
    adaptive,
    clipping,
    conditionality,
    constraints,
    factorized,
    freezing,
    lbfgs,
    linesearch,
    masking,
    moments,
    momentum,
    monitoring,
    noise,
    normalization,
    scaling,
    sign,
    step_size,
    weight_decay,
)
from optax_torch.transforms.adaptive import *  # noqa: F403
from optax_torch.transforms.clipping import *  # noqa: F403
from optax_torch.transforms.conditionality import *  # noqa: F403
from optax_torch.transforms.constraints import *  # noqa: F403
from optax_torch.transforms.factorized import *  # noqa: F403
from optax_torch.transforms.freezing import *  # noqa: F403
from optax_torch.transforms.lbfgs import *  # noqa: F403
from optax_torch.transforms.linesearch import *  # noqa: F403
from optax_torch.transforms.masking import *  # noqa: F403
from optax_torch.transforms.moments import *  # noqa: F403
from optax_torch.transforms.momentum import *  # noqa: F403
from optax_torch.transforms.monitoring import *  # noqa: F403
from optax_torch.transforms.noise import *  # noqa: F403
from optax_torch.transforms.normalization import *  # noqa: F403
from optax_torch.transforms.scaling import *  # noqa: F403
from optax_torch.transforms.sign import *  # noqa: F403
from optax_torch.transforms.step_size import *  # noqa: F403
from optax_torch.transforms.weight_decay import *  # noqa: F403

__all__: list[str] = [
    name
    for module in (
        adaptive,
        clipping,
        conditionality,
        constraints,
        factorized,
        freezing,
        lbfgs,
        linesearch,
        masking,
        moments,
        momentum,
        monitoring,
        noise,
        normalization,
        scaling,
        sign,
        step_size,
        weight_decay,
    )
    for name in module.__all__
]
