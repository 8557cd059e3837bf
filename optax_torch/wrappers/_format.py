"""The versioned format of :class:`~optax_torch.wrappers.TorchOptimizer` state dicts.

A state dict written by this version of optax_torch carries a top-level key

.. code-block:: python

    {"state": ..., "param_groups": ..., "optax_torch": {"format": 1}}

``torch.optim`` ignores unknown top-level keys, and the stamp holds only a string key and an
integer, so it survives ``torch.load(weights_only=True)``. :func:`stamp` adds it when a state dict
is written; :func:`upgrade` checks it when one is loaded:

* no stamp (a dict from ``torch.optim`` or from optax_torch before the stamp): loaded as is;
* the current format: loaded as is (the stamp removed);
* an older format: converted step by step (``_UPGRADES``) — the one place where future changes of
  the layout convert old checkpoints, so that a checkpoint written by one version loads in the next;
* a newer format: ``ValueError`` naming both versions (upgrade optax_torch to load it).

The fixture checkpoints in ``tests/fixtures/state_v1/`` (see ``tests/fixtures/README.md``) pin
format 1: every later version must keep loading them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["FORMAT_KEY", "FORMAT_VERSION", "stamp", "upgrade"]

FORMAT_VERSION = 1
FORMAT_KEY = "optax_torch"

# _UPGRADES[v] converts a state dict of format v into format v + 1 (none yet).
_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def stamp(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Returns ``state_dict`` with the format stamp ``{"optax_torch": {"format": FORMAT_VERSION}}``
    added at top level (a shallow copy: the input is not modified)."""
    if not isinstance(state_dict, dict):
        raise TypeError(f"stamp: expected a state dict, got {type(state_dict).__name__}")
    out = dict(state_dict)
    out[FORMAT_KEY] = {"format": FORMAT_VERSION}
    return out


def format_of(state_dict: dict[str, Any]) -> int | None:
    """The format version a state dict was written in, or ``None`` if it carries no stamp."""
    if FORMAT_KEY not in state_dict:
        return None
    info = state_dict[FORMAT_KEY]
    version = info.get("format") if isinstance(info, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(
            f"load_state_dict: state_dict[{FORMAT_KEY!r}] must be {{'format': <int >= 1>}}, "
            f"got {info!r}"
        )
    return version


def upgrade(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Returns ``state_dict`` in the current format, without the stamp (a shallow copy).

    An unstamped dict (``torch.optim``'s, or optax_torch's before the stamp) is returned as is.
    Raises ``ValueError`` naming both versions for a dict of a newer format than this version
    reads, and for a malformed stamp.
    """
    if not isinstance(state_dict, dict):
        raise TypeError(f"load_state_dict: expected a state dict, got {type(state_dict).__name__}")
    version = format_of(state_dict)
    out = dict(state_dict)
    out.pop(FORMAT_KEY, None)
    if version is None:
        return out
    if version > FORMAT_VERSION:
        raise ValueError(
            f"load_state_dict: this state dict was written in optax_torch state format {version}, "
            f"newer than format {FORMAT_VERSION} that this version of optax_torch reads; "
            "upgrade optax_torch to load it"
        )
    while version < FORMAT_VERSION:
        out = _UPGRADES[version](out)
        version += 1
    return out
