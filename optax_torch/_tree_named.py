"""Named access into optimizer states: ``get``, ``get_all_with_path``, ``set``, ``map_params``.

Part of the :mod:`optax_torch.tree` namespace. States are nests of NamedTuples, dicts, lists and
tuples; these functions find entries by NamedTuple field name or dict key. A *path* is the tuple
of field names, dict keys and sequence indices leading to an entry, e.g.
``(1, "hyperparams", "learning_rate")``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["get", "get_all_with_path", "map_params", "set"]

Path = tuple[Any, ...]

_MISSING = object()


def _is_namedtuple(node: Any) -> bool:
    return isinstance(node, tuple) and hasattr(node, "_fields")


def _named_items(node: Any, path: Path = ()) -> Iterator[tuple[Path, Any, Any]]:
    """Yields ``(path_of_entry, key, value)`` for every NamedTuple field and dict entry."""
    if _is_namedtuple(node):
        for k in node._fields:
            v = getattr(node, k)
            yield (*path, k), k, v
            yield from _named_items(v, (*path, k))
    elif isinstance(node, dict):
        for k, v in node.items():
            yield (*path, k), k, v
            yield from _named_items(v, (*path, k))
    elif isinstance(node, list | tuple):
        for i, v in enumerate(node):
            yield from _named_items(v, (*path, i))


def _split_key(key: Any) -> tuple[Any, Path]:
    """``"a/b/c"`` or ``("a", "b", "c")`` -> last key ``"c"`` and required path suffix."""
    if isinstance(key, tuple):
        parts: Path = key
    elif isinstance(key, str) and "/" in key:
        parts = tuple(int(p) if p.isdigit() else p for p in key.split("/"))
    else:
        parts = (key,)
    return parts[-1], parts


def _format_path(path: Path) -> str:
    return "/".join(str(p) for p in path)


def get_all_with_path(
    tree: Any, key: Any, filtering: Callable[[Path, Any], bool] | None = None
) -> list[tuple[Path, Any]]:
    """Every ``(path, value)`` whose NamedTuple field or dict key is ``key``, depth first.

    ``key`` may also be a path suffix, ``"hyperparams/learning_rate"`` or
    ``("hyperparams", "learning_rate")`` (*extension*: optax takes a single key). ``filtering``
    keeps only the matches for which ``filtering(path, value)`` is true (as in optax).

    Example::

        >>> otx.tree.get_all_with_path(state, "count")
        [((0, 'count'), tensor(3, dtype=torch.int32)), ...]
    """
    last, parts = _split_key(key)
    found = [
        (path, v) for path, k, v in _named_items(tree) if k == last and path[-len(parts) :] == parts
    ]
    if filtering is not None:
        found = [(p, v) for p, v in found if filtering(p, v)]
    return found


def get(
    tree: Any,
    key: Any,
    default: Any = _MISSING,
    filtering: Callable[[Path, Any], bool] | None = None,
) -> Any:
    """The value of the unique entry named ``key`` (a field name, dict key, or path suffix).

    Typical use: ``tree.get(opt_state, "count")``, ``tree.get(opt_state, "learning_rate")``.
    When the name appears more than once and exactly one of the matches is a value (a tensor or
    number, not a container such as a schedule's state), that value is returned: so
    ``"learning_rate"`` gives ``hyperparams["learning_rate"]`` of an injected optimizer, not the
    ``hyperparams_states`` entry of its schedule (optax raises there). Otherwise the ``KeyError``
    lists every path, so that a longer suffix (``"hyperparams/learning_rate"``) or ``filtering``
    can pick one. Without ``default``,
    a missing key raises ``KeyError`` (optax returns ``default=None``; pass ``default=None`` for
    optax's behaviour).
    """
    found = get_all_with_path(tree, key, filtering)
    if not found:
        if default is not _MISSING:
            return default
        raise KeyError(f"tree.get: no field named {key!r}")
    if len(found) > 1:
        values = [(p, v) for p, v in found if not isinstance(v, tuple | list | dict)]
        if len(values) == 1:
            return values[0][1]
        paths = ", ".join(repr(_format_path(p)) for p, _ in found)
        raise KeyError(
            f"tree.get: {len(found)} fields match {key!r}, at {paths}; pass a longer path "
            "(e.g. one of these) or a filtering function to choose one"
        )
    return found[0][1]


def set(tree: Any, filtering: Callable[[Path, Any], bool] | None = None, /, **values: Any) -> Any:
    """A copy of ``tree`` where every field / dict key named in ``values`` is replaced.

    ``filtering(path, value)`` restricts the replacement to the matching entries (as in optax).
    Raises ``KeyError`` when a name matches nothing (as optax), so a typo is not silent.

    Example: ``tree.set(opt_state, learning_rate=torch.tensor(0.01))``.
    """
    hits = {k: 0 for k in values}

    def replace(path: Path, k: Any, v: Any) -> tuple[bool, Any]:
        if k in values and (filtering is None or filtering(path, v)):
            hits[k] += 1
            return True, values[k]
        return False, v

    def rebuild(node: Any, path: Path) -> Any:
        if _is_namedtuple(node):
            out = {}
            for k in node._fields:
                done, v = replace((*path, k), k, getattr(node, k))
                out[k] = v if done else rebuild(v, (*path, k))
            return type(node)(**out)
        if isinstance(node, dict):
            new = {}
            for k, v in node.items():
                done, nv = replace((*path, k), k, v)
                new[k] = nv if done else rebuild(v, (*path, k))
            return type(node)(new) if type(node) is not dict else new
        if isinstance(node, list | tuple):
            return type(node)(rebuild(v, (*path, i)) for i, v in enumerate(node))
        return node

    out = rebuild(tree, ())
    missing = [k for k, n in hits.items() if n == 0]
    if missing:
        raise KeyError(f"tree.set: no field named {missing} (or none passed the filtering)")
    return out


class _ParamsPlaceholder:
    """Stands for the whole params tree while tracing which parts of a state mirror it."""


def _register_placeholder() -> None:
    import torch.utils._pytree as py

    py.register_pytree_node(
        _ParamsPlaceholder,
        lambda x: ([], None),
        lambda leaves, ctx: _ParamsPlaceholder(),
        serialized_type_name="optax_torch._tree_named._ParamsPlaceholder",
    )


_register_placeholder()


def map_params(
    initable: Any,
    f: Callable[..., Any],
    state: Any,
    /,
    *rest: Any,
    transform_non_params: Callable[..., Any] | None = None,
    is_leaf: Callable[[Any], bool] | None = None,
) -> Any:
    """Applies ``f`` to every copy of the params tree inside an optimizer ``state``.

    ``initable`` is a transformation (or its ``init`` function); the parts of ``state`` that
    mirror the params (Adam's ``mu`` and ``nu``, ...) are found by running ``init`` on a
    placeholder, and each is replaced by ``tree.map(f, part, *rest)``; other leaves are replaced by
    ``transform_non_params(leaf)`` when given. Typical use: build per-state-tensor sharding
    specs or devices from those of the params.

    Example::

        >>> # the state's copies of the params on the meta device, counters untouched
        >>> meta = otx.tree.map_params(opt, lambda x: x.to("meta"), state)
    """
    from optax_torch import tree as _tree

    init = initable.init if hasattr(initable, "init") else initable
    with_placeholders = init(_ParamsPlaceholder())

    def visit(template: Any, value: Any) -> Any:
        if isinstance(template, _ParamsPlaceholder):
            return _tree.map(f, value, *rest, is_leaf=is_leaf)
        if _is_namedtuple(template):
            return type(value)(*(visit(t, v) for t, v in zip(template, value)))
        if isinstance(template, dict):
            return type(value)({k: visit(template[k], v) for k, v in value.items()})
        if isinstance(template, list | tuple):
            return type(value)(visit(t, v) for t, v in zip(template, value))
        if transform_non_params is not None and value is not None:
            return transform_non_params(value)
        return value

    return visit(with_placeholders, state)
