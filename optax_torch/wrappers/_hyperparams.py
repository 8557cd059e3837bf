"""Hyperparameter helpers of :class:`~optax_torch.wrappers.TorchOptimizer`.

Param-group keys (``lr`` for ``learning_rate``) and the group defaults read from an optimizer
factory's signature (:func:`factory_defaults`); the param group of an optimizer without a
learning rate (:class:`ParamGroup`); the cache key deciding whether a group's transform must be
rebuilt (:func:`cache_key`); and the hyperparameters injected into a state by
:func:`optax_torch.inject_hyperparams`: finding them (:func:`find_hyperparams`), exposing them as
group defaults (:func:`inject_defaults`), and copying them between a state and its param group
(:func:`write_hyperparams`, :func:`read_hyperparams`).
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable
from typing import Any

import torch
from torch.optim.optimizer import required

from optax_torch import tree
from optax_torch.base import GradientTransformation, OptState
from optax_torch.wrappers._state_layout import is_namedtuple

LR = "lr"
LEARNING_RATE = "learning_rate"
HYPERPARAMS = "hyperparams"

# Hyperparameter values that can be compared by value to decide whether a rebuilt transform
# would be the same as the cached one.
_VALUE_TYPES = (int, float, bool, str, type(None), torch.dtype)


class _MissingLearningRateError(KeyError):
    """``group["lr"]`` on an optimizer whose transform has no adjustable learning rate."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0])


NO_LR_MESSAGE = (
    "this TorchOptimizer has no adjustable learning rate (it was built from a ready "
    "GradientTransformation, or from a factory without a learning_rate argument), so its param "
    "groups have no 'lr' (a torch LR scheduler cannot change it). Alternatives: pass the "
    "optimizer factory and its hyperparameters instead, e.g. "
    "TorchOptimizer(params, optax_torch.adamw, lr=1e-3, weight_decay=1e-2), whose 'lr' is live; "
    "or build the transform with optax_torch.inject_hyperparams(optax_torch.adamw)("
    "learning_rate=1e-3), whose numeric hyperparameters become param-group keys; or give the "
    "transform an optax_torch schedule as its learning_rate."
)


class ParamGroup(dict):
    """A param group of an optimizer without an ``lr`` key: ``group["lr"]`` explains why."""

    def __missing__(self, key):
        if key in (LR, LEARNING_RATE):
            raise _MissingLearningRateError(NO_LR_MESSAGE)
        raise KeyError(key)


def rename_learning_rate(d: dict[str, Any], where: str) -> dict[str, Any]:
    """Renames ``learning_rate`` to ``lr`` in ``d``, in place (both given: ``TypeError``)."""
    if LEARNING_RATE in d:
        if LR in d:
            raise TypeError(f"{where}: give either 'lr' or 'learning_rate', not both")
        d[LR] = d.pop(LEARNING_RATE)
    return d


