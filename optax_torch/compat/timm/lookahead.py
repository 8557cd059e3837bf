"""timm's ``Lookahead`` optimizer wrapper on optax_torch (see :mod:`optax_torch.compat.timm`)."""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch.optim.optimizer import Optimizer

from optax_torch.base import identity
from optax_torch.wrappers.lookahead import LookaheadParams, lookahead

__all__ = ["Lookahead"]

_SLOW = "lookahead_slow_buff"
_GROUP_KEYS = ("lookahead_alpha", "lookahead_k", "lookahead_step")


class Lookahead(Optimizer):
    r"""timm's ``Lookahead``: wraps any optimizer instance (a ``torch.optim`` optimizer, a timm
    or optax_torch drop-in) with slow weights.

    After every step of the base optimizer (the fast weights :math:`\phi`, the model's
    parameters), each param group counts ``lookahead_step``; every ``lookahead_k`` steps the slow
    weights :math:`\theta` of the group's parameters that have a gradient move towards the fast
    ones and the fast ones restart from them:

    .. math::
        \theta \leftarrow \theta + \alpha(\phi - \theta),\qquad \phi \leftarrow \theta

    The slow weights start as a copy of the fast ones at a parameter's first synchronisation
    (timm's: the first synchronisation leaves it unchanged). The synchronisation is
    :func:`optax_torch.lookahead`'s update (with an identity fast optimizer and a sync every
    call) on :class:`~optax_torch.LookaheadParams`; the wrapper form is needed because the base
    optimizer is an opaque instance (its step is not a transform) whose parameters are the fast
    weights.

    Args:
      base_optimizer: the optimizer to wrap (its ``param_groups`` are shared).
      alpha: slow step size :math:`\alpha \in [0, 1]`, default ``0.5``.
      k: synchronisation period (``>= 1``), default ``6``.

    Example::

        >>> opt = Lookahead(AdamW(model.parameters(), lr=1e-3), alpha=0.5, k=6)
        >>> loss.backward(); opt.step(); opt.zero_grad()

    Layout, as timm: ``lookahead_alpha``, ``lookahead_k`` and ``lookahead_step`` are keys of the
    base optimizer's param groups (set there), the slow weights are ``lookahead_slow_buff`` in the
    base optimizer's per-parameter state, and ``state_dict()`` is the base optimizer's. Loading
    passes the state without the slow weights to the base optimizer (an optax_torch drop-in
    rejects unknown state names) and restores them afterwards.
    """

    def __init__(self, base_optimizer: Any, alpha: float = 0.5, k: int = 6) -> None:
        # Like timm: Optimizer.__init__ is not called (the param groups are the base's).
        self._optimizer_step_pre_hooks: dict[int, Callable] = OrderedDict()
        self._optimizer_step_post_hooks: dict[int, Callable] = OrderedDict()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"Invalid slow update rate: {alpha}")
        if not k >= 1:
            raise ValueError(f"Invalid lookahead steps: {k}")
        defaults = dict(lookahead_alpha=alpha, lookahead_k=k, lookahead_step=0)
        self._base_optimizer = base_optimizer
        self.param_groups = base_optimizer.param_groups
        self.defaults = base_optimizer.defaults
        self.defaults.update(defaults)
        self.state: defaultdict[Any, dict[str, Any]] = defaultdict(dict)
        for name, default in defaults.items():
            for group in self._base_optimizer.param_groups:
                group.setdefault(name, default)

    @property
    def is_second_order(self) -> bool:
        return getattr(self._base_optimizer, "is_second_order", False)

    @torch.no_grad()
    def update_slow(self, group: dict[str, Any]) -> None:
        """Synchronises the slow and fast weights of ``group``'s parameters with a gradient."""
        fast = [p for p in group["params"] if p.grad is not None]
        if not fast:
            return
        base_state = self._base_optimizer.state
        slow = []
        for p in fast:
            entry = base_state[p]
            if _SLOW not in entry:
                entry[_SLOW] = p.detach().clone()
            slow.append(entry[_SLOW])
        sync = lookahead(identity(), sync_period=1, slow_step_size=group["lookahead_alpha"])
        pair = LookaheadParams(fast=fast, slow=slow)
        updates, _ = sync.update([torch.zeros_like(p) for p in fast], sync.init(pair), pair)
        torch._foreach_add_(slow, list(updates.slow))
        torch._foreach_add_(fast, list(updates.fast))

    def sync_lookahead(self) -> None:
        for group in self._base_optimizer.param_groups:
            self.update_slow(group)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = self._base_optimizer.step(closure)
        for group in self._base_optimizer.param_groups:
            group["lookahead_step"] += 1
            if group["lookahead_step"] % group["lookahead_k"] == 0:
                self.update_slow(group)
        return loss

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return self._base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        saved_state = state_dict.get("state", {})
        slow = {k: v[_SLOW] for k, v in saved_state.items() if isinstance(v, dict) and _SLOW in v}
        stripped = dict(state_dict)
        stripped["state"] = {
            k: ({n: x for n, x in v.items() if n != _SLOW} if k in slow else v)
            for k, v in saved_state.items()
        }
        self._base_optimizer.load_state_dict(stripped)
        self.param_groups = self._base_optimizer.param_groups
        # The state may be from a base optimizer without lookahead: add the group keys.
        for name in _GROUP_KEYS:
            for group in self.param_groups:
                group.setdefault(name, self.defaults[name])
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        base_state = self._base_optimizer.state
        for idx, p in zip(saved_ids, params):
            if idx in slow:
                base_state[p][_SLOW] = slow[idx].to(device=p.device, dtype=p.dtype)
