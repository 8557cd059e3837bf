"""``torch.optim.LBFGS`` on optax_torch (see :mod:`optax_torch.compat.torch_optim`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, ParamsT, _to_scalar

from optax_torch.transforms.torch_lbfgs import (
    TorchLBFGSState,
    flatten_grads,
    torch_lbfgs_step,
)

__all__ = ["LBFGS"]

# The state entries, in the order torch creates them ("al" is created on the second iteration,
# before the others are written at the end of the first step).
_COUNTERS = ("func_evals", "n_iter")
_ENTRIES = (
    "al",
    "d",
    "t",
    "old_dirs",
    "old_stps",
    "ro",
    "H_diag",
    "prev_flat_grad",
    "prev_loss",
)


class LBFGS(Optimizer):
    r"""``torch.optim.LBFGS`` on optax_torch: limited-memory BFGS, driven by a closure.

    Each ``step(closure)`` runs :func:`optax_torch.transforms.torch_lbfgs.torch_lbfgs_step`:
    up to ``max_iter`` L-BFGS iterations, each with the two-loop direction
    :math:`d = -H_k g_k` over the last ``history_size`` curvature pairs
    :math:`(s_j, y_j)` (:math:`H_0 = \gamma I`, :math:`\gamma = y^\top s / y^\top y`), a step
    :math:`x \leftarrow x + t d` of length ``lr`` (:math:`\min(1, 1/\|g\|_1)\,\mathrm{lr}` at the
    very first iteration) or found by torch's strong-Wolfe line search with cubic interpolation
    (``line_search_fn="strong_wolfe"``), and torch's termination tests (``tolerance_grad`` on
    :math:`\|g\|_\infty`, ``tolerance_change`` on the slope, the step and the loss change,
    ``max_iter``, ``max_eval``). The same floating-point operations as torch 2.13, in the same
    order: the iterates are torch's, bit for bit. The algorithm is written once in
    :mod:`optax_torch.transforms.torch_lbfgs` (pure functions of flat vectors); this class only
    evaluates the closure (writing the point asked for into the parameters) and keeps the state.

    It subclasses ``torch.optim.Optimizer`` directly, not
    :class:`~optax_torch.TorchOptimizer`: the adapter runs one gradient transformation per
    param group on the gradients at hand, while L-BFGS evaluates the closure many times per step
    and keeps one global state of varying size (the history lists); ``state_dict``,
    ``load_state_dict``, hooks, pickling and ``zero_grad`` are torch's own.

    Args:
      params: parameters (a single param group: torch raises ``ValueError`` for more).
      lr: learning rate (float or 1-element tensor), default ``1``.
      max_iter: maximal number of iterations per step, default ``20``.
      max_eval: maximal number of closure evaluations per step, default ``max_iter * 5 // 4``.
      tolerance_grad: termination tolerance on first-order optimality, default ``1e-7``.
      tolerance_change: termination tolerance on function value / parameter changes, default
        ``1e-9``.
      history_size: update history size, default ``100``.
      line_search_fn: ``None`` or ``"strong_wolfe"``, default ``None``.

    Example::

        >>> opt = LBFGS(model.parameters(), line_search_fn="strong_wolfe")
        >>> def closure():
        ...     opt.zero_grad()
        ...     loss = loss_fn(model(x), y)
        ...     loss.backward()
        ...     return loss
        >>> loss = opt.step(closure)  # the loss before the step

    State: torch's, global, under the first parameter, ``opt.state[params[0]]``: ``func_evals``
    and ``n_iter`` (ints, all steps), ``d`` (last direction), ``t`` (last step length),
    ``old_dirs`` / ``old_stps`` (the :math:`y_j` / :math:`s_j` history, lists of flat vectors),
    ``ro`` (:math:`1 / y_j^\top s_j`), ``H_diag`` (:math:`\gamma`), ``prev_flat_grad``,
    ``prev_loss`` and ``al`` (the two-loop coefficients). State dicts are interchangeable with
    ``torch.optim.LBFGS``'s both ways. There are no ``foreach`` / ``fused`` / ``capturable`` /
    ``differentiable`` options (torch's LBFGS has none either).

    Deviations: none in results. If ``max_iter`` is ``0``, entries that would hold ``None`` are
    not created (torch creates them with ``None``). Unlike torch's, the optimizer still steps
    after being pickled (``_params`` is derived from the param group).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1,
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        history_size: int = 100,
        line_search_fn: str | None = None,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        defaults = {
            "lr": lr,
            "max_iter": max_iter,
            "max_eval": max_eval,
            "tolerance_grad": tolerance_grad,
            "tolerance_change": tolerance_change,
            "history_size": history_size,
            "line_search_fn": line_search_fn,
        }
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict``, after checking that the saved state is an LBFGS state
        (one entry, for the first parameter, with LBFGS's keys); otherwise ``ValueError`` and the
        optimizer is left unchanged."""
        saved = state_dict.get("state", {}) if isinstance(state_dict, dict) else {}
        allowed = set(TorchLBFGSState._fields) | set(_COUNTERS) | set(_ENTRIES)
        for index, entry in saved.items():
            extra = sorted(set(entry) - allowed) if isinstance(entry, dict) else [repr(entry)]
            if extra:
                raise ValueError(
                    f"load_state_dict: state entry {index!r} has unexpected keys {extra} "
                    f"(is it from another optimizer?); expected LBFGS keys {sorted(allowed)}"
                )
        super().load_state_dict(state_dict)

    @property
    def _params(self) -> list[Tensor]:
        return self.param_groups[0]["params"]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any]) -> Any:  # type: ignore[override]
        """Performs a single optimization step (up to ``max_iter`` L-BFGS iterations).

        Args:
          closure: re-evaluates the model and returns the loss (called with grad enabled).

        Returns:
          The loss the first evaluation of the closure returned.
        """
        if len(self.param_groups) != 1:
            raise AssertionError(
                f"Expected exactly one param_group, but got {len(self.param_groups)}"
            )
        group = self.param_groups[0]
        params = group["params"]
        # torch's LBFGS has only global state, registered under the first parameter
        entry = self.state[params[0]]
        for key in _COUNTERS:
            entry.setdefault(key, 0)
        state = TorchLBFGSState(**{key: entry.get(key) for key in TorchLBFGSState._fields})

        def fun(point: list[Tensor]) -> tuple[Any, Tensor]:
            with torch.no_grad():
                for p, value in zip(params, point, strict=True):
                    p.copy_(value)
            loss = closure()  # torch_lbfgs_step calls fun with grad enabled
            return loss, flatten_grads([p.grad for p in params], params)

        loss, point, new_state = torch_lbfgs_step(
            fun,
            params,
            state,
            lr=_to_scalar(group["lr"]),
            max_iter=group["max_iter"],
            max_eval=group["max_eval"],
            tolerance_grad=group["tolerance_grad"],
            tolerance_change=group["tolerance_change"],
            history_size=group["history_size"],
            line_search_fn=group["line_search_fn"],
        )
        for p, value in zip(params, point, strict=True):
            if value is not p:
                p.copy_(value)
        for key in _COUNTERS:
            entry[key] = getattr(new_state, key)
        for key in _ENTRIES:
            value = getattr(new_state, key)
            if value is not None or key in entry:
                entry[key] = value
        return loss