def factory_defaults(
    factory: Callable, hyperparams: dict[str, Any], name: str
) -> tuple[dict[str, str], list[str], dict[str, Any]]:
    """Reads an optimizer factory's signature (``name``: how errors call the factory).

    Returns ``{group key: argument name}`` (``learning_rate`` is keyed ``lr``), the names of
    the positional-only arguments, and the group defaults: the given ``hyperparams`` (either
    spelling of the learning rate), else the signature's defaults, else torch's ``required``.
    Names the factory does not accept raise ``TypeError`` (unless it takes ``**kwargs``).
    """
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError) as e:
        raise TypeError(f"TorchOptimizer: cannot read the signature of {factory!r}: {e}") from None
    params = signature.parameters
    var_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = [
        p
        for p in params.values()
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    names = {p.name for p in named}
    lr_arg = LEARNING_RATE if LEARNING_RATE in names and LR not in names else None
    arg_of = {(LR if p.name == lr_arg else p.name): p.name for p in named}
    positional = [p.name for p in named if p.kind is inspect.Parameter.POSITIONAL_ONLY]
    hyperparams = dict(hyperparams)
    if var_keyword and not names & {LR, LEARNING_RATE} and hyperparams.keys() & {LR, LEARNING_RATE}:
        # lambda **hp: chain(clip_by_global_norm(1.0), adamw(**hp)): the optax spelling goes to
        # the factory, the group key is torch's (LR schedulers write group["lr"])
        arg_of[LR] = LEARNING_RATE
    if LR in arg_of:
        rename_learning_rate(hyperparams, "TorchOptimizer()")
    unknown = sorted(set(hyperparams) - set(arg_of))
    if unknown and not var_keyword:
        accepted = ", ".join(arg_of)
        raise TypeError(
            f"TorchOptimizer: {name} has no hyperparameter(s) "
            f"{', '.join(map(repr, unknown))}; accepted: {accepted}"
        )
    for extra in unknown:  # **kwargs factories: extra names are hyperparameters too
        arg_of[extra] = extra
    defaults: dict[str, Any] = {}
    for key, arg in arg_of.items():
        if key in hyperparams:
            defaults[key] = hyperparams[key]
        else:
            p = params.get(arg)
            if p is not None and p.default is not inspect.Parameter.empty:
                defaults[key] = p.default
            else:
                defaults[key] = required
    return arg_of, positional, defaults


def cache_key(hp: dict[str, Any]) -> tuple | None:
    """A key equal for two hyperparameter dicts that build the same transform (None: no cache).

    Numbers compare by value, callables and containers by identity; tensors are never cached
    (a transform reads a tensor's value when it is built, and LR schedulers fill tensors in
    place).
    """
    key = []
    for name, v in hp.items():
        if isinstance(v, _VALUE_TYPES):
            key.append((name, type(v), v))
        elif isinstance(v, tuple | list) and all(isinstance(x, _VALUE_TYPES) for x in v):
            key.append((name, type(v), tuple(v)))
        elif isinstance(v, torch.Tensor) or (
            isinstance(v, tuple | list) and any(isinstance(x, torch.Tensor) for x in v)
        ):
            return None
        else:
            key.append((name, "id", id(v)))
    return tuple(key)


def same(a: Any, b: Any) -> bool:
    """Whether two hyperparameter values are equal (tensors: the same object)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return a is b
    try:
        return bool(a == b)
    except Exception:
        return a is b


def number(v: Any) -> Any:
    """A 0-d tensor hyperparameter as a Python number (other values unchanged)."""
    if isinstance(v, torch.Tensor) and v.dim() == 0:
        return v.item()
    return v


def probe_state(tx: GradientTransformation, params: list) -> OptState:
    """A state of ``tx`` used only to read its structure (init on no parameters if possible)."""
    try:
        return tx.init([])
    except Exception:
        flat: list[torch.Tensor] = []
        for p in params:
            if isinstance(p, dict):
                flat.extend(p["params"] if isinstance(p["params"], list) else [p["params"]])
            elif isinstance(p, tuple):
                flat.append(p[1])
            else:
                flat.append(p)
        with torch.no_grad():
            return tx.init([p.detach() for p in flat])


def find_hyperparams(state: OptState) -> dict[str, Any] | None:
    """The ``hyperparams`` dict of an injected state (None: none, or several)."""
    if is_namedtuple(state) and HYPERPARAMS in getattr(state, "_fields"):  # noqa: B009
        hp = getattr(state, HYPERPARAMS)
    else:
        try:
            hp = tree.get(state, HYPERPARAMS, None)
        except KeyError:  # ambiguous: several injected transforms
            return None
    return hp if isinstance(hp, dict) else None


def inject_defaults(probe: OptState) -> tuple[dict[str, Any], dict[str, str]]:
    """Group defaults and ``{group key: hyperparams key}`` for injectable hyperparameters."""
    hp = find_hyperparams(probe)
    if not hp:
        return {}, {}
    defaults, inject = {}, {}
    for name, v in hp.items():
        if not isinstance(v, torch.Tensor | numbers.Number):
            continue
        key = LR if name == LEARNING_RATE else name
        defaults[key] = number(v)
        inject[key] = name
    return defaults, inject


def write_hyperparams(state: OptState, group: dict[str, Any], inject: dict[str, str]) -> OptState:
    """``state`` with the injectable hyperparameters set to the param group's values."""
    hp = find_hyperparams(state)
    if hp is None:
        return state
    new = dict(hp)
    for key, name in inject.items():
        if name not in hp:
            continue
        v, old = group[key], hp[name]
        if isinstance(v, torch.Tensor) or not isinstance(old, torch.Tensor):
            new[name] = v
        elif isinstance(v, numbers.Number) and not isinstance(v, bool):
            new[name] = torch.tensor(v, dtype=old.dtype, device=old.device)
        else:
            new[name] = v
    if is_namedtuple(state) and HYPERPARAMS in getattr(state, "_fields"):  # noqa: B009
        return getattr(state, "_replace")(**{HYPERPARAMS: new})  # noqa: B009
    return tree.set(state, **{HYPERPARAMS: new})


def read_hyperparams(state: OptState, group: dict[str, Any], inject: dict[str, str]) -> None:
    """Shows the hyperparameters used by the update (scheduled ones included) in the group."""
    hp = find_hyperparams(state)
    if hp is None:
        return
    for key, name in inject.items():
        if name in hp and not isinstance(group[key], torch.Tensor):
            group[key] = number(hp[name])
