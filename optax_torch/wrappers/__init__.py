"""Transforms of transforms, and the ``torch.optim`` adapter (:class:`TorchOptimizer`)."""

from optax_torch.wrappers.torch_optimizer import TorchOptimizer

__all__ = ["TorchOptimizer"]
