"""A compiled optimizer step: ``tx.update`` + ``apply_updates`` as one ``torch.compile`` graph.

JAX users write ``jax.jit(step, donate_argnums=...)``; :func:`compile_update` is that for a
transformation: the whole step — every member of the chain, the parameter update and the write
of the new state — runs as one compiled graph, and the new parameters and state are written
into the tensors passed in (they are *donated*, as with :func:`optax_torch.tree.donate`). The
compiler fuses the element-wise math of a step into a few passes over memory, where the eager
step runs one multi-tensor kernel per operation.

Inside the graph the tree operations use their per-tensor form (``optax_torch.tree`` switches by
itself under ``torch.compile``), so every transformation that traces with ``fullgraph=True``
compiles (the catalogue test lists the exceptions). The step recompiles when the structure,
shapes or dtypes of its inputs change, or when a hyperparameter held as a Python number in the
transformation changes; keep changing hyperparameters in tensors (``inject_hyperparams`` puts
them in the state) so that a schedule or a new value never recompiles.

``TorchOptimizer(..., compile=True)`` runs its steps through this function.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch

from optax_torch import tree
from optax_torch.base import GradientTransformation, OptState, Params, Updates

__all__ = ["compile_update", "update_in_place"]


def update_in_place(
    tx: GradientTransformation,
    grads: Updates,
    state: OptState,
    params: Params,
    **extra_args: Any,
) -> tuple[Params, OptState]:
    """One step written into its inputs: ``params += updates`` and ``state <- new_state``.

    The uncompiled body of :func:`compile_update`. Parameters whose update is ``None`` keep their
    value; a state leaf that the transformation returns unchanged (the same tensor) is not
    copied. The new state must have the structure, shapes and dtypes of the old one.

    Returns:
      ``(params, state)``, the same objects as given, now holding the new values.
    """
    with torch.no_grad():
        updates, new_state = tx.update(grads, state, params, **extra_args)
        p_leaves, p_spec = tree.flatten(params)
        _add_into(p_leaves, tree._flatten_as(p_spec, updates, "updates"))
        _copy_into(state, new_state)
    return params, state


def _add_into(params: list[Any], updates: list[Any]) -> None:
    """``p += u`` in place for each pair (``None`` skips; ``u`` cast to ``p``'s dtype)."""
    for p, u in zip(params, updates):
        if u is not None and p is not None:
            _writable(p).add_(_writable(u.to(p.dtype) if u.dtype != p.dtype else u))


def _copy_into(state: OptState, new_state: OptState, through: Callable | None = None) -> None:
    """Writes ``new_state`` (same structure) into the tensors of ``state``; a leaf returned
    unchanged (the same tensor) is not copied. ``through`` maps each new leaf first."""
    old, spec = tree.flatten(state)
    new = tree._flatten_as(spec, new_state, "the new state")
    for o, n in zip(old, new):
        if isinstance(o, torch.Tensor) and o is not n:
            _writable(o).copy_(_writable(n if through is None else through(n)))


def _writable(x: torch.Tensor) -> torch.Tensor:
    # torch 2.13's dynamo drops in-place writes into 0-d float64 CPU inputs (a write through a
    # 1-d view of them is kept).
    return x.unsqueeze(0) if x.dim() == 0 else x


def compile_update(
    tx: GradientTransformation,
    *,
    fullgraph: bool = True,
    dynamic: bool | None = False,
    backend: str | Callable = "inductor",
    mode: str | None = None,
    options: dict[str, Any] | None = None,
) -> Callable[..., tuple[Params, OptState]]:
    """Compiles a whole optimizer step of ``tx``, writing into the parameters and the state.

    Returns ``step(grads, state, params, **extra_args) -> (params, state)``, equal to::

        updates, new_state = tx.update(grads, state, params, **extra_args)
        params = optax_torch.apply_updates(params, updates)   # written into params
        state = new_state                                       # written into state

    with ``params`` and ``state`` updated in place (the returned objects are the ones given):
    the caller donates them, as JAX's ``donate_argnums``, and keeps using them. Results equal
    the eager step up to floating-point reassociation by the compiler.

    Args:
      tx: the transformation (any that traces with ``torch.compile(fullgraph=True)``).
      fullgraph, dynamic, backend, mode, options: passed to ``torch.compile``; ``dynamic=False``
        (the default) specialises on shapes, which gives the fastest kernels.

    Example::

        >>> tx = otx.inject_hyperparams(otx.adamw)(learning_rate=1e-3, weight_decay=1e-2)
        >>> state = tx.init(params)
        >>> step = otx.compile_update(tx)
        >>> for batch in data:
        ...     grads = torch.func.grad(loss_fn)(params, batch)
        ...     params, state = step(grads, state, params)
        ...     state.hyperparams["learning_rate"].fill_(schedule(i))  # no recompilation

    Compile time grows with the number of parameter tensors (each gets its own kernels): a few
    seconds for tens of tensors, minutes for a thousand on CPU.
    """
    if not isinstance(tx, GradientTransformation):
        raise TypeError(f"compile_update: tx must be a GradientTransformation, got {type(tx)}")

    def step(grads, state, params, **extra_args):
        return update_in_place(tx, grads, state, params, **extra_args)

    return torch.compile(
        step, fullgraph=fullgraph, dynamic=dynamic, backend=backend, mode=mode, options=options
    )


def compiled_step_fn(body: Callable = update_in_place, **options: Any) -> Callable[..., Any]:
    """A compiled ``body`` (default ``update_in_place(tx, grads, state, params,
    **extra_args)``) with a code object of its own, so that its compile cache (and recompile
    limit) serves one caller, e.g. one param group of a ``TorchOptimizer``; ``options`` go to
    ``torch.compile`` (defaults: ``fullgraph=True, dynamic=False``)."""
    fn = types.FunctionType(
        body.__code__.replace(), body.__globals__, body.__name__, body.__defaults__
    )
    options = {"fullgraph": True, "dynamic": False, **options}
    return torch.compile(fn, **options)
