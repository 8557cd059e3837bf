"""optax_torch: composable gradient transformations (the optax design), native to PyTorch.

An optimizer is a chain of small pure transformations over pytrees of tensors. The same chain
runs functionally (``tx.update``; ``torch.func`` / ``torch.compile`` / differentiable), as a
``torch.optim.Optimizer`` (:class:`TorchOptimizer`), and behind drop-in replacements for
``torch.optim`` (:mod:`optax_torch.compat`). Newer optimizers live in :mod:`optax_torch.contrib`.
"""

from collections.abc import Callable
from typing import Any

from optax_torch import alias as _alias
from optax_torch import contrib, tree
from optax_torch import linear_algebra as _linear_algebra
from optax_torch import schedules as _schedules
from optax_torch import transforms as _transforms
from optax_torch import wrappers as _wrappers
from optax_torch.alias import *  # noqa: F403
from optax_torch.base import (
    EmptyState,
    GradientTransformation,
    GradientTransformationExtraArgs,
    OptState,
    Params,
    ScalarOrSchedule,
    TransformInitFn,
    TransformUpdateExtraArgsFn,
    TransformUpdateFn,
    Updates,
    consumes_updates,
    donation_safe,
    elementwise,
    identity,
    init_empty_state,
    is_consuming_updates,
    is_donation_safe,
    is_elementwise,
    is_leafwise,
    leafwise,
    set_to_zero,
    stateless,
    stateless_with_tree_map,
    with_extra_args_support,
)
from optax_torch.combine import (
    MultiTransformState,
    PartitionState,
    chain,
    multi_transform,
    named_chain,
    partition,
)
from optax_torch.compiled import compile_update
from optax_torch.linear_algebra import *  # noqa: F403
from optax_torch.numerics import (
    safe_increment,
    safe_int32_increment,
    safe_norm,
    safe_root_mean_squares,
)
from optax_torch.schedules import *  # noqa: F403
from optax_torch.transforms import *  # noqa: F403
from optax_torch.tree import (
    bias_correction,
    update_infinity_moment,
    update_moment,
    update_moment_per_elem_norm,
)
from optax_torch.tree import map_params as tree_map_params
from optax_torch.update import apply_updates, incremental_update, periodic_update, scale_gradient
from optax_torch.wrappers import *  # noqa: F403

__version__ = "0.1.0"

MaskOrFn = Any | Callable[[Params], Any] | None
"""A mask tree (booleans, a prefix of the params) or a function ``params -> mask``, or ``None``."""

__all__ = [
    "EmptyState",
    "GradientTransformation",
    "MaskOrFn",
    "MultiTransformState",
    "TransformInitFn",
    "TransformUpdateExtraArgsFn",
    "TransformUpdateFn",
    "GradientTransformationExtraArgs",
    "OptState",
    "Params",
    "PartitionState",
    "ScalarOrSchedule",
    "Updates",
    "apply_updates",
    "bias_correction",
    "chain",
    "compile_update",
    "consumes_updates",
    "contrib",
    "donation_safe",
    "elementwise",
    "leafwise",
    "identity",
    "incremental_update",
    "init_empty_state",
    "is_consuming_updates",
    "is_donation_safe",
    "is_elementwise",
    "is_leafwise",
    "multi_transform",
    "named_chain",
    "partition",
    "periodic_update",
    "safe_increment",
    "safe_int32_increment",
    "safe_norm",
    "safe_root_mean_squares",
    "scale_gradient",
    "set_to_zero",
    "stateless",
    "stateless_with_tree_map",
    "tree",
    "tree_map_params",
    "update_infinity_moment",
    "update_moment",
    "update_moment_per_elem_norm",
    "with_extra_args_support",
]
for _module in (_alias, _transforms, _schedules, _wrappers, _linear_algebra):
    __all__ += [name for name in _module.__all__ if name not in __all__]


def _register_safe_states() -> None:
    """Lets every optimizer state of this package load with ``torch.load(weights_only=True)``.

    States are NamedTuples of tensors and plain containers; the weights-only unpickler accepts a
    class only once it is allow-listed, which we do for our state classes (and nothing else).
    """
    import torch

    classes = [EmptyState, PartitionState]
    candidates = [globals()[name] for name in __all__]
    candidates += [getattr(contrib, name) for name in contrib.__all__]
    for obj in candidates:
        if isinstance(obj, type) and issubclass(obj, tuple) and hasattr(obj, "_fields"):
            classes.append(obj)
    torch.serialization.add_safe_globals(classes)


_register_safe_states()
