"""timm's parameter grouping (``timm.optim._param_groups``, timm 1.0.31), without timm.

:func:`param_groups_weight_decay` splits a model's trainable parameters into a no-decay group
(1-d parameters, ``*.bias``, names matching ``no_weight_decay_list``) and a decay group;
:func:`param_groups_layer_decay` also splits by layer depth and gives each group an ``lr_scale``
(``layer_decay ** (num_layers - 1 - layer_id)``, clamped below at ``min_scale``) that timm's
schedulers multiply into the group's ``lr``. Layer ids come from ``model.group_matcher(coarse=
False)`` (timm's ``group_parameters``, re-implemented here) or, without one, from
:func:`auto_group_layers`. Group order, keys and values are exactly timm's::

    >>> groups = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.75)
    >>> [sorted(g) for g in groups][0]
    ['lr_scale', 'params', 'weight_decay']
"""

from __future__ import annotations

import collections.abc
import fnmatch
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator
from itertools import chain, islice
from typing import Any

from torch import nn

__all__ = [
    "auto_group_layers",
    "group_parameters",
    "group_with_matcher",
    "param_groups_layer_decay",
    "param_groups_weight_decay",
]

_logger = logging.getLogger(__name__)

# timm.models._manipulate.MATCH_PREV_GROUP: a matcher suffix that merges into the previous layer.
MATCH_PREV_GROUP = (99999,)


def _matches_pattern(name: str, patterns: Collection[str]) -> bool:
    """Whether ``name`` matches any of the wildcard ``patterns``."""
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def param_groups_weight_decay(
    model: nn.Module,
    weight_decay: float | None = 1e-5,
    weight_decay_exclude_1d: bool = True,
    no_weight_decay_list: Collection[str] = (),
    fallback_list: Collection[str] = (),
    fallback_no_weight_decay: bool = False,
) -> list[dict[str, Any]]:
    """Weight-decay param groups, as ``timm.optim.param_groups_weight_decay``.

    Trainable parameters go to ``no_decay`` (``weight_decay == 0`` overall, or 1-d / ``*.bias``
    with ``weight_decay_exclude_1d``, or a name matching ``no_weight_decay_list``) or ``decay``;
    names matching ``fallback_list`` (plus ``no_weight_decay_list`` with
    ``fallback_no_weight_decay``) go to separate groups marked ``use_fallback=True`` (for hybrid
    optimizers such as Muon). Non-empty groups in the order no-decay, decay, no-decay fallback,
    decay fallback.
    """
    if fallback_no_weight_decay:
        fallback_list = set(fallback_list) | set(no_weight_decay_list)
    no_wd = not weight_decay
    decay: list[nn.Parameter] = []
    decay_fallback: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    no_decay_fallback: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_fallback = _matches_pattern(name, fallback_list)
        excluded = no_wd or (
            (weight_decay_exclude_1d and (param.ndim <= 1 or name.endswith(".bias")))
            or _matches_pattern(name, no_weight_decay_list)
        )
        if excluded:
            (no_decay_fallback if is_fallback else no_decay).append(param)
        else:
            (decay_fallback if is_fallback else decay).append(param)

    groups: list[dict[str, Any]] = []
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay_fallback:
        groups.append({"params": no_decay_fallback, "weight_decay": 0.0, "use_fallback": True})
    if decay_fallback:
        groups.append(
            {"params": decay_fallback, "weight_decay": weight_decay, "use_fallback": True}
        )
    return groups


def _group(it: Iterable[str], size: int) -> Iterator[tuple[str, ...]]:
    it = iter(it)
    return iter(lambda: tuple(islice(it, size)), ())


