"""The dtype of the real scalars a contrib optimizer keeps in its state (learning-rate estimates,
weights, losses), chosen from the params' dtypes."""

from __future__ import annotations

import torch

from optax_torch import tree
from optax_torch.base import Params

__all__ = ["scalar_dtype"]


def scalar_dtype(params: Params, which: str = "lowest") -> torch.dtype:
    """optax's ``tree.dtype(params, "lowest" | "highest")``, total on the params' dtypes.

    ``dtype1 <= dtype2`` when ``dtype1`` promotes to ``dtype2``. ``"lowest"`` is the least of the
    params' dtypes, so a state scalar does not make the updates of the lowest-precision leaves more
    precise than they are; ``"highest"`` is their promoted dtype. Where the dtypes have no least
    element (float16 with bfloat16, neither of which holds the other), ``"lowest"`` is their
    promoted dtype too (float32, which holds both exactly) rather than an error (optax's) or the
    first leaf's dtype. Complex leaves count as their real dtype (the scalars are real); an empty
    tree gives torch's default dtype.
    """
    if which not in ("lowest", "highest"):
        raise ValueError(f"which must be 'lowest' or 'highest', got {which!r}")
    dtypes = list(
        dict.fromkeys(x.dtype.to_real() if x.is_complex() else x.dtype for x in tree.leaves(params))
    )
    if not dtypes:
        return torch.get_default_dtype()
    promoted = dtypes[0]
    for d in dtypes[1:]:
        promoted = torch.promote_types(promoted, d)
    if which == "lowest":
        for d in dtypes:
            if all(torch.promote_types(d, o) == o for o in dtypes):
                return d
    return promoted
