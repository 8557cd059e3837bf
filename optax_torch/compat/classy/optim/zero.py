"""Classy Vision's ``ZeRO`` optimizer (``classy_vision.optim.zero``) on
``torch.distributed.optim.ZeroRedundancyOptimizer`` (instead of fairscale's ``OSS``)."""

from __future__ import annotations

import logging
from typing import Any

import torch.distributed as dist
from torch.distributed.optim import ZeroRedundancyOptimizer

from optax_torch.compat.classy.optim._registry import build_optimizer, register_optimizer
from optax_torch.compat.classy.optim.classy_optimizer import ClassyOptimizer

__all__ = ["ZeRO"]

_PRIMARY_RANK = 0


@register_optimizer("zero")
class ZeRO(ClassyOptimizer):
    """Shards the state of ``base_optimizer`` across the ranks (ZeRO stage 1,
    https://arxiv.org/abs/1910.02054) with ``torch.distributed.optim.ZeroRedundancyOptimizer``.

    Each rank's shard is stepped by ``base_optimizer``'s underlying optimizer (an optax_torch
    drop-in, built by its ``prepare`` on the shard), and the parameters are broadcast after each
    step. ``on_epoch`` consolidates the sharded state on the primary rank (0) for checkpointing.
    Needs an initialised ``torch.distributed`` process group at :meth:`prepare`.

    Args:
      base_optimizer: the :class:`ClassyOptimizer` to shard.

    Example::

        >>> opt = ZeRO(SGD(lr=0.1, momentum=0.9)); opt.set_param_groups(model.parameters())
    """

    def __init__(self, base_optimizer: ClassyOptimizer) -> None:
        super().__init__()
        self.base_optimizer = base_optimizer

    def prepare(self, param_groups: Any) -> None:
        if not dist.is_initialized():
            raise AssertionError("torch.distributed needs to be initialized to prepare this rank")

        def optimizer_constructor(param_groups: Any, *args: Any, **kwargs: Any) -> Any:
            # ClassyOptimizers are built late (prepare); ZeroRedundancyOptimizer wants a class.
            del args, kwargs
            logging.debug("Building a ZeRO enabled optimizer")
            self.base_optimizer.prepare(param_groups)
            return self.base_optimizer.optimizer

        self.optimizer = ZeroRedundancyOptimizer(
            param_groups,
            optimizer_class=optimizer_constructor,  # type: ignore[arg-type]
        )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ZeRO:
        """``ZeRO(build_optimizer(config["base_optimizer"]))``."""
        return cls(base_optimizer=build_optimizer(config["base_optimizer"]))

    def on_epoch(self, where: float) -> None:
        super().on_epoch(where)
        logging.info("Consolidating sharded state on primary rank. Where: %d", where)
        self.consolidate_state_dict()

    def consolidate_state_dict(self) -> None:
        """Gathers the sharded optimizer state on the primary rank."""
        self.optimizer.consolidate_state_dict(to=_PRIMARY_RANK)