def auto_group_layers(
    model: nn.Module, layers_per_group: int = 12, num_groups: int | None = None
) -> dict[str, int]:
    """Layer ids without a ``group_matcher``, as timm: the trunk's parameters (those outside
    ``model.pretrained_cfg["classifier"]``) in chunks of ``layers_per_group`` (or ``num_groups``
    chunks), the head last. Without a classifier prefix every parameter is in the head."""

    def _in_head(n: str, hp: Any) -> bool:
        if not hp:
            return True
        if isinstance(hp, (tuple, list)):
            return any(n.startswith(hpi) for hpi in hp)
        return n.startswith(hp)

    head_prefix = getattr(model, "pretrained_cfg", {}).get("classifier", None)
    names_trunk: list[str] = []
    names_head: list[str] = []
    for n, _ in model.named_parameters():
        (names_head if _in_head(n, head_prefix) else names_trunk).append(n)
    if num_groups is not None:
        layers_per_group = -(len(names_trunk) // -num_groups)
    chunks = list(_group(names_trunk, layers_per_group))
    layer_map = {n: i for i, chunk in enumerate(chunks) for n in chunk}
    layer_map.update({n: len(chunks) for n in names_head})
    return layer_map


def group_with_matcher(
    named_objects: Iterable[tuple[str, Any]],
    group_matcher: dict[str, Any] | Callable[[str], Any],
    return_values: bool = False,
    reverse: bool = False,
) -> Any:
    """timm's ``group_with_matcher``: layer ids from a ``group_matcher`` (a dict of regexes, with
    optional ``(regex, suffix)`` lists, or a callable returning an ordinal). Unmatched names sort
    last; a ``MATCH_PREV_GROUP`` suffix merges into the previous layer. ``reverse`` gives a
    ``name -> layer id`` dict, otherwise ``layer id -> [names or values]``."""
    matcher: Any = group_matcher
    if isinstance(group_matcher, dict):
        compiled = []
        for group_ordinal, (_, mspec) in enumerate(group_matcher.items()):
            if mspec is None:
                continue
            if isinstance(mspec, (tuple, list)):
                for sspec in mspec:
                    compiled += [(re.compile(sspec[0]), (group_ordinal,), sspec[1])]
            else:
                compiled += [(re.compile(mspec), (group_ordinal,), None)]
        matcher = compiled

    def _get_grouping(name: str) -> tuple[float, ...]:
        if isinstance(matcher, (list, tuple)):
            for match_fn, prefix, suffix in matcher:
                r = match_fn.match(name)
                if r:
                    parts = (prefix, r.groups(), suffix)
                    return tuple(map(float, chain.from_iterable(filter(None, parts))))
            return (float("inf"),)
        ordinal = matcher(name)
        if not isinstance(ordinal, collections.abc.Iterable):
            return (ordinal,)
        return tuple(ordinal)

    grouping: defaultdict[tuple[float, ...], list[Any]] = defaultdict(list)
    for k, v in named_objects:
        grouping[_get_grouping(k)].append(v if return_values else k)

    layer_id_to_param: defaultdict[int, list[Any]] = defaultdict(list)
    lid = -1
    for k in sorted(filter(lambda x: x is not None, grouping.keys())):
        if lid < 0 or k[-1] != MATCH_PREV_GROUP[0]:
            lid += 1
        layer_id_to_param[lid].extend(grouping[k])

    if reverse:
        assert not return_values, "reverse mapping only sensible for name output"
        return {n: lid for lid, names in layer_id_to_param.items() for n in names}
    return layer_id_to_param


def group_parameters(
    module: nn.Module,
    group_matcher: dict[str, Any] | Callable[[str], Any],
    return_values: bool = False,
    reverse: bool = False,
) -> Any:
    """:func:`group_with_matcher` over ``module.named_parameters()`` (timm's)."""
    return group_with_matcher(
        module.named_parameters(), group_matcher, return_values=return_values, reverse=reverse
    )


def param_groups_layer_decay(
    model: nn.Module,
    weight_decay: float = 0.05,
    no_weight_decay_list: Collection[str] = (),
    fallback_list: Collection[str] = (),
    fallback_no_weight_decay: bool = False,
    weight_decay_exclude_1d: bool = True,
    layer_decay: float = 0.75,
    min_scale: float = 0.0,
    no_opt_scale: float | None = None,
    verbose: bool = False,
) -> list[dict[str, Any]]:
    """Layer-wise lr decay and weight-decay param groups, as
    ``timm.optim.param_groups_layer_decay`` (BEiT's recipe).

    One group per (layer id, decay / no-decay, fallback), in order of first appearance in
    ``model.named_parameters()``, with keys ``lr_scale``, ``weight_decay``, ``params`` (and
    ``use_fallback``). ``lr_scale = max(min_scale, layer_decay ** (num_layers - 1 - layer_id))``;
    parameters whose scale is below ``no_opt_scale`` get ``requires_grad = False`` and are left
    out. Unlike :func:`param_groups_weight_decay`, ``*.bias`` of more than one dimension is decayed
    (timm's rule).
    """
    if fallback_no_weight_decay:
        fallback_list = set(fallback_list) | set(no_weight_decay_list)

    param_group_names: dict[str, dict[str, Any]] = {}
    param_groups: dict[str, dict[str, Any]] = {}
    group_matcher = getattr(model, "group_matcher", None)
    if group_matcher is not None:
        layer_map = group_parameters(model, group_matcher(coarse=False), reverse=True)
    else:
        layer_map = auto_group_layers(model)
    num_layers = max(layer_map.values()) + 1
    if num_layers == 1:
        _logger.warning(
            "Layer-wise lr decay has no effect, all parameters were assigned to one layer. Models "
            'without a group_matcher() need a pretrained_cfg["classifier"] for automatic layer '
            "grouping."
        )
    layer_max = num_layers - 1
    layer_scales = [max(min_scale, layer_decay ** (layer_max - i)) for i in range(num_layers)]

    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_fallback = _matches_pattern(name, fallback_list)
        if (weight_decay_exclude_1d and param.ndim <= 1) or _matches_pattern(
            name, no_weight_decay_list
        ):
            g_decay, this_decay = "no_decay", 0.0
        else:
            g_decay, this_decay = "decay", weight_decay

        layer_id = layer_map.get(name, layer_max)
        this_scale = layer_scales[layer_id]
        if no_opt_scale and this_scale < no_opt_scale:
            param.requires_grad = False
            continue

        fallback_suffix = "_fallback" if is_fallback else ""
        group_name = f"layer_{layer_id}_{g_decay}{fallback_suffix}"
        if group_name not in param_groups:
            param_group_names[group_name] = {
                "lr_scale": this_scale,
                "weight_decay": this_decay,
                "use_fallback": is_fallback,
                "param_names": [],
            }
            param_groups[group_name] = {
                "lr_scale": this_scale,
                "weight_decay": this_decay,
                "params": [],
            }
            if is_fallback:
                param_groups[group_name]["use_fallback"] = True
        param_group_names[group_name]["param_names"].append(name)
        param_groups[group_name]["params"].append(param)

    if verbose:
        import json

        _logger.info("parameter groups: \n%s", json.dumps(param_group_names, indent=2))
    return list(param_groups.values())
