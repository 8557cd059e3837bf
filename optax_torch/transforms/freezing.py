"""Selective transformations: freeze, selective_transform."""

from __future__ import annotations

from typing import Any

from optax_torch import tree
from optax_torch.base import GradientTransformation, GradientTransformationExtraArgs, set_to_zero
from optax_torch.combine import partition
from optax_torch.transforms.masking import masked

__all__ = ["freeze", "selective_transform"]


def freeze(mask: bool | Any) -> GradientTransformationExtraArgs:
    """Zeroes the updates where ``mask`` is ``True``, which holds those parameters constant.

    ``masked(set_to_zero(), mask)``. The mask is static (it must not depend on tensor values or
    change during training) and is either

    - one bool (or 0-d bool tensor): every parameter frozen (``True``) or trainable (``False``),
    - a tree of bools with the parameters' structure (or a prefix of it): ``True`` freezes that
      parameter, ``False`` leaves its update unchanged.

    Use it in a chain, after the optimizer (:func:`selective_transform` instead keeps frozen
    parameters out of the optimizer altogether, so it holds no state for them).

    Example::

        >>> params = {"a": torch.zeros(1), "b": torch.zeros(2)}
        >>> tx = otx.chain(otx.adam(1e-3), otx.freeze({"a": True, "b": False}))  # train "b" only
    """
    return masked(set_to_zero(), mask)


def selective_transform(
    optimizer: GradientTransformation,
    *,
    freeze_mask: bool | Any,
) -> GradientTransformationExtraArgs:
    """Applies ``optimizer`` to the unfrozen parameters only; frozen ones get zero updates.

    ``partition({"train": optimizer, "freeze": set_to_zero()}, labels)`` with the label
    ``"freeze"`` where ``freeze_mask`` is ``True`` and ``"train"`` elsewhere, so ``optimizer``
    keeps no state for frozen parameters and global quantities (norms) ignore them.

    Args:
      optimizer: the optimizer of the trainable parameters.
      freeze_mask: static; one bool (freeze everything or nothing) or a tree of bools with the
        parameters' structure (or a prefix of it), ``True`` marking a parameter to freeze.

    Example::

        >>> params = {"a": torch.zeros(1), "b": torch.zeros(2)}
        >>> tx = otx.selective_transform(otx.adam(1e-3), freeze_mask={"a": True, "b": False})
    """

    def label_fn(params: Any) -> Any:
        del params
        return tree.map(lambda m: "freeze" if bool(m) else "train", freeze_mask)

    return partition({"train": optimizer, "freeze": set_to_zero()}, param_labels=label_fn)
