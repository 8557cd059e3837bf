"""Gradient accumulation: MultiSteps, and the skip functions it can take."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import torch

from optax_torch import numerics, tree
from optax_torch._validate import check_positive_int
from optax_torch.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    Params,
    PyTree,
    Updates,
    with_extra_args_support,
)

__all__ = [
    "MultiSteps",
    "MultiStepsState",
    "ShouldSkipUpdateFunction",
    "skip_large_updates",
    "skip_not_finite",
]

# Set to True (tests do) to run the branch-free path used under tracing even when eager.
_FORCE_TRACED = False


def _eager(counter: torch.Tensor) -> bool:
    """Whether ``update`` runs eagerly on plain tensors, so that it may read its step counter as
    a Python number and branch on it (as ``optax_torch.tree`` decides its multi-tensor path;
    a tensor subclass, e.g. a fake or functional tensor of a tracer, also counts as traced)."""
    return not (
        _FORCE_TRACED
        or torch.compiler.is_compiling()
        or torch._C._are_functorch_transforms_active()
        or torch.jit.is_tracing()
        or type(counter) is not torch.Tensor
    )


class ShouldSkipUpdateFunction(Protocol):
    """``(updates, gradient_step, params) -> (should_skip, skip_state)``.

    ``should_skip`` is a 0-d bool tensor: ``True`` rejects the mini-step (the state of
    :class:`MultiSteps` stays as if it never happened). ``skip_state`` is any tree of tensors,
    stored in :attr:`MultiStepsState.skip_state` for monitoring. ``gradient_step`` is the
    current :attr:`MultiStepsState.gradient_step` (e.g. for an annealed threshold).
    """

    def __call__(
        self, updates: Updates, gradient_step: torch.Tensor, params: Params | None
    ) -> tuple[torch.Tensor, PyTree]: ...


def skip_not_finite(
    updates: Updates, gradient_step: torch.Tensor, params: Params | None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A :class:`ShouldSkipUpdateFunction`: skip iff any update holds an inf or a NaN.

    Returns:
      ``(should_skip, {"should_skip": should_skip, "num_not_finite": n})`` where ``n`` is the
      total number of non-finite elements (an int64 0-d tensor).

    Example::

        >>> opt = otx.MultiSteps(otx.adam(1e-3), 4, should_skip_update_fn=otx.skip_not_finite)
    """
    del gradient_step, params
    xs = tree.leaves(updates)
    if xs:
        num_not_finite = torch.stack([torch.logical_not(torch.isfinite(x)).sum() for x in xs]).sum()
    else:
        num_not_finite = torch.zeros((), dtype=torch.int64)
    should_skip = num_not_finite > 0
    return should_skip, {"should_skip": should_skip, "num_not_finite": num_not_finite}


