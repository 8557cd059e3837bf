"""MARS: variance-reduced (corrected) gradients in an AdamW or Lion step."""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch

from optax_torch import _validate, numerics, tree
from optax_torch.base import GradientTransformation, Updates, donation_safe
from optax_torch.transforms.caution import _cautious

__all__ = ["ScaleByMarsState", "scale_by_mars"]

Num = float | torch.Tensor


class ScaleByMarsState(NamedTuple):
    """State of :func:`scale_by_mars`."""

    count: torch.Tensor  # 0-d int32
    mu: Updates  # first moment (of the corrected gradient c, or of g for the 1-d AdamW leaves)
    nu: Updates  # second moment
    last_grad: Updates  # the previous gradient


def scale_by_mars(
    b1: Num = 0.9,
    b2: Num = 0.99,
    eps: Num = 1e-8,
    gamma: Num = 0.025,
    mars_type: Literal["adamw", "lion"] = "adamw",
    optimize_1d: bool = False,
    betas_1d: tuple[Num, Num] | None = None,
    caution: bool = False,
) -> GradientTransformation:
    r"""Rescales updates by MARS (variance reduction with a scaled gradient correction).

    For each leaf of rank :math:`\ge 2` (every leaf with ``optimize_1d``), at step :math:`t`:

    .. math::
        \tilde c_t = g_t + \gamma \frac{\beta_1}{1-\beta_1} (g_t - g_{t-1})
            \ (\tilde c_1 = g_1),\quad
        c_t = \frac{\tilde c_t}{\max(1, \lVert \tilde c_t \rVert_2)},\quad
        m_t = \beta_1 m_{t-1} + (1-\beta_1) c_t,

    then ``mars_type="adamw"``: :math:`v_t = \beta_2 v_{t-1} + (1-\beta_2) c_t^2`,
    :math:`u_t = \hat m_t / (\sqrt{\hat v_t} + \epsilon)` (bias-corrected); ``"lion"``:
    :math:`u_t = \operatorname{sign}(m_t)`. Other leaves (vectors, scalars) take a plain AdamW
    direction on :math:`g_t` with ``betas_1d`` (default: ``(b1, b2)``). With ``caution`` the
    momentum used in :math:`u_t` is masked where it disagrees in sign with :math:`g_t`
    (``m * 1[m g > 0] / max(mean(1[m g > 0]), 1e-3)``, timm's form: inside, since the Lion
    variant takes the sign of the masked momentum).

    The step count is shared by the tree (``count``); the first step uses :math:`c_1 = g_1`
    (timm's choice: there is no previous gradient).

    Args:
      b1, b2: moment decay rates (default ``0.9``, ``0.99``).
      eps: added to the denominator (default ``1e-8``).
      gamma: strength of the gradient correction (default ``0.025``).
      mars_type: ``"adamw"`` (default) or ``"lion"``.
      optimize_1d: use MARS for the leaves of rank < 2 too (default ``False``).
      betas_1d: the decay rates of the 1-d AdamW leaves (default ``None``: ``(b1, b2)``).
      caution: cautious momentum (default ``False``).

    Reference: Yuan et al., `MARS: Unleashing the Power of Variance Reduction for Training Large
    Models <https://arxiv.org/abs/2411.10438>`_, 2024.

    Example::

        >>> tx = otx.chain(scale_by_mars(), otx.add_decayed_weights(0.1),
        ...                otx.scale_by_learning_rate(3e-3))
    """
    _validate.check_decay("b1", b1)
    _validate.check_decay("b2", b2)
    _validate.check_non_negative("eps", eps)
    _validate.check_finite("gamma", gamma)
    if mars_type not in ("adamw", "lion"):
        raise ValueError(f"mars_type must be 'adamw' or 'lion', got {mars_type!r}")
    b1_1d, b2_1d = betas_1d if betas_1d is not None else (b1, b2)
    _validate.check_decay("b1_1d", b1_1d)
    _validate.check_decay("b2_1d", b2_1d)

    def init_fn(params):
        return ScaleByMarsState(
            count=numerics.zero_count(),
            mu=tree.zeros_like(params),
            nu=tree.zeros_like(params),
            last_grad=tree.zeros_like(params),
        )

    def leaf(g, m, v, last, step, first):
        if optimize_1d or g.ndim >= 2:
            c = torch.where(first, g, (g - last) * (gamma * (b1 / (1.0 - b1))) + g)
            c = c / torch.linalg.vector_norm(c).clamp(min=1.0)
            m = m * b1 + c * (1.0 - b1)
            m_eff = _cautious(m, g, 1e-3) if caution else m
            if mars_type == "lion":
                return torch.sign(m_eff), m, v
            v = v * b2 + c * c * (1.0 - b2)
            bc1, bc2 = 1.0 - b1**step, 1.0 - b2**step
        else:
            m = m * b1_1d + g * (1.0 - b1_1d)
            v = v * b2_1d + g * g * (1.0 - b2_1d)
            bc1, bc2 = 1.0 - b1_1d**step, 1.0 - b2_1d**step
            m_eff = _cautious(m, g, 1e-3) if caution else m
        denom = torch.sqrt(v) / torch.sqrt(bc2) + eps
        return (m_eff / bc1) / denom, m, v

    @donation_safe
    def update_fn(updates, state, params=None):
        del params
        count = numerics.safe_increment(state.count)
        step = count.to(torch.float64)
        first = count == 1
        gs, spec = tree.flatten(updates)
        ms, vs, lasts = (tree.flatten(x)[0] for x in (state.mu, state.nu, state.last_grad))
        out, new_m, new_v, new_last = [], [], [], []
        for g, m, v, last in zip(gs, ms, vs, lasts, strict=True):
            if g is None:
                out.append(None)
                new_m.append(m)
                new_v.append(v)
                new_last.append(last)
                continue
            u, m, v = leaf(g, m, v, last, step, first)
            out.append(u)
            new_m.append(m)
            new_v.append(v)
            new_last.append(g.clone())
        mspec = tree.structure(state.mu)
        new_state = ScaleByMarsState(
            count=count,
            mu=tree.unflatten(mspec, new_m),
            nu=tree.unflatten(mspec, new_v),
            last_grad=tree.unflatten(mspec, new_last),
        )
        # (0-d leaves: float64 scalars would promote them)
        return tree.cast_like(tree.unflatten(spec, out), updates), new_state

    return GradientTransformation(init_fn, update_fn)
