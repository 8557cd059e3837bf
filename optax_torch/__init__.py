"""optax_torch: composable gradient transformations (the optax design), native to PyTorch.

An optimizer is a chain of small pure transformations over pytrees of tensors. The same chain
runs functionally (``tx.update``; ``torch.func`` / ``torch.compile`` / differentiable), as a
``torch.optim.Optimizer`` (:class:`TorchOptimizer`), and behind drop-in replacements for
``torch.optim`` (:mod:`optax_torch.compat`).
"""

from optax_torch import schedules as _schedules
from optax_torch import transforms as _transforms
from optax_torch import tree
from optax_torch.alias import adagrad, adam, adamw, amsgrad, nadam, nadamw, rmsprop, sgd
from optax_torch.base import (
    EmptyState,
    GradientTransformation,
    GradientTransformationExtraArgs,
    OptState,
    Params,
    ScalarOrSchedule,
    Updates,
    donation_safe,
    identity,
    init_empty_state,
    is_donation_safe,
    set_to_zero,
    stateless,
    stateless_with_tree_map,
    with_extra_args_support,
)
from optax_torch.combine import PartitionState, chain, multi_transform, named_chain, partition
from optax_torch.numerics import safe_increment
from optax_torch.schedules import *  # noqa: F403
from optax_torch.schedules import __all__ as _schedules_all
from optax_torch.transforms import *  # noqa: F403
from optax_torch.transforms import __all__ as _transforms_all
from optax_torch.update import apply_updates, incremental_update, periodic_update
from optax_torch.wrappers import TorchOptimizer

__version__ = "0.1.0"

__all__ = [
    "EmptyState",
    "GradientTransformation",
    "GradientTransformationExtraArgs",
    "OptState",
    "Params",
    "PartitionState",
    "ScalarOrSchedule",
    "TorchOptimizer",
    "Updates",
    "adagrad",
    "adam",
    "adamw",
    "amsgrad",
    "apply_updates",
    "chain",
    "donation_safe",
    "identity",
    "incremental_update",
    "init_empty_state",
    "is_donation_safe",
    "multi_transform",
    "nadam",
    "nadamw",
    "named_chain",
    "partition",
    "periodic_update",
    "rmsprop",
    "safe_increment",
    "set_to_zero",
    "sgd",
    "stateless",
    "stateless_with_tree_map",
    "tree",
    "with_extra_args_support",
]
__all__ += _transforms.__all__
__all__ += _schedules.__all__


def _register_safe_states() -> None:
    """Lets every optimizer state of this package load with ``torch.load(weights_only=True)``.

    States are NamedTuples of tensors and plain containers; the weights-only unpickler accepts a
    class only once it is allow-listed, which we do for our state classes (and nothing else).
    """
    import torch

    classes = [EmptyState, PartitionState]
    for name in (*_transforms_all, *_schedules_all):
        obj = globals()[name]
        if isinstance(obj, type) and issubclass(obj, tuple) and hasattr(obj, "_fields"):
            classes.append(obj)
    torch.serialization.add_safe_globals(classes)


_register_safe_states()