def skip_large_updates(
    updates: Updates,
    gradient_step: torch.Tensor,
    params: Params | None,
    max_squared_norm: float | torch.Tensor,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    r"""A :class:`ShouldSkipUpdateFunction` (once ``max_squared_norm`` is bound): skip iff
    :math:`\|u\|_2^2 \ge` ``max_squared_norm`` (or is NaN).

    Returns:
      ``(should_skip, {"should_skip": should_skip, "norm_squared": norm_sq})``.

    Example::

        >>> import functools
        >>> skip = functools.partial(otx.skip_large_updates, max_squared_norm=42.0)
        >>> opt = otx.MultiSteps(otx.sgd(0.1), 4, should_skip_update_fn=skip)
    """
    del gradient_step, params
    norm_sq = tree.norm(updates, squared=True)
    # Also True when norm_sq is NaN.
    should_skip = torch.logical_not(norm_sq < max_squared_norm)
    return should_skip, {"should_skip": should_skip, "norm_squared": norm_sq}


class MultiStepsState(NamedTuple):
    """State of :class:`MultiSteps`.

    Attributes:
      mini_step: mini-steps accumulated since the last emit (0-d int32); after an update it
        either increases by 1 or is reset to 0.
      gradient_step: number of inner-optimizer steps taken (0-d int32).
      inner_opt_state: the state of the wrapped optimizer.
      acc_grads: the gradients accumulated over the current mini-steps (their mean with
        ``use_grad_mean``, else their sum), in ``accumulator_dtype``.
      skip_state: what ``should_skip_update_fn`` returned last (``()`` without one).
    """

    mini_step: torch.Tensor
    gradient_step: torch.Tensor
    inner_opt_state: Any
    acc_grads: Any
    skip_state: PyTree = ()


def _no_skip(updates, gradient_step, params):
    del updates, gradient_step, params
    return torch.tensor(False), ()


def _cast_state_like(new: PyTree, old: PyTree) -> PyTree:
    """``new`` with every tensor leaf in the dtype of the matching ``old`` leaf."""

    def cast(n, o):
        if isinstance(n, torch.Tensor) and isinstance(o, torch.Tensor) and n.dtype != o.dtype:
            return n.to(o.dtype)
        return n

    return tree.map(cast, new, old)


def _select(cond: torch.Tensor, new: PyTree, old: PyTree) -> PyTree:
    """``new if cond else old`` leaf by leaf, in ``old``'s dtypes (branch-free)."""

    def pick(n, o):
        if isinstance(n, torch.Tensor) and isinstance(o, torch.Tensor):
            return torch.where(cond, n, o).to(o.dtype)
        return n

    return tree.map(pick, new, old)


def _saturating_inc(n: int, dtype: torch.dtype = torch.int32) -> int:
    return n + 1 if n < torch.iinfo(dtype).max else n


class MultiSteps:
    r"""Accumulates gradients over several mini-steps, then applies the wrapped optimizer once.

    Each call to :meth:`update` adds the incoming gradients to an accumulator. While fewer than
    :math:`k` mini-steps have been accumulated, the returned updates are exact zeros and the
    wrapped optimizer's state is unchanged; on the :math:`k`-th, the accumulated gradients

    .. math::
        \bar g = \frac{1}{k} \sum_{i=1}^{k} g_i \quad(\texttt{use\_grad\_mean}), \qquad
        \bar g = \sum_{i=1}^{k} g_i \quad(\text{otherwise})

    are passed to the wrapped optimizer, its updates are returned, and the accumulator resets.
    This emulates a :math:`k` times larger batch. The mean is accumulated with Welford's
    update :math:`a_{i} = a_{i-1} + (g_i - a_{i-1}) / i`. :math:`k` may follow a schedule of
    the gradient step, to grow the batch during training.

    Eagerly, the step counter is read as a Python number and the wrapped optimizer is run only
    on the mini-steps that emit (optax runs it every mini-step and discards the result); under
    ``torch.compile``, ``vmap`` or ``grad`` the same numbers come from a branch-free
    ``torch.where`` path. With a ``should_skip_update_fn``, the eager path reads its verdict
    (one device synchronisation per step when the gradients live on an accelerator).

    Args:
      opt: the wrapped optimizer.
      every_k_schedule: the number of mini-steps per gradient step: an ``int >= 1``, or a
        function of the gradient step count returning it.
      use_grad_mean: average the accumulated gradients (``True``) or sum them.
      should_skip_update_fn: optional :class:`ShouldSkipUpdateFunction` deciding whether to
        reject a mini-step (e.g. :func:`skip_not_finite`, or
        ``functools.partial(skip_large_updates, max_squared_norm=42.0)``). A rejected mini-step
        returns zero updates and leaves the state as it was, except ``skip_state``.
      accumulator_dtype: dtype of the accumulated gradients (``None``: the params' dtypes).
        float32 by default, as in optax.

    Reference: optax ``MultiSteps``; see also Ott et al., 2018,
    https://arxiv.org/abs/1806.00187 (gradient accumulation for large effective batches).

    Example::

        >>> opt = otx.MultiSteps(otx.adam(1e-3), every_k_schedule=4)
        >>> state = opt.init(params)
        >>> updates, state = opt.update(grads, state, params)  # zeros for 3 of every 4 calls
        >>> params = otx.apply_updates(params, updates)
        >>> tx = opt.gradient_transformation()  # an otx.GradientTransformation, e.g. for chain
    """

    def __init__(
        self,
        opt: GradientTransformation,
        every_k_schedule: int | Callable[[torch.Tensor], Any],
        use_grad_mean: bool = True,
        should_skip_update_fn: ShouldSkipUpdateFunction | None = None,
        accumulator_dtype: torch.dtype | None = torch.float32,
    ):
        check_positive_int("every_k_schedule", every_k_schedule)
        self._opt = with_extra_args_support(opt)
        if isinstance(every_k_schedule, int):
            k = every_k_schedule
            self._every_k_schedule: Callable[[torch.Tensor], Any] = lambda step: k
        else:
            self._every_k_schedule = every_k_schedule
        self._use_grad_mean = use_grad_mean
        self._accumulator_dtype = accumulator_dtype
        self._has_skip = should_skip_update_fn is not None
        self._should_skip_update_fn: ShouldSkipUpdateFunction = (
            should_skip_update_fn if should_skip_update_fn is not None else _no_skip
        )

    @property
    def inner_opt(self) -> GradientTransformationExtraArgs:
        """The wrapped optimizer."""
        return self._opt

    def init(self, params: Params) -> MultiStepsState:
        """Builds the initial :class:`MultiStepsState`."""
        gradient_step = numerics.zero_count()
        _, skip_state = self._should_skip_update_fn(tree.zeros_like(params), gradient_step, params)
        return MultiStepsState(
            mini_step=numerics.zero_count(),
            gradient_step=gradient_step,
            inner_opt_state=self._opt.init(params),
            acc_grads=tree.zeros_like(params, dtype=self._accumulator_dtype),
            skip_state=skip_state,
        )

    def _skip(self, updates, state, params):
        if not self._has_skip:
            return None, ()
        should_skip, skip_state = self._should_skip_update_fn(updates, state.gradient_step, params)
        if (
            not isinstance(should_skip, torch.Tensor)
            or should_skip.dtype != torch.bool
            or should_skip.shape != ()
        ):
            what = (
                f"dtype {should_skip.dtype} and shape {tuple(should_skip.shape)}"
                if isinstance(should_skip, torch.Tensor)
                else repr(type(should_skip))
            )
            raise ValueError(
                "The `should_skip_update_fn` function should return a boolean scalar tensor, "
                f"but it returned {what}"
            )
        return should_skip, skip_state

    def _accumulate(self, updates, acc_grads, mini_step):
        acc = tree.cast_like(acc_grads, updates)
        if not self._use_grad_mean:
            return tree.add(updates, acc)
        if isinstance(mini_step, torch.Tensor):
            inv_n = 1.0 / (mini_step.to(torch.float64) + 1)
        else:
            inv_n = 1.0 / (mini_step + 1)
        return tree.add_scale(acc, inv_n, tree.sub(updates, acc))

    def update(
        self,
        updates: Updates,
        state: MultiStepsState,
        params: Params | None = None,
        **extra_args: Any,
    ) -> tuple[Updates, MultiStepsState]:
        """Accumulates ``updates``; returns the wrapped optimizer's updates every ``k`` calls
        and exact zeros otherwise."""
        k_steps = self._every_k_schedule(state.gradient_step)
        should_skip, skip_state = self._skip(updates, state, params)
        if _eager(state.mini_step):
            return self._update_eager(
                updates, state, params, k_steps, should_skip, skip_state, extra_args
            )
        return self._update_traced(
            updates, state, params, k_steps, should_skip, skip_state, extra_args
        )

    def _update_eager(self, updates, state, params, k_steps, should_skip, skip_state, extra_args):
        if should_skip is not None and bool(should_skip):
            return tree.zeros_like(updates), state._replace(skip_state=skip_state)
        mini = int(state.mini_step)
        k = int(k_steps)
        acc_grads = self._accumulate(updates, state.acc_grads, mini)
        emit = mini == k - 1
        if emit:
            new_updates, new_inner = self._opt.update(
                acc_grads, state.inner_opt_state, params, **extra_args
            )
            inner_state = _cast_state_like(new_inner, state.inner_opt_state)
            acc_grads = tree.zeros_like(acc_grads, dtype=self._accumulator_dtype)
            gradient_step = numerics.safe_increment(state.gradient_step)
        else:
            new_updates = tree.zeros_like(updates)
            inner_state = state.inner_opt_state
            acc_grads = tree.cast(acc_grads, self._accumulator_dtype)
            gradient_step = state.gradient_step
        mini_step = torch.tensor(
            _saturating_inc(mini) % k, dtype=state.mini_step.dtype, device=state.mini_step.device
        )
        return new_updates, MultiStepsState(
            mini_step=mini_step,
            gradient_step=gradient_step,
            inner_opt_state=inner_state,
            acc_grads=acc_grads,
            skip_state=skip_state,
        )

    def _update_traced(self, updates, state, params, k_steps, should_skip, skip_state, extra_args):
        acc_grads = self._accumulate(updates, state.acc_grads, state.mini_step)
        new_updates, new_inner = self._opt.update(
            acc_grads, state.inner_opt_state, params, **extra_args
        )
        emit = state.mini_step == k_steps - 1
        apply = emit if should_skip is None else torch.logical_and(emit, ~should_skip)
        new_updates = tree.map(lambda u: torch.where(apply, u, torch.zeros_like(u)), new_updates)
        inner_state = _select(apply, new_inner, state.inner_opt_state)
        acc_grads = tree.map(
            lambda a, o: torch.where(emit, torch.zeros_like(a), a).to(o.dtype),
            acc_grads,
            state.acc_grads,
        )
        mini_step = numerics.safe_increment(state.mini_step) % k_steps
        gradient_step = torch.where(
            emit, numerics.safe_increment(state.gradient_step), state.gradient_step
        )
        if should_skip is not None:
            acc_grads = _select(should_skip, state.acc_grads, acc_grads)
            mini_step = torch.where(should_skip, state.mini_step, mini_step)
            gradient_step = torch.where(should_skip, state.gradient_step, gradient_step)
        return new_updates, MultiStepsState(
            mini_step=mini_step.to(state.mini_step.dtype),
            gradient_step=gradient_step,
            inner_opt_state=inner_state,
            acc_grads=acc_grads,
            skip_state=skip_state,
        )

    def has_updated(self, state: MultiStepsState) -> torch.Tensor:
        """Whether the last :meth:`update` emitted the wrapped optimizer's updates (0-d bool)."""
        return torch.logical_and(state.mini_step == 0, state.gradient_step > 0)

    def gradient_transformation(self) -> GradientTransformationExtraArgs:
        """This wrapper as a :class:`GradientTransformation` (``init``, ``update``)."""
        return GradientTransformationExtraArgs(init=self.init, update=self.update)
