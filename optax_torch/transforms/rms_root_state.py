"""RMSProp whose state is the root of the second moment, ``eps`` included (Classy Vision's
``RMSPropTF``)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from optax_torch import _validate, tree
from optax_torch.base import (
    GradientTransformation,
    Updates,
    donation_safe,
    elementwise,
    leafwise,
)

__all__ = ["ScaleByRmsRootStateState", "scale_by_rms_root_state"]

Num = float | torch.Tensor


class ScaleByRmsRootStateState(NamedTuple):
    """State of :func:`scale_by_rms_root_state`: the denominator :math:`d` of the last step."""

    nu: Updates


def scale_by_rms_root_state(decay: Num = 0.99, eps: Num = 1e-8) -> GradientTransformation:
    r"""RMS-like scaling whose running average is kept as its square root, ``eps`` included.

    .. math::
        d_k = \sqrt{\text{decay}\, d_{k-1} + (1-\text{decay})\, g_k^2 + \epsilon},\qquad
        u_k = g_k / d_k,\qquad d_0 = 0

    This is the non-centred step of Classy Vision's ``RMSpropTFOptimizer``, whose
    ``square_avg.add_(eps).sqrt_()`` works in place: the stored ``square_avg`` is the root
    :math:`d_k`, and the next step averages it (not :math:`d_k^2`) with :math:`g^2`. It differs
    from :func:`optax_torch.scale_by_rms` (``eps_in_sqrt=True``: :math:`v_k = \text{decay}\,
    v_{k-1} + (1-\text{decay}) g_k^2`, :math:`u_k = g_k/\sqrt{v_k + \epsilon}`) from the second
    step on; it is kept to reproduce Classy's trajectories and checkpoints.

    Args:
      decay: EMA decay, default ``0.99``.
      eps: added under the square root at every step, default ``1e-8``.

    References:
      Classy Vision 0.7, ``classy_vision/optim/rmsprop_tf.py``,
      https://github.com/facebookresearch/ClassyVision

    Example::

        >>> tx = otx.chain(scale_by_rms_root_state(0.99, 1e-8), otx.scale(-0.1))
    """
    _validate.check_non_negative("eps", eps)
    _validate.check_non_negative("decay", decay)

    def init_fn(params):
        return ScaleByRmsRootStateState(nu=tree.zeros_like(params))

    @elementwise
    @leafwise
    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        nu = tree.map(
            lambda g, d: (d * decay).addcmul(g, g, value=1 - decay).add(eps).sqrt(),
            updates,
            state.nu,
        )
        return tree.map(torch.div, updates, nu), ScaleByRmsRootStateState(nu=nu)

    return GradientTransformation(init_fn, update_fn)
